//! Index::parse never panics, and the format is canonical: whatever it
//! accepts serializes back to the same bytes.
#![no_main]

use abnix_formats::index::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::parse(data) {
        assert_eq!(index.to_bytes(), data);
        assert_eq!(
            index.image_size(),
            index.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>()
        );
    }
});
