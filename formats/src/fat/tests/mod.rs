//! Tests of the whole filesystem: operations on fresh volumes
//! ([`operations`]), interoperability with dosfstools and mtools
//! ([`interop`]), power cuts at every sector ([`power_cut`]) and corrupt
//! input ([`corrupt`]). Helpers shared by them live here.

mod corrupt;
mod interop;
mod operations;
mod power_cut;

use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use super::{FatFs, FormatOptions};
use crate::disk::Disk;
use crate::testutil::pattern;

const MIB: u64 = 1 << 20;

fn options(sector_size: u32) -> FormatOptions {
    FormatOptions {
        label: "ABNIX-ESP".into(),
        volume_id: 0xA5A5_0001,
        sector_size,
    }
}

/// A fresh volume in memory.
fn memory_volume(size: u64, sector_size: u32) -> FatFs<Cursor<Vec<u8>>> {
    FatFs::format(Cursor::new(vec![0u8; size as usize]), &options(sector_size)).unwrap()
}

/// A sparse file of `size` bytes in a fresh temporary directory.
fn sparse_file(size: u64) -> (tempfile::TempDir, std::path::PathBuf, File) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esp.img");
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(size).unwrap();
    (dir, path, file)
}

/// Runs an external tool; a missing tool is a failure, never a skip: CI
/// installs dosfstools and mtools.
fn run_tool(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {program} (install dosfstools and mtools): {e}"))
}

/// What `fsck.fat -n` says about an image: whether it exited 0, and every
/// line of its report other than the banner and the summary.
struct Fsck {
    clean_exit: bool,
    problems: Vec<String>,
}

impl Fsck {
    fn is_clean(&self) -> bool {
        self.clean_exit && self.problems.is_empty()
    }
}

fn fsck(image: &Path) -> Fsck {
    let out = run_tool("fsck.fat", &["-n", image.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = format!("{}: ", image.display());
    let problems = text
        .lines()
        .filter(|line| {
            !(line.trim().is_empty()
                || line.starts_with("fsck.fat ")
                || line.starts_with(&summary)
                || *line == "Leaving filesystem unchanged.")
        })
        .map(str::to_string)
        .collect();
    Fsck {
        clean_exit: out.status.success(),
        problems,
    }
}

#[track_caller]
fn assert_fsck_clean(image: &Path, after: &str) {
    let report = fsck(image);
    assert!(
        report.is_clean(),
        "fsck.fat -n after {after}: {:?}",
        report.problems
    );
}

/// Reads every file under `path`, recursively; returns how many.
fn read_tree<D: Disk>(fs: &mut FatFs<D>, path: &str) -> Result<usize, super::FatError> {
    let mut count = 0;
    for entry in fs.list_dir(path)? {
        let child = if path.is_empty() {
            entry.name.clone()
        } else {
            format!("{path}/{}", entry.name)
        };
        if entry.is_dir {
            count += read_tree(fs, &child)?;
        } else {
            assert_eq!(fs.read_file(&child)?.len() as u64, entry.size);
            count += 1;
        }
    }
    Ok(count)
}

/// A copy-on-write view of a base image file: every run starts from the
/// same base without copying it.
type Cow<'a> = crate::disk::Overlay<&'a File>;

const PAGE: u64 = Cow::PAGE;
