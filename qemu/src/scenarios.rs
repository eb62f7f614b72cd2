//! The machine-level scenarios of DESIGN §8.3, each a chapter of a
//! [`Story`]: it starts from the host the story has running (or, for
//! [`install`], from nothing), publishes, watches, cuts the power, and
//! returns one line saying what happened. `tests/scenarios.rs` runs each on
//! a fresh story per boot path; the demo runs install, update and fallback
//! one after the other on one machine.
//!
//! Everything inside the machine is the real code path: `abnix-install`,
//! `abnix-update update`/`mark-good`/`status`, the bootloader on the disk,
//! the S3 server over QEMU's network.

use std::time::Duration;

use abnix_core::boot::SlotState;
use abnix_core::slot::Slot;
use anyhow::{anyhow, ensure, Result};

use crate::story::{Cut, Kind, Running, Story};

/// Fresh story, for the scenarios that start from an installed host: the
/// disk written on the build machine with `abnix-install --file` (a cloud
/// template), version `first` published and running from slot A, healthy.
pub fn provision(story: &mut Story, first: u64) -> Result<String> {
    let release = story.release_numbered(first, Kind::Good)?;
    story.publish(&release, false)?;
    story.install_file(&release)?;
    first_boot(story, first)?;
    Ok(format!("version {first} runs from slot a, up to date"))
}

/// The installed disk's first boot: `version` comes up from slot A, marks
/// itself good, and its first check finds the channel's version is its own.
fn first_boot(story: &mut Story, version: u64) -> Result<()> {
    story.switch_on()?;
    let status = story.expect_healthy(version, Slot::A)?;
    ensure!(
        status.check_result().contains("up to date"),
        "the freshly installed host should be up to date: {status:?}"
    );
    Ok(())
}

/// a. The installer environment boots with an empty disk beside its
/// medium, provisions the disk and powers off; the disk then boots the
/// first version from slot A, which marks itself good and finds itself up
/// to date.
pub fn install(story: &mut Story) -> Result<String> {
    story.say("an installer environment boots with an empty disk beside its medium; abnix-install must choose the disk, provision it and power off");
    let first = story.release(Kind::Good)?;
    let version = first.meta.meta.version;
    story.publish(&first, false)?;
    story.install_in_guest(&first)?;
    first_boot(story, version)?;
    Ok(format!(
        "abnix-install chose the empty disk and powered off; version {version} boots from slot a"
    ))
}

/// b. A new version is published: the host finds it, writes it into its
/// other slot (reusing the chunks it already has), reboots into it on
/// trial, marks it good, and still runs it after a power cycle. The old
/// slot stays good: it is the fallback.
pub fn update(story: &mut Story) -> Result<String> {
    story.say("a new version is published; the running host must find it, write its other slot, boot it on trial and keep it once healthy");
    let from = story.running()?;
    let target = from.slot.other();
    let next = story.release(Kind::Good)?;
    let version = next.meta.meta.version;
    story.publish(&next, false)?;
    let written = story.expect_update(version, target)?;
    let reused = written
        .reused_chunks()
        .ok_or_else(|| anyhow!("the update reused nothing: {}", written.line))?;
    ensure!(
        reused > 0,
        "the update should reuse chunks of the running version: {}",
        written.line
    );
    let status = story.expect_healthy(version, target)?;
    let old = status.slot(from.slot)?;
    ensure!(
        old.state == "good" && old.version == Some(from.version),
        "slot {} should still hold version {} as the good fallback: {status:?}",
        from.slot,
        from.version
    );
    story.say("switching the machine off and on again");
    story.power_cut()?;
    story.switch_on()?;
    story.expect_healthy(version, target)?;
    Ok(format!(
        "version {} -> {version} in slot {target} ({reused} chunks reused), still {version} after a power cycle",
        from.version
    ))
}

/// c. A version that never becomes healthy, then one whose kernel panics:
/// each is installed, boots on trial, and the bootloader falls back to the
/// running version by itself; the host reports it failed and never
/// installs it again. Then a good version is installed.
pub fn fallback(story: &mut Story) -> Result<String> {
    story.say("two broken versions are published, one never healthy, one whose kernel panics; the bootloader must fall back by itself and the host never retry them");
    let good = story.running()?;
    let target = good.slot.other();
    let mut failed = Vec::new();
    for kind in [Kind::NeverHealthy, Kind::KernelPanic] {
        let bad = story.release(kind)?;
        let version = bad.meta.meta.version;
        story.publish(&bad, false)?;
        story.expect_update(version, target)?;
        let trials = falls_back(story, version, target, good)?;
        story.expect_marked_good()?;
        story.await_status(&format!("version {version} failed"), 3, &[], |status| {
            status.has_failed(version) && status.booted.as_deref() == Some(good.slot.name())
        })?;
        story.say(format!(
            "the host reports version {version} failed and stays on version {}",
            good.version
        ));
        // Two more update runs: the channel still offers it, the host
        // refuses it without writing a byte.
        let never = [format!("writing the image of version {version}")];
        let status = story.await_status("the failed version ignored", 2, &never, |status| {
            status.check_result().contains("failed before")
        })?;
        story.await_status("another check", 1, &never, |_| true)?;
        story.say(format!("updater: {}", status.check_result()));
        failed.push(format!(
            "version {version} ({}, {trials} trial boots)",
            kind.name()
        ));
    }
    let fixed = story.release(Kind::Good)?;
    let version = fixed.meta.meta.version;
    story.publish(&fixed, false)?;
    story.expect_update(version, target)?;
    story.expect_healthy(version, target)?;
    Ok(format!(
        "{} fell back to version {} and were not retried; version {version} then installed in slot {target}",
        failed.join(", "),
        good.version
    ))
}

/// Boots of the trial `version` in `slot` until the bootloader falls back
/// to `good`; returns how many trial boots there were (1 to the tries).
fn falls_back(story: &mut Story, version: u64, slot: Slot, good: Running) -> Result<u32> {
    let tries = story.fleet.policy().tries;
    let mut trials = 0;
    loop {
        let (booted, _) = story.next_boot()?;
        if booted.version == version && booted.slot == slot {
            trials += 1;
            ensure!(
                trials <= tries,
                "version {version} booted {trials} times on a trial of {tries} tries"
            );
            continue;
        }
        ensure!(
            booted.version == good.version && booted.slot == good.slot,
            "after the trial of version {version}, version {} came up from slot {}; expected the fallback, version {} in slot {}",
            booted.version,
            booted.slot,
            good.version,
            good.slot
        );
        ensure!(trials > 0, "version {version} never booted on trial");
        story.say(format!(
            "the bootloader fell back to slot {} by itself after {trials} trial boots",
            good.slot
        ));
        return Ok(trials);
    }
}

/// d. The power is cut at eleven points of one update, in the order the
/// update reaches them (each later cut lets the retried update get further):
/// marking the slot bad, the image write's start and middle (twice), the
/// image written, the boot files, the boot-state switch, the reboot
/// announcement, the trial's firmware, the trial host up, its mark-good.
/// After each cut the boot state on the disk says which slot boots next,
/// and the machine boots exactly that, a working version; the update then
/// completes and both slots are good.
pub fn power_cuts(story: &mut Story) -> Result<String> {
    story.say("the power is cut again and again during one update; every boot must come up on the slot the disk's boot state names");
    let from = story.running()?;
    let target = from.slot.other();
    let next = story.release(Kind::Good)?;
    let version = next.meta.meta.version;
    let image = format!("writing the image of version {version} into slot {target}");
    // (cut, whether the host of the old version is the one that reaches it)
    let cuts = [
        (Cut::At(format!("marking slot {target} bad")), true),
        (Cut::At(image.clone()), true),
        (Cut::After(image.clone(), Duration::from_millis(300)), true),
        (Cut::After(image, Duration::from_millis(1200)), true),
        (Cut::At(format!("into slot {target} in")), true),
        (
            Cut::At(format!("writing the boot files of version {version}")),
            true,
        ),
        (
            Cut::At(format!("activating slot {target} as the trial")),
            true,
        ),
        (Cut::At(format!("rebooting into version {version}")), true),
        (Cut::AfterSwitchOn(Duration::from_secs(3)), false),
        (Cut::At("ABNIX-FIXTURE network=".to_owned()), false),
        (
            Cut::At("command=1 run: abnix-update mark-good".to_owned()),
            false,
        ),
    ];
    story.publish(&next, false)?;
    let mut booted = Vec::new();
    let mut made = 0;
    let mut trial_next = false;
    for (number, (cut, before_trial)) in cuts.iter().enumerate() {
        if *before_trial && trial_next {
            // A cut right as activate starts may land after it: the update
            // is past the remaining points of the old version's host.
            story.say(format!(
                "skipping the cut {}: the update is past it",
                cut.describe()
            ));
            continue;
        }
        story.power_cut_at(cut)?;
        made += 1;
        let (expected, slots) = next_boot_on_disk(story, from, version)?;
        trial_next = expected.slot == target;
        story.say(format!(
            "cut {made}: on the disk {slots}; slot {} (version {}) boots next",
            expected.slot, expected.version
        ));
        booted.push(expected.slot.name());
        story.switch_on()?;
        match cuts.get(number + 1) {
            // That cut comes before the boot's marker.
            Some((Cut::AfterSwitchOn(_), _)) => {}
            Some(_) => {
                story.expect_boot(expected.version, expected.slot)?;
            }
            None => ensure!(
                trial_next,
                "after the last cut the trial should boot, not version {} in slot {}",
                expected.version,
                expected.slot
            ),
        }
    }
    ensure!(made >= 10, "only {made} of the power cuts struck");
    let status = story.expect_healthy(version, target)?;
    let old = status.slot(from.slot)?;
    ensure!(
        old.state == "good" && old.version == Some(from.version),
        "slot {} should still hold version {}, good: {status:?}",
        from.slot,
        from.version
    );
    Ok(format!(
        "{made} power cuts; after each the disk booted the slot its boot state named ({}); version {version} good in slot {target}",
        booted.join(",")
    ))
}

/// The slot the disk boots next and the version in it, read from the disk
/// (it must be one of the two versions of the update, in its own slot),
/// and the slots' states in words.
fn next_boot_on_disk(story: &Story, from: Running, version: u64) -> Result<(Running, String)> {
    let status = story.disk_status()?;
    let slot = status
        .next
        .ok_or_else(|| anyhow!("no slot would boot: {status:#?}"))?;
    let info = status
        .slot(slot)
        .info
        .as_ref()
        .ok_or_else(|| anyhow!("slot {slot} boots next but holds no version: {status:#?}"))?;
    let to = from.slot.other();
    ensure!(
        (slot == from.slot && info.version == from.version)
            || (slot == to && info.version == version),
        "slot {slot} boots next with version {}: {status:#?}",
        info.version
    );
    let slots: Vec<String> = status
        .slots
        .iter()
        .map(|slot| {
            let version = slot
                .info
                .as_ref()
                .map_or(String::new(), |info| format!(" v{}", info.version));
            format!("{} {}{version}", slot.slot, describe_state(slot.state))
        })
        .collect();
    Ok((
        Running {
            version: info.version,
            slot,
        },
        slots.join(", "),
    ))
}

fn describe_state(state: SlotState) -> String {
    match state {
        SlotState::Trial { tries_left } => format!("trial ({tries_left} tries left)"),
        other => abnix_core::update::state_name(other).to_owned(),
    }
}

/// e. Bad input: an image object damaged in the bucket, a meta signed by a
/// key the host does not trust, and a meta of an older version. Each time
/// the host stays on its version, writes nothing it would boot, and its
/// status says why.
pub fn bad_input(story: &mut Story) -> Result<String> {
    story.say("the bucket offers a damaged image, a stranger's signature and an older version; the host must refuse each and say why");
    let on = story.running()?;
    ensure!(
        on.version >= 2,
        "bad input needs a version older than the running one"
    );
    let never_boots = [
        format!("activating slot {}", on.slot.other()),
        "rebooting into".to_owned(),
    ];

    // The damage is done while the host is off, so it never sees the
    // object whole.
    story.power_cut()?;
    let damaged = story.release(Kind::Good)?;
    story.publish(&damaged, false)?;
    story.fleet.tamper_image(&damaged)?;
    story.say(format!(
        "damaged the image object of version {} in the bucket (a byte in every chunk's frame)",
        damaged.meta.meta.version
    ));
    story.switch_on()?;
    story.expect_boot(on.version, on.slot)?;
    story.expect_marked_good()?;
    let status = story.await_status("the damaged image refused", 3, &never_boots, |status| {
        status.error().contains("chunk")
    })?;
    story.say(format!("status: last error: {}", status.error()));

    let stranger = story.release(Kind::Good)?;
    let stranger = story.fleet.signed_by_stranger(&stranger)?;
    story.publish(&stranger, true)?;
    let never = [
        &never_boots[..],
        &[format!(
            "writing the image of version {}",
            stranger.meta.meta.version
        )],
    ]
    .concat();
    let status = story.await_status("the stranger's meta refused", 5, &never, |status| {
        status.error().contains("untrusted")
    })?;
    story.say(format!("status: last error: {}", status.error()));

    let older = story.release_numbered(on.version - 1, Kind::Good)?;
    story.publish(&older, true)?;
    let never = [
        &never_boots[..],
        &[format!(
            "writing the image of version {}",
            older.meta.meta.version
        )],
    ]
    .concat();
    let status = story.await_status("the older version ignored", 5, &never, |status| {
        status
            .check_result()
            .contains("older than the booted version")
    })?;
    story.say(format!("status: last check: {}", status.check_result()));
    let booted = status.slot(on.slot)?;
    ensure!(
        status.booted.as_deref() == Some(on.slot.name())
            && booted.state == "good"
            && booted.version == Some(on.version)
            && status.pending_reboot.is_none(),
        "the host should still run version {} from slot {}, nothing pending: {status:?}",
        on.version,
        on.slot
    );
    Ok(format!(
        "damaged image, untrusted signature, older version: all refused, still version {} in slot {}",
        on.version, on.slot
    ))
}
