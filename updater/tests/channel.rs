//! publish and the channel against a real S3 server (s3s-fs) behind a
//! fault-injecting proxy that records every request: the round trip, faults
//! on the way down, anti-rollback, pruning and the order of writes.
//!
//! Images are real: `mkfs.ext4 -d` of files copied from /usr, packed by
//! `pack` like an operator would.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use abnix_core::bundle::Bundle;
use abnix_core::pack::{pack, PackInput};
use abnix_core::pipeline::{PipelineError, WriteOptions};
use abnix_core::progress::NoProgress;
use abnix_formats::digest::Expected;
use abnix_formats::meta::{object_name, Meta, ObjectKind, VerifyError};
use abnix_formats::sign::{SecretKey, SignatureError, TrustedKeys};
use abnix_testkit::images::{ext4_image, real_tree, seeded_random};
use abnix_testkit::{credentials_file, FaultProxy, RecordedRequest, S3Server};
use abnix_updater::channel::{Channel, ChannelError, ImageFetch};
use abnix_updater::publish::{publish, PublishError, PublishOptions, PublishReport, VersionRef};
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RemoteError, RetryPolicy, Timeouts, TransferLimits,
};
use tempfile::TempDir;
use uuid::Uuid;

const IMAGE_SIZE: u64 = 16 << 20;
const TREE_BYTES: u64 = 6 << 20;

/// A server, a proxy in front of it, a signing key, and a tree of real
/// files to make images from.
struct Fixture {
    server: S3Server,
    proxy: FaultProxy,
    dir: TempDir,
    tree: PathBuf,
    key: SecretKey,
    config: RemoteConfig,
}

fn uuid_of(version: u64) -> Uuid {
    format!("5eed0000-0000-4000-8000-{version:012}")
        .parse()
        .unwrap()
}

fn trusting(keys: &[&SecretKey]) -> TrustedKeys {
    keys.iter().map(|k| k.public()).collect()
}

impl Fixture {
    fn new() -> Fixture {
        let server = S3Server::start();
        let proxy = FaultProxy::start(server.addr());
        let dir = tempfile::tempdir().unwrap();
        let tree = real_tree(dir.path(), TREE_BYTES);
        let credentials = credentials_file(dir.path(), &server);
        let config = RemoteConfig {
            endpoint: Some(proxy.endpoint()),
            region: "us-east-1".into(),
            bucket: server.bucket().into(),
            prefix: "fleet".into(),
            channel: "kiosk".into(),
            path_style: true,
            credentials: CredentialSource::File(credentials),
            retry: RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
                max_total: Duration::from_secs(20),
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_secs(5),
            },
            limits: TransferLimits::default(),
        };
        Fixture {
            server,
            proxy,
            dir,
            tree,
            key: SecretKey::generate("fleet-test").unwrap(),
            config,
        }
    }

    fn channel(&self, keys: TrustedKeys) -> Channel {
        Channel::new(Remote::new(self.config.clone()).unwrap(), keys)
    }

    /// A channel that trusts the fixture's key.
    fn trusted_channel(&self) -> Channel {
        self.channel(trusting(&[&self.key]))
    }

    /// A real ext4 image with id `uuid_of(version)`, packed and signed with
    /// `key`; returns the bundle (opened with `key` trusted) and the raw
    /// image.
    fn bundle_signed_by(&self, version: u64, key: &SecretKey) -> (Bundle, PathBuf) {
        let work = self.dir.path().join(format!("v{version}-{}", key.name()));
        fs::create_dir_all(&work).unwrap();
        // Each version adds a file, like a real new build.
        fs::write(
            self.tree.join(format!("release-{version}")),
            format!("version {version}\n"),
        )
        .unwrap();
        let image = ext4_image(
            &self.tree,
            &uuid_of(version).to_string(),
            IMAGE_SIZE,
            &work.join("root.ext4"),
        );
        let kernel = work.join("bzImage");
        let initrd = work.join("initrd");
        fs::write(&kernel, seeded_random(300_000, version)).unwrap();
        fs::write(&initrd, seeded_random(500_000, version + 1000)).unwrap();
        let input = PackInput::new(
            &image,
            &kernel,
            &initrd,
            "init=/nix/store/x-nixos-system/init quiet",
            version,
            format!("kiosk build {version}"),
            key,
        );
        let out = work.join("bundle");
        pack(&input, &out, &NoProgress).unwrap();
        (Bundle::open(&out, &trusting(&[key])).unwrap(), image)
    }

    fn bundle(&self, version: u64) -> (Bundle, PathBuf) {
        self.bundle_signed_by(version, &self.key)
    }

    fn publish(
        &self,
        bundle: &Bundle,
        opts: PublishOptions,
    ) -> Result<PublishReport, PublishError> {
        publish(
            &self.trusted_channel(),
            bundle,
            &[&self.key],
            &opts,
            &NoProgress,
        )
    }

    fn key_of(&self, version: u64, kind: ObjectKind) -> String {
        self.config
            .object_key(&object_name(version, uuid_of(version), kind))
    }

    /// The request path of a key (path-style: `/<bucket>/<key>`).
    fn path_of(&self, key: &str) -> String {
        format!("/{}/{key}", self.server.bucket())
    }

    fn target(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn force() -> PublishOptions {
    PublishOptions {
        force: true,
        ..PublishOptions::default()
    }
}

fn keep(n: usize) -> PublishOptions {
    PublishOptions {
        keep: NonZeroUsize::new(n),
        ..PublishOptions::default()
    }
}

/// What a device does: the latest meta, its index, the image streamed into
/// a new sparse file at `target`.
fn fetch(channel: &Channel, target: &Path) -> Result<ImageFetch, ChannelError> {
    let signed = channel.latest()?;
    let index = channel.index(signed.meta())?;
    let mut file = sparse_file(target, signed.meta().image.size);
    channel.write_image(
        signed.meta(),
        &index,
        &mut file,
        &WriteOptions::default(),
        &NoProgress,
    )
}

fn sparse_file(path: &Path, size: u64) -> fs::File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(size).unwrap();
    file
}

fn assert_same_file(a: &Path, b: &Path) {
    let (a_bytes, b_bytes) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert_eq!(
        a_bytes.len(),
        b_bytes.len(),
        "{} vs {}",
        a.display(),
        b.display()
    );
    assert!(
        a_bytes == b_bytes,
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

fn writes(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests
        .iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "DELETE"))
        .collect()
}

#[test]
fn round_trip_publish_then_fetch_gives_the_same_bytes() {
    let f = Fixture::new();
    let (bundle, image) = f.bundle(1);
    let report = f.publish(&bundle, PublishOptions::default()).unwrap();
    assert_eq!(
        report.published,
        VersionRef {
            version: 1,
            id: uuid_of(1)
        }
    );
    assert_eq!(report.previous, None);
    assert!(report.pruned.is_empty());

    let target = f.target("fetched.img");
    let fetched = fetch(&f.trusted_channel(), &target).unwrap();
    assert_eq!(fetched.written.bytes, IMAGE_SIZE);
    assert_eq!(fetched.resumes, 0);
    assert_same_file(&target, &image);

    // Kernel and initrd come back verified too.
    let channel = f.trusted_channel();
    let meta = channel.latest().unwrap().meta().clone();
    for artifact in [&meta.kernel, &meta.initrd] {
        let mut fetched = Vec::new();
        channel
            .open_object(artifact)
            .unwrap()
            .read_to_end(&mut fetched)
            .unwrap();
        assert_eq!(fetched, fs::read(bundle.path_of(artifact)).unwrap());
    }
}

#[test]
fn publish_writes_every_object_before_the_pointer() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(3);
    let report = f.publish(&bundle, PublishOptions::default()).unwrap();

    let expected: Vec<String> = [
        ObjectKind::Image,
        ObjectKind::Index,
        ObjectKind::Kernel,
        ObjectKind::Initrd,
        ObjectKind::MetaSig,
        ObjectKind::Meta,
    ]
    .into_iter()
    .map(|kind| f.key_of(3, kind))
    .chain([f.config.channel_meta_key()])
    .collect();
    assert_eq!(report.uploaded, expected);

    // The server saw the same order, and nothing was written after the
    // pointer.
    let requests = f.proxy.requests();
    let written: Vec<String> = writes(&requests)
        .iter()
        .map(|r| r.path_only().to_string())
        .collect();
    let expected_paths: Vec<String> = expected.iter().map(|k| f.path_of(k)).collect();
    assert_eq!(written, expected_paths, "{requests:#?}");
    // The pointer's bytes are exactly the version's meta: the bundle's,
    // signed for the channel.
    let pointer = fs::read(f.server.object_path(&f.config.channel_meta_key())).unwrap();
    assert_eq!(
        pointer,
        fs::read(f.server.object_path(&f.key_of(3, ObjectKind::Meta))).unwrap()
    );
    let published = Meta::parse(&pointer).unwrap();
    assert_eq!(published.published.as_ref().unwrap().channel, "kiosk");
    assert_eq!(
        Meta {
            published: None,
            ..published
        },
        *bundle.signed.meta()
    );
}

#[test]
fn a_check_that_finds_nothing_new_is_two_small_gets() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(2);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    f.proxy.clear_requests();

    let latest = f.trusted_channel().latest().unwrap();
    assert_eq!(latest.meta().version, 2);

    let requests = f.proxy.requests();
    let seen: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path_only()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", f.path_of(&f.config.channel_meta_key()).as_str()),
            ("GET", f.path_of(&f.key_of(2, ObjectKind::MetaSig)).as_str()),
        ]
    );
    assert!(requests.iter().all(|r| r.range().is_none()));
}

/// The offset in the image object of a byte in the middle of a frame that
/// zstd stored raw (an incompressible chunk), where a flipped byte decodes
/// fine and changes the chunk; and that chunk's number and image offset.
fn byte_in_a_raw_frame(bundle: &Bundle) -> (u64, usize, u64) {
    let (number, chunk) = bundle
        .index
        .chunks
        .iter()
        .enumerate()
        .find(|(_, c)| u64::from(c.compressed_len) >= u64::from(c.len) && c.len > 4096)
        .expect("random.bin gives incompressible chunks");
    (chunk.compressed_offset + 1000, number, chunk.offset)
}

#[test]
fn a_corrupted_byte_in_the_image_object_is_a_mismatch_naming_the_chunk() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(4);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    let stored = f.server.object_path(&f.key_of(4, ObjectKind::Image));
    let mut bytes = fs::read(&stored).unwrap();
    let (at, chunk, offset) = byte_in_a_raw_frame(&bundle);
    bytes[at as usize] ^= 0x20;
    fs::write(&stored, bytes).unwrap();

    let err = fetch(&f.trusted_channel(), &f.target("fetched.img")).unwrap_err();
    match &err {
        ChannelError::Image {
            source:
                PipelineError::ChunkMismatch {
                    chunk: c,
                    offset: o,
                    ..
                },
            ..
        } => assert_eq!((*c, *o), (chunk, offset)),
        other => panic!("expected a chunk mismatch, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("chunk {chunk} ")),
        "{err}"
    );
}

#[test]
fn a_truncated_image_object_is_refused_before_anything_is_written() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(5);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    let stored = f.server.object_path(&f.key_of(5, ObjectKind::Image));
    let full = fs::metadata(&stored).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_len(full / 2)
        .unwrap();

    let target = f.target("fetched.img");
    let err = fetch(&f.trusted_channel(), &target).unwrap_err();
    match &err {
        ChannelError::Remote(RemoteError::WrongLength {
            expected, actual, ..
        }) => assert_eq!((*expected, *actual), (full, full / 2)),
        other => panic!("expected a wrong length, got {other:?}"),
    }
    let written = fs::read(&target).unwrap();
    assert!(written.iter().all(|&b| b == 0), "bytes were written");
}

#[test]
fn a_connection_cut_mid_image_resumes_with_a_range_request() {
    let f = Fixture::new();
    let (bundle, image) = f.bundle(6);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    let channel = f.trusted_channel();
    let signed = channel.latest().unwrap();
    let index = channel.index(signed.meta()).unwrap();
    f.proxy.clear_requests();
    f.proxy.cut_next_get(1 << 20);

    let target = f.target("fetched.img");
    let mut file = sparse_file(&target, signed.meta().image.size);
    let fetched = channel
        .write_image(
            signed.meta(),
            &index,
            &mut file,
            &WriteOptions::default(),
            &NoProgress,
        )
        .unwrap();

    assert_eq!(f.proxy.cuts(), 1);
    assert_eq!(fetched.resumes, 1);
    let image_path = f.path_of(&f.key_of(6, ObjectKind::Image));
    let requests = f.proxy.requests();
    let ranges: Vec<Option<&str>> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path_only() == image_path)
        .map(|r| r.range())
        .collect();
    assert_eq!(ranges.len(), 2, "{requests:#?}");
    assert_eq!(ranges[0], None);
    let resumed_at: u64 = ranges[1]
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("not an open Range: {:?}", ranges[1]));
    // It carried on from where the cut left it, not from the start.
    assert!(resumed_at >= 1 << 20, "resumed at {resumed_at}");
    assert_same_file(&target, &image);
}

#[test]
fn a_500_on_every_second_request_still_completes() {
    let f = Fixture::new();
    let (bundle, image) = f.bundle(7);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    f.proxy.fail_every_second_request(true);

    let target = f.target("fetched.img");
    fetch(&f.trusted_channel(), &target).unwrap();

    assert!(
        f.proxy.injected_errors() >= 2,
        "{}",
        f.proxy.injected_errors()
    );
    assert_same_file(&target, &image);
}

#[test]
fn a_meta_signed_by_an_untrusted_key_is_refused_before_any_image_byte() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(8);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    f.proxy.clear_requests();

    let stranger = SecretKey::generate("someone-else").unwrap();
    let target = f.target("fetched.img");
    let err = fetch(&f.channel(trusting(&[&stranger])), &target).unwrap_err();

    assert!(
        matches!(
            &err,
            ChannelError::Verify(VerifyError::Signature(SignatureError::UntrustedKey { names }))
                if names == &["fleet-test".to_string()]
        ),
        "{err:?}"
    );
    let requests = f.proxy.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path_only()).collect();
    assert_eq!(
        paths,
        [
            f.path_of(&f.config.channel_meta_key()).as_str(),
            f.path_of(&f.key_of(8, ObjectKind::MetaSig)).as_str()
        ]
    );
    assert!(!target.exists());
}

#[test]
fn publish_refuses_a_version_not_greater_than_the_current_one() {
    let f = Fixture::new();
    let (v5, _) = f.bundle(5);
    let (v3, _) = f.bundle(3);
    f.publish(&v5, PublishOptions::default()).unwrap();
    f.proxy.clear_requests();

    let err = f.publish(&v3, PublishOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::NotNewer {
                version: 3,
                current: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "version 3 is not greater than the channel's current version 5"
    );
    // The same version again is not newer either.
    let err = f.publish(&v5, PublishOptions::default()).unwrap_err();
    assert!(matches!(
        err,
        PublishError::NotNewer {
            version: 5,
            current: 5
        }
    ));
    // Refused before any write.
    assert!(writes(&f.proxy.requests()).is_empty());
    assert_eq!(f.trusted_channel().latest().unwrap().meta().version, 5);

    // Forced, the older version is published and the pointer names it.
    let report = f.publish(&v3, force()).unwrap();
    assert_eq!(report.previous.map(|p| p.version), Some(5));
    assert_eq!(f.trusted_channel().latest().unwrap().meta().version, 3);
}

#[test]
fn publishing_the_same_bundle_again_with_force_is_idempotent() {
    let f = Fixture::new();
    let (bundle, image) = f.bundle(9);
    let first = f.publish(&bundle, PublishOptions::default()).unwrap();
    let again = f.publish(&bundle, force()).unwrap();
    assert_eq!(again.uploaded, first.uploaded);
    assert_eq!(again.previous, Some(first.published));

    let target = f.target("fetched.img");
    fetch(&f.trusted_channel(), &target).unwrap();
    assert_same_file(&target, &image);
}

#[test]
fn a_pointer_that_does_not_verify_is_replaced_only_with_force() {
    let f = Fixture::new();
    let stranger = SecretKey::generate("rotated-away").unwrap();
    let (foreign, _) = f.bundle_signed_by(20, &stranger);
    // Someone published with a key this publisher does not trust.
    publish(
        &f.channel(trusting(&[&stranger])),
        &foreign,
        &[&stranger],
        &PublishOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let (ours, _) = f.bundle(2);
    f.proxy.clear_requests();

    let err = f.publish(&ours, PublishOptions::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            PublishError::UntrustedPointer(ChannelError::Verify(VerifyError::Signature(
                SignatureError::UntrustedKey { .. }
            )))
        ),
        "{err:?}"
    );
    assert!(writes(&f.proxy.requests()).is_empty());

    // A pointer that is not even JSON is not trusted either.
    let pointer = f.config.channel_meta_key();
    fs::write(f.server.object_path(&pointer), b"<html>oops</html>").unwrap();
    let err = f.publish(&ours, PublishOptions::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            PublishError::UntrustedPointer(ChannelError::Unreadable { .. })
        ),
        "{err:?}"
    );

    // Nor one too large to be a meta.
    fs::write(f.server.object_path(&pointer), vec![b'{'; 100_000]).unwrap();
    let err = f.publish(&ours, PublishOptions::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            PublishError::UntrustedPointer(ChannelError::Remote(RemoteError::TooLarge { .. }))
        ),
        "{err:?}"
    );

    let report = f.publish(&ours, force()).unwrap();
    assert_eq!(report.previous, None);
    assert_eq!(f.trusted_channel().latest().unwrap().meta().version, 2);
}

#[test]
fn publish_refuses_a_bundle_the_channel_keys_do_not_trust() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(1);
    let stranger = SecretKey::generate("stranger").unwrap();
    // The channel's keys would refuse the meta the fixture's key signs.
    let err = publish(
        &f.channel(trusting(&[&stranger])),
        &bundle,
        &[&f.key],
        &PublishOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            PublishError::Unverified(VerifyError::Signature(SignatureError::UntrustedKey { .. }))
        ),
        "{err:?}"
    );
    assert!(f.proxy.requests().is_empty(), "{:#?}", f.proxy.requests());
}

/// The versions that still have objects in the channel, sorted.
fn stored_versions(f: &Fixture) -> Vec<u64> {
    let dir = f.server.object_path(&f.config.channel_prefix());
    let mut versions: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.split_once('-')?.0.parse().ok()
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[test]
fn keep_prunes_all_but_the_newest_versions() {
    let f = Fixture::new();
    let foreign = f.config.object_key("NOTES.txt");
    f.trusted_channel()
        .remote()
        .put_bytes(&foreign, b"not abnix's")
        .unwrap();
    for version in 1..=3 {
        f.publish(&f.bundle(version).0, PublishOptions::default())
            .unwrap();
    }
    assert_eq!(stored_versions(&f), [1, 2, 3]);

    let report = f.publish(&f.bundle(4).0, keep(2)).unwrap();

    let pruned: Vec<u64> = report.pruned.iter().map(|v| v.version).collect();
    assert_eq!(pruned, [1, 2]);
    assert_eq!(stored_versions(&f), [3, 4]);
    // Every object of a kept version is still there.
    for kind in [ObjectKind::Image, ObjectKind::Index, ObjectKind::MetaSig] {
        assert!(
            f.server.object_path(&f.key_of(3, kind)).exists(),
            "{kind:?}"
        );
    }
    assert!(f.server.object_path(&foreign).exists());
    assert_eq!(f.trusted_channel().latest().unwrap().meta().version, 4);
}

#[test]
fn keep_never_prunes_the_version_just_published() {
    let f = Fixture::new();
    let (v1, image) = f.bundle(1);
    for version in 2..=3 {
        f.publish(&f.bundle(version).0, PublishOptions::default())
            .unwrap();
    }
    // Forcing back to version 1: it is neither of the newest one, but it is
    // what the pointer names now.
    let opts = PublishOptions {
        keep: NonZeroUsize::new(1),
        force: true,
        ..PublishOptions::default()
    };
    f.proxy.clear_requests();
    let report = f.publish(&v1, opts).unwrap();
    assert_eq!(
        report.pruned.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(stored_versions(&f), [1, 3]);
    // Pruning happened after the pointer moved.
    let requests = f.proxy.requests();
    let writes = writes(&requests);
    let pointer = f.path_of(&f.config.channel_meta_key());
    let pointer_at = writes
        .iter()
        .position(|r| r.path_only() == pointer)
        .unwrap();
    assert!(writes[pointer_at + 1..]
        .iter()
        .all(|r| r.method == "POST" && r.path.contains("delete")));

    let target = f.target("fetched.img");
    fetch(&f.trusted_channel(), &target).unwrap();
    assert_same_file(&target, &image);
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn tampered_small_objects_and_a_missing_signature_are_refused() {
    let f = Fixture::new();
    let (bundle, _) = f.bundle(3);
    f.publish(&bundle, PublishOptions::default()).unwrap();
    let channel = f.trusted_channel();
    let meta = channel.latest().unwrap().meta().clone();

    // The kernel reads whole at its signed size: only the check against
    // the meta (what boot control does as it writes it) refuses it.
    flip_byte(&f.server.object_path(&f.key_of(3, ObjectKind::Kernel)), 100);
    let mut kernel = Vec::new();
    channel
        .open_object(&meta.kernel)
        .unwrap()
        .read_to_end(&mut kernel)
        .unwrap();
    let expected = Expected::new(&meta.kernel.object, meta.kernel.size, meta.kernel.sha256);
    let err = expected.check(&kernel).unwrap_err();
    assert!(err.to_string().contains(&meta.kernel.object), "{err}");

    flip_byte(&f.server.object_path(&f.key_of(3, ObjectKind::Index)), 100);
    let err = channel.index(&meta).unwrap_err();
    assert!(
        matches!(&err, ChannelError::Object { object, .. } if *object == meta.index.object),
        "{err:?}"
    );

    fs::remove_file(f.server.object_path(&f.key_of(3, ObjectKind::MetaSig))).unwrap();
    let err = channel.latest().unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::Verify(VerifyError::Signature(SignatureError::NoSignature))
        ),
        "{err:?}"
    );
}
