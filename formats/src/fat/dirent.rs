//! Directory entries: the 32-byte short entry, long-name (LFN) entries and
//! their checksum, and the parse of a whole directory into named items.
//!
//! Format facts from the Microsoft FAT specification (fatgen103), "FAT
//! Directory Structure" and "FAT Long Directory Entries":
//! - short entry: DIR_Name[11] @0, DIR_Attr @11, DIR_NTRes @12,
//!   DIR_CrtTimeTenth @13, DIR_CrtTime @14, DIR_CrtDate @16,
//!   DIR_LstAccDate @18, DIR_FstClusHI @20, DIR_WrtTime @22, DIR_WrtDate @24,
//!   DIR_FstClusLO @26, DIR_FileSize @28;
//! - DIR_Name[0] == 0xE5: free (deleted) entry; == 0x00: free, and no entry
//!   after it is in use, so readers stop there (GRUB's fat.c does);
//! - long entry: LDIR_Ord @0 (0x40 marks the last, i.e. first stored, one),
//!   LDIR_Name1 @1 (5 UTF-16 units), LDIR_Attr @11 = 0x0F, LDIR_Type @12 = 0,
//!   LDIR_Chksum @13, LDIR_Name2 @14 (6 units), LDIR_FstClusLO @26 = 0,
//!   LDIR_Name3 @28 (2 units); 13 units per entry, the name ends with 0x0000
//!   and is padded with 0xFFFF; the entries are stored in reverse order right
//!   before the short entry, and each carries the short name's checksum.

use super::names::{short_name_display, ShortName};

pub(super) const ENTRY_SIZE: usize = 32;

pub(super) const ATTR_VOLUME_ID: u8 = 0x08;
pub(super) const ATTR_DIRECTORY: u8 = 0x10;
pub(super) const ATTR_ARCHIVE: u8 = 0x20;
/// READ_ONLY | HIDDEN | SYSTEM | VOLUME_ID: the attribute of a long entry.
const ATTR_LONG_NAME: u8 = 0x0F;
/// The bits compared to tell a long entry (fatgen103: ATTR_LONG_NAME_MASK).
const ATTR_LONG_NAME_MASK: u8 = 0x3F;

/// DIR_Name[0] of a deleted entry.
pub(super) const DELETED: u8 = 0xE5;
/// DIR_Name[0] of an entry never used: the directory ends here.
pub(super) const END_OF_DIRECTORY: u8 = 0x00;

const LAST_LONG_ENTRY: u8 = 0x40;
pub(super) const UNITS_PER_LONG_ENTRY: usize = 13;
/// 255 units need 20 long entries; a larger ordinal is corrupt.
const MAX_LONG_ENTRIES: usize = 20;

pub(super) type RawEntry = [u8; ENTRY_SIZE];

/// A free slot as abnix writes it: deleted, the rest zero, so that no stale
/// cluster number survives in it (dosfsck clears slots the same way).
pub(super) const DELETED_SLOT: RawEntry = {
    let mut slot = [0u8; ENTRY_SIZE];
    slot[0] = DELETED;
    slot
};

/// A FAT date and time (fatgen103, "Date and Time Formats").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp {
    /// Bits 15-9 years since 1980, 8-5 month, 4-0 day.
    date: u16,
    /// Bits 15-11 hours, 10-5 minutes, 4-0 seconds / 2.
    time: u16,
    /// Hundredths of a second beyond `time`, 0..=199.
    pub(crate) hundredths: u8,
}

impl Timestamp {
    /// Now, in UTC (FAT has no time zone; abnix machines run on UTC).
    pub(crate) fn now() -> Self {
        use chrono::{Datelike, Timelike};
        let now = chrono::Utc::now();
        // FAT dates cover 1980..=2107.
        if now.year() < 1980 {
            return Timestamp {
                date: (1 << 5) | 1,
                time: 0,
                hundredths: 0,
            };
        }
        let year = (now.year() - 1980).min(127) as u16;
        let date = (year << 9) | ((now.month() as u16) << 5) | now.day() as u16;
        let time =
            ((now.hour() as u16) << 11) | ((now.minute() as u16) << 5) | (now.second() as u16 / 2);
        let hundredths =
            ((now.second() % 2) * 100 + now.timestamp_subsec_millis().min(999) / 10) as u8;
        Timestamp {
            date,
            time,
            hundredths,
        }
    }
}

/// A short (8.3) directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShortEntry {
    pub(crate) name: ShortName,
    attr: u8,
    pub(crate) nt_res: u8,
    created: Timestamp,
    pub(crate) accessed_date: u16,
    pub(crate) first_cluster: u32,
    written: Timestamp,
    pub(crate) size: u32,
}

fn le16(raw: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([raw[at], raw[at + 1]])
}

fn le32(raw: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
}

impl ShortEntry {
    /// A new entry for a file (ARCHIVE) or a directory, stamped `now`.
    pub(crate) fn new(
        name: ShortName,
        attr: u8,
        first_cluster: u32,
        size: u32,
        now: Timestamp,
    ) -> Self {
        ShortEntry {
            name,
            attr,
            nt_res: 0,
            created: now,
            accessed_date: now.date,
            first_cluster,
            written: Timestamp {
                hundredths: 0,
                ..now
            },
            size,
        }
    }

    fn parse(raw: &RawEntry) -> Self {
        let mut name = [0u8; 11];
        name.copy_from_slice(&raw[..11]);
        ShortEntry {
            name,
            attr: raw[11],
            nt_res: raw[12],
            created: Timestamp {
                hundredths: raw[13],
                time: le16(raw, 14),
                date: le16(raw, 16),
            },
            accessed_date: le16(raw, 18),
            first_cluster: (u32::from(le16(raw, 20)) << 16) | u32::from(le16(raw, 26)),
            written: Timestamp {
                hundredths: 0,
                time: le16(raw, 22),
                date: le16(raw, 24),
            },
            size: le32(raw, 28),
        }
    }

    pub(crate) fn to_bytes(&self) -> RawEntry {
        let mut raw = [0u8; ENTRY_SIZE];
        raw[..11].copy_from_slice(&self.name);
        raw[11] = self.attr;
        raw[12] = self.nt_res;
        raw[13] = self.created.hundredths;
        raw[14..16].copy_from_slice(&self.created.time.to_le_bytes());
        raw[16..18].copy_from_slice(&self.created.date.to_le_bytes());
        raw[18..20].copy_from_slice(&self.accessed_date.to_le_bytes());
        raw[20..22].copy_from_slice(&((self.first_cluster >> 16) as u16).to_le_bytes());
        raw[22..24].copy_from_slice(&self.written.time.to_le_bytes());
        raw[24..26].copy_from_slice(&self.written.date.to_le_bytes());
        raw[26..28].copy_from_slice(&(self.first_cluster as u16).to_le_bytes());
        raw[28..32].copy_from_slice(&self.size.to_le_bytes());
        raw
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    pub(crate) fn is_volume_label(&self) -> bool {
        self.attr & ATTR_VOLUME_ID != 0
    }

    /// "." or ".." of a subdirectory.
    pub(crate) fn is_dot(&self) -> bool {
        self.name[0] == b'.'
    }
}

/// The checksum of a short name that each of its long entries carries
/// (fatgen103, "ChkSum()": rotate right by one, add the next byte).
pub(super) fn lfn_checksum(name: &ShortName) -> u8 {
    name.iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// How many long entries a name of `units` UTF-16 units takes.
pub(super) fn long_entries_needed(units: usize) -> usize {
    units.div_ceil(UNITS_PER_LONG_ENTRY)
}

/// The byte offsets of the 13 name units inside a long entry.
const UNIT_OFFSETS: [usize; UNITS_PER_LONG_ENTRY] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// The long entries for `units`, in on-disk order (highest ordinal first),
/// each carrying `checksum`.
pub(super) fn encode_long_name(units: &[u16], checksum: u8) -> Vec<RawEntry> {
    let count = long_entries_needed(units.len());
    let mut padded: Vec<u16> = units.to_vec();
    if padded.len() < count * UNITS_PER_LONG_ENTRY {
        padded.push(0);
    }
    padded.resize(count * UNITS_PER_LONG_ENTRY, 0xFFFF);
    (1..=count)
        .rev()
        .map(|ord| {
            let mut raw = [0u8; ENTRY_SIZE];
            raw[0] = ord as u8 | if ord == count { LAST_LONG_ENTRY } else { 0 };
            raw[11] = ATTR_LONG_NAME;
            raw[13] = checksum;
            let chunk = &padded[(ord - 1) * UNITS_PER_LONG_ENTRY..ord * UNITS_PER_LONG_ENTRY];
            for (unit, &at) in chunk.iter().zip(UNIT_OFFSETS.iter()) {
                raw[at..at + 2].copy_from_slice(&unit.to_le_bytes());
            }
            raw
        })
        .collect()
}

fn is_long_entry(raw: &RawEntry) -> bool {
    raw[11] & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME
}

/// One name in a directory: its long entries (if any) and its short entry.
#[derive(Debug, Clone)]
pub(super) struct DirItem {
    /// The long name, or the short name when there is no valid long name.
    pub(crate) name: String,
    pub(crate) short: ShortEntry,
    /// The first slot of the set: the first long entry, or the short entry.
    pub(crate) first_slot: usize,
    pub(crate) short_slot: usize,
}

/// A directory's items in slot order, and where the directory ends.
#[derive(Debug, Clone)]
pub(super) struct Listing {
    pub(crate) items: Vec<DirItem>,
    /// The first slot that was never used (DIR_Name[0] == 0), or the slot
    /// count when every slot has been used.
    pub(crate) end: usize,
}

/// Long entries read so far, waiting for their short entry.
struct PendingLongName {
    first_slot: usize,
    checksum: u8,
    /// The ordinal the next long entry must carry; 0 once complete.
    next_ord: usize,
    units: Vec<u16>,
}

impl PendingLongName {
    fn store(&mut self, ord: usize, raw: &RawEntry) {
        for (i, &at) in UNIT_OFFSETS.iter().enumerate() {
            self.units[(ord - 1) * UNITS_PER_LONG_ENTRY + i] = le16(raw, at);
        }
        self.next_ord = ord - 1;
    }

    /// The name, if these long entries belong to `short`.
    fn name_for(self, short: &ShortEntry) -> Option<String> {
        if self.next_ord != 0 || self.checksum != lfn_checksum(&short.name) {
            return None;
        }
        let end = self
            .units
            .iter()
            .position(|&u| u == 0)
            .unwrap_or(self.units.len());
        (end > 0).then(|| String::from_utf16_lossy(&self.units[..end]))
    }
}

/// Parses the slots of a directory (its clusters, concatenated).
///
/// Long entries that do not form a complete set ending in a short entry with
/// their checksum are orphans, as fatgen103 prescribes: they are skipped and
/// the short entry keeps its short name. Sets may straddle sectors and
/// clusters. Never fails: what cannot be a name is skipped.
pub(super) fn parse_directory(bytes: &[u8]) -> Listing {
    let mut items = Vec::new();
    let mut pending: Option<PendingLongName> = None;
    let slots = bytes.chunks_exact(ENTRY_SIZE);
    let slot_count = slots.len();
    for (slot, raw) in slots.enumerate() {
        let raw: &RawEntry = raw.try_into().expect("chunks are ENTRY_SIZE long");
        match raw[0] {
            END_OF_DIRECTORY => return Listing { items, end: slot },
            DELETED => pending = None,
            _ if is_long_entry(raw) => {
                let ord = usize::from(raw[0] & !LAST_LONG_ENTRY);
                if raw[0] & LAST_LONG_ENTRY != 0 && (1..=MAX_LONG_ENTRIES).contains(&ord) {
                    let mut start = PendingLongName {
                        first_slot: slot,
                        checksum: raw[13],
                        next_ord: ord,
                        units: vec![0; ord * UNITS_PER_LONG_ENTRY],
                    };
                    start.store(ord, raw);
                    pending = Some(start);
                } else {
                    pending = pending
                        .take()
                        .filter(|p| {
                            raw[0] & LAST_LONG_ENTRY == 0
                                && ord >= 1
                                && ord == p.next_ord
                                && raw[13] == p.checksum
                        })
                        .map(|mut p| {
                            p.store(ord, raw);
                            p
                        });
                }
            }
            _ => {
                let short = ShortEntry::parse(raw);
                let (first_slot, long_name) = match pending.take() {
                    Some(p) if !short.is_volume_label() => {
                        let first = p.first_slot;
                        match p.name_for(&short) {
                            Some(name) => (first, Some(name)),
                            None => (slot, None),
                        }
                    }
                    _ => (slot, None),
                };
                let name =
                    long_name.unwrap_or_else(|| short_name_display(&short.name, short.nt_res));
                items.push(DirItem {
                    name,
                    short,
                    first_slot,
                    short_slot: slot,
                });
            }
        }
    }
    Listing {
        items,
        end: slot_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_name(s: &[u8; 11]) -> ShortName {
        *s
    }

    fn stamp() -> Timestamp {
        Timestamp {
            date: (44 << 9) | (3 << 5) | 14,
            time: (15 << 11) | (9 << 5) | 13,
            hundredths: 150,
        }
    }

    fn set(long: &str, short: &[u8; 11], cluster: u32, size: u32) -> Vec<u8> {
        let units: Vec<u16> = long.encode_utf16().collect();
        let sum = lfn_checksum(short);
        let mut out: Vec<u8> = encode_long_name(&units, sum).concat();
        out.extend_from_slice(
            &ShortEntry::new(*short, ATTR_ARCHIVE, cluster, size, stamp()).to_bytes(),
        );
        out
    }

    #[test]
    fn short_entry_round_trips() {
        let entry = ShortEntry {
            name: short_name(b"KERNEL     "),
            attr: ATTR_ARCHIVE,
            nt_res: 0x18,
            created: stamp(),
            accessed_date: 0x5876,
            first_cluster: 0x0012_3456,
            written: Timestamp {
                hundredths: 0,
                ..stamp()
            },
            size: 0xDEAD_BEEF,
        };
        let raw = entry.to_bytes();
        assert_eq!(&raw[20..22], &[0x12, 0x00], "DIR_FstClusHI at 20");
        assert_eq!(&raw[26..28], &[0x56, 0x34], "DIR_FstClusLO at 26");
        assert_eq!(ShortEntry::parse(&raw), entry);
    }

    #[test]
    fn checksum_matches_a_known_value() {
        // mtools wrote "a-very-long-name+3.conf" as A-VERY~1.CON with
        // checksum 0x8B (seen in an image made by mcopy).
        assert_eq!(lfn_checksum(b"A-VERY~1CON"), 0x8B);
    }

    #[test]
    fn long_names_round_trip_through_a_directory() {
        for name in [
            "a",
            "exactly13char",
            "fourteen chars",
            "Grüße aus Köln ☃.txt",
            &"n".repeat(255),
        ] {
            let bytes = set(name, b"NAME~1  TXT", 7, 42);
            let listing = parse_directory(&bytes);
            assert_eq!(listing.items.len(), 1, "{name}");
            let item = &listing.items[0];
            assert_eq!(item.name, name);
            assert_eq!(item.first_slot, 0);
            assert_eq!(
                item.short_slot,
                long_entries_needed(name.encode_utf16().count())
            );
            assert_eq!(item.short.first_cluster, 7);
            assert_eq!(item.short.size, 42);
            assert_eq!(listing.end, bytes.len() / ENTRY_SIZE);
        }
    }

    #[test]
    fn long_entries_are_terminated_and_padded() {
        let units: Vec<u16> = "abc".encode_utf16().collect();
        let entries = encode_long_name(&units, 0x11);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e[0], 0x41, "ordinal 1 with the last-entry flag");
        assert_eq!((e[11], e[12], e[13]), (0x0F, 0, 0x11));
        assert_eq!(
            &e[1..9],
            &[b'a', 0, b'b', 0, b'c', 0, 0, 0],
            "terminator after the name"
        );
        assert_eq!(&e[9..11], &[0xFF, 0xFF], "padding after the terminator");
        assert_eq!(&e[26..28], &[0, 0], "LDIR_FstClusLO is zero");
        // A name filling its entries exactly has no terminator.
        let thirteen: Vec<u16> = "abcdefghijklm".encode_utf16().collect();
        let e = &encode_long_name(&thirteen, 0)[0];
        assert_eq!(&e[30..32], &[b'm', 0]);
    }

    #[test]
    fn a_bad_checksum_leaves_the_short_name() {
        let mut bytes = set("long name.txt", b"LONGNA~1TXT", 3, 1);
        bytes[13] ^= 0xFF;
        let listing = parse_directory(&bytes);
        assert_eq!(listing.items.len(), 1);
        assert_eq!(listing.items[0].name, "LONGNA~1.TXT");
        assert_eq!(listing.items[0].first_slot, listing.items[0].short_slot);
    }

    #[test]
    fn out_of_order_and_orphaned_long_entries_are_skipped() {
        // Two long entries with their order swapped.
        let name = "twenty-six characters long";
        let mut bytes = set(name, b"TWENTY~1   ", 3, 1);
        let (first, second) = bytes.split_at_mut(ENTRY_SIZE);
        first.swap_with_slice(&mut second[..ENTRY_SIZE]);
        assert_eq!(parse_directory(&bytes).items[0].name, "TWENTY~1");
        // Long entries followed by a deleted short entry, then a plain entry.
        let mut bytes = set("orphan name", b"ORPHAN~1   ", 3, 1);
        let short_at = bytes.len() - ENTRY_SIZE;
        bytes[short_at] = DELETED;
        bytes.extend_from_slice(
            &ShortEntry::new(*b"PLAIN      ", ATTR_ARCHIVE, 4, 1, stamp()).to_bytes(),
        );
        let listing = parse_directory(&bytes);
        assert_eq!(listing.items.len(), 1);
        assert_eq!(listing.items[0].name, "PLAIN");
        // An ordinal above 20 cannot start a name.
        let mut bytes = set("x", b"X          ", 3, 1);
        bytes[0] = 0x40 | 21;
        assert_eq!(parse_directory(&bytes).items[0].name, "X");
    }

    #[test]
    fn the_directory_ends_at_the_first_never_used_slot() {
        let mut bytes = set("first", b"FIRST      ", 3, 1);
        let first_len = bytes.len() / ENTRY_SIZE;
        bytes.extend_from_slice(&[0u8; ENTRY_SIZE]);
        bytes.extend_from_slice(&set("hidden", b"HIDDEN     ", 4, 1));
        let listing = parse_directory(&bytes);
        assert_eq!(listing.items.len(), 1);
        assert_eq!(listing.end, first_len);
    }

    #[test]
    fn deleted_entries_and_labels_are_kept_apart() {
        let mut bytes = ShortEntry::new(*b"ABNIX-ESP  ", ATTR_VOLUME_ID, 0, 0, stamp())
            .to_bytes()
            .to_vec();
        bytes.extend_from_slice(&DELETED_SLOT);
        bytes.extend_from_slice(&set("kept", b"KEPT       ", 5, 9));
        let listing = parse_directory(&bytes);
        assert_eq!(listing.items.len(), 2);
        assert!(listing.items[0].short.is_volume_label());
        assert_eq!(listing.items[1].name, "kept");
        assert_eq!(listing.items[1].first_slot, 2);
    }

    #[test]
    fn parsing_garbage_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let listing = parse_directory(&bytes);
            assert!(listing.end <= 16);
        }
    }
}
