//! Staged rollouts, halt and revert (issue 26) against the real S3 server:
//! two hosts under one rollout, one early and one late by their machine
//! ids; the rollout halted; an older version published again.

mod common;

use std::time::Duration;

use abnix_formats::machine_id::MachineId;
use abnix_formats::rollout::Place;
use abnix_formats::slot::Slot;
use abnix_updater::publish::{halt, revert_to, PublishOptions};
use common::{assert_exit, stdout, Device, Fleet, MIB};

/// The first machine id (counting up) whose place in `version`'s rollouts
/// satisfies `fits`.
fn machine_id_where(version: u64, fits: impl Fn(f64) -> bool) -> String {
    (1u128..)
        .map(|n| format!("{n:032x}"))
        .find(|id| fits(Place::of(&id.parse::<MachineId>().unwrap(), version).fraction()))
        .unwrap()
}

/// Overwrites the first 8 MiB of `slot` (the test images' size) with a
/// pattern no image holds.
fn scribble(device: &Device, slot: Slot) {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device.disk)
        .unwrap();
    let mut disk = abnix_core::system_disk::SystemDisk::open(file, 512).unwrap();
    let mut region = disk.slot_region(slot);
    region.write_all(&vec![0xa5; 8 * MIB as usize]).unwrap();
    region.flush().unwrap();
}

#[test]
fn a_staged_rollout_halted_then_reverted() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v1);
    let early = Device::install(&fleet, &v1, "never");
    let late = Device::install(&fleet, &v1, "never");
    // Over an hour: the early host's turn comes within a second of the
    // start, the late one's half an hour or more after it.
    early.set_machine_id(&machine_id_where(2, |p| p < 1.0 / 3600.0));
    late.set_machine_id(&machine_id_where(2, |p| p > 0.5));
    // The test machine's clock need not be synchronized; without a trusted
    // clock a host waits for a signing time past its turn (unit-tested in
    // update::machine).
    for device in [&early, &late] {
        device.set_config("trust_clock", "\"always\"");
    }
    fleet.publish_with(
        &v2,
        &PublishOptions {
            rollout_over: Some(Duration::from_secs(3600)),
            ..PublishOptions::default()
        },
    );
    std::thread::sleep(Duration::from_secs(1));

    let out = late.run(Slot::A, "check", &[]);
    assert_exit(&out, 3);
    assert!(
        stdout(&out).starts_with("waiting for version 2: its staged rollout reaches this host at "),
        "{}",
        stdout(&out)
    );
    let status = late.status(Slot::A);
    assert_eq!(status["rollout"]["version"], 2);
    assert_eq!(status["rollout"]["over_secs"], 3600);
    assert_eq!(status["rollout"]["reached"], false);
    assert!(status["rollout"]["place"].as_f64().unwrap() > 0.5);
    assert_eq!(status["last_error"], serde_json::Value::Null);
    let text = stdout(&late.run(Slot::A, "status", &[]));
    assert!(text.contains("this host's turn (at "), "{text}");
    let out = late.run(Slot::A, "check", &["--json"]);
    assert_exit(&out, 3);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["result"], "waiting");
    assert_eq!(json["rollout_turn"], status["rollout"]["turn"]);
    assert_eq!(json["rollout_halted_at"], serde_json::Value::Null);
    let untouched = late.slot_digest(Slot::B);
    assert_exit(&late.run(Slot::A, "update", &[]), 0);
    assert_eq!(late.slot_digest(Slot::B), untouched);

    assert_exit(&early.run(Slot::A, "update", &[]), 4);
    assert_eq!(early.status(Slot::A)["pending_reboot"], 2);
    assert_eq!(early.status(Slot::A)["rollout"]["reached"], true);

    // Halted: the late host does not start, however long it waits; the
    // early one keeps what it installed.
    let channel = fleet.channel(&fleet.key);
    halt(&channel, &[&fleet.key], &PublishOptions::default()).unwrap();
    let out = late.run(Slot::A, "check", &[]);
    assert_exit(&out, 3);
    assert!(
        stdout(&out).starts_with("not installing version 2: its rollout was halted at "),
        "{}",
        stdout(&out)
    );
    assert_exit(&late.run(Slot::A, "update", &[]), 0);
    assert_eq!(late.slot_digest(Slot::B), untouched);
    assert!(late.status(Slot::A)["rollout"]["halted_at"].is_string());
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&late.run(Slot::A, "check", &["--json"]))).unwrap();
    assert_eq!(json["result"], "waiting");
    assert_eq!(json["rollout_turn"], serde_json::Value::Null);
    assert_eq!(
        json["rollout_halted_at"],
        late.status(Slot::A)["rollout"]["halted_at"]
    );
    let out = early.run(Slot::A, "check", &[]);
    assert!(
        stdout(&out).contains("version 2 is installed in slot b and boots at the next reboot"),
        "{}",
        stdout(&out)
    );
    assert_eq!(early.power_on(), Slot::B);
    assert_exit(&early.run(Slot::B, "mark-good", &[]), 0);

    // Reverted: version 1's content as version 3, its objects re-used and
    // kept by pruning (--keep 2 keeps 2 and 3; 3 names 1's objects).
    let report = revert_to(
        &channel,
        1,
        &[&fleet.key],
        &PublishOptions {
            keep: std::num::NonZeroUsize::new(2),
            ..PublishOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        (report.published.version, report.published.id),
        (3, v1.id())
    );
    assert_eq!(report.uploaded.len(), 3, "{:?}", report.uploaded);
    assert!(report.pruned.is_empty(), "{:?}", report.pruned);
    assert!(fleet.object_file(&v1.image_object()).exists());

    // The early host moves forward to version 1's image, as version 3,
    // into slot a, which held version 1: scribbled over first, so only a
    // write of the revert's content makes it version 1's again.
    let v1_slot = early.slot_digest(Slot::A);
    scribble(&early, Slot::A);
    assert_ne!(early.slot_digest(Slot::A), v1_slot);
    assert_exit(&early.run(Slot::B, "update", &[]), 4);
    assert_eq!(early.slot_digest(Slot::A), v1_slot);
    let status = early.status(Slot::B);
    assert_eq!(status["slots"][0]["version"], 3);
    assert_eq!(status["slots"][0]["id"], v1.id().to_string());
    assert_eq!(status["rollout"], serde_json::Value::Null);
    // The late host runs that image already: up to date, not an error.
    let out = late.run(Slot::A, "check", &[]);
    assert_exit(&out, 3);
    assert!(
        stdout(&out).starts_with("up to date: version 3 is the image of the booted version 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(late.status(Slot::A)["last_error"], serde_json::Value::Null);
}
