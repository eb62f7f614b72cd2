//! `abnix-update update`: the update cycle (abnix_updater::update::machine), then
//! the reboot the policy asks for. Exit codes (docs/cli.md): 0 nothing to
//! do, 4 a new version was installed (or was already waiting) and boots at
//! the next reboot, 1 failed or refused (the state file and `status` say
//! why).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use abnix_core::errors::error_text;
use abnix_core::progress;
use abnix_core::units::parse_duration;
use abnix_formats::layout::Arch;
use abnix_formats::report::ReportEvent;
use abnix_updater::config::{ClockTrust, Config};
use abnix_updater::reboot_policy;
use abnix_updater::state_dir::{ErrorRecord, Lock, State, StateDir};
use abnix_updater::update::machine::{
    Clock, Device, Failure, Machine, Mode, NetworkWait, Outcome, Refusal, Setup, Skip, Stage,
};
use abnix_updater::update::notify::{Notifier, NotifyingProgress};
use abnix_updater::update::restart;
use abnix_updater::update::run::Executor;
use abnix_updater::update::{clock_synchronized, read_machine_id};
use anyhow::Context;
use chrono::{Local, Utc};

use super::device::{lock, DeviceArgs};

/// A new version waits for the next reboot (systemd: SuccessExitStatus=4).
pub const EXIT_UPDATED: u8 = 4;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    network: NetworkArgs,
}

#[derive(clap::Args)]
pub struct NetworkArgs {
    /// How long to keep trying, with backoff, while the bucket is
    /// unreachable (e.g. 90s, 5m; 0 tries once).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    network_wait: Duration,
}

/// A finished cycle, with the lock still held.
pub struct CycleRun {
    pub outcome: Outcome,
    pub state_dir: StateDir,
    pub state: State,
    _lock: Lock,
}

/// Runs the cycle under the update lock and records its outcome in the
/// state, whatever it is: `status` must be able to say why.
pub fn run_cycle(
    mode: Mode,
    device: &DeviceArgs,
    config: &Config,
    network: &NetworkArgs,
) -> anyhow::Result<CycleRun> {
    run_cycle_from(mode, None, device, config, network.network_wait)
}

/// [`run_cycle`], from the bundle in `bundle` (with [`Mode::Bundle`]) or
/// the channel.
pub fn run_cycle_from(
    mode: Mode,
    bundle: Option<&Path>,
    device: &DeviceArgs,
    config: &Config,
    network_wait: Duration,
) -> anyhow::Result<CycleRun> {
    let (state_dir, lock) = lock(config)?;
    // The run's deadline and minimum transfer rate (slow retrieval), in the
    // bucket's settings, where every request and read applies them.
    let update = mode != Mode::Check;
    let config = &Config {
        remote: config.remote_for(update),
        ..config.clone()
    };
    let deadline = match update {
        true => config.update_deadline,
        false => config.check_deadline,
    };
    let mut state = state_dir
        .load()
        .with_context(|| format!("reading the state in {}", state_dir.path().display()))?;
    let notifier = Notifier::from_env();
    // Failed versions are only ever added: more after the run means this
    // run found a fallback and recorded it.
    let failed_known = state.failed.len();
    let mut host = device.open_host();
    let outcome = match &mut host {
        Err(e) => Outcome::Failed(Failure {
            stage: Stage::Disk,
            latest: None,
            error: error_text(e.as_ref()),
        }),
        Ok(host) => match host.booted.clone() {
            Err(e) => Outcome::Refused(Refusal::BootedUnknown(e.to_string())),
            Ok(booted) => {
                let slot = host.disk.layout().slot(booted.other());
                let setup = Setup {
                    mode,
                    booted,
                    failed: state.failed.clone(),
                    slot_size: slot.size,
                    tries: u8::try_from(config.tries).context("tries")?,
                    network: NetworkWait {
                        budget: network_wait.min(deadline),
                        ..NetworkWait::DEFAULT
                    },
                    device: Device {
                        channel: config.remote.as_ref().map(|r| r.channel.clone()),
                        arch: Arch::from_root_type(slot.type_guid).unwrap_or_else(Arch::native),
                    },
                    clock: Clock {
                        now: Utc::now(),
                        trusted: config.clock == ClockTrust::Always || clock_synchronized(),
                        newest_signed: state.latest.as_ref().and_then(|l| l.signed_at),
                    },
                    machine_id: read_machine_id(&device.machine_id),
                };
                let terminal = progress::for_stderr();
                let progress = NotifyingProgress::new(terminal.as_ref(), &notifier);
                let executor = Executor::new(
                    &mut host.disk,
                    config,
                    &state_dir,
                    &mut state,
                    &progress,
                    &notifier,
                );
                match bundle {
                    Some(dir) => executor.from_bundle(dir.to_owned()),
                    None => executor,
                }
                .run(Machine::new(setup))
            }
        },
    };
    match mode {
        Mode::Bundle => outcome.record_install(Utc::now(), &mut state),
        Mode::Check | Mode::Update => outcome.record(Utc::now(), &mut state),
    }
    state_dir
        .save(&state)
        .with_context(|| format!("saving the state in {}", state_dir.path().display()))?;
    // The channel's latest version, as a field of the journal's entry.
    let version = outcome.latest().map(|latest| latest.version);
    // A version that failed before is a warning in the run that found its
    // fallback, not again at every later check (`status` keeps it among
    // the failed versions).
    let fell_back_now = state.failed.len() > failed_known;
    match &outcome {
        o if o.is_error() => tracing::error!(version, "{o}"),
        Outcome::Skipped {
            reason: Skip::NotNewer { .. },
            ..
        } => tracing::warn!(version, "{outcome}"),
        Outcome::Skipped {
            reason: Skip::FailedBefore { .. },
            ..
        } if fell_back_now => tracing::warn!(version, "{outcome}"),
        o => tracing::info!(version, "{o}"),
    }
    notifier.status(&outcome.to_string());
    // Once the outcome is saved: the report can only add, never lose.
    if let Ok(host) = &mut host {
        let event = match update {
            true => ReportEvent::Update,
            false => ReportEvent::Check,
        };
        device.reporter(config, &state_dir).after(event, host);
    }
    Ok(CycleRun {
        outcome,
        state_dir,
        state,
        _lock: lock,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.device.load_config()?;
    let mut cycle = run_cycle(Mode::Update, &args.device, &config, &args.network)?;
    let Some((slot, version)) = cycle.outcome.reboot_pending() else {
        return Ok(if cycle.outcome.is_error() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    };
    let plan = reboot_policy::plan(config.reboot, Local::now().naive_local());
    if let Err(e) = restart::carry_out(plan, slot, version) {
        cycle.state.last_error = Some(ErrorRecord {
            at: Utc::now(),
            message: format!("version {version} waits in slot {slot}, but rebooting failed: {e}"),
        });
        cycle.state_dir.save(&cycle.state)?;
        return Err(e).context(format!("rebooting into version {version}"));
    }
    Ok(ExitCode::from(EXIT_UPDATED))
}
