//! `abnix-update grow`: an abnix disk written onto a bigger disk (a cloud
//! template) takes the whole disk on its first boot.
//!
//! 1. The table: [`grow_gpt`] moves the backup GPT to the disk's end and
//!    extends `abnix-rw` to it; [`Gpt::write`] writes it backup first, then
//!    the primary, then the protective MBR, syncing after each. A power cut
//!    before the new primary header lands leaves the old primary, whose
//!    backup (in the middle of the disk, untouched) still matches it: the
//!    old table. A cut that tears the new primary makes readers fall back to
//!    the new backup at the end: the new table. Either way the disk boots,
//!    and the next boot grows what is left.
//! 2. The kernel learns the partition's new size through BLKPG (while it is
//!    mounted; nothing to do for an image file).
//! 3. The filesystem: `resize2fs` on the partition device, online when it
//!    is mounted (the kernel resizes it through its journal). Not inside a
//!    disk-image file: resize2fs opens `FILE?offset=N`, but then truncates
//!    the file to the filesystem's new size as if it started at byte 0
//!    (resize/main.c, `ftruncate64(fd, new_file_size)`), cutting off the
//!    filesystem's tail and the backup GPT. For a file only the table
//!    grows; the filesystem, then at least a block group short, grows when
//!    the disk boots.
//!
//! It runs at every boot, so finding nothing to do is cheap: it reads the
//! two GPT headers and the rw filesystem's superblock and starts no
//! process. It is idempotent: the table is written only when it changes,
//! and `resize2fs` runs only when the table just grew or the filesystem is
//! at least a block group smaller than its partition (a boot cut off
//! between the table and the filesystem). resize2fs may leave a last
//! partial group unused (when it cannot hold its own metadata), so a
//! smaller gap is never worth another run.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use abnix_core::blockdev::{self, BlockDevError, SysRoot};
use abnix_core::units::Bytes;
use abnix_formats::disk::Disk;
use abnix_formats::gpt::{Gpt, GptError};
use abnix_formats::layout::{grow_gpt, Layout, LayoutError};

/// Where `abnix-rw`'s superblock starts, in the filesystem.
const SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock read: up to `s_blocks_count_hi`.
const SUPERBLOCK_READ: usize = 0x154;
const EXT4_MAGIC: u16 = 0xEF53;
/// `EXT4_FEATURE_INCOMPAT_64BIT`: the block count's high half is valid.
const INCOMPAT_64BIT: u32 = 0x80;

/// What an ext4 superblock says about the filesystem's size. Offsets from
/// `struct ext4_super_block` (the kernel's fs/ext4/ext4.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Size {
    block_size: u64,
    blocks: u64,
    blocks_per_group: u64,
}

impl Ext4Size {
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size
    }

    pub fn group_bytes(&self) -> u64 {
        self.blocks_per_group * self.block_size
    }

    /// Parses the superblock (the bytes from its start).
    fn parse(sb: &[u8]) -> Result<Ext4Size, GrowError> {
        let bad = |why: String| GrowError::Superblock(why);
        if sb.len() < SUPERBLOCK_READ {
            return Err(bad(format!(
                "{} bytes, a superblock needs {SUPERBLOCK_READ}",
                sb.len()
            )));
        }
        let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().unwrap());
        let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
        if magic != EXT4_MAGIC {
            return Err(bad(format!(
                "magic {magic:#06x} is not ext4's {EXT4_MAGIC:#06x}"
            )));
        }
        let log = u32_at(0x18);
        // 1 KiB to 64 KiB blocks are all ext4 allows.
        if log > 6 {
            return Err(bad(format!("block size 2^(10+{log}) is out of range")));
        }
        let hi = if u32_at(0x60) & INCOMPAT_64BIT != 0 {
            u64::from(u32_at(0x150))
        } else {
            0
        };
        let blocks_per_group = u64::from(u32_at(0x20));
        if blocks_per_group == 0 {
            return Err(bad("zero blocks per group".into()));
        }
        Ok(Ext4Size {
            block_size: 1024 << log,
            blocks: hi << 32 | u64::from(u32_at(0x04)),
            blocks_per_group,
        })
    }

    /// Reads the superblock of the filesystem at `offset` in `disk`.
    pub fn read<R: Read + Seek>(disk: &mut R, offset: u64) -> Result<Ext4Size, GrowError> {
        let mut sb = vec![0u8; SUPERBLOCK_READ];
        disk.seek(SeekFrom::Start(offset + SUPERBLOCK_OFFSET))
            .and_then(|_| disk.read_exact(&mut sb))
            .map_err(|e| GrowError::Superblock(format!("reading it: {e}")))?;
        Ext4Size::parse(&sb)
    }
}

/// Whether resize2fs should run on a filesystem of `fs` in a partition of
/// `partition` bytes (see the module docs).
pub(crate) fn needs_resize(fs: &Ext4Size, partition: u64, table_grew: bool) -> bool {
    let gap = partition.saturating_sub(fs.bytes());
    gap > 0 && (table_grew || gap >= fs.group_bytes())
}

/// The disk to grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrowTarget {
    /// A block device and its `abnix-rw` partition device.
    Device { disk: PathBuf, rw: PathBuf },
    /// A disk-image file.
    File(PathBuf),
}

/// The kernel's name for partition `number` of `disk`: `vda5`, `nvme0n1p5`
/// (block/partitions/core.c: a `p` when the disk's name ends in a digit).
pub fn partition_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

impl GrowTarget {
    /// The disk the running system booted from: the one holding `/`.
    pub fn booted(sys: &SysRoot) -> Result<GrowTarget, GrowError> {
        let root = sys
            .device_of_path(Path::new("/"))
            .map_err(GrowError::Booted)?;
        Ok(GrowTarget::Device {
            disk: Path::new("/dev").join(&root.disk),
            rw: Path::new("/dev").join(partition_name(&root.disk, RW_NUMBER)),
        })
    }

    /// A named block device or disk-image file.
    pub fn at(path: &Path) -> Result<GrowTarget, GrowError> {
        let open_error = |error| GrowError::Open {
            path: path.to_owned(),
            error,
        };
        let real = fs::canonicalize(path).map_err(open_error)?;
        let kind = fs::metadata(&real).map_err(open_error)?.file_type();
        if kind.is_block_device() {
            let name = real
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(GrowTarget::Device {
                disk: real.clone(),
                rw: real.with_file_name(partition_name(&name, RW_NUMBER)),
            })
        } else if kind.is_file() {
            Ok(GrowTarget::File(real))
        } else {
            Err(open_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither a block device nor a disk-image file",
            )))
        }
    }

    fn disk(&self) -> &Path {
        match self {
            GrowTarget::Device { disk, .. } => disk,
            GrowTarget::File(path) => path,
        }
    }
}

/// `abnix-rw`'s partition number (DESIGN §2).
const RW_NUMBER: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    // The causes are quoted in the messages and not chained as sources, so
    // `{:#}` does not print them twice.
    #[error("{}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("finding the disk behind /: {0}")]
    Booted(BlockDevError),
    #[error("the partition table: {0}")]
    Table(GptError),
    #[error("{0}")]
    NotAbnix(LayoutError),
    #[error("telling the kernel that abnix-rw grew: {0}")]
    Kernel(io::Error),
    #[error("running resize2fs: {0}")]
    Spawn(io::Error),
    #[error("abnix-rw's ext4 superblock: {0}")]
    Superblock(String),
    #[error("resize2fs is not installed (it comes with e2fsprogs)")]
    NoResize2fs,
    #[error("resize2fs {target} failed ({status}): {stderr}")]
    Resize2fs {
        target: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// What happened to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChange {
    Unchanged,
    /// Only the backup GPT moved (the disk grew by less than the 1 MiB
    /// alignment).
    BackupMoved,
    RwGrown {
        from: u64,
        to: u64,
    },
}

/// What happened to the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsChange {
    Unchanged,
    /// resize2fs grew it from `from` bytes to (about) `to`.
    Resized {
        from: u64,
        to: u64,
    },
    /// It is smaller than its partition inside a disk-image file; it grows
    /// when the disk boots.
    AtBoot {
        size: u64,
        partition: u64,
    },
}

/// What [`grow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowReport {
    disk: PathBuf,
    table: TableChange,
    filesystem: FsChange,
}

impl GrowReport {
    /// Whether anything was written.
    #[cfg(test)]
    fn changed(&self) -> bool {
        self.table != TableChange::Unchanged || matches!(self.filesystem, FsChange::Resized { .. })
    }
}

impl fmt::Display for GrowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = self.disk.display();
        match self.table {
            TableChange::Unchanged => write!(f, "{disk}: abnix-rw already fills the disk")?,
            TableChange::BackupMoved => {
                write!(f, "{disk}: moved the backup GPT to the end of the disk")?
            }
            TableChange::RwGrown { from, to } => write!(
                f,
                "{disk}: abnix-rw grew from {} to {}",
                Bytes(from),
                Bytes(to)
            )?,
        }
        match self.filesystem {
            FsChange::Unchanged => Ok(()),
            FsChange::Resized { from, to } => {
                write!(f, "; its filesystem from {} to {}", Bytes(from), Bytes(to))
            }
            FsChange::AtBoot { size, partition } => write!(
                f,
                "; its filesystem ({} of {}) grows when the disk boots",
                Bytes(size),
                Bytes(partition)
            ),
        }
    }
}

/// Grows the table (if the disk is bigger than it) and the rw filesystem
/// (if it is smaller than its partition). See the module docs.
pub fn grow(target: &GrowTarget) -> Result<GrowReport, GrowError> {
    let path = target.disk();
    let open_error = |error| GrowError::Open {
        path: path.to_owned(),
        error,
    };
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(open_error)?;
    let sector_size = blockdev::logical_sector_size(&disk).map_err(open_error)?;
    let size = disk.size().map_err(open_error)?;
    let mut gpt = Gpt::read(&mut disk, sector_size).map_err(GrowError::Table)?;
    let before = Layout::from_gpt(&gpt, size).map_err(GrowError::NotAbnix)?;
    let (layout, table) = match grow_gpt(&mut gpt, size).map_err(GrowError::NotAbnix)? {
        None => (before, TableChange::Unchanged),
        Some(grown) => {
            gpt.write(&mut disk).map_err(GrowError::Table)?;
            let rw = &grown.rw;
            let table = if rw.size > before.rw.size {
                blockdev::resize_partition(&disk, rw.number, rw.start, rw.size)
                    .map_err(GrowError::Kernel)?;
                TableChange::RwGrown {
                    from: before.rw.size,
                    to: rw.size,
                }
            } else {
                TableChange::BackupMoved
            };
            (grown, table)
        }
    };
    let rw = &layout.rw;
    let table_grew = matches!(table, TableChange::RwGrown { .. });
    let filesystem = match target {
        GrowTarget::Device { rw: device, .. } => {
            // Through the partition device: the buffer cache a mounted ext4
            // updates its superblock in.
            let mut part = File::open(device).map_err(|error| GrowError::Open {
                path: device.clone(),
                error,
            })?;
            let fs = Ext4Size::read(&mut part, 0)?;
            if needs_resize(&fs, rw.size, table_grew) {
                resize2fs(device, rw.size)?;
                FsChange::Resized {
                    from: fs.bytes(),
                    to: rw.size,
                }
            } else {
                FsChange::Unchanged
            }
        }
        GrowTarget::File(_) => {
            let fs = Ext4Size::read(&mut disk, rw.start)?;
            if needs_resize(&fs, rw.size, table_grew) {
                FsChange::AtBoot {
                    size: fs.bytes(),
                    partition: rw.size,
                }
            } else {
                FsChange::Unchanged
            }
        }
    };
    Ok(GrowReport {
        disk: path.to_owned(),
        table,
        filesystem,
    })
}

/// Grows the filesystem on `device` to `size` bytes (online if mounted).
fn resize2fs(device: &Path, size: u64) -> Result<(), GrowError> {
    let out = Command::new("resize2fs")
        .arg(device)
        .arg(format!("{}K", size / 1024))
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => GrowError::NoResize2fs,
            _ => GrowError::Spawn(e),
        })?;
    if !out.status.success() {
        return Err(GrowError::Resize2fs {
            target: device.display().to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_core::rwfs;
    use abnix_formats::layout::{compute, Arch, LayoutConfig, MIB};
    use abnix_formats::testutil::sgdisk_agrees_with;

    fn mkfs(path: &Path, args: &[&str]) {
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .args(args)
            .arg(path)
            .output()
            .expect("running mkfs.ext4 (install e2fsprogs)");
        assert!(out.status.success(), "{out:?}");
    }

    fn dumpe2fs_field(fs: &Path, field: &str) -> u64 {
        let out = Command::new("dumpe2fs").arg("-h").arg(fs).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} in dumpe2fs"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn superblocks_read_as_dumpe2fs_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        for (size, args) in [
            (40 * MIB, &["-b", "1024"][..]),
            (300 * MIB, &["-b", "4096", "-O", "64bit"][..]),
            (64 * MIB, &["-b", "4096", "-O", "^64bit"][..]),
        ] {
            let path = tmp.path().join(format!("fs-{size}"));
            File::create(&path).unwrap().set_len(size).unwrap();
            mkfs(&path, &[args, &["-E", "nodiscard"]].concat());
            let parsed = Ext4Size::read(&mut File::open(&path).unwrap(), 0).unwrap();
            assert_eq!(parsed.blocks, dumpe2fs_field(&path, "Block count"));
            assert_eq!(parsed.block_size, dumpe2fs_field(&path, "Block size"));
            assert_eq!(
                parsed.blocks_per_group,
                dumpe2fs_field(&path, "Blocks per group")
            );
            assert_eq!(parsed.bytes(), fs::metadata(&path).unwrap().len());
        }
    }

    #[test]
    fn broken_superblocks_are_refused_by_name() {
        let mut sb = vec![0u8; SUPERBLOCK_READ];
        assert_eq!(
            Ext4Size::parse(&sb).unwrap_err().to_string(),
            "abnix-rw's ext4 superblock: magic 0x0000 is not ext4's 0xef53"
        );
        sb[0x38..0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x18] = 9;
        assert!(Ext4Size::parse(&sb)
            .unwrap_err()
            .to_string()
            .ends_with("block size 2^(10+9) is out of range"));
        sb[0x18] = 2;
        assert!(Ext4Size::parse(&sb)
            .unwrap_err()
            .to_string()
            .ends_with("zero blocks per group"));
        sb[0x20] = 1;
        sb[0x04] = 10;
        sb[0x150] = 1;
        let without_64bit = Ext4Size::parse(&sb).unwrap();
        assert_eq!((without_64bit.blocks, without_64bit.block_size), (10, 4096));
        sb[0x60] = INCOMPAT_64BIT as u8;
        assert_eq!(Ext4Size::parse(&sb).unwrap().blocks, (1 << 32) + 10);
        assert!(Ext4Size::parse(&sb[..100])
            .unwrap_err()
            .to_string()
            .contains("100 bytes"));
    }

    #[test]
    fn resize_runs_when_the_table_grew_or_a_group_is_missing() {
        let fs = Ext4Size {
            block_size: 4096,
            blocks: 1000,
            blocks_per_group: 32768,
        };
        let group = fs.group_bytes();
        assert!(!needs_resize(&fs, fs.bytes(), true), "already full");
        assert!(needs_resize(&fs, fs.bytes() + 4096, true));
        assert!(!needs_resize(&fs, fs.bytes() + group - 4096, false));
        assert!(needs_resize(&fs, fs.bytes() + group, false));
    }

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_name("vda", 5), "vda5");
        assert_eq!(partition_name("nvme0n1", 5), "nvme0n1p5");
        assert_eq!(partition_name("mmcblk0", 5), "mmcblk0p5");
    }

    /// A small abnix disk for `arch` with an ext4 abnix-rw (the rest left
    /// empty), written to a file of `big` bytes.
    fn config(arch: Arch) -> LayoutConfig {
        LayoutConfig {
            slot_size: 16 * MIB,
            esp_size: 40 * MIB,
            min_rw_size: 16 * MIB,
            arch,
        }
    }

    fn template_on_a_bigger_disk(
        dir: &Path,
        arch: Arch,
        small: u64,
        big: u64,
    ) -> (PathBuf, Layout) {
        let layout = compute(small, 512, &config(arch)).unwrap();
        let path = dir.join("disk.img");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(small).unwrap();
        layout.to_gpt(&[3; 32]).write(&mut file).unwrap();
        rwfs::format(&path, &layout.rw, uuid::Uuid::from_bytes([3; 16])).unwrap();
        file.set_len(big).unwrap();
        (path, layout)
    }

    /// Either architecture: a host's own disk has its native root type,
    /// which grow accepts like any abnix root type.
    #[test]
    fn a_template_file_grows_its_table_once_and_leaves_the_filesystem_for_the_boot() {
        for arch in Arch::ALL {
            a_template_file_grows_once(arch);
        }
    }

    fn a_template_file_grows_once(arch: Arch) {
        let tmp = tempfile::tempdir().unwrap();
        let (small, big) = (128 * MIB, 256 * MIB);
        let (path, before) = template_on_a_bigger_disk(tmp.path(), arch, small, big);
        let target = GrowTarget::at(&path).unwrap();
        assert_eq!(target, GrowTarget::File(fs::canonicalize(&path).unwrap()));

        let report = grow(&target).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), big);
        let mut file = File::open(&path).unwrap();
        let gpt = Gpt::read(&mut file, 512).unwrap();
        let after = Layout::from_gpt(&gpt, big).unwrap();
        assert_eq!(after, compute(big, 512, &config(arch)).unwrap());
        assert_eq!(
            report.table,
            TableChange::RwGrown {
                from: before.rw.size,
                to: after.rw.size
            }
        );
        assert_eq!(
            report.filesystem,
            FsChange::AtBoot {
                size: before.rw.size,
                partition: after.rw.size
            }
        );
        assert!(
            report.to_string().ends_with("grows when the disk boots"),
            "{report}"
        );
        sgdisk_agrees_with(&gpt, &path);
        // The filesystem is untouched and still clean.
        let fs_path = rwfs::at_offset(&path, after.rw.start);
        let fsck = Command::new("e2fsck")
            .arg("-fn")
            .arg(&fs_path)
            .output()
            .unwrap();
        assert!(fsck.status.success(), "{fsck:?}");

        let again = grow(&target).unwrap();
        assert!(!again.changed(), "{again}");
        assert_eq!(again.table, TableChange::Unchanged);
        assert!(again.to_string().starts_with(&format!(
            "{}: abnix-rw already fills the disk",
            target.disk().display()
        )));
    }

    #[test]
    fn a_disk_grown_by_less_than_a_mib_only_moves_the_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, before) =
            template_on_a_bigger_disk(tmp.path(), Arch::X86_64, 128 * MIB, 128 * MIB + 4096);
        let report = grow(&GrowTarget::File(path.clone())).unwrap();
        assert_eq!(report.table, TableChange::BackupMoved);
        assert_eq!(report.filesystem, FsChange::Unchanged);
        let gpt = Gpt::read(&mut File::open(&path).unwrap(), 512).unwrap();
        assert_eq!(gpt.backup_lba, (128 * MIB + 4096) / 512 - 1);
        assert_eq!(
            Layout::from_gpt(&gpt, 128 * MIB + 4096).unwrap().rw,
            before.rw
        );
        assert!(!grow(&GrowTarget::File(path)).unwrap().changed());
    }

    #[test]
    fn foreign_disks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plain.img");
        File::create(&path).unwrap().set_len(64 * MIB).unwrap();
        let err = grow(&GrowTarget::File(path.clone())).unwrap_err();
        assert!(
            err.to_string().starts_with("the partition table: "),
            "{err}"
        );
        let err = GrowTarget::at(Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("neither a block device"), "{err}");
    }
}
