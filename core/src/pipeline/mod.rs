//! The image pipeline (DESIGN §3, §9): a compressed image object in, the raw
//! image written at offset 0 of a target disk (a slot) out.
//!
//! The object is a sequence of independent zstd frames, one per chunk of the
//! [`Index`]. Each stage runs on its own thread, so the whole goes at the
//! speed of its slowest stage:
//!
//! ```text
//! source ─▶ reader ──frames──▶ decoders ×N ──chunks──▶ writer ──▶ target
//!           slices frames      decompress,             calling thread,
//!           by the index       hash, check             index order
//! ```
//!
//! Every chunk is checked against its SHA-256 in the index, and the index is
//! pinned by the signed meta, so the chunks verified in order ARE the
//! verified image: a second, sequential SHA-256 pass over the whole image
//! while streaming would add nothing to that, and it measured as the single
//! largest cost of the pipeline (bench/pipeline.sh: ~0.7 CPU-s per GB, a/b
//! 1.16 with it). The whole-image SHA-256 of the meta is checked where the
//! image is read sequentially anyway: the read-back verification
//! ([`WriteOptions::verify_readback`]), which also proves what the target
//! holds rather than what was sent to it.
//!
//! Memory is bounded whatever the image size: every chunk holds a lease of
//! (frame + raw) bytes on a budget of [`WriteOptions::max_in_flight`] from
//! the moment the reader starts on its frame until the writer is done with
//! it, and every channel is bounded.
//!
//! The writer hands the target's writes to the medium as they go
//! ([`WriteBehind`], 16 MiB at a time), so the sync at the end waits for
//! the last window rather than the whole image, and the page cache does not
//! fill with a slot's worth of dirty pages.
//!
//! Delta updates write only some chunks, from several sources at once:
//! [`write_chunks`] (module `scatter`) runs the same stages over frames
//! fetched by byte range and chunks copied from the other slot, and writes
//! each chunk at its offset; [`find_present_chunks`] finds what a target
//! already holds, and [`verify_image`] is the read-back check on its own.
//!
//! Without a target: [`verify_object`] runs the reader and decoders over a
//! whole object and drops the chunks (checking a bundle before anything is
//! overwritten), and [`read_image_head`] decodes only the first chunks (a
//! superblock).

mod budget;
mod scatter;
#[cfg(test)]
mod tests;

pub use scatter::{
    find_present_chunks, write_chunks, Copies, Fetches, FrameRange, ScatterReport, Tally,
};

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use zstd::bulk::Decompressor;

use crate::progress::Progress;
use abnix_formats::digest::Digest;
use abnix_formats::disk::{Disk, WriteBehind};
use abnix_formats::index::{Chunk, Index};
use budget::{Lease, Run};

/// How the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Threads that decompress and hash chunks (at least one runs).
    pub workers: usize,
    /// Bound on the bytes of frames and decompressed chunks held between the
    /// source and the target. One chunk is always let through, even a larger
    /// one.
    pub max_in_flight: usize,
    /// After the final sync, read the image back and check the whole
    /// image's SHA-256 (and, if it differs, which chunk does).
    pub verify_readback: bool,
    /// What is written, for progress: the phases are `"writing <name>"` and
    /// `"verifying <name>"`, e.g. "writing slot b".
    pub target_name: String,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            workers: thread::available_parallelism().map_or(1, NonZeroUsize::get),
            max_in_flight: 32 << 20,
            verify_readback: false,
            target_name: "image".to_owned(),
        }
    }
}

/// The image to write, as the verified meta and index describe it.
#[derive(Debug, Clone, Copy)]
pub struct ImageSpec<'a> {
    pub index: &'a Index,
    /// Size of the raw image.
    pub size: u64,
    /// SHA-256 of the raw image.
    pub sha256: Digest,
}

/// What a successful run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    pub bytes: u64,
    pub chunks: usize,
    /// From the call until the end (sync and read-back included).
    pub elapsed: Duration,
    /// With [`WriteOptions::verify_readback`]: the proof that the target
    /// holds the image.
    pub verified: Option<VerifiedImage>,
}

/// Proof that a target holds an image: read back whole after its final
/// sync and checked against the SHA-256 the signed meta names. Only the
/// read-back makes one, and boot control writes a slot's boot files only
/// with the proof of its image ([`crate::boot::BootFiles::of_version`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedImage {
    size: u64,
    sha256: Digest,
}

impl VerifiedImage {
    /// The proof for an image a test holds in memory.
    #[cfg(test)]
    pub(crate) fn of(image: &[u8]) -> VerifiedImage {
        VerifiedImage {
            size: image.len() as u64,
            sha256: Digest::of(image),
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn sha256(&self) -> Digest {
        self.sha256
    }
}

/// Why an image was not written. Every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "chunk {chunk} (image offset {offset}) has SHA-256 {actual}, the index says {expected}"
    )]
    ChunkMismatch {
        chunk: usize,
        /// Offset of the chunk in the raw image.
        offset: u64,
        expected: Digest,
        actual: Digest,
    },
    #[error("chunk {chunk}: bad zstd frame at object offset {offset}: {reason}")]
    BadFrame {
        chunk: usize,
        /// Offset of the frame in the compressed object.
        offset: u64,
        reason: String,
    },
    #[error("the image object ends inside the frame of chunk {chunk}: got {got} of its {expected} bytes")]
    Truncated {
        chunk: usize,
        expected: u64,
        got: u64,
    },
    #[error("the image object goes on after its last frame (object offset {offset}): it does not match its index")]
    TrailingData {
        /// Where the unexpected bytes start in the compressed object.
        offset: u64,
    },
    #[error("the image has SHA-256 {actual}, the meta says {expected}")]
    ImageMismatch { expected: Digest, actual: Digest },
    #[error("the image ({image} bytes) is larger than the target ({target} bytes)")]
    TooLarge { image: u64, target: u64 },
    #[error("chunk {chunk} (image offset {offset}) reads back different from what was written")]
    ReadbackMismatch { chunk: usize, offset: u64 },
    #[error("reading the image object: {0}")]
    Source(#[source] io::Error),
    #[error("target: {0}")]
    Target(#[source] io::Error),
    #[error("the index does not describe the image: {0}")]
    BadIndex(String),
}

/// Writes the image from `source` (its compressed object, read sequentially
/// from the start) at offset 0 of `target`, checking every chunk against the
/// index, then syncs the target; with read-back, checks what the target
/// holds, chunk by chunk and whole against `image.sha256`.
///
/// Refuses before writing anything when the index does not add up to
/// `image.size` or the image does not fit the target. On error, every thread
/// has stopped when this returns (a read from `source` that is under way is
/// waited for, so a network source needs its own timeouts); the target then
/// holds a partial image.
pub fn write_image<R: Read + Send, D: Disk>(
    source: R,
    image: &ImageSpec,
    target: &mut D,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<WriteReport, PipelineError> {
    let started = Instant::now();
    let chunks = &image.index.chunks;
    check_image(image, target)?;

    progress.start(&format!("writing {}", opts.target_name), Some(image.size));
    stream_chunks(source, chunks, &mut write_behind(target)?, opts, progress)?;
    // The caller makes the slot bootable next: the image must be durable
    // before that.
    target
        .sync()
        .map_err(|e| PipelineError::Target(context(e, "syncing")))?;
    progress.finish();

    let verified = match opts.verify_readback {
        true => Some(verify_readback(target, image, opts, progress)?),
        false => None,
    };
    Ok(WriteReport {
        bytes: image.size,
        chunks: chunks.len(),
        elapsed: started.elapsed(),
        verified,
    })
}

/// `target`, its writes handed to the medium as they go (see
/// [`WriteBehind`]).
fn write_behind<D: Disk>(target: &mut D) -> Result<WriteBehind<&mut D>, PipelineError> {
    WriteBehind::new(target).map_err(|e| PipelineError::Target(context(e, "reading its position")))
}

/// Refuses an index that does not add up to the image, and an image that
/// does not fit the target: what [`write_image`] checks before it writes.
pub fn check_image<D: Disk>(image: &ImageSpec, target: &mut D) -> Result<(), PipelineError> {
    check_index(&image.index.chunks, image.size)?;
    let target_size = target
        .size()
        .map_err(|e| PipelineError::Target(context(e, "reading its size")))?;
    if image.size > target_size {
        return Err(PipelineError::TooLarge {
            image: image.size,
            target: target_size,
        });
    }
    Ok(())
}

/// Decompresses the image object from `source` and checks every chunk
/// against the index, writing nothing: [`write_image`]'s reader and
/// decoders, with a writer that drops the chunks. For a caller that must
/// know the object is sound before it changes anything (the installer,
/// before it overwrites an earlier installation). The chunks are those of
/// the signed index, so this proves the whole image as [`write_image`]
/// does.
pub fn verify_object<R: Read + Send>(
    source: R,
    image: &ImageSpec,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<(), PipelineError> {
    check_index(&image.index.chunks, image.size)?;
    progress.start("checking the image object", Some(image.size));
    stream_chunks(
        source,
        &image.index.chunks,
        &mut io::empty(),
        opts,
        progress,
    )?;
    progress.finish();
    Ok(())
}

/// The image's first bytes, at least `len` of them (all of a smaller
/// image): the first chunks read from the start of the object `source`,
/// decompressed and checked against the index. Enough to read a superblock
/// without going through the whole image.
pub fn read_image_head<R: Read>(
    mut source: R,
    image: &ImageSpec,
    len: u64,
) -> Result<Vec<u8>, PipelineError> {
    let chunks = &image.index.chunks;
    check_index(chunks, image.size)?;
    let mut zstd = Decompressor::default();
    let mut head = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        if head.len() as u64 >= len {
            break;
        }
        let mut frame = vec![0; chunk.compressed_len as usize];
        let got = read_fully(&mut source, &mut frame).map_err(|e| {
            PipelineError::Source(context(e, format_args!("frame of chunk {index}")))
        })?;
        if got < frame.len() {
            return Err(PipelineError::Truncated {
                chunk: index,
                expected: chunk.compressed_len.into(),
                got: got as u64,
            });
        }
        head.extend(decode_chunk(&mut zstd, chunks, index, &frame)?);
    }
    Ok(head)
}

/// Items waiting in a bounded channel between two stages. The byte budget is
/// the real bound on memory; this only has to be deep enough that stages
/// rarely wait on each other.
const CHANNEL_DEPTH: usize = 64;

/// A chunk's bytes in flight (its compressed frame or its raw data) and its
/// share of the budget, given back when the bytes are dropped.
struct Block<'run> {
    /// Position of the chunk in the index.
    index: usize,
    data: Vec<u8>,
    lease: Lease<'run>,
}

/// The chunks must tile the image and the object from offset 0 with no gap,
/// since both are read and written sequentially.
fn check_index(chunks: &[Chunk], size: u64) -> Result<(), PipelineError> {
    let mut offset = 0u64;
    let mut compressed_offset = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        let bad = |reason: String| Err(PipelineError::BadIndex(format!("chunk {i}: {reason}")));
        if chunk.len == 0 || chunk.compressed_len == 0 {
            return bad("empty chunk or frame".into());
        }
        if chunk.offset != offset {
            return bad(format!("starts at {}, not at {offset}", chunk.offset));
        }
        if chunk.compressed_offset != compressed_offset {
            return bad(format!(
                "frame starts at {}, not at {compressed_offset}",
                chunk.compressed_offset
            ));
        }
        let (Some(end), Some(compressed_end)) = (
            offset.checked_add(chunk.len.into()),
            compressed_offset.checked_add(chunk.compressed_len.into()),
        ) else {
            return bad("offsets overflow".into());
        };
        offset = end;
        compressed_offset = compressed_end;
    }
    if offset != size {
        return Err(PipelineError::BadIndex(format!(
            "the chunks add up to {offset} bytes, the image has {size}"
        )));
    }
    Ok(())
}

/// Runs the reader, decoders and writer.
fn stream_chunks<R: Read + Send, W: Write + Seek>(
    source: R,
    chunks: &[Chunk],
    target: &mut W,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<(), PipelineError> {
    let run = Run::new(opts.max_in_flight as u64);
    thread::scope(|scope| {
        let run = &run;
        let (frames_tx, frames_rx) = mpsc::sync_channel(CHANNEL_DEPTH);
        let (decoded_tx, decoded_rx) = mpsc::sync_channel(CHANNEL_DEPTH);

        scope.spawn(move || read_frames(source, chunks, run, frames_tx));
        spawn_workers(scope, opts.workers, frames_rx, run, || {
            let mut zstd = Decompressor::default();
            let decoded_tx = decoded_tx.clone();
            move |frame| match decode(&mut zstd, chunks, frame) {
                Ok(chunk) => decoded_tx.send(chunk).is_ok(),
                Err(error) => {
                    run.fail(error);
                    false
                }
            }
        });
        // Only the decoders may hold senders, so the writer sees the channel
        // close when they stop.
        drop(decoded_tx);
        write_in_order(target, chunks, decoded_rx, run, progress);
    });
    run.into_result()
}

/// Reader stage: slices the object into frames by the index, then checks
/// that nothing follows the last one.
fn read_frames<'run, R: Read>(
    mut source: R,
    chunks: &[Chunk],
    run: &'run Run,
    frames: SyncSender<Block<'run>>,
) {
    for (index, chunk) in chunks.iter().enumerate() {
        // The raw bytes are reserved too: the decoder allocates them later
        // under this same lease.
        let Some(lease) = run.acquire(u64::from(chunk.compressed_len) + u64::from(chunk.len))
        else {
            return;
        };
        let mut data = vec![0; chunk.compressed_len as usize];
        match read_fully(&mut source, &mut data) {
            Ok(got) if got == data.len() => {}
            Ok(got) => {
                return run.fail(PipelineError::Truncated {
                    chunk: index,
                    expected: chunk.compressed_len.into(),
                    got: got as u64,
                })
            }
            Err(e) => {
                return run.fail(PipelineError::Source(context(
                    e,
                    format_args!(
                        "frame of chunk {index} at object offset {}",
                        chunk.compressed_offset
                    ),
                )))
            }
        }
        if frames.send(Block { index, data, lease }).is_err() {
            return;
        }
    }
    // Let the decoders finish while the source is probed for its end.
    drop(frames);
    let end = chunks
        .last()
        .map_or(0, |c| c.compressed_offset + u64::from(c.compressed_len));
    match read_fully(&mut source, &mut [0; 1]) {
        Ok(0) => {}
        Ok(_) => run.fail(PipelineError::TrailingData { offset: end }),
        Err(e) => run.fail(PipelineError::Source(context(
            e,
            format_args!("after the last frame at object offset {end}"),
        ))),
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_fully(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decoder stage, for one frame: decompress into a buffer of the chunk's
/// exact length and check the chunk's hash.
fn decode<'run>(
    zstd: &mut Decompressor,
    chunks: &[Chunk],
    frame: Block<'run>,
) -> Result<Block<'run>, PipelineError> {
    Ok(Block {
        index: frame.index,
        data: decode_chunk(zstd, chunks, frame.index, &frame.data)?,
        lease: frame.lease,
    })
}

/// Decompresses the frame of chunk `index` and checks the chunk's hash.
fn decode_chunk(
    zstd: &mut Decompressor,
    chunks: &[Chunk],
    index: usize,
    frame: &[u8],
) -> Result<Vec<u8>, PipelineError> {
    let chunk = &chunks[index];
    let bad_frame = |reason| PipelineError::BadFrame {
        chunk: index,
        offset: chunk.compressed_offset,
        reason,
    };
    // The bulk API decompresses into spare capacity, so the buffer is not
    // zeroed first; a frame holding more than the index says fails with
    // "Destination buffer is too small".
    let mut data = Vec::with_capacity(chunk.len as usize);
    match zstd.decompress_to_buffer(frame, &mut data) {
        Err(e) => return Err(bad_frame(format!("zstd: {e}"))),
        Ok(n) if n != chunk.len as usize => {
            return Err(bad_frame(format!(
                "holds {n} bytes, the index says {}",
                chunk.len
            )))
        }
        Ok(_) => {}
    }
    let actual = Digest::of(&data);
    if actual != chunk.sha256 {
        return Err(PipelineError::ChunkMismatch {
            chunk: index,
            offset: chunk.offset,
            expected: chunk.sha256,
            actual,
        });
    }
    Ok(data)
}

/// Writer stage, on the calling thread (the target need not be `Send`):
/// writes the chunks in index order as they arrive in any order.
fn write_in_order<W: Write + Seek>(
    target: &mut W,
    chunks: &[Chunk],
    decoded: Receiver<Block<'_>>,
    run: &Run,
    progress: &dyn Progress,
) {
    if let Err(e) = target.seek(SeekFrom::Start(0)) {
        return run.fail(PipelineError::Target(context(e, "seeking to its start")));
    }
    // Chunks decoded ahead of their turn; the budget bounds how many.
    let mut early = BTreeMap::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let block = loop {
            if run.has_failed() {
                return;
            }
            if let Some(block) = early.remove(&index) {
                break block;
            }
            match decoded.recv() {
                Ok(block) if block.index == index => break block,
                Ok(block) => {
                    early.insert(block.index, block);
                }
                Err(_) => return,
            }
        };
        if let Err(e) = target.write_all(&block.data) {
            return run.fail(PipelineError::Target(context(
                e,
                format_args!("writing chunk {index} at offset {}", chunk.offset),
            )));
        }
        progress.advance(chunk.len.into());
    }
}

/// Starts `count` (at least one) threads that take jobs from `jobs` until it
/// closes, the run fails, or their worker function returns false. Each
/// thread gets its own worker from `new_worker` (its own zstd context, its
/// own sender).
fn spawn_workers<'scope, J, W>(
    scope: &'scope Scope<'scope, '_>,
    count: usize,
    jobs: Receiver<J>,
    run: &'scope Run,
    mut new_worker: impl FnMut() -> W,
) where
    J: Send + 'scope,
    W: FnMut(J) -> bool + Send + 'scope,
{
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..count.max(1) {
        let mut work = new_worker();
        let jobs = Arc::clone(&jobs);
        scope.spawn(move || loop {
            let job = jobs.lock().unwrap().recv();
            let Ok(job) = job else { return };
            if run.has_failed() || !work(job) {
                return;
            }
        });
    }
}

/// Reads the image back from `target` and checks the whole image's SHA-256:
/// the read-back of [`write_image`], for images
/// written by other means ([`write_chunks`]). Fails with
/// [`PipelineError::ReadbackMismatch`] naming the first chunk that differs,
/// or [`PipelineError::ImageMismatch`].
pub fn verify_image<D: Disk>(
    target: &mut D,
    image: &ImageSpec,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<VerifiedImage, PipelineError> {
    check_index(&image.index.chunks, image.size)?;
    verify_readback(target, image, opts, progress)
}

/// Reads the image back from the target and checks the whole image's
/// SHA-256; when it differs, a second pass names the first chunk that does
/// not match the index. The whole-image hash covers every byte, so the
/// chunks' hashes are only computed to say where.
///
/// On a block device this reads through the page cache, so it proves what
/// the kernel will serve, not necessarily what reached the medium.
fn verify_readback<D: Disk>(
    target: &mut D,
    image: &ImageSpec,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<VerifiedImage, PipelineError> {
    let chunks = &image.index.chunks;
    progress.start(&format!("verifying {}", opts.target_name), Some(image.size));
    let actual = hash_image(target, chunks, opts, progress)?;
    progress.finish();
    if actual == image.sha256 {
        return Ok(VerifiedImage {
            size: image.size,
            sha256: actual,
        });
    }
    progress.start(
        &format!("finding what differs in {}", opts.target_name),
        Some(image.size),
    );
    scan_chunks(
        target,
        chunks,
        opts,
        progress,
        |index, matches| match matches {
            true => Ok(()),
            false => Err(PipelineError::ReadbackMismatch {
                chunk: index,
                offset: chunks[index].offset,
            }),
        },
    )?;
    Err(PipelineError::ImageMismatch {
        expected: image.sha256,
        actual,
    })
}

/// The SHA-256 of `chunks` as the target holds them: read on the calling
/// thread (the target need not be `Send`) and hashed in order on another,
/// so that reading and hashing overlap.
fn hash_image<D: Disk>(
    target: &mut D,
    chunks: &[Chunk],
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<Digest, PipelineError> {
    let run = Run::new(opts.max_in_flight as u64);
    let digest = thread::scope(|scope| {
        let (read_tx, read_rx) = mpsc::sync_channel::<Block>(CHANNEL_DEPTH);
        let hasher = scope.spawn(move || {
            let mut whole = Sha256::new();
            for block in read_rx {
                whole.update(&block.data);
            }
            Digest(whole.finalize().into())
        });
        read_chunks(target, chunks, &run, progress, |block| {
            read_tx.send(block).is_ok()
        });
        drop(read_tx);
        hasher.join().expect("hashing does not panic")
    });
    run.into_result()?;
    Ok(digest)
}

/// Reads `chunks` from the target in one sequential pass (the target is one
/// handle) and tells `on_checked` on the workers, which hash in parallel,
/// whether each matches its SHA-256. Stops at the first error `on_checked`
/// returns.
fn scan_chunks<D: Disk>(
    target: &mut D,
    chunks: &[Chunk],
    opts: &WriteOptions,
    progress: &dyn Progress,
    on_checked: impl Fn(usize, bool) -> Result<(), PipelineError> + Sync,
) -> Result<(), PipelineError> {
    let run = Run::new(opts.max_in_flight as u64);
    thread::scope(|scope| {
        let run = &run;
        let on_checked = &on_checked;
        let (read_tx, read_rx) = mpsc::sync_channel(CHANNEL_DEPTH);
        spawn_workers(scope, opts.workers, read_rx, run, || {
            |block: Block| {
                let matches = Digest::of(&block.data) == chunks[block.index].sha256;
                match on_checked(block.index, matches) {
                    Ok(()) => true,
                    Err(error) => {
                        run.fail(error);
                        false
                    }
                }
            }
        });
        read_chunks(target, chunks, run, progress, |block| {
            read_tx.send(block).is_ok()
        });
    });
    run.into_result()
}

/// Reads `chunks` from the start of the target, in order, each on a lease
/// of the run's budget, and hands them to `send` until it returns false,
/// the run fails, or a read fails (which fails the run).
fn read_chunks<'run, D: Disk>(
    target: &mut D,
    chunks: &[Chunk],
    run: &'run Run,
    progress: &dyn Progress,
    mut send: impl FnMut(Block<'run>) -> bool,
) {
    if let Err(e) = target.seek(SeekFrom::Start(0)) {
        return run.fail(PipelineError::Target(context(e, "seeking to its start")));
    }
    for (index, chunk) in chunks.iter().enumerate() {
        let Some(lease) = run.acquire(chunk.len.into()) else {
            return;
        };
        let mut data = vec![0; chunk.len as usize];
        if let Err(e) = target.read_exact(&mut data) {
            return run.fail(PipelineError::Target(context(
                e,
                format_args!("reading back chunk {index} at offset {}", chunk.offset),
            )));
        }
        if !send(Block { index, data, lease }) {
            return;
        }
        progress.advance(chunk.len.into());
    }
}

/// Prefixes an I/O error with where it happened, keeping its kind.
fn context(error: io::Error, what: impl Display) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
