//! What both backends do with a slot's files on the ESP: kernel, initrd and
//! slot file, written in that order and checked, removed in the reverse
//! order; and the room check before any of it.

use std::io::{self, Read};

use tracing::{debug, info};

use super::{esp, BootError, BootFiles, SlotInfo};
use crate::digest::Hashing;
use crate::disk::Disk;
use crate::fat::{FatError, FatFs};
use crate::slot::Slot;

/// Removes `path` if it exists; whether it did.
pub(super) fn remove_if_exists<D: Disk>(fs: &mut FatFs<D>, path: &str) -> Result<bool, BootError> {
    match fs.remove(path) {
        Ok(()) => Ok(true),
        Err(FatError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The slot's version, from its slot file; `None` if it has none.
pub(super) fn read_info<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
) -> Result<Option<SlotInfo>, BootError> {
    let path = esp::slot_info(slot);
    let bytes = match fs.read_file(&path) {
        Ok(bytes) => bytes,
        Err(FatError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    SlotInfo::from_file(&bytes, slot)
        .map(Some)
        .map_err(|e| BootError::Corrupt {
            path,
            reason: e.to_string(),
        })
}

/// The slot's files that [`remove_slot_files`] removes, slot file first.
fn slot_files(slot: Slot) -> [String; 3] {
    [esp::slot_info(slot), esp::kernel(slot), esp::initrd(slot)]
}

/// Removes the slot file, then the kernel and initrd: once the slot file is
/// gone the slot no longer claims complete boot files.
pub(super) fn remove_slot_files<D: Disk>(fs: &mut FatFs<D>, slot: Slot) -> Result<(), BootError> {
    for path in slot_files(slot) {
        if remove_if_exists(fs, &path)? {
            debug!(path, "removed");
        }
    }
    Ok(())
}

/// Bytes a file of `len` bytes takes on the volume.
fn allocated(len: u64, cluster: u64) -> u64 {
    len.div_ceil(cluster) * cluster
}

/// Fails with [`BootError::NoRoom`] unless the ESP can take the slot's
/// kernel and initrd and its small files (`small_files` of them: the slot
/// file and the bootloader's marker), counting the space its current files
/// will free. Clusters leaked by earlier power cuts are reclaimed first.
pub(super) fn check_room<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
    kernel_len: u64,
    initrd_len: u64,
    replaced: &[String],
    small_files: u64,
) -> Result<(), BootError> {
    let reclaimed = fs.reclaim_lost_clusters()?;
    if reclaimed > 0 {
        info!(reclaimed, "freed clusters lost in earlier power cuts");
    }
    let cluster = u64::from(fs.cluster_size());
    let mut freed = 0;
    for path in slot_files(slot).iter().chain(replaced) {
        if let Some(size) = file_size(fs, path)? {
            freed += allocated(size, cluster);
        }
    }
    // One more cluster in case the slot's directory has to grow.
    let needed = allocated(kernel_len, cluster)
        + allocated(initrd_len, cluster)
        + (small_files + 1) * cluster;
    let free = fs.free_bytes()? + freed;
    if needed > free {
        return Err(BootError::NoRoom { slot, needed, free });
    }
    Ok(())
}

fn file_size<D: Disk>(fs: &mut FatFs<D>, path: &str) -> Result<Option<u64>, BootError> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    match fs.list_dir(dir) {
        Ok(entries) => Ok(entries
            .into_iter()
            .find(|e| !e.is_dir && e.name.eq_ignore_ascii_case(name))
            .map(|e| e.size)),
        Err(FatError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the slot's kernel, initrd and then its slot file, each read back
/// and compared. Leftovers of an interrupted earlier attempt are removed
/// first. The caller writes the bootloader's marker after this.
pub(super) fn write_slot_files<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
    files: &mut BootFiles<'_>,
) -> Result<(), BootError> {
    let info_file = files.info.to_file(slot)?;
    remove_slot_files(fs, slot)?;
    fs.create_dir_all(&esp::slot_dir(slot))?;
    write_verified(fs, &esp::kernel(slot), files.kernel, files.kernel_len)?;
    write_verified(fs, &esp::initrd(slot), files.initrd, files.initrd_len)?;
    write_verified(
        fs,
        &esp::slot_info(slot),
        &mut &info_file[..],
        info_file.len() as u64,
    )?;
    info!(%slot, version = files.info.version, "wrote boot files");
    Ok(())
}

/// Creates `path` from `data` and checks that it reads back with the same
/// SHA-256 as what was read from `data`.
fn write_verified<D: Disk>(
    fs: &mut FatFs<D>,
    path: &str,
    data: &mut dyn Read,
    len: u64,
) -> Result<(), BootError> {
    let mut source = Hashing::new(data);
    fs.create_file(path, &mut source, len)?;
    let mut written = Hashing::new(io::sink());
    fs.copy_file_to(path, &mut written)?;
    if source.digest() != written.digest() {
        return Err(BootError::Verify {
            path: path.to_owned(),
        });
    }
    Ok(())
}
