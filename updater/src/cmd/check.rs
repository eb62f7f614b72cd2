//! `abnix-update check`: what an update would do, without changing the
//! disk (the outcome is recorded as the last check). Exit codes
//! (docs/cli.md): 0 an update is available, 3 nothing to do, 5 the
//! channel is stale (its meta expired), 1 error.

use std::process::ExitCode;

use abnix_formats::rollout::Admission;
use abnix_updater::update::machine::{Mode, Outcome};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::device::DeviceArgs;
use super::update::{run_cycle, NetworkArgs};

/// Nothing for an update to do.
pub const EXIT_NOTHING_TO_DO: u8 = 3;
/// The channel's meta expired: the publisher must re-sign it.
pub const EXIT_STALE: u8 = 5;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    network: NetworkArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `check --json` (docs/cli.md).
#[derive(Debug, Serialize)]
struct Report {
    /// `update_available`, `up_to_date`, `pending_reboot`, `skipped`,
    /// `waiting` (a staged rollout), `stale`, `refused` or `failed`.
    result: &'static str,
    /// The text `check` prints without `--json`.
    message: String,
    /// The channel's latest version, when this check verified it.
    latest: Option<u64>,
    latest_signed_at: Option<DateTime<Utc>>,
    latest_expires: Option<DateTime<Utc>>,
    /// What an update would install, and where.
    would_install: Option<WouldInstall>,
    /// `waiting`: when the latest version's staged rollout reaches this host.
    rollout_turn: Option<DateTime<Utc>>,
    /// `waiting`: when the rollout was halted (this host does not start).
    rollout_halted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct WouldInstall {
    version: u64,
    id: Uuid,
    label: String,
    slot: String,
}

impl Report {
    fn of(outcome: &Outcome) -> Report {
        let latest = outcome.latest();
        let would_install = match outcome {
            Outcome::WouldInstall(plan) => Some(WouldInstall {
                version: plan.meta().version,
                id: plan.meta().id,
                label: plan.meta().label.clone(),
                slot: plan.target.name().to_owned(),
            }),
            _ => None,
        };
        Report {
            result: match outcome {
                Outcome::WouldInstall(_) | Outcome::Installed(_) => "update_available",
                Outcome::UpToDate { .. } => "up_to_date",
                Outcome::PendingTrial { .. } => "pending_reboot",
                Outcome::Skipped { .. } => "skipped",
                Outcome::Waiting { .. } => "waiting",
                Outcome::Stale { .. } => "stale",
                Outcome::Refused(_) | Outcome::Unfit(_) => "refused",
                Outcome::Failed(_) => "failed",
            },
            message: outcome.to_string(),
            latest: latest.map(|l| l.version),
            latest_signed_at: latest.and_then(|l| l.signed_at),
            latest_expires: latest.and_then(|l| l.expires),
            would_install,
            rollout_turn: match outcome {
                Outcome::Waiting {
                    admission: Admission::Waiting { turn },
                    ..
                } => Some(*turn),
                _ => None,
            },
            rollout_halted_at: match outcome {
                Outcome::Waiting {
                    admission: Admission::Halted { at },
                    ..
                } => Some(*at),
                _ => None,
            },
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.device.load_config()?;
    let cycle = run_cycle(Mode::Check, &args.device, &config, &args.network)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Report::of(&cycle.outcome))?
        );
    } else {
        println!("{}", cycle.outcome);
    }
    Ok(match &cycle.outcome {
        Outcome::WouldInstall(_) => ExitCode::SUCCESS,
        Outcome::Stale { .. } => ExitCode::from(EXIT_STALE),
        outcome if outcome.is_error() => ExitCode::FAILURE,
        _ => ExitCode::from(EXIT_NOTHING_TO_DO),
    })
}
