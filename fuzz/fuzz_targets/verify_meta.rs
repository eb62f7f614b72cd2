//! verify_meta never panics. Odd first byte: the rest is signed with the
//! trusted key, so fuzzed metas reach the parser through verification;
//! even: input is a 2-byte length, the meta, then a fuzzed signature file.
#![no_main]

use abnix_core::meta::verify_meta;
use abnix_core::sign::{signature_file, SecretKey, TrustedKeys};
use libfuzzer_sys::fuzz_target;

/// Made by `nix key generate-secret --key-name test-1`.
const SECRET: &str = "test-1:ndBKAEExhuYUMRVHnNZiGKB5mdkptX07dYvMEeyQerecmJeQfbN6X26u+07KlNatkdPaWMq9VE79kCTk2UDOBA==";

fuzz_target!(|data: &[u8]| {
    let secret = SecretKey::parse(SECRET).expect("the fixed key parses");
    let keys: TrustedKeys = [secret.public()].into_iter().collect();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let sig = signature_file(&[secret.sign(rest)]);
        let verified = verify_meta(rest, sig.as_bytes(), &keys);
        // A verified meta is exactly what was signed.
        if let Ok(signed) = verified {
            assert_eq!(signed.bytes(), rest);
        }
    } else if let Some((len, rest)) = rest.split_first_chunk::<2>() {
        let split = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (meta, sig) = rest.split_at(split);
        let _ = verify_meta(meta, sig, &keys);
    }
});
