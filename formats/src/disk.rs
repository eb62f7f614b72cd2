//! Disk I/O on plain `Read + Write + Seek`.
//!
//! Everything in abnix that touches a disk goes through [`Disk`], so the same
//! code runs on a block device, on a sparse disk-image file (templates, tests)
//! and on an in-memory buffer. [`Region`] narrows a disk to one partition.
//! `FaultyDisk` injects failures and power cuts for tests (feature `testutil`).

#[cfg(any(test, feature = "testutil"))]
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
#[cfg(any(test, feature = "testutil"))]
use std::os::unix::fs::FileExt;
#[cfg(any(test, feature = "testutil"))]
use std::sync::{Arc, Mutex};

/// A random-access disk: a block device, an image file, a buffer or a window
/// onto one of those.
pub trait Disk: Read + Write + Seek {
    /// Makes every write so far durable (fdatasync for files and devices).
    ///
    /// Code that needs one write to land before another (power-cut safety)
    /// calls this between them: the OS may reorder unsynced writes.
    fn sync(&mut self) -> io::Result<()>;

    /// Size in bytes.
    fn size(&mut self) -> io::Result<u64>;

    /// Asks the OS to start writing `len` bytes at `offset` to the medium,
    /// without waiting for them: a hint, so that dirty memory stays small
    /// while a large image streams in and the next [`Disk::sync`] finds
    /// little left to do. Nothing by default.
    fn start_writeback(&mut self, _offset: u64, _len: u64) {}
}

impl Disk for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn start_writeback(&mut self, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // Only a hint: an error here (a filesystem without support) leaves
        // the work to sync, which reports any real I/O error.
        // SAFETY: plain syscall on a file descriptor this File owns.
        unsafe {
            libc::sync_file_range(self.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    fn size(&mut self) -> io::Result<u64> {
        // Block devices report length 0 in metadata; seeking to the end works
        // for both devices and regular files.
        let pos = self.stream_position()?;
        let end = self.seek(SeekFrom::End(0))?;
        self.seek(SeekFrom::Start(pos))?;
        Ok(end)
    }
}

impl Disk for io::Cursor<Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.get_ref().len() as u64)
    }
}

/// A disk behind a pointer is the disk: every method forwards, the hint
/// included (a default there would drop it silently).
macro_rules! forward_disk {
    ($($pointer:ty),*) => {$(
        impl<D: Disk + ?Sized> Disk for $pointer {
            fn sync(&mut self) -> io::Result<()> {
                (**self).sync()
            }

            fn size(&mut self) -> io::Result<u64> {
                (**self).size()
            }

            fn start_writeback(&mut self, offset: u64, len: u64) {
                (**self).start_writeback(offset, len)
            }
        }
    )*};
}

forward_disk!(&mut D, Box<D>);

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_at<D: Disk + ?Sized>(disk: &mut D, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(buf)
}

/// Writes all of `buf` at `offset`.
pub fn write_at<D: Disk + ?Sized>(disk: &mut D, offset: u64, buf: &[u8]) -> io::Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(buf)
}

/// The window `[start, start + len)` of a disk, itself a disk: a partition.
///
/// Reads stop at the end of the window; writes past it fail, so a bug can
/// never spill into the neighbouring partition.
#[derive(Debug)]
pub struct Region<D> {
    inner: D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<D: Disk> Region<D> {
    pub fn new(inner: D, start: u64, len: u64) -> Self {
        Region {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    pub fn into_inner(self) -> D {
        self.inner
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

impl<D: Disk> Read for Region<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Disk> Write for Region<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.remaining() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {} bytes at offset {} crosses the end of a {}-byte region",
                    buf.len(),
                    self.pos,
                    self.len
                ),
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a seek lands in a `len`-byte disk read at `current`: the
/// arithmetic of [`Seek`] for the in-memory and windowed disks here.
pub fn seek_position(to: SeekFrom, current: u64, len: u64) -> io::Result<u64> {
    match to {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => current.checked_add_signed(d),
    }
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "seek to a negative or overflowing position",
        )
    })
}

impl<D: Disk> Seek for Region<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_position(pos, self.pos, self.len)?;
        Ok(self.pos)
    }
}

impl<D: Disk> Disk for Region<D> {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn start_writeback(&mut self, offset: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(offset));
        if len > 0 {
            self.inner.start_writeback(self.start + offset, len);
        }
    }
}

/// A disk that hands every `WINDOW` bytes (16 MiB) written in one
/// sequential run to [`Disk::start_writeback`], so an image streamed into
/// it reaches the medium while later chunks are still being decompressed,
/// instead of all at the final sync (which also keeps dirty memory small on
/// a host with little of it). A write that does not continue the run starts
/// a new one; what is left of a run is for the next sync.
#[derive(Debug)]
pub struct WriteBehind<D> {
    inner: D,
    /// Where the run not yet handed to writeback starts; it ends at `pos`.
    run_start: u64,
    pos: u64,
}

impl<D: Disk> WriteBehind<D> {
    pub(crate) const WINDOW: u64 = 16 << 20;

    pub fn new(mut inner: D) -> io::Result<Self> {
        let pos = inner.stream_position()?;
        Ok(WriteBehind {
            inner,
            run_start: pos,
            pos,
        })
    }
}

impl<D: Disk> Read for WriteBehind<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        self.run_start = self.pos;
        Ok(n)
    }
}

impl<D: Disk> Write for WriteBehind<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        if self.pos - self.run_start >= Self::WINDOW {
            self.inner
                .start_writeback(self.run_start, self.pos - self.run_start);
            self.run_start = self.pos;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Disk> Seek for WriteBehind<D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = self.inner.seek(to)?;
        if new != self.pos {
            self.run_start = new;
        }
        self.pos = new;
        Ok(new)
    }
}

impl<D: Disk> Disk for WriteBehind<D> {
    fn sync(&mut self) -> io::Result<()> {
        self.run_start = self.pos;
        self.inner.sync()
    }

    fn size(&mut self) -> io::Result<u64> {
        self.inner.size()
    }

    fn start_writeback(&mut self, offset: u64, len: u64) {
        self.inner.start_writeback(offset, len)
    }
}

#[cfg(any(test, feature = "testutil"))]
/// What a [`FaultyDisk`] does once its write budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write that crosses the budget fails with an I/O error, and so does
    /// every later one (a failing disk, a pulled cable).
    Error,
    /// Power cut: the write that crosses the budget lands only partly (a torn
    /// write), later writes are silently dropped and syncs succeed, so the
    /// code under test runs on, unaware, as it would until the lights go out.
    PowerCut,
}

#[cfg(any(test, feature = "testutil"))]
/// Bytes written and syncs seen by a [`FaultyDisk`], shared with the test
/// that holds a [`FaultyDisk::counter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteCount {
    pub bytes: u64,
    pub writes: u64,
    pub syncs: u64,
}

#[cfg(any(test, feature = "testutil"))]
/// A disk that fails or loses power after a given number of written bytes.
///
/// Tests first run an operation with an unlimited budget to learn how many
/// bytes it writes, then rerun it with every budget in between (or a sample)
/// and check that the disk left behind is still in a safe state. Writes land
/// in program order; code must still call [`Disk::sync`] where order matters
/// on real hardware.
pub struct FaultyDisk<D> {
    inner: D,
    budget: Option<u64>,
    fault: Fault,
    /// Set once the budget has been crossed: the fault is permanent.
    struck: bool,
    count: Arc<Mutex<WriteCount>>,
}

#[cfg(any(test, feature = "testutil"))]
impl<D: Disk> FaultyDisk<D> {
    /// A disk that never fails but counts what is written.
    pub fn counting(inner: D) -> Self {
        FaultyDisk {
            inner,
            budget: None,
            fault: Fault::Error,
            struck: false,
            count: Arc::default(),
        }
    }

    /// A disk on which `fault` strikes after `budget` bytes have been written.
    pub fn failing_after(inner: D, budget: u64, fault: Fault) -> Self {
        FaultyDisk {
            inner,
            budget: Some(budget),
            fault,
            struck: false,
            count: Arc::default(),
        }
    }

    /// Arms `fault` on a disk already in use: it strikes once `more` bytes
    /// have been written from now on, so a test cuts the power partway
    /// through one step of a longer operation, whatever the steps before
    /// it wrote.
    pub fn arm(&mut self, more: u64, fault: Fault) {
        self.budget = Some(self.written().bytes + more);
        self.fault = fault;
    }

    /// A handle on the counts that stays valid after the disk is moved away.
    pub fn counter(&self) -> Arc<Mutex<WriteCount>> {
        self.count.clone()
    }

    pub fn written(&self) -> WriteCount {
        *self.count.lock().unwrap()
    }

    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<D: Disk> Read for FaultyDisk<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<D: Disk> Write for FaultyDisk<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.written().bytes;
        let allowed = match self.budget {
            None => buf.len() as u64,
            Some(b) => b.saturating_sub(written).min(buf.len() as u64),
        };
        if allowed < buf.len() as u64 {
            self.struck = true;
        }
        if self.fault == Fault::Error && self.struck {
            return Err(io::Error::other("injected write failure"));
        }
        if allowed > 0 {
            self.inner.write_all(&buf[..allowed as usize])?;
        }
        let pos = self.inner.stream_position()?;
        // A power cut drops the rest of the write but the caller believes it
        // landed: keep the position where it would have been.
        self.inner
            .seek(SeekFrom::Start(pos + (buf.len() as u64 - allowed)))?;
        let mut count = self.count.lock().unwrap();
        count.bytes += buf.len() as u64;
        count.writes += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<D: Disk> Seek for FaultyDisk<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<D: Disk> Disk for FaultyDisk<D> {
    fn sync(&mut self) -> io::Result<()> {
        if self.fault == Fault::Error && self.struck {
            return Err(io::Error::other("injected sync failure"));
        }
        self.count.lock().unwrap().syncs += 1;
        if self.struck {
            return Ok(());
        }
        self.inner.sync()
    }

    fn size(&mut self) -> io::Result<u64> {
        self.inner.size()
    }
}

#[cfg(any(test, feature = "testutil"))]
/// What an [`Overlay`] reads the bytes it has not written from.
pub trait OverlayBase {
    fn byte_len(&self) -> u64;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

#[cfg(any(test, feature = "testutil"))]
impl OverlayBase for Arc<Vec<u8>> {
    fn byte_len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

#[cfg(any(test, feature = "testutil"))]
impl OverlayBase for &File {
    fn byte_len(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(*self, buf, offset)
    }
}

#[cfg(any(test, feature = "testutil"))]
/// A copy-on-write disk over a shared base image: writes stay in its own
/// pages, so power-cut sweeps start every run from the same image without
/// copying it.
#[derive(Clone)]
pub struct Overlay<B> {
    base: B,
    len: u64,
    pages: BTreeMap<u64, Vec<u8>>,
    pos: u64,
    sector_writes: Option<u64>,
}

#[cfg(any(test, feature = "testutil"))]
impl<B: OverlayBase> Overlay<B> {
    pub(crate) const PAGE: u64 = 4096;

    pub fn new(base: B) -> Overlay<B> {
        Overlay {
            len: base.byte_len(),
            base,
            pages: BTreeMap::new(),
            pos: 0,
            sector_writes: None,
        }
    }

    /// From now on, panic on any write that is not whole `sector`-byte
    /// sectors: code whose safety assumes sector-atomic writes must only
    /// issue such writes.
    #[cfg(test)]
    pub(crate) fn require_sector_writes(&mut self, sector: u64) {
        self.sector_writes = Some(sector);
    }

    /// The pages written so far, by page index.
    #[cfg(test)]
    pub(crate) fn pages(&self) -> &BTreeMap<u64, Vec<u8>> {
        &self.pages
    }

    /// The whole image as it reads now.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut image = vec![0u8; self.len as usize];
        self.base.read_exact_at(&mut image, 0)?;
        for (index, page) in &self.pages {
            let start = (index * Self::PAGE) as usize;
            let end = (start + page.len()).min(image.len());
            image[start..end].copy_from_slice(&page[..end - start]);
        }
        Ok(image)
    }

    fn page_mut(&mut self, index: u64) -> io::Result<&mut Vec<u8>> {
        if !self.pages.contains_key(&index) {
            let start = index * Self::PAGE;
            let mut page = vec![0u8; Self::PAGE.min(self.len - start) as usize];
            self.base.read_exact_at(&mut page, start)?;
            self.pages.insert(index, page);
        }
        Ok(self.pages.get_mut(&index).expect("inserted"))
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<B: OverlayBase> Read for Overlay<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let (index, within) = (self.pos / Self::PAGE, (self.pos % Self::PAGE) as usize);
        let n = buf
            .len()
            .min(Self::PAGE as usize - within)
            .min((self.len - self.pos) as usize);
        match self.pages.get(&index) {
            Some(page) => buf[..n].copy_from_slice(&page[within..within + n]),
            None => self.base.read_exact_at(&mut buf[..n], self.pos)?,
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<B: OverlayBase> Write for Overlay<B> {
    /// Takes the whole buffer in one call, so each call is one write for
    /// a [`FaultyDisk`] above it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the image",
            ));
        }
        if let Some(sector) = self.sector_writes {
            assert!(
                self.pos.is_multiple_of(sector) && (buf.len() as u64).is_multiple_of(sector),
                "a write of {} bytes at {} is not whole {sector}-byte sectors",
                buf.len(),
                self.pos
            );
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let (index, within) = (self.pos / Self::PAGE, (self.pos % Self::PAGE) as usize);
            let page = self.page_mut(index)?;
            let n = rest.len().min(page.len() - within);
            page[within..within + n].copy_from_slice(&rest[..n]);
            self.pos += n as u64;
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<B: OverlayBase> Seek for Overlay<B> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_position(pos, self.pos, self.len)?;
        Ok(self.pos)
    }
}

#[cfg(any(test, feature = "testutil"))]
impl<B: OverlayBase> Disk for Overlay<B> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn region_confines_reads_and_writes() {
        let mut disk = Cursor::new(vec![0u8; 100]);
        let mut part = Region::new(&mut disk, 10, 20);
        part.write_all(&[1; 20]).unwrap();
        assert!(part.write(&[2]).is_err(), "write past the end must fail");
        part.seek(SeekFrom::Start(15)).unwrap();
        let mut buf = Vec::new();
        part.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, vec![1; 5]);
        let data = disk.into_inner();
        assert_eq!(&data[..10], &[0; 10]);
        assert_eq!(&data[10..30], &[1; 20]);
        assert_eq!(&data[30..], &[0; 70]);
    }

    /// A buffer that records the writeback it is asked to start.
    #[derive(Default)]
    struct Hinted {
        data: Cursor<Vec<u8>>,
        hints: Vec<(u64, u64)>,
    }

    impl Read for Hinted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.data.read(buf)
        }
    }

    impl Write for Hinted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.data.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for Hinted {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.data.seek(to)
        }
    }

    impl Disk for Hinted {
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn size(&mut self) -> io::Result<u64> {
            self.data.size()
        }

        fn start_writeback(&mut self, offset: u64, len: u64) {
            self.hints.push((offset, len));
        }
    }

    #[test]
    fn write_behind_hands_over_each_window_of_a_sequential_run() {
        const MIB: u64 = 1 << 20;
        const W: u64 = WriteBehind::<Hinted>::WINDOW;
        let mut disk = Hinted::default();
        let slot = Region::new(&mut disk, MIB, 4 * W);
        let mut behind = WriteBehind::new(slot).unwrap();
        let mib = vec![7u8; MIB as usize];
        for _ in 0..(2 * W + W / 2) / MIB {
            behind.write_all(&mib).unwrap();
        }
        // Seeking to where the run is continues it (a writer that seeks to
        // each chunk's offset).
        behind.seek(SeekFrom::Start(2 * W + W / 2)).unwrap();
        for _ in 0..(W / 2) / MIB {
            behind.write_all(&mib).unwrap();
        }
        // Writes elsewhere, shorter than a window, are left to sync.
        behind.seek(SeekFrom::Start(0)).unwrap();
        behind.write_all(&mib).unwrap();
        behind.seek(SeekFrom::Start(3 * W + MIB)).unwrap();
        behind.write_all(&mib).unwrap();
        behind.sync().unwrap();
        assert_eq!(
            disk.hints,
            [(MIB, W), (MIB + W, W), (MIB + 2 * W, W)],
            "offsets on the whole disk, a window each"
        );
        let data = disk.data.into_inner();
        assert_eq!(data.len() as u64, MIB + 3 * W + 2 * MIB);
        assert!(data[..MIB as usize].iter().all(|&b| b == 0));
        assert!(data[MIB as usize..(MIB + 3 * W) as usize]
            .iter()
            .all(|&b| b == 7));
    }

    #[test]
    fn power_cut_tears_the_crossing_write_and_drops_the_rest() {
        let mut disk = FaultyDisk::failing_after(Cursor::new(vec![0u8; 16]), 6, Fault::PowerCut);
        disk.write_all(&[1; 4]).unwrap();
        disk.write_all(&[2; 4]).unwrap();
        disk.sync().unwrap();
        disk.write_all(&[3; 4]).unwrap();
        assert_eq!(disk.stream_position().unwrap(), 12);
        assert_eq!(disk.written().bytes, 12);
        let data = disk.into_inner().into_inner();
        assert_eq!(&data[..12], &[1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn an_armed_power_cut_counts_from_where_it_was_armed() {
        let mut disk = FaultyDisk::counting(Cursor::new(vec![0u8; 16]));
        disk.write_all(&[1; 4]).unwrap();
        disk.arm(6, Fault::PowerCut);
        disk.write_all(&[2; 4]).unwrap();
        disk.write_all(&[3; 4]).unwrap();
        disk.write_all(&[4; 4]).unwrap();
        assert_eq!(disk.written().bytes, 16);
        let data = disk.into_inner().into_inner();
        assert_eq!(&data, &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn overlay_keeps_writes_off_its_base() {
        let base = Arc::new((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut disk = Overlay::new(base.clone());
        disk.seek(SeekFrom::Start(4090)).unwrap();
        disk.write_all(&[0xAA; 10]).unwrap();
        let image = disk.to_vec().unwrap();
        assert_eq!(&image[4090..4100], &[0xAA; 10]);
        assert_eq!(&image[..4090], &base[..4090]);
        assert_eq!(&image[4100..], &base[4100..]);
        assert_eq!(disk.pages().len(), 2, "the write spans two pages");
        let mut back = vec![0u8; 20];
        disk.seek(SeekFrom::Start(4085)).unwrap();
        disk.read_exact(&mut back).unwrap();
        assert_eq!(&back[5..15], &[0xAA; 10]);
        disk.seek(SeekFrom::Start(9500)).unwrap();
        assert!(disk.write(&[0; 1000]).is_err(), "past the end");
    }

    #[test]
    fn error_fault_fails_the_crossing_write() {
        let mut disk = FaultyDisk::failing_after(Cursor::new(vec![0u8; 16]), 6, Fault::Error);
        disk.write_all(&[1; 4]).unwrap();
        assert!(disk.write_all(&[2; 4]).is_err());
        assert!(disk.sync().is_err());
    }
}
