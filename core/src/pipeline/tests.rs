use std::io::{Cursor, Seek, Write};
use std::process::Command;
use std::sync::mpsc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::progress::NoProgress;
use abnix_formats::disk::{Fault, FaultyDisk, Region};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Compressible but not trivial, like a filesystem: random text mixed with
/// runs copied from earlier in the data.
fn sample_image(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz \n/._-0123456789";
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(len + 256);
    while data.len() < len {
        let run = rng.random_range(8..256);
        if data.len() > run && rng.random_bool(0.6) {
            let from = rng.random_range(0..data.len() - run);
            data.extend_from_within(from..from + run);
        } else {
            data.extend((0..run).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())]));
        }
    }
    data.truncate(len);
    data
}

/// A raw image, its object of independent frames and its index.
struct Packed {
    raw: Vec<u8>,
    object: Vec<u8>,
    index: Index,
}

impl Packed {
    /// Cuts `raw` into chunks of `lens` in turn (cycling) and compresses each
    /// chunk as its own zstd frame.
    fn new(raw: Vec<u8>, lens: &[usize]) -> Packed {
        let chunks = cut(&raw, lens);
        Packed::with_frames(raw.clone(), &chunks, &chunks)
    }

    /// An index describing `chunks`, over an object whose frames hold
    /// `frame_contents` (to build frames that disagree with their chunk).
    fn with_frames(raw: Vec<u8>, chunks: &[&[u8]], frame_contents: &[&[u8]]) -> Packed {
        let mut object = Vec::new();
        let mut index = Index::default();
        let mut offset = 0;
        for (chunk, content) in chunks.iter().zip(frame_contents) {
            let frame = zstd::bulk::compress(content, 3).unwrap();
            index.chunks.push(Chunk {
                offset,
                len: chunk.len() as u32,
                compressed_offset: object.len() as u64,
                compressed_len: frame.len() as u32,
                sha256: Digest::of(chunk),
            });
            offset += chunk.len() as u64;
            object.extend_from_slice(&frame);
        }
        Packed { raw, object, index }
    }

    fn spec(&self) -> ImageSpec<'_> {
        ImageSpec {
            index: &self.index,
            size: self.raw.len() as u64,
            sha256: Digest::of(&self.raw),
        }
    }

    fn frame(&self, chunk: usize) -> std::ops::Range<usize> {
        let c = &self.index.chunks[chunk];
        c.compressed_offset as usize..(c.compressed_offset + u64::from(c.compressed_len)) as usize
    }
}

fn cut<'a>(raw: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = raw;
    for len in lens.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*len).min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Varying sizes, as content-defined chunking makes them.
const LENS: &[usize] = &[64 * KIB, 100_000, 4096, 300_000, 1, 70_000];

/// Three workers and a small budget, so that chunks overtake each other and
/// the reader waits for room.
fn options() -> WriteOptions {
    WriteOptions {
        workers: 3,
        max_in_flight: MIB,
        ..WriteOptions::default()
    }
}

/// Runs `f` on a thread and fails if it does not return within a minute:
/// an error path that hangs must fail the test, not stall it.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the pipeline hung")
}

#[test]
fn round_trip_into_a_cursor() {
    let packed = Packed::new(sample_image(3 * MIB + 123, 1), LENS);
    let mut disk = Cursor::new(vec![0xEE; packed.raw.len() + 4096]);
    let report = write_image(
        packed.object.as_slice(),
        &packed.spec(),
        &mut disk,
        &options(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(report.bytes, packed.raw.len() as u64);
    assert_eq!(report.chunks, packed.index.chunks.len());
    let data = disk.into_inner();
    assert!(data[..packed.raw.len()] == packed.raw[..], "image differs");
    assert!(data[packed.raw.len()..].iter().all(|&b| b == 0xEE));
}

#[test]
fn round_trip_into_a_region_of_a_sparse_file() {
    let packed = Packed::new(sample_image(5 * MIB + 7, 2), LENS);
    let (start, len) = (3 * MIB as u64, 8 * MIB as u64);
    let mut file = tempfile::tempfile().unwrap();
    file.set_len(16 * MIB as u64).unwrap();
    // Neighbours on both sides hold something that must survive.
    let neighbour = vec![0x5A; MIB];
    file.seek(SeekFrom::Start(start - MIB as u64)).unwrap();
    file.write_all(&neighbour).unwrap();
    file.seek(SeekFrom::Start(start + len)).unwrap();
    file.write_all(&neighbour).unwrap();

    let mut slot = Region::new(file, start, len);
    let opts = WriteOptions {
        verify_readback: true,
        ..options()
    };
    write_image(
        packed.object.as_slice(),
        &packed.spec(),
        &mut slot,
        &opts,
        &NoProgress,
    )
    .unwrap();

    let mut file = slot.into_inner();
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut data).unwrap();
    let (start, len, image_end) = (
        start as usize,
        len as usize,
        start as usize + packed.raw.len(),
    );
    assert!(data[start..image_end] == packed.raw[..], "image differs");
    assert!(
        data[image_end..start + len].iter().all(|&b| b == 0),
        "rest of the slot was written"
    );
    assert_eq!(data[start - MIB..start], neighbour[..]);
    assert_eq!(data[start + len..start + len + MIB], neighbour[..]);
}

#[test]
fn one_worker_and_a_budget_smaller_than_a_chunk_still_get_through() {
    let packed = Packed::new(sample_image(MIB, 3), &[256 * KIB]);
    let opts = WriteOptions {
        workers: 1,
        max_in_flight: 1,
        ..WriteOptions::default()
    };
    let mut disk = Cursor::new(vec![0; MIB]);
    write_image(
        packed.object.as_slice(),
        &packed.spec(),
        &mut disk,
        &opts,
        &NoProgress,
    )
    .unwrap();
    assert!(disk.into_inner() == packed.raw);
}

#[test]
fn empty_image_writes_nothing_and_syncs() {
    let index = Index::default();
    let spec = ImageSpec {
        index: &index,
        size: 0,
        sha256: Digest::of(b""),
    };
    let mut disk = FaultyDisk::counting(Cursor::new(vec![7; 16]));
    let report = write_image(&[][..], &spec, &mut disk, &options(), &NoProgress).unwrap();
    assert_eq!((report.bytes, report.chunks), (0, 0));
    assert_eq!(disk.written().writes, 0);
    assert_eq!(disk.written().syncs, 1);
}

fn write_packed(packed: &Packed, object: &[u8]) -> Result<WriteReport, PipelineError> {
    let mut disk = Cursor::new(vec![0; packed.raw.len()]);
    write_image(object, &packed.spec(), &mut disk, &options(), &NoProgress)
}

#[test]
fn a_flipped_byte_in_a_frame_names_its_chunk() {
    let packed = Packed::new(sample_image(2 * MIB, 4), LENS);
    let victim = 5;
    let frame = packed.frame(victim);
    // The magic number, and bytes across the compressed blocks.
    let positions = [
        0,
        frame.len() / 3,
        frame.len() / 2,
        frame.len() * 2 / 3,
        frame.len() - 1,
    ];
    for position in positions {
        let mut object = packed.object.clone();
        object[frame.start + position] ^= 0x10;
        match write_packed(&packed, &object) {
            Err(PipelineError::ChunkMismatch { chunk, offset, .. }) => {
                assert_eq!(
                    (chunk, offset),
                    (victim, packed.index.chunks[victim].offset)
                );
            }
            Err(PipelineError::BadFrame { chunk, offset, .. }) => {
                assert_eq!((chunk, offset), (victim, frame.start as u64));
            }
            other => panic!("flip at byte {position} of the frame: got {other:?}"),
        }
    }
}

/// Checking an object without writing it: a sound object passes, with
/// progress over the whole image; a flipped byte, a cut or trailing bytes
/// fail as they do in [`write_image`].
#[test]
fn verify_object_checks_every_chunk_and_writes_nothing() {
    let packed = Packed::new(sample_image(2 * MIB + 7, 14), LENS);
    let progress = RecordingProgress::default();
    verify_object(
        packed.object.as_slice(),
        &packed.spec(),
        &options(),
        &progress,
    )
    .unwrap();
    let size = packed.raw.len() as u64;
    assert_eq!(
        progress.phases.into_inner().unwrap(),
        [PhaseRecord {
            name: "checking the image object".to_owned(),
            total: Some(size),
            done: size,
            finished: true,
        }]
    );

    let verify = |object: &[u8]| verify_object(object, &packed.spec(), &options(), &NoProgress);
    let victim = packed.frame(4);
    let mut flipped = packed.object.clone();
    flipped[victim.start + victim.len() / 2] ^= 0x10;
    assert!(
        matches!(
            verify(&flipped),
            Err(PipelineError::ChunkMismatch { chunk: 4, .. }
                | PipelineError::BadFrame { chunk: 4, .. })
        ),
        "{:?}",
        verify(&flipped)
    );
    assert!(matches!(
        verify(&packed.object[..victim.start]),
        Err(PipelineError::Truncated { chunk: 4, .. })
    ));
    let trailing = [&packed.object[..], b"x"].concat();
    assert!(matches!(
        verify(&trailing),
        Err(PipelineError::TrailingData { .. })
    ));
}

/// The head of an image comes from its first chunks only: a corrupt frame
/// further on does not matter, one within the head does.
#[test]
fn read_image_head_decodes_only_the_chunks_it_needs() {
    let packed = Packed::new(sample_image(MIB, 15), LENS);
    let first = packed.index.chunks[0].len as u64;
    let head = read_image_head(packed.object.as_slice(), &packed.spec(), 2048).unwrap();
    assert_eq!(head, packed.raw[..first as usize]);

    // Two chunks: the first is 64 KiB, the second 100000 bytes.
    let head = read_image_head(packed.object.as_slice(), &packed.spec(), first + 1).unwrap();
    let two = first as usize + packed.index.chunks[1].len as usize;
    assert_eq!(head, packed.raw[..two]);

    let mut object = packed.object.clone();
    let third = packed.frame(2);
    object[third.start + 1] ^= 0x10;
    assert_eq!(
        read_image_head(object.as_slice(), &packed.spec(), 2048).unwrap(),
        packed.raw[..first as usize]
    );
    let first_frame = packed.frame(0);
    object[first_frame.start + first_frame.len() / 2] ^= 0x10;
    assert!(matches!(
        read_image_head(object.as_slice(), &packed.spec(), 2048),
        Err(PipelineError::ChunkMismatch { chunk: 0, .. }
            | PipelineError::BadFrame { chunk: 0, .. })
    ));
    assert!(matches!(
        read_image_head(&packed.object[..10], &packed.spec(), 2048),
        Err(PipelineError::Truncated {
            chunk: 0,
            got: 10,
            ..
        })
    ));

    // A whole image shorter than asked for comes whole.
    let tiny = Packed::new(sample_image(1000, 16), LENS);
    assert_eq!(
        read_image_head(tiny.object.as_slice(), &tiny.spec(), 2048).unwrap(),
        tiny.raw
    );
}

#[test]
fn a_wrong_chunk_hash_in_the_index_is_a_chunk_mismatch() {
    let mut packed = Packed::new(sample_image(MIB, 5), LENS);
    let wrong = Digest::of(b"not this chunk");
    packed.index.chunks[3].sha256 = wrong;
    let err = write_packed(&packed, &packed.object).unwrap_err();
    assert!(
        err.to_string().starts_with("chunk 3 (image offset"),
        "{err}"
    );
    let chunk = &packed.index.chunks[3];
    let actual = Digest::of(&packed.raw[chunk.offset as usize..][..chunk.len as usize]);
    match err {
        PipelineError::ChunkMismatch {
            chunk: 3,
            offset,
            expected,
            actual: got,
        } => assert_eq!((offset, expected, got), (chunk.offset, wrong, actual)),
        other => panic!("expected a mismatch of chunk 3, got {other:?}"),
    }
}

#[test]
fn frames_holding_another_length_than_their_chunk_are_bad() {
    let raw = sample_image(300 * KIB, 6);
    let chunks = cut(&raw, &[100 * KIB]);
    let longer = [chunks[1], b"!"].concat();
    for (what, content) in [("short", &chunks[1][1..]), ("long", &longer[..])] {
        let packed = Packed::with_frames(raw.clone(), &chunks, &[chunks[0], content, chunks[2]]);
        match write_packed(&packed, &packed.object) {
            Err(PipelineError::BadFrame {
                chunk: 1,
                offset,
                reason,
            }) => {
                assert_eq!(offset, packed.index.chunks[1].compressed_offset, "{what}");
                if what == "short" {
                    assert_eq!(reason, "holds 102399 bytes, the index says 102400");
                }
            }
            other => panic!("{what} frame: got {other:?}"),
        }
    }
}

/// The whole-image hash is checked on read-back (streaming checks every
/// chunk against the index instead, see the module doc).
#[test]
fn a_wrong_image_hash_fails_the_readback() {
    let packed = Packed::new(sample_image(MIB, 7), LENS);
    let expected = Digest::of(b"another image");
    let spec = ImageSpec {
        sha256: expected,
        ..packed.spec()
    };
    let mut disk = Cursor::new(vec![0; MIB]);
    let without = write_image(
        packed.object.as_slice(),
        &spec,
        &mut disk,
        &options(),
        &NoProgress,
    );
    assert!(without.is_ok(), "every chunk matches its index");
    let err = write_image(
        packed.object.as_slice(),
        &spec,
        &mut disk,
        &WriteOptions {
            verify_readback: true,
            ..options()
        },
        &NoProgress,
    )
    .unwrap_err();
    match err {
        PipelineError::ImageMismatch {
            expected: e,
            actual,
        } => {
            assert_eq!((e, actual), (expected, Digest::of(&packed.raw)));
        }
        other => panic!("expected an image mismatch, got {other:?}"),
    }
}

#[test]
fn a_truncated_object_names_the_frame_it_ends_in() {
    let packed = Packed::new(sample_image(MIB, 8), LENS);
    let frame = packed.frame(3);
    for (cut_at, got) in [(frame.start + 10, 10), (frame.start, 0)] {
        match write_packed(&packed, &packed.object[..cut_at]) {
            Err(PipelineError::Truncated {
                chunk,
                expected,
                got: g,
            }) => {
                assert_eq!((chunk, expected, g), (3, frame.len() as u64, got));
            }
            other => panic!("cut at {cut_at}: got {other:?}"),
        }
    }
}

#[test]
fn bytes_after_the_last_frame_are_refused() {
    let packed = Packed::new(sample_image(MIB, 9), LENS);
    let object = [&packed.object[..], b"garbage"].concat();
    match write_packed(&packed, &object) {
        Err(PipelineError::TrailingData { offset }) => {
            assert_eq!(offset, packed.object.len() as u64)
        }
        other => panic!("expected trailing data, got {other:?}"),
    }
}

#[test]
fn an_image_larger_than_the_target_is_refused_before_any_write() {
    let packed = Packed::new(sample_image(MIB, 10), LENS);
    let mut disk = FaultyDisk::counting(Region::new(
        Cursor::new(vec![0; 2 * MIB]),
        4096,
        MIB as u64 - 1,
    ));
    match write_image(
        packed.object.as_slice(),
        &packed.spec(),
        &mut disk,
        &options(),
        &NoProgress,
    ) {
        Err(PipelineError::TooLarge { image, target }) => {
            assert_eq!((image, target), (MIB as u64, MIB as u64 - 1))
        }
        other => panic!("expected too large, got {other:?}"),
    }
    assert_eq!(disk.written().writes, 0);
}

#[test]
fn an_index_that_does_not_tile_the_image_is_refused_before_any_write() {
    let packed = Packed::new(sample_image(MIB, 11), LENS);
    let mut gap = packed.index.clone();
    gap.chunks[2].compressed_offset += 1;
    let cases = [
        (
            packed.index.clone(),
            MIB as u64 + 1,
            "the chunks add up to 1048576 bytes, the image has 1048577",
        ),
        (gap, MIB as u64, "chunk 2: frame starts at"),
    ];
    for (index, size, reason) in cases {
        let spec = ImageSpec {
            index: &index,
            size,
            sha256: Digest::of(&packed.raw),
        };
        let mut disk = FaultyDisk::counting(Cursor::new(vec![0; 2 * MIB]));
        match write_image(
            packed.object.as_slice(),
            &spec,
            &mut disk,
            &options(),
            &NoProgress,
        ) {
            Err(PipelineError::BadIndex(r)) => assert!(r.contains(reason), "{r}"),
            other => panic!("expected a bad index ({reason}), got {other:?}"),
        }
        assert_eq!(disk.written().writes, 0);
    }
}

/// A disk that silently flips a bit in one of its writes.
struct CorruptingDisk {
    inner: Cursor<Vec<u8>>,
    corrupt_write: usize,
    writes: usize,
}

impl Read for CorruptingDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for CorruptingDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if self.writes - 1 != self.corrupt_write {
            return self.inner.write(buf);
        }
        let mut bad = buf.to_vec();
        bad[buf.len() / 2] ^= 1;
        self.inner.write(&bad)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for CorruptingDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl Disk for CorruptingDisk {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&mut self) -> io::Result<u64> {
        self.inner.size()
    }
}

#[test]
fn read_back_catches_a_disk_that_corrupts_a_write() {
    let packed = Packed::new(sample_image(2 * MIB, 12), LENS);
    // The writer writes one chunk per call.
    let victim = 7;
    for verify_readback in [false, true] {
        let mut disk = CorruptingDisk {
            inner: Cursor::new(vec![0; 2 * MIB]),
            corrupt_write: victim,
            writes: 0,
        };
        let opts = WriteOptions {
            verify_readback,
            ..options()
        };
        let result = write_image(
            packed.object.as_slice(),
            &packed.spec(),
            &mut disk,
            &opts,
            &NoProgress,
        );
        match (verify_readback, result) {
            (false, Ok(_)) => {}
            (true, Err(PipelineError::ReadbackMismatch { chunk, offset })) => {
                assert_eq!(
                    (chunk, offset),
                    (victim, packed.index.chunks[victim].offset)
                );
            }
            (_, other) => panic!("verify_readback {verify_readback}: got {other:?}"),
        }
    }
}

#[test]
fn a_failing_target_stops_every_stage() {
    let packed = Packed::new(sample_image(4 * MIB, 13), LENS);
    let result = within_a_minute(move || {
        let budget = packed.raw.len() as u64 / 2;
        let mut disk =
            FaultyDisk::failing_after(Cursor::new(vec![0; 4 * MIB]), budget, Fault::Error);
        let opts = WriteOptions {
            max_in_flight: 512 * KIB,
            ..options()
        };
        write_image(
            packed.object.as_slice(),
            &packed.spec(),
            &mut disk,
            &opts,
            &NoProgress,
        )
    });
    match result {
        Err(e @ PipelineError::Target(_)) => {
            assert!(e.to_string().contains("writing chunk"), "{e}")
        }
        other => panic!("expected a target error, got {other:?}"),
    }
}

/// Serves `data`, then fails.
struct FailingSource {
    data: Cursor<Vec<u8>>,
}

impl Read for FailingSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset",
            )),
            n => Ok(n),
        }
    }
}

#[test]
fn a_failing_source_names_the_frame_and_stops_every_stage() {
    let packed = Packed::new(sample_image(4 * MIB, 14), LENS);
    let frame = packed.frame(20);
    let result = within_a_minute(move || {
        let source = FailingSource {
            data: Cursor::new(packed.object[..frame.start + 5].to_vec()),
        };
        let mut disk = Cursor::new(vec![0; 4 * MIB]);
        write_image(source, &packed.spec(), &mut disk, &options(), &NoProgress)
    });
    match result {
        Err(e @ PipelineError::Source(_)) => assert_eq!(
            e.to_string(),
            format!(
                "reading the image object: frame of chunk 20 at object offset {}: connection reset",
                frame.start
            )
        ),
        other => panic!("expected a source error, got {other:?}"),
    }
}

/// One phase as a [`RecordingProgress`] saw it.
#[derive(Debug, PartialEq, Eq)]
struct PhaseRecord {
    name: String,
    total: Option<u64>,
    done: u64,
    finished: bool,
}

/// Records phases and the bytes reported in each.
#[derive(Default)]
struct RecordingProgress {
    phases: Mutex<Vec<PhaseRecord>>,
}

impl Progress for RecordingProgress {
    fn start(&self, phase: &str, total: Option<u64>) {
        self.phases.lock().unwrap().push(PhaseRecord {
            name: phase.to_owned(),
            total,
            done: 0,
            finished: false,
        });
    }

    fn advance(&self, bytes: u64) {
        self.phases.lock().unwrap().last_mut().unwrap().done += bytes;
    }

    fn finish(&self) {
        self.phases.lock().unwrap().last_mut().unwrap().finished = true;
    }
}

#[test]
fn progress_covers_writing_and_verifying() {
    let packed = Packed::new(sample_image(MIB, 15), LENS);
    let progress = RecordingProgress::default();
    let opts = WriteOptions {
        verify_readback: true,
        target_name: "slot b".into(),
        ..options()
    };
    let mut disk = Cursor::new(vec![0; MIB]);
    write_image(
        packed.object.as_slice(),
        &packed.spec(),
        &mut disk,
        &opts,
        &progress,
    )
    .unwrap();
    let phase = |name: &str| PhaseRecord {
        name: name.to_owned(),
        total: Some(MIB as u64),
        done: MIB as u64,
        finished: true,
    };
    assert_eq!(
        progress.phases.into_inner().unwrap(),
        [phase("writing slot b"), phase("verifying slot b")]
    );
}

/// Serves `count` copies of one frame: an object of any size from a few KiB
/// of memory.
struct RepeatedFrame {
    frame: Vec<u8>,
    count: u64,
    pos: usize,
}

impl Read for RepeatedFrame {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.frame.len() - self.pos);
        buf[..n].copy_from_slice(&self.frame[self.pos..][..n]);
        self.pos += n;
        if self.pos == self.frame.len() {
            self.pos = 0;
            self.count -= 1;
        }
        Ok(n)
    }
}

/// A disk of any size whose every byte is the repeated `pattern`: a write
/// must match it (a wrong byte fails the write), a read serves it back. The
/// memory probe streams gigabytes through it without a gigabyte of space on
/// the test machine's disk.
struct PatternDisk {
    pattern: Vec<u8>,
    size: u64,
    pos: u64,
}

impl PatternDisk {
    /// The pattern's bytes from the current position on, into `buf`.
    fn fill(&self, buf: &mut [u8]) {
        let len = self.pattern.len();
        let mut start = (self.pos % len as u64) as usize;
        for piece in buf.chunks_mut(len) {
            let (n, first) = (piece.len(), piece.len().min(len - start));
            piece[..first].copy_from_slice(&self.pattern[start..start + first]);
            piece[first..].copy_from_slice(&self.pattern[..n - first]);
            start = (start + n) % len;
        }
    }
}

impl Read for PatternDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.size.saturating_sub(self.pos) as usize);
        self.fill(&mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for PatternDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.size {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "past the end"));
        }
        let mut expected = vec![0; buf.len()];
        self.fill(&mut expected);
        if expected != buf {
            return Err(io::Error::other(format!(
                "wrong bytes written at {}",
                self.pos
            )));
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for PatternDisk {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            io::SeekFrom::Start(n) => n,
            io::SeekFrom::End(n) => self.size.checked_add_signed(n).unwrap(),
            io::SeekFrom::Current(n) => self.pos.checked_add_signed(n).unwrap(),
        };
        Ok(self.pos)
    }
}

impl Disk for PatternDisk {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.size)
    }
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const MEMORY_BOUND: u64 = 64 << 20;

#[test]
fn streaming_2_gib_keeps_memory_bounded() {
    // Peak RSS belongs to the whole process, and the other tests run on
    // threads of this one: run the probe alone in a child process.
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "pipeline::tests::memory_probe",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the probe did not run:\n{stdout}"
    );
}

#[test]
#[ignore = "run alone in a process by streaming_2_gib_keeps_memory_bounded"]
fn memory_probe() {
    const CHUNK: usize = MIB;
    const COUNT: u64 = 2048;
    let chunk = sample_image(CHUNK, 16);
    let frame = zstd::bulk::compress(&chunk, 3).unwrap();
    let chunk_sha256 = Digest::of(&chunk);
    let mut whole = Sha256::new();
    let mut index = Index::default();
    for i in 0..COUNT {
        whole.update(&chunk);
        index.chunks.push(Chunk {
            offset: i * CHUNK as u64,
            len: CHUNK as u32,
            compressed_offset: i * frame.len() as u64,
            compressed_len: frame.len() as u32,
            sha256: chunk_sha256,
        });
    }
    let size = COUNT * CHUNK as u64;
    let spec = ImageSpec {
        index: &index,
        size,
        sha256: Digest(whole.finalize().into()),
    };
    let mut disk = PatternDisk {
        pattern: chunk,
        size,
        pos: 0,
    };
    let source = RepeatedFrame {
        frame,
        count: COUNT,
        pos: 0,
    };

    let before = peak_rss();
    let report = write_image(
        source,
        &spec,
        &mut disk,
        &WriteOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let growth = peak_rss().saturating_sub(before);
    println!(
        "streamed {} MiB in {:?}; peak RSS grew by {} KiB",
        report.bytes >> 20,
        report.elapsed,
        growth >> 10
    );
    assert!(
        growth < MEMORY_BOUND,
        "peak RSS grew by {} MiB",
        growth >> 20
    );
}
