//! What `check_interval` means on the device: when the update timer's next
//! check is due, and whether checks have stopped.
//!
//! The timer (systemd/abnix-update.timer) checks a minute after boot and
//! then every `check_interval` after the last run, each time after a random
//! delay. The config cannot make the timer run, so `status` compares the
//! state's last check with the interval: a machine that has not checked
//! for two intervals and some slack has a timer that is not running (or
//! runs that fail before they check), and says so.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use abnix_core::blockdev::SysRoot;

/// The timer's first check after boot (its `OnBootSec=`).
pub(crate) const FIRST_CHECK_AFTER_BOOT: Duration = Duration::from_secs(60);

/// How far past the missed check a check may still come before it is
/// overdue: the timer's random delay (`RandomizedDelaySec=`, 30 min by
/// default), the network wait (5 min) and the run itself.
pub(crate) const OVERDUE_SLACK: Duration = Duration::from_secs(3600);

/// When the next check is due and whether one is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSchedule {
    /// When the timer runs next, its random delay aside; `None` when
    /// neither a check since boot nor the boot time is known.
    pub next_due: Option<DateTime<Utc>>,
    /// A whole interval (plus slack) has passed since `next_due` without a
    /// check: the timer is likely not running.
    pub overdue: bool,
}

/// The schedule, given the last recorded check, the boot time (when known)
/// and the interval. A check before the last boot does not count: the
/// timer's first check of a boot comes `FIRST_CHECK_AFTER_BOOT` after it,
/// so a machine that was switched off is not overdue when it comes back.
pub fn check_schedule(
    last_check: Option<DateTime<Utc>>,
    booted_at: Option<DateTime<Utc>>,
    interval: Duration,
    now: DateTime<Utc>,
) -> CheckSchedule {
    let since_boot = last_check.filter(|at| booted_at.is_none_or(|boot| *at >= boot));
    let next_due = match (since_boot, booted_at) {
        (Some(at), _) => after(at, interval),
        (None, Some(boot)) => after(boot, FIRST_CHECK_AFTER_BOOT),
        (None, None) => None,
    };
    let overdue = next_due
        .and_then(|due| after(due, interval.saturating_add(OVERDUE_SLACK)))
        .is_some_and(|limit| now > limit);
    CheckSchedule { next_due, overdue }
}

/// `time` + `duration`, unless that is beyond chrono's range (a config may
/// set an absurd interval; it must not crash `status`).
fn after(time: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
    time.checked_add_signed(TimeDelta::from_std(duration).ok()?)
}

/// When the running kernel booted (`btime` in `proc/stat` under `sys`).
pub fn boot_time(sys: &SysRoot) -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string(sys.root.join("proc/stat")).ok()?;
    let secs = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    DateTime::from_timestamp(secs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + hours * 3600, 0).unwrap()
    }

    #[test]
    fn the_next_check_is_an_interval_after_the_last() {
        let s = check_schedule(Some(at(0)), Some(at(-10)), 6 * HOUR, at(1));
        assert_eq!(s.next_due, Some(at(6)));
        assert!(!s.overdue);
        // Late, but one missed run is the random delay or a slow network.
        let s = check_schedule(Some(at(0)), Some(at(-10)), 6 * HOUR, at(12));
        assert!(!s.overdue);
    }

    #[test]
    fn overdue_after_two_intervals_and_the_slack() {
        let limit = 12 * 3600 + OVERDUE_SLACK.as_secs() as i64;
        let last = at(0);
        let just = last + chrono::Duration::seconds(limit);
        assert!(!check_schedule(Some(last), None, 6 * HOUR, just).overdue);
        let past = just + chrono::Duration::seconds(1);
        let s = check_schedule(Some(last), None, 6 * HOUR, past);
        assert!(s.overdue);
        assert_eq!(s.next_due, Some(at(6)));
        // The interval is the config's: with 1h the same gap is long.
        assert!(check_schedule(Some(last), None, HOUR, at(4)).overdue);
    }

    #[test]
    fn a_machine_back_from_being_off_is_due_after_boot() {
        // Last checked a week ago, booted ten minutes ago.
        let booted = at(0) - chrono::Duration::minutes(10);
        let s = check_schedule(Some(at(-24 * 7)), Some(booted), 6 * HOUR, at(0));
        assert_eq!(
            s.next_due,
            Some(booted + chrono::Duration::from_std(FIRST_CHECK_AFTER_BOOT).unwrap())
        );
        assert!(!s.overdue);
        // Up for a day and still no check since boot.
        let s = check_schedule(Some(at(-24 * 7)), Some(booted), 6 * HOUR, at(24));
        assert!(s.overdue);
        let s = check_schedule(None, Some(booted), 6 * HOUR, at(24));
        assert!(s.overdue, "never checked");
    }

    #[test]
    fn an_absurd_interval_is_never_due() {
        let s = check_schedule(Some(at(0)), None, Duration::MAX, at(1));
        assert_eq!(s.next_due, None);
        assert!(!s.overdue);
    }

    #[test]
    fn nothing_is_due_when_nothing_is_known() {
        let s = check_schedule(None, None, 6 * HOUR, at(1000));
        assert_eq!(
            s,
            CheckSchedule {
                next_due: None,
                overdue: false
            }
        );
    }

    #[test]
    fn boot_time_from_proc_stat() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = SysRoot::new(tmp.path());
        assert_eq!(boot_time(&sys), None, "no proc/stat");
        std::fs::create_dir(tmp.path().join("proc")).unwrap();
        std::fs::write(
            tmp.path().join("proc/stat"),
            "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1800000000\nprocesses 7\n",
        )
        .unwrap();
        assert_eq!(boot_time(&sys), Some(at(0)));
    }
}
