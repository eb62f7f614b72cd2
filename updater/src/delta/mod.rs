//! Delta updates: write a new image into the target slot downloading only
//! the chunks the device does not already have (docs/delta.md).
//!
//! The new version's index (signed, through its meta) lists every chunk's
//! SHA-256. For each chunk, in this order of preference:
//!
//! 1. the target slot already holds it at its offset: an interrupted attempt
//!    at the same version (checked by hashing, only when the caller says the
//!    target may hold it);
//! 2. the active slot holds it, by the index of the active version
//!    ([`IndexStore`], else the bucket): copied, and checked by hashing what
//!    was read; a chunk that fails is fetched instead;
//! 3. else it is fetched: adjacent frames coalesced into range requests
//!    ([`Coalescing`]), several in flight.
//!
//! Then the target is synced and, with [`WriteOptions::verify_readback`],
//! read back and checked chunk by chunk and whole against the meta.
//!
//! It falls back to the plain sequential download of the whole object, and
//! says so in the log and the report ([`Fallback`]), when there is no local
//! source, when reuse would save too little to be worth the requests, and
//! when the server ignores Range requests.

mod plan;
mod reopen;
mod store;

use std::io::{self, Read};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

pub use plan::{coalesce, Coalescing, Cost, Plan, Source};
pub use reopen::Reopen;
pub use store::{IndexStore, StoreError};

use abnix_core::pipeline::{
    self, check_image, find_present_chunks, write_chunks, Copies, Fetches, ImageSpec,
    PipelineError, Tally, VerifiedImage, WriteOptions,
};
use abnix_core::progress::Progress;
use abnix_formats::disk::Disk;
use abnix_formats::index::Index;

/// The compressed image object, read whole or by byte range.
pub trait ImageObject: Sync {
    type Reader: Read + Send;

    /// The whole object, from its first byte.
    fn open(&self) -> io::Result<Self::Reader>;

    /// Bytes `start..end` of the object. When the server does not serve
    /// ranges, fails with [`io::ErrorKind::Unsupported`].
    fn open_range(&self, start: u64, end: u64) -> io::Result<Self::Reader>;
}

/// The active slot, as a source of chunks.
pub struct ActiveSlot<'a, A> {
    /// The slot's partition (a second handle on the disk: the target is
    /// written at the same time).
    pub disk: A,
    /// The index of the version it holds.
    pub index: &'a Index,
}

/// What the device has that may hold chunks of the new image.
pub struct LocalChunks<'a, A> {
    pub active: Option<ActiveSlot<'a, A>>,
    /// The target may already hold chunks of this image at their offsets:
    /// an attempt at this version was interrupted. Checking costs reading
    /// the image's extent of the target once.
    pub target_may_hold_image: bool,
}

/// How a delta update runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaOptions {
    /// The pipeline's workers, memory budget, read-back and target name.
    pub write: WriteOptions,
    pub coalescing: Coalescing,
    /// Range requests in flight at once.
    pub parallel_requests: usize,
    /// Below this share (in percent) of the compressed image saved, the
    /// whole object is downloaded instead: one sequential stream beats many
    /// ranges for little gain.
    pub min_saving_percent: u64,
}

impl Default for DeltaOptions {
    /// Gaps up to 32 KiB (a frame or two) are read through, requests span
    /// at most 16 MiB, 4 in flight, and a delta must save at least 10%. See
    /// docs/delta.md for the measurements.
    fn default() -> Self {
        DeltaOptions {
            write: WriteOptions::default(),
            coalescing: Coalescing {
                max_gap: 32 << 10,
                max_request: 16 << 20,
            },
            parallel_requests: 4,
            min_saving_percent: 10,
        }
    }
}

/// Why the whole object was downloaded instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// No index of the active slot, and no interrupted attempt to resume.
    NoLocalSource,
    /// Reuse would save `saved` of `total` compressed bytes, under the
    /// threshold.
    TooLittleToGain { saved: u64, total: u64 },
    /// The server answered a range request with the whole object.
    RangesUnsupported,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::NoLocalSource => {
                f.write_str("no index of the active slot and no interrupted attempt to resume")
            }
            Fallback::TooLittleToGain { saved, total } => write!(
                f,
                "reusing local chunks would save only {saved} of {total} compressed bytes"
            ),
            Fallback::RangesUnsupported => f.write_str("the server ignores Range requests"),
        }
    }
}

/// What a delta update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaReport {
    /// Size of the image.
    pub(crate) bytes: u64,
    pub(crate) chunks: usize,
    /// Chunks the target already held.
    pub kept: Tally,
    /// Chunks copied from the active slot.
    pub copied: Tally,
    /// Chunks fetched from the bucket (raw sizes).
    pub fetched: Tally,
    /// Bytes of the image object received, gaps included, counted as they
    /// came (after a fallback: with those of the range requests before it).
    pub downloaded: u64,
    /// GET requests for the image object (not counting resumes).
    pub requests: usize,
    /// Chunks the active slot should have held but did not (wrong hash or
    /// unreadable), fetched instead.
    pub refetched: usize,
    /// Set when the whole object was downloaded instead, and why.
    pub fallback: Option<Fallback>,
    /// From the call until the end (sync and read-back included).
    pub(crate) elapsed: Duration,
    /// With `verify_readback`: the proof that the target holds the image.
    pub(crate) verified: Option<VerifiedImage>,
}

/// One line for the log: what was reused, what was downloaded, or why the
/// whole image was.
impl std::fmt::Display for DeltaReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fallback) = &self.fallback {
            return write!(
                f,
                "downloaded the whole image ({} bytes) because {fallback}",
                self.downloaded
            );
        }
        write!(
            f,
            "reused {} of {} chunks ({} kept in the target, {} copied from the active slot: {} bytes), \
             fetched {} ({} refetched after a bad local copy): {} bytes downloaded in {} requests",
            self.kept.chunks + self.copied.chunks,
            self.chunks,
            self.kept.chunks,
            self.copied.chunks,
            self.kept.bytes + self.copied.bytes,
            self.fetched.chunks,
            self.refetched,
            self.downloaded,
            self.requests
        )
    }
}

/// Writes `image` into `target`, taking chunks from `local` where it can and
/// fetching the rest from `object` (see the module documentation). Syncs the
/// target, and reads it back when `opts.write.verify_readback` is set.
///
/// Refuses, before writing anything, an index that does not add up to the
/// image and an image larger than the target. On error the target holds a
/// partial image.
pub fn write_image_delta<O: ImageObject, D: Disk, A: Disk + Send>(
    object: &O,
    image: &ImageSpec,
    target: &mut D,
    local: LocalChunks<'_, A>,
    opts: &DeltaOptions,
    progress: &dyn Progress,
) -> Result<DeltaReport, PipelineError> {
    let started = Instant::now();
    check_image(image, target)?;
    if local.active.is_none() && !local.target_may_hold_image {
        return full_download(
            object,
            image,
            target,
            opts,
            progress,
            Fallback::NoLocalSource,
            started,
        );
    }
    let in_target = match local.target_may_hold_image {
        true => find_present_chunks(target, image.index, &opts.write, progress)?,
        false => Vec::new(),
    };
    let mut active = local.active;
    let plan = Plan::new(image.index, active.as_ref().map(|a| a.index), &in_target);
    let cost = plan.cost(image.index, opts.coalescing);
    let total = image.index.compressed_size();
    let saved = total.saturating_sub(cost.download);
    debug!(
        kept = cost.kept.chunks,
        copied = cost.copied.chunks,
        fetched = cost.fetched.chunks,
        download = cost.download,
        of = total,
        requests = cost.requests,
        "delta update planned"
    );
    if saved.saturating_mul(100) < opts.min_saving_percent.saturating_mul(total) {
        let fallback = Fallback::TooLittleToGain { saved, total };
        return full_download(object, image, target, opts, progress, fallback, started);
    }

    progress.start(
        &format!("writing {}", opts.write.target_name),
        Some(image.size),
    );
    progress.advance(cost.kept.bytes);
    let copies = plan.copies();
    let fetches = plan.fetches();
    let first = run_round(
        object,
        image.index,
        active.as_mut().map(|a| Copies {
            from: &mut a.disk,
            chunks: &copies,
        }),
        &fetches,
        target,
        opts,
        progress,
    );
    // A server that ignores Range requests shows it at the first range
    // request, whichever round makes it.
    let ranges_unsupported = |target: &mut D,
                              earlier: &pipeline::ScatterReport|
     -> Result<DeltaReport, PipelineError> {
        progress.finish();
        let fallback = Fallback::RangesUnsupported;
        let mut report = full_download(object, image, target, opts, progress, fallback, started)?;
        report.downloaded += earlier.downloaded;
        report.requests += earlier.requests;
        Ok(report)
    };
    let first = match first {
        Err(e) if is_unsupported(&e) => {
            return ranges_unsupported(target, &pipeline::ScatterReport::default())
        }
        other => other?,
    };
    // Chunks the active slot did not hold after all: fetched now, coalesced
    // among themselves.
    let second = match first.copy_failures.is_empty() {
        true => pipeline::ScatterReport::default(),
        false => {
            warn!(
                chunks = first.copy_failures.len(),
                "chunks of the active slot do not match its index; fetching them"
            );
            let second = run_round::<O, D, A>(
                object,
                image.index,
                None,
                &first.copy_failures,
                target,
                opts,
                progress,
            );
            match second {
                Err(e) if is_unsupported(&e) => return ranges_unsupported(target, &first),
                other => other?,
            }
        }
    };
    // The caller makes the slot bootable next: the image must be durable
    // before that.
    target
        .sync()
        .map_err(|e| PipelineError::Target(io::Error::new(e.kind(), format!("syncing: {e}"))))?;
    progress.finish();
    let verified = match opts.write.verify_readback {
        true => Some(pipeline::verify_image(
            target,
            image,
            &opts.write,
            progress,
        )?),
        false => None,
    };
    let report = DeltaReport {
        bytes: image.size,
        chunks: image.index.chunks.len(),
        kept: cost.kept,
        copied: first.copied,
        fetched: Tally {
            chunks: first.fetched.chunks + second.fetched.chunks,
            bytes: first.fetched.bytes + second.fetched.bytes,
        },
        downloaded: first.downloaded + second.downloaded,
        requests: first.requests + second.requests,
        refetched: first.copy_failures.len(),
        fallback: None,
        elapsed: started.elapsed(),
        verified,
    };
    debug!(
        kept = report.kept.chunks,
        copied = report.copied.chunks,
        fetched = report.fetched.chunks,
        refetched = report.refetched,
        downloaded = report.downloaded,
        requests = report.requests,
        "delta update written"
    );
    Ok(report)
}

/// Whether a round failed because the server does not serve ranges.
fn is_unsupported(error: &PipelineError) -> bool {
    matches!(error, PipelineError::Source(e) if e.kind() == io::ErrorKind::Unsupported)
}

/// One pass of [`write_chunks`]: the given copies, and `fetches` coalesced.
fn run_round<O: ImageObject, D: Disk, A: Disk + Send>(
    object: &O,
    index: &Index,
    copies: Option<Copies<'_, A>>,
    fetches: &[usize],
    target: &mut D,
    opts: &DeltaOptions,
    progress: &dyn Progress,
) -> Result<pipeline::ScatterReport, PipelineError> {
    let ranges = coalesce(index, fetches, opts.coalescing);
    write_chunks(
        index,
        copies,
        Fetches {
            ranges: &ranges,
            open: |start, end| object.open_range(start, end),
            parallel: opts.parallel_requests,
        },
        target,
        &opts.write,
        progress,
    )
}

/// The plain sequential download of the whole object. The report's
/// `downloaded` is what was read from the object, counted as it came.
fn full_download<O: ImageObject, D: Disk>(
    object: &O,
    image: &ImageSpec,
    target: &mut D,
    opts: &DeltaOptions,
    progress: &dyn Progress,
    fallback: Fallback,
    started: Instant,
) -> Result<DeltaReport, PipelineError> {
    debug!(reason = %fallback, "downloading the whole image");
    let mut source = Counted {
        inner: object.open().map_err(PipelineError::Source)?,
        bytes: 0,
    };
    let written = pipeline::write_image(&mut source, image, target, &opts.write, progress)?;
    let all = Tally {
        chunks: written.chunks,
        bytes: written.bytes,
    };
    Ok(DeltaReport {
        bytes: image.size,
        chunks: written.chunks,
        kept: Tally::default(),
        copied: Tally::default(),
        fetched: all,
        downloaded: source.bytes,
        // One GET; resumes after a dropped connection are not counted.
        requests: 1,
        refetched: 0,
        fallback: Some(fallback),
        elapsed: started.elapsed(),
        verified: written.verified,
    })
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}
