//! The fleet view (issue 26, `abnix-update fleet`): the reports of a
//! channel's hosts, aggregated into hosts per version, hosts on trial,
//! failures per version, hosts not heard from, and the progress towards
//! the channel's latest version; as text, JSON or one static HTML page.
//!
//! Reports are untrusted (any host's report credentials can write any
//! report): they arrive here parsed strictly ([`Report::parse`]), errors
//! are cleaned of control characters before they are shown, and the HTML
//! escapes every text and forbids scripts by its Content-Security-Policy.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::remote::{Remote, RemoteError};
use abnix_formats::machine_id::MachineId;
use abnix_formats::meta::Meta;
use abnix_formats::report::{clean, Report, ReportedState, HOSTS_DIR, MAX_REPORT_BYTES};

/// The most reports one view reads; more are counted, not read.
pub const MAX_REPORTS: usize = 10_000;
/// A report's check interval is taken within these bounds (seconds): a
/// hostile report cannot keep itself from ever being flagged for long.
const INTERVAL_BOUNDS: (u64, u64) = (60, 7 * 24 * 3600);

/// A report as read from the bucket: parsed, or why not.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub machine_id: MachineId,
    pub report: Result<Report, String>,
}

/// What the bucket held besides readable reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Objects under `hosts/` whose name is not `<machine-id>.json`.
    not_reports: usize,
    /// Reports beyond [`MAX_REPORTS`], not read.
    over_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionCount {
    /// `None`: hosts whose booted slot holds no known version.
    version: Option<u64>,
    label: Option<String>,
    hosts: usize,
    /// Of those, booted into it on trial (not yet marked good).
    on_trial: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    version: u64,
    /// Hosts on which it failed (fell back, or was rolled back).
    hosts: usize,
}

/// How far the channel's latest version has come, by what the hosts
/// report. Not yet shown: how far a staged rollout's own schedule has
/// reached (`abnix_formats::rollout::Rollout::progress`, as `status` shows
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutProgress {
    version: u64,
    label: String,
    /// Hosts booted into it.
    running: usize,
    /// Hosts that installed it and wait for their reboot.
    pending_reboot: usize,
    /// Hosts on which it failed.
    failed: usize,
    hosts: usize,
}

/// One host's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    machine_id: String,
    /// Why its report could not be read; the other fields are then empty.
    unreadable: Option<String>,
    version: Option<u64>,
    label: Option<String>,
    booted_state: Option<ReportedState>,
    pending_reboot: Option<u64>,
    failed_versions: Vec<u64>,
    last_report: Option<DateTime<Utc>>,
    last_result: Option<String>,
    /// Not heard from in longer than the view's number of its check
    /// intervals, or its report dated that far ahead (a fast clock or a
    /// forged date would otherwise keep it from ever being flagged).
    silent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetView {
    channel: String,
    generated_at: DateTime<Utc>,
    /// Check intervals after which a host counts as silent.
    silent_after_intervals: u32,
    hosts: usize,
    versions: Vec<VersionCount>,
    failures: Vec<FailureCount>,
    on_trial: Vec<String>,
    silent: Vec<String>,
    unreadable: Vec<String>,
    rollout: Option<RolloutProgress>,
    skipped: Skipped,
    host_rows: Vec<HostRow>,
}

/// The view of `entries`, at `now`, for the channel whose latest meta is
/// `latest` (if it could be read).
pub fn aggregate(
    channel: &str,
    entries: &[HostEntry],
    skipped: Skipped,
    latest: Option<&Meta>,
    now: DateTime<Utc>,
    silent_after_intervals: u32,
) -> FleetView {
    let mut versions: BTreeMap<Option<u64>, VersionCount> = BTreeMap::new();
    let mut failures: BTreeMap<u64, usize> = BTreeMap::new();
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry.machine_id.to_string();
        let report = match &entry.report {
            Ok(report) => report,
            Err(e) => {
                rows.push(HostRow {
                    machine_id: id,
                    // An attacker's field name in a parse error may hold terminal
                    // escapes.
                    unreadable: Some(clean(e, 300)),
                    version: None,
                    label: None,
                    booted_state: None,
                    pending_reboot: None,
                    failed_versions: Vec::new(),
                    last_report: None,
                    last_result: None,
                    silent: false,
                });
                continue;
            }
        };
        let booted = report
            .booted
            .and_then(|b| report.slots.iter().find(|s| s.slot == b));
        let state = booted.map(|s| s.state);
        let label = booted.and_then(|s| s.label.clone());
        let count = versions
            .entry(report.version)
            .or_insert_with(|| VersionCount {
                version: report.version,
                label: label.clone(),
                hosts: 0,
                on_trial: 0,
            });
        count.hosts += 1;
        count.on_trial += usize::from(state == Some(ReportedState::Trial));
        let mut failed: Vec<u64> = report.failed_versions.iter().map(|f| f.version).collect();
        failed.sort_unstable();
        failed.dedup();
        for version in &failed {
            *failures.entry(*version).or_default() += 1;
        }
        let interval = report
            .check_interval_secs
            .clamp(INTERVAL_BOUNDS.0, INTERVAL_BOUNDS.1);
        let silent_for = chrono::Duration::seconds(
            (interval.saturating_mul(silent_after_intervals.into())).min(i64::MAX as u64) as i64,
        );
        rows.push(HostRow {
            machine_id: id,
            unreadable: None,
            version: report.version,
            label,
            booted_state: state,
            pending_reboot: report.pending_reboot,
            failed_versions: failed,
            last_report: Some(report.at),
            last_result: report.last_result.as_ref().map(|l| l.result.clone()),
            silent: now.signed_duration_since(report.at).abs() > silent_for,
        });
    }
    let ids = |keep: &dyn Fn(&HostRow) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|r| keep(r))
            .map(|r| r.machine_id.clone())
            .collect()
    };
    FleetView {
        channel: channel.to_owned(),
        generated_at: now,
        silent_after_intervals,
        hosts: entries.len(),
        // Newest first; hosts of no known version last.
        versions: versions.into_values().rev().collect(),
        failures: failures
            .into_iter()
            .rev()
            .map(|(version, hosts)| FailureCount { version, hosts })
            .collect(),
        on_trial: ids(&|r| r.booted_state == Some(ReportedState::Trial)),
        silent: ids(&|r| r.silent),
        unreadable: ids(&|r| r.unreadable.is_some()),
        rollout: latest.map(|meta| rollout_progress(meta, &rows)),
        skipped,
        host_rows: rows,
    }
}

/// Reads the reports of the channel of `remote` (its bucket is the report
/// bucket): at most [`MAX_REPORTS`], each at most [`MAX_REPORT_BYTES`]
/// (refused from the listing's size or the response's length, unread).
pub fn read_reports(remote: &Remote) -> Result<(Vec<HostEntry>, Skipped), RemoteError> {
    let config = remote.config();
    let hosts = config.object_key(&format!("{HOSTS_DIR}/"));
    let mut skipped = Skipped::default();
    let mut entries = Vec::new();
    for object in remote.list(&hosts)? {
        let name = object.key.strip_prefix(&config.channel_prefix());
        let Some(machine_id) = name.and_then(MachineId::from_report_object_name) else {
            skipped.not_reports += 1;
            continue;
        };
        if entries.len() == MAX_REPORTS {
            skipped.over_limit += 1;
            continue;
        }
        let report = match object.size > MAX_REPORT_BYTES as u64 {
            true => Err(format!(
                "{} bytes, more than {MAX_REPORT_BYTES}",
                object.size
            )),
            false => remote
                .get_bytes(&object.key, MAX_REPORT_BYTES as u64)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Report::parse(&bytes).map_err(|e| e.to_string())),
        }
        .and_then(|report| match report.machine_id == machine_id {
            true => Ok(report),
            false => Err(format!("it names machine {}", report.machine_id)),
        });
        entries.push(HostEntry { machine_id, report });
    }
    Ok((entries, skipped))
}

/// How far `latest` has come among the hosts of `rows`.
pub fn rollout_progress(latest: &Meta, rows: &[HostRow]) -> RolloutProgress {
    let count = |keep: &dyn Fn(&HostRow) -> bool| rows.iter().filter(|r| keep(r)).count();
    RolloutProgress {
        version: latest.version,
        label: latest.label.clone(),
        running: count(&|r| r.version == Some(latest.version)),
        pending_reboot: count(&|r| r.pending_reboot == Some(latest.version)),
        failed: count(&|r| r.failed_versions.contains(&latest.version)),
        hosts: rows.len(),
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl FleetView {
    /// The view as text lines, for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "channel {}: {} hosts", self.channel, self.hosts);
        if let Some(r) = &self.rollout {
            let _ = writeln!(
                out,
                "latest version {} \"{}\": running on {} of {} hosts, waiting for a reboot on {}, failed on {}",
                r.version, r.label, r.running, r.hosts, r.pending_reboot, r.failed
            );
        }
        for v in &self.versions {
            let _ = writeln!(
                out,
                "version {} \"{}\": {} hosts, {} on trial",
                or_dash(v.version),
                v.label.as_deref().unwrap_or("-"),
                v.hosts,
                v.on_trial
            );
        }
        for f in &self.failures {
            let _ = writeln!(out, "version {} failed on {} hosts", f.version, f.hosts);
        }
        let lists = [
            ("on trial", &self.on_trial),
            (
                &*format!(
                    "not heard from in {} check intervals",
                    self.silent_after_intervals
                ),
                &self.silent,
            ),
            ("unreadable report", &self.unreadable),
        ];
        for (what, ids) in lists {
            if !ids.is_empty() {
                let _ = writeln!(out, "{what}: {}", ids.join(" "));
            }
        }
        if self.skipped != Skipped::default() {
            let _ = writeln!(
                out,
                "skipped: {} objects that are no report, {} reports over the limit of {MAX_REPORTS}",
                self.skipped.not_reports, self.skipped.over_limit
            );
        }
        out
    }

    /// The view as one static HTML page: no script, no external resource
    /// (the Content-Security-Policy forbids both), every text escaped.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let e = escape_html;
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
             <title>abnix fleet: {channel}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
             td,th{{border:1px solid #999;padding:.2em .6em;text-align:left}}.silent{{background:#fdd}}\
             .trial{{background:#ffd}}</style></head><body>\
             <h1>Channel {channel}</h1><p id=\"summary\">{hosts} hosts, report of {at}</p>",
            channel = e(&self.channel),
            hosts = self.hosts,
            at = self.generated_at.to_rfc3339(),
        );
        if let Some(r) = &self.rollout {
            let _ = write!(
                out,
                "<h2>Latest version</h2><table id=\"rollout\"><tr><th>version</th><th>label</th>\
                 <th>running</th><th>waiting for a reboot</th><th>failed</th><th>hosts</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
                r.version,
                e(&r.label),
                r.running,
                r.pending_reboot,
                r.failed,
                r.hosts
            );
        }
        out.push_str(
            "<h2>Versions</h2><table id=\"versions\"><tr><th>version</th><th>label</th>\
             <th>hosts</th><th>on trial</th></tr>",
        );
        for v in &self.versions {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                or_dash(v.version),
                e(v.label.as_deref().unwrap_or("-")),
                v.hosts,
                v.on_trial
            );
        }
        out.push_str(
            "</table><h2>Failures</h2><table id=\"failures\"><tr><th>version</th><th>hosts</th></tr>",
        );
        for f in &self.failures {
            let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", f.version, f.hosts);
        }
        let _ = write!(
            out,
            "</table><h2>Hosts</h2><p>Flagged: not heard from in more than {} check intervals.</p>\
             <table id=\"hosts\"><tr><th>machine id</th><th>version</th><th>label</th><th>state</th>\
             <th>waiting for a reboot into</th><th>failed versions</th><th>last report</th>\
             <th>last result</th><th>flag</th></tr>",
            self.silent_after_intervals
        );
        for row in &self.host_rows {
            let class = match (row.silent, row.booted_state) {
                (true, _) => " class=\"silent\"",
                (false, Some(ReportedState::Trial)) => " class=\"trial\"",
                _ => "",
            };
            let flag = match (&row.unreadable, row.silent) {
                (Some(why), _) => format!("unreadable report: {why}"),
                (None, true) => "silent".to_owned(),
                (None, false) => String::new(),
            };
            let failed: Vec<String> = row.failed_versions.iter().map(u64::to_string).collect();
            let _ = write!(
                out,
                "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&row.machine_id),
                or_dash(row.version),
                e(row.label.as_deref().unwrap_or("-")),
                row.booted_state.map_or("-", ReportedState::name),
                or_dash(row.pending_reboot),
                failed.join(" "),
                or_dash(row.last_report.map(|at| at.to_rfc3339())),
                e(row.last_result.as_deref().unwrap_or("-")),
                e(&flag),
            );
        }
        out.push_str("</table></body></html>\n");
        out
    }
}

/// `text` safe in HTML element content and in quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_formats::report::{FailedReport, ReportEvent, SlotReport, REPORT_FORMAT};
    use abnix_formats::slot::Slot;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn id(n: u8) -> MachineId {
        format!("{n:02x}").repeat(16).parse().unwrap()
    }

    /// A host booted into `version` (on trial or good), slot b holding
    /// `other`, reporting at `secs`.
    fn host(n: u8, version: u64, trial: bool, failed: &[u64], secs: i64) -> HostEntry {
        let slot = |slot, state, version: u64| SlotReport {
            slot,
            state,
            version: Some(version),
            label: Some(format!("kiosk {version}")),
        };
        let state = match trial {
            true => ReportedState::Trial,
            false => ReportedState::Good,
        };
        HostEntry {
            machine_id: id(n),
            report: Ok(Report {
                format: REPORT_FORMAT,
                machine_id: id(n),
                at: at(secs),
                event: ReportEvent::Check,
                abnix_version: "0.1.0".into(),
                booted: Some(Slot::A),
                version: Some(version),
                slots: vec![
                    slot(Slot::A, state, version),
                    slot(Slot::B, ReportedState::Good, 1),
                ],
                pending_reboot: None,
                last_result: None,
                failed_versions: failed
                    .iter()
                    .map(|&version| FailedReport {
                        version,
                        at: at(0),
                        reason: "its trial fell back".into(),
                    })
                    .collect(),
                check_interval_secs: 3600,
            }),
        }
    }

    fn view(entries: &[HostEntry], now: i64) -> FleetView {
        aggregate("kiosk", entries, Skipped::default(), None, at(now), 3)
    }

    #[test]
    fn hosts_per_version_on_trial_and_failures() {
        let entries = [
            host(1, 3, false, &[], 0),
            host(2, 3, true, &[], 0),
            host(3, 2, false, &[4], 0),
            host(4, 2, false, &[4, 4, 5], 0),
        ];
        let v = view(&entries, 10);
        assert_eq!(v.hosts, 4);
        let counts: Vec<(Option<u64>, usize, usize)> = v
            .versions
            .iter()
            .map(|c| (c.version, c.hosts, c.on_trial))
            .collect();
        assert_eq!(counts, [(Some(3), 2, 1), (Some(2), 2, 0)]);
        assert_eq!(v.versions[0].label.as_deref(), Some("kiosk 3"));
        let failures: Vec<(u64, usize)> = v.failures.iter().map(|f| (f.version, f.hosts)).collect();
        assert_eq!(failures, [(5, 1), (4, 2)], "a version counts once per host");
        assert_eq!(v.on_trial, [id(2).to_string()]);
        assert!(v.silent.is_empty());
    }

    #[test]
    fn hosts_not_heard_from_in_n_intervals_are_flagged() {
        // Interval 1 h, 3 intervals: silent after 3 h.
        let entries = [host(1, 3, false, &[], 0), host(2, 3, false, &[], 3 * 3600)];
        let v = view(&entries, 3 * 3600);
        assert!(v.silent.is_empty());
        let v = view(&entries, 3 * 3600 + 1);
        assert_eq!(v.silent, [id(1).to_string()]);
        // An interval claimed huge is bounded (a week).
        let mut lazy = host(3, 3, false, &[], 0);
        lazy.report.as_mut().unwrap().check_interval_secs = u64::MAX;
        let v = view(&[lazy], 3 * 7 * 24 * 3600 + 1);
        assert_eq!(v.silent, [id(3).to_string()]);
        // A report dated ahead is no younger than it is: beyond the window,
        // flagged too (a year ahead would otherwise hide it for a year).
        let ahead = host(4, 3, false, &[], 365 * 24 * 3600);
        assert_eq!(view(&[ahead], 0).silent, [id(4).to_string()]);
        let slightly = host(5, 3, false, &[], 3 * 3600);
        assert!(view(&[slightly], 0).silent.is_empty());
    }

    #[test]
    fn unreadable_reports_are_listed_cleaned_and_not_counted_as_versions() {
        let entries = [
            host(1, 3, false, &[], 0),
            HostEntry {
                machine_id: id(2),
                report: Err("unknown field `\u{1b}[2J`".into()),
            },
        ];
        let v = view(&entries, 0);
        assert_eq!(v.hosts, 2);
        assert_eq!(v.unreadable, [id(2).to_string()]);
        assert_eq!(v.versions.len(), 1);
        let row = &v.host_rows[1];
        assert_eq!(row.unreadable.as_deref(), Some("unknown field ` [2J`"));
        assert!(!v.text().contains('\u{1b}'));
    }

    #[test]
    fn progress_towards_the_latest_version() {
        let mut pending = host(3, 2, false, &[], 0);
        pending.report.as_mut().unwrap().pending_reboot = Some(3);
        let entries = [
            host(1, 3, true, &[], 0),
            host(2, 2, false, &[3], 0),
            pending,
        ];
        let rows = view(&entries, 0).host_rows;
        let meta: Meta = serde_json::from_value(serde_json::json!({
            "format": 2, "version": 3, "id": "00000000-0000-0000-0000-000000000003",
            "label": "kiosk 3", "arch": "x86_64", "published": null,
            "image": {"object": "i", "compressed_size": 1, "size": 1, "sha256": "00".repeat(32), "fs": "ext4"},
            "index": {"object": "x", "size": 1, "sha256": "00".repeat(32)},
            "kernel": {"object": "k", "size": 1, "sha256": "00".repeat(32)},
            "initrd": {"object": "r", "size": 1, "sha256": "00".repeat(32)},
            "cmdline": ""
        }))
        .unwrap();
        let p = rollout_progress(&meta, &rows);
        assert_eq!(
            (p.version, p.running, p.pending_reboot, p.failed, p.hosts),
            (3, 1, 1, 1, 3)
        );
    }

    #[test]
    fn the_html_escapes_every_text_and_allows_no_script() {
        let mut hostile = host(1, 3, false, &[], 0);
        let report = hostile.report.as_mut().unwrap();
        report.slots[0].label = Some("<script>alert(1)</script>\"'&".into());
        report.last_result = Some(abnix_formats::report::LastResult {
            at: at(0),
            latest: None,
            result: "<img src=x onerror=alert(1)>".into(),
        });
        let html = view(&[hostile], 0).html();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(html.contains("default-src 'none'"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external resource"
        );
    }
}
