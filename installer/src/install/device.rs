//! The disk written is the disk checked.
//!
//! A block device is opened for writing with O_EXCL (the kernel refuses
//! while anything has it or a partition mounted, as swap, under dm or md,
//! or open exclusively), and then by a second, plain descriptor reached
//! through the first (`/proc/self/fd/N`), so both are the same device
//! whatever `/dev/sdX` names by then. Before the first write, the device is
//! checked to be the one examined: device number, size, serial and WWID
//! (where sysfs has them), and still not in use. Every later write, and the
//! e2fsprogs programs, go through that same descriptor (`/proc/<pid>/fd/N`
//! for a program), so a hot-plug renaming `/dev/sdX` mid-way cannot send a
//! byte to another disk. udev is asked to leave the device alone while it
//! is written (a BSD lock, systemd.io/BLOCK_DEVICE_LOCKING).
//!
//! mke2fs opens its device with O_EXCL itself, so the claim is let go while
//! it runs and taken again after, through the same descriptor.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;

use abnix_core::blockdev::{self, BlockDevError, SysRoot};

/// How long a busy device may stay busy before it counts as in use: udev
/// holds one for an instant while it re-reads its partition table.
pub(crate) const PATIENCE: Duration = Duration::from_secs(2);

/// What identifies a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Kernel name (`sdb`).
    pub(crate) name: String,
    /// `major:minor`.
    number: (u32, u32),
    pub(crate) size: u64,
    serial: Option<String>,
    wwid: Option<String>,
}

/// Why a device's identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Sys(#[from] BlockDevError),
    #[error("device {}:{} is not in sysfs", .0.0, .0.1)]
    Unknown((u32, u32)),
    #[error("it is {0}, a partition, not a whole disk")]
    Partition(String),
}

impl DeviceIdentity {
    /// The identity of the open device `device`: its number and size from
    /// the descriptor, its name, serial and WWID from sysfs (under `sys`)
    /// for that number.
    pub(crate) fn of(device: &File, sys: &SysRoot) -> Result<DeviceIdentity, IdentityError> {
        let number = blockdev::device_number(device)?;
        let size = blockdev::device_size(device)?;
        let found = sys
            .block_device(number.0, number.1)?
            .ok_or(IdentityError::Unknown(number))?;
        if found.partition.is_some() {
            return Err(IdentityError::Partition(found.name));
        }
        let info = sys.disk(&found.name)?;
        Ok(DeviceIdentity {
            name: found.name,
            number,
            size,
            serial: info.serial,
            wwid: info.wwid,
        })
    }

    /// What differs from `checked`, one item each; empty when nothing does.
    fn differences(&self, checked: &DeviceIdentity) -> Vec<String> {
        let mut changes = Vec::new();
        let mut compare = |what: &str, was: String, now: String| {
            if was != now {
                changes.push(format!("{what} was {was}, now {now}"));
            }
        };
        let number = |(major, minor): (u32, u32)| format!("{major}:{minor}");
        let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "none".to_owned());
        compare("the name", checked.name.clone(), self.name.clone());
        compare(
            "the device number",
            number(checked.number),
            number(self.number),
        );
        compare("the size", checked.size.to_string(), self.size.to_string());
        compare("the serial", text(&checked.serial), text(&self.serial));
        compare("the WWID", text(&checked.wwid), text(&self.wwid));
        changes
    }
}

/// The path by which another program opens the very file `file` is, not
/// whatever its name leads to by then.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ))
}

/// A block device's exclusive claim, held through a descriptor of its own.
#[derive(Debug)]
struct Claim {
    file: Option<File>,
    /// The written descriptor's path, to claim the same device again.
    device: PathBuf,
}

/// The target, open for the write sequence.
#[derive(Debug)]
pub struct Opened<D> {
    pub(crate) disk: D,
    claim: Option<Claim>,
    /// What e2fsprogs opens.
    tools_path: PathBuf,
    /// A disk-image file shorter than the disk it becomes, and that size:
    /// extended once it was checked to be as examined.
    grow: Option<(File, u64)>,
}

impl<D> Opened<D> {
    /// A disk-image file (or anything tests stand in with), which programs
    /// open by `path`.
    pub(crate) fn file(disk: D, path: &Path) -> Opened<D> {
        Opened {
            disk,
            claim: None,
            tools_path: path.to_owned(),
            grow: None,
        }
    }

    /// The file `file` (the same as the disk) is extended, sparse, to
    /// `size` by [`Opened::grow`].
    pub(crate) fn growing(mut self, file: File, size: u64) -> Opened<D> {
        self.grow = Some((file, size));
        self
    }

    /// Extends a disk-image file to the disk's size (a sparse hole).
    pub(crate) fn grow(&mut self) -> io::Result<()> {
        if let Some((file, size)) = self.grow.take() {
            if file.metadata()?.len() < size {
                file.set_len(size)?;
            }
        }
        Ok(())
    }

    /// The same target with its disk wrapped (tests: a `FaultyDisk`).
    #[cfg(test)]
    pub(crate) fn map<E>(self, wrap: impl FnOnce(D) -> E) -> Opened<E> {
        Opened {
            disk: wrap(self.disk),
            claim: self.claim,
            tools_path: self.tools_path,
            grow: self.grow,
        }
    }

    /// The path by which other programs reach the target.
    pub(crate) fn tools_path(&self) -> &Path {
        &self.tools_path
    }

    /// Runs e2fsprogs on the target (`run` gets the path to give them),
    /// without the exclusive claim, which mke2fs takes itself; the claim is
    /// taken again after, on the same device.
    pub(crate) fn run_tools<T>(&mut self, run: impl FnOnce(&Path) -> T) -> io::Result<T> {
        let Some(claim) = &mut self.claim else {
            return Ok(run(&self.tools_path));
        };
        claim.file = None;
        let result = run(&self.tools_path);
        claim.file = Some(blockdev::open_exclusive_patiently(
            &claim.device,
            false,
            PATIENCE,
        )?);
        Ok(result)
    }
}

impl Opened<File> {
    /// Opens block device `path` for writing: claimed, pinned, and checked
    /// against `checked` (see the module docs). `Err` says what is wrong;
    /// nothing was written either way.
    pub(crate) fn device(
        path: &Path,
        checked: &DeviceIdentity,
        sys: &SysRoot,
    ) -> Result<Opened<File>, OpenError> {
        let claim = blockdev::open_exclusive_patiently(path, false, PATIENCE).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                OpenError::Busy(e)
            } else {
                OpenError::Io(e)
            }
        })?;
        let device = fd_path(&claim);
        let disk = File::options().read(true).write(true).open(&device)?;
        let now = DeviceIdentity::of(&disk, sys).map_err(|e| OpenError::Identity(e.to_string()))?;
        let changes = now.differences(checked);
        if !changes.is_empty() {
            return Err(OpenError::NotTheSame(changes));
        }
        let usage = sys
            .disk(&now.name)
            .map_err(|e| OpenError::Identity(e.to_string()))?
            .usage();
        if !usage.is_empty() {
            return Err(OpenError::InUse(usage));
        }
        if !blockdev::lock_for_writing(&disk, Duration::from_secs(5))? {
            warn!(
                "{}: udev holds its lock; writing without it",
                path.display()
            );
        }
        Ok(Opened {
            grow: None,
            tools_path: fd_path(&disk),
            claim: Some(Claim {
                file: Some(claim),
                device: fd_path(&disk),
            }),
            disk,
        })
    }
}

/// Why the target could not be opened as the disk that was checked.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the kernel refuses exclusive access ({0}): it or one of its partitions was mounted, made swap or taken by another program since it was checked")]
    Busy(io::Error),
    #[error("it is not the disk that was checked: {}", .0.join(", "))]
    NotTheSame(Vec<String>),
    #[error("it is in use now: {}", .0.join("; "))]
    InUse(Vec<String>),
    #[error("reading what it is: {0}")]
    Identity(String),
    #[error("{0}")]
    File(String),
}

/// What identifies a disk-image file: its inode.
pub fn file_identity(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_difference_is_named() {
        let checked = DeviceIdentity {
            name: "sdb".into(),
            number: (8, 16),
            size: 1 << 30,
            serial: Some("S1".into()),
            wwid: None,
        };
        assert_eq!(checked.differences(&checked), Vec::<String>::new());
        let other = DeviceIdentity {
            name: "sdc".into(),
            number: (8, 32),
            size: 2 << 30,
            serial: Some("S2".into()),
            wwid: Some("naa.5000".into()),
        };
        assert_eq!(
            other.differences(&checked),
            [
                "the name was sdb, now sdc",
                "the device number was 8:16, now 8:32",
                "the size was 1073741824, now 2147483648",
                "the serial was S1, now S2",
                "the WWID was none, now naa.5000",
            ]
        );
    }
}
