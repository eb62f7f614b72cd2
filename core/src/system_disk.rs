//! An abnix disk: the GPT read and recognized as the A/B layout, with its
//! partitions as regions and its boot control, whichever bootloader it has.
//!
//! The installer creates one, the updater opens the disk it booted from, and
//! tests open disk-image files: all through [`Disk`].

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::blockdev;
use crate::boot::{BootControl, BootError, Bootloader};
use abnix_formats::disk::{Disk, Region};
use abnix_formats::fat::{FatError, FatFs};
use abnix_formats::gpt::{Gpt, GptError};
use abnix_formats::layout::{Layout, LayoutError, PartSpec};
use abnix_formats::slot::Slot;

#[derive(Debug, thiserror::Error)]
pub enum SystemDiskError {
    #[error("reading the partition table: {0}")]
    Gpt(#[from] GptError),
    #[error("not an abnix disk: {0}")]
    Layout(#[from] LayoutError),
    #[error("the ESP: {0}")]
    Fat(#[from] FatError),
    #[error("the ESP holds neither abnix's GRUB nor its systemd-boot configuration")]
    NoBootloader,
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A disk with the abnix layout.
pub struct SystemDisk<D: Disk> {
    disk: D,
    layout: Layout,
}

/// Opens a disk or disk-image file for reading and writing.
pub fn open_disk_file(path: &Path) -> io::Result<(File, u32)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let sector_size = blockdev::logical_sector_size(&file)?;
    Ok((file, sector_size))
}

impl<D: Disk> SystemDisk<D> {
    /// Reads the partition table and recognizes the abnix layout in it.
    pub fn open(mut disk: D, sector_size: u32) -> Result<SystemDisk<D>, SystemDiskError> {
        let gpt = Gpt::read(&mut disk, sector_size)?;
        let size = disk.size()?;
        let layout = Layout::from_gpt(&gpt, size)?;
        Ok(SystemDisk { disk, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn disk(&mut self) -> &mut D {
        &mut self.disk
    }

    /// A partition as a region of the disk.
    fn region(&mut self, part: &PartSpec) -> Region<&mut D> {
        Region::new(&mut self.disk, part.start, part.size)
    }

    pub fn slot_region(&mut self, slot: Slot) -> Region<&mut D> {
        let part = self.layout.slot(slot).clone();
        self.region(&part)
    }

    pub fn esp(&mut self) -> Region<&mut D> {
        let part = self.layout.esp.clone();
        self.region(&part)
    }

    /// Which bootloader the ESP was set up for, from the files boot control
    /// writes at install.
    pub fn bootloader(&mut self) -> Result<Bootloader, SystemDiskError> {
        let mut fat = FatFs::open(self.esp())?;
        Bootloader::of_esp(&mut fat)?.ok_or(SystemDiskError::NoBootloader)
    }

    /// The boot control of the installed bootloader.
    pub fn boot_control(&mut self) -> Result<Box<dyn BootControl + '_>, SystemDiskError> {
        let kind = self.bootloader()?;
        Ok(kind.open(self.esp())?)
    }
}
