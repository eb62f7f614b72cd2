//! The key and signature parsers and TrustedKeys::verify never panic, and
//! nothing but the trusted key's own signature of the message verifies.
//!
//! Input: a 2-byte little-endian message length, the message, then the
//! signature file.
#![no_main]

use abnix_formats::sign::{PublicKey, SecretKey, Signature, TrustedKeys};
use libfuzzer_sys::fuzz_target;

/// Made by `nix key generate-secret --key-name test-1`.
const SECRET: &str = "test-1:ndBKAEExhuYUMRVHnNZiGKB5mdkptX07dYvMEeyQerecmJeQfbN6X26u+07KlNatkdPaWMq9VE79kCTk2UDOBA==";

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (message, sig_file) = rest.split_at(split);

    let text = String::from_utf8_lossy(sig_file);
    let _ = SecretKey::parse(&text);
    let _ = PublicKey::parse(&text);
    let _ = Signature::parse(&text);

    let secret = SecretKey::parse(SECRET).expect("the fixed key parses");
    let keys: TrustedKeys = [secret.public()].into_iter().collect();
    if keys.verify(message, sig_file).is_ok() {
        // ed25519 is deterministic and verification is strict (canonical
        // encodings only): an accepted line must be our exact signature.
        let ours = secret.sign(message).to_string();
        let found = sig_file
            .split(|&b| b == b'\n')
            .any(|line| std::str::from_utf8(line).is_ok_and(|l| l.trim() == ours));
        assert!(found, "a signature other than the key's own was accepted");
    }
});
