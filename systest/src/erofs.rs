//! erofs images of a directory, written by the image writer the Nix side
//! uses (abnix-image, through nix/builders/root-image.sh's `abnix-mkimage
//! erofs`), so the machine tests boot the layout hosts run.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use abnix_image::{erofs, tree::Tree};
use anyhow::{Context, Result};
use uuid::Uuid;

/// The timestamp of every file, as root-image.sh sets it.
const FIXED_TIME: u64 = 1;

/// An erofs image of the directory `root` at `out`, with `uuid`: what
/// root-image.sh makes of the same tree (every file owned by root, fixed
/// times, uncompressed, store paths at stable places).
pub fn read_only_image_of(root: &Path, uuid: Uuid, out: &Path) -> Result<()> {
    let tree = Tree::walk(root).with_context(|| format!("walking {}", root.display()))?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let options = erofs::Options {
        uuid,
        time: FIXED_TIME,
    };
    erofs::write(&tree, options, &mut writer)
        .with_context(|| format!("writing {}", out.display()))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
