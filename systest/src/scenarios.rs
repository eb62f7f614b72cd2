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

use abnix_core::boot::Bootloader;
use abnix_core::boot::{BootStatus, SlotState};
use abnix_formats::slot::Slot;
use anyhow::{anyhow, bail, ensure, Result};

use crate::story::{plain_message, Cut, Kind, Needle, Running, Story};
use crate::vm::ConsoleLine;

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
pub(crate) fn first_boot(story: &mut Story, version: u64) -> Result<()> {
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
    let version = first.meta.meta().version;
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
    let version = next.meta.meta().version;
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
    // The fixture versions differ in a few files only: issue 8's target for
    // such a change is at most 15% of the compressed image.
    let compressed = next.meta.meta().image.compressed_size;
    let Some(downloaded) = written.downloaded_bytes() else {
        bail!(
            "the update did not say what it downloaded: {}",
            written.line
        );
    };
    ensure!(
        downloaded * 100 <= compressed * 15,
        "the update downloaded {downloaded} bytes, more than 15% of the {compressed}-byte image object: {}",
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
        "version {} -> {version} in slot {target} ({reused} chunks reused, {} KiB downloaded), still {version} after a power cycle",
        from.version,
        downloaded / 1024
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
        let version = bad.meta.meta().version;
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
    let version = fixed.meta.meta().version;
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

/// d. The power is cut at thirteen points of an update, in four rounds,
/// one per phase (issue 6, 2d): during the image write, between the write
/// and the activation, during the boot-state switch, during the first trial
/// boot. Each round installs a version of its own and ends with that update
/// completed: the new version boots and marks itself good, the old one
/// stays good as the fallback.
///
/// After each cut the console received before the kill shows whether the
/// cut landed at its point: nothing the machine does after that point was
/// printed (a line takes milliseconds from the guest to the console, so
/// this is the console's view). A cut that landed elsewhere is said so and
/// not counted. The boot state on the disk then says which slot boots
/// next, and the machine boots exactly that, a working version: the old
/// version's host marks itself good and its update starts again. A retried
/// update that finds the whole image in the target, written before a cut,
/// keeps every chunk. At least ten distinct points must be cut at.
pub fn power_cuts(story: &mut Story) -> Result<String> {
    story.say("the power is cut again and again, in every phase of an update; every boot must come up on the slot the disk's boot state names, and every update must complete");
    let mut tally = Tally::default();
    for phase in Phase::ALL {
        cut_round(story, phase, &mut tally)?;
    }
    let exercised = tally.exercised.len();
    let missed = match tally.missed.is_empty() {
        true => String::new(),
        false => format!("; not cut at: {}", tally.missed.join("; ")),
    };
    ensure!(
        exercised >= 10,
        "only {exercised} distinct points of an update were cut at: {}{missed}",
        tally.exercised.join("; ")
    );
    let result = format!(
        "{} power cuts, {exercised} distinct points ({}){missed}; each time the disk booted the slot its boot state named; the four updates completed",
        tally.cuts,
        tally.exercised.join("; ")
    );
    story.say(&result);
    Ok(result)
}

/// The phases of an update the power is cut in, one round each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ImageWrite,
    BeforeActivate,
    Switch,
    TrialBoot,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::ImageWrite,
        Phase::BeforeActivate,
        Phase::Switch,
        Phase::TrialBoot,
    ];

    fn describe(self) -> &'static str {
        match self {
            Phase::ImageWrite => "during the image write",
            Phase::BeforeActivate => "between the image write and the activation",
            Phase::Switch => "during the boot-state switch",
            Phase::TrialBoot => "during the first trial boot",
        }
    }
}

/// Which slot the disk must boot after a cut that landed at its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BootsNext {
    /// The running version: the new one is not activated yet.
    Old,
    /// Either: the cut fell in the switch itself.
    Either,
    /// The new version, on trial (or good, once its mark-good is through).
    New,
}

/// A point of an update to cut the power at.
struct Point {
    /// Where the cut lands, in words.
    name: &'static str,
    cut: Cut,
    /// Lines of a later point: printed before the kill, they show that the
    /// cut landed past this one.
    past: Vec<Needle>,
    boots_next: BootsNext,
}

impl Point {
    fn new(name: &'static str, cut: Cut, past: &[&Needle], boots_next: BootsNext) -> Point {
        Point {
            name,
            cut,
            past: past.iter().map(|&needle| needle.clone()).collect(),
            boots_next,
        }
    }
}

/// The console lines of an update of `version` into `target` and of the
/// trial boot after it: what the updater, the bootloader and the host
/// print on the way.
struct UpdateLines {
    marking: Needle,
    image: Needle,
    /// The final progress line of the check of what an interrupted attempt
    /// left in the target ("… in <time>").
    checked: Needle,
    /// The final progress line of the write: the image is in the slot and
    /// synced, the read-back starts.
    written: Needle,
    verified: Needle,
    boot_files: Needle,
    boot_files_written: Needle,
    activating: Needle,
    /// Boot control's own line once the switch is on the disk.
    activated: Needle,
    rebooting: Needle,
    reset: Needle,
    /// GRUB prints it once it has counted the try; OVMF as it starts
    /// systemd-boot, which counts it.
    bootloader: Needle,
    marker: Needle,
    /// The host has mounted abnix-rw; its network and mark-good follow
    /// (network and mark-good are milliseconds apart, too close to cut
    /// between).
    rw_mounted: Needle,
    mark_good: Needle,
    marked: Needle,
}

impl UpdateLines {
    fn new(version: u64, target: Slot, bootloader: Bootloader) -> UpdateLines {
        UpdateLines {
            marking: Needle::new(format!("marking slot {target} bad")),
            image: Needle::new(format!(
                "writing the image of version {version} into slot {target}"
            )),
            checked: Needle::new(format!("checking slot {target}: ")).and(" in "),
            written: Needle::new(format!("writing slot {target}: ")).and(" in "),
            verified: Needle::new(format!("into slot {target} in")).and("verified"),
            boot_files: Needle::new(format!("writing the boot files of version {version}")),
            boot_files_written: Needle::new(format!("wrote boot files slot={target}")),
            activating: Needle::new(format!("activating slot {target} as the trial")),
            activated: Needle::new(format!("activated slot={target}")),
            rebooting: Needle::new(format!("rebooting into version {version} (slot {target})")),
            reset: Needle::new("reboot: Restarting system"),
            bootloader: match bootloader {
                Bootloader::Grub => Needle::new(format!("abnix: booting slot {target}")),
                Bootloader::SystemdBoot => Needle::new("BdsDxe: starting"),
            },
            marker: Needle::new(format!("ABNIX-FIXTURE version={version} ")),
            rw_mounted: Needle::new("ABNIX-FIXTURE rw="),
            mark_good: Needle::new("command=1 run: abnix-update mark-good"),
            marked: Needle::new("ABNIX-FIXTURE command=1 exit="),
        }
    }

    /// The points of `phase`. Every cut before the activation makes the
    /// update start again from the top, so the points of those rounds need
    /// not come in update order.
    fn points(&self, phase: Phase) -> Vec<Point> {
        let ms = Duration::from_millis;
        let point = Point::new;
        match phase {
            // The first attempt writes from the start; it keeps the new
            // version's index first, so every later one is a resumed
            // attempt that checks what the target holds, then writes.
            Phase::ImageWrite => vec![
                point(
                    "marking the target slot bad",
                    Cut::at(self.marking.clone()),
                    &[&self.image],
                    BootsNext::Old,
                ),
                point(
                    "the image write step, 1 s in",
                    Cut::after(self.image.clone(), ms(1000)),
                    &[&self.written],
                    BootsNext::Old,
                ),
                point(
                    "the image write step, at its start",
                    Cut::at(self.image.clone()),
                    &[&self.checked, &self.written],
                    BootsNext::Old,
                ),
                point(
                    "the image write, 0.3 s after the check of what earlier attempts left",
                    Cut::after(self.checked.clone(), ms(300)),
                    &[&self.written],
                    BootsNext::Old,
                ),
                point(
                    "the read-back of the written image",
                    Cut::at(self.written.clone()),
                    &[&self.verified],
                    BootsNext::Old,
                ),
            ],
            Phase::BeforeActivate => vec![
                point(
                    "the image written and verified",
                    Cut::at(self.verified.clone()),
                    &[&self.boot_files],
                    BootsNext::Old,
                ),
                point(
                    "the boot files, at their start",
                    Cut::at(self.boot_files.clone()),
                    &[&self.boot_files_written, &self.activating],
                    BootsNext::Old,
                ),
                point(
                    "the boot files, 0.3 s in",
                    Cut::after(self.boot_files.clone(), ms(300)),
                    &[&self.boot_files_written, &self.activating],
                    BootsNext::Old,
                ),
            ],
            Phase::Switch => vec![
                point(
                    "the boot-state switch (activate)",
                    Cut::at(self.activating.clone()),
                    &[&self.activated, &self.rebooting],
                    BootsNext::Either,
                ),
                point(
                    "the trial activated, before the reboot",
                    Cut::at(self.rebooting.clone()),
                    &[&self.reset],
                    BootsNext::New,
                ),
            ],
            Phase::TrialBoot => vec![
                point(
                    "the trial's bootloader",
                    Cut::at(self.bootloader.clone()),
                    &[&self.marker],
                    BootsNext::New,
                ),
                point(
                    "the trial host up, its rw partition mounted, before its mark-good",
                    Cut::at(self.rw_mounted.clone()),
                    &[&self.mark_good],
                    BootsNext::New,
                ),
                point(
                    "the trial's mark-good",
                    Cut::at(self.mark_good.clone()),
                    &[&self.marked],
                    BootsNext::New,
                ),
            ],
        }
    }
}

/// What the cuts of a story exercised.
#[derive(Default)]
struct Tally {
    cuts: usize,
    /// The points cuts landed at, each once.
    exercised: Vec<&'static str>,
    /// Points no cut landed at, and why.
    missed: Vec<String>,
}

/// One round: a new version is published and the power cut at the points
/// of `phase` of its update; then the update completes.
fn cut_round(story: &mut Story, phase: Phase, tally: &mut Tally) -> Result<()> {
    let from = story.running()?;
    let target = from.slot.other();
    let next = story.release(Kind::Good)?;
    let version = next.meta.meta().version;
    story.say(format!(
        "-- power cuts {}: version {version} goes into slot {target}",
        phase.describe()
    ));
    story.publish(&next, false)?;
    if phase == Phase::TrialBoot {
        // The first trial boot follows the update's own reboot.
        story.expect_update(version, target)?;
    }
    let lines = UpdateLines::new(version, target, story.path.bootloader());
    // Whether the trial is what boots: the old version's host is past.
    let mut trial_next = false;
    // Whether the whole image was in the target, synced, before a cut.
    let mut image_whole = false;
    for point in lines.points(phase) {
        if trial_next && phase != Phase::TrialBoot {
            story.say(format!(
                "cannot cut at {}: the update of version {version} is past it, its trial boots next",
                point.name
            ));
            tally.missed.push(format!(
                "{} (version {version}'s update was already past it)",
                point.name
            ));
            continue;
        }
        let console = story.power_cut_at(&point.cut, &point.past)?;
        tally.cuts += 1;
        let last = format!("the last console line: {}", plain_line(console.last()));
        let landed = match point.past.iter().find_map(|needle| console.shows(needle)) {
            None => {
                story.say(format!("cut {}: {} ({last})", tally.cuts, point.name));
                if !tally.exercised.contains(&point.name) {
                    tally.exercised.push(point.name);
                }
                true
            }
            Some(line) => {
                story.say(format!(
                    "cut {} missed {}: the console had already shown {} ({last}); not counted",
                    tally.cuts,
                    point.name,
                    plain_line(line)
                ));
                tally.missed.push(format!("{} (landed later)", point.name));
                false
            }
        };
        image_whole |= console.shows(&lines.written).is_some() || phase == Phase::BeforeActivate;
        let status = story.disk_status()?;
        let (expected, slots) = next_boot_on_disk(&status, from, version)?;
        story.say(format!(
            "on the disk {slots}; slot {} (version {}) boots next",
            expected.slot, expected.version
        ));
        trial_next = expected.slot == target;
        if phase == Phase::Switch {
            story.say(switch_state(story, &status, target)?);
        }
        let wanted = match point.boots_next {
            BootsNext::Old => Some(false),
            BootsNext::Either => None,
            BootsNext::New => Some(true),
        };
        ensure!(
            !landed || wanted.is_none_or(|new| new == trial_next),
            "a cut at {} should leave version {} to boot next, but the disk boots version {} from slot {}",
            point.name,
            if wanted == Some(true) { version } else { from.version },
            expected.version,
            expected.slot
        );
        story.switch_on()?;
        story.expect_boot(expected.version, expected.slot)?;
        if !trial_next {
            // The running version is healthy again, and its next check
            // starts the update anew.
            story.expect_marked_good()?;
        }
    }
    let status = if trial_next {
        story.expect_good(version, target)?
    } else {
        let written = story.expect_update(version, target)?;
        let (kept, chunks) = (written.kept_chunks(), written.chunks());
        story.say(format!(
            "the update resumed: {} of {} chunks kept in the target",
            kept.map_or("no".to_owned(), |kept| kept.to_string()),
            chunks.map_or("its".to_owned(), |chunks| chunks.to_string())
        ));
        ensure!(
            !image_whole || (kept.is_some() && kept == chunks),
            "the whole image was in the target before a cut, so the retried update should keep every chunk there: {}",
            written.line
        );
        story.expect_healthy(version, target)?
    };
    let old = status.slot(from.slot)?;
    ensure!(
        old.state == "good" && old.version == Some(from.version),
        "slot {} should still hold version {}, good: {status:?}",
        from.slot,
        from.version
    );
    story.say(format!(
        "the update completed: version {version} good in slot {target}, version {} good in slot {}",
        from.version, from.slot
    ));
    Ok(())
}

/// Where the boot-state switch stood when the power went, in words.
fn switch_state(story: &Story, status: &BootStatus, target: Slot) -> Result<String> {
    let mut words = match status.slot(target).state {
        SlotState::Trial { tries_left } => {
            format!("the switch had happened: slot {target} is the trial with {tries_left} tries")
        }
        SlotState::Bad if status.slot(target).info.is_some() => format!(
            "the switch had not happened: slot {target} is still bad, its boot files complete"
        ),
        other => format!(
            "slot {target} is {} after the switch",
            describe_state(other)
        ),
    };
    if story.path.bootloader() == Bootloader::Grub {
        let block = story.disk()?.grub_state()?;
        words.push_str(&match block.problems.is_empty() {
            true => "; GRUB's state block is whole".to_owned(),
            false => format!("; GRUB's state block: {}", block.problems.join(", ")),
        });
    }
    Ok(words)
}

/// A console line as the narration quotes it: without colours, with its
/// time since switch-on.
fn plain_line(line: &ConsoleLine) -> String {
    format!(
        "[{:.1} s] {}",
        line.at.as_secs_f64(),
        plain_message(&line.text)
    )
}

/// The slot the disk boots next and the version in it, read from the disk
/// (it must be one of the two versions of the update, in its own slot),
/// and the slots' states in words.
fn next_boot_on_disk(
    status: &BootStatus,
    from: Running,
    version: u64,
) -> Result<(Running, String)> {
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
        other => abnix_updater::update::state_name(other).to_owned(),
    }
}

/// e. Bad input: an image object damaged in the bucket, a kernel object
/// altered in the bucket (same length), a version published for another
/// channel copied into the host's, a meta signed by a key the host does not
/// trust, and a meta of an older version. Each time the host stays on its
/// version, activates nothing, and its status says why.
pub fn bad_input(story: &mut Story) -> Result<String> {
    story.say("the bucket offers a damaged image, an altered kernel, another channel's version, a stranger's signature and an older version; the host must refuse each and say why");
    let on = story.running()?;
    ensure!(
        on.version >= 2,
        "bad input needs a version older than the running one"
    );
    let never_boots = [
        format!("activating slot {}", on.slot.other()),
        "rebooting into".to_owned(),
    ];
    // Refused before anything of it is written.
    let never_written = |version: u64| {
        [
            &never_boots[..],
            &[format!("writing the image of version {version}")],
        ]
        .concat()
    };

    // The damage is done while the host is off, so it never sees the
    // object whole.
    story.power_cut()?;
    let damaged = story.release(Kind::Good)?;
    story.publish(&damaged, false)?;
    story.fleet.tamper_image(&damaged)?;
    story.say(format!(
        "damaged the image object of version {} in the bucket (a byte in every chunk's frame)",
        damaged.meta.meta().version
    ));
    story.switch_on()?;
    story.expect_boot(on.version, on.slot)?;
    story.expect_marked_good()?;
    let status = story.await_status("the damaged image refused", 3, &never_boots, |status| {
        status.error().contains("chunk")
    })?;
    story.say(format!("status: last error: {}", status.error()));

    // The image verifies; the kernel, the same length as the signed one,
    // does not: written as it is read, refused by its hash before the slot
    // file that would make the slot bootable.
    let altered = story.release(Kind::Good)?;
    story.publish(&altered, false)?;
    story.fleet.tamper_kernel(&altered)?;
    story.say(format!(
        "altered the kernel object of version {} in the bucket (one byte, same length)",
        altered.meta.meta().version
    ));
    let kernel = altered.meta.meta().kernel.object.clone();
    let status = story.await_status("the altered kernel refused", 5, &never_boots, |status| {
        status.error().contains(&kernel) && status.error().contains("SHA-256")
    })?;
    story.say(format!("status: last error: {}", status.error()));

    // Signed by the fleet's key, for channel "beta": copied with its
    // objects into the host's channel by whoever can write the bucket.
    let foreign = story.release(Kind::Good)?;
    story.fleet.publish_on("beta", &foreign, false)?;
    story.fleet.copy_from_channel("beta", &foreign)?;
    let version = foreign.meta.meta().version;
    story.say(format!(
        "published version {version} on channel beta and copied it, objects and meta, into {}",
        story.fleet.channel()
    ));
    let status = story.await_status(
        "the other channel's meta refused",
        5,
        &never_written(version),
        |status| status.error().contains("published for channel \"beta\""),
    )?;
    story.say(format!("status: last error: {}", status.error()));

    let stranger = story.release(Kind::Good)?;
    let stranger = story.fleet.signed_by_stranger(&stranger)?;
    story.publish(&stranger, true)?;
    let status = story.await_status(
        "the stranger's meta refused",
        5,
        &never_written(stranger.meta.meta().version),
        |status| status.error().contains("untrusted"),
    )?;
    story.say(format!("status: last error: {}", status.error()));

    let older = story.release_numbered(on.version - 1, Kind::Good)?;
    story.publish(&older, true)?;
    let status = story.await_status(
        "the older version ignored",
        5,
        &never_written(older.meta.meta().version),
        |status| status.check_result().contains("not newer than version"),
    )?;
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
        "damaged image, altered kernel, another channel's meta, untrusted signature, older version: all refused, still version {} in slot {}",
        on.version, on.slot
    ))
}
