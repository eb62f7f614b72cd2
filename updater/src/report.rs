//! This host's report (issue 26, docs/cli.md "Reports"): after a check, an
//! update, mark-good or a rollback, and once the state is safe on disk, a
//! small JSON object ([`abnix_formats::report::Report`]) goes to
//! `<prefix>/<channel>/hosts/<machine-id>.json`, with credentials of its
//! own that can only write there.
//!
//! Reporting never fails or holds up what it reports on: the whole write,
//! connection and retries included, ends after [`REPORT_DEADLINE`], and
//! every error is logged as a warning and dropped. Its rate is bounded: a
//! report whose slots, versions and failed versions are those of the last
//! one sent goes at most once per [`MIN_REPORT_INTERVAL`]; one that differs
//! there goes at once (those change only with a write to the disk).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::host::Host;
use crate::remote::{
    CredentialSource, Remote, RemoteConfig, RetryPolicy, Timeouts, TransferLimits,
};
use crate::state_dir::{State, StateDir};
use crate::update::{pending_trial, reported_state};
use abnix_core::boot::BootStatus;
use abnix_formats::machine_id::MachineId;
use abnix_formats::report::{
    FailedReport, LastResult, Report, ReportEvent, SlotReport, MAX_REPORT_BYTES, REPORT_FORMAT,
};
use abnix_formats::slot::Slot;

/// Where reports go and with which credentials (the config's `report_*`
/// keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTarget {
    /// The config's `report_bucket`, else its `bucket`.
    pub bucket: String,
    /// A credentials file (as `credentials`) of a key that can only write
    /// the reports.
    pub credentials: PathBuf,
}

/// The longest a report may take, from the first connection to the answer.
pub const REPORT_DEADLINE: Duration = Duration::from_secs(10);
/// The shortest time between two reports that say the same about the slots.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// The last report sent, in the state directory: what the rate is
/// measured against.
const LAST_SENT_FILE: &str = "report.json";

/// What writes this host's reports.
pub struct Reporter<'a> {
    pub config: &'a Config,
    pub state_dir: &'a StateDir,
    /// `/etc/machine-id`, or another file for tests and images.
    pub machine_id_file: &'a Path,
}

impl Reporter<'_> {
    /// Writes the report after `event`, if reporting is on and the rate
    /// allows; logs what went wrong as a warning and never fails.
    pub fn after(&self, event: ReportEvent, host: &mut Host) {
        let Some(target) = &self.config.report else {
            return;
        };
        if let Err(e) = self.send(event, host, target) {
            tracing::warn!(
                "no report written after {}: {}",
                event.name(),
                abnix_core::errors::error_text(e.as_ref())
            );
        }
    }

    fn send(
        &self,
        event: ReportEvent,
        host: &mut Host,
        target: &ReportTarget,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let text = fs::read_to_string(self.machine_id_file)
            .with_context(|| format!("reading {}", self.machine_id_file.display()))?;
        let machine_id = MachineId::from_file_text(&text)
            .with_context(|| format!("in {}", self.machine_id_file.display()))?;
        let status = host
            .disk
            .boot_control()
            .context("the ESP")?
            .status()
            .context("reading the boot state")?;
        let state = self
            .state_dir
            .read()
            .context("reading the state")?
            .unwrap_or_default();
        let report = build(
            event,
            machine_id,
            self.config,
            &state,
            host.booted.as_ref().ok().copied(),
            &status,
            Utc::now(),
        );
        let last_path = self.state_dir.path().join(LAST_SENT_FILE);
        let last = fs::read(&last_path)
            .ok()
            .and_then(|bytes| Report::parse(&bytes).ok());
        if !due(last.as_ref(), &report) {
            tracing::debug!(
                "report skipped: the last one said the same less than {MIN_REPORT_INTERVAL:?} ago"
            );
            return Ok(());
        }
        let bytes = report.to_json();
        anyhow::ensure!(
            bytes.len() <= MAX_REPORT_BYTES,
            "the report is {} bytes",
            bytes.len()
        );
        let remote =
            Remote::new(report_remote(&self.config.remote, target)).context("the report bucket")?;
        let key = remote
            .config()
            .object_key(&report.machine_id.report_object_name());
        remote
            .put_bytes(&key, &bytes)
            .with_context(|| format!("writing {key} in bucket {}", target.bucket))?;
        tracing::info!("report written to {key}");
        // Only a measure of the rate: losing it costs one early report.
        let temporary = last_path.with_extension("json.tmp");
        if let Err(e) =
            fs::write(&temporary, &bytes).and_then(|()| fs::rename(&temporary, &last_path))
        {
            tracing::warn!(
                "cannot keep the report sent in {}: {e}",
                last_path.display()
            );
        }
        Ok(())
    }
}

/// The bucket settings of a report: the device's endpoint and prefix,
/// the report bucket and credentials, and everything bounded by
/// [`REPORT_DEADLINE`].
fn report_remote(remote: &RemoteConfig, target: &ReportTarget) -> RemoteConfig {
    RemoteConfig {
        bucket: target.bucket.clone(),
        credentials: CredentialSource::File(target.credentials.clone()),
        retry: RetryPolicy {
            max_attempts: 2,
            max_total: REPORT_DEADLINE,
            ..RetryPolicy::default()
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(5),
        },
        limits: TransferLimits {
            deadline: Some(REPORT_DEADLINE),
            min_rate: None,
        },
        ..remote.clone()
    }
}

/// The report of this host as it is now.
fn build(
    event: ReportEvent,
    machine_id: MachineId,
    config: &Config,
    state: &State,
    booted: Option<Slot>,
    status: &BootStatus,
    now: DateTime<Utc>,
) -> Report {
    let slots = status
        .slots
        .iter()
        .map(|slot| SlotReport {
            slot: slot.slot,
            state: reported_state(slot.state),
            version: slot.info.as_ref().map(|i| i.version),
            label: slot.info.as_ref().map(|i| i.label.clone()),
        })
        .collect();
    Report {
        format: REPORT_FORMAT,
        machine_id,
        at: now,
        event,
        abnix_version: env!("CARGO_PKG_VERSION").into(),
        booted,
        version: booted.and_then(|b| status.slot(b).info.as_ref().map(|i| i.version)),
        slots,
        pending_reboot: booted
            .and_then(|b| pending_trial(status, b))
            .and_then(|slot| slot.info.as_ref().map(|i| i.version)),
        last_result: state.last_check.as_ref().map(|check| LastResult {
            at: check.at,
            latest: check.latest,
            result: check.result.clone(),
        }),
        failed_versions: state
            .failed
            .iter()
            .map(|f| FailedReport {
                version: f.version,
                at: f.at,
                reason: f.reason.clone(),
            })
            .collect(),
        check_interval_secs: config.check_interval.as_secs(),
    }
    .bounded()
}

/// Whether `report` goes out, the last one sent being `last`: at once when
/// what it says about the slots differs, else once the last is
/// [`MIN_REPORT_INTERVAL`] old.
fn due(last: Option<&Report>, report: &Report) -> bool {
    let Some(last) = last else {
        return true;
    };
    let slots_of = |r: &Report| {
        (
            r.booted,
            r.slots.clone(),
            r.pending_reboot,
            r.failed_versions
                .iter()
                .map(|f| f.version)
                .collect::<Vec<_>>(),
        )
    };
    let since = report.at.signed_duration_since(last.at);
    slots_of(last) != slots_of(report)
        || since.to_std().is_ok_and(|since| since >= MIN_REPORT_INTERVAL)
        // A clock that went back does not silence the host.
        || since < chrono::Duration::zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_dir::FailedVersion;
    use abnix_core::boot::{SlotInfo, SlotState, SlotStatus};
    use abnix_formats::report::ReportedState;
    use uuid::Uuid;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> Config {
        Config::parse(
            "bucket = \"fleet\"\nchannel = \"kiosk\"\n\
             trusted_keys = [\"abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=\"]\n",
            Path::new("/etc/abnix/config.toml"),
        )
        .unwrap()
    }

    fn status(b: SlotState, next: Slot) -> BootStatus {
        let info = |version: u64| SlotInfo {
            version,
            id: Uuid::from_u128(version.into()),
            label: format!("kiosk {version}"),
            cmdline: String::new(),
        };
        BootStatus {
            next: Some(next),
            slots: [
                SlotStatus {
                    slot: Slot::A,
                    state: SlotState::Good,
                    info: Some(info(1)),
                },
                SlotStatus {
                    slot: Slot::B,
                    state: b,
                    info: Some(info(2)),
                },
            ],
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn report(status: &BootStatus, state: &State, secs: i64) -> Report {
        build(
            ReportEvent::Check,
            ID.parse().unwrap(),
            &config(),
            state,
            Some(Slot::A),
            status,
            at(secs),
        )
    }

    #[test]
    fn a_report_says_what_status_says() {
        let pending = status(SlotState::Trial { tries_left: 3 }, Slot::B);
        let mut state = State::default();
        state.record_failed(FailedVersion {
            version: 7,
            id: Uuid::from_u128(7),
            label: "kiosk 7".into(),
            at: at(0),
            reason: "its trial fell back".into(),
        });
        let report = report(&pending, &state, 0);
        assert_eq!(report.version, Some(1));
        assert_eq!(report.pending_reboot, Some(2));
        assert_eq!(report.slots[1].state, ReportedState::Trial);
        assert_eq!(report.failed_versions[0].version, 7);
        assert_eq!(report.check_interval_secs, 6 * 3600);
        assert_eq!(Report::parse(&report.to_json()).unwrap(), report);
    }

    #[test]
    fn the_same_report_goes_at_most_once_per_interval_a_changed_one_at_once() {
        let state = State::default();
        let pending = status(SlotState::Trial { tries_left: 3 }, Slot::B);
        let first = report(&pending, &state, 0);
        assert!(due(None, &first));
        let interval = MIN_REPORT_INTERVAL.as_secs() as i64;
        assert!(!due(Some(&first), &report(&pending, &state, 1)));
        assert!(!due(Some(&first), &report(&pending, &state, interval - 1)));
        assert!(due(Some(&first), &report(&pending, &state, interval)));
        assert!(
            due(Some(&first), &report(&pending, &state, -5)),
            "clock went back"
        );
        let failed = status(SlotState::Trial { tries_left: 0 }, Slot::A);
        assert!(
            due(Some(&first), &report(&failed, &state, 1)),
            "slots changed"
        );
    }
}
