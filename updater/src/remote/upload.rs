//! Uploading files: one PUT when small, a multipart upload when large.

use std::path::Path;

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::error::innermost_message;
use super::retry::sdk_upload_timeout_config;
use super::{RemoteError, Shared};
use abnix_core::progress::Progress;

/// Size of one part of a multipart upload; files up to this size go in one
/// PUT.
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts uploaded at once: enough to fill a link with per-request latency,
/// few enough to keep memory and connections modest.
const PARTS_IN_FLIGHT: usize = 4;
/// S3 allows at most 10 000 parts; larger files get larger parts.
const MAX_PARTS: u64 = 10_000;

pub(super) fn put_file(
    shared: &Shared,
    key: &str,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(), RemoteError> {
    let size = std::fs::metadata(path)
        .map_err(|source| RemoteError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?
        .len();
    progress.start(&format!("uploading {key}"), Some(size));
    if size <= PART_SIZE {
        put_single(shared, key, path, size)?;
        progress.advance(size);
    } else {
        shared
            .runtime
            .block_on(put_multipart(shared, key, path, size, progress))?;
    }
    progress.finish();
    debug!(key, size, "uploaded");
    Ok(())
}

/// A part of `path` as a request body, read from disk as it is sent (and
/// re-read if the SDK retries).
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<ByteStream, RemoteError> {
    ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .map_err(|err| RemoteError::Io {
            context: format!("reading {}", path.display()),
            source: std::io::Error::other(innermost_message(&err)),
        })
}

fn put_single(shared: &Shared, key: &str, path: &Path, size: u64) -> Result<(), RemoteError> {
    shared.runtime.block_on(async {
        let body = file_body(path, 0, size).await?;
        shared
            .client
            .put_object()
            .bucket(&shared.config.bucket)
            .key(key)
            .content_length(size as i64)
            .body(body)
            .customize()
            .config_override(upload_override(shared))
            .send()
            .await
            .map_err(|err| shared.target(key).classify(err))?;
        Ok(())
    })
}

fn upload_override(shared: &Shared) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .timeout_config(sdk_upload_timeout_config(&shared.config.timeouts))
}

fn part_size_for(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

async fn put_multipart(
    shared: &Shared,
    key: &str,
    path: &Path,
    size: u64,
    progress: &dyn Progress,
) -> Result<(), RemoteError> {
    let bucket = &shared.config.bucket;
    let created = shared
        .client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|err| shared.target(key).classify(err))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| RemoteError::Other(format!("{key}: no upload id from the server")))?
        .to_string();

    let uploaded = match upload_parts(shared, key, path, size, &upload_id, progress).await {
        Ok(parts) => shared
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|err| shared.target(key).classify(err)),
        Err(err) => Err(err),
    };
    if uploaded.is_err() {
        // Without an abort, the stored parts linger (and are billed) until
        // a lifecycle rule removes them.
        if let Err(abort) = shared
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await
        {
            let error = shared.target(key).classify(abort);
            warn!(key, upload_id, %error, "aborting the multipart upload failed");
        }
    }
    uploaded
}

/// Uploads every part, `PARTS_IN_FLIGHT` at a time; the parts in the order
/// CompleteMultipartUpload needs them.
async fn upload_parts(
    shared: &Shared,
    key: &str,
    path: &Path,
    size: u64,
    upload_id: &str,
    progress: &dyn Progress,
) -> Result<Vec<CompletedPart>, RemoteError> {
    let part_size = part_size_for(size);
    let part_count = size.div_ceil(part_size);
    let mut in_flight = JoinSet::new();
    let mut done = Vec::with_capacity(part_count as usize);
    let mut next_part = 0u64;
    loop {
        while in_flight.len() < PARTS_IN_FLIGHT && next_part < part_count {
            let offset = next_part * part_size;
            let len = part_size.min(size - offset);
            let part_number = (next_part + 1) as i32;
            let body = file_body(path, offset, len).await?;
            let request = shared
                .client
                .upload_part()
                .bucket(&shared.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(len as i64)
                .body(body)
                .customize()
                .config_override(upload_override(shared));
            in_flight.spawn(async move { (part_number, len, request.send().await) });
            next_part += 1;
        }
        // Dropping the JoinSet on an early return aborts the other parts.
        let Some(finished) = in_flight.join_next().await else {
            break;
        };
        let (part_number, len, result) =
            finished.map_err(|err| RemoteError::Other(format!("{key}: upload task: {err}")))?;
        let output = result.map_err(|err| shared.target(key).classify(err))?;
        done.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(output.e_tag().map(str::to_string))
                .build(),
        );
        progress.advance(len);
    }
    done.sort_by_key(|part| part.part_number());
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_past_ten_thousand_parts() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size_for(100 * MIB), PART_SIZE);
        assert_eq!(part_size_for(MAX_PARTS * PART_SIZE), PART_SIZE);
        let huge = MAX_PARTS * PART_SIZE + 1;
        assert_eq!(part_size_for(huge), 17 * MIB);
        assert!(huge.div_ceil(part_size_for(huge)) <= MAX_PARTS);
    }
}
