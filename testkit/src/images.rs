//! Realistic filesystem images for tests: the real `mkfs.ext4 -d` of a tree
//! of real files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where [`real_tree`] copies files from: present on every Debian machine,
/// and a mix of text, binaries and compressed files like a root filesystem.
const SOURCES: &[&str] = &["/usr/share", "/usr/lib"];
/// Larger files are skipped, so a budget spreads over many files.
const MAX_FILE: u64 = 1 << 20;
/// Size of `random.bin`.
const RANDOM_BYTES: usize = 2 << 20;

/// A directory `dir/tree` with about `budget` bytes of regular files copied
/// from `/usr/share` and `/usr/lib` (walked in sorted order, so the same on
/// every run on one machine), plus `random.bin`: 2 MiB of seeded random
/// bytes, which no compressor shrinks (like the compressed files of a real
/// root, but guaranteed to be there).
pub fn real_tree(dir: &Path, budget: u64) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap_or_else(|e| panic!("creating {}: {e}", tree.display()));
    let mut left = budget;
    for source in SOURCES {
        copy_files(Path::new(source), &tree, &mut left);
    }
    assert!(
        left < budget / 2,
        "found only {} bytes of files under {SOURCES:?}",
        budget - left
    );
    fs::write(tree.join("random.bin"), seeded_random(RANDOM_BYTES, 7))
        .unwrap_or_else(|e| panic!("writing random.bin: {e}"));
    tree
}

/// Copies regular files from `from` into `to`, keeping relative paths,
/// until `left` runs out. Unreadable entries are skipped (a test machine's
/// /usr is not ours to judge).
fn copy_files(from: &Path, to: &Path, left: &mut u64) {
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if *left == 0 {
            return;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_files(&entry.path(), &target, left);
        } else if kind.is_file() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.len() > MAX_FILE || meta.len() > *left {
                continue;
            }
            fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
            if fs::copy(entry.path(), &target).is_ok() {
                *left -= meta.len();
            }
        }
    }
}

/// Deterministic incompressible bytes (splitmix64).
pub fn seeded_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The real `mkfs.ext4 -d tree` into a new sparse file `out` of `size`
/// bytes, with filesystem UUID `uuid` (the version id). Panics with
/// mkfs's message on failure.
pub fn ext4_image(tree: &Path, uuid: &str, size: u64, out: &Path) -> PathBuf {
    fs::File::create(out)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    let result = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", uuid, "-E", "root_owner=0:0", "-d"])
        .arg(tree)
        .arg(out)
        .output()
        .expect("running mkfs.ext4 (install e2fsprogs)");
    assert!(
        result.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    out.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_seeded_and_incompressible_looking() {
        let a = seeded_random(4096, 1);
        assert_eq!(a, seeded_random(4096, 1));
        assert_ne!(a, seeded_random(4096, 2));
        let mut counts = [0usize; 256];
        for &b in &a {
            counts[b as usize] += 1;
        }
        // Every byte value shows up: not a pattern a compressor would catch.
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn an_image_of_a_real_tree_carries_its_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let tree = real_tree(dir.path(), 1 << 20);
        assert!(tree.join("random.bin").is_file());
        let uuid = "0b5e5e1c-2f4a-4c1e-8f7d-3a9b6c2d1e0f";
        let image = ext4_image(&tree, uuid, 8 << 20, &dir.path().join("root.ext4"));
        let out = Command::new("dumpe2fs")
            .arg("-h")
            .arg(&image)
            .output()
            .unwrap();
        let header = String::from_utf8_lossy(&out.stdout);
        assert!(
            header.contains(&format!("Filesystem UUID:          {uuid}")),
            "{header}"
        );
    }
}
