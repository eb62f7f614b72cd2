//! What is on a disk: partition tables, filesystems and containers, found by
//! their signatures at the offsets libblkid (util-linux,
//! `libblkid/src/superblocks/*.c`) probes.
//!
//! The installer refuses a disk holding anything but an earlier abnix layout
//! (exactly one [`SignatureKind::Gpt`] that [`abnix_formats::layout::Layout::from_gpt`]
//! accepts) unless wiping is allowed, and prints what it found; when it may
//! wipe, [`erase_signatures`] removes every magic found, as `wipefs -a`
//! does, so no stale RAID, LVM or LUKS header outside the new partitions
//! survives to confuse udev.
//!
//! Only whole-disk signatures are probed; filesystems inside partitions are
//! the partition table's business.
//!
//! [`signature_areas`] are the places any signature libblkid knows can sit
//! on a whole disk; a disk whose areas all read as zeros holds none of them
//! ([`first_nonzero`]), and [`zero_areas`] clears them.

use std::fmt;
use std::io::{self, SeekFrom};

use abnix_formats::disk::Disk;
use abnix_formats::gpt::{Gpt, GptError};

/// One thing found on a disk, and where its magic bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub(crate) kind: SignatureKind,
    /// Byte ranges `(offset, length)` whose zeroing makes the probe (and
    /// libblkid) stop seeing it.
    pub(crate) magic: Vec<(u64, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureKind {
    /// A readable GUID partition table.
    Gpt(Box<Gpt>),
    /// Something GPT-like (protective MBR or header) that does not read.
    DamagedGpt(String),
    /// A DOS/MBR partition table and its used records.
    Mbr(Vec<MbrPartition>),
    /// ext2, ext3 or ext4 (`version`), told apart by features as libblkid does.
    Ext {
        version: u8,
        label: Option<String>,
    },
    Erofs {
        label: Option<String>,
    },
    Fat {
        label: Option<String>,
    },
    Iso9660 {
        label: Option<String>,
    },
    Swap {
        label: Option<String>,
    },
    Lvm2PhysicalVolume,
    Luks {
        version: u16,
    },
    /// An md RAID member; `version` is the superblock format ("0.90", "1.2").
    LinuxRaid {
        version: &'static str,
    },
}

/// A used record of an MBR partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbrPartition {
    /// 1..=4.
    number: u8,
    type_byte: u8,
    start_lba: u32,
    sectors: u32,
}

fn labelled(f: &mut fmt::Formatter<'_>, what: &str, label: &Option<String>) -> fmt::Result {
    match label {
        Some(l) => write!(f, "{what} labelled {l:?}"),
        None => f.write_str(what),
    }
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureKind::Gpt(gpt) => {
                let parts: Vec<String> = gpt
                    .partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.as_ref().map(|p| format!("{} {:?}", i + 1, p.name)))
                    .collect();
                if parts.is_empty() {
                    f.write_str("GPT partition table without partitions")
                } else {
                    write!(f, "GPT partition table: {}", parts.join(", "))
                }
            }
            SignatureKind::DamagedGpt(why) => write!(f, "damaged GPT partition table ({why})"),
            SignatureKind::Mbr(parts) => {
                let parts: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{} (type {:#04x})", p.number, p.type_byte))
                    .collect();
                if parts.is_empty() {
                    f.write_str("MBR partition table without partitions")
                } else {
                    write!(f, "MBR partition table: {}", parts.join(", "))
                }
            }
            SignatureKind::Ext { version, label } => {
                labelled(f, &format!("ext{version} filesystem"), label)
            }
            SignatureKind::Erofs { label } => labelled(f, "EROFS filesystem", label),
            SignatureKind::Fat { label } => labelled(f, "FAT filesystem", label),
            SignatureKind::Iso9660 { label } => labelled(f, "ISO 9660 filesystem", label),
            SignatureKind::Swap { label } => labelled(f, "swap area", label),
            SignatureKind::Lvm2PhysicalVolume => f.write_str("LVM2 physical volume"),
            SignatureKind::Luks { version } => write!(f, "LUKS{version} encrypted volume"),
            SignatureKind::LinuxRaid { version } => {
                write!(f, "Linux software RAID member (metadata {version})")
            }
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// The first bytes of the disk, enough for every signature near the start
/// (swap with 64 KiB pages ends there).
const HEAD: usize = 64 * 1024;

/// Reads `len` bytes at `offset`, or `None` when the disk is shorter.
fn read_range<D: Disk + ?Sized>(
    disk: &mut D,
    size: u64,
    offset: u64,
    len: usize,
) -> io::Result<Option<Vec<u8>>> {
    if offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A fixed-size text field: up to the first NUL, trailing spaces trimmed;
/// `None` when empty.
fn text_field(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]).trim_end().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Everything [`probe_signatures`] recognizes on the disk, partition tables
/// first.
pub fn probe_signatures<D: Disk + ?Sized>(disk: &mut D) -> io::Result<Vec<Signature>> {
    let size = disk.size()?;
    let head_len = HEAD.min(size as usize);
    let head = read_range(disk, size, 0, head_len)?.unwrap_or_default();
    let mut found = Vec::new();

    let is_fat = head.len() >= 512 && fat_boot_sector(&head[..512]);
    match probe_gpt(disk, size, &head)? {
        Some(gpt) => found.push(gpt),
        None if !is_fat => found.extend(probe_mbr(&head)),
        None => {}
    }
    found.extend(probe_ext(&head));
    found.extend(probe_erofs(&head));
    if is_fat {
        found.push(fat_signature(&head));
    }
    found.extend(probe_iso9660(disk, size)?);
    found.extend(probe_swap(&head));
    found.extend(probe_lvm2(&head));
    found.extend(probe_luks(disk, size)?);
    found.extend(probe_raid(disk, size)?);
    Ok(found)
}

const MIB: u64 = 1024 * 1024;

/// An area of a disk where signatures live, by what puts them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AreaKind {
    /// The first [`HEAD_AREA`] bytes: every magic libblkid probes at a
    /// fixed offset from the start (the furthest: VMFS at 2 MiB, LUKS2's
    /// last secondary header at 4 MiB), ZFS labels 0 and 1 (at 0 and
    /// 256 KiB), MD 1.1/1.2 (0, 4 KiB), bcache (4 KiB), btrfs (64 KiB), and
    /// the start of a first partition at 1 or 4 MiB whose table is gone.
    Head,
    /// The last [`TAIL_AREA`] bytes: the backup GPT, MD 0.90 and 1.0
    /// superblocks, ZFS labels 2 and 3 (the last 512 KiB, 256 KiB aligned),
    /// bcachefs's (1 MiB before the end), DRBD's, NTFS's backup boot sector,
    /// UDF's last anchors and firmware RAID metadata (Promise's up to 3087
    /// sectors from the end).
    Tail,
    /// A btrfs superblock mirror (64 MiB, 256 GiB, 1 PiB): libblkid looks
    /// only at the primary, but `btrfs rescue` finds these.
    BtrfsMirror,
}

/// How much of the start of a disk [`AreaKind::Head`] covers.
pub const HEAD_AREA: u64 = 8 * MIB;
/// How much of the end of a disk [`AreaKind::Tail`] covers.
pub const TAIL_AREA: u64 = 2 * MIB;
const BTRFS_MIRRORS: [u64; 3] = [64 * MIB, 256 << 30, 1 << 50];
const BTRFS_SUPERBLOCK: u64 = 4096;

/// One area: `len` bytes at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    kind: AreaKind,
    start: u64,
    len: u64,
}

/// The areas of a disk of `size` bytes where a signature can sit, in
/// order, without overlaps (on a small disk the head and tail meet, and a
/// mirror inside either is not listed twice).
pub fn signature_areas(size: u64) -> Vec<Area> {
    let head_end = HEAD_AREA.min(size);
    let tail_start = size.saturating_sub(TAIL_AREA).max(head_end);
    let mut areas = vec![Area {
        kind: AreaKind::Head,
        start: 0,
        len: head_end,
    }];
    for mirror in BTRFS_MIRRORS {
        if mirror >= head_end && mirror + BTRFS_SUPERBLOCK <= tail_start {
            areas.push(Area {
                kind: AreaKind::BtrfsMirror,
                start: mirror,
                len: BTRFS_SUPERBLOCK,
            });
        }
    }
    if tail_start < size {
        areas.push(Area {
            kind: AreaKind::Tail,
            start: tail_start,
            len: size - tail_start,
        });
    }
    areas
}

/// The first byte that is not zero in an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonZero {
    pub(crate) area: AreaKind,
    pub(crate) offset: u64,
    /// The disk's size, to say how far from the end the byte is.
    pub(crate) disk_size: u64,
}

/// An offset the way people count it: `1 MiB`, `64 KiB`, else bytes.
fn offset_text(offset: u64) -> String {
    const KIB: u64 = 1024;
    if offset == 0 {
        "0".to_owned()
    } else if offset.is_multiple_of(MIB) {
        format!("{} MiB", offset / MIB)
    } else if offset.is_multiple_of(KIB) {
        format!("{} KiB", offset / KIB)
    } else {
        format!("{offset} bytes")
    }
}

impl fmt::Display for NonZero {
    /// `unknown non-zero data at offset 1 MiB`; near the end also how far
    /// before it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown non-zero data at offset {}",
            offset_text(self.offset)
        )?;
        if self.area == AreaKind::Tail {
            write!(
                f,
                " ({} before the end)",
                offset_text(self.disk_size - self.offset)
            )?;
        }
        Ok(())
    }
}

/// What the areas are read and cleared in.
const AREA_CHUNK: usize = 64 * 1024;

/// Calls `each` with every chunk of the areas that holds a non-zero byte:
/// its offset, its bytes.
fn nonzero_chunks<D: Disk + ?Sized>(
    disk: &mut D,
    mut each: impl FnMut(&mut D, Area, u64, &[u8]) -> io::Result<bool>,
) -> io::Result<()> {
    let size = disk.size()?;
    let mut buf = vec![0u8; AREA_CHUNK];
    for area in signature_areas(size) {
        let mut at = area.start;
        while at < area.start + area.len {
            let len = (area.start + area.len - at).min(AREA_CHUNK as u64) as usize;
            disk.seek(SeekFrom::Start(at))?;
            disk.read_exact(&mut buf[..len])?;
            if buf[..len].iter().any(|&b| b != 0) && !each(disk, area, at, &buf[..len])? {
                break;
            }
            at += len as u64;
        }
    }
    Ok(())
}

/// The first non-zero byte of each [`signature_areas`] area that has one;
/// empty when every area reads as zeros.
pub fn first_nonzero<D: Disk + ?Sized>(disk: &mut D) -> io::Result<Vec<NonZero>> {
    let disk_size = disk.size()?;
    let mut found = Vec::new();
    nonzero_chunks(disk, |_, area, at, chunk| {
        let first = chunk.iter().position(|&b| b != 0).unwrap_or(0);
        found.push(NonZero {
            area: area.kind,
            offset: at + first as u64,
            disk_size,
        });
        // The first one of this area is enough.
        Ok(false)
    })?;
    Ok(found)
}

/// Zeroes every chunk of the [`signature_areas`] that is not zero already
/// (a sparse file stays sparse where it is), then syncs.
pub fn zero_areas<D: Disk + ?Sized>(disk: &mut D) -> io::Result<()> {
    let zeros = vec![0u8; AREA_CHUNK];
    nonzero_chunks(disk, |disk, _, at, chunk| {
        disk.seek(SeekFrom::Start(at))?;
        disk.write_all(&zeros[..chunk.len()])?;
        Ok(true)
    })?;
    disk.sync()
}

/// Zeroes the magic bytes of each signature and syncs, so that neither this
/// probe nor libblkid sees them any more.
pub fn erase_signatures<D: Disk + ?Sized>(
    disk: &mut D,
    signatures: &[Signature],
) -> io::Result<()> {
    for (offset, len) in signatures.iter().flat_map(|s| &s.magic) {
        disk.seek(SeekFrom::Start(*offset))?;
        disk.write_all(&vec![0u8; *len])?;
    }
    disk.sync()
}

/// A GPT, readable or not, when LBA 0 holds a protective MBR or either
/// sector size's LBA 1 or last LBA holds a GPT header signature.
fn probe_gpt<D: Disk + ?Sized>(
    disk: &mut D,
    size: u64,
    head: &[u8],
) -> io::Result<Option<Signature>> {
    let has_pmbr =
        head.len() >= 512 && abnix_formats::gpt::check_protective_mbr(&head[..512]).is_ok();
    let mut magic = Vec::new();
    let mut header_sector_size = None;
    for ss in [512u64, 4096] {
        if head.get(ss as usize..ss as usize + 8) == Some(&b"EFI PART"[..]) {
            magic.push((ss, 8));
            header_sector_size.get_or_insert(ss as u32);
        }
        if size >= 2 * ss {
            if let Some(last) = read_range(disk, size, size / ss * ss - ss, 8)? {
                if last == b"EFI PART" {
                    magic.push((size / ss * ss - ss, 8));
                    header_sector_size.get_or_insert(ss as u32);
                }
            }
        }
    }
    if !has_pmbr && magic.is_empty() {
        return Ok(None);
    }
    magic.insert(0, (446, 66));

    let mut first_error: Option<GptError> = None;
    let sizes = match header_sector_size {
        Some(4096) => [4096, 512],
        _ => [512, 4096],
    };
    for ss in sizes {
        match Gpt::read_report(disk, ss) {
            Ok(read) => {
                let backup = read.gpt.backup_lba * u64::from(ss);
                if !magic.contains(&(backup, 8)) {
                    magic.push((backup, 8));
                }
                return Ok(Some(Signature {
                    kind: SignatureKind::Gpt(Box::new(read.gpt)),
                    magic,
                }));
            }
            Err(GptError::Io(e)) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let why = first_error.map(|e| e.to_string()).unwrap_or_default();
    Ok(Some(Signature {
        kind: SignatureKind::DamagedGpt(why),
        magic,
    }))
}

/// A DOS partition table: boot signature, and every record's boot flag 0x00
/// or 0x80 (libblkid's test that the sector is not something else).
fn probe_mbr(head: &[u8]) -> Option<Signature> {
    if head.len() < 512 || head[510..512] != [0x55, 0xAA] {
        return None;
    }
    let records: Vec<&[u8]> = (0..4).map(|i| &head[446 + 16 * i..462 + 16 * i]).collect();
    if records.iter().any(|r| r[0] != 0x00 && r[0] != 0x80) {
        return None;
    }
    let partitions = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r[4] != 0 && le32(r, 12) != 0)
        .map(|(i, r)| MbrPartition {
            number: i as u8 + 1,
            type_byte: r[4],
            start_lba: le32(r, 8),
            sectors: le32(r, 12),
        })
        .collect();
    Some(Signature {
        kind: SignatureKind::Mbr(partitions),
        magic: vec![(446, 66)],
    })
}

/// A FAT boot sector, by the BIOS parameter block checks of libblkid's
/// vfat.c: a jump instruction, boot signature, at least one FAT and one
/// reserved sector, a valid media byte, power-of-two cluster and sector
/// sizes.
fn fat_boot_sector(s: &[u8]) -> bool {
    let sector_size = le16(s, 0x0b);
    (s[0] == 0xEB || s[0] == 0xE9)
        && s[510..512] == [0x55, 0xAA]
        && s[0x10] != 0
        && le16(s, 0x0e) != 0
        && (s[0x15] >= 0xF8 || s[0x15] == 0xF0)
        && s[0x0d].is_power_of_two()
        && sector_size.is_power_of_two()
        && (512..=4096).contains(&sector_size)
}

/// FAT12/16 keep the label at 0x2B and the type string at 0x36; FAT32 (16-bit
/// FAT length zero) at 0x47 and 0x52.
fn fat_signature(head: &[u8]) -> Signature {
    let fat32 = le16(head, 0x16) == 0;
    let (label_at, type_at) = if fat32 { (0x47, 0x52) } else { (0x2b, 0x36) };
    let label = text_field(&head[label_at..label_at + 11]).filter(|l| l != "NO NAME");
    Signature {
        kind: SignatureKind::Fat { label },
        magic: vec![(type_at as u64, 8), (510, 2)],
    }
}

/// ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38, features at 0x5C
/// (compat), 0x60 (incompat), 0x64 (ro_compat), label at 0x78. Versions as
/// libblkid's ext.c: ext3 has a journal and only ext3 features; ext2 neither
/// journal nor newer features; anything else is ext4.
fn probe_ext(head: &[u8]) -> Option<Signature> {
    const SB: usize = 1024;
    let sb = head.get(SB..SB + 0x88)?;
    if sb[0x38..0x3a] != [0x53, 0xEF] {
        return None;
    }
    let (compat, incompat, ro_compat) = (le32(sb, 0x5c), le32(sb, 0x60), le32(sb, 0x64));
    const HAS_JOURNAL: u32 = 0x4;
    const RO_COMPAT_EXT2_3: u32 = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
    const INCOMPAT_EXT2: u32 = 0x2 | 0x10; // filetype, meta_bg
    const INCOMPAT_EXT3: u32 = INCOMPAT_EXT2 | 0x4; // + recover
    let version = if ro_compat & !RO_COMPAT_EXT2_3 != 0 {
        4
    } else if compat & HAS_JOURNAL != 0 {
        if incompat & !INCOMPAT_EXT3 == 0 {
            3
        } else {
            4
        }
    } else if incompat & !INCOMPAT_EXT2 == 0 {
        2
    } else {
        4
    };
    Some(Signature {
        kind: SignatureKind::Ext {
            version,
            label: text_field(&sb[0x78..0x88]),
        },
        magic: vec![(SB as u64 + 0x38, 2)],
    })
}

/// EROFS: superblock at 1024, magic 0xE0F5E1E2 (little-endian), block size
/// bits at 12 (at most 4 KiB), label at 64.
fn probe_erofs(head: &[u8]) -> Option<Signature> {
    let sb = head.get(1024..1024 + 80)?;
    if le32(sb, 0) != 0xE0F5_E1E2 || sb[12] > 12 {
        return None;
    }
    Some(Signature {
        kind: SignatureKind::Erofs {
            label: text_field(&sb[64..80]),
        },
        magic: vec![(1024, 4)],
    })
}

/// ISO 9660: volume descriptors from 32 KiB, "CD001" at byte 1 of each; the
/// primary one (type 1) has the volume id at 40.
fn probe_iso9660<D: Disk + ?Sized>(disk: &mut D, size: u64) -> io::Result<Option<Signature>> {
    const VD: u64 = 32 * 1024;
    let Some(vd) = read_range(disk, size, VD, 72)? else {
        return Ok(None);
    };
    if &vd[1..6] != b"CD001" {
        return Ok(None);
    }
    let label = if vd[0] == 1 {
        text_field(&vd[40..72])
    } else {
        None
    };
    Ok(Some(Signature {
        kind: SignatureKind::Iso9660 { label },
        magic: vec![(VD + 1, 5)],
    }))
}

/// Swap: "SWAPSPACE2" (or the old "SWAP-SPACE") in the last 10 bytes of the
/// first page, for page sizes 4 to 64 KiB; a v1 label at 1024 + 28.
fn probe_swap(head: &[u8]) -> Option<Signature> {
    [4096usize, 8192, 16384, 32768, 65536]
        .into_iter()
        .find_map(|page| {
            let magic = head.get(page - 10..page)?;
            let v1 = magic == b"SWAPSPACE2";
            if !v1 && magic != b"SWAP-SPACE" {
                return None;
            }
            let label = if v1 {
                text_field(&head[1052..1068])
            } else {
                None
            };
            Some(Signature {
                kind: SignatureKind::Swap { label },
                magic: vec![(page as u64 - 10, 10)],
            })
        })
}

/// LVM2: a label "LABELONE" in one of the first four 512-byte sectors, which
/// names its own sector at 8 and carries "LVM2 001" at 24.
fn probe_lvm2(head: &[u8]) -> Option<Signature> {
    (0..4u64).find_map(|sector| {
        let at = sector as usize * 512;
        let label = head.get(at..at + 32)?;
        (&label[..8] == b"LABELONE" && le64(label, 8) == sector && &label[24..32] == b"LVM2 001")
            .then(|| Signature {
                kind: SignatureKind::Lvm2PhysicalVolume,
                magic: vec![(at as u64, 8)],
            })
    })
}

/// LUKS: "LUKS\xba\xbe" and a big-endian version at 0; LUKS2 also keeps a
/// secondary header ("SKUL\xba\xbe") at one of nine offsets, each header
/// naming its own offset (big-endian) at 256, as libblkid's luks.c checks.
fn probe_luks<D: Disk + ?Sized>(disk: &mut D, size: u64) -> io::Result<Option<Signature>> {
    const SECONDARY: [u64; 9] = [
        0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
    ];
    let mut version = None;
    let mut magic = Vec::new();
    for (offset, expect) in
        std::iter::once((0, b"LUKS\xba\xbe")).chain(SECONDARY.map(|o| (o, b"SKUL\xba\xbe")))
    {
        let Some(hdr) = read_range(disk, size, offset, 264)? else {
            continue;
        };
        if &hdr[..6] != expect {
            continue;
        }
        let v = u16::from_be_bytes([hdr[6], hdr[7]]);
        if (v == 2 && be64(&hdr, 256) != offset) || (v != 2 && offset != 0) {
            continue;
        }
        version.get_or_insert(v);
        magic.push((offset, 6));
    }
    Ok(version.map(|version| Signature {
        kind: SignatureKind::Luks { version },
        magic,
    }))
}

const MD_MAGIC: u32 = 0xa92b_4efc;

/// md RAID member superblocks, as libblkid's linux_raid.c finds them:
/// 0.90 in the last 64 KiB-aligned 64 KiB, 1.0 8 KiB before the 4 KiB-aligned
/// end, 1.1 at 0, 1.2 at 4 KiB. Version-1 superblocks say major version 1
/// and name their own sector at 144.
fn probe_raid<D: Disk + ?Sized>(disk: &mut D, size: u64) -> io::Result<Option<Signature>> {
    const RESERVED: u64 = 0x10000;
    if size > RESERVED {
        let off = (size & !(RESERVED - 1)) - RESERVED;
        if let Some(sb) = read_range(disk, size, off, 4)? {
            if le32(&sb, 0) == MD_MAGIC
                || u32::from_be_bytes(sb[..4].try_into().unwrap()) == MD_MAGIC
            {
                return Ok(Some(raid_signature("0.90", off)));
            }
        }
    }
    let mut candidates = Vec::new();
    if size > RESERVED {
        candidates.push(("1.0", (size & !0xfff) - 0x2000));
    }
    candidates.extend([("1.1", 0), ("1.2", 0x1000)]);
    for (version, off) in candidates {
        let Some(sb) = read_range(disk, size, off, 152)? else {
            continue;
        };
        if le32(&sb, 0) == MD_MAGIC && le32(&sb, 4) == 1 && le64(&sb, 144) == off >> 9 {
            return Ok(Some(raid_signature(version, off)));
        }
    }
    Ok(None)
}

fn raid_signature(version: &'static str, offset: u64) -> Signature {
    Signature {
        kind: SignatureKind::LinuxRaid { version },
        magic: vec![(offset, 4)],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use abnix_formats::gpt::Guid;
    use abnix_formats::layout::{self, Layout, LayoutConfig};
    use abnix_formats::testutil::sgdisk;
    use std::fs::{self, File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    fn image(size: u64) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        file
    }

    /// Runs a formatting tool on the image; panics (never skips) when it is
    /// missing or fails.
    fn run(tool: &str, args: &[&str]) {
        abnix_core::testutil::run_tool(tool, args);
    }

    /// What libblkid says: TYPE (or PTTYPE for a partition table), empty when
    /// it finds nothing.
    fn blkid_type(path: &Path) -> String {
        let out = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(path)
            .output()
            .expect("running blkid (install util-linux)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        field("TYPE")
            .or_else(|| field("PTTYPE"))
            .unwrap_or_default()
    }

    fn probe(path: &Path) -> Vec<Signature> {
        probe_signatures(&mut File::open(path).unwrap()).unwrap()
    }

    pub(crate) fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    /// LVM2's label CRC (libblkid lvm.c): CRC-32 by nibbles, seed 0xf597a6cf,
    /// no final xor.
    fn lvm2_crc(data: &[u8]) -> u32 {
        const TABLE: [u32; 16] = [
            0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158,
            0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4,
            0xa00ae278, 0xbdbdf21c,
        ];
        data.iter().fold(0xf597a6cf, |mut crc, &b| {
            crc ^= u32::from(b);
            crc = (crc >> 4) ^ TABLE[(crc & 0xf) as usize];
            (crc >> 4) ^ TABLE[(crc & 0xf) as usize]
        })
    }

    pub(crate) type Build = Box<dyn Fn(&Path)>;

    /// One image per kind: how it is built, what we must find, what blkid
    /// calls it.
    pub(crate) fn cases() -> Vec<(&'static str, u64, Build, SignatureKind, &'static str)> {
        let ext = |version: u8| -> Build {
            Box::new(move |p: &Path| {
                let p = p.to_str().unwrap();
                run(
                    &format!("mkfs.ext{version}"),
                    &["-q", "-F", "-L", "data", p],
                );
            })
        };
        vec![
            (
                "ext2",
                16 * MIB,
                ext(2),
                SignatureKind::Ext {
                    version: 2,
                    label: Some("data".into()),
                },
                "ext2",
            ),
            (
                "ext3",
                16 * MIB,
                ext(3),
                SignatureKind::Ext {
                    version: 3,
                    label: Some("data".into()),
                },
                "ext3",
            ),
            (
                "ext4",
                16 * MIB,
                ext(4),
                SignatureKind::Ext {
                    version: 4,
                    label: Some("data".into()),
                },
                "ext4",
            ),
            (
                "fat32",
                64 * MIB,
                Box::new(|p: &Path| {
                    run("mkfs.fat", &["-F", "32", "-n", "ESP", p.to_str().unwrap()])
                }),
                SignatureKind::Fat {
                    label: Some("ESP".into()),
                },
                "vfat",
            ),
            (
                "fat16",
                16 * MIB,
                Box::new(|p: &Path| run("mkfs.fat", &["-F", "16", p.to_str().unwrap()])),
                SignatureKind::Fat { label: None },
                "vfat",
            ),
            (
                "swap",
                16 * MIB,
                Box::new(|p: &Path| run("mkswap", &["-L", "swp", p.to_str().unwrap()])),
                SignatureKind::Swap {
                    label: Some("swp".into()),
                },
                "swap",
            ),
            (
                "erofs",
                0,
                Box::new(|p: &Path| {
                    let src = tempfile::tempdir().unwrap();
                    fs::write(src.path().join("hello"), "world").unwrap();
                    run(
                        "mkfs.erofs",
                        &[p.to_str().unwrap(), src.path().to_str().unwrap()],
                    );
                    // mkfs.erofs writes a small file; give it a disk's size.
                    File::options()
                        .write(true)
                        .open(p)
                        .unwrap()
                        .set_len(8 * MIB)
                        .unwrap();
                }),
                SignatureKind::Erofs { label: None },
                "erofs",
            ),
            (
                "mbr",
                16 * MIB,
                Box::new(|p: &Path| {
                    let mut record = [0u8; 16];
                    record[4] = 0x83;
                    record[8..12].copy_from_slice(&2048u32.to_le_bytes());
                    record[12..16].copy_from_slice(&4096u32.to_le_bytes());
                    write_at(p, 446 + 16, &record);
                    write_at(p, 510, &[0x55, 0xAA]);
                }),
                SignatureKind::Mbr(vec![MbrPartition {
                    number: 2,
                    type_byte: 0x83,
                    start_lba: 2048,
                    sectors: 4096,
                }]),
                "dos",
            ),
            (
                "iso9660",
                4 * MIB,
                Box::new(|p: &Path| {
                    // Primary volume descriptor, then the set terminator.
                    let mut pvd = vec![0u8; 2048];
                    pvd[0] = 1;
                    pvd[1..6].copy_from_slice(b"CD001");
                    pvd[6] = 1;
                    pvd[40..72].copy_from_slice(format!("{:<32}", "INSTALLER").as_bytes());
                    write_at(p, 32768, &pvd);
                    write_at(p, 32768 + 2048, &[255, b'C', b'D', b'0', b'0', b'1', 1]);
                }),
                SignatureKind::Iso9660 {
                    label: Some("INSTALLER".into()),
                },
                "iso9660",
            ),
            (
                "lvm2",
                16 * MIB,
                Box::new(|p: &Path| {
                    // Label in sector 1: id, own sector, CRC of 20..512, contents offset, type, PV UUID.
                    let mut label = vec![0u8; 512];
                    label[..8].copy_from_slice(b"LABELONE");
                    label[8..16].copy_from_slice(&1u64.to_le_bytes());
                    label[20..24].copy_from_slice(&32u32.to_le_bytes());
                    label[24..32].copy_from_slice(b"LVM2 001");
                    label[32..64].copy_from_slice(b"abcdefghijklmnopqrstuvwxyz012345");
                    let crc = lvm2_crc(&label[20..]);
                    label[16..20].copy_from_slice(&crc.to_le_bytes());
                    write_at(p, 512, &label);
                }),
                SignatureKind::Lvm2PhysicalVolume,
                "LVM2_member",
            ),
            (
                "luks1",
                16 * MIB,
                Box::new(|p: &Path| {
                    let mut hdr = vec![0u8; 592];
                    hdr[..6].copy_from_slice(b"LUKS\xba\xbe");
                    hdr[6..8].copy_from_slice(&1u16.to_be_bytes());
                    hdr[168..204].copy_from_slice(b"6d8a6e38-4c4a-4b9e-8a35-0d6f2e1a9b7c");
                    write_at(p, 0, &hdr);
                }),
                SignatureKind::Luks { version: 1 },
                "crypto_LUKS",
            ),
            (
                "luks2",
                16 * MIB,
                Box::new(|p: &Path| {
                    for (offset, magic) in [(0u64, b"LUKS\xba\xbe"), (0x4000, b"SKUL\xba\xbe")] {
                        let mut hdr = vec![0u8; 512];
                        hdr[..6].copy_from_slice(magic);
                        hdr[6..8].copy_from_slice(&2u16.to_be_bytes());
                        hdr[8..16].copy_from_slice(&0x4000u64.to_be_bytes());
                        hdr[256..264].copy_from_slice(&offset.to_be_bytes());
                        write_at(p, offset, &hdr);
                    }
                }),
                SignatureKind::Luks { version: 2 },
                "crypto_LUKS",
            ),
            (
                "md 1.2",
                16 * MIB,
                Box::new(|p: &Path| {
                    let mut sb = vec![0u8; 256];
                    sb[..4].copy_from_slice(&MD_MAGIC.to_le_bytes());
                    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
                    sb[144..152].copy_from_slice(&8u64.to_le_bytes()); // 4096 / 512
                    write_at(p, 4096, &sb);
                }),
                SignatureKind::LinuxRaid { version: "1.2" },
                "linux_raid_member",
            ),
            (
                "md 0.90",
                16 * MIB,
                Box::new(|p: &Path| {
                    let mut sb = vec![0u8; 64];
                    sb[..4].copy_from_slice(&MD_MAGIC.to_le_bytes());
                    sb[4..8].copy_from_slice(&0u32.to_le_bytes());
                    sb[8..12].copy_from_slice(&90u32.to_le_bytes());
                    sb[32..36].copy_from_slice(&1024u32.to_le_bytes()); // 1 MiB used, in KiB
                    write_at(p, 16 * MIB - 64 * 1024, &sb);
                }),
                SignatureKind::LinuxRaid { version: "0.90" },
                "linux_raid_member",
            ),
        ]
    }

    #[test]
    fn every_kind_is_found_agrees_with_blkid_and_erases() {
        for (name, size, build, kind, blkid) in cases() {
            let file = image(size);
            build(file.path());
            let found = probe(file.path());
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert_eq!(found[0].kind, kind, "{name}");
            assert_eq!(blkid_type(file.path()), blkid, "{name}: blkid");

            erase_signatures(
                &mut OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(file.path())
                    .unwrap(),
                &found,
            )
            .unwrap();
            assert_eq!(probe(file.path()), [], "{name}: erased");
            assert_eq!(blkid_type(file.path()), "", "{name}: blkid after erasing");
        }
    }

    #[test]
    fn an_empty_disk_has_no_signatures() {
        let file = image(16 * MIB);
        assert_eq!(probe(file.path()), []);
        assert_eq!(
            probe_signatures(&mut std::io::Cursor::new(vec![0u8; 100])).unwrap(),
            []
        );
    }

    #[test]
    fn sgdisk_tables_are_found_with_their_names() {
        let file = image(32 * MIB);
        sgdisk(
            &[
                "-o", "-n", "1:0:+4M", "-c", "1:boot", "-n", "2:0:0", "-c", "2:home",
            ],
            file.path(),
        );
        let found = probe(file.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].to_string(),
            "GPT partition table: 1 \"boot\", 2 \"home\""
        );
        assert_eq!(blkid_type(file.path()), "gpt");
        erase_signatures(
            &mut OpenOptions::new()
                .read(true)
                .write(true)
                .open(file.path())
                .unwrap(),
            &found,
        )
        .unwrap();
        assert_eq!(probe(file.path()), []);
        assert_eq!(blkid_type(file.path()), "");
    }

    #[test]
    fn an_abnix_disk_is_only_its_gpt_even_with_grub_boot_code() {
        let cfg = LayoutConfig::new(64 * MIB);
        for ss in [512u32, 4096] {
            let size = layout::min_disk_size(ss, &cfg) + 3 * MIB;
            let file = image(size);
            let layout = layout::compute(size, ss, &cfg).unwrap();
            layout
                .to_gpt(&[5; 32])
                .write(&mut file.reopen().unwrap())
                .unwrap();
            let boot_img =
                fs::read("/usr/lib/grub/i386-pc/boot.img").expect("grub-pc-bin's boot.img");
            write_at(file.path(), 0, &boot_img[..440]);
            let found = probe(file.path());
            assert_eq!(found.len(), 1, "{ss}: {found:?}");
            let SignatureKind::Gpt(gpt) = &found[0].kind else {
                panic!("{ss}: {found:?}")
            };
            assert_eq!(gpt.sector_size, ss);
            assert_eq!(Layout::from_gpt(gpt, size).unwrap(), layout);
        }
    }

    #[test]
    fn a_damaged_gpt_is_reported_as_such() {
        let file = image(32 * MIB);
        sgdisk(&["-o", "-n", "1:0:0"], file.path());
        // Break both headers' CRCs but keep their signatures.
        write_at(file.path(), 512 + 40, &[0xff]);
        write_at(file.path(), 32 * MIB - 512 + 40, &[0xff]);
        let found = probe(file.path());
        assert_eq!(found.len(), 1, "{found:?}");
        let text = found[0].to_string();
        assert!(
            text.starts_with("damaged GPT partition table (both GPT copies are unusable"),
            "{text}"
        );
        erase_signatures(
            &mut OpenOptions::new()
                .read(true)
                .write(true)
                .open(file.path())
                .unwrap(),
            &found,
        )
        .unwrap();
        assert_eq!(probe(file.path()), []);
    }

    #[test]
    fn several_signatures_are_all_reported() {
        // A hybrid ISO: MBR partition table plus ISO 9660, like installer media.
        let file = image(8 * MIB);
        let cases = cases();
        for name in ["mbr", "iso9660"] {
            let (_, _, build, _, _) = cases.iter().find(|c| c.0 == name).unwrap();
            build(file.path());
        }
        let text: Vec<String> = probe(file.path()).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            [
                "MBR partition table: 2 (type 0x83)",
                "ISO 9660 filesystem labelled \"INSTALLER\""
            ]
        );
    }

    #[test]
    fn display_names_what_was_found() {
        let gpt = Gpt::new(16 * MIB, 512, Guid::ZERO).unwrap();
        let show = |kind: SignatureKind| kind.to_string();
        assert_eq!(
            show(SignatureKind::Gpt(Box::new(gpt))),
            "GPT partition table without partitions"
        );
        assert_eq!(
            show(SignatureKind::Mbr(vec![])),
            "MBR partition table without partitions"
        );
        assert_eq!(
            show(SignatureKind::Ext {
                version: 4,
                label: None
            }),
            "ext4 filesystem"
        );
        assert_eq!(
            show(SignatureKind::Swap {
                label: Some("s".into())
            }),
            "swap area labelled \"s\""
        );
        assert_eq!(
            show(SignatureKind::Luks { version: 2 }),
            "LUKS2 encrypted volume"
        );
        assert_eq!(
            show(SignatureKind::LinuxRaid { version: "1.2" }),
            "Linux software RAID member (metadata 1.2)"
        );
    }

    /// Probing arbitrary bytes never panics, whatever their size.
    #[test]
    fn random_disks_never_panic_the_probe() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let magic_spots: [(usize, &[u8]); 6] = [
            (510, &[0x55, 0xAA]),
            (512, b"EFI PART"),
            (1080, &[0x53, 0xEF]),
            (4086, b"SWAPSPACE2"),
            (0, b"LUKS\xba\xbe"),
            (32769, b"CD001"),
        ];
        for _ in 0..300 {
            let len = rng.random_range(0..80 * 1024);
            let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Plant a few real magics so the deeper parsers run on garbage.
            for (at, magic) in magic_spots {
                if rng.random_bool(0.5) && at + magic.len() <= data.len() {
                    data[at..at + magic.len()].copy_from_slice(magic);
                }
            }
            probe_signatures(&mut std::io::Cursor::new(data)).unwrap();
        }
    }
}
