//! Errors of the bucket layer, typed so callers can branch on them, and the
//! mapping from the SDK's errors.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::ErrorKind;

/// What went wrong talking to the bucket.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{key}: no such object")]
    NotFound { key: String },
    /// The bucket itself does not exist: a configuration error, not an empty
    /// channel.
    #[error("bucket {bucket} does not exist")]
    NoSuchBucket { bucket: String },
    /// The server refused the credentials or their rights (403);
    /// `code` is the S3 error code, e.g. `SignatureDoesNotMatch`.
    #[error("{key}: access denied ({code})")]
    AccessDenied { key: String, code: String },
    #[error("{key}: {size} bytes, more than the {max} allowed")]
    TooLarge { key: String, size: u64, max: u64 },
    /// The object's length is not the one expected (from the meta), or the
    /// server sent more or fewer bytes than it announced.
    #[error("{key}: {actual} bytes, expected {expected}")]
    WrongLength {
        key: String,
        expected: u64,
        actual: u64,
    },
    /// The server answered a ranged GET with the whole object (200, no
    /// `Content-Range`): it does not serve byte ranges, so neither resuming
    /// nor fetching parts of an object works with it.
    #[error("{key}: the server ignored the Range header")]
    RangeIgnored { key: String },
    /// The object was replaced while it was being read (ETag or length
    /// changed between two requests).
    #[error("{key}: object changed while it was being read")]
    ObjectChanged { key: String },
    /// DNS failure, connection refused, timeouts: the network or the server
    /// is down. Worth trying again later.
    #[error("{endpoint} unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The server kept failing after all retries, or answered with an error
    /// not covered above.
    #[error("{key}: server error {status}: {message}")]
    Server {
        key: String,
        status: u16,
        message: String,
    },
    /// The run's overall deadline passed (slow retrieval: a server that
    /// answers just often enough to keep every timeout at bay).
    #[error("{key}: the run's deadline of {}s passed", deadline.as_secs())]
    Deadline { key: String, deadline: Duration },
    /// A download brought less than the minimum in a whole window.
    #[error("{key}: {got} bytes in {}s, less than the minimum of {min} (slow retrieval)", per.as_secs())]
    TooSlow {
        key: String,
        got: u64,
        min: u64,
        per: Duration,
    },
    /// Credentials could not be loaded (file refused, chain found nothing).
    #[error("credentials: {0}")]
    Credentials(String),
    /// The configuration cannot work (e.g. an empty bucket name).
    #[error("invalid remote config: {0}")]
    Config(String),
    /// A local file could not be read.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl RemoteError {
    /// The `RemoteError` inside an `io::Error` returned by
    /// [`super::ObjectReader`]'s `read`, if there is one.
    pub fn from_io(err: &io::Error) -> Option<&RemoteError> {
        err.get_ref()?.downcast_ref()
    }
}

/// Where a failed request went, to name things in errors.
pub(crate) struct RequestTarget<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
    /// The SDK's operation timeout, named when it fires.
    pub(crate) max_total: Duration,
}

/// S3 error codes that mean "these credentials may not do this".
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "NotSignedUp",
    "SignatureDoesNotMatch",
];

impl RequestTarget<'_> {
    /// Maps an SDK error, after the SDK's own retries, onto [`RemoteError`].
    pub(crate) fn classify<E>(&self, err: SdkError<E, HttpResponse>) -> RemoteError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code();
                self.classify_response(status, code, service.err().message())
            }
            // A response that could not be parsed, e.g. a proxy's HTML page.
            SdkError::ResponseError(response) => {
                let status = response.raw().status().as_u16();
                self.classify_response(status, None, Some(&innermost_message(&err)))
            }
            SdkError::TimeoutError(_) => {
                self.unreachable(&format!("no answer within {:?}", self.max_total))
            }
            SdkError::DispatchFailure(failure) => {
                if let Some(creds) = find_source::<CredentialsError>(&err) {
                    return RemoteError::Credentials(innermost_message(creds));
                }
                let transient = failure.is_io()
                    || failure.is_timeout()
                    || failure
                        .as_other()
                        .is_some_and(|kind| kind == ErrorKind::TransientError);
                if transient {
                    self.unreachable(&innermost_message(&err))
                } else {
                    RemoteError::Other(format!("{}: {}", self.key, innermost_message(&err)))
                }
            }
            _ => RemoteError::Other(format!("{}: {}", self.key, innermost_message(&err))),
        }
    }

    /// Maps an S3 error answer (HTTP status, S3 error code, message).
    pub(crate) fn classify_response(
        &self,
        status: u16,
        code: Option<&str>,
        message: Option<&str>,
    ) -> RemoteError {
        let key = self.key.to_string();
        match code {
            Some("NoSuchBucket") => {
                return RemoteError::NoSuchBucket {
                    bucket: self.bucket.to_string(),
                }
            }
            Some("NoSuchKey" | "NotFound") => return RemoteError::NotFound { key },
            Some(code) if ACCESS_CODES.contains(&code) => {
                return RemoteError::AccessDenied {
                    key,
                    code: code.to_string(),
                }
            }
            _ => {}
        }
        match status {
            // HEAD responses have no body, hence no code.
            404 => RemoteError::NotFound { key },
            401 | 403 => RemoteError::AccessDenied {
                key,
                code: code.unwrap_or("no error code").to_string(),
            },
            _ => RemoteError::Server {
                key,
                status,
                message: match (code, message) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(text), None) | (None, Some(text)) => text.to_string(),
                    (None, None) => "no details".to_string(),
                },
            },
        }
    }

    pub(crate) fn unreachable(&self, reason: &str) -> RemoteError {
        RemoteError::Unreachable {
            endpoint: self.endpoint.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The first error of type `T` in `err`'s source chain, `err` included.
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

/// The message of the deepest error in the chain: the SDK's outer layers
/// ("dispatch failure", "io error") say little, the root cause ("Connection
/// refused (os error 111)") says what happened.
pub(crate) fn innermost_message(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> RequestTarget<'static> {
        RequestTarget {
            endpoint: "http://127.0.0.1:9",
            bucket: "fleet",
            key: "prod/stable.meta",
            max_total: Duration::from_secs(60),
        }
    }

    #[test]
    fn codes_win_over_statuses() {
        let t = target();
        assert!(matches!(
            t.classify_response(404, Some("NoSuchBucket"), None),
            RemoteError::NoSuchBucket { bucket } if bucket == "fleet"
        ));
        assert!(matches!(
            t.classify_response(404, Some("NoSuchKey"), None),
            RemoteError::NotFound { key } if key == "prod/stable.meta"
        ));
        assert!(matches!(
            t.classify_response(403, Some("SignatureDoesNotMatch"), None),
            RemoteError::AccessDenied { code, .. } if code == "SignatureDoesNotMatch"
        ));
    }

    #[test]
    fn bare_statuses_are_classified() {
        let t = target();
        assert!(matches!(
            t.classify_response(404, None, None),
            RemoteError::NotFound { .. }
        ));
        assert!(matches!(
            t.classify_response(403, None, None),
            RemoteError::AccessDenied { code, .. } if code == "no error code"
        ));
        let err = t.classify_response(503, Some("SlowDown"), Some("reduce your request rate"));
        assert_eq!(
            err.to_string(),
            "prod/stable.meta: server error 503: SlowDown: reduce your request rate"
        );
    }

    #[test]
    fn io_errors_carry_remote_errors() {
        let io = io::Error::other(RemoteError::NotFound { key: "k".into() });
        assert!(matches!(
            RemoteError::from_io(&io),
            Some(RemoteError::NotFound { .. })
        ));
        assert!(RemoteError::from_io(&io::Error::other("plain")).is_none());
    }
}
