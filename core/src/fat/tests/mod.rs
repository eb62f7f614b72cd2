//! Tests of the whole filesystem: operations on fresh volumes
//! ([`operations`]), interoperability with dosfstools and mtools
//! ([`interop`]), power cuts at every sector ([`power_cut`]) and corrupt
//! input ([`corrupt`]). Helpers shared by them live here.

mod corrupt;
mod interop;
mod operations;
mod power_cut;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use super::{FatFs, FormatOptions};
use crate::disk::Disk;

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

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
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

const PAGE: u64 = 4096;

/// A copy-on-write view of a base image: writes stay in memory, so every
/// run starts from the same base without copying it.
struct Cow<'a> {
    base: &'a File,
    len: u64,
    pages: BTreeMap<u64, Vec<u8>>,
    pos: u64,
    /// When set, every write must start and end on a multiple of it.
    sector_writes: Option<u64>,
}

impl<'a> Cow<'a> {
    fn new(base: &'a File) -> Self {
        Cow {
            base,
            len: base.metadata().unwrap().len(),
            pages: BTreeMap::new(),
            pos: 0,
            sector_writes: None,
        }
    }
}

impl Read for Cow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let (index, within) = (self.pos / PAGE, (self.pos % PAGE) as usize);
        let n = buf
            .len()
            .min(PAGE as usize - within)
            .min((self.len - self.pos) as usize);
        match self.pages.get(&index) {
            Some(page) => buf[..n].copy_from_slice(&page[within..within + n]),
            None => self.base.read_exact_at(&mut buf[..n], self.pos)?,
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Cow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the image",
            ));
        }
        if let Some(sector) = self.sector_writes {
            assert!(
                self.pos % sector == 0 && buf.len() as u64 % sector == 0,
                "a write of {} bytes at {} is not whole {sector}-byte sectors",
                buf.len(),
                self.pos
            );
        }
        // The whole buffer in one call, so that each call is one write.
        for chunk in buf.chunks(PAGE as usize) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (index, within) = (self.pos / PAGE, (self.pos % PAGE) as usize);
                let n = rest.len().min(PAGE as usize - within);
                if !self.pages.contains_key(&index) {
                    let mut page = vec![0u8; PAGE as usize];
                    self.base.read_exact_at(&mut page, index * PAGE)?;
                    self.pages.insert(index, page);
                }
                self.pages.get_mut(&index).expect("inserted")[within..within + n]
                    .copy_from_slice(&rest[..n]);
                self.pos += n as u64;
                rest = &rest[n..];
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Cow<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = match pos {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self
                .len
                .checked_add_signed(d)
                .expect("seek within the image"),
            SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .expect("seek within the image"),
        };
        Ok(self.pos)
    }
}

impl Disk for Cow<'_> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.len)
    }
}
