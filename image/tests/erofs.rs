//! The erofs writer against what reads its images: fsck.erofs (Debian's
//! erofs-utils), the Linux kernel through a loop mount (root, as CI runs),
//! and the layout's promise: a store path added or removed elsewhere leaves
//! the others' bytes as they were, but for their data addresses.

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

mod common;

use abnix_image::erofs::{self, Layout, SegmentLayout};
use abnix_image::tree::Tree;
use common::{
    add_store_path, assert_a_file_changed_after_the_walk_is_refused, assert_same_tree,
    tree_and_image, Mount, ReadBack,
};
use uuid::Uuid;

const BLOCK: usize = 4096;

fn options() -> erofs::Options {
    erofs::Options {
        uuid: Uuid::parse_str("6f1f3a52-0d3e-4c39-9a5e-2b7d0c1e4f60").unwrap(),
        time: 1,
    }
}

fn image_of(root: &Path) -> (Vec<u8>, Layout) {
    let tree = Tree::walk(root).unwrap();
    let mut out = Cursor::new(Vec::new());
    let layout = erofs::write(&tree, options(), &mut out).unwrap();
    let bytes = out.into_inner();
    assert_eq!(bytes.len() as u64, layout.blocks * BLOCK as u64);
    (bytes, layout)
}

/// Every node type: an empty file, hard links within and across store
/// paths, a directory larger than a block, symlinks short, long (inline
/// limit) and longest, an empty directory, odd modes, names sorting before
/// `.`.
fn every_node_type(root: &Path) {
    add_store_path(root, "0a1b2c-one", 3);
    add_store_path(root, "9z8y7x-two", 2);
    let one = root.join("nix/store/0a1b2c-one");
    fs::write(one.join("empty"), b"").unwrap();
    fs::hard_link(one.join("lib/file-1"), one.join("bin/hard")).unwrap();
    fs::hard_link(
        one.join("lib/file-1"),
        root.join("nix/store/9z8y7x-two/hard"),
    )
    .unwrap();
    let big = one.join("share/many");
    fs::create_dir_all(&big).unwrap();
    for i in 0..300 {
        fs::write(
            big.join(format!("a-rather-long-entry-name-{i:04}")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    fs::write(big.join("+sorts-before-dot"), b"+").unwrap();
    fs::create_dir(one.join("share/empty")).unwrap();
    symlink("x".repeat(4064), one.join("inline-limit")).unwrap();
    symlink("y".repeat(4065), one.join("past-inline")).unwrap();
    symlink("z".repeat(4095), one.join("longest")).unwrap();
    fs::write(one.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(one.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("/nix/store/0a1b2c-one/bin/run", root.join("init")).unwrap();
}

fn write_image(root: &Path, out: &Path) {
    let tree = Tree::walk(root).unwrap();
    let mut file = fs::File::create(out).unwrap();
    erofs::write(&tree, options(), &mut file).unwrap();
}

#[test]
fn fsck_erofs_finds_an_image_with_every_node_type_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (root, image) = tree_and_image(dir.path(), every_node_type, write_image);
    // --extract reads every file and directory too, not only the inodes.
    let extracted = dir.path().join("extracted");
    let output = Command::new("fsck.erofs")
        .arg(format!("--extract={}", extracted.display()))
        .arg(&image)
        .output()
        .expect("fsck.erofs (erofs-utils, scripts/setup)");
    assert!(
        output.status.success(),
        "fsck.erofs: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_tree(&root, &extracted, ReadBack::Extracted);
}

#[test]
fn linux_reads_back_every_path_as_the_source_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, image) = tree_and_image(dir.path(), every_node_type, write_image);
    let mount = Mount::new("erofs", &image, &dir.path().join("mnt"));
    assert_same_tree(
        &root,
        &mount.dir,
        ReadBack::Mounted {
            time: 1,
            added: &[],
        },
    );
    let run = fs::metadata(mount.dir.join("nix/store/0a1b2c-one/bin/run")).unwrap();
    assert_eq!(
        (run.uid(), run.gid(), run.mtime()),
        (0, 0, 1),
        "owned by root, the build time"
    );
}

#[test]
fn the_same_tree_gives_the_same_bytes_and_the_uuid_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    every_node_type(dir.path());
    let (first, _) = image_of(dir.path());
    let (second, _) = image_of(dir.path());
    assert!(first == second, "two builds differ");

    let tree = Tree::walk(dir.path()).unwrap();
    let mut other = Cursor::new(Vec::new());
    let uuid = Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap();
    erofs::write(&tree, erofs::Options { uuid, ..options() }, &mut other).unwrap();
    let differing: Vec<usize> = (0..first.len())
        .filter(|&i| first[i] != other.get_ref()[i])
        .collect();
    assert!(!differing.is_empty());
    assert!(
        differing.iter().all(|i| (1024 + 48..1024 + 64).contains(i)),
        "only the superblock's UUID field differs: {differing:?}"
    );
}

fn segment<'a>(layout: &'a Layout, name: &str) -> Option<&'a SegmentLayout> {
    layout
        .segments
        .iter()
        .find(|s| s.store_path.as_deref() == Some(name.as_bytes()))
}

fn blocks(image: &[u8], range: std::ops::Range<u64>, offset: u64) -> &[u8] {
    &image[((range.start + offset) as usize) * BLOCK..((range.end + offset) as usize) * BLOCK]
}

/// The layout's point (docs/delta.md): v1 and v2 share eleven store paths,
/// v1 has `removed`, v2 has `added` instead (sorting in the middle). Then:
///
/// - each shared store path's data blocks hold the same bytes in both (at
///   addresses shifted by whole blocks), and everything before the change
///   is the same bytes at the same addresses;
/// - each shared store path's metadata segment sits at the same blocks of
///   the metadata region (its nids did not change), and its bytes differ
///   only in inodes' data-address words (bytes 16..20 of a 32-byte slot),
///   each by exactly the shift of that store path's data; segments whose
///   data did not move are identical;
/// - every other metadata block that differs belongs to the skeleton (the
///   /nix/store directory) or to the removed or added store path.
#[test]
fn a_store_path_added_and_one_removed_leave_the_others_bytes_but_data_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    let shared: Vec<String> = (0..11)
        .map(|i| format!("{i:x}{i:x}q{}-pkg-{i}", i * 7))
        .collect();
    for root in [&v1, &v2] {
        fs::create_dir_all(root.join("etc")).unwrap();
        for (i, name) in shared.iter().enumerate() {
            // One store path large enough for a multi-block segment.
            add_store_path(root, name, if i == 4 { 200 } else { 4 });
        }
    }
    add_store_path(&v1, "5removed-old", 6);
    add_store_path(&v2, "5added-new", 9);
    let (old, old_layout) = image_of(&v1);
    let (new, new_layout) = image_of(&v2);

    let removed = segment(&old_layout, "5removed-old").unwrap();
    let added = segment(&new_layout, "5added-new").unwrap();
    let first_changed = removed.data.start.min(added.data.start) as usize * BLOCK;
    assert!(
        old[BLOCK..first_changed] == new[BLOCK..first_changed],
        "the data before the change moved"
    );

    let mut changed_meta = vec![removed.metadata.clone(), added.metadata.clone()];
    changed_meta.push(old_layout.segments[0].metadata.clone());
    assert_eq!(
        old_layout.segments[0].metadata,
        new_layout.segments[0].metadata
    );
    let mut moved = 0;
    for name in &shared {
        let (a, b) = (
            segment(&old_layout, name).unwrap(),
            segment(&new_layout, name).unwrap(),
        );
        assert!(
            blocks(&old, a.data.clone(), 0) == blocks(&new, b.data.clone(), 0),
            "{name}: data blocks differ"
        );
        assert_eq!(a.metadata, b.metadata, "{name}: its nids moved");
        let shift = b.data.start.wrapping_sub(a.data.start) as u32;
        let (x, y) = (
            blocks(&old, a.metadata.clone(), old_layout.meta_blkaddr),
            blocks(&new, b.metadata.clone(), new_layout.meta_blkaddr),
        );
        let mut words = 0;
        for i in (0..x.len()).filter(|&i| x[i] != y[i]) {
            let word = i - i % 32 + 16;
            assert!(
                (word..word + 4).contains(&i),
                "{name}: metadata byte {i} of its segment differs outside a data address"
            );
            let value = |m: &[u8]| u32::from_le_bytes(m[word..word + 4].try_into().unwrap());
            assert_eq!(
                value(y).wrapping_sub(value(x)),
                shift,
                "{name}: address at {word}"
            );
            words += 1;
        }
        if shift == 0 {
            assert_eq!(words, 0, "{name}: data did not move, its metadata changed");
        } else {
            assert!(words > 0, "{name}: data moved, addresses did not");
            moved += 1;
        }
    }
    assert!(
        moved > 0 && moved < shared.len(),
        "the change sorts among the shared paths"
    );

    // Outside the segments, the metadata regions are the same (zeros).
    let meta_blocks = |layout: &Layout| layout.blocks - layout.meta_blkaddr;
    let span = meta_blocks(&old_layout).max(meta_blocks(&new_layout));
    let in_segment =
        |block: u64, layout: &Layout| layout.segments.iter().any(|s| s.metadata.contains(&block));
    for block in 0..span {
        let read = |image: &[u8], layout: &Layout| -> Vec<u8> {
            if block < meta_blocks(layout) {
                blocks(image, block..block + 1, layout.meta_blkaddr).to_vec()
            } else {
                vec![0; BLOCK]
            }
        };
        if read(&old, &old_layout) != read(&new, &new_layout) {
            let changed = changed_meta.iter().any(|r| r.contains(&block));
            let shared_segment = in_segment(block, &old_layout) && in_segment(block, &new_layout);
            assert!(
                changed || shared_segment,
                "metadata block {block} differs outside any segment"
            );
        }
    }
}

#[test]
fn a_file_that_changes_after_the_walk_is_refused_with_its_path() {
    assert_a_file_changed_after_the_walk_is_refused(
        |tree| erofs::write(tree, options(), &mut Cursor::new(Vec::new())).map(drop),
        |err| match err {
            erofs::Error::Content(content) => Some(content),
            _ => None,
        },
    );
}
