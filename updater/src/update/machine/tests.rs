//! Every transition of the update cycle, driven by hand-made events.

use super::*;
use abnix_core::boot::SlotStatus;
use abnix_formats::digest::Digest;
use abnix_formats::layout::Arch;
use abnix_formats::machine_id::MachineId;
use abnix_formats::meta::{
    object_name, Artifact, FsType, Image, ObjectKind, Publication, FORMAT_VERSION,
};
use abnix_formats::rollout::Rollout;
use abnix_formats::sign::SecretKey;
use chrono::Utc;

const MIB: u64 = 1 << 20;
/// A signing key of the tests (`abnix-update keygen`).
const KEY: &str = "machine-test:AGba39scl3l8pJLllvGpu5WZI/mT1laN1Ah8Erjsj+p7b0MkU60fYClV1xwCZ7v2/SnJLFzI3V7uH/5kbtvzjQ==";
const SLOT_SIZE: u64 = 16 * MIB;

fn id(version: u64) -> Uuid {
    Uuid::from_u128(0x1000 + u128::from(version))
}

fn meta_with(version: u64, id: Uuid, image_size: u64) -> Meta {
    let artifact = |kind, size| Artifact {
        object: object_name(version, id, kind),
        size,
        sha256: Digest::of(b"test"),
    };
    Meta {
        format: FORMAT_VERSION,
        version,
        id,
        label: format!("kiosk {version}"),
        arch: Arch::X86_64,
        published: Some(Publication {
            channel: CHANNEL.into(),
            signed_at: signed_at(),
            expires: expires(),
            revoked_keys: Vec::new(),
            rollout: None,
        }),
        image: Image {
            object: object_name(version, id, ObjectKind::Image),
            compressed_size: image_size / 4,
            size: image_size,
            sha256: Digest::of(b"image"),
            fs: FsType::Ext4,
        },
        index: artifact(ObjectKind::Index, 100),
        kernel: artifact(ObjectKind::Kernel, 5000),
        initrd: artifact(ObjectKind::Initrd, 9000),
        cmdline: "quiet".into(),
    }
}

fn meta(version: u64) -> Meta {
    meta_with(version, id(version), 8 * MIB)
}

const CHANNEL: &str = "kiosk";

/// When the metas of the tests are signed, and expire.
fn signed_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn expires() -> DateTime<Utc> {
    signed_at() + chrono::Duration::days(30)
}

/// What the outcomes say of `meta(version)`.
fn latest_of(version: u64) -> Latest {
    Latest {
        version,
        signed_at: Some(signed_at()),
        expires: Some(expires()),
        rollout: None,
    }
}

/// The disk as read at the start of a run: `status`, nothing kept on the ESP.
fn disk_event(status: BootStatus) -> Event {
    Event::Disk(Box::new(DiskState::unsigned(status)))
}

fn info(version: u64) -> SlotInfo {
    SlotInfo {
        version,
        id: id(version),
        label: format!("kiosk {version}"),
        cmdline: "quiet".into(),
    }
}

/// A slot in `state` holding `version` (none: no complete boot files).
fn slot(slot: Slot, state: SlotState, version: Option<u64>) -> SlotStatus {
    SlotStatus {
        slot,
        state,
        info: version.map(info),
    }
}

fn boot_status(a: SlotStatus, b: SlotStatus, next: Slot) -> BootStatus {
    BootStatus {
        next: Some(next),
        slots: [a, b],
    }
}

/// Slot A good with version 1 and booting; slot B empty.
fn installed() -> BootStatus {
    boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Bad, None),
        Slot::A,
    )
}

const NETWORK: NetworkWait = NetworkWait {
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(4),
    budget: Duration::from_secs(10),
};

fn setup(mode: Mode) -> Setup {
    Setup {
        mode,
        booted: Slot::A,
        failed: Vec::new(),
        slot_size: SLOT_SIZE,
        tries: 3,
        network: NETWORK,
        device: Device {
            channel: Some(CHANNEL.into()),
            arch: Arch::X86_64,
        },
        clock: Clock {
            now: signed_at() + chrono::Duration::days(1),
            trusted: true,
            newest_signed: None,
        },
        machine_id: MachineId::from_file_text(MACHINE_ID).ok(),
    }
}

/// The machine id of the tests' host.
const MACHINE_ID: &str = "4f0c2b9e7d1a4c3b8e6f5a2d1c0b9e8f";

fn failed_version(version: u64, id: Uuid) -> FailedVersion {
    FailedVersion {
        version,
        id,
        label: format!("kiosk {version}"),
        at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        reason: "fell back".into(),
    }
}

/// Feeds `events` one by one; returns the action asked for before each
/// event, and the action after the last.
fn drive(setup: Setup, events: Vec<Event>) -> (Vec<Action>, Action) {
    let mut machine = Machine::new(setup);
    let mut actions = Vec::new();
    for event in events {
        actions.push(machine.action());
        machine = machine.advance(event);
    }
    (actions, machine.action())
}

/// The outcome of a run that ends after `events`.
fn outcome(setup: Setup, events: Vec<Event>) -> Outcome {
    match drive(setup, events).1 {
        Action::Finish(outcome) => outcome,
        other => panic!("the run goes on with {other:?}"),
    }
}

/// `meta`, signed by a key of the tests.
fn signed(meta: Meta) -> SignedMeta {
    let key = SecretKey::parse(KEY).unwrap();
    SignedMeta::sign(meta, &[&key]).unwrap()
}

fn latest(meta: Meta) -> Event {
    Event::Latest(Box::new(signed(meta)))
}

fn plan(version: u64, target: Slot) -> Box<Plan> {
    Box::new(Plan {
        target,
        signed: signed(meta(version)),
        tries: 3,
    })
}

const STEPS: [Step; 6] = [
    Step::FetchIndex,
    Step::CheckBootFiles,
    Step::MarkBad,
    Step::WriteImage,
    Step::WriteBootFiles,
    Step::Activate,
];

#[test]
fn an_update_runs_every_step_in_order() {
    let mut events = vec![disk_event(installed()), latest(meta(2))];
    events.extend(STEPS.iter().map(|_| Event::StepDone));
    let (actions, last) = drive(setup(Mode::Update), events);
    let mut expected = vec![Action::ReadDisk, Action::FetchLatest];
    expected.extend(STEPS.iter().map(|&step| Action::Install {
        plan: plan(2, Slot::B),
        step,
    }));
    assert_eq!(actions, expected);
    assert_eq!(last, Action::Finish(Outcome::Installed(plan(2, Slot::B))));
}

#[test]
fn an_install_of_a_given_plan_runs_the_same_steps() {
    let mut machine = Machine::installing(setup(Mode::Update), *plan(2, Slot::B));
    let mut actions = Vec::new();
    while let action @ Action::Install { .. } = machine.action() {
        actions.push(action);
        machine = machine.advance(Event::StepDone);
    }
    let expected: Vec<Action> = STEPS
        .iter()
        .map(|&step| Action::Install {
            plan: plan(2, Slot::B),
            step,
        })
        .collect();
    assert_eq!(actions, expected);
    assert_eq!(
        machine.action(),
        Action::Finish(Outcome::Installed(plan(2, Slot::B)))
    );

    // A failed step ends it as it ends an update.
    let failed = Machine::installing(setup(Mode::Update), *plan(2, Slot::B))
        .advance(Event::StepDone)
        .advance(Event::Failed("no room".into()));
    assert_eq!(
        failed.action(),
        Action::Finish(Outcome::Failed(Failure {
            stage: Stage::Install {
                step: Step::CheckBootFiles,
                plan: plan(2, Slot::B),
            },
            latest: Some(latest_of(2)),
            error: "no room".into(),
        }))
    );
}

#[test]
fn from_slot_b_the_update_goes_into_slot_a() {
    let status = boot_status(
        slot(Slot::A, SlotState::Bad, None),
        slot(Slot::B, SlotState::Good, Some(4)),
        Slot::B,
    );
    let setup = Setup {
        booted: Slot::B,
        ..setup(Mode::Check)
    };
    assert_eq!(
        outcome(setup, vec![disk_event(status), latest(meta(5))]),
        Outcome::WouldInstall(plan(5, Slot::A))
    );
}

#[test]
fn check_stops_where_an_update_would_start_installing() {
    let (actions, last) = drive(
        setup(Mode::Check),
        vec![disk_event(installed()), latest(meta(2))],
    );
    assert_eq!(actions, vec![Action::ReadDisk, Action::FetchLatest]);
    assert_eq!(
        last,
        Action::Finish(Outcome::WouldInstall(plan(2, Slot::B)))
    );
}

/// The health gate comes first: nothing is fetched from a boot that is not
/// good.
#[test]
fn the_health_gate_refuses_a_boot_that_is_not_good() {
    for state in [
        SlotState::Trial { tries_left: 2 },
        SlotState::Trial { tries_left: 0 },
        // Booted through GRUB's rescue path.
        SlotState::Bad,
    ] {
        let status = boot_status(
            slot(Slot::A, state, Some(2)),
            slot(Slot::B, SlotState::Good, Some(1)),
            Slot::A,
        );
        let (actions, last) = drive(setup(Mode::Update), vec![disk_event(status)]);
        assert_eq!(actions, vec![Action::ReadDisk]);
        let refusal = Outcome::Refused(Refusal::NotGood {
            slot: Slot::A,
            state,
        });
        assert!(refusal.to_string().contains("not marked good"), "{refusal}");
        assert_eq!(last, Action::Finish(refusal));
    }

    let status = boot_status(
        slot(Slot::A, SlotState::Good, None),
        slot(Slot::B, SlotState::Bad, None),
        Slot::A,
    );
    assert_eq!(
        outcome(setup(Mode::Update), vec![disk_event(status)]),
        Outcome::Refused(Refusal::BootedIncomplete(Slot::A))
    );
}

#[test]
fn a_failed_trial_is_recorded_and_its_version_not_installed_again() {
    let status = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 0 }, Some(2)),
        Slot::A,
    );
    let record = failed_trial_record(Slot::B, &info(2), DateTime::UNIX_EPOCH);
    assert!(record.reason.contains("slot b"), "{}", record.reason);
    let (actions, last) = drive(
        setup(Mode::Update),
        vec![
            disk_event(status.clone()),
            Event::Recorded(Box::new(record)),
            latest(meta(2)),
        ],
    );
    assert_eq!(
        actions,
        vec![
            Action::ReadDisk,
            Action::RecordFailedTrial {
                trial: Slot::B,
                info: info(2)
            },
            Action::FetchLatest,
        ]
    );
    let Action::Finish(Outcome::Skipped {
        reason: Skip::FailedBefore { reason },
        ..
    }) = last
    else {
        panic!("expected the failed version to be skipped, got {last:?}");
    };
    assert!(reason.contains("its trial in slot b failed"), "{reason}");

    // Recorded once on the ESP: the next run goes straight to the bucket.
    let recorded = DiskState {
        failed: vec![failed_version(2, id(2))],
        ..DiskState::unsigned(status.clone())
    };
    let (_, next) = drive(setup(Mode::Update), vec![Event::Disk(Box::new(recorded))]);
    assert_eq!(next, Action::FetchLatest);
    // Known only to the state file (written by an abnix that kept no
    // record on the ESP): recorded there too.
    let known = Setup {
        failed: vec![failed_version(2, id(2))],
        ..setup(Mode::Update)
    };
    let (_, next) = drive(known, vec![disk_event(status)]);
    assert!(matches!(next, Action::RecordFailedTrial { .. }), "{next:?}");
}

#[test]
fn a_newer_version_than_the_failed_one_is_installed() {
    let status = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 0 }, Some(2)),
        Slot::A,
    );
    let recorded = DiskState {
        failed: vec![failed_version(2, id(2))],
        ..DiskState::unsigned(status)
    };
    assert_eq!(
        outcome(
            setup(Mode::Check),
            vec![Event::Disk(Box::new(recorded)), latest(meta(3))]
        ),
        Outcome::WouldInstall(plan(3, Slot::B))
    );
}

#[test]
fn versions_that_are_not_installed_and_why() {
    let decide = |setup: Setup, status: BootStatus, meta: Meta| {
        outcome(setup, vec![disk_event(status), latest(meta)])
    };
    let booted_v5 = boot_status(
        slot(Slot::A, SlotState::Good, Some(5)),
        slot(Slot::B, SlotState::Good, Some(4)),
        Slot::A,
    );

    let older = decide(setup(Mode::Update), booted_v5.clone(), meta(3));
    assert_eq!(
        older,
        Outcome::Skipped {
            latest: latest_of(3),
            reason: Skip::NotNewer {
                floor: 5,
                slot: Slot::A
            }
        }
    );
    assert!(!older.is_error());

    let same = decide(setup(Mode::Update), booted_v5.clone(), meta(5));
    assert_eq!(
        same,
        Outcome::UpToDate {
            latest: latest_of(5)
        }
    );

    let reused_id = decide(
        setup(Mode::Update),
        booted_v5.clone(),
        meta_with(6, id(5), MIB),
    );
    assert_eq!(
        reused_id,
        Outcome::Skipped {
            latest: latest_of(6),
            reason: Skip::SameIdAsBooted { id: id(5) }
        }
    );
    assert!(reused_id.is_error());

    // A failed version is recognized by its number or by its id.
    for failed in [failed_version(6, Uuid::nil()), failed_version(99, id(6))] {
        let known = Setup {
            failed: vec![failed],
            ..setup(Mode::Update)
        };
        assert_eq!(
            decide(known, booted_v5.clone(), meta(6)),
            Outcome::Skipped {
                latest: latest_of(6),
                reason: Skip::FailedBefore {
                    reason: "fell back".into()
                }
            }
        );
    }

    let too_large = decide(
        setup(Mode::Update),
        booted_v5.clone(),
        meta_with(6, id(6), SLOT_SIZE + 1),
    );
    assert_eq!(
        too_large,
        Outcome::Skipped {
            latest: latest_of(6),
            reason: Skip::TooLarge {
                image: SLOT_SIZE + 1,
                slot_size: SLOT_SIZE
            }
        }
    );
    assert!(too_large.is_error());
    // Exactly a slot's size fits.
    assert!(matches!(
        decide(
            setup(Mode::Check),
            booted_v5,
            meta_with(6, id(6), SLOT_SIZE)
        ),
        Outcome::WouldInstall(_)
    ));
}

#[test]
fn a_version_waiting_for_its_trial_is_not_installed_twice() {
    let pending = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 3 }, Some(2)),
        Slot::B,
    );
    let done = outcome(
        setup(Mode::Update),
        vec![disk_event(pending.clone()), latest(meta(2))],
    );
    assert_eq!(
        done,
        Outcome::PendingTrial {
            slot: Slot::B,
            latest: latest_of(2)
        }
    );
    assert_eq!(done.reboot_pending(), Some((Slot::B, 2)));

    // A newer version replaces the pending one.
    let (_, next) = drive(
        setup(Mode::Update),
        vec![disk_event(pending), latest(meta(3))],
    );
    assert_eq!(
        next,
        Action::Install {
            plan: plan(3, Slot::B),
            step: Step::FetchIndex
        }
    );

    // An activation cut short by a power cut (B on trial, A still boots
    // first) is not a pending trial: the version is installed again.
    let torn = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 3 }, Some(2)),
        Slot::A,
    );
    let (_, next) = drive(setup(Mode::Update), vec![disk_event(torn), latest(meta(2))]);
    assert_eq!(
        next,
        Action::Install {
            plan: plan(2, Slot::B),
            step: Step::FetchIndex
        }
    );
}

#[test]
fn an_unreachable_bucket_is_retried_with_bounded_backoff() {
    let down = || Event::Unreachable("connection refused".into());
    let mut events = vec![disk_event(installed())];
    // Delays 1, 2, 4, then the 3 s left of the 10 s budget.
    for _ in 0..4 {
        events.push(down());
        events.push(Event::Waited);
    }
    events.push(down());
    let (actions, last) = drive(setup(Mode::Update), events);
    let waits: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Wait(d) => Some(d.as_secs()),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![1, 2, 4, 3]);
    let fetches = actions
        .iter()
        .filter(|a| **a == Action::FetchLatest)
        .count();
    assert_eq!(fetches, 5);
    let Action::Finish(Outcome::Failed(failure)) = last else {
        panic!("expected a failure, got {last:?}");
    };
    assert_eq!(failure.stage, Stage::Network);
    assert_eq!(failure.latest, None);
    assert!(
        failure.error.contains("5 attempts over 10s") && failure.error.contains("refused"),
        "{}",
        failure.error
    );

    // The network comes back during the wait.
    let (_, next) = drive(
        setup(Mode::Update),
        vec![
            disk_event(installed()),
            down(),
            Event::Waited,
            latest(meta(2)),
        ],
    );
    assert!(matches!(next, Action::Install { .. }), "{next:?}");
}

#[test]
fn network_wait_delays() {
    assert_eq!(
        NETWORK.delay(1, Duration::ZERO),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        NETWORK.delay(3, Duration::from_secs(3)),
        Some(Duration::from_secs(4))
    );
    assert_eq!(
        NETWORK.delay(30, Duration::ZERO),
        Some(Duration::from_secs(4)),
        "capped"
    );
    assert_eq!(NETWORK.delay(4, Duration::from_secs(10)), None);
    let none = NetworkWait {
        budget: Duration::ZERO,
        ..NETWORK
    };
    assert_eq!(none.delay(1, Duration::ZERO), None, "no waiting at all");
    let default = NetworkWait::DEFAULT;
    let total: Duration = (1..)
        .scan(Duration::ZERO, |waited, attempt| {
            let delay = default.delay(attempt, *waited)?;
            *waited += delay;
            Some(delay)
        })
        .sum();
    assert_eq!(total, default.budget);
}

#[test]
fn failures_say_where_they_happened() {
    let failed = outcome(
        setup(Mode::Update),
        vec![Event::Failed("the ESP: I/O error".into())],
    );
    assert_eq!(
        failed.to_string(),
        "failed reading the disk: the ESP: I/O error"
    );

    let failed = outcome(
        setup(Mode::Update),
        vec![
            disk_event(installed()),
            Event::Failed("the channel's meta: signed by an unknown key".into()),
        ],
    );
    assert_eq!(failed.latest(), None);
    assert_eq!(
        failed.to_string(),
        "failed fetching the channel's meta: the channel's meta: signed by an unknown key"
    );

    let mut events = vec![disk_event(installed()), latest(meta(2))];
    events.extend([Event::StepDone, Event::StepDone, Event::StepDone]);
    events.push(Event::Failed("chunk 3 has the wrong SHA-256".into()));
    let failed = outcome(setup(Mode::Update), events);
    assert_eq!(
        failed,
        Outcome::Failed(Failure {
            stage: Stage::Install {
                step: Step::WriteImage,
                plan: plan(2, Slot::B)
            },
            latest: Some(latest_of(2)),
            error: "chunk 3 has the wrong SHA-256".into(),
        })
    );
    assert_eq!(
        failed.to_string(),
        "failed writing the image of version 2 into slot b: chunk 3 has the wrong SHA-256"
    );
    assert_eq!(failed.reboot_pending(), None);

    let status = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 0 }, Some(2)),
        Slot::A,
    );
    let failed = outcome(
        setup(Mode::Update),
        vec![
            disk_event(status),
            Event::Failed("state.json: no space left".into()),
        ],
    );
    assert!(
        matches!(&failed, Outcome::Failed(f) if f.stage == Stage::State),
        "{failed:?}"
    );
}

#[test]
fn outcomes_are_recorded_in_the_state() {
    let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let earlier = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let old_error = ErrorRecord {
        at: earlier,
        message: "failed waiting for the network: down".into(),
    };

    let mut state = State {
        last_error: Some(old_error.clone()),
        ..State::default()
    };
    let installed = Outcome::Installed(plan(2, Slot::B));
    installed.record(at, &mut state);
    assert_eq!(
        state.last_check,
        Some(CheckRecord {
            at,
            latest: Some(2),
            result:
                "installed version 2 \"kiosk 2\" into slot b; it boots next, on trial (3 tries)"
                    .into()
        })
    );
    assert_eq!(
        state.last_error,
        Some(old_error),
        "the last error stays, with its time"
    );

    let seen = LatestSeen {
        version: 2,
        at,
        signed_at: Some(signed_at()),
        expires: Some(expires()),
        rollout: None,
    };
    assert_eq!(state.latest, Some(seen.clone()));

    let failed = Outcome::Failed(Failure {
        stage: Stage::Network,
        latest: None,
        error: "unreachable".into(),
    });
    let later = DateTime::from_timestamp(1_800_003_600, 0).unwrap();
    failed.record(later, &mut state);
    let check = state.last_check.clone().unwrap();
    assert_eq!(check.latest, None);
    assert_eq!(
        state.latest,
        Some(seen),
        "a failed check keeps the latest version known, with the time it was verified"
    );
    assert_eq!(
        state.last_error,
        Some(ErrorRecord {
            at: later,
            message: check.result
        })
    );

    let mut state = State::default();
    Outcome::UpToDate {
        latest: latest_of(7),
    }
    .record(at, &mut state);
    assert_eq!(state.last_check.unwrap().latest, Some(7));
    assert_eq!(state.last_error, None);
}

/// A meta that verified but names another channel or architecture, or no
/// channel at all (a bundle's), is refused, saying which; nothing is
/// recorded as the channel's latest.
#[test]
fn a_meta_for_another_channel_or_architecture_is_refused() {
    let with = |edit: fn(&mut Meta)| {
        let mut meta = meta(2);
        edit(&mut meta);
        outcome(
            setup(Mode::Update),
            vec![disk_event(installed()), latest(meta)],
        )
    };
    type Case = (fn(&mut Meta), Outcome, &'static str);
    let cases: [Case; 3] = [
        (
            |m| m.published.as_mut().unwrap().channel = "beta".into(),
            Outcome::Unfit(Unfit::OtherChannel {
                version: 2,
                channel: "beta".into(),
            }),
            "refused version 2: it is published for channel \"beta\", not this device's",
        ),
        (
            |m| m.arch = Arch::Aarch64,
            Outcome::Unfit(Unfit::OtherArch {
                version: 2,
                arch: Arch::Aarch64,
            }),
            "refused version 2: it is built for aarch64 machines, not this device's",
        ),
        (
            |m| m.published = None,
            Outcome::Unfit(Unfit::NotPublished { version: 2 }),
            "refused version 2: its meta is a bundle's, signed by pack for no channel",
        ),
    ];
    for (edit, expected, text) in cases {
        let refused = with(edit);
        assert_eq!(refused, expected);
        assert!(refused.is_error());
        assert!(refused.to_string().starts_with(text), "{refused}");
        assert_eq!(refused.latest(), None);
    }
}

/// A bundle's meta, as `pack` signs it: for no channel.
fn packed(version: u64) -> Meta {
    Meta {
        published: None,
        ..meta(version)
    }
}

#[test]
fn a_bundle_signed_for_no_channel_installs_with_every_step() {
    let mut events = vec![disk_event(installed()), latest(packed(2))];
    events.extend(STEPS.iter().map(|_| Event::StepDone));
    let (actions, last) = drive(setup(Mode::Bundle), events);
    assert_eq!(actions[..2], [Action::ReadDisk, Action::FetchLatest]);
    let plan = Box::new(Plan {
        target: Slot::B,
        signed: signed(packed(2)),
        tries: 3,
    });
    let steps: Vec<Action> = STEPS
        .iter()
        .map(|&step| Action::Install {
            plan: plan.clone(),
            step,
        })
        .collect();
    assert_eq!(actions[2..], steps[..]);
    assert_eq!(last, Action::Finish(Outcome::Installed(plan.clone())));
    // No signing time or expiry to remember.
    let offered = plan.latest();
    assert_eq!(
        (offered.version, offered.signed_at, offered.expires),
        (2, None, None)
    );

    // An air-gapped host (no channel) takes it too.
    let air_gapped = Setup {
        device: Device {
            channel: None,
            ..setup(Mode::Bundle).device
        },
        ..setup(Mode::Bundle)
    };
    let (_, next) = drive(air_gapped, vec![disk_event(installed()), latest(packed(2))]);
    assert!(
        matches!(
            next,
            Action::Install {
                step: Step::FetchIndex,
                ..
            }
        ),
        "{next:?}"
    );
}

#[test]
fn a_bundle_meets_every_rule_of_a_bucket_update_but_the_channel_less_meta() {
    let run = |setup: Setup, status: BootStatus, meta: Meta| {
        outcome(setup, vec![disk_event(status), latest(meta)])
    };
    let bundle = || setup(Mode::Bundle);
    // A published meta must be for this host's channel, and fresh.
    assert_eq!(
        run(bundle(), installed(), {
            let mut meta = meta(2);
            meta.published.as_mut().unwrap().channel = "beta".into();
            meta
        }),
        Outcome::Unfit(Unfit::OtherChannel {
            version: 2,
            channel: "beta".into()
        })
    );
    let air_gapped = Setup {
        device: Device {
            channel: None,
            ..bundle().device
        },
        ..bundle()
    };
    assert!(matches!(
        run(air_gapped, installed(), meta(2)),
        Outcome::Unfit(Unfit::OtherChannel { .. })
    ));
    let late = Setup {
        clock: clock(expires() + chrono::Duration::seconds(1), true).clock,
        ..bundle()
    };
    assert!(matches!(
        run(late.clone(), installed(), meta(2)),
        Outcome::Stale { .. }
    ));
    // A meta signed for no channel carries no expiry: a clock far ahead
    // (or behind) cannot refuse it.
    assert!(matches!(
        drive(late, vec![disk_event(installed()), latest(packed(2))]).1,
        Action::Install { .. }
    ));
    // The architecture, the floor, the failed versions and the booted
    // version are the bucket's rules.
    let mut aarch64 = packed(2);
    aarch64.arch = Arch::Aarch64;
    assert!(matches!(
        run(bundle(), installed(), aarch64),
        Outcome::Unfit(Unfit::OtherArch { .. })
    ));
    let newer_waits = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 3 }, Some(3)),
        Slot::B,
    );
    assert!(matches!(
        run(bundle(), newer_waits, packed(2)),
        Outcome::Skipped {
            reason: Skip::NotNewer {
                floor: 3,
                slot: Slot::B
            },
            ..
        }
    ));
    assert!(matches!(
        run(bundle(), installed(), packed(1)),
        Outcome::UpToDate { .. }
    ));
    let failed = Setup {
        failed: vec![failed_version(7, id(2))],
        ..bundle()
    };
    assert!(matches!(
        run(failed, installed(), packed(2)),
        Outcome::Skipped {
            reason: Skip::FailedBefore { .. },
            ..
        }
    ));
    // A bundle that cannot be read says so.
    let unreadable = outcome(
        bundle(),
        vec![disk_event(installed()), Event::Failed("is missing".into())],
    );
    assert!(
        unreadable
            .to_string()
            .starts_with("failed reading the bundle: is missing"),
        "{unreadable}"
    );
    // And update still refuses a bundle's meta put in the bucket.
    assert_eq!(
        run(setup(Mode::Update), installed(), packed(2)),
        Outcome::Unfit(Unfit::NotPublished { version: 2 })
    );
}

fn clock(now: DateTime<Utc>, trusted: bool) -> Setup {
    Setup {
        clock: Clock {
            now,
            trusted,
            newest_signed: None,
        },
        ..setup(Mode::Check)
    }
}

/// An expired meta is refused: the channel is stale; the device keeps what
/// it runs. Without a trusted clock only signing times it has verified
/// tell the time.
#[test]
fn an_expired_meta_makes_the_channel_stale() {
    let after = expires() + chrono::Duration::seconds(1);
    let stale = outcome(
        clock(after, true),
        vec![disk_event(installed()), latest(meta(2))],
    );
    assert_eq!(
        stale,
        Outcome::Stale {
            latest: latest_of(2),
            signed_at: signed_at(),
            expires: expires(),
            running: 1
        }
    );
    assert!(stale.is_error());
    assert!(
        stale.to_string().starts_with(
            "refused version 2: the channel is stale, its meta expired 2027-02-14 08:00:00 UTC"
        ),
        "{stale}"
    );
    // Recorded as the latest known, with its expiry: status says since when.
    let mut state = State::default();
    stale.record(after, &mut state);
    assert_eq!(state.latest.unwrap().expires, Some(expires()));

    // An untrusted clock: the same wall time proves nothing...
    let untrusted = outcome(
        clock(after, false),
        vec![disk_event(installed()), latest(meta(2))],
    );
    assert!(
        matches!(untrusted, Outcome::WouldInstall(_)),
        "{untrusted:?}"
    );
    // ... but a slot's meta signed after the expiry does.
    let kept = DiskState {
        kept: [
            KeptMeta::Signed {
                version: 1,
                signed_at: Some(after),
                signers: Vec::new(),
                image: Digest::of(b"image"),
            },
            KeptMeta::Unsigned,
        ],
        ..DiskState::unsigned(installed())
    };
    let stale = outcome(
        clock(signed_at(), false),
        vec![Event::Disk(Box::new(kept)), latest(meta(2))],
    );
    assert!(matches!(stale, Outcome::Stale { .. }), "{stale:?}");
    // So does one the state file remembers.
    let remembered = Setup {
        clock: Clock {
            now: signed_at(),
            trusted: false,
            newest_signed: Some(after),
        },
        ..setup(Mode::Update)
    };
    let stale = outcome(remembered, vec![disk_event(installed()), latest(meta(2))]);
    assert!(matches!(stale, Outcome::Stale { .. }), "{stale:?}");
}

#[test]
fn the_clock_is_never_earlier_than_the_newest_signing() {
    let t = |s| DateTime::from_timestamp(s, 0).unwrap();
    let trusted = Clock {
        now: t(100),
        trusted: true,
        newest_signed: Some(t(50)),
    };
    assert_eq!(trusted.now(None), Some(t(100)));
    assert_eq!(trusted.now(Some(t(200))), Some(t(200)));
    let untrusted = Clock {
        trusted: false,
        ..trusted
    };
    assert_eq!(untrusted.now(None), Some(t(50)));
    assert_eq!(untrusted.now(Some(t(70))), Some(t(70)));
    let nothing = Clock {
        newest_signed: None,
        ..untrusted
    };
    assert_eq!(nothing.now(None), None);
}

/// The rollback floor is the highest version the slots hold, not only the
/// booted one: a newer version waiting for its reboot is never replaced by
/// an older one.
#[test]
fn a_version_waiting_for_its_reboot_raises_the_floor() {
    let pending_v3 = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 3 }, Some(3)),
        Slot::B,
    );
    let older = outcome(
        setup(Mode::Update),
        vec![disk_event(pending_v3.clone()), latest(meta(2))],
    );
    assert_eq!(
        older,
        Outcome::Skipped {
            latest: latest_of(2),
            reason: Skip::NotNewer {
                floor: 3,
                slot: Slot::B
            }
        }
    );
    assert_eq!(
        older.to_string(),
        "ignored version 2: not newer than version 3 in slot b (versions never go back)"
    );
    // A version whose trial failed does not hold the floor up.
    let failed_v3 = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 0 }, Some(3)),
        Slot::A,
    );
    let recorded = DiskState {
        failed: vec![failed_version(3, id(3))],
        ..DiskState::unsigned(failed_v3)
    };
    assert!(matches!(
        outcome(
            setup(Mode::Check),
            vec![Event::Disk(Box::new(recorded)), latest(meta(2))]
        ),
        Outcome::WouldInstall(_)
    ));
}

/// A slot's meta counts by the keys that signed it: once those are revoked
/// (here by the candidate, signed by a recovery key), its version no longer
/// holds the floor up, and the candidate's revocations are recorded first.
#[test]
fn revoked_signers_lower_the_floor() {
    let stolen = SecretKey::generate("stolen").unwrap().public();
    let booted_huge = boot_status(
        slot(Slot::A, SlotState::Bad, None),
        slot(Slot::B, SlotState::Good, Some(u64::MAX)),
        Slot::B,
    );
    let disk = DiskState {
        kept: [
            KeptMeta::Unsigned,
            KeptMeta::Signed {
                version: u64::MAX,
                signed_at: None,
                signers: vec![stolen.clone()],
                image: Digest::of(b"image"),
            },
        ],
        ..DiskState::unsigned(booted_huge)
    };
    let from_b = || Setup {
        booted: Slot::B,
        ..setup(Mode::Update)
    };
    let plain = outcome(
        from_b(),
        vec![Event::Disk(Box::new(disk.clone())), latest(meta(3))],
    );
    assert!(
        matches!(
            &plain,
            Outcome::Skipped {
                reason: Skip::NotNewer {
                    floor: u64::MAX,
                    ..
                },
                ..
            }
        ),
        "{plain:?}"
    );

    let mut recovery = meta(3);
    recovery.published.as_mut().unwrap().revoked_keys = vec![stolen.to_string()];
    let (actions, next) = drive(
        from_b(),
        vec![
            Event::Disk(Box::new(disk.clone())),
            latest(recovery.clone()),
            Event::Revoked,
        ],
    );
    assert_eq!(actions[2], Action::RecordRevocations(vec![stolen.clone()]));
    assert!(
        matches!(&next, Action::Install { plan, step: Step::FetchIndex } if plan.target == Slot::A),
        "{next:?}"
    );

    // Recorded already (or revoked otherwise): nothing to record again.
    let revoked = DiskState {
        revoked: vec![stolen],
        ..disk
    };
    let (actions, next) = drive(
        from_b(),
        vec![Event::Disk(Box::new(revoked)), latest(recovery)],
    );
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(matches!(next, Action::Install { .. }), "{next:?}");
}

/// A damaged or unverifiable copy leaves the slot file's version standing;
/// a void one counts for nothing.
#[test]
fn kept_metas_and_the_floor() {
    let both = boot_status(
        slot(Slot::A, SlotState::Good, Some(5)),
        slot(Slot::B, SlotState::Good, Some(7)),
        Slot::A,
    );
    let floor = |kept_b| {
        let disk = DiskState {
            kept: [KeptMeta::Unsigned, kept_b],
            ..DiskState::unsigned(both.clone())
        };
        rollback_floor(&disk, Some(Slot::A))
    };
    assert_eq!(floor(KeptMeta::Unsigned), Some((7, Slot::B)));
    assert_eq!(
        floor(KeptMeta::Void {
            reason: "revoked".into()
        }),
        Some((5, Slot::A))
    );
}

/// `meta(version)` staged over ten days from its signing, maybe halted.
fn staged(version: u64, halted_at: Option<DateTime<Utc>>) -> Meta {
    let mut meta = meta(version);
    let published = meta.published.as_mut().unwrap();
    published.rollout = Some(Rollout {
        start: signed_at(),
        over_secs: 10 * 24 * 3600,
        halted_at,
    });
    meta.format = Publication::format(Some(published));
    meta
}

/// The tests' host with the clock at `now` (trusted or not), and its turn
/// in `staged(2, None)`.
fn host_at(now: DateTime<Utc>, trusted: bool) -> (Setup, DateTime<Utc>) {
    let setup = Setup {
        clock: Clock {
            now,
            trusted,
            newest_signed: None,
        },
        ..setup(Mode::Check)
    };
    let rollout = staged(2, None).published.unwrap().rollout.unwrap();
    let turn = rollout.turn(rollout_place(setup.machine_id.as_ref(), 2));
    (setup, turn)
}

fn rollout_outcome(setup: Setup, meta: Meta) -> Outcome {
    outcome(setup, vec![disk_event(installed()), latest(meta)])
}

#[test]
fn a_staged_version_is_installed_once_the_rollout_reaches_the_host() {
    let (early, turn) = host_at(signed_at(), true);
    assert!(turn > signed_at() && turn < signed_at() + chrono::Duration::days(10));
    let waiting = rollout_outcome(early, staged(2, None));
    let Outcome::Waiting {
        latest: seen,
        admission,
        machine_id,
    } = &waiting
    else {
        panic!("{waiting:?}")
    };
    assert_eq!(*admission, Admission::Waiting { turn });
    assert!(machine_id);
    assert_eq!(seen.rollout, staged(2, None).published.unwrap().rollout);
    assert!(!waiting.is_error());
    assert!(
        waiting.to_string().contains(&format!(
            "reaches this host at {}",
            turn.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        "{waiting}"
    );
    // Recorded, so that status can say when the turn comes.
    let mut state = State::default();
    waiting.record(signed_at(), &mut state);
    assert_eq!(state.latest.unwrap().rollout, seen.rollout);
    assert_eq!(state.last_error, None);

    // A second before its turn it still waits; at its turn it goes.
    let (before, _) = host_at(turn - chrono::Duration::seconds(1), true);
    assert!(matches!(
        rollout_outcome(before, staged(2, None)),
        Outcome::Waiting { .. }
    ));
    let (at_turn, _) = host_at(turn, true);
    assert!(matches!(
        rollout_outcome(at_turn, staged(2, None)),
        Outcome::WouldInstall(_)
    ));
    // The same host, the same decision, every run.
    let (again, _) = host_at(turn, true);
    assert!(matches!(
        rollout_outcome(again, staged(2, None)),
        Outcome::WouldInstall(_)
    ));
    // update installs it.
    let (update, _) = host_at(turn, true);
    let update = Setup {
        mode: Mode::Update,
        ..update
    };
    let (_, action) = drive(
        update,
        vec![disk_event(installed()), latest(staged(2, None))],
    );
    assert!(
        matches!(
            action,
            Action::Install {
                step: Step::FetchIndex,
                ..
            }
        ),
        "{action:?}"
    );
}

#[test]
fn a_host_without_a_machine_id_comes_last() {
    let (setup, _) = host_at(signed_at() + chrono::Duration::days(9), true);
    let nameless = Setup {
        machine_id: None,
        ..setup
    };
    let waiting = rollout_outcome(nameless.clone(), staged(2, None));
    assert_eq!(
        waiting,
        Outcome::Waiting {
            latest: Latest {
                rollout: staged(2, None).published.unwrap().rollout,
                ..latest_of(2)
            },
            admission: Admission::Waiting {
                turn: signed_at() + chrono::Duration::days(10)
            },
            machine_id: false,
        }
    );
    assert!(
        waiting.to_string().contains("no usable machine id"),
        "{waiting}"
    );
    let end = Setup {
        clock: Clock {
            now: signed_at() + chrono::Duration::days(10),
            ..nameless.clock
        },
        ..nameless
    };
    assert!(matches!(
        rollout_outcome(end, staged(2, None)),
        Outcome::WouldInstall(_)
    ));
}

/// A clock that is not trusted never lets a host in before its turn: only
/// a signing time at or after the turn does (a meta signed again later, a
/// slot's, the state file's). A trusted clock before the start waits.
#[test]
fn an_untrusted_clock_waits_for_a_signing_time_past_the_turn() {
    let (_, turn) = host_at(signed_at(), true);
    let (untrusted, _) = host_at(turn + chrono::Duration::days(30), false);
    assert!(matches!(
        rollout_outcome(untrusted.clone(), staged(2, None)),
        Outcome::Waiting { .. }
    ));
    // The same meta signed again after the turn (publish --resign).
    let mut resigned = staged(2, None);
    resigned.published.as_mut().unwrap().signed_at = turn;
    assert!(matches!(
        rollout_outcome(untrusted.clone(), resigned),
        Outcome::WouldInstall(_)
    ));
    let remembered = Setup {
        clock: Clock {
            newest_signed: Some(turn),
            ..untrusted.clock
        },
        ..untrusted
    };
    assert!(matches!(
        rollout_outcome(remembered, staged(2, None)),
        Outcome::WouldInstall(_)
    ));
    let (behind, _) = host_at(signed_at() - chrono::Duration::days(400), true);
    assert!(matches!(
        rollout_outcome(behind, staged(2, None)),
        Outcome::Waiting { .. }
    ));
}

#[test]
fn a_halted_rollout_lets_no_new_host_in_and_keeps_those_that_are() {
    // Halted an hour after this host's turn came, before it installed:
    // it does not start, not even ten days after the end.
    let (_, turn) = host_at(signed_at(), true);
    let halted_at = turn + chrono::Duration::hours(1);
    let halted = || staged(2, Some(halted_at));
    let (first, _) = host_at(signed_at() + chrono::Duration::days(20), true);
    let out = rollout_outcome(first, halted());
    assert!(
        matches!(out, Outcome::Waiting { admission: Admission::Halted { at }, .. } if at == halted_at),
        "{out:?}"
    );
    assert!(out.to_string().contains("rollout was halted at"), "{out}");
    // A host that installed it: waiting for its reboot, or running it.
    let (host, _) = host_at(halted_at + chrono::Duration::days(1), true);
    let pending = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 3 }, Some(2)),
        Slot::B,
    );
    assert!(matches!(
        outcome(host.clone(), vec![disk_event(pending), latest(halted())]),
        Outcome::PendingTrial { .. }
    ));
    let running = boot_status(
        slot(Slot::A, SlotState::Good, Some(2)),
        slot(Slot::B, SlotState::Good, Some(1)),
        Slot::A,
    );
    assert!(matches!(
        outcome(host, vec![disk_event(running), latest(halted())]),
        Outcome::UpToDate { .. }
    ));
}

/// `publish --revert-to 1` as version 3: the content of version 1 under a
/// new number. A host on 2 moves forward to it; one that still runs 1 is
/// up to date (not an error); one that failed version 1 does not take it
/// again.
#[test]
fn a_reverted_version_moves_hosts_forward_and_never_retries_a_failure() {
    let revert = meta_with(3, id(1), 8 * MIB);
    let on_2 = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Good, Some(2)),
        Slot::B,
    );
    let forward = Setup {
        booted: Slot::B,
        ..setup(Mode::Check)
    };
    let out = outcome(forward, vec![disk_event(on_2), latest(revert.clone())]);
    let Outcome::WouldInstall(plan) = &out else {
        panic!("{out:?}")
    };
    assert_eq!((plan.target, plan.meta().id), (Slot::A, id(1)));

    let kept_1 = DiskState {
        kept: [
            KeptMeta::Signed {
                version: 1,
                signed_at: None,
                signers: Vec::new(),
                image: revert.image.sha256,
            },
            KeptMeta::Unsigned,
        ],
        ..DiskState::unsigned(installed())
    };
    let runs_it = outcome(
        setup(Mode::Check),
        vec![
            Event::Disk(Box::new(kept_1.clone())),
            latest(revert.clone()),
        ],
    );
    assert_eq!(
        runs_it,
        Outcome::Skipped {
            latest: latest_of(3),
            reason: Skip::SameImageAsBooted { running: 1 }
        }
    );
    assert!(!runs_it.is_error());
    // The same id with another image stays a packaging error.
    let mut other_image = revert.clone();
    other_image.image.sha256 = Digest::of(b"another image");
    assert!(matches!(
        outcome(
            setup(Mode::Check),
            vec![Event::Disk(Box::new(kept_1)), latest(other_image)]
        ),
        Outcome::Skipped {
            reason: Skip::SameIdAsBooted { .. },
            ..
        }
    ));
    // Failed as version 1 (recorded by number and id): never again.
    let on_2_failed_1 = Setup {
        booted: Slot::B,
        failed: vec![failed_version(1, id(1))],
        ..setup(Mode::Check)
    };
    let on_2 = boot_status(
        slot(Slot::A, SlotState::Bad, None),
        slot(Slot::B, SlotState::Good, Some(2)),
        Slot::B,
    );
    assert!(matches!(
        outcome(on_2_failed_1, vec![disk_event(on_2), latest(revert)]),
        Outcome::Skipped {
            reason: Skip::FailedBefore { .. },
            ..
        }
    ));
}
