//! Whether an ESP of the size asked for can take what will go on it, found
//! by doing it in memory before anything is written: FAT32 formatted by
//! [`abnix_formats::fat`] (which refuses a region below its minimum for the sector
//! size), the bootloader's files, slot A's boot files as the installer
//! writes them, then boot control's own check for slot B's beside them
//! ([`BootControl::check_boot_files`], the rule the updater applies before
//! it writes).
//!
//! Two slots, not one: an update writes the new version's boot files next
//! to those of the running slot, which stays bootable as the fallback. An
//! ESP that holds only one slot's files would install and boot, then refuse
//! every update. What is checked is two slots of this version's sizes; a
//! later version with larger boot files is checked by the updater before it
//! writes anything.
//!
//! The kernel and initrd written are zeros of their sizes, on a disk that
//! keeps no page of zeros: the check costs hashing them, not memory.

use std::collections::hash_map::{Entry, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};

use tracing::debug;
use tracing::subscriber::NoSubscriber;

use super::{BootPayload, ESP_LABEL};
use abnix_core::boot::{BootError, BootFiles, SlotInfo};
use abnix_formats::digest::{Digest, Expected, Hashing, VerifyingReader};
use abnix_formats::disk::{seek_position, Disk};
use abnix_formats::fat::{FatError, FormatOptions};
use abnix_formats::layout::MIB;
use abnix_formats::meta::SignedMeta;
use abnix_formats::slot::Slot;

/// What goes on the ESP besides the bootloader, per slot.
pub(super) struct SlotFiles<'a> {
    pub(crate) signed: &'a SignedMeta,
    pub(crate) kernel_len: u64,
    pub(crate) initrd_len: u64,
}

/// The size of ESP needed for `files` in two slots with `boot` on
/// `sector_size`-byte sectors: `size` if it fits, else the smallest whole
/// number of MiB that does.
pub(super) fn needed_size(
    size: u64,
    sector_size: u32,
    boot: &BootPayload,
    files: &SlotFiles,
) -> Result<u64, BootError> {
    let zeros = Zeros {
        kernel: Expected::new("kernel", files.kernel_len, zeros_digest(files.kernel_len)),
        initrd: Expected::new("initrd", files.initrd_len, zeros_digest(files.initrd_len)),
    };
    // Quietly: what the bootloader backends log here does not happen.
    let quiet_try = |size| {
        tracing::subscriber::with_default(NoSubscriber::default(), || {
            try_size(size, sector_size, boot, files, &zeros)
        })
    };
    let shortfall = |size| match quiet_try(size) {
        Ok(()) => Ok(None),
        Err(BootError::Fat(FatError::TooSmall { min, .. })) => Ok(Some(min.saturating_sub(size))),
        Err(BootError::NoRoom { needed, free, .. })
        | Err(BootError::Fat(FatError::NoSpace { needed, free, .. })) => {
            Ok(Some(needed.saturating_sub(free)))
        }
        Err(e) => Err(e),
    };
    // Grow by what each try fell short until it fits: a little less room
    // than that comes with it (the FATs grow too), so it may take more
    // than one step, and the last may overshoot ...
    let mut too_small = size;
    let mut fits = size;
    while let Some(missing) = shortfall(fits)? {
        debug!(size = fits, missing, "an ESP of this size is too small");
        too_small = fits;
        fits += missing.next_multiple_of(MIB).max(MIB);
    }
    // ... so narrow down between the last size that did not fit and the
    // first that did.
    while fits - too_small > MIB {
        let middle = too_small + (fits - too_small) / MIB / 2 * MIB;
        debug!(size = middle, "trying an ESP of this size");
        match shortfall(middle)? {
            Some(_) => too_small = middle,
            None => fits = middle,
        }
    }
    Ok(fits)
}

/// What the zeros standing in for the kernel and initrd must be.
struct Zeros {
    kernel: Expected,
    initrd: Expected,
}

/// The SHA-256 of `len` zero bytes.
fn zeros_digest(len: u64) -> Digest {
    let mut hashing = Hashing::new(io::sink());
    io::copy(&mut io::repeat(0).take(len), &mut hashing).expect("hashing zeros does not fail");
    hashing.digest()
}

/// Installs the bootloader and slot A's boot files on a blank ESP of `size`
/// bytes as the installer does, then checks that slot B's fit beside them.
fn try_size(
    size: u64,
    sector_size: u32,
    boot: &BootPayload,
    files: &SlotFiles,
    zeros: &Zeros,
) -> Result<(), BootError> {
    let format = FormatOptions {
        label: ESP_LABEL.to_owned(),
        volume_id: 0,
        sector_size,
    };
    let mut control = boot.install(Blank::new(size), format)?;
    let info = SlotInfo::of(files.signed.meta());
    let mut kernel = io::repeat(0).take(files.kernel_len);
    let mut initrd = io::repeat(0).take(files.initrd_len);
    let slot_files = BootFiles::new(
        info.clone(),
        VerifyingReader::new(&mut kernel, zeros.kernel.clone()),
        VerifyingReader::new(&mut initrd, zeros.initrd.clone()),
    )
    .keeping(files.signed);
    control.write_boot_files(Slot::A, slot_files)?;
    control.mark_good(Slot::A)?;
    control.check_boot_files(Slot::B, &info, files.kernel_len, files.initrd_len)
}

const PAGE: u64 = 4096;

/// A blank in-memory disk that keeps only the pages holding something other
/// than zeros. Not an `abnix_formats::disk::Overlay` (a test double): that
/// keeps every page written, here up to hundreds of MiB of zeros standing in
/// for a kernel and an initrd.
struct Blank {
    len: u64,
    pos: u64,
    pages: HashMap<u64, Box<[u8]>>,
}

impl Blank {
    fn new(len: u64) -> Blank {
        Blank {
            len,
            pos: 0,
            pages: HashMap::new(),
        }
    }

    /// The page index, the offset in it and the bytes up to its end (or
    /// the disk's) at the current position.
    fn here(&self) -> (u64, usize, usize) {
        let within = self.pos % PAGE;
        let n = (PAGE - within).min(self.len - self.pos);
        (self.pos / PAGE, within as usize, n as usize)
    }
}

impl Read for Blank {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let (index, within, left) = self.here();
        let n = buf.len().min(left);
        match self.pages.get(&index) {
            Some(page) => buf[..n].copy_from_slice(&page[within..within + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Blank {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the disk",
            ));
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let (index, within, left) = self.here();
            let (part, tail) = rest.split_at(rest.len().min(left));
            let range = within..within + part.len();
            match self.pages.entry(index) {
                Entry::Occupied(mut page) => {
                    page.get_mut()[range].copy_from_slice(part);
                    if page.get().iter().all(|&b| b == 0) {
                        page.remove();
                    }
                }
                Entry::Vacant(slot) => {
                    if part.iter().any(|&b| b != 0) {
                        let mut page = vec![0; PAGE as usize].into_boxed_slice();
                        page[range].copy_from_slice(part);
                        slot.insert(page);
                    }
                }
            }
            self.pos += part.len() as u64;
            rest = tail;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Blank {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_position(pos, self.pos, self.len)?;
        Ok(self.pos)
    }
}

impl Disk for Blank {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_disk_keeps_only_pages_that_are_not_zeros() {
        let mut disk = Blank::new(3 * PAGE + 100);
        disk.write_all(&vec![0; 2 * PAGE as usize]).unwrap();
        assert!(disk.pages.is_empty(), "zeros are not kept");
        disk.seek(SeekFrom::Start(PAGE - 2)).unwrap();
        disk.write_all(&[1, 2, 3, 4]).unwrap();
        assert_eq!(disk.pages.len(), 2, "a write across a page boundary");
        disk.seek(SeekFrom::End(-1)).unwrap();
        disk.write_all(&[9]).unwrap();
        assert!(disk.write_all(&[9]).is_err(), "past the end");

        let mut all = Vec::new();
        disk.seek(SeekFrom::Start(0)).unwrap();
        disk.read_to_end(&mut all).unwrap();
        let mut expected = vec![0; 3 * PAGE as usize + 100];
        expected[PAGE as usize - 2..PAGE as usize + 2].copy_from_slice(&[1, 2, 3, 4]);
        *expected.last_mut().unwrap() = 9;
        assert_eq!(all, expected);

        // Zeroing a page again drops it.
        disk.seek(SeekFrom::Start(PAGE)).unwrap();
        disk.write_all(&[0, 0]).unwrap();
        assert_eq!(disk.pages.len(), 2);
        disk.seek(SeekFrom::Start(PAGE - 2)).unwrap();
        disk.write_all(&[0, 0]).unwrap();
        assert_eq!(disk.pages.keys().copied().collect::<Vec<_>>(), [3]);
    }
}
