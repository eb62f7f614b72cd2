//! The filesystem UUID and block size of an image, read from its superblock:
//! the UUID is the version id (DESIGN §3), by which the root is mounted
//! (`root=UUID=<id>`); the block size says which disks can mount it (a
//! filesystem's blocks cannot be smaller than the disk's logical sectors).
//!
//! Both superblocks start 1024 bytes into the filesystem; offsets below are
//! relative to that and checked against the kernel's headers:
//! - ext2/3/4 (fs/ext4/ext4.h, `struct ext4_super_block`): `s_log_block_size`
//!   (le32, block size = 1024 << it) at 0x18, `s_magic` (le16 0xEF53) at
//!   0x38, `s_uuid[16]` at 0x68. ext2 and ext3 share the layout; they are
//!   reported as [`FsType::Ext4`], whose driver mounts them.
//! - erofs (fs/erofs/erofs_fs.h, `struct erofs_super_block`, at
//!   `EROFS_SUPER_OFFSET` = 1024): `magic` (le32 0xE0F5E1E2) at 0,
//!   `blkszbits` (u8, block size = 1 << it) at 12 (after checksum and
//!   feature_compat), `uuid[16]` at 48 (after sb_extslots, root_nid, inos,
//!   build_time, build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr).

use std::io::{self, Read, Seek, SeekFrom};

use uuid::Uuid;

pub use crate::meta::FsType;

const SUPERBLOCK_OFFSET: u64 = 1024;
/// Enough of the superblock for both layouts (ext's UUID ends at 0x78).
const SUPERBLOCK_PREFIX: usize = 0x80;
/// The bytes of an image [`read_superblock`] reads: a reader holding the
/// image's first `SUPERBLOCK_END` bytes is enough.
pub const SUPERBLOCK_END: u64 = SUPERBLOCK_OFFSET + SUPERBLOCK_PREFIX as u64;

const EXT_LOG_BLOCK_SIZE_OFFSET: usize = 0x18;
/// ext4 blocks are 1 KiB to 64 KiB (`EXT4_MAX_BLOCK_LOG_SIZE` = 16).
const EXT_MAX_LOG_BLOCK_SIZE: u32 = 6;
const EXT_MAGIC_OFFSET: usize = 0x38;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_UUID_OFFSET: usize = 0x68;

const EROFS_MAGIC_OFFSET: usize = 0;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
const EROFS_BLKSZBITS_OFFSET: usize = 12;
/// erofs blocks are 512 bytes to 64 KiB (the kernel mounts those up to its
/// page size).
const EROFS_BLKSZBITS: std::ops::RangeInclusive<u8> = 9..=16;
const EROFS_UUID_OFFSET: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum FsIdError {
    #[error("reading the superblock: {0}")]
    Io(#[from] io::Error),
    #[error("image is too short to hold a superblock (needs {needed} bytes)")]
    TooShort { needed: u64 },
    #[error("no ext4 or erofs superblock found (no magic number at offset 1024)")]
    Unrecognized,
    #[error("the {0} filesystem has no UUID (all zero); make it with a UUID, e.g. mkfs -U")]
    NilUuid(FsType),
    #[error("the {fs} superblock gives an impossible block size (field value {field})")]
    BadBlockSize { fs: FsType, field: u32 },
}

/// What the installer and `pack` read from a superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub fs: FsType,
    uuid: Uuid,
    /// In bytes, a power of two.
    pub block_size: u32,
}

/// Reads the filesystem type, UUID and block size of an image or device.
/// Refuses a nil UUID: it cannot identify a version.
pub fn read_superblock<R: Read + Seek>(image: &mut R) -> Result<Superblock, FsIdError> {
    let mut sb = [0u8; SUPERBLOCK_PREFIX];
    image.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
    image.read_exact(&mut sb).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FsIdError::TooShort {
            needed: SUPERBLOCK_END,
        },
        _ => FsIdError::Io(e),
    })?;
    let uuid_at =
        |offset: usize| Uuid::from_bytes(sb[offset..offset + 16].try_into().expect("16 bytes"));
    let le32_at =
        |offset: usize| u32::from_le_bytes(sb[offset..offset + 4].try_into().expect("4 bytes"));
    let ext_magic = u16::from_le_bytes([sb[EXT_MAGIC_OFFSET], sb[EXT_MAGIC_OFFSET + 1]]);
    let superblock = if le32_at(EROFS_MAGIC_OFFSET) == EROFS_MAGIC {
        let bits = sb[EROFS_BLKSZBITS_OFFSET];
        if !EROFS_BLKSZBITS.contains(&bits) {
            return Err(FsIdError::BadBlockSize {
                fs: FsType::Erofs,
                field: bits.into(),
            });
        }
        Superblock {
            fs: FsType::Erofs,
            uuid: uuid_at(EROFS_UUID_OFFSET),
            block_size: 1 << bits,
        }
    } else if ext_magic == EXT_MAGIC {
        let log = le32_at(EXT_LOG_BLOCK_SIZE_OFFSET);
        if log > EXT_MAX_LOG_BLOCK_SIZE {
            return Err(FsIdError::BadBlockSize {
                fs: FsType::Ext4,
                field: log,
            });
        }
        Superblock {
            fs: FsType::Ext4,
            uuid: uuid_at(EXT_UUID_OFFSET),
            block_size: 1024 << log,
        }
    } else {
        return Err(FsIdError::Unrecognized);
    };
    if superblock.uuid.is_nil() {
        return Err(FsIdError::NilUuid(superblock.fs));
    }
    Ok(superblock)
}

/// Reads the filesystem type and UUID of an image or device (see
/// [`read_superblock`]).
pub fn read_fs_uuid<R: Read + Seek>(image: &mut R) -> Result<(FsType, Uuid), FsIdError> {
    read_superblock(image).map(|sb| (sb.fs, sb.uuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Cursor;
    use std::path::Path;
    use std::process::Command;

    const UUID: &str = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab";

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} (install e2fsprogs and erofs-utils): {e}")
        });
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn sparse_file(path: &Path, size: u64) {
        File::create(path).unwrap().set_len(size).unwrap();
    }

    #[test]
    fn ext4_made_by_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root.ext4");
        sparse_file(&image, 16 << 20);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-U", UUID])
            .arg(&image));
        let got = read_fs_uuid(&mut File::open(&image).unwrap()).unwrap();
        assert_eq!(got, (FsType::Ext4, UUID.parse().unwrap()));
    }

    /// The block size mkfs.ext4 was given (`-b`), as dumpe2fs reports it.
    #[test]
    fn ext4_block_sizes_made_by_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        for block_size in [1024u32, 2048, 4096] {
            let image = dir.path().join(format!("root-{block_size}.ext4"));
            sparse_file(&image, 16 << 20);
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-U", UUID, "-b", &block_size.to_string()])
                .arg(&image));
            let dumped = Command::new("dumpe2fs")
                .arg("-h")
                .arg(&image)
                .output()
                .unwrap();
            let dumped = String::from_utf8_lossy(&dumped.stdout);
            assert!(
                dumped.contains(&format!("Block size:               {block_size}\n")),
                "{dumped}"
            );
            let got = read_superblock(&mut File::open(&image).unwrap()).unwrap();
            assert_eq!(
                got,
                Superblock {
                    fs: FsType::Ext4,
                    uuid: UUID.parse().unwrap(),
                    block_size
                }
            );
        }
    }

    #[test]
    fn ext2_reports_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root.ext2");
        sparse_file(&image, 4 << 20);
        run(Command::new("mkfs.ext2")
            .args(["-q", "-F", "-U", UUID])
            .arg(&image));
        let got = read_fs_uuid(&mut File::open(&image).unwrap()).unwrap();
        assert_eq!(got, (FsType::Ext4, UUID.parse().unwrap()));
    }

    #[test]
    fn erofs_made_by_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("hello"), "hello\n").unwrap();
        let image = dir.path().join("root.erofs");
        run(Command::new("mkfs.erofs")
            .arg("--quiet")
            .arg(format!("-U{UUID}"))
            .arg(&image)
            .arg(&tree));
        let got = read_fs_uuid(&mut File::open(&image).unwrap()).unwrap();
        assert_eq!(got, (FsType::Erofs, UUID.parse().unwrap()));
        // erofs-utils makes blocks of the page size.
        // SAFETY: sysconf takes no pointers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
        let got = read_superblock(&mut File::open(&image).unwrap()).unwrap();
        assert_eq!(got.block_size, page);
    }

    #[test]
    fn nil_uuid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root.ext4");
        sparse_file(&image, 8 << 20);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-U", "00000000-0000-0000-0000-000000000000"])
            .arg(&image));
        let err = read_fs_uuid(&mut File::open(&image).unwrap()).unwrap_err();
        assert!(matches!(err, FsIdError::NilUuid(FsType::Ext4)), "{err}");
    }

    #[test]
    fn garbage_and_short_images_are_refused() {
        let mut garbage = Cursor::new(vec![0x5a; 8192]);
        assert!(matches!(
            read_fs_uuid(&mut garbage),
            Err(FsIdError::Unrecognized)
        ));
        let mut zeros = Cursor::new(vec![0; 8192]);
        assert!(matches!(
            read_fs_uuid(&mut zeros),
            Err(FsIdError::Unrecognized)
        ));
        let mut short = Cursor::new(vec![0; 1100]);
        assert!(matches!(
            read_fs_uuid(&mut short),
            Err(FsIdError::TooShort { needed: 1152 })
        ));
    }

    #[test]
    fn synthetic_superblocks_at_the_documented_offsets() {
        let uuid: Uuid = UUID.parse().unwrap();
        let mut ext = vec![0u8; 4096];
        ext[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        ext[1024 + 0x68..1024 + 0x78].copy_from_slice(uuid.as_bytes());
        assert_eq!(
            read_fs_uuid(&mut Cursor::new(ext.clone())).unwrap(),
            (FsType::Ext4, uuid)
        );
        assert_eq!(
            read_superblock(&mut Cursor::new(ext.clone()))
                .unwrap()
                .block_size,
            1024
        );
        let mut erofs = vec![0u8; 4096];
        erofs[1024..1028].copy_from_slice(&0xE0F5E1E2u32.to_le_bytes());
        erofs[1024 + 48..1024 + 64].copy_from_slice(uuid.as_bytes());
        erofs[1024 + 12] = 12;
        assert_eq!(
            read_fs_uuid(&mut Cursor::new(erofs.clone())).unwrap(),
            (FsType::Erofs, uuid)
        );
        assert_eq!(
            read_superblock(&mut Cursor::new(erofs.clone()))
                .unwrap()
                .block_size,
            4096
        );

        // The smallest and an impossible block size of each.
        erofs[1024 + 12] = 9;
        assert_eq!(
            read_superblock(&mut Cursor::new(erofs.clone()))
                .unwrap()
                .block_size,
            512
        );
        erofs[1024 + 12] = 8;
        assert!(matches!(
            read_superblock(&mut Cursor::new(erofs)),
            Err(FsIdError::BadBlockSize {
                fs: FsType::Erofs,
                field: 8
            })
        ));
        ext[1024 + 0x18..1024 + 0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            read_superblock(&mut Cursor::new(ext.clone()))
                .unwrap()
                .block_size,
            4096
        );
        ext[1024 + 0x18..1024 + 0x1c].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            read_superblock(&mut Cursor::new(ext)),
            Err(FsIdError::BadBlockSize {
                fs: FsType::Ext4,
                field: 7
            })
        ));
    }
}
