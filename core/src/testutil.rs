//! Helpers shared by the unit tests of several modules.

/// Deterministic pseudo-random bytes (xorshift), different per seed: test
/// data that is neither zeros nor compressible to nothing.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
