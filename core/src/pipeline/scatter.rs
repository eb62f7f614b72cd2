//! Writing some chunks of an image, in any order, from several sources at
//! once: frames fetched by byte range, and chunks copied from another disk
//! (delta updates, `abnix_updater::delta`). And finding which chunks a target
//! already holds.
//!
//! ```text
//! copier ──raw chunks──┐
//! fetchers ×P ─frames──┼─▶ workers ×N ──verified──▶ writer ──▶ target
//!   (range requests)   │   decompress,              calling thread,
//!                      │   hash, check              at each chunk's offset
//! ```
//!
//! Every chunk is checked against its SHA-256 before it is written, whatever
//! its source. A fetched chunk that fails is an error, as in
//! [`super::write_image`]; a copied one that fails (the local disk does not
//! hold what its index says, or cannot be read there) is only reported, for
//! the caller to fetch instead. Memory is bounded by the same budget as the
//! sequential pipeline: each chunk holds a lease from the moment its bytes
//! are read until they are written, and the writer takes chunks in whatever
//! order they come, so no chunk waits for another.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread;

use tracing::warn;
use zstd::bulk::Decompressor;

use super::{context, decode, read_fully, scan_chunks, spawn_workers, Block, Run, CHANNEL_DEPTH};
use super::{write_behind, PipelineError, WriteOptions};
use crate::progress::Progress;
use abnix_formats::digest::Digest;
use abnix_formats::disk::{self, Disk};
use abnix_formats::index::{Chunk, Index};

/// Chunks whose frames are fetched with one range request: the request spans
/// from the first chunk's frame to the end of the last one's, and frames of
/// chunks in between that are not listed are read through and dropped (a
/// small gap costs less than another request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRange {
    /// Positions in the index, ascending, at least one.
    pub chunks: Vec<usize>,
}

impl FrameRange {
    /// The byte range `start..end` of the compressed object the request
    /// asks for.
    pub fn span(&self, index: &Index) -> (u64, u64) {
        let first = &index.chunks[self.chunks[0]];
        let last = &index.chunks[*self.chunks.last().expect("a range has a chunk")];
        (
            first.compressed_offset,
            last.compressed_offset + u64::from(last.compressed_len),
        )
    }
}

/// Chunks to copy from a local disk (the other slot).
pub struct Copies<'a, L> {
    pub from: &'a mut L,
    /// (position in the index, offset of the same bytes on `from`).
    pub chunks: &'a [(usize, u64)],
}

/// Frames to fetch.
pub struct Fetches<'a, F> {
    pub ranges: &'a [FrameRange],
    /// Opens a reader of bytes `start..end` of the compressed object; it must
    /// end there. A source that cannot serve ranges answers
    /// [`io::ErrorKind::Unsupported`], which the run fails with, so the
    /// caller can tell it apart and fall back to a sequential download.
    pub open: F,
    /// Range requests in flight at once (at least one).
    pub parallel: usize,
}

/// A number of chunks and their raw bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub chunks: usize,
    pub bytes: u64,
}

impl Tally {
    pub fn add(&mut self, chunk: &Chunk) {
        self.chunks += 1;
        self.bytes += u64::from(chunk.len);
    }
}

/// What [`write_chunks`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScatterReport {
    /// Copied from the local disk, verified and written.
    pub copied: Tally,
    /// Fetched, verified and written.
    pub fetched: Tally,
    /// Bytes of the compressed object received, gaps included.
    pub downloaded: u64,
    pub requests: usize,
    /// Chunks to copy that the local disk did not hold after all (wrong
    /// hash, or a read error), ascending: nothing was written for them.
    pub copy_failures: Vec<usize>,
}

/// What a worker gets.
enum Job<'run> {
    /// A compressed frame: decompress, then check.
    Frame(Block<'run>),
    /// A raw chunk read from the local disk: check.
    Local(Block<'run>),
}

/// Shared counters of a run.
#[derive(Default)]
struct Counters {
    downloaded: AtomicU64,
    requests: AtomicUsize,
    copy_failures: Mutex<Vec<usize>>,
}

/// Writes the chunks listed in `copies` and `fetches` into `target`, each at
/// its offset in the image, verifying each against the index first. Other
/// chunks of the target are left as they are. Does not sync: the caller
/// decides when the image is complete.
///
/// On error, every thread has stopped when this returns.
pub fn write_chunks<D, L, R, F>(
    index: &Index,
    copies: Option<Copies<'_, L>>,
    fetches: Fetches<'_, F>,
    target: &mut D,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<ScatterReport, PipelineError>
where
    D: Disk,
    L: Disk + Send,
    R: Read,
    F: Fn(u64, u64) -> io::Result<R> + Sync,
{
    let chunks = &index.chunks;
    check_positions(chunks, copies.as_ref(), fetches.ranges)?;
    let target = &mut write_behind(target)?;
    let run = Run::new(opts.max_in_flight as u64);
    let counters = Counters::default();
    let copied = Mutex::new(Tally::default());
    let fetched = Mutex::new(Tally::default());
    let queue = Mutex::new(fetches.ranges.iter());
    thread::scope(|scope| {
        let run = &run;
        let counters = &counters;
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(CHANNEL_DEPTH);
        let (verified_tx, verified_rx) = mpsc::sync_channel(CHANNEL_DEPTH);

        if let Some(copies) = copies {
            let jobs = jobs_tx.clone();
            scope.spawn(move || read_copies(copies, chunks, run, jobs, counters));
        }
        let fetchers = fetches.parallel.max(1).min(fetches.ranges.len());
        for _ in 0..fetchers {
            let jobs = jobs_tx.clone();
            let (queue, open) = (&queue, &fetches.open);
            scope.spawn(move || fetch_ranges(queue, open, chunks, run, jobs, counters));
        }
        // Only the producers may hold senders, so the workers see the
        // channel close when the last one is done.
        drop(jobs_tx);

        let (copied, fetched) = (&copied, &fetched);
        spawn_workers(scope, opts.workers, jobs_rx, run, || {
            let mut zstd = Decompressor::default();
            let verified = verified_tx.clone();
            move |job| {
                let block = match job {
                    Job::Frame(frame) => match decode(&mut zstd, chunks, frame) {
                        Ok(block) => {
                            fetched.lock().unwrap().add(&chunks[block.index]);
                            block
                        }
                        Err(error) => {
                            run.fail(error);
                            return false;
                        }
                    },
                    Job::Local(block) => {
                        let chunk = &chunks[block.index];
                        if Digest::of(&block.data) != chunk.sha256 {
                            warn!(
                                chunk = block.index,
                                offset = chunk.offset,
                                "the local copy of a chunk has the wrong SHA-256; fetching it instead"
                            );
                            counters.copy_failures.lock().unwrap().push(block.index);
                            return true;
                        }
                        copied.lock().unwrap().add(chunk);
                        block
                    }
                };
                verified.send(block).is_ok()
            }
        });
        drop(verified_tx);
        write_at_offsets(target, chunks, verified_rx, run, progress);
    });
    run.into_result()?;
    let mut copy_failures = counters.copy_failures.into_inner().unwrap();
    copy_failures.sort_unstable();
    Ok(ScatterReport {
        copied: copied.into_inner().unwrap(),
        fetched: fetched.into_inner().unwrap(),
        downloaded: counters.downloaded.into_inner(),
        requests: counters.requests.into_inner(),
        copy_failures,
    })
}

/// Every position must name a chunk, and ranges must list theirs ascending.
fn check_positions<L>(
    chunks: &[Chunk],
    copies: Option<&Copies<'_, L>>,
    ranges: &[FrameRange],
) -> Result<(), PipelineError> {
    let count = chunks.len();
    let bad = |what: String| Err(PipelineError::BadIndex(what));
    for &(position, _) in copies.map_or(&[][..], |c| c.chunks) {
        if position >= count {
            return bad(format!("chunk {position} to copy: the index has {count}"));
        }
    }
    for range in ranges {
        match (range.chunks.first(), range.chunks.last()) {
            (Some(_), Some(&last)) if last < count => {}
            (Some(_), Some(&last)) => {
                return bad(format!("chunk {last} to fetch: the index has {count}"))
            }
            _ => return bad("an empty range of frames".into()),
        }
        if range.chunks.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!("range {:?} is not ascending", range.chunks));
        }
    }
    Ok(())
}

/// Copier: reads each chunk from the local disk. A chunk that cannot be read
/// is a copy failure, not an error: it can still be fetched.
fn read_copies<'run, L: Disk>(
    copies: Copies<'_, L>,
    chunks: &[Chunk],
    run: &'run Run,
    jobs: SyncSender<Job<'run>>,
    counters: &Counters,
) {
    for &(index, from) in copies.chunks {
        let chunk = &chunks[index];
        let Some(lease) = run.acquire(chunk.len.into()) else {
            return;
        };
        let mut data = vec![0; chunk.len as usize];
        if let Err(error) = disk::read_at(copies.from, from, &mut data) {
            warn!(
                chunk = index,
                local_offset = from,
                %error,
                "cannot read a chunk from the local disk; fetching it instead"
            );
            counters.copy_failures.lock().unwrap().push(index);
            continue;
        }
        if jobs.send(Job::Local(Block { index, data, lease })).is_err() {
            return;
        }
    }
}

/// Fetcher: takes ranges from the queue until it is empty, reading each
/// range's frames in order.
fn fetch_ranges<'run, R: Read>(
    queue: &Mutex<std::slice::Iter<'_, FrameRange>>,
    open: &(impl Fn(u64, u64) -> io::Result<R> + Sync),
    chunks: &[Chunk],
    run: &'run Run,
    jobs: SyncSender<Job<'run>>,
    counters: &Counters,
) {
    // Frames of gap chunks land here and are dropped.
    let mut gap = Vec::new();
    loop {
        let Some(range) = queue.lock().unwrap().next() else {
            return;
        };
        if run.has_failed() {
            return;
        }
        if let Err(error) = fetch_range(range, open, chunks, run, &jobs, counters, &mut gap) {
            return run.fail(error);
        }
    }
}

fn fetch_range<'run, R: Read>(
    range: &FrameRange,
    open: &impl Fn(u64, u64) -> io::Result<R>,
    chunks: &[Chunk],
    run: &'run Run,
    jobs: &SyncSender<Job<'run>>,
    counters: &Counters,
    gap: &mut Vec<u8>,
) -> Result<(), PipelineError> {
    let first = range.chunks[0];
    let last = *range.chunks.last().expect("a range has a chunk");
    let start = chunks[first].compressed_offset;
    let end = chunks[last].compressed_offset + u64::from(chunks[last].compressed_len);
    let mut source = open(start, end).map_err(|e| {
        PipelineError::Source(context(
            e,
            format_args!("requesting object bytes {start}..{end}"),
        ))
    })?;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let mut wanted = range.chunks.iter().peekable();
    for (index, chunk) in chunks.iter().enumerate().take(last + 1).skip(first) {
        let is_wanted = wanted.next_if_eq(&&index).is_some();
        let lease = match is_wanted {
            // The raw bytes are reserved too, as in the sequential reader.
            true => match run.acquire(u64::from(chunk.compressed_len) + u64::from(chunk.len)) {
                Some(lease) => Some(lease),
                None => return Ok(()),
            },
            false => None,
        };
        let mut data = match lease {
            Some(_) => vec![0; chunk.compressed_len as usize],
            None => std::mem::take(gap),
        };
        data.resize(chunk.compressed_len as usize, 0);
        let got = read_fully(&mut source, &mut data).map_err(|e| {
            PipelineError::Source(context(
                e,
                format_args!(
                    "frame of chunk {index} at object offset {}",
                    chunk.compressed_offset
                ),
            ))
        })?;
        if got != data.len() {
            return Err(PipelineError::Truncated {
                chunk: index,
                expected: chunk.compressed_len.into(),
                got: got as u64,
            });
        }
        counters.downloaded.fetch_add(got as u64, Ordering::Relaxed);
        match lease {
            Some(lease) => {
                if jobs.send(Job::Frame(Block { index, data, lease })).is_err() {
                    return Ok(());
                }
            }
            None => *gap = data,
        }
    }
    match read_fully(&mut source, &mut [0; 1]) {
        Ok(0) => Ok(()),
        Ok(_) => Err(PipelineError::TrailingData { offset: end }),
        Err(e) => Err(PipelineError::Source(context(
            e,
            format_args!("after object bytes {start}..{end}"),
        ))),
    }
}

/// Writer, on the calling thread (the target need not be `Send`): writes
/// each verified chunk at its offset as it comes.
fn write_at_offsets<D: Disk>(
    target: &mut D,
    chunks: &[Chunk],
    verified: Receiver<Block<'_>>,
    run: &Run,
    progress: &dyn Progress,
) {
    for block in verified {
        if run.has_failed() {
            return;
        }
        let chunk = &chunks[block.index];
        if let Err(e) = disk::write_at(target, chunk.offset, &block.data) {
            return run.fail(PipelineError::Target(context(
                e,
                format_args!("writing chunk {} at offset {}", block.index, chunk.offset),
            )));
        }
        progress.advance(chunk.len.into());
    }
}

/// Which chunks of `index` the target already holds at their offsets (a
/// sequential read of the image's extent, hashed on the workers). The
/// target must be at least as large as the image.
pub fn find_present_chunks<D: Disk>(
    target: &mut D,
    index: &Index,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<Vec<bool>, PipelineError> {
    let present: Vec<AtomicBool> = index
        .chunks
        .iter()
        .map(|_| AtomicBool::new(false))
        .collect();
    progress.start(
        &format!("checking {}", opts.target_name),
        Some(index.image_size()),
    );
    scan_chunks(
        target,
        &index.chunks,
        opts,
        progress,
        |position, matches| {
            present[position].store(matches, Ordering::Relaxed);
            Ok(())
        },
    )?;
    progress.finish();
    Ok(present.into_iter().map(AtomicBool::into_inner).collect())
}
