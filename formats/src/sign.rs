//! ed25519 keys and signatures in Nix's `name:base64` format (DESIGN §3).
//!
//! The formats are Nix's own (libstore/crypto.cc): a key or signature is
//! `name:base64(bytes)`, split at the first ':'; a secret key holds the 64
//! bytes of a libsodium secret key (32-byte seed followed by the 32-byte
//! public key), a public key its 32 bytes, a signature 64 bytes. So the output
//! of `nix key generate-secret --key-name NAME` works as an abnix secret key
//! and `nix key convert-secret-to-public` gives the matching trusted key.
//!
//! A signature file (`<version>-<id>.meta.sig`) holds one signature per line;
//! during a key rotation the meta is signed by the old and the new key, and a
//! device accepts it if any line verifies with a key it trusts.
//!
//! Besides the keys that sign versions, a device may trust recovery keys
//! (kept offline; their signature also makes a meta's revocations count)
//! and know revoked keys, whose signatures count for nothing
//! (docs/security.md, "Key compromise").

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// A signature file larger than this is refused unread: a few lines suffice
/// even during a rotation.
pub const MAX_SIGNATURE_FILE_BYTES: usize = 16 * 1024;

/// Why a key or signature string was refused. Never contains secret bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key name {name:?} is invalid: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("expected NAME:BASE64, found no ':'")]
    NoColon,
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("the part after ':' is not valid base64")]
    BadBase64,
    #[error("the part after ':' decodes to {actual} bytes, expected {expected}")]
    WrongLength { expected: usize, actual: usize },
    #[error("the public half of the secret key does not match its seed")]
    Mismatch,
    #[error("not a usable ed25519 public key (invalid or weak point)")]
    BadPublicKey,
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
}

/// Checks a key name: non-empty, and without ':' (the separator), whitespace
/// (the signature file is line-based) or control characters.
fn check_name(name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains(':') {
        "it contains ':'"
    } else if name.chars().any(char::is_whitespace) {
        "it contains whitespace"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(KeyError::BadName {
        name: name.chars().take(80).collect(),
        reason,
    })
}

/// Splits `name:base64` and decodes the base64 part into exactly `N` bytes.
fn split_and_decode<const N: usize>(text: &str) -> Result<(String, [u8; N]), KeyError> {
    let (name, encoded) = text.trim().split_once(':').ok_or(KeyError::NoColon)?;
    check_name(name)?;
    let bytes = BASE64.decode(encoded).map_err(|_| KeyError::BadBase64)?;
    let array: [u8; N] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength {
            expected: N,
            actual: bytes.len(),
        })?;
    Ok((name.to_owned(), array))
}

/// A signing key with its name. `Debug` does not show the key.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Randomness(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(SecretKey {
            name: name.to_owned(),
            key,
        })
    }

    /// Parses `name:base64(seed ‖ public)`; surrounding whitespace (a key
    /// file's final newline) is ignored.
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, mut bytes) = split_and_decode::<64>(text)?;
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| KeyError::Mismatch);
        bytes.fill(0);
        Ok(SecretKey { name, key: key? })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `message` (ed25519 is deterministic: same key and message, same
    /// signature).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(message).to_bytes(),
        }
    }
}

/// `name:base64(seed ‖ public)`, the secret key file's content.
impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A verifying key with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`; refuses points that are not on the
    /// curve and weak (small-order) keys, which would verify forged
    /// signatures.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = split_and_decode::<32>(text)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::BadPublicKey);
        }
        Ok(PublicKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `signature` is this key's signature of `message`. Uses strict
    /// verification (canonical encodings only), as libsodium does.
    fn verifies(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.bytes);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A detached signature, `name:base64(64 bytes)` in text.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// Name of the key that made it.
    pub(crate) key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    pub fn parse(text: &str) -> Result<Signature, KeyError> {
        let (key_name, bytes) = split_and_decode::<64>(text)?;
        Ok(Signature { key_name, bytes })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

/// Why a signature file did not vouch for a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature file is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("signature file holds no signature")]
    NoSignature,
    #[error("signature file line {line} is malformed: {reason}")]
    Malformed { line: usize, reason: KeyError },
    #[error("signed only by untrusted keys: {}", names.join(", "))]
    UntrustedKey { names: Vec<String> },
    #[error("signed only by revoked keys: {}", names.join(", "))]
    Revoked { names: Vec<String> },
    #[error("signature by trusted key {key:?} does not match the signed bytes")]
    BadSignature { key: String },
}

/// Renders a signature file: one signature per line.
pub fn signature_file(signatures: &[Signature]) -> String {
    signatures.iter().map(|s| format!("{s}\n")).collect()
}

/// The public keys a device trusts: the keys that sign versions (several
/// at once during a rotation, and several may share a name), recovery keys
/// (which verify too, and whose signature makes a meta's revocations count),
/// and revoked keys, which verify nothing even when listed as trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    recovery: Vec<PublicKey>,
    revoked: Vec<PublicKey>,
}

/// The keys whose signatures of a message verified: never empty, none
/// revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signers {
    keys: Vec<PublicKey>,
    by_recovery_key: bool,
}

impl Signers {
    /// The first key that verified.
    pub(crate) fn first(&self) -> &PublicKey {
        &self.keys[0]
    }

    pub(crate) fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether a recovery key is among them.
    pub(crate) fn by_recovery_key(&self) -> bool {
        self.by_recovery_key
    }
}

impl TrustedKeys {
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Adds a key that signs versions; a key already present is not added
    /// twice.
    pub fn insert(&mut self, key: PublicKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Adds a recovery key.
    pub fn insert_recovery(&mut self, key: PublicKey) {
        if !self.recovery.contains(&key) {
            self.recovery.push(key);
        }
    }

    /// Revokes a key: its signatures no longer verify anything.
    pub fn revoke(&mut self, key: PublicKey) {
        if !self.revoked.contains(&key) {
            self.revoked.push(key);
        }
    }

    /// The keys that sign versions, revoked ones included.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    pub fn revoked(&self) -> &[PublicKey] {
        &self.revoked
    }

    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        self.revoked.contains(key)
    }

    /// Signing and recovery keys.
    pub fn len(&self) -> usize {
        self.keys.len() + self.recovery.len()
    }

    /// Whether there is no signing or recovery key at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a signature file (one `name:base64` per line, blank lines
    /// ignored) against `message` and returns every key, trusted or
    /// recovery and not revoked, that one of its lines verifies with.
    ///
    /// The file must be well-formed as a whole: a malformed line rejects it
    /// even if another line would verify, so a corrupted file is noticed
    /// rather than half-trusted. Then any line by a trusted key name that
    /// verifies is enough; lines that verify other bytes (a file that
    /// also holds the signatures of an earlier signing of the same
    /// version, see `publish --resign`) count for nothing.
    pub fn verify(&self, message: &[u8], sig_file: &[u8]) -> Result<Signers, SignatureError> {
        if sig_file.len() > MAX_SIGNATURE_FILE_BYTES {
            return Err(SignatureError::TooLarge {
                size: sig_file.len(),
                max: MAX_SIGNATURE_FILE_BYTES,
            });
        }
        let mut signatures = Vec::new();
        for (i, raw) in sig_file.split(|&b| b == b'\n').enumerate() {
            let malformed = |reason| SignatureError::Malformed {
                line: i + 1,
                reason,
            };
            let line = std::str::from_utf8(raw).map_err(|_| malformed(KeyError::NotUtf8))?;
            if line.trim().is_empty() {
                continue;
            }
            signatures.push(Signature::parse(line).map_err(malformed)?);
        }
        if signatures.is_empty() {
            return Err(SignatureError::NoSignature);
        }

        let mut signers = Signers {
            keys: Vec::new(),
            by_recovery_key: false,
        };
        let mut failed_key = None;
        let mut revoked = Vec::new();
        // Revoked keys too, listed or not: to say that a revoked key signed.
        let candidates = self.keys.iter().chain(&self.recovery).chain(&self.revoked);
        for sig in &signatures {
            for key in candidates.clone().filter(|k| k.name == sig.key_name) {
                if self.is_revoked(key) {
                    if key.verifies(message, sig) && !revoked.contains(&key.name) {
                        revoked.push(key.name.clone());
                    }
                } else if key.verifies(message, sig) {
                    if !signers.keys.contains(key) {
                        signers.keys.push(key.clone());
                    }
                    signers.by_recovery_key |= self.recovery.contains(key);
                } else {
                    failed_key.get_or_insert_with(|| key.name.clone());
                }
            }
        }
        if !signers.keys.is_empty() {
            return Ok(signers);
        }
        Err(match (failed_key, revoked.is_empty()) {
            (_, false) => SignatureError::Revoked { names: revoked },
            (Some(key), true) => SignatureError::BadSignature { key },
            (None, true) => SignatureError::UntrustedKey {
                names: signatures.into_iter().map(|s| s.key_name).collect(),
            },
        })
    }
}

impl FromIterator<PublicKey> for TrustedKeys {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(iter: I) -> TrustedKeys {
        let mut keys = TrustedKeys::new();
        for key in iter {
            keys.insert(key);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Nix 2.8: `nix key generate-secret --key-name test-1` and
    /// `nix key convert-secret-to-public`.
    const NIX_SECRET: &str = "test-1:ndBKAEExhuYUMRVHnNZiGKB5mdkptX07dYvMEeyQerecmJeQfbN6X26u+07KlNatkdPaWMq9VE79kCTk2UDOBA==";
    const NIX_PUBLIC: &str = "test-1:nJiXkH2zel9urvtOypTWrZHT2ljKvVRO/ZAk5NlAzgQ=";

    /// NIX_SECRET's signature of `b"meta bytes"`, made with ed25519-dalek 2
    /// and OpenSSL (Python's `cryptography`) alike, before ed25519-dalek 3:
    /// keys and signatures made by any earlier abnix keep verifying.
    const NIX_SIGNATURE: &str = "test-1:UsUjrLfWr68/VjdQOREA9Y4yTQrYMX0olXd757+EPjif+6M7NChGCEpkzRsUv2yc0tUyvbiU+wnKULJUigQ9AA==";

    fn trusted(keys: &[&SecretKey]) -> TrustedKeys {
        keys.iter().map(|k| k.public()).collect()
    }

    #[test]
    fn nix_generated_key_pair_is_usable() {
        let secret = SecretKey::parse(&format!("{NIX_SECRET}\n")).unwrap();
        assert_eq!(secret.name(), "test-1");
        assert_eq!(secret.to_string(), NIX_SECRET);
        assert_eq!(secret.public().to_string(), NIX_PUBLIC);
        let public = PublicKey::parse(NIX_PUBLIC).unwrap();
        assert_eq!(public, secret.public());
        let sig = secret.sign(b"meta bytes");
        assert!(public.verifies(b"meta bytes", &sig));
        assert!(!public.verifies(b"meta bytez", &sig));
    }

    #[test]
    fn signature_made_before_is_reproduced_and_verifies() {
        let secret = SecretKey::parse(NIX_SECRET).unwrap();
        assert_eq!(secret.sign(b"meta bytes").to_string(), NIX_SIGNATURE);
        let public = PublicKey::parse(NIX_PUBLIC).unwrap();
        let signature = Signature::parse(NIX_SIGNATURE).unwrap();
        assert!(public.verifies(b"meta bytes", &signature));
        assert!(!public.verifies(b"meta bytez", &signature));
        let file = signature_file(&[signature]);
        let keys: TrustedKeys = [public].into_iter().collect();
        assert!(keys.verify(b"meta bytes", file.as_bytes()).is_ok());
    }

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = SecretKey::generate("fleet-2026").unwrap();
        let b = SecretKey::generate("fleet-2026").unwrap();
        assert_ne!(a.public(), b.public());
        let parsed = SecretKey::parse(&a.to_string()).unwrap();
        assert_eq!(parsed.public(), a.public());
        assert_eq!(
            PublicKey::parse(&a.public().to_string()).unwrap(),
            a.public()
        );
        let sig = a.sign(b"x");
        assert_eq!(Signature::parse(&sig.to_string()).unwrap(), sig);
        assert_eq!(
            parsed.sign(b"x"),
            sig,
            "ed25519 signatures are deterministic"
        );
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = SecretKey::parse(NIX_SECRET).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("test-1"));
        assert!(!shown.contains("ndBKAEEx"), "{shown}");
    }

    #[test]
    fn bad_names_are_refused() {
        for (name, reason) in [
            ("", "it is empty"),
            ("a b", "it contains whitespace"),
            ("a\tb", "it contains whitespace"),
            ("a\u{7}b", "it contains a control character"),
        ] {
            assert_eq!(
                SecretKey::generate(name).unwrap_err(),
                KeyError::BadName {
                    name: name.into(),
                    reason
                }
            );
        }
        // "a:b" parses as name "a", so generate is where ':' is caught.
        assert!(matches!(
            SecretKey::generate("a:b"),
            Err(KeyError::BadName {
                reason: "it contains ':'",
                ..
            })
        ));
        assert!(matches!(
            PublicKey::parse(":nJiXkH2zel9urvtOypTWrZHT2ljKvVRO/ZAk5NlAzgQ="),
            Err(KeyError::BadName {
                reason: "it is empty",
                ..
            })
        ));
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        assert_eq!(PublicKey::parse("no-colon").unwrap_err(), KeyError::NoColon);
        assert_eq!(PublicKey::parse("k:!!!").unwrap_err(), KeyError::BadBase64);
        assert_eq!(
            PublicKey::parse(NIX_SECRET).unwrap_err(),
            KeyError::WrongLength {
                expected: 32,
                actual: 64
            }
        );
        assert_eq!(
            SecretKey::parse(NIX_PUBLIC).unwrap_err(),
            KeyError::WrongLength {
                expected: 64,
                actual: 32
            }
        );
        // Seed of one key with the public half of another.
        let other = SecretKey::generate("test-1").unwrap();
        let mut bytes = BASE64.decode(&NIX_SECRET[7..]).unwrap();
        bytes[32..].copy_from_slice(other.public().key.as_bytes());
        let spliced = format!("test-1:{}", BASE64.encode(&bytes));
        assert_eq!(SecretKey::parse(&spliced).unwrap_err(), KeyError::Mismatch);
        // The identity point is a weak key: it would accept forged signatures.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = format!("k:{}", BASE64.encode(identity));
        assert_eq!(PublicKey::parse(&weak).unwrap_err(), KeyError::BadPublicKey);
    }

    #[test]
    fn signature_file_with_a_trusted_signature_verifies() {
        let key = SecretKey::parse(NIX_SECRET).unwrap();
        let file = signature_file(&[key.sign(b"m")]);
        let keys = trusted(&[&key]);
        assert_eq!(
            keys.verify(b"m", file.as_bytes()).unwrap().first().name(),
            "test-1"
        );
    }

    #[test]
    fn rotation_any_trusted_line_is_enough() {
        let old = SecretKey::generate("old").unwrap();
        let new = SecretKey::generate("new").unwrap();
        let file = signature_file(&[old.sign(b"m"), new.sign(b"m")]);
        // A device that trusts only the new key, one that trusts only the
        // old, and one that trusts both all accept.
        for keys in [trusted(&[&new]), trusted(&[&old]), trusted(&[&old, &new])] {
            assert!(keys.verify(b"m", file.as_bytes()).is_ok());
        }
    }

    #[test]
    fn keys_sharing_a_name_are_all_tried() {
        let first = SecretKey::generate("fleet").unwrap();
        let second = SecretKey::generate("fleet").unwrap();
        let keys = trusted(&[&first, &second]);
        let file = signature_file(&[second.sign(b"m")]);
        assert_eq!(
            keys.verify(b"m", file.as_bytes()).unwrap().keys(),
            [second.public()]
        );
    }

    #[test]
    fn revoked_keys_verify_nothing_and_recovery_keys_are_named() {
        let old = SecretKey::generate("fleet").unwrap();
        let new = SecretKey::generate("fleet-2").unwrap();
        let recovery = SecretKey::generate("recovery").unwrap();
        let mut keys = trusted(&[&old, &new]);
        keys.insert_recovery(recovery.public());
        let both = signature_file(&[old.sign(b"m"), recovery.sign(b"m")]);
        let signers = keys.verify(b"m", both.as_bytes()).unwrap();
        assert_eq!(signers.keys(), [old.public(), recovery.public()]);
        assert!(signers.by_recovery_key());
        assert!(!keys
            .verify(b"m", signature_file(&[new.sign(b"m")]).as_bytes())
            .unwrap()
            .by_recovery_key());

        // Revoked without being trusted (removed from the list) is still
        // named as revoked.
        let mut unlisted = trusted(&[&new]);
        unlisted.revoke(old.public());
        let by_old = signature_file(&[old.sign(b"m")]);
        assert!(matches!(
            unlisted.verify(b"m", by_old.as_bytes()),
            Err(SignatureError::Revoked { .. })
        ));

        keys.revoke(old.public());
        let err = keys.verify(b"m", by_old.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            SignatureError::Revoked {
                names: vec!["fleet".into()]
            }
        );
        assert_eq!(err.to_string(), "signed only by revoked keys: fleet");
        // Another line still vouches, without the revoked key.
        let signers = keys.verify(b"m", both.as_bytes()).unwrap();
        assert_eq!(signers.keys(), [recovery.public()]);
    }

    #[test]
    fn lines_of_another_signing_count_for_nothing() {
        // publish --resign keeps the signatures of the previous signing.
        let key = SecretKey::generate("fleet").unwrap();
        let file = signature_file(&[key.sign(b"new"), key.sign(b"old")]);
        let keys = trusted(&[&key]);
        assert!(keys.verify(b"new", file.as_bytes()).is_ok());
        assert!(keys.verify(b"old", file.as_bytes()).is_ok());
        assert_eq!(
            keys.verify(b"other", file.as_bytes()),
            Err(SignatureError::BadSignature {
                key: "fleet".into()
            })
        );
    }

    #[test]
    fn empty_signature_file_is_no_signature() {
        let keys = trusted(&[&SecretKey::generate("k").unwrap()]);
        for file in [&b""[..], b"\n", b"  \n\r\n"] {
            assert_eq!(keys.verify(b"m", file), Err(SignatureError::NoSignature));
        }
    }

    #[test]
    fn untrusted_signers_are_named() {
        let keys = trusted(&[&SecretKey::generate("trusted").unwrap()]);
        let a = SecretKey::generate("a").unwrap();
        let b = SecretKey::generate("b").unwrap();
        let file = signature_file(&[a.sign(b"m"), b.sign(b"m")]);
        let err = keys.verify(b"m", file.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            SignatureError::UntrustedKey {
                names: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(err.to_string(), "signed only by untrusted keys: a, b");
    }

    #[test]
    fn wrong_bytes_is_bad_signature() {
        let key = SecretKey::generate("k").unwrap();
        let file = signature_file(&[key.sign(b"m")]);
        assert_eq!(
            trusted(&[&key]).verify(b"M", file.as_bytes()),
            Err(SignatureError::BadSignature { key: "k".into() })
        );
        // A trusted name whose signature was made by another key.
        let impostor = SecretKey::generate("k").unwrap();
        let file = signature_file(&[impostor.sign(b"m")]);
        assert_eq!(
            trusted(&[&key]).verify(b"m", file.as_bytes()),
            Err(SignatureError::BadSignature { key: "k".into() })
        );
    }

    #[test]
    fn malformed_lines_are_named() {
        let key = SecretKey::generate("k").unwrap();
        let keys = trusted(&[&key]);
        let good = key.sign(b"m").to_string();
        let cases: [(String, usize, KeyError); 4] = [
            (format!("{good}\ngarbage\n"), 2, KeyError::NoColon),
            (format!("\n{good}\nk:@@\n"), 3, KeyError::BadBase64),
            (
                "k:AAAA\n".to_string(),
                1,
                KeyError::WrongLength {
                    expected: 64,
                    actual: 3,
                },
            ),
            (
                format!(":{}", &good[2..]),
                1,
                KeyError::BadName {
                    name: String::new(),
                    reason: "it is empty",
                },
            ),
        ];
        for (file, line, reason) in cases {
            assert_eq!(
                keys.verify(b"m", file.as_bytes()),
                Err(SignatureError::Malformed { line, reason }),
                "{file:?}"
            );
        }
        assert_eq!(
            keys.verify(b"m", b"k:\xff\xfe"),
            Err(SignatureError::Malformed {
                line: 1,
                reason: KeyError::NotUtf8
            })
        );
    }

    #[test]
    fn oversized_signature_file_is_refused_unread() {
        let keys = trusted(&[&SecretKey::generate("k").unwrap()]);
        let file = vec![b'\n'; MAX_SIGNATURE_FILE_BYTES + 1];
        assert_eq!(
            keys.verify(b"m", &file),
            Err(SignatureError::TooLarge {
                size: MAX_SIGNATURE_FILE_BYTES + 1,
                max: MAX_SIGNATURE_FILE_BYTES
            })
        );
    }
}
