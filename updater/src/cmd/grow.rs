//! `abnix-update grow`: grow `abnix-rw` to the end of a bigger disk (a
//! template written to a larger disk). Runs at every boot; a no-op that
//! reads a few sectors when there is nothing to grow.

use std::path::PathBuf;
use std::process::ExitCode;

use abnix_core::blockdev::SysRoot;
use abnix_updater::grow::{grow, GrowTarget};
use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The device config. Accepted like every device command's; growing
    /// needs nothing from it.
    #[arg(long, default_value = abnix_updater::config::DEFAULT_PATH)]
    #[allow(dead_code)]
    config: PathBuf,
    /// The disk or disk-image file to grow [default: the disk holding /].
    #[arg(long)]
    disk: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = match &args.disk {
        Some(path) => GrowTarget::at(path),
        None => GrowTarget::booted(&SysRoot::default()),
    }
    .context("finding the disk to grow")?;
    let report = grow(&target).context("growing abnix-rw")?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
