//! The update cycle through the real binary: a sparse disk image installed
//! with version 1, versions published to a real S3 server (s3s-fs) behind a
//! fault proxy, reboots simulated by GRUB's power-on model on the ESP and
//! `--cmdline abnix.slot=`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abnix_core::boot::Bootloader;
use abnix_formats::slot::Slot;
use common::{assert_exit, stderr, stdout, Device, Fleet, Version, MIB};
use serde_json::Value;

/// The requests the device made since the proxy's record was cleared, as
/// (method, path).
fn requests(fleet: &Fleet) -> Vec<(String, String)> {
    fleet
        .proxy
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path_only().to_owned()))
        .collect()
}

fn get(path: String) -> (String, String) {
    ("GET".to_owned(), path)
}

/// The bucket paths of the channel's meta and of `version`'s signature.
fn meta_and_signature(fleet: &Fleet, version: &Version) -> Vec<(String, String)> {
    let bucket = fleet.server.bucket();
    vec![
        get(format!("/{bucket}/fleet/kiosk.meta")),
        get(format!(
            "/{bucket}/fleet/kiosk/{}-{}.meta.sig",
            version.number(),
            version.id()
        )),
    ]
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// Each slot's (state, version), and the slot that boots next.
fn slots(device: &Device, booted: Slot) -> Vec<(String, Option<u64>, bool)> {
    device.slots_next(booted)
}

fn slot_state(state: &str, version: Option<u64>, boots_next: bool) -> (String, Option<u64>, bool) {
    (state.to_owned(), version, boots_next)
}

/// Slot A good with version `version` and booting next, slot B as given.
fn a_active(version: u64, b: (&str, Option<u64>)) -> Vec<(String, Option<u64>, bool)> {
    vec![
        slot_state("good", Some(version), true),
        slot_state(b.0, b.1, false),
    ]
}

/// Collects what is sent to a notify socket, as systemd would, until
/// [`Notifications::stop`].
struct Notifications {
    stop: Arc<AtomicBool>,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl Notifications {
    fn listen(path: &std::path::Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut buf = vec![0; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if stopped.load(Ordering::SeqCst) => return lines,
                    Err(_) => {}
                }
            }
        });
        Notifications { stop, reader }
    }

    /// Everything received, once the sender is done.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.reader.join().unwrap()
    }
}

#[test]
fn update_reboot_mark_good_then_nothing_new_costs_two_requests() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);

    let out = device.run(Slot::A, "check", &[]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("version 2 \"kiosk 2\" is available"),
        "{}",
        stdout(&out)
    );
    // The same in JSON, with the same exit code.
    let out = device.run(Slot::A, "check", &["--json"]);
    assert_exit(&out, 0);
    let check: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(check["result"], "update_available", "{check}");
    assert_eq!(check["latest"], 2, "{check}");
    assert!(check["latest_expires"].is_string(), "{check}");
    assert_eq!(check["would_install"]["version"], 2, "{check}");
    assert_eq!(check["would_install"]["label"], "kiosk 2", "{check}");
    assert_eq!(check["would_install"]["slot"], "b", "{check}");
    assert!(
        text(&check["message"]).contains("version 2 \"kiosk 2\" is available"),
        "{check}"
    );
    assert_eq!(slots(&device, Slot::A), a_active(1, ("bad", None)));

    // The update, as systemd runs it: STATUS= lines on the notify socket.
    let socket_path = device.dir.path().join("notify");
    let notifications = Notifications::listen(&socket_path);
    let out = device
        .command(Slot::A, "update", &[])
        .env("NOTIFY_SOCKET", &socket_path)
        .output()
        .unwrap();
    assert_exit(&out, 4);
    assert!(
        stderr(&out).contains("version 2 (slot b) boots at the next reboot"),
        "{}",
        stderr(&out)
    );
    let statuses = notifications.stop();
    for expected in [
        "STATUS=checking the channel for a new version\n",
        "STATUS=marking slot b bad\n",
        "STATUS=writing the image of version 2 into slot b\n",
        "STATUS=activating slot b as the trial that boots next\n",
    ] {
        assert!(
            statuses.iter().any(|s| s == expected),
            "{expected:?} not in {statuses:#?}"
        );
    }
    assert!(
        statuses
            .last()
            .unwrap()
            .starts_with("STATUS=installed version 2"),
        "{statuses:#?}"
    );

    let status = device.status(Slot::A);
    assert_eq!(status["slots"][1]["state"], "trial");
    assert_eq!(status["slots"][1]["tries_left"], 3);
    assert_eq!(status["slots"][1]["version"], 2);
    assert_eq!(status["slots"][1]["id"], v2.id().to_string());
    assert_eq!(status["slots"][1]["boots_next"], true);
    assert_eq!(status["pending_reboot"], 2);
    assert_eq!(status["latest_known"], 2);
    assert!(
        text(&status["last_check"]["result"]).starts_with("installed version 2"),
        "{status}"
    );
    assert!(status["last_error"].is_null());

    // Run again before the reboot: nothing to install, still pending, and
    // only the meta and its signature fetched.
    fleet.proxy.clear_requests();
    let out = device.run(Slot::A, "update", &[]);
    assert_exit(&out, 4);
    assert_eq!(requests(&fleet), meta_and_signature(&fleet, &v2));

    // The reboot: GRUB boots slot b on trial.
    assert_eq!(device.power_on(), Slot::B);
    // The health gate: no update from a trial boot, not even a request.
    fleet.proxy.clear_requests();
    let out = device.run(Slot::B, "update", &[]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("not marked good"), "{}", stderr(&out));
    assert_eq!(requests(&fleet), Vec::<(String, String)>::new());

    // Healthy: mark-good.
    assert_exit(&device.run(Slot::B, "mark-good", &[]), 0);
    let status = device.status(Slot::B);
    assert_eq!(status["booted"], "b");
    assert_eq!(status["slots"][1]["state"], "good");
    assert_eq!(status["slots"][1]["version"], 2);
    assert_eq!(status["slots"][1]["boots_next"], true);
    assert_eq!(status["slots"][0]["state"], "good");
    assert!(status["pending_reboot"].is_null());

    // A check that finds nothing new: one GET of the meta, one of its
    // signature, nothing else.
    fleet.proxy.clear_requests();
    let out = device.run(Slot::B, "update", &[]);
    assert_exit(&out, 0);
    assert_eq!(requests(&fleet), meta_and_signature(&fleet, &v2));
    let status = device.status(Slot::B);
    assert_eq!(status["last_check"]["result"], "up to date (version 2)");
    assert_exit(&device.run(Slot::B, "check", &[]), 3);
    let out = device.run(Slot::B, "check", &["--json"]);
    assert_exit(&out, 3);
    let check: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(check["result"], "up_to_date", "{check}");
    assert_eq!(check["latest"], 2, "{check}");
    assert!(check["would_install"].is_null(), "{check}");

    // The operator rolls back: slot a boots next, version 2 is never
    // installed again.
    let out = device.run(Slot::B, "rollback", &["--json"]);
    assert_exit(&out, 0);
    let rollback: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rollback["slot"], "a", "{rollback}");
    assert_eq!(rollback["version"], 1, "{rollback}");
    assert_eq!(rollback["label"], "kiosk 1", "{rollback}");
    assert_eq!(rollback["failed_version"], 2, "{rollback}");
    assert!(
        stderr(&out).contains("slot a (version 1 \"kiosk 1\") boots at the next reboot"),
        "{}",
        stderr(&out)
    );
    let status = device.status(Slot::B);
    assert_eq!(status["slots"][0]["boots_next"], true);
    assert_eq!(status["failed_versions"][0]["version"], 2);
    assert!(
        text(&status["failed_versions"][0]["reason"]).contains("rolled back by an operator"),
        "{status}"
    );
    assert_eq!(device.power_on(), Slot::A);
    let out = device.run(Slot::A, "update", &[]);
    assert_exit(&out, 0);
    let status = device.status(Slot::A);
    assert!(
        text(&status["last_check"]["result"]).starts_with("ignored version 2: it failed before"),
        "{status}"
    );
    assert_eq!(slots(&device, Slot::A), a_active(1, ("good", Some(2))));
}

#[test]
fn a_failed_trial_is_remembered_and_its_version_never_installed_again_grub() {
    failed_trial_is_remembered(Bootloader::Grub);
}

#[test]
fn a_failed_trial_is_remembered_and_its_version_never_installed_again_systemd_boot() {
    failed_trial_is_remembered(Bootloader::SystemdBoot);
}

fn failed_trial_is_remembered(bootloader: Bootloader) {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install_booting(&fleet, &v1, bootloader);
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);
    assert_exit(&device.run(Slot::A, "update", &[]), 4);

    // Version 2 never becomes healthy: the bootloader boots it three times
    // (the config's tries), then falls back to slot a.
    for _ in 0..3 {
        assert_eq!(device.power_on(), Slot::B);
    }
    assert_eq!(device.power_on(), Slot::A);
    assert_eq!(slots(&device, Slot::A), a_active(1, ("failed", Some(2))));

    // The failed version, still (or again) the channel's latest. The run
    // that finds the fallback warns once; later runs that find nothing new
    // succeed quietly (the timer's unit stays "succeeded"), and `status`
    // keeps showing the failure.
    fleet.publish(&v2);
    let warnings = |out: &std::process::Output| -> Vec<String> {
        stderr(out)
            .lines()
            .filter(|l| l.trim_start().starts_with("WARN"))
            .map(str::to_owned)
            .collect()
    };
    let out = device.run(Slot::A, "update", &[]);
    assert_exit(&out, 0);
    let warned = warnings(&out);
    assert!(
        warned.len() == 2
            && warned[0].contains("it is never installed again")
            && warned[1].contains("ignored version 2: it failed before"),
        "{}",
        stderr(&out)
    );
    let again = device.run(Slot::A, "update", &[]);
    assert_exit(&again, 0);
    assert_eq!(warnings(&again), Vec::<String>::new(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("it failed before"),
        "{}",
        stderr(&again)
    );
    let status = device.status(Slot::A);
    let failed = &status["failed_versions"][0];
    assert_eq!(failed["version"], 2);
    assert_eq!(failed["id"], v2.id().to_string());
    assert!(
        text(&failed["reason"]).contains("its trial in slot b failed"),
        "{status}"
    );
    assert!(
        text(&status["last_check"]["result"]).starts_with("ignored version 2: it failed before"),
        "{status}"
    );
    assert_eq!(slots(&device, Slot::A), a_active(1, ("failed", Some(2))));

    // A newer version is installed over the failed one.
    let v3 = fleet.version(3, 8 * MIB);
    fleet.publish(&v3);
    assert_exit(&device.run(Slot::A, "update", &[]), 4);
    assert_eq!(
        slots(&device, Slot::A),
        vec![
            slot_state("good", Some(1), false),
            slot_state("trial", Some(3), true)
        ]
    );
    // It boots on trial and, healthy, is marked good.
    assert_eq!(device.power_on(), Slot::B);
    assert_exit(&device.run(Slot::B, "mark-good", &[]), 0);
    assert_eq!(
        slots(&device, Slot::B),
        vec![
            slot_state("good", Some(1), false),
            slot_state("good", Some(3), true)
        ]
    );
    assert_eq!(device.power_on(), Slot::B);
}

/// Runs `update`, expects exit code `code`, and returns the status that
/// follows, after checking that slot a still boots with version `booted`
/// and slot b is as given.
fn update_leaves_a_active(
    device: &Device,
    code: i32,
    booted: u64,
    b: (&str, Option<u64>),
    args: &[&str],
) -> Value {
    let out = device.run(Slot::A, "update", args);
    assert_exit(&out, code);
    assert_eq!(slots(device, Slot::A), a_active(booted, b));
    device.status(Slot::A)
}

#[test]
fn network_down() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&fleet.version(2, 8 * MIB));
    assert_exit(&device.run(Slot::A, "check", &[]), 0);
    let seen = device.status(Slot::A)["latest_known_at"].clone();
    assert!(seen.is_string(), "{seen}");

    // The network goes down: nothing listens at the endpoint any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    device.set_config(
        "endpoint",
        &format!("\"http://{}\"", closed.local_addr().unwrap()),
    );
    drop(closed);

    // `check` fails (1), unlike "available" (0) and "nothing to do" (3).
    let out = device.run(Slot::A, "check", &["--network-wait", "0"]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).starts_with("failed waiting for the network"),
        "{}",
        stdout(&out)
    );

    let started = Instant::now();
    let status = update_leaves_a_active(&device, 1, 1, ("bad", None), &["--network-wait", "3s"]);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "gave up without waiting"
    );
    let error = text(&status["last_error"]["message"]);
    assert!(
        error.starts_with("failed waiting for the network: the bucket stayed unreachable"),
        "{error}"
    );
    assert!(error.contains("unreachable"), "{error}");
    assert!(status["last_check"]["latest"].is_null(), "{status}");
    // The outage does not erase what the last good check verified.
    assert_eq!(status["latest_known"], 2);
    assert_eq!(status["latest_known_at"], seen);
}

#[test]
fn server_errors() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&fleet.version(2, 8 * MIB));
    fleet.proxy.fail_every_request(true);
    let status = update_leaves_a_active(&device, 1, 1, ("bad", None), &[]);
    let error = text(&status["last_error"]["message"]);
    assert!(
        error.starts_with("failed fetching the channel's meta") && error.contains("500"),
        "{error}"
    );
    assert!(
        fleet.proxy.injected_errors() > 1,
        "retried before giving up"
    );
}

#[test]
fn corrupt_image_object() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    let v2 = fleet.version(2, 8 * MIB);
    fleet.publish(&v2);
    let object = fleet.object_file(&v2.image_object());
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&object, bytes).unwrap();

    // Slot b was marked bad before the image was written, and stays so.
    let status = update_leaves_a_active(&device, 1, 1, ("bad", None), &[]);
    let error = text(&status["last_error"]["message"]);
    assert!(
        error.starts_with("failed writing the image of version 2 into slot b"),
        "{error}"
    );
    assert_eq!(status["latest_known"], 2);
}

#[test]
fn wrong_signing_key() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    let stranger = abnix_formats::sign::SecretKey::generate("stranger").unwrap();
    fleet.publish(&fleet.version_signed_with(2, 8 * MIB, &stranger));
    let out = device.run(Slot::A, "check", &[]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).starts_with("failed fetching the channel's meta")
            && stdout(&out).contains("stranger"),
        "{}",
        stdout(&out)
    );
    let status = update_leaves_a_active(&device, 1, 1, ("bad", None), &[]);
    let error = text(&status["last_error"]["message"]);
    assert!(
        error.starts_with("failed fetching the channel's meta") && error.contains("stranger"),
        "{error}"
    );
    assert!(
        status["latest_known"].is_null(),
        "an unverified meta is no news"
    );
}

#[test]
fn an_older_version_is_not_installed() {
    let fleet = Fleet::new();
    let v2 = fleet.version(2, 8 * MIB);
    let device = Device::install(&fleet, &v2, "never");
    fleet.publish(&fleet.version(1, 8 * MIB));
    let status = update_leaves_a_active(&device, 0, 2, ("bad", None), &[]);
    assert_eq!(
        status["last_check"]["result"],
        "ignored version 1: not newer than version 2 in slot a (versions never go back)"
    );
    assert_eq!(status["latest_known"], 1);
    assert!(status["last_error"].is_null());
}

#[test]
fn an_image_larger_than_the_slot_is_refused() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&fleet.version(2, common::SLOT_SIZE + 8 * MIB));
    let status = update_leaves_a_active(&device, 1, 1, ("bad", None), &[]);
    assert_eq!(
        status["last_error"]["message"],
        format!(
            "refused version 2: its image is {} bytes, a slot holds {}",
            common::SLOT_SIZE + 8 * MIB,
            common::SLOT_SIZE
        )
    );
}

#[test]
fn a_second_update_waits_for_the_first_then_gives_up() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&fleet.version(2, 8 * MIB));

    // The first update holds the lock while its first request hangs.
    fleet.proxy.set_latency(Duration::from_secs(14));
    let first = device
        .command(Slot::A, "update", &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.proxy.requests().is_empty() {
        assert!(Instant::now() < deadline, "the first update sent nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    fleet.proxy.set_latency(Duration::ZERO);

    let started = Instant::now();
    let second = device.run(Slot::A, "update", &[]);
    assert_exit(&second, 1);
    assert!(
        stderr(&second).contains("another abnix-update is running"),
        "{}",
        stderr(&second)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "waited briefly"
    );
    assert_eq!(device.status(Slot::A)["update_running"], true);

    let first = first.wait_with_output().unwrap();
    assert_exit(&first, 4);
    let status = device.status(Slot::A);
    assert_eq!(status["update_running"], false);
    assert_eq!(status["pending_reboot"], 2);
}

/// Stand-ins for the programs the updater reboots with, alone on a PATH
/// (so nothing real can run): each appends its name and arguments to a
/// log. `systemctl is-active` says "not active".
fn fake_reboot_tools(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    let log = dir.join("calls.log");
    std::fs::create_dir(&bin).unwrap();
    for name in ["reboot", "systemctl", "systemd-run"] {
        let path = bin.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"${{0##*/}} $*\" >> '{}'\n[ \"$1\" != is-active ]\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, log)
}

/// Version 1 installed with `reboot` policy (and `reboot_window`), version
/// 2 published, then `update` run with fake reboot tools: it must report an
/// update waiting for its reboot (exit 4). Returns the device, the command's
/// output and the log of the reboot tools' calls.
fn update_under_reboot_policy(
    reboot: &str,
    reboot_window: Option<String>,
) -> (Device, std::process::Output, std::path::PathBuf) {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install_with(
        &fleet,
        &v1,
        &common::DeviceOptions {
            endpoint: fleet.proxy.endpoint(),
            trusted_key: fleet.public_key(),
            reboot,
            reboot_window,
            bootloader: Bootloader::Grub,
        },
    );
    fleet.publish(&fleet.version(2, 8 * MIB));
    let (bin, log) = fake_reboot_tools(device.dir.path());
    let out = device
        .command(Slot::A, "update", &[])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_exit(&out, 4);
    (device, out, log)
}

#[test]
fn immediate_policy_reboots_after_a_short_delay() {
    let (device, out, log) = update_under_reboot_policy("immediate", None);
    assert!(
        stderr(&out).contains("rebooting into version 2 (slot b) in 5 s"),
        "{}",
        stderr(&out)
    );
    let expected = if abnix_updater::update::restart::systemd_running() {
        "systemctl reboot\n"
    } else {
        "reboot \n"
    };
    assert_eq!(std::fs::read_to_string(&log).unwrap(), expected);
    // The state was saved before the reboot.
    assert_eq!(device.status(Slot::A)["pending_reboot"], 2);
}

#[test]
fn window_policy_outside_the_window_waits_for_it() {
    let now = chrono::Local::now();
    let hour = |h| {
        (now + chrono::Duration::hours(h))
            .format("%H:%M")
            .to_string()
    };
    let (_device, out, log) =
        update_under_reboot_policy("window", Some(format!("{}-{}", hour(2), hour(3))));
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    if abnix_updater::update::restart::systemd_running() {
        assert!(calls.contains("systemd-run --unit=abnix-reboot"), "{calls}");
    } else {
        assert_eq!(calls, "", "nothing to schedule with");
        assert!(
            stderr(&out).contains("waits for the reboot window"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!calls.contains("systemctl reboot"), "{calls}");
}

#[test]
fn never_policy_leaves_the_reboot_pending() {
    let (device, out, log) = update_under_reboot_policy("never", None);
    assert!(
        stderr(&out).contains("version 2 (slot b) boots at the next reboot (reboot policy: never)"),
        "{}",
        stderr(&out)
    );
    assert!(!log.exists(), "nothing rebooted or scheduled");

    let status = device.status(Slot::A);
    assert_eq!(status["pending_reboot"], 2);
    assert_eq!(status["booted"], "a");
    let out = device.run(Slot::A, "status", &[]);
    assert!(
        stdout(&out).contains("pending reboot:  yes, version 2 boots at the next reboot"),
        "{}",
        stdout(&out)
    );
    // Whenever the machine reboots, it boots the new version.
    assert_eq!(device.power_on(), Slot::B);
}

#[test]
fn rollback_is_refused_to_an_empty_or_failed_slot() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");

    let out = device.run(Slot::A, "rollback", &[]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("refusing to roll back: slot b is empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(slots(&device, Slot::A), a_active(1, ("bad", None)));

    // Version 2's trial fails: slot b holds a failed version.
    fleet.publish(&fleet.version(2, 8 * MIB));
    assert_exit(&device.run(Slot::A, "update", &[]), 4);
    for _ in 0..3 {
        assert_eq!(device.power_on(), Slot::B);
    }
    assert_eq!(device.power_on(), Slot::A);
    let out = device.run(Slot::A, "rollback", &[]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out)
            .contains("refusing to roll back: slot b holds version 2, which is failed, not good"),
        "{}",
        stderr(&out)
    );
    assert_eq!(slots(&device, Slot::A), a_active(1, ("failed", Some(2))));
    let status = device.status(Slot::A);
    assert_eq!(
        status["failed_versions"],
        serde_json::json!([]),
        "a refused rollback records nothing"
    );
}

#[test]
fn status_reads_a_corrupt_state_without_touching_it() {
    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&v1);

    // Nothing checked yet: status creates neither the state nor the lock.
    device.status(Slot::A);
    assert!(!device.state_dir.exists(), "status created the state dir");

    std::fs::create_dir_all(&device.state_dir).unwrap();
    let state_file = device.state_dir.join("state.json");
    std::fs::write(&state_file, "{\"failed\": [tru").unwrap();
    let status = device.status(Slot::A);
    assert!(
        text(&status["state_corrupt"]).contains("state.json is corrupt"),
        "{status}"
    );
    let out = device.run(Slot::A, "status", &[]);
    assert!(
        stdout(&out).contains("state.json is corrupt"),
        "{}",
        stdout(&out)
    );
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&device.state_dir), ["state.json"]);
    assert_eq!(
        std::fs::read_to_string(&state_file).unwrap(),
        "{\"failed\": [tru"
    );

    // A check sets it aside, says so, and starts afresh.
    let out = device.run(Slot::A, "check", &[]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("is corrupt"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(device.state_dir.join("state.json.corrupt")).unwrap(),
        "{\"failed\": [tru"
    );
    let status = device.status(Slot::A);
    assert!(status["state_corrupt"].is_null(), "{status}");
    assert!(status["last_check"]["at"].is_string(), "{status}");
}

#[test]
fn status_says_when_the_next_check_is_due_and_flags_a_stopped_timer() {
    use abnix_updater::state_dir::{CheckRecord, State, StateDir};
    use chrono::{DateTime, Utc};

    let fleet = Fleet::new();
    let v1 = fleet.version(1, 8 * MIB);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&v1);
    device.set_config("check_interval", "\"1h\"");
    let due =
        |status: &Value| -> DateTime<Utc> { text(&status["next_check_due"]).parse().unwrap() };

    // The last check was three days ago: the timer is not running.
    let long_ago = Utc::now() - chrono::Duration::days(3);
    StateDir::new(&device.state_dir)
        .save(&State {
            last_check: Some(CheckRecord {
                at: long_ago,
                latest: Some(1),
                result: "up to date (version 1)".into(),
            }),
            ..State::default()
        })
        .unwrap();
    let status = device.status(Slot::A);
    assert_eq!(status["check_interval_secs"], 3600);
    assert_eq!(status["check_overdue"], true, "{status}");
    assert_eq!(due(&status), long_ago + chrono::Duration::hours(1));
    let out = device.run(Slot::A, "status", &[]);
    assert!(
        stdout(&out).contains("the update timer may not be running"),
        "{}",
        stdout(&out)
    );
    // While an update runs, a late check is that run, not a stopped timer.
    {
        let _lock = device.hold_lock();
        assert_eq!(device.status(Slot::A)["check_overdue"], false);
    }

    // A check (even one that finds nothing) resets the schedule.
    assert_exit(&device.run(Slot::A, "check", &[]), 3);
    let status = device.status(Slot::A);
    assert_eq!(status["check_overdue"], false, "{status}");
    let checked: DateTime<Utc> = text(&status["last_check"]["at"]).parse().unwrap();
    assert_eq!(due(&status), checked + chrono::Duration::hours(1));
    let out = device.run(Slot::A, "status", &[]);
    assert!(
        stdout(&out).contains("next check:      due "),
        "{}",
        stdout(&out)
    );
}
