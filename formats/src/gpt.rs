//! GUID partition tables and the protective MBR.
//!
//! Pure parse/serialize of the GPT header, the partition entries and the
//! protective MBR, plus reading and writing a whole table on a [`Disk`].
//! Layouts follow the UEFI specification ("GUID Partition Table (GPT) Disk
//! Layout": header fields at the offsets below, 128-byte entries, protective
//! MBR with one type-0xEE record starting at LBA 1); the sgdisk
//! interoperability tests check the bytes against GPT fdisk.
//!
//! A disk holds two copies of the table: the primary (header at LBA 1, entries
//! from LBA 2) and the backup (entries just before the header in the last
//! LBA). [`Gpt::read`] falls back to the backup when the primary is damaged;
//! [`Gpt::write`] writes the backup first, so a power cut while the primary is
//! rewritten still leaves one complete copy.

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::disk::{read_at, write_at, Disk};

/// A GUID as stored on disk: the first three fields little-endian, the rest
/// in byte order ("mixed-endian", as the UEFI specification stores
/// `EFI_GUID`). Its text form is the usual `8-4-4-4-12` hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);
    /// BIOS boot partition, where GRUB puts core.img (sgdisk code EF02).
    pub(crate) const BIOS_BOOT: Guid = Guid::from_text("21686148-6449-6E6F-744E-656564454649");
    /// EFI System Partition (UEFI specification; Discoverable Partitions
    /// Specification "esp"; sgdisk EF00).
    pub(crate) const EFI_SYSTEM: Guid = Guid::from_text("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    /// Root partition for x86-64 (Discoverable Partitions Specification;
    /// sgdisk 8304).
    pub(crate) const LINUX_ROOT_X86_64: Guid =
        Guid::from_text("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    /// Root partition for 64-bit ARM (Discoverable Partitions Specification;
    /// sgdisk 8305).
    pub(crate) const LINUX_ROOT_AARCH64: Guid =
        Guid::from_text("B921B045-1DF0-41C3-AF44-4C6F280D3FAE");
    /// Generic Linux data partition (Discoverable Partitions Specification
    /// "linux-generic"; sgdisk code 8300).
    pub const LINUX_FILESYSTEM: Guid = Guid::from_text("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

    /// Parses the text form at compile time; panics (a build error in a
    /// `const`) on malformed text.
    pub(crate) const fn from_text(text: &str) -> Guid {
        match parse_guid(text.as_bytes()) {
            Ok(guid) => guid,
            Err(_) => panic!("malformed GUID text"),
        }
    }

    /// A random-style (RFC 4122 version 4, variant 1) GUID from 16 bytes of
    /// entropy or of a hash: the version and variant bits are forced, the
    /// other 122 bits are taken from `bytes`.
    pub fn v4_from_bytes(bytes: [u8; 16]) -> Guid {
        let mut text = bytes;
        text[6] = (text[6] & 0x0f) | 0x40;
        text[8] = (text[8] & 0x3f) | 0x80;
        Guid::from_text_order(text)
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The 16 bytes in the order the text form prints them.
    const fn to_text_order(self) -> [u8; 16] {
        let d = self.0;
        [
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13],
            d[14], d[15],
        ]
    }

    const fn from_text_order(t: [u8; 16]) -> Guid {
        Guid([
            t[3], t[2], t[1], t[0], t[5], t[4], t[7], t[6], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15],
        ])
    }
}

/// Why a GUID's text form did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuidParseError {
    #[error("a GUID has 36 characters (8-4-4-4-12 hex digits), this one has {0}")]
    Length(usize),
    #[error("a GUID has '-' at position {0}")]
    MissingHyphen(usize),
    #[error("{ch:?} at position {pos} of a GUID is not a hex digit")]
    NotHex { pos: usize, ch: char },
}

const fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const fn parse_guid(s: &[u8]) -> Result<Guid, GuidParseError> {
    if s.len() != 36 {
        return Err(GuidParseError::Length(s.len()));
    }
    let mut text = [0u8; 16];
    let mut pos = 0;
    let mut byte = 0;
    while pos < 36 {
        if pos == 8 || pos == 13 || pos == 18 || pos == 23 {
            if s[pos] != b'-' {
                return Err(GuidParseError::MissingHyphen(pos));
            }
            pos += 1;
            continue;
        }
        let hi = match hex_value(s[pos]) {
            Some(v) => v,
            None => {
                return Err(GuidParseError::NotHex {
                    pos,
                    ch: s[pos] as char,
                })
            }
        };
        let lo = match hex_value(s[pos + 1]) {
            Some(v) => v,
            None => {
                return Err(GuidParseError::NotHex {
                    pos: pos + 1,
                    ch: s[pos + 1] as char,
                })
            }
        };
        text[byte] = (hi << 4) | lo;
        byte += 1;
        pos += 2;
    }
    Ok(Guid::from_text_order(text))
}

impl FromStr for Guid {
    type Err = GuidParseError;

    /// Accepts upper and lower case hex digits.
    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        // Report the character count, not the byte count, for non-ASCII input.
        if !s.is_ascii() {
            let chars = s.chars().count();
            if chars != 36 {
                return Err(GuidParseError::Length(chars));
            }
            let (pos, ch) = s.chars().enumerate().find(|(_, c)| !c.is_ascii()).unwrap();
            return Err(GuidParseError::NotHex { pos, ch });
        }
        parse_guid(s.as_bytes())
    }
}

impl fmt::Display for Guid {
    /// Upper case, as the UEFI specification and sgdisk print GUIDs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_text_order();
        for (i, b) in t.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// One used entry of the partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    /// The unique partition GUID (`PARTUUID=`).
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units.
    pub name: String,
}

/// Size of the partition entries abnix writes (the UEFI minimum; readers
/// accept any `128 * 2^n`).
pub(crate) const ENTRY_SIZE: usize = 128;
/// Entries abnix writes: 128 entries of 128 bytes fill the 16 KiB the UEFI
/// specification requires at least for the entry array.
pub(crate) const ENTRY_COUNT: usize = 128;
/// The smallest entry array the UEFI specification allows, in bytes.
const MIN_ENTRY_ARRAY: usize = 16 * 1024;
/// The largest entry array we read: guards against allocating whatever a
/// corrupt header claims.
const MAX_ENTRY_ARRAY: u64 = 4 * 1024 * 1024;
/// Partition names are 72 bytes: 36 UTF-16LE code units.
const NAME_UNITS: usize = 36;

impl Partition {
    /// Number of LBAs the partition covers.
    pub(crate) fn size_lbas(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }

    /// The 128-byte entry (offsets: type GUID 0, unique GUID 16, first LBA 32,
    /// last LBA 40, attributes 48, name 56..128 as UTF-16LE, zero-padded).
    pub(crate) fn to_entry(&self, number: u32) -> Result<[u8; ENTRY_SIZE], GptError> {
        let units: Vec<u16> = self.name.encode_utf16().collect();
        if units.len() > NAME_UNITS {
            return Err(GptError::BadName {
                number,
                name: self.name.clone(),
                reason: "longer than 36 UTF-16 code units",
            });
        }
        if units.contains(&0) {
            return Err(GptError::BadName {
                number,
                name: self.name.clone(),
                reason: "contains a NUL character, which ends a GPT name",
            });
        }
        let mut e = [0u8; ENTRY_SIZE];
        e[0..16].copy_from_slice(&self.type_guid.0);
        e[16..32].copy_from_slice(&self.guid.0);
        e[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        for (i, unit) in units.iter().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        Ok(e)
    }

    /// Parses one entry (at least 128 bytes); `None` for an unused entry (type
    /// GUID all zero). Names that are not valid UTF-16 are decoded lossily: a
    /// foreign disk's odd name must not make its table unreadable.
    pub(crate) fn from_entry(e: &[u8]) -> Option<Partition> {
        let type_guid = Guid(e[0..16].try_into().unwrap());
        if type_guid.is_zero() {
            return None;
        }
        let units: Vec<u16> = e[56..56 + 2 * NAME_UNITS]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(Partition {
            type_guid,
            guid: Guid(e[16..32].try_into().unwrap()),
            first_lba: le_u64(&e[32..40]),
            last_lba: le_u64(&e[40..48]),
            attributes: le_u64(&e[48..56]),
            name: String::from_utf16_lossy(&units),
        })
    }
}

/// Everything that can be wrong with a partition table, named so that a
/// message tells what to look at.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("disk I/O: {0}")]
    Io(#[from] io::Error),
    #[error("unsupported logical sector size {0} (GPT here supports 512, 1024, 2048 and 4096)")]
    UnsupportedSectorSize(u32),
    #[error("disk of {size} bytes is too small for a GPT with {sector_size}-byte sectors")]
    DiskTooSmall { size: u64, sector_size: u32 },
    #[error("no protective MBR: LBA 0 lacks the 0x55AA boot signature")]
    NoMbrSignature,
    #[error("no protective MBR: LBA 0 has no type 0xEE partition record starting at LBA 1")]
    NoProtectivePartition,
    #[error("no GPT header signature (\"EFI PART\") at LBA {lba}")]
    NoSignature { lba: u64 },
    #[error("GPT header at LBA {lba} has unsupported revision {revision:#010x}")]
    UnsupportedRevision { lba: u64, revision: u32 },
    #[error("GPT header at LBA {lba} has size {size} (must be 92 up to the sector size)")]
    BadHeaderSize { lba: u64, size: u32 },
    #[error("GPT header at LBA {lba}: CRC32 is {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("GPT header at LBA {lba}: {field} is {value}, {reason}")]
    HeaderField {
        lba: u64,
        field: &'static str,
        value: u64,
        reason: String,
    },
    #[error("GPT entries of the header at LBA {lba}: CRC32 is {stored:#010x}, computed {computed:#010x}")]
    EntriesCrc {
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("partition {number} ends (LBA {last}) before it starts (LBA {first})")]
    PartitionEndsBeforeStart { number: u32, first: u64, last: u64 },
    #[error("partition {number} (LBAs {first}..={last}) lies outside the usable LBAs {first_usable}..={last_usable}")]
    PartitionOutOfRange {
        number: u32,
        first: u64,
        last: u64,
        first_usable: u64,
        last_usable: u64,
    },
    #[error("partitions {a} and {b} overlap")]
    PartitionsOverlap { a: u32, b: u32 },
    #[error("partition {number} name {name:?} is {reason}")]
    BadName {
        number: u32,
        name: String,
        reason: &'static str,
    },
    #[error("the GPT has {entries} entries; at least {min} are needed for the 16 KiB UEFI minimum entry array")]
    TooFewEntries { entries: usize, min: usize },
    #[error("backup GPT at LBA {lba} does not match the primary: {what} differs")]
    BackupMismatch { lba: u64, what: &'static str },
    #[error("both GPT copies are unusable; primary: {primary}; backup: {backup}")]
    BothCopiesBad {
        primary: Box<GptError>,
        backup: Box<GptError>,
    },
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0, the only one ever defined.
const REVISION: u32 = 0x0001_0000;

/// A GPT header, either copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The LBA holding this header.
    pub(crate) my_lba: u64,
    /// The LBA of the other copy's header.
    pub(crate) alternate_lba: u64,
    pub(crate) first_usable_lba: u64,
    last_usable_lba: u64,
    pub(crate) disk_guid: Guid,
    pub(crate) entries_lba: u64,
    pub(crate) num_entries: u32,
    pub(crate) entry_size: u32,
    pub(crate) entries_crc32: u32,
}

impl Header {
    /// The header's size; the rest of its sector is zero.
    const SIZE: usize = 92;

    /// The header's 92 bytes with its CRC32 filled in (offsets: signature 0,
    /// revision 8, size 12, CRC 16, reserved 20, my LBA 24, alternate LBA 32,
    /// first usable 40, last usable 48, disk GUID 56, entries LBA 72, entry
    /// count 80, entry size 84, entries CRC 88).
    fn to_bytes(&self) -> [u8; Header::SIZE] {
        let mut h = [0u8; Header::SIZE];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&(Header::SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&self.entries_crc32.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses the header in `sector`, the content of LBA `lba`: signature,
    /// revision, size, CRC32 (computed over the header's own size with the CRC
    /// field zeroed), that it says it lives at `lba`, and the entry size.
    /// Where the fields point is checked against a disk by
    /// [`Header::check_geometry`].
    fn parse(sector: &[u8], lba: u64) -> Result<Header, GptError> {
        if sector.len() < Header::SIZE || &sector[0..8] != SIGNATURE {
            return Err(GptError::NoSignature { lba });
        }
        let revision = le_u32(&sector[8..12]);
        if revision >> 16 != 1 {
            return Err(GptError::UnsupportedRevision { lba, revision });
        }
        let size = le_u32(&sector[12..16]);
        if (size as usize) < Header::SIZE || size as usize > sector.len() {
            return Err(GptError::BadHeaderSize { lba, size });
        }
        let stored = le_u32(&sector[16..20]);
        let mut copy = sector[..size as usize].to_vec();
        copy[16..20].fill(0);
        let computed = crc32fast::hash(&copy);
        if stored != computed {
            return Err(GptError::HeaderCrc {
                lba,
                stored,
                computed,
            });
        }
        let field = |field: &'static str, value: u64, reason: &str| GptError::HeaderField {
            lba,
            field,
            value,
            reason: reason.to_owned(),
        };
        let my_lba = le_u64(&sector[24..32]);
        if my_lba != lba {
            return Err(field("MyLBA", my_lba, "but the header was read from there"));
        }
        let entry_size = le_u32(&sector[84..88]);
        if entry_size < ENTRY_SIZE as u32 || !entry_size.is_power_of_two() {
            return Err(field(
                "SizeOfPartitionEntry",
                entry_size.into(),
                "must be 128 times a power of two",
            ));
        }
        Ok(Header {
            my_lba,
            alternate_lba: le_u64(&sector[32..40]),
            first_usable_lba: le_u64(&sector[40..48]),
            last_usable_lba: le_u64(&sector[48..56]),
            disk_guid: Guid(sector[56..72].try_into().unwrap()),
            entries_lba: le_u64(&sector[72..80]),
            num_entries: le_u32(&sector[80..84]),
            entry_size,
            entries_crc32: le_u32(&sector[88..92]),
        })
    }

    /// Bytes of the entry array the header describes.
    fn entries_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// Checks that the LBAs the header names fit a disk of `total_lbas`
    /// sectors of `sector_size` bytes and do not collide: the usable range,
    /// the other copy, and the entry array (which must lie outside the usable
    /// range and clear of LBA 0 and of this header).
    pub(crate) fn check_geometry(&self, total_lbas: u64, sector_size: u32) -> Result<(), GptError> {
        let lba = self.my_lba;
        let field = |field: &'static str, value: u64, reason: String| GptError::HeaderField {
            lba,
            field,
            value,
            reason,
        };
        let last = total_lbas.saturating_sub(1);
        if self.alternate_lba == 0 || self.alternate_lba > last {
            return Err(field(
                "AlternateLBA",
                self.alternate_lba,
                format!("outside the disk's LBAs 1..={last}"),
            ));
        }
        if self.alternate_lba == self.my_lba {
            return Err(field(
                "AlternateLBA",
                self.alternate_lba,
                "the header's own LBA".to_owned(),
            ));
        }
        if self.first_usable_lba > self.last_usable_lba {
            return Err(field(
                "FirstUsableLBA",
                self.first_usable_lba,
                format!("above LastUsableLBA {}", self.last_usable_lba),
            ));
        }
        if self.last_usable_lba >= last {
            return Err(field(
                "LastUsableLBA",
                self.last_usable_lba,
                format!("not below the disk's last LBA {last}"),
            ));
        }
        for header_lba in [self.my_lba, self.alternate_lba] {
            if (self.first_usable_lba..=self.last_usable_lba).contains(&header_lba) {
                return Err(field(
                    "usable LBA range",
                    self.first_usable_lba,
                    format!("covers the header at LBA {header_lba}"),
                ));
            }
        }
        let bytes = self.entries_bytes();
        if bytes == 0 || bytes > MAX_ENTRY_ARRAY {
            return Err(field(
                "NumberOfPartitionEntries",
                self.num_entries.into(),
                format!(
                    "makes an entry array of {bytes} bytes (accepted: 1 up to {MAX_ENTRY_ARRAY})"
                ),
            ));
        }
        let sectors = bytes.div_ceil(u64::from(sector_size));
        let start = self.entries_lba;
        let end = start.saturating_add(sectors); // exclusive
        let in_usable = start <= self.last_usable_lba && end > self.first_usable_lba;
        if start == 0 || end > total_lbas || in_usable || (start..end).contains(&self.my_lba) {
            return Err(field(
                "PartitionEntryLBA",
                start,
                format!(
                    "its {sectors} sectors collide with LBA 0, this header, the usable LBAs or the disk's end"
                ),
            ));
        }
        Ok(())
    }
}

/// Serializes a table's entries: `entries.len()` entries of 128 bytes, with
/// partition `i + 1` in slot `i`.
pub(crate) fn encode_entries(entries: &[Option<Partition>]) -> Result<Vec<u8>, GptError> {
    let mut bytes = vec![0u8; entries.len() * ENTRY_SIZE];
    for (i, entry) in entries.iter().enumerate() {
        if let Some(p) = entry {
            bytes[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE].copy_from_slice(&p.to_entry(i as u32 + 1)?);
        }
    }
    Ok(bytes)
}

/// Parses an entry array of `entry_size`-byte entries.
pub(crate) fn decode_entries(bytes: &[u8], entry_size: usize) -> Vec<Option<Partition>> {
    bytes
        .chunks_exact(entry_size)
        .map(Partition::from_entry)
        .collect()
}

/// Checks every used entry: starts before it ends, lies within the usable
/// LBAs, overlaps no other.
pub(crate) fn check_partitions(
    entries: &[Option<Partition>],
    first_usable: u64,
    last_usable: u64,
) -> Result<(), GptError> {
    let mut used: Vec<(u32, &Partition)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(p) = entry else { continue };
        let number = i as u32 + 1;
        if p.last_lba < p.first_lba {
            return Err(GptError::PartitionEndsBeforeStart {
                number,
                first: p.first_lba,
                last: p.last_lba,
            });
        }
        if p.first_lba < first_usable || p.last_lba > last_usable {
            return Err(GptError::PartitionOutOfRange {
                number,
                first: p.first_lba,
                last: p.last_lba,
                first_usable,
                last_usable,
            });
        }
        used.push((number, p));
    }
    used.sort_by_key(|(_, p)| p.first_lba);
    for pair in used.windows(2) {
        let ((a, pa), (b, pb)) = (pair[0], pair[1]);
        if pb.first_lba <= pa.last_lba {
            return Err(GptError::PartitionsOverlap {
                a: a.min(b),
                b: a.max(b),
            });
        }
    }
    Ok(())
}

/// Byte offset of the single partition record of a protective MBR.
const MBR_RECORDS: usize = 446;
/// Bytes of boot code kept from the existing LBA 0 (GRUB's boot.img lives
/// there); 440..446 hold the optional disk signature, zero in a protective
/// MBR.
const MBR_BOOT_CODE: usize = 440;

/// The protective MBR for a disk of `total_lbas` sectors, keeping the boot
/// code (bytes 0..440) of `existing`: one record of type 0xEE, not bootable,
/// CHS start 0/0/2, CHS end of the last LBA (0xFFFFFF when CHS cannot
/// express it), from LBA 1 over the rest of the disk (capped at 0xFFFFFFFF
/// sectors), as the UEFI specification says, then the 0x55AA signature.
pub fn protective_mbr(existing: &[u8; 512], total_lbas: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    mbr[..MBR_BOOT_CODE].copy_from_slice(&existing[..MBR_BOOT_CODE]);
    let size = (total_lbas - 1).min(u64::from(u32::MAX)) as u32;
    let record = &mut mbr[MBR_RECORDS..MBR_RECORDS + 16];
    record[..5].copy_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xEE]);
    record[5..8].copy_from_slice(&chs(total_lbas - 1));
    record[8..12].copy_from_slice(&1u32.to_le_bytes());
    record[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// The CHS address of `lba` in the 255-head, 63-sector geometry every tool
/// assumes (sgdisk computes the same), packed as MBR records store it:
/// head, sector with the cylinder's top two bits, cylinder's low byte.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xFF; 3];
    }
    let head = lba / SECTORS % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector | (cylinder >> 8) << 6) as u8,
        cylinder as u8,
    ]
}

/// Checks LBA 0 the way UEFI firmware (edk2's PartitionDxe) and Linux do
/// before trusting a GPT: boot signature, and a type-0xEE record starting at
/// LBA 1.
pub fn check_protective_mbr(lba0: &[u8]) -> Result<(), GptError> {
    if lba0[510] != 0x55 || lba0[511] != 0xAA {
        return Err(GptError::NoMbrSignature);
    }
    let protective = (0..4).any(|i| {
        let r = &lba0[MBR_RECORDS + 16 * i..MBR_RECORDS + 16 * (i + 1)];
        r[4] == 0xEE && le_u32(&r[8..12]) == 1
    });
    if protective {
        Ok(())
    } else {
        Err(GptError::NoProtectivePartition)
    }
}

fn check_sector_size(sector_size: u32) -> Result<(), GptError> {
    if (512..=4096).contains(&sector_size) && sector_size.is_power_of_two() {
        Ok(())
    } else {
        Err(GptError::UnsupportedSectorSize(sector_size))
    }
}

/// The disk's size in sectors of a supported `sector_size`; a disk of
/// fewer than 4 (the protective MBR, both headers, one more) is too small
/// to hold or be searched for a table.
fn disk_sectors<D: Disk + ?Sized>(disk: &mut D, sector_size: u32) -> Result<u64, GptError> {
    check_sector_size(sector_size)?;
    let ss = u64::from(sector_size);
    let total = disk.size()? / ss;
    if total < 4 {
        return Err(GptError::DiskTooSmall {
            size: total * ss,
            sector_size,
        });
    }
    Ok(total)
}

/// A partition table: what both copies on the disk describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub(crate) disk_guid: Guid,
    pub sector_size: u32,
    pub(crate) first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// Where the backup header lives: the last LBA of the disk the table was
    /// made for. On a bigger disk (a template written to it) it sits in the
    /// middle until `Gpt::move_backup_to_end` moves it.
    pub backup_lba: u64,
    /// Entry `i` is partition number `i + 1`; `None` is an unused entry.
    pub partitions: Vec<Option<Partition>>,
}

/// What [`Gpt::read_report`] found: the table and what was wrong with either
/// copy.
#[derive(Debug)]
pub struct GptRead {
    pub gpt: Gpt,
    /// Why the primary copy was not used (the table then comes from the
    /// backup).
    pub(crate) primary_problem: Option<GptError>,
    /// What is wrong with the backup copy, if it was checked and found bad.
    pub(crate) backup_problem: Option<GptError>,
}

/// One copy of the table as read from the disk.
struct Copy {
    header: Header,
    entries: Vec<Option<Partition>>,
}

impl Gpt {
    /// An empty table for a disk of `disk_size` bytes: 128 entries, the
    /// primary entries from LBA 2, the backup header in the last LBA.
    pub fn new(disk_size: u64, sector_size: u32, disk_guid: Guid) -> Result<Gpt, GptError> {
        check_sector_size(sector_size)?;
        let entry_sectors = entry_array_sectors(ENTRY_COUNT, sector_size);
        let total = disk_size / u64::from(sector_size);
        // LBA 0, two headers, two entry arrays and at least one usable LBA.
        if total < 4 + 2 * entry_sectors {
            return Err(GptError::DiskTooSmall {
                size: disk_size,
                sector_size,
            });
        }
        let backup_lba = total - 1;
        Ok(Gpt {
            disk_guid,
            sector_size,
            first_usable_lba: 2 + entry_sectors,
            last_usable_lba: backup_lba - entry_sectors - 1,
            backup_lba,
            partitions: vec![None; ENTRY_COUNT],
        })
    }

    /// Reads the table, falling back to the backup copy when the primary is
    /// damaged, and logs (warn) whatever is wrong with either copy.
    pub fn read<D: Disk + ?Sized>(disk: &mut D, sector_size: u32) -> Result<Gpt, GptError> {
        let read = Gpt::read_report(disk, sector_size)?;
        if let Some(problem) = &read.primary_problem {
            tracing::warn!("primary GPT unusable, using the backup copy: {problem}");
        }
        if let Some(problem) = &read.backup_problem {
            tracing::warn!("backup GPT is damaged (rewriting the table repairs it): {problem}");
        }
        Ok(read.gpt)
    }

    /// Reads the table and reports what is wrong with either copy.
    ///
    /// Requires a protective MBR. Uses the primary copy when it is intact
    /// (header CRC, geometry, entries CRC, partitions in range and not
    /// overlapping) and then checks that the backup agrees; otherwise tries
    /// the backup where the primary header points and in the disk's last LBA.
    pub fn read_report<D: Disk + ?Sized>(
        disk: &mut D,
        sector_size: u32,
    ) -> Result<GptRead, GptError> {
        let total = disk_sectors(disk, sector_size)?;
        let mut lba0 = vec![0u8; 512];
        read_at(disk, 0, &mut lba0)?;
        check_protective_mbr(&lba0)?;

        match read_copy(disk, 1, sector_size, total) {
            Ok(primary) => {
                let backup_problem =
                    read_copy(disk, primary.header.alternate_lba, sector_size, total)
                        .and_then(|backup| backup_agrees(&primary, &backup))
                        .err();
                Ok(GptRead {
                    gpt: Gpt::from_copy(primary, sector_size, true),
                    primary_problem: None,
                    backup_problem,
                })
            }
            // A failing disk is not a damaged table: report it as such.
            Err(GptError::Io(e)) => Err(GptError::Io(e)),
            Err(primary_problem) => {
                let mut candidates = Vec::new();
                let mut sector = vec![0u8; sector_size as usize];
                read_at(disk, u64::from(sector_size), &mut sector)?;
                if let Ok(h) = Header::parse(&sector, 1) {
                    if h.alternate_lba < total {
                        candidates.push(h.alternate_lba);
                    }
                }
                if !candidates.contains(&(total - 1)) {
                    candidates.push(total - 1);
                }
                let mut backup_problem = None;
                for lba in candidates {
                    match read_copy(disk, lba, sector_size, total) {
                        Ok(backup) => {
                            return Ok(GptRead {
                                gpt: Gpt::from_copy(backup, sector_size, false),
                                primary_problem: Some(primary_problem),
                                backup_problem: None,
                            })
                        }
                        Err(e) => {
                            backup_problem.get_or_insert(e);
                        }
                    }
                }
                Err(GptError::BothCopiesBad {
                    primary: Box::new(primary_problem),
                    backup: Box::new(backup_problem.expect("at least one backup candidate")),
                })
            }
        }
    }

    fn from_copy(copy: Copy, sector_size: u32, is_primary: bool) -> Gpt {
        let h = copy.header;
        Gpt {
            disk_guid: h.disk_guid,
            sector_size,
            first_usable_lba: h.first_usable_lba,
            last_usable_lba: h.last_usable_lba,
            backup_lba: if is_primary {
                h.alternate_lba
            } else {
                h.my_lba
            },
            partitions: copy.entries,
        }
    }

    /// Both headers as [`Gpt::write`] lays them out: primary in LBA 1 with
    /// entries from LBA 2, backup in `backup_lba` right after its entries.
    fn headers(&self, entries_crc32: u32) -> (Header, Header) {
        let entry_sectors = entry_array_sectors(self.partitions.len(), self.sector_size);
        let primary = Header {
            my_lba: 1,
            alternate_lba: self.backup_lba,
            first_usable_lba: self.first_usable_lba,
            last_usable_lba: self.last_usable_lba,
            disk_guid: self.disk_guid,
            entries_lba: 2,
            num_entries: self.partitions.len() as u32,
            entry_size: ENTRY_SIZE as u32,
            entries_crc32,
        };
        let backup = Header {
            my_lba: self.backup_lba,
            alternate_lba: 1,
            entries_lba: self.backup_lba.saturating_sub(entry_sectors),
            ..primary.clone()
        };
        (primary, backup)
    }

    /// Checks that the table can be written to a disk of `total_lbas`
    /// sectors: enough entries, both copies fit and collide with nothing,
    /// partitions valid.
    fn check_writable(&self, total_lbas: u64) -> Result<(), GptError> {
        check_sector_size(self.sector_size)?;
        let min = MIN_ENTRY_ARRAY / ENTRY_SIZE;
        if self.partitions.len() < min {
            return Err(GptError::TooFewEntries {
                entries: self.partitions.len(),
                min,
            });
        }
        if total_lbas < 4 {
            return Err(GptError::DiskTooSmall {
                size: total_lbas * u64::from(self.sector_size),
                sector_size: self.sector_size,
            });
        }
        let (primary, backup) = self.headers(0);
        primary.check_geometry(total_lbas, self.sector_size)?;
        backup.check_geometry(total_lbas, self.sector_size)?;
        check_partitions(
            &self.partitions,
            self.first_usable_lba,
            self.last_usable_lba,
        )
    }

    /// Writes the protective MBR (keeping the boot code in bytes 0..440),
    /// both copies of the table and syncs.
    ///
    /// Order, for power cuts: backup copy, sync, primary copy, sync,
    /// protective MBR, sync. Until the primary header lands the old primary
    /// (or, once it is torn, the new backup) is complete, so a reader sees
    /// either the old or the new table, never a mix. The MBR goes last: its
    /// only change on an existing table is the size it covers.
    pub fn write<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<(), GptError> {
        let ss = u64::from(self.sector_size);
        let total = disk.size()? / ss;
        self.check_writable(total)?;

        let mut entries = encode_entries(&self.partitions)?;
        let crc = crc32fast::hash(&entries);
        entries.resize(
            (entry_array_sectors(self.partitions.len(), self.sector_size) * ss) as usize,
            0,
        );
        let (primary, backup) = self.headers(crc);

        write_at(disk, backup.entries_lba * ss, &entries)?;
        write_at(
            disk,
            backup.my_lba * ss,
            &header_sector(&backup, self.sector_size),
        )?;
        disk.sync()?;
        write_at(disk, primary.entries_lba * ss, &entries)?;
        write_at(disk, ss, &header_sector(&primary, self.sector_size))?;
        disk.sync()?;

        let mut lba0 = [0u8; 512];
        read_at(disk, 0, &mut lba0)?;
        write_at(disk, 0, &protective_mbr(&lba0, total))?;
        disk.sync()?;
        Ok(())
    }

    /// The partition named `name` (the first, if several are) and its number.
    #[cfg(test)]
    pub(crate) fn partition_by_name(&self, name: &str) -> Option<(u32, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find_map(|(i, p)| match p {
                Some(p) if p.name == name => Some((i as u32 + 1, p)),
                _ => None,
            })
    }

    /// Moves the backup copy to the end of a disk of `disk_size` bytes and
    /// raises the last usable LBA to just before its entries, as
    /// `sgdisk --move-second-header` does. For a template written to a bigger
    /// disk; [`Gpt::write`] then puts the backup there.
    pub(crate) fn move_backup_to_end(&mut self, disk_size: u64) {
        let total = disk_size / u64::from(self.sector_size);
        let entry_sectors = entry_array_sectors(self.partitions.len(), self.sector_size);
        self.backup_lba = total - 1;
        self.last_usable_lba = self.backup_lba - entry_sectors - 1;
    }
}

/// Sectors taken by an array of `entries` 128-byte entries.
fn entry_array_sectors(entries: usize, sector_size: u32) -> u64 {
    ((entries * ENTRY_SIZE) as u64).div_ceil(u64::from(sector_size))
}

fn header_sector(header: &Header, sector_size: u32) -> Vec<u8> {
    let mut sector = vec![0u8; sector_size as usize];
    sector[..Header::SIZE].copy_from_slice(&header.to_bytes());
    sector
}

/// Reads and checks one copy of the table whose header is in `lba`.
fn read_copy<D: Disk + ?Sized>(
    disk: &mut D,
    lba: u64,
    sector_size: u32,
    total_lbas: u64,
) -> Result<Copy, GptError> {
    let ss = u64::from(sector_size);
    let mut sector = vec![0u8; sector_size as usize];
    read_at(disk, lba * ss, &mut sector)?;
    let header = Header::parse(&sector, lba)?;
    header.check_geometry(total_lbas, sector_size)?;
    let mut bytes = vec![0u8; header.entries_bytes() as usize];
    read_at(disk, header.entries_lba * ss, &mut bytes)?;
    let computed = crc32fast::hash(&bytes);
    if computed != header.entries_crc32 {
        return Err(GptError::EntriesCrc {
            lba,
            stored: header.entries_crc32,
            computed,
        });
    }
    let entries = decode_entries(&bytes, header.entry_size as usize);
    check_partitions(&entries, header.first_usable_lba, header.last_usable_lba)?;
    Ok(Copy { header, entries })
}

/// Checks that the backup copy describes the same table as the primary.
fn backup_agrees(primary: &Copy, backup: &Copy) -> Result<(), GptError> {
    let (p, b) = (&primary.header, &backup.header);
    let differs = if b.alternate_lba != p.my_lba {
        Some("AlternateLBA")
    } else if b.disk_guid != p.disk_guid {
        Some("DiskGUID")
    } else if (b.first_usable_lba, b.last_usable_lba) != (p.first_usable_lba, p.last_usable_lba) {
        Some("the usable LBA range")
    } else if backup.entries != primary.entries {
        Some("the partition entries")
    } else {
        None
    };
    match differs {
        Some(what) => Err(GptError::BackupMismatch {
            lba: b.my_lba,
            what,
        }),
        None => Ok(()),
    }
}

/// Destroys the partition table so that nothing boots from the disk or
/// mounts its partitions: the installer's reset after a failed install.
///
/// First the whole first 512 bytes (boot code, MBR records, signature), then
/// sync: from that moment BIOS has no boot code to run, and UEFI firmware
/// and Linux ignore a GPT without a protective MBR (edk2's PartitionDxe
/// requires a type-0xEE record starting at LBA 1), so a power cut during the
/// rest cannot leave a half-installed disk that boots. Then the primary
/// header and a standard 16 KiB entry array, and the backup header and its
/// entries both in the last LBA and wherever the primary header pointed (a
/// template on a bigger disk), and sync.
pub fn wipe<D: Disk + ?Sized>(disk: &mut D, sector_size: u32) -> Result<(), GptError> {
    let total = disk_sectors(disk, sector_size)?;
    let ss = u64::from(sector_size);
    let entry_sectors = entry_array_sectors(ENTRY_COUNT, sector_size);

    let mut backups = vec![total - 1];
    let mut sector = vec![0u8; sector_size as usize];
    read_at(disk, ss, &mut sector)?;
    if let Ok(h) = Header::parse(&sector, 1) {
        if h.alternate_lba > 1 && h.alternate_lba < total && h.alternate_lba != total - 1 {
            backups.push(h.alternate_lba);
        }
    }

    write_at(disk, 0, &[0u8; 512])?;
    disk.sync()?;

    let zero_lbas = |disk: &mut D, first: u64, count: u64| -> io::Result<()> {
        let count = count.min(total - first);
        write_at(disk, first * ss, &vec![0u8; (count * ss) as usize])
    };
    zero_lbas(disk, 1, 1 + entry_sectors)?;
    for backup in backups {
        let first = backup.saturating_sub(entry_sectors).max(1);
        zero_lbas(disk, first, backup - first + 1)?;
    }
    disk.sync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{Fault, FaultyDisk};
    use crate::testutil::{sgdisk, sgdisk_agrees_with};
    use std::io::Cursor;
    use std::path::Path;

    const MIB: u64 = 1024 * 1024;

    fn bytes_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        std::fs::File::open(path)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    }

    fn sparse_file(size: u64) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        file
    }

    fn part(type_guid: Guid, n: u8, first: u64, last: u64, name: &str) -> Partition {
        Partition {
            type_guid,
            guid: Guid::v4_from_bytes([n; 16]),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.to_owned(),
        }
    }

    /// A table with three partitions, the second entry left unused.
    fn sample(disk_size: u64, sector_size: u32) -> Gpt {
        let mut gpt = Gpt::new(disk_size, sector_size, Guid::v4_from_bytes([7; 16])).unwrap();
        let per_mib = MIB / u64::from(sector_size);
        gpt.partitions[0] = Some(part(Guid::BIOS_BOOT, 1, per_mib, 2 * per_mib - 1, "bios"));
        gpt.partitions[2] = Some(Partition {
            attributes: 1 << 60 | 1,
            ..part(Guid::EFI_SYSTEM, 3, 2 * per_mib, 5 * per_mib - 1, "ESP é")
        });
        gpt.partitions[3] = Some(part(
            Guid::LINUX_FILESYSTEM,
            4,
            5 * per_mib,
            gpt.last_usable_lba,
            "data",
        ));
        gpt
    }

    fn written(gpt: &Gpt, disk_size: u64) -> Cursor<Vec<u8>> {
        let mut disk = Cursor::new(vec![0u8; disk_size as usize]);
        gpt.write(&mut disk).unwrap();
        disk
    }

    #[test]
    fn guid_text_form_round_trips_in_mixed_endian() {
        let g = Guid::BIOS_BOOT;
        // The first three fields are stored little-endian: "Hah!IdontNeedEFI".
        assert_eq!(&g.0, b"Hah!IdontNeedEFI");
        assert_eq!(g.to_string(), "21686148-6449-6E6F-744E-656564454649");
        for text in [
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ] {
            let g: Guid = text.parse().unwrap();
            assert_eq!(g.to_string(), text);
            assert_eq!(text.to_lowercase().parse::<Guid>().unwrap(), g);
        }
        assert_eq!(
            Guid::LINUX_ROOT_X86_64,
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709".parse().unwrap()
        );
    }

    #[test]
    fn guid_rejects_malformed_text() {
        assert_eq!(
            "C12A7328-F81F-11D2-BA4B".parse::<Guid>(),
            Err(GuidParseError::Length(23))
        );
        assert_eq!(
            "C12A7328xF81F-11D2-BA4B-00A0C93EC93B".parse::<Guid>(),
            Err(GuidParseError::MissingHyphen(8))
        );
        assert_eq!(
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93G".parse::<Guid>(),
            Err(GuidParseError::NotHex { pos: 35, ch: 'G' })
        );
        assert_eq!(
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93é".parse::<Guid>(),
            Err(GuidParseError::NotHex { pos: 35, ch: 'é' })
        );
        let msg = "nope".parse::<Guid>().unwrap_err().to_string();
        assert!(msg.contains("36 characters"), "{msg}");
    }

    #[test]
    fn v4_guids_carry_version_and_variant() {
        for fill in [0x00, 0xff, 0x5a] {
            let text = Guid::v4_from_bytes([fill; 16]).to_string();
            assert_eq!(&text[14..15], "4", "{text}");
            assert!("89AB".contains(&text[19..20]), "{text}");
            // Agrees with the uuid crate's reading of the same bytes.
            let parsed = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn header_round_trips_and_checks_its_crc() {
        let h = Header {
            my_lba: 1,
            alternate_lba: 2047,
            first_usable_lba: 34,
            last_usable_lba: 2014,
            disk_guid: Guid::v4_from_bytes([1; 16]),
            entries_lba: 2,
            num_entries: 128,
            entry_size: 128,
            entries_crc32: 0xdead_beef,
        };
        let mut sector = vec![0u8; 512];
        sector[..92].copy_from_slice(&h.to_bytes());
        assert_eq!(Header::parse(&sector, 1).unwrap(), h);

        let mut bad = sector.clone();
        bad[40] ^= 1;
        assert!(matches!(
            Header::parse(&bad, 1),
            Err(GptError::HeaderCrc { lba: 1, .. })
        ));
        assert!(matches!(
            Header::parse(&sector, 5),
            Err(GptError::HeaderField { field: "MyLBA", .. })
        ));
        let mut unsigned = sector.clone();
        unsigned[0] = b'X';
        assert!(matches!(
            Header::parse(&unsigned, 1),
            Err(GptError::NoSignature { lba: 1 })
        ));
    }

    /// Re-seals a header sector after a test edits a field.
    fn reseal(sector: &mut [u8]) {
        sector[16..20].fill(0);
        let size = (le_u32(&sector[12..16]) as usize).min(sector.len());
        let crc = crc32fast::hash(&sector[..size]);
        sector[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn header_rejects_bad_fields_by_name() {
        let h = sample(64 * MIB, 512).headers(0).0;
        let mut base = vec![0u8; 512];
        base[..92].copy_from_slice(&h.to_bytes());
        let edit = |offset: usize, bytes: &[u8]| {
            let mut s = base.clone();
            s[offset..offset + bytes.len()].copy_from_slice(bytes);
            reseal(&mut s);
            Header::parse(&s, 1)
        };
        let msg = edit(8, &0x0002_0000u32.to_le_bytes())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("revision 0x00020000"), "{msg}");
        let msg = edit(12, &600u32.to_le_bytes()).unwrap_err().to_string();
        assert!(msg.contains("size 600"), "{msg}");
        let msg = edit(84, &100u32.to_le_bytes()).unwrap_err().to_string();
        assert!(msg.contains("SizeOfPartitionEntry is 100"), "{msg}");
    }

    #[test]
    fn header_geometry_is_checked_against_the_disk() {
        let total = 64 * MIB / 512;
        let good = sample(64 * MIB, 512).headers(0).0;
        good.check_geometry(total, 512).unwrap();
        let cases: [(Header, &str); 6] = [
            (
                Header {
                    alternate_lba: total,
                    ..good.clone()
                },
                "AlternateLBA",
            ),
            (
                Header {
                    first_usable_lba: good.last_usable_lba + 1,
                    ..good.clone()
                },
                "FirstUsableLBA",
            ),
            (
                Header {
                    last_usable_lba: total - 1,
                    ..good.clone()
                },
                "LastUsableLBA",
            ),
            (
                Header {
                    entries_lba: 20,
                    ..good.clone()
                },
                "PartitionEntryLBA",
            ),
            (
                Header {
                    num_entries: 1 << 20,
                    ..good.clone()
                },
                "NumberOfPartitionEntries",
            ),
            (
                Header {
                    alternate_lba: 1,
                    ..good.clone()
                },
                "own LBA",
            ),
        ];
        for (h, field) in cases {
            let msg = h.check_geometry(total, 512).unwrap_err().to_string();
            assert!(msg.contains(field), "{field}: {msg}");
        }
    }

    #[test]
    fn entries_round_trip_and_reject_bad_names() {
        let gpt = sample(64 * MIB, 512);
        let bytes = encode_entries(&gpt.partitions).unwrap();
        assert_eq!(bytes.len(), 128 * 128);
        assert_eq!(decode_entries(&bytes, 128), gpt.partitions);
        // Larger entries (256 bytes) carry the same 128-byte prefix.
        let wide: Vec<u8> = bytes
            .chunks(128)
            .flat_map(|e| [e, &[0u8; 128][..]].concat())
            .collect();
        assert_eq!(decode_entries(&wide, 256), gpt.partitions);

        let long = Partition {
            name: "x".repeat(37),
            ..gpt.partitions[0].clone().unwrap()
        };
        let msg = long.to_entry(1).unwrap_err().to_string();
        assert!(msg.contains("longer than 36"), "{msg}");
        let exact = Partition {
            name: "y".repeat(36),
            ..long.clone()
        };
        assert_eq!(
            Partition::from_entry(&exact.to_entry(1).unwrap()),
            Some(exact)
        );
        let nul = Partition {
            name: "a\0b".into(),
            ..long
        };
        assert!(matches!(
            nul.to_entry(2),
            Err(GptError::BadName { number: 2, .. })
        ));
    }

    #[test]
    fn partitions_are_checked_for_range_and_overlap() {
        let gpt = sample(64 * MIB, 512);
        let (first, last) = (gpt.first_usable_lba, gpt.last_usable_lba);
        check_partitions(&gpt.partitions, first, last).unwrap();

        let mut overlap = gpt.partitions.clone();
        overlap[3].as_mut().unwrap().first_lba -= 1;
        assert!(matches!(
            check_partitions(&overlap, first, last),
            Err(GptError::PartitionsOverlap { a: 3, b: 4 })
        ));
        let mut beyond = gpt.partitions.clone();
        beyond[3].as_mut().unwrap().last_lba = last + 1;
        assert!(matches!(
            check_partitions(&beyond, first, last),
            Err(GptError::PartitionOutOfRange { number: 4, .. })
        ));
        let mut reversed = gpt.partitions.clone();
        reversed[0].as_mut().unwrap().last_lba = 10;
        let msg = check_partitions(&reversed, first, last)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("partition 1 ends"), "{msg}");
    }

    #[test]
    fn protective_mbr_keeps_boot_code_and_caps_its_size() {
        let mut old = [0xAB; 512];
        old[446] = 0x80;
        let small = protective_mbr(&old, 2048);
        assert_eq!(&small[..440], &old[..440]);
        assert_eq!(&small[440..446], &[0; 6]);
        assert_eq!(
            &small[446..462],
            &[0, 0, 2, 0, 0xEE, 32, 32, 0, 1, 0, 0, 0, 0xFF, 0x07, 0, 0]
        );
        assert_eq!(&small[462..510], &[0; 48]);
        assert_eq!(&small[510..], &[0x55, 0xAA]);
        check_protective_mbr(&small).unwrap();
        let huge = protective_mbr(&old, 1 << 40);
        assert_eq!(&huge[451..454], &[0xFF; 3], "CHS cannot express the end");
        assert_eq!(&huge[458..462], &[0xFF; 4]);
        // Last LBA 1023*16065 + 254*63 + 62: the largest CHS address.
        assert_eq!(chs(1023 * 16065 + 254 * 63 + 62), [254, 63 | 0xC0, 0xFF]);

        assert!(matches!(
            check_protective_mbr(&[0; 512]),
            Err(GptError::NoMbrSignature)
        ));
        let mut plain = [0u8; 512];
        plain[510..].copy_from_slice(&[0x55, 0xAA]);
        plain[446 + 4] = 0x83;
        assert!(matches!(
            check_protective_mbr(&plain),
            Err(GptError::NoProtectivePartition)
        ));
    }

    #[test]
    fn write_then_read_round_trips_for_both_sector_sizes() {
        for ss in [512u32, 4096] {
            let size = 64 * MIB;
            let gpt = sample(size, ss);
            let mut disk = written(&gpt, size);
            let read = Gpt::read_report(&mut disk, ss).unwrap();
            assert!(read.primary_problem.is_none() && read.backup_problem.is_none());
            assert_eq!(read.gpt, gpt);
            let (number, p) = read.gpt.partition_by_name("data").unwrap();
            assert_eq!((number, p.type_guid), (4, Guid::LINUX_FILESYSTEM));
            assert!(read.gpt.partition_by_name("nothing").is_none());
            // Backup header in the last LBA, entries right before it.
            let data = disk.into_inner();
            let last = data.len() - ss as usize;
            assert_eq!(&data[last..last + 8], b"EFI PART");
            let entry_sectors = 16384 / ss as usize;
            assert_eq!(gpt.first_usable_lba, 2 + entry_sectors as u64);
            assert_eq!(
                gpt.last_usable_lba,
                (data.len() / ss as usize - 2 - entry_sectors) as u64
            );
        }
    }

    #[test]
    fn reading_with_the_wrong_sector_size_fails_clearly() {
        let mut disk = written(&sample(64 * MIB, 4096), 64 * MIB);
        let msg = Gpt::read(&mut disk, 512).unwrap_err().to_string();
        assert!(msg.contains("no GPT header signature"), "{msg}");
        assert!(matches!(
            Gpt::read(&mut disk, 520),
            Err(GptError::UnsupportedSectorSize(520))
        ));
    }

    #[test]
    fn damaged_primary_falls_back_to_the_backup() {
        let size = 64 * MIB;
        let gpt = sample(size, 512);
        // A torn header, then torn entries.
        for offset in [512 + 50, 1024 + 3 * 128 + 60] {
            let mut disk = written(&gpt, size);
            disk.get_mut()[offset] ^= 0xff;
            let read = Gpt::read_report(&mut disk, 512).unwrap();
            assert_eq!(read.gpt, gpt);
            assert!(read.primary_problem.is_some());
            // Rewriting repairs the primary.
            read.gpt.write(&mut disk).unwrap();
            assert!(Gpt::read_report(&mut disk, 512)
                .unwrap()
                .primary_problem
                .is_none());
        }
    }

    #[test]
    fn damaged_backup_is_reported_but_the_primary_is_used() {
        let size = 64 * MIB;
        let gpt = sample(size, 512);
        let mut disk = written(&gpt, size);
        let last = size as usize - 512;
        disk.get_mut()[last + 30] ^= 1;
        let read = Gpt::read_report(&mut disk, 512).unwrap();
        assert_eq!(read.gpt, gpt);
        assert!(matches!(
            read.backup_problem,
            Some(GptError::HeaderCrc { .. })
        ));
    }

    #[test]
    fn both_copies_damaged_names_both_problems() {
        let size = 64 * MIB;
        let mut disk = written(&sample(size, 512), size);
        disk.get_mut()[512] = 0;
        disk.get_mut()[size as usize - 512] = 0;
        let msg = Gpt::read(&mut disk, 512).unwrap_err().to_string();
        assert!(
            msg.contains("primary: no GPT header signature (\"EFI PART\") at LBA 1"),
            "{msg}"
        );
        assert!(msg.contains(&format!("at LBA {}", size / 512 - 1)), "{msg}");
    }

    #[test]
    fn writing_rejects_tables_that_do_not_fit() {
        let gpt = sample(64 * MIB, 512);
        let mut small = Cursor::new(vec![0u8; 32 * MIB as usize]);
        let msg = gpt.write(&mut small).unwrap_err().to_string();
        assert!(msg.contains("AlternateLBA"), "{msg}");
        let few = Gpt {
            partitions: gpt.partitions[..4].to_vec(),
            ..gpt.clone()
        };
        assert!(matches!(
            few.write(&mut Cursor::new(vec![0u8; 64 * MIB as usize])),
            Err(GptError::TooFewEntries {
                entries: 4,
                min: 128
            })
        ));
        assert!(small.get_ref().iter().all(|&b| b == 0), "nothing written");
    }

    #[test]
    fn power_cut_during_rewrite_leaves_old_or_new_table() {
        let small = 8 * MIB;
        let big = 16 * MIB;
        let old = sample(small, 512);
        // A template written to a bigger disk: the old backup sits mid-disk.
        let mut base = written(&old, small);
        base.get_mut().resize(big as usize, 0);
        let mut new = old.clone();
        new.move_backup_to_end(big);
        new.partitions[3].as_mut().unwrap().last_lba = new.last_usable_lba;

        let mut probe = FaultyDisk::counting(base.clone());
        new.write(&mut probe).unwrap();
        let total = probe.written().bytes;
        for budget in (0..=total).step_by(509).chain([total]) {
            let mut disk = FaultyDisk::failing_after(base.clone(), budget, Fault::PowerCut);
            new.write(&mut disk).unwrap();
            let got = Gpt::read(&mut disk.into_inner(), 512).unwrap();
            assert!(got == old || got == new, "budget {budget}: {got:?}");
        }
    }

    #[test]
    fn moving_the_backup_to_the_end_raises_the_usable_range() {
        let (small, big) = (8 * MIB, 16 * MIB);
        let old = sample(small, 512);
        let mut disk = written(&old, small);
        disk.get_mut().resize(big as usize, 0);
        disk.get_mut()[..440].fill(0x90); // GRUB's boot code
        let mut gpt = Gpt::read(&mut disk, 512).unwrap();
        assert_eq!(
            gpt.backup_lba,
            small / 512 - 1,
            "template backup stays mid-disk"
        );
        gpt.move_backup_to_end(big);
        assert_eq!(gpt.backup_lba, big / 512 - 1);
        assert_eq!(gpt.last_usable_lba, big / 512 - 34);
        gpt.write(&mut disk).unwrap();
        let read = Gpt::read_report(&mut disk, 512).unwrap();
        assert!(read.backup_problem.is_none());
        assert_eq!(read.gpt, gpt);
        assert!(
            disk.get_ref()[..440].iter().all(|&b| b == 0x90),
            "boot code kept"
        );
        let pmbr_size = le_u32(&disk.get_ref()[458..462]);
        assert_eq!(
            u64::from(pmbr_size),
            big / 512 - 1,
            "MBR covers the grown disk"
        );
    }

    #[test]
    fn wipe_destroys_both_copies_and_the_mbr() {
        for ss in [512u32, 4096] {
            let (small, big) = (8 * MIB, 16 * MIB);
            // A template on a bigger disk (backup mid-disk, where the primary
            // points) that also has a backup header in the last LBA.
            let mut disk = written(&sample(small, ss), small);
            disk.get_mut()[..440].fill(0x90); // boot code
            let backup = disk.get_ref()[(small - u64::from(ss)) as usize..].to_vec();
            disk.get_mut().resize(big as usize, 0);
            disk.get_mut()[(big - u64::from(ss)) as usize..].copy_from_slice(&backup);

            wipe(&mut disk, ss).unwrap();
            let data = disk.into_inner();
            assert!(data[..512].iter().all(|&b| b == 0), "MBR zeroed ({ss})");
            for header in [u64::from(ss), small - u64::from(ss), big - u64::from(ss)] {
                let at = header as usize;
                assert_ne!(
                    &data[at..at + 8],
                    b"EFI PART",
                    "header at {at} survived ({ss})"
                );
            }
            let entries = 2 * ss as usize;
            assert!(
                data[entries..entries + 128].iter().all(|&b| b == 0),
                "primary entries ({ss})"
            );
            let mut check = Cursor::new(data);
            assert!(matches!(
                Gpt::read(&mut check, ss),
                Err(GptError::NoMbrSignature)
            ));
        }
    }

    #[test]
    fn wipe_makes_the_mbr_unusable_first() {
        let size = 8 * MIB;
        let base = written(&sample(size, 512), size);
        // Cut the power right after the first sync: the GPT must already be
        // unusable for firmware, i.e. the protective MBR is gone.
        let mut probe = FaultyDisk::counting(base.clone());
        wipe(&mut probe, 512).unwrap();
        let mut disk = FaultyDisk::failing_after(base, 512, Fault::PowerCut);
        wipe(&mut disk, 512).unwrap();
        let mut data = disk.into_inner();
        assert!(matches!(
            Gpt::read(&mut data, 512),
            Err(GptError::NoMbrSignature)
        ));
        assert!(probe.written().syncs >= 2);
    }

    #[test]
    fn sgdisk_reads_what_we_write() {
        let size = 64 * MIB;
        let file = sparse_file(size);
        let gpt = sample(size, 512);
        gpt.write(&mut file.reopen().unwrap()).unwrap();
        sgdisk_agrees_with(&gpt, file.path());
    }

    #[test]
    fn we_read_what_sgdisk_writes() {
        let size = 64 * MIB;
        let file = sparse_file(size);
        let disk_guid = "8E1B5F6A-3C2D-4E5F-9A0B-1C2D3E4F5A6B";
        let esp_guid = "11111111-2222-4333-8444-555555555555";
        sgdisk(
            &[
                "-o",
                "-U",
                disk_guid,
                "-n",
                "1:2048:+1M",
                "-t",
                "1:EF02",
                "-c",
                "1:abnix-bios",
                "-n",
                "2:0:+8M",
                "-t",
                "2:EF00",
                "-c",
                "2:EFI system",
                "-u",
                &format!("2:{esp_guid}"),
                "-A",
                "2:set:2",
                "-n",
                "5:0:0",
                "-t",
                "5:8300",
                "-c",
                "5:rest",
            ],
            file.path(),
        );
        let gpt = Gpt::read(&mut file.reopen().unwrap(), 512).unwrap();
        assert_eq!(gpt.disk_guid.to_string(), disk_guid);
        let (n, bios) = gpt.partition_by_name("abnix-bios").unwrap();
        assert_eq!(
            (n, bios.type_guid, bios.first_lba, bios.last_lba),
            (1, Guid::BIOS_BOOT, 2048, 4095)
        );
        let (n, esp) = gpt.partition_by_name("EFI system").unwrap();
        assert_eq!(
            (n, esp.type_guid, esp.first_lba),
            (2, Guid::EFI_SYSTEM, 4096)
        );
        assert_eq!(esp.size_lbas(), 8 * MIB / 512);
        assert_eq!(esp.guid.to_string(), esp_guid);
        assert_eq!(esp.attributes, 1 << 2);
        let (n, rest) = gpt.partition_by_name("rest").unwrap();
        assert_eq!((n, rest.type_guid), (5, Guid::LINUX_FILESYSTEM));
        assert!(gpt.partitions[2].is_none() && gpt.partitions[3].is_none());
        // Same table, same bytes: our serialization of sgdisk's table is sgdisk's.
        let ours = sparse_file(size);
        let mut ours_disk = ours.reopen().unwrap();
        gpt.write(&mut ours_disk).unwrap();
        let both = |offset: u64, len: usize| {
            (
                bytes_at(ours.path(), offset, len),
                bytes_at(file.path(), offset, len),
            )
        };
        let (mine, theirs) = both(512, 512 * 33);
        assert!(mine == theirs, "primary header + entries differ");
        let (mine, theirs) = both(size - 512 * 33, 512 * 33);
        assert!(mine == theirs, "backup entries + header differ");
        let (mine, theirs) = both(0, 512);
        assert_eq!(&mine[446..512], &theirs[446..512], "protective MBR record");
    }

    #[test]
    fn type_constants_match_sgdisk_codes() {
        let file = sparse_file(16 * MIB);
        let codes = [
            ("EF02", Guid::BIOS_BOOT),
            ("EF00", Guid::EFI_SYSTEM),
            ("8304", Guid::LINUX_ROOT_X86_64),
            ("8305", Guid::LINUX_ROOT_AARCH64),
            ("8300", Guid::LINUX_FILESYSTEM),
        ];
        let mut args = vec!["-o".to_owned()];
        for (i, (code, _)) in codes.iter().enumerate() {
            let n = i + 1;
            args.extend([
                "-n".into(),
                format!("{n}:0:+1M"),
                "-t".into(),
                format!("{n}:{code}"),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sgdisk(&args, file.path());
        let gpt = Gpt::read(&mut file.reopen().unwrap(), 512).unwrap();
        for (i, (code, guid)) in codes.iter().enumerate() {
            assert_eq!(
                gpt.partitions[i].as_ref().unwrap().type_guid,
                *guid,
                "{code}"
            );
        }
    }

    #[test]
    fn moving_the_backup_matches_sgdisk_e() {
        let (small, big) = (32 * MIB, 80 * MIB);
        // A template written to a bigger disk: the backup sits mid-disk.
        let template_on_big_disk = || {
            let file = sparse_file(big);
            sample(small, 512)
                .write(&mut file.reopen().unwrap())
                .unwrap();
            file
        };
        let theirs = template_on_big_disk();
        sgdisk(&["-e"], theirs.path());
        let ours = template_on_big_disk();
        let mut disk = ours.reopen().unwrap();
        let mut gpt = Gpt::read(&mut disk, 512).unwrap();
        gpt.move_backup_to_end(big);
        gpt.write(&mut disk).unwrap();

        let theirs_gpt = Gpt::read(&mut theirs.reopen().unwrap(), 512).unwrap();
        assert_eq!(gpt, theirs_gpt);
        for (offset, what) in [(512, "primary header"), (big - 512, "backup header")] {
            assert!(
                bytes_at(ours.path(), offset, 512) == bytes_at(theirs.path(), offset, 512),
                "{what} differs"
            );
        }
        sgdisk_agrees_with(&gpt, ours.path());
    }

    /// Random damage to a valid table never panics the reader, and whatever
    /// it accepts is a consistent table.
    #[test]
    fn random_damage_is_rejected_or_read_consistently() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xab);
        let size = 8 * MIB;
        let mut disk = written(&sample(size, 512), size);
        let tail = size as usize - 33 * 512;
        for _ in 0..3000 {
            let mut undo = Vec::new();
            for _ in 0..rng.random_range(1..8) {
                let at = if rng.random_bool(0.5) {
                    rng.random_range(0..34 * 512)
                } else {
                    rng.random_range(tail..size as usize)
                };
                undo.push((at, disk.get_ref()[at]));
                disk.get_mut()[at] = rng.random();
            }
            if let Ok(read) = Gpt::read_report(&mut disk, 512) {
                let g = read.gpt;
                check_partitions(&g.partitions, g.first_usable_lba, g.last_usable_lba).unwrap();
                assert!(g.backup_lba < size / 512);
            }
            for (at, byte) in undo.into_iter().rev() {
                disk.get_mut()[at] = byte;
            }
        }
    }
}
