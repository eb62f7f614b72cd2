//! The attacks of docs/security.md's table, one test per row, each through
//! the real binary against the real S3 server (s3s-fs): the attacker
//! changes objects in the bucket (same length where that matters), or sits
//! between the device and the bucket, and does not hold the fleet's key
//! (except in the key-compromise row). Each test asserts that nothing is
//! activated, that the slots and the boot state are unchanged where they
//! must be, and that `status` says why.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use abnix_core::boot::Bootloader;
use abnix_formats::layout::Arch;
use abnix_formats::meta::{object_name, ObjectKind};
use abnix_formats::sign::{SecretKey, TrustedKeys};
use abnix_formats::slot::Slot;
use abnix_testkit::{credentials_file, S3Server};
use abnix_updater::publish::{resign, PublishOptions};
use common::{assert_exit, stdout, Device, Fleet, Version, MIB, PREFIX};
use serde_json::Value;

/// Each slot's (state, version, boots next).
fn slots(device: &Device, booted: Slot) -> Vec<(String, Option<u64>, bool)> {
    device.slots_next(booted)
}

fn slot(state: &str, version: Option<u64>, boots_next: bool) -> (String, Option<u64>, bool) {
    (state.to_owned(), version, boots_next)
}

/// Version 1 good in slot a, booting; slot b empty.
fn only_v1() -> Vec<(String, Option<u64>, bool)> {
    vec![slot("good", Some(1), true), slot("bad", None, false)]
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// A fleet and a device that runs its version 1 (reboot policy `never`).
fn v1_installed() -> (Fleet, Device) {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    (fleet, device)
}

/// Version 2 published valid for `secs` seconds only, to a device that
/// trusts its clock.
fn publish_expiring(fleet: &Fleet, device: &Device, secs: u64) -> Version {
    device.set_config("trust_clock", "\"always\"");
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish_with(
        &v2,
        &PublishOptions {
            valid_for: Duration::from_secs(secs),
            ..PublishOptions::default()
        },
    );
    v2
}

/// Flips the byte in the middle of a file: same length, other content.
fn flip_middle_byte(path: &std::path::Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// The device's run of `command` as booted from `booted`: exit code
/// `code`; then the slots as `expected`, the booted slot's partition as it
/// was, and the status that says why.
fn refused(
    device: &Device,
    booted: Slot,
    command: &str,
    code: i32,
    expected: &[(String, Option<u64>, bool)],
) -> Value {
    let before = device.slot_digest(booted);
    let out = device.run(booted, command, &[]);
    assert_exit(&out, code);
    assert_eq!(slots(device, booted), expected);
    assert_eq!(
        device.slot_digest(booted),
        before,
        "the booted slot changed"
    );
    let status = device.status(booted);
    assert!(status["pending_reboot"].is_null() || expected.iter().any(|s| s.0 == "trial"));
    status
}

/// Arbitrary software: a kernel or initrd replaced in the bucket by other
/// bytes of the same length is written as it is read and refused by its
/// hash before its slot file: slot b never becomes bootable, on either
/// bootloader.
#[test]
fn arbitrary_software_a_same_length_tampered_kernel_or_initrd_is_never_activated() {
    for (what, bootloader) in [
        (ObjectKind::Kernel, Bootloader::Grub),
        (ObjectKind::Initrd, Bootloader::SystemdBoot),
    ] {
        let fleet = Fleet::new();
        let v1 = fleet.version(1, 8 * MIB);
        let device = Device::install_booting(&fleet, &v1, bootloader);
        let v2 = fleet.version(2, 8 * MIB);
        fleet.publish(&v2);
        let object = object_name(2, v2.id(), what);
        flip_middle_byte(&fleet.object_file(&object));

        let status = refused(&device, Slot::A, "update", 1, &only_v1());
        let error = text(&status["last_error"]["message"]);
        assert!(
            error.starts_with("failed writing the boot files of version 2 for slot b")
                && error.contains(&object)
                && error.contains("SHA-256"),
            "{what:?}: {error}"
        );
        assert_eq!(device.power_on(), Slot::A);
    }
}

/// Rollback: the channel pointed back to an older version while a newer
/// one waits in slot b for its reboot. The floor is the highest version the
/// slots hold, read from their signed metas on the ESP, so neither the
/// booted version nor a lost state file lowers it.
#[test]
fn rollback_an_older_version_never_replaces_a_newer_one_waiting_for_its_reboot() {
    let (fleet, device) = v1_installed();
    fleet.publish(&fleet.version(3, 8 * MIB));
    assert_exit(&device.run(Slot::A, "update", &[]), 4);
    let pending = vec![slot("good", Some(1), false), slot("trial", Some(3), true)];
    assert_eq!(slots(&device, Slot::A), pending);

    fleet.publish(&fleet.version(2, 8 * MIB));
    let status = refused(&device, Slot::A, "update", 0, &pending);
    assert_eq!(
        text(&status["last_check"]["result"]),
        "ignored version 2: not newer than version 3 in slot b (versions never go back)"
    );
    assert_eq!(status["rollback_floor"], 3);

    // The state file lost or corrupt: the floor is on the ESP.
    fs::write(device.state_file(), b"{\"latest\": nul").unwrap();
    let status = refused(&device, Slot::A, "update", 0, &pending);
    assert!(
        text(&status["last_check"]["result"])
            .starts_with("ignored version 2: not newer than version 3"),
        "{status}"
    );
    assert_eq!(device.power_on(), Slot::B);
}

/// Indefinite freeze: an old but validly signed meta served after it
/// expired is refused; the host keeps what it runs, `check` says so with
/// its own exit code, and `status` says since when the channel is stale.
/// Signing the same version again (`publish --resign`) ends it.
#[test]
fn indefinite_freeze_an_expired_meta_is_refused_and_status_says_since_when() {
    let (fleet, device) = v1_installed();
    publish_expiring(&fleet, &device, 2);
    std::thread::sleep(Duration::from_secs(3));

    let out = device.run(Slot::A, "check", &[]);
    assert_exit(&out, 5);
    assert!(
        stdout(&out).starts_with("refused version 2: the channel is stale, its meta expired"),
        "{}",
        stdout(&out)
    );
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert!(status["stale_since"].is_string(), "{status}");
    assert_eq!(status["stale_since"], status["latest_expires"]);
    let human = stdout(&device.run(Slot::A, "status", &[]));
    assert!(human.contains("stale:           since "), "{human}");

    resign(
        &fleet.channel(&fleet.key),
        &[&fleet.key],
        &PublishOptions::default(),
    )
    .unwrap();
    assert_exit(&device.run(Slot::A, "check", &[]), 0);
    assert!(device.status(Slot::A)["stale_since"].is_null());
}

/// Endless data: an object longer than its signed size is refused before a
/// byte of it is written, and so are a channel meta and a signature file
/// larger than any real one.
#[test]
fn endless_data_objects_are_read_no_further_than_their_signed_size() {
    let (fleet, device) = v1_installed();
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);
    let kernel = fleet.object_file(&v2.meta().kernel.object);
    let mut bytes = fs::read(&kernel).unwrap();
    bytes.resize(bytes.len() + (64 << 20), b'k');
    fs::write(&kernel, &bytes).unwrap();
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    let error = text(&status["last_error"]["message"]);
    assert!(
        error.contains(&v2.meta().kernel.object)
            && error.contains(&format!("expected {}", v2.meta().kernel.size)),
        "{error}"
    );

    fleet.publish(&v2);
    let signatures = fleet.object_file(&object_name(2, v2.id(), ObjectKind::MetaSig));
    fs::write(&signatures, vec![b'\n'; 1 << 20]).unwrap();
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    let error = text(&status["last_error"]["message"]);
    assert!(error.contains("more than the 16384 allowed"), "{error}");

    fs::write(fleet.pointer_file(), vec![b' '; 1 << 20]).unwrap();
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    let error = text(&status["last_error"]["message"]);
    assert!(error.contains("more than the 65536 allowed"), "{error}");
}

/// Waits for `child` at most `limit`; kills it and fails otherwise.
fn wait_at_most(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("the run was still going after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

/// Slow retrieval: a server that trickles a byte every 2 s (well within
/// every read timeout) would hold an update and its lock forever; the
/// run's deadline ends it, and so does the minimum transfer rate. The lock
/// is free again and `status` says why.
#[test]
fn slow_retrieval_a_trickling_server_cannot_hold_a_run_or_its_lock() {
    let (fleet, device) = v1_installed();
    fleet.publish(&fleet.version(2, 8 * MIB));
    fleet.proxy.trickle_every_get(0, Duration::from_secs(2));

    for (key, value, expected) in [
        (
            "update_deadline",
            "\"6s\"",
            "the run's deadline of 6s passed",
        ),
        (
            "min_transfer_rate",
            "\"1K/3s\"",
            "less than the minimum of 1024",
        ),
    ] {
        device.set_config("update_deadline", "\"6h\"");
        device.set_config(key, value);
        let before = device.slot_digest(Slot::A);
        let run = device
            .command(Slot::A, "update", &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_at_most(run, Duration::from_secs(120));
        assert_exit(&out, 1);
        assert_eq!(slots(&device, Slot::A), only_v1());
        assert_eq!(device.slot_digest(Slot::A), before);
        let status = device.status(Slot::A);
        let error = text(&status["last_error"]["message"]);
        assert!(
            error.starts_with("failed fetching the channel's meta") && error.contains(expected),
            "{key}: {error}"
        );
        assert_eq!(status["update_running"], false);
        drop(device.hold_lock());
    }
}

/// Mix and match: an object of another version (v2's initrd as v3's, the
/// same length) and another version's signature file are refused.
#[test]
fn mix_and_match_objects_and_signatures_of_another_version_are_refused() {
    let (fleet, device) = v1_installed();
    let v2 = fleet.version(2, 8 * MIB);
    let v3 = fleet.version(3, 8 * MIB);
    fleet.publish(&v2);
    fleet.publish(&v3);
    assert_eq!(v2.meta().initrd.size, v3.meta().initrd.size);
    let v3_initrd = fleet.object_file(&v3.meta().initrd.object);
    fs::copy(fleet.object_file(&v2.meta().initrd.object), &v3_initrd).unwrap();
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    let error = text(&status["last_error"]["message"]);
    assert!(
        error.contains(&v3.meta().initrd.object) && error.contains("SHA-256"),
        "{error}"
    );

    fleet.publish(&v3);
    let signature =
        |v: &Version| fleet.object_file(&object_name(v.number(), v.id(), ObjectKind::MetaSig));
    fs::copy(signature(&v2), signature(&v3)).unwrap();
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    let error = text(&status["last_error"]["message"]);
    assert!(error.contains("does not match the signed bytes"), "{error}");
}

/// Wrong channel or architecture: a version published for `beta`, copied
/// with its objects into this device's channel; one built for aarch64
/// machines; and a bundle's meta as `pack` signed it, for no channel. Each
/// verifies and each is refused, naming why; none counts as the channel's
/// latest.
#[test]
fn wrong_channel_or_architecture_a_meta_signed_for_another_is_refused() {
    let (fleet, device) = v1_installed();

    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish_with_channel(&v2, "beta");
    for name in v2.meta().object_names() {
        let to = fleet.channel_object_file(common::CHANNEL, &name);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(fleet.channel_object_file("beta", &name), to).unwrap();
    }
    let beta_pointer = fleet.server.object_path(&format!("{PREFIX}/beta.meta"));
    fs::copy(beta_pointer, fleet.pointer_file()).unwrap();
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert_eq!(
        text(&status["last_error"]["message"]),
        "refused version 2: it is published for channel \"beta\", not this device's"
    );
    assert!(status["latest_known"].is_null(), "{status}");

    fleet.publish(&fleet.version_for(3, Arch::Aarch64));
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert_eq!(
        text(&status["last_error"]["message"]),
        "refused version 3: it is built for aarch64 machines, not this device's"
    );

    let v4 = fleet.version(4, 8 * MIB);
    fleet.publish(&v4);
    fleet.put_pointer(v4.bundle.signed.bytes(), v4.bundle.signed.signatures());
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert!(
        text(&status["last_error"]["message"]).starts_with(
            "refused version 4: its meta is a bundle's, signed by pack for no channel"
        ),
        "{status}"
    );
}

/// Malicious mirror: the device reads from a mirror holding a copy of the
/// bucket. What it serves counts only as far as the fleet's signatures
/// reach: a kernel it alters is refused by its hash, and once the copy it
/// keeps serving has expired (a mirror frozen in the past), the device
/// refuses it as stale and says so.
#[test]
fn malicious_mirror_altered_objects_and_a_frozen_copy_are_refused() {
    let (fleet, device) = v1_installed();
    let v2 = publish_expiring(&fleet, &device, 4);
    let mirror = S3Server::start();
    copy_tree(
        &fleet.server.root().join(fleet.server.bucket()),
        &mirror.root().join(mirror.bucket()),
    );
    device.set_config("endpoint", &format!("\"{}\"", mirror.endpoint()));
    device.set_config("bucket", &format!("\"{}\"", mirror.bucket()));
    let credentials = credentials_file(device.dir.path(), &mirror);
    device.set_config("credentials", &format!("\"{}\"", credentials.display()));
    let kernel = mirror.object_path(&format!(
        "{PREFIX}/{}/{}",
        common::CHANNEL,
        v2.meta().kernel.object
    ));
    flip_middle_byte(&kernel);
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert!(
        text(&status["last_error"]["message"]).contains("SHA-256"),
        "{status}"
    );

    // The origin moves on; the mirror keeps serving its copy.
    fleet.publish(&fleet.version(3, 8 * MIB));
    std::thread::sleep(Duration::from_secs(5));
    let out = device.run(Slot::A, "check", &[]);
    assert_exit(&out, 5);
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert!(status["stale_since"].is_string(), "{status}");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Key compromise, and recovery without reinstalling: the fleet's signing
/// key is stolen and signs a huge version number over genuine objects; the
/// hosts install and run it, and from then on refuse every real version as
/// older. A meta signed by the fleet's offline recovery key revokes the
/// stolen key: the host records that on its ESP, the huge version no
/// longer holds the floor up, the real version installs, and the stolen
/// key signs nothing any more, whatever happens to the state file.
#[test]
fn key_compromise_a_recovery_key_revokes_a_stolen_key_and_its_huge_version() {
    /// `version`'s genuine objects made the channel's meta as version
    /// `number`, signed by `key`.
    fn forge(fleet: &Fleet, version: &Version, number: u64, key: &SecretKey) {
        let mut meta = version.meta().clone();
        meta.version = number;
        let forged = fleet.sign_for(&meta, common::CHANNEL, Duration::from_secs(3600), &[key]);
        fleet.put_pointer(forged.bytes(), forged.signatures());
    }

    let fleet = Fleet::new();
    let stolen = fleet.key.clone();
    let recovery = SecretKey::generate("fleet-recovery").unwrap();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    device.set_config("recovery_keys", &format!("[\"{}\"]", recovery.public()));

    // The thief publishes version 2's genuine objects as a huge version.
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);
    let huge = 1 << 62;
    forge(&fleet, &v2, huge, &stolen);
    assert_exit(&device.run(Slot::A, "update", &[]), 4);
    assert_eq!(device.power_on(), Slot::B);
    assert_exit(&device.run(Slot::B, "mark-good", &[]), 0);
    let v3 = fleet.version(3, 8 * MIB);
    fleet.publish(&v3);
    let stuck = vec![slot("good", Some(1), false), slot("good", Some(huge), true)];
    let status = refused(&device, Slot::B, "update", 0, &stuck);
    assert!(
        text(&status["last_check"]["result"])
            .starts_with("ignored version 3: not newer than version 4611686018427387904"),
        "{status}"
    );

    // The operator signs version 3 with the recovery key, revoking the
    // stolen one.
    let mut keys = TrustedKeys::new();
    keys.insert(stolen.public());
    keys.insert_recovery(recovery.public());
    let channel =
        abnix_updater::channel::Channel::new(fleet.channel(&stolen).remote().clone(), keys);
    let opts = PublishOptions {
        revoke: vec![stolen.public()],
        force: true,
        ..PublishOptions::default()
    };
    abnix_updater::publish::publish(
        &channel,
        &v3.bundle,
        &[&recovery],
        &opts,
        &abnix_core::progress::NoProgress,
    )
    .unwrap();
    let out = device.run(Slot::B, "update", &[]);
    assert_exit(&out, 4);
    assert!(
        common::stderr(&out).contains(&format!(
            "key {} is revoked by a recovery key",
            stolen.public()
        )),
        "{}",
        common::stderr(&out)
    );
    let status = device.status(Slot::B);
    assert_eq!(status["slots"][0]["version"], 3);
    assert_eq!(status["slots"][0]["state"], "trial");
    assert_eq!(status["revoked_keys"][0], stolen.public().to_string());
    assert_eq!(device.power_on(), Slot::A);
    assert_exit(&device.run(Slot::A, "mark-good", &[]), 0);

    // The stolen key signs nothing any more, even with the state file gone.
    fs::remove_file(device.state_file()).unwrap();
    forge(&fleet, &v2, huge + 1, &stolen);
    let after = vec![slot("good", Some(3), true), slot("good", Some(huge), false)];
    let status = refused(&device, Slot::A, "update", 1, &after);
    assert!(
        text(&status["last_error"]["message"]).contains("signed only by revoked keys: fleet-test"),
        "{status}"
    );
}

/// Revoked in the config: a key listed in `revoked_keys` verifies nothing,
/// and the floor a slot holds only by its signature counts for nothing.
#[test]
fn key_compromise_a_key_revoked_in_the_config_verifies_nothing() {
    let (fleet, device) = v1_installed();
    let next = SecretKey::generate("fleet-next").unwrap();
    device.set_config("trusted_keys", &format!("[\"{}\"]", next.public()));
    device.set_config("revoked_keys", &format!("[\"{}\"]", fleet.key.public()));
    fleet.publish(&fleet.version(2, 8 * MIB));
    let status = refused(&device, Slot::A, "update", 1, &only_v1());
    assert!(
        text(&status["last_error"]["message"]).contains("signed only by revoked keys: fleet-test"),
        "{status}"
    );
    // Slot a's version was signed by the revoked key only: no floor.
    assert!(status["rollback_floor"].is_null(), "{status}");
}

/// Failed versions outlive the state file: they are recorded on the ESP.
/// Version 3 falls back; with state.json corrupt it is still refused; and
/// after version 4 fell back too (so slot b no longer holds version 3),
/// the channel pointed back at version 3 with the state file gone: still
/// refused.
#[test]
fn a_failed_version_stays_refused_when_the_state_file_is_lost() {
    let (fleet, device) = v1_installed();
    let v3 = fleet.version(3, 8 * MIB);
    let fall_back = |version: &Version| {
        fleet.publish(version);
        assert_exit(&device.run(Slot::A, "update", &[]), 4);
        for _ in 0..3 {
            assert_eq!(device.power_on(), Slot::B);
        }
        assert_eq!(device.power_on(), Slot::A);
    };
    fall_back(&v3);
    let failed_v3 = vec![slot("good", Some(1), true), slot("failed", Some(3), false)];
    fs::write(device.state_file(), b"{\"failed\": [tru").unwrap();
    let status = refused(&device, Slot::A, "update", 0, &failed_v3);
    assert!(
        text(&status["last_check"]["result"]).starts_with("ignored version 3: it failed before"),
        "{status}"
    );
    // Corrupt again: status still knows, from the ESP.
    fs::write(device.state_file(), b"{\"failed\": [tru").unwrap();
    assert_eq!(device.status(Slot::A)["failed_versions"][0]["version"], 3);

    fall_back(&fleet.version(4, 8 * MIB));
    fleet.publish(&v3);
    fs::remove_file(device.state_file()).unwrap();
    let failed_v4 = vec![slot("good", Some(1), true), slot("failed", Some(4), false)];
    let status = refused(&device, Slot::A, "update", 0, &failed_v4);
    assert!(
        text(&status["last_check"]["result"]).starts_with("ignored version 3: it failed before"),
        "{status}"
    );
    let failed: Vec<u64> = status["failed_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["version"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [3, 4]);
}
