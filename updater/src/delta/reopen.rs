//! A second handle on a disk, to read the active slot on the copier thread
//! while the target slot is written through the first.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use abnix_formats::disk::Disk;
#[cfg(any(test, feature = "testutil"))]
use abnix_formats::disk::FaultyDisk;

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

/// The inner disk's own second handle: a fault injected for tests drops
/// writes, and the active slot is only read through this handle.
#[cfg(any(test, feature = "testutil"))]
impl<D: Reopen> Reopen for FaultyDisk<D> {
    type Handle = D::Handle;

    fn reopen(&self) -> io::Result<D::Handle> {
        self.get_ref().reopen()
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

    #[test]
    fn a_faulty_disk_reopens_its_inner_disk() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let disk = FaultyDisk::counting(file);
        let mut other = disk.reopen().unwrap();
        let mut bytes = Vec::new();
        other.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"0123456789");
    }
}
