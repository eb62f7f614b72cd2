//! ext4's on-disk records as this writer uses them (4 KiB blocks, 256-byte
//! inodes, 32-byte group descriptors, metadata_csum with the seed in the
//! superblock), after the kernel's fs/ext4/ext4.h. Everything is
//! little-endian; every checksum is [`chksum`] seeded by the superblock's
//! `s_checksum_seed`.

use crate::tree::FileType;

pub(crate) const BLOCK_SIZE: u64 = 4096;
pub(crate) const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
/// Inode numbers a group's bitmap can hold: a bitmap is one block.
pub(crate) const MAX_INODES_PER_GROUP: u64 = 8 * BLOCK_SIZE;
pub(crate) const INODE_SIZE: u64 = 256;
pub(crate) const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
const DESCRIPTOR_SIZE: usize = 32;
pub(crate) const DESCRIPTORS_PER_BLOCK: u64 = BLOCK_SIZE / DESCRIPTOR_SIZE as u64;
pub(crate) const ROOT_INO: u32 = 2;
/// The first inode number not reserved by ext4 (lost+found's, by custom).
pub(crate) const FIRST_INO: u32 = 11;
/// The most blocks one initialized extent covers.
pub(crate) const MAX_EXTENT_LEN: u64 = 32768;
/// Extents an inode holds in its own `i_block` (an extent tree of depth 0).
pub(crate) const INODE_EXTENTS: usize = 4;
/// Extents one extent tree leaf block holds after its header.
pub(crate) const LEAF_EXTENTS: usize = (BLOCK_SIZE as usize - 12) / 12;
/// A symlink target shorter than this lives in the inode ("fast symlink").
pub(crate) const FAST_SYMLINK_MAX: usize = 59;
/// The bytes of a directory block that hold entries, before its checksum
/// tail.
pub(crate) const DIR_BLOCK_ENTRIES: usize = BLOCK_SIZE as usize - 12;
/// `s_log_groups_per_flex`, as mke2fs's default: the tables are placed
/// freely anyway (flex_bg), this only sizes the kernel's flex statistics.
const LOG_GROUPS_PER_FLEX: u8 = 4;

const EXT4_SUPER_MAGIC: u16 = 0xEF53;
const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENTS_FL: u32 = 0x0008_0000;
const BG_INODE_ZEROED: u16 = 0x0004;
const COMPAT_SPARSE_SUPER2: u32 = 0x0200;
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_EXTENTS: u32 = 0x0040;
const INCOMPAT_FLEX_BG: u32 = 0x0200;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
/// The kernel mounts such a filesystem read-only only.
const RO_COMPAT_READONLY: u32 = 0x1000;
/// `s_flags`: directory hashes computed with signed chars, as mke2fs
/// records on x86 (no directory here is hashed: no dir_index).
const FLAGS_SIGNED_HASH: u32 = 0x0001;
const HASH_HALF_MD4: u8 = 1;
const CHECKSUM_CRC32C: u8 = 1;
/// `i_extra_isize`: the fields up to `i_crtime_extra` and `i_version_hi`.
const EXTRA_ISIZE: u16 = 32;

/// The kernel's `ext4_chksum`: CRC32C continued from the raw register
/// `crc`, without the final inversion.
pub(crate) fn chksum(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// The checksum seed of a filesystem whose metadata is seeded by `uuid`
/// (`s_checksum_seed`, kept in the superblock with metadata_csum_seed).
pub(crate) fn checksum_seed(uuid: &[u8; 16]) -> u32 {
    chksum(!0, uuid)
}

/// What an inode's and its directory blocks' checksums start from.
fn inode_seed(seed: u32, ino: u32) -> u32 {
    // The inode number, then the generation (always 0 here).
    chksum(chksum(seed, &ino.to_le_bytes()), &0u32.to_le_bytes())
}

fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The superblock's variable fields.
pub(crate) struct Superblock<'a> {
    pub inodes_per_group: u32,
    pub groups: u32,
    pub blocks: u32,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub uuid: [u8; 16],
    /// Seeds `s_hash_seed`, which stays constant whatever the UUID.
    pub seed_uuid: [u8; 16],
    pub seed: u32,
    pub label: &'a [u8; 16],
    pub time: u32,
}

impl Superblock<'_> {
    /// The 1024 bytes at offset 1024.
    pub(crate) fn encode(&self) -> [u8; 1024] {
        let mut sb = [0u8; 1024];
        put32(&mut sb, 0x00, self.groups * self.inodes_per_group);
        put32(&mut sb, 0x04, self.blocks);
        put32(&mut sb, 0x0C, self.free_blocks);
        put32(&mut sb, 0x10, self.free_inodes);
        // s_first_data_block 0 (4 KiB blocks), log block and cluster size 2.
        put32(&mut sb, 0x18, 2);
        put32(&mut sb, 0x1C, 2);
        put32(&mut sb, 0x20, BLOCKS_PER_GROUP as u32);
        put32(&mut sb, 0x24, BLOCKS_PER_GROUP as u32);
        put32(&mut sb, 0x28, self.inodes_per_group);
        put32(&mut sb, 0x30, self.time); // s_wtime
        put16(&mut sb, 0x36, 0xFFFF); // s_max_mnt_count -1: no forced checks
        put16(&mut sb, 0x38, EXT4_SUPER_MAGIC);
        put16(&mut sb, 0x3A, 1); // s_state: clean
        put16(&mut sb, 0x3C, 1); // s_errors: continue
        put32(&mut sb, 0x40, self.time); // s_lastcheck
        put32(&mut sb, 0x4C, 1); // s_rev_level: dynamic
        put32(&mut sb, 0x54, FIRST_INO);
        put16(&mut sb, 0x58, INODE_SIZE as u16);
        put32(&mut sb, 0x5C, COMPAT_SPARSE_SUPER2);
        put32(
            &mut sb,
            0x60,
            INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG | INCOMPAT_CSUM_SEED,
        );
        put32(
            &mut sb,
            0x64,
            RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE
                | RO_COMPAT_METADATA_CSUM
                | RO_COMPAT_READONLY,
        );
        sb[0x68..0x78].copy_from_slice(&self.uuid);
        sb[0x78..0x88].copy_from_slice(self.label);
        sb[0xEC..0xFC].copy_from_slice(&self.seed_uuid);
        sb[0xFC] = HASH_HALF_MD4;
        put16(&mut sb, 0xFE, DESCRIPTOR_SIZE as u16);
        put32(&mut sb, 0x108, self.time); // s_mkfs_time
        put16(&mut sb, 0x15C, EXTRA_ISIZE); // s_min_extra_isize
        put16(&mut sb, 0x15E, EXTRA_ISIZE); // s_want_extra_isize
        put32(&mut sb, 0x160, FLAGS_SIGNED_HASH);
        sb[0x174] = LOG_GROUPS_PER_FLEX;
        sb[0x175] = CHECKSUM_CRC32C;
        // s_backup_bgs (0x24C) stay 0: sparse_super2 without backups.
        put32(&mut sb, 0x270, self.seed);
        let csum = chksum(!0, &sb[..0x3FC]);
        put32(&mut sb, 0x3FC, csum);
        sb
    }
}

/// One block group's descriptor.
pub(crate) struct GroupDescriptor {
    pub block_bitmap: u32,
    pub inode_bitmap: u32,
    pub inode_table: u32,
    pub free_blocks: u16,
    pub free_inodes: u16,
    pub directories: u16,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

impl GroupDescriptor {
    pub(crate) fn encode(&self, seed: u32, group: u32) -> [u8; DESCRIPTOR_SIZE] {
        let mut d = [0u8; DESCRIPTOR_SIZE];
        put32(&mut d, 0x00, self.block_bitmap);
        put32(&mut d, 0x04, self.inode_bitmap);
        put32(&mut d, 0x08, self.inode_table);
        put16(&mut d, 0x0C, self.free_blocks);
        put16(&mut d, 0x0E, self.free_inodes);
        put16(&mut d, 0x10, self.directories);
        put16(&mut d, 0x12, BG_INODE_ZEROED);
        // 32-byte descriptors keep the low halves of the bitmap checksums.
        put16(&mut d, 0x18, self.block_bitmap_csum as u16);
        put16(&mut d, 0x1A, self.inode_bitmap_csum as u16);
        let csum = chksum(chksum(seed, &group.to_le_bytes()), &d);
        put16(&mut d, 0x1E, csum as u16);
        d
    }
}

/// A block bitmap's checksum: over the whole group's bits.
pub(crate) fn block_bitmap_csum(seed: u32, bitmap: &[u8]) -> u32 {
    chksum(seed, &bitmap[..(BLOCKS_PER_GROUP / 8) as usize])
}

/// An inode bitmap's checksum: over the group's inodes' bits only.
pub(crate) fn inode_bitmap_csum(seed: u32, bitmap: &[u8], inodes_per_group: u32) -> u32 {
    chksum(seed, &bitmap[..inodes_per_group as usize / 8])
}

/// A run of blocks holding a file's blocks from `logical` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub logical: u32,
    pub len: u16,
    pub start: u32,
}

impl Extent {
    /// The extents of `count` blocks at `start`, each as long as ext4
    /// allows.
    pub(crate) fn covering(start: u64, count: u64) -> Vec<Extent> {
        (0..count)
            .step_by(MAX_EXTENT_LEN as usize)
            .map(|logical| Extent {
                logical: logical as u32,
                len: (count - logical).min(MAX_EXTENT_LEN) as u16,
                start: (start + logical) as u32,
            })
            .collect()
    }

    fn encode(&self, out: &mut [u8]) {
        put32(out, 0, self.logical);
        put16(out, 4, self.len);
        // ee_start_hi stays 0: block numbers fit 32 bits without 64bit.
        put32(out, 8, self.start);
    }
}

/// An extent tree node's header and entries, into `out` (60 bytes in an
/// inode, a block for a leaf).
fn encode_extent_node(out: &mut [u8], depth: u16, entries: usize, max: usize) {
    put16(out, 0, EXTENT_MAGIC);
    put16(out, 2, entries as u16);
    put16(out, 4, max as u16);
    put16(out, 6, depth);
}

/// An extent tree leaf block holding `extents`, its checksum tail seeded
/// by its inode.
pub(crate) fn extent_leaf_block(seed: u32, ino: u32, extents: &[Extent]) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    encode_extent_node(&mut block, 0, extents.len(), LEAF_EXTENTS);
    for (i, extent) in extents.iter().enumerate() {
        extent.encode(&mut block[12 + 12 * i..]);
    }
    // The tail follows the header and its eh_max entries.
    let end = 12 + 12 * LEAF_EXTENTS;
    let csum = chksum(inode_seed(seed, ino), &block[..end]);
    put32(&mut block, end, csum);
    block
}

/// Where an inode's blocks are, as its `i_block` says.
pub(crate) enum Blocks<'a> {
    /// A fast symlink's target.
    Inline(&'a [u8]),
    /// At most [`INODE_EXTENTS`] extents.
    Extents(&'a [Extent]),
    /// One leaf block holding the extents.
    Leaf { block: u32, first_logical: u32 },
}

/// An inode's fields.
pub(crate) struct Inode<'a> {
    pub mode: u16,
    pub links: u16,
    pub size: u64,
    /// Blocks it owns, data and extent tree blocks.
    pub blocks: u64,
    pub data: Blocks<'a>,
    pub time: u32,
}

impl Inode<'_> {
    pub(crate) fn encode(&self, seed: u32, ino: u32) -> [u8; INODE_SIZE as usize] {
        let mut raw = [0u8; INODE_SIZE as usize];
        put16(&mut raw, 0x00, self.mode);
        put32(&mut raw, 0x04, self.size as u32);
        for at in [0x08, 0x0C, 0x10] {
            put32(&mut raw, at, self.time); // atime, ctime, mtime
        }
        put16(&mut raw, 0x1A, self.links);
        // i_blocks in 512-byte units (huge_file without HUGE_FILE_FL).
        let sectors = self.blocks * (BLOCK_SIZE / 512);
        put32(&mut raw, 0x1C, sectors as u32);
        put16(&mut raw, 0x74, (sectors >> 32) as u16);
        match self.data {
            Blocks::Inline(target) => raw[0x28..0x28 + target.len()].copy_from_slice(target),
            Blocks::Extents(extents) => {
                put32(&mut raw, 0x20, EXTENTS_FL);
                encode_extent_node(&mut raw[0x28..], 0, extents.len(), INODE_EXTENTS);
                for (i, extent) in extents.iter().enumerate() {
                    extent.encode(&mut raw[0x28 + 12 + 12 * i..]);
                }
            }
            Blocks::Leaf {
                block,
                first_logical,
            } => {
                put32(&mut raw, 0x20, EXTENTS_FL);
                encode_extent_node(&mut raw[0x28..], 1, 1, INODE_EXTENTS);
                // An index entry: ei_block, ei_leaf_lo, ei_leaf_hi.
                put32(&mut raw, 0x28 + 12, first_logical);
                put32(&mut raw, 0x28 + 16, block);
            }
        }
        put32(&mut raw, 0x6C, (self.size >> 32) as u32);
        put16(&mut raw, 0x80, EXTRA_ISIZE);
        put32(&mut raw, 0x90, self.time); // crtime
        let csum = chksum(inode_seed(seed, ino), &raw);
        put16(&mut raw, 0x7C, csum as u16);
        put16(&mut raw, 0x82, (csum >> 16) as u16);
        raw
    }
}

/// The bytes a directory entry of a `name_len`-byte name takes at least.
pub(crate) fn dir_entry_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// How many blocks a linear directory of entries with these name lengths
/// takes ("." and ".." included), as [`directory_blocks`] fills them.
pub(crate) fn directory_block_count(name_lens: impl Iterator<Item = usize>) -> u64 {
    let mut blocks = 1;
    let mut used = 0;
    for len in name_lens {
        let need = dir_entry_len(len);
        if used > 0 && used + need > DIR_BLOCK_ENTRIES {
            blocks += 1;
            used = 0;
        }
        used += need;
    }
    blocks
}

/// A linear directory's blocks, its entries in the order given ("." and
/// ".." first), each block ending in a checksum tail seeded by the
/// directory's own inode number `ino`.
pub(crate) fn directory_blocks<'a>(
    seed: u32,
    ino: u32,
    entries: impl Iterator<Item = (&'a [u8], u32, FileType)>,
) -> Vec<u8> {
    let block_seed = inode_seed(seed, ino);
    let mut out = Vec::new();
    let mut block = Vec::with_capacity(BLOCK_SIZE as usize);
    // Where the block's last entry starts: it stretches to the tail.
    let mut last = 0;
    let finish = |block: &mut Vec<u8>, last: usize, out: &mut Vec<u8>| {
        let stretched = DIR_BLOCK_ENTRIES - last;
        put16(block, last + 4, stretched as u16);
        block.resize(DIR_BLOCK_ENTRIES, 0);
        let csum = chksum(block_seed, block);
        // The tail: a fake entry of inode 0, rec_len 12, file type 0xDE.
        block.extend_from_slice(&[0, 0, 0, 0, 12, 0, 0, 0xDE]);
        block.extend_from_slice(&csum.to_le_bytes());
        out.append(block);
    };
    for (name, child, file_type) in entries {
        let len = dir_entry_len(name.len());
        if !block.is_empty() && block.len() + len > DIR_BLOCK_ENTRIES {
            finish(&mut block, last, &mut out);
        }
        last = block.len();
        block.extend_from_slice(&child.to_le_bytes());
        block.extend_from_slice(&(len as u16).to_le_bytes());
        block.push(name.len() as u8);
        block.push(file_type as u8);
        block.extend_from_slice(name);
        block.resize(last + len, 0);
    }
    finish(&mut block, last, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chksum_is_the_raw_crc32c_register() {
        // CRC-32C's check value for "123456789" is 0xE3069283 with the
        // register started at and finally xored with !0; ext4 does neither
        // inversion.
        assert_eq!(chksum(!0, b"123456789"), !0xE306_9283);
        // Continuing a checksum equals checksumming the concatenation.
        assert_eq!(
            chksum(chksum(!0, b"1234"), b"56789"),
            chksum(!0, b"123456789")
        );
    }

    #[test]
    fn checksum_seed_matches_mke2fs() {
        // `mke2fs -O metadata_csum,metadata_csum_seed -U 6a1c3e0d-…`:
        // dumpe2fs prints "Checksum seed: 0x…".
        let uuid = uuid::Uuid::parse_str("6a1c3e0d-52b7-4f8e-9d21-0b7e4c5f3a98").unwrap();
        assert_eq!(checksum_seed(uuid.as_bytes()), SEED_OF_SYSTEST_UUID);
    }

    const SEED_OF_SYSTEST_UUID: u32 = 0x374c_faf7;
}
