//! The device config, `/etc/abnix/config.toml` and its drop-ins in
//! `/etc/abnix/config.d/` (documented in docs/cli.md).
//!
//! Parsed strictly: an unknown key or an invalid value is an error that names
//! the field, so a typo never silently turns into a default on a machine
//! nobody can reach. Credentials are never in this file: it only says where
//! they come from.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::reboot_policy::{DailyWindow, RebootPolicy};
use crate::remote::{
    CredentialSource, MinRate, RemoteConfig, RetryPolicy, Timeouts, TransferLimits,
};
use crate::report::ReportTarget;
use abnix_core::units::{parse_duration, parse_size};
use abnix_formats::sign::{PublicKey, TrustedKeys};

pub const DEFAULT_PATH: &str = "/etc/abnix/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/abnix";
pub const DEFAULT_TRIES: u32 = 3;
/// GRUB's script unrolls the tries countdown, so the limit is small and fixed.
pub const MAX_TRIES: u32 = 9;
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// A check: the network wait (5 minutes by default) and two small GETs.
pub(crate) const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// An update: a few GiB over a slow link, written and read back. Below the
/// units' `TimeoutStartSec=` (7h), so the updater ends a run itself and
/// records why before systemd would kill it.
pub const DEFAULT_UPDATE_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// At least 64 KiB per minute spent waiting for a download (about 1 KiB/s):
/// far below any working link, far above a server that trickles.
pub(crate) const DEFAULT_MIN_TRANSFER_RATE: MinRate = MinRate {
    bytes: 64 << 10,
    per: Duration::from_secs(60),
};
/// Checking more often than this only loads the bucket; the Nix module's
/// `abnix.checkInterval` refuses the same values.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// When the device takes its clock to tell whether a meta has expired
/// (docs/security.md, "Freshness").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockTrust {
    /// Once the kernel reports the clock synchronized (systemd-timesyncd,
    /// chrony, ntpd); until then only the newest signing time the device
    /// has verified counts as "now".
    WhenSynchronized,
    /// Always: for machines whose real-time clock is kept right otherwise.
    Always,
}

/// The validated device config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The bucket and channel; `None` on an air-gapped host, whose config
    /// names neither and which installs only from bundles (`install
    /// --bundle`).
    pub remote: Option<RemoteConfig>,
    /// The keys that sign versions, the recovery keys and the revoked keys.
    pub trusted_keys: TrustedKeys,
    pub clock: ClockTrust,
    /// Boot attempts a trial version gets before falling back.
    pub tries: u32,
    pub reboot: RebootPolicy,
    /// How often the timer checks (its `OnUnitActiveSec=`, which the Nix
    /// module sets from the same setting); `status` says from it when the
    /// next check is due and whether checks are overdue.
    pub check_interval: Duration,
    /// The updater's state, on the rw partition.
    pub state_dir: PathBuf,
    /// How long a whole `check` run, and a whole `update` run, may take.
    pub check_deadline: Duration,
    pub update_deadline: Duration,
    /// Downloads slower than this fail.
    pub min_transfer_rate: MinRate,
    /// Where this host writes its reports, if it does (off by default).
    pub report: Option<ReportTarget>,
}

impl Config {
    /// The remote settings for a run: `check`'s or `update`'s deadline, and
    /// the minimum transfer rate.
    pub fn remote_for(&self, update: bool) -> Option<RemoteConfig> {
        let remote = self.remote.as_ref()?;
        Some(RemoteConfig {
            limits: TransferLimits {
                deadline: Some(match update {
                    true => self.update_deadline,
                    false => self.check_deadline,
                }),
                min_rate: Some(self.min_transfer_rate),
            },
            ..remote.clone()
        })
    }

    /// The bucket and channel, or an error saying the config names none.
    pub fn bucket(&self) -> Result<&RemoteConfig, NoBucket> {
        self.remote.as_ref().ok_or(NoBucket)
    }
}

/// The config names no bucket: the host is air-gapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the config names no bucket and channel (an air-gapped host installs with install --bundle)"
)]
pub struct NoBucket;

/// Parses `SIZE/DURATION`, e.g. `64K/60s`: at least SIZE bytes in every
/// DURATION.
fn parse_min_rate(text: &str) -> Result<MinRate, String> {
    let (size, per) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not SIZE/DURATION (e.g. \"64K/60s\")"))?;
    let bytes = parse_size(size).map_err(|e| e.to_string())?;
    let per = parse_duration(per).map_err(|e| e.to_string())?;
    if bytes == 0 || per.is_zero() {
        return Err(format!(
            "{text:?}: both the size and the duration must be above 0"
        ));
    }
    Ok(MinRate { bytes, per })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: `{field}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// One file as written: every key optional, so that a drop-in may set any
/// of them. Every field is listed in docs/cli.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    channel: Option<String>,
    path_style: Option<bool>,
    credentials: Option<String>,
    aws_profile: Option<String>,
    trusted_keys: Option<Vec<String>>,
    recovery_keys: Option<Vec<String>>,
    revoked_keys: Option<Vec<String>>,
    trust_clock: Option<String>,
    tries: Option<u32>,
    reboot: Option<String>,
    reboot_window: Option<String>,
    check_interval: Option<String>,
    state_dir: Option<PathBuf>,
    check_deadline: Option<String>,
    update_deadline: Option<String>,
    min_transfer_rate: Option<String>,
    report: Option<bool>,
    report_credentials: Option<PathBuf>,
    report_bucket: Option<String>,
}

/// Which file set each key, for errors.
type Origins<'a> = BTreeMap<&'static str, &'a Path>;

impl RawConfig {
    /// `later`'s keys replace `self`'s (a list as a whole), and `origins`
    /// records `path` for each.
    fn overlay<'a>(&mut self, later: RawConfig, path: &'a Path, origins: &mut Origins<'a>) {
        // Destructured whole, so that a key missing here does not compile.
        macro_rules! overlay {
            ($($field:ident),*) => {
                let RawConfig { $($field),* } = later;
                $(
                    if $field.is_some() {
                        self.$field = $field;
                        origins.insert(stringify!($field), path);
                    }
                )*
            };
        }
        overlay!(
            endpoint,
            region,
            bucket,
            prefix,
            channel,
            path_style,
            credentials,
            aws_profile,
            trusted_keys,
            recovery_keys,
            revoked_keys,
            trust_clock,
            tries,
            reboot,
            reboot_window,
            check_interval,
            state_dir,
            check_deadline,
            update_deadline,
            min_transfer_rate,
            report,
            report_credentials,
            report_bucket
        );
    }
}

/// The drop-in directory of a config file: `config.d` beside `config.toml`.
pub fn drop_in_dir(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.d"))
}

/// The `*.toml` files of `dir` in lexical order of their names (bytes), or
/// none when it does not exist. Hidden files (an editor's) are not read.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let name = entry.map_err(read_error)?.file_name();
        let text = name.to_string_lossy();
        if text.ends_with(".toml") && !text.starts_with('.') {
            files.push(name);
        }
    }
    files.sort();
    Ok(files.into_iter().map(|name| dir.join(name)).collect())
}

impl Config {
    /// Loads `path`, then its drop-ins (`<dir>/<stem>.d/*.toml`, e.g.
    /// `/etc/abnix/config.d/`) in lexical order, each key of a later file
    /// replacing the earlier value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut files = Vec::new();
        for path in std::iter::once(path.to_owned()).chain(drop_ins(&drop_in_dir(path))?) {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            files.push((path, text));
        }
        Config::parse_files(&files)
    }

    /// Parses the text of a config file; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_files(&[(path.to_owned(), text.to_owned())])
    }

    /// Parses files (path, text) layered in order: the config, then its
    /// drop-ins. Each file is parsed strictly on its own (unknown keys,
    /// wrong types); the values are checked once layered. Every error names
    /// the file that set the key.
    fn parse_files(files: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
        let main = files[0].0.as_path();
        let mut raw = RawConfig::default();
        let mut origins = Origins::new();
        for (path, text) in files {
            let layer: RawConfig = toml::from_str(text).map_err(|e| {
                match e.span().and_then(|span| key_around(text, &span)) {
                    Some(key) => ConfigError::Invalid {
                        path: path.clone(),
                        field: key,
                        reason: e.message().to_owned(),
                    },
                    None => ConfigError::Syntax {
                        path: path.clone(),
                        message: e.message().to_owned()
                            + &e.span()
                                .map(|span| format!(" (at byte {})", span.start))
                                .unwrap_or_default(),
                    },
                }
            })?;
            raw.overlay(layer, path, &mut origins);
        }
        // `trusted_keys[0]` was set where `trusted_keys` was.
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            path: origins
                .get(field.split('[').next().unwrap_or(field))
                .copied()
                .unwrap_or(main)
                .to_owned(),
            field: field.to_owned(),
            reason,
        };
        let missing = |field: &str| ConfigError::Syntax {
            path: main.to_owned(),
            message: format!("missing field `{field}`"),
        };
        // Both or neither: without them the host is air-gapped.
        let bucket_channel = match (raw.bucket, raw.channel) {
            (Some(bucket), Some(channel)) => Some((bucket, channel)),
            (None, None) => None,
            (Some(_), None) => return Err(missing("channel")),
            (None, Some(_)) => return Err(missing("bucket")),
        };
        let trusted_keys_text = raw.trusted_keys.ok_or_else(|| missing("trusted_keys"))?;
        let recovery_keys_text = raw.recovery_keys.unwrap_or_default();
        let revoked_keys_text = raw.revoked_keys.unwrap_or_default();

        let profile = raw.aws_profile.clone();
        if let Some(name) = &profile {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || "[]".contains(c)) {
                return Err(invalid(
                    "aws_profile",
                    format!("{name:?} is not a profile name"),
                ));
            }
        }
        let credentials = match raw.credentials.as_deref() {
            None | Some("chain") => CredentialSource::Chain,
            Some("anonymous") => CredentialSource::Anonymous,
            Some("systemd") => CredentialSource::Systemd { profile },
            Some("profile") => CredentialSource::Profile { profile },
            Some(file) if Path::new(file).is_absolute() => CredentialSource::File(file.into()),
            Some(other) => {
                return Err(invalid(
                    "credentials",
                    format!(
                        "{other:?} is neither \"chain\", \"systemd\", \"profile\", \"anonymous\" \
                         nor an absolute file path"
                    ),
                ))
            }
        };
        if raw.aws_profile.is_some()
            && !matches!(
                credentials,
                CredentialSource::Systemd { .. } | CredentialSource::Profile { .. }
            )
        {
            return Err(invalid(
                "aws_profile",
                "only meaningful with credentials = \"systemd\" or \"profile\"".into(),
            ));
        }
        if let Some(endpoint) = &raw.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
        }
        let names = bucket_channel
            .iter()
            .flat_map(|(bucket, channel)| [("bucket", bucket), ("channel", channel)]);
        let report_bucket = raw.report_bucket.as_ref().map(|b| ("report_bucket", b));
        for (field, value) in names.into_iter().chain(report_bucket) {
            if value.is_empty() || value.contains(char::is_whitespace) || value.contains('/') {
                return Err(invalid(
                    field,
                    format!("{value:?} must be non-empty, without spaces or '/'"),
                ));
            }
        }

        if trusted_keys_text.is_empty() {
            return Err(invalid(
                "trusted_keys",
                "at least one public key is required: nothing could be verified".into(),
            ));
        }
        let keys = |field: &str, texts: &[String]| {
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    PublicKey::parse(text)
                        .map_err(|e| invalid(&format!("{field}[{i}]"), e.to_string()))
                })
                .collect::<Result<Vec<PublicKey>, ConfigError>>()
        };
        let revoked = keys("revoked_keys", &revoked_keys_text)?;
        let mut trusted_keys = TrustedKeys::new();
        for (field, texts) in [
            ("trusted_keys", &trusted_keys_text),
            ("recovery_keys", &recovery_keys_text),
        ] {
            for (i, key) in keys(field, texts)?.into_iter().enumerate() {
                if revoked.contains(&key) {
                    return Err(invalid(
                        &format!("{field}[{i}]"),
                        format!("{} is also in revoked_keys", key.name()),
                    ));
                }
                match field {
                    "trusted_keys" => trusted_keys.insert(key),
                    _ => trusted_keys.insert_recovery(key),
                }
            }
        }
        for key in revoked {
            trusted_keys.revoke(key);
        }
        let clock = match raw.trust_clock.as_deref() {
            None | Some("when-synchronized") => ClockTrust::WhenSynchronized,
            Some("always") => ClockTrust::Always,
            Some(other) => {
                return Err(invalid(
                    "trust_clock",
                    format!("{other:?} is neither \"when-synchronized\" nor \"always\""),
                ))
            }
        };

        let tries = raw.tries.unwrap_or(DEFAULT_TRIES);
        if !(1..=MAX_TRIES).contains(&tries) {
            return Err(invalid(
                "tries",
                format!("{tries} is outside 1..={MAX_TRIES}"),
            ));
        }

        let window = raw
            .reboot_window
            .as_deref()
            .map(|w| {
                w.parse::<DailyWindow>()
                    .map_err(|e| invalid("reboot_window", e.to_string()))
            })
            .transpose()?;
        let reboot = match (raw.reboot.as_deref().unwrap_or("immediate"), window) {
            ("immediate", None) => RebootPolicy::Immediate,
            ("never", None) => RebootPolicy::Never,
            ("window", Some(w)) => RebootPolicy::Window(w),
            ("window", None) => {
                return Err(invalid(
                    "reboot_window",
                    "required when reboot = \"window\" (e.g. \"02:00-04:00\")".into(),
                ))
            }
            ("immediate" | "never", Some(_)) => {
                return Err(invalid(
                    "reboot_window",
                    "only meaningful with reboot = \"window\"".into(),
                ))
            }
            (other, _) => {
                return Err(invalid(
                    "reboot",
                    format!("{other:?} is not one of \"immediate\", \"window\", \"never\""),
                ))
            }
        };

        let check_interval = match raw.check_interval.as_deref() {
            None => DEFAULT_CHECK_INTERVAL,
            Some(text) => {
                let d =
                    parse_duration(text).map_err(|e| invalid("check_interval", e.to_string()))?;
                if d < MIN_CHECK_INTERVAL {
                    return Err(invalid(
                        "check_interval",
                        format!("{text:?} is shorter than a minute"),
                    ));
                }
                d
            }
        };

        let deadline = |field: &str, text: Option<&str>, default: Duration| match text {
            None => Ok(default),
            Some(text) => match parse_duration(text) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(invalid(field, "must be above 0".into())),
                Err(e) => Err(invalid(field, e.to_string())),
            },
        };
        let check_deadline = deadline(
            "check_deadline",
            raw.check_deadline.as_deref(),
            DEFAULT_CHECK_DEADLINE,
        )?;
        let update_deadline = deadline(
            "update_deadline",
            raw.update_deadline.as_deref(),
            DEFAULT_UPDATE_DEADLINE,
        )?;
        let min_transfer_rate = match raw.min_transfer_rate.as_deref() {
            None => DEFAULT_MIN_TRANSFER_RATE,
            Some(text) => parse_min_rate(text).map_err(|e| invalid("min_transfer_rate", e))?,
        };

        let state_dir = raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        if !state_dir.is_absolute() {
            return Err(invalid(
                "state_dir",
                format!("{} is not an absolute path", state_dir.display()),
            ));
        }

        let report = match (raw.report.unwrap_or(false), raw.report_credentials) {
            (false, None) if raw.report_bucket.is_none() => None,
            (false, _) => {
                return Err(invalid(
                    "report",
                    "report_credentials and report_bucket need report = true".into(),
                ))
            }
            (true, None) => return Err(invalid(
                "report_credentials",
                "required when report = true: reports are written with credentials of their own"
                    .into(),
            )),
            (true, Some(credentials)) if !credentials.is_absolute() => {
                return Err(invalid(
                    "report_credentials",
                    format!("{} is not an absolute path", credentials.display()),
                ))
            }
            (true, Some(credentials)) => match &bucket_channel {
                Some((bucket, _)) => Some(ReportTarget {
                    bucket: raw.report_bucket.unwrap_or_else(|| bucket.clone()),
                    credentials,
                }),
                None => {
                    return Err(invalid(
                        "report",
                        "reports are written under a channel: bucket and channel are required"
                            .into(),
                    ))
                }
            },
        };

        Ok(Config {
            remote: bucket_channel.map(|(bucket, channel)| RemoteConfig {
                endpoint: raw.endpoint,
                region: raw.region.unwrap_or_else(|| "us-east-1".into()),
                bucket,
                prefix: raw.prefix.unwrap_or_default(),
                channel,
                path_style: raw.path_style.unwrap_or(false),
                credentials,
                retry: RetryPolicy::default(),
                timeouts: Timeouts::default(),
                limits: TransferLimits::default(),
            }),
            trusted_keys,
            clock,
            tries,
            reboot,
            check_interval,
            state_dir,
            check_deadline,
            update_deadline,
            min_transfer_rate,
            report,
        })
    }
}

/// The key whose name or value holds all of `span` in `text`, a file that
/// is valid TOML: toml's errors for a value of the wrong type (or an
/// unknown key) point at it but do not name the key. An error about the
/// whole file (a missing field) is inside no key.
fn key_around(text: &str, span: &Range<usize>) -> Option<String> {
    let inside = |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = toml::from_str(text).ok()?;
    table
        .into_iter()
        .find(|(key, value)| inside(key.span()) || inside(value.span()))
        .map(|(key, _)| key.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/abnix/config.toml"))
    }

    fn minimal() -> String {
        format!("bucket = \"fleet\"\nchannel = \"kiosk\"\ntrusted_keys = [\"{KEY}\"]\n")
    }

    #[test]
    fn an_air_gapped_config_names_no_bucket_and_no_channel() {
        let c = parse(&format!("trusted_keys = [\"{KEY}\"]\n")).unwrap();
        assert!(c.remote.is_none());
        assert!(c.remote_for(true).is_none());
        assert_eq!(c.bucket().unwrap_err(), NoBucket);
        // Both or neither; and reports need them.
        for (text, named) in [
            ("bucket = \"b\"\n", "missing field `channel`"),
            ("channel = \"c\"\n", "missing field `bucket`"),
            (
                "report = true\nreport_credentials = \"/r.toml\"\n",
                "bucket and channel are required",
            ),
        ] {
            let err = parse(&format!("{text}trusted_keys = [\"{KEY}\"]\n")).unwrap_err();
            assert!(err.to_string().contains(named), "{text:?}: {err}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.bucket().unwrap().bucket, "fleet");
        assert_eq!(c.bucket().unwrap().region, "us-east-1");
        assert_eq!(c.bucket().unwrap().prefix, "");
        assert!(matches!(
            c.bucket().unwrap().credentials,
            CredentialSource::Chain
        ));
        assert_eq!(c.tries, DEFAULT_TRIES);
        assert_eq!(c.reboot, RebootPolicy::Immediate);
        assert_eq!(c.check_interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(c.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(c.trusted_keys.len(), 1);
        assert_eq!(c.clock, ClockTrust::WhenSynchronized);
        assert_eq!(c.check_deadline, DEFAULT_CHECK_DEADLINE);
        assert_eq!(c.update_deadline, DEFAULT_UPDATE_DEADLINE);
        assert_eq!(c.min_transfer_rate, DEFAULT_MIN_TRANSFER_RATE);
        assert_eq!(c.bucket().unwrap().limits, TransferLimits::default());
        let update = c.remote_for(true).unwrap().limits;
        assert_eq!(update.deadline, Some(DEFAULT_UPDATE_DEADLINE));
        assert_eq!(
            c.remote_for(false).unwrap().limits.deadline,
            Some(DEFAULT_CHECK_DEADLINE)
        );
        assert_eq!(update.min_rate, Some(DEFAULT_MIN_TRANSFER_RATE));
        assert_eq!(c.report, None, "reporting is off by default");
    }

    #[test]
    fn reports_take_credentials_of_their_own() {
        let on = "report = true\nreport_credentials = \"/var/lib/abnix/report.toml\"\n";
        let c = parse(&format!("{}{on}", minimal())).unwrap();
        assert_eq!(
            c.report,
            Some(ReportTarget {
                bucket: "fleet".into(),
                credentials: "/var/lib/abnix/report.toml".into()
            })
        );
        let c = parse(&format!("{}{on}report_bucket = \"reports\"\n", minimal())).unwrap();
        assert_eq!(c.report.unwrap().bucket, "reports");
    }

    #[test]
    fn deadlines_and_the_minimum_rate() {
        let c = parse(&format!(
            "{}check_deadline = \"2m\"\nupdate_deadline = \"90m\"\nmin_transfer_rate = \"1M/10s\"\n",
            minimal()
        ))
        .unwrap();
        assert_eq!(c.check_deadline, Duration::from_secs(120));
        assert_eq!(c.update_deadline, Duration::from_secs(5400));
        assert_eq!(
            c.min_transfer_rate,
            MinRate {
                bytes: 1 << 20,
                per: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn recovery_and_revoked_keys() {
        const RECOVERY: &str = "recovery:nJiXkH2zel9urvtOypTWrZHT2ljKvVRO/ZAk5NlAzgQ=";
        const OLD: &str = "old:YwUqGIpJpnRad5Po+2rpiskYTk4DaHI2Mx7YyiugFko=";
        let c = parse(&format!(
            "{}recovery_keys = [\"{RECOVERY}\"]\nrevoked_keys = [\"{OLD}\"]\ntrust_clock = \"always\"\n",
            minimal()
        ))
        .unwrap();
        assert_eq!(c.trusted_keys.len(), 2);
        assert!(c.trusted_keys.is_revoked(&PublicKey::parse(OLD).unwrap()));
        assert_eq!(c.clock, ClockTrust::Always);
        let err = parse(&format!("{}revoked_keys = [\"{KEY}\"]\n", minimal())).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("`trusted_keys[0]`: abnix-test is also in revoked_keys"),
            "{err}"
        );
    }

    #[test]
    fn full_config() {
        let text = format!(
            "{}endpoint = \"http://10.0.2.2:9000\"\nregion = \"garage\"\nprefix = \"abnix\"\n\
             path_style = true\ncredentials = \"/var/lib/abnix/credentials.toml\"\ntries = 5\n\
             reboot = \"window\"\nreboot_window = \"02:00-04:00\"\ncheck_interval = \"30m\"\n\
             state_dir = \"/rw/abnix\"\n",
            minimal()
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.bucket().unwrap().endpoint.as_deref(),
            Some("http://10.0.2.2:9000")
        );
        assert!(c.bucket().unwrap().path_style);
        assert!(
            matches!(&c.bucket().unwrap().credentials, CredentialSource::File(p) if p == Path::new("/var/lib/abnix/credentials.toml"))
        );
        assert_eq!(c.tries, 5);
        assert_eq!(
            c.reboot,
            RebootPolicy::Window("02:00-04:00".parse().unwrap())
        );
        assert_eq!(c.check_interval, Duration::from_secs(1800));
    }

    #[test]
    fn credential_sources() {
        let source = |extra: &str| {
            parse(&format!("{}{extra}\n", minimal()))
                .unwrap()
                .remote
                .unwrap()
                .credentials
        };
        assert_eq!(
            source("credentials = \"systemd\""),
            CredentialSource::Systemd { profile: None }
        );
        assert_eq!(
            source("credentials = \"profile\"\naws_profile = \"fleet\""),
            CredentialSource::Profile {
                profile: Some("fleet".into())
            }
        );
        assert_eq!(
            source("credentials = \"systemd\"\naws_profile = \"fleet\""),
            CredentialSource::Systemd {
                profile: Some("fleet".into())
            }
        );
        assert_eq!(
            source("credentials = \"anonymous\""),
            CredentialSource::Anonymous
        );
    }

    /// Each bad value is refused with an error naming its field.
    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            ("tries = 0", "tries"),
            ("tries = 10", "tries"),
            ("reboot = \"sometimes\"", "reboot"),
            ("reboot = \"window\"", "reboot_window"),
            ("reboot_window = \"02:00-04:00\"", "reboot_window"),
            (
                "reboot = \"window\"\nreboot_window = \"2am\"",
                "reboot_window",
            ),
            ("check_interval = \"5s\"", "check_interval"),
            ("check_interval = \"often\"", "check_interval"),
            ("credentials = \"creds.toml\"", "credentials"),
            ("aws_profile = \"fleet\"", "aws_profile"),
            (
                "credentials = \"profile\"\naws_profile = \"a b\"",
                "aws_profile",
            ),
            (
                "credentials = \"systemd\"\naws_profile = \"\"",
                "aws_profile",
            ),
            ("endpoint = \"s3.example.com\"", "endpoint"),
            ("state_dir = \"var/lib\"", "state_dir"),
            ("trust_clock = \"sometimes\"", "trust_clock"),
            ("check_deadline = \"0\"", "check_deadline"),
            ("update_deadline = \"soon\"", "update_deadline"),
            ("min_transfer_rate = \"1K\"", "min_transfer_rate"),
            ("min_transfer_rate = \"0/60s\"", "min_transfer_rate"),
            ("min_transfer_rate = \"1K/fast\"", "min_transfer_rate"),
            ("report = true", "report_credentials"),
            (
                "report = true\nreport_credentials = \"report.toml\"",
                "report_credentials",
            ),
            ("report_credentials = \"/r.toml\"", "report"),
            ("report_bucket = \"r\"", "report"),
            (
                "report = true\nreport_credentials = \"/r.toml\"\nreport_bucket = \"a/b\"",
                "report_bucket",
            ),
            ("report = \"yes\"", "report"),
            ("recovery_keys = [\"nokey\"]", "recovery_keys[0]"),
            ("revoked_keys = [1]", "revoked_keys"),
            // Values of the wrong type.
            ("tries = \"three\"", "tries"),
            ("tries = -1", "tries"),
            ("path_style = \"yes\"", "path_style"),
            ("check_interval = 60", "check_interval"),
            ("state_dir = 1", "state_dir"),
            ("reboot = true", "reboot"),
            // An unknown key.
            ("bucket_name = \"x\"", "bucket_name"),
        ];
        for (extra, field) in cases {
            let err = parse(&format!("{}{extra}\n", minimal())).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { field: f, .. } if f == field),
                "{extra:?}: expected an error on `{field}`, got {err}"
            );
        }
        for (text, field) in [
            (
                "bucket = 5\nchannel = \"c\"\ntrusted_keys = [\"k\"]\n",
                "bucket",
            ),
            (
                "bucket = \"b\"\nchannel = \"c\"\ntrusted_keys = \"x\"\n",
                "trusted_keys",
            ),
            (
                "bucket = \"b\"\nchannel = \"c\"\ntrusted_keys = [1]\n",
                "trusted_keys",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { field: f, .. } if f == field),
                "{text:?}: expected an error on `{field}`, got {err}"
            );
        }
        let err =
            parse("bucket = \"b\"\nchannel = \"c\"\ntrusted_keys = [\"nokey\"]\n").unwrap_err();
        assert!(err.to_string().contains("trusted_keys[0]"), "{err}");
        let err = parse("bucket = \"b\"\nchannel = \"c\"\ntrusted_keys = []\n").unwrap_err();
        assert!(err.to_string().contains("trusted_keys"), "{err}");
        let err = parse(&format!("channel = \"c\"\ntrusted_keys = [\"{KEY}\"]\n")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { message, .. } if message.contains("missing field `bucket`")),
            "missing field named, and no other: {err}"
        );
        let err = parse(&format!("{}tries = \n", minimal())).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { message, .. } if message.contains("at byte")),
            "a syntax error says where: {err}"
        );
    }

    /// A config file in a fresh directory, with its drop-ins (name, text).
    fn load_with(
        main: &str,
        drop_ins: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, main).unwrap();
        if !drop_ins.is_empty() {
            std::fs::create_dir(dir.path().join("config.d")).unwrap();
        }
        for (name, text) in drop_ins {
            std::fs::write(dir.path().join("config.d").join(name), text).unwrap();
        }
        let config = Config::load(&path);
        (dir, config)
    }

    #[test]
    fn drop_in_dir_is_named_after_the_file() {
        assert_eq!(
            drop_in_dir(Path::new(DEFAULT_PATH)),
            Path::new("/etc/abnix/config.d")
        );
        assert_eq!(
            drop_in_dir(Path::new("/srv/kiosk.toml")),
            Path::new("/srv/kiosk.d")
        );
    }

    #[test]
    fn drop_ins_override_in_lexical_order() {
        const OTHER: &str = "other:nJiXkH2zel9urvtOypTWrZHT2ljKvVRO/ZAk5NlAzgQ=";
        let (_dir, config) = load_with(
            &format!("{}tries = 3\nreboot = \"never\"\n", minimal()),
            &[
                ("20-b.toml", "tries = 7\nchannel = \"b\"\n"),
                ("10-a.toml", "tries = 5\nchannel = \"a\"\nprefix = \"a\"\n"),
                // "9" sorts after "2": names, not numbers.
                (
                    "9-z.toml",
                    &format!("channel = \"z\"\ntrusted_keys = [\"{OTHER}\"]\n"),
                ),
                (".editor-swap.toml", "not toml at all"),
                ("README", "not toml either"),
            ],
        );
        let config = config.unwrap();
        assert_eq!(config.tries, 7);
        assert_eq!(config.bucket().unwrap().channel, "z");
        assert_eq!(config.bucket().unwrap().prefix, "a");
        assert_eq!(config.reboot, RebootPolicy::Never);
        // A list is replaced as a whole.
        assert_eq!(config.trusted_keys.len(), 1);
        assert_eq!(
            config.trusted_keys.iter().next(),
            Some(&PublicKey::parse(OTHER).unwrap())
        );
    }

    /// Every key layers, reports' too (a drop-in is how an image turns
    /// reporting on for some hosts).
    #[test]
    fn a_drop_in_turns_reports_on() {
        let (_dir, config) = load_with(
            &minimal(),
            &[(
                "50-report.toml",
                "report = true\nreport_credentials = \"/r.toml\"\n",
            )],
        );
        let report = config.unwrap().report.expect("reports on");
        assert_eq!(report.credentials, PathBuf::from("/r.toml"));
    }

    #[test]
    fn missing_or_empty_drop_in_dir() {
        let (dir, config) = load_with(&minimal(), &[]);
        assert!(!dir.path().join("config.d").exists());
        assert_eq!(config.unwrap().tries, DEFAULT_TRIES);
        let (_dir, config) = load_with(&minimal(), &[("notes.txt", "tries = 9")]);
        assert_eq!(config.unwrap().tries, DEFAULT_TRIES);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, minimal()).unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        assert_eq!(Config::load(&path).unwrap().tries, DEFAULT_TRIES);
    }

    /// An error names the file that set the key: a drop-in's own key, or
    /// the config's when a drop-in changed another.
    #[test]
    fn drop_in_errors_name_the_file_and_key() {
        let cases: [(&str, &str, &str); 7] = [
            ("bucket_name = \"x\"", "bucket_name", "50-x.toml"),
            ("tries = \"three\"", "tries", "50-x.toml"),
            ("tries = 10", "tries", "50-x.toml"),
            ("trusted_keys = [\"nokey\"]", "trusted_keys[0]", "50-x.toml"),
            ("credentials = \"creds.toml\"", "credentials", "50-x.toml"),
            // reboot_window comes from the config; the drop-in's reboot
            // makes it meaningless.
            ("reboot = \"never\"", "reboot_window", "config.toml"),
            ("aws_profile = \"fleet\"", "aws_profile", "50-x.toml"),
        ];
        for (drop_in, field, file) in cases {
            let main = format!(
                "{}reboot = \"window\"\nreboot_window = \"02:00-04:00\"\n",
                minimal()
            );
            let (dir, config) = load_with(
                &main,
                &[("10-ok.toml", "tries = 4\n"), ("50-x.toml", drop_in)],
            );
            let err = config.unwrap_err();
            let expected = match file {
                "config.toml" => dir.path().join(file),
                _ => dir.path().join("config.d").join(file),
            };
            assert!(
                matches!(&err, ConfigError::Invalid { path, field: f, .. } if f == field && *path == expected),
                "{drop_in:?}: expected `{field}` in {}, got {err}",
                expected.display()
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("{}: `{field}`", expected.display())),
                "{err}"
            );
        }
        let (dir, config) = load_with(&minimal(), &[("50-x.toml", "tries = ")]);
        let err = config.unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path, .. } if *path == dir.path().join("config.d/50-x.toml")),
            "{err}"
        );
    }

    /// Every config the Nix module generates (nix/testdata/config*.toml,
    /// checked against nix/lib/pure.nix by nix/check.sh) parses here.
    #[test]
    fn nix_generated_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nix/testdata");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if !(name.starts_with("config") && name.ends_with(".toml")) {
                continue;
            }
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.trusted_keys.is_empty(), "{name}");
            parsed += 1;
        }
        assert!(parsed >= 2, "only {parsed} configs in {}", dir.display());
    }
}
