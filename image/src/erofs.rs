//! An erofs image writer in the store-path layout (docs/delta.md, "Layout
//! for small deltas"; DESIGN §3).
//!
//! The image is plain erofs as Linux reads it since 5.4: 4 KiB blocks,
//! uncompressed, compact 32-byte inodes, no xattrs, no chunk-based files, no
//! superblock checksum, no incompat feature. Laid out so that a store path
//! that did not change keeps its bytes:
//!
//! ```text
//! block 0          superblock (at byte 1024)
//! data region      every regular file's blocks, and the full blocks of
//!                  directories larger than a block (and of symlinks too
//!                  long to sit inline), store path after store path in the
//!                  plan's order (tree::Plan), each path's files in
//!                  depth-first name order
//! metadata region  (meta_blkaddr) every inode, directory tails and symlink
//!                  targets inline: one block-aligned segment per store path
//!                  at its stable home (tree::place), the root's skeleton
//!                  first, at block 0 (the root's nid is 0)
//! ```
//!
//! A nid is an inode's offset in the metadata region over 32, so a segment
//! at its home keeps its nids, hence the directory entries naming them,
//! whatever store paths are added or removed elsewhere; what changes in it
//! when a store path before it in the data region changes size is the data
//! address word of its inodes. Regular files never have inline data: their
//! tails would put file content into the metadata region.
//!
//! Every file is owned by root and has the image's build time (compact
//! inodes carry no time of their own). The same tree, UUID and time give
//! the same bytes.

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::output::{write_image_file, OutputError};
use crate::tree::{self, ContentError, Kind, NodeId, Plan, Tree};

const BLOCK: u64 = 4096;
const BLOCK_BITS: u8 = 12;
/// A compact inode's size, and the unit of nids.
const INODE_SLOT: u64 = 32;
/// A directory entry: nid (8), name offset (2), file type (1), reserved.
const DIRENT: usize = 12;
const SUPERBLOCK_OFFSET: usize = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
/// The smallest metadata home space, in blocks.
const MIN_SPACE: u64 = 256;

/// Data layouts (`i_format` bits 1-3).
const FLAT_PLAIN: u16 = 0;
const FLAT_INLINE: u16 = 2;

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Walk(#[from] tree::WalkError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{path}: {nlink} links, a compact erofs inode holds at most 65535")]
    TooManyLinks { path: PathBuf, nlink: u32 },
    #[error("the image would have {blocks} blocks, erofs addresses at most 2^32")]
    TooLarge { blocks: u64 },
    #[error("writing the image: {0}")]
    Write(#[source] io::Error),
}

/// What the image's build fixes besides the tree.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The filesystem UUID (an abnix version id).
    pub uuid: Uuid,
    /// Seconds since the epoch: the build time, which is every file's time.
    pub time: u64,
}

/// Where a segment went: for tests, benchmarks and a build's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentLayout {
    /// The store path's name, `None` for the root's skeleton.
    pub store_path: Option<Vec<u8>>,
    /// Its blocks in the data region (image block numbers).
    pub data: Range<u64>,
    /// Its blocks in the metadata region (counted from `meta_blkaddr`).
    pub metadata: Range<u64>,
}

/// The image as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The image's size in blocks of 4 KiB.
    pub blocks: u64,
    /// The metadata region's first block.
    pub meta_blkaddr: u64,
    /// The skeleton first, then the store paths by name.
    pub segments: Vec<SegmentLayout>,
}

/// How a node is stored.
#[derive(Debug, Clone, Copy, Default)]
struct Placed {
    /// Offset of its inode in its segment, in bytes.
    offset: u64,
    /// Bytes inline after the inode (a directory's tail, a symlink target).
    inline: u64,
    /// Blocks in the data region.
    blocks: u64,
    /// The size `i_size` reports.
    size: u64,
}

/// Walks the directory `root` and writes its image to the file `out`
/// (created, or replaced), synced to disk.
pub fn write_file(root: &Path, options: Options, out: &Path) -> Result<Layout, Error> {
    write_image_file(root, out, |tree, writer| write(tree, options, writer))
}

/// Writes an erofs image of `tree` to `out`, sequentially from its first
/// byte, every byte written (zeros too), so any target gets the same bytes.
pub fn write(tree: &Tree, options: Options, out: &mut impl Write) -> Result<Layout, Error> {
    let plan = Plan::new(tree);
    let mut placed = vec![Placed::default(); tree.nodes.len()];
    let mut segment_blocks = Vec::with_capacity(plan.segments.len());
    for segment in &plan.segments {
        let mut offset = 0;
        for member in &segment.members {
            let node = tree.node(member.node);
            if node.nlink > u32::from(u16::MAX) {
                return Err(Error::TooManyLinks {
                    path: node.path.clone(),
                    nlink: node.nlink,
                });
            }
            let mut record = storage(tree, member.node);
            // An inline tail must share its inode's block (Linux refuses
            // one that crosses into the next).
            let need = INODE_SLOT + record.inline;
            if offset % BLOCK + need > BLOCK {
                offset = offset.next_multiple_of(BLOCK);
            }
            record.offset = offset;
            placed[member.node] = record;
            offset += need.next_multiple_of(INODE_SLOT);
        }
        segment_blocks.push(offset.div_ceil(BLOCK));
    }

    // Metadata: the skeleton at block 0, the store paths at their homes.
    let total: u64 = segment_blocks.iter().sum();
    let space = tree::space_for(total, MIN_SPACE);
    let store_paths = plan.segments[1..].iter().zip(&segment_blocks[1..]);
    let placement = tree::place(
        store_paths.map(|(s, &blocks)| (s.store_path.as_deref().unwrap_or_default(), blocks)),
        segment_blocks[0],
        space,
    );
    let meta_starts: Vec<u64> = std::iter::once(0).chain(placement.starts).collect();
    let meta_blocks = placement.end.max(space);
    let mut nids = vec![0u64; tree.nodes.len()];
    for (segment, start) in plan.segments.iter().zip(&meta_starts) {
        for member in &segment.members {
            nids[member.node] = (start * BLOCK + placed[member.node].offset) / INODE_SLOT;
        }
    }

    // Data: after the superblock's block, in plan order.
    let mut data_addrs = vec![0u64; tree.nodes.len()];
    let mut next_block = 1;
    let mut data_ranges = Vec::with_capacity(plan.segments.len());
    for segment in &plan.segments {
        let first = next_block;
        for member in &segment.members {
            if placed[member.node].blocks > 0 {
                data_addrs[member.node] = next_block;
                next_block += placed[member.node].blocks;
            }
        }
        data_ranges.push(first..next_block);
    }
    let meta_blkaddr = next_block;
    let blocks = meta_blkaddr + meta_blocks;
    if blocks > u64::from(u32::MAX) {
        return Err(Error::TooLarge { blocks });
    }

    let mut out = Output { out, position: 0 };
    let mut buffer = vec![0u8; 1 << 20];
    out.write(&superblock(
        options,
        tree.nodes.len() as u64,
        blocks,
        meta_blkaddr,
    ))?;

    let mut parents = vec![Tree::ROOT; tree.nodes.len()];
    for member in plan.segments.iter().flat_map(|s| &s.members) {
        parents[member.node] = member.parent;
    }
    let contents = Contents {
        tree,
        nids: &nids,
        parents: &parents,
    };
    for segment in &plan.segments {
        for member in &segment.members {
            let record = placed[member.node];
            if record.blocks == 0 {
                continue;
            }
            out.pad_to(data_addrs[member.node] * BLOCK)?;
            let node = tree.node(member.node);
            match &node.kind {
                Kind::File { size, source } => {
                    tree::copy_content(source, *size, &mut buffer, |chunk| out.write(chunk))?
                }
                Kind::Dir { .. } => {
                    let content = contents.directory(member.node);
                    out.write(&content[..(record.size - record.inline) as usize])?;
                }
                Kind::Symlink { target } => out.write(target)?,
            }
        }
    }

    // Segments in the order of their blocks, the gaps between them zeros.
    let mut by_start: Vec<usize> = (0..plan.segments.len()).collect();
    by_start.sort_by_key(|&i| meta_starts[i]);
    for index in by_start {
        let mut bytes = vec![0u8; (segment_blocks[index] * BLOCK) as usize];
        for member in &plan.segments[index].members {
            let record = placed[member.node];
            let at = record.offset as usize;
            let node = tree.node(member.node);
            let layout = if record.inline > 0 {
                FLAT_INLINE
            } else {
                FLAT_PLAIN
            };
            let inode = compact_inode(
                layout,
                node.mode(),
                node.nlink as u16,
                record.size as u32,
                data_addrs[member.node] as u32,
                nids[member.node] as u32,
            );
            bytes[at..at + INODE_SLOT as usize].copy_from_slice(&inode);
            if record.inline > 0 {
                let tail = match &node.kind {
                    Kind::Dir { .. } => {
                        let content = contents.directory(member.node);
                        content[content.len() - record.inline as usize..].to_vec()
                    }
                    Kind::Symlink { target } => target.clone(),
                    Kind::File { .. } => unreachable!("regular files are never inline"),
                };
                let start = at + INODE_SLOT as usize;
                bytes[start..start + tail.len()].copy_from_slice(&tail);
            }
        }
        out.pad_to((meta_blkaddr + meta_starts[index]) * BLOCK)?;
        out.write(&bytes)?;
    }
    out.pad_to(blocks * BLOCK)?;
    out.out.flush().map_err(Error::Write)?;

    let segments = plan
        .segments
        .iter()
        .enumerate()
        .map(|(i, segment)| SegmentLayout {
            store_path: segment.store_path.clone(),
            data: data_ranges[i].clone(),
            metadata: meta_starts[i]..meta_starts[i] + segment_blocks[i],
        })
        .collect();
    Ok(Layout {
        blocks,
        meta_blkaddr,
        segments,
    })
}

/// How a node's bytes are stored: inline after its inode (a directory's
/// tail that fits beside the inode in a block, a symlink target that does),
/// or in data blocks (files; a directory's full blocks; a long target).
fn storage(tree: &Tree, id: NodeId) -> Placed {
    let node = tree.node(id);
    let size = match &node.kind {
        Kind::Dir { .. } => directory_size(&entry_names(tree, id)),
        _ => node.size(),
    };
    let fits_inline = |tail: u64| tail > 0 && INODE_SLOT + tail <= BLOCK;
    let (blocks, inline) = match node.kind {
        Kind::File { .. } => (size.div_ceil(BLOCK), 0),
        Kind::Dir { .. } if fits_inline(size % BLOCK) => (size / BLOCK, size % BLOCK),
        Kind::Symlink { .. } if fits_inline(size) => (0, size),
        Kind::Dir { .. } | Kind::Symlink { .. } => (size.div_ceil(BLOCK), 0),
    };
    Placed {
        offset: 0,
        inline,
        blocks,
        size,
    }
}

/// A directory's entry names with `.` and `..`, sorted by bytes: erofs
/// looks names up by binary search, over blocks and within each.
fn entry_names(tree: &Tree, id: NodeId) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = vec![b".", b".."];
    names.extend(tree.node(id).children().iter().map(|(n, _)| &n[..]));
    names.sort();
    names
}

/// The entries of each directory block: as many as fit, in order.
fn blocks_of(names: &[&[u8]]) -> Vec<Range<usize>> {
    let mut blocks = Vec::new();
    let (mut first, mut used) = (0, 0);
    for (i, name) in names.iter().enumerate() {
        let need = DIRENT + name.len();
        if i > first && used + need > BLOCK as usize {
            blocks.push(first..i);
            (first, used) = (i, 0);
        }
        used += need;
    }
    blocks.push(first..names.len());
    blocks
}

fn block_bytes(names: &[&[u8]]) -> usize {
    names.iter().map(|n| DIRENT + n.len()).sum()
}

/// A directory's size: its full blocks and the bytes used in the last.
fn directory_size(names: &[&[u8]]) -> u64 {
    let blocks = blocks_of(names);
    let last = blocks.last().expect("a directory has . and ..");
    (blocks.len() as u64 - 1) * BLOCK + block_bytes(&names[last.clone()]) as u64
}

/// What directory contents need: every node's nid and `..`.
struct Contents<'a> {
    tree: &'a Tree,
    nids: &'a [u64],
    parents: &'a [NodeId],
}

impl Contents<'_> {
    /// A directory's content: in each block its entries, then their names;
    /// every block but the last padded to the block size.
    fn directory(&self, id: NodeId) -> Vec<u8> {
        let node = self.tree.node(id);
        let mut entries: Vec<(&[u8], NodeId)> = vec![(b".", id), (b"..", self.parents[id])];
        entries.extend(node.children().iter().map(|(n, c)| (&n[..], *c)));
        entries.sort();
        let names: Vec<&[u8]> = entries.iter().map(|e| e.0).collect();
        let mut content = Vec::new();
        for range in blocks_of(&names) {
            let block_start = content.len();
            let mut name_offset = DIRENT * range.len();
            for &(name, child) in &entries[range.clone()] {
                content.extend_from_slice(&self.nids[child].to_le_bytes());
                content.extend_from_slice(&(name_offset as u16).to_le_bytes());
                content.push(self.tree.node(child).file_type() as u8);
                content.push(0);
                name_offset += name.len();
            }
            for &(name, _) in &entries[range.clone()] {
                content.extend_from_slice(name);
            }
            if range.end < entries.len() {
                content.resize(block_start + BLOCK as usize, 0);
            }
        }
        debug_assert_eq!(content.len() as u64, directory_size(&names));
        content
    }
}

/// The superblock's block: zeros, the superblock at byte 1024.
fn superblock(options: Options, inodes: u64, blocks: u64, meta_blkaddr: u64) -> Vec<u8> {
    let mut sb = Vec::with_capacity(128);
    sb.extend_from_slice(&MAGIC.to_le_bytes());
    sb.extend_from_slice(&0u32.to_le_bytes()); // checksum (feature off)
    sb.extend_from_slice(&0u32.to_le_bytes()); // feature_compat
    sb.push(BLOCK_BITS);
    sb.push(0); // sb_extslots
    sb.extend_from_slice(&0u16.to_le_bytes()); // root_nid: the skeleton's first
    sb.extend_from_slice(&inodes.to_le_bytes());
    sb.extend_from_slice(&options.time.to_le_bytes());
    sb.extend_from_slice(&0u32.to_le_bytes()); // build_time_nsec
    sb.extend_from_slice(&(blocks as u32).to_le_bytes());
    sb.extend_from_slice(&(meta_blkaddr as u32).to_le_bytes());
    sb.extend_from_slice(&0u32.to_le_bytes()); // xattr_blkaddr
    sb.extend_from_slice(options.uuid.as_bytes());
    // volume name, feature_incompat, the rest: zero.
    let mut block = vec![0u8; BLOCK as usize];
    block[SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + sb.len()].copy_from_slice(&sb);
    block
}

/// A compact inode, owned by root.
fn compact_inode(
    layout: u16,
    mode: u16,
    nlink: u16,
    size: u32,
    blkaddr: u32,
    ino: u32,
) -> [u8; 32] {
    let mut inode = [0u8; 32];
    inode[0..2].copy_from_slice(&(layout << 1).to_le_bytes()); // version 0: compact
    inode[4..6].copy_from_slice(&mode.to_le_bytes());
    inode[6..8].copy_from_slice(&nlink.to_le_bytes());
    inode[8..12].copy_from_slice(&size.to_le_bytes());
    inode[16..20].copy_from_slice(&blkaddr.to_le_bytes());
    inode[20..24].copy_from_slice(&ino.to_le_bytes());
    inode
}

/// The image, written front to back.
struct Output<'a, W: Write> {
    out: &'a mut W,
    position: u64,
}

impl<W: Write> Output<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).map_err(Error::Write)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Zeros up to `position`, which the layout never puts behind us.
    fn pad_to(&mut self, position: u64) -> Result<(), Error> {
        debug_assert!(position >= self.position, "the layout went backwards");
        let zeros = [0u8; BLOCK as usize];
        while self.position < position {
            let n = (position - self.position).min(BLOCK) as usize;
            self.write(&zeros[..n])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    /// A root holding one symlink `l` of `nlink` links.
    fn write_link(nlink: u32) -> Result<Layout, Error> {
        let nodes = vec![
            Node {
                kind: Kind::Dir {
                    children: vec![(b"l".to_vec(), 1)],
                },
                permissions: 0o755,
                nlink: 2,
                path: PathBuf::new(),
            },
            Node {
                kind: Kind::Symlink {
                    target: b"x".to_vec(),
                },
                permissions: 0o777,
                nlink,
                path: PathBuf::from("l"),
            },
        ];
        let options = Options {
            uuid: Uuid::from_u128(1),
            time: 1,
        };
        write(&Tree { nodes }, options, &mut io::sink())
    }

    #[test]
    fn more_links_than_a_compact_inode_holds_are_refused_with_the_path() {
        let err = write_link(65536).unwrap_err();
        assert!(
            matches!(err, Error::TooManyLinks { nlink: 65536, ref path } if path == Path::new("l")),
            "{err}"
        );
        write_link(65535).unwrap();
    }
}
