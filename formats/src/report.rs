//! A host's report (issue 26): a small JSON object a host may write to
//! `<prefix>/<channel>/hosts/<machine-id>.json` after each check, update,
//! mark-good and rollback, and that `abnix-update fleet` reads back.
//!
//! A report is untrusted input: any host holding the report credentials
//! can write any host's report, so [`Report::parse`] is strict (a size
//! bound before parsing, the format first, unknown fields refused, every
//! text bounded and free of control characters) and the machine id is
//! validated before it becomes part of an object key. [`Report::bounded`]
//! makes a report that [`Report::parse`] accepts, whatever the state it is
//! built from (labels and error texts are cut, the oldest failed versions
//! dropped), so a report is never larger than [`MAX_REPORT_BYTES`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::machine_id::MachineId;
use crate::slot::Slot;
use uuid::Uuid;

/// The format written today: 2 adds each slot's image id to format 1.
/// A reader takes [`OLDEST_REPORT_FORMAT`] up to this one and refuses
/// others as such.
pub const REPORT_FORMAT: u32 = 2;
/// The oldest format a reader takes: the reports of hosts that have not
/// updated their abnix yet.
pub const OLDEST_REPORT_FORMAT: u32 = 1;
/// The most bytes of a report that are read or written.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// The most characters of one text in a report (a label, a result).
pub const MAX_TEXT_CHARS: usize = 400;
/// The most failed versions a report lists (the newest).
pub const MAX_FAILED_VERSIONS: usize = 16;
/// The most characters of the abnix version string.
const MAX_ABNIX_VERSION_CHARS: usize = 64;

/// Where the reports of a channel live, below `<prefix>/<channel>/`.
pub const HOSTS_DIR: &str = "hosts";

impl MachineId {
    /// The report's object name below the channel: `hosts/<id>.json`.
    pub fn report_object_name(&self) -> String {
        format!("{HOSTS_DIR}/{self}.json")
    }

    /// The machine id of a report's object name, if it is one.
    pub fn from_report_object_name(name: &str) -> Option<MachineId> {
        name.strip_prefix(HOSTS_DIR)?
            .strip_prefix('/')?
            .strip_suffix(".json")?
            .parse()
            .ok()
    }
}

/// What the host had just done when it wrote the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportEvent {
    /// A check (which also finds a trial that fell back, and records it).
    Check,
    /// An update run, whatever its outcome (a fallback found, too).
    Update,
    MarkGood,
    Rollback,
}

impl ReportEvent {
    pub fn name(self) -> &'static str {
        match self {
            ReportEvent::Check => "check",
            ReportEvent::Update => "update",
            ReportEvent::MarkGood => "mark-good",
            ReportEvent::Rollback => "rollback",
        }
    }
}

/// A slot's boot state, in `status`'s words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedState {
    Good,
    Trial,
    /// A trial with no tries left.
    Failed,
    /// Empty, or marked bad before a write.
    Bad,
}

impl ReportedState {
    /// The word `status` shows (the serialized name).
    pub fn name(self) -> &'static str {
        match self {
            ReportedState::Good => "good",
            ReportedState::Trial => "trial",
            ReportedState::Failed => "failed",
            ReportedState::Bad => "bad",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotReport {
    #[serde(with = "slot_name")]
    pub slot: Slot,
    pub state: ReportedState,
    pub version: Option<u64>,
    pub label: Option<String>,
    /// The version id (the image filesystem's UUID) the slot holds: a
    /// version published again by `publish --revert-to` has the id of the
    /// version whose content it is. Format 2: there whenever `version` is;
    /// never in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
}

/// The host's last check, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastResult {
    pub at: DateTime<Utc>,
    /// The channel's latest version the check verified.
    pub latest: Option<u64>,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedReport {
    pub version: u64,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// One host's report, format 1 or 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub format: u32,
    pub machine_id: MachineId,
    /// When it was written (the host's clock).
    pub at: DateTime<Utc>,
    pub event: ReportEvent,
    pub abnix_version: String,
    #[serde(with = "optional_slot_name")]
    pub booted: Option<Slot>,
    /// The booted slot's version.
    pub version: Option<u64>,
    /// Both slots, a then b.
    pub slots: Vec<SlotReport>,
    /// The version that boots at the next reboot.
    pub pending_reboot: Option<u64>,
    pub last_result: Option<LastResult>,
    /// The newest failed versions, oldest first.
    pub failed_versions: Vec<FailedReport>,
    /// The host's check interval: how often a report should come.
    pub check_interval_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the report is {0} bytes, more than {MAX_REPORT_BYTES}")]
    TooLarge(usize),
    #[error("report format {0} is not supported (this abnix reads formats {OLDEST_REPORT_FORMAT} to {REPORT_FORMAT})")]
    Format(u64),
    #[error("the report does not parse: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the report is invalid: {0}")]
    Invalid(String),
}

impl Report {
    /// Parses a report strictly: at most [`MAX_REPORT_BYTES`], format 1 or
    /// 2 (each slot's id there exactly when its version is in 2, never in
    /// 1), no unknown field, both slots once each, every text within
    /// [`MAX_TEXT_CHARS`] and without control characters.
    pub fn parse(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge(bytes.len()));
        }
        #[derive(Deserialize)]
        struct Probe {
            format: u64,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        if !(u64::from(OLDEST_REPORT_FORMAT)..=u64::from(REPORT_FORMAT)).contains(&probe.format) {
            return Err(ReportError::Format(probe.format));
        }
        let report: Report = serde_json::from_slice(bytes)?;
        report.validate().map_err(ReportError::Invalid)?;
        Ok(report)
    }

    /// The report as written: JSON, at most [`MAX_REPORT_BYTES`] for a
    /// report made by [`Report::bounded`].
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a report serializes")
    }

    /// `self` with every text cut to its bound and control characters
    /// replaced, and only the newest [`MAX_FAILED_VERSIONS`] failed
    /// versions: a report [`Report::parse`] accepts.
    pub fn bounded(mut self) -> Report {
        self.abnix_version = clean(&self.abnix_version, MAX_ABNIX_VERSION_CHARS);
        for slot in &mut self.slots {
            slot.label = slot.label.as_deref().map(|l| clean(l, MAX_TEXT_CHARS));
        }
        if let Some(last) = &mut self.last_result {
            last.result = clean(&last.result, MAX_TEXT_CHARS);
        }
        let excess = self
            .failed_versions
            .len()
            .saturating_sub(MAX_FAILED_VERSIONS);
        self.failed_versions.drain(..excess);
        for failed in &mut self.failed_versions {
            failed.reason = clean(&failed.reason, MAX_TEXT_CHARS);
        }
        self
    }

    fn validate(&self) -> Result<(), String> {
        let slots: Vec<Slot> = self.slots.iter().map(|s| s.slot).collect();
        if slots != [Slot::A, Slot::B] {
            return Err(format!(
                "slots must be a then b, once each (got {})",
                slots.len()
            ));
        }
        for slot in &self.slots {
            let with_id = self.format >= 2;
            if slot.id.is_some() != (with_id && slot.version.is_some()) {
                return Err(format!(
                    "slot {}: a format {} report has an id {}",
                    slot.slot,
                    self.format,
                    match with_id {
                        true => "exactly where it has a version",
                        false => "nowhere",
                    }
                ));
            }
        }
        // The version is the booted slot's: a report saying otherwise
        // would count a host under a version it does not run.
        let booted_version = self
            .booted
            .and_then(|b| self.slots.iter().find(|s| s.slot == b))
            .and_then(|s| s.version);
        if self.version != booted_version {
            return Err(format!(
                "version {} is not that of the booted slot ({})",
                self.version.map_or("none".into(), |v| v.to_string()),
                booted_version.map_or("none".into(), |v| v.to_string()),
            ));
        }
        if self.failed_versions.len() > MAX_FAILED_VERSIONS {
            return Err(format!(
                "{} failed versions, more than {MAX_FAILED_VERSIONS}",
                self.failed_versions.len()
            ));
        }
        let texts = std::iter::once(("abnix_version", self.abnix_version.as_str()))
            .chain(
                self.slots
                    .iter()
                    .filter_map(|s| s.label.as_deref())
                    .map(|l| ("label", l)),
            )
            .chain(
                self.last_result
                    .iter()
                    .map(|l| ("result", l.result.as_str())),
            )
            .chain(
                self.failed_versions
                    .iter()
                    .map(|f| ("reason", f.reason.as_str())),
            );
        for (field, text) in texts {
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(format!(
                    "{field} is longer than {MAX_TEXT_CHARS} characters"
                ));
            }
            if text.chars().any(is_hidden) {
                return Err(format!(
                    "{field} holds a control, bidirectional or zero-width character"
                ));
            }
        }
        Ok(())
    }
}

/// `text` cut to `max` characters, control characters (a newline in an
/// error, a terminal escape in a label) and [hidden](is_hidden) ones
/// replaced by spaces.
pub fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if is_hidden(c) { ' ' } else { c })
        .collect()
}

/// A character that changes how a text looks without showing itself: a
/// control character, a bidirectional embedding, override or isolate
/// (U+202A..U+202E, U+2066..U+2069: "Trojan Source", a host id or
/// version shown reversed), or a zero-width one (U+200B..U+200F, U+2060,
/// U+FEFF: two labels that look the same and differ).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'
                | '\u{FEFF}'
        )
}

mod slot_name {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(slot: &Slot, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(slot)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Slot, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod optional_slot_name {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(slot: &Option<Slot>, s: S) -> Result<S::Ok, S::Error> {
        match slot {
            Some(slot) => s.collect_str(slot),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Slot>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| name.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn report() -> Report {
        let at = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Report {
            format: REPORT_FORMAT,
            machine_id: ID.parse().unwrap(),
            at,
            event: ReportEvent::Update,
            abnix_version: "0.1.0".into(),
            booted: Some(Slot::A),
            version: Some(1),
            slots: vec![
                SlotReport {
                    slot: Slot::A,
                    state: ReportedState::Good,
                    version: Some(1),
                    label: Some("kiosk 1".into()),
                    id: Some(Uuid::from_u128(1)),
                },
                SlotReport {
                    slot: Slot::B,
                    state: ReportedState::Trial,
                    version: Some(2),
                    label: Some("kiosk 2".into()),
                    id: Some(Uuid::from_u128(2)),
                },
            ],
            pending_reboot: Some(2),
            last_result: Some(LastResult {
                at,
                latest: Some(2),
                result: "installed version 2 into slot b".into(),
            }),
            failed_versions: vec![],
            check_interval_secs: 21600,
        }
    }

    #[test]
    fn a_machine_id_names_its_report_object_and_nothing_else_does() {
        let id: MachineId = ID.parse().unwrap();
        assert_eq!(id.report_object_name(), format!("hosts/{ID}.json"));
        assert_eq!(
            MachineId::from_report_object_name(&id.report_object_name()),
            Some(id)
        );
        assert_eq!(MachineId::from_report_object_name("hosts/x.json"), None);
        assert_eq!(
            MachineId::from_report_object_name(&format!("hosts/{ID}.js")),
            None
        );
    }

    /// The fuzz target's seed is a report the target accepts.
    #[test]
    fn the_fuzz_seed_parses() {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/report_parse/update.json");
        let report = Report::parse(&std::fs::read(&seed).unwrap()).unwrap();
        assert_eq!(report.pending_reboot, Some(2));
        let format_2 =
            Report::parse(&std::fs::read(seed.with_file_name("update-format-2.json")).unwrap())
                .unwrap();
        assert!(format_2.slots.iter().all(|s| s.id.is_some()));
    }

    #[test]
    fn clean_replaces_control_bidi_and_zero_width_characters() {
        let hidden = [
            '\u{1b}', '\n', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
            '\u{2067}', '\u{2068}', '\u{2069}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}',
            '\u{200F}', '\u{2060}', '\u{FEFF}',
        ];
        for c in hidden {
            assert_eq!(clean(&format!("a{c}b"), 10), "a b", "U+{:04X}", c as u32);
        }
        // Neighbours of the ranges, and text that merely looks unusual, stay.
        for text in ["\u{2029}x", "\u{2061}", "\u{2070}", "é中<>", "\u{200A}"] {
            assert_eq!(clean(text, 10), text);
        }
    }

    /// A host that has not updated its abnix yet writes format 1, without
    /// ids: the fleet view still reads it.
    #[test]
    fn a_format_1_report_without_ids_parses_and_round_trips() {
        let mut old = report();
        old.format = OLDEST_REPORT_FORMAT;
        for slot in &mut old.slots {
            slot.id = None;
        }
        let json = old.to_json();
        assert!(!String::from_utf8_lossy(&json).contains("\"id\""));
        assert_eq!(Report::parse(&json).unwrap(), old);
        assert_eq!(report().format, 2, "what a host writes today");
    }

    #[test]
    fn a_report_round_trips() {
        let report = report();
        assert_eq!(Report::parse(&report.to_json()).unwrap(), report);
    }

    #[test]
    fn a_bounded_report_of_the_largest_state_fits_and_parses() {
        let mut big = report();
        let long = "é\u{1b}[31m".repeat(10_000);
        big.abnix_version = long.clone();
        for slot in &mut big.slots {
            slot.label = Some(long.clone());
        }
        big.last_result.as_mut().unwrap().result = long.clone();
        big.failed_versions = (0..1000)
            .map(|version| FailedReport {
                version,
                at: big.at,
                reason: long.clone(),
            })
            .collect();
        assert!(matches!(
            Report::parse(&big.to_json()),
            Err(ReportError::TooLarge(_))
        ));
        let bounded = big.bounded();
        let json = bounded.to_json();
        assert!(json.len() <= MAX_REPORT_BYTES, "{} bytes", json.len());
        let parsed = Report::parse(&json).unwrap();
        assert_eq!(parsed.failed_versions.len(), MAX_FAILED_VERSIONS);
        assert_eq!(
            parsed.failed_versions[0].version,
            1000 - 16,
            "the newest kept"
        );
    }

    #[test]
    fn hostile_reports_are_refused() {
        let json = String::from_utf8(report().to_json()).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = value.clone();
            f(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown field", mutate(&|v| v["script"] = "x".into())),
            ("format", mutate(&|v| v["format"] = 3.into())),
            ("format 0", mutate(&|v| v["format"] = 0.into())),
            (
                "format 1 with an id",
                mutate(&|v| v["format"] = OLDEST_REPORT_FORMAT.into()),
            ),
            (
                "format 2 without an id",
                mutate(&|v| {
                    v["slots"][1].as_object_mut().unwrap().remove("id");
                }),
            ),
            (
                "an id without a version",
                mutate(&|v| v["slots"][1]["version"] = serde_json::Value::Null),
            ),
            (
                "id not a uuid",
                mutate(&|v| v["slots"][0]["id"] = "x".into()),
            ),
            (
                "machine id",
                mutate(&|v| v["machine_id"] = "../../kiosk.meta".into()),
            ),
            (
                "control character",
                mutate(&|v| v["slots"][0]["label"] = "a\u{1b}[2Jb".into()),
            ),
            (
                "long text",
                mutate(&|v| v["last_result"]["result"] = "x".repeat(401).into()),
            ),
            (
                "one slot",
                mutate(&|v| {
                    v["slots"].as_array_mut().unwrap().pop();
                }),
            ),
            ("slot name", mutate(&|v| v["slots"][1]["slot"] = "c".into())),
            (
                "state",
                mutate(&|v| v["slots"][1]["state"] = "great".into()),
            ),
            (
                "bidi override",
                mutate(&|v| v["slots"][1]["label"] = "kiosk \u{202E}2 sutats".into()),
            ),
            (
                "bidi isolate",
                mutate(&|v| v["last_result"]["result"] = "ok\u{2066}".into()),
            ),
            (
                "zero-width",
                mutate(&|v| {
                    v["failed_versions"] = serde_json::json!([
                        {"version": 3, "at": "2026-12-07T10:00:00Z", "reason": "fell\u{200B}back"}
                    ])
                }),
            ),
            (
                "byte order mark",
                mutate(&|v| v["abnix_version"] = "\u{FEFF}0.1".into()),
            ),
            (
                "version not the booted slot's",
                mutate(&|v| v["version"] = 2.into()),
            ),
            (
                "version without a booted slot",
                mutate(&|v| v["booted"] = serde_json::Value::Null),
            ),
            ("not json", b"<script>alert(1)</script>".to_vec()),
            // Valid JSON but for its size (whitespace only would fail to
            // parse anyway).
            ("too large", {
                let mut bytes = report().to_json();
                bytes.resize(MAX_REPORT_BYTES + 1, b' ');
                bytes
            }),
        ];
        for (what, bytes) in cases {
            assert!(Report::parse(&bytes).is_err(), "{what}");
        }
        assert!(matches!(
            Report::parse(&mutate(&|v| v["format"] = 3.into())),
            Err(ReportError::Format(3))
        ));
        value["slots"][0]["label"] = "<script>alert(1)</script>".into();
        assert!(
            Report::parse(&serde_json::to_vec(&value).unwrap()).is_ok(),
            "markup is text: the HTML view escapes it"
        );
    }
}
