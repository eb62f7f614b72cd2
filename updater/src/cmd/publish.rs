//! `abnix-update publish`: upload a bundle to its channel, every artifact
//! first and the channel's meta last; optionally prune old versions.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use abnix_core::bundle::Bundle;
use abnix_core::progress;
use abnix_core::publish::{publish, PublishError, PublishOptions};
use anyhow::Context;

use super::remote_args::{channel_label, RemoteArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Bundle directory, as made by `abnix-update pack`.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Afterwards, delete the objects of all but the newest N versions of
    /// the channel (never the one published nor the one the channel's meta
    /// names).
    #[arg(long, value_name = "N")]
    keep: Option<NonZeroUsize>,
    /// Publish even if the version is not greater than the channel's
    /// current one, or the channel's current meta does not verify.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let channel = args.remote.channel()?;
    let label = channel_label(&channel);
    // Verified against the trusted keys: a bundle that devices would refuse
    // is not published.
    let bundle = Bundle::open(&args.bundle, channel.keys())
        .with_context(|| format!("opening the bundle {}", args.bundle.display()))?;
    let opts = PublishOptions {
        keep: args.keep,
        force: args.force,
    };
    let version = bundle.signed.meta().version;
    let report = publish(&channel, &bundle, &opts, progress::for_stderr().as_ref())
        .map_err(|err| match err {
            PublishError::NotNewer { .. } | PublishError::UntrustedPointer(_) => {
                anyhow::anyhow!("{err} (--force publishes it anyway)")
            }
            other => other.into(),
        })
        .with_context(|| format!("publishing version {version} to {label}"))?;

    println!("published {} to {label}", report.published);
    match report.previous {
        Some(previous) => println!("previous {previous}"),
        None => println!("previous none"),
    }
    for key in &report.uploaded {
        println!("  uploaded {key}");
    }
    for pruned in &report.pruned {
        println!("  pruned {pruned}");
    }
    Ok(ExitCode::SUCCESS)
}
