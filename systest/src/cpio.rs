//! A writer for the cpio "newc" format, the format the Linux kernel unpacks
//! an initramfs from.
//!
//! Format (Documentation/driver-api/early-userspace/buffer-format.rst in the
//! kernel): each entry is the magic `070701`, thirteen 8-digit hex fields
//! (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
//! rdevmajor, rdevminor, namesize including the NUL, check), the name and its
//! NUL padded to a multiple of 4, then the data padded to a multiple of 4. The
//! archive ends with an entry named `TRAILER!!!`.
//!
//! Every entry is owned by root with mtime 0, so the same tree gives the same
//! bytes.

use std::io::{self, Read, Write};

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio entry {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cpio entry {path:?}: {size} bytes is more than newc's 4 GiB limit")]
    TooLarge { path: String, size: u64 },
    #[error("cpio entry {path:?}: the reader gave {got} bytes, {expected} were announced")]
    ShortRead {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes a newc archive entry by entry. Paths are relative (`bin/busybox`);
/// parents must be written before their children.
pub struct CpioWriter<W: Write> {
    out: W,
    offset: u64,
    next_inode: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            offset: 0,
            next_inode: 1,
        }
    }

    pub fn directory(&mut self, path: &str, permissions: u32) -> Result<(), CpioError> {
        check_path(path)?;
        self.header(path, S_IFDIR | permissions, 2, 0, (0, 0))
    }

    /// A regular file of `len` bytes read from `data`.
    pub fn file(
        &mut self,
        path: &str,
        permissions: u32,
        len: u64,
        data: impl Read,
    ) -> Result<(), CpioError> {
        check_path(path)?;
        let size = u32::try_from(len).map_err(|_| CpioError::TooLarge {
            path: path.to_owned(),
            size: len,
        })?;
        self.header(path, S_IFREG | permissions, 1, size, (0, 0))?;
        let copied = io::copy(&mut data.take(len), &mut self.out)?;
        if copied != len {
            return Err(CpioError::ShortRead {
                path: path.to_owned(),
                expected: len,
                got: copied,
            });
        }
        self.offset += copied;
        self.pad()
    }

    /// A symbolic link; newc stores the target as the entry's data.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        check_path(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::InvalidPath {
                path: path.to_owned(),
                reason: "symlink target is empty or contains NUL",
            });
        }
        self.header(path, S_IFLNK | 0o777, 1, target.len() as u32, (0, 0))?;
        self.write_all(target.as_bytes())?;
        self.pad()
    }

    /// A character device node (e.g. `dev/console`), which needs no root to
    /// create inside an archive.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        check_path(path)?;
        self.header(path, S_IFCHR | permissions, 1, 0, (major, minor))
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.header(TRAILER, 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        links: u32,
        size: u32,
        (rdev_major, rdev_minor): (u32, u32),
    ) -> Result<(), CpioError> {
        let inode = if name == TRAILER { 0 } else { self.next_inode };
        self.next_inode += 1;
        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            links,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            rdev_major,
            rdev_minor,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.write_all(&header)?;
        self.pad()
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Pads to the next multiple of 4 bytes.
    fn pad(&mut self) -> Result<(), CpioError> {
        let padding = (4 - self.offset % 4) % 4;
        self.write_all(&[0; 3][..padding as usize])
    }
}

fn check_path(path: &str) -> Result<(), CpioError> {
    let reason = if path.is_empty() {
        "empty path"
    } else if path.starts_with('/') {
        "path must be relative to the archive root"
    } else if path.contains('\0') {
        "path contains NUL"
    } else if path.split('/').any(|part| part.is_empty() || part == "..") {
        "path has an empty or '..' component"
    } else if path == TRAILER {
        "path is the trailer's name"
    } else {
        return Ok(());
    };
    Err(CpioError::InvalidPath {
        path: path.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample_archive() -> Vec<u8> {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.directory("bin", 0o755).unwrap();
        let script = b"#!/bin/sh\necho hello\n";
        cpio.file("bin/hello", 0o755, script.len() as u64, &script[..])
            .unwrap();
        cpio.symlink("bin/hi", "hello").unwrap();
        cpio.directory("dev", 0o755).unwrap();
        cpio.char_device("dev/console", 0o600, 5, 1).unwrap();
        cpio.finish().unwrap()
    }

    #[test]
    fn header_fields_are_laid_out_as_newc() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.file("a", 0o644, 3, &b"xyz"[..]).unwrap();
        let bytes = cpio.finish().unwrap();
        let header = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(&header[..6], "070701");
        let field = |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).unwrap();
        assert_eq!(field(1), S_IFREG | 0o644, "mode");
        assert_eq!(field(6), 3, "filesize");
        assert_eq!(field(11), 2, "namesize counts the NUL");
        // 110-byte header + "a\0" = 112, already aligned; then data "xyz" + 1 pad.
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..116], b"xyz\0");
        assert!(bytes.len() % 4 == 0);
        assert!(bytes
            .windows(TRAILER.len())
            .any(|w| w == TRAILER.as_bytes()));
    }

    /// GNU cpio reads back exactly what was written: names, modes, contents,
    /// link targets and the device node.
    #[test]
    fn gnu_cpio_lists_and_extracts_the_archive() {
        let archive = sample_archive();
        let listing = pipe_to_cpio(&["-t", "-v", "--quiet"], &archive, None);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 5, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"));
        assert!(lines[1].starts_with("-rwxr-xr-x") && lines[1].ends_with(" bin/hello"));
        assert!(lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with(" bin/hi -> hello"));
        assert!(lines[4].starts_with("crw-------") && lines[4].contains("5,"));

        let dir = tempfile::tempdir().unwrap();
        pipe_to_cpio(
            &["-i", "-d", "--quiet", "--no-absolute-filenames", "bin/*"],
            &archive,
            Some(dir.path()),
        );
        assert_eq!(
            std::fs::read(dir.path().join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hello\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/hi")).unwrap(),
            std::path::Path::new("hello")
        );
    }

    fn pipe_to_cpio(args: &[&str], archive: &[u8], dir: Option<&std::path::Path>) -> String {
        let mut command = Command::new("cpio");
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .expect("cpio is installed (apt-get install cpio)");
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "cpio {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn rejects_bad_paths() {
        let mut cpio = CpioWriter::new(Vec::new());
        for (path, reason) in [
            ("", "empty path"),
            ("/bin", "relative"),
            ("bin//sh", "empty or '..'"),
            ("../etc", "empty or '..'"),
            ("TRAILER!!!", "trailer"),
        ] {
            let err = cpio.directory(path, 0o755).unwrap_err().to_string();
            assert!(err.contains(reason), "{path:?}: {err}");
        }
        let err = cpio.symlink("bin/x", "").unwrap_err().to_string();
        assert!(err.contains("symlink target"), "{err}");
    }

    #[test]
    fn rejects_a_reader_shorter_than_announced() {
        let mut cpio = CpioWriter::new(Vec::new());
        let err = cpio.file("short", 0o644, 10, &b"abc"[..]).unwrap_err();
        assert!(
            matches!(
                err,
                CpioError::ShortRead {
                    expected: 10,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_files_over_4_gib() {
        let mut cpio = CpioWriter::new(Vec::new());
        let err = cpio.file("big", 0o644, 1 << 32, io::empty()).unwrap_err();
        assert!(err.to_string().contains("4 GiB"), "{err}");
    }
}
