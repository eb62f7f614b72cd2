//! The bucket (DESIGN §4): an S3 client for any S3-compatible store, with
//! retries, resumable streaming reads and multipart uploads.
//!
//! The API is blocking, because the rest of abnix is threads: a [`Remote`]
//! owns a small tokio runtime and blocks on the aws-sdk-s3 calls. It works
//! from any plain thread, and from several at once; it must not be called
//! from inside an async context (tokio refuses to block a thread that drives
//! async tasks, and panics).
//!
//! Requests are few: creating a [`Remote`] sends none (no HeadBucket, no
//! ListBuckets); [`Remote::get_bytes`] is one GET.

mod credentials;
mod error;
mod reader;
mod retry;
mod upload;

use std::sync::Arc;

use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use serde::Deserialize;
use tokio::runtime::Runtime;
use tracing::debug;

pub use credentials::{CredentialSource, SYSTEMD_CREDENTIAL};
pub use error::RemoteError;
pub use reader::ObjectReader;
pub use retry::{MinRate, RetryPolicy, Timeouts, TransferLimits};
pub use upload::PART_SIZE;

use error::RequestTarget;

/// Where the bucket is and how to talk to it. The updater's config file maps
/// onto this (`deny_unknown_fields`: a typo is an error, not a default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Custom endpoint URL (`https://s3.example.net`, `http://127.0.0.1:8014`);
    /// none for AWS S3 itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix of everything abnix stores; may be empty.
    #[serde(default)]
    pub prefix: String,
    pub channel: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of
    /// virtual-hosted style (`bucket.endpoint/key`): most self-hosted stores
    /// (MinIO, Garage, s3s-fs) need it unless set up with a wildcard domain.
    #[serde(default)]
    pub path_style: bool,
    #[serde(default)]
    pub credentials: CredentialSource,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Set by the program, not read from a file.
    #[serde(skip)]
    pub limits: TransferLimits,
}

impl RemoteConfig {
    /// `<prefix>/`, or nothing for an empty prefix.
    fn key_prefix(&self) -> String {
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        }
    }

    /// The channel's pointer: `<prefix>/<channel>.meta`.
    pub fn channel_meta_key(&self) -> String {
        format!("{}{}.meta", self.key_prefix(), self.channel)
    }

    /// Where the channel's per-version objects live: `<prefix>/<channel>/`.
    pub fn channel_prefix(&self) -> String {
        format!("{}{}/", self.key_prefix(), self.channel)
    }

    /// A per-version object: `<prefix>/<channel>/<name>`.
    pub fn object_key(&self, name: &str) -> String {
        format!("{}{name}", self.channel_prefix())
    }

    /// The endpoint as named in errors.
    fn endpoint_label(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    fn validate(&self) -> Result<(), RemoteError> {
        let invalid = |what: &str| Err(RemoteError::Config(what.to_string()));
        if self.bucket.is_empty() {
            return invalid("bucket is empty");
        }
        if self.region.is_empty() {
            return invalid("region is empty");
        }
        if self.channel.is_empty() || self.channel.contains('/') {
            return invalid("channel must be non-empty and contain no '/'");
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(RemoteError::Config(format!(
                    "endpoint {endpoint:?} is not an http:// or https:// URL"
                )));
            }
        }
        Ok(())
    }
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A connection to the bucket. Cheap to clone; clones share the runtime and
/// the connection pool. Blocking: call it from plain threads, never from
/// inside an async context (see the module documentation).
#[derive(Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

// Shared by the updater's threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Remote>();
};

/// What a [`Remote`] and its readers share.
struct Shared {
    config: RemoteConfig,
    endpoint: String,
    client: Client,
    runtime: Runtime,
    /// When [`TransferLimits::deadline`] passes.
    deadline: Option<tokio::time::Instant>,
}

impl Shared {
    /// Runs a request to its end, or fails once the run's deadline passes.
    fn call<T>(
        &self,
        key: &str,
        request: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        let Some(deadline) = self.deadline else {
            return self.runtime.block_on(request);
        };
        self.runtime.block_on(async {
            tokio::time::timeout_at(deadline, request)
                .await
                .unwrap_or_else(|_| Err(self.deadline_passed(key)))
        })
    }

    fn deadline_passed(&self, key: &str) -> RemoteError {
        RemoteError::Deadline {
            key: key.to_string(),
            deadline: self.config.limits.deadline.unwrap_or_default(),
        }
    }

    fn target<'a>(&'a self, key: &'a str) -> RequestTarget<'a> {
        RequestTarget {
            endpoint: &self.endpoint,
            bucket: &self.config.bucket,
            key,
            max_total: self.config.retry.max_total,
        }
    }
}

/// Most keys one DeleteObjects request may carry (S3 API limit).
const DELETE_BATCH: usize = 1000;
/// The most keys S3 returns in one page of a listing.
const LIST_PAGE: usize = 1000;

impl Remote {
    /// Builds the client; sends no request. Loads credentials now, so a
    /// refused credentials file fails here.
    pub fn new(config: RemoteConfig) -> Result<Remote, RemoteError> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("abnix-s3")
            .enable_all()
            .build()
            .map_err(|source| RemoteError::Io {
                context: "starting the s3 runtime".into(),
                source,
            })?;

        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style)
            .retry_config(config.retry.sdk_retry_config())
            // The default partition shares one retry quota between all
            // clients of the process; retries here are bounded by the policy
            // instead, per request.
            .retry_partition(
                RetryPartition::custom("abnix")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .timeout_config(retry::sdk_timeout_config(&config.timeouts, &config.retry))
            // Download bodies are watched by ObjectReader's own read timeout,
            // which only runs while the reader waits for data, so a slow
            // consumer is never mistaken for a stalled server.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .upload_enabled(true)
                    .download_enabled(false)
                    .build(),
            )
            // The SDK's default CRC checksums (aws-chunked uploads) are not
            // understood by every S3-compatible store; abnix verifies every
            // artifact with SHA-256 from the signed meta anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder = match &config.credentials {
            CredentialSource::File(path) => {
                builder.credentials_provider(credentials::read_credentials_file(path)?)
            }
            source @ (CredentialSource::Systemd { .. } | CredentialSource::Profile { .. }) => {
                let _inside = runtime.enter();
                builder.credentials_provider(credentials::profile_provider(
                    source,
                    &Region::new(config.region.clone()),
                )?)
            }
            CredentialSource::Chain => {
                let chain = runtime.block_on(
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(Region::new(config.region.clone()))
                        .build(),
                );
                builder.credentials_provider(chain)
            }
            // No credentials provider: the SigV4 scheme has no identity, so
            // the SDK falls back to sending requests unsigned.
            CredentialSource::Anonymous => builder.allow_no_auth(),
        };
        let client = Client::from_conf(builder.build());
        // The tokio clock must be read inside the runtime.
        let deadline = config.limits.deadline.map(|deadline| {
            let _inside = runtime.enter();
            tokio::time::Instant::now() + deadline
        });
        Ok(Remote {
            shared: Arc::new(Shared {
                endpoint: config.endpoint_label(),
                config,
                client,
                runtime,
                deadline,
            }),
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.shared.config
    }

    fn bucket(&self) -> &str {
        &self.shared.config.bucket
    }

    /// The whole object at `key`, refused with [`RemoteError::TooLarge`]
    /// when the server announces more than `max_len` bytes (the body is then
    /// dropped, not read). One GET.
    pub fn get_bytes(&self, key: &str, max_len: u64) -> Result<Vec<u8>, RemoteError> {
        let mut reader = self.open_reader(key, 0, None)?;
        let size = reader.object_len();
        if size > max_len {
            return Err(RemoteError::TooLarge {
                key: key.to_string(),
                size,
                max: max_len,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = reader.next_chunk()? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Streams the object at `key` from byte `start_offset` on, resuming
    /// transparently when the connection breaks (see [`ObjectReader`]).
    /// `expected_len` is the whole object's length, if known (from the
    /// meta): a different length is refused before any body byte is read.
    pub fn open_reader(
        &self,
        key: &str,
        start_offset: u64,
        expected_len: Option<u64>,
    ) -> Result<ObjectReader, RemoteError> {
        ObjectReader::open(self.shared.clone(), key, start_offset, expected_len)
    }

    /// Streams bytes `start..end` of the object at `key`, whose whole length
    /// is `object_len` (from the meta): one GET with `Range:
    /// bytes=<start>-<end - 1>`, resumed like [`Remote::open_reader`]. A
    /// server that answers with the whole object instead is refused with
    /// [`RemoteError::RangeIgnored`] before any body byte is read; an empty
    /// range sends no request.
    pub(crate) fn open_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        object_len: u64,
    ) -> Result<ObjectReader, RemoteError> {
        ObjectReader::open_range(self.shared.clone(), key, start, end, object_len)
    }

    /// Size of the object at `key`.
    pub fn head(&self, key: &str) -> Result<ObjectInfo, RemoteError> {
        let shared = &self.shared;
        let request = shared
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .send();
        let output = shared.call(key, async {
            request
                .await
                .map_err(|err| shared.target(key).classify(err))
        })?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
        })
    }

    /// Uploads `bytes` to `key` in one PUT (meant for small objects: metas,
    /// signatures).
    pub fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), RemoteError> {
        let shared = &self.shared;
        let request = shared
            .client
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(ByteStream::from(bytes.to_vec()))
            .send();
        shared.call(key, async {
            request
                .await
                .map_err(|err| shared.target(key).classify(err))
        })?;
        debug!(key, len = bytes.len(), "uploaded");
        Ok(())
    }

    /// Uploads the file at `path` to `key`: one PUT for small files,
    /// a multipart upload (several parts in flight) for large ones.
    pub fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        progress: &dyn abnix_core::progress::Progress,
    ) -> Result<(), RemoteError> {
        upload::put_file(&self.shared, key, path, progress)
    }

    /// Every object whose key starts with `prefix` (a key prefix, not a
    /// directory: `"prod/stable/"` lists that channel's objects), in key
    /// order. Follows continuation tokens through all pages.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, RemoteError> {
        Ok(self.list_at_most(prefix, usize::MAX)?.0)
    }

    /// Lists at most `max` objects under `prefix`, in key order, and
    /// whether the bucket holds more: a prefix others can write to cannot
    /// make the listing endless. Asks for no more keys than it keeps.
    pub fn list_at_most(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<(Vec<ObjectInfo>, bool), RemoteError> {
        let shared = &self.shared;
        let mut objects = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let room = max - objects.len();
            let request = shared
                .client
                .list_objects_v2()
                .bucket(self.bucket())
                .prefix(prefix)
                .max_keys(i32::try_from(room.clamp(1, LIST_PAGE)).expect("at most a page"))
                .set_continuation_token(continuation.take())
                .send();
            let page = shared.call(prefix, async {
                request
                    .await
                    .map_err(|err| shared.target(prefix).classify(err))
            })?;
            objects.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| {
                        Some(ObjectInfo {
                            key: object.key()?.to_string(),
                            size: object.size().unwrap_or(0).max(0) as u64,
                        })
                    })
                    .take(room),
            );
            let more = page.is_truncated() == Some(true);
            match page.next_continuation_token() {
                Some(_) if more && objects.len() == max => return Ok((objects, true)),
                Some(token) if more => continuation = Some(token.to_string()),
                _ => return Ok((objects, false)),
            }
        }
    }

    /// Deletes `keys` (missing keys are not an error, as in S3), up to
    /// 1000 per request.
    pub fn delete(&self, keys: &[String]) -> Result<(), RemoteError> {
        let shared = &self.shared;
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| RemoteError::Other(format!("building delete request: {err}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|err| RemoteError::Other(format!("building delete request: {err}")))?;
            let request = shared
                .client
                .delete_objects()
                .bucket(self.bucket())
                .delete(delete)
                .send();
            let output = shared.call(&batch[0], async {
                request
                    .await
                    .map_err(|err| shared.target(&batch[0]).classify(err))
            })?;
            // Per-key failures come inside a 200 answer, with an S3 code.
            if let Some(failed) = output.errors().first() {
                let key = failed.key().unwrap_or(&batch[0]);
                return Err(shared.target(key).classify_response(
                    200,
                    failed.code(),
                    failed.message(),
                ));
            }
            debug!(count = batch.len(), "deleted");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> RemoteConfig {
        RemoteConfig {
            endpoint: None,
            region: "eu-west-1".into(),
            bucket: "fleet".into(),
            prefix: prefix.into(),
            channel: "stable".into(),
            path_style: false,
            credentials: CredentialSource::Anonymous,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            limits: TransferLimits::default(),
        }
    }

    #[test]
    fn keys_with_prefix() {
        for prefix in ["kiosk", "/kiosk/", "kiosk/"] {
            let c = config(prefix);
            assert_eq!(c.channel_meta_key(), "kiosk/stable.meta");
            assert_eq!(c.channel_prefix(), "kiosk/stable/");
            assert_eq!(c.object_key("7-abc.image"), "kiosk/stable/7-abc.image");
        }
    }

    #[test]
    fn keys_without_prefix_have_no_leading_slash() {
        for prefix in ["", "/"] {
            let c = config(prefix);
            assert_eq!(c.channel_meta_key(), "stable.meta");
            assert_eq!(c.object_key("7-abc.image"), "stable/7-abc.image");
        }
    }

    #[test]
    fn invalid_configs_are_named() {
        let mut c = config("");
        c.channel = "a/b".into();
        assert!(c.validate().unwrap_err().to_string().contains("channel"));
        let mut c = config("");
        c.bucket.clear();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bucket is empty"));
        let mut c = config("");
        c.endpoint = Some("127.0.0.1:9000".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not an http"));
    }

    #[test]
    fn config_from_toml() {
        let c: RemoteConfig = toml::from_str(
            r#"
            endpoint = "http://127.0.0.1:8014"
            region = "garage"
            bucket = "fleet"
            prefix = "kiosk"
            channel = "stable"
            path_style = true
            credentials = { file = "/var/lib/abnix/s3" }
            retry = { max_attempts = 3 }
            timeouts = { connect_secs = 2 }
            "#,
        )
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:8014"));
        assert!(c.path_style);
        assert_eq!(
            c.credentials,
            CredentialSource::File("/var/lib/abnix/s3".into())
        );
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.timeouts.connect, std::time::Duration::from_secs(2));
        assert_eq!(c.timeouts.read, Timeouts::default().read);
    }

    #[test]
    fn config_defaults_and_rejections() {
        let c: RemoteConfig =
            toml::from_str("region = \"r\"\nbucket = \"b\"\nchannel = \"c\"\n").unwrap();
        assert_eq!(c.credentials, CredentialSource::Chain);
        assert!(!c.path_style);
        assert_eq!(c.prefix, "");
        let err = toml::from_str::<RemoteConfig>(
            "region = \"r\"\nbucket = \"b\"\nchannel = \"c\"\npathstyle = true\n",
        )
        .unwrap_err();
        assert!(err.message().contains("unknown field `pathstyle`"), "{err}");
        let err = toml::from_str::<RemoteConfig>("region = \"r\"\nbucket = \"b\"\n").unwrap_err();
        assert!(err.message().contains("missing field `channel`"), "{err}");
    }
}
