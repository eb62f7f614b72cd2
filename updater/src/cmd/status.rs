//! `abnix-update status`: the booted slot, both slots, what the last check
//! found, failed versions and whether a reboot is pending. Reads only: no
//! network, nothing written.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use abnix_core::boot::{BootStatus, SlotState, SlotStatus};
use abnix_core::host::Host;
use abnix_core::state::{CheckRecord, ErrorRecord, FailedVersion, LockError, State, StateDir};
use abnix_core::update::{pending_trial, state_name};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::device::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SlotReport {
    slot: String,
    /// "good", "trial", "failed" (a trial with no tries left) or "bad".
    state: &'static str,
    tries_left: Option<u8>,
    version: Option<u64>,
    id: Option<Uuid>,
    label: Option<String>,
    booted: bool,
    boots_next: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    disk: String,
    bootloader: String,
    booted: Option<String>,
    /// Why the booted slot is not known, when it is not.
    booted_unknown: Option<String>,
    slots: Vec<SlotReport>,
    /// The version waiting in the other slot for the next reboot.
    pending_reboot: Option<u64>,
    channel: String,
    /// The channel's latest version as of the last successful check.
    latest_known: Option<u64>,
    last_check: Option<CheckRecord>,
    last_error: Option<ErrorRecord>,
    failed_versions: Vec<FailedVersion>,
    update_running: bool,
}

fn slot_report(slot: &SlotStatus, status: &BootStatus, booted: Option<&str>) -> SlotReport {
    let tries_left = match slot.state {
        SlotState::Trial { tries_left } => Some(tries_left),
        _ => None,
    };
    SlotReport {
        slot: slot.slot.to_string(),
        state: state_name(slot.state),
        tries_left,
        version: slot.info.as_ref().map(|i| i.version),
        id: slot.info.as_ref().map(|i| i.id),
        label: slot.info.as_ref().map(|i| i.label.clone()),
        booted: booted == Some(slot.slot.name()),
        boots_next: status.next == Some(slot.slot),
    }
}

fn report(
    host: &Host,
    bootloader: String,
    status: &BootStatus,
    channel: &str,
    state: State,
    update_running: bool,
) -> Report {
    let booted = host.booted.as_ref().ok().map(|s| s.to_string());
    let pending_reboot = host
        .booted
        .as_ref()
        .ok()
        .and_then(|&b| pending_trial(status, b))
        .and_then(|s| s.info.as_ref())
        .map(|i| i.version);
    Report {
        disk: host.disk_path.display().to_string(),
        bootloader,
        booted_unknown: host.booted.as_ref().err().map(|e| e.to_string()),
        slots: status
            .slots
            .iter()
            .map(|s| slot_report(s, status, booted.as_deref()))
            .collect(),
        booted,
        pending_reboot,
        channel: channel.to_owned(),
        latest_known: state.last_check.as_ref().and_then(|c| c.latest),
        last_check: state.last_check,
        last_error: state.last_error,
        failed_versions: state.failed,
        update_running,
    }
}

fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn human(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "disk:            {} ({})", r.disk, r.bootloader);
    let _ = match (&r.booted, &r.booted_unknown) {
        (Some(slot), _) => writeln!(out, "booted:          slot {slot}"),
        (None, why) => writeln!(
            out,
            "booted:          unknown: {}",
            why.as_deref().unwrap_or("")
        ),
    };
    for s in &r.slots {
        let state = match s.tries_left {
            Some(n) if n > 0 => format!("trial ({n} tries left)"),
            _ => s.state.to_owned(),
        };
        let version = match (&s.version, &s.label, &s.id) {
            (Some(v), Some(label), Some(id)) => format!("version {v} \"{label}\" ({id})"),
            _ => "no version".to_owned(),
        };
        let mut marks = Vec::new();
        if s.booted {
            marks.push("booted");
        }
        if s.boots_next {
            marks.push("boots next");
        }
        let marks = if marks.is_empty() {
            String::new()
        } else {
            format!(" [{}]", marks.join(", "))
        };
        let _ = writeln!(out, "slot {}:          {state}, {version}{marks}", s.slot);
    }
    let _ = match r.pending_reboot {
        Some(v) => writeln!(
            out,
            "pending reboot:  yes, version {v} boots at the next reboot"
        ),
        None => writeln!(out, "pending reboot:  no"),
    };
    let latest = r
        .latest_known
        .map_or("unknown".to_owned(), |v| format!("version {v}"));
    let _ = writeln!(
        out,
        "channel:         {} (latest known: {latest})",
        r.channel
    );
    let _ = match &r.last_check {
        Some(c) => writeln!(out, "last check:      {}: {}", when(&c.at), c.result),
        None => writeln!(out, "last check:      never"),
    };
    if let Some(e) = &r.last_error {
        let _ = writeln!(out, "last error:      {}: {}", when(&e.at), e.message);
    }
    if r.failed_versions.is_empty() {
        let _ = writeln!(out, "failed versions: none");
    }
    for f in &r.failed_versions {
        let _ = writeln!(
            out,
            "failed version:  {} \"{}\" ({}) at {}: {}",
            f.version,
            f.label,
            f.id,
            when(&f.at),
            f.reason
        );
    }
    if r.update_running {
        let _ = writeln!(out, "update running:  yes");
    }
    out
}

/// Whether another run holds the update lock right now.
fn update_running(dir: &StateDir) -> anyhow::Result<bool> {
    match dir.lock(Duration::ZERO) {
        Ok(_) => Ok(false),
        Err(LockError::Busy { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.device.load_config()?;
    let mut host = args.device.open_host()?;
    let bootloader = host.disk.bootloader()?.to_string();
    let status = host
        .disk
        .boot_control()?
        .status()
        .context("reading the boot state")?;
    let dir = StateDir::new(&config.state_dir);
    let state = dir
        .load()
        .with_context(|| format!("reading the state in {}", dir.path().display()))?;
    let running = update_running(&dir)?;
    let report = report(
        &host,
        bootloader,
        &status,
        &config.remote.channel,
        state,
        running,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(ExitCode::SUCCESS)
}
