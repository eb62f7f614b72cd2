//! Disk-image files for machines that boot a fixture kernel directly (no
//! installer, no bootloader): a GPT with named partitions holding images.
//!
//! The installer and boot control write real abnix disks; these exist to test
//! the harness and the fixtures on their own.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use abnix_formats::disk::{Disk, Region};
use anyhow::{Context, Result};
use uuid::Uuid;

use crate::{ext4, tool};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// GPT partition types, as sgdisk's short codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    /// "EFI system partition" (c12a7328-…), the type of `abnix-esp`.
    EfiSystem,
    /// "Linux x86-64 root (/)" (4f68bce3-…), the type of abnix's slots.
    LinuxRootX86_64,
    /// "Linux filesystem" (0fc63daf-…), the type of `abnix-rw`.
    LinuxFilesystem,
}

impl PartitionType {
    fn sgdisk_code(self) -> &'static str {
        match self {
            PartitionType::EfiSystem => "ef00",
            PartitionType::LinuxRootX86_64 => "8304",
            PartitionType::LinuxFilesystem => "8300",
        }
    }
}

/// One partition: its GPT name, its type, and the image it holds (its size
/// rounded up to 1 MiB).
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub kind: PartitionType,
    pub image: PathBuf,
}

/// Creates `path`: a GPT disk with `partitions` in order, 1 MiB aligned,
/// each holding its image.
pub fn gpt_disk(path: &Path, partitions: &[Partition]) -> Result<()> {
    let mut sgdisk = Command::new("sgdisk");
    sgdisk.arg("--clear");
    let mut start = MIB;
    let mut placed = Vec::new();
    for (index, partition) in partitions.iter().enumerate() {
        let len = std::fs::metadata(&partition.image)
            .with_context(|| format!("reading {}", partition.image.display()))?
            .len()
            .div_ceil(MIB)
            * MIB;
        let number = index + 1;
        sgdisk
            .arg(format!(
                "--new={number}:{}:{}",
                start / SECTOR,
                (start + len) / SECTOR - 1
            ))
            .arg(format!(
                "--typecode={number}:{}",
                partition.kind.sgdisk_code()
            ))
            .arg(format!("--change-name={number}:{}", partition.name));
        placed.push((start, len));
        start += len;
    }
    // Room for the backup GPT at the end.
    let size = start + MIB;
    File::create(path)
        .and_then(|file| file.set_len(size))
        .with_context(|| format!("creating {}", path.display()))?;
    tool::run(sgdisk.arg(path))?;

    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for (partition, (start, len)) in partitions.iter().zip(placed) {
        let mut image = File::open(&partition.image)
            .with_context(|| format!("opening {}", partition.image.display()))?;
        let mut region = Region::new(&mut disk, start, len);
        io::copy(&mut image, &mut region).with_context(|| {
            format!(
                "writing {} into {}",
                partition.image.display(),
                partition.name
            )
        })?;
    }
    disk.sync()
        .with_context(|| format!("syncing {}", path.display()))
}

/// A disk like a freshly installed abnix machine's, minus the ESP: `abnix-a`
/// holding `root_image`, and an empty ext4 `abnix-rw` of `rw_size` bytes
/// (made in a scratch file `<disk>.rw.ext4` first).
pub fn slot_disk(path: &Path, root_image: &Path, rw_size: u64) -> Result<()> {
    let rw_image = path.with_extension("rw.ext4");
    ext4::empty_image(Uuid::new_v4(), "abnix-rw", rw_size, &rw_image)?;
    gpt_disk(
        path,
        &[
            Partition {
                name: "abnix-a".to_owned(),
                kind: PartitionType::LinuxRootX86_64,
                image: root_image.to_owned(),
            },
            Partition {
                name: "abnix-rw".to_owned(),
                kind: PartitionType::LinuxFilesystem,
                image: rw_image.clone(),
            },
        ],
    )?;
    std::fs::remove_file(&rw_image).with_context(|| format!("removing {}", rw_image.display()))
}
