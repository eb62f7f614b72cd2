//! The operations of [`FatFs`]. The write order of every mutation, and why
//! it is safe against power cuts, is set out in the docs of `fat`; the
//! comments at each `sync` here say which step must land before which.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::ops::Range;

use tracing::{debug, info, warn};

use super::bpb::{BootSector, FsInfo, Geometry};
use super::dirent::{
    encode_long_name, lfn_checksum, parse_directory, DirItem, RawEntry, ShortEntry, Timestamp,
    ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_VOLUME_ID, DELETED, DELETED_SLOT, ENTRY_SIZE,
    UNITS_PER_LONG_ENTRY,
};
use super::names::{same_name, split_path, unique_short_name, volume_label, ShortName};
use super::table::{ClusterSet, FatTable, END_OF_CHAIN, FREE};
use super::{read_at, write_at, DirEntry, FatError, FatFs, FormatOptions};
use crate::disk::Disk;

/// fatgen103: a directory holds at most 65536 entries.
const MAX_DIR_SLOTS: usize = 65_536;
/// File contents move through buffers of at most this size (a multiple of
/// every cluster size).
const IO_CHUNK: usize = 1 << 20;

/// A directory read whole into memory (at most 2 MiB, see MAX_DIR_SLOTS).
pub(super) struct Dir {
    /// For messages: "/" for the root, else the path from the root.
    pub(super) path: String,
    pub(super) first_cluster: u32,
    pub(super) clusters: Vec<u32>,
    /// The slots of all its clusters, in order.
    pub(super) bytes: Vec<u8>,
    pub(super) items: Vec<DirItem>,
    /// The first never-used slot (see `Listing::end`).
    pub(super) end: usize,
}

impl Dir {
    fn slot_count(&self) -> usize {
        self.bytes.len() / ENTRY_SIZE
    }

    pub(super) fn slot(&self, slot: usize) -> RawEntry {
        self.bytes[slot * ENTRY_SIZE..(slot + 1) * ENTRY_SIZE]
            .try_into()
            .expect("a slot is ENTRY_SIZE long")
    }

    fn set_slot(&mut self, slot: usize, raw: &RawEntry) {
        self.bytes[slot * ENTRY_SIZE..(slot + 1) * ENTRY_SIZE].copy_from_slice(raw);
    }

    fn is_free(&self, slot: usize) -> bool {
        slot >= self.end || self.bytes[slot * ENTRY_SIZE] == DELETED
    }

    /// The items a user sees: not ".", "..", nor the volume label.
    pub(super) fn visible(&self) -> impl Iterator<Item = (usize, &DirItem)> {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, item)| !item.short.is_dot() && !item.short.is_volume_label())
    }

    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.visible()
            .find(|(_, item)| same_name(&item.name, name))
            .map(|(index, _)| index)
    }

    /// Every short name in use here, which a new one must differ from.
    pub(super) fn short_names(&self) -> HashSet<ShortName> {
        self.items.iter().map(|item| item.short.name).collect()
    }

    fn child_path(&self, name: &str) -> String {
        if self.path == "/" {
            name.to_string()
        } else {
            format!("{}/{name}", self.path)
        }
    }
}

/// An item found by path, with the directory that holds it.
struct Found {
    dir: Dir,
    index: usize,
    path: String,
}

/// Where an entry set goes: at `slot`, in a cluster appended to the
/// directory if `grows`.
pub(super) struct Placement {
    pub(super) slot: usize,
    grows: bool,
}

enum Contents<'a> {
    File { data: &'a mut dyn Read, len: u64 },
    Directory,
}

/// Contiguous runs (first cluster, cluster count) of a chain.
pub(super) fn runs(clusters: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &cluster in clusters {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == cluster => *count += 1,
            _ => runs.push((cluster, 1)),
        }
    }
    runs
}

fn join(components: &[&str]) -> String {
    components.join("/")
}

fn dot_entry(name: &[u8; 11], cluster: u32, now: Timestamp) -> RawEntry {
    ShortEntry::new(*name, ATTR_DIRECTORY, cluster, 0, now).to_bytes()
}

impl<D: Disk> FatFs<D> {
    /// Makes a FAT32 volume over the whole of `disk` and opens it.
    ///
    /// The cluster size follows from the disk size; a disk too small for
    /// 65525 clusters is refused with [`FatError::TooSmall`].
    pub fn format(mut disk: D, opts: &FormatOptions) -> Result<Self, FatError> {
        let label = volume_label(&opts.label)?;
        let size = disk.size()?;
        let geometry = Geometry::plan(size, opts.sector_size)?;
        let bps = geometry.bytes_per_sector as usize;
        let boot = BootSector {
            geometry: geometry.clone(),
            volume_id: opts.volume_id,
            label: label.unwrap_or(*b"NO NAME    "),
        };
        let boot_sector = boot.to_bytes();

        write_at(&mut disk, 0, &vec![0; bps])?;
        // Until sector 0 is written again at the very end, the region holds
        // no volume at all rather than a half-made one.
        disk.sync()?;

        // The reserved sectors: FSInfo, and the copy of the boot record
        // (boot sector, then FSInfo) at BPB_BkBootSec, laid out as mkfs.fat
        // does; sector 0 itself stays clear for now.
        let mut reserved = vec![0u8; geometry.reserved_sectors as usize * bps];
        let fsinfo = FsInfo {
            free_count: geometry.cluster_count() - 1,
            next_free: geometry.root_cluster + 1,
        };
        let fsinfo_sector = geometry.fsinfo_sector.expect("planned with FSInfo") as usize;
        let backup = geometry
            .backup_boot_sector
            .expect("planned with a backup boot sector") as usize;
        fsinfo.write_into(&mut reserved[fsinfo_sector * bps..(fsinfo_sector + 1) * bps]);
        reserved[backup * bps..(backup + 1) * bps].copy_from_slice(&boot_sector);
        fsinfo.write_into(&mut reserved[(backup + 1) * bps..(backup + 2) * bps]);
        write_at(&mut disk, bps as u64, &reserved[bps..])?;

        // Both FATs: FAT[0] repeats the media byte, FAT[1] is an end mark
        // with the clean-shutdown bits set, FAT[2] ends the root directory.
        let mut first_fat_sector = vec![0u8; bps];
        let head = [
            0x0FFF_FF00 | u32::from(geometry.media),
            0x0FFF_FFFF,
            END_OF_CHAIN,
        ];
        for (i, value) in head.iter().enumerate() {
            first_fat_sector[i * 4..i * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        let zeros = vec![0u8; IO_CHUNK];
        for copy in 0..geometry.num_fats {
            let start = geometry.fat_offset(copy);
            write_at(&mut disk, start, &first_fat_sector)?;
            let mut done = bps;
            while done < geometry.fat_bytes() {
                let n = (geometry.fat_bytes() - done).min(IO_CHUNK);
                write_at(&mut disk, start + done as u64, &zeros[..n])?;
                done += n;
            }
        }

        let mut root = vec![0u8; geometry.cluster_size() as usize];
        if let Some(label) = label {
            let entry = ShortEntry::new(label, ATTR_VOLUME_ID, 0, 0, Timestamp::now());
            root[..ENTRY_SIZE].copy_from_slice(&entry.to_bytes());
        }
        write_at(
            &mut disk,
            geometry.cluster_offset(geometry.root_cluster),
            &root,
        )?;
        // Everything sector 0 describes must be on disk before it is.
        disk.sync()?;
        write_at(&mut disk, 0, &boot_sector)?;
        disk.sync()?;
        debug!(
            size,
            cluster_size = geometry.cluster_size(),
            clusters = geometry.cluster_count(),
            "formatted FAT32"
        );
        Self::open(disk)
    }

    /// Opens the FAT32 volume on `disk`, validating its boot sector.
    /// FAT12/16 volumes are refused as [`FatError::Corrupt`] ("not FAT32").
    pub fn open(mut disk: D) -> Result<Self, FatError> {
        let size = disk.size()?;
        if size < 512 {
            return Err(FatError::Corrupt(format!(
                "a region of {size} bytes cannot hold a boot sector"
            )));
        }
        let mut sector0 = [0u8; 512];
        read_at(&mut disk, 0, &mut sector0)?;
        let geometry = BootSector::parse(&sector0, size)?.geometry;
        let mut fat = FatTable::load(&mut disk, &geometry)?;
        let mut fsinfo_sector = None;
        if let Some(sector) = geometry.fsinfo_sector {
            let mut buf = vec![0u8; geometry.bytes_per_sector as usize];
            read_at(&mut disk, geometry.sector_offset(sector), &mut buf)?;
            if let Some(info) = FsInfo::parse(&buf) {
                fat.set_next_free(info.next_free);
                fsinfo_sector = Some(sector);
            }
        }
        Ok(FatFs {
            disk,
            geometry,
            fat,
            fsinfo_sector,
            stale: false,
        })
    }

    /// The cluster size in bytes: the unit of allocation.
    pub fn cluster_size(&self) -> u32 {
        self.geometry.cluster_size()
    }

    /// Gives the disk back.
    pub fn into_inner(self) -> D {
        self.disk
    }

    /// Free space in bytes, counted from the FAT.
    pub fn free_bytes(&mut self) -> Result<u64, FatError> {
        self.guarded(|fs| Ok(u64::from(fs.fat.free_clusters()) * u64::from(fs.cluster_size())))
    }

    /// Reads the whole of a file.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FatError> {
        let mut out = Vec::new();
        self.copy_file_to(path, &mut out)?;
        Ok(out)
    }

    /// Streams a file into `out`; returns its size.
    pub fn copy_file_to(&mut self, path: &str, out: &mut dyn Write) -> Result<u64, FatError> {
        self.guarded(|fs| {
            let (entry, path) = fs.file_entry(path)?;
            let clusters = fs.file_clusters(&entry, &path)?;
            let size = u64::from(entry.size);
            let mut left = size;
            let mut buf = vec![0u8; IO_CHUNK.min(size as usize)];
            for (first, count) in runs(&clusters) {
                let mut offset = fs.geometry.cluster_offset(first);
                let mut run_left = (u64::from(count) * u64::from(fs.cluster_size())).min(left);
                while run_left > 0 {
                    let n = run_left.min(buf.len() as u64) as usize;
                    read_at(&mut fs.disk, offset, &mut buf[..n])?;
                    out.write_all(&buf[..n])?;
                    offset += n as u64;
                    run_left -= n as u64;
                    left -= n as u64;
                }
            }
            Ok(size)
        })
    }

    /// Whether `path` names a file or directory. A path through a file is
    /// simply absent; an invalid name is an error.
    pub fn exists(&mut self, path: &str) -> Result<bool, FatError> {
        let found = self.guarded(|fs| {
            let components = split_path(path)?;
            match components.split_last() {
                None => Ok(()),
                Some((name, parents)) => fs.find_item(parents, name).map(drop),
            }
        });
        match found {
            Ok(()) => Ok(true),
            Err(FatError::NotFound(_) | FatError::NotADirectory(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The files and directories in a directory, in on-disk order, without
    /// "." and "..". "" or "/" is the root.
    pub fn list_dir(&mut self, path: &str) -> Result<Vec<DirEntry>, FatError> {
        self.guarded(|fs| {
            let components = split_path(path)?;
            let dir = fs.dir_at(&components)?;
            Ok(dir
                .visible()
                .map(|(_, item)| DirEntry {
                    name: item.name.clone(),
                    is_dir: item.short.is_dir(),
                    size: if item.short.is_dir() {
                        0
                    } else {
                        u64::from(item.short.size)
                    },
                })
                .collect())
        })
    }

    /// Creates a directory and any missing parents; existing directories
    /// are fine, an existing file in the way is [`FatError::NotADirectory`].
    pub fn create_dir_all(&mut self, path: &str) -> Result<(), FatError> {
        self.guarded(|fs| {
            let components = split_path(path)?;
            for depth in 1..=components.len() {
                let (name, parents) = components[..depth].split_last().expect("depth >= 1");
                match fs.find_item(parents, name) {
                    Ok(found) if found.dir.items[found.index].short.is_dir() => {}
                    Ok(found) => return Err(FatError::NotADirectory(found.path)),
                    Err(FatError::NotFound(_)) => fs.create(parents, name, Contents::Directory)?,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// Creates a file of `len` bytes read from `data`; the parent directory
    /// must exist. [`FatError::AlreadyExists`] if the name is taken;
    /// [`FatError::NoSpace`] before anything is written if it does not fit.
    pub fn create_file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        len: u64,
    ) -> Result<(), FatError> {
        self.guarded(|fs| {
            let components = split_path(path)?;
            let Some((name, parents)) = components.split_last() else {
                return Err(FatError::AlreadyExists("/".into()));
            };
            fs.create(parents, name, Contents::File { data, len })
        })
    }

    /// Creates a file from a byte slice; see [`FatFs::create_file`].
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), FatError> {
        self.create_file(path, &mut &data[..], data.len() as u64)
    }

    /// Replaces the contents of a file with `data` of the same length, in
    /// place: the clusters are rewritten, the directory entry is untouched.
    /// A file of at most one sector is replaced atomically.
    pub fn overwrite_file(&mut self, path: &str, data: &[u8]) -> Result<(), FatError> {
        self.guarded(|fs| {
            let (entry, path) = fs.file_entry(path)?;
            if u64::from(entry.size) != data.len() as u64 {
                return Err(FatError::SizeMismatch {
                    path,
                    file: entry.size.into(),
                    data: data.len() as u64,
                });
            }
            let clusters = fs.file_clusters(&entry, &path)?;
            let bps = fs.geometry.bytes_per_sector as usize;
            let cluster_size = fs.cluster_size() as usize;
            let mut written = 0;
            for (first, count) in runs(&clusters) {
                let mut offset = fs.geometry.cluster_offset(first);
                let run_end = (written + count as usize * cluster_size).min(data.len());
                while written < run_end {
                    let n = (run_end - written).min(IO_CHUNK);
                    // Whole sectors only: the tail of the last one is slack
                    // past the end of the file.
                    let mut buf = data[written..written + n].to_vec();
                    buf.resize(n.next_multiple_of(bps), 0);
                    write_at(&mut fs.disk, offset, &buf)?;
                    offset += n as u64;
                    written += n;
                }
            }
            fs.disk.sync()?;
            debug!(path, len = data.len(), "overwrote file in place");
            Ok(())
        })
    }

    /// Renames within one directory; [`FatError::AlreadyExists`] if `to`
    /// names another entry. A change of case only is allowed.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), FatError> {
        self.guarded(|fs| {
            let from_components = split_path(from)?;
            let to_components = split_path(to)?;
            let (Some((from_name, from_parents)), Some((to_name, to_parents))) =
                (from_components.split_last(), to_components.split_last())
            else {
                return Err(FatError::InvalidName(
                    "the root directory cannot be renamed".into(),
                ));
            };
            let Found {
                mut dir,
                index,
                path: from_path,
            } = fs.find_item(from_parents, from_name)?;
            let to_path = join(&to_components);
            if fs.dir_at(to_parents)?.first_cluster != dir.first_cluster {
                return Err(FatError::InvalidName(format!(
                    "{to_path}: rename moves only within a directory, and {from_path} is elsewhere"
                )));
            }
            match dir.find(to_name) {
                Some(other) if other != index => return Err(FatError::AlreadyExists(to_path)),
                Some(_) if dir.items[index].name == *to_name => return Ok(()),
                _ => {}
            }
            let item = dir.items[index].clone();
            let units: Vec<u16> = to_name.encode_utf16().collect();
            fs.check_name_fits_sector(&units, &to_path)?;
            if !fs.rename_within_sector(&mut dir, &item, &units)? {
                fs.rename_by_new_set(&mut dir, &item, to_name, &units, &to_path)?;
            }
            debug!(from = from_path, to = to_path, "renamed");
            Ok(())
        })
    }

    /// Removes a file or an empty directory.
    ///
    /// The clusters are freed unless another entry of the same directory
    /// starts at the same cluster (an interrupted rename left both names);
    /// if the chain is corrupt they stay allocated, with a warning, until
    /// [`FatFs::reclaim_lost_clusters`].
    pub fn remove(&mut self, path: &str) -> Result<(), FatError> {
        self.guarded(|fs| {
            let components = split_path(path)?;
            let Some((name, parents)) = components.split_last() else {
                return Err(FatError::InvalidName(
                    "the root directory cannot be removed".into(),
                ));
            };
            let Found {
                mut dir,
                index,
                path,
            } = fs.find_item(parents, name)?;
            let item = dir.items[index].clone();
            if item.short.is_dir()
                && fs
                    .read_subdir(&item.short, path.clone())?
                    .visible()
                    .next()
                    .is_some()
            {
                return Err(FatError::DirectoryNotEmpty(path));
            }
            let first = item.short.first_cluster;
            let shared = dir
                .items
                .iter()
                .enumerate()
                .any(|(i, other)| i != index && other.short.first_cluster == first);
            // Decided before anything is written: which clusters to free.
            let chain = if first == 0 || shared {
                Vec::new()
            } else {
                fs.fat.chain(first, None, &path).unwrap_or_else(|e| {
                    warn!("{e}: its clusters stay allocated until lost clusters are reclaimed");
                    Vec::new()
                })
            };
            fs.delete_set(&mut dir, &item)?;
            if !chain.is_empty() {
                for &cluster in &chain {
                    fs.fat.set(cluster, FREE);
                }
                fs.fat.flush(&mut fs.disk, &fs.geometry)?;
                // The freed chain is on disk before the FSInfo count says so.
                fs.disk.sync()?;
                fs.commit_fsinfo()?;
            }
            debug!(path, shared, "removed");
            Ok(())
        })
    }

    /// Frees every allocated cluster that no directory entry reaches (left
    /// by a power cut in the middle of a create or remove), makes all FAT
    /// copies identical and the FSInfo count exact. Returns the bytes freed.
    pub fn reclaim_lost_clusters(&mut self) -> Result<u64, FatError> {
        self.guarded(|fs| {
            let reached = fs.reachable_clusters()?;
            let lost: Vec<u32> = fs
                .fat
                .allocated()
                .filter(|&c| !reached.contains(c))
                .collect();
            for &cluster in &lost {
                fs.fat.set(cluster, FREE);
            }
            fs.fat.mark_differing_copies(&mut fs.disk, &fs.geometry)?;
            fs.fat.flush(&mut fs.disk, &fs.geometry)?;
            // The FAT is settled before FSInfo counts it.
            fs.disk.sync()?;
            fs.commit_fsinfo()?;
            let bytes = lost.len() as u64 * u64::from(fs.cluster_size());
            if !lost.is_empty() {
                info!(
                    clusters = lost.len(),
                    bytes, "reclaimed lost clusters on the FAT volume"
                );
            }
            Ok(bytes)
        })
    }

    /// Runs `op`; after an I/O error the in-memory FAT may be ahead of the
    /// disk, so it is read again before the next operation.
    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, FatError>,
    ) -> Result<T, FatError> {
        if self.stale {
            let hint = self.fat.next_free();
            self.fat = FatTable::load(&mut self.disk, &self.geometry)?;
            self.fat.set_next_free(hint);
            self.stale = false;
        }
        let result = op(self);
        if matches!(result, Err(FatError::Io(_))) {
            self.stale = true;
        }
        result
    }

    fn read_dir(&mut self, path: String, first_cluster: u32) -> Result<Dir, FatError> {
        let owner = if path == "/" {
            "the root directory".to_string()
        } else {
            format!("directory {path}")
        };
        let clusters = self.fat.chain(first_cluster, None, &owner)?;
        let cluster_size = self.cluster_size() as usize;
        if clusters.len() * cluster_size > MAX_DIR_SLOTS * ENTRY_SIZE {
            return Err(FatError::Corrupt(format!(
                "{owner} has {} clusters, more than 65536 entries",
                clusters.len()
            )));
        }
        let mut bytes = vec![0u8; clusters.len() * cluster_size];
        let mut at = 0;
        for (first, count) in runs(&clusters) {
            let len = count as usize * cluster_size;
            read_at(
                &mut self.disk,
                self.geometry.cluster_offset(first),
                &mut bytes[at..at + len],
            )?;
            at += len;
        }
        let listing = parse_directory(&bytes);
        Ok(Dir {
            path,
            first_cluster,
            clusters,
            bytes,
            items: listing.items,
            end: listing.end,
        })
    }

    fn read_subdir(&mut self, entry: &ShortEntry, path: String) -> Result<Dir, FatError> {
        if !entry.is_dir() {
            return Err(FatError::NotADirectory(path));
        }
        if entry.first_cluster == 0 {
            return Err(FatError::Corrupt(format!(
                "directory {path} has no cluster"
            )));
        }
        self.read_dir(path, entry.first_cluster)
    }

    /// The directory at `components` (empty: the root).
    pub(super) fn dir_at(&mut self, components: &[&str]) -> Result<Dir, FatError> {
        let mut dir = self.read_dir("/".into(), self.geometry.root_cluster)?;
        for depth in 0..components.len() {
            let path = join(&components[..=depth]);
            let index = dir
                .find(components[depth])
                .ok_or_else(|| FatError::NotFound(path.clone()))?;
            let entry = dir.items[index].short.clone();
            dir = self.read_subdir(&entry, path)?;
        }
        Ok(dir)
    }

    fn find_item(&mut self, parents: &[&str], name: &str) -> Result<Found, FatError> {
        let dir = self.dir_at(parents)?;
        let path = join(&[parents, &[name]].concat());
        match dir.find(name) {
            Some(index) => Ok(Found { dir, index, path }),
            None => Err(FatError::NotFound(path)),
        }
    }

    /// The short entry of the file at `path`, and the path normalised.
    fn file_entry(&mut self, path: &str) -> Result<(ShortEntry, String), FatError> {
        let components = split_path(path)?;
        let Some((name, parents)) = components.split_last() else {
            return Err(FatError::IsADirectory("/".into()));
        };
        let Found { dir, index, path } = self.find_item(parents, name)?;
        let entry = dir.items[index].short.clone();
        if entry.is_dir() {
            return Err(FatError::IsADirectory(path));
        }
        Ok((entry, path))
    }

    /// The clusters that hold a file's bytes, checked against its size.
    fn file_clusters(&self, entry: &ShortEntry, path: &str) -> Result<Vec<u32>, FatError> {
        if entry.size == 0 {
            return Ok(Vec::new());
        }
        if entry.first_cluster == 0 {
            return Err(FatError::Corrupt(format!(
                "{path} holds {} bytes but no cluster",
                entry.size
            )));
        }
        let needed = u64::from(entry.size).div_ceil(u64::from(self.cluster_size())) as usize;
        let chain = self.fat.chain(entry.first_cluster, Some(needed), path)?;
        if chain.len() < needed {
            return Err(FatError::Corrupt(format!(
                "{path} holds {} bytes but its cluster chain ends after {} of {needed} clusters",
                entry.size,
                chain.len()
            )));
        }
        Ok(chain)
    }

    pub(super) fn slots_per_sector(&self) -> usize {
        self.geometry.bytes_per_sector as usize / ENTRY_SIZE
    }

    /// Refuses a name whose entry set could not fit in one sector.
    fn check_name_fits_sector(&self, units: &[u16], path: &str) -> Result<(), FatError> {
        let max_units = (self.slots_per_sector() - 1) * UNITS_PER_LONG_ENTRY;
        if units.len() > max_units {
            return Err(FatError::InvalidName(format!(
                "{path}: {} UTF-16 units; at most {max_units} fit in one {}-byte sector with the short entry",
                units.len(),
                self.geometry.bytes_per_sector
            )));
        }
        Ok(())
    }

    /// The first run of `count` free slots within one sector, else the start
    /// of a cluster to append.
    pub(super) fn place(&self, dir: &Dir, count: usize) -> Result<Placement, FatError> {
        let per_sector = self.slots_per_sector();
        for sector_start in (0..dir.slot_count()).step_by(per_sector) {
            let mut run = 0;
            for slot in sector_start..sector_start + per_sector {
                run = if dir.is_free(slot) { run + 1 } else { 0 };
                if run == count {
                    return Ok(Placement {
                        slot: slot + 1 - count,
                        grows: false,
                    });
                }
            }
        }
        if dir.slot_count() + self.cluster_size() as usize / ENTRY_SIZE > MAX_DIR_SLOTS {
            return Err(FatError::DirectoryFull(dir.path.clone()));
        }
        Ok(Placement {
            slot: dir.slot_count(),
            grows: true,
        })
    }

    /// Fails with NoSpace unless `clusters` clusters are free.
    fn check_space(&self, clusters: u64, path: &str) -> Result<(), FatError> {
        let free = u64::from(self.fat.free_clusters());
        if clusters > free {
            let cluster_size = u64::from(self.cluster_size());
            return Err(FatError::NoSpace {
                path: path.to_string(),
                needed: clusters * cluster_size,
                free: free * cluster_size,
            });
        }
        Ok(())
    }

    fn allocate(&self, count: u64) -> Result<Vec<u32>, FatError> {
        self.fat.find_free(count as u32).ok_or_else(|| {
            FatError::Corrupt("the FAT has fewer free clusters than it counts".into())
        })
    }

    fn create(
        &mut self,
        parents: &[&str],
        name: &str,
        contents: Contents<'_>,
    ) -> Result<(), FatError> {
        let path = join(&[parents, &[name]].concat());
        let mut dir = self.dir_at(parents)?;
        if dir.find(name).is_some() {
            return Err(FatError::AlreadyExists(path));
        }
        let units: Vec<u16> = name.encode_utf16().collect();
        self.check_name_fits_sector(&units, &path)?;
        let short = unique_short_name(name, &dir.short_names())
            .ok_or_else(|| FatError::DirectoryFull(dir.path.clone()))?;
        let mut set = encode_long_name(&units, lfn_checksum(&short));
        let placement = self.place(&dir, set.len() + 1)?;
        let cluster_size = u64::from(self.cluster_size());
        let (content_clusters, size) = match &contents {
            Contents::File { len, .. } => {
                let size = u32::try_from(*len).map_err(|_| FatError::FileTooLarge {
                    path: path.clone(),
                    len: *len,
                })?;
                (len.div_ceil(cluster_size), size)
            }
            Contents::Directory => (1, 0),
        };
        self.check_space(content_clusters + u64::from(placement.grows), &path)?;
        let mut clusters = self.allocate(content_clusters + u64::from(placement.grows))?;
        if placement.grows {
            let cluster = clusters.pop().expect("allocated one for the directory");
            self.grow_dir(&mut dir, cluster)?;
        }
        let first_cluster = clusters.first().copied().unwrap_or(0);
        let now = Timestamp::now();
        let attr = match contents {
            Contents::File { data, len } => {
                self.write_contents(&clusters, data, len, &path)?;
                ATTR_ARCHIVE
            }
            Contents::Directory => {
                // ".." of a child of the root is 0 (fatgen103).
                let parent = if dir.first_cluster == self.geometry.root_cluster {
                    0
                } else {
                    dir.first_cluster
                };
                let mut cluster = vec![0u8; cluster_size as usize];
                cluster[..ENTRY_SIZE].copy_from_slice(&dot_entry(
                    b".          ",
                    first_cluster,
                    now,
                ));
                cluster[ENTRY_SIZE..2 * ENTRY_SIZE].copy_from_slice(&dot_entry(
                    b"..         ",
                    parent,
                    now,
                ));
                write_at(
                    &mut self.disk,
                    self.geometry.cluster_offset(first_cluster),
                    &cluster,
                )?;
                ATTR_DIRECTORY
            }
        };
        if !clusters.is_empty() {
            // The contents are on disk before the FAT links them.
            self.disk.sync()?;
            self.fat.link(&clusters);
            self.fat.flush(&mut self.disk, &self.geometry)?;
            // The chain is on disk before an entry points at it.
            self.disk.sync()?;
        }
        set.push(ShortEntry::new(short, attr, first_cluster, size, now).to_bytes());
        self.write_set(&mut dir, placement.slot, &set)?;
        self.commit_fsinfo()?;
        debug!(path, size, "created");
        Ok(())
    }

    /// Writes `len` bytes from `data` into `clusters`, the last cluster
    /// padded with zeros. No sync: the caller orders it before the FAT.
    fn write_contents(
        &mut self,
        clusters: &[u32],
        data: &mut dyn Read,
        len: u64,
        path: &str,
    ) -> Result<(), FatError> {
        let cluster_size = self.cluster_size() as usize;
        let mut buf = vec![0u8; IO_CHUNK.min(clusters.len() * cluster_size)];
        let mut done = 0u64;
        for (first, count) in runs(clusters) {
            let mut offset = self.geometry.cluster_offset(first);
            let mut run_left = count as usize * cluster_size;
            while run_left > 0 {
                let n = run_left.min(buf.len());
                let take = (len - done).min(n as u64) as usize;
                data.read_exact(&mut buf[..take])
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => FatError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{path}: the data ended before the promised {len} bytes"),
                        )),
                        _ => FatError::Io(e),
                    })?;
                buf[take..n].fill(0);
                write_at(&mut self.disk, offset, &buf[..n])?;
                offset += n as u64;
                run_left -= n;
                done += take as u64;
            }
        }
        Ok(())
    }

    /// Appends `cluster` to a directory.
    fn grow_dir(&mut self, dir: &mut Dir, cluster: u32) -> Result<(), FatError> {
        let zeros = vec![0u8; self.cluster_size() as usize];
        write_at(
            &mut self.disk,
            self.geometry.cluster_offset(cluster),
            &zeros,
        )?;
        self.fat.set(cluster, END_OF_CHAIN);
        self.fat.flush(&mut self.disk, &self.geometry)?;
        // Zeroed and ending a chain before it is linked: the link is in the
        // FAT sector of the directory's last cluster, which may be another
        // sector than the new cluster's, and written first it would lead
        // into a free cluster of stale bytes.
        self.disk.sync()?;
        self.fat.set(
            *dir.clusters.last().expect("a directory has a cluster"),
            cluster,
        );
        self.fat.flush(&mut self.disk, &self.geometry)?;
        // Linked before an entry lands in it.
        self.disk.sync()?;
        dir.clusters.push(cluster);
        dir.bytes.extend_from_slice(&zeros);
        Ok(())
    }

    /// Disk offset of sector `sector` of a directory's slots.
    fn dir_sector_offset(&self, dir: &Dir, sector: usize) -> u64 {
        let spc = self.geometry.sectors_per_cluster as usize;
        let within = (sector % spc) as u64 * u64::from(self.geometry.bytes_per_sector);
        self.geometry.cluster_offset(dir.clusters[sector / spc]) + within
    }

    pub(super) fn write_dir_sectors(
        &mut self,
        dir: &Dir,
        sectors: Range<usize>,
    ) -> Result<(), FatError> {
        let bps = self.geometry.bytes_per_sector as usize;
        for sector in sectors {
            let offset = self.dir_sector_offset(dir, sector);
            write_at(
                &mut self.disk,
                offset,
                &dir.bytes[sector * bps..(sector + 1) * bps],
            )?;
        }
        Ok(())
    }

    /// Writes an entry set at slot `at`, all within one sector: the commit
    /// point of a create or of a rename by a new set.
    pub(super) fn write_set(
        &mut self,
        dir: &mut Dir,
        at: usize,
        set: &[RawEntry],
    ) -> Result<(), FatError> {
        let per_sector = self.slots_per_sector();
        let sector = at / per_sector;
        debug_assert_eq!(
            (at + set.len() - 1) / per_sector,
            sector,
            "an entry set never straddles sectors"
        );
        // Readers stop at the first never-used slot (fatgen103; GRUB does),
        // so never-used slots before the set become deleted ones. Slots
        // after it stay never-used: every FAT driver zeroes the clusters it
        // adds to a directory.
        let first_hiding = dir.end / per_sector;
        for slot in dir.end..at {
            dir.set_slot(slot, &DELETED_SLOT);
        }
        if dir.end < at && first_hiding < sector {
            self.write_dir_sectors(dir, first_hiding..sector)?;
            // On disk before the set they would otherwise hide.
            self.disk.sync()?;
        }
        for (i, raw) in set.iter().enumerate() {
            dir.set_slot(at + i, raw);
        }
        dir.end = dir.end.max(at + set.len());
        self.write_dir_sectors(dir, sector..sector + 1)?;
        // The one-sector commit.
        self.disk.sync()?;
        Ok(())
    }

    /// Marks an item's slots deleted. The short entry's sector goes first:
    /// it is what makes the name disappear. Long entries of a foreign set
    /// in an earlier sector are orphans until their sector follows, and
    /// every reader skips orphans.
    fn delete_set(&mut self, dir: &mut Dir, item: &DirItem) -> Result<(), FatError> {
        for slot in item.first_slot..=item.short_slot {
            dir.bytes[slot * ENTRY_SIZE] = DELETED;
        }
        let per_sector = self.slots_per_sector();
        let (first_sector, short_sector) =
            (item.first_slot / per_sector, item.short_slot / per_sector);
        self.write_dir_sectors(dir, short_sector..short_sector + 1)?;
        self.disk.sync()?;
        if first_sector < short_sector {
            self.write_dir_sectors(dir, first_sector..short_sector)?;
            self.disk.sync()?;
        }
        Ok(())
    }

    /// Rename by rewriting the set's own sector once, keeping the short
    /// entry byte for byte (so the long entries' checksum stays right): over
    /// the old set's tail if the new name needs no more slots, else wherever
    /// the sector has room. False if the sector cannot take it.
    fn rename_within_sector(
        &mut self,
        dir: &mut Dir,
        item: &DirItem,
        units: &[u16],
    ) -> Result<bool, FatError> {
        let per_sector = self.slots_per_sector();
        let sector = item.short_slot / per_sector;
        if item.first_slot / per_sector != sector {
            return Ok(false);
        }
        let mut set = encode_long_name(units, lfn_checksum(&item.short.name));
        set.push(dir.slot(item.short_slot));
        let old = item.first_slot..item.short_slot + 1;
        let at = if set.len() <= old.len() {
            Some(old.end - set.len())
        } else {
            let usable = |slot: usize| dir.is_free(slot) || old.contains(&slot);
            let slots = sector * per_sector..(sector + 1) * per_sector;
            slots.clone().find(|&start| {
                start + set.len() <= slots.end && (start..start + set.len()).all(usable)
            })
        };
        let Some(at) = at else {
            return Ok(false);
        };
        for slot in old {
            dir.set_slot(slot, &DELETED_SLOT);
        }
        // The old set is in this sector, so the directory's end is past its
        // start: never-used slots before `at` are in this sector too.
        for slot in dir.end..at {
            dir.set_slot(slot, &DELETED_SLOT);
        }
        for (i, raw) in set.iter().enumerate() {
            dir.set_slot(at + i, raw);
        }
        dir.end = dir.end.max(at + set.len());
        self.write_dir_sectors(dir, sector..sector + 1)?;
        // The one-sector commit.
        self.disk.sync()?;
        Ok(true)
    }

    /// Rename by writing a complete new set (fresh short name, same
    /// clusters) and then deleting the old one. A cut in between leaves both
    /// names; see the module docs.
    fn rename_by_new_set(
        &mut self,
        dir: &mut Dir,
        item: &DirItem,
        name: &str,
        units: &[u16],
        path: &str,
    ) -> Result<(), FatError> {
        let short = unique_short_name(name, &dir.short_names())
            .ok_or_else(|| FatError::DirectoryFull(dir.path.clone()))?;
        let mut entry = item.short.clone();
        entry.name = short;
        entry.nt_res = 0;
        let mut set = encode_long_name(units, lfn_checksum(&short));
        set.push(entry.to_bytes());
        let placement = self.place(dir, set.len())?;
        if placement.grows {
            self.check_space(1, path)?;
            let cluster = self.allocate(1)?[0];
            self.grow_dir(dir, cluster)?;
        }
        self.write_set(dir, placement.slot, &set)?;
        self.delete_set(dir, item)?;
        if placement.grows {
            self.commit_fsinfo()?;
        }
        Ok(())
    }

    /// Brings FSInfo up to date and syncs, if it changed.
    fn commit_fsinfo(&mut self) -> Result<(), FatError> {
        let Some(sector) = self.fsinfo_sector else {
            return Ok(());
        };
        let offset = self.geometry.sector_offset(sector);
        let mut buf = vec![0u8; self.geometry.bytes_per_sector as usize];
        read_at(&mut self.disk, offset, &mut buf)?;
        let info = FsInfo {
            free_count: self.fat.free_clusters(),
            next_free: self.fat.next_free(),
        };
        if FsInfo::parse(&buf) != Some(info) {
            info.write_into(&mut buf);
            write_at(&mut self.disk, offset, &buf)?;
            self.disk.sync()?;
        }
        Ok(())
    }

    /// Every cluster that a directory entry reaches, the root's included.
    fn reachable_clusters(&mut self) -> Result<ClusterSet, FatError> {
        let mut reached = ClusterSet::new(self.geometry.cluster_count());
        let root = self.geometry.root_cluster;
        for cluster in self.fat.chain(root, None, "the root directory")? {
            reached.insert(cluster);
        }
        let mut pending = vec![("/".to_string(), root)];
        while let Some((path, first_cluster)) = pending.pop() {
            let dir = self.read_dir(path, first_cluster)?;
            for (_, item) in dir.visible() {
                let first = item.short.first_cluster;
                // Already walked: the second name of an interrupted rename,
                // or a chain that another entry reaches too.
                if first == 0 || reached.contains(first) {
                    continue;
                }
                let child = dir.child_path(&item.name);
                let owner = if item.short.is_dir() {
                    format!("directory {child}")
                } else {
                    child.clone()
                };
                for cluster in self.fat.chain(first, None, &owner)? {
                    reached.insert(cluster);
                }
                if item.short.is_dir() {
                    pending.push((child, first));
                }
            }
        }
        Ok(reached)
    }
}
