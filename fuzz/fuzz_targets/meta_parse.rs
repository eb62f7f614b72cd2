//! Meta::parse never panics, and whatever it accepts round-trips.
#![no_main]

use abnix_formats::meta::Meta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = Meta::parse(data) {
        let bytes = meta.to_bytes();
        assert_eq!(Meta::parse(&bytes).as_ref(), Ok(&meta));
    }
});
