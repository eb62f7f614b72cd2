//! Which disk to install onto: the rules every target must pass, and the
//! automatic choice among the machine's disks. Pure functions over what
//! [`SysRoot::disks`](abnix_core::blockdev::SysRoot::disks) found, so every rule
//! is tested on made-up machines.
//!
//! Automatic selection takes the first eligible whole disk in the order of
//! [`DiskScan`]: kernel names compared by [`natural_cmp`](abnix_core::blockdev::natural_cmp)
//! (`sda < sdb < vda < nvme0n1 < sdaa < mmcblk0`). A disk is eligible when it
//! is not the installer's own medium, not read-only, not removable (unless
//! allowed), not in use (mounted, swap, holders, a loop device's backing
//! file, or otherwise refused exclusive access), has a logical sector size
//! the layout and the bootloader support and no larger than the blocks of
//! the image's filesystem (which could not be mounted from it otherwise),
//! and is big enough for the layout.
//! What is *on* an eligible disk is checked afterwards on the chosen disk
//! alone (see `contents`): a disk holding data is refused, not
//! skipped, so `--auto` never silently moves on to the next disk.

use std::fmt;

use abnix_core::blockdev::{DiskInfo, DiskScan};
use abnix_core::units::Bytes;
use abnix_formats::fsid::FsType;
use abnix_formats::layout::{self, LayoutConfig};

/// A disk the installer itself runs from, and how that is known
/// (see `medium`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerMedium {
    pub(crate) disk: String,
    pub(crate) why: String,
}

/// What a target disk must offer.
#[derive(Debug, Clone)]
pub struct Requirements {
    pub(crate) layout: LayoutConfig,
    /// GRUB's BIOS boot code is installed, which needs 512-byte sectors.
    pub(crate) bios_boot: bool,
    /// Removable disks may be chosen (an explicitly named disk always may).
    pub(crate) allow_removable: bool,
    /// The image's filesystem and its block size, from its superblock: the
    /// kernel mounts no filesystem whose blocks are smaller than the disk's
    /// logical sectors.
    pub(crate) image_fs: FsType,
    pub(crate) image_block_size: u32,
}

/// Why a disk cannot be the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("it holds the installer itself ({0})")]
    InstallerMedium(String),
    #[error("it is read-only")]
    ReadOnly,
    #[error("it is removable (allow it with --allow-removable)")]
    Removable,
    #[error("it is in use: {}", .0.join("; "))]
    InUse(Vec<String>),
    #[error("its logical sectors are {0} bytes; abnix supports 512 and 4096")]
    SectorSize(u32),
    #[error("its logical sectors are 4096 bytes and GRUB's BIOS boot code needs 512 (use --bootloader systemd-boot for UEFI machines)")]
    BiosSectorSize,
    #[error("its logical sectors are {sector} bytes, larger than the {block}-byte blocks of the image's {fs} filesystem, which cannot be mounted from it (use a disk with smaller sectors, or build the image with {sector}-byte blocks)")]
    LargerThanFsBlocks { sector: u32, fs: FsType, block: u32 },
    #[error("it is too small: the layout needs {} ({needed} bytes), it has {} ({have} bytes)", Bytes(*needed), Bytes(*have))]
    TooSmall { needed: u64, have: u64 },
}

/// Checks every rule on one disk, in the order of [`Ineligible`]'s variants.
pub fn check_disk(
    disk: &DiskInfo,
    media: &[InstallerMedium],
    req: &Requirements,
) -> Result<(), Ineligible> {
    if let Some(medium) = media.iter().find(|m| m.disk == disk.name) {
        return Err(Ineligible::InstallerMedium(medium.why.clone()));
    }
    if disk.read_only {
        return Err(Ineligible::ReadOnly);
    }
    if disk.removable && !req.allow_removable {
        return Err(Ineligible::Removable);
    }
    let usage = disk.usage();
    if !usage.is_empty() {
        return Err(Ineligible::InUse(usage));
    }
    match disk.logical_sector_size {
        512 => {}
        4096 if req.bios_boot => return Err(Ineligible::BiosSectorSize),
        4096 => {}
        other => return Err(Ineligible::SectorSize(other)),
    }
    if disk.logical_sector_size > req.image_block_size {
        return Err(Ineligible::LargerThanFsBlocks {
            sector: disk.logical_sector_size,
            fs: req.image_fs,
            block: req.image_block_size,
        });
    }
    let needed = layout::min_disk_size(disk.logical_sector_size, &req.layout);
    if disk.size_bytes < needed {
        return Err(Ineligible::TooSmall {
            needed,
            have: disk.size_bytes,
        });
    }
    Ok(())
}

/// A device that was not chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    name: String,
    reason: String,
}

/// The outcome of automatic selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub(crate) chosen: DiskInfo,
    /// Every other block device, in scan order: ineligible disks, disks
    /// after the chosen one, and virtual devices.
    skipped: Vec<Skipped>,
}

/// No disk passed the rules; every device is listed with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no eligible disk to install onto{}", list(.skipped))]
pub struct NoEligibleDisk {
    skipped: Vec<Skipped>,
}

fn list(skipped: &[Skipped]) -> String {
    if skipped.is_empty() {
        return ": the machine has no block devices".to_owned();
    }
    skipped
        .iter()
        .map(|s| format!("\n  {}: {}", s.name, s.reason))
        .collect()
}

/// A one-line description of a disk for people: name, model, serial, size.
pub fn describe(disk: &DiskInfo) -> String {
    let model = disk
        .model
        .as_deref()
        .map(|m| format!(" \"{m}\""))
        .unwrap_or_default();
    let serial = disk
        .serial
        .as_deref()
        .map(|s| format!(" serial {s}"))
        .unwrap_or_default();
    format!(
        "{}{model}{serial} ({}, {}-byte sectors)",
        disk.dev_path.display(),
        Bytes(disk.size_bytes),
        disk.logical_sector_size
    )
}

/// The first disk of `scan` that passes [`check_disk`].
pub fn select(
    scan: &DiskScan,
    media: &[InstallerMedium],
    req: &Requirements,
) -> Result<Selection, NoEligibleDisk> {
    let mut skipped = Vec::new();
    let mut chosen = None;
    for disk in &scan.disks {
        if chosen.is_some() {
            skipped.push(Skipped {
                name: disk.name.clone(),
                reason: "an earlier disk was chosen".to_owned(),
            });
            continue;
        }
        match check_disk(disk, media, req) {
            Ok(()) => chosen = Some(disk.clone()),
            Err(why) => skipped.push(Skipped {
                name: disk.name.clone(),
                reason: why.to_string(),
            }),
        }
    }
    skipped.extend(scan.skipped.iter().map(|s| Skipped {
        name: s.name.clone(),
        reason: s.reason.to_owned(),
    }));
    match chosen {
        Some(chosen) => Ok(Selection { chosen, skipped }),
        None => Err(NoEligibleDisk { skipped }),
    }
}

impl fmt::Display for Selection {
    /// The choice and why each other device was not chosen.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chose {}", describe(&self.chosen))?;
        for s in &self.skipped {
            write!(f, "\n  skipped {}: {}", s.name, s.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_core::blockdev::SkippedDevice;
    use abnix_formats::layout::{Arch, MIB};
    use std::path::PathBuf;

    const GIB: u64 = 1024 * MIB;

    fn req() -> Requirements {
        Requirements {
            layout: LayoutConfig {
                slot_size: 2 * GIB,
                esp_size: 512 * MIB,
                min_rw_size: 64 * MIB,
                arch: Arch::X86_64,
            },
            bios_boot: true,
            allow_removable: false,
            image_fs: FsType::Erofs,
            image_block_size: 4096,
        }
    }

    /// An idle, writable, fixed 16 GiB disk with 512-byte sectors.
    fn disk(name: &str) -> DiskInfo {
        DiskInfo {
            name: name.to_owned(),
            dev_path: PathBuf::from("/dev").join(name),
            size_bytes: 16 * GIB,
            logical_sector_size: 512,
            removable: false,
            read_only: false,
            model: None,
            serial: None,
            wwid: None,
            partitions: Vec::new(),
            holders: Vec::new(),
            mounts: Vec::new(),
            swaps: Vec::new(),
            other_users: Vec::new(),
        }
    }

    fn scan(disks: Vec<DiskInfo>) -> DiskScan {
        DiskScan {
            disks,
            skipped: vec![SkippedDevice {
                name: "loop0".into(),
                reason: "loop device",
            }],
        }
    }

    fn reasons(skipped: &[Skipped]) -> Vec<(&str, &str)> {
        skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect()
    }

    /// The installer ISO as a USB stick (sda, removable, /iso mounted), a
    /// disk with a mounted partition, a read-only one, a 4Kn one, a small
    /// one, then two good disks: the first good one is chosen, and every
    /// other device is listed with its reason.
    #[test]
    fn the_first_eligible_disk_is_chosen_and_every_other_is_explained() {
        let mut usb = disk("sda");
        usb.removable = true;
        usb.model = Some("Stick".into());
        usb.mounts = vec![("/dev/sda1".into(), "/iso".into())];
        let mut busy = disk("sdb");
        busy.partitions = vec!["sdb1".into()];
        busy.mounts = vec![("/dev/sdb1".into(), "/mnt".into())];
        let mut ro = disk("sdc");
        ro.read_only = true;
        let mut native4k = disk("sdd");
        native4k.logical_sector_size = 4096;
        let mut small = disk("vda");
        small.size_bytes = 4 * GIB;
        let scan = scan(vec![
            usb,
            busy,
            ro,
            native4k,
            small,
            disk("vdb"),
            disk("nvme0n1"),
        ]);
        let media = [InstallerMedium {
            disk: "sda".into(),
            why: "/dev/sda1 is mounted on /iso".into(),
        }];

        let selection = select(&scan, &media, &req()).unwrap();
        assert_eq!(selection.chosen.name, "vdb");
        let needed = layout::min_disk_size(512, &req().layout);
        assert_eq!(
            reasons(&selection.skipped),
            [
                ("sda", "it holds the installer itself (/dev/sda1 is mounted on /iso)"),
                ("sdb", "it is in use: /dev/sdb1 is mounted on /mnt"),
                ("sdc", "it is read-only"),
                ("sdd", "its logical sectors are 4096 bytes and GRUB's BIOS boot code needs 512 (use --bootloader systemd-boot for UEFI machines)"),
                ("vda", format!("it is too small: the layout needs 4.6 GiB ({needed} bytes), it has 4.0 GiB ({} bytes)", 4 * GIB).as_str()),
                ("nvme0n1", "an earlier disk was chosen"),
                ("loop0", "loop device"),
            ]
        );
        let text = selection.to_string();
        assert!(
            text.starts_with(
                "chose /dev/vdb (16.0 GiB, 512-byte sectors)\n  skipped sda: it holds"
            ),
            "{text}"
        );
    }

    #[test]
    fn removable_disks_and_4kn_disks_are_eligible_when_allowed() {
        let mut usb = disk("sda");
        usb.removable = true;
        let mut native4k = disk("sdb");
        native4k.logical_sector_size = 4096;
        let scan = scan(vec![usb, native4k]);

        let err = select(&scan, &[], &req()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no eligible disk to install onto\n  \
             sda: it is removable (allow it with --allow-removable)\n  \
             sdb: its logical sectors are 4096 bytes and GRUB's BIOS boot code needs 512 (use --bootloader systemd-boot for UEFI machines)\n  \
             loop0: loop device"
        );

        let removable = Requirements {
            allow_removable: true,
            ..req()
        };
        assert_eq!(select(&scan, &[], &removable).unwrap().chosen.name, "sda");
        let uefi_only = Requirements {
            bios_boot: false,
            ..req()
        };
        assert_eq!(select(&scan, &[], &uefi_only).unwrap().chosen.name, "sdb");
    }

    #[test]
    fn swap_holders_and_odd_sector_sizes_are_refused_by_name() {
        let mut swapping = disk("sda");
        swapping.swaps = vec!["/dev/sda2".into()];
        swapping.holders = vec!["dm-0".into()];
        swapping.other_users = vec!["/dev/loop0 reads its backing file /a from /dev/sda1".into()];
        assert_eq!(
            check_disk(&swapping, &[], &req()).unwrap_err().to_string(),
            "it is in use: /dev/sda2 is active swap; dm-0 is stacked on it; /dev/loop0 reads its backing file /a from /dev/sda1"
        );
        let mut odd = disk("sdb");
        odd.logical_sector_size = 1024;
        assert_eq!(
            check_disk(&odd, &[], &req()),
            Err(Ineligible::SectorSize(1024))
        );
        // The installer's own medium, even when it would otherwise do.
        let medium = InstallerMedium {
            disk: "sdc".into(),
            why: "the bundle is on it".into(),
        };
        assert_eq!(
            check_disk(&disk("sdc"), &[medium], &req()),
            Err(Ineligible::InstallerMedium("the bundle is on it".into()))
        );
    }

    /// A 4Kn disk cannot mount a filesystem of 1 KiB blocks (mkfs.ext4's
    /// default below 512 MiB) or an erofs of 512-byte blocks; a 512-byte
    /// disk mounts both, and a 4Kn disk 4 KiB blocks of either.
    #[test]
    fn sectors_larger_than_the_image_blocks_are_refused() {
        let uefi = |fs, block| Requirements {
            bios_boot: false,
            image_fs: fs,
            image_block_size: block,
            ..req()
        };
        let mut native4k = disk("sda");
        native4k.logical_sector_size = 4096;
        for (fs, block) in [
            (FsType::Ext4, 1024),
            (FsType::Ext4, 2048),
            (FsType::Erofs, 512),
        ] {
            assert_eq!(
                check_disk(&native4k, &[], &uefi(fs, block)),
                Err(Ineligible::LargerThanFsBlocks {
                    sector: 4096,
                    fs,
                    block
                })
            );
            assert_eq!(check_disk(&disk("sdb"), &[], &uefi(fs, block)), Ok(()));
        }
        for fs in [FsType::Ext4, FsType::Erofs] {
            assert_eq!(check_disk(&native4k, &[], &uefi(fs, 4096)), Ok(()));
        }
        assert_eq!(
            Ineligible::LargerThanFsBlocks {
                sector: 4096,
                fs: FsType::Ext4,
                block: 1024
            }
            .to_string(),
            "its logical sectors are 4096 bytes, larger than the 1024-byte blocks of the image's \
             ext4 filesystem, which cannot be mounted from it (use a disk with smaller sectors, \
             or build the image with 4096-byte blocks)"
        );
    }

    #[test]
    fn a_disk_of_exactly_the_minimum_size_is_eligible() {
        for ss in [512u32, 4096] {
            let mut exact = disk("vda");
            exact.logical_sector_size = ss;
            exact.size_bytes = layout::min_disk_size(ss, &req().layout);
            let req = Requirements {
                bios_boot: false,
                ..req()
            };
            assert_eq!(check_disk(&exact, &[], &req), Ok(()));
            exact.size_bytes -= u64::from(ss);
            assert!(matches!(
                check_disk(&exact, &[], &req),
                Err(Ineligible::TooSmall { .. })
            ));
        }
    }

    #[test]
    fn a_machine_without_disks_says_so() {
        let empty = DiskScan {
            disks: Vec::new(),
            skipped: Vec::new(),
        };
        assert_eq!(
            select(&empty, &[], &req()).unwrap_err().to_string(),
            "no eligible disk to install onto: the machine has no block devices"
        );
    }
}
