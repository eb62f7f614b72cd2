//! What both backends do with a slot's files on the ESP: kernel, initrd,
//! the signed meta and its signatures, and the slot file, written in that
//! order and checked, removed in the reverse order; and the room check
//! before any of it.

use std::io::{self, Read};

use tracing::{debug, info, warn};

use super::{esp, BootError, BootFiles, SignedFiles, SlotInfo};
use crate::digest::{Digest, Expected, Hashing, Verified, VerifyingReader};
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
fn slot_files(slot: Slot) -> [String; 5] {
    [
        esp::slot_info(slot),
        esp::slot_meta(slot),
        esp::slot_signatures(slot),
        esp::kernel(slot),
        esp::initrd(slot),
    ]
}

/// Removes the slot file, then the signed meta, the kernel and initrd: once
/// the slot file is gone the slot no longer claims complete boot files.
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

/// Small files a slot keeps besides its kernel and initrd: the slot file and
/// the signed meta with its signatures.
pub(super) const SLOT_SMALL_FILES: u64 = 3;

/// Fails with [`BootError::NoRoom`] unless the ESP can take the slot's
/// kernel and initrd and its small files (`small_files` of them: the
/// [`SLOT_SMALL_FILES`] and the bootloader's marker), counting the space
/// its current files will free. Clusters leaked by earlier power cuts are reclaimed first.
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

/// Proof that a slot's kernel, initrd and slot file are on the ESP, each
/// checked: what the GRUB backend's marker needs before it is written.
pub(super) struct SlotFilesWritten(());

/// Writes the slot's kernel and initrd, each checked against what it must
/// be ([`VerifyingReader::finish`]) and read back; the signed meta and its
/// signatures; and last the slot file, which only proven kernel and initrd
/// get. Leftovers of an interrupted earlier attempt are removed first, and
/// so is what was written when a check fails. The caller writes the
/// bootloader's marker after this.
pub(super) fn write_slot_files<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
    files: BootFiles<'_>,
) -> Result<SlotFilesWritten, BootError> {
    let BootFiles {
        info,
        kernel,
        initrd,
        signed,
    } = files;
    let info_file = info.to_file(slot)?;
    remove_slot_files(fs, slot)?;
    fs.create_dir_all(&esp::slot_dir(slot))?;
    let written = write_checked_files(fs, slot, kernel, initrd, signed.as_ref())
        .and_then(|(kernel, initrd)| write_slot_info(fs, slot, &info_file, &kernel, &initrd));
    if written.is_err() {
        // Nothing claims these files (no slot file), but they take room.
        if let Err(e) = remove_slot_files(fs, slot) {
            warn!(%slot, "removing the boot files that were refused: {e}");
        }
    }
    written?;
    info!(%slot, version = info.version, "wrote boot files");
    Ok(SlotFilesWritten(()))
}

/// The kernel, the initrd and the signed meta, each checked; the proofs of
/// the kernel and initrd.
fn write_checked_files<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
    kernel: VerifyingReader<&mut dyn Read>,
    initrd: VerifyingReader<&mut dyn Read>,
    signed: Option<&SignedFiles>,
) -> Result<(Verified, Verified), BootError> {
    let kernel = write_verified(fs, &esp::kernel(slot), kernel)?;
    let initrd = write_verified(fs, &esp::initrd(slot), initrd)?;
    if let Some(signed) = signed {
        write_bytes(fs, &esp::slot_meta(slot), &signed.meta)?;
        write_bytes(fs, &esp::slot_signatures(slot), &signed.signatures)?;
    }
    Ok((kernel, initrd))
}

/// The slot file: written only with the proofs that the kernel and initrd
/// it makes bootable are what they must be.
fn write_slot_info<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
    info_file: &[u8],
    _kernel: &Verified,
    _initrd: &Verified,
) -> Result<(), BootError> {
    write_bytes(fs, &esp::slot_info(slot), info_file)?;
    Ok(())
}

/// The bootloader's marker of a slot whose files are written.
pub(super) fn write_marker<D: Disk>(
    fs: &mut FatFs<D>,
    path: &str,
    bytes: &[u8],
    _files: SlotFilesWritten,
) -> Result<(), BootError> {
    fs.write_file(path, bytes)?;
    Ok(())
}

/// Creates `path` from `bytes`, checked like [`write_verified`].
fn write_bytes<D: Disk>(
    fs: &mut FatFs<D>,
    path: &str,
    bytes: &[u8],
) -> Result<Verified, BootError> {
    let expected = Expected::new(path, bytes.len() as u64, Digest::of(bytes));
    write_verified(fs, path, VerifyingReader::new(&mut &bytes[..], expected))
}

/// Creates `path` from `source`, then checks that what came through is what
/// was expected ([`VerifyingReader::finish`]: exactly the bytes written
/// were hashed) and that the file reads back with the same SHA-256.
fn write_verified<D: Disk>(
    fs: &mut FatFs<D>,
    path: &str,
    mut source: VerifyingReader<&mut dyn Read>,
) -> Result<Verified, BootError> {
    let len = source.expected().len;
    fs.create_file(path, &mut source, len)?;
    let verified = source.finish()?;
    let mut written = Hashing::new(io::sink());
    fs.copy_file_to(path, &mut written)?;
    if written.digest() != verified.sha256() || written.len() != len {
        return Err(BootError::Verify {
            path: path.to_owned(),
        });
    }
    Ok(verified)
}
