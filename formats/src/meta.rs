//! The meta of a version (DESIGN §3): what a device fetches first, verifies
//! against its trusted keys, and then trusts for everything else.
//!
//! A meta is pretty-printed JSON ([`Meta::to_bytes`]); the signature covers
//! its exact bytes, so a device verifies before it parses
//! ([`verify_meta`]). Compatibility: fields a parser does not know are
//! ignored, so a new optional field can be added without breaking deployed
//! devices; a change that old devices must not misread (a field removed,
//! renamed or reinterpreted) bumps [`FORMAT_VERSION`], which old devices
//! refuse.
//!
//! Every field is checked on parse (`Meta::validate`): object names are
//! plain file names (they become paths in a bundle directory and keys in the
//! bucket), texts are bounded and free of control characters, sizes are
//! positive.
//!
//! Format 2 (format 1 metas are refused, not misread) binds what a device
//! must match into the signed bytes: the architecture the version is built
//! for, and, once `publish` signs it for a channel, the channel, when it
//! was signed and when it expires, and the keys it declares revoked
//! ([`Publication`]). A meta as `pack` signs it (a bundle's) names no
//! channel: the installer takes it, no device's update does.
//!
//! Format 3 is format 2 with a staged rollout (`published.rollout`,
//! [`Rollout`]). A meta is written in the lowest format that carries it:
//! only a meta with a rollout is format 3, so devices that read only format
//! 2 refuse a staged or halted version instead of installing it at once,
//! and take every other (DESIGN §3).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::digest::Digest;
use crate::layout::Arch;
use crate::rollout::{Rollout, MAX_ROLLOUT_SECS};
use crate::sign::{signature_file, PublicKey, SecretKey, Signature, SignatureError, TrustedKeys};

/// The meta format of a meta without a rollout. 2: the architecture and
/// the publication (channel, signing and expiry times, revoked keys) are
/// signed.
pub const FORMAT_VERSION: u32 = 2;

/// The meta format of a meta whose publication carries a rollout: format 2
/// plus `published.rollout`. This code reads both.
pub const ROLLOUT_FORMAT_VERSION: u32 = 3;

/// A meta larger than this is refused before it is parsed.
pub const MAX_META_BYTES: usize = 64 * 1024;

/// Longest object name and label, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 200;

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
    /// The architecture of the machines the version is built for.
    pub arch: Arch,
    /// Where the version is published, signed by `publish`; `None` in a
    /// bundle as `pack` signs it, which no device installs as an update.
    pub published: Option<Publication>,
    pub image: Image,
    /// The chunk index of the image (see [`crate::index`]).
    pub index: Artifact,
    pub kernel: Artifact,
    pub initrd: Artifact,
    /// Kernel command line of the version, without `abnix.slot=` (boot
    /// control adds that).
    pub cmdline: String,
}

/// A version as published on a channel: which channel, when the meta was
/// signed for it and until when a device may take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub channel: String,
    /// When `publish` signed it. A device never takes the clock to be
    /// earlier than the newest signing time it has verified.
    pub signed_at: DateTime<Utc>,
    /// After this a device refuses the meta (the channel is stale) and keeps
    /// running what it has; `publish --resign` signs the same version again
    /// with a later expiry.
    pub expires: DateTime<Utc>,
    /// Public keys (`name:base64`) this meta declares revoked. Devices
    /// honour it only from a meta signed by one of their recovery keys
    /// (docs/security.md).
    pub revoked_keys: Vec<String>,
    /// A staged rollout: hosts install only once it has reached them.
    /// Present only in format 3, absent (every host at once) in format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl Publication {
    /// The format of a meta carrying this publication: the lowest that
    /// carries it (see [`ROLLOUT_FORMAT_VERSION`]).
    pub fn format(published: Option<&Publication>) -> u32 {
        match published.is_some_and(|p| p.rollout.is_some()) {
            true => ROLLOUT_FORMAT_VERSION,
            false => FORMAT_VERSION,
        }
    }

    /// Whether the meta has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires
    }

    /// The revoked keys, parsed (they were checked when the meta was).
    pub fn revoked(&self) -> Vec<PublicKey> {
        self.revoked_keys
            .iter()
            .filter_map(|key| PublicKey::parse(key).ok())
            .collect()
    }
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

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsType::Ext4 => "ext4",
            FsType::Erofs => "erofs",
        })
    }
}

/// Why a meta was refused. Field names are JSON paths such as `image.sha256`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("meta is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("meta is not valid JSON (line {line}, column {column}): {reason}")]
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("meta format {found} is not supported (this abnix reads formats 2 and 3)")]
    UnknownFormat { found: u64 },
    #[error("meta has no field {0:?}")]
    MissingField(String),
    #[error("meta field {field:?} is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: &str, reason: impl fmt::Display) -> MetaError {
    MetaError::Invalid {
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads one field of a JSON object as `T`, naming it by its path in errors.
fn field<T: DeserializeOwned>(obj: &Map<String, Value>, path: &str) -> Result<T, MetaError> {
    let name = path.rsplit('.').next().unwrap_or(path);
    let value = obj
        .get(name)
        .ok_or_else(|| MetaError::MissingField(path.to_owned()))?;
    T::deserialize(value).map_err(|e| invalid(path, e))
}

/// Reads a field that must itself be a JSON object.
fn object<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
) -> Result<&'a Map<String, Value>, MetaError> {
    let name = path.rsplit('.').next().unwrap_or(path);
    obj.get(name)
        .ok_or_else(|| MetaError::MissingField(path.to_owned()))?
        .as_object()
        .ok_or_else(|| invalid(path, "not a JSON object"))
}

fn artifact(obj: &Map<String, Value>, path: &str) -> Result<Artifact, MetaError> {
    let obj = object(obj, path)?;
    Ok(Artifact {
        object: field(obj, &format!("{path}.object"))?,
        size: field(obj, &format!("{path}.size"))?,
        sha256: field(obj, &format!("{path}.sha256"))?,
    })
}

fn publication(obj: &Map<String, Value>, format: u32) -> Result<Option<Publication>, MetaError> {
    if obj.get("published").is_some_and(Value::is_null) {
        return Ok(None);
    }
    let obj = object(obj, "published")?;
    // Format 2 knows no rollout: a field of that name is ignored like any
    // unknown field, as a format-2 device ignores it.
    let rollout = match format {
        ROLLOUT_FORMAT_VERSION => {
            let rollout = object(obj, "published.rollout")?;
            Some(Rollout {
                start: field(rollout, "published.rollout.start")?,
                over_secs: field(rollout, "published.rollout.over_secs")?,
                halted_at: field(rollout, "published.rollout.halted_at")?,
            })
        }
        _ => None,
    };
    Ok(Some(Publication {
        channel: field(obj, "published.channel")?,
        signed_at: field(obj, "published.signed_at")?,
        expires: field(obj, "published.expires")?,
        revoked_keys: field(obj, "published.revoked_keys")?,
        rollout,
    }))
}

/// Checks a channel name: a path component of bucket keys, on one line.
pub(crate) fn check_channel(channel: &str) -> Result<(), String> {
    if channel.is_empty()
        || channel.len() > MAX_NAME_BYTES
        || channel.contains('/')
        || channel.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "{:?} must be 1 to 200 bytes, without '/', spaces or control characters",
            truncated(channel)
        ))
    } else {
        Ok(())
    }
}

fn image(obj: &Map<String, Value>) -> Result<Image, MetaError> {
    let obj = object(obj, "image")?;
    Ok(Image {
        object: field(obj, "image.object")?,
        compressed_size: field(obj, "image.compressed_size")?,
        size: field(obj, "image.size")?,
        sha256: field(obj, "image.sha256")?,
        fs: field(obj, "image.fs")?,
    })
}

/// Checks an object name: a plain file name, safe as a path component in a
/// bundle directory and as the last part of a bucket key.
pub(crate) fn check_object_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 200 bytes"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(format!("{problem}: {:?}", truncated(name)))
}

/// Checks a label: human text on one line, bounded.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.len() > MAX_NAME_BYTES {
        Err(format!("it is {} bytes, more than 200", label.len()))
    } else if label.chars().any(char::is_control) {
        Err(format!(
            "it contains a control character: {:?}",
            truncated(label)
        ))
    } else {
        Ok(())
    }
}

/// Checks a kernel command line: one line (boot entries are line-based), and
/// without `abnix.slot=`, which boot control adds per slot.
pub fn check_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.chars().any(char::is_control) {
        Err("it must be a single line without control characters".into())
    } else if cmdline
        .split_ascii_whitespace()
        .any(|arg| arg.starts_with("abnix.slot="))
    {
        Err("it must not contain abnix.slot= (boot control adds it)".into())
    } else {
        Ok(())
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(80).collect()
}

impl Meta {
    /// The meta as pretty JSON plus a final newline. Deterministic: fields in
    /// declaration order, so packing the same version twice gives the same
    /// bytes (and the same signature).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("a Meta always serializes (no maps, no floats)");
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates a meta. Checks the size bound first, then the
    /// JSON syntax, the format version, every field's presence and type, and
    /// `Meta::validate`. Unknown fields are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Meta, MetaError> {
        if bytes.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge {
                size: bytes.len(),
                max: MAX_META_BYTES,
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| MetaError::Malformed {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("(top level)", "not a JSON object"))?;
        // The format comes first: a newer format may have changed any other
        // field, so its errors would mislead.
        let format: u64 = field(obj, "format")?;
        let format = supported_format(format)?;
        let meta = Meta {
            format,
            version: field(obj, "version")?,
            id: field(obj, "id")?,
            label: field(obj, "label")?,
            arch: field(obj, "arch")?,
            published: publication(obj, format)?,
            image: image(obj)?,
            index: artifact(obj, "index")?,
            kernel: artifact(obj, "kernel")?,
            initrd: artifact(obj, "initrd")?,
            cmdline: field(obj, "cmdline")?,
        };
        meta.validate()?;
        Ok(meta)
    }

    /// The names of every object of the version: its image, index, kernel
    /// and initrd, then its meta and signature file.
    pub fn object_names(&self) -> [String; 6] {
        [
            self.image.object.clone(),
            self.index.object.clone(),
            self.kernel.object.clone(),
            self.initrd.object.clone(),
            object_name(self.version, self.id, ObjectKind::Meta),
            object_name(self.version, self.id, ObjectKind::MetaSig),
        ]
    }

    /// Checks the values: what [`Meta::parse`] enforces, also run by `pack`
    /// before it signs.
    fn validate(&self) -> Result<(), MetaError> {
        supported_format(self.format.into())?;
        let format = Publication::format(self.published.as_ref());
        if self.format != format {
            return Err(invalid(
                "format",
                format!(
                    "must be {format} for a meta with{} a rollout",
                    match format {
                        ROLLOUT_FORMAT_VERSION => "",
                        _ => "out",
                    }
                ),
            ));
        }
        if self.version == 0 {
            return Err(invalid("version", "must be at least 1"));
        }
        if self.id.is_nil() {
            return Err(invalid("id", "must not be the nil UUID"));
        }
        check_label(&self.label).map_err(|r| invalid("label", r))?;
        check_cmdline(&self.cmdline).map_err(|r| invalid("cmdline", r))?;
        if let Some(published) = &self.published {
            check_channel(&published.channel).map_err(|r| invalid("published.channel", r))?;
            if published.expires <= published.signed_at {
                return Err(invalid(
                    "published.expires",
                    format!("{} is not after signed_at", published.expires),
                ));
            }
            for (i, key) in published.revoked_keys.iter().enumerate() {
                PublicKey::parse(key)
                    .map_err(|e| invalid(&format!("published.revoked_keys[{i}]"), e))?;
            }
            if let Some(rollout) = &published.rollout {
                if rollout.over_secs > MAX_ROLLOUT_SECS {
                    return Err(invalid(
                        "published.rollout.over_secs",
                        format!("{} is more than a year", rollout.over_secs),
                    ));
                }
            }
        }
        let objects = [
            ("image", &self.image.object, self.image.compressed_size),
            ("index", &self.index.object, self.index.size),
            ("kernel", &self.kernel.object, self.kernel.size),
            ("initrd", &self.initrd.object, self.initrd.size),
        ];
        for (name, object, size) in objects {
            check_object_name(object).map_err(|r| invalid(&format!("{name}.object"), r))?;
            let size_field = if name == "image" {
                "compressed_size"
            } else {
                "size"
            };
            if size == 0 {
                return Err(invalid(&format!("{name}.{size_field}"), "must not be 0"));
            }
        }
        if self.image.size == 0 {
            return Err(invalid("image.size", "must not be 0"));
        }
        for (i, (_, a, _)) in objects.iter().enumerate() {
            if objects[..i].iter().any(|(_, b, _)| a == b) {
                return Err(invalid("objects", format!("{a:?} is named twice")));
            }
        }
        Ok(())
    }
}

/// The format, if this code reads it.
fn supported_format(format: u64) -> Result<u32, MetaError> {
    match u32::try_from(format) {
        Ok(format @ (FORMAT_VERSION | ROLLOUT_FORMAT_VERSION)) => Ok(format),
        _ => Err(MetaError::UnknownFormat { found: format }),
    }
}

/// The kinds of objects a version is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Image,
    Index,
    Kernel,
    Initrd,
    Meta,
    MetaSig,
}

impl ObjectKind {
    pub fn suffix(self) -> &'static str {
        match self {
            ObjectKind::Image => "img.zst",
            ObjectKind::Index => "index",
            ObjectKind::Kernel => "kernel",
            ObjectKind::Initrd => "initrd",
            ObjectKind::Meta => "meta",
            ObjectKind::MetaSig => "meta.sig",
        }
    }
}

/// The name of a version's object: `<version>-<id>.<suffix>`, e.g.
/// `7-2b1c…-….img.zst`. Unique per version, so objects are immutable.
pub fn object_name(version: u64, id: Uuid, kind: ObjectKind) -> String {
    format!("{version}-{}.{}", id.hyphenated(), kind.suffix())
}

/// A meta whose signature verified (or that `pack` or `publish` just
/// signed), with the exact bytes that were signed and the signature file.
/// Only [`verify_meta`] and [`SignedMeta::sign`] make one, and it cannot be
/// changed afterwards: whoever holds one holds what a trusted key vouched
/// for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMeta {
    meta: Meta,
    bytes: Vec<u8>,
    signatures: Vec<u8>,
    signer: String,
    signers: Vec<PublicKey>,
}

impl SignedMeta {
    /// Validates `meta` and signs its bytes with each of `keys` (one line
    /// each in the signature file; the first key is the signer named).
    pub fn sign(meta: Meta, keys: &[&SecretKey]) -> Result<SignedMeta, MetaError> {
        meta.validate()?;
        let first = keys.first().expect("a meta is signed by at least one key");
        let bytes = meta.to_bytes();
        let signatures: Vec<Signature> = keys.iter().map(|key| key.sign(&bytes)).collect();
        Ok(SignedMeta {
            meta,
            bytes,
            signatures: signature_file(&signatures).into_bytes(),
            signer: first.name().to_owned(),
            signers: keys.iter().map(|key| key.public()).collect(),
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The exact signed bytes (what `publish` uploads as the channel meta).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signature file, one signature per line.
    pub fn signatures(&self) -> &[u8] {
        &self.signatures
    }

    /// Name of the trusted key whose signature verified (or, from `sign`,
    /// that signed).
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// Every key whose signature verified (or, from `sign`, that signed).
    pub fn signers(&self) -> &[PublicKey] {
        &self.signers
    }
}

/// Why a signed meta was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Also carries the size bound, checked before anything else.
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(
        "it declares keys revoked but no recovery key signed it (only a recovery key may revoke)"
    )]
    RevocationWithoutRecoveryKey,
}

/// Verifies a meta the way a device must: size bound first, then the
/// signature over the exact bytes, and only then parsing, so no parser ever
/// sees bytes that no trusted key vouched for.
pub fn verify_meta(
    meta_bytes: &[u8],
    sig_bytes: &[u8],
    keys: &TrustedKeys,
) -> Result<SignedMeta, VerifyError> {
    if meta_bytes.len() > MAX_META_BYTES {
        return Err(MetaError::TooLarge {
            size: meta_bytes.len(),
            max: MAX_META_BYTES,
        }
        .into());
    }
    let signers = keys.verify(meta_bytes, sig_bytes)?;
    let meta = Meta::parse(meta_bytes)?;
    let revokes = meta
        .published
        .as_ref()
        .is_some_and(|p| !p.revoked_keys.is_empty());
    if revokes && !signers.by_recovery_key() {
        return Err(VerifyError::RevocationWithoutRecoveryKey);
    }
    Ok(SignedMeta {
        signer: signers.first().name().to_owned(),
        meta,
        bytes: meta_bytes.to_vec(),
        signatures: sig_bytes.to_vec(),
        signers: signers.keys().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        let id: Uuid = "2b1c5e4a-7d3f-4e8a-9c0b-1a2b3c4d5e6f".parse().unwrap();
        let art = |kind, data: &[u8]| Artifact {
            object: object_name(7, id, kind),
            size: data.len() as u64,
            sha256: Digest::of(data),
        };
        Meta {
            format: FORMAT_VERSION,
            version: 7,
            id,
            label: "kiosk 2026-11-22 (firefox 140)".into(),
            arch: Arch::X86_64,
            published: Some(Publication {
                channel: "stable".into(),
                signed_at: "2026-11-22T10:00:00Z".parse().unwrap(),
                expires: "2026-12-22T10:00:00Z".parse().unwrap(),
                revoked_keys: vec![],
                rollout: None,
            }),
            image: Image {
                object: object_name(7, id, ObjectKind::Image),
                compressed_size: 123_456,
                size: 1 << 30,
                sha256: Digest::of(b"image"),
                fs: FsType::Ext4,
            },
            index: art(ObjectKind::Index, b"index"),
            kernel: art(ObjectKind::Kernel, b"kernel"),
            initrd: art(ObjectKind::Initrd, b"initrd"),
            cmdline: "init=/nix/store/abc-nixos-system/init quiet".into(),
        }
    }

    /// The sample as a JSON value, edited by `edit`, back to bytes.
    fn edited(edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
        let mut value = serde_json::to_value(sample()).unwrap();
        edit(value.as_object_mut().unwrap());
        serde_json::to_vec(&value).unwrap()
    }

    fn invalid_field(err: MetaError) -> String {
        match err {
            MetaError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_is_exact_and_deterministic() {
        let meta = sample();
        let bytes = meta.to_bytes();
        assert_eq!(Meta::parse(&bytes).unwrap(), meta);
        assert_eq!(Meta::parse(&bytes).unwrap().to_bytes(), bytes);
        assert!(bytes.ends_with(b"}\n"));
        let erofs = Meta {
            image: Image {
                fs: FsType::Erofs,
                ..sample().image
            },
            ..sample()
        };
        assert_eq!(Meta::parse(&erofs.to_bytes()).unwrap(), erofs);
        // As pack signs it: for aarch64, no channel yet.
        let bundle = Meta {
            arch: Arch::Aarch64,
            published: None,
            ..sample()
        };
        let bytes = bundle.to_bytes();
        assert_eq!(Meta::parse(&bytes).unwrap(), bundle);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("\"arch\": \"aarch64\",\n  \"published\": null,\n"),
            "{text}"
        );
    }

    #[test]
    fn wire_format_is_stable() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        assert!(
            text.starts_with("{\n  \"format\": 2,\n  \"version\": 7,\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  \"arch\": \"x86_64\",\n  \"published\": {\n    \"channel\": \"stable\",\n    \
                 \"signed_at\": \"2026-11-22T10:00:00Z\",\n    \"expires\": \"2026-12-22T10:00:00Z\",\n    \
                 \"revoked_keys\": []\n  },\n"
            ),
            "{text}"
        );
        assert!(text.contains("\"fs\": \"ext4\""));
        assert!(text.contains("\"object\": \"7-2b1c5e4a-7d3f-4e8a-9c0b-1a2b3c4d5e6f.img.zst\""));
    }

    /// The sample with a rollout, as `publish --rollout-over 1d` signs it.
    fn staged() -> Meta {
        let mut meta = sample();
        let published = meta.published.as_mut().unwrap();
        published.rollout = Some(Rollout {
            start: published.signed_at,
            over_secs: 86_400,
            halted_at: None,
        });
        meta.format = ROLLOUT_FORMAT_VERSION;
        meta
    }

    /// A rollout makes the meta format 3 (format-2 devices refuse it rather
    /// than install a staged or halted version at once); without one the
    /// bytes are format 2's, unchanged.
    #[test]
    fn a_rollout_is_format_3_and_round_trips() {
        let meta = staged();
        let text = String::from_utf8(meta.to_bytes()).unwrap();
        assert!(text.starts_with("{\n  \"format\": 3,\n"), "{text}");
        assert!(
            text.contains(
                "\"revoked_keys\": [],\n    \"rollout\": {\n      \"start\": \"2026-11-22T10:00:00Z\",\n      \
                 \"over_secs\": 86400,\n      \"halted_at\": null\n    }\n  },\n"
            ),
            "{text}"
        );
        assert_eq!(Meta::parse(text.as_bytes()).unwrap(), meta);
        let halted = {
            let mut meta = staged();
            let published = meta.published.as_mut().unwrap();
            published.rollout = published.rollout.map(|r| r.halted(published.signed_at));
            meta
        };
        assert_eq!(Meta::parse(&halted.to_bytes()).unwrap(), halted);
        assert_eq!(Publication::format(sample().published.as_ref()), 2);
        assert_eq!(Publication::format(None), 2);

        // The format must match: a rollout in format 2, or format 3
        // without one, is refused.
        let mut format_2 = staged();
        format_2.format = FORMAT_VERSION;
        assert_eq!(invalid_field(format_2.validate().unwrap_err()), "format");
        let mut format_3 = sample();
        format_3.format = ROLLOUT_FORMAT_VERSION;
        assert_eq!(invalid_field(format_3.validate().unwrap_err()), "format");
        assert_eq!(
            Meta::parse(&format_3.to_bytes()),
            Err(MetaError::MissingField("published.rollout".into()))
        );
        // Format 2 ignores a field of that name, as format-2 devices do.
        let ignored = edited(|m| {
            m["published"]
                .as_object_mut()
                .unwrap()
                .insert("rollout".into(), Value::from("anything"));
        });
        assert_eq!(Meta::parse(&ignored).unwrap(), sample());
        // The fuzzer's seed of a staged, halted meta is one.
        let seed = Meta::parse(include_bytes!("../../fuzz/seeds/meta_parse/staged.meta")).unwrap();
        assert!(seed.published.unwrap().rollout.unwrap().halted_at.is_some());
        // Bounded.
        let mut long = staged();
        long.published
            .as_mut()
            .unwrap()
            .rollout
            .as_mut()
            .unwrap()
            .over_secs = MAX_ROLLOUT_SECS + 1;
        assert_eq!(
            invalid_field(long.validate().unwrap_err()),
            "published.rollout.over_secs"
        );
        for (path, value) in [
            ("start", Value::from("soon")),
            ("over_secs", Value::from(-1)),
            ("halted_at", Value::from(3)),
        ] {
            let mut value_json = serde_json::to_value(staged()).unwrap();
            value_json["published"]["rollout"][path] = value;
            assert_eq!(
                invalid_field(Meta::parse(&serde_json::to_vec(&value_json).unwrap()).unwrap_err()),
                format!("published.rollout.{path}")
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let bytes = edited(|m| {
            m.insert("delta_from".into(), Value::from(3));
            m["image"]
                .as_object_mut()
                .unwrap()
                .insert("chunker".into(), Value::from("fastcdc"));
        });
        assert_eq!(Meta::parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn oversized_meta_is_refused_before_parsing() {
        let bytes = vec![b'{'; MAX_META_BYTES + 1];
        assert_eq!(
            Meta::parse(&bytes),
            Err(MetaError::TooLarge {
                size: MAX_META_BYTES + 1,
                max: MAX_META_BYTES
            })
        );
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = Meta::parse(b"{\n  \"format\": 1,\n  oops\n}").unwrap_err();
        match &err {
            MetaError::Malformed { line, column, .. } => assert_eq!((*line, *column), (3, 3)),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("line 3, column 3"), "{err}");
        assert!(matches!(Meta::parse(b""), Err(MetaError::Malformed { .. })));
        assert_eq!(
            invalid_field(Meta::parse(b"[1]").unwrap_err()),
            "(top level)"
        );
    }

    /// A format-1 meta (what abnix wrote before channel, architecture and
    /// expiry were signed) is refused as such, not misread.
    #[test]
    fn a_format_1_meta_is_refused_by_its_format() {
        let mut value = serde_json::to_value(sample()).unwrap();
        let obj = value.as_object_mut().unwrap();
        obj["format"] = Value::from(1);
        obj.remove("arch");
        obj.remove("published");
        let err = Meta::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "meta format 1 is not supported (this abnix reads formats 2 and 3)"
        );
    }

    #[test]
    fn unknown_format_is_refused_first() {
        // Format 4 with otherwise-missing fields: the format is what matters.
        let err = Meta::parse(br#"{"format": 4}"#).unwrap_err();
        assert_eq!(err, MetaError::UnknownFormat { found: 4 });
        assert_eq!(
            err.to_string(),
            "meta format 4 is not supported (this abnix reads formats 2 and 3)"
        );
        assert_eq!(
            invalid_field(Meta::parse(br#"{"format": "1"}"#).unwrap_err()),
            "format"
        );
    }

    #[test]
    fn every_missing_field_is_named() {
        let sample = serde_json::to_value(sample()).unwrap();
        let mut paths = Vec::new();
        for (key, value) in sample.as_object().unwrap() {
            paths.push(key.clone());
            if let Some(inner) = value.as_object() {
                paths.extend(inner.keys().map(|k| format!("{key}.{k}")));
            }
        }
        assert_eq!(paths.len(), 11 + 5 + 3 * 3 + 4);
        for path in paths {
            let bytes = edited(|m| match path.split_once('.') {
                Some((outer, inner)) => {
                    m[outer].as_object_mut().unwrap().remove(inner);
                }
                None => {
                    m.remove(&path);
                }
            });
            assert_eq!(
                Meta::parse(&bytes),
                Err(MetaError::MissingField(path.clone())),
                "removing {path}"
            );
        }
    }

    #[test]
    fn wrong_types_are_invalid_with_the_field_named() {
        type Edit = fn(&mut Map<String, Value>);
        let cases: [(&str, Edit); 11] = [
            ("arch", |m| {
                m["arch"] = Value::from("riscv64");
            }),
            ("published", |m| {
                m["published"] = Value::from("stable");
            }),
            ("published.signed_at", |m| {
                m["published"]["signed_at"] = Value::from("yesterday");
            }),
            ("published.revoked_keys", |m| {
                m["published"]["revoked_keys"] = Value::from("k");
            }),
            ("version", |m| {
                m["version"] = Value::from("7");
            }),
            ("version", |m| {
                m["version"] = Value::from(-1);
            }),
            ("id", |m| {
                m["id"] = Value::from("not-a-uuid");
            }),
            ("image", |m| {
                m["image"] = Value::from(1);
            }),
            ("image.fs", |m| {
                m["image"]["fs"] = Value::from("btrfs");
            }),
            ("kernel.sha256", |m| {
                m["kernel"]["sha256"] = Value::from("abc");
            }),
            ("initrd.size", |m| {
                m["initrd"]["size"] = Value::from(1.5);
            }),
        ];
        for (path, edit) in cases {
            assert_eq!(invalid_field(Meta::parse(&edited(edit)).unwrap_err()), path);
        }
    }

    #[test]
    fn invalid_values_are_refused_with_the_reason() {
        let check = |meta: Meta, field: &str, reason: &str| {
            let err = Meta::parse(&meta.to_bytes()).unwrap_err();
            let text = err.to_string();
            assert_eq!(invalid_field(err), field);
            assert!(text.contains(reason), "{text:?} should mention {reason:?}");
        };
        let with = |edit: fn(&mut Meta)| {
            let mut meta = sample();
            edit(&mut meta);
            meta
        };
        check(with(|m| m.version = 0), "version", "at least 1");
        check(with(|m| m.id = Uuid::nil()), "id", "nil UUID");
        check(
            with(|m| m.label = "x".repeat(201)),
            "label",
            "more than 200",
        );
        check(
            with(|m| m.label = "a\u{1b}[31m".into()),
            "label",
            "control character",
        );
        check(
            with(|m| m.cmdline = "quiet\ninit=/x".into()),
            "cmdline",
            "single line",
        );
        check(
            with(|m| m.cmdline = "quiet abnix.slot=a".into()),
            "cmdline",
            "abnix.slot=",
        );
        check(
            with(|m| m.kernel.object = "..".into()),
            "kernel.object",
            "starts with '.'",
        );
        check(
            with(|m| m.kernel.object = "a/kernel".into()),
            "kernel.object",
            "'/'",
        );
        check(
            with(|m| m.initrd.object = ".hidden".into()),
            "initrd.object",
            "'.'",
        );
        check(
            with(|m| m.index.object = String::new()),
            "index.object",
            "empty",
        );
        check(
            with(|m| m.index.object = "i\tx".into()),
            "index.object",
            "control",
        );
        check(
            with(|m| m.image.object = "x".repeat(201)),
            "image.object",
            "200 bytes",
        );
        check(with(|m| m.image.size = 0), "image.size", "not be 0");
        check(
            with(|m| m.image.compressed_size = 0),
            "image.compressed_size",
            "not be 0",
        );
        check(with(|m| m.kernel.size = 0), "kernel.size", "not be 0");
        check(
            with(|m| m.initrd.object = m.kernel.object.clone()),
            "objects",
            "named twice",
        );
        let publication = |edit: fn(&mut Publication)| {
            let mut meta = sample();
            edit(meta.published.as_mut().unwrap());
            meta
        };
        check(
            publication(|p| p.channel = "a/b".into()),
            "published.channel",
            "without '/'",
        );
        check(
            publication(|p| p.channel = String::new()),
            "published.channel",
            "1 to 200 bytes",
        );
        check(
            publication(|p| p.expires = p.signed_at),
            "published.expires",
            "not after signed_at",
        );
        check(
            publication(|p| p.revoked_keys = vec!["k:AAAA".into()]),
            "published.revoked_keys[0]",
            "decodes to 3 bytes",
        );
        // At the limits: accepted.
        let edge = with(|m| {
            m.label = "é".repeat(100);
            m.kernel.object = "k".repeat(200);
            m.cmdline = "abnix.slotx=1 xabnix.slot=b".into();
        });
        assert_eq!(Meta::parse(&edge.to_bytes()).unwrap(), edge);
    }

    #[test]
    fn object_names() {
        let id: Uuid = "2b1c5e4a-7d3f-4e8a-9c0b-1a2b3c4d5e6f".parse().unwrap();
        let names: Vec<String> = [
            ObjectKind::Image,
            ObjectKind::Index,
            ObjectKind::Kernel,
            ObjectKind::Initrd,
            ObjectKind::Meta,
            ObjectKind::MetaSig,
        ]
        .into_iter()
        .map(|k| object_name(12, id, k))
        .collect();
        let prefix = "12-2b1c5e4a-7d3f-4e8a-9c0b-1a2b3c4d5e6f";
        assert_eq!(
            names,
            ["img.zst", "index", "kernel", "initrd", "meta", "meta.sig"]
                .map(|s| format!("{prefix}.{s}"))
        );
        for name in names {
            check_object_name(&name).unwrap();
        }
    }

    #[test]
    fn verify_meta_checks_signature_then_parses() {
        let key = SecretKey::generate("fleet").unwrap();
        let keys: TrustedKeys = [key.public()].into_iter().collect();
        let bytes = sample().to_bytes();
        let sig = signature_file(&[key.sign(&bytes)]);
        let signed = verify_meta(&bytes, sig.as_bytes(), &keys).unwrap();
        assert_eq!(signed, SignedMeta::sign(sample(), &[&key]).unwrap());
        assert_eq!(
            (signed.meta(), signed.bytes(), signed.signer()),
            (&sample(), &bytes[..], "fleet")
        );

        // One byte changed (still valid JSON): the signature catches it.
        let tampered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"version\": 7", "\"version\": 8");
        assert_eq!(
            verify_meta(tampered.as_bytes(), sig.as_bytes(), &keys),
            Err(VerifyError::Signature(SignatureError::BadSignature {
                key: "fleet".into()
            }))
        );
        // Garbage signed by a trusted key is verified first, then refused by
        // the parser.
        let garbage = b"not json";
        let sig = signature_file(&[key.sign(garbage)]);
        assert!(matches!(
            verify_meta(garbage, sig.as_bytes(), &keys),
            Err(VerifyError::Meta(MetaError::Malformed { .. }))
        ));
        // Garbage with a bad signature is refused before parsing.
        assert_eq!(
            verify_meta(garbage, b"", &keys),
            Err(VerifyError::Signature(SignatureError::NoSignature))
        );
        // Oversized: refused before the signature is even looked at.
        let big = vec![b' '; MAX_META_BYTES + 1];
        assert_eq!(
            verify_meta(&big, b"", &keys),
            Err(VerifyError::Meta(MetaError::TooLarge {
                size: MAX_META_BYTES + 1,
                max: MAX_META_BYTES
            }))
        );
    }
}
