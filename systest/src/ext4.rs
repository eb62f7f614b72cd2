//! ext4 images made with `mkfs.ext4` on plain files: no root, no loop device.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::tool;
use crate::tree::Tree;

/// The time every fixture image claims for its files and its own creation,
/// so building the same tree twice gives the same bytes (and versions that
/// share files delta well). 2023-11-14T22:13:20Z; any non-zero value works,
/// zero makes e2fsprogs fall back to the clock.
pub const FIXED_TIME: u64 = 1_700_000_000;

/// The UUID a read-only image is made with, before it gets its own: it seeds
/// the metadata checksums (kept in the superblock, `metadata_csum_seed`) and
/// the directory hashes. Were they seeded by the version id, every inode,
/// directory and bitmap block would differ between two versions of the same
/// tree, and a delta update would download all of them (docs/delta.md).
const SEED_UUID: &str = "6a1c3e0d-52b7-4f8e-9d21-0b7e4c5f3a98";

const BLOCK_SIZE: u64 = 4096;
const INODE_SIZE: u64 = 256;
const MIB: u64 = 1 << 20;

/// A read-only root filesystem holding `tree`, sized to fit, at `out`.
/// `staging` is a scratch directory path (it must not exist); it is removed
/// afterwards.
pub fn read_only_image(
    tree: &Tree,
    uuid: Uuid,
    label: &str,
    out: &Path,
    staging: &Path,
) -> Result<()> {
    tree.write_directory(staging)?;
    read_only_image_of(staging, uuid, label, out)?;
    std::fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))
}

/// A read-only root filesystem holding what the directory `root` holds,
/// sized to fit, at `out`.
///
/// Deterministic: mke2fs takes its own times from `E2FSPROGS_FAKE_TIME`,
/// the checksum and directory hash seeds are `SEED_UUID` whatever the
/// version, and every inode's times and owner are then set with debugfs
/// (mke2fs copies ctime from the staging files, which no one can set).
/// Only then does the filesystem get its UUID: with `metadata_csum_seed`,
/// tune2fs rewrites just the superblocks (e2fsprogs `tune2fs.c`, `-U`).
pub fn read_only_image_of(root: &Path, uuid: Uuid, label: &str, out: &Path) -> Result<()> {
    let content = Content::of(root)?;
    let entries = content.paths.len() as u64;
    let inodes = entries + 32;
    // Data rounded up to a block per entry, the inode table, and room for the
    // superblock copies, group descriptors and bitmaps.
    let bytes = content.file_bytes + entries * BLOCK_SIZE + inodes * INODE_SIZE;
    let size = (bytes + bytes / 20 + 2 * MIB).div_ceil(MIB) * MIB;
    create_sized(out, size)?;
    tool::run(
        mkfs(SEED_UUID, label)
            // Never written, never grown: no journal, no room for resizing.
            .args([
                "-O",
                "^has_journal,^resize_inode,metadata_csum,metadata_csum_seed",
                "-N",
                &inodes.to_string(),
            ])
            .arg("-E")
            .arg(format!("root_owner=0:0,hash_seed={SEED_UUID}"))
            .arg("-d")
            .arg(root)
            .arg(out),
    )?;
    fix_inodes(out, &content.paths)?;
    tool::run(
        Command::new("tune2fs")
            .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
            .arg("-U")
            .arg(uuid.to_string())
            .arg(out),
    )?;
    Ok(())
}

/// What a directory holds, for sizing an image of it.
struct Content {
    /// Every entry's path below the root (`usr/bin`), not following links.
    paths: Vec<String>,
    /// The bytes its regular files hold.
    file_bytes: u64,
}

impl Content {
    fn of(root: &Path) -> Result<Content> {
        let mut content = Content {
            paths: Vec::new(),
            file_bytes: 0,
        };
        content.walk(root, "")?;
        Ok(content)
    }

    fn walk(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .with_context(|| format!("{}: a name that is not UTF-8", entry.path().display()))?;
            let path = format!("{prefix}{name}");
            let kind = entry.file_type()?;
            if kind.is_file() {
                self.file_bytes += entry.metadata()?.len();
            }
            self.paths.push(path.clone());
            if kind.is_dir() {
                self.walk(&entry.path(), &format!("{path}/"))?;
            }
        }
        Ok(())
    }
}

/// An empty ext4 filesystem of `size` bytes at `out` (a read-write
/// partition), with a journal.
pub fn empty_image(uuid: Uuid, label: &str, size: u64, out: &Path) -> Result<()> {
    create_sized(out, size)?;
    tool::run(mkfs(&uuid.to_string(), label).arg(out))?;
    Ok(())
}

fn create_sized(out: &Path, size: u64) -> Result<()> {
    File::create(out)
        .and_then(|file| file.set_len(size))
        .with_context(|| format!("creating {}", out.display()))
}

/// mkfs.ext4 with the options every image shares; the caller adds the
/// file (and more options before it).
fn mkfs(uuid: &str, label: &str) -> Command {
    let mut command = Command::new("mkfs.ext4");
    command
        .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
        .args([
            "-q", "-F", "-T", "default", "-b", "4096", "-I", "256", "-m", "0",
        ])
        .args(["-U", uuid, "-L", label]);
    command
}

/// Sets every inode's times to [`FIXED_TIME`] and its owner to root.
fn fix_inodes(image: &Path, paths: &[String]) -> Result<()> {
    let time = format!("@{FIXED_TIME}");
    let fields = [
        ("atime", time.as_str()),
        ("mtime", &time),
        ("ctime", &time),
        ("crtime", &time),
        ("uid", "0"),
        ("gid", "0"),
    ];
    let mut commands = String::new();
    for path in std::iter::once("").chain(paths.iter().map(String::as_str)) {
        if path.contains(['"', '\n']) {
            bail!("{path:?}: debugfs cannot address this path");
        }
        for (field, value) in fields {
            writeln!(commands, "set_inode_field \"/{path}\" {field} {value}")?;
        }
    }
    let script = image.with_extension("debugfs");
    std::fs::write(&script, commands).with_context(|| format!("writing {}", script.display()))?;
    let output = tool::run(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(image),
    )?;
    std::fs::remove_file(&script)?;
    // debugfs exits 0 even when a command fails; it reports on stderr, after
    // its version banner.
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Some(error) = stderr.lines().find(|line| !line.starts_with("debugfs ")) {
        bail!("debugfs on {}: {error}", image.display());
    }
    Ok(())
}
