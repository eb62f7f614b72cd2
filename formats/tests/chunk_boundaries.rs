//! Pins the chunker's cut points. A delta update reuses the chunks an old
//! image shares with the new one (docs/delta.md), and that only works if
//! every release cuts the same bytes at the same places: a fastcdc upgrade
//! (4.0.0 moved them) or a change of the default parameters that moves the
//! boundaries would silently turn every fleet's next update into a full
//! download. If this test fails, the cut points changed: that is a format
//! decision, not a test to update in passing.
//!
//! The input comes from a generator written here (SplitMix64), not from the
//! `rand` crate, whose streams may change between its releases.

use abnix_formats::chunking::{chunks, ChunkParams};
use sha2::{Digest, Sha256};

const INPUT_LEN: usize = 4 * 1024 * 1024;

/// `len` pseudo-random bytes from SplitMix64 seeded with `seed`.
fn splitmix_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// The offset of every chunk, and checks that the chunks tile the input.
fn boundaries(input: &[u8], params: ChunkParams) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut end = 0u64;
    for chunk in chunks(input, params).expect("valid chunk params") {
        let chunk = chunk.expect("reading from memory");
        assert_eq!(chunk.offset, end, "chunks must be contiguous");
        let start = chunk.offset as usize;
        assert_eq!(chunk.data, input[start..start + chunk.data.len()]);
        offsets.push(chunk.offset);
        end += chunk.data.len() as u64;
    }
    assert_eq!(end, input.len() as u64, "chunks must cover the input");
    offsets
}

fn sha256_of_offsets(offsets: &[u64]) -> String {
    let mut hasher = Sha256::new();
    for offset in offsets {
        hasher.update(offset.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

#[test]
fn default_params_cut_where_they_always_did() {
    let params = ChunkParams::default();
    assert_eq!(
        (params.min, params.avg, params.max),
        (16 * 1024, 64 * 1024, 256 * 1024),
        "the default chunk sizes are part of the delta format"
    );
    let offsets = boundaries(&splitmix_bytes(0xab_0001, INPUT_LEN), params);
    assert_eq!(offsets, EXPECTED_DEFAULT, "cut points moved");
}

#[test]
fn smaller_params_cut_where_they_always_did() {
    let params = ChunkParams {
        min: 8 * 1024,
        avg: 32 * 1024,
        max: 128 * 1024,
    };
    let offsets = boundaries(&splitmix_bytes(0xab_0002, INPUT_LEN), params);
    assert_eq!(
        (offsets.len(), sha256_of_offsets(&offsets).as_str()),
        EXPECTED_SMALL,
        "cut points moved"
    );
}

/// fastcdc 3.2.1's v2020 cut points (48 chunks).
const EXPECTED_DEFAULT: &[u64] = &[
    0, 77289, 173045, 354750, 430512, 504548, 678147, 700601, 821244, 909369, 978838, 1062852,
    1168353, 1281338, 1297784, 1340407, 1480671, 1702861, 1808711, 1901419, 1941438, 2114938,
    2306146, 2380001, 2451946, 2479923, 2575425, 2619187, 2687816, 2806517, 2848965, 2924999,
    3016538, 3097642, 3148000, 3216436, 3264642, 3352562, 3464265, 3542309, 3619913, 3696855,
    3753506, 3815903, 3910005, 4012918, 4070347, 4148005,
];

/// fastcdc 3.2.1's: how many chunks, and a SHA-256 over their offsets.
const EXPECTED_SMALL: (usize, &str) = (
    111,
    "844f634f0114deb4c7a1c60a2cacc83b6b5bc2950fef21f0b56b36be99f9e89b",
);
