//! The bucket layer against a real S3 server (s3s-fs), mostly through a
//! fault-injecting proxy that also counts requests.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use abnix_core::progress::Progress;
use abnix_testkit::{credentials_file, FaultProxy, InjectedError, RecordedRequest, S3Server};
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RemoteError, RetryPolicy, Timeouts, TransferLimits,
    PART_SIZE,
};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        max_total: Duration::from_secs(20),
    }
}

fn config(endpoint: String, credentials: CredentialSource) -> RemoteConfig {
    RemoteConfig {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        bucket: "abnix-test".into(),
        prefix: "kiosk".into(),
        channel: "stable".into(),
        path_style: true,
        credentials,
        retry: fast_retry(),
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(5),
        },
        limits: TransferLimits::default(),
    }
}

/// A server requiring signatures, a proxy in front of it, and a remote
/// talking through the proxy with the server's credentials.
struct Setup {
    server: S3Server,
    proxy: FaultProxy,
    dir: TempDir,
    remote: Remote,
}

fn setup() -> Setup {
    setup_with(|_| {})
}

fn setup_with(adjust: impl FnOnce(&mut RemoteConfig)) -> Setup {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &server);
    let mut cfg = config(proxy.endpoint(), CredentialSource::File(creds));
    assert_eq!(cfg.bucket, server.bucket());
    adjust(&mut cfg);
    let remote = Remote::new(cfg).unwrap();
    Setup {
        server,
        proxy,
        dir,
        remote,
    }
}

/// Content shaped like a filesystem image: runs of random bytes (compressed
/// or binary files), of text, and of zeros (free blocks). Seeded.
fn image_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let text = b"Lorem ipsum dolor sit amet, /nix/store/abc-glibc-2.40/lib/libc.so.6 \n";
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let run = rng.random_range(512..64 * 1024).min(len - data.len());
        match rng.random_range(0..3) {
            0 => {
                let start = data.len();
                data.resize(start + run, 0);
                rng.fill_bytes(&mut data[start..]);
            }
            1 => data.extend(text.iter().cycle().take(run)),
            _ => data.resize(data.len() + run, 0),
        }
    }
    data
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn read_all(mut reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

fn gets(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests.iter().filter(|r| r.method == "GET").collect()
}

#[derive(Default)]
struct RecordingProgress {
    total: Mutex<Option<u64>>,
    advanced: AtomicU64,
    finished: AtomicBool,
}

impl Progress for RecordingProgress {
    fn start(&self, _phase: &str, total: Option<u64>) {
        *self.total.lock().unwrap() = total;
    }
    fn advance(&self, bytes: u64) {
        self.advanced.fetch_add(bytes, Ordering::SeqCst);
    }
    fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

#[test]
fn put_and_get_bytes_round_trip_one_request_each() {
    let s = setup();
    assert!(s.proxy.requests().is_empty(), "Remote::new sent requests");
    let key = s.remote.config().channel_meta_key();
    let meta = br#"{"format":1,"version":7}"#;

    s.remote.put_bytes(&key, meta).unwrap();
    let requests = s.proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(fs::read(s.server.object_path(&key)).unwrap(), meta);

    s.proxy.clear_requests();
    assert_eq!(s.remote.get_bytes(&key, 1024).unwrap(), meta);
    let requests = s.proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let get = &requests[0];
    assert_eq!(get.method, "GET");
    assert_eq!(get.path_only(), "/abnix-test/kiosk/stable.meta");
    assert_eq!(get.range(), None);
    // Signed, and the signed Host header reached the server unchanged.
    assert!(get
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256"));
    assert_eq!(
        get.header("host"),
        Some(s.proxy.addr().to_string().as_str())
    );
}

#[test]
fn missing_objects_are_not_found() {
    let s = setup();
    let key = s.remote.config().object_key("1-missing.image");
    let is_not_found =
        |err: RemoteError| matches!(&err, RemoteError::NotFound { key: k } if *k == key);
    assert!(is_not_found(s.remote.get_bytes(&key, 10).unwrap_err()));
    assert!(is_not_found(s.remote.head(&key).unwrap_err()));
    assert!(is_not_found(
        s.remote.open_reader(&key, 0, None).err().unwrap()
    ));
    // Not found is an answer, not a failure: no retries.
    assert_eq!(s.proxy.requests().len(), 3);
}

#[test]
fn get_bytes_refuses_objects_over_max_len() {
    let s = setup();
    let key = s.remote.config().channel_meta_key();
    s.remote.put_bytes(&key, &image_like(10_000, 1)).unwrap();
    match s.remote.get_bytes(&key, 1024) {
        Err(RemoteError::TooLarge { key: k, size, max }) => {
            assert_eq!((k, size, max), (key, 10_000, 1024));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn head_reports_size() {
    let s = setup();
    let key = s.remote.config().object_key("7-x.kernel");
    s.remote.put_bytes(&key, &[7u8; 4321]).unwrap();
    let info = s.remote.head(&key).unwrap();
    assert_eq!((info.key.as_str(), info.size), (key.as_str(), 4321));
}

#[test]
fn large_file_goes_multipart_and_streams_back_identical() {
    let s = setup();
    let data = image_like(100 * MIB, 2);
    let path = s.dir.path().join("image.zst");
    fs::write(&path, &data).unwrap();
    let key = s.remote.config().object_key("7-abc.image");
    let progress = RecordingProgress::default();

    s.remote.put_file(&key, &path, &progress).unwrap();

    assert_eq!(*progress.total.lock().unwrap(), Some(data.len() as u64));
    assert_eq!(progress.advanced.load(Ordering::SeqCst), data.len() as u64);
    assert!(progress.finished.load(Ordering::SeqCst));
    let requests = s.proxy.requests();
    let parts: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("partNumber="))
        .collect();
    assert_eq!(
        parts.len(),
        (data.len() as u64).div_ceil(PART_SIZE) as usize
    );
    assert!(requests
        .iter()
        .any(|r| r.method == "POST" && r.path.contains("uploads")));
    assert!(requests
        .iter()
        .any(|r| r.method == "POST" && r.path.contains("uploadId=")));

    s.proxy.clear_requests();
    let reader = s
        .remote
        .open_reader(&key, 0, Some(data.len() as u64))
        .unwrap();
    assert_eq!(reader.object_len(), data.len() as u64);
    let mut hasher = Sha256::new();
    let mut reader = reader;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    assert_eq!(hasher.finalize().to_vec(), sha256(&data));
    assert_eq!(reader.resumes(), 0);
    assert_eq!(s.proxy.requests().len(), 1);
}

#[test]
fn small_file_is_one_put() {
    let s = setup();
    let path = s.dir.path().join("initrd");
    fs::write(&path, image_like(300_000, 3)).unwrap();
    let key = s.remote.config().object_key("7-abc.initrd");
    let progress = RecordingProgress::default();
    s.remote.put_file(&key, &path, &progress).unwrap();
    let requests = s.proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(progress.advanced.load(Ordering::SeqCst), 300_000);
    assert_eq!(
        fs::read(s.server.object_path(&key)).unwrap(),
        fs::read(&path).unwrap()
    );
}

#[test]
fn put_file_of_a_missing_file_names_it() {
    let s = setup();
    let path = s.dir.path().join("absent");
    let err = s
        .remote
        .put_file("k", &path, &RecordingProgress::default())
        .unwrap_err();
    assert!(matches!(err, RemoteError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(s.proxy.requests().is_empty());
}

/// Deletes the source file once the first part is done, so a later part
/// cannot be read.
struct DeleteSourceAfterFirstPart<'a>(&'a Path);

impl Progress for DeleteSourceAfterFirstPart<'_> {
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {
        let _ = fs::remove_file(self.0);
    }
    fn finish(&self) {}
}

#[test]
fn failed_multipart_upload_is_aborted() {
    let s = setup();
    let path = s.dir.path().join("image.zst");
    fs::write(&path, image_like(8 * PART_SIZE as usize, 4)).unwrap();
    let key = s.remote.config().object_key("8-abc.image");

    let err = s
        .remote
        .put_file(&key, &path, &DeleteSourceAfterFirstPart(&path))
        .unwrap_err();

    assert!(
        matches!(&err, RemoteError::Io { context, .. } if context.contains("image.zst")),
        "{err:?}"
    );
    let requests = s.proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains("uploadId=")),
        "no AbortMultipartUpload in {requests:#?}"
    );
    assert!(!requests
        .iter()
        .any(|r| r.method == "POST" && r.path.contains("uploadId=")));
    assert!(!s.server.object_path(&key).exists());
    let leftovers: Vec<_> = fs::read_dir(s.server.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "parts left on the server: {leftovers:?}"
    );
}

#[test]
fn cut_connection_resumes_from_the_exact_byte() {
    let s = setup();
    let data = image_like(16 * MIB, 5);
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &data).unwrap();
    s.proxy.clear_requests();
    let cut_at = 5_000_001;
    s.proxy.cut_next_get(cut_at);

    let mut reader = s
        .remote
        .open_reader(&key, 0, Some(data.len() as u64))
        .unwrap();
    let read = read_all(&mut reader);

    assert!(read == data, "bytes differ after a resume");
    assert_eq!(reader.resumes(), 1);
    assert_eq!(s.proxy.cuts(), 1);
    let requests = s.proxy.requests();
    let gets = gets(&requests);
    assert_eq!(gets.len(), 2, "{requests:#?}");
    assert_eq!(gets[0].range(), None);
    assert_eq!(gets[1].range(), Some(format!("bytes={cut_at}-").as_str()));
    assert!(gets[1]
        .header("if-match")
        .is_some_and(|etag| etag.len() > 2));
}

#[test]
fn cut_of_a_chosen_get_spares_the_others() {
    let s = setup();
    let data = image_like(2 * MIB, 14);
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &data).unwrap();
    s.proxy.cut_nth_get(2, 1000);

    let mut first = s.remote.open_reader(&key, 0, None).unwrap();
    assert!(read_all(&mut first) == data);
    let mut second = s.remote.open_reader(&key, 0, None).unwrap();
    assert!(read_all(&mut second) == data);

    assert_eq!((first.resumes(), second.resumes()), (0, 1));
    let ranges: Vec<_> = gets(&s.proxy.requests())
        .iter()
        .map(|g| g.range().map(str::to_string))
        .collect();
    assert_eq!(ranges, [None, None, Some("bytes=1000-".to_string())]);
}

#[test]
fn stalled_body_times_out_and_resumes() {
    let s = setup_with(|cfg| cfg.timeouts.read = Duration::from_secs(1));
    let data = image_like(4 * MIB, 6);
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &data).unwrap();
    s.proxy.stall_next_get(MIB as u64);

    let started = Instant::now();
    let mut reader = s.remote.open_reader(&key, 0, None).unwrap();
    assert!(read_all(&mut reader) == data);
    assert_eq!(reader.resumes(), 1);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn progress_resets_the_resume_budget() {
    // Two resumes in a row without progress are allowed; sixteen resumes
    // that each bring new bytes are fine.
    let s = setup_with(|cfg| cfg.retry.max_attempts = 2);
    let data = image_like(16 * MIB, 7);
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &data).unwrap();
    s.proxy.cut_every_get(MIB as u64);

    let mut reader = s.remote.open_reader(&key, 0, None).unwrap();
    assert!(read_all(&mut reader) == data);
    assert_eq!(reader.resumes(), 15);
}

#[test]
fn resumes_without_progress_are_bounded() {
    let s = setup();
    let data = image_like(MIB, 8);
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &data).unwrap();
    s.proxy.clear_requests();
    s.proxy.cut_every_get(0);

    let mut reader = s.remote.open_reader(&key, 0, None).unwrap();
    let err = reader.read(&mut [0u8; 1024]).unwrap_err();
    match RemoteError::from_io(&err) {
        Some(RemoteError::Unreachable { reason, .. }) => {
            assert!(reason.contains("at byte 0"), "{reason}");
            assert!(reason.contains("gave up after 4 resumes"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?} ({err})"),
    }
    assert_eq!(
        gets(&s.proxy.requests()).len(),
        1 + fast_retry().max_attempts as usize
    );
}

#[test]
fn reader_from_an_offset_reads_the_tail() {
    let s = setup();
    let data = image_like(3 * MIB, 9);
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &data).unwrap();
    s.proxy.clear_requests();

    let mut reader = s
        .remote
        .open_reader(&key, 1000, Some(data.len() as u64))
        .unwrap();
    assert_eq!(reader.position(), 1000);
    assert!(read_all(&mut reader) == data[1000..]);
    assert_eq!(gets(&s.proxy.requests())[0].range(), Some("bytes=1000-"));

    let mut at_end = s
        .remote
        .open_reader(&key, data.len() as u64, Some(data.len() as u64))
        .unwrap();
    assert!(read_all(&mut at_end).is_empty());
}

#[test]
fn wrong_expected_length_is_refused_before_the_body() {
    let s = setup();
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &[1u8; 5000]).unwrap();
    match s.remote.open_reader(&key, 0, Some(5001)) {
        Err(RemoteError::WrongLength {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (5001, 5000)),
        other => panic!("expected WrongLength, got {:?}", other.err()),
    }
}

#[test]
fn object_replaced_during_a_read_is_detected_on_resume() {
    let s = setup();
    let key = s.remote.config().object_key("9-abc.image");
    s.remote.put_bytes(&key, &image_like(4 * MIB, 10)).unwrap();
    s.proxy.cut_next_get(MIB as u64);

    let mut reader = s.remote.open_reader(&key, 0, None).unwrap();
    let mut first = vec![0u8; 1000];
    reader.read_exact(&mut first).unwrap();
    s.remote.put_bytes(&key, &image_like(4 * MIB, 11)).unwrap();
    let err = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    assert!(
        matches!(
            RemoteError::from_io(&err),
            Some(RemoteError::ObjectChanged { .. })
        ),
        "{err}"
    );
}

#[test]
fn every_second_request_failing_with_500_still_completes() {
    every_second_request_failing_still_completes(InjectedError::Internal);
}

/// S3's throttling answer: retried with backoff like a server error.
#[test]
fn every_second_request_throttled_with_503_slowdown_still_completes() {
    every_second_request_failing_still_completes(InjectedError::SlowDown);
}

/// Uploads (multipart), a small GET and a resumed streaming read, with
/// every second request answered `error`: everything completes, and every
/// failed request was retried.
fn every_second_request_failing_still_completes(error: InjectedError) {
    let s = setup();
    s.proxy.every_second_request_fails_with(Some(error));
    let key = s.remote.config().channel_meta_key();
    let meta = image_like(3000, 12);
    s.remote.put_bytes(&key, &meta).unwrap();
    assert_eq!(s.remote.get_bytes(&key, 4096).unwrap(), meta);

    let data = image_like(3 * PART_SIZE as usize + 12345, 13);
    let path = s.dir.path().join("image.zst");
    fs::write(&path, &data).unwrap();
    let image_key = s.remote.config().object_key("7-abc.image");
    s.remote
        .put_file(&image_key, &path, &RecordingProgress::default())
        .unwrap();
    s.proxy.cut_next_get(2 * MIB as u64);
    let mut reader = s
        .remote
        .open_reader(&image_key, 0, Some(data.len() as u64))
        .unwrap();
    assert!(read_all(&mut reader) == data);
    assert_eq!(reader.resumes(), 1);
    assert!(
        s.remote
            .list(&s.remote.config().channel_prefix())
            .unwrap()
            .len()
            == 1
    );

    // Every failed request was retried: half of all requests seen failed.
    let requests = s.proxy.requests().len();
    assert!(requests > 10, "{requests} requests");
    assert_eq!(s.proxy.injected_errors(), requests / 2);
}

#[test]
fn server_down_is_unreachable_quickly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let remote = Remote::new(config(endpoint.clone(), CredentialSource::Anonymous)).unwrap();

    let started = Instant::now();
    let err = remote.get_bytes("kiosk/stable.meta", 1024).unwrap_err();
    let elapsed = started.elapsed();

    match &err {
        RemoteError::Unreachable {
            endpoint: e,
            reason,
        } => {
            assert_eq!(e, &endpoint);
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Four attempts with backoffs of at most 100 ms.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn unresponsive_server_is_unreachable_within_max_total() {
    let s = setup_with(|cfg| {
        cfg.timeouts.read = Duration::from_millis(500);
        cfg.retry.max_total = Duration::from_secs(2);
        cfg.retry.max_attempts = 10;
    });
    s.proxy.set_latency(Duration::from_secs(30));

    let started = Instant::now();
    let err = s.remote.get_bytes("kiosk/stable.meta", 1024).unwrap_err();
    let elapsed = started.elapsed();

    assert!(
        matches!(&err, RemoteError::Unreachable { reason, .. } if reason == "no answer within 2s"),
        "{err:?}"
    );
    assert!(elapsed >= Duration::from_millis(1900), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(
        s.proxy.requests().len() >= 2,
        "the read timeout did not retry"
    );
}

#[test]
fn credentials_file_readable_by_others_is_refused_before_any_request() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &server);
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o644)).unwrap();

    let err = Remote::new(config(
        proxy.endpoint(),
        CredentialSource::File(creds.clone()),
    ))
    .err()
    .unwrap();

    let RemoteError::Credentials(message) = &err else {
        panic!("expected Credentials, got {err:?}")
    };
    assert!(message.contains(&creds.display().to_string()), "{message}");
    assert!(message.contains("0644"), "{message}");
    assert!(proxy.requests().is_empty());
}

#[test]
fn wrong_secret_key_is_access_denied() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds.toml");
    fs::write(
        &creds,
        format!(
            "access_key_id = \"{}\"\nsecret_access_key = \"wrong\"\n",
            server.access_key()
        ),
    )
    .unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
    let remote = Remote::new(config(server.endpoint(), CredentialSource::File(creds))).unwrap();

    for err in [
        remote.get_bytes("kiosk/stable.meta", 1024).unwrap_err(),
        remote.put_bytes("kiosk/stable.meta", b"x").unwrap_err(),
    ] {
        assert!(
            matches!(&err, RemoteError::AccessDenied { code, .. } if code == "SignatureDoesNotMatch"),
            "{err:?}"
        );
    }
}

#[test]
fn anonymous_requests_to_an_authenticated_server_are_denied() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr());
    let remote = Remote::new(config(proxy.endpoint(), CredentialSource::Anonymous)).unwrap();

    let err = remote.get_bytes("kiosk/stable.meta", 1024).unwrap_err();

    assert!(
        matches!(&err, RemoteError::AccessDenied { key, code } if key == "kiosk/stable.meta" && code == "AccessDenied"),
        "{err:?}"
    );
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), None);
}

#[test]
fn anonymous_requests_to_a_public_server_work() {
    let server = S3Server::start_public();
    let proxy = FaultProxy::start(server.addr());
    let remote = Remote::new(config(proxy.endpoint(), CredentialSource::Anonymous)).unwrap();
    let key = remote.config().channel_meta_key();

    remote.put_bytes(&key, b"public meta").unwrap();
    assert_eq!(remote.get_bytes(&key, 100).unwrap(), b"public meta");
    assert!(proxy
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none()));
}

#[test]
fn list_pages_through_everything_and_delete_removes_it() {
    let s = setup();
    let channel = s.remote.config().channel_prefix();
    // s3s-fs serves files under the bucket directory as objects; writing
    // them directly is faster than 1001 PUTs.
    let dir = s.server.object_path(&channel);
    fs::create_dir_all(&dir).unwrap();
    let mut expected: Vec<(String, u64)> = (0..1001)
        .map(|i| {
            let name = format!("{i:04}-id.part");
            fs::write(dir.join(&name), vec![b'x'; i % 7]).unwrap();
            (format!("{channel}{name}"), (i % 7) as u64)
        })
        .collect();
    expected.sort();
    s.remote
        .put_bytes(&s.remote.config().channel_meta_key(), b"m")
        .unwrap();
    s.proxy.clear_requests();

    let listed = s.remote.list(&channel).unwrap();

    let listed_pairs: Vec<_> = listed.iter().map(|o| (o.key.clone(), o.size)).collect();
    assert_eq!(listed_pairs, expected);
    let requests = s.proxy.requests();
    assert_eq!(requests.len(), 2, "one request per page of 1000");
    assert!(requests[1].path.contains("continuation-token="));

    s.proxy.clear_requests();
    let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
    s.remote.delete(&keys).unwrap();
    assert_eq!(s.proxy.requests().len(), 2, "one request per 1000 keys");
    assert!(s.remote.list(&channel).unwrap().is_empty());
    // The channel's meta, outside the listed prefix, is still there.
    assert_eq!(s.remote.list("kiosk/").unwrap().len(), 1);
}

#[test]
fn path_style_addressing_with_a_host_name_endpoint() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &server);
    let endpoint = format!("http://localhost:{}", proxy.addr().port());
    let remote = Remote::new(config(endpoint, CredentialSource::File(creds))).unwrap();
    let key = remote.config().channel_meta_key();

    remote.put_bytes(&key, b"meta").unwrap();
    assert_eq!(remote.get_bytes(&key, 100).unwrap(), b"meta");

    let get = gets(&proxy.requests())[0].clone();
    assert_eq!(get.path_only(), "/abnix-test/kiosk/stable.meta");
    assert_eq!(
        get.header("host"),
        Some(format!("localhost:{}", proxy.addr().port()).as_str())
    );
}
