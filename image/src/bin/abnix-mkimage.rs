//! abnix-mkimage: writes a root image of a directory tree in the store-path
//! layout (docs/delta.md; DESIGN §3). nix/builders/root-image.sh calls it.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use abnix_image::{erofs, ext4, tree::Tree};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use uuid::Uuid;

#[derive(Parser)]
#[command(version, about = "Writes an abnix root image of a directory tree")]
struct Cli {
    #[command(subcommand)]
    format: Format,
}

#[derive(Subcommand)]
enum Format {
    /// An erofs image (plain, uncompressed; readable by Linux 5.4 and later).
    /// Every file is owned by root and has the build time.
    Erofs {
        /// The filesystem UUID: the version id.
        #[arg(short = 'U', long = "uuid")]
        uuid: Uuid,
        /// The build time, every file's time (seconds since the epoch).
        #[arg(short = 'T', long = "time", default_value_t = 0)]
        time: u64,
        /// The image file to write (replaced if it exists).
        out: PathBuf,
        /// The directory to put in the image.
        tree: PathBuf,
    },
    /// An ext4 image that Linux mounts read-only only (4.4 and later: no
    /// journal, linear directories, metadata checksums seeded by a
    /// constant). Every file is owned by root and has the build time.
    Ext4 {
        /// The filesystem UUID: the version id.
        #[arg(short = 'U', long = "uuid")]
        uuid: Uuid,
        /// The build time, every file's time (seconds since the epoch,
        /// before 2038).
        #[arg(short = 'T', long = "time", default_value_t = 0)]
        time: u64,
        /// The volume label (at most 16 bytes).
        #[arg(short = 'L', long = "label", default_value = "")]
        label: String,
        /// The image file to write (replaced if it exists).
        out: PathBuf,
        /// The directory to put in the image.
        tree: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().format {
        Format::Erofs {
            uuid,
            time,
            out,
            tree,
        } => {
            let tree = Tree::walk(&tree).with_context(|| format!("walking {}", tree.display()))?;
            write_file(&out, |writer| {
                erofs::write(&tree, erofs::Options { uuid, time }, writer)
                    .map(drop)
                    .map_err(Into::into)
            })?;
        }
        Format::Ext4 {
            uuid,
            time,
            label,
            out,
            tree,
        } => {
            let tree = Tree::walk(&tree).with_context(|| format!("walking {}", tree.display()))?;
            let options = ext4::Options { uuid, time, label };
            // A new file reads as zeros, as the ext4 writer needs.
            write_file(&out, |writer| {
                ext4::write(&tree, &options, writer)
                    .map(drop)
                    .map_err(Into::into)
            })?;
        }
    }
    Ok(())
}

/// Creates `out` (replacing it), lets `write` fill it and syncs it.
fn write_file(
    out: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> anyhow::Result<()>,
) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    write(&mut writer).with_context(|| format!("writing {}", out.display()))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))
}
