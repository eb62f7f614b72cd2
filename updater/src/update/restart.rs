//! Rebooting into a freshly installed version, as the reboot policy says
//! ([`crate::reboot_policy::plan`] decides when; this carries it out).
//!
//! - now: after the plan's delay (logged first, so the journal says why the
//!   machine went down), `systemctl reboot` when systemd runs, else
//!   `reboot` (busybox's signals init, which the QEMU fixtures use);
//! - later (outside the reboot window): a transient systemd timer,
//!   `systemd-run --unit=abnix-reboot --on-calendar=<local time> systemctl
//!   reboot`. Chosen over `shutdown -r HH:MM` because it is an ordinary
//!   unit: `systemctl list-timers` shows it, `systemctl stop
//!   abnix-reboot.timer` cancels it, and no wall message is broadcast hours
//!   ahead. A calendar time without a zone is local time
//!   (systemd.time(7)). It lives until it fires, so a later run finds it
//!   and leaves it. Without systemd nothing is scheduled: the next check
//!   inside the window finds the pending trial and reboots then;
//! - never: nothing; the version boots whenever the machine reboots.
//!
//! Whether systemd runs is sd_booted(3)'s test: `/run/systemd/system/`
//! exists.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::reboot_policy::RebootPlan;
use abnix_formats::slot::Slot;

/// The transient unit that reboots at the window.
pub(crate) const SCHEDULED_UNIT: &str = "abnix-reboot";

/// Whether the machine runs systemd (sd_booted(3)).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The command line that reboots the machine now.
pub(crate) fn reboot_command(systemd: bool) -> Vec<String> {
    if systemd {
        vec!["systemctl".into(), "reboot".into()]
    } else {
        vec!["reboot".into()]
    }
}

/// The command line that reboots the machine at local time `at`.
pub(crate) fn schedule_command(at: NaiveDateTime) -> Vec<String> {
    vec![
        "systemd-run".into(),
        format!("--unit={SCHEDULED_UNIT}"),
        "--description=abnix: reboot into the new version inside the reboot window".into(),
        format!("--on-calendar={}", at.format("%Y-%m-%d %H:%M:%S")),
        "systemctl".into(),
        "reboot".into(),
    ]
}

/// The command line that tells whether the reboot is scheduled already
/// (exit 0 when the timer is active).
pub(crate) fn scheduled_query() -> Vec<String> {
    vec![
        "systemctl".into(),
        "is-active".into(),
        "--quiet".into(),
        format!("{SCHEDULED_UNIT}.timer"),
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("running {command}: {reason}")]
pub struct RestartError {
    command: String,
    reason: String,
}

/// Runs a command line; `Ok(false)` when it ran and exited non-zero.
fn run(command: &[String]) -> Result<bool, RestartError> {
    let error = |reason: String| RestartError {
        command: command.join(" "),
        reason,
    };
    let (program, args) = command.split_first().expect("a command line is not empty");
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        tracing::debug!(
            "{}: {}; {}",
            command.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.status.success())
}

fn run_checked(command: &[String]) -> Result<(), RestartError> {
    if run(command)? {
        Ok(())
    } else {
        Err(RestartError {
            command: command.join(" "),
            reason: "it failed (see the debug log)".into(),
        })
    }
}

/// Carries out `plan` for `version`, now waiting in `slot`; each branch
/// logs when the new version will boot.
pub fn carry_out(plan: RebootPlan, slot: Slot, version: u64) -> Result<(), RestartError> {
    let systemd = systemd_running();
    match plan {
        RebootPlan::Never => {
            tracing::info!(
                "version {version} (slot {slot}) boots at the next reboot (reboot policy: never)"
            );
            Ok(())
        }
        RebootPlan::Now { delay_secs } => {
            tracing::info!("rebooting into version {version} (slot {slot}) in {delay_secs} s");
            std::thread::sleep(Duration::from_secs(delay_secs));
            run_checked(&reboot_command(systemd))
        }
        RebootPlan::At(at) if systemd => {
            if run(&scheduled_query())? {
                tracing::info!(
                    "version {version} (slot {slot}) waits for the reboot already scheduled by {SCHEDULED_UNIT}.timer"
                );
                return Ok(());
            }
            run_checked(&schedule_command(at))?;
            tracing::info!(
                "rebooting into version {version} (slot {slot}) at {at} local time, when the reboot window opens"
            );
            Ok(())
        }
        RebootPlan::At(at) => {
            tracing::warn!(
                "version {version} (slot {slot}) waits for the reboot window at {at}: without systemd nothing is scheduled, the first check inside the window reboots"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        assert_eq!(reboot_command(true), ["systemctl", "reboot"]);
        assert_eq!(reboot_command(false), ["reboot"]);
        let at = NaiveDateTime::parse_from_str("2026-03-01 02:00", "%Y-%m-%d %H:%M").unwrap();
        let schedule = schedule_command(at);
        assert_eq!(schedule[0], "systemd-run");
        assert!(schedule.contains(&"--unit=abnix-reboot".to_owned()));
        assert!(schedule.contains(&"--on-calendar=2026-03-01 02:00:00".to_owned()));
        assert_eq!(schedule[schedule.len() - 2..], ["systemctl", "reboot"]);
        assert_eq!(
            scheduled_query(),
            ["systemctl", "is-active", "--quiet", "abnix-reboot.timer"]
        );
    }
}
