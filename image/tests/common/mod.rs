//! What the erofs and ext4 tests share: trees to write, a loop mount, and
//! the comparison of a tree with what reads it back.

// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use abnix_image::tree::{ContentError, Tree};

/// Bytes that differ by seed and length and do not compress away.
pub fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut state = seed.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// /nix/store/NAME with `files` files of a few KiB in `lib`, an executable
/// `bin/run` and a symlink `bin/link` to `lib/file-0`.
pub fn add_store_path(root: &Path, name: &str, files: usize) {
    let dir = root.join("nix/store").join(name);
    fs::create_dir_all(dir.join("lib")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    for i in 0..files {
        let path = dir.join(format!("lib/file-{i}"));
        fs::write(&path, content(&format!("{name}/{i}"), 700 + 3001 * i)).unwrap();
    }
    fs::write(dir.join("bin/run"), content(name, 5000)).unwrap();
    fs::set_permissions(dir.join("bin/run"), fs::Permissions::from_mode(0o555)).unwrap();
    symlink("../lib/file-0", dir.join("bin/link")).unwrap();
}

/// Checks that `write` refuses a file grown, then one cut, after the walk,
/// naming its path: `content_error` is the writer's error's content error.
pub fn assert_a_file_changed_after_the_walk_is_refused<E: std::fmt::Display>(
    write: impl Fn(&Tree) -> Result<(), E>,
    content_error: impl Fn(&E) -> Option<&ContentError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grows");
    fs::write(&file, b"before").unwrap();
    let tree = Tree::walk(dir.path()).unwrap();
    fs::write(&file, b"before and after").unwrap();
    let err = write(&tree).unwrap_err();
    assert!(
        matches!(
            content_error(&err),
            Some(ContentError::Changed { expected: 6, .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    fs::write(&file, b"less").unwrap();
    let err = write(&tree).unwrap_err();
    assert!(
        matches!(
            content_error(&err),
            Some(ContentError::Changed {
                expected: 6,
                found: 4,
                ..
            })
        ),
        "{err}"
    );
}

/// The tree `make` builds at `dir/root`, and its image at `dir/image`
/// written by `write`: (root, image).
pub fn tree_and_image(
    dir: &Path,
    make: impl FnOnce(&Path),
    write: impl FnOnce(&Path, &Path),
) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    make(&root);
    let image = dir.join("image");
    write(&root, &image);
    (root, image)
}

/// A read-only loop mount (root, as CI runs), unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(fstype: &str, image: &Path, dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", fstype, "-o", "ro,loop"])
            .arg(image)
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting the image (needs root, as CI)");
        Mount {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// How the copy compared with its source was made.
#[derive(Clone, Copy)]
pub enum ReadBack {
    /// Extracted by a tool that keeps neither link counts nor the setuid,
    /// setgid and sticky bits (fsck.erofs --extract).
    Extracted,
    /// A mount of an image built at `time`, which adds the directories
    /// `added` at its root (ext4's lost+found): every path is root's, at
    /// that time, with the source's full mode and link count.
    Mounted {
        time: u64,
        added: &'static [&'static str],
    },
}

/// Every path under `source` (the root included) is under `copy` with the
/// same type, permissions, size, link target and content, and the copy has
/// no more paths than those and `added`.
pub fn assert_same_tree(source: &Path, copy: &Path, how: ReadBack) {
    let list = |root: &Path| {
        let mut paths = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = root.join(&rel);
            if fs::symlink_metadata(&abs).unwrap().is_dir() {
                for entry in fs::read_dir(&abs).unwrap() {
                    stack.push(rel.join(entry.unwrap().file_name()));
                }
            }
            paths.push(rel);
        }
        paths.sort();
        paths
    };
    let paths = list(source);
    let added: &[&str] = match how {
        ReadBack::Extracted => &[],
        ReadBack::Mounted { added, .. } => added,
    };
    let mut expected = paths.clone();
    expected.extend(added.iter().map(PathBuf::from));
    expected.sort();
    assert_eq!(expected, list(copy), "the same paths");
    for rel in &paths {
        let (x, y) = (source.join(rel), copy.join(rel));
        let (mx, my) = (
            fs::symlink_metadata(&x).unwrap(),
            fs::symlink_metadata(&y).unwrap(),
        );
        let mask = match how {
            ReadBack::Extracted => 0o170777,
            ReadBack::Mounted { .. } => 0o177777,
        };
        assert_eq!(
            mx.mode() & mask,
            my.mode() & mask,
            "{}: type and mode",
            rel.display()
        );
        if let ReadBack::Mounted { time, .. } = how {
            assert_eq!((my.uid(), my.gid()), (0, 0), "{}: owner", rel.display());
            assert_eq!(my.mtime() as u64, time, "{}: time", rel.display());
            // The added directories link to the root.
            let links = if rel.as_os_str().is_empty() {
                mx.nlink() + added.len() as u64
            } else {
                mx.nlink()
            };
            assert_eq!(links, my.nlink(), "{}: links", rel.display());
        }
        if mx.is_symlink() {
            assert_eq!(
                fs::read_link(&x).unwrap(),
                fs::read_link(&y).unwrap(),
                "{}",
                rel.display()
            );
        } else if mx.is_file() {
            assert_eq!(mx.len(), my.len(), "{}: size", rel.display());
            assert_same_content(&x, &y);
        }
    }
}

/// Compared a MiB at a time: a test file may be a large sparse one.
fn assert_same_content(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(ba[..n] == bb[..n], "{}: content", a.display());
        if n == 0 {
            break;
        }
    }
}
