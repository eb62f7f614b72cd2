//! Streaming an object's body, resuming where it broke off.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Buf, Bytes};
use tracing::{debug, warn};

use super::error::innermost_message;
use super::{RemoteError, Shared};

/// A blocking reader over an object's body, or over a byte range of it.
///
/// When the body breaks off (connection dropped or reset, or no data for the
/// read timeout), it asks again for the rest, `Range: bytes=<next byte>-`
/// (`bytes=<next byte>-<last>` for a range) with `If-Match: <ETag>` when the
/// server gave an ETag, and carries on from
/// the exact byte it had reached. It gives up after
/// [`super::RetryPolicy::max_attempts`] resumes in a row that bring no new
/// byte, or once it has failed to make progress for
/// [`super::RetryPolicy::max_total`]; a download that keeps progressing is
/// never cut short. The resume request itself is retried by the SDK.
///
/// Against slow retrieval it also fails, for good, once the run's deadline
/// passes ([`RemoteError::Deadline`]) or when the server delivers less than
/// the minimum rate ([`RemoteError::TooSlow`]): bytes are counted against
/// the time spent waiting for them, so a slow consumer never makes the
/// server look slow ([`super::TransferLimits`]).
///
/// `read` fails with an `io::Error` that carries a [`RemoteError`]
/// ([`RemoteError::from_io`] gets it back).
pub struct ObjectReader {
    shared: Arc<Shared>,
    key: String,
    etag: Option<String>,
    object_len: u64,
    /// End (exclusive) of the byte range read, `None` for the object's end.
    range_end: Option<u64>,
    /// Offset just past the last byte received from the server.
    received: u64,
    /// Received bytes not yet handed out by `read`.
    pending: Bytes,
    body: Option<ByteStream>,
    resumes: u32,
    stall: Option<Stall>,
    rate: RateWindow,
}

/// Time spent waiting for body bytes and the bytes that came, since the
/// minimum rate was last checked.
#[derive(Default)]
struct RateWindow {
    waited: Duration,
    bytes: u64,
}

// Readers feed pipeline threads.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<ObjectReader>();
};

/// Failed resumes since the last byte received.
struct Stall {
    resumes: u32,
    since: Instant,
}

impl ObjectReader {
    pub(super) fn open(
        shared: Arc<Shared>,
        key: &str,
        start_offset: u64,
        expected_len: Option<u64>,
    ) -> Result<ObjectReader, RemoteError> {
        ObjectReader::open_inner(shared, key, start_offset, None, expected_len)
    }

    /// Bytes `start..end` of an object of `object_len` bytes.
    pub(super) fn open_range(
        shared: Arc<Shared>,
        key: &str,
        start: u64,
        end: u64,
        object_len: u64,
    ) -> Result<ObjectReader, RemoteError> {
        if start > end || end > object_len {
            return Err(RemoteError::Other(format!(
                "{key}: range {start}..{end} is not within its {object_len} bytes"
            )));
        }
        ObjectReader::open_inner(shared, key, start, Some(end), Some(object_len))
    }

    fn open_inner(
        shared: Arc<Shared>,
        key: &str,
        start_offset: u64,
        range_end: Option<u64>,
        expected_len: Option<u64>,
    ) -> Result<ObjectReader, RemoteError> {
        let mut reader = ObjectReader {
            shared,
            key: key.to_string(),
            etag: None,
            object_len: expected_len.unwrap_or(0),
            range_end,
            received: start_offset,
            pending: Bytes::new(),
            body: None,
            resumes: 0,
            stall: None,
            rate: RateWindow::default(),
        };
        if let Some(len) = expected_len {
            if start_offset > len {
                return Err(RemoteError::Other(format!(
                    "{key}: start offset {start_offset} is past its length {len}"
                )));
            }
            // Nothing left to read; S3 would answer 416 to `bytes=<len>-`
            // and to an empty range.
            if start_offset == reader.end(len) && (len > 0 || range_end.is_some()) {
                return Ok(reader);
            }
        }
        let response = reader.get(start_offset)?;
        let object_len = reader.object_len_of(&response, start_offset)?;
        if let Some(expected) = expected_len {
            if object_len != expected {
                return Err(RemoteError::WrongLength {
                    key: reader.key,
                    expected,
                    actual: object_len,
                });
            }
        }
        reader.object_len = object_len;
        reader.etag = response.e_tag().map(str::to_string);
        reader.body = Some(response.body);
        Ok(reader)
    }

    /// Length of the whole object.
    pub fn object_len(&self) -> u64 {
        self.object_len
    }

    /// Where reading stops: the end of the range, or of an object of
    /// `object_len` bytes.
    fn end(&self, object_len: u64) -> u64 {
        self.range_end.unwrap_or(object_len)
    }

    /// Offset of the next byte `read` returns.
    pub fn position(&self) -> u64 {
        self.received - self.pending.len() as u64
    }

    /// How many times the body was re-requested after breaking off.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// The next piece of the body as the network delivered it, or `None` at
    /// the end of the object: an alternative to `read` that copies nothing.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Bytes>, RemoteError> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        self.fetch()
    }

    /// The next piece from the network, resuming as often as needed.
    fn fetch(&mut self) -> Result<Option<Bytes>, RemoteError> {
        let read_timeout = self.shared.config.timeouts.read;
        loop {
            let end = self.end(self.object_len);
            if self.received == end {
                return Ok(None);
            }
            let failure = match &mut self.body {
                Some(body) => {
                    let shared = &self.shared;
                    let started = Instant::now();
                    // The timers must be created inside the runtime.
                    let next = shared.runtime.block_on(async {
                        let wait = match shared.deadline {
                            Some(deadline) => read_timeout.min(
                                deadline.saturating_duration_since(tokio::time::Instant::now()),
                            ),
                            None => read_timeout,
                        };
                        tokio::time::timeout(wait, body.next()).await
                    });
                    self.rate.waited += started.elapsed();
                    if let Ok(Some(Ok(chunk))) = &next {
                        self.rate.bytes += chunk.len() as u64;
                    }
                    self.check_limits()?;
                    match next {
                        Ok(Some(Ok(chunk))) if chunk.is_empty() => continue,
                        Ok(Some(Ok(chunk))) => {
                            let received = self.received + chunk.len() as u64;
                            if received > end {
                                return Err(RemoteError::WrongLength {
                                    key: self.key.clone(),
                                    expected: end,
                                    actual: received,
                                });
                            }
                            self.received = received;
                            self.stall = None;
                            return Ok(Some(chunk));
                        }
                        Ok(Some(Err(err))) => innermost_message(&err),
                        Ok(None) => "body ended early".to_string(),
                        Err(_) => format!("no data for {read_timeout:?}"),
                    }
                }
                None => "previous resume failed".to_string(),
            };
            self.body = None;
            self.resume(&failure)?;
        }
    }

    /// Fails once the run's deadline has passed, or when a whole window of
    /// waiting brought less than the minimum rate.
    fn check_limits(&mut self) -> Result<(), RemoteError> {
        let shared = &self.shared;
        if shared
            .deadline
            .is_some_and(|deadline| tokio::time::Instant::now() >= deadline)
        {
            return Err(shared.deadline_passed(&self.key));
        }
        let Some(min) = shared.config.limits.min_rate else {
            return Ok(());
        };
        if self.rate.waited < min.per {
            return Ok(());
        }
        if self.rate.bytes < min.bytes {
            return Err(RemoteError::TooSlow {
                key: self.key.clone(),
                got: self.rate.bytes,
                min: min.bytes,
                per: self.rate.waited,
            });
        }
        self.rate = RateWindow::default();
        Ok(())
    }

    /// Re-requests the body from `received` on, after a backoff.
    fn resume(&mut self, failure: &str) -> Result<(), RemoteError> {
        let policy = &self.shared.config.retry;
        let stall = self.stall.get_or_insert(Stall {
            resumes: 0,
            since: Instant::now(),
        });
        stall.resumes += 1;
        if stall.resumes > policy.max_attempts || stall.since.elapsed() >= policy.max_total {
            return Err(self.shared.target(&self.key).unreachable(&format!(
                "reading {} at byte {}: {failure} (gave up after {} resumes without progress)",
                self.key,
                self.received,
                stall.resumes - 1
            )));
        }
        let delay = policy.backoff(stall.resumes, rand::random());
        warn!(key = %self.key, offset = self.received, failure, ?delay, "download interrupted, resuming");
        std::thread::sleep(delay);

        let changed = || RemoteError::ObjectChanged {
            key: self.key.clone(),
        };
        let response = self.get(self.received).map_err(|err| match err {
            RemoteError::Server { status: 412, .. } => changed(),
            other => other,
        })?;
        if self.object_len_of(&response, self.received)? != self.object_len {
            return Err(changed());
        }
        // If-Match makes a conforming server refuse a replaced object; this
        // catches the servers that ignore If-Match on GET (s3s-fs does).
        if let (Some(before), Some(now)) = (&self.etag, response.e_tag()) {
            if before != now {
                return Err(changed());
            }
        }
        self.resumes += 1;
        self.body = Some(response.body);
        debug!(key = %self.key, offset = self.received, "resumed");
        Ok(())
    }

    /// GET from byte `from` to the end of the range or object, conditional
    /// on the ETag seen first.
    fn get(&self, from: u64) -> Result<GetObjectOutput, RemoteError> {
        let shared = &self.shared;
        let mut request = shared
            .client
            .get_object()
            .bucket(&shared.config.bucket)
            .key(&self.key);
        match self.range_end {
            // RFC 9110 §14.1.2: the last byte position is inclusive.
            Some(end) => request = request.range(format!("bytes={from}-{}", end - 1)),
            None if from > 0 => request = request.range(format!("bytes={from}-")),
            None => {}
        }
        if let Some(etag) = &self.etag {
            request = request.if_match(etag);
        }
        let request = request.send();
        shared.call(&self.key, async {
            request
                .await
                .map_err(|err| shared.target(&self.key).classify(err))
        })
    }

    /// The whole object's length, from `Content-Range` for a ranged answer,
    /// which must start at `from`.
    fn object_len_of(&self, response: &GetObjectOutput, from: u64) -> Result<u64, RemoteError> {
        let unusable = |what: String| RemoteError::Other(format!("{}: {what}", self.key));
        match response.content_range() {
            Some(range) => match parse_content_range(range) {
                Some((first, _, total)) if first == from => Ok(total),
                _ => Err(unusable(format!(
                    "unusable Content-Range {range:?} in answer to a request from byte {from}"
                ))),
            },
            None if from > 0 || self.range_end.is_some() => Err(RemoteError::RangeIgnored {
                key: self.key.clone(),
            }),
            None => response
                .content_length()
                .and_then(|len| u64::try_from(len).ok())
                .ok_or_else(|| unusable("no Content-Length".into())),
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pending.is_empty() {
            match self.fetch().map_err(io::Error::other)? {
                Some(chunk) => self.pending = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Ok(n)
    }
}

/// `(first, last, total)` of a `Content-Range: bytes <first>-<last>/<total>`
/// header (RFC 9110 §14.4); `None` when the total is unknown (`*`) or the
/// header is malformed.
fn parse_content_range(header: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = header.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, total) = (
        first.parse::<u64>().ok()?,
        last.parse::<u64>().ok()?,
        total.parse::<u64>().ok()?,
    );
    (first <= last && last < total).then_some((first, last, total))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 99, 100)));
        assert_eq!(
            parse_content_range("bytes 5242880-10485759/10485760"),
            Some((5242880, 10485759, 10485760))
        );
    }

    #[test]
    fn content_range_rejections() {
        for bad in [
            "bytes 0-99/*",
            "bytes */100",
            "bytes 0-100/100",
            "bytes 9-3/100",
            "items 0-99/100",
            "bytes 0-99",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }
}
