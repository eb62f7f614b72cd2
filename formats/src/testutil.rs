//! Test helpers shared by the unit tests of this crate and of abnix-core
//! (feature `testutil`): test data, and sgdisk as the reference for GPT.

use std::path::Path;
use std::process::Command;

use crate::gpt::Gpt;

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

/// Runs sgdisk and returns its stdout; panics (never skips) when sgdisk
/// is missing or fails.
pub fn sgdisk(args: &[&str], disk: &Path) -> String {
    let out = Command::new("sgdisk")
        .args(args)
        .arg(disk)
        .output()
        .expect("running sgdisk (install gdisk)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sgdisk {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A field of `sgdisk -i N` output, e.g. "First sector" -> "2048".
fn sgdisk_info_field(info: &str, field: &str) -> String {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field:?} in sgdisk output:\n{info}"));
    // "2048 (at 1024.0 KiB)" / "21686148-... (BIOS boot partition)" / "'name'"
    let value = line.split(" (").next().unwrap();
    value.trim_matches('\'').to_owned()
}

/// Asserts that sgdisk finds no problem in the table at `path` and reads
/// every partition of `gpt` from it field for field.
pub fn sgdisk_agrees_with(gpt: &Gpt, path: &Path) {
    let verify = sgdisk(&["-v"], path);
    assert!(verify.contains("No problems found"), "{verify}");
    let print = sgdisk(&["-p"], path);
    assert!(
        print.contains(&format!("Disk identifier (GUID): {}", gpt.disk_guid)),
        "{print}"
    );
    for (i, entry) in gpt.partitions.iter().enumerate() {
        let Some(p) = entry else { continue };
        let info = sgdisk(&["-i", &(i + 1).to_string()], path);
        let field = |f| sgdisk_info_field(&info, f);
        assert_eq!(field("Partition GUID code"), p.type_guid.to_string());
        assert_eq!(field("Partition unique GUID"), p.guid.to_string());
        assert_eq!(field("First sector"), p.first_lba.to_string());
        assert_eq!(field("Last sector"), p.last_lba.to_string());
        assert_eq!(field("Attribute flags"), format!("{:016X}", p.attributes));
        assert_eq!(field("Partition name"), p.name);
    }
}
