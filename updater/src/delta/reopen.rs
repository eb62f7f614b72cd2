//! A second handle on a disk, to read the active slot on the copier thread
//! while the target slot is written through the first.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use abnix_formats::disk::Disk;

/// A disk that can open another handle on itself, with its own position.
pub trait Reopen: Disk {
    type Handle: Disk + Send;

    /// A read-only handle on the same bytes.
    fn reopen(&self) -> io::Result<Self::Handle>;
}

impl Reopen for File {
    type Handle = File;

    /// Opens `/proc/self/fd/<fd>`: a new open file description, so its
    /// offset is its own (proc(5)), unlike `try_clone`'s `dup`, whose
    /// offset is shared with this handle and would race with the writer's
    /// seeks. Works for block devices and regular files alike.
    fn reopen(&self) -> io::Result<File> {
        File::open(format!("/proc/self/fd/{}", self.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn the_reopened_handle_has_its_own_position() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let mut other = file.reopen().unwrap();
        file.seek(SeekFrom::Start(2)).unwrap();
        let mut byte = [0; 1];
        other.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"0", "the reopened handle starts at 0");
        file.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"2", "the first handle keeps its position");
        assert!(other.write_all(b"x").is_err(), "the handle is read-only");
    }
}
