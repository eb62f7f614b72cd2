//! Where the harness keeps its files.
//!
//! - the **cache** (`ABNIX_SYSTEST_CACHE`, default `<target>/systest-cache`)
//!   holds what is fetched once and reused by every run: the Debian kernel;
//! - **run directories** (`<target>/systest-runs/<name>`) hold one test's
//!   disks, images and console transcripts; each is emptied when a test
//!   starts. A failed test keeps everything, for its post-mortem; a passed
//!   one keeps only its console transcripts ([`keep_only_logs`]): its disks
//!   and buckets take up to 900 MiB each, 9 GiB for a whole run, on a disk
//!   CI shares.
//!
//! `<target>` is `CARGO_TARGET_DIR` when set, else the workspace's `target/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// The directory for downloads reused across runs.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ABNIX_SYSTEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("systest-cache"),
    }
}

/// Removes from a run directory everything but the console transcripts
/// (`*.log`): what a passed test leaves behind.
pub fn keep_only_logs(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            keep_only_logs(&path)?;
            // Left in place when it still holds a transcript.
            let _ = std::fs::remove_dir(&path);
        } else if path.extension().is_none_or(|ext| ext != "log") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// A fresh, empty directory for the test called `name`, kept after the test.
pub fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = target_dir().join("systest-runs").join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("emptying {}", dir.display())),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_run_keeps_only_its_transcripts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "disk.raw",
            "host-1.log",
            "fleet/bucket/v1.img.zst",
            "fleet/s3.log",
            "fleet/keys/secret",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        keep_only_logs(root).unwrap();
        assert!(root.join("host-1.log").exists());
        assert!(root.join("fleet/s3.log").exists());
        assert!(!root.join("disk.raw").exists());
        assert!(!root.join("fleet/bucket").exists());
        assert!(!root.join("fleet/keys").exists());
    }
}
