//! Linux block devices: what sysfs and procfs say about the disks, the disk
//! behind a path, and the few block-device ioctls abnix needs.
//!
//! Every sysfs/procfs read goes through a [`SysRoot`], normally `/`, so
//! tests run on a fake `sys/` and `proc/` tree in a temporary directory.
//!
//! Sysfs facts used (Documentation/ABI/stable/sysfs-block in the kernel):
//! `/sys/block/<disk>/` lists whole disks, each partition is a subdirectory
//! holding a `partition` file; `size` counts 512-byte units whatever the
//! logical sector size; `queue/logical_block_size`, `removable`, `ro`, `dev`
//! ("major:minor"), `holders/`, `serial`/`device/serial` and `wwid`/
//! `device/wwid` (what identifies the drive itself), `loop/backing_file` of
//! a loop device; `/sys/dev/block/<major>:<minor>` links to a device's
//! directory. udev's `/dev/disk/by-label/…` (and `by-uuid`, `by-partuuid`,
//! `by-partlabel`) links are read under the same root.

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Errors reading the system's view of block devices.
#[derive(Debug, thiserror::Error)]
pub enum BlockDevError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unexpected content {content:?} ({expected})")]
    Malformed {
        path: PathBuf,
        content: String,
        expected: &'static str,
    },
    /// The path's filesystem is not on a block device (tmpfs, overlay, NFS,
    /// ...): st_dev has no `/sys/dev/block` entry.
    #[error("{path} is not on a block device (device {major}:{minor})")]
    NotOnBlockDevice {
        path: PathBuf,
        major: u32,
        minor: u32,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BlockDevError + '_ {
    move |source| BlockDevError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The root under which `sys/` and `proc/` are read.
#[derive(Debug, Clone)]
pub struct SysRoot {
    pub root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> SysRoot {
        SysRoot::new("/")
    }
}

/// A whole disk, as sysfs describes it, and what uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Kernel name, e.g. `vda`, `nvme0n1`.
    pub name: String,
    /// `/dev/<name>`.
    pub dev_path: PathBuf,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub removable: bool,
    pub read_only: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// The World Wide Name or other worldwide identifier the drive reports
    /// (`wwid`), when it has one.
    pub wwid: Option<String>,
    /// Kernel names of the partitions, by partition number.
    pub partitions: Vec<String>,
    /// Devices stacked on the disk or its partitions (dm, md, bcache...).
    pub holders: Vec<String>,
    /// `(device, mount point)` for the disk and each partition mounted.
    pub mounts: Vec<(String, String)>,
    /// Active swap areas on the disk or its partitions (`/dev/...` paths).
    pub swaps: Vec<String>,
    /// Other users sysfs does not list, one line each, added by whoever
    /// knows them (a loop device reading a file from the disk, the kernel
    /// refusing exclusive access); empty from [`SysRoot`].
    pub other_users: Vec<String>,
}

impl DiskInfo {
    /// Why the disk is in use, one line each; empty when it is not.
    pub fn usage(&self) -> Vec<String> {
        let mut why = Vec::new();
        why.extend(
            self.mounts
                .iter()
                .map(|(dev, at)| format!("{dev} is mounted on {at}")),
        );
        why.extend(self.swaps.iter().map(|s| format!("{s} is active swap")));
        why.extend(self.holders.iter().map(|h| format!("{h} is stacked on it")));
        why.extend(self.other_users.iter().cloned());
        why
    }
}

/// A block device that is not a candidate disk, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDevice {
    pub name: String,
    pub reason: &'static str,
}

/// The result of [`SysRoot::disks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskScan {
    /// Whole disks, in [`natural_cmp`] order of their names.
    pub disks: Vec<DiskInfo>,
    /// Virtual and empty devices, in the same order.
    pub skipped: Vec<SkippedDevice>,
}

/// The device a path lives on (see [`SysRoot::device_of_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name of the device itself, e.g. `vda3` or `dm-0`.
    pub name: String,
    major: u32,
    minor: u32,
    /// The partition number when the device is a partition.
    pub partition: Option<u32>,
    /// The whole disk: the parent of a partition, else the device itself.
    pub disk: String,
}

/// Orders kernel device names the way people count them: runs of digits
/// compare as numbers, runs of letters first by length, then alphabetically.
/// So `sdz < sdaa` (the kernel names the 27th SCSI disk `sdaa`),
/// `nvme2n1 < nvme10n1` and `vda < vdb < vdaa`. Across kinds the same rule
/// gives `sda < vdb < nvme0n1 < sdaa < xvda < mmcblk0`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let (ra, rest_a) = split_run(a);
        let (rb, rest_b) = split_run(b);
        let a_digits = ra.as_bytes()[0].is_ascii_digit();
        let b_digits = rb.as_bytes()[0].is_ascii_digit();
        let ord = match (a_digits, b_digits) {
            (true, true) => {
                let (na, nb) = (ra.trim_start_matches('0'), rb.trim_start_matches('0'));
                na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
            }
            // Digits before letters: "sd1" < "sda".
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => ra.len().cmp(&rb.len()).then_with(|| ra.cmp(rb)),
        };
        if ord != Ordering::Equal {
            return ord;
        }
        (a, b) = (rest_a, rest_b);
    }
}

/// Splits off the leading run of digits or non-digits.
fn split_run(s: &str) -> (&str, &str) {
    let digits = s.as_bytes()[0].is_ascii_digit();
    let end = s
        .bytes()
        .position(|c| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Why a kernel block device is never an installation target, judged by its
/// name; `None` for a candidate disk.
fn virtual_device(name: &str) -> Option<&'static str> {
    let kinds: [(&str, &str); 6] = [
        ("loop", "loop device"),
        ("zram", "compressed RAM disk (zram)"),
        ("ram", "RAM disk"),
        ("sr", "optical drive"),
        ("dm-", "device-mapper volume"),
        ("md", "software RAID array"),
    ];
    kinds
        .iter()
        .find(|(prefix, _)| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                prefix.ends_with('-') || rest.starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .map(|(_, reason)| *reason)
}

/// One line of `/proc/self/mountinfo` (proc(5)), in mount order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `st_dev` of the mounted filesystem: a block device's number, or an
    /// anonymous one (major 0) for tmpfs, overlay and the like.
    pub major: u32,
    pub minor: u32,
    pub mount_point: String,
    fs_type: String,
    /// What was mounted, as the filesystem names it (`/dev/sda1`,
    /// `overlay`, `tmpfs`).
    source: String,
    /// The filesystem's own options, e.g. an overlay's
    /// `lowerdir=…,upperdir=…`.
    super_options: String,
}

impl MountEntry {
    /// An overlay's layers, top first: `upperdir` (when writable) and each
    /// of `lowerdir`'s directories (`:`-separated, `\:` escaping a colon).
    pub fn overlay_layers(&self) -> Vec<String> {
        if self.fs_type != "overlay" {
            return Vec::new();
        }
        let mut layers = Vec::new();
        for option in split_unescaped(&self.super_options, ',') {
            if let Some(dir) = option.strip_prefix("upperdir=") {
                layers.push(dir.to_owned());
            } else if let Some(dirs) = option.strip_prefix("lowerdir=") {
                layers.extend(split_unescaped(dirs, ':').map(|d| d.replace("\\:", ":")));
            }
        }
        layers
    }

    /// Whether `path` (absolute, normalized) is at or below this mount
    /// point.
    fn contains(&self, path: &str) -> bool {
        self.mount_point == "/"
            || path == self.mount_point
            || path
                .strip_prefix(&self.mount_point)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Splits at `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut escaped = false;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.is_empty())
}

/// The mount that holds `path`: the last one (mounts stack in mount order)
/// whose mount point is the longest prefix of it.
pub fn mount_of<'a>(mounts: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.contains(path))
        .max_by_key(|(i, m)| (m.mount_point.len(), *i))
        .map(|(_, m)| m)
}

/// Undoes the octal escapes (`\040` for a space) the kernel writes in
/// mountinfo and /proc/swaps paths.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_dev_number(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl SysRoot {
    pub fn new(root: impl Into<PathBuf>) -> SysRoot {
        SysRoot { root: root.into() }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// A sysfs attribute, trimmed; `None` when the file does not exist.
    fn attr(&self, dir: &Path, name: &str) -> Result<Option<String>, BlockDevError> {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    fn number_attr<T: std::str::FromStr>(
        &self,
        dir: &Path,
        name: &str,
        expected: &'static str,
    ) -> Result<T, BlockDevError> {
        let path = dir.join(name);
        let text = self.attr(dir, name)?.ok_or_else(|| BlockDevError::Io {
            path: path.clone(),
            source: io::ErrorKind::NotFound.into(),
        })?;
        text.parse().map_err(|_| BlockDevError::Malformed {
            path,
            content: text,
            expected,
        })
    }

    fn dev_number(&self, dir: &Path) -> Result<(u32, u32), BlockDevError> {
        let text = self.attr(dir, "dev")?.unwrap_or_default();
        parse_dev_number(&text).ok_or_else(|| BlockDevError::Malformed {
            path: dir.join("dev"),
            content: text,
            expected: "major:minor",
        })
    }

    /// Names in a directory, or nothing if it does not exist.
    fn list(&self, dir: &Path) -> Result<Vec<String>, BlockDevError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(
                entry
                    .map_err(io_error(dir))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        names.sort_by(|a, b| natural_cmp(a, b));
        Ok(names)
    }

    /// The mount table, `/proc/self/mountinfo`.
    pub fn mount_table(&self) -> Result<Vec<MountEntry>, BlockDevError> {
        let path = self.path("proc/self/mountinfo");
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let mut mounts = Vec::new();
        for line in text.lines() {
            // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
            let fields: Vec<&str> = line.split(' ').collect();
            let parsed = fields.get(2).and_then(|d| parse_dev_number(d));
            let after = fields
                .iter()
                .position(|f| *f == "-")
                .map(|i| &fields[i + 1..]);
            match (parsed, fields.get(4), after) {
                (Some((major, minor)), Some(mount_point), Some([fs_type, source, rest @ ..])) => {
                    mounts.push(MountEntry {
                        major,
                        minor,
                        mount_point: unescape_octal(mount_point),
                        fs_type: unescape_octal(fs_type),
                        source: unescape_octal(source),
                        super_options: rest.first().map(|o| unescape_octal(o)).unwrap_or_default(),
                    })
                }
                _ => {
                    return Err(BlockDevError::Malformed {
                        path,
                        content: line.to_owned(),
                        expected: "a mountinfo line",
                    })
                }
            }
        }
        Ok(mounts)
    }

    /// Active swap areas (first column of /proc/swaps); none when the kernel
    /// has no swap support and so no such file.
    fn swaps(&self) -> Result<Vec<String>, BlockDevError> {
        let path = self.path("proc/swaps");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&path)(e)),
        };
        Ok(text
            .lines()
            .skip(1) // "Filename Type Size Used Priority"
            .filter_map(|l| l.split_whitespace().next())
            .map(unescape_octal)
            .collect())
    }

    /// Every block device in `sys/block`: the disks with what uses them, and
    /// the virtual devices (loop, zram, RAM disks, optical drives,
    /// device-mapper and md arrays) and empty drives skipped, with reasons.
    /// Both lists are in [`natural_cmp`] order.
    pub fn disks(&self) -> Result<DiskScan, BlockDevError> {
        let mounts = self.mount_table()?;
        let swaps = self.swaps()?;
        let mut scan = DiskScan {
            disks: Vec::new(),
            skipped: Vec::new(),
        };
        for name in self.list(&self.path("sys/block"))? {
            if let Some(reason) = virtual_device(&name) {
                scan.skipped.push(SkippedDevice { name, reason });
                continue;
            }
            let info = self.disk_with(&name, &mounts, &swaps)?;
            if info.size_bytes == 0 {
                scan.skipped.push(SkippedDevice {
                    name,
                    reason: "no medium (size 0)",
                });
                continue;
            }
            scan.disks.push(info);
        }
        Ok(scan)
    }

    /// One disk by kernel name (`vda`, not `/dev/vda`), e.g. the one given
    /// on the command line.
    pub fn disk(&self, name: &str) -> Result<DiskInfo, BlockDevError> {
        self.disk_with(name, &self.mount_table()?, &self.swaps()?)
    }

    fn disk_with(
        &self,
        name: &str,
        mounts: &[MountEntry],
        swaps: &[String],
    ) -> Result<DiskInfo, BlockDevError> {
        let dir = self.path("sys/block").join(name);
        if !dir.exists() {
            return Err(io_error(&dir)(io::ErrorKind::NotFound.into()));
        }
        let sectors: u64 = self.number_attr(&dir, "size", "a number of 512-byte units")?;
        let logical_sector_size =
            self.number_attr(&dir, "queue/logical_block_size", "a sector size in bytes")?;
        let flag = |attr: &str| -> Result<bool, BlockDevError> {
            Ok(self.attr(&dir, attr)?.as_deref() == Some("1"))
        };
        let text = |attr: &str| -> Result<Option<String>, BlockDevError> {
            Ok(self.attr(&dir, attr)?.filter(|s| !s.is_empty()))
        };

        let mut partitions: Vec<(u32, String)> = Vec::new();
        for entry in self.list(&dir)? {
            let sub = dir.join(&entry);
            if !sub.is_dir() {
                continue;
            }
            if let Some(n) = self.attr(&sub, "partition")? {
                let number = n.parse().map_err(|_| BlockDevError::Malformed {
                    path: sub.join("partition"),
                    content: n,
                    expected: "a partition number",
                })?;
                partitions.push((number, entry));
            }
        }
        partitions.sort();

        let mut holders = self.list(&dir.join("holders"))?;
        let mut devices = vec![(name.to_owned(), self.dev_number(&dir)?)];
        for (_, part) in &partitions {
            let sub = dir.join(part);
            holders.extend(self.list(&sub.join("holders"))?);
            devices.push((part.clone(), self.dev_number(&sub)?));
        }
        holders.sort_by(|a, b| natural_cmp(a, b));
        holders.dedup();

        let mut disk_mounts = Vec::new();
        let mut disk_swaps = Vec::new();
        for (dev, (major, minor)) in &devices {
            let dev_path = format!("/dev/{dev}");
            disk_mounts.extend(
                mounts
                    .iter()
                    .filter(|m| (m.major, m.minor) == (*major, *minor))
                    .map(|m| (dev_path.clone(), m.mount_point.clone())),
            );
            if swaps.contains(&dev_path) {
                disk_swaps.push(dev_path);
            }
        }

        Ok(DiskInfo {
            name: name.to_owned(),
            dev_path: Path::new("/dev").join(name),
            size_bytes: sectors * 512,
            logical_sector_size,
            removable: flag("removable")?,
            read_only: flag("ro")?,
            model: text("device/model")?,
            serial: match text("serial")? {
                Some(s) => Some(s),
                None => text("device/serial")?,
            },
            wwid: match text("wwid")? {
                Some(s) => Some(s),
                None => text("device/wwid")?,
            },
            partitions: partitions.into_iter().map(|(_, p)| p).collect(),
            holders,
            mounts: disk_mounts,
            swaps: disk_swaps,
            other_users: Vec::new(),
        })
    }

    /// The block device holding `path`'s filesystem: `st_dev` of the path
    /// (a real path, stat'ed as is), then [`SysRoot::block_device`]. For
    /// `/` this finds the booted slot's partition and the disk we booted
    /// from.
    pub fn device_of_path(&self, path: &Path) -> Result<BlockDevice, BlockDevError> {
        let dev = fs::metadata(path).map_err(io_error(path))?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        self.block_device(major, minor)?
            .ok_or_else(|| BlockDevError::NotOnBlockDevice {
                path: path.to_owned(),
                major,
                minor,
            })
    }

    /// The block device numbered `major:minor`, from
    /// `sys/dev/block/<major>:<minor>`, which links to the device's sysfs
    /// directory (a partition's sits inside its disk's); `None` when there
    /// is none (tmpfs, overlay and other filesystems without a device).
    pub fn block_device(
        &self,
        major: u32,
        minor: u32,
    ) -> Result<Option<BlockDevice>, BlockDevError> {
        let link = self.path(&format!("sys/dev/block/{major}:{minor}"));
        match fs::canonicalize(&link) {
            Ok(dir) => self.device_in(&dir, major, minor).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&link)(e)),
        }
    }

    /// The block device with kernel name `name` (`sdb`, `sdb1`), from
    /// `sys/class/block/<name>`; `None` when there is none.
    pub fn block_device_named(&self, name: &str) -> Result<Option<BlockDevice>, BlockDevError> {
        let link = self.path("sys/class/block").join(name);
        let dir = match fs::canonicalize(&link) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&link)(e)),
        };
        let (major, minor) = self.dev_number(&dir)?;
        self.device_in(&dir, major, minor).map(Some)
    }

    fn device_in(&self, dir: &Path, major: u32, minor: u32) -> Result<BlockDevice, BlockDevError> {
        let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name_of(dir).unwrap_or_default();
        let partition = match self.attr(dir, "partition")? {
            Some(n) => Some(n.parse().map_err(|_| BlockDevError::Malformed {
                path: dir.join("partition"),
                content: n,
                expected: "a partition number",
            })?),
            None => None,
        };
        let disk = match partition {
            Some(_) => dir.parent().and_then(name_of).unwrap_or_default(),
            None => name.clone(),
        };
        Ok(BlockDevice {
            name,
            major,
            minor,
            partition,
            disk,
        })
    }

    /// The kernel command line (`proc/cmdline`).
    pub fn kernel_cmdline(&self) -> Result<String, BlockDevError> {
        let path = self.path("proc/cmdline");
        fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(io_error(&path))
    }

    /// Every attached loop device and its backing file as the kernel
    /// recorded the path when it was set up (`loop/backing_file`; the path
    /// may no longer resolve here).
    pub fn loop_devices(&self) -> Result<Vec<(String, String)>, BlockDevError> {
        let mut loops = Vec::new();
        for name in self.list(&self.path("sys/block"))? {
            if !name.starts_with("loop") {
                continue;
            }
            let dir = self.path("sys/block").join(&name);
            if let Some(file) = self.attr(&dir, "loop/backing_file")? {
                loops.push((name, file));
            }
        }
        Ok(loops)
    }

    /// The device udev's `dev/disk/by-<kind>/<value>` link points to, for a
    /// tag of the kernel command line (`LABEL=`, `UUID=`, `PARTUUID=`,
    /// `PARTLABEL=`). UUIDs compare without case, as blkid shows them in
    /// either.
    pub fn udev_link(&self, tag: &str, value: &str) -> Result<UdevLink, BlockDevError> {
        let kind = tag.to_ascii_lowercase();
        if !self.path("dev/disk").is_dir() {
            return Ok(UdevLink::NoUdev);
        }
        let dir = self.path("dev/disk").join(format!("by-{kind}"));
        let wanted = udev_encode(value);
        let uuid = kind.ends_with("uuid");
        let entry = self
            .list(&dir)?
            .into_iter()
            .find(|name| *name == wanted || (uuid && name.eq_ignore_ascii_case(&wanted)));
        let Some(entry) = entry else {
            return Ok(UdevLink::Missing);
        };
        let link = dir.join(entry);
        let target = fs::read_link(&link).map_err(io_error(&link))?;
        Ok(target
            .file_name()
            .map(|n| UdevLink::Device(n.to_string_lossy().into_owned()))
            .unwrap_or(UdevLink::Missing))
    }
}

/// What [`SysRoot::udev_link`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdevLink {
    /// The kernel name of the device the link points to.
    Device(String),
    /// udev runs (there is a `dev/disk`), but no device carries the tag.
    Missing,
    /// No `dev/disk` at all: no udev to ask.
    NoUdev,
}

/// A tag's value as udev writes it into a link name (udev's
/// `encode_devnode_name`): bytes other than ASCII letters, digits and
/// `#+-.:=@_` become `\xHH`.
pub(crate) fn udev_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'0'..=b'9'
            | b'A'..=b'Z'
            | b'a'..=b'z'
            | b'#'
            | b'+'
            | b'-'
            | b'.'
            | b':'
            | b'='
            | b'@'
            | b'_' => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

// Block-device ioctls. Numbers from include/uapi/linux/fs.h and blkpg.h,
// encoded as in include/uapi/asm-generic/ioctl.h (direction in bits 30..32,
// size in 16..30, type in 8..16, number in 0..8), which x86 and arm use.

const fn ioctl_none(ty: u32, nr: u32) -> u32 {
    (ty << 8) | nr
}

const fn ioctl_read(ty: u32, nr: u32, size: usize) -> u32 {
    (2 << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `BLKGETSIZE64 = _IOR(0x12, 114, size_t)`: device size in bytes (u64).
const BLKGETSIZE64: u32 = ioctl_read(0x12, 114, std::mem::size_of::<usize>());
/// `BLKRRPART = _IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: u32 = ioctl_none(0x12, 95);
/// `BLKPG = _IO(0x12, 105)`: add, delete or resize one partition.
const BLKPG: u32 = ioctl_none(0x12, 105);
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition` (linux/blkpg.h): start and length in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// Block device or regular file (an image); anything else is refused.
fn is_block_device(file: &File) -> io::Result<bool> {
    let kind = file.metadata()?.file_type();
    if kind.is_block_device() {
        Ok(true)
    } else if kind.is_file() {
        Ok(false)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a block device nor a regular file",
        ))
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Size in bytes of a block device (BLKGETSIZE64) or an image file.
pub fn device_size(file: &File) -> io::Result<u64> {
    if !is_block_device(file)? {
        return Ok(file.metadata()?.len());
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as libc::Ioctl, &mut size) })?;
    Ok(size)
}

/// Logical sector size of a block device (BLKSSZGET); 512 for an image
/// file, the size sgdisk and the kernel's loop driver assume.
pub fn logical_sector_size(file: &File) -> io::Result<u32> {
    if !is_block_device(file)? {
        return Ok(512);
    }
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size) })?;
    Ok(size as u32)
}

/// Asks the kernel to re-read a disk's partition table (BLKRRPART) after it
/// was rewritten. Fails with EBUSY while a partition is in use; a no-op for
/// an image file.
pub fn reread_partition_table(disk: &File) -> io::Result<()> {
    if !is_block_device(disk)? {
        return Ok(());
    }
    // SAFETY: BLKRRPART takes no argument.
    check(unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as libc::Ioctl, 0) })
}

/// Tells the kernel that partition `number` of `disk` now spans `length`
/// bytes from `start` (BLKPG_RESIZE_PARTITION), which works while the
/// partition is mounted, unlike re-reading the whole table. The start must
/// be the partition's current start. A no-op for an image file.
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    if !is_block_device(disk)? {
        return Ok(());
    }
    let to_arg = |v: u64| {
        libc::c_longlong::try_from(v)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
    };
    let mut part = BlkpgPartition {
        start: to_arg(start)?,
        length: to_arg(length)?,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads the argument struct and the partition struct it
    // points to, both alive for the call.
    check(unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as libc::Ioctl, &mut arg) })
}

/// `LOOP_GET_STATUS64 = 0x4C05` (linux/loop.h).
const LOOP_GET_STATUS64: u32 = 0x4C05;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// The device `major:minor` of the filesystem holding an attached loop
/// device's backing file (`lo_device` of LOOP_GET_STATUS64): where the
/// loop device reads from, whatever the backing file's path says now.
/// `None` when the loop device has no backing file (ENXIO).
pub fn loop_backing_device(loop_device: &File) -> io::Result<Option<(u32, u32)>> {
    // SAFETY: an all-zero loop_info64 is a valid value of this plain struct.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one loop_info64 through the pointer.
    let ret = unsafe {
        libc::ioctl(
            loop_device.as_raw_fd(),
            LOOP_GET_STATUS64 as libc::Ioctl,
            &mut info,
        )
    };
    match check(ret) {
        Ok(()) => {
            // The kernel encodes it with new_encode_dev, which glibc's
            // major()/minor() decode.
            let dev = info.lo_device as libc::dev_t;
            Ok(Some((libc::major(dev), libc::minor(dev))))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The device number `major:minor` of an open block device (`st_rdev`).
pub fn device_number(device: &File) -> io::Result<(u32, u32)> {
    let rdev = device.metadata()?.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// Opens a block device with O_EXCL, for reading (`write` false) or reading
/// and writing: the kernel refuses (EBUSY) while the device or one of its
/// partitions is mounted, active swap, stacked under dm or md, or opened
/// exclusively by anyone else, in any mount namespace; and while this open
/// file lives, the kernel refuses all of those to others.
pub(crate) fn open_exclusive(path: &Path, write: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .write(write)
        .custom_flags(libc::O_EXCL)
        .open(path)
}

/// `open_exclusive`, trying again for up to `patience` while the kernel
/// says busy: udev re-reading a partition table holds a device for an
/// instant, a mount or a program does for good.
pub fn open_exclusive_patiently(
    path: &Path,
    write: bool,
    patience: std::time::Duration,
) -> io::Result<File> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match open_exclusive(path, write) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

/// Takes the BSD lock (`flock(LOCK_EX)`) by which a program tells udev it
/// is writing a block device (systemd.io/BLOCK_DEVICE_LOCKING): udev then
/// leaves the device alone (no probing, no re-reading of its partition
/// table) until the lock goes with the file. Waits up to `patience` for
/// udev's own short shared lock; `false` when it could not be had.
pub fn lock_for_writing(device: &File, patience: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        // SAFETY: flock on a descriptor this File owns.
        let ret = unsafe { libc::flock(device.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        match check(ret) {
            Ok(()) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if std::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeRoot;
    use std::os::unix::fs::symlink;

    #[test]
    fn natural_order_counts_like_the_kernel() {
        let mut names = vec![
            "vdaa", "nvme10n1", "sdb", "vdb", "mmcblk0", "nvme2n1", "sdz", "vda", "sdaa", "xvda",
            "nvme0n1", "sda",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "sda", "sdb", "sdz", "vda", "vdb", "nvme0n1", "nvme2n1", "nvme10n1", "sdaa",
                "vdaa", "xvda", "mmcblk0"
            ]
        );
        assert_eq!(natural_cmp("vda10", "vda9"), Ordering::Greater);
        assert_eq!(natural_cmp("vda", "vda"), Ordering::Equal);
        assert_eq!(natural_cmp("vda", "vda1"), Ordering::Less);
    }

    #[test]
    fn disks_are_listed_with_their_users_and_virtual_devices_skipped() {
        let root = FakeRoot::new();
        let vda = root.disk(
            "vda",
            (253, 0),
            2 * 1024 * 1024 * 16,
            &[("vda1", 1), ("vda2", 2), ("vda10", 10)],
        );
        root.write("sys/devices/pci0000:00/vda/block/vda/serial", "abc123\n");
        fs::create_dir_all(vda.join("vda2/holders/dm-0")).unwrap();
        let sdb = root.disk("sdb", (8, 16), 1 << 20, &[]);
        fs::write(sdb.join("removable"), "1\n").unwrap();
        fs::write(sdb.join("ro"), "1\n").unwrap();
        fs::write(sdb.join("queue/logical_block_size"), "4096\n").unwrap();
        root.write(
            "sys/devices/pci0000:00/sdb/block/sdb/device/model",
            "USB Stick      \n",
        );
        root.disk("sda", (8, 0), 0, &[]);
        for (name, dev) in [
            ("loop0", (7, 0)),
            ("sr0", (11, 0)),
            ("dm-0", (254, 0)),
            ("zram0", (252, 0)),
            ("md127", (9, 127)),
            ("ram0", (1, 0)),
        ] {
            root.disk(name, dev, 1000, &[]);
        }
        root.write(
            "proc/self/mountinfo",
            "22 1 253:1 / /boot\\040efi rw,relatime shared:2 - vfat /dev/vda1 rw\n\
             23 1 8:16 / /iso ro - iso9660 /dev/sdb ro\n\
             24 1 0:22 / /proc rw - proc proc rw\n",
        );
        root.write(
            "proc/swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vda10                               partition\t1048572\t\t0\t\t-2\n",
        );

        let scan = root.sys().disks().unwrap();
        let names: Vec<&str> = scan.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sdb", "vda"]);
        let skipped: Vec<(&str, &str)> = scan
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                ("md127", "software RAID array"),
                ("sr0", "optical drive"),
                ("dm-0", "device-mapper volume"),
                ("ram0", "RAM disk"),
                ("sda", "no medium (size 0)"),
                ("loop0", "loop device"),
                ("zram0", "compressed RAM disk (zram)"),
            ]
        );

        let sdb = &scan.disks[0];
        assert_eq!(sdb.dev_path, Path::new("/dev/sdb"));
        assert_eq!((sdb.size_bytes, sdb.logical_sector_size), (512 << 20, 4096));
        assert!(sdb.removable && sdb.read_only);
        assert_eq!(sdb.model.as_deref(), Some("USB Stick"));
        assert_eq!(sdb.mounts, [("/dev/sdb".to_owned(), "/iso".to_owned())]);

        let vda = &scan.disks[1];
        assert_eq!(vda.size_bytes, 16 << 30, "sysfs size counts 512-byte units");
        assert!(!vda.removable && !vda.read_only);
        assert_eq!(vda.serial.as_deref(), Some("abc123"));
        assert_eq!(vda.model, None);
        assert_eq!(vda.partitions, ["vda1", "vda2", "vda10"]);
        assert_eq!(vda.holders, ["dm-0"]);
        assert_eq!(
            vda.mounts,
            [("/dev/vda1".to_owned(), "/boot efi".to_owned())]
        );
        assert_eq!(vda.swaps, ["/dev/vda10"]);
        assert_eq!(
            vda.usage(),
            [
                "/dev/vda1 is mounted on /boot efi",
                "/dev/vda10 is active swap",
                "dm-0 is stacked on it"
            ]
        );
        assert_eq!(root.sys().disk("vda").unwrap(), *vda);
    }

    #[test]
    fn an_idle_disk_has_no_usage_and_malformed_sysfs_is_named() {
        let root = FakeRoot::new();
        let vdb = root.disk("vdb", (253, 16), 1 << 21, &[("vdb1", 1)]);
        let info = root.sys().disk("vdb").unwrap();
        assert!(info.usage().is_empty());
        fs::write(vdb.join("size"), "lots\n").unwrap();
        let msg = root.sys().disk("vdb").unwrap_err().to_string();
        assert!(msg.contains("size: unexpected content \"lots\""), "{msg}");
        let msg = root.sys().disk("nope").unwrap_err().to_string();
        assert!(msg.contains("sys/block/nope"), "{msg}");
    }

    #[test]
    fn device_of_path_finds_partition_and_disk() {
        let root = FakeRoot::new();
        let here = tempfile::NamedTempFile::new().unwrap();
        let dev = fs::metadata(here.path()).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let sys = root.sys();

        let err = sys.device_of_path(here.path()).unwrap_err();
        assert!(
            matches!(err, BlockDevError::NotOnBlockDevice { .. }),
            "{err}"
        );

        // A number of its own for the disk, then the file's device number
        // linked to its third partition.
        root.disk(
            "vda",
            (u32::MAX - 10, 0),
            1 << 21,
            &[("vda1", 1), ("vda2", 2), ("vda3", 3)],
        );
        let link = root
            .dir
            .path()
            .join(format!("sys/dev/block/{major}:{minor}"));
        symlink("../../devices/pci0000:00/vda/block/vda/vda3", &link).unwrap();
        assert_eq!(
            sys.device_of_path(here.path()).unwrap(),
            BlockDevice {
                name: "vda3".into(),
                major,
                minor,
                partition: Some(3),
                disk: "vda".into(),
            }
        );

        fs::remove_file(&link).unwrap();
        symlink("../../devices/pci0000:00/vda/block/vda", &link).unwrap();
        let whole = sys.device_of_path(here.path()).unwrap();
        assert_eq!(
            (whole.name.as_str(), whole.partition, whole.disk.as_str()),
            ("vda", None, "vda")
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn ioctl_numbers_match_the_kernel_headers() {
        // Values from the kernel's encoding for 64-bit targets.
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
        assert_eq!(BLKRRPART, 0x125f);
        assert_eq!(BLKPG, 0x1269);
        assert_eq!(libc::BLKSSZGET, 0x1268);
        // 8 + 8 + 4 + 64 + 64, padded to 8: the layout the kernel copies in.
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }

    #[test]
    fn image_files_fall_back_to_their_length() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(3 << 20).unwrap();
        assert_eq!(device_size(&file).unwrap(), 3 << 20);
        assert_eq!(logical_sector_size(&file).unwrap(), 512);
        reread_partition_table(&file).unwrap();
        resize_partition(&file, 5, 1 << 20, 1 << 20).unwrap();
        let dir = File::open("/").unwrap();
        assert_eq!(
            device_size(&dir).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    /// The ioctls and the sysfs scan against the kernel itself, and sgdisk
    /// on a 4096-byte-sector device (it only assumes 512 for files).
    #[test]
    fn loop_devices_show_what_the_kernel_sees() {
        use crate::testutil::{require_root, LoopDevice};
        use abnix_formats::layout::{self, Arch, LayoutConfig, MIB};
        use abnix_formats::testutil::sgdisk_agrees_with;

        require_root("loop_devices_show_what_the_kernel_sees");

        let cfg = LayoutConfig {
            slot_size: 16 * MIB,
            esp_size: 16 * MIB,
            min_rw_size: 8 * MIB,
            arch: Arch::X86_64,
        };
        for ss in [512u32, 4096] {
            let size = 128 * MIB;
            let image = tempfile::NamedTempFile::new().unwrap();
            image.as_file().set_len(size).unwrap();
            let dev = LoopDevice::attach(image.path(), ss, true);
            let mut file = File::options()
                .read(true)
                .write(true)
                .open(&dev.path)
                .unwrap();
            assert_eq!(device_size(&file).unwrap(), size);
            assert_eq!(logical_sector_size(&file).unwrap(), ss);

            let layout = layout::compute(size, ss, &cfg).unwrap();
            let gpt = layout.to_gpt(&[ss as u8; 32]);
            gpt.write(&mut file).unwrap();
            reread_partition_table(&file).unwrap();
            sgdisk_agrees_with(&gpt, &dev.path);
            // Kernels built without partition parsers (CONFIG_EFI_PARTITION
            // off, as on some CI hosts) ignore BLKRRPART; partx parses the
            // table with libblkid and adds the partitions through BLKPG.
            let partx = std::process::Command::new("partx")
                .arg("--update")
                .arg(&dev.path)
                .status()
                .expect("running partx (util-linux)");
            assert!(partx.success());

            let sys = SysRoot::default();
            let name = dev.name();
            let info = sys.disk(&name).unwrap();
            assert_eq!((info.size_bytes, info.logical_sector_size), (size, ss));
            let parts: Vec<String> = (1..=5).map(|n| format!("{name}p{n}")).collect();
            assert_eq!(info.partitions, parts);
            let skipped = sys.disks().unwrap().skipped;
            assert!(skipped.contains(&SkippedDevice {
                name: name.clone(),
                reason: "loop device"
            }));

            // Shrink abnix-rw by 1 MiB in the kernel's view only.
            let rw = &layout.rw;
            resize_partition(&file, 5, rw.start, rw.size - MIB).unwrap();
            let sectors = fs::read_to_string(format!("/sys/block/{name}/{name}p5/size")).unwrap();
            assert_eq!(sectors.trim().parse::<u64>().unwrap() * 512, rw.size - MIB);
            let err = resize_partition(&file, 5, rw.start + MIB, rw.size).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EINVAL),
                "the start cannot move"
            );
        }
    }
}
