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
pub struct BadDigest(String);

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

/// Hashes what is written through it.
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

/// What a piece of data must be, as a signed meta names it: its length and
/// SHA-256, and a name for errors (e.g. "object 7-….kernel").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    what: String,
    pub len: u64,
    sha256: Digest,
}

/// Data that did not match what was [`Expected`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{what} ended after {got} of {len} bytes")]
    Short { what: String, got: u64, len: u64 },
    #[error("{what} is longer than {len} bytes")]
    Long { what: String, len: u64 },
    #[error("{what} has SHA-256 {actual}, expected {expected}")]
    Hash {
        what: String,
        expected: Digest,
        actual: Digest,
    },
}

/// The proof that data matched what was [`Expected`]. Only
/// [`VerifyingReader::finish`] and [`Expected::check`] make one, so an API
/// that takes it cannot be handed data that was never checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    expected: Expected,
}

impl Verified {
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.expected.len
    }

    pub fn sha256(&self) -> Digest {
        self.expected.sha256
    }
}

impl Expected {
    pub fn new(what: impl Into<String>, len: u64, sha256: Digest) -> Expected {
        Expected {
            what: what.into(),
            len,
            sha256,
        }
    }

    /// Checks data held whole in memory.
    pub fn check(self, data: &[u8]) -> Result<Verified, Mismatch> {
        let mut reader = VerifyingReader::new(data, self);
        io::copy(&mut reader, &mut io::sink()).expect("reading a slice does not fail");
        reader.finish()
    }
}

/// A reader that hashes exactly the bytes it hands out, and never hands out
/// more than the expected length: a consumer that writes what it reads
/// writes what was hashed.
///
/// Whether the data matched is known only from [`VerifyingReader::finish`],
/// which consumes the reader. There is no check hidden in `read` at the end
/// of the data: a consumer that reads exactly the expected length (as
/// every writer of a known size does) would never reach it, and would
/// complete on wrong data of the right length.
#[must_use = "the data is verified only by finish()"]
pub struct VerifyingReader<R> {
    inner: R,
    hash: Sha256,
    read: u64,
    expected: Expected,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Expected) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            hash: Sha256::new(),
            read: 0,
            expected,
        }
    }

    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// The check: exactly the expected length came through, with the
    /// expected SHA-256, and the source has nothing more. Reads at most one
    /// byte more from the source, to find out.
    pub fn finish(mut self) -> Result<Verified, Mismatch> {
        let Expected { what, len, sha256 } = &self.expected;
        if self.read < *len {
            return Err(Mismatch::Short {
                what: what.clone(),
                got: self.read,
                len: *len,
            });
        }
        let mut probe = [0u8; 1];
        if matches!(self.inner.read(&mut probe), Ok(n) if n > 0) {
            return Err(Mismatch::Long {
                what: what.clone(),
                len: *len,
            });
        }
        let actual = Digest(self.hash.finalize().into());
        if actual != *sha256 {
            return Err(Mismatch::Hash {
                what: what.clone(),
                expected: *sha256,
                actual,
            });
        }
        Ok(Verified {
            expected: self.expected,
        })
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.expected.len - self.read;
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
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

    fn verify(data: &[u8], len: u64, sha256: Digest) -> Result<Verified, Mismatch> {
        // Reads exactly `len` bytes, as a writer of a known size does.
        let mut reader = VerifyingReader::new(data, Expected::new("x", len, sha256));
        let mut out = vec![0u8; len as usize];
        let mut filled = 0;
        while filled < out.len() {
            match reader.read(&mut out[filled..]).unwrap() {
                0 => break,
                n => filled += n,
            }
        }
        reader.finish()
    }

    #[test]
    fn the_check_is_finish_and_covers_what_was_read() {
        let good = Digest::of(b"hello");
        let verified = verify(b"hello", 5, good).unwrap();
        assert_eq!((verified.len(), verified.sha256()), (5, good));
        // Same length, other bytes: only finish() can tell.
        assert_eq!(
            verify(b"hellO", 5, good),
            Err(Mismatch::Hash {
                what: "x".into(),
                expected: good,
                actual: Digest::of(b"hellO")
            })
        );
        let err = verify(b"hell", 5, good).unwrap_err();
        assert!(err.to_string().contains("ended after 4 of 5"), "{err}");
        let err = verify(b"hello!", 5, good).unwrap_err();
        assert!(err.to_string().contains("longer than 5"), "{err}");
        assert_eq!(Expected::new("x", 5, good).check(b"hello"), Ok(verified));
    }

    #[test]
    fn never_reads_past_the_expected_length() {
        let mut reader = VerifyingReader::new(
            &b"hello world"[..],
            Expected::new("x", 5, Digest::of(b"hello")),
        );
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(matches!(
            reader.finish(),
            Err(Mismatch::Long { len: 5, .. })
        ));
    }
}
