//! `abnix-update check`: what an update would do, without changing the
//! disk (the outcome is recorded as the last check). Exit codes
//! (docs/cli.md): 0 an update is available, 3 nothing to do, 5 the
//! channel is stale (its meta expired), 1 error.

use std::process::ExitCode;

use abnix_updater::update::machine::{Mode, Outcome};

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
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.device.load_config()?;
    let cycle = run_cycle(Mode::Check, &args.device, &config, &args.network)?;
    println!("{}", cycle.outcome);
    Ok(match &cycle.outcome {
        Outcome::WouldInstall(_) => ExitCode::SUCCESS,
        Outcome::Stale { .. } => ExitCode::from(EXIT_STALE),
        outcome if outcome.is_error() => ExitCode::FAILURE,
        _ => ExitCode::from(EXIT_NOTHING_TO_DO),
    })
}
