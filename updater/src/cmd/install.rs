//! `abnix-update install --bundle DIR`: an offline update. The update cycle
//! of `update`, with the version taken from a bundle directory (a USB stick
//! at an air-gapped site) instead of the channel: the same verification,
//! slot rules, trial boot, fallback and never-retry (docs/cli.md). It
//! does not reboot: the version boots, on trial, at the next reboot. Exit
//! codes: 4 installed (or already waiting for that reboot), 0 nothing to
//! do (the bundle's version runs), 1 refused or failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use abnix_updater::update::machine::{Mode, Outcome, Skip};

use super::device::DeviceArgs;
use super::update::{run_cycle_from, EXIT_UPDATED};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    /// The bundle directory (as `pack` writes it, or a version's objects
    /// copied from the bucket) to install into the other slot.
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `install --json`.
#[derive(Debug, Serialize)]
struct Report {
    /// `installed`, `pending_reboot`, `up_to_date`, `skipped`, `waiting`,
    /// `stale`, `refused` or `failed`.
    result: &'static str,
    message: String,
    /// The bundle's version, once it verified.
    version: Option<u64>,
    id: Option<Uuid>,
    label: Option<String>,
    /// `installed`, `pending_reboot`: the slot that boots next, on trial.
    slot: Option<String>,
}

impl Report {
    fn of(outcome: &Outcome) -> Report {
        let plan = match outcome {
            Outcome::Installed(plan) => Some(plan),
            _ => None,
        };
        Report {
            result: match outcome {
                Outcome::Installed(_) | Outcome::WouldInstall(_) => "installed",
                Outcome::PendingTrial { .. } => "pending_reboot",
                Outcome::UpToDate { .. } => "up_to_date",
                Outcome::Skipped {
                    reason: Skip::SameImageAsBooted { .. },
                    ..
                } => "up_to_date",
                Outcome::Skipped { .. } => "skipped",
                Outcome::Waiting { .. } => "waiting",
                Outcome::Stale { .. } => "stale",
                Outcome::Refused(_) | Outcome::Unfit(_) => "refused",
                Outcome::Failed(_) => "failed",
            },
            message: outcome.to_string(),
            version: outcome.latest().map(|latest| latest.version),
            id: plan.map(|plan| plan.meta().id),
            label: plan.map(|plan| plan.meta().label.clone()),
            slot: outcome
                .reboot_pending()
                .map(|(slot, _)| slot.name().to_owned()),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.device.load_config()?;
    // A local directory: nothing to wait for.
    let cycle = run_cycle_from(
        Mode::Bundle,
        Some(&args.bundle),
        &args.device,
        &config,
        Duration::ZERO,
    )?;
    let report = Report::of(&cycle.outcome);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", cycle.outcome);
    }
    // Only the bundle's version running, or waiting for its reboot, is
    // success; anything else did not do what was asked.
    Ok(match &cycle.outcome {
        outcome if outcome.reboot_pending().is_some() => ExitCode::from(EXIT_UPDATED),
        outcome if outcome.bundle_in_place() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}
