//! Progress reporting: indicatif bars on a terminal, plain periodic lines in
//! a journal.
//!
//! Long operations report through the [`Progress`] trait; binaries pick the
//! implementation with [`for_stderr`].

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress from long operations (image writes, uploads, downloads).
pub trait Progress: Send + Sync {
    /// A new phase begins, e.g. "writing slot a", with its total in bytes if
    /// known.
    fn start(&self, phase: &str, total: Option<u64>);
    /// `bytes` more bytes of the current phase are done.
    fn advance(&self, bytes: u64);
    /// The current phase is complete.
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// How often [`LogProgress`] logs a line when [`for_stderr`] picks it.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// A terminal bar when stderr is a terminal, otherwise periodic log lines
/// (every `LOG_INTERVAL`) for the journal.
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(TerminalProgress::new())
    } else {
        Box::new(LogProgress::new(LOG_INTERVAL))
    }
}

/// An indicatif bar on stderr: phase name, bytes, rate, ETA.
pub(crate) struct TerminalProgress {
    /// The bar of the current phase; each phase gets a fresh one so a
    /// finished bar stays on screen above the next.
    bar: Mutex<ProgressBar>,
}

impl TerminalProgress {
    fn new() -> Self {
        TerminalProgress {
            bar: Mutex::new(ProgressBar::hidden()),
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for TerminalProgress {
    fn start(&self, phase: &str, total: Option<u64>) {
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec}, {eta} left",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                "{prefix} {spinner} {binary_bytes} {binary_bytes_per_sec}",
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the bar templates are valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_owned());
        *self.bar.lock().unwrap() = bar;
    }

    fn advance(&self, bytes: u64) {
        self.bar.lock().unwrap().inc(bytes);
    }

    fn finish(&self) {
        self.bar.lock().unwrap().finish();
    }
}

/// Plain progress lines through `tracing::info!`, at most one per interval,
/// and one final line per phase with its total and rate.
pub(crate) struct LogProgress {
    interval: Duration,
    phase: Mutex<Option<Phase>>,
}

struct Phase {
    name: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl LogProgress {
    fn new(interval: Duration) -> Self {
        LogProgress {
            interval,
            phase: Mutex::new(None),
        }
    }

    fn start_at(&self, phase: &str, total: Option<u64>, now: Instant) {
        *self.phase.lock().unwrap() = Some(Phase {
            name: phase.to_owned(),
            total,
            done: 0,
            started: now,
            last_line: now,
        });
    }

    /// Counts `bytes` and returns the line to log if an interval has passed.
    fn advance_at(&self, bytes: u64, now: Instant) -> Option<String> {
        let mut guard = self.phase.lock().unwrap();
        let phase = guard.as_mut()?;
        phase.done += bytes;
        if now.duration_since(phase.last_line) < self.interval {
            return None;
        }
        phase.last_line = now;
        Some(status_line(
            &phase.name,
            phase.done,
            phase.total,
            now.duration_since(phase.started),
        ))
    }

    fn finish_at(&self, now: Instant) -> Option<String> {
        let phase = self.phase.lock().unwrap().take()?;
        Some(final_line(
            &phase.name,
            phase.done,
            now.duration_since(phase.started),
        ))
    }
}

impl Progress for LogProgress {
    fn start(&self, phase: &str, total: Option<u64>) {
        self.start_at(phase, total, Instant::now());
    }

    fn advance(&self, bytes: u64) {
        if let Some(line) = self.advance_at(bytes, Instant::now()) {
            tracing::info!("{line}");
        }
    }

    fn finish(&self) {
        if let Some(line) = self.finish_at(Instant::now()) {
            tracing::info!("{line}");
        }
    }
}

/// "writing slot b: 312 MiB of 1.0 GiB (31%), 210 MiB/s, about 3 s left"
fn status_line(phase: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = bytes_per_second(done, elapsed);
    let Some(total) = total else {
        return format!("{phase}: {}, {}/s", human_bytes(done), human_bytes(rate));
    };
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let mut line = format!(
        "{phase}: {} of {} ({percent}%), {}/s",
        human_bytes(done),
        human_bytes(total),
        human_bytes(rate)
    );
    if rate > 0 {
        let left = Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate as f64);
        line.push_str(&format!(", about {} left", human_duration(left)));
    }
    line
}

/// "writing slot b: 1.0 GiB in 4.9 s, 210 MiB/s"
fn final_line(phase: &str, done: u64, elapsed: Duration) -> String {
    format!(
        "{phase}: {} in {}, {}/s",
        human_bytes(done),
        human_duration(elapsed),
        human_bytes(bytes_per_second(done, elapsed))
    )
}

fn bytes_per_second(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

/// Binary units, two significant digits below 10 ("1.0 GiB", "312 MiB").
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// "0.4 s", "12 s", "3 min 5 s", "2 h 10 min".
fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 10 {
        format!("{:.1} s", duration.as_secs_f64())
    } else if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {} min", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(312 * MIB), "312 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn human_duration_scales() {
        assert_eq!(human_duration(Duration::from_millis(400)), "0.4 s");
        assert_eq!(human_duration(Duration::from_secs(12)), "12 s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(human_duration(Duration::from_secs(7800)), "2 h 10 min");
    }

    #[test]
    fn status_line_reads_like_the_journal_example() {
        let line = status_line(
            "writing slot b",
            312 * MIB,
            Some(1 << 30),
            Duration::from_secs_f64(312.0 / 210.0),
        );
        assert_eq!(
            line,
            "writing slot b: 312 MiB of 1.0 GiB (30%), 210 MiB/s, about 3.4 s left"
        );
        assert_eq!(
            status_line("downloading", 5 * MIB, None, Duration::from_secs(1)),
            "downloading: 5.0 MiB, 5.0 MiB/s"
        );
        assert_eq!(
            final_line("writing slot b", 1 << 30, Duration::from_secs(4)),
            "writing slot b: 1.0 GiB in 4.0 s, 256 MiB/s"
        );
    }

    #[test]
    fn log_progress_speaks_once_per_interval_and_at_the_end() {
        let progress = LogProgress::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(progress.advance_at(1, t0), None, "no phase started yet");
        progress.start_at("writing slot a", Some(100 * MIB), t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(progress.advance_at(10 * MIB, at(1)), None);
        assert_eq!(progress.advance_at(10 * MIB, at(4)), None);
        assert_eq!(
            progress.advance_at(20 * MIB, at(5)).as_deref(),
            Some("writing slot a: 40 MiB of 100 MiB (40%), 8.0 MiB/s, about 7.5 s left")
        );
        assert_eq!(progress.advance_at(10 * MIB, at(9)), None);
        assert!(progress.advance_at(10 * MIB, at(10)).is_some());
        assert_eq!(
            progress.finish_at(at(12)).as_deref(),
            Some("writing slot a: 60 MiB in 12 s, 5.0 MiB/s")
        );
        assert_eq!(progress.finish_at(at(13)), None, "the phase is over");
    }
}
