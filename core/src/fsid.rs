//! The filesystem UUID of an image, read from its superblock: the version id
//! (DESIGN §3), by which the root is mounted (`root=UUID=<id>`).
//!
//! Both superblocks start 1024 bytes into the filesystem; offsets below are
//! relative to that and checked against the kernel's headers:
//! - ext2/3/4 (fs/ext4/ext4.h, `struct ext4_super_block`): `s_magic` (le16
//!   0xEF53) at 0x38, `s_uuid[16]` at 0x68. ext2 and ext3 share the layout;
//!   they are reported as [`FsType::Ext4`], whose driver mounts them.
//! - erofs (fs/erofs/erofs_fs.h, `struct erofs_super_block`, at
//!   `EROFS_SUPER_OFFSET` = 1024): `magic` (le32 0xE0F5E1E2) at 0, `uuid[16]`
//!   at 48 (after checksum, feature_compat, blkszbits, sb_extslots, root_nid,
//!   inos, build_time, build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr).

use std::io::{self, Read, Seek, SeekFrom};

use uuid::Uuid;

pub use crate::meta::FsType;

const SUPERBLOCK_OFFSET: u64 = 1024;
/// Enough of the superblock for both layouts (ext's UUID ends at 0x78).
const SUPERBLOCK_PREFIX: usize = 0x80;

const EXT_MAGIC_OFFSET: usize = 0x38;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_UUID_OFFSET: usize = 0x68;

const EROFS_MAGIC_OFFSET: usize = 0;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
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
}

/// Reads the filesystem type and UUID of an image or device. Refuses a nil
/// UUID: it cannot identify a version.
pub fn read_fs_uuid<R: Read + Seek>(image: &mut R) -> Result<(FsType, Uuid), FsIdError> {
    let mut sb = [0u8; SUPERBLOCK_PREFIX];
    image.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
    image.read_exact(&mut sb).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FsIdError::TooShort {
            needed: SUPERBLOCK_OFFSET + SUPERBLOCK_PREFIX as u64,
        },
        _ => FsIdError::Io(e),
    })?;
    let uuid_at =
        |offset: usize| Uuid::from_bytes(sb[offset..offset + 16].try_into().expect("16 bytes"));
    let ext_magic = u16::from_le_bytes([sb[EXT_MAGIC_OFFSET], sb[EXT_MAGIC_OFFSET + 1]]);
    let erofs_magic = u32::from_le_bytes(
        sb[EROFS_MAGIC_OFFSET..EROFS_MAGIC_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let (fs, uuid) = if erofs_magic == EROFS_MAGIC {
        (FsType::Erofs, uuid_at(EROFS_UUID_OFFSET))
    } else if ext_magic == EXT_MAGIC {
        (FsType::Ext4, uuid_at(EXT_UUID_OFFSET))
    } else {
        return Err(FsIdError::Unrecognized);
    };
    if uuid.is_nil() {
        return Err(FsIdError::NilUuid(fs));
    }
    Ok((fs, uuid))
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
            read_fs_uuid(&mut Cursor::new(ext)).unwrap(),
            (FsType::Ext4, uuid)
        );
        let mut erofs = vec![0u8; 4096];
        erofs[1024..1028].copy_from_slice(&0xE0F5E1E2u32.to_le_bytes());
        erofs[1024 + 48..1024 + 64].copy_from_slice(uuid.as_bytes());
        assert_eq!(
            read_fs_uuid(&mut Cursor::new(erofs)).unwrap(),
            (FsType::Erofs, uuid)
        );
    }
}
