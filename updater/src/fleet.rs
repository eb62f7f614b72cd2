//! The fleet view (issue 26, `abnix-update fleet`): the reports of a
//! channel's hosts, aggregated into hosts per version, hosts on trial,
//! failures per version, hosts not heard from, and the progress towards
//! the channel's latest version; as text, JSON or one static HTML page.
//!
//! Reports are untrusted (any host's report credentials can write any
//! report): the listing of `hosts/` and the reports read are bounded
//! ([`ReadBounds`]), reports arrive parsed strictly ([`Report::parse`]),
//! every text shown is cleaned of control, bidirectional and zero-width
//! characters ([`clean`]), a version's label comes from the channel's
//! verified meta where there is one (else it is marked as reported), and
//! the HTML escapes every text and forbids scripts by its
//! Content-Security-Policy.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::remote::{Remote, RemoteError};
use abnix_formats::machine_id::MachineId;
use abnix_formats::meta::Meta;
use abnix_formats::report::{clean, Report, ReportedState, HOSTS_DIR, MAX_REPORT_BYTES};
use abnix_formats::rollout::Place;

/// How much of `hosts/` one view takes in: a bucket others can write to
/// could hold any number of objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBounds {
    /// The most objects listed under `hosts/`; the listing stops there.
    pub listed: usize,
    /// The most reports read; more are counted, not read.
    pub reports: usize,
}

impl Default for ReadBounds {
    fn default() -> ReadBounds {
        ReadBounds {
            listed: MAX_LISTED,
            reports: MAX_REPORTS,
        }
    }
}

/// The most reports one view reads; more are counted, not read.
pub const MAX_REPORTS: usize = 10_000;
/// The most objects one view lists under `hosts/` (50 pages): room for
/// [`MAX_REPORTS`] hosts beside four times as many forged names.
pub const MAX_LISTED: usize = 50_000;
/// The most characters of a text the view shows.
const MAX_SHOWN_CHARS: usize = 300;
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
    /// Objects under `hosts/` whose name is not `<machine-id>.json`
    /// (forged or foreign): unreadable, and not counted as hosts.
    pub not_reports: usize,
    /// Reports beyond [`ReadBounds::reports`], listed but not read.
    pub over_limit: usize,
    /// The listing stopped at [`ReadBounds::listed`] objects with more in
    /// the bucket: hosts past that point are not in the view.
    pub listing_cut_at: Option<usize>,
    /// [`ReadBounds::reports`] of this view.
    pub report_limit: usize,
}

/// Where a version's label comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionLabel {
    /// The channel's verified meta of that version.
    Verified(String),
    /// What every host of that version reports, unverified: any host's
    /// report can say anything.
    Reported(String),
    /// Hosts of that version report different labels.
    Conflicting,
}

impl VersionLabel {
    fn text(&self) -> String {
        match self {
            VersionLabel::Verified(label) => format!("\"{label}\""),
            VersionLabel::Reported(label) => format!("\"{label}\" (reported, unverified)"),
            VersionLabel::Conflicting => "(hosts report different labels)".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionCount {
    /// `None`: hosts whose booted slot holds no known version.
    version: Option<u64>,
    /// `None` when no host of it reports a label.
    label: Option<VersionLabel>,
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
/// report, and by its staged rollout's own schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutProgress {
    version: u64,
    /// From the verified meta.
    label: String,
    /// Its version id (image filesystem UUID), from the verified meta.
    id: Uuid,
    /// The staged rollout's schedule, from the verified meta; `None`: the
    /// version is for every host at once.
    schedule: Option<Schedule>,
    /// Hosts booted into it, or into an older version with its id (the
    /// content `publish --revert-to` published again as it): hosts that
    /// are up to date.
    running: usize,
    /// Of `running`, those booted into such an older version, per version
    /// (newest first).
    running_as_older: Vec<SameImage>,
    /// Hosts that installed it and wait for their reboot.
    pending_reboot: usize,
    /// Hosts on which it failed.
    failed: usize,
    hosts: usize,
}

/// Hosts running the latest version's image under an older version number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SameImage {
    version: u64,
    hosts: usize,
}

/// Where a staged rollout's schedule stands (formats::rollout).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    start: DateTime<Utc>,
    /// When the last host's turn comes (`start` + the rollout's length).
    complete_at: DateTime<Utc>,
    /// Set by `publish --halt`: no host starts installing from then on.
    halted_at: Option<DateTime<Utc>>,
    /// The share of the fleet the schedule admits now, in `[0, 1]`
    /// (frozen at its halt).
    admitted_share: f64,
    /// Of the hosts with a readable report, those whose turn came (before
    /// the halt, if halted).
    admitted_hosts: usize,
}

/// One host's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    machine_id: String,
    /// Why its report could not be read; the other fields are then empty.
    unreadable: Option<String>,
    version: Option<u64>,
    /// The version id this host reports for its booted slot (unverified;
    /// none from a format-1 report).
    id: Option<Uuid>,
    /// The label this host reports for its booted slot (unverified).
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// Reports that could not be read plus objects under `hosts/` that are
    /// no report by their name.
    unreadable_count: usize,
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
                    unreadable: Some(clean(e, MAX_SHOWN_CHARS)),
                    version: None,
                    id: None,
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
        let label = booted.and_then(|s| s.label.as_deref().map(|l| clean(l, MAX_SHOWN_CHARS)));
        let count = versions
            .entry(report.version)
            .or_insert_with(|| VersionCount {
                version: report.version,
                label: label.clone().map(VersionLabel::Reported),
                hosts: 0,
                on_trial: 0,
            });
        if count.label != label.clone().map(VersionLabel::Reported) {
            count.label = Some(VersionLabel::Conflicting);
        }
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
            id: booted.and_then(|s| s.id),
            label,
            booted_state: state,
            pending_reboot: report.pending_reboot,
            failed_versions: failed,
            last_report: Some(report.at),
            last_result: report
                .last_result
                .as_ref()
                .map(|l| clean(&l.result, MAX_SHOWN_CHARS)),
            silent: now.signed_duration_since(report.at).abs() > silent_for,
        });
    }
    // The latest version's label is the one its verified meta carries,
    // whatever the hosts say.
    if let Some(meta) = latest {
        if let Some(count) = versions.get_mut(&Some(meta.version)) {
            count.label = Some(VersionLabel::Verified(clean(&meta.label, MAX_SHOWN_CHARS)));
        }
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
        unreadable_count: rows.iter().filter(|r| r.unreadable.is_some()).count()
            + skipped.not_reports,
        rollout: latest.map(|meta| rollout_progress(meta, &rows, now)),
        skipped,
        host_rows: rows,
    }
}

/// Reads the reports of the channel of `remote` (its bucket is the report
/// bucket) within `bounds`, each at most [`MAX_REPORT_BYTES`] (refused from
/// the listing's size or the response's length, unread). Objects not named
/// `<machine-id>.json` are counted, never read, and take no report's place;
/// a report naming another machine than its key is unreadable.
pub fn read_reports(
    remote: &Remote,
    bounds: ReadBounds,
) -> Result<(Vec<HostEntry>, Skipped), RemoteError> {
    let config = remote.config();
    let hosts = config.object_key(&format!("{HOSTS_DIR}/"));
    let (objects, more) = remote.list_at_most(&hosts, bounds.listed)?;
    let mut skipped = Skipped {
        listing_cut_at: more.then_some(objects.len()),
        report_limit: bounds.reports,
        ..Skipped::default()
    };
    let mut entries = Vec::new();
    for object in objects {
        let name = object.key.strip_prefix(&config.channel_prefix());
        let Some(machine_id) = name.and_then(MachineId::from_report_object_name) else {
            skipped.not_reports += 1;
            continue;
        };
        if entries.len() == bounds.reports {
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

/// How far `latest` has come among the hosts of `rows`, and how far its
/// rollout's schedule has come at `now`.
pub fn rollout_progress(latest: &Meta, rows: &[HostRow], now: DateTime<Utc>) -> RolloutProgress {
    let count = |keep: &dyn Fn(&HostRow) -> bool| rows.iter().filter(|r| keep(r)).count();
    // A report's id is as untrusted as its version: a false one moves
    // only its own host between "running" and not.
    let mut running_as_older: BTreeMap<u64, usize> = BTreeMap::new();
    for row in rows {
        if let (Some(version), Some(id)) = (row.version, row.id) {
            if version != latest.version && id == latest.id {
                *running_as_older.entry(version).or_default() += 1;
            }
        }
    }
    let rollout = latest.published.as_ref().and_then(|p| p.rollout);
    let schedule = rollout.map(|rollout| {
        // As Rollout::progress: frozen where it stood at the halt.
        let until = rollout.halted_at.map_or(now, |halted| halted.min(now));
        Schedule {
            start: rollout.start,
            complete_at: rollout.turn(Place::LAST),
            halted_at: rollout.halted_at,
            admitted_share: rollout.progress(now),
            admitted_hosts: count(&|r| {
                r.unreadable.is_none()
                    && r.machine_id
                        .parse::<MachineId>()
                        .is_ok_and(|id| rollout.turn(Place::of(&id, latest.version)) <= until)
            }),
        }
    });
    RolloutProgress {
        version: latest.version,
        label: clean(&latest.label, MAX_SHOWN_CHARS),
        id: latest.id,
        schedule,
        running: count(&|r| r.version == Some(latest.version))
            + running_as_older.values().sum::<usize>(),
        running_as_older: running_as_older
            .into_iter()
            .rev()
            .map(|(version, hosts)| SameImage { version, hosts })
            .collect(),
        pending_reboot: count(&|r| r.pending_reboot == Some(latest.version)),
        failed: count(&|r| r.failed_versions.contains(&latest.version)),
        hosts: rows.len(),
    }
}

impl RolloutProgress {
    /// " (N as version V's image, ...)" when hosts of `running` run the
    /// latest version's image under an older number, else nothing.
    fn same_image_text(&self) -> String {
        if self.running_as_older.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .running_as_older
            .iter()
            .map(|s| format!("{} as version {}'s image", s.hosts, s.version))
            .collect();
        format!(" ({})", parts.join(", "))
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
                "latest version {} \"{}\": running on {} of {} hosts{}, waiting for a reboot on {}, failed on {}",
                r.version,
                r.label,
                r.running,
                r.hosts,
                r.same_image_text(),
                r.pending_reboot,
                r.failed
            );
            let _ = writeln!(out, "{}", schedule_text(r.schedule.as_ref()));
        }
        for v in &self.versions {
            let _ = writeln!(
                out,
                "version {} {}: {} hosts, {} on trial",
                or_dash(v.version),
                v.label.as_ref().map_or("-".to_owned(), VersionLabel::text),
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
        for note in self.notes() {
            let _ = writeln!(out, "{note}");
        }
        out
    }

    /// What the view leaves out, and unreadable objects that are no host:
    /// never silent.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.skipped.not_reports > 0 {
            notes.push(format!(
                "unreadable: {} objects under {HOSTS_DIR}/ not named <machine-id>.json (not counted as hosts)",
                self.skipped.not_reports
            ));
        }
        if self.skipped.over_limit > 0 {
            notes.push(format!(
                "not read: {} reports beyond the limit of {} reports read",
                self.skipped.over_limit, self.skipped.report_limit
            ));
        }
        if let Some(at) = self.skipped.listing_cut_at {
            notes.push(format!(
                "incomplete: the listing of {HOSTS_DIR}/ stopped after {at} objects; hosts past them are not shown"
            ));
        }
        notes
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
        for note in self.notes() {
            let _ = write!(out, "<p class=\"note\">{}</p>", e(&note));
        }
        if let Some(r) = &self.rollout {
            let _ = write!(
                out,
                "<h2>Latest version</h2><table id=\"rollout\"><tr><th>version</th><th>label</th>\
                 <th>running</th><th>waiting for a reboot</th><th>failed</th><th>hosts</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
                 <p id=\"schedule\">{}</p>",
                r.version,
                e(&r.label),
                r.running,
                e(&r.same_image_text()),
                r.pending_reboot,
                r.failed,
                r.hosts,
                e(&schedule_text(r.schedule.as_ref())),
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
                e(&v.label.as_ref().map_or("-".to_owned(), VersionLabel::text)),
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
             <table id=\"hosts\"><tr><th>machine id</th><th>version</th><th>label (reported)</th><th>state</th>\
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
                self.version_cell(row),
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

impl FleetView {
    /// A host's version, and when it is an older one with the latest
    /// version's id, that it runs the latest version's image.
    fn version_cell(&self, row: &HostRow) -> String {
        match (&self.rollout, row.version) {
            (Some(r), Some(version)) if version != r.version && row.id == Some(r.id) => {
                format!("{version} (the image of version {})", r.version)
            }
            _ => or_dash(row.version),
        }
    }
}

/// The rollout schedule's line: how far it admits the fleet now.
fn schedule_text(schedule: Option<&Schedule>) -> String {
    let Some(s) = schedule else {
        return "rollout: no staged rollout, every host may install it".to_owned();
    };
    let share = format!(
        "{:.0}% of the fleet ({} of the reporting hosts)",
        s.admitted_share * 100.0,
        s.admitted_hosts
    );
    match s.halted_at {
        Some(at) => format!(
            "rollout: halted at {} with {share} admitted; no other host starts",
            at.to_rfc3339()
        ),
        None if s.admitted_share >= 1.0 => format!(
            "rollout: complete since {}, every host admitted",
            s.complete_at.to_rfc3339()
        ),
        None => format!(
            "rollout: started {}, admits {share} now, every host by {}",
            s.start.to_rfc3339(),
            s.complete_at.to_rfc3339()
        ),
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
            id: Some(Uuid::from_u128(version.into())),
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
        view_with(entries, None, at(now))
    }

    /// The view with `latest` the channel's latest meta.
    fn view_with(entries: &[HostEntry], latest: Option<&Meta>, now: DateTime<Utc>) -> FleetView {
        aggregate("kiosk", entries, Skipped::default(), latest, now, 3)
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
        assert_eq!(
            v.versions[0].label,
            Some(VersionLabel::Reported("kiosk 3".into()))
        );
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

    /// The meta of version 3, "kiosk 3" unless `label`, published with
    /// `rollout` (a JSON rollout, or null).
    fn meta(label: &str, rollout: serde_json::Value) -> Meta {
        let published = match rollout.is_null() {
            true => serde_json::Value::Null,
            false => serde_json::json!({
                "channel": "kiosk", "signed_at": at(0), "expires": at(100 * 24 * 3600),
                "revoked_keys": [], "rollout": rollout
            }),
        };
        serde_json::from_value(serde_json::json!({
            "format": if rollout.is_null() { 2 } else { 3 },
            "version": 3, "id": "00000000-0000-0000-0000-000000000003",
            "label": label, "arch": "x86_64", "published": published,
            "image": {"object": "i", "compressed_size": 1, "size": 1, "sha256": "00".repeat(32), "fs": "ext4"},
            "index": {"object": "x", "size": 1, "sha256": "00".repeat(32)},
            "kernel": {"object": "k", "size": 1, "sha256": "00".repeat(32)},
            "initrd": {"object": "r", "size": 1, "sha256": "00".repeat(32)},
            "cmdline": ""
        }))
        .unwrap()
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
        let p = rollout_progress(&meta("kiosk 3", serde_json::Value::Null), &rows, at(0));
        assert_eq!(
            (p.version, p.running, p.pending_reboot, p.failed, p.hosts),
            (3, 1, 1, 1, 3)
        );
        assert_eq!(p.schedule, None);
    }

    /// `publish --revert-to 5` published version 5's content as 7: a host
    /// booted into 5 (by its reported id) is up to date, counted as
    /// running 7 and said so; one on another image is not, nor one whose
    /// format-1 report carries no id.
    #[test]
    fn a_host_on_the_image_a_revert_published_again_runs_the_latest_version() {
        let mut latest = meta("kiosk 5", serde_json::Value::Null);
        (latest.version, latest.id) = (7, Uuid::from_u128(5));
        let mut old_format = host(3, 5, false, &[], 0);
        let report = old_format.report.as_mut().unwrap();
        report.format = abnix_formats::report::OLDEST_REPORT_FORMAT;
        for slot in &mut report.slots {
            slot.id = None;
        }
        let entries = [
            host(1, 5, false, &[], 0),
            host(2, 6, false, &[], 0),
            old_format,
            host(4, 7, false, &[], 0),
        ];
        let v = view_with(&entries, Some(&latest), at(0));
        let r = v.rollout.as_ref().unwrap();
        assert_eq!((r.running, r.hosts), (2, 4));
        assert_eq!(
            r.running_as_older,
            [SameImage {
                version: 5,
                hosts: 1
            }]
        );
        assert!(
            v.text().lines().any(|l| l
                == "latest version 7 \"kiosk 5\": running on 2 of 4 hosts (1 as version 5's image), \
                    waiting for a reboot on 0, failed on 0"),
            "{}",
            v.text()
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["rollout"]["running"], 2);
        assert_eq!(
            json["rollout"]["running_as_older"],
            serde_json::json!([{"version": 5, "hosts": 1}])
        );
        assert_eq!(json["host_rows"][0]["id"], Uuid::from_u128(5).to_string());
        let html = v.html();
        assert!(
            html.contains("<td>2 (1 as version 5&#39;s image)</td>"),
            "{html}"
        );
        assert!(
            html.contains(&format!(
                "<td>{}</td><td>5 (the image of version 7)</td>",
                id(1)
            )),
            "{html}"
        );
        assert!(
            html.contains(&format!("<td>{}</td><td>5</td>", id(3))),
            "{html}"
        );
    }

    const DAY: i64 = 24 * 3600;

    /// 200 hosts on version 2 under the rollout of version 3 over 10 days.
    fn rollout_fleet() -> Vec<HostEntry> {
        (1..=200).map(|n| host(n, 2, false, &[], 0)).collect()
    }

    #[test]
    fn the_schedule_of_a_staged_rollout_is_shown_beside_the_hosts_progress() {
        let entries = rollout_fleet();
        let latest = meta(
            "kiosk 3",
            serde_json::json!({"start": at(0), "over_secs": 10 * DAY, "halted_at": null}),
        );
        let v = view_with(&entries, Some(&latest), at(3 * DAY));
        let s = v.rollout.as_ref().unwrap().schedule.clone().unwrap();
        assert_eq!(
            (s.start, s.complete_at, s.halted_at),
            (at(0), at(10 * DAY), None)
        );
        assert!((s.admitted_share - 0.3).abs() < 1e-9);
        // The hosts whose turn came: exactly those Rollout::admission admits.
        let rollout = latest.published.as_ref().unwrap().rollout.unwrap();
        let admitted = (1..=200)
            .filter(|&n| {
                matches!(
                    rollout.admission(Place::of(&id(n), 3), at(3 * DAY)),
                    abnix_formats::rollout::Admission::Admitted { .. }
                )
            })
            .count();
        assert_eq!(s.admitted_hosts, admitted);
        assert!((30..=90).contains(&admitted), "{admitted} of 200 at 30%");
        let line = format!(
            "rollout: started {}, admits 30% of the fleet ({admitted} of the reporting hosts) now, every host by {}",
            at(0).to_rfc3339(),
            at(10 * DAY).to_rfc3339()
        );
        assert!(v.text().lines().any(|l| l == line), "{}", v.text());
        assert!(v.html().contains(&format!("<p id=\"schedule\">{line}</p>")));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["rollout"]["schedule"]["admitted_share"], 0.3);
        assert_eq!(json["rollout"]["schedule"]["admitted_hosts"], admitted);
        assert_eq!(
            json["rollout"]["schedule"]["complete_at"],
            serde_json::to_value(at(10 * DAY)).unwrap()
        );

        // Halted on day 3: frozen there, whenever the view is made.
        let halted = meta(
            "kiosk 3",
            serde_json::json!({"start": at(0), "over_secs": 10 * DAY, "halted_at": at(3 * DAY)}),
        );
        let v = view_with(&entries, Some(&halted), at(8 * DAY));
        let s = v.rollout.as_ref().unwrap().schedule.clone().unwrap();
        assert_eq!(s.halted_at, Some(at(3 * DAY)));
        assert!((s.admitted_share - 0.3).abs() < 1e-9);
        assert_eq!(s.admitted_hosts, admitted);
        assert!(
            v.text().contains(&format!(
                "rollout: halted at {} with 30% of the fleet ({admitted} of the reporting hosts) admitted",
                at(3 * DAY).to_rfc3339()
            )),
            "{}",
            v.text()
        );

        // Complete.
        let v = view_with(&entries, Some(&latest), at(11 * DAY));
        assert!(v.text().contains("rollout: complete since"), "{}", v.text());
        assert_eq!(v.rollout.unwrap().schedule.unwrap().admitted_hosts, 200);
    }

    #[test]
    fn a_versions_label_is_the_verified_metas_else_marked_as_reported() {
        let relabel = |mut entry: HostEntry, label: &str| {
            entry.report.as_mut().unwrap().slots[0].label = Some(label.into());
            entry
        };
        let entries = [
            // The first host of version 3 would have named it.
            relabel(host(1, 3, false, &[], 0), "trust me, all is well"),
            host(2, 3, false, &[], 0),
            host(3, 2, false, &[], 0),
            relabel(host(4, 2, false, &[], 0), "kiosk 2 (fixed)"),
            host(5, 1, false, &[], 0),
        ];
        let latest = meta("kiosk 3", serde_json::Value::Null);
        let v = view_with(&entries, Some(&latest), at(0));
        let labels: Vec<_> = v.versions.iter().map(|c| c.label.clone()).collect();
        assert_eq!(
            labels,
            [
                Some(VersionLabel::Verified("kiosk 3".into())),
                Some(VersionLabel::Conflicting),
                Some(VersionLabel::Reported("kiosk 1".into())),
            ]
        );
        let text = v.text();
        assert!(text.contains("version 3 \"kiosk 3\": 2 hosts"), "{text}");
        assert!(
            text.contains("version 2 (hosts report different labels): 2 hosts"),
            "{text}"
        );
        assert!(
            text.contains("version 1 \"kiosk 1\" (reported, unverified): 1 hosts"),
            "{text}"
        );
        assert!(!text.contains("trust me"), "{text}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json["versions"][0]["label"],
            serde_json::json!({"verified": "kiosk 3"})
        );
        assert_eq!(
            json["versions"][2]["label"],
            serde_json::json!({"reported": "kiosk 1"})
        );
    }

    /// Bidirectional overrides and isolates and zero-width characters make
    /// a text look like another (a version shown reversed, two labels that
    /// look alike): none reaches the text or the page, from a report's
    /// error or from a meta's label (a verified meta may carry them).
    #[test]
    fn bidi_and_zero_width_characters_are_cleaned_from_what_is_shown() {
        let hidden = "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}\u{2066}\u{2067}\u{2068}\u{2069}\
                      \u{200B}\u{200C}\u{200D}\u{200E}\u{200F}\u{2060}\u{FEFF}";
        let entries = [
            host(1, 3, false, &[], 0),
            HostEntry {
                machine_id: id(2),
                report: Err(format!("unknown field `{hidden}x`")),
            },
        ];
        let latest = meta(&format!("kiosk{hidden}3"), serde_json::Value::Null);
        let v = view_with(&entries, Some(&latest), at(0));
        let json = serde_json::to_string(&v).unwrap();
        for shown in [v.text(), v.html(), json] {
            assert!(
                !shown
                    .chars()
                    .any(|c| c != '\n' && abnix_formats::report::is_hidden(c)),
                "{shown:?}"
            );
        }
        assert_eq!(
            v.rollout.unwrap().label,
            format!("kiosk{}3", " ".repeat(16))
        );
    }

    #[test]
    fn what_the_view_leaves_out_is_noted_in_text_and_page() {
        let skipped = Skipped {
            not_reports: 7,
            over_limit: 5,
            listing_cut_at: Some(40),
            report_limit: 10,
        };
        let v = aggregate(
            "kiosk",
            &[host(1, 3, false, &[], 0)],
            skipped,
            None,
            at(0),
            3,
        );
        assert_eq!(v.unreadable_count, 7);
        let notes = [
            "unreadable: 7 objects under hosts/ not named <machine-id>.json (not counted as hosts)",
            "not read: 5 reports beyond the limit of 10 reports read",
            "incomplete: the listing of hosts/ stopped after 40 objects; hosts past them are not shown",
        ];
        let text = v.text();
        let html = v.html();
        for note in notes {
            assert!(text.lines().any(|l| l == note), "{text}");
            assert!(
                html.contains(&format!("<p class=\"note\">{}</p>", escape_html(note))),
                "{html}"
            );
        }
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
