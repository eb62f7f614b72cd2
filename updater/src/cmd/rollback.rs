//! `abnix-update rollback`: the operator's way back. The other slot boots
//! next when it holds a good version; the running version is recorded as
//! failed first (on the ESP and in the state file), so the updater never
//! installs it again. It installs nothing, so the rollback floor does not
//! stand in its way. Refused, with the reason, when the other slot is
//! empty or not good.

use std::process::ExitCode;

use abnix_formats::fat::FatFs;
use abnix_formats::report::ReportEvent;
use abnix_updater::state_dir::FailedVersion;
use abnix_updater::update::{records, rollback_plan, RollbackHow};
use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::device::{BootedDevice, DeviceArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    /// Print what was done as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `rollback --json` (docs/cli.md).
#[derive(Debug, Serialize)]
struct Report {
    /// The slot that boots at the next reboot, and its version.
    slot: String,
    version: u64,
    id: Uuid,
    label: String,
    /// The version rolled back from, now recorded as failed (null when
    /// the booted slot's version is not known).
    failed_version: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let BootedDevice {
        config,
        mut host,
        slot,
        state_dir,
        lock: _lock,
    } = args.device.open_booted()?;
    let mut boot = host.disk.boot_control()?;
    let status = boot.status().context("reading the boot state")?;
    let plan = rollback_plan(&status, slot).context("refusing to roll back")?;

    // Recorded before the boot state changes: once the other slot boots,
    // the update that runs there must already know to skip this version.
    // On the ESP, where a lost state file cannot forget it.
    let before = state_dir.load().context("reading the state")?;
    if let Some(from) = &plan.from_version {
        let failed = FailedVersion {
            version: from.version,
            id: from.id,
            label: from.label.clone(),
            at: Utc::now(),
            reason: format!(
                "rolled back by an operator to version {}",
                plan.to_version.version
            ),
        };
        drop(boot);
        FatFs::open(host.disk.esp())
            .and_then(|mut fs| records::record_failed(&mut fs, &failed))
            .context("recording the failed version on the ESP")?;
        let mut state = before.clone();
        state.record_failed(failed);
        state_dir
            .save(&state)
            .context("recording the failed version")?;
        boot = host.disk.boot_control()?;
    }
    let changed = match plan.how {
        RollbackHow::Prefer => boot.prefer(plan.to),
        RollbackHow::AbandonBooted => boot.mark_bad(slot),
    };
    if let Err(e) = changed {
        state_dir
            .save(&before)
            .context("restoring the state after a failed rollback")?;
        return Err(e).context(format!("making slot {} boot next", plan.to));
    }
    if args.json {
        let report = Report {
            slot: plan.to.name().to_owned(),
            version: plan.to_version.version,
            id: plan.to_version.id,
            label: plan.to_version.label.clone(),
            failed_version: plan.from_version.as_ref().map(|v| v.version),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let from = plan
        .from_version
        .map(|v| {
            format!(
                "; version {} is recorded as failed and not installed again",
                v.version
            )
        })
        .unwrap_or_default();
    tracing::info!(
        "slot {} (version {} \"{}\") boots at the next reboot{from}",
        plan.to,
        plan.to_version.version,
        plan.to_version.label
    );
    drop(boot);
    args.device
        .reporter(&config, &state_dir)
        .after(ReportEvent::Rollback, &mut host);
    Ok(ExitCode::SUCCESS)
}
