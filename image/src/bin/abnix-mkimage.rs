//! abnix-mkimage: writes a root image of a directory tree in the layout of
//! docs/delta.md, whose unchanged store paths keep their bytes.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use uuid::Uuid;

use abnix_image::{ext4, tree::Tree};

#[derive(Parser)]
#[command(version, about = "Writes a root image of a directory tree")]
struct Cli {
    #[command(subcommand)]
    format: Format,
}

#[derive(Subcommand)]
enum Format {
    /// An ext4 image, mounted read-only only (no journal, linear
    /// directories, metadata checksums seeded by a constant).
    Ext4 {
        /// The filesystem UUID (the version id).
        #[arg(short = 'U', long)]
        uuid: Uuid,
        /// Every timestamp in the image, in seconds since the epoch.
        #[arg(short = 'T', long)]
        time: u32,
        /// The volume label (at most 16 bytes).
        #[arg(short = 'L', long, default_value = "")]
        label: String,
        /// The image file to write (replaced).
        out: PathBuf,
        /// The directory the image holds.
        tree: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().format {
        Format::Ext4 {
            uuid,
            time,
            label,
            out,
            tree,
        } => {
            let tree = Tree::walk(&tree)?;
            let options = ext4::Options { uuid, time, label };
            // A new file: the writer skips the blocks that stay zero.
            let mut file =
                File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            ext4::write(&tree, &options, &mut file)
                .with_context(|| format!("writing {}", out.display()))?;
            file.sync_all()
                .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}
