//! Staged rollouts on machines (issue 26): hosts with machine ids under one
//! rollout, the operator's halt and revert, and the fleet view of their
//! reports, with the real `abnix-update` inside the machines and the real
//! `publish` and `fleet` outside.
//!
//! The fixture hosts have no synchronized clock, so their notion of now is
//! the newest signing time they have verified (docs/security.md, "Staged
//! rollouts"): a rollout moves on for them only when the operator signs
//! again (`publish --resign`). That makes a host's turn a matter of signed
//! times, not of how fast the machines run.
//!
//! [`two_hosts`] is the scenario `rollout` of `tests/scenarios.rs`;
//! [`halt_and_revert`] a chapter of the demo.

use std::ops::Range;
use std::time::Duration;

use abnix_formats::machine_id::MachineId;
use abnix_formats::meta::SignedMeta;
use abnix_formats::rollout::{Admission, Place, Rollout};
use abnix_formats::slot::Slot;
use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::story::{HostStatus, Kind, Story, STEP};

/// How long the scenario's rollout runs, by the signing clock: the resign
/// comes at half of it.
const ROLLOUT_OVER: Duration = Duration::from_secs(60);
/// The most statuses read for one awaited check result (a host checks
/// every few seconds; those printed while another machine was followed
/// are read first).
const STATUSES: usize = 40;

/// Two hosts under one rollout: the one whose place for the new version
/// is early (below a quarter) and the late one (above three quarters) run
/// version 1 and report. Version 2 is published staged over a minute: at
/// its signing time both wait. At half of it the operator signs again;
/// now the early host's turn has come (it installs version 2, boots it on
/// trial and marks it good) and the late one's has not (it keeps waiting,
/// for the turn the rollout gives its place). Then
/// `abnix-update fleet --json` lists both, with their versions, and the
/// rollout's progress: one of two hosts on version 2.
pub fn two_hosts(story: &mut Story) -> Result<String> {
    story.say("two hosts report to the bucket; version 2 is staged, the operator signs again at 50% of the rollout: the host whose turn has come installs it, the other waits");
    // The versions must carry the report config: the machine ids first.
    let staged_version = story.next_version() + 1;
    let early_uuid = machine_placed(staged_version, 0.0..0.25)?;
    let late_uuid = machine_placed(staged_version, 0.75..1.0)?;
    story.report_as(early_uuid)?;
    let mut late = story.another_machine("late", late_uuid);
    let first = story.release(Kind::Good)?;
    story.publish(&first, false)?;

    // Both installed as templates, both switched on, then each followed.
    story.install_file(&first)?;
    story.follow(&mut late);
    story.install_file(&first)?;
    story.switch_on()?;
    story.follow(&mut late);
    story.switch_on()?;
    for _ in 0..2 {
        let status = comes_up(story, 1, Slot::A)?;
        ensure!(
            status.check_result().contains("up to date"),
            "the freshly installed host should be up to date: {status:?}"
        );
        story.follow(&mut late);
    }

    let staged = story.release(Kind::Good)?;
    story.fleet.publish_with(&[
        "--bundle".into(),
        staged.bundle.display().to_string(),
        "--rollout-over".into(),
        format!("{}s", ROLLOUT_OVER.as_secs()),
    ])?;
    let (published, rollout) = staged_meta(&story.fleet.channel_meta()?)?;
    story.say(format!(
        "published version {staged_version} staged over {} s from {published}",
        ROLLOUT_OVER.as_secs()
    ));
    // At its own signing time the rollout has reached nobody.
    for _ in 0..2 {
        waits_for_turn(story, staged_version, &rollout, published)?;
        story.follow(&mut late);
    }

    let half = rollout.start + chrono::Duration::seconds(ROLLOUT_OVER.as_secs() as i64 / 2);
    if let Ok(wait) = (half - Utc::now()).to_std() {
        std::thread::sleep(wait);
    }
    story.fleet.publish_with(&["--resign".into()])?;
    let (signed_at, _) = staged_meta(&story.fleet.channel_meta()?)?;
    let progress = rollout.progress(signed_at);
    story.say(format!(
        "signed again at {signed_at}: the rollout stands at {:.0}% for hosts without a clock",
        progress * 100.0
    ));
    // What each host must do follows from the product's own arithmetic.
    for (uuid, admitted) in [(early_uuid, true), (late_uuid, false)] {
        let place = Place::of(&machine_id(uuid)?, staged_version);
        let admission = rollout.admission(place, signed_at);
        ensure!(
            matches!(admission, Admission::Admitted { .. }) == admitted,
            "the resign came too late or too early for the chosen places: {:.3} at {:.0}% gives {admission:?}",
            place.fraction(),
            progress * 100.0
        );
    }

    story.expect_update(staged_version, Slot::B)?;
    comes_up(story, staged_version, Slot::B)?;
    story.say(format!(
        "the early host runs version {staged_version} from slot b, marked good"
    ));
    story.follow(&mut late);
    let waiting = waits_for_turn(story, staged_version, &rollout, signed_at)?;
    waiting.ensure_booted_good(Slot::A, 1)?;
    story.follow(&mut late);

    let (view, attempts) = fleet_until(story, |view| {
        host_row(view, early_uuid)
            .is_some_and(|row| row["version"] == staged_version && row["booted_state"] == "good")
            && host_row(view, late_uuid).is_some_and(|row| {
                row["last_result"].as_str().is_some_and(|result| {
                    result.contains(&format!("waiting for version {staged_version}"))
                })
            })
    })?;
    let late_row = host_row(&view, late_uuid).ok_or_else(|| anyhow!("no late host"))?;
    ensure!(
        view["hosts"] == 2 && late_row["version"] == 1 && late_row["booted_state"] == "good",
        "the fleet view should list two hosts, the late one on version 1: {view}"
    );
    let rollout_view = &view["rollout"];
    ensure!(
        rollout_view["version"] == staged_version
            && rollout_view["running"] == 1
            && rollout_view["hosts"] == 2,
        "the fleet view's progress should be one of two hosts on version {staged_version}: {view}"
    );
    story.say(format!(
        "abnix-update fleet --json (after {attempts} reads): 2 hosts, one on version {staged_version}, one on version 1 waiting"
    ));
    Ok(format!(
        "at {:.0}% of the rollout the early host installed version {staged_version}, the late one waits; fleet lists both",
        progress * 100.0
    ))
}

/// The demo's chapter: a staged version is published and the host waits
/// for its turn; the operator halts the rollout and the host says it will
/// not install it; the operator reverts to the version the host runs,
/// published again under the next number, and the host is up to date. The
/// fleet view shows it as text, and as an HTML page (`fleet.html` in the
/// story's directory).
pub fn halt_and_revert(story: &mut Story) -> Result<String> {
    story.say("a version is staged over a day, then halted, then the operator reverts to the running version; the fleet view shows the host");
    let running = story.running()?;
    let id = story
        .machine_id()
        .ok_or_else(|| anyhow!("the demo's host has no machine id"))?;
    let staged = story.release(Kind::Good)?;
    let version = staged.meta.meta().version;
    story.fleet.publish_with(&[
        "--bundle".into(),
        staged.bundle.display().to_string(),
        "--rollout-over".into(),
        "1d".into(),
    ])?;
    let (published, rollout) = staged_meta(&story.fleet.channel_meta()?)?;
    story.say(format!(
        "published version {version}, staged over a day from {published}"
    ));
    waits_for_turn(story, version, &rollout, published)?;
    show_fleet(story, &[])?;

    story.fleet.publish_with(&["--halt".into()])?;
    let (_, halted) = staged_meta(&story.fleet.channel_meta()?)?;
    let at = halted
        .halted_at
        .ok_or_else(|| anyhow!("publish --halt signed no halt: {halted:?}"))?;
    story.say(format!("halted the rollout of version {version} at {at}"));
    let refusal = format!(
        "not installing version {version}: its rollout was halted at {}",
        utc(at)
    );
    let never = [format!("writing the image of version {version}")];
    story.await_status(&refusal, STATUSES, &never, |status| {
        status.check_result() == refusal
    })?;
    story.say(format!("host: {refusal}"));

    let printed = story
        .fleet
        .publish_with(&["--revert-to".into(), running.version.to_string()])?;
    story.say(format!(
        "publish --revert-to {}: {}",
        running.version,
        printed.lines().next().unwrap_or("")
    ));
    let reverted = story.fleet.channel_meta()?;
    let reverted = reverted.meta();
    ensure!(
        reverted.version == version + 1
            && reverted
                .published
                .as_ref()
                .is_some_and(|published| published.rollout.is_none()),
        "the revert should publish version {} at once: {reverted:?}",
        version + 1
    );
    let up_to_date = format!(
        "up to date: version {} is the image of the booted version {}, published again",
        reverted.version, running.version
    );
    story.await_status(&up_to_date, STATUSES, &never, |status| {
        status.check_result() == up_to_date
    })?;
    story.say(format!("host: {up_to_date}"));

    let html = story.dir().join("fleet.html");
    let view = show_fleet(story, &["--html".into(), html.display().to_string()])?;
    let row = host_row_by_id(&view, &id).ok_or_else(|| anyhow!("no host {id}: {view}"))?;
    ensure!(
        row["version"] == running.version
            && view["rollout"]["version"] == reverted.version
            && view["rollout"]["running"] == 1,
        "the fleet view should show the host on version {} and the channel at version {}, \
         which it runs as version {}'s image: {view}",
        running.version,
        reverted.version,
        running.version
    );
    let page =
        std::fs::read_to_string(&html).with_context(|| format!("reading {}", html.display()))?;
    ensure!(
        page.contains(&id) && page.contains("Content-Security-Policy"),
        "{} should be the fleet page naming host {id}",
        html.display()
    );
    story.say(format!("the fleet page: {}", html.display()));
    Ok(format!(
        "version {version} staged, halted, reverted to {} as version {}; fleet page {}",
        running.version,
        reverted.version,
        html.display()
    ))
}

/// The followed machine boots `version` from `slot` with its own machine
/// id, marks itself good and reports its status.
fn comes_up(story: &mut Story, version: u64, slot: Slot) -> Result<HostStatus> {
    story.expect_boot(version, slot)?;
    let id = story
        .machine_id()
        .ok_or_else(|| anyhow!("the machine has no UUID"))?;
    let line = story.expect("ABNIX-FIXTURE machine-id=", STEP)?;
    ensure!(
        line.field("machine-id") == Some(id.as_str()),
        "the host should take its SMBIOS UUID {id} as its machine id: {line}"
    );
    story.expect_good(version, slot)
}

/// The followed host, having verified the channel's meta signed at
/// `signed_at`, waits for its turn in `rollout` of `version`, the one its
/// machine id gives it; it writes nothing.
fn waits_for_turn(
    story: &mut Story,
    version: u64,
    rollout: &Rollout,
    signed_at: DateTime<Utc>,
) -> Result<HostStatus> {
    let id = story
        .machine_id()
        .ok_or_else(|| anyhow!("the machine has no UUID"))?;
    let turn = rollout.turn(Place::of(&machine_id_text(&id)?, version));
    let waiting = format!(
        "waiting for version {version}: its staged rollout reaches this host at {}",
        utc(turn)
    );
    let never = [format!("writing the image of version {version}")];
    // Earlier checks' statuses may wait in the console: many, when another
    // machine was followed meanwhile.
    let status = story.await_status(&waiting, STATUSES, &never, |status| {
        status.check_result() == waiting
            && status.latest_signed_at.is_some_and(|at| at >= signed_at)
    })?;
    story.say(format!("host: {waiting}"));
    Ok(status)
}

/// Runs `abnix-update fleet` (text, narrated) and `fleet --json` with
/// `args`; returns the JSON.
fn show_fleet(story: &Story, args: &[String]) -> Result<Value> {
    let text = story.fleet.fleet_view(args)?;
    story.say("abnix-update fleet:");
    for line in text.lines() {
        story.say(format!("  {line}"));
    }
    fleet_json(story)
}

/// `abnix-update fleet --json`, parsed.
fn fleet_json(story: &Story) -> Result<Value> {
    let json = story.fleet.fleet_view(&["--json".into()])?;
    serde_json::from_str(&json).with_context(|| format!("parsing fleet --json: {json}"))
}

/// `fleet --json`, read until `done` holds (a host reports after each
/// check, every few seconds); the view and the number of reads.
fn fleet_until(story: &Story, done: impl Fn(&Value) -> bool) -> Result<(Value, u32)> {
    const READS: u32 = 30;
    let mut reads = 0;
    loop {
        reads += 1;
        let view = fleet_json(story)?;
        if done(&view) {
            return Ok((view, reads));
        }
        ensure!(
            reads < READS,
            "the fleet view never showed both hosts as expected: {view}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn host_row(view: &Value, uuid: Uuid) -> Option<&Value> {
    host_row_by_id(view, &uuid.simple().to_string())
}

fn host_row_by_id<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["host_rows"]
        .as_array()?
        .iter()
        .find(|row| row["machine_id"] == id)
}

/// The signing time and the rollout of the channel's staged meta.
fn staged_meta(signed: &SignedMeta) -> Result<(DateTime<Utc>, Rollout)> {
    let published = signed
        .meta()
        .published
        .as_ref()
        .ok_or_else(|| anyhow!("the channel's meta names no publication"))?;
    let rollout = published
        .rollout
        .ok_or_else(|| anyhow!("the channel's meta has no rollout: {published:?}"))?;
    Ok((published.signed_at, rollout))
}

/// The first of the UUIDs 1, 2, 3, … whose machine id has a place in the
/// rollouts of `version` within `fraction`.
fn machine_placed(version: u64, fraction: Range<f64>) -> Result<Uuid> {
    for n in 1..10_000u128 {
        let uuid = Uuid::from_u128(n);
        if fraction.contains(&Place::of(&machine_id(uuid)?, version).fraction()) {
            return Ok(uuid);
        }
    }
    bail!("no machine id with a place in {fraction:?} among 10,000")
}

/// The machine id of the machine with SMBIOS UUID `uuid`, as its `/init`
/// makes it.
fn machine_id(uuid: Uuid) -> Result<MachineId> {
    machine_id_text(&uuid.simple().to_string())
}

fn machine_id_text(id: &str) -> Result<MachineId> {
    id.parse().with_context(|| format!("machine id {id}"))
}

/// A time as the updater prints it.
fn utc(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
