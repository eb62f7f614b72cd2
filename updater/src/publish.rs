//! Publishing a bundle to its channel (DESIGN §4), re-signing the channel's
//! current version, and pruning old versions.
//!
//! Publishing signs: the bundle's meta (as `pack` signed it, for no
//! channel) is signed again for the channel, with the time of signing, the
//! expiry (`valid_for` from now) and any keys it revokes
//! ([`abnix_formats::meta::Publication`]), by the keys given, and checked to verify
//! against the trusted keys before anything is uploaded. [`resign`] signs
//! the channel's current version again with a new expiry and nothing else
//! changed, for a cron job or CI that keeps a quiet channel fresh.
//!
//! Fleet operations (DESIGN §3, "Staged rollouts"): a version may be
//! published with a staged rollout ([`PublishOptions::rollout_over`]);
//! [`halt`] signs the channel's current version again with its rollout
//! halted, so no host starts installing it any more; [`revert_to`]
//! publishes an older version's content again under the next version
//! number, re-using its objects, so every host moves forward to it.
//!
//! Order: every per-version object first (image, index, kernel, initrd, the
//! version's meta and its `.meta.sig`), the channel's pointer
//! `<prefix>/<channel>.meta` last, in one PUT. A device reads the pointer,
//! then the signature of the version it names, so it never sees a meta whose
//! objects are missing; a publish that fails midway leaves the channel on its
//! previous version, with some unreferenced objects that a later `keep`
//! prunes. When the same version is signed again, its signature file keeps
//! the lines of the signing before (they verify the pointer's old bytes
//! only): a device that read the old pointer just before it was replaced
//! still finds a signature for it.
//!
//! Anti-rollback on the operator side: the version must be greater than the
//! one the current pointer names, unless forced. A pointer that exists but
//! does not verify against the trusted keys (or does not parse) is not taken
//! as "no current version": it may name a newer version signed by a key this
//! publisher does not trust, and overwriting it could move the fleet
//! backwards. It is refused unless forced (e.g. to repair a corrupted
//! pointer), and then logged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::channel::{Channel, ChannelError, MetaLocator};
use crate::remote::{Remote, RemoteError};
use abnix_core::bundle::Bundle;
use abnix_core::progress::Progress;
use abnix_core::units::parse_duration;
use abnix_formats::meta::{
    object_name, verify_meta, Meta, MetaError, ObjectKind, Publication, SignedMeta, VerifyError,
    MAX_META_BYTES,
};
use abnix_formats::rollout::{Rollout, MAX_ROLLOUT_SECS};
use abnix_formats::sign::{PublicKey, SecretKey, MAX_SIGNATURE_FILE_BYTES};

/// How long a published meta is valid by default (a duration as in
/// [`abnix_core::units::parse_duration`]): a fleet's devices check every few
/// hours, so a month leaves room for a publisher that re-signs weekly to
/// miss a few runs, and bounds a freeze to a month.
pub const DEFAULT_VALID_FOR: &str = "30d";

/// How [`publish`] and [`resign`] behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Afterwards, delete the objects of all but the newest `keep` versions
    /// of the channel (the published one and the pointer's are always kept).
    pub keep: Option<NonZeroUsize>,
    /// Publish even if the version is not greater than the channel's
    /// current one, or the current pointer does not verify.
    pub force: bool,
    /// How long from now devices take the meta.
    pub valid_for: Duration,
    /// Keys the meta declares revoked; devices honour it only when a
    /// recovery key signs it (docs/security.md).
    pub revoke: Vec<PublicKey>,
    /// A staged rollout from the signing time over this long ([`publish`]
    /// and [`revert_to`]); `None`: every host at once.
    pub rollout_over: Option<Duration>,
}

impl Default for PublishOptions {
    fn default() -> PublishOptions {
        PublishOptions {
            keep: None,
            force: false,
            valid_for: parse_duration(DEFAULT_VALID_FOR).expect("the default is a duration"),
            revoke: Vec::new(),
            rollout_over: None,
        }
    }
}

/// The rollout a meta is signed with.
#[derive(Debug, Clone, Copy)]
enum RolloutChange {
    /// A new one from the signing time over this long (or none).
    Start(Option<Duration>),
    /// The current meta's, as it is.
    Keep(Option<Rollout>),
    /// The current meta's, halted at the signing time; a version without
    /// one had reached every host, and no more start from now.
    Halt(Option<Rollout>),
}

impl RolloutChange {
    fn at(self, signed_at: DateTime<Utc>) -> Option<Rollout> {
        match self {
            RolloutChange::Start(over) => over.map(|over| Rollout {
                start: signed_at,
                over_secs: over.as_secs(),
                halted_at: None,
            }),
            RolloutChange::Keep(rollout) => rollout,
            RolloutChange::Halt(rollout) => Some(
                rollout
                    .unwrap_or(Rollout {
                        start: signed_at,
                        over_secs: 0,
                        halted_at: None,
                    })
                    .halted(signed_at),
            ),
        }
    }
}

/// A version as named in the bucket: `<version>-<id>.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionRef {
    pub version: u64,
    pub id: Uuid,
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.id)
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    pub published: VersionRef,
    /// The version the pointer named before, if it verified.
    pub previous: Option<VersionRef>,
    /// Keys written, in order; the channel's pointer is the last.
    pub uploaded: Vec<String>,
    /// Versions whose objects were deleted, oldest first.
    pub pruned: Vec<VersionRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("version {version} is not greater than the channel's current version {current}")]
    NotNewer { version: u64, current: u64 },
    /// The pointer exists but does not verify or parse (see the module
    /// documentation).
    #[error("the channel's current meta cannot be trusted: {0}")]
    UntrustedPointer(#[source] ChannelError),
    #[error("the meta signed for the channel does not verify against the trusted keys (devices would refuse it): {0}")]
    Unverified(#[source] VerifyError),
    #[error("the meta cannot be signed: {0}")]
    Meta(#[from] MetaError),
    #[error("{valid_for:?} is not a usable validity")]
    Validity { valid_for: Duration },
    #[error("the channel has no version to sign again")]
    NothingToResign,
    #[error("a rollout over {over:?} is longer than a year")]
    RolloutTooLong { over: Duration },
    #[error("the channel holds no version {0} to revert to")]
    NoSuchVersion(u64),
    #[error(
        "version {version} is held twice in the channel, with ids {ids}; remove the wrong one"
    )]
    AmbiguousVersion { version: u64, ids: String },
    #[error("version {version} is not older than the channel's current version {current}: there is nothing to revert to")]
    NotOlder { version: u64, current: u64 },
    #[error("version {version} cannot be published again: {reason}")]
    RevertUnavailable { version: u64, reason: String },
    #[error("reading the channel's current meta: {0}")]
    Current(#[source] ChannelError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The version is published (the pointer names it); deleting old
    /// versions failed.
    #[error("version {published} is published, but pruning old versions failed: {source}")]
    Prune { published: u64, source: RemoteError },
}

/// What the pointer says before publishing.
enum Current {
    Empty,
    Verified(Box<SignedMeta>),
    Untrusted(ChannelError),
}

fn current(channel: &Channel) -> Result<Current, PublishError> {
    match channel.latest() {
        Ok(signed) => Ok(Current::Verified(Box::new(signed))),
        // `latest` maps a missing signature to a verification error, so
        // not found here is the pointer itself: a new channel.
        Err(ChannelError::Remote(RemoteError::NotFound { .. })) => Ok(Current::Empty),
        Err(
            err @ (ChannelError::Unreadable { .. }
            | ChannelError::Verify(_)
            | ChannelError::Remote(RemoteError::TooLarge { .. })),
        ) => Ok(Current::Untrusted(err)),
        Err(err) => Err(PublishError::Current(err)),
    }
}

/// The version a signed meta names.
fn version_ref(signed: &SignedMeta) -> VersionRef {
    VersionRef {
        version: signed.meta().version,
        id: signed.meta().id,
    }
}

/// `meta` signed by `keys` for the channel of `channel`, from now for
/// `opts.valid_for`, with `revoked` keys; checked to verify against the
/// channel's trusted keys, as devices will check it.
fn sign_for_channel(
    channel: &Channel,
    meta: &Meta,
    keys: &[&SecretKey],
    opts: &PublishOptions,
    revoked: Vec<String>,
    rollout: RolloutChange,
) -> Result<SignedMeta, PublishError> {
    if let RolloutChange::Start(Some(over)) = rollout {
        if over.as_secs() > MAX_ROLLOUT_SECS {
            return Err(PublishError::RolloutTooLong { over });
        }
    }
    let now = Utc::now();
    let signed_at = DateTime::from_timestamp(now.timestamp(), 0).expect("now is a valid time");
    let expires = chrono::Duration::from_std(opts.valid_for)
        .ok()
        .and_then(|valid_for| signed_at.checked_add_signed(valid_for))
        .filter(|&expires| expires > signed_at)
        .ok_or(PublishError::Validity {
            valid_for: opts.valid_for,
        })?;
    let publication = Publication {
        channel: channel.remote().config().channel.clone(),
        signed_at,
        expires,
        revoked_keys: revoked,
        rollout: rollout.at(signed_at),
    };
    let published = Meta {
        format: Publication::format(Some(&publication)),
        published: Some(publication),
        ..meta.clone()
    };
    let signed = SignedMeta::sign(published, keys)?;
    verify_meta(signed.bytes(), signed.signatures(), channel.keys())
        .map_err(PublishError::Unverified)?;
    Ok(signed)
}

/// The revoked keys as the meta carries them, without repeats.
fn revoked_keys(earlier: &[String], revoke: &[PublicKey]) -> Vec<String> {
    let mut all = earlier.to_vec();
    for key in revoke.iter().map(ToString::to_string) {
        if !all.contains(&key) {
            all.push(key);
        }
    }
    all
}

/// The signature file to upload for `signed`: its signatures, and those of
/// `current` when that is an earlier signing of the same version, so a
/// device holding the pointer's old bytes still verifies them (see the
/// module documentation). Only the new ones if both would not fit.
fn signature_file_for(signed: &SignedMeta, current: Option<&SignedMeta>) -> Vec<u8> {
    let mut file = signed.signatures().to_vec();
    if let Some(current) = current.filter(|c| version_ref(c) == version_ref(signed)) {
        if file.len() + current.signatures().len() <= MAX_SIGNATURE_FILE_BYTES {
            file.extend_from_slice(current.signatures());
        }
    }
    file
}

/// Uploads the version's meta and signature file, then the channel's
/// pointer.
fn upload_meta(
    remote: &Remote,
    signed: &SignedMeta,
    signatures: &[u8],
    uploaded: &mut Vec<String>,
) -> Result<(), PublishError> {
    let config = remote.config();
    let meta = signed.meta();
    // The signatures before the bytes they sign: a device that reads the
    // new meta finds them.
    let sig_key = config.object_key(&object_name(meta.version, meta.id, ObjectKind::MetaSig));
    remote.put_bytes(&sig_key, signatures)?;
    uploaded.push(sig_key);
    let meta_key = config.object_key(&object_name(meta.version, meta.id, ObjectKind::Meta));
    remote.put_bytes(&meta_key, signed.bytes())?;
    uploaded.push(meta_key);
    // Last: from here on devices see the new meta, and everything it names
    // is in place (S3 PUTs are atomic and read-after-write consistent).
    let pointer = config.channel_meta_key();
    remote.put_bytes(&pointer, signed.bytes())?;
    uploaded.push(pointer);
    Ok(())
}

/// Signs `bundle`'s version for the channel of `channel`'s remote with
/// `keys` and uploads it, the pointer last, then prunes if asked. The
/// bundle must verify against the channel's trusted keys, and so must
/// the meta signed here, so nothing is published that devices would
/// refuse. Publishing the same bundle again with `force` rewrites the same
/// objects and signs it again.
pub fn publish(
    channel: &Channel,
    bundle: &Bundle,
    keys: &[&SecretKey],
    opts: &PublishOptions,
    progress: &dyn Progress,
) -> Result<PublishReport, PublishError> {
    let remote = channel.remote();
    let config = remote.config();
    let meta = bundle.signed.meta();
    let published = version_ref(&bundle.signed);
    let revoked = revoked_keys(&[], &opts.revoke);
    // Signed (and checked) before anything else, so a refusal costs no
    // upload.
    let rollout = RolloutChange::Start(opts.rollout_over);
    let signed = sign_for_channel(channel, meta, keys, opts, revoked, rollout)?;

    let (previous, earlier) = match current(channel)? {
        Current::Empty => (None, None),
        Current::Verified(signed) => {
            let current = version_ref(&signed);
            if published.version <= current.version {
                if !opts.force {
                    return Err(PublishError::NotNewer {
                        version: published.version,
                        current: current.version,
                    });
                }
                if published != current {
                    warn!(
                        "forced: version {published} replaces the newer or equal {current}; \
                         devices that have installed {} or later will not install it",
                        current.version
                    );
                }
            }
            (Some(current), Some(signed))
        }
        Current::Untrusted(err) => {
            if !opts.force {
                return Err(PublishError::UntrustedPointer(err));
            }
            warn!("forced: replacing the channel's meta, which cannot be trusted: {err}");
            (None, None)
        }
    };

    let mut uploaded = Vec::new();
    // The image first: it is by far the longest, and failing early on it
    // wastes the least.
    let files = [
        (&meta.image.object, bundle.image_path()),
        (&meta.index.object, bundle.path_of(&meta.index)),
        (&meta.kernel.object, bundle.path_of(&meta.kernel)),
        (&meta.initrd.object, bundle.path_of(&meta.initrd)),
    ];
    for (object, path) in files {
        let key = config.object_key(object);
        remote.put_file(&key, &path, progress)?;
        uploaded.push(key);
    }
    let signatures = signature_file_for(&signed, earlier.as_deref());
    upload_meta(remote, &signed, &signatures, &mut uploaded)?;
    info!(version = %published, channel = %config.channel, "published");

    let pruned = prune_if_asked(remote, opts, published)?;
    Ok(PublishReport {
        published,
        previous,
        uploaded,
        pruned,
    })
}

/// The channel's current meta, which must verify against the trusted keys
/// (an expired one is fine).
fn verified_current(channel: &Channel) -> Result<Box<SignedMeta>, PublishError> {
    match current(channel)? {
        Current::Empty => Err(PublishError::NothingToResign),
        Current::Untrusted(err) => Err(PublishError::UntrustedPointer(err)),
        Current::Verified(current) => Ok(current),
    }
}

/// The keys the current meta revokes, and `opts.revoke`.
fn revoked_with(current: &SignedMeta, opts: &PublishOptions) -> Vec<String> {
    let earlier = current
        .meta()
        .published
        .as_ref()
        .map_or(&[][..], |p| &p.revoked_keys[..]);
    revoked_keys(earlier, &opts.revoke)
}

/// Signs the channel's current version again with `keys`, valid for
/// `opts.valid_for` from now, with `opts.revoke` added to the keys it
/// revokes; everything else (its rollout too) as it was. Its objects are
/// not touched. The current meta must verify against the trusted keys (an
/// expired one is fine: that is what re-signing is for).
pub fn resign(
    channel: &Channel,
    keys: &[&SecretKey],
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    sign_again(channel, keys, opts, RolloutChange::Keep)
}

/// Like [`resign`], with the rollout halted: from now on no host starts
/// installing the version; hosts that installed it keep it. A version
/// published without a rollout is halted too (it had reached every host;
/// those that have not installed it yet do not).
pub fn halt(
    channel: &Channel,
    keys: &[&SecretKey],
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    sign_again(channel, keys, opts, RolloutChange::Halt)
}

/// Signs the channel's current version again, its rollout changed by
/// `change`.
fn sign_again(
    channel: &Channel,
    keys: &[&SecretKey],
    opts: &PublishOptions,
    change: fn(Option<Rollout>) -> RolloutChange,
) -> Result<PublishReport, PublishError> {
    let current = &verified_current(channel)?;
    let rollout = change(current.meta().published.as_ref().and_then(|p| p.rollout));
    let revoked = revoked_with(current, opts);
    let signed = sign_for_channel(channel, current.meta(), keys, opts, revoked, rollout)?;
    let mut uploaded = Vec::new();
    upload_meta(
        channel.remote(),
        &signed,
        &signature_file_for(&signed, Some(current)),
        &mut uploaded,
    )?;
    let version = version_ref(&signed);
    info!(%version, channel = %channel.remote().config().channel, "signed again");
    Ok(PublishReport {
        published: version,
        previous: Some(version),
        uploaded,
        pruned: Vec::new(),
    })
}

/// Publishes the content of the channel's older `version` again as the next
/// version (the current one plus one): the same image, kernel, initrd and
/// command line, the same objects (nothing is uploaded but the new
/// version's meta and signatures), signed for the channel with
/// `opts.rollout_over`. Hosts move forward to it; a host that ran it as
/// `version` and failed it does not take it again (failed versions are
/// matched by id too), and one that runs it still stays as it is. The
/// current meta must verify, and so must `version`'s, and its objects must
/// still be in the bucket.
pub fn revert_to(
    channel: &Channel,
    version: u64,
    keys: &[&SecretKey],
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    let current = verified_current(channel)?;
    let previous = version_ref(&current);
    if version >= previous.version {
        return Err(PublishError::NotOlder {
            version,
            current: previous.version,
        });
    }
    let remote = channel.remote();
    let config = remote.config();
    let prefix = config.channel_prefix();
    let listing = remote.list(&prefix)?;
    let meta_suffix = format!(".{}", ObjectKind::Meta.suffix());
    let ids: BTreeSet<Uuid> = listing
        .iter()
        .map(|o| &o.key[prefix.len()..])
        .filter(|name| name.ends_with(&meta_suffix))
        .filter_map(version_of)
        .filter(|v| v.version == version)
        .map(|v| v.id)
        .collect();
    let id = match ids.len() {
        0 => return Err(PublishError::NoSuchVersion(version)),
        1 => *ids.first().expect("one id"),
        _ => {
            return Err(PublishError::AmbiguousVersion {
                version,
                ids: ids
                    .iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let unavailable = |reason: String| PublishError::RevertUnavailable { version, reason };
    let old = channel
        .version_meta(version, id)
        .map_err(|e| unavailable(e.to_string()))?;
    let objects = [
        (&old.image.object, old.image.compressed_size),
        (&old.index.object, old.index.size),
        (&old.kernel.object, old.kernel.size),
        (&old.initrd.object, old.initrd.size),
    ];
    for (object, size) in objects {
        let key = config.object_key(object);
        let info = remote
            .head(&key)
            .map_err(|e| unavailable(format!("{key}: {e}")))?;
        if info.size != size {
            return Err(unavailable(format!(
                "{key} is {} bytes, its meta says {size}",
                info.size
            )));
        }
    }
    let again = Meta {
        version: previous.version + 1,
        ..old
    };
    let revoked = revoked_with(&current, opts);
    let rollout = RolloutChange::Start(opts.rollout_over);
    let signed = sign_for_channel(channel, &again, keys, opts, revoked, rollout)?;
    let mut uploaded = Vec::new();
    upload_meta(remote, &signed, signed.signatures(), &mut uploaded)?;
    let published = version_ref(&signed);
    info!(%published, reverted_to = version, channel = %config.channel, "published again");
    let pruned = prune_if_asked(remote, opts, published)?;
    Ok(PublishReport {
        published,
        previous: Some(previous),
        uploaded,
        pruned,
    })
}

/// [`prune`] with `opts.keep`, if given.
fn prune_if_asked(
    remote: &Remote,
    opts: &PublishOptions,
    published: VersionRef,
) -> Result<Vec<VersionRef>, PublishError> {
    match opts.keep {
        Some(keep) => prune(remote, keep, published).map_err(|source| PublishError::Prune {
            published: published.version,
            source,
        }),
        None => Ok(Vec::new()),
    }
}

/// Deletes the objects of all but the newest `keep` versions, never those of
/// `published` nor of the version the pointer names now (read again: another
/// publisher may have moved it meanwhile), nor those a kept version's meta
/// names (a version published again by [`revert_to`] names the objects of
/// the version it reverts to).
fn prune(
    remote: &Remote,
    keep: NonZeroUsize,
    published: VersionRef,
) -> Result<Vec<VersionRef>, RemoteError> {
    let config = remote.config();
    let mut protected = vec![published];
    let pointer = config.channel_meta_key();
    match remote.get_bytes(&pointer, MAX_META_BYTES as u64) {
        Ok(bytes) => match MetaLocator::parse(&bytes) {
            Ok(locator) => protected.push(VersionRef {
                version: locator.version,
                id: locator.id,
            }),
            Err(reason) => warn!("{pointer}: {reason}; pruning keeps only {published}"),
        },
        Err(RemoteError::NotFound { .. }) => warn!("{pointer} is gone; pruning keeps {published}"),
        Err(err) => return Err(err),
    }

    let prefix = config.channel_prefix();
    let listing = remote.list(&prefix)?;
    let versions = group_by_version(listing.iter().map(|o| &o.key[prefix.len()..]));
    let doomed = versions_to_prune(versions.keys().copied(), keep, &protected);
    // The objects kept metas name, read unverified: at worst that keeps
    // more.
    for kept in versions.keys().filter(|v| !doomed.contains(v)) {
        let key = config.object_key(&object_name(kept.version, kept.id, ObjectKind::Meta));
        let meta = match remote.get_bytes(&key, MAX_META_BYTES as u64) {
            Ok(bytes) => Meta::parse(&bytes),
            Err(RemoteError::NotFound { .. }) => continue,
            Err(err) => return Err(err),
        };
        let Ok(meta) = meta else { continue };
        protected.extend(
            meta.object_names()
                .iter()
                .filter_map(|name| version_of(name)),
        );
    }
    let doomed = versions_to_prune(versions.keys().copied(), keep, &protected);
    let keys: Vec<String> = doomed
        .iter()
        .flat_map(|v| versions[v].iter().map(|name| format!("{prefix}{name}")))
        .collect();
    if !keys.is_empty() {
        remote.delete(&keys)?;
    }
    for version in &doomed {
        info!(%version, "pruned");
    }
    Ok(doomed)
}

/// The version a per-version object belongs to: `<version>-<id>.<suffix>`.
fn version_of(name: &str) -> Option<VersionRef> {
    let (version, rest) = name.split_once('-')?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = rest.get(..36)?;
    let suffix = rest.get(36..)?.strip_prefix('.')?;
    if suffix.is_empty() {
        return None;
    }
    Some(VersionRef {
        version: version.parse().ok()?,
        id: Uuid::try_parse(id).ok()?,
    })
}

/// Object names (relative to the channel prefix) grouped by version. Names
/// that are not `<version>-<id>.<suffix>` are not abnix's and left alone.
fn group_by_version<'a>(
    names: impl Iterator<Item = &'a str>,
) -> BTreeMap<VersionRef, Vec<&'a str>> {
    let mut versions: BTreeMap<VersionRef, Vec<&str>> = BTreeMap::new();
    for name in names {
        match version_of(name) {
            Some(version) => versions.entry(version).or_default().push(name),
            None => debug!(name, "not a version's object; left alone"),
        }
    }
    versions
}

/// The versions to delete, oldest first: all but the newest `keep` (by
/// version number, then id), minus the protected ones.
fn versions_to_prune(
    versions: impl Iterator<Item = VersionRef>,
    keep: NonZeroUsize,
    protected: &[VersionRef],
) -> Vec<VersionRef> {
    let all: BTreeSet<VersionRef> = versions.collect();
    let doomed = all.len().saturating_sub(keep.get());
    all.into_iter()
        .take(doomed)
        .filter(|v| !protected.contains(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40";
    const OTHER: &str = "8c4e2f10-5a3b-4d7c-9e61-2b0a7f3c9d58";

    fn v(version: u64, id: &str) -> VersionRef {
        VersionRef {
            version,
            id: id.parse().unwrap(),
        }
    }

    fn keep(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn object_names_give_their_version() {
        let id: Uuid = ID.parse().unwrap();
        for kind in [
            ObjectKind::Image,
            ObjectKind::Index,
            ObjectKind::Kernel,
            ObjectKind::Initrd,
            ObjectKind::Meta,
            ObjectKind::MetaSig,
        ] {
            assert_eq!(
                version_of(&object_name(42, id, kind)),
                Some(v(42, ID)),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn foreign_names_have_no_version() {
        for name in [
            "README",
            "",
            "-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40.meta",
            "7-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40",
            "7-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40.",
            "7-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40meta",
            "7-not-a-uuid-at-all-but-36-chars-long.meta",
            "x7-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40.meta",
            "+7-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40.meta",
            "99999999999999999999999-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40.meta",
            "7-3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b4é.meta",
        ] {
            assert_eq!(version_of(name), None, "{name:?}");
        }
    }

    #[test]
    fn objects_are_grouped_by_version() {
        let names = [
            format!("3-{ID}.img.zst"),
            "notes.txt".to_string(),
            format!("3-{ID}.meta"),
            format!("10-{OTHER}.index"),
        ];
        let groups = group_by_version(names.iter().map(String::as_str));
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[&v(3, ID)],
            vec![format!("3-{ID}.img.zst"), format!("3-{ID}.meta")]
        );
        // Numeric order, not key order: 10 is newer than 3.
        assert_eq!(groups.keys().last(), Some(&v(10, OTHER)));
    }

    #[test]
    fn the_newest_are_kept() {
        let all = [v(1, ID), v(2, ID), v(3, ID), v(4, ID)];
        assert_eq!(
            versions_to_prune(all.into_iter(), keep(2), &[v(4, ID)]),
            vec![v(1, ID), v(2, ID)]
        );
        assert_eq!(
            versions_to_prune(all.into_iter(), keep(4), &[]),
            Vec::<VersionRef>::new()
        );
        assert_eq!(
            versions_to_prune(all.into_iter(), keep(9), &[]),
            Vec::<VersionRef>::new()
        );
    }

    #[test]
    fn protected_versions_survive_outside_the_newest() {
        // A forced publish of an older version: it and the pointer's stay.
        let all = [v(1, ID), v(2, ID), v(3, ID), v(4, ID)];
        assert_eq!(
            versions_to_prune(all.into_iter(), keep(1), &[v(2, ID), v(1, ID)]),
            vec![v(3, ID)]
        );
    }

    #[test]
    fn same_version_with_two_ids_counts_twice() {
        let all = [v(5, ID), v(5, OTHER), v(6, ID)];
        let doomed = versions_to_prune(all.into_iter(), keep(2), &[]);
        assert_eq!(doomed.len(), 1);
        assert_eq!(doomed[0].version, 5);
    }
}
