//! What the installer asks the running system before it writes: the seam
//! between its rules and Linux. Files (sysfs, procfs, udev's links) are
//! read under a [`SysRoot`], so a fake tree stands in for them; the rest
//! (ioctls, exclusive opens, util-linux programs) sits behind [`System`]'s
//! methods, which tests replace.

use std::io;
use std::path::PathBuf;
use std::process::Command;

use super::libblkid::Libblkid;
use abnix_core::blockdev::{self, SysRoot, UdevLink};

/// Where a tag of the kernel command line (`LABEL=…`) leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagLookup {
    /// The kernel name of the device that carries it.
    Device(String),
    /// No device carries it now.
    Missing,
    /// Nothing can tell: no udev links and no `findfs`.
    Unknown(String),
}

/// The running system, as the installer consults it.
pub trait System {
    /// sysfs, procfs and `/dev/disk` links.
    fn root(&self) -> &SysRoot;

    /// The device `major:minor` holding loop device `name`'s backing file;
    /// `None` when it has none.
    fn loop_backing_device(&self, name: &str) -> io::Result<Option<(u32, u32)>>;

    /// Whether the kernel grants exclusive access (O_EXCL) to block device
    /// `name` right now: an error (EBUSY) when anything holds it, seen from
    /// this mount namespace or not.
    fn exclusive_access(&self, name: &str) -> io::Result<()>;

    /// The device carrying `tag=value` (`LABEL`, `UUID`, `PARTUUID`,
    /// `PARTLABEL`).
    fn find_tag(&self, tag: &str, value: &str) -> io::Result<TagLookup>;

    /// How to ask libblkid.
    fn libblkid(&self) -> Libblkid;
}

/// Block device `name`'s node under the root's `dev/`.
fn dev_node(root: &SysRoot, name: &str) -> PathBuf {
    root.root.join("dev").join(name)
}

/// The running system itself: files under the root, device nodes under
/// its `dev/`, util-linux from the PATH.
impl System for SysRoot {
    fn root(&self) -> &SysRoot {
        self
    }

    fn loop_backing_device(&self, name: &str) -> io::Result<Option<(u32, u32)>> {
        let node = dev_node(self, name);
        let device = std::fs::File::open(&node)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", node.display())))?;
        blockdev::loop_backing_device(&device)
    }

    fn exclusive_access(&self, name: &str) -> io::Result<()> {
        blockdev::open_exclusive_patiently(&dev_node(self, name), false, super::device::PATIENCE)
            .map(drop)
    }

    /// udev's `/dev/disk/by-*` links; without udev, util-linux's `findfs`
    /// (libblkid probes every device itself).
    fn find_tag(&self, tag: &str, value: &str) -> io::Result<TagLookup> {
        match self.udev_link(tag, value).map_err(io::Error::other)? {
            UdevLink::Device(name) => Ok(TagLookup::Device(name)),
            UdevLink::Missing => Ok(TagLookup::Missing),
            UdevLink::NoUdev => findfs(tag, value),
        }
    }

    fn libblkid(&self) -> Libblkid {
        Libblkid::default()
    }
}

/// `findfs TAG=value`: the device's path on stdout; exit status 1 when no
/// device carries the tag.
fn findfs(tag: &str, value: &str) -> io::Result<TagLookup> {
    let output = match Command::new("findfs")
        .arg(format!("{tag}={value}"))
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(TagLookup::Unknown(
                "there are no udev links (/dev/disk) and findfs (util-linux) is not installed"
                    .to_owned(),
            ))
        }
        Err(e) => return Err(e),
    };
    if !output.status.success() {
        return Ok(TagLookup::Missing);
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let name = PathBuf::from(&path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(path);
    Ok(TagLookup::Device(name))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use abnix_core::testutil::FakeRoot;
    use std::collections::{BTreeMap, BTreeSet};

    /// A made-up machine: a fake sysfs/procfs tree, and what the ioctls and
    /// util-linux would say about it.
    pub(crate) struct FakeSystem {
        pub(crate) files: FakeRoot,
        sys: SysRoot,
        /// Loop device name → the device its backing file is on.
        pub(crate) loops: BTreeMap<String, (u32, u32)>,
        /// Devices the kernel refuses exclusive access to.
        pub(crate) busy: BTreeSet<String>,
        /// findfs's answers when there is no `dev/disk`.
        pub(crate) findfs: BTreeMap<String, String>,
        pub(crate) libblkid: Libblkid,
    }

    impl FakeSystem {
        pub(crate) fn new(files: FakeRoot) -> FakeSystem {
            FakeSystem {
                sys: files.sys(),
                files,
                loops: BTreeMap::new(),
                busy: BTreeSet::new(),
                findfs: BTreeMap::new(),
                libblkid: Libblkid::default(),
            }
        }

        /// Attaches loop device `name` (made with `FakeRoot::disk`) to
        /// `file`, which lives on device `on`.
        pub(crate) fn attach_loop(&mut self, name: &str, file: &str, on: (u32, u32)) {
            self.files.write(
                &format!("sys/devices/pci0000:00/{name}/block/{name}/loop/backing_file"),
                &format!("{file}\n"),
            );
            self.loops.insert(name.to_owned(), on);
        }

        /// udev's link `dev/disk/by-<kind>/<value>` to `device`.
        pub(crate) fn udev_link(&self, kind: &str, value: &str, device: &str) {
            let dir = self.files.dir.path().join(format!("dev/disk/by-{kind}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(format!("../../{device}"), dir.join(value)).unwrap();
        }
    }

    impl System for FakeSystem {
        fn root(&self) -> &SysRoot {
            &self.sys
        }

        fn loop_backing_device(&self, name: &str) -> io::Result<Option<(u32, u32)>> {
            Ok(self.loops.get(name).copied())
        }

        fn exclusive_access(&self, name: &str) -> io::Result<()> {
            if self.busy.contains(name) {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            Ok(())
        }

        fn find_tag(&self, tag: &str, value: &str) -> io::Result<TagLookup> {
            Ok(
                match self.sys.udev_link(tag, value).map_err(io::Error::other)? {
                    UdevLink::Device(name) => TagLookup::Device(name),
                    UdevLink::Missing => TagLookup::Missing,
                    UdevLink::NoUdev => match self.findfs.get(&format!("{tag}={value}")) {
                        Some(name) => TagLookup::Device(name.clone()),
                        None => TagLookup::Missing,
                    },
                },
            )
        }

        fn libblkid(&self) -> Libblkid {
            self.libblkid.clone()
        }
    }
}
