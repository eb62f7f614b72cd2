//! `mark-good` and `status` through the real binary on an installed disk
//! image.

mod common;

use abnix_core::boot::SlotState;
use abnix_formats::slot::Slot;
use common::{assert_exit, stderr, stdout, Device, Fleet};

#[test]
fn mark_good_turns_a_trial_good_and_leaves_a_good_slot_untouched() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * common::MIB);
    let device = Device::install(&fleet, &v1, "never");

    // Every boot after the first: already good, exit 0, nothing written.
    let before = std::fs::read(&device.disk).unwrap();
    let out = device.run(Slot::A, "mark-good", &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("already good"), "{}", stderr(&out));
    assert!(
        std::fs::read(&device.disk).unwrap() == before,
        "the disk changed"
    );

    // A slot on trial (as after an update and its reboot) turns good.
    device.with_boot(|boot| boot.activate(Slot::A, 3).unwrap());
    assert_eq!(device.slots(Slot::A)[0].0, "trial");
    let out = device.run(Slot::A, "mark-good", &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("marked good"), "{}", stderr(&out));
    let state = device.with_boot(|boot| boot.status().unwrap().slot(Slot::A).state);
    assert_eq!(state, SlotState::Good);
}

#[test]
fn mark_good_refuses_without_the_booted_slot() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * common::MIB);
    let device = Device::install(&fleet, &v1, "never");
    device.with_boot(|boot| boot.activate(Slot::A, 3).unwrap());

    let out = device
        .command_with_cmdline("console=ttyS0 quiet", "mark-good", &[])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("booted slot is not known"),
        "{}",
        stderr(&out)
    );
    let state = device.with_boot(|boot| boot.status().unwrap().slot(Slot::A).state);
    assert_eq!(state, SlotState::Trial { tries_left: 3 }, "nothing changed");

    // status still works, and says why the slot is unknown.
    let out = device
        .command_with_cmdline("console=ttyS0 quiet", "status", &["--json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["booted"].is_null());
    assert!(
        status["booted_unknown"]
            .as_str()
            .unwrap()
            .contains("abnix.slot="),
        "{status}"
    );
}

#[test]
fn status_of_a_fresh_install() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * common::MIB);
    let device = Device::install(&fleet, &v1, "never");

    let status = device.status(Slot::A);
    assert_eq!(status["booted"], "a");
    assert_eq!(status["bootloader"], "grub");
    assert_eq!(status["slots"][0]["state"], "good");
    assert_eq!(status["slots"][0]["version"], 1);
    assert_eq!(status["slots"][0]["id"], v1.id().to_string());
    assert_eq!(status["slots"][0]["label"], "kiosk 1");
    assert_eq!(status["slots"][0]["booted"], true);
    assert_eq!(status["slots"][0]["boots_next"], true);
    assert_eq!(status["slots"][1]["state"], "bad");
    assert!(status["slots"][1]["version"].is_null());
    assert!(status["pending_reboot"].is_null());
    assert!(status["latest_known"].is_null());
    assert!(status["last_check"].is_null());
    assert_eq!(status["failed_versions"], serde_json::json!([]));
    assert_eq!(status["update_running"], false);

    let out = device.run(Slot::A, "status", &[]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for line in [
        "booted:          slot a",
        "slot a:          good, version 1 \"kiosk 1\"",
        "[booted, boots next]",
        "slot b:          bad, no version",
        "pending reboot:  no",
        "latest known: unknown",
        "last check:      never",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    // A running update shows in the status.
    let _lock = device.hold_lock();
    assert_eq!(device.status(Slot::A)["update_running"], true);
}
