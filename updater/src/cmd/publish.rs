//! `abnix-update publish`: sign a bundle's version for its channel and
//! upload it, every artifact first and the channel's meta last; or sign the
//! channel's current version again with a new expiry (`--resign`), or with
//! its rollout halted (`--halt`); publish an older version's content again
//! as the next version (`--revert-to`); optionally prune old versions.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use abnix_core::bundle::Bundle;
use abnix_core::progress;
use abnix_core::units::parse_duration;
use abnix_formats::sign::PublicKey;
use abnix_updater::publish::{
    halt, publish, resign, revert_to, PublishError, PublishOptions, VersionRef, DEFAULT_VALID_FOR,
};
use anyhow::Context;
use clap::ArgGroup;
use serde::Serialize;
use uuid::Uuid;

use super::pack::read_key;
use super::remote_args::{channel_label, RemoteArgs};

#[derive(clap::Args)]
#[command(group(ArgGroup::new("what").required(true).args(["bundle", "resign", "halt", "revert_to"])))]
pub struct Args {
    /// Bundle directory, as made by `abnix-update pack`.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Sign the channel's current version again, with a new expiry and
    /// nothing else changed (for a cron job or CI).
    #[arg(long)]
    resign: bool,
    /// Sign the channel's current version again with its rollout halted:
    /// no host starts installing it any more; hosts that did keep it.
    #[arg(long)]
    halt: bool,
    /// Publish the content of the channel's older version N again, as the
    /// next version number, re-using its objects: hosts move forward to it.
    #[arg(long, value_name = "N")]
    revert_to: Option<u64>,
    /// Stage the rollout over this long from now (e.g. 2d, 12h): each host
    /// installs at its own time within it, by its machine id.
    #[arg(long, value_name = "D", value_parser = parse_duration, conflicts_with_all = ["resign", "halt"])]
    rollout_over: Option<Duration>,
    /// Secret key file to sign the channel's meta with (repeat to sign with
    /// several, e.g. the old and the new key of a rotation, or a recovery
    /// key besides a signing key).
    #[arg(long = "key", value_name = "SECRET_FILE", required = true)]
    keys: Vec<PathBuf>,
    /// How long devices take the meta from now (e.g. 30d, 12h); after that
    /// the channel is stale until it is signed again.
    #[arg(long, value_parser = parse_duration, default_value = DEFAULT_VALID_FOR)]
    valid_for: Duration,
    /// A public key (name:base64) the meta declares revoked; devices
    /// honour it only when a recovery key signs the meta (docs/security.md).
    #[arg(long = "revoke", value_name = "KEY")]
    revoke: Vec<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Afterwards, delete the objects of all but the newest N versions of
    /// the channel (never the one published nor the one the channel's meta
    /// names).
    #[arg(long, value_name = "N", conflicts_with_all = ["resign", "halt"])]
    keep: Option<NonZeroUsize>,
    /// Publish even if the version is not greater than the channel's
    /// current one, or the channel's current meta does not verify.
    #[arg(long, conflicts_with_all = ["resign", "halt", "revert_to"])]
    force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `publish --json` (docs/cli.md).
#[derive(Debug, Serialize)]
struct Report {
    /// Where: `endpoint/bucket/prefix/channel`, as the text says it.
    channel: String,
    published: Version,
    /// The version the channel's meta named before, if it verified.
    previous: Option<Version>,
    /// The keys uploaded, in order: the channel's meta last.
    uploaded: Vec<String>,
    /// The versions whose objects were deleted (`--keep`), oldest first.
    pruned: Vec<Version>,
}

#[derive(Debug, Serialize)]
struct Version {
    version: u64,
    id: Uuid,
}

impl From<&VersionRef> for Version {
    fn from(v: &VersionRef) -> Version {
        Version {
            version: v.version,
            id: v.id,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let channel = args.remote.channel()?;
    let label = channel_label(&channel);
    let keys = args
        .keys
        .iter()
        .map(|path| read_key(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keys: Vec<_> = keys.iter().collect();
    let revoke = args
        .revoke
        .iter()
        .map(|text| PublicKey::parse(text).with_context(|| format!("--revoke {text:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = PublishOptions {
        keep: args.keep,
        force: args.force,
        valid_for: args.valid_for,
        revoke,
        rollout_over: args.rollout_over,
    };
    let report = match &args.bundle {
        Some(dir) => {
            // Verified against the trusted keys: a bundle that devices
            // would refuse is not published.
            let bundle = Bundle::open(dir, channel.keys())
                .with_context(|| format!("opening the bundle {}", dir.display()))?;
            let version = bundle.signed.meta().version;
            publish(
                &channel,
                &bundle,
                &keys,
                &opts,
                progress::for_stderr().as_ref(),
            )
            .map_err(|err| match err {
                PublishError::NotNewer { .. } | PublishError::UntrustedPointer(_) => {
                    anyhow::anyhow!("{err} (--force publishes it anyway)")
                }
                other => other.into(),
            })
            .with_context(|| format!("publishing version {version} to {label}"))?
        }
        None if args.halt => halt(&channel, &keys, &opts)
            .with_context(|| format!("halting the rollout of {label}"))?,
        None => match args.revert_to {
            Some(version) => revert_to(&channel, version, &keys, &opts)
                .with_context(|| format!("publishing version {version} of {label} again"))?,
            None => resign(&channel, &keys, &opts)
                .with_context(|| format!("signing the current version of {label} again"))?,
        },
    };

    if args.json {
        let report = Report {
            channel: label,
            published: (&report.published).into(),
            previous: report.previous.as_ref().map(Version::from),
            uploaded: report.uploaded,
            pruned: report.pruned.iter().map(Version::from).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
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
