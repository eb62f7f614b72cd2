//! Delta updates against a real S3 server (s3s-fs) behind a proxy that
//! records every request: what is reused, what is fetched and by which
//! Range requests, the fallbacks, and that the target always ends up
//! holding exactly the new image (read back, chunk by chunk and whole).

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::time::Duration;

use abnix_core::pipeline::{PipelineError, WriteOptions};
use abnix_core::progress::NoProgress;
use abnix_formats::chunking::{chunks, ChunkParams};
use abnix_formats::digest::Digest;
use abnix_formats::disk;
use abnix_formats::index::Index;
use abnix_formats::meta::{Artifact, FsType, Image, Meta, FORMAT_VERSION};
use abnix_testkit::images::seeded_random;
use abnix_testkit::{credentials_file, FaultProxy, RecordedRequest, S3Server};
use abnix_updater::channel::Channel;
use abnix_updater::channel::ChannelError;
use abnix_updater::delta::{ActiveSlot, DeltaOptions, DeltaReport, Fallback, LocalChunks};
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RetryPolicy, Timeouts, TransferLimits,
};
use tempfile::TempDir;
use uuid::Uuid;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const IMAGE_LEN: usize = 4 * MIB;

/// The bucket, a proxy in front of it, and a channel through the proxy.
struct Bucket {
    _server: S3Server,
    proxy: FaultProxy,
    channel: Channel,
    dir: TempDir,
}

impl Bucket {
    /// A server requiring signatures.
    fn signed() -> Bucket {
        Bucket::start(S3Server::start(), true)
    }

    /// A public server, for requests the proxy may alter (a signed Range
    /// header cannot be dropped).
    fn public() -> Bucket {
        Bucket::start(S3Server::start_public(), false)
    }

    fn start(server: S3Server, signed: bool) -> Bucket {
        let proxy = FaultProxy::start(server.addr());
        let dir = tempfile::tempdir().unwrap();
        let credentials = match signed {
            true => CredentialSource::File(credentials_file(dir.path(), &server)),
            false => CredentialSource::Anonymous,
        };
        let remote = Remote::new(RemoteConfig {
            endpoint: Some(proxy.endpoint()),
            region: "us-east-1".into(),
            bucket: server.bucket().into(),
            prefix: "kiosk".into(),
            channel: "stable".into(),
            path_style: true,
            credentials,
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
                max_total: Duration::from_secs(20),
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_secs(5),
            },
            limits: TransferLimits::default(),
        })
        .unwrap();
        // write_image_delta takes the meta as verified by the caller: no key
        // is needed here.
        let channel = Channel::new(remote, Default::default());
        Bucket {
            _server: server,
            proxy,
            channel,
            dir,
        }
    }

    /// Cuts `image` into chunks as pack does (default chunking, one zstd
    /// frame each), uploads the compressed object and returns its meta and
    /// index.
    fn publish(&self, version: u64, image: &[u8]) -> (Meta, Index) {
        let mut index = Index::default();
        let mut object = Vec::new();
        for chunk in chunks(image, ChunkParams::default()).unwrap() {
            let chunk = chunk.unwrap();
            let frame = zstd::bulk::compress(&chunk.data, 1).unwrap();
            index.push(
                chunk.data.len() as u32,
                frame.len() as u32,
                Digest::of(&chunk.data),
            );
            object.extend_from_slice(&frame);
        }
        let name = format!("{version}.image.zst");
        let remote = self.channel.remote();
        remote
            .put_bytes(&remote.config().object_key(&name), &object)
            .unwrap();
        let artifact = |object: &str| Artifact {
            object: object.into(),
            size: 0,
            sha256: Digest::of(b""),
        };
        let meta = Meta {
            format: FORMAT_VERSION,
            version,
            id: Uuid::from_u128(version.into()),
            label: format!("test {version}"),
            arch: abnix_formats::layout::Arch::X86_64,
            published: None,
            image: Image {
                object: name,
                compressed_size: object.len() as u64,
                size: image.len() as u64,
                sha256: Digest::of(image),
                fs: FsType::Ext4,
            },
            index: artifact("index"),
            kernel: artifact("kernel"),
            initrd: artifact("initrd"),
            cmdline: String::new(),
        };
        (meta, index)
    }

    /// A slot: a file larger than the images, holding `contents` at its
    /// start.
    fn slot(&self, name: &str, contents: &[u8]) -> File {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.dir.path().join(name))
            .unwrap();
        file.write_all(contents).unwrap();
        file.set_len((IMAGE_LEN + MIB) as u64).unwrap();
        file
    }

    /// GETs of the image object of `meta` since the record was cleared.
    fn image_gets(&self, meta: &Meta) -> Vec<RecordedRequest> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path_only().ends_with(&meta.image.object))
            .collect()
    }

    /// Writes `meta`'s image into `target` by a delta update, read-back on.
    fn update(
        &self,
        meta: &Meta,
        index: &Index,
        target: &mut File,
        local: LocalChunks<'_, File>,
        opts: DeltaOptions,
    ) -> Result<DeltaReport, ChannelError> {
        self.proxy.clear_requests();
        let opts = DeltaOptions {
            write: WriteOptions {
                verify_readback: true,
                ..WriteOptions::default()
            },
            ..opts
        };
        self.channel
            .write_image_delta(meta, index, target, local, &opts, &NoProgress)
    }
    /// [`Bucket::update_from`] with the default options.
    fn delta(
        &self,
        meta: &Meta,
        index: &Index,
        active: Option<(&[u8], &Index)>,
    ) -> Result<(DeltaReport, File), ChannelError> {
        self.update_from(meta, index, active, DeltaOptions::default())
    }

    /// Writes `meta`'s image into a fresh target slot by a delta update from
    /// an active slot holding `active` (contents and their index), or from
    /// nothing.
    fn update_from(
        &self,
        meta: &Meta,
        index: &Index,
        active: Option<(&[u8], &Index)>,
        opts: DeltaOptions,
    ) -> Result<(DeltaReport, File), ChannelError> {
        let mut target = self.slot("target", &[]);
        let local = LocalChunks {
            active: active.map(|(contents, index)| ActiveSlot {
                disk: self.slot("active", contents),
                index,
            }),
            target_may_hold_image: false,
        };
        let report = self.update(meta, index, &mut target, local, opts)?;
        Ok((report, target))
    }
}

/// Content shaped like a filesystem image: random runs (binaries), text and
/// zeros.
fn image(seed: u64) -> Vec<u8> {
    let mut image = seeded_random(IMAGE_LEN, seed);
    for (i, block) in image.chunks_mut(256 * KIB).enumerate() {
        match i % 3 {
            0 => block[..64 * KIB].fill(0),
            1 => block[..32 * KIB]
                .copy_from_slice(&b"/nix/store/abc-glibc/lib ".repeat(2 * KIB)[..32 * KIB]),
            _ => {}
        }
    }
    image
}

/// `image` with `len` bytes at `at` replaced by random ones.
fn rewritten(image: &[u8], at: usize, len: usize, seed: u64) -> Vec<u8> {
    let mut changed = image.to_vec();
    changed[at..at + len].copy_from_slice(&seeded_random(len, seed));
    changed
}

/// The first `len` bytes of `file`.
fn contents(file: &mut File, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    disk::read_at(file, 0, &mut data).unwrap();
    data
}

/// `bytes=<first>-<last>` of a request, as `first..last + 1`.
fn requested_range(request: &RecordedRequest) -> (u64, u64) {
    let range = request.range().expect("a Range header");
    let (first, last) = range
        .strip_prefix("bytes=")
        .unwrap()
        .split_once('-')
        .unwrap();
    (first.parse().unwrap(), last.parse::<u64>().unwrap() + 1)
}

#[test]
fn the_same_image_twice_downloads_nothing() {
    let bucket = Bucket::signed();
    let v1 = image(1);
    let (meta, index) = bucket.publish(1, &v1);
    let (report, mut target) = bucket.delta(&meta, &index, Some((&v1, &index))).unwrap();
    assert_eq!(report.fallback, None);
    assert_eq!(report.copied.chunks, index.chunks.len());
    assert_eq!(
        (report.fetched.chunks, report.downloaded, report.requests),
        (0, 0, 0)
    );
    assert!(bucket.image_gets(&meta).is_empty());
    assert_eq!(contents(&mut target, v1.len()), v1);
}

#[test]
fn nothing_in_common_is_a_plain_full_download() {
    let bucket = Bucket::signed();
    let (old_meta, old_index) = bucket.publish(1, &image(1));
    let v2 = image(2);
    let (meta, index) = bucket.publish(2, &v2);
    let (report, mut target) = bucket
        .delta(&meta, &index, Some((&image(1), &old_index)))
        .unwrap();
    // The zero and text runs are shared, which is too little.
    assert!(
        matches!(report.fallback, Some(Fallback::TooLittleToGain { .. })),
        "{report}"
    );
    let gets = bucket.image_gets(&meta);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].range(),
        None,
        "one sequential GET of the whole object"
    );
    assert_eq!(report.downloaded, meta.image.compressed_size);
    assert_eq!(
        report.downloaded,
        bucket.proxy.body_bytes(),
        "counted as received"
    );
    assert_eq!(contents(&mut target, v2.len()), v2);
    assert!(bucket.image_gets(&old_meta).is_empty());
}

#[test]
fn all_new_by_ranges_when_told_to_try() {
    let bucket = Bucket::signed();
    let (_, old_index) = bucket.publish(1, &seeded_random(IMAGE_LEN, 1));
    let v2 = seeded_random(IMAGE_LEN, 2);
    let (meta, index) = bucket.publish(2, &v2);
    let mut opts = DeltaOptions {
        min_saving_percent: 0,
        ..DeltaOptions::default()
    };
    // Small requests, so that several are in flight.
    opts.coalescing.max_request = 512 * KIB as u64;
    let (report, mut target) = bucket
        .update_from(&meta, &index, Some((&[], &old_index)), opts)
        .unwrap();
    assert_eq!(report.fallback, None);
    assert_eq!(report.fetched.chunks, index.chunks.len());
    assert_eq!(report.copied.chunks, 0);
    let gets = bucket.image_gets(&meta);
    assert_eq!(gets.len(), report.requests);
    assert!(gets.len() >= 8, "{} requests", gets.len());
    // The ranges tile the object exactly.
    let mut ranges: Vec<(u64, u64)> = gets.iter().map(requested_range).collect();
    ranges.sort_unstable();
    assert_eq!(ranges[0].0, 0);
    assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0), "{ranges:?}");
    assert_eq!(ranges.last().unwrap().1, meta.image.compressed_size);
    assert_eq!(report.downloaded, meta.image.compressed_size);
    assert_eq!(contents(&mut target, v2.len()), v2);
}

#[test]
fn shifted_content_is_reused_and_only_the_change_fetched() {
    let bucket = Bucket::signed();
    let v1 = image(1);
    let (_, old_index) = bucket.publish(1, &v1);
    // 1000 bytes inserted near the start shift everything after them; 100
    // KiB further on are rewritten.
    let mut v2 = v1[..MIB].to_vec();
    v2.extend_from_slice(&seeded_random(1000, 7));
    v2.extend_from_slice(&v1[MIB..]);
    v2[3 * MIB..3 * MIB + 100 * KIB].copy_from_slice(&seeded_random(100 * KIB, 8));
    v2.truncate(IMAGE_LEN);
    let (meta, index) = bucket.publish(2, &v2);
    let (report, mut target) = bucket
        .delta(&meta, &index, Some((&v1, &old_index)))
        .unwrap();
    assert_eq!(report.fallback, None, "{report}");
    assert!(
        report.copied.chunks * 10 >= index.chunks.len() * 8,
        "most chunks come from the active slot: {report}"
    );
    assert!(
        report.downloaded * 4 < meta.image.compressed_size,
        "{report}, of {}",
        meta.image.compressed_size
    );
    // Every byte downloaded was asked for by a Range request.
    let gets = bucket.image_gets(&meta);
    assert_eq!(gets.len(), report.requests);
    let asked: u64 = gets.iter().map(requested_range).map(|(a, b)| b - a).sum();
    assert_eq!(asked, report.downloaded);
    assert_eq!(contents(&mut target, v2.len()), v2);
}

#[test]
fn a_corrupted_local_chunk_is_fetched_instead() {
    let bucket = Bucket::signed();
    let v1 = image(1);
    let (meta, index) = bucket.publish(1, &v1);
    let mut damaged = v1.clone();
    let victim = &index.chunks[5];
    damaged[victim.offset as usize + 10] ^= 0xff;
    let (report, mut target) = bucket
        .delta(&meta, &index, Some((&damaged, &index)))
        .unwrap();
    assert_eq!(report.refetched, 1, "{report}");
    assert_eq!(report.fetched.chunks, 1);
    assert_eq!(report.copied.chunks, index.chunks.len() - 1);
    let gets = bucket.image_gets(&meta);
    assert_eq!(gets.len(), 1);
    assert_eq!(
        requested_range(&gets[0]),
        (
            victim.compressed_offset,
            victim.compressed_offset + u64::from(victim.compressed_len)
        )
    );
    assert_eq!(contents(&mut target, v1.len()), v1);
}

#[test]
fn an_interrupted_attempt_is_resumed() {
    let bucket = Bucket::signed();
    let v2 = image(2);
    let (meta, index) = bucket.publish(2, &v2);
    // The attempt wrote the first 2.5 MiB, then stopped.
    let written = 5 * MIB / 2;
    let mut target = bucket.slot("target", &v2[..written]);
    let report = bucket
        .update(
            &meta,
            &index,
            &mut target,
            LocalChunks {
                active: None,
                target_may_hold_image: true,
            },
            DeltaOptions::default(),
        )
        .unwrap();
    assert_eq!(report.fallback, None, "{report}");
    let whole_before = index
        .chunks
        .iter()
        .filter(|c| c.offset + u64::from(c.len) <= written as u64)
        .count();
    assert_eq!(report.kept.chunks, whole_before, "{report}");
    assert_eq!(report.fetched.chunks, index.chunks.len() - whole_before);
    let first_fetched = &index.chunks[whole_before];
    for get in bucket.image_gets(&meta) {
        assert!(requested_range(&get).0 >= first_fetched.compressed_offset);
    }
    assert_eq!(contents(&mut target, v2.len()), v2);
}

#[test]
fn kept_copied_and_fetched_in_one_update() {
    let bucket = Bucket::signed();
    let v1 = image(1);
    let (_, old_index) = bucket.publish(1, &v1);
    let v2 = rewritten(&v1, 3 * MIB, 200 * KIB, 9);
    let (meta, index) = bucket.publish(2, &v2);
    // An attempt at v2 wrote its first 1.5 MiB, then stopped.
    let mut before = v2[..3 * MIB / 2].to_vec();
    let mut target = bucket.slot("target", &before);
    before.resize(IMAGE_LEN, 0);
    let report = bucket
        .update(
            &meta,
            &index,
            &mut target,
            LocalChunks {
                active: Some(ActiveSlot {
                    disk: bucket.slot("active", &v1),
                    index: &old_index,
                }),
                target_may_hold_image: true,
            },
            DeltaOptions::default(),
        )
        .unwrap();
    // Each chunk: kept where the target already held its bytes, else copied
    // where v1 has the same bytes, else fetched.
    let in_v1: HashSet<Digest> = old_index.chunks.iter().map(|c| c.sha256).collect();
    let (mut kept, mut copied, mut fetched) = (0, 0, 0);
    for chunk in &index.chunks {
        let bytes = chunk.offset as usize..(chunk.offset + u64::from(chunk.len)) as usize;
        if before[bytes.clone()] == v2[bytes] {
            kept += 1;
        } else if in_v1.contains(&chunk.sha256) {
            copied += 1;
        } else {
            fetched += 1;
        }
    }
    assert!(
        kept > 0 && copied > 0 && fetched > 0,
        "{kept} {copied} {fetched}"
    );
    assert_eq!(report.fallback, None, "{report}");
    assert_eq!(
        (
            report.kept.chunks,
            report.copied.chunks,
            report.fetched.chunks,
            report.refetched
        ),
        (kept, copied, fetched, 0),
        "{report}"
    );
    assert_eq!(bucket.image_gets(&meta).len(), report.requests);
    assert_eq!(contents(&mut target, v2.len()), v2);
}

#[test]
fn missing_ranges_are_fetched_several_at_once_within_the_bound() {
    let bucket = Bucket::signed();
    let (_, old_index) = bucket.publish(1, &seeded_random(IMAGE_LEN, 1));
    let v2 = seeded_random(IMAGE_LEN, 2);
    let (meta, index) = bucket.publish(2, &v2);
    let mut opts = DeltaOptions {
        min_saving_percent: 0,
        parallel_requests: 3,
        ..DeltaOptions::default()
    };
    opts.coalescing.max_request = 256 * KIB as u64;
    // Every request waits at the proxy, so requests in flight overlap there.
    bucket.proxy.set_latency(Duration::from_millis(100));
    let (report, mut target) = bucket
        .update_from(&meta, &index, Some((&[], &old_index)), opts)
        .unwrap();
    assert!(report.requests >= 12, "{report}");
    let most = bucket.proxy.max_open_requests();
    assert!((2..=3).contains(&most), "{most} requests open at once");
    assert_eq!(contents(&mut target, v2.len()), v2);
}

#[test]
fn a_server_that_ignores_ranges_gets_a_full_download() {
    let bucket = Bucket::public();
    let v1 = image(1);
    let (_, old_index) = bucket.publish(1, &v1);
    let v2 = rewritten(&v1, 2 * MIB, 200 * KIB, 9);
    let (meta, index) = bucket.publish(2, &v2);
    bucket.proxy.ignore_ranges(true);
    let (report, mut target) = bucket
        .delta(&meta, &index, Some((&v1, &old_index)))
        .unwrap();
    assert_eq!(
        report.fallback,
        Some(Fallback::RangesUnsupported),
        "{report}"
    );
    assert_eq!(contents(&mut target, v2.len()), v2);
}

/// Everything is copied, so the first range request is the refetch of the
/// damaged chunk: that is where the server shows it ignores ranges.
#[test]
fn a_server_that_ignores_ranges_gets_a_full_download_when_refetching() {
    let bucket = Bucket::public();
    let v1 = image(1);
    let (meta, index) = bucket.publish(1, &v1);
    let mut damaged = v1.clone();
    damaged[index.chunks[5].offset as usize + 10] ^= 0xff;
    bucket.proxy.ignore_ranges(true);
    let (report, mut target) = bucket
        .delta(&meta, &index, Some((&damaged, &index)))
        .unwrap();
    assert_eq!(
        report.fallback,
        Some(Fallback::RangesUnsupported),
        "{report}"
    );
    assert!(
        report.to_string().contains("ignores Range requests"),
        "{report}"
    );
    let gets = bucket.image_gets(&meta);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[0].range().is_some(), "the refetch asks for a range");
    assert_eq!(gets[1].range(), None, "then the whole object");
    assert_eq!(report.downloaded, meta.image.compressed_size);
    assert_eq!(report.fetched.chunks, index.chunks.len());
    assert_eq!(contents(&mut target, v1.len()), v1);
}

#[test]
fn without_a_local_source_the_whole_image_is_downloaded() {
    let bucket = Bucket::signed();
    let v1 = image(1);
    let (meta, index) = bucket.publish(1, &v1);
    let (report, mut target) = bucket.delta(&meta, &index, None).unwrap();
    assert_eq!(report.fallback, Some(Fallback::NoLocalSource));
    assert_eq!(bucket.image_gets(&meta).len(), 1);
    assert_eq!(contents(&mut target, v1.len()), v1);
}

#[test]
fn the_read_back_checks_the_whole_image_hash() {
    let bucket = Bucket::signed();
    let v1 = image(1);
    let (mut meta, index) = bucket.publish(1, &v1);
    // Every chunk matches the index, but the meta names another image.
    meta.image.sha256 = Digest::of(b"another image");
    let error = bucket
        .delta(&meta, &index, Some((&v1, &index)))
        .unwrap_err();
    assert!(
        matches!(
            error,
            ChannelError::Image {
                source: PipelineError::ImageMismatch { .. },
                ..
            }
        ),
        "{error}"
    );
}
