//! systemd-boot: Boot Loader Specification entries, boot counting in entry
//! file names, and the order in which systemd-boot picks an entry.
//!
//! abnix keeps one entry per activated slot, `loader/entries/abnix-<slot>.conf`,
//! with a boot counter `+LEFT[-DONE]` before `.conf` while the slot is on
//! trial. systemd-boot itself renames the entry it boots (`+3` → `+2-1` →
//! … → `+0-3`) and sorts entries with no tries left last, so a failing trial
//! falls back to the other slot without help. Facts below are from
//! systemd's src/boot/efi/boot.c (v252, the version Debian ships and the one
//! tested under OVMF; see docs/boot.md): `config_entry_parse_tries`,
//! `config_entry_compare`, `config_default_entry_select`.

use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::boot::esp;
use crate::boot::state::SlotState;
use abnix_formats::slot::Slot;

/// The `sort-key` of abnix entries. systemd-boot orders entries that have a
/// sort key by it, then by `version`, newest first; without one it would
/// order by file name, putting `abnix-b` before `abnix-a` whatever their
/// versions.
pub(crate) const SORT_KEY: &str = "abnix";

const ENTRY_PREFIX: &str = "abnix-";
const ENTRY_SUFFIX: &str = ".conf";

/// A boot counter in an entry file name: `+LEFT` or `+LEFT-DONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BootCounter {
    /// Boot attempts left.
    left: u64,
    /// Attempts made so far; systemd-boot reads a missing `-DONE` as 0.
    done: u64,
}

/// Splits a file name stem (without `.conf`) into the part before the boot
/// counter and the counter, following systemd-boot's grammar: the counter is
/// the suffix `+` digits, optionally `-` digits. Anything else means no
/// counter (the whole stem is the name), as in systemd-boot.
pub(crate) fn split_counter(stem: &str) -> (&str, Option<BootCounter>) {
    let Some(plus) = stem.rfind('+') else {
        return (stem, None);
    };
    let counter = &stem[plus + 1..];
    let (left, done) = match counter.split_once('-') {
        Some((left, done)) => (left, Some(done)),
        None => (counter, None),
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (number(left), done.map(number)) {
        (Some(left), None) => (&stem[..plus], Some(BootCounter { left, done: 0 })),
        (Some(left), Some(Some(done))) => (&stem[..plus], Some(BootCounter { left, done })),
        _ => (stem, None),
    }
}

/// The name of an abnix entry file: which slot and its boot counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryName {
    pub(crate) slot: Slot,
    pub(crate) counter: Option<BootCounter>,
}

/// Why a file in `loader/entries` that claims to be abnix's is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    #[error("boot entry {0:?} starts with \"abnix-\" but is not abnix-<a|b>[+LEFT[-DONE]].conf")]
    BadEntryName(String),
    #[error("boot entry line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("boot entry line {line} is not UTF-8")]
    NotUtf8 { line: usize },
    #[error("boot entry has a NUL byte at offset {offset}, where systemd-boot stops reading")]
    Nul { offset: usize },
    #[error("boot entry value of {key:?} contains a line break")]
    LineBreak { key: String },
}

impl EntryName {
    /// The entry named by `file_name`: `Ok(None)` for entries that are not
    /// abnix's (other systems may share the ESP). Case does not matter, as
    /// on FAT and in systemd-boot.
    pub(crate) fn parse(file_name: &str) -> Result<Option<EntryName>, BlsError> {
        let lower = file_name.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix(ENTRY_PREFIX) else {
            return Ok(None);
        };
        let bad = || BlsError::BadEntryName(file_name.to_owned());
        let stem = rest.strip_suffix(ENTRY_SUFFIX).ok_or_else(bad)?;
        let (slot, counter) = split_counter(stem);
        let slot = slot.parse::<Slot>().map_err(|_| bad())?;
        Ok(Some(EntryName { slot, counter }))
    }

    pub(crate) fn file_name(&self) -> String {
        let mut name = format!("{ENTRY_PREFIX}{}", self.slot);
        if let Some(c) = self.counter {
            write!(name, "+{}-{}", c.left, c.done).unwrap();
        }
        name.push_str(ENTRY_SUFFIX);
        name
    }

    /// Path of the entry on the ESP.
    pub(crate) fn path(&self) -> String {
        format!("{}/{}", esp::ENTRIES_DIR, self.file_name())
    }

    /// A fresh trial: `tries` attempts, none made (`abnix-<slot>+N-0.conf`).
    pub(crate) fn trial(slot: Slot, tries: u64) -> EntryName {
        EntryName {
            slot,
            counter: Some(BootCounter {
                left: tries,
                done: 0,
            }),
        }
    }

    /// A good slot: no counter.
    pub(crate) fn good(slot: Slot) -> EntryName {
        EntryName {
            slot,
            counter: None,
        }
    }

    /// A good slot that an operator rolled back from: no tries left and none
    /// made, so systemd-boot sorts it last but can still boot it when the
    /// other slot's entry is gone. systemd-boot itself never produces `+0-0`:
    /// every attempt it counts raises DONE.
    pub(crate) fn demoted(slot: Slot) -> EntryName {
        EntryName::trial(slot, 0)
    }

    /// The abnix slot state this name stands for.
    pub(crate) fn state(&self) -> SlotState {
        match self.counter {
            None => SlotState::Good,
            Some(BootCounter { left: 0, done: 0 }) => SlotState::Good,
            Some(BootCounter { left, .. }) => SlotState::Trial {
                tries_left: u8::try_from(left).unwrap_or(u8::MAX),
            },
        }
    }

    /// The name systemd-boot gives the entry when it boots it
    /// (`config_entry_parse_tries`: LEFT-1 but not below 0, DONE+1).
    #[cfg(any(test, feature = "testutil"))]
    pub(crate) fn after_boot_attempt(&self) -> EntryName {
        EntryName {
            counter: self.counter.map(|c| BootCounter {
                left: c.left.saturating_sub(1),
                done: c.done.saturating_add(1),
            }),
            ..*self
        }
    }
}

/// A Boot Loader Specification type #1 entry, as far as abnix uses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlsEntry {
    title: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) sort_key: Option<String>,
    pub(crate) machine_id: Option<String>,
    pub(crate) linux: Option<String>,
    pub(crate) initrd: Vec<String>,
    /// Joined with spaces by systemd-boot.
    options: Vec<String>,
    /// Keys abnix does not use, kept in order.
    other: Vec<(String, String)>,
}

impl BlsEntry {
    /// Reads an entry file as systemd-boot does (`line_get_key_value` and
    /// `config_entry_add_type1`): the text ends at the first NUL byte; a
    /// line ends at `\n` or `\r`; blank and `#` lines are skipped, and so is
    /// a line without a value; the key ends at the first space or tab, the
    /// value is the rest with surrounding blanks and one pair of enclosing
    /// double quotes removed. Returns the entry systemd-boot sees and what
    /// it silently skipped (nothing, for an entry abnix wrote).
    pub(crate) fn read(bytes: &[u8]) -> (BlsEntry, Vec<BlsError>) {
        let mut problems = Vec::new();
        let text = match bytes.iter().position(|&b| b == 0) {
            Some(offset) => {
                problems.push(BlsError::Nul { offset });
                &bytes[..offset]
            }
            None => bytes,
        };
        let mut entry = BlsEntry::default();
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line_number = i + 1;
            let raw = String::from_utf8(raw.to_vec()).unwrap_or_else(|e| {
                problems.push(BlsError::NotUtf8 { line: line_number });
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            });
            for part in raw.split('\r') {
                let line = part.trim_matches([' ', '\t']);
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once([' ', '\t']) else {
                    problems.push(BlsError::BadLine {
                        line: line_number,
                        reason: format!("{line:?} has no value"),
                    });
                    continue;
                };
                entry.set(key, value.trim_matches([' ', '\t']));
            }
        }
        (entry, problems)
    }

    /// Takes one `key value` line (value trimmed) as systemd-boot does.
    fn set(&mut self, key: &str, value: &str) {
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_owned();
        match key {
            "title" => self.title = Some(value),
            "version" => self.version = Some(value),
            "sort-key" => self.sort_key = Some(value),
            "machine-id" => self.machine_id = Some(value),
            "linux" => self.linux = Some(value),
            "initrd" => self.initrd.push(value),
            "options" => self.options.push(value),
            _ => self.other.push((key.to_owned(), value)),
        }
    }

    pub fn serialize(&self) -> Result<String, BlsError> {
        let singles = [
            ("title", &self.title),
            ("version", &self.version),
            ("sort-key", &self.sort_key),
            ("machine-id", &self.machine_id),
            ("linux", &self.linux),
        ];
        let lines = singles
            .into_iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
            .chain(self.initrd.iter().map(|v| ("initrd", v.as_str())))
            .chain(self.options.iter().map(|v| ("options", v.as_str())))
            .chain(self.other.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut text = String::new();
        for (key, value) in lines {
            if value.contains(['\n', '\r']) {
                return Err(BlsError::LineBreak {
                    key: key.to_owned(),
                });
            }
            writeln!(text, "{key} {value}").unwrap();
        }
        Ok(text)
    }

    /// The kernel command line systemd-boot passes (before it adds
    /// `initrd=` for the kernel's EFI stub).
    pub(crate) fn cmdline(&self) -> String {
        self.options.join(" ")
    }
}

/// The entry abnix writes for a slot.
pub fn slot_entry(slot: Slot, version: u64, label: &str, cmdline: &str) -> BlsEntry {
    let options = if cmdline.is_empty() {
        format!("abnix.slot={slot}")
    } else {
        format!("{cmdline} abnix.slot={slot}")
    };
    BlsEntry {
        title: Some(format!("{label} (slot {slot})")),
        version: Some(version.to_string()),
        sort_key: Some(SORT_KEY.to_owned()),
        linux: Some(esp::absolute(&esp::kernel(slot))),
        initrd: vec![esp::absolute(&esp::initrd(slot))],
        options: vec![options],
        ..BlsEntry::default()
    }
}

/// `loader/loader.conf`, written once at install.
///
/// No `default`: a configured default (like the `LoaderEntryDefault` EFI
/// variable) wins over the sort order *and* ignores boot counting
/// (`config_default_entry_select`), which would defeat the fallback. With
/// `timeout 0` no menu shows unless a key is held. `reboot-on-error` makes
/// systemd-boot 258 and later reboot when an entry fails to start, so the
/// next try comes without help (v252 ignores the unknown key and returns to
/// the firmware instead; see docs/boot.md).
pub(crate) fn loader_conf() -> String {
    "timeout 0\neditor no\nreboot-on-error yes\n".to_owned()
}

/// What systemd-boot's ordering looks at in an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SortEntry<'a> {
    /// The entry file name.
    pub(crate) file_name: &'a str,
    pub(crate) counter: Option<BootCounter>,
    pub(crate) sort_key: Option<&'a str>,
    pub(crate) machine_id: Option<&'a str>,
    pub(crate) version: Option<&'a str>,
}

/// systemd-boot v252's `config_entry_compare`: `Less` sorts first, and with
/// no default configured the first entry boots.
///
/// 1. entries with no tries left last; 2. entries with a sort key before
///    those without; 3. by sort key, machine id, then version, newest first;
///    4. by id (the lowercased file name, counter included in v252; newer
///    versions drop the counter, which only matters for equal versions),
///    newest first; 5. more tries left first, then fewer tries done.
pub(crate) fn compare_entries(a: &SortEntry, b: &SortEntry) -> Ordering {
    let exhausted = |e: &SortEntry| e.counter.is_some_and(|c| c.left == 0);
    exhausted(a)
        .cmp(&exhausted(b))
        .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
        .then_with(|| match (a.sort_key, b.sort_key) {
            (Some(ka), Some(kb)) => ka
                .cmp(kb)
                .then_with(|| a.machine_id.cmp(&b.machine_id))
                .then_with(|| {
                    strverscmp_improved(a.version.unwrap_or(""), b.version.unwrap_or("")).reverse()
                }),
            _ => Ordering::Equal,
        })
        .then_with(|| {
            strverscmp_improved(
                &a.file_name.to_ascii_lowercase(),
                &b.file_name.to_ascii_lowercase(),
            )
            .reverse()
        })
        .then_with(|| match (a.counter, b.counter) {
            (Some(ca), Some(cb)) => cb.left.cmp(&ca.left).then(ca.done.cmp(&cb.done)),
            _ => Ordering::Equal,
        })
}

/// The entry systemd-boot boots when nothing overrides its choice: the
/// first after sorting. (It only lists entries whose `linux` file exists.)
pub(crate) fn first_entry<'a, 'b>(entries: &'b [SortEntry<'a>]) -> Option<&'b SortEntry<'a>> {
    entries.iter().min_by(|a, b| compare_entries(a, b))
}

/// systemd's `strverscmp_improved` (src/fundamental/string-util-fundamental.c):
/// compares version strings segment by segment, numbers numerically; `~`
/// marks a pre-release (older), `-`, `^` and `.` separate segments.
pub(crate) fn strverscmp_improved(a: &str, b: &str) -> Ordering {
    let valid = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.');
    let first = |s: &[u8]| s.first().copied().unwrap_or(0);
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        while a.first().is_some_and(|c| !valid(c)) {
            a = &a[1..];
        }
        while b.first().is_some_and(|c| !valid(c)) {
            b = &b[1..];
        }
        // '~' marks a pre-release: the segment with it is older.
        if first(a) == b'~' || first(b) == b'~' {
            let ord = (first(a) != b'~').cmp(&(first(b) != b'~'));
            if ord != Ordering::Equal {
                return ord;
            }
            a = &a[1..];
            b = &b[1..];
        }
        // Apart from '~', the string with more segments is newer.
        if a.is_empty() || b.is_empty() {
            return first(a).cmp(&first(b));
        }
        // '-' (release), '^' (patched) and '.' (point release): the segment
        // with the separator is older than one without.
        for separator in [b'-', b'^', b'.'] {
            if first(a) == separator || first(b) == separator {
                let ord = (first(a) != separator).cmp(&(first(b) != separator));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let alphas = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
        let (la, lb) = if first(a).is_ascii_digit() || first(b).is_ascii_digit() {
            let (la, lb) = (digits(a), digits(b));
            // A number is newer than no number; numbers compare by value.
            let (na, nb) = (trim_zeros(&a[..la]), trim_zeros(&b[..lb]));
            let ord = (la > 0)
                .cmp(&(lb > 0))
                .then(na.len().cmp(&nb.len()))
                .then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
            (la, lb)
        } else {
            let (la, lb) = (alphas(a), alphas(b));
            let common = la.min(lb);
            let ord = a[..common].cmp(&b[..common]).then(la.cmp(&lb));
            if ord != Ordering::Equal {
                return ord;
            }
            (la, lb)
        };
        a = &a[la..];
        b = &b[lb..];
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_grammar_follows_systemd_boot() {
        let c = |left, done| Some(BootCounter { left, done });
        assert_eq!(split_counter("abnix-a+3"), ("abnix-a", c(3, 0)));
        assert_eq!(split_counter("abnix-a+2-1"), ("abnix-a", c(2, 1)));
        assert_eq!(split_counter("abnix-a+0-3"), ("abnix-a", c(0, 3)));
        assert_eq!(split_counter("x+1+2-3"), ("x+1", c(2, 3)));
        for plain in [
            "abnix-a",
            "a+",
            "a+-1",
            "a+1-",
            "a+1-2-3",
            "a+x",
            "a+99999999999999999999999",
        ] {
            assert_eq!(split_counter(plain), (plain, None), "{plain}");
        }
    }

    #[test]
    fn entry_names_round_trip() {
        let names = [
            ("abnix-a.conf", EntryName::good(Slot::A)),
            ("abnix-b+3-0.conf", EntryName::trial(Slot::B, 3)),
            ("abnix-b+0-0.conf", EntryName::demoted(Slot::B)),
        ];
        for (file, name) in names {
            assert_eq!(name.file_name(), file);
            assert_eq!(EntryName::parse(file), Ok(Some(name)));
        }
        assert_eq!(
            EntryName::parse("ABNIX-B+2-1.CONF"),
            Ok(Some(EntryName {
                slot: Slot::B,
                counter: Some(BootCounter { left: 2, done: 1 })
            }))
        );
        assert_eq!(
            EntryName::parse("abnix-a+3.conf").unwrap().unwrap().counter,
            Some(BootCounter { left: 3, done: 0 })
        );
        assert_eq!(
            EntryName::good(Slot::B).path(),
            "loader/entries/abnix-b.conf"
        );
    }

    #[test]
    fn foreign_entries_are_ignored_and_broken_ones_named() {
        assert_eq!(EntryName::parse("debian-6.1.conf"), Ok(None));
        assert_eq!(EntryName::parse("random-seed"), Ok(None));
        for bad in [
            "abnix-c.conf",
            "abnix-a",
            "abnix-a+1.efi",
            "abnix-.conf",
            "abnix-a+x.conf",
        ] {
            assert_eq!(
                EntryName::parse(bad),
                Err(BlsError::BadEntryName(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            EntryName::parse("abnix-c.conf").unwrap_err().to_string(),
            "boot entry \"abnix-c.conf\" starts with \"abnix-\" but is not \
             abnix-<a|b>[+LEFT[-DONE]].conf"
        );
    }

    #[test]
    fn names_map_to_slot_states() {
        assert_eq!(EntryName::good(Slot::A).state(), SlotState::Good);
        assert_eq!(EntryName::demoted(Slot::A).state(), SlotState::Good);
        assert_eq!(
            EntryName::trial(Slot::A, 3).state(),
            SlotState::Trial { tries_left: 3 }
        );
        let failed = EntryName::parse("abnix-a+0-3.conf").unwrap().unwrap();
        assert_eq!(failed.state(), SlotState::Trial { tries_left: 0 });
    }

    #[test]
    fn boot_attempts_rename_like_systemd_boot() {
        // Observed under OVMF with systemd-boot 252: +2 → +1-1 → +0-2 → +0-3.
        let mut name = EntryName::parse("abnix-b+2.conf").unwrap().unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            name = name.after_boot_attempt();
            seen.push(name.file_name());
        }
        assert_eq!(
            seen,
            ["abnix-b+1-1.conf", "abnix-b+0-2.conf", "abnix-b+0-3.conf"]
        );
        assert_eq!(
            EntryName::good(Slot::A).after_boot_attempt(),
            EntryName::good(Slot::A)
        );
    }

    #[test]
    fn entries_round_trip() {
        let entry = slot_entry(Slot::B, 43, "kiosk 2026-11-22", r#"init=/x/init q="a b""#);
        let text = entry.serialize().unwrap();
        assert_eq!(
            text,
            "title kiosk 2026-11-22 (slot b)\nversion 43\nsort-key abnix\n\
             linux /abnix/b/kernel\ninitrd /abnix/b/initrd\n\
             options init=/x/init q=\"a b\" abnix.slot=b\n"
        );
        assert_eq!(BlsEntry::read(text.as_bytes()), (entry.clone(), vec![]));
        assert_eq!(entry.cmdline(), r#"init=/x/init q="a b" abnix.slot=b"#);
        assert_eq!(slot_entry(Slot::A, 1, "x", "").cmdline(), "abnix.slot=a");
    }

    #[test]
    fn parses_foreign_entries_like_systemd_boot() {
        let text = "# comment\n\ntitle   \"Debian GNU/Linux\"  \r\nlinux\t/vmlinuz\n\
                    options a=1\noptions b=2\ndevicetree /dtb\n";
        let (entry, problems) = BlsEntry::read(text.as_bytes());
        assert_eq!(problems, []);
        assert_eq!(entry.title.as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(entry.linux.as_deref(), Some("/vmlinuz"));
        assert_eq!(entry.cmdline(), "a=1 b=2");
        assert_eq!(entry.other, [("devicetree".to_owned(), "/dtb".to_owned())]);
        let entry = BlsEntry {
            title: Some("two\nlines".into()),
            ..BlsEntry::default()
        };
        assert_eq!(
            entry.serialize(),
            Err(BlsError::LineBreak {
                key: "title".into()
            })
        );
    }

    #[test]
    fn reads_damaged_entries_like_systemd_boot_and_names_what_it_skipped() {
        // A line without a value is skipped; a lone \r ends a line.
        let (entry, problems) = BlsEntry::read(b"title x\nlinux\nversion 3\rsort-key abnix\n");
        assert_eq!(entry.title.as_deref(), Some("x"));
        assert_eq!(entry.linux, None);
        assert_eq!(entry.version.as_deref(), Some("3"));
        assert_eq!(entry.sort_key.as_deref(), Some("abnix"));
        assert_eq!(
            problems,
            [BlsError::BadLine {
                line: 2,
                reason: "\"linux\" has no value".into()
            }]
        );
        // systemd-boot reads a C string: nothing after a NUL counts.
        let (entry, problems) = BlsEntry::read(b"linux /abnix/a/kernel\n\0\0options x\n");
        assert_eq!(entry.linux.as_deref(), Some("/abnix/a/kernel"));
        assert_eq!(entry.options, Vec::<String>::new());
        assert_eq!(problems, [BlsError::Nul { offset: 22 }]);
        // Invalid UTF-8 is replaced; the rest of the line still counts.
        let (entry, problems) = BlsEntry::read(b"title \xff\xfe\nlinux /k\n");
        assert_eq!(entry.title.as_deref(), Some("\u{fffd}\u{fffd}"));
        assert_eq!(entry.linux.as_deref(), Some("/k"));
        assert_eq!(problems, [BlsError::NotUtf8 { line: 1 }]);
        assert_eq!(problems[0].to_string(), "boot entry line 1 is not UTF-8");
    }

    #[test]
    fn version_comparison_matches_systemd() {
        // The order documented in strverscmp_improved, oldest first.
        let ordered = [
            "122.1",
            "123~rc1-1",
            "123",
            "123-a",
            "123-a.1",
            "123-1",
            "123-1.1",
            "123^post1",
            "123.a-1",
            "123.1-1",
            "123a-1",
            "124-1",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(strverscmp_improved(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(strverscmp_improved("9", "10"), Ordering::Less);
        assert_eq!(strverscmp_improved("0042", "42"), Ordering::Equal);
        assert_eq!(strverscmp_improved("", "1"), Ordering::Less);
        assert_eq!(strverscmp_improved("1_a", "1a"), Ordering::Equal);
    }

    fn sort_entry<'a>(file_name: &'a str, version: &'a str) -> SortEntry<'a> {
        SortEntry {
            file_name,
            counter: split_counter(file_name.strip_suffix(".conf").unwrap()).1,
            sort_key: Some(SORT_KEY),
            machine_id: None,
            version: Some(version),
        }
    }

    #[test]
    fn systemd_boot_order_predicts_the_booted_slot() {
        // Each case was booted under OVMF with systemd-boot 252 (docs/boot.md).
        let cases = [
            (
                ("abnix-a.conf", "42"),
                ("abnix-b+2.conf", "43"),
                "abnix-b+2.conf",
            ),
            (
                ("abnix-a.conf", "42"),
                ("abnix-b+0-2.conf", "43"),
                "abnix-a.conf",
            ),
            (
                ("abnix-a.conf", "42"),
                ("abnix-b+0.conf", "43"),
                "abnix-a.conf",
            ),
            (
                ("abnix-a.conf", "44"),
                ("abnix-b.conf", "43"),
                "abnix-a.conf",
            ),
        ];
        for ((fa, va), (fb, vb), expected) in cases {
            let entries = [sort_entry(fa, va), sort_entry(fb, vb)];
            assert_eq!(first_entry(&entries).unwrap().file_name, expected);
            let swapped = [entries[1], entries[0]];
            assert_eq!(first_entry(&swapped).unwrap().file_name, expected);
        }
    }

    #[test]
    fn sort_key_beats_file_names_and_counts_break_ties() {
        let keyed = sort_entry("abnix-a.conf", "1");
        let unkeyed = SortEntry {
            sort_key: None,
            ..sort_entry("zzz.conf", "9")
        };
        assert_eq!(compare_entries(&keyed, &unkeyed), Ordering::Less);
        let more = sort_entry("x+3-0.conf", "1");
        let fewer = SortEntry {
            file_name: "x+3-0.conf",
            counter: Some(BootCounter { left: 2, done: 1 }),
            ..more
        };
        assert_eq!(compare_entries(&more, &fewer), Ordering::Less);
        assert_eq!(first_entry(&[]), None);
    }

    #[test]
    fn loader_conf_never_sets_a_default() {
        let conf = loader_conf();
        assert!(conf.lines().all(|l| !l.starts_with("default")));
        assert!(conf.contains("timeout 0\n"));
    }
}
