//! erofs images of a directory, written by the image writer the Nix side
//! uses (abnix-image, through nix/builders/root-image.sh's `abnix-mkimage
//! erofs`), so the machine tests boot the layout hosts run.

use std::path::Path;

use abnix_image::erofs;
use anyhow::{Context, Result};
use uuid::Uuid;

/// The timestamp of every file, as root-image.sh sets it.
const FIXED_TIME: u64 = 1;

/// An erofs image of the directory `root` at `out`, with `uuid`: what
/// root-image.sh makes of the same tree (every file owned by root, fixed
/// times, uncompressed, store paths at stable places).
pub fn read_only_image_of(root: &Path, uuid: Uuid, out: &Path) -> Result<()> {
    let options = erofs::Options {
        uuid,
        time: FIXED_TIME,
    };
    erofs::write_file(root, options, out)
        .with_context(|| format!("writing {} from {}", out.display(), root.display()))?;
    Ok(())
}
