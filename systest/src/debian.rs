//! Debian packages fetched once into the cache with `apt-get download` and
//! unpacked there (nothing is installed, no root needed): the fixture
//! kernels and, for machines of another architecture, busybox. Needs
//! `apt-get update` to have run (for arm64 packages, with the arm64
//! architecture added: scripts/setup does both).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::tool;

/// `package` (`name:arch`) unpacked into `root`, unless it is there
/// already. `prepare` runs on the unpacked tree before it is moved into
/// place (the kernel's modules.dep is made there), so `root` only ever
/// holds a complete package.
pub fn unpacked(
    package: &str,
    root: &Path,
    prepare: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if root.exists() {
        return Ok(());
    }
    let parent = root.parent().context("cache path")?;
    let staging = parent.join(format!(".fetching-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    tracing::info!(package, "downloading a fixture package");
    tool::run(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(&staging),
    )?;
    let deb = std::fs::read_dir(&staging)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let unpacked = staging.join("root");
    tool::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    prepare(&unpacked)?;
    match std::fs::rename(&unpacked, root) {
        Ok(()) => {}
        // Another process finished the same download first.
        Err(_) if root.exists() => {}
        Err(err) => return Err(err).with_context(|| format!("moving into {}", root.display())),
    }
    std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))
}
