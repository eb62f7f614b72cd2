//! `abnix-update fetch`: fetch and verify the channel's latest version (for
//! this channel, not expired) and stream its image into a file. The device's update path without the
//! slots, to exercise and benchmark the download on its own.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use abnix_core::pipeline::WriteOptions;
use abnix_core::progress;
use anyhow::{bail, Context};
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::remote_args::{channel_label, RemoteArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The image file to write (created or overwritten, sparse). It appears
    /// only once the image verified: it is written as FILE.partial and
    /// renamed.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `fetch --json` (docs/cli.md).
#[derive(Debug, Serialize)]
struct Report {
    version: u64,
    id: Uuid,
    label: String,
    /// The image's size.
    bytes: u64,
    /// From the start to the rename.
    seconds: f64,
    mib_per_second: f64,
    /// How often a broken download resumed.
    resumes: u32,
}

/// `FILE.partial`, next to `FILE` so the final rename stays on one
/// filesystem.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if let Ok(meta) = fs::symlink_metadata(&args.to) {
        if !meta.is_file() {
            bail!("{} exists and is not a regular file", args.to.display());
        }
    }
    let channel = args.remote.channel()?;
    let label = channel_label(&channel);
    let signed = channel
        .latest()
        .with_context(|| format!("fetching the latest meta of {label}"))?;
    let meta = signed.meta();
    // What a device would refuse, this refuses too (the architecture
    // aside: any machine may fetch an image).
    let channel_name = &channel.remote().config().channel;
    let Some(published) = meta
        .published
        .as_ref()
        .filter(|p| &p.channel == channel_name)
    else {
        bail!(
            "the latest meta of {label} (version {}) is not published for channel {channel_name:?}",
            meta.version
        );
    };
    if published.expired(Utc::now()) {
        bail!(
            "the channel {label} is stale: the meta of version {} expired {} (publish --resign signs it again)",
            meta.version,
            published.expires
        );
    }
    let index = channel
        .index(meta)
        .with_context(|| format!("fetching the index of version {}", meta.version))?;

    let partial = partial_path(&args.to);
    let mut file = create_sparse(&partial, meta.image.size)?;
    let opts = WriteOptions {
        target_name: args.to.display().to_string(),
        ..WriteOptions::default()
    };
    let fetched = channel.write_image(
        meta,
        &index,
        &mut file,
        &opts,
        progress::for_stderr().as_ref(),
    );
    drop(file);
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(err) => {
            // A file left behind would look like an image.
            let _ = fs::remove_file(&partial);
            return Err(err).with_context(|| {
                format!(
                    "writing version {} into {}",
                    meta.version,
                    args.to.display()
                )
            });
        }
    };
    fs::rename(&partial, &args.to)
        .with_context(|| format!("renaming {} to {}", partial.display(), args.to.display()))?;

    let seconds = started.elapsed().as_secs_f64();
    let report = Report {
        version: meta.version,
        id: meta.id,
        label: meta.label.clone(),
        bytes: fetched.written.bytes,
        seconds,
        mib_per_second: fetched.written.bytes as f64 / seconds / (1024.0 * 1024.0),
        resumes: fetched.resumes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("version {}", report.version);
        println!("id {}", report.id);
        println!("label {}", report.label);
        println!("bytes {}", report.bytes);
        println!("time {:.3} s", report.seconds);
        println!("rate {:.1} MiB/s", report.mib_per_second);
        println!("resumes {}", report.resumes);
    }
    Ok(ExitCode::SUCCESS)
}

/// A new (or emptied) file of `size` bytes, holding no data blocks yet.
fn create_sparse(path: &Path, size: u64) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(size)
        .with_context(|| format!("sizing {} to {size} bytes", path.display()))?;
    Ok(file)
}
