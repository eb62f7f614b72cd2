//! GRUB for BIOS without `grub-install`: boot.img goes into the MBR's boot
//! code and core.img into the BIOS boot partition, patched the way
//! `grub-bios-setup` does (GRUB util/setup.c), as pure functions on bytes.
//!
//! boot.img (the MBR code) loads the first sector of core.img from the LBA
//! patched into it; that sector (diskboot.img) ends with a blocklist naming
//! where the rest of core.img lies. Offsets are GRUB's
//! include/grub/i386/pc/boot.h and include/grub/offsets.h. GRUB's BIOS disk
//! code reads 512-byte sectors, so BIOS boot needs a 512-byte-sector disk.
//! [`install`] writes both onto a disk.

use std::io::SeekFrom;

use super::mkimage::BiosImages;
use abnix_formats::disk::Disk;

/// The sector size GRUB's BIOS boot code works in.
pub const SECTOR: usize = 512;
/// boot.img is copied up to the disk signature (`WINDOWS_NT_MAGIC`); the
/// partition table and the 0x55AA signature after it stay as they are.
const BOOT_CODE_END: usize = 0x1b8;
/// A BIOS parameter block area boot.img jumps over; grub-bios-setup keeps
/// the bytes already on disk there.
const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// u64: LBA of core.img's first sector (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`).
const KERNEL_SECTOR: usize = 0x5c;
/// 0xff: load core.img from the drive the BIOS booted
/// (`GRUB_BOOT_MACHINE_BOOT_DRIVE`).
const BOOT_DRIVE: usize = 0x64;
/// A 2-byte jump that skips the workaround for BIOSes passing a wrong drive
/// number; grub-bios-setup replaces it with two NOPs for hard disks
/// (`GRUB_BOOT_MACHINE_DRIVE_CHECK`).
const DRIVE_CHECK: usize = 0x66;
/// Size of one blocklist entry at the end of core.img's first sector:
/// start (u64), length in sectors (u16), load segment (u16).
const BLOCKLIST_ENTRY: usize = 12;
/// The segment the second sector of core.img is loaded to:
/// `GRUB_BOOT_I386_PC_KERNEL_SEG` (0x800) + one sector (512 >> 4).
const SECOND_SECTOR_SEGMENT: u16 = 0x820;
/// Offset in core.img of `GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH`
/// (second sector + 0x14); 0xffff means boot.img and core.img do not match.
const NO_REED_SOLOMON_LENGTH: usize = SECTOR + 0x14;
/// The largest core.img grub-bios-setup embeds: it is loaded at
/// `GRUB_KERNEL_I386_PC_LINK_ADDR` (0x9000) and must stay below 0x78000.
pub(crate) const MAX_CORE_SECTORS: usize = (0x78000 - 0x9000) / SECTOR;

/// Why boot.img, core.img or the MBR cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BiosError {
    #[error("boot.img is {0} bytes; GRUB's boot.img is exactly 512")]
    BootImgSize(usize),
    #[error("the MBR has no 0x55AA signature: write the partition table before the boot code")]
    NoMbrSignature,
    #[error("core.img is {0} bytes, too small to be a GRUB core image")]
    CoreTooSmall(usize),
    #[error("core.img has {sectors} sectors; GRUB can load at most {max}")]
    CoreTooLarge { sectors: usize, max: usize },
    #[error("core.img is not an i386-pc image from grub-mkimage: {0}")]
    NotMkimageCore(String),
    #[error(
        "core.img has {sectors} sectors, more than the {partition} of the BIOS boot partition"
    )]
    DoesNotFit { sectors: u64, partition: u64 },
    #[error("GRUB boots from BIOS only on disks with 512-byte sectors, not {0}")]
    SectorSize(u32),
}

/// The MBR with boot.img's code patched to load core.img from `core_lba`.
/// The partition table, disk signature and the BPB area of `mbr` are kept.
pub fn patch_mbr(
    boot_img: &[u8],
    mbr: &[u8; SECTOR],
    core_lba: u64,
) -> Result<[u8; SECTOR], BiosError> {
    if boot_img.len() != SECTOR {
        return Err(BiosError::BootImgSize(boot_img.len()));
    }
    if mbr[510..] != [0x55, 0xaa] {
        return Err(BiosError::NoMbrSignature);
    }
    let mut out = *mbr;
    out[..BOOT_CODE_END].copy_from_slice(&boot_img[..BOOT_CODE_END]);
    out[BPB].copy_from_slice(&mbr[BPB]);
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    out[BOOT_DRIVE] = 0xff;
    out[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(out)
}

/// core.img padded to whole sectors, with its blocklist pointing at the
/// sectors after `core_lba`, where the caller writes it contiguously.
pub fn patch_core(core_img: &[u8], core_lba: u64) -> Result<Vec<u8>, BiosError> {
    if core_img.len() < 2 * SECTOR {
        return Err(BiosError::CoreTooSmall(core_img.len()));
    }
    let sectors = core_img.len().div_ceil(SECTOR);
    if sectors > MAX_CORE_SECTORS {
        return Err(BiosError::CoreTooLarge {
            sectors,
            max: MAX_CORE_SECTORS,
        });
    }
    let first = SECTOR - BLOCKLIST_ENTRY;
    let len = u16::from_le_bytes([core_img[first + 8], core_img[first + 9]]);
    let segment = u16::from_le_bytes([core_img[first + 10], core_img[first + 11]]);
    // grub-mkimage fills in the length and segment; only the start is left
    // for grub-bios-setup.
    if usize::from(len) != sectors - 1 || segment != SECOND_SECTOR_SEGMENT {
        return Err(BiosError::NotMkimageCore(format!(
            "its first blocklist entry says {len} sectors at segment {segment:#x}, expected {} at {SECOND_SECTOR_SEGMENT:#x}",
            sectors - 1
        )));
    }
    let no_rs = u16::from_le_bytes([
        core_img[NO_REED_SOLOMON_LENGTH],
        core_img[NO_REED_SOLOMON_LENGTH + 1],
    ]);
    if no_rs == 0xffff {
        return Err(BiosError::NotMkimageCore(
            "it does not match boot.img's version".into(),
        ));
    }
    let mut out = core_img.to_vec();
    out.resize(sectors * SECTOR, 0);
    out[first..first + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    // The entry before it terminates the list.
    out[first - BLOCKLIST_ENTRY..first].fill(0);
    Ok(out)
}

/// Installs GRUB's BIOS boot code on a whole disk whose GPT is written:
/// core.img into the BIOS boot partition (`partition_lba`,
/// `partition_sectors`), then boot.img into the MBR, so the MBR never points
/// at a core.img that is not there yet.
pub fn install<D: Disk>(
    disk: &mut D,
    sector_size: u32,
    partition_lba: u64,
    partition_sectors: u64,
    images: &BiosImages,
) -> Result<(), crate::boot::BootError> {
    if sector_size as usize != SECTOR {
        return Err(BiosError::SectorSize(sector_size).into());
    }
    let core = patch_core(&images.core_img, partition_lba)?;
    let sectors = (core.len() / SECTOR) as u64;
    if sectors > partition_sectors {
        return Err(BiosError::DoesNotFit {
            sectors,
            partition: partition_sectors,
        }
        .into());
    }
    disk.seek(SeekFrom::Start(partition_lba * SECTOR as u64))?;
    disk.write_all(&core)?;
    disk.sync()?;
    let mut mbr = [0u8; SECTOR];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut mbr)?;
    let mbr = patch_mbr(&images.boot_img, &mbr, partition_lba)?;
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&mbr)?;
    disk.sync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protective_mbr() -> [u8; SECTOR] {
        let mut mbr = [0u8; SECTOR];
        mbr[0x1b8..0x1bc].copy_from_slice(&[1, 2, 3, 4]);
        mbr[0x1be..0x1ce].copy_from_slice(&[
            0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mbr
    }

    /// A stand-in for boot.img: recognisable bytes everywhere.
    fn boot_img() -> Vec<u8> {
        (0..SECTOR).map(|i| (i % 251) as u8).collect()
    }

    /// A stand-in for core.img as grub-mkimage leaves it.
    fn core_img(sectors: usize, tail: usize) -> Vec<u8> {
        let mut core = vec![0xc0; (sectors - 1) * SECTOR + tail];
        let first = SECTOR - BLOCKLIST_ENTRY;
        core[first - BLOCKLIST_ENTRY..first].fill(0);
        core[first..first + 8].copy_from_slice(&2u64.to_le_bytes());
        core[first + 8..first + 10].copy_from_slice(&(sectors as u16 - 1).to_le_bytes());
        core[first + 10..first + 12].copy_from_slice(&0x820u16.to_le_bytes());
        core
    }

    #[test]
    fn mbr_gets_boot_code_and_core_pointer_and_keeps_the_partition_table() {
        let mbr = protective_mbr();
        let boot = boot_img();
        let out = patch_mbr(&boot, &mbr, 2048).unwrap();
        assert_eq!(&out[..3], &boot[..3]);
        assert_eq!(&out[BPB], &mbr[BPB]);
        assert_eq!(&out[0x5a..0x5c], &boot[0x5a..0x5c]);
        assert_eq!(
            u64::from_le_bytes(out[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(out[0x64], 0xff);
        assert_eq!(&out[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&out[0x68..0x1b8], &boot[0x68..0x1b8]);
        assert_eq!(&out[0x1b8..], &mbr[0x1b8..]);
    }

    #[test]
    fn mbr_patching_rejects_what_would_not_boot() {
        assert_eq!(
            patch_mbr(&[0; 440], &protective_mbr(), 1),
            Err(BiosError::BootImgSize(440))
        );
        assert_eq!(
            patch_mbr(&boot_img(), &[0; SECTOR], 1),
            Err(BiosError::NoMbrSignature)
        );
    }

    #[test]
    fn core_blocklist_points_at_the_following_sectors() {
        let core = core_img(299, 100);
        let out = patch_core(&core, 2048).unwrap();
        assert_eq!(out.len(), 299 * SECTOR);
        let first = SECTOR - BLOCKLIST_ENTRY;
        assert_eq!(
            u64::from_le_bytes(out[first..first + 8].try_into().unwrap()),
            2049
        );
        assert_eq!(&out[first + 8..SECTOR], &core[first + 8..SECTOR]);
        assert_eq!(&out[first - 12..first], &[0; 12]);
        assert_eq!(&out[..first - 12], &core[..first - 12]);
        assert_eq!(&out[SECTOR..core.len()], &core[SECTOR..]);
        assert!(out[core.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn core_patching_rejects_foreign_or_oversized_images() {
        assert_eq!(patch_core(&[0; 600], 1), Err(BiosError::CoreTooSmall(600)));
        let big = core_img(MAX_CORE_SECTORS + 1, SECTOR);
        assert_eq!(
            patch_core(&big, 1),
            Err(BiosError::CoreTooLarge {
                sectors: MAX_CORE_SECTORS + 1,
                max: MAX_CORE_SECTORS
            })
        );
        let mut wrong_len = core_img(10, SECTOR);
        wrong_len[SECTOR - 4] = 3;
        let err = patch_core(&wrong_len, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "core.img is not an i386-pc image from grub-mkimage: its first blocklist entry says \
             3 sectors at segment 0x820, expected 9 at 0x820"
        );
        let mut mismatched = core_img(10, SECTOR);
        mismatched[NO_REED_SOLOMON_LENGTH..NO_REED_SOLOMON_LENGTH + 2].fill(0xff);
        assert!(matches!(
            patch_core(&mismatched, 1),
            Err(BiosError::NotMkimageCore(_))
        ));
    }
}
