//! erofs images made with `mkfs.erofs` from a directory, as the Nix side
//! makes a version's root (nix/builders/root-image.sh).

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use uuid::Uuid;

use crate::tool;

/// The timestamp of every file, as root-image.sh sets it.
const FIXED_TIME: &str = "1";

/// An erofs image of the directory `root` at `out`, with `uuid`.
///
/// The same options as root-image.sh, for the same reasons: deterministic
/// (fixed times, every file owned by root), uncompressed (the image object
/// is compressed per chunk already) and without inline data (the tails of
/// small files in the metadata blocks would drag them into every delta).
pub fn read_only_image_of(root: &Path, uuid: Uuid, out: &Path) -> Result<()> {
    tool::run(
        Command::new("mkfs.erofs")
            .args([
                "--quiet",
                "-T",
                FIXED_TIME,
                "--all-root",
                "-E",
                "noinline_data",
            ])
            .arg("-U")
            .arg(uuid.to_string())
            .arg(out)
            .arg(root),
    )?;
    Ok(())
}
