//! SHA-256 digests as they appear in metas and indexes.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. Serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a SHA-256 digest (expected 64 hex digits): {0:?}")]
pub struct BadDigest(pub String);

impl FromStr for Digest {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(BadDigest(s.chars().take(80).collect()));
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes what passes through, read or written.
pub struct Hashing<T> {
    inner: T,
    hash: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes that passed through so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of what passed through so far.
    pub fn digest(&self) -> Digest {
        Digest(self.hash.clone().finalize().into())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that fails at its end unless exactly `len` bytes with SHA-256
/// `sha256` came through, so a consumer never completes on wrong data.
pub struct Verifying<R> {
    inner: Hashing<R>,
    what: String,
    len: u64,
    sha256: Digest,
}

impl<R: Read> Verifying<R> {
    /// `what` names the data in errors, e.g. "object 7-….kernel".
    pub fn new(inner: R, what: impl Into<String>, len: u64, sha256: Digest) -> Verifying<R> {
        Verifying {
            inner: Hashing::new(inner),
            what: what.into(),
            len,
            sha256,
        }
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        if self.inner.len() > self.len {
            return invalid(format!("{} is longer than {} bytes", self.what, self.len));
        }
        if n == 0 && !buf.is_empty() {
            if self.inner.len() != self.len {
                return invalid(format!(
                    "{} ended after {} of {} bytes",
                    self.what,
                    self.inner.len(),
                    self.len
                ));
            }
            let actual = self.inner.digest();
            if actual != self.sha256 {
                return invalid(format!(
                    "{} has SHA-256 {actual}, expected {}",
                    self.what, self.sha256
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("zz".parse::<Digest>().is_err());
        assert!(d.to_string()[1..].parse::<Digest>().is_err());
    }

    #[test]
    fn verifying_reader_fails_at_the_end_on_wrong_data() {
        let read = |data: &[u8], len, sha| {
            let mut out = Vec::new();
            Verifying::new(data, "x", len, sha)
                .read_to_end(&mut out)
                .map(|_| out)
        };
        let good = Digest::of(b"hello");
        assert_eq!(read(b"hello", 5, good).unwrap(), b"hello");
        let err = read(b"hellO", 5, good).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
        let err = read(b"hell", 5, good).unwrap_err();
        assert!(err.to_string().contains("ended after 4 of 5"), "{err}");
        let err = read(b"hello!", 5, good).unwrap_err();
        assert!(err.to_string().contains("longer"), "{err}");
    }
}
