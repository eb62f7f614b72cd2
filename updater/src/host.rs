//! The device the updater runs on: the disk it booted from and the slot it
//! booted (DESIGN §5: "the booted slot is read from `abnix.slot=` and
//! checked against the device behind `/`").
//!
//! The bootloader adds `abnix.slot=a|b` to every entry's command line, and
//! the root is mounted by the version's UUID whichever slot holds it, so
//! both are needed: the command line says which entry booted, the partition
//! behind `/` proves the running root really is that slot (a copied image,
//! a hand-edited command line or a root found on another disk all show up
//! as a mismatch).
//!
//! For tests and for inspecting a disk image, `--disk PATH` and
//! `--cmdline TEXT` override what `/` and `/proc/cmdline` say; the
//! cross-check is then skipped, and logged as skipped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use abnix_core::blockdev::{BlockDevError, SysRoot};
use abnix_core::system_disk::{open_disk_file, SystemDisk, SystemDiskError};
use abnix_formats::layout::Layout;
use abnix_formats::slot::Slot;

/// What the command line may override.
#[derive(Debug, Clone, Default)]
pub struct HostOverrides {
    /// The disk (or disk-image file) instead of the one behind `/`.
    pub disk: Option<PathBuf>,
    /// The kernel command line instead of `/proc/cmdline`.
    pub cmdline: Option<String>,
}

impl HostOverrides {
    fn any(&self) -> bool {
        self.disk.is_some() || self.cmdline.is_some()
    }
}

/// The partition the running root filesystem is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPartition {
    /// Kernel name, e.g. `vda3`.
    device: String,
    /// GPT partition number.
    number: u32,
}

/// Why the booted slot is not known. Commands that change the boot state
/// refuse to run without it; `status` shows the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootedSlotError {
    #[error("the kernel command line has no abnix.slot= (not booted through abnix's boot loader?): {cmdline:?}")]
    NotOnCmdline { cmdline: String },
    #[error("the kernel command line says abnix.slot={slot}, but / is on {} (partition {}), not on {} (partition {expected})", root.device, root.number, slot.partition_name())]
    RootMismatch {
        slot: Slot,
        root: RootPartition,
        expected: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading the kernel command line {}: {source}", path.display())]
    Cmdline { path: PathBuf, source: io::Error },
    #[error("finding the disk behind /: {0} (name the disk with --disk)")]
    RootDevice(#[from] BlockDevError),
    #[error("/ is on {0}, which is not a partition (name the disk with --disk)")]
    RootNotPartition(String),
    #[error("opening {}: {source}", path.display())]
    OpenDisk { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    NotAbnix {
        path: PathBuf,
        source: SystemDiskError,
    },
}

/// The running device: its abnix disk and the slot it booted from.
pub struct Host {
    pub disk_path: PathBuf,
    pub disk: SystemDisk<File>,
    /// The booted slot, or why it is not known.
    pub booted: Result<Slot, BootedSlotError>,
}

impl Host {
    /// Finds the disk and the booted slot, reading `proc/cmdline` and the
    /// device behind `/` through `sys` unless overridden.
    pub fn open(overrides: &HostOverrides, sys: &SysRoot) -> Result<Host, HostError> {
        let cmdline = match &overrides.cmdline {
            Some(text) => text.clone(),
            None => {
                let path = sys.root.join("proc/cmdline");
                std::fs::read_to_string(&path)
                    .map_err(|source| HostError::Cmdline { path, source })?
            }
        };
        let (disk_path, root) = match &overrides.disk {
            Some(path) => (path.clone(), None),
            None => {
                let device = sys.device_of_path(Path::new("/"))?;
                let number = device
                    .partition
                    .ok_or_else(|| HostError::RootNotPartition(device.name.clone()))?;
                let disk_path = Path::new("/dev").join(&device.disk);
                let root = RootPartition {
                    device: device.name,
                    number,
                };
                (disk_path, Some(root))
            }
        };
        let checked_root = if overrides.any() {
            tracing::info!(
                "--disk or --cmdline given: the booted slot is not checked against the partition behind /"
            );
            None
        } else {
            root
        };
        let (file, sector_size) =
            open_disk_file(&disk_path).map_err(|source| HostError::OpenDisk {
                path: disk_path.clone(),
                source,
            })?;
        let disk = SystemDisk::open(file, sector_size).map_err(|source| HostError::NotAbnix {
            path: disk_path.clone(),
            source,
        })?;
        let booted = booted_slot(&cmdline, checked_root.as_ref(), disk.layout());
        Ok(Host {
            disk_path,
            disk,
            booted,
        })
    }
}

/// The slot named by `abnix.slot=` on `cmdline`, checked against the
/// partition behind `/` when that is known.
pub(crate) fn booted_slot(
    cmdline: &str,
    root: Option<&RootPartition>,
    layout: &Layout,
) -> Result<Slot, BootedSlotError> {
    let slot = Slot::from_cmdline(cmdline).ok_or_else(|| BootedSlotError::NotOnCmdline {
        cmdline: cmdline.trim().to_owned(),
    })?;
    if let Some(root) = root {
        let expected = layout.slot(slot).number;
        if root.number != expected {
            return Err(BootedSlotError::RootMismatch {
                slot,
                root: root.clone(),
                expected,
            });
        }
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_formats::layout::{compute, LayoutConfig};

    fn layout() -> Layout {
        compute(4 << 30, 512, &LayoutConfig::new(1 << 30)).unwrap()
    }

    fn root(device: &str, number: u32) -> RootPartition {
        RootPartition {
            device: device.into(),
            number,
        }
    }

    #[test]
    fn slot_from_cmdline_agrees_with_the_root_partition() {
        let layout = layout();
        let cmdline = "console=ttyS0 root=UUID=x abnix.slot=b quiet\n";
        assert_eq!(
            booted_slot(cmdline, Some(&root("vda4", 4)), &layout),
            Ok(Slot::B)
        );
        assert_eq!(
            booted_slot("abnix.slot=a", Some(&root("nvme0n1p3", 3)), &layout),
            Ok(Slot::A)
        );
    }

    #[test]
    fn a_root_on_the_other_slot_is_a_mismatch() {
        let err = booted_slot("abnix.slot=a", Some(&root("vda4", 4)), &layout()).unwrap_err();
        assert_eq!(
            err,
            BootedSlotError::RootMismatch {
                slot: Slot::A,
                root: root("vda4", 4),
                expected: 3
            }
        );
        let text = err.to_string();
        assert!(text.contains("vda4") && text.contains("abnix-a"), "{text}");
    }

    #[test]
    fn without_abnix_slot_the_slot_is_unknown() {
        for cmdline in ["console=ttyS0 quiet", "abnix.slot=c", "abnix.slot="] {
            let err = booted_slot(cmdline, None, &layout()).unwrap_err();
            assert!(
                matches!(err, BootedSlotError::NotOnCmdline { .. }),
                "{cmdline:?}: {err}"
            );
        }
    }

    #[test]
    fn without_a_root_partition_the_cmdline_is_taken_as_is() {
        assert_eq!(booted_slot("abnix.slot=b", None, &layout()), Ok(Slot::B));
    }
}
