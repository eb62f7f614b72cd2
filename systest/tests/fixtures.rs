//! Fixture versions are reproducible, valid filesystems named by their id.

use std::process::Command;
use std::time::Duration;

use abnix_formats::layout::Arch;
use abnix_systest::kernel::Kernel;
use abnix_systest::paths;
use abnix_systest::version::{Behaviour, FixtureFile, FixtureVersion, VersionSpec};

/// The same spec built twice, a second apart, gives byte-identical images
/// and initrds: no clock, owner or directory-order leaks in, so successive
/// versions differ only where their content does (and delta well).
#[test]
fn a_version_builds_reproducibly_into_a_clean_filesystem_named_by_its_id() {
    let dir = paths::run_dir("reproducible").unwrap();
    let kernel = Kernel::debian_cloud(Arch::native()).unwrap();
    let mut spec = VersionSpec::new(9, Behaviour::healthy(["echo hello"]));
    spec.files.push(FixtureFile::new(
        "/etc/abnix/config.toml",
        0o644,
        b"channel = \"test\"\n".to_vec(),
    ));

    let first = FixtureVersion::build(&spec, &kernel, &dir.join("first")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let second = FixtureVersion::build(&spec, &kernel, &dir.join("second")).unwrap();
    assert!(
        std::fs::read(&first.image).unwrap() == std::fs::read(&second.image).unwrap(),
        "{} and {} differ",
        first.image.display(),
        second.image.display()
    );
    assert!(std::fs::read(&first.initrd).unwrap() == std::fs::read(&second.initrd).unwrap());
    assert_eq!(first.cmdline, second.cmdline);
    assert!(first.cmdline.contains(&format!("root=UUID={}", spec.id)));

    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&first.image)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let superblock = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&first.image)
        .output()
        .unwrap();
    let superblock = String::from_utf8_lossy(&superblock.stdout);
    let uuid = superblock
        .lines()
        .find_map(|line| line.strip_prefix("Filesystem UUID:"))
        .unwrap()
        .trim();
    assert_eq!(uuid, spec.id.to_string());

    let config = Command::new("debugfs")
        .args(["-R", "cat /etc/abnix/config.toml"])
        .arg(&first.image)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&config.stdout),
        "channel = \"test\"\n"
    );
}
