//! The chunk index of an image (DESIGN §3).
//!
//! The image object is a sequence of independent zstd frames, one per
//! content-defined chunk of the raw image. The index lists the chunks in
//! order; offsets are implied by the lengths before them.
//!
//! # Binary format (version 1), all integers little endian
//!
//! ```text
//! offset  size  field
//!      0     8  magic "ABNIXIDX"
//!      8     4  format version (u32) = 1
//!     12     4  chunk count N (u32)
//!     16  40*N  N chunk records, in image order:
//!                 +0   4  raw length of the chunk (u32, 1..=MAX_CHUNK_LEN)
//!                 +4   4  length of its zstd frame (u32, 1..=zstd's bound)
//!                 +8  32  SHA-256 of the raw chunk
//! ```
//!
//! The file is exactly `16 + 40 * N` bytes. The raw offset of a chunk is the
//! sum of the raw lengths before it, and likewise for the frame's offset in
//! the image object. The index is itself named with its size and SHA-256 in
//! the signed meta, so it needs no checksum of its own.

use crate::digest::Digest;

/// Identifies an index file.
pub const MAGIC: [u8; 8] = *b"ABNIXIDX";

/// The index format this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Longest chunk: the largest maximum the chunker supports (fastcdc's
/// `MAXIMUM_MAX`, 16 MiB). A reader may allocate this much per chunk.
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;

const HEADER_LEN: usize = 16;
const RECORD_LEN: usize = 40;

/// One chunk of the raw image and its frame in the compressed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the chunk in the raw image.
    pub offset: u64,
    /// Length of the chunk in the raw image.
    pub len: u32,
    /// Offset of the chunk's zstd frame in the compressed object.
    pub compressed_offset: u64,
    /// Length of the chunk's zstd frame.
    pub compressed_len: u32,
    /// SHA-256 of the raw chunk.
    pub sha256: Digest,
}

/// All chunks of an image, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    pub chunks: Vec<Chunk>,
}

/// Why an index was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("index is {len} bytes, shorter than its 16-byte header")]
    TooShort { len: usize },
    #[error("not an abnix index (magic {found:02x?}, expected \"ABNIXIDX\")")]
    BadMagic { found: [u8; 8] },
    #[error("index format {found} is not supported (this abnix reads format {supported})")]
    UnknownFormat { found: u32, supported: u32 },
    #[error(
        "index declares {count} chunks, which needs {expected} bytes, but it is {actual} bytes"
    )]
    LengthMismatch {
        count: u32,
        expected: u64,
        actual: usize,
    },
    #[error("chunk {chunk} has raw length {len}, expected 1..={max}")]
    BadChunkLength { chunk: usize, len: u32, max: u32 },
    #[error("chunk {chunk} has frame length {len}, expected 1..={max} for a {raw}-byte chunk")]
    BadFrameLength {
        chunk: usize,
        len: u32,
        raw: u32,
        max: u64,
    },
}

/// Largest zstd frame of a `raw`-byte input (ZSTD_COMPRESSBOUND), so a
/// reader's frame buffer is bounded too.
fn max_frame_len(raw: u32) -> u64 {
    zstd::zstd_safe::compress_bound(raw as usize) as u64
}

impl Index {
    /// Appends a chunk after the last one, computing its offsets.
    pub fn push(&mut self, len: u32, compressed_len: u32, sha256: Digest) {
        let chunk = Chunk {
            offset: self.image_size(),
            len,
            compressed_offset: self.compressed_size(),
            compressed_len,
            sha256,
        };
        self.chunks.push(chunk);
    }

    /// Size of the raw image.
    pub fn image_size(&self) -> u64 {
        self.chunks
            .last()
            .map_or(0, |c| c.offset + u64::from(c.len))
    }

    /// Size of the compressed object.
    pub fn compressed_size(&self) -> u64 {
        self.chunks
            .last()
            .map_or(0, |c| c.compressed_offset + u64::from(c.compressed_len))
    }

    /// The binary form. Offsets are not stored: they are implied by the
    /// lengths, which is what [`Index::push`] and [`Index::parse`] produce.
    pub fn to_bytes(&self) -> Vec<u8> {
        let count = u32::try_from(self.chunks.len()).expect("fewer than 2^32 chunks");
        let mut out = Vec::with_capacity(HEADER_LEN + RECORD_LEN * self.chunks.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk.len.to_le_bytes());
            out.extend_from_slice(&chunk.compressed_len.to_le_bytes());
            out.extend_from_slice(&chunk.sha256.0);
        }
        out
    }

    /// Parses and checks an index: the header, the byte length against the
    /// chunk count, and every chunk's lengths against their bounds. The
    /// offsets cannot overflow: at most 2^32 chunks of at most 2^24 bytes
    /// (frames: slightly more) sum to well below 2^64.
    pub fn parse(bytes: &[u8]) -> Result<Index, IndexError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(IndexError::TooShort { len: bytes.len() })?;
        let magic: [u8; 8] = header[0..8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(IndexError::BadMagic { found: magic });
        }
        let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if format != FORMAT_VERSION {
            return Err(IndexError::UnknownFormat {
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        let count = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        let expected = HEADER_LEN as u64 + RECORD_LEN as u64 * u64::from(count);
        if bytes.len() as u64 != expected {
            return Err(IndexError::LengthMismatch {
                count,
                expected,
                actual: bytes.len(),
            });
        }

        let mut index = Index {
            chunks: Vec::with_capacity(count as usize),
        };
        for (i, record) in bytes[HEADER_LEN..].chunks_exact(RECORD_LEN).enumerate() {
            let len = u32::from_le_bytes(record[0..4].try_into().expect("4 bytes"));
            let compressed_len = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
            let sha256 = Digest(record[8..40].try_into().expect("32 bytes"));
            if len == 0 || len > MAX_CHUNK_LEN {
                return Err(IndexError::BadChunkLength {
                    chunk: i,
                    len,
                    max: MAX_CHUNK_LEN,
                });
            }
            let max = max_frame_len(len);
            if compressed_len == 0 || u64::from(compressed_len) > max {
                return Err(IndexError::BadFrameLength {
                    chunk: i,
                    len: compressed_len,
                    raw: len,
                    max,
                });
            }
            index.push(len, compressed_len, sha256);
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut index = Index::default();
        index.push(65536, 1200, Digest::of(b"one"));
        index.push(300_000, 150_000, Digest::of(b"two"));
        index.push(7, 20, Digest::of(b"three"));
        index
    }

    fn with_record(count: u32, records: &[(u32, u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&count.to_le_bytes());
        for (len, clen) in records {
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&clen.to_le_bytes());
            bytes.extend_from_slice(&[0xab; 32]);
        }
        bytes
    }

    #[test]
    fn push_computes_offsets() {
        let index = sample();
        let offsets: Vec<(u64, u64)> = index
            .chunks
            .iter()
            .map(|c| (c.offset, c.compressed_offset))
            .collect();
        assert_eq!(offsets, [(0, 0), (65536, 1200), (365_536, 151_200)]);
        assert_eq!(index.image_size(), 365_543);
        assert_eq!(index.compressed_size(), 151_220);
    }

    #[test]
    fn round_trip() {
        let index = sample();
        let bytes = index.to_bytes();
        assert_eq!(bytes.len(), 16 + 3 * 40);
        assert_eq!(&bytes[..8], b"ABNIXIDX");
        assert_eq!(&bytes[8..16], &[1, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &[0, 0, 1, 0, 0xb0, 0x04, 0, 0]);
        assert_eq!(Index::parse(&bytes).unwrap(), index);
        let empty = Index::default();
        assert_eq!(Index::parse(&empty.to_bytes()).unwrap(), empty);
    }

    #[test]
    fn largest_chunk_and_frame_are_accepted() {
        let max_frame = u32::try_from(max_frame_len(MAX_CHUNK_LEN)).unwrap();
        let index = Index::parse(&with_record(1, &[(MAX_CHUNK_LEN, max_frame)])).unwrap();
        assert_eq!(index.image_size(), u64::from(MAX_CHUNK_LEN));
    }

    #[test]
    fn short_header_is_refused() {
        for len in [0, 8, 15] {
            assert_eq!(
                Index::parse(&sample().to_bytes()[..len]),
                Err(IndexError::TooShort { len })
            );
        }
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut bytes = sample().to_bytes();
        bytes[0] = b'X';
        let err = Index::parse(&bytes).unwrap_err();
        assert_eq!(
            err,
            IndexError::BadMagic {
                found: *b"XBNIXIDX"
            }
        );
        assert!(err.to_string().starts_with("not an abnix index"), "{err}");
    }

    #[test]
    fn unknown_format_is_refused() {
        let mut bytes = sample().to_bytes();
        bytes[8] = 2;
        assert_eq!(
            Index::parse(&bytes),
            Err(IndexError::UnknownFormat {
                found: 2,
                supported: 1
            })
        );
    }

    #[test]
    fn count_must_match_length() {
        let bytes = sample().to_bytes();
        for (data, count) in [
            (&bytes[..bytes.len() - 1], 3),
            (&bytes[..bytes.len() - 40], 3),
            (&[bytes.as_slice(), &[0]].concat()[..], 3),
        ] {
            assert_eq!(
                Index::parse(data),
                Err(IndexError::LengthMismatch {
                    count,
                    expected: 136,
                    actual: data.len()
                })
            );
        }
        // A huge count with a tiny body is refused before any allocation.
        assert_eq!(
            Index::parse(&with_record(u32::MAX, &[])),
            Err(IndexError::LengthMismatch {
                count: u32::MAX,
                expected: 16 + 40 * u64::from(u32::MAX),
                actual: 16
            })
        );
    }

    #[test]
    fn chunk_lengths_are_bounded() {
        for len in [0, MAX_CHUNK_LEN + 1, u32::MAX] {
            assert_eq!(
                Index::parse(&with_record(2, &[(10, 20), (len, 20)])),
                Err(IndexError::BadChunkLength {
                    chunk: 1,
                    len,
                    max: MAX_CHUNK_LEN
                })
            );
        }
        let max = max_frame_len(1000);
        for len in [0, max as u32 + 1, u32::MAX] {
            let err = Index::parse(&with_record(1, &[(1000, len)])).unwrap_err();
            assert_eq!(
                err,
                IndexError::BadFrameLength {
                    chunk: 0,
                    len,
                    raw: 1000,
                    max
                }
            );
        }
    }
}
