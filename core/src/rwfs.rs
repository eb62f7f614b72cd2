//! Formatting `abnix-rw`: ext4 made by `mkfs.ext4` at the partition's
//! offset inside the whole disk (or disk-image file), then the directories a
//! host expects created with `debugfs`. No partition device, no loop device,
//! no root: the same commands work on `/dev/vda` and on a template file in a
//! Nix build sandbox.
//!
//! e2fsprogs opens `PATH?offset=N` as the filesystem starting N bytes into
//! PATH (the unix I/O manager's `offset` option), and `mkfs.ext4 -E
//! offset=N` writes there. The directories are made with `debugfs` rather
//! than `mkfs.ext4 -d DIR`: `-d` copies the staging directory's owners,
//! which outside root (the Nix sandbox) are the build user, not root.

use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use abnix_formats::layout::{PartSpec, RW_NAME};

/// Directories of a fresh `abnix-rw` with their modes: the host binds
/// `var/`, `home/` and `root/` onto `/var`, `/home` and `/root`
/// (nix/modules/host.nix), and abnix keeps its state in `/var/lib/abnix`.
pub(crate) const DIRECTORIES: &[(&str, u32)] = &[
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/lib/abnix", 0o755),
    ("home", 0o755),
    ("root", 0o700),
];

#[derive(Debug, thiserror::Error)]
pub enum RwError {
    #[error("{program} is not installed (it comes with e2fsprogs)")]
    Missing { program: &'static str },
    #[error("running {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

fn run(program: &'static str, command: &mut Command) -> Result<String, RwError> {
    let out = command.output().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RwError::Missing { program },
        _ => RwError::Spawn { program, source },
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !out.status.success() {
        return Err(RwError::Failed {
            program,
            status: out.status,
            stderr,
        });
    }
    Ok(stderr)
}

/// Fails unless `mkfs.ext4` and `debugfs` can be run, so a machine without
/// e2fsprogs is found out before anything is written.
pub fn check_tools() -> Result<(), RwError> {
    run("mkfs.ext4", Command::new("mkfs.ext4").arg("-V"))?;
    run("debugfs", Command::new("debugfs").arg("-V"))?;
    Ok(())
}

/// The filesystem at `start` inside `disk`, as e2fsprogs addresses it.
pub fn at_offset(disk: &Path, start: u64) -> PathBuf {
    let mut path = disk.as_os_str().to_owned();
    path.push(format!("?offset={start}"));
    PathBuf::from(path)
}

/// Makes the ext4 filesystem of `rw` inside `disk` (labelled `abnix-rw`,
/// with `uuid`) and its `DIRECTORIES`, owned by root.
pub fn format(disk: &Path, rw: &PartSpec, uuid: Uuid) -> Result<(), RwError> {
    run(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", RW_NAME, "-U", &uuid.to_string()])
            // A template's small abnix-rw grows to the real disk's size: 4 KiB
            // blocks and the usage type of a normal filesystem, not the 1 KiB
            // blocks and dense inodes mke2fs picks for small ones.
            .args(["-b", "4096", "-T", "default"])
            // nodiscard: nothing to discard on a fresh partition, and a
            // discard must never reach outside it. lazy_itable_init: the
            // kernel zeroes the inode tables after the first mount instead of
            // mkfs writing gigabytes of zeros (a sparse template stays
            // sparse).
            .arg("-E")
            .arg(format!("offset={},nodiscard,lazy_itable_init=1", rw.start))
            .arg(disk)
            .arg(format!("{}k", rw.size / 1024)),
    )?;
    let mut script = String::new();
    for (dir, mode) in DIRECTORIES {
        script.push_str(&format!(
            "mkdir {dir}\nset_inode_field {dir} mode 040{mode:o}\n"
        ));
    }
    // debugfs reads commands from stdin with -f -; it exits 0 even when a
    // command fails and reports on stderr after its version banner.
    let mut debugfs = Command::new("debugfs");
    debugfs
        .args(["-w", "-f", "-"])
        .arg(at_offset(disk, rw.start))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = debugfs.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RwError::Missing { program: "debugfs" },
        _ => RwError::Spawn {
            program: "debugfs",
            source,
        },
    })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(script.as_bytes())
            .map_err(|source| RwError::Spawn {
                program: "debugfs",
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| RwError::Spawn {
        program: "debugfs",
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(RwError::Failed {
            program: "debugfs",
            status: out.status,
            stderr: errors.join("; "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_formats::layout::MIB;

    fn debugfs(args: &[&str], fs: &Path) -> String {
        let out = Command::new("debugfs")
            .args(args)
            .arg(fs)
            .output()
            .expect("running debugfs (install e2fsprogs)");
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn formats_inside_a_file_with_root_owned_directories() {
        check_tools().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(64 * MIB).unwrap();
        // Bytes around the partition must survive.
        std::fs::write(file.path(), vec![0xAB; MIB as usize]).unwrap();
        file.as_file().set_len(64 * MIB).unwrap();
        let rw = PartSpec {
            number: 5,
            name: RW_NAME,
            type_guid: abnix_formats::gpt::Guid::LINUX_FILESYSTEM,
            start: MIB,
            size: 32 * MIB,
        };
        let uuid = Uuid::from_bytes([5; 16]);
        format(file.path(), &rw, uuid).unwrap();

        let bytes = std::fs::read(file.path()).unwrap();
        assert!(bytes[..MIB as usize].iter().all(|&b| b == 0xAB));
        assert!(bytes[33 * MIB as usize..].iter().all(|&b| b == 0));
        let fs = at_offset(file.path(), rw.start);
        let fsck = Command::new("e2fsck").arg("-fn").arg(&fs).output().unwrap();
        assert!(fsck.status.success(), "{fsck:?}");
        let stats = debugfs(&["-R", "stats"], &fs);
        assert!(
            stats.contains("Filesystem volume name:   abnix-rw"),
            "{stats}"
        );
        assert!(stats.contains(&format!("Filesystem UUID:          {uuid}")));
        assert!(stats.contains(&format!("Block count:              {}", 32 * MIB / 4096)));
        assert!(stats.contains("Block size:               4096"));
        for (dir, mode) in DIRECTORIES {
            let stat = debugfs(&["-R", &format!("stat {dir}")], &fs);
            assert!(stat.contains(&format!("Mode:  0{mode:o}")), "{dir}: {stat}");
            assert!(stat.contains("User:     0   Group:     0"), "{dir}: {stat}");
        }
    }

    #[test]
    fn failures_name_the_tool() {
        let missing = tempfile::tempdir().unwrap().path().join("gone.img");
        let rw = PartSpec {
            number: 5,
            name: RW_NAME,
            type_guid: abnix_formats::gpt::Guid::LINUX_FILESYSTEM,
            start: MIB,
            size: 32 * MIB,
        };
        let err = format(&missing, &rw, Uuid::nil()).unwrap_err();
        assert!(err.to_string().starts_with("mkfs.ext4 failed"), "{err}");
    }
}
