//! `abnix-update status`: the booted slot, both slots, what the last check
//! found, when the next one is due, failed versions and whether a reboot is
//! pending. Reads only: no network, nothing written (a corrupt state file
//! is reported, not set aside; no lock file is created).

use std::fmt::Write as _;
use std::process::ExitCode;

use abnix_core::blockdev::SysRoot;
use abnix_core::boot::{BootStatus, SlotState, SlotStatus};
use abnix_core::config::Config;
use abnix_core::host::Host;
use abnix_core::state::{CheckRecord, CorruptState, ErrorRecord, FailedVersion, State, StateDir};
use abnix_core::update::schedule::{boot_time, check_schedule};
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
    /// The channel's latest version as of the last check that verified it
    /// (later checks may have failed), and when that was.
    latest_known: Option<u64>,
    latest_known_at: Option<DateTime<Utc>>,
    last_check: Option<CheckRecord>,
    /// The config's check_interval.
    check_interval_secs: u64,
    /// When the update timer checks next (its random delay aside).
    next_check_due: Option<DateTime<Utc>>,
    /// A whole interval and more has passed since a check was due: the
    /// timer may not be running.
    check_overdue: bool,
    last_error: Option<ErrorRecord>,
    failed_versions: Vec<FailedVersion>,
    /// Why the state file could not be read; the next `check` or `update`
    /// sets it aside and starts afresh.
    state_corrupt: Option<String>,
    update_running: bool,
}

/// What the state directory holds, read without changing it.
struct Stored {
    state: State,
    corrupt: Option<CorruptState>,
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
    config: &Config,
    stored: Stored,
    booted_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Report {
    let state = stored.state;
    let schedule = check_schedule(
        state.last_check.as_ref().map(|c| c.at),
        booted_at,
        config.check_interval,
        now,
    );
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
        channel: config.remote.channel.clone(),
        latest_known: state.latest.as_ref().map(|l| l.version),
        latest_known_at: state.latest.as_ref().map(|l| l.at),
        last_check: state.last_check,
        check_interval_secs: config.check_interval.as_secs(),
        next_check_due: schedule.next_due,
        // A run that takes long (a slow download) is not a stopped timer.
        check_overdue: schedule.overdue && !stored.update_running,
        last_error: state.last_error,
        failed_versions: state.failed,
        state_corrupt: stored.corrupt.map(|c| c.to_string()),
        update_running: stored.update_running,
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
    let latest = match (r.latest_known, &r.latest_known_at) {
        (Some(v), Some(at)) => format!("version {v}, seen {}", when(at)),
        _ => "unknown".to_owned(),
    };
    let _ = writeln!(
        out,
        "channel:         {} (latest known: {latest})",
        r.channel
    );
    let _ = match &r.last_check {
        Some(c) => writeln!(out, "last check:      {}: {}", when(&c.at), c.result),
        None => writeln!(out, "last check:      never"),
    };
    let _ = match (&r.next_check_due, r.check_overdue) {
        (Some(due), true) => writeln!(
            out,
            "next check:      OVERDUE: one was due {} and none has run since; \
             the update timer may not be running (systemctl status abnix-update.timer)",
            when(due)
        ),
        (Some(due), false) => writeln!(out, "next check:      due {}", when(due)),
        (None, _) => writeln!(out, "next check:      at the update timer's first run"),
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
    if let Some(corrupt) = &r.state_corrupt {
        let _ = writeln!(
            out,
            "state:           {corrupt}; the next check or update sets it aside and starts afresh"
        );
    }
    if r.update_running {
        let _ = writeln!(out, "update running:  yes");
    }
    out
}

fn read_state_dir(dir: &StateDir) -> anyhow::Result<Stored> {
    let (state, corrupt) = match dir
        .read()
        .with_context(|| format!("reading the state in {}", dir.path().display()))?
    {
        Ok(state) => (state, None),
        Err(corrupt) => (State::default(), Some(corrupt)),
    };
    let update_running = dir
        .is_locked()
        .with_context(|| format!("reading the update lock in {}", dir.path().display()))?;
    Ok(Stored {
        state,
        corrupt,
        update_running,
    })
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
    let stored = read_state_dir(&StateDir::new(&config.state_dir))?;
    // The host's boot time says whether a check is due since boot; a disk
    // or command line given on the command line is not this host's boot.
    let booted_at = if args.device.overridden() {
        None
    } else {
        boot_time(&SysRoot::default())
    };
    let report = report(
        &host,
        bootloader,
        &status,
        &config,
        stored,
        booted_at,
        Utc::now(),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(ExitCode::SUCCESS)
}
