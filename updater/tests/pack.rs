//! keygen and pack through the real binary, on a real ext4 image.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use abnix_core::bundle::Bundle;
use abnix_core::sign::{PublicKey, TrustedKeys};

const UUID: &str = "8c4e2f10-5a3b-4d7c-9e61-2b0a7f3c9d58";

fn abnix_update(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_abnix-update"))
        .args(args)
        .output()
        .expect("running abnix-update")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn ext4_image(dir: &Path) -> String {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    let script: String = (0..20_000).map(|i| format!("echo step {i}\n")).collect();
    fs::write(tree.join("bin/init"), script).unwrap();
    let image = dir.join("root.ext4");
    fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", UUID, "-d"])
        .arg(&tree)
        .arg(&image)
        .output()
        .expect("running mkfs.ext4 (install e2fsprogs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image.to_str().unwrap().to_owned()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

#[test]
fn keygen_then_pack_makes_a_bundle_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, public) = (path(dir, "fleet.key"), path(dir, "fleet.pub"));

    let printed = stdout(&abnix_update(&[
        "keygen",
        "--name",
        "fleet-1",
        "--out",
        &secret,
        "--public-out",
        &public,
    ]));
    let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key mode is {mode:o}");
    assert_eq!(fs::read_to_string(&public).unwrap(), printed);
    let public_key = PublicKey::parse(&printed).unwrap();
    assert_eq!(public_key.name(), "fleet-1");

    // An existing key is never overwritten.
    let before = fs::read(&secret).unwrap();
    let err = failure(&abnix_update(&["keygen", "--name", "x", "--out", &secret]));
    assert!(err.contains("fleet.key"), "{err}");
    assert_eq!(fs::read(&secret).unwrap(), before);

    let image = ext4_image(dir);
    fs::write(dir.join("kernel"), b"kernel bytes".repeat(100)).unwrap();
    fs::write(dir.join("initrd"), b"initrd bytes".repeat(100)).unwrap();
    fs::write(dir.join("cmdline"), "init=/nix/store/x/init quiet\n").unwrap();
    let out_dir = path(dir, "bundle");
    let printed = stdout(&abnix_update(&[
        "pack",
        "--image",
        &image,
        "--kernel",
        &path(dir, "kernel"),
        "--initrd",
        &path(dir, "initrd"),
        "--cmdline-file",
        &path(dir, "cmdline"),
        "--version",
        "42",
        "--label",
        "integration test",
        "--id",
        UUID,
        "--key",
        &secret,
        "--out",
        &out_dir,
        "--level",
        "1",
    ]));
    assert!(printed.contains("version 42\n"), "{printed}");
    assert!(printed.contains(&format!("id {UUID}\n")), "{printed}");
    assert!(
        printed.contains(&format!("  42-{UUID}.img.zst\n")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("  42-{UUID}.meta.sig\n")),
        "{printed}"
    );

    let keys: TrustedKeys = [public_key].into_iter().collect();
    let bundle = Bundle::open(Path::new(&out_dir), &keys).unwrap();
    let meta = bundle.signed.meta();
    assert_eq!((meta.version, meta.id.to_string()), (42, UUID.to_owned()));
    assert_eq!(meta.cmdline, "init=/nix/store/x/init quiet");
    assert_eq!(meta.label, "integration test");
    assert_eq!(meta.image.size, 8 << 20);
}

#[test]
fn pack_refuses_a_wrong_id_and_a_garbage_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = path(dir, "k");
    stdout(&abnix_update(&["keygen", "--name", "k", "--out", &secret]));
    fs::write(dir.join("kernel"), b"k").unwrap();
    fs::write(dir.join("initrd"), b"i").unwrap();
    let pack = |image: &str, id: &str| {
        abnix_update(&[
            "pack",
            "--image",
            image,
            "--kernel",
            &path(dir, "kernel"),
            "--initrd",
            &path(dir, "initrd"),
            "--cmdline",
            "quiet",
            "--version",
            "1",
            "--label",
            "l",
            "--id",
            id,
            "--key",
            &secret,
            "--out",
            &path(dir, "bundle"),
        ])
    };

    let image = ext4_image(dir);
    let other = "11111111-2222-4333-8444-555555555555";
    let err = failure(&pack(&image, other));
    assert!(
        err.contains(&format!(
            "the image's filesystem UUID is {UUID}, not the expected {other}"
        )),
        "{err}"
    );

    let garbage = path(dir, "garbage.img");
    fs::write(&garbage, vec![0xa5u8; 64 * 1024]).unwrap();
    let err = failure(&pack(&garbage, UUID));
    assert!(err.contains("garbage.img"), "{err}");
    assert!(err.contains("no ext4 or erofs superblock"), "{err}");
    assert!(!dir.join("bundle").exists());
}
