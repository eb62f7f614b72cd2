//! FAT32 inside a [`Disk`]: format, read, create, rename and remove files
//! without mounting, with a write order that survives power cuts.
//!
//! The ESP (`abnix-esp`, DESIGN §2) holds the bootloaders, each slot's kernel
//! and initrd, and the boot state. abnix changes it through [`FatFs`], so the
//! same code works on `/dev/vda` and on a disk-image file, without root or
//! loop devices. What it writes is plain FAT32 that GRUB, UEFI firmware
//! (OVMF), systemd-boot, Linux vfat, dosfstools and mtools read and write;
//! and it reads what they write: long names, case bits, deleted entries,
//! fragmented chains, long-name sets that straddle sectors and clusters.
//!
//! Submodules, each with the format facts it relies on (Microsoft FAT
//! specification "fatgen103"): `bpb` boot sector, FSInfo and geometry;
//! `table` the FAT; `dirent` directory entries and long names; `names` name
//! rules and 8.3 short names; `fs` the operations.
//!
//! # Power-cut safety
//!
//! The promise: a power cut at any instant leaves a volume that [`FatFs::open`]
//! accepts, on which every file is wholly its old self or wholly its new
//! self, and nothing reachable points at garbage. It rests on the usual
//! assumption that a single-sector write lands whole or not at all (if a
//! disk tears a sector, the volume still opens and other files are intact,
//! but the entry being written may be garbage). [`Disk::sync`] separates
//! every pair of writes whose order matters, because the OS and the disk
//! reorder unsynced writes.
//!
//! Three rules make it work:
//! - contents before references: data and new directory clusters reach the
//!   disk before the FAT links them, and the FAT before a directory entry
//!   points at the chain; references go away (entry deleted) before what
//!   they referenced is freed. A cut in between only leaks clusters, which
//!   [`FatFs::reclaim_lost_clusters`] frees later.
//! - one sector commits: every entry set abnix writes (long entries plus the
//!   short entry) lies within one sector, so creating, deleting and renaming
//!   in place are each one sector write.
//! - the first FAT leads: FAT changes go to FAT 1 and then FAT 2. After a cut
//!   the two can differ, in clusters no entry reaches or in the link to a
//!   directory's new, still empty cluster, so both describe a sound volume;
//!   readers use FAT 1, writes rewrite a FAT sector in both copies, and
//!   [`FatFs::reclaim_lost_clusters`] makes FAT 2 identical again.
//!
//! The write order of each mutation (`sync` marks a [`Disk::sync`]):
//!
//! - **create** (file or directory): check space and name; if the parent
//!   directory needs another cluster for the entry: the cluster zeroed and
//!   marked end-of-chain — sync — linked from the directory's last cluster
//!   (another FAT sector, possibly) — sync; contents into free clusters (a
//!   directory's cluster holds "." and "..") — sync — FAT chain, in FAT 1
//!   then FAT 2 — sync — never-used slots before the new set turned into
//!   deleted ones (other sectors only; readers stop at the first never-used
//!   slot) — sync — the entry set, one sector — sync — FSInfo — sync. Cut
//!   before the entry sector: the file is absent and its clusters are lost.
//! - **remove**: the entry set marked deleted, one sector (a foreign set that
//!   straddles sectors: the short entry's sector first) — sync — the chain
//!   freed in FAT 1 then FAT 2, unless another entry in the directory still
//!   starts at the same cluster — sync — FSInfo — sync. Cut after the entry
//!   sector: the file is gone and its clusters are lost.
//! - **rename** within a directory, keeping the short name (and so the
//!   checksum) when it can: if the new long name needs no more slots than
//!   the old one, the new long entries replace the old ones in place; else,
//!   if the set's sector has room, the set moves within the sector. Either
//!   is one sector write — sync. Otherwise (no room in the sector, or a
//!   foreign set that straddles sectors) a new set with a fresh short name
//!   is created as above (no contents) — sync — then the old set is deleted
//!   — sync. A cut between the two leaves both names on the same clusters,
//!   same contents; removing either one then never frees the clusters the
//!   other still uses, and renaming again fails with `AlreadyExists` until
//!   one is removed. `fsck.fat` reports the two as sharing clusters, and
//!   `fsck.fat -a` would cut the later entry (the new name) to 0 bytes,
//!   leaving the old name whole.
//! - **overwrite_file**: the data sectors rewritten in place — sync. The
//!   entry is untouched (same size, no timestamp). A file of at most one
//!   sector (a GRUB environment block) is thus replaced atomically; a longer
//!   one can be torn between old and new sectors.
//! - **format**: sector 0 cleared — sync — reserved sectors, FATs and root
//!   directory — sync — sector 0 — sync. A cut leaves no FAT volume (open
//!   fails) rather than a half-made one.
//! - **reclaim_lost_clusters**: only clusters no entry reaches are freed,
//!   and FAT 2 is made equal to FAT 1 — sync — FSInfo — sync.
//!
//! FSInfo (free cluster count and next-free hint) is written last: after a
//! cut it may be stale, which only misleads `df`; abnix counts free clusters
//! from the FAT itself.
//!
//! Limits: the long entries of a name must fit in one sector with its short
//! entry, so names are at most 195 UTF-16 units on 512-byte sectors (255 on
//! 4096-byte ones); a directory holds at most 65536 slots (fatgen103); files
//! are below 4 GiB.

mod bpb;
mod dirent;
mod fs;
mod names;
mod table;

#[cfg(test)]
mod tests;

use std::io;

use crate::disk::{read_at, write_at, Disk};

/// A FAT32 volume inside a disk (normally a [`crate::disk::Region`]).
///
/// Paths are '/'-separated with an optional leading '/'; "" and "/" are the
/// root. Lookups ignore case; created names keep theirs (long names).
pub struct FatFs<D: Disk> {
    disk: D,
    geometry: bpb::Geometry,
    fat: table::FatTable,
    /// The FSInfo sector, when the volume has a valid one that abnix keeps
    /// current.
    fsinfo_sector: Option<u32>,
    /// Set when an I/O error may have left the in-memory FAT ahead of the
    /// disk: it is read again before the next operation.
    stale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("i/o error on the FAT volume: {0}")]
    Io(#[from] io::Error),
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: directory not empty")]
    DirectoryNotEmpty(String),
    #[error("{path}: no space on the FAT volume ({needed} bytes needed, {free} free)")]
    NoSpace {
        path: String,
        needed: u64,
        free: u64,
    },
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("corrupt FAT volume: {0}")]
    Corrupt(String),
    #[error("a region of {size} bytes is too small for FAT32 (at least {min} bytes needed)")]
    TooSmall { size: u64, min: u64 },
    #[error(
        "{path}: the file is {file} bytes, the new data {data}; overwrite needs the same length"
    )]
    SizeMismatch { path: String, file: u64, data: u64 },
    #[error("{0}: directory full (65536 slots)")]
    DirectoryFull(String),
    #[error("{path}: {len} bytes is more than a FAT file can hold (4 GiB - 1)")]
    FileTooLarge { path: String, len: u64 },
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// How [`FatFs::format`] makes a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Volume label, at most 11 characters of those allowed in short names
    /// (and spaces); stored upper-cased. Empty: no label.
    pub label: String,
    /// The volume serial number (what `blkid` shows as the UUID).
    pub volume_id: u32,
    /// Logical sector size: 512 or 4096, as the disk reports.
    pub sector_size: u32,
}

/// An item of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    /// File size in bytes; 0 for directories.
    pub size: u64,
}
