//! Content-defined chunking of an image (DESIGN §3).
//!
//! Chunk boundaries depend on the bytes around them (FastCDC 2020, the
//! `fastcdc` crate's `v2020` module), not on offsets, so an insertion early in
//! an image shifts only the chunks it touches: later versions of a host share
//! most chunks, which delta updates can reuse. Streaming: memory is one
//! `max`-sized buffer plus the chunk being returned, whatever the image size.

use std::io::{self, Read};

use fastcdc::v2020::{self, StreamCDC};

use crate::index::MAX_CHUNK_LEN;

/// Minimum, average (target) and maximum chunk length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    /// 16 KiB / 64 KiB / 256 KiB, chosen for delta updates (docs/delta.md,
    /// `bench/delta.sh`). Measured on two erofs images of 725 MB of real
    /// files (18 store paths) where one store path of 54 MB changed, as the
    /// Nix builder makes them, zstd level 9; "update" is what a delta update
    /// downloads (gaps of up to 32 KiB read through) and in how many
    /// requests, against the full compressed image:
    ///
    /// | min/avg/max     | chunks | index   | image.zst | ratio | update         |
    /// |-----------------|--------|---------|-----------|-------|----------------|
    /// | 8K/32K/128K     | 16032  | 626 KiB | 268.8 MiB | 2.65  | 4.4%, 276 req  |
    /// | 16K/64K/256K    | 8002   | 313 KiB | 262.2 MiB | 2.72  | 6.7%, 241 req  |
    /// | 32K/128K/512K   | 4025   | 157 KiB | 256.0 MiB | 2.79  | 10.6%, 197 req |
    /// | 64K/256K/1M     | 2035   | 80 KiB  | 252.3 MiB | 2.83  | 16.5%, 145 req |
    ///
    /// A changed file costs at least a chunk of download, and so does every
    /// metadata block the change touches (inode numbers shift after it), so
    /// the delta grows with the chunk size; zstd compresses small frames
    /// slightly worse. 16/64/256 K halves the update of 32/128/512 K for
    /// 2.4% more on a full download; going down to 8/32/128 K saves another
    /// 2.3 points of the image for 2.5% more on every full download
    /// and twice the index.
    fn default() -> Self {
        ChunkParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("chunk sizes min {min} / avg {avg} / max {max} are invalid: {reason}")]
pub struct BadChunkParams {
    min: u32,
    avg: u32,
    max: u32,
    reason: String,
}

impl ChunkParams {
    /// Checks the bounds fastcdc asserts on (it would panic) and that chunks
    /// fit the index's limit.
    pub fn check(&self) -> Result<(), BadChunkParams> {
        let ChunkParams { min, avg, max } = *self;
        let reason = if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min) {
            format!(
                "min must be in {}..={}",
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX
            )
        } else if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg) {
            format!(
                "avg must be in {}..={}",
                v2020::AVERAGE_MIN,
                v2020::AVERAGE_MAX
            )
        } else if !(v2020::MAXIMUM_MIN..=MAX_CHUNK_LEN.min(v2020::MAXIMUM_MAX)).contains(&max) {
            format!("max must be in {}..={}", v2020::MAXIMUM_MIN, MAX_CHUNK_LEN)
        } else if !(min <= avg && avg <= max) {
            "they must satisfy min <= avg <= max".into()
        } else {
            return Ok(());
        };
        Err(BadChunkParams {
            min,
            avg,
            max,
            reason,
        })
    }
}

/// A chunk of the input: its offset and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Iterator over the chunks of a reader, in order; see [`chunks`].
pub struct Chunks<R: Read> {
    inner: StreamCDC<R>,
    failed: bool,
}

/// Cuts `reader` into content-defined chunks. Each chunk is between
/// `params.min` and `params.max` bytes, except a shorter last one. The
/// iterator ends after the first I/O error.
pub fn chunks<R: Read>(reader: R, params: ChunkParams) -> Result<Chunks<R>, BadChunkParams> {
    params.check()?;
    Ok(Chunks {
        inner: StreamCDC::new(reader, params.min, params.avg, params.max),
        failed: false,
    })
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = io::Result<RawChunk>;

    fn next(&mut self) -> Option<io::Result<RawChunk>> {
        if self.failed {
            return None;
        }
        match self.inner.next()? {
            Ok(chunk) => Some(Ok(RawChunk {
                offset: chunk.offset,
                data: chunk.data,
            })),
            Err(err) => {
                self.failed = true;
                Some(Err(err.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use rand::{RngExt, SeedableRng};
    use std::collections::HashSet;

    const SMALL: ChunkParams = ChunkParams {
        min: 4096,
        avg: 16384,
        max: 65536,
    };

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill(&mut data[..]);
        data
    }

    fn cut(data: &[u8], params: ChunkParams) -> Vec<RawChunk> {
        chunks(data, params)
            .unwrap()
            .collect::<io::Result<_>>()
            .unwrap()
    }

    #[test]
    fn chunks_cover_the_input_in_order_within_bounds() {
        let data = random_bytes(2_000_000, 1);
        let chunks = cut(&data, SMALL);
        let mut offset = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.offset, offset);
            assert!(chunk.data.len() <= SMALL.max as usize);
            if i + 1 < chunks.len() {
                assert!(chunk.data.len() >= SMALL.min as usize);
            }
            offset += chunk.data.len() as u64;
        }
        assert_eq!(offset, data.len() as u64);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, data);
        // Roughly the average: not a fixed-size cutter in disguise.
        let n = chunks.len();
        assert!((60..=250).contains(&n), "{n} chunks");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(cut(&[], SMALL).is_empty());
    }

    #[test]
    fn inserting_bytes_at_the_start_keeps_most_chunks() {
        let data = random_bytes(4_000_000, 2);
        let shifted = [random_bytes(1000, 3), data.clone()].concat();
        let hashes = |d: &[u8]| -> HashSet<Digest> {
            cut(d, SMALL).iter().map(|c| Digest::of(&c.data)).collect()
        };
        let before = hashes(&data);
        let after = hashes(&shifted);
        let shared = before.intersection(&after).count();
        assert!(
            shared * 100 >= before.len() * 95,
            "only {shared} of {} chunks survive the insertion",
            before.len()
        );
    }

    #[test]
    fn default_params_are_valid() {
        ChunkParams::default().check().unwrap();
        SMALL.check().unwrap();
    }

    #[test]
    fn bad_params_are_refused_not_panicked_on() {
        let bad = [
            (ChunkParams { min: 1, ..SMALL }, "min must be"),
            (ChunkParams { avg: 10, ..SMALL }, "avg must be"),
            (
                ChunkParams {
                    max: MAX_CHUNK_LEN + 1,
                    ..SMALL
                },
                "max must be",
            ),
            (
                ChunkParams {
                    min: 32768,
                    avg: 16384,
                    max: 65536,
                },
                "min <= avg <= max",
            ),
        ];
        for (params, reason) in bad {
            let err = chunks(&[][..], params).err().expect("refused");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn read_error_ends_the_iteration() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut it = chunks(Failing, SMALL).unwrap();
        assert_eq!(it.next().unwrap().unwrap_err().to_string(), "disk on fire");
        assert!(it.next().is_none());
    }
}
