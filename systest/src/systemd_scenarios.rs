//! The scenarios of the systemd hosts ([`crate::systemd_host`], issue 22):
//! what a host runs in production, the units of `systemd/` under a real
//! systemd, booted. One machine life per boot path, in four chapters that
//! each start where the previous one left the machine, and each publish
//! the version the next one needs before the host's first check after its
//! reboot:
//!
//! - **c, template grows**: a template written with `abnix-install --file`
//!   boots on a disk twice its size; `abnix-grow.service` grows abnix-rw and
//!   its filesystem (`df` in the guest); `systemd-analyze verify` in the
//!   guest finds nothing to say about the units;
//! - **a, timer update**: `abnix-update.timer` starts `abnix-update.service`,
//!   which installs version 2 and reboots, and ends successfully when that
//!   reboot stops it; version 1 is good but unhealthy, and the health
//!   deadline, started while the update runs, must not reboot it. Version 2
//!   boots on trial, its success unit starts, `boot-complete.target` is
//!   reached and `abnix-mark-good.service` marks it good (its journal and
//!   `abnix-update status --json`, printed in the guest);
//! - **d, power cut mid-write**: the power is cut while the timer's update
//!   writes version 3; version 2 boots, good, and its next check completes
//!   the update;
//! - **b, unhealthy version falls back**: version 4's success unit fails,
//!   so `boot-complete.target` is never reached; the health deadline
//!   reboots its trial boots until the tries run out and the boot loader
//!   falls back; version 3 reports it failed, and its check refuses it,
//!   with a warning `journalctl -p warning -u abnix-update` shows, its
//!   version as a field.
//!
//! The host reports each boot on the console (`fixture-report.service`,
//! after `abnix-mark-good.service`, and again after each update run): the
//! lines of `systemd-analyze verify`, `journalctl -u abnix-mark-good`, the
//! size of `/rw`, the updater's warnings in the journal
//! (`journalctl -p warning -u abnix-update`) and the status.

use std::time::{Duration, Instant};

use abnix_core::units::parse_size;
use abnix_formats::layout::{self, LayoutConfig};
use abnix_formats::slot::Slot;
use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::fleet::Release;
use crate::story::{
    plain_message, Cut, DiskSize, HostStatus, Needle, Story, Written, STEP, UPDATE,
};
use crate::systemd_host::{units_under_test, Health, Host, RootFs, HEALTH_DEADLINE};

/// The disk of a systemd host's template: two 128 MiB slots (an erofs
/// image is 99 MiB, an ext4 one 115 MiB), a 64 MiB ESP, and the least abnix-rw the installer
/// accepts. It boots on a disk twice that size.
pub const TEMPLATE_DISK: DiskSize = DiskSize {
    bytes: 400 << 20,
    slot: "128M",
    esp: "64M",
};

/// The kernel's last words before the machine resets.
const RESTARTING: &str = "reboot: Restarting system";

/// The versions of one life, built before the machine is first switched
/// on: 1 (the template's, on `first_fs`: good, as installed, but its
/// success unit fails, and the health deadline is probed during its
/// update), 2, 3, and 4 (unhealthy).
struct Versions {
    first: Release,
    second: Release,
    third: Release,
    unhealthy: Release,
}

/// The whole life (see the module docs); `first_fs` is the template's
/// root filesystem, every later version's is erofs.
pub fn life(story: &mut Story, first_fs: RootFs) -> Result<()> {
    let mut built = None;
    story.chapter("build", |story| {
        let healthy = Host::new(RootFs::Erofs, Health::Healthy);
        let versions = Versions {
            first: story.release_systemd_host(Host {
                deadline_probe: true,
                ..Host::new(first_fs, Health::Unhealthy)
            })?,
            second: story.release_systemd_host(healthy)?,
            third: story.release_systemd_host(healthy)?,
            unhealthy: story.release_systemd_host(Host::new(RootFs::Erofs, Health::Unhealthy))?,
        };
        let sizes = [
            &versions.first,
            &versions.second,
            &versions.third,
            &versions.unhealthy,
        ]
        .map(|release| (release.meta.meta().image.size >> 20).to_string());
        built = Some(versions);
        Ok(format!(
            "versions 1 (unhealthy, {}), 2, 3, 4 (unhealthy; erofs): images of {} MiB",
            first_fs.name(),
            sizes.join(", ")
        ))
    })?;
    let versions = built.ok_or_else(|| anyhow!("no versions built"))?;
    story.chapter("c: template grows", |story| {
        template_grows(story, &versions)
    })?;
    story.chapter("a: timer update", |story| timer_update(story, &versions))?;
    story.chapter("d: power cut mid-write", |story| {
        power_cut_mid_write(story, &versions)
    })?;
    story.chapter("b: unhealthy falls back", unhealthy_falls_back)?;
    Ok(())
}

/// What a systemd host printed about one boot (`fixture-report.service`
/// and what came before it on the console).
struct Report {
    /// Every console line of the boot up to the status.
    lines: Vec<String>,
    /// `journalctl -u abnix-mark-good` of this boot.
    journal: Vec<String>,
    /// `journalctl -p warning -u abnix-update` of this boot, as JSON
    /// objects.
    warnings: Vec<serde_json::Value>,
    status: HostStatus,
}

/// The first of `lines` containing `text`.
fn first_line<'a>(lines: &'a [String], text: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|line| line.contains(text))
        .map(String::as_str)
}

impl Report {
    /// The first line of the boot containing `text`.
    fn line(&self, text: &str) -> Option<&str> {
        first_line(&self.lines, text)
    }

    /// The words after `prefix` in the lines that hold it.
    fn after<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter_map(move |line| line.split_once(prefix).map(|(_, rest)| rest.trim()))
    }

    fn journal_shows(&self, text: &str) -> bool {
        self.journal.iter().any(|line| line.contains(text))
    }

    /// The size of the filesystem on `/rw`, as `df` printed it.
    fn rw_bytes(&self) -> Result<u64> {
        let df = self
            .after("ABNIX-DF ")
            .next()
            .ok_or_else(|| anyhow!("the host printed no df line"))?;
        df.split_whitespace()
            .next()
            .and_then(|bytes| bytes.parse().ok())
            .ok_or_else(|| anyhow!("df printed {df:?}"))
    }
}

/// Reads the next boot's report.
fn expect_report(story: &mut Story) -> Result<Report> {
    let (status, lines) = story.next_status()?;
    let journal = lines
        .iter()
        .filter_map(|line| {
            line.split_once("ABNIX-JOURNAL ")
                .map(|(_, rest)| rest.to_owned())
        })
        .collect();
    let warnings = lines
        .iter()
        .filter_map(|line| line.split_once("ABNIX-WARNING ").map(|(_, json)| json))
        .map(|json| {
            serde_json::from_str(json)
                .with_context(|| format!("parsing a journal entry the host printed: {json}"))
        })
        .collect::<Result<_>>()?;
    Ok(Report {
        lines,
        journal,
        warnings,
        status,
    })
}

/// The console from the start of an update to the reset of the reboot it
/// asks for.
struct UpdateLog {
    lines: Vec<String>,
}

impl UpdateLog {
    /// The first line containing `text`.
    fn line(&self, text: &str) -> Option<&str> {
        first_line(&self.lines, text)
    }
}

/// Follows the host as `abnix-update.service` (started by its timer, up
/// to a check interval from now) installs `version` into `slot` and
/// reboots: the updater's steps in order, then the unit, stopped by the
/// reboot it asked for, ends successfully. Returns the updater's report of
/// the write and every line up to the reset.
fn follow_update(story: &mut Story, version: u64, slot: Slot) -> Result<(Written, UpdateLog)> {
    let deadline = Instant::now() + UPDATE + Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = story.expect_line(left).with_context(|| {
            format!("waiting for the update to version {version} and its reboot")
        })?;
        ensure!(
            !line.text.contains("ABNIX-FIXTURE version="),
            "the machine rebooted before it installed version {version}: {line}"
        );
        let reset = line.text.contains(RESTARTING);
        lines.push(line.text);
        if reset {
            break;
        }
    }
    let log = UpdateLog { lines };
    let steps = [
        format!("marking slot {slot} bad"),
        format!("writing the image of version {version} into slot {slot}"),
        format!("into slot {slot} in"),
        format!("writing the boot files of version {version} for slot {slot}"),
        format!("activating slot {slot} as the trial"),
        format!("rebooting into version {version} (slot {slot})"),
    ];
    let mut from = 0;
    for step in &steps {
        let found = log.lines[from..]
            .iter()
            .position(|line| line.contains(step.as_str()))
            .ok_or_else(|| {
                anyhow!("the update to version {version} did not print {step:?} in its order")
            })?;
        from += found;
    }
    let written = Written {
        line: plain_message(log.line(&steps[2]).unwrap_or_default()),
    };
    story.say(format!("updater: {}", written.line));
    if let Some(failed) = log.lines.iter().find(|line| {
        line.contains("abnix-update.service: Failed with result")
            || line.contains("Failed to start abnix-update.service")
    }) {
        bail!("abnix-update.service failed after installing version {version}: {failed}");
    }
    ensure!(
        log.line("abnix-update.service: Deactivated successfully")
            .is_some(),
        "abnix-update.service did not end successfully before the reboot into version {version}"
    );
    story.say(format!(
        "abnix-update.service ended successfully; the host reboots into version {version} in slot {slot}"
    ));
    Ok((written, log))
}

/// This boot's `abnix-mark-good.service` marked the trial `version` in
/// `slot` good (its journal says so), and the host reports it good.
fn ensure_marked_good(report: &Report, version: u64, slot: Slot) -> Result<()> {
    let marked = format!("slot {slot} (version {version} ");
    ensure!(
        report
            .journal
            .iter()
            .any(|line| line.contains(&marked) && line.ends_with(" marked good")),
        "journalctl -u abnix-mark-good should show {marked}…) marked good: {:?}",
        report.journal
    );
    report.status.ensure_booted_good(slot, version)
}

/// c. The template's first boot on a disk twice its size.
fn template_grows(story: &mut Story, versions: &Versions) -> Result<String> {
    story.say("a template written with abnix-install --file boots on a disk twice its size: abnix-grow.service must grow abnix-rw and its filesystem");
    story.publish(&versions.first, false)?;
    story.install_file(&versions.first)?;
    let bytes = 2 * TEMPLATE_DISK.bytes;
    story.enlarge_disk(bytes)?;
    // Published now, so that the first boot's first check finds it (a).
    story.publish(&versions.second, false)?;
    story.switch_on()?;
    story.expect_boot(1, Slot::A)?;
    let report = expect_report(story)?;

    let grew = report
        .line("abnix-rw grew from")
        .ok_or_else(|| anyhow!("abnix-grow.service did not grow abnix-rw"))?;
    ensure!(
        grew.contains("; its filesystem from"),
        "abnix-grow.service grew the partition only: {grew}"
    );
    story.say(format!("abnix-grow.service: {}", after_colon(grew)));
    let slot_size = parse_size(TEMPLATE_DISK.slot)?;
    let config = LayoutConfig {
        esp_size: parse_size(TEMPLATE_DISK.esp)?,
        ..LayoutConfig::new(slot_size)
    };
    let template_rw = layout::compute(TEMPLATE_DISK.bytes, 512, &config)?.rw.size;
    let grown_rw = layout::compute(bytes, 512, &config)?.rw.size;
    let df = report.rw_bytes()?;
    // df counts the filesystem without its own metadata (journal, inode
    // tables): a few percent less than the partition.
    ensure!(
        df > template_rw && df >= grown_rw / 10 * 9,
        "df in the guest says /rw holds {df} bytes: the grown partition is {grown_rw}, the template's {template_rw}"
    );
    story.say(format!(
        "df in the guest: /rw holds {} MiB (the template's partition: {} MiB, grown: {} MiB)",
        df >> 20,
        template_rw >> 20,
        grown_rw >> 20
    ));

    let verified = verify_line(&report)?;
    story.say(format!("systemd-analyze verify in the guest: {verified}"));
    // Version 1 is good as installed, but unhealthy: the fix it waits for
    // is version 2 (a).
    ensure!(
        report.journal_shows("Dependency failed for abnix-mark-good.service"),
        "the template's success unit fails, so abnix-mark-good.service should fail on its dependency: {:?}",
        report.journal
    );
    report.status.ensure_booted_good(Slot::A, 1)?;
    Ok(format!(
        "abnix-rw grew from {} to {} MiB, /rw {} MiB in df; systemd-analyze verify: {verified}",
        template_rw >> 20,
        grown_rw >> 20,
        df >> 20
    ))
}

/// What `systemd-analyze verify` said about the units: nothing but its
/// exit code 0, for every unit file of `systemd/`.
fn verify_line(report: &Report) -> Result<String> {
    let mut lines: Vec<&str> = report.after("ABNIX-VERIFY ").collect();
    let last = lines
        .pop()
        .ok_or_else(|| anyhow!("the host printed no systemd-analyze verify result"))?;
    ensure!(
        lines.is_empty(),
        "systemd-analyze verify has something to say about the units: {lines:#?} ({last})"
    );
    let units_field = last
        .split_whitespace()
        .find_map(|word| word.strip_prefix("units="))
        .ok_or_else(|| anyhow!("no units in {last:?}"))?;
    let mut verified: Vec<&str> = units_field.split(',').collect();
    verified.sort_unstable();
    let expected = units_under_test()?;
    ensure!(
        verified == expected,
        "systemd-analyze verify ran on {verified:?}, the repository's units are {expected:?}"
    );
    ensure!(
        last.ends_with(" exit=0"),
        "systemd-analyze verify failed: {last}"
    );
    Ok(format!("{} units, no finding, exit 0", verified.len()))
}

/// a. The timer installs version 2, which boots on trial and is marked
/// good once `boot-complete.target` is reached. Version 1 never reaches
/// it: the health deadline, started while the update runs, must let the
/// update finish.
fn timer_update(story: &mut Story, versions: &Versions) -> Result<String> {
    story.say("abnix-update.timer must start abnix-update.service, which installs version 2 and reboots (the health deadline, started while it runs, must not reboot); version 2 must be marked good once boot-complete.target is reached");
    let (_, log) = follow_update(story, 2, Slot::B)?;
    ensure!(
        log.line("Starting abnix-update.service").is_some(),
        "abnix-update.timer did not start abnix-update.service"
    );
    let status = log
        .line("ABNIX-PROBE abnix-update.service status: ")
        .and_then(|line| line.split_once(" status: "))
        .map(|(_, status)| status.trim_end_matches("; starting abnix-health-deadline.service"))
        .ok_or_else(|| anyhow!("the deadline probe did not report"))?;
    ensure!(
        status != "none",
        "systemd never received the updater's STATUS= (NotifyAccess=)"
    );
    story.say(format!(
        "systemctl show -P StatusText abnix-update.service: {status}"
    ));
    ensure!(
        log.line("boot-complete.target not reached in time")
            .is_none(),
        "the health deadline rebooted the host while it installed its fix"
    );
    let postponed = log
        .line("boot-complete.target not reached, but an update is running")
        .ok_or_else(|| anyhow!("abnix-health-deadline did not run during the update"))?;
    story.say(format!(
        "abnix-health-deadline during the update: {}",
        after_colon(postponed)
    ));
    // Published now, so that version 2's first check finds it (d).
    story.publish(&versions.third, false)?;
    story.expect_boot(2, Slot::B)?;
    let report = expect_report(story)?;
    for reached in [
        "Finished fixture-health.service",
        "Reached target boot-complete.target",
        "Finished abnix-mark-good.service",
    ] {
        ensure!(
            report.line(reached).is_some(),
            "the trial boot should show \"{reached}\""
        );
    }
    ensure_marked_good(&report, 2, Slot::B)?;
    let old = report.status.slot(Slot::A)?;
    ensure!(
        old.state == "good" && old.version == Some(1),
        "slot a should still hold version 1, good: {:?}",
        report.status
    );
    let marked = report
        .journal
        .iter()
        .find(|line| line.contains("(version 2") && line.contains("marked good"))
        .map_or("", |line| after_colon(line));
    story.say(format!("journalctl -u abnix-mark-good: {marked}"));
    Ok(format!(
        "the timer installed version 2 in slot b (the deadline postponed meanwhile); its trial reached boot-complete.target and abnix-mark-good: {marked}"
    ))
}

/// d. The power is cut while the timer's update writes version 3; version
/// 2 boots, good, and its next check completes the update.
fn power_cut_mid_write(story: &mut Story, versions: &Versions) -> Result<String> {
    story.say("the power is cut while abnix-update.service writes version 3: version 2 must boot, good, and its next check complete the update");
    let writing = Needle::new("writing the image of version 3 into slot a");
    let written = Needle::new("into slot a in").and("verified");
    let console = story.power_cut_at(
        &Cut::after(writing, Duration::from_secs(1)),
        std::slice::from_ref(&written),
    )?;
    ensure!(
        console.shows(&written).is_none(),
        "the cut came after the write: {}",
        console.last()
    );
    let disk = story.disk_status()?;
    ensure!(
        disk.next == Some(Slot::B),
        "after a cut mid-write the disk should boot slot b: {disk:#?}"
    );
    story.switch_on()?;
    story.expect_boot(2, Slot::B)?;
    let report = expect_report(story)?;
    report.status.ensure_booted_good(Slot::B, 2)?;
    let (written, _) = follow_update(story, 3, Slot::A)?;
    // Published now, so that version 3's first check finds it (b).
    story.publish(&versions.unhealthy, false)?;
    story.expect_boot(3, Slot::A)?;
    let report = expect_report(story)?;
    ensure_marked_good(&report, 3, Slot::A)?;
    Ok(format!(
        "cut 1 s into the write; version 2 booted, good; its next check installed version 3 ({} chunks kept in the target), marked good",
        written.kept_chunks().map_or("no".to_owned(), |kept| kept.to_string())
    ))
}

/// b. Version 4's success unit fails: the deadline reboots each trial boot
/// until the boot loader falls back to version 3, which reports version 4
/// failed and refuses it.
fn unhealthy_falls_back(story: &mut Story) -> Result<String> {
    story.say("version 4's success unit fails: boot-complete.target must never be reached, the health deadline must reboot each trial boot until the boot loader falls back to version 3, which must refuse version 4");
    follow_update(story, 4, Slot::B)?;
    let tries = story.fleet.policy().tries;
    for trial in 1..=tries {
        story.expect_boot(4, Slot::B)?;
        let report = expect_report(story)?;
        ensure!(
            report.line("Failed to start fixture-health.service").is_some()
                && report.line("Reached target boot-complete.target").is_none(),
            "the unhealthy version's success unit should fail and boot-complete.target never be reached"
        );
        ensure!(
            report.journal_shows("Dependency failed for abnix-mark-good.service"),
            "abnix-mark-good.service should fail on its dependency: {:?}",
            report.journal
        );
        // On its last try the trial counts as failed already.
        let booted = report.status.slot(Slot::B)?;
        let tries_left = tries - trial;
        ensure!(
            report.status.booted.as_deref() == Some("b")
                && booted.version == Some(4)
                && booted.tries_left == Some(u8::try_from(tries_left)?)
                && booted.state == if tries_left > 0 { "trial" } else { "failed" },
            "version 4 should run from slot b on trial with {tries_left} tries left: {:?}",
            report.status
        );
        let deadline = story.expect(
            "boot-complete.target not reached in time",
            HEALTH_DEADLINE + STEP,
        )?;
        story.say(format!(
            "trial boot {trial} of {tries}: abnix-mark-good's dependency failed; at {:.1} s abnix-health-deadline: {}",
            deadline.at.as_secs_f64(),
            after_colon(&deadline.text)
        ));
    }
    story.expect_boot(3, Slot::A)?;
    story.say("the boot loader fell back to slot a");
    let report = expect_report(story)?;
    report.status.ensure_booted_good(Slot::A, 3)?;
    let failed = report.status.slot(Slot::B)?;
    ensure!(
        failed.state == "failed" && failed.version == Some(4),
        "the host should report slot b failed with version 4: {:?}",
        report.status
    );
    story.say("status: slot b failed with version 4, slot a booted and good");
    let refused = Needle::new("ignored version 4: it failed before");
    let written = Needle::new("writing the image of version 4");
    let (found, line) = story.expect_first(&[&refused, &written], UPDATE)?;
    ensure!(
        found == 0,
        "version 3 installs the failed version 4 again: {line}"
    );
    story.say(format!("updater: {}", after_colon(&line.text)));
    // The report after the check.
    let report = expect_report(story)?;
    // Logged natively to the journal: at priority warning, with the
    // version as a field.
    let warning = report
        .warnings
        .iter()
        .find(|entry| {
            entry["MESSAGE"]
                .as_str()
                .is_some_and(|message| message.contains("ignored version 4: it failed before"))
        })
        .ok_or_else(|| {
            anyhow!(
                "journalctl -p warning -u abnix-update should show the refusal of version 4: {:?}",
                report.warnings
            )
        })?;
    ensure!(
        warning["PRIORITY"] == "4" && warning["ABNIX_VERSION"] == "4",
        "the refusal should be logged at priority 4 (warning) with ABNIX_VERSION=4: {warning}"
    );
    story.say(format!(
        "journalctl -p warning -u abnix-update: PRIORITY=4 ABNIX_VERSION=4 {}",
        warning["MESSAGE"]
    ));
    let failed = report
        .status
        .failed_versions
        .iter()
        .find(|failed| failed.version == 4)
        .ok_or_else(|| {
            anyhow!(
                "the host should report version 4 failed: {:?}",
                report.status
            )
        })?;
    story.say(format!("status: version 4 failed ({})", failed.reason));
    report.status.ensure_booted_good(Slot::A, 3)?;
    Ok(format!(
        "{tries} trial boot(s) rebooted by the health deadline, fallback to version 3, which reports version 4 failed and refuses it"
    ))
}

/// What a journal line says, after its `unit[pid]: ` prefix.
fn after_colon(line: &str) -> &str {
    line.rsplit_once("]: ")
        .map_or(line, |(_, message)| message)
        .trim()
}
