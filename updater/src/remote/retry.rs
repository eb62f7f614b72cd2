//! Retry and timeout policy, and how it maps onto the SDK.
//!
//! Two loops retry, each covering what the other cannot see:
//! - the SDK's standard retry strategy retries a request until its response
//!   headers arrive: 5xx, throttling (429, 503 SlowDown), timeouts and
//!   connection errors, with exponential backoff and full jitter
//!   (aws-smithy-runtime `StandardRetryStrategy`), bounded by `max_attempts`,
//!   and by `max_total` through the SDK's operation timeout;
//! - [`super::ObjectReader`] retries a response *body* that breaks or stalls
//!   mid-stream, which the SDK never retries once it has handed the body over.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use serde::Deserialize;

/// How hard to retry. In TOML, durations are integers with their unit in the
/// field name (`initial_backoff_ms = 200`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Tries of one request, the first included (at least 1). For a streamed
    /// body: resumes in a row that bring no new byte.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles with every further retry.
    #[serde(rename = "initial_backoff_ms", with = "millis")]
    pub initial_backoff: Duration,
    /// Ceiling of one backoff.
    #[serde(rename = "max_backoff_ms", with = "millis")]
    pub max_backoff: Duration,
    /// Ceiling of one request including all its retries (and, for a streamed
    /// body, of the time spent failing to make progress). Uploads of a body
    /// are bounded by attempts only: their transfer time depends on the link.
    #[serde(rename = "max_total_secs", with = "secs")]
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_total: Duration::from_secs(60),
        }
    }
}

/// Network timeouts of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Establishing a connection (TCP and TLS).
    #[serde(rename = "connect_secs", with = "secs")]
    pub connect: Duration,
    /// Waiting for response headers, and for each piece of a streamed body.
    #[serde(rename = "read_secs", with = "secs")]
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
        }
    }
}

/// Bounds on a whole run's transfers, against slow retrieval: a server (or
/// a path) that sends just enough, just often enough, to keep every
/// per-request timeout at bay. Unlimited by default (the operator's
/// commands); the device's `check` and `update` set them from the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferLimits {
    /// Every request and read fails once this much time has passed since
    /// the [`super::Remote`] was made.
    pub(crate) deadline: Option<Duration>,
    /// A download that brings less than this fails.
    pub(crate) min_rate: Option<MinRate>,
}

/// At least `bytes` in every `per` while a download is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub(crate) bytes: u64,
    pub(crate) per: Duration,
}

impl RetryPolicy {
    /// The SDK's retry configuration for this policy.
    pub(crate) fn sdk_retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// Backoff before retry number `retry` (1 for the first retry): exponential
    /// with full jitter, `jitter` drawn uniformly from [0, 1).
    pub(crate) fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// The SDK timeouts for requests that do not carry a large body.
pub(crate) fn sdk_timeout_config(timeouts: &Timeouts, retry: &RetryPolicy) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .operation_timeout(retry.max_total)
        .build()
}

/// The SDK timeouts for uploads of a body: the SDK's read timeout covers
/// sending the body too (aws-smithy-http-client wraps the whole hyper call in
/// `HttpReadTimeout`), so it would cut slow uploads short. Stalled-stream
/// protection on uploads catches a body that stops moving instead.
pub(crate) fn sdk_upload_timeout_config(timeouts: &Timeouts) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .disable_read_timeout()
        .disable_operation_timeout()
        .build()
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_total: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let p = policy();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(4, 1.0), Duration::from_millis(800));
        assert_eq!(p.backoff(5, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(1000, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn backoff_jitter_scales_down() {
        let p = policy();
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::ZERO);
    }

    #[test]
    fn policy_from_toml_with_units_in_names() {
        let p: RetryPolicy = toml::from_str(
            "max_attempts = 3\ninitial_backoff_ms = 50\nmax_backoff_ms = 2000\nmax_total_secs = 30\n",
        )
        .unwrap();
        assert_eq!(
            p,
            RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                max_total: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn policy_fields_default_individually() {
        let p: RetryPolicy = toml::from_str("max_attempts = 2\n").unwrap();
        assert_eq!(p.max_attempts, 2);
        assert_eq!(p.max_total, RetryPolicy::default().max_total);
    }

    #[test]
    fn policy_rejects_unknown_and_unitless_fields() {
        let err = toml::from_str::<RetryPolicy>("initial_backoff = 5\n").unwrap_err();
        assert!(
            err.message().contains("unknown field `initial_backoff`"),
            "{err}"
        );
        let err = toml::from_str::<Timeouts>("read_secs = \"5s\"\n").unwrap_err();
        assert!(err.message().contains("invalid type"), "{err}");
    }
}
