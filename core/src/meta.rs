//! The meta of a version (DESIGN §3): what a device fetches first, verifies
//! against its trusted keys, and then trusts for everything else.
//!
//! The types below are the contract other modules build on; parsing,
//! validation and serialization live here too.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;

/// The meta format this code writes and the only one it accepts.
pub const FORMAT_VERSION: u32 = 1;

/// A meta larger than this is refused before it is parsed.
pub const MAX_META_BYTES: usize = 64 * 1024;

/// One version of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Format version of the meta itself ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Strictly increasing per channel: the anti-rollback order.
    pub version: u64,
    /// The image filesystem's UUID; the root is mounted by `UUID=<id>`.
    pub id: Uuid,
    /// Human text, e.g. "kiosk 2026-11-22 (firefox 140)".
    pub label: String,
    pub image: Image,
    /// The chunk index of the image (see [`crate::index`]).
    pub index: Artifact,
    pub kernel: Artifact,
    pub initrd: Artifact,
    /// Kernel command line of the version, without `abnix.slot=` (boot
    /// control adds that).
    pub cmdline: String,
}

/// An object of a version: its file name inside the bundle directory, which
/// is also its key suffix in the bucket (`<prefix>/<channel>/<object>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub object: String,
    pub size: u64,
    pub sha256: Digest,
}

/// The root filesystem image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The compressed object: independent zstd frames, one per chunk.
    pub object: String,
    /// Size of the compressed object.
    pub compressed_size: u64,
    /// Size of the raw image, i.e. the bytes written into a slot.
    pub size: u64,
    /// SHA-256 of the raw image.
    pub sha256: Digest,
    /// Filesystem type of the raw image.
    pub fs: FsType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Erofs,
}
