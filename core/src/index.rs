//! The chunk index of an image (DESIGN §3).
//!
//! The image object is a sequence of independent zstd frames, one per
//! content-defined chunk of the raw image. The index lists the chunks in
//! order; offsets are implied by the lengths before them.

use crate::digest::Digest;

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

impl Index {
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
}
