//! Host reports (docs/cli.md, "Reports") through the real binary against
//! the real S3 server (s3s-fs) behind the fault proxy: written after an
//! update, a mark-good and a rollback, bounded in rate; a bucket that refuses or
//! stalls them fails and holds up nothing; off, nothing is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use abnix_formats::report::{Report, ReportEvent, ReportedState};
use abnix_formats::slot::Slot;
use common::{assert_exit, stderr, Device, Fleet, MIB};

const MACHINE_ID: &str = "5f1c0a3e9b7d4c2a8e6f0b1d3c5a7e9f";

/// Turns reports on with the credentials in `credentials`, the machine id
/// being `machine_id`.
fn enable_reports(device: &Device, credentials: &Path, machine_id: &str) {
    device.set_machine_id(machine_id);
    device.set_config("report", "true");
    device.set_config(
        "report_credentials",
        &format!("\"{}\"", credentials.display()),
    );
}

/// Dates the host's record of its last report sent (`report.json` in its
/// state directory) `secs` seconds back: how long ago it was sent.
fn backdate_last_sent(device: &Device, secs: i64) {
    let path = device.state_file().with_file_name("report.json");
    let mut last = Report::parse(&std::fs::read(&path).unwrap()).unwrap();
    last.at = chrono::Utc::now() - chrono::Duration::seconds(secs);
    std::fs::write(&path, last.to_json()).unwrap();
}

fn run(device: &Device, slot: Slot, command: &str) -> Output {
    device.command(slot, command, &[]).output().unwrap()
}

/// The host's report as the bucket holds it, if there is one.
fn report(fleet: &Fleet) -> Option<Report> {
    let path = fleet.channel_object_file("kiosk", &format!("hosts/{MACHINE_ID}.json"));
    let bytes = std::fs::read(path).ok()?;
    Some(Report::parse(&bytes).unwrap())
}

fn puts(fleet: &Fleet) -> usize {
    fleet
        .proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count()
}

/// The report credentials: the server's own key (s3s-fs has one), in a
/// file of their own.
fn report_credentials(fleet: &Fleet, device: &Device) -> PathBuf {
    abnix_testkit::credentials_file(device.dir.path(), &fleet.server)
}

/// A host on version 1 with reports on, version 2 published; and its
/// report credentials.
fn reporting_host() -> (Fleet, Device, PathBuf) {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    let credentials = report_credentials(&fleet, &device);
    enable_reports(&device, &credentials, MACHINE_ID);
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);
    (fleet, device, credentials)
}

#[test]
fn a_report_is_written_after_update_mark_good_and_rollback_and_not_repeated_at_once() {
    let (fleet, device, _) = reporting_host();

    assert_exit(&run(&device, Slot::A, "update"), 4);
    let after_update = report(&fleet).expect("a report after the update");
    assert_eq!(after_update.event, ReportEvent::Update);
    assert_eq!(after_update.machine_id.as_str(), MACHINE_ID);
    assert_eq!(after_update.booted, Some(Slot::A));
    assert_eq!(after_update.version, Some(1));
    assert_eq!(after_update.pending_reboot, Some(2));
    assert_eq!(after_update.slots[1].state, ReportedState::Trial);
    assert_eq!(after_update.slots[1].label.as_deref(), Some("kiosk 2"));
    let last = after_update.last_result.as_ref().unwrap();
    assert_eq!(last.latest, Some(2));

    assert_eq!(device.power_on(), Slot::B);
    assert_exit(&run(&device, Slot::B, "mark-good"), 0);
    let after_mark_good = report(&fleet).expect("a report after mark-good");
    assert_eq!(after_mark_good.event, ReportEvent::MarkGood);
    assert_eq!(after_mark_good.booted, Some(Slot::B));
    assert_eq!(after_mark_good.version, Some(2));
    assert_eq!(after_mark_good.pending_reboot, None);
    assert_eq!(after_mark_good.slots[1].state, ReportedState::Good);

    // The rate: a check right after, saying the same about the slots, is
    // not reported again; nor while the last report sent is younger than
    // the 30 s window; once it is older, it is.
    fleet.proxy.clear_requests();
    assert_exit(&run(&device, Slot::B, "check"), 3);
    assert_eq!(puts(&fleet), 0, "a report repeated within the interval");
    assert_eq!(report(&fleet).unwrap().event, ReportEvent::MarkGood);
    backdate_last_sent(&device, 10);
    assert_exit(&run(&device, Slot::B, "check"), 3);
    assert_eq!(puts(&fleet), 0, "a report 10 s after the last");
    assert_eq!(report(&fleet).unwrap().event, ReportEvent::MarkGood);
    backdate_last_sent(&device, 31);
    assert_exit(&run(&device, Slot::B, "check"), 3);
    assert_eq!(puts(&fleet), 1, "a report 31 s after the last");
    let after_check = report(&fleet).unwrap();
    assert_eq!(after_check.event, ReportEvent::Check);
    assert_eq!(after_check.slots, after_mark_good.slots);
    assert!(after_check.at > after_mark_good.at);

    // A rollback changes what the host says about its versions: reported
    // at once.
    assert_exit(&run(&device, Slot::B, "rollback"), 0);
    let after_rollback = report(&fleet).unwrap();
    assert_eq!(after_rollback.event, ReportEvent::Rollback);
    assert_eq!(after_rollback.failed_versions[0].version, 2);
}

#[test]
fn a_bucket_that_stalls_or_refuses_reports_neither_fails_nor_holds_up_the_update() {
    let (fleet, device, credentials) = reporting_host();

    // Every PUT held open, never answered: the proxy lets go only after 2
    // minutes. The report gives up on its own bound (REPORT_DEADLINE, 10 s;
    // 5 s per read) where the bucket's settings would wait out the
    // operation timeout (a minute) or the server: the warning names the
    // bound that cut it, not a timing.
    fleet.proxy.hold_every_put(true);
    let out = run(&device, Slot::A, "update");
    assert_exit(&out, 4);
    let warning = stderr(&out)
        .lines()
        .find(|line| line.contains("WARN") && line.contains("no report written after update"))
        .unwrap_or_else(|| panic!("no warning:\n{}", stderr(&out)))
        .to_owned();
    // 10 s: REPORT_DEADLINE; the bucket's own settings would say a minute.
    assert!(warning.ends_with("no answer within 10s"), "{warning}");
    assert!(puts(&fleet) >= 1, "the report was tried");
    assert_eq!(report(&fleet), None);
    assert_eq!(device.slots(Slot::A)[1], ("trial".to_owned(), Some(2)));
    fleet.proxy.hold_every_put(false);

    // A report that goes: the trial, pending its reboot.
    assert_exit(&run(&device, Slot::A, "check"), 3);
    assert_eq!(report(&fleet).unwrap().slots[1].state, ReportedState::Trial);

    // Credentials the bucket refuses, as for the mark-good unit, which
    // has no network (PrivateNetwork=yes): its report cannot go.
    let good = std::fs::read(&credentials).unwrap();
    std::fs::write(
        &credentials,
        format!(
            "access_key_id = \"{}\"\nsecret_access_key = \"wrong\"\n",
            fleet.server.access_key()
        ),
    )
    .unwrap();
    assert_eq!(device.power_on(), Slot::B);
    let out = run(&device, Slot::B, "mark-good");
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("no report written after mark-good"),
        "{}",
        stderr(&out)
    );
    assert_eq!(report(&fleet).unwrap().slots[1].state, ReportedState::Trial);
    assert_eq!(device.slots(Slot::B)[1], ("good".to_owned(), Some(2)));

    // The next check reports the marked-good state at once, within the
    // rate window of the last report sent: it differs in the slots
    // (docs/cli.md, "Reports").
    std::fs::write(&credentials, good).unwrap();
    assert_exit(&run(&device, Slot::B, "check"), 3);
    let after_check = report(&fleet).unwrap();
    assert_eq!(after_check.event, ReportEvent::Check);
    assert_eq!(after_check.booted, Some(Slot::B));
    assert_eq!(after_check.version, Some(2));
    assert_eq!(after_check.slots[1].state, ReportedState::Good);
    assert_eq!(after_check.pending_reboot, None);
}

#[test]
fn reporting_off_writes_nothing_and_a_bad_machine_id_is_never_a_key() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);
    fleet.proxy.clear_requests();

    // Off by default, even with a machine id at hand.
    std::fs::write(
        device.dir.path().join("machine-id"),
        format!("{MACHINE_ID}\n"),
    )
    .unwrap();
    assert_exit(&run(&device, Slot::A, "update"), 4);
    assert_eq!(device.power_on(), Slot::B);
    assert_exit(&run(&device, Slot::B, "mark-good"), 0);
    assert_exit(&run(&device, Slot::B, "rollback"), 0);
    assert_eq!(puts(&fleet), 0);
    assert!(!fleet.channel_object_file("kiosk", "hosts").exists());

    // On, with a machine id that would climb out of the hosts' folder.
    let credentials = report_credentials(&fleet, &device);
    enable_reports(&device, &credentials, "../../../kiosk");
    let out = run(&device, Slot::B, "check");
    assert!(
        stderr(&out).contains("is not a machine id"),
        "{}",
        stderr(&out)
    );
    assert_eq!(puts(&fleet), 0);
}

/// `abnix-update fleet` over the channel, the reports read with the
/// operator's credentials.
fn fleet_command(fleet: &Fleet, device: &Device, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_abnix-update"))
        .arg("fleet")
        .args(args)
        .args([
            "--endpoint",
            &fleet.server.endpoint(),
            "--region",
            "us-east-1",
        ])
        .args([
            "--bucket",
            fleet.server.bucket(),
            "--prefix",
            common::PREFIX,
        ])
        .args([
            "--channel",
            common::CHANNEL,
            "--path-style",
            "--credentials",
        ])
        .arg(report_credentials_path(device))
        .args(["--trusted-key", &fleet.public_key()])
        .output()
        .unwrap()
}

fn report_credentials_path(device: &Device) -> PathBuf {
    device.dir.path().join("s3-credentials.toml")
}

/// Puts `bytes` as the report of `machine_id`, as any holder of the report
/// credentials can.
fn put_report(fleet: &Fleet, machine_id: &str, bytes: &[u8]) {
    let remote = fleet.channel(&fleet.key).remote().clone();
    let key = remote.config().object_key(&format!("hosts/{machine_id}"));
    remote.put_bytes(&key, bytes).unwrap();
}

/// The DOM of `page` once headless Chromium has loaded it (and run any
/// script it would run).
fn rendered_dom(page: &Path, scratch: &Path) -> String {
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("chromium").display()
        ))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium (scripts/setup installs Debian's chromium)");
    assert!(out.status.success(), "chromium: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn fleet_shows_the_reports_as_text_json_and_a_static_page_that_runs_no_hostile_script() {
    let (fleet, device, _) = reporting_host();
    assert_exit(&run(&device, Slot::A, "update"), 4);

    // Other hosts' reports: an old one of a host gone silent, a hostile
    // one (markup in its texts), one that does not parse, and an object
    // that is no report.
    let mut silent = report(&fleet).unwrap();
    let silent_id = "1".repeat(32);
    silent.machine_id = silent_id.parse().unwrap();
    silent.at -= chrono::Duration::days(30);
    silent.pending_reboot = None;
    put_report(&fleet, &format!("{silent_id}.json"), &silent.to_json());
    let mut hostile = report(&fleet).unwrap();
    let hostile_id = "2".repeat(32);
    hostile.machine_id = hostile_id.parse().unwrap();
    hostile.slots[0].label =
        Some("<script>document.body.setAttribute('data-pwned','1')</script>".into());
    hostile.last_result.as_mut().unwrap().result =
        "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">".into();
    put_report(&fleet, &format!("{hostile_id}.json"), &hostile.to_json());
    let broken_id = "3".repeat(32);
    put_report(&fleet, &format!("{broken_id}.json"), b"<html>not a report");
    put_report(&fleet, "index.html", b"hello");

    let page = device.dir.path().join("fleet.html");
    let out = fleet_command(
        &fleet,
        &device,
        &["--json", "--html", page.to_str().unwrap()],
    );
    assert_exit(&out, 0);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["hosts"], 4);
    assert_eq!(view["versions"][0]["version"], 1);
    assert_eq!(view["versions"][0]["hosts"], 3);
    assert_eq!(view["silent"], serde_json::json!([silent_id]));
    assert_eq!(view["unreadable"], serde_json::json!([broken_id]));
    assert_eq!(view["skipped"]["not_reports"], 1);
    assert_eq!(view["rollout"]["version"], 2);
    assert_eq!(view["rollout"]["pending_reboot"], 2);
    assert_eq!(view["rollout"]["running"], 0);
    assert_eq!(view["rollout"]["schedule"], serde_json::Value::Null);
    assert_eq!(
        view["unreadable_count"], 2,
        "the broken report and index.html"
    );
    // Version 1's label: its hosts disagree (the hostile one), and no
    // verified meta names it.
    assert_eq!(view["versions"][0]["label"], "conflicting");

    let out = fleet_command(&fleet, &device, &[]);
    assert_exit(&out, 0);
    let text = common::stdout(&out);
    assert!(text.contains("channel kiosk: 4 hosts"), "{text}");
    assert!(
        text.contains(
            "latest version 2 \"kiosk 2\": running on 0 of 4 hosts, waiting for a reboot on 2"
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "rollout: no staged rollout, every host may install it"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l
            == "unreadable: 1 objects under hosts/ not named <machine-id>.json (not counted as hosts)"),
        "{text}"
    );

    let dom = rendered_dom(&page, device.dir.path());
    for id in [MACHINE_ID, &silent_id, &hostile_id, &broken_id] {
        assert!(
            dom.contains(&format!("<td>{id}</td>")),
            "{id} missing:\n{dom}"
        );
    }
    assert!(dom.contains("<td>kiosk 1</td>"), "{dom}");
    assert!(dom.contains("class=\"silent\""), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.body.setAttribute"),
        "{dom}"
    );
    assert!(
        !dom.contains("data-pwned=\""),
        "a report's script ran:\n{dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
}

/// `publish --revert-to 1` publishes version 1's content as version 3: a
/// host still booted into version 1 is up to date (its check has nothing
/// to do), and its report, carrying its booted slot's version id, makes the
/// fleet view count it as running the latest version, saying why.
#[test]
fn fleet_counts_a_host_on_the_image_a_revert_published_again_as_running_it() {
    use abnix_updater::publish::{revert_to, PublishOptions};

    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    fleet.publish(&v1);
    let device = Device::install(&fleet, &v1, "never");
    enable_reports(&device, &report_credentials(&fleet, &device), MACHINE_ID);
    fleet.publish(&fleet.version(2, 8 * MIB));
    let channel = fleet.channel(&fleet.key);
    let reverted = revert_to(&channel, 1, &[&fleet.key], &PublishOptions::default()).unwrap();
    assert_eq!(reverted.published.version, 3);
    assert_exit(&run(&device, Slot::A, "check"), 3);
    let sent = report(&fleet).expect("a report after the check");
    assert_eq!(sent.version, Some(1));
    assert_eq!(sent.slots[0].id, Some(reverted.published.id));

    let out = fleet_command(&fleet, &device, &[]);
    assert_exit(&out, 0);
    let text = common::stdout(&out);
    assert!(
        text.contains(
            "latest version 3 \"kiosk 1\": running on 1 of 1 hosts (1 as version 1's image),"
        ),
        "{text}"
    );
    let out = fleet_command(&fleet, &device, &["--json"]);
    assert_exit(&out, 0);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["rollout"]["running"], 1);
    assert_eq!(
        view["rollout"]["running_as_older"],
        serde_json::json!([{"version": 1, "hosts": 1}])
    );
}

/// A valid report of `machine_id` (on version 1, slot a), naming
/// `names` as its machine.
fn report_naming(names: &str) -> Vec<u8> {
    use abnix_formats::report::{SlotReport, REPORT_FORMAT};
    let slot = |slot, state| SlotReport {
        slot,
        state,
        version: Some(1),
        label: Some("kiosk 1".into()),
        id: Some(uuid::Uuid::from_u128(1)),
    };
    Report {
        format: REPORT_FORMAT,
        machine_id: names.parse().unwrap(),
        at: chrono::Utc::now(),
        event: ReportEvent::Check,
        abnix_version: "0.1.0".into(),
        booted: Some(Slot::A),
        version: Some(1),
        slots: vec![
            slot(Slot::A, ReportedState::Good),
            slot(Slot::B, ReportedState::Good),
        ],
        pending_reboot: None,
        last_result: None,
        failed_versions: vec![],
        check_interval_secs: 3600,
    }
    .to_json()
}

/// Forged names under hosts/ (no `<32 lowercase hex>.json`) are counted as
/// unreadable and never take a real host's place among the reports read;
/// a report naming another machine than its key is unreadable; the
/// listing stops at its bound, asking the server for no more, and says so.
#[test]
fn the_fleets_listing_is_bounded_and_forged_names_take_no_hosts_place() {
    use abnix_updater::fleet::{read_reports, ReadBounds};
    use abnix_updater::remote::{Remote, RemoteConfig};

    let fleet = Fleet::new();
    // All sort before the real hosts' names.
    for n in 0..30 {
        put_report(
            &fleet,
            &format!("0-forged-{n:02}.json"),
            &report_naming(&"a".repeat(32)),
        );
    }
    put_report(&fleet, &format!("{}.JSON", "0".repeat(31) + "1"), b"{}");
    let liar = "c".repeat(32);
    put_report(
        &fleet,
        &format!("{liar}.json"),
        &report_naming(&"d".repeat(32)),
    );
    let real = ["e".repeat(32), "f".repeat(32)];
    for id in &real {
        put_report(&fleet, &format!("{id}.json"), &report_naming(id));
    }
    let through_proxy = Remote::new(RemoteConfig {
        endpoint: Some(fleet.proxy.endpoint()),
        ..fleet.channel(&fleet.key).remote().config().clone()
    })
    .unwrap();

    // Three reports read: 31 forged names before them take none of the three.
    let (entries, skipped) = read_reports(
        &through_proxy,
        ReadBounds {
            listed: 1000,
            reports: 3,
        },
    )
    .unwrap();
    let ids: Vec<String> = entries.iter().map(|e| e.machine_id.to_string()).collect();
    assert_eq!(ids, [liar.clone(), real[0].clone(), real[1].clone()]);
    assert!(entries[0]
        .report
        .as_ref()
        .unwrap_err()
        .contains("it names machine dddd"));
    assert!(entries[1].report.is_ok() && entries[2].report.is_ok());
    assert_eq!(
        (
            skipped.not_reports,
            skipped.over_limit,
            skipped.listing_cut_at
        ),
        (31, 0, None)
    );
    // Two: the last real host is counted as not read.
    let (entries, skipped) = read_reports(
        &through_proxy,
        ReadBounds {
            listed: 1000,
            reports: 2,
        },
    )
    .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(skipped.over_limit, 1);

    // A listing bound of 10: one request for at most 10 keys, the cut said.
    fleet.proxy.clear_requests();
    let (entries, skipped) = read_reports(
        &through_proxy,
        ReadBounds {
            listed: 10,
            reports: 100,
        },
    )
    .unwrap();
    assert!(entries.is_empty());
    assert_eq!(skipped.listing_cut_at, Some(10));
    assert_eq!(skipped.not_reports, 10);
    let lists: Vec<String> = fleet
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("list-type=2"))
        .map(|r| r.path)
        .collect();
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert!(lists[0].contains("max-keys=10"), "{lists:?}");
}
