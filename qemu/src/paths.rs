//! Where the harness keeps its files.
//!
//! - the **cache** (`ABNIX_SYSTEST_CACHE`, default `<target>/systest-cache`)
//!   holds what is fetched once and reused by every run: the Debian kernel;
//! - **run directories** (`<target>/systest-runs/<name>`) hold one test's
//!   disks, images and console transcripts; each is emptied when a test
//!   starts and kept afterwards, so a failure can be inspected.
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
