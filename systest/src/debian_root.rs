//! A Debian root filesystem with systemd as PID 1, made by `mmdebstrap`
//! from Debian's packages (deb.debian.org) once and cached: the base of the
//! systemd-host fixture ([`crate::systemd_host`]).
//!
//! It is `--variant=minbase` with `systemd`, `udev`, `e2fsprogs` (for
//! `abnix-update grow`'s resize2fs) and `man-db` (`systemd-analyze verify`
//! runs man(1) for the units' `Documentation=man:` links), without recommends (no
//! systemd-timesyncd, no dbus), documentation or locales, and without what
//! no fixture uses and only makes the images bigger: udev's hardware
//! database, perl (only maintainer scripts need it) and glibc's iconv
//! modules.
//!
//! The cache directory is named after a digest of the `mmdebstrap` command
//! line, so changing what goes in builds a new tree; a fresh machine (CI)
//! builds it in about half a minute.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use abnix_formats::digest::Digest;
use anyhow::{Context, Result};

use crate::{paths, tool};

/// Debian 12, whose cloud kernel the fixtures boot.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// `mmdebstrap`'s options, without the suite, target and mirror.
const OPTIONS: &[&str] = &[
    "--quiet",
    "--variant=minbase",
    "--architectures=amd64",
    // usr-is-merged and the merged-usr hook instead of usrmerge, which
    // would bring perl.
    "--include=systemd,udev,e2fsprogs,man-db,usr-is-merged",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--aptopt=APT::Install-Recommends \"false\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--customize-hook=cd \"$1\" && rm -rf usr/lib/udev/hwdb.bin usr/lib/udev/hwdb.d \
     usr/bin/perl* usr/lib/x86_64-linux-gnu/perl* usr/share/perl* \
     usr/lib/x86_64-linux-gnu/gconv",
];

/// The cached Debian root for systemd hosts, built first if needed.
pub fn systemd_root() -> Result<PathBuf> {
    // Tests of one process share the build; the atomic rename below covers
    // separate processes.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = Digest::of(
        OPTIONS
            .iter()
            .chain(&[SUITE, MIRROR])
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
            .as_bytes(),
    )
    .to_string();
    let dir = paths::cache_dir().join("debian-root").join(&key[..16]);
    let root = dir.join("root");
    if !root.is_dir() {
        build(&dir, &root)?;
    }
    Ok(root)
}

fn build(dir: &Path, root: &Path) -> Result<()> {
    let staging = dir.join(format!(".building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "building the Debian root of the systemd hosts");
    tool::run(
        Command::new("mmdebstrap")
            .args(OPTIONS)
            .arg(SUITE)
            .arg(&staging)
            .arg(MIRROR),
    )
    .context(
        "building the systemd hosts' Debian root (mmdebstrap needs root and deb.debian.org)",
    )?;
    match std::fs::rename(&staging, root) {
        Ok(()) => Ok(()),
        // Another process finished the same build first.
        Err(_) if root.is_dir() => std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display())),
        Err(err) => Err(err).with_context(|| format!("moving into {}", root.display())),
    }
}
