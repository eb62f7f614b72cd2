//! Helpers shared by the unit tests of several modules and, through the
//! feature `testutil`, the installer's (test data:
//! `abnix_formats::testutil`).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::blockdev::SysRoot;

/// The Debian package a test's tool comes with, for the message when it is
/// missing.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "mkfs.xfs" => "xfsprogs",
        "mkfs.btrfs" => "btrfs-progs",
        "mkntfs" => "ntfs-3g",
        "mkfs.f2fs" => "f2fs-tools",
        "make-bcache" => "bcache-tools",
        "cryptsetup" => "cryptsetup-bin",
        "xorriso" => "xorriso",
        "losetup" | "mount" | "umount" => "mount",
        "mkfs.fat" => "dosfstools",
        "mkfs.ext4" | "mkfs.ext3" | "mkfs.ext2" => "e2fsprogs",
        "mkfs.erofs" => "erofs-utils",
        "sgdisk" => "gdisk",
        _ => "util-linux",
    }
}

/// Runs `tool` and returns its stdout; panics (never skips) naming the
/// Debian package when the tool is missing, and with its output when it
/// fails.
pub fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (install {}): {e}", package_of(tool)));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test unless it runs as root, which loop devices and mounts
/// need (CI runs the tests as root).
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (loop devices, mounts): run the tests as root, as CI does"
    );
}

/// A loop device over an image file, the first free one; detached when
/// dropped, also when the test fails.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` with logical sectors of `sector_size`; with
    /// `partscan`, the kernel makes a device for each partition it finds.
    pub fn attach(image: &Path, sector_size: u32, partscan: bool) -> LoopDevice {
        let sector_size = sector_size.to_string();
        let mut args = vec!["--find", "--show", "--sector-size", &sector_size];
        if partscan {
            args.push("--partscan");
        }
        args.push(image.to_str().expect("a UTF-8 image path"));
        LoopDevice {
            path: PathBuf::from(run_tool("losetup", &args).trim()),
        }
    }

    /// Makes the partition devices (`/dev/loopNpM`) of the table on it:
    /// partx adds what the kernel did not find itself (kernels built
    /// without CONFIG_EFI_PARTITION, as on some CI hosts).
    pub fn add_partitions(&self) {
        run_tool("partx", &["--update", self.path.to_str().unwrap()]);
    }

    #[cfg(test)]
    pub(crate) fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The device of partition `number`.
    pub fn partition(&self, number: u32) -> PathBuf {
        PathBuf::from(format!("{}p{number}", self.path.display()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// A filesystem mounted on a temporary directory; unmounted when dropped,
/// also when the test fails.
pub struct Mounted {
    dir: tempfile::TempDir,
    device: PathBuf,
}

impl Mounted {
    /// Mounts `device` read-only: the kernel holds it all the same, and
    /// nothing is written to it.
    pub fn read_only(device: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        run_tool(
            "mount",
            &[
                "-o",
                "ro",
                device.to_str().unwrap(),
                dir.path().to_str().unwrap(),
            ],
        );
        Mounted {
            dir,
            device: device.to_owned(),
        }
    }
}

impl Drop for Mounted {
    /// Unmounts, then waits until the kernel lets go of the device: on some
    /// kernels `umount` returns before the block device's holder is released,
    /// and an exclusive open right after it is refused as busy.
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let unmounted = Command::new("umount").arg(self.dir.path()).status();
        // A test already failing: unmounted if possible, but no second panic.
        if std::thread::panicking() {
            return;
        }
        assert!(
            matches!(unmounted, Ok(status) if status.success()),
            "umount {} failed: {unmounted:?}",
            self.dir.path().display()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let released = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(&self.device)
                .is_ok()
        };
        while !released() {
            // Said here, not later as a puzzling "busy" from the code under test.
            assert!(
                std::time::Instant::now() < deadline,
                "{} still held 10 s after umount",
                self.device.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// SHA-256 of a whole file, to prove it unchanged.
pub fn file_sha256(path: &Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher.finalize().into()
}

/// A fake sysfs/procfs tree (also used by the installer's tests).
pub struct FakeRoot {
    pub dir: tempfile::TempDir,
}

impl FakeRoot {
    // It makes a temporary directory: not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> FakeRoot {
        let root = FakeRoot {
            dir: tempfile::tempdir().unwrap(),
        };
        root.write("proc/self/mountinfo", "");
        root.write("proc/cmdline", "");
        root
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub fn sys(&self) -> SysRoot {
        SysRoot::new(self.dir.path())
    }

    /// A disk the way sysfs shows one: `sys/block/NAME` links into
    /// `sys/devices`, partitions are subdirectories.
    pub fn disk(
        &self,
        name: &str,
        dev: (u32, u32),
        sectors: u64,
        parts: &[(&str, u32)],
    ) -> PathBuf {
        let rel = format!("sys/devices/pci0000:00/{name}/block/{name}");
        let d = |f: &str, c: &str| self.write(&format!("{rel}/{f}"), &format!("{c}\n"));
        d("size", &sectors.to_string());
        d("queue/logical_block_size", "512");
        d("removable", "0");
        d("ro", "0");
        d("dev", &format!("{}:{}", dev.0, dev.1));
        fs::create_dir_all(self.dir.path().join(&rel).join("holders")).unwrap();
        for (i, (part, number)) in parts.iter().enumerate() {
            d(&format!("{part}/partition"), &number.to_string());
            d(
                &format!("{part}/dev"),
                &format!("{}:{}", dev.0, dev.1 + 1 + i as u32),
            );
            fs::create_dir_all(self.dir.path().join(&rel).join(part).join("holders")).unwrap();
        }
        for dir in ["sys/block", "sys/class/block", "sys/dev/block"] {
            fs::create_dir_all(self.dir.path().join(dir)).unwrap();
        }
        let link = |target: String, at: String| {
            symlink(target, self.dir.path().join(at)).unwrap();
        };
        link(
            format!("../devices/pci0000:00/{name}/block/{name}"),
            format!("sys/block/{name}"),
        );
        link(
            format!("../../devices/pci0000:00/{name}/block/{name}"),
            format!("sys/class/block/{name}"),
        );
        link(
            format!("../../devices/pci0000:00/{name}/block/{name}"),
            format!("sys/dev/block/{}:{}", dev.0, dev.1),
        );
        for (i, (part, _)) in parts.iter().enumerate() {
            link(
                format!("../../devices/pci0000:00/{name}/block/{name}/{part}"),
                format!("sys/class/block/{part}"),
            );
            link(
                format!("../../devices/pci0000:00/{name}/block/{name}/{part}"),
                format!("sys/dev/block/{}:{}", dev.0, dev.1 + 1 + i as u32),
            );
        }
        self.dir.path().join(rel)
    }
}
