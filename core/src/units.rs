//! Human-friendly sizes and durations on command lines and in config files.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("not a size: {0:?} (expected a number with an optional K, M, G or T suffix)")]
    BadSize(String),
    #[error("not a duration: {0:?} (expected whole seconds, or a whole number with s, m or min, h or d: 90s, 15min, 6h, 1d)")]
    BadDuration(String),
}

/// Parses `4096`, `512K`, `512M`, `8G`, `1T` (powers of 1024; an optional
/// trailing `B`/`iB` is accepted).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::BadSize(text.to_owned());
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Parses a duration: a whole number of at most 8 digits, alone (seconds) or
/// followed by one unit: `s`, `m` or `min`, `h`, `d` (`90s`, `15min`, `6h`,
/// `1d`). Every such text is also a systemd time span (systemd.time(7)) of
/// the same length, so one value can go into a timer unit and into
/// config.toml; 8 digits keep it within systemd's range. The Nix module's
/// option type is the same grammar (nix/lib/pure.nix, `patterns.duration`).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration(text.to_owned());
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() || digits.len() > MAX_DURATION_DIGITS {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n * seconds_per_unit))
}

/// 99999999d is about 274,000 years: beyond any useful interval, and inside
/// systemd's limit (a u64 of microseconds, about 584,000 years).
const MAX_DURATION_DIGITS: usize = 8;

/// Bytes shown in binary units with one decimal: `1.5 GiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        for bad in ["", "G", "1.5G", "-1", "12X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007m"), Ok(Duration::from_secs(420)));
        assert_eq!(
            parse_duration("99999999d"),
            Ok(Duration::from_secs(99_999_999 * 86400))
        );
        // Not in the grammar, though systemd takes some of them: refused so
        // that the Nix module and config.toml never disagree.
        for bad in [
            "",
            "h",
            "min",
            "5w",
            "1.5h",
            "5M",
            "5H",
            "5 min",
            " 6h",
            "6h ",
            "+5m",
            "-5m",
            "5mins",
            "1h30m",
            "123456789",
            "123456789s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn bytes_display() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(1536 << 20).to_string(), "1.5 GiB");
    }
}
