//! A channel in the bucket, seen from a device: its latest verified meta,
//! and the verified objects of a version.
//!
//! Layout (DESIGN §4): the pointer `<prefix>/<channel>.meta`, and immutable
//! per-version objects `<prefix>/<channel>/<version>-<id>.*`. The signature
//! is read from the version's own immutable `.meta.sig`, not from a second
//! mutable pointer: `publish` flips the one pointer last, so a device can
//! never pair a new meta with an old signature (or the reverse) while an
//! upload is in progress. A check that finds nothing new costs exactly two
//! small GETs.

use serde::Deserialize;
use uuid::Uuid;

use crate::delta::{self, DeltaOptions, DeltaReport, ImageObject, LocalChunks};
use crate::remote::{ObjectReader, Remote, RemoteError};
use abnix_core::pipeline::{write_image, ImageSpec, PipelineError, WriteOptions, WriteReport};
use abnix_core::progress::Progress;
use abnix_formats::digest::Expected;
use abnix_formats::disk::Disk;
use abnix_formats::index::{Index, IndexError};
use abnix_formats::meta::{
    object_name, verify_meta, Artifact, Meta, ObjectKind, SignedMeta, VerifyError,
};
use abnix_formats::sign::{TrustedKeys, MAX_SIGNATURE_FILE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("the channel's meta {key}: {reason}")]
    Unreadable { key: String, reason: String },
    #[error("the channel's meta: {0}")]
    Verify(#[from] VerifyError),
    #[error("object {object}: {reason}")]
    Object { object: String, reason: String },
    #[error("index {object}: {source}")]
    Index { object: String, source: IndexError },
    #[error("image {object}: {source}")]
    Image {
        object: String,
        source: PipelineError,
    },
}

impl ChannelError {
    /// The remote error behind this one, if any (network down, not found, ...).
    pub(crate) fn remote(&self) -> Option<&RemoteError> {
        match self {
            ChannelError::Remote(e) => Some(e),
            ChannelError::Image {
                source: PipelineError::Source(io),
                ..
            } => RemoteError::from_io(io),
            _ => None,
        }
    }
}

/// Just enough of an unverified meta to find its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct MetaLocator {
    pub(crate) version: u64,
    pub(crate) id: Uuid,
}

impl MetaLocator {
    /// The version and id named by a pointer's bytes, unverified: only fit
    /// to find objects, never to trust them.
    pub(crate) fn parse(meta: &[u8]) -> Result<MetaLocator, String> {
        serde_json::from_slice(meta)
            .map_err(|e| format!("no version and id to locate its signature ({e})"))
    }
}

/// What [`Channel::write_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFetch {
    pub written: WriteReport,
    /// How often the download broke off and resumed with a Range request.
    pub resumes: u32,
}

pub struct Channel {
    remote: Remote,
    keys: TrustedKeys,
}

impl Channel {
    pub fn new(remote: Remote, keys: TrustedKeys) -> Channel {
        Channel { remote, keys }
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    pub fn keys(&self) -> &TrustedKeys {
        &self.keys
    }

    /// The channel's latest version, verified against the trusted keys.
    pub fn latest(&self) -> Result<SignedMeta, ChannelError> {
        let key = self.remote.config().channel_meta_key();
        let meta = self
            .remote
            .get_bytes(&key, abnix_formats::meta::MAX_META_BYTES as u64)?;
        let locator = MetaLocator::parse(&meta).map_err(|reason| ChannelError::Unreadable {
            key: key.clone(),
            reason,
        })?;
        let sig_key = self.remote.config().object_key(&object_name(
            locator.version,
            locator.id,
            ObjectKind::MetaSig,
        ));
        let sig = match self
            .remote
            .get_bytes(&sig_key, MAX_SIGNATURE_FILE_BYTES as u64)
        {
            // A missing signature is a verification failure, not a network one.
            Err(RemoteError::NotFound { .. }) => Vec::new(),
            other => other?,
        };
        Ok(verify_meta(&meta, &sig, &self.keys)?)
    }

    /// The meta of an older version, from its own immutable objects
    /// (`<version>-<id>.meta` and `.meta.sig`), verified against the
    /// trusted keys and checked to be that version.
    pub(crate) fn version_meta(&self, version: u64, id: Uuid) -> Result<Meta, ChannelError> {
        let config = self.remote.config();
        let key = config.object_key(&object_name(version, id, ObjectKind::Meta));
        let meta = self
            .remote
            .get_bytes(&key, abnix_formats::meta::MAX_META_BYTES as u64)?;
        let sig_key = config.object_key(&object_name(version, id, ObjectKind::MetaSig));
        let sig = self
            .remote
            .get_bytes(&sig_key, MAX_SIGNATURE_FILE_BYTES as u64)?;
        let signed = verify_meta(&meta, &sig, &self.keys)?;
        if (signed.meta().version, signed.meta().id) != (version, id) {
            return Err(ChannelError::Unreadable {
                key,
                reason: format!(
                    "it is version {} ({}), not {version} ({id})",
                    signed.meta().version,
                    signed.meta().id
                ),
            });
        }
        Ok(signed.meta().clone())
    }

    /// The chunk index of an older version (the one in the active slot, for
    /// a delta update), verified through its meta.
    pub(crate) fn version_index(&self, version: u64, id: Uuid) -> Result<Index, ChannelError> {
        self.index(&self.version_meta(version, id)?)
    }

    /// The version's chunk index, checked against the meta.
    pub fn index(&self, meta: &Meta) -> Result<Index, ChannelError> {
        let object = &meta.index.object;
        let key = self.remote.config().object_key(object);
        let bytes = self.remote.get_bytes(&key, meta.index.size)?;
        Expected::new(object.as_str(), meta.index.size, meta.index.sha256)
            .check(&bytes)
            .map_err(|e| ChannelError::Object {
                object: object.clone(),
                reason: e.to_string(),
            })?;
        let index = Index::parse(&bytes).map_err(|source| ChannelError::Index {
            object: object.clone(),
            source,
        })?;
        if index.image_size() != meta.image.size
            || index.compressed_size() != meta.image.compressed_size
        {
            return Err(ChannelError::Object {
                object: object.clone(),
                reason: format!(
                    "describes {} bytes ({} compressed), the meta says {} ({})",
                    index.image_size(),
                    index.compressed_size(),
                    meta.image.size,
                    meta.image.compressed_size
                ),
            });
        }
        Ok(index)
    }

    /// Streams the version's image into `target` (a slot), verifying every
    /// chunk against the signed index as it arrives; the whole image's
    /// SHA-256 is checked on read-back when `opts.verify_readback` is set.
    /// A dropped connection resumes where it broke off.
    pub fn write_image<D: Disk>(
        &self,
        meta: &Meta,
        index: &Index,
        target: &mut D,
        opts: &WriteOptions,
        progress: &dyn Progress,
    ) -> Result<ImageFetch, ChannelError> {
        let object = &meta.image.object;
        let key = self.remote.config().object_key(object);
        let mut reader = self
            .remote
            .open_reader(&key, 0, Some(meta.image.compressed_size))?;
        let spec = image_spec(meta, index);
        // Lent, not given, so its resume count can be read afterwards.
        let written =
            write_image(&mut reader, &spec, target, opts, progress).map_err(|source| {
                ChannelError::Image {
                    object: object.clone(),
                    source,
                }
            })?;
        Ok(ImageFetch {
            written,
            resumes: reader.resumes(),
        })
    }

    /// Like [`Channel::write_image`], but downloads only the chunks that
    /// `local` does not have (see [`crate::delta`]); falls back to the whole
    /// download by itself, and says why in the report.
    pub fn write_image_delta<D: Disk, A: Disk + Send>(
        &self,
        meta: &Meta,
        index: &Index,
        target: &mut D,
        local: LocalChunks<'_, A>,
        opts: &DeltaOptions,
        progress: &dyn Progress,
    ) -> Result<DeltaReport, ChannelError> {
        let object = &meta.image.object;
        let image = RemoteImage {
            remote: &self.remote,
            key: self.remote.config().object_key(object),
            len: meta.image.compressed_size,
        };
        let spec = image_spec(meta, index);
        delta::write_image_delta(&image, &spec, target, local, opts, progress).map_err(|source| {
            ChannelError::Image {
                object: object.clone(),
                source,
            }
        })
    }

    /// A streaming reader of a kernel or initrd, refused unless the object
    /// has the meta's size; its content is checked by whoever writes it
    /// ([`abnix_core::boot::BootFiles::of_version`]).
    pub fn open_object(&self, artifact: &Artifact) -> Result<ObjectReader, ChannelError> {
        let key = self.remote.config().object_key(&artifact.object);
        Ok(self.remote.open_reader(&key, 0, Some(artifact.size))?)
    }
}

/// What the pipeline checks `meta`'s image against: its signed index, size
/// and SHA-256.
pub(crate) fn image_spec<'a>(meta: &Meta, index: &'a Index) -> ImageSpec<'a> {
    ImageSpec {
        index,
        size: meta.image.size,
        sha256: meta.image.sha256,
    }
}

/// A version's image object in the bucket.
struct RemoteImage<'a> {
    remote: &'a Remote,
    key: String,
    len: u64,
}

impl ImageObject for RemoteImage<'_> {
    type Reader = ObjectReader;

    fn open(&self) -> std::io::Result<ObjectReader> {
        self.remote
            .open_reader(&self.key, 0, Some(self.len))
            .map_err(std::io::Error::other)
    }

    fn open_range(&self, start: u64, end: u64) -> std::io::Result<ObjectReader> {
        self.remote
            .open_range(&self.key, start, end, self.len)
            .map_err(|error| {
                let kind = match error {
                    RemoteError::RangeIgnored { .. } => std::io::ErrorKind::Unsupported,
                    _ => std::io::ErrorKind::Other,
                };
                std::io::Error::new(kind, error)
            })
    }
}
