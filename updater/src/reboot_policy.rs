//! When to reboot into a freshly installed version: the reboot policy as a
//! pure function of the local time.

use std::fmt;
use std::str::FromStr;

use chrono::{Duration as ChronoDuration, NaiveDateTime, NaiveTime};

/// What the operator chose in the config (`reboot`, `reboot_window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootPolicy {
    /// Reboot right after the update, after a short logged delay.
    Immediate,
    /// Reboot when the local time is inside a daily window.
    Window(DailyWindow),
    /// Never reboot; the new version boots at the next reboot, whenever that is.
    Never,
}

/// A daily window of local time, `start..end`; it may wrap midnight
/// (`22:00-04:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    start: NaiveTime,
    end: NaiveTime,
}

impl DailyWindow {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a daily window: {0:?} (expected HH:MM-HH:MM, e.g. 02:00-04:00)")]
pub struct BadWindow(String);

impl FromStr for DailyWindow {
    type Err = BadWindow;

    fn from_str(s: &str) -> Result<DailyWindow, BadWindow> {
        let bad = || BadWindow(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let parse = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad());
        let window = DailyWindow {
            start: parse(a)?,
            end: parse(b)?,
        };
        if window.start == window.end {
            return Err(bad());
        }
        Ok(window)
    }
}

/// What to do now that a new version waits in the trial slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootPlan {
    /// Reboot after this many seconds.
    Now { delay_secs: u64 },
    /// Reboot at this local time (the next opening of the window).
    At(NaiveDateTime),
    /// Leave it to whoever reboots the machine next.
    Never,
}

/// Delay before an immediate reboot, so the log line saying so gets out.
pub(crate) const IMMEDIATE_DELAY_SECS: u64 = 5;

pub fn plan(policy: RebootPolicy, now: NaiveDateTime) -> RebootPlan {
    match policy {
        RebootPolicy::Immediate => RebootPlan::Now {
            delay_secs: IMMEDIATE_DELAY_SECS,
        },
        RebootPolicy::Never => RebootPlan::Never,
        RebootPolicy::Window(w) if w.contains(now.time()) => RebootPlan::Now { delay_secs: 0 },
        RebootPolicy::Window(w) => {
            let today = now.date().and_time(w.start);
            RebootPlan::At(if today > now {
                today
            } else {
                today + ChronoDuration::days(1)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn window_parse_and_contains() {
        let w: DailyWindow = "02:00-04:00".parse().unwrap();
        assert_eq!(w.to_string(), "02:00-04:00");
        assert!(w.contains(at("2026-01-01 02:00").time()));
        assert!(w.contains(at("2026-01-01 03:59").time()));
        assert!(!w.contains(at("2026-01-01 04:00").time()));
        let wrap: DailyWindow = "22:00-04:00".parse().unwrap();
        assert!(wrap.contains(at("2026-01-01 23:30").time()));
        assert!(wrap.contains(at("2026-01-01 01:00").time()));
        assert!(!wrap.contains(at("2026-01-01 12:00").time()));
        for bad in ["", "02:00", "2-4", "02:00-02:00", "25:00-26:00"] {
            assert!(bad.parse::<DailyWindow>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plans() {
        let w = RebootPolicy::Window("02:00-04:00".parse().unwrap());
        assert_eq!(
            plan(RebootPolicy::Immediate, at("2026-01-01 12:00")),
            RebootPlan::Now {
                delay_secs: IMMEDIATE_DELAY_SECS
            }
        );
        assert_eq!(
            plan(RebootPolicy::Never, at("2026-01-01 12:00")),
            RebootPlan::Never
        );
        assert_eq!(
            plan(w, at("2026-01-01 03:00")),
            RebootPlan::Now { delay_secs: 0 }
        );
        assert_eq!(
            plan(w, at("2026-01-01 01:00")),
            RebootPlan::At(at("2026-01-01 02:00"))
        );
        assert_eq!(
            plan(w, at("2026-01-01 12:00")),
            RebootPlan::At(at("2026-01-02 02:00"))
        );
    }
}
