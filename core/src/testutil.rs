//! Helpers shared by the unit tests of several modules.

/// Deterministic pseudo-random bytes (xorshift), different per seed: test
/// data that is neither zeros nor compressible to nothing.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

use std::path::{Path, PathBuf};
use std::process::Command;

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
pub(crate) fn run_tool(tool: &str, args: &[&str]) -> String {
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
pub(crate) fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (loop devices, mounts): run the tests as root, as CI does"
    );
}

/// A loop device over an image file, the first free one; detached when
/// dropped, also when the test fails.
pub(crate) struct LoopDevice {
    pub(crate) path: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` with logical sectors of `sector_size`; with
    /// `partscan`, the kernel makes a device for each partition it finds.
    pub(crate) fn attach(image: &Path, sector_size: u32, partscan: bool) -> LoopDevice {
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
    pub(crate) fn add_partitions(&self) {
        run_tool("partx", &["--update", self.path.to_str().unwrap()]);
    }

    pub(crate) fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The device of partition `number`.
    pub(crate) fn partition(&self, number: u32) -> PathBuf {
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
pub(crate) struct Mounted {
    pub(crate) dir: tempfile::TempDir,
    device: PathBuf,
}

impl Mounted {
    /// Mounts `device` read-only: the kernel holds it all the same, and
    /// nothing is written to it.
    pub(crate) fn read_only(device: &Path) -> Mounted {
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
        if !matches!(unmounted, Ok(status) if status.success()) {
            if std::thread::panicking() {
                return;
            }
            panic!("umount {} failed: {unmounted:?}", self.dir.path().display());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&self.device)
            .is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// SHA-256 of a whole file, to prove it unchanged.
pub(crate) fn file_sha256(path: &Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher.finalize().into()
}
