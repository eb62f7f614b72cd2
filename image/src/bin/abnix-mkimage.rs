//! abnix-mkimage: writes a root image of a directory tree in the store-path
//! layout (docs/delta.md; DESIGN §3). nix/builders/root-image.sh calls it.

use std::path::PathBuf;

use abnix_image::{erofs, ext4};
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
            erofs::write_file(&tree, erofs::Options { uuid, time }, &out)
                .with_context(|| format!("writing {} from {}", out.display(), tree.display()))?;
        }
        Format::Ext4 {
            uuid,
            time,
            label,
            out,
            tree,
        } => {
            ext4::write_file(&tree, &ext4::Options { uuid, time, label }, &out)
                .with_context(|| format!("writing {} from {}", out.display(), tree.display()))?;
        }
    }
    Ok(())
}
