//! Offline updates (`install --bundle`) through the real binary, on a
//! sparse disk image installed with version 1: a bundle directory (a USB
//! stick) installs into the other slot on trial with the rules of a bucket
//! update, on a host whose config names no bucket; every bad bundle is
//! refused with nothing switched.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use abnix_formats::meta::{object_name, ObjectKind};
use abnix_formats::sign::SecretKey;
use abnix_formats::slot::Slot;
use common::{
    assert_exit, assert_exit_saying, stderr, stdout, Device, Fleet, Version, CHANNEL, MIB,
};
use serde_json::Value;

/// Rewrites the device's config as an air-gapped host's: no bucket, no
/// channel, only the keys (and where the state is).
fn air_gapped(device: &Device, fleet: &Fleet) {
    fs::write(
        &device.config,
        format!(
            "trusted_keys = [\"{}\"]\ntries = 3\nreboot = \"never\"\nstate_dir = \"{}\"\n",
            fleet.public_key(),
            device.state_dir.display()
        ),
    )
    .unwrap();
}

/// A copy of `version`'s bundle in a directory of its own (the stick).
fn stick(fleet: &Fleet, version: &Version, name: &str) -> PathBuf {
    let dir = fleet.dir.path().join("stick").join(name);
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(&version.bundle.dir).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn object(dir: &Path, version: &Version, kind: ObjectKind) -> PathBuf {
    dir.join(object_name(version.number(), version.id(), kind))
}

/// Flips one byte in the middle of a file, keeping its size.
fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn install(device: &Device, booted: Slot, bundle: &Path) -> std::process::Output {
    device.run(booted, "install", &["--bundle", bundle.to_str().unwrap()])
}

/// Each slot's (state, version, boots next).
fn slots(device: &Device, booted: Slot) -> Vec<(String, Option<u64>, bool)> {
    device.slots_next(booted)
}

fn slot(state: &str, version: Option<u64>, boots_next: bool) -> (String, Option<u64>, bool) {
    (state.to_owned(), version, boots_next)
}

#[test]
fn a_bundle_installs_on_trial_falls_back_and_is_never_retried_on_an_air_gapped_host() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    air_gapped(&device, &fleet);
    let v2 = fleet.version(2, 8 * MIB);
    let bundle = stick(&fleet, &v2, "v2");

    let out = device.run(
        Slot::A,
        "install",
        &["--bundle", bundle.to_str().unwrap(), "--json"],
    );
    assert_exit(&out, 4);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["result"], "installed", "{report}");
    assert_eq!(report["version"], 2, "{report}");
    assert_eq!(report["id"], v2.id().to_string(), "{report}");
    assert_eq!(report["label"], "kiosk 2", "{report}");
    assert_eq!(report["slot"], "b", "{report}");
    assert!(
        stderr(&out).contains("the bundle's version is 2 \"kiosk 2\""),
        "{}",
        stderr(&out)
    );
    let status = device.status(Slot::A);
    assert_eq!(status["slots"][1]["state"], "trial", "{status}");
    assert_eq!(status["slots"][1]["tries_left"], 3, "{status}");
    assert_eq!(status["pending_reboot"], 2, "{status}");
    assert!(status["channel"].is_null(), "{status}");
    // No check of a channel was made, nor a latest version seen.
    assert!(status["last_check"].is_null(), "{status}");
    assert!(status["latest_known"].is_null(), "{status}");
    // Nothing was asked of the bucket the host does not know.
    assert!(fleet.proxy.requests().is_empty());
    // Again before the reboot: it waits for it already.
    assert_exit(&install(&device, Slot::A, &bundle), 4);

    // The trial boots, is healthy, is marked good; the same bundle again
    // is nothing to do.
    assert_eq!(device.power_on(), Slot::B);
    assert_exit(&device.run(Slot::B, "mark-good", &[]), 0);
    assert_eq!(
        slots(&device, Slot::B),
        [slot("good", Some(1), false), slot("good", Some(2), true)]
    );
    let out = install(&device, Slot::B, &bundle);
    assert_exit_saying(&out, 0, "up to date (version 2)");

    // Version 3 never becomes healthy: three tries, then slot b again.
    let v3 = fleet.version(3, 8 * MIB);
    let bundle = stick(&fleet, &v3, "v3");
    assert_exit(&install(&device, Slot::B, &bundle), 4);
    for _ in 0..3 {
        assert_eq!(device.power_on(), Slot::A);
    }
    assert_eq!(device.power_on(), Slot::B);
    // Found at the next run, recorded, and never installed again.
    let out = install(&device, Slot::B, &bundle);
    assert_exit_saying(
        &out,
        1,
        "ignored version 3: it failed before (its trial in slot a failed",
    );
    let status = device.status(Slot::B);
    assert_eq!(status["failed_versions"][0]["version"], 3, "{status}");
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("it failed before"),
        "{status}"
    );
    assert_eq!(
        slots(&device, Slot::B),
        [slot("failed", Some(3), false), slot("good", Some(2), true)]
    );
    // `update` on such a host says why it cannot.
    let out = device.run(Slot::B, "update", &[]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("names no bucket"), "{}", stderr(&out));
}

/// What each bad bundle did not change: slot a boots version 1, slot b
/// holds nothing bootable, and slot a was not written.
fn assert_nothing_switched(device: &Device, slot_a: abnix_formats::digest::Digest, case: &str) {
    assert_eq!(
        slots(device, Slot::A),
        [slot("good", Some(1), true), slot("bad", None, false)],
        "{case}"
    );
    assert_eq!(device.slot_digest(Slot::A), slot_a, "{case}");
}

#[test]
fn bad_bundles_are_refused_and_nothing_is_switched() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    air_gapped(&device, &fleet);
    let slot_a = device.slot_digest(Slot::A);
    let v2 = fleet.version(2, 8 * MIB);
    let stranger = SecretKey::generate("fleet-test").unwrap();
    let foreign = fleet.version_signed_with(2, 8 * MIB, &stranger);
    let aarch64 = fleet.version_for(2, abnix_formats::layout::Arch::Aarch64);

    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
    let image = |dir: &Path| object(dir, &v2, ObjectKind::Image);
    let cases: Vec<(&str, &Version, Damage, &str)> = vec![
        (
            "signed by a key the host does not trust",
            &foreign,
            Box::new(|_| {}),
            "does not verify",
        ),
        (
            "the meta altered",
            &v2,
            Box::new(|dir| flip_byte(&object(dir, &v2, ObjectKind::Meta))),
            "does not verify",
        ),
        (
            "the signature file emptied",
            &v2,
            Box::new(|dir| fs::write(object(dir, &v2, ObjectKind::MetaSig), "").unwrap()),
            "does not verify",
        ),
        (
            "the index altered",
            &v2,
            Box::new(|dir| flip_byte(&object(dir, &v2, ObjectKind::Index))),
            "has SHA-256",
        ),
        (
            "the image altered, same length",
            &v2,
            Box::new(move |dir| flip_byte(&image(dir))),
            "writing the image of version 2 into slot b",
        ),
        (
            "the image truncated (a copy cut short)",
            &v2,
            Box::new(move |dir| {
                let file = fs::OpenOptions::new().write(true).open(image(dir)).unwrap();
                let len = file.metadata().unwrap().len();
                file.set_len(len / 2).unwrap();
            }),
            "the meta says",
        ),
        (
            "the kernel missing",
            &v2,
            Box::new(|dir| fs::remove_file(object(dir, &v2, ObjectKind::Kernel)).unwrap()),
            "is missing",
        ),
        (
            "a symlink farm pointing at the real files",
            &v2,
            Box::new(|dir| {
                for entry in fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    fs::remove_file(&path).unwrap();
                    let real = v2.bundle.dir.join(path.file_name().unwrap());
                    std::os::unix::fs::symlink(real, &path).unwrap();
                }
            }),
            "is a symbolic link",
        ),
        (
            "the signature file a FIFO (opening it would wait for a writer)",
            &v2,
            Box::new(|dir| {
                use std::os::unix::ffi::OsStrExt;
                let sig = object(dir, &v2, ObjectKind::MetaSig);
                fs::remove_file(&sig).unwrap();
                let name = std::ffi::CString::new(sig.as_os_str().as_bytes()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
            }),
            "is not a regular file",
        ),
        (
            "the meta huge (sparse), as a corrupt stick may show it",
            &v2,
            Box::new(|dir| {
                let meta = object(dir, &v2, ObjectKind::Meta);
                let file = fs::OpenOptions::new().write(true).open(meta).unwrap();
                file.set_len(1 << 40).unwrap();
            }),
            "more than the",
        ),
        (
            "built for another architecture",
            &aarch64,
            Box::new(|_| {}),
            "built for aarch64 machines",
        ),
    ];
    for (i, (case, version, damage, expected)) in cases.iter().enumerate() {
        let dir = stick(&fleet, version, &format!("case-{i}"));
        damage(&dir);
        let out = install(&device, Slot::A, &dir);
        assert_exit(&out, 1);
        assert!(
            stdout(&out).contains(expected),
            "{case}: {expected:?} not in\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        assert_nothing_switched(&device, slot_a, case);
    }

    // Not a bundle at all.
    let out = install(&device, Slot::A, &fleet.dir.path().join("nothing-here"));
    assert_exit_saying(&out, 1, "nothing-here");
    assert_nothing_switched(&device, slot_a, "no directory");

    // The same bundle, undamaged, installs.
    assert_exit(&install(&device, Slot::A, &stick(&fleet, &v2, "good")), 4);
}

#[test]
fn an_older_bundle_or_one_published_for_another_channel_is_refused() {
    let fleet = Fleet::new();
    let v2 = fleet.version(2, 8 * MIB);
    // This host keeps its bucket and channel (kiosk).
    let device = Device::install(&fleet, &v2, "never");
    let slot_a = device.slot_digest(Slot::A);
    let v1 = fleet.version(1, 8 * MIB);

    // Versions never go back.
    let out = install(&device, Slot::A, &stick(&fleet, &v1, "v1"));
    assert_exit_saying(
        &out,
        1,
        "ignored version 1: not newer than version 2 in slot a",
    );
    assert_eq!(
        slots(&device, Slot::A),
        [slot("good", Some(2), true), slot("bad", None, false)]
    );
    assert_eq!(device.slot_digest(Slot::A), slot_a);

    // A version's objects as the bucket holds them: its meta published
    // for a channel, which must be this host's.
    let v3 = fleet.version(3, 8 * MIB);
    let published_for = |channel: &str| {
        let dir = stick(&fleet, &v3, channel);
        let signed = fleet.sign_for(v3.meta(), channel, Duration::from_secs(3600), &[&fleet.key]);
        fs::write(object(&dir, &v3, ObjectKind::Meta), signed.bytes()).unwrap();
        fs::write(object(&dir, &v3, ObjectKind::MetaSig), signed.signatures()).unwrap();
        dir
    };
    let out = install(&device, Slot::A, &published_for("beta"));
    assert_exit_saying(
        &out,
        1,
        "refused version 3: it is published for channel \"beta\"",
    );
    assert_eq!(
        slots(&device, Slot::A),
        [slot("good", Some(2), true), slot("bad", None, false)]
    );
    assert_exit(&install(&device, Slot::A, &published_for(CHANNEL)), 4);
    assert_eq!(
        slots(&device, Slot::A),
        [slot("good", Some(2), false), slot("trial", Some(3), true)]
    );
    // The bucket was never asked.
    assert!(fleet.proxy.requests().is_empty());
}
