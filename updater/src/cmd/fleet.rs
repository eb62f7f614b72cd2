//! `abnix-update fleet`: the channel's hosts as their reports tell
//! (crate::fleet): hosts per version, on trial, failures per version, hosts
//! not heard from, progress towards the latest version; as text, `--json`,
//! or one static HTML page (`--html FILE`).

use std::path::PathBuf;
use std::process::ExitCode;

use abnix_updater::fleet::{aggregate, read_reports, ReadBounds};
use abnix_updater::remote::{Remote, RemoteConfig};
use anyhow::Context;
use chrono::Utc;

use super::remote_args::{channel_label, RemoteArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Print the view as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the view as one static HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Flag hosts not heard from in more than N of their check intervals.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    silent_after: u32,
    /// The bucket holding the reports, when not the channel's (the hosts'
    /// report_bucket).
    #[arg(long, value_name = "BUCKET")]
    report_bucket: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let channel = args.remote.channel()?;
    let label = channel_label(&channel);
    // The latest version, for the progress: a view without it is still a
    // view.
    let latest = match channel.latest() {
        Ok(signed) => Some(signed.meta().clone()),
        Err(e) => {
            tracing::warn!("no progress shown: the latest meta of {label}: {e}");
            None
        }
    };
    let reports = match &args.report_bucket {
        None => channel.remote().clone(),
        Some(bucket) => Remote::new(RemoteConfig {
            bucket: bucket.clone(),
            ..channel.remote().config().clone()
        })
        .with_context(|| format!("connecting to bucket {bucket}"))?,
    };
    let (entries, skipped) = read_reports(&reports, ReadBounds::default())
        .with_context(|| format!("reading the reports of {label}"))?;
    let view = aggregate(
        &channel.remote().config().channel,
        &entries,
        skipped,
        latest.as_ref(),
        Utc::now(),
        args.silent_after,
    );
    if let Some(path) = &args.html {
        std::fs::write(path, view.html()).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", view.text());
    }
    Ok(ExitCode::SUCCESS)
}
