//! The ext4 writer against e2fsprogs and Linux, and the layout's promise:
//! a store path that did not change keeps its bytes (docs/delta.md).
//!
//! The mount tests need root (loop devices), as the machine tests do; CI
//! runs as root.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

mod common;

use abnix_image::ext4;
use abnix_image::tree::Tree;
use common::{
    add_store_path, assert_a_file_changed_after_the_walk_is_refused, assert_same_tree, content,
    tree_and_image, Mount, ReadBack,
};
use uuid::Uuid;

const TIME: u64 = 1_700_000_000;
const BLOCK: usize = 4096;
/// How these images read back: at [`TIME`], with lost+found added.
const MOUNTED: ReadBack = ReadBack::Mounted {
    time: TIME,
    added: &["lost+found"],
};

fn options(uuid: Uuid) -> ext4::Options {
    ext4::Options {
        uuid,
        time: TIME,
        label: "abnix-test".into(),
    }
}

fn image_of(root: &Path, uuid: Uuid) -> Vec<u8> {
    let tree = Tree::walk(root).unwrap();
    let mut out = Cursor::new(Vec::new());
    let size = ext4::write(&tree, &options(uuid), &mut out).unwrap();
    let bytes = out.into_inner();
    assert_eq!(bytes.len() as u64, size);
    bytes
}

fn write_image(root: &Path, out: &Path) {
    let tree = Tree::walk(root).unwrap();
    let mut file = fs::File::create(out).unwrap();
    ext4::write(&tree, &options(Uuid::from_u128(7)), &mut file).unwrap();
}

/// A tree with every node type the writer handles, and its edge cases.
fn every_node_type(root: &Path) {
    add_store_path(root, "aaaa-one", 5);
    let two = root.join("nix/store/bbbb-two");
    fs::create_dir_all(two.join("empty-dir")).unwrap();
    fs::write(two.join("empty-file"), b"").unwrap();
    fs::write(two.join("block-exactly"), content("exact", BLOCK)).unwrap();
    fs::write(two.join("tool"), content("tool", 100_000)).unwrap();
    fs::set_permissions(two.join("tool"), fs::Permissions::from_mode(0o4555)).unwrap();
    fs::hard_link(two.join("tool"), two.join("tool-link")).unwrap();
    fs::hard_link(two.join("tool"), two.join("empty-dir/../tool-link2")).unwrap();
    symlink("tool", two.join("short-link")).unwrap();
    symlink("x".repeat(59), two.join("link-59")).unwrap();
    symlink("y".repeat(60), two.join("link-60")).unwrap();
    symlink(
        "/nix/store/".to_owned() + &"z".repeat(300),
        two.join("long-link"),
    )
    .unwrap();
    // A directory of many blocks, names of every length up to 255.
    let many = two.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..1500 {
        let name = format!("{i:04}-{}", "n".repeat(i % 251));
        fs::write(many.join(name), format!("{i}")).unwrap();
    }
    // More extents than an inode holds (5 of 32768 blocks): a leaf block.
    // Sparse, with marks to find.
    let big = fs::File::create(two.join("big")).unwrap();
    big.set_len(4 * 32768 * BLOCK as u64 + 12345).unwrap();
    use std::os::unix::fs::FileExt;
    for (at, mark) in [(0u64, "start"), (300 << 20, "middle"), (512 << 20, "fifth")] {
        big.write_all_at(mark.as_bytes(), at).unwrap();
    }
    big.write_all_at(b"end", big.metadata().unwrap().len() - 3)
        .unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("/nix/store/bbbb-two/tool", root.join("etc/tool")).unwrap();
}

fn e2fsck(image: &Path) {
    let output = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "e2fsck -fn: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn e2fsck_finds_an_image_with_every_node_type_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = tree_and_image(dir.path(), every_node_type, write_image);
    e2fsck(&image);

    // What dumpe2fs reads of the features and the fixed seed.
    let output = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&image)
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in\n{header}"))
    };
    assert_eq!(field("Filesystem UUID:"), Uuid::from_u128(7).to_string());
    assert_eq!(field("Filesystem volume name:"), "abnix-test");
    // The seed of mkfs.ext4 -U SEED_UUID, whatever the UUID.
    assert_eq!(field("Checksum seed:"), "0x374cfaf7");
    let features = field("Filesystem features:");
    for feature in [
        "extent",
        "flex_bg",
        "sparse_super2",
        "metadata_csum",
        "metadata_csum_seed",
        "read-only",
        "filetype",
    ] {
        assert!(
            features.split(' ').any(|f| f == feature),
            "{feature} in {features}"
        );
    }
    for absent in ["has_journal", "dir_index", "64bit", "resize_inode"] {
        assert!(!features.split(' ').any(|f| f == absent), "{features}");
    }
}

#[test]
fn e2fsck_finds_an_image_with_more_groups_for_inodes_than_for_data_clean() {
    // 17000 empty files: 65536 inodes or more (the run may end past the
    // space), in groups of at most 32768, and data for a fraction of one
    // group: free blocks pad the image to its last group.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let many = root.join("nix/store/cccc-many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..17000 {
        fs::write(many.join(i.to_string()), b"").unwrap();
    }
    let image = dir.path().join("image.ext4");
    write_image(&root, &image);
    // The last group holds one block (its own bitmaps are elsewhere).
    let blocks = fs::metadata(&image).unwrap().len() / BLOCK as u64;
    assert_eq!(blocks % 32768, 1, "{blocks} blocks");
    e2fsck(&image);
    let mount = Mount::new("ext4", &image, &dir.path().join("mnt"));
    assert_same_tree(&root, &mount.dir, MOUNTED);
}

#[test]
fn linux_reads_back_every_path_as_the_source_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, image) = tree_and_image(dir.path(), every_node_type, write_image);
    let mount = Mount::new("ext4", &image, &dir.path().join("mnt"));
    assert_same_tree(&root, &mount.dir, MOUNTED);
    // The root directory's link count counts lost+found.
    let root_links = fs::metadata(&mount.dir).unwrap().nlink();
    assert_eq!(root_links, fs::metadata(&root).unwrap().nlink() + 1);
}

#[test]
fn the_same_tree_gives_the_same_bytes_and_the_uuid_only_the_superblock() {
    let dir = tempfile::tempdir().unwrap();
    add_store_path(dir.path(), "aaaa-one", 6);
    add_store_path(dir.path(), "bbbb-two", 3);
    let a = image_of(dir.path(), Uuid::from_u128(1));
    assert!(a == image_of(dir.path(), Uuid::from_u128(1)));
    let b = image_of(dir.path(), Uuid::from_u128(2));
    assert_eq!(a.len(), b.len());
    let differing: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    assert!(!differing.is_empty());
    // The UUID (0x468..0x478) and the superblock's checksum (0x7FC..).
    assert!(
        differing
            .iter()
            .all(|&i| (1024 + 0x68..1024 + 0x78).contains(&i) || (1024 + 0x3FC..2048).contains(&i)),
        "{differing:?}"
    );
}

/// Just enough of an ext4 reader to compare two of these images.
struct Image<'a> {
    bytes: &'a [u8],
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

impl Image<'_> {
    fn block(&self, n: u64) -> &[u8] {
        &self.bytes[n as usize * BLOCK..(n as usize + 1) * BLOCK]
    }

    fn inode(&self, ino: u64) -> &[u8] {
        let per_group = le32(self.bytes, 1024 + 0x28);
        let group = (ino - 1) / per_group;
        let descriptor = &self.bytes[BLOCK + 32 * group as usize..];
        let table = le32(descriptor, 8) as usize * BLOCK;
        let at = table + ((ino - 1) % per_group) as usize * 256;
        &self.bytes[at..at + 256]
    }

    /// The blocks an inode's extents point to, in order, with its leaf.
    fn blocks_of(&self, inode: &[u8]) -> Vec<u64> {
        let root = &inode[0x28..0x64];
        let mut blocks = Vec::new();
        if le32(inode, 0x20) & 0x80000 == 0 {
            return blocks; // a fast symlink
        }
        let leaves: Vec<&[u8]> = if le16(root, 6) == 0 {
            vec![root]
        } else {
            (0..le16(root, 2) as usize)
                .map(|i| self.block(le32(root, 12 + 12 * i + 4)))
                .collect()
        };
        for leaf in leaves {
            for i in 0..le16(leaf, 2) as usize {
                let e = &leaf[12 + 12 * i..];
                blocks.extend((0..le16(e, 4)).map(|k| le32(e, 8) + k));
            }
        }
        blocks
    }

    fn data(&self, inode: &[u8]) -> Vec<u8> {
        self.blocks_of(inode)
            .into_iter()
            .flat_map(|b| self.block(b).to_vec())
            .collect()
    }

    /// A directory's entries: name to inode number.
    fn entries(&self, ino: u64) -> BTreeMap<Vec<u8>, u64> {
        let data = self.data(self.inode(ino));
        let mut entries = BTreeMap::new();
        for block in data.chunks(BLOCK) {
            let mut at = 0;
            while at < BLOCK - 12 {
                let (child, rec_len, len) = (
                    le32(block, at),
                    le16(block, at + 4) as usize,
                    block[at + 6] as usize,
                );
                entries.insert(block[at + 8..at + 8 + len].to_vec(), child);
                at += rec_len;
            }
        }
        entries
    }

    /// Every path of a store path and its inode number.
    fn store_path(&self, name: &str) -> BTreeMap<String, u64> {
        let nix = self.entries(2)[&b"nix"[..]];
        let store = self.entries(nix)[&b"store"[..]];
        let top = self.entries(store)[name.as_bytes()];
        let mut paths = BTreeMap::from([(String::new(), top)]);
        let mut stack = vec![(String::new(), top)];
        while let Some((path, ino)) = stack.pop() {
            if le16(self.inode(ino), 0) & 0o170000 != 0o040000 {
                continue;
            }
            for (child_name, child) in self.entries(ino) {
                if child_name == b"." || child_name == b".." {
                    continue;
                }
                let child_path = format!("{path}/{}", String::from_utf8_lossy(&child_name));
                paths.insert(child_path.clone(), child);
                stack.push((child_path, child));
            }
        }
        paths
    }
}

/// An inode record without what moves with its data: the extent tree root
/// (i_block) and the checksum that covers it.
fn without_extents(inode: &[u8]) -> Vec<u8> {
    let mut raw = inode.to_vec();
    raw[0x28..0x64].fill(0);
    raw[0x7C..0x7E].fill(0);
    raw[0x82..0x84].fill(0);
    raw
}

#[test]
fn a_store_path_added_and_one_removed_leave_the_others_bytes_but_data_addresses() {
    // v1: four store paths; v2: "mmmm-old" replaced by "dddd-new", which
    // sorts before two of the others and is larger, so their data moves.
    let common = ["bbbb-first", "ffff-middle", "pppp-after", "zzzz-last"];
    let v1 = tempfile::tempdir().unwrap();
    let v2 = tempfile::tempdir().unwrap();
    for (i, name) in common.iter().enumerate() {
        add_store_path(v1.path(), name, 4 + i);
        add_store_path(v2.path(), name, 4 + i);
    }
    add_store_path(v1.path(), "mmmm-old", 3);
    add_store_path(v2.path(), "dddd-new", 9);
    let (b1, b2) = (
        image_of(v1.path(), Uuid::from_u128(1)),
        image_of(v2.path(), Uuid::from_u128(2)),
    );
    let (i1, i2) = (Image { bytes: &b1 }, Image { bytes: &b2 });
    let mut moved = 0;
    for name in common {
        let (p1, p2) = (i1.store_path(name), i2.store_path(name));
        // The same inode numbers: the directories naming them keep their
        // bytes.
        assert_eq!(p1, p2, "{name}: inode numbers");
        let mut data_moved = false;
        for (path, &ino) in &p1 {
            let (n1, n2) = (i1.inode(ino), i2.inode(ino));
            // Directory blocks, file contents and long symlink targets:
            // byte-identical, wherever they are.
            let (d1, d2) = (i1.data(n1), i2.data(n2));
            assert!(d1 == d2, "{name}{path}: data blocks differ");
            // The inode record: identical but for its extents (the data's
            // addresses) and checksum, and those only if its data moved.
            assert_eq!(
                without_extents(n1),
                without_extents(n2),
                "{name}{path}: inode"
            );
            if i1.blocks_of(n1) == i2.blocks_of(n2) {
                assert_eq!(n1, n2, "{name}{path}: inode with data in place");
            } else {
                data_moved = true;
            }
        }
        moved += usize::from(data_moved);
        // Its blocks are contiguous and one run in both images: what content-
        // defined chunking finds again after a shift.
        let span = |image: &Image, paths: &BTreeMap<String, u64>| {
            let mut blocks: Vec<u64> = paths
                .values()
                .flat_map(|&ino| image.blocks_of(image.inode(ino)))
                .collect();
            blocks.sort();
            blocks.dedup();
            assert!(
                blocks.windows(2).all(|w| w[1] == w[0] + 1),
                "{name}: one run"
            );
            blocks
                .iter()
                .flat_map(|&b| image.block(b).to_vec())
                .collect::<Vec<u8>>()
        };
        assert!(
            span(&i1, &p1) == span(&i2, &p2),
            "{name}: its run of blocks"
        );
    }
    // The case is meant: the paths after the change had their data moved.
    assert_eq!(moved, 3, "ffff-middle, pppp-after and zzzz-last moved");
}

#[test]
fn a_file_that_changes_after_the_walk_is_refused_with_its_path() {
    assert_a_file_changed_after_the_walk_is_refused(
        |tree| ext4::write(tree, &options(Uuid::nil()), &mut Cursor::new(Vec::new())).map(drop),
        |err| match err {
            ext4::Error::Content(content) => Some(content),
            _ => None,
        },
    );
}
