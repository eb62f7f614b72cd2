//! ext4 images on plain files (no root, no loop device): read-only roots by
//! abnix-image's writer, empty read-write partitions by `mkfs.ext4`.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use abnix_image::ext4;
use anyhow::{Context, Result};
use uuid::Uuid;

use crate::tool;
use crate::tree::Tree;

/// The time every fixture image claims for its files and its own creation,
/// so building the same tree twice gives the same bytes (and versions that
/// share files delta well). 2023-11-14T22:13:20Z.
pub const FIXED_TIME: u64 = 1_700_000_000;

/// A read-only root filesystem holding `tree`, sized to fit, at `out`.
/// `staging` is a scratch directory path (it must not exist); it is removed
/// afterwards.
pub fn read_only_image(
    tree: &Tree,
    uuid: Uuid,
    label: &str,
    out: &Path,
    staging: &Path,
) -> Result<()> {
    tree.write_directory(staging)?;
    read_only_image_of(staging, uuid, label, out)?;
    std::fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))
}

/// A read-only root filesystem holding what the directory `root` holds,
/// sized to fit, at `out`: written by the Nix side's writer (abnix-image,
/// as nix/builders/root-image.sh runs it), in the store-path layout, every
/// file root's and at [`FIXED_TIME`], the checksums seeded by a constant
/// whatever the UUID (docs/delta.md).
pub fn read_only_image_of(root: &Path, uuid: Uuid, label: &str, out: &Path) -> Result<()> {
    let options = ext4::Options {
        uuid,
        time: FIXED_TIME,
        label: label.to_owned(),
    };
    ext4::write_file(root, &options, out)
        .with_context(|| format!("writing {} from {}", out.display(), root.display()))?;
    Ok(())
}

/// An empty ext4 filesystem of `size` bytes at `out` (a read-write
/// partition), with a journal.
pub fn empty_image(uuid: Uuid, label: &str, size: u64, out: &Path) -> Result<()> {
    create_sized(out, size)?;
    tool::run(mkfs(&uuid.to_string(), label).arg(out))?;
    Ok(())
}

fn create_sized(out: &Path, size: u64) -> Result<()> {
    File::create(out)
        .and_then(|file| file.set_len(size))
        .with_context(|| format!("creating {}", out.display()))
}

/// mkfs.ext4 with the options every image shares; the caller adds the
/// file (and more options before it).
fn mkfs(uuid: &str, label: &str) -> Command {
    let mut command = Command::new("mkfs.ext4");
    command
        .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
        .args([
            "-q", "-F", "-T", "default", "-b", "4096", "-I", "256", "-m", "0",
        ])
        .args(["-U", uuid, "-L", label]);
    command
}
