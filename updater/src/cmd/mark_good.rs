//! `abnix-update mark-good`: the booted slot proved healthy (systemd runs
//! this once boot-complete.target is reached) and becomes good. Exits 0 on
//! a boot that is good already, which is every boot but a trial's first.

use std::process::ExitCode;

use abnix_formats::report::ReportEvent;
use abnix_updater::update::{mark_good, MarkedGood};
use anyhow::Context;

use super::device::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut device = args.device.open_booted()?;
    let slot = device.slot;
    let mut boot = device.host.disk.boot_control()?;
    let marked =
        mark_good(boot.as_mut(), slot).with_context(|| format!("marking slot {slot} good"))?;
    drop(boot);
    match marked {
        MarkedGood::AlreadyGood(info) => tracing::info!(
            "slot {slot} (version {} \"{}\") is already good",
            info.version,
            info.label
        ),
        MarkedGood::Marked(info) => tracing::info!(
            "slot {slot} (version {} \"{}\") marked good",
            info.version,
            info.label
        ),
    }
    args.device
        .reporter(&device.config, &device.state_dir)
        .after(ReportEvent::MarkGood, &mut device.host);
    Ok(ExitCode::SUCCESS)
}
