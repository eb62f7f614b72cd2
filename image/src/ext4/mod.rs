//! The ext4 writer: a [`Tree`] as an ext4 image that Linux 4.4+ mounts
//! read-only (extents, flex_bg, sparse_super2 without backups,
//! metadata_csum with the seed in the superblock, the `read-only` feature;
//! no journal, no htree: directories are linear), laid out so that a store
//! path that did not change keeps its bytes (docs/delta.md, "Layout for
//! small deltas: the study"; ported from bench/layout-study/ext4-writer.py
//! with `--stable-inodes`):
//!
//! ```text
//! block 0, 1..   superblock, group descriptors
//! data region    segment after segment (the skeleton, then the store paths
//!                by name): its directories' blocks, then its files' and
//!                long symlinks' blocks, in depth-first name order
//! tables         the inode table (every group's, back to back), the block
//!                bitmaps, the inode bitmaps; free blocks, if the inode
//!                count needs more groups than the data, at the end
//! ```
//!
//! Inode 2 is the root, 11 `lost+found` (added if the tree has none), the
//! rest of the skeleton follows; each store path's inodes are one run placed
//! at a home derived from its name ([`crate::tree::place`]). So a store path
//! keeps its inode numbers, and with them its directory blocks, whatever is
//! added or removed elsewhere (unless a neighbour's run takes its home); its
//! inode records change only in their extents, and checksums, when data
//! before it moved. Nothing depends on the filesystem UUID but the
//! superblock: checksums and directory hashes are seeded by [`SEED_UUID`].

mod format;

use std::borrow::Cow;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::output::{write_image_file, OutputError};
use crate::tree::{self, ContentError, FileType, Kind, Member, Node, NodeId, Plan, Tree};
use format::{
    Blocks, Extent, GroupDescriptor, Inode, Superblock, BLOCKS_PER_GROUP, BLOCK_SIZE,
    DESCRIPTORS_PER_BLOCK, FAST_SYMLINK_MAX, FIRST_INO, INODES_PER_BLOCK, INODE_EXTENTS,
    INODE_SIZE, MAX_INODES_PER_GROUP, ROOT_INO,
};

/// Seeds every metadata checksum (`s_checksum_seed`, kept in the superblock
/// with metadata_csum_seed) and the directory hash seed, whatever the
/// image's UUID. Were they seeded by the version id, every inode, directory
/// and bitmap block would differ between two versions of the same tree, and
/// a delta update would download all of them (docs/delta.md). The value
/// root-image.sh and the systest fixtures used with mkfs.ext4.
pub const SEED_UUID: Uuid = uuid::uuid!("6a1c3e0d-52b7-4f8e-9d21-0b7e4c5f3a98");

/// The smallest inode numbering space: homes spread over at least this
/// many inodes (64 inode table blocks).
const MIN_INODE_SPACE: u64 = 1024;

/// The most links an ext4 inode counts; a directory with more
/// subdirectories counts 1 (dir_nlink).
const LINK_MAX: u32 = 65000;

/// What the image is made with besides the tree.
#[derive(Debug, Clone)]
pub struct Options {
    /// The filesystem UUID (for abnix, the version id).
    pub uuid: Uuid,
    /// Every inode's times and the superblock's, in seconds since the epoch
    /// (before 2038: the inodes keep no epoch bits).
    pub time: u64,
    /// The volume label, at most 16 bytes.
    pub label: String,
}

/// Why a tree cannot become an ext4 image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Walk(#[from] tree::WalkError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("writing the image: {0}")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{path}: a name of {len} bytes, ext4 holds at most 255")]
    NameTooLong { path: PathBuf, len: usize },
    #[error("{path}: {links} hard links, ext4 counts at most {LINK_MAX}")]
    TooManyLinks { path: PathBuf, links: u32 },
    #[error("lost+found in the tree's root is not a directory")]
    LostFoundNotADirectory,
    #[error("a label of {0} bytes, ext4 holds at most 16")]
    LabelTooLong(usize),
    #[error("time {0} is past January 2038, which these inodes cannot hold")]
    TimeTooLate(u64),
    #[error("{0} blocks of 4 KiB, more than ext4 without 64bit addresses")]
    TooLarge(u64),
}

/// Walks the directory `root` and writes its image to the file `out`
/// (created, or replaced: a new file reads as zeros), synced to disk;
/// returns the image's size in bytes.
pub fn write_file(root: &Path, options: &Options, out: &Path) -> Result<u64, Error> {
    write_image_file(root, out, |tree, writer| write(tree, options, writer))
}

/// Writes `tree` as an ext4 image into `out`, which must read as zeros
/// (a new file: blocks the image leaves empty are skipped, not written),
/// and returns the image's size in bytes (the file is that long after).
pub fn write<W: Write + Seek>(tree: &Tree, options: &Options, out: &mut W) -> Result<u64, Error> {
    let label = options.label.as_bytes();
    if label.len() > 16 {
        return Err(Error::LabelTooLong(label.len()));
    }
    let time = u32::try_from(options.time)
        .ok()
        .filter(|&t| t <= i32::MAX as u32)
        .ok_or(Error::TimeTooLate(options.time))?;
    let tree = with_lost_found(tree)?;
    let plan = Plan::new(&tree);
    let layout = Layout::new(&tree, &plan)?;
    let seed = format::checksum_seed(SEED_UUID.as_bytes());
    let mut image = Image {
        tree: &tree,
        layout: &layout,
        seed,
        time,
        out,
    };
    image.write_data(&plan)?;
    let (free_blocks, free_inodes) = image.write_tables(&plan)?;
    let mut label16 = [0u8; 16];
    label16[..label.len()].copy_from_slice(label);
    let superblock = Superblock {
        inodes_per_group: layout.inodes_per_group as u32,
        groups: layout.groups as u32,
        blocks: layout.blocks as u32,
        free_blocks: free_blocks as u32,
        free_inodes: free_inodes as u32,
        uuid: *options.uuid.as_bytes(),
        seed_uuid: *SEED_UUID.as_bytes(),
        seed,
        label: &label16,
        time,
    };
    image.write_at(1024, &superblock.encode())?;
    Ok(layout.blocks * BLOCK_SIZE)
}

/// `tree` with a `lost+found` directory in its root (e2fsck wants one), a
/// copy only if it has none.
fn with_lost_found(tree: &Tree) -> Result<Cow<'_, Tree>, Error> {
    let root = tree.node(Tree::ROOT);
    if let Some((_, id)) = root.children().iter().find(|(n, _)| n == b"lost+found") {
        return match tree.node(*id).kind {
            Kind::Dir { .. } => Ok(Cow::Borrowed(tree)),
            _ => Err(Error::LostFoundNotADirectory),
        };
    }
    let mut tree = tree.clone();
    let id = tree.nodes.len();
    tree.nodes.push(Node {
        kind: Kind::Dir {
            children: Vec::new(),
        },
        permissions: 0o700,
        nlink: 2,
        path: PathBuf::from("lost+found"),
    });
    let root = &mut tree.nodes[Tree::ROOT];
    root.nlink += 1;
    if let Kind::Dir { children } = &mut root.kind {
        let at = children.partition_point(|(n, _)| n.as_slice() < b"lost+found".as_slice());
        children.insert(at, (b"lost+found".to_vec(), id));
    }
    Ok(Cow::Owned(tree))
}

/// Where a node's blocks are.
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    ino: u32,
    /// First block of its data (directory blocks, file content, a long
    /// symlink's target); 0 if it has none.
    start: u64,
    /// Its data blocks.
    count: u64,
    /// An extent tree leaf block, for files of more than [`INODE_EXTENTS`]
    /// extents.
    leaf: Option<u64>,
}

/// Numbers, blocks and geometry of the whole image.
struct Layout {
    /// Per node.
    places: Vec<Place>,
    groups: u64,
    inodes_per_group: u64,
    inode_table: u64,
    block_bitmaps: u64,
    inode_bitmaps: u64,
    /// Blocks in use: everything before them is.
    used_blocks: u64,
    blocks: u64,
}

impl Layout {
    fn new(tree: &Tree, plan: &Plan) -> Result<Layout, Error> {
        let mut places = vec![Place::default(); tree.nodes.len()];
        let inode_space = number(tree, plan, &mut places);

        // Data blocks, counted from the data region's start, which depends
        // on the descriptor blocks, which depend on the group count.
        let mut data_blocks = 0;
        for segment in &plan.segments {
            for member in &segment.members {
                let node = tree.node(member.node);
                if let Kind::Dir { children } = &node.kind {
                    check_names(tree, member.node, children)?;
                    let count = format::directory_block_count(
                        [1, 2]
                            .into_iter()
                            .chain(children.iter().map(|(n, _)| n.len())),
                    );
                    places[member.node].start = data_blocks;
                    places[member.node].count = count;
                    data_blocks += count;
                }
            }
            for member in &segment.members {
                let count = data_blocks_of(tree.node(member.node));
                if count == 0 {
                    continue;
                }
                let place = &mut places[member.node];
                place.start = data_blocks;
                place.count = count;
                data_blocks += count;
                if count.div_ceil(format::MAX_EXTENT_LEN) > INODE_EXTENTS as u64 {
                    place.leaf = Some(data_blocks);
                    data_blocks += 1;
                }
            }
        }

        let mut descriptor_blocks = 1;
        loop {
            let before_tables = 1 + descriptor_blocks + data_blocks;
            let mut groups = inode_space.div_ceil(MAX_INODES_PER_GROUP).max(1);
            let (inodes_per_group, used_blocks) = loop {
                // A whole number of inode table blocks per group.
                let per_group = inode_space
                    .div_ceil(groups)
                    .next_multiple_of(INODES_PER_BLOCK);
                let used = before_tables + groups * per_group / INODES_PER_BLOCK + 2 * groups;
                let needed = used.div_ceil(BLOCKS_PER_GROUP);
                if needed <= groups {
                    break (per_group, used);
                }
                groups = needed;
            };
            if groups.div_ceil(DESCRIPTORS_PER_BLOCK) != descriptor_blocks {
                descriptor_blocks = groups.div_ceil(DESCRIPTORS_PER_BLOCK);
                continue;
            }
            let data_start = 1 + descriptor_blocks;
            for place in &mut places {
                if place.count > 0 {
                    place.start += data_start;
                }
                if let Some(leaf) = &mut place.leaf {
                    *leaf += data_start;
                }
            }
            let inode_table = before_tables;
            let block_bitmaps = inode_table + groups * inodes_per_group / INODES_PER_BLOCK;
            // More groups than the blocks fill (many inodes, little data):
            // the last group must still exist, free blocks pad to it.
            let blocks = used_blocks.max((groups - 1) * BLOCKS_PER_GROUP + 1);
            if blocks > u64::from(u32::MAX) {
                return Err(Error::TooLarge(blocks));
            }
            return Ok(Layout {
                places,
                groups,
                inodes_per_group,
                inode_table,
                block_bitmaps,
                inode_bitmaps: block_bitmaps + groups,
                used_blocks,
                blocks,
            });
        }
    }
}

/// Gives every node its inode number, and returns how many inodes the
/// table must hold.
fn number(tree: &Tree, plan: &Plan, places: &mut [Place]) -> u64 {
    let (skeleton, store_paths) = plan.segments.split_first().expect("the root's segment");
    let lost_found = tree
        .node(Tree::ROOT)
        .children()
        .iter()
        .find(|(n, _)| n == b"lost+found")
        .map(|(_, id)| *id)
        .expect("lost+found added");
    places[Tree::ROOT].ino = ROOT_INO;
    places[lost_found].ino = FIRST_INO;
    let mut next = FIRST_INO + 1;
    for member in &skeleton.members {
        if member.node != Tree::ROOT && member.node != lost_found {
            places[member.node].ino = next;
            next += 1;
        }
    }
    let total = plan
        .segments
        .iter()
        .map(|s| s.members.len() as u64)
        .sum::<u64>();
    let space = tree::space_for(total + u64::from(FIRST_INO), MIN_INODE_SPACE);
    let placement = tree::place(
        store_paths.iter().map(|s| {
            let name = s.store_path.as_deref().expect("a store path's name");
            (name, s.members.len() as u64)
        }),
        u64::from(next),
        space,
    );
    for (segment, start) in store_paths.iter().zip(placement.starts) {
        for (offset, member) in segment.members.iter().enumerate() {
            places[member.node].ino = (start + offset as u64) as u32;
        }
    }
    // Inode numbers run from 1: the last one is placement.end - 1.
    space.max(placement.end - 1)
}

/// Blocks of a node's own content: a file's, a long symlink's target.
fn data_blocks_of(node: &Node) -> u64 {
    match &node.kind {
        Kind::File { size, .. } => size.div_ceil(BLOCK_SIZE),
        Kind::Symlink { target } if target.len() > FAST_SYMLINK_MAX => 1,
        _ => 0,
    }
}

fn check_names(tree: &Tree, dir: NodeId, children: &[(Vec<u8>, NodeId)]) -> Result<(), Error> {
    for (name, child) in children {
        if name.len() > 255 {
            return Err(Error::NameTooLong {
                path: tree.node(dir).path.join(std::ffi::OsStr::new(
                    &String::from_utf8_lossy(name).into_owned(),
                )),
                len: name.len(),
            });
        }
        let node = tree.node(*child);
        if !matches!(node.kind, Kind::Dir { .. }) && node.nlink > LINK_MAX {
            return Err(Error::TooManyLinks {
                path: node.path.clone(),
                links: node.nlink,
            });
        }
    }
    Ok(())
}

/// `i_links_count`: a directory of more subdirectories than ext4 counts
/// has 1 (dir_nlink); [`check_names`] refuses files of that many links.
fn link_count(node: &Node) -> u16 {
    match node.kind {
        Kind::Dir { .. } if node.nlink > LINK_MAX => 1,
        _ => node.nlink as u16,
    }
}

struct Image<'a, W> {
    tree: &'a Tree,
    layout: &'a Layout,
    seed: u32,
    time: u32,
    out: &'a mut W,
}

impl<W: Write + Seek> Image<'_, W> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.out
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.out.write_all(bytes))
            .map_err(Error::Write)
    }

    fn ino(&self, id: NodeId) -> u32 {
        self.layout.places[id].ino
    }

    /// Directory blocks, file contents, long symlink targets, extent
    /// leaves.
    fn write_data(&mut self, plan: &Plan) -> Result<(), Error> {
        let mut buffer = vec![0u8; 1 << 20];
        for member in plan.segments.iter().flat_map(|s| &s.members) {
            let Member { node: id, parent } = *member;
            let place = self.layout.places[id];
            let node = self.tree.node(id);
            match &node.kind {
                Kind::Dir { children } => {
                    let entries = [(&b"."[..], self.ino(id), FileType::Directory)]
                        .into_iter()
                        .chain([(&b".."[..], self.ino(parent), FileType::Directory)])
                        .chain(children.iter().map(|(name, child)| {
                            (
                                &name[..],
                                self.ino(*child),
                                self.tree.node(*child).file_type(),
                            )
                        }));
                    let blocks = format::directory_blocks(self.seed, place.ino, entries);
                    self.write_at(place.start * BLOCK_SIZE, &blocks)?;
                }
                Kind::File { size, source } if *size > 0 => {
                    self.copy_file(source, *size, place.start, &mut buffer)?;
                }
                Kind::Symlink { target } if place.count > 0 => {
                    self.write_at(place.start * BLOCK_SIZE, target)?;
                }
                _ => {}
            }
            if let Some(leaf) = place.leaf {
                let extents = Extent::covering(place.start, place.count);
                let block = format::extent_leaf_block(self.seed, place.ino, &extents);
                self.write_at(leaf * BLOCK_SIZE, &block)?;
            }
        }
        Ok(())
    }

    /// Copies a file's content to its blocks. Runs of zeros are skipped:
    /// the output reads as zeros already, and a sparse file stays sparse.
    fn copy_file(
        &mut self,
        source: &Path,
        size: u64,
        start: u64,
        buffer: &mut [u8],
    ) -> Result<(), Error> {
        self.out
            .seek(SeekFrom::Start(start * BLOCK_SIZE))
            .map_err(Error::Write)?;
        tree::copy_content(source, size, buffer, |chunk| {
            if chunk.iter().all(|&b| b == 0) {
                self.out
                    .seek(SeekFrom::Current(chunk.len() as i64))
                    .map(drop)
            } else {
                self.out.write_all(chunk)
            }
            .map_err(Error::Write)
        })
    }

    fn inode(&self, id: NodeId) -> [u8; INODE_SIZE as usize] {
        let node = self.tree.node(id);
        let place = self.layout.places[id];
        let extents = Extent::covering(place.start, place.count);
        let (size, data) = match &node.kind {
            Kind::Symlink { target } if place.count == 0 => {
                (target.len() as u64, Blocks::Inline(target))
            }
            Kind::Dir { .. } => (place.count * BLOCK_SIZE, Blocks::Extents(&extents)),
            _ => (
                node.size(),
                match place.leaf {
                    Some(block) => Blocks::Leaf {
                        block: block as u32,
                        first_logical: 0,
                    },
                    None => Blocks::Extents(&extents),
                },
            ),
        };
        Inode {
            mode: node.mode(),
            links: link_count(node),
            size,
            blocks: place.count + u64::from(place.leaf.is_some()),
            data,
            time: self.time,
        }
        .encode(self.seed, place.ino)
    }

    /// The inode table, the bitmaps and the group descriptors; returns the
    /// free blocks and inodes.
    fn write_tables(&mut self, plan: &Plan) -> Result<(u64, u64), Error> {
        let layout = self.layout;
        let per_group = layout.inodes_per_group;
        let mut by_ino: Vec<(u32, NodeId)> = plan
            .segments
            .iter()
            .flat_map(|s| &s.members)
            .map(|member| (self.ino(member.node), member.node))
            .collect();
        by_ino.sort_unstable();
        let mut inode_used = vec![false; (layout.groups * per_group) as usize];
        inode_used[..FIRST_INO as usize - 1].fill(true);
        let mut directories = vec![0u64; layout.groups as usize];
        // One group's table at a time (at most 8 MiB).
        let mut table = vec![0u8; (per_group * INODE_SIZE) as usize];
        let mut nodes = by_ino.iter().peekable();
        for group in 0..layout.groups {
            table.fill(0);
            let first_index = group * per_group;
            while let Some(&(ino, id)) =
                nodes.next_if(|(ino, _)| u64::from(*ino - 1) < first_index + per_group)
            {
                let index = u64::from(ino - 1);
                let at = ((index - first_index) * INODE_SIZE) as usize;
                table[at..at + INODE_SIZE as usize].copy_from_slice(&self.inode(id));
                inode_used[index as usize] = true;
                if let Kind::Dir { .. } = self.tree.node(id).kind {
                    directories[group as usize] += 1;
                }
            }
            // Free inodes stay holes: the output reads as zeros.
            let group_table = layout.inode_table + first_index / INODES_PER_BLOCK;
            for (i, block) in table.chunks(BLOCK_SIZE as usize).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    self.write_at((group_table + i as u64) * BLOCK_SIZE, block)?;
                }
            }
        }

        let mut descriptors = Vec::with_capacity(layout.groups as usize * 32);
        let (mut free_blocks, mut free_inodes) = (0, 0);
        for group in 0..layout.groups {
            let first = group * BLOCKS_PER_GROUP;
            let mut block_bitmap = vec![0xFFu8; BLOCK_SIZE as usize];
            let mut group_free_blocks = 0;
            for block in layout.used_blocks.max(first)..layout.blocks.min(first + BLOCKS_PER_GROUP)
            {
                let bit = (block - first) as usize;
                block_bitmap[bit / 8] &= !(1 << (bit % 8));
                group_free_blocks += 1;
            }
            let mut inode_bitmap = vec![0u8; BLOCK_SIZE as usize];
            let mut group_free_inodes = 0;
            for bit in 0..(BLOCK_SIZE * 8) as usize {
                let index = group * per_group + bit as u64;
                if bit as u64 >= per_group || inode_used[index as usize] {
                    inode_bitmap[bit / 8] |= 1 << (bit % 8);
                } else {
                    group_free_inodes += 1;
                }
            }
            self.write_at((layout.block_bitmaps + group) * BLOCK_SIZE, &block_bitmap)?;
            self.write_at((layout.inode_bitmaps + group) * BLOCK_SIZE, &inode_bitmap)?;
            let descriptor = GroupDescriptor {
                block_bitmap: (layout.block_bitmaps + group) as u32,
                inode_bitmap: (layout.inode_bitmaps + group) as u32,
                inode_table: (layout.inode_table + group * per_group / INODES_PER_BLOCK) as u32,
                free_blocks: group_free_blocks as u16,
                free_inodes: group_free_inodes as u16,
                directories: directories[group as usize] as u16,
                block_bitmap_csum: format::block_bitmap_csum(self.seed, &block_bitmap),
                inode_bitmap_csum: format::inode_bitmap_csum(
                    self.seed,
                    &inode_bitmap,
                    per_group as u32,
                ),
            };
            descriptors.extend_from_slice(&descriptor.encode(self.seed, group as u32));
            free_blocks += group_free_blocks;
            free_inodes += group_free_inodes;
        }
        self.write_at(BLOCK_SIZE, &descriptors)?;
        if layout.blocks > layout.used_blocks {
            // The image ends in free blocks: make the output that long.
            self.write_at(
                (layout.blocks - 1) * BLOCK_SIZE,
                &[0u8; BLOCK_SIZE as usize],
            )?;
        }
        Ok((free_blocks, free_inodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            uuid: Uuid::from_u128(1),
            time: 1,
            label: String::new(),
        }
    }

    fn dir(children: Vec<(Vec<u8>, NodeId)>, path: &str) -> Node {
        Node {
            kind: Kind::Dir { children },
            permissions: 0o755,
            nlink: 2,
            path: PathBuf::from(path),
        }
    }

    fn symlink(nlink: u32, path: &str) -> Node {
        Node {
            kind: Kind::Symlink {
                target: b"x".to_vec(),
            },
            permissions: 0o777,
            nlink,
            path: PathBuf::from(path),
        }
    }

    fn write_tree(nodes: Vec<Node>, options: &Options) -> Result<u64, Error> {
        write(&Tree { nodes }, options, &mut io::Cursor::new(Vec::new()))
    }

    #[test]
    fn a_name_longer_than_255_bytes_is_refused_with_its_path() {
        let long = vec![b'n'; 256];
        let err = write_tree(
            vec![dir(vec![(long, 1)], ""), symlink(1, "nnn")],
            &options(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::NameTooLong { len: 256, ref path } if path.ends_with("n".repeat(256))),
            "{err}"
        );
        // 255 bytes is fine.
        write_tree(
            vec![dir(vec![(vec![b'n'; 255], 1)], ""), symlink(1, "nnn")],
            &options(),
        )
        .unwrap();
    }

    #[test]
    fn more_hard_links_than_ext4_counts_are_refused_with_the_path() {
        let err = write_tree(
            vec![dir(vec![(b"l".to_vec(), 1)], ""), symlink(65001, "l")],
            &options(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::TooManyLinks { links: 65001, ref path } if path == Path::new("l")),
            "{err}"
        );
        write_tree(
            vec![dir(vec![(b"l".to_vec(), 1)], ""), symlink(65000, "l")],
            &options(),
        )
        .unwrap();
    }

    #[test]
    fn a_directory_of_more_subdirectories_than_ext4_counts_has_one_link() {
        let mut node = dir(vec![], "big");
        node.nlink = 65000;
        assert_eq!(link_count(&node), 65000);
        node.nlink = 65001;
        assert_eq!(link_count(&node), 1);
        assert_eq!(link_count(&symlink(3, "l")), 3);
    }

    #[test]
    fn a_lost_found_that_is_not_a_directory_is_refused() {
        let err = write_tree(
            vec![
                dir(vec![(b"lost+found".to_vec(), 1)], ""),
                symlink(1, "lost+found"),
            ],
            &options(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::LostFoundNotADirectory), "{err}");
    }

    #[test]
    fn labels_over_16_bytes_and_times_past_2038_are_refused() {
        let tree = || vec![dir(vec![], "")];
        let mut long_label = options();
        long_label.label = "x".repeat(17);
        assert!(matches!(
            write_tree(tree(), &long_label),
            Err(Error::LabelTooLong(17))
        ));
        long_label.label = "x".repeat(16);
        write_tree(tree(), &long_label).unwrap();
        let mut late = options();
        late.time = 1 << 31;
        assert!(matches!(
            write_tree(tree(), &late),
            Err(Error::TimeTooLate(t)) if t == 1 << 31
        ));
        late.time = (1 << 31) - 1;
        write_tree(tree(), &late).unwrap();
    }
}
