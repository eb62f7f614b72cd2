//! `abnix-update status`: the booted slot, both slots, what the last check
//! found, whether the channel is stale and since when, when the next check
//! is due, the rollback floor, failed versions (from the ESP and the state
//! file), revoked keys, whether a reboot is pending, and where the latest
//! version's staged rollout stands and when this host's turn comes. Reads
//! only: no
//! network, nothing written (a corrupt state file is reported, not set
//! aside; no lock file is created).

use std::fmt::Write as _;
use std::process::ExitCode;

use abnix_core::blockdev::SysRoot;
use abnix_core::boot::{BootStatus, SlotState, SlotStatus};
use abnix_formats::machine_id::MachineId;
use abnix_formats::rollout::Rollout;
use abnix_updater::config::{ClockTrust, Config};
use abnix_updater::host::Host;
use abnix_updater::state_dir::{
    CheckRecord, CorruptState, ErrorRecord, FailedVersion, State, StateDir,
};
use abnix_updater::update::machine::{rollback_floor, rollout_place, Clock, DiskState};
use abnix_updater::update::schedule::{boot_time, check_schedule};
use abnix_updater::update::{
    clock_synchronized, pending_trial, read_machine_id, records, state_name,
};
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
    /// None on an air-gapped host (no bucket configured).
    channel: Option<String>,
    /// The channel's latest version as of the last check that verified it
    /// (later checks may have failed), and when that was; when its meta was
    /// signed and expires.
    latest_known: Option<u64>,
    latest_known_at: Option<DateTime<Utc>>,
    latest_signed_at: Option<DateTime<Utc>>,
    latest_expires: Option<DateTime<Utc>>,
    /// Since when the channel is stale: the expiry of the newest meta
    /// known, once it has passed (by the device's notion of now).
    stale_since: Option<DateTime<Utc>>,
    /// No version at or below this is installed (the highest version the
    /// slots hold, by their signed metas), and the slot holding it.
    rollback_floor: Option<u64>,
    rollback_floor_slot: Option<String>,
    last_check: Option<CheckRecord>,
    /// The config's check_interval.
    check_interval_secs: u64,
    /// When the update timer checks next (its random delay aside).
    next_check_due: Option<DateTime<Utc>>,
    /// A whole interval and more has passed since a check was due: the
    /// timer may not be running.
    check_overdue: bool,
    last_error: Option<ErrorRecord>,
    /// From the ESP's record and the state file.
    failed_versions: Vec<FailedVersion>,
    /// Keys a recovery key revoked (recorded on the ESP) or the config
    /// lists as revoked.
    revoked_keys: Vec<String>,
    /// Why the state file could not be read; the next `check` or `update`
    /// sets it aside and starts afresh.
    state_corrupt: Option<String>,
    update_running: bool,
    /// The staged rollout of the latest known version, if it has one.
    rollout: Option<RolloutReport>,
}

/// Where the latest known version's staged rollout stands, and this host
/// in it.
#[derive(Debug, Serialize)]
struct RolloutReport {
    version: u64,
    start: DateTime<Utc>,
    over_secs: u64,
    halted_at: Option<DateTime<Utc>>,
    /// The share of hosts the rollout has reached (0 to 1), frozen when it
    /// was halted.
    progress: f64,
    /// This host's place (0 enters first, 1 last); null without a usable
    /// machine id (it then comes last).
    place: Option<f64>,
    /// When the rollout reaches this host.
    turn: DateTime<Utc>,
    /// Whether it has (by this host's notion of now); a halted rollout lets
    /// no host start, reached or not.
    reached: bool,
}

fn rollout_report(
    version: u64,
    rollout: Rollout,
    machine_id: Option<&MachineId>,
    now: DateTime<Utc>,
) -> RolloutReport {
    let place = rollout_place(machine_id, version);
    let turn = rollout.turn(place);
    RolloutReport {
        version,
        start: rollout.start,
        over_secs: rollout.over_secs,
        halted_at: rollout.halted_at,
        progress: rollout.progress(now),
        place: machine_id.map(|_| place.fraction()),
        turn,
        reached: now >= turn,
    }
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

/// The failed versions of the ESP's record, then those only the state file
/// has.
fn failed_versions(esp: &[FailedVersion], state: Vec<FailedVersion>) -> Vec<FailedVersion> {
    let mut all = esp.to_vec();
    for failed in state {
        if !all
            .iter()
            .any(|f| f.version == failed.version && f.id == failed.id)
        {
            all.push(failed);
        }
    }
    all
}

#[allow(clippy::too_many_arguments)]
fn report(
    host: &Host,
    bootloader: String,
    disk: &DiskState,
    config: &Config,
    stored: Stored,
    booted_at: Option<DateTime<Utc>>,
    clock: Clock,
    revoked_keys: Vec<String>,
    machine_id: Option<&MachineId>,
) -> Report {
    let status = &disk.boot;
    let state = stored.state;
    let now = clock.now;
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
    let expires = state.latest.as_ref().and_then(|l| l.expires);
    let stale_since = expires.filter(|&expires| clock.now(None).is_some_and(|now| now >= expires));
    let floor = rollback_floor(disk, host.booted.as_ref().ok().copied());
    let rollout = state.latest.as_ref().and_then(|latest| {
        let rollout = latest.rollout?;
        let now = clock.now(None).unwrap_or(rollout.start);
        Some(rollout_report(latest.version, rollout, machine_id, now))
    });
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
        channel: config.remote.as_ref().map(|r| r.channel.clone()),
        latest_known: state.latest.as_ref().map(|l| l.version),
        latest_known_at: state.latest.as_ref().map(|l| l.at),
        latest_signed_at: state.latest.as_ref().and_then(|l| l.signed_at),
        latest_expires: expires,
        stale_since,
        rollback_floor: floor.map(|(version, _)| version),
        rollback_floor_slot: floor.map(|(_, slot)| slot.to_string()),
        last_check: state.last_check,
        check_interval_secs: config.check_interval.as_secs(),
        next_check_due: schedule.next_due,
        // A run that takes long (a slow download) is not a stopped timer.
        check_overdue: schedule.overdue && !stored.update_running,
        last_error: state.last_error,
        failed_versions: failed_versions(&disk.failed, state.failed),
        revoked_keys,
        state_corrupt: stored.corrupt.map(|c| c.to_string()),
        update_running: stored.update_running,
        rollout,
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
            .as_deref()
            .unwrap_or("none (air-gapped: installs from bundles)")
    );
    if let Some(since) = &r.stale_since {
        let _ = writeln!(
            out,
            "stale:           since {}: the newest meta of the channel expired; checks refuse it and this host keeps what it runs until the publisher re-signs it (publish --resign)",
            when(since)
        );
    }
    if let Some(rollout) = &r.rollout {
        let _ = writeln!(out, "rollout:         {}", rollout_text(rollout));
    }
    if let (Some(floor), Some(slot)) = (r.rollback_floor, &r.rollback_floor_slot) {
        let _ = writeln!(
            out,
            "rollback floor:  version {floor} (slot {slot}): only newer versions are installed"
        );
    }
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
    for key in &r.revoked_keys {
        let _ = writeln!(out, "revoked key:     {key}");
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

fn rollout_text(r: &RolloutReport) -> String {
    let percent = r.progress * 100.0;
    let staged = format!(
        "version {} staged from {} over {}s",
        r.version,
        when(&r.start),
        r.over_secs
    );
    if let Some(halted) = &r.halted_at {
        return format!(
            "{staged}, halted at {} with {percent:.0}% of hosts reached: hosts that have not installed it do not start",
            when(halted)
        );
    }
    let place = match r.place {
        Some(place) => format!("at {:.1}% of the way", place * 100.0),
        None => "last: no usable machine id".to_owned(),
    };
    let turn = match r.reached {
        true => "has come",
        false => "comes",
    };
    format!(
        "{staged}, {percent:.0}% of hosts reached; this host's turn ({place}) {turn} at {}",
        when(&r.turn)
    )
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
    let (disk, keys) = records::read_disk(&mut host.disk, &config.trusted_keys)
        .context("reading the boot state")?;
    let revoked_keys = keys.revoked().iter().map(ToString::to_string).collect();
    let stored = read_state_dir(&StateDir::new(&config.state_dir))?;
    // The host's boot time says whether a check is due since boot; a disk
    // or command line given on the command line is not this host's boot.
    let booted_at = if args.device.overridden() {
        None
    } else {
        boot_time(&SysRoot::default())
    };
    let clock = Clock {
        now: Utc::now(),
        trusted: config.clock == ClockTrust::Always || clock_synchronized(),
        newest_signed: stored.state.latest.as_ref().and_then(|l| l.signed_at),
    };
    let report = report(
        &host,
        bootloader,
        &disk,
        &config,
        stored,
        booted_at,
        clock,
        revoked_keys,
        read_machine_id(&args.device.machine_id).as_ref(),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(ExitCode::SUCCESS)
}
