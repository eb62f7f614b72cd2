//! Every transition of the update cycle, driven by hand-made events.

use super::*;
use crate::boot::SlotStatus;
use crate::digest::Digest;
use crate::meta::{object_name, Artifact, FsType, Image, ObjectKind, FORMAT_VERSION};
use crate::sign::SecretKey;

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
    }
}

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
    let mut events = vec![Event::BootStatus(installed()), latest(meta(2))];
    events.extend(STEPS.iter().map(|_| Event::StepDone));
    let (actions, last) = drive(setup(Mode::Update), events);
    let mut expected = vec![Action::ReadBootStatus, Action::FetchLatest];
    expected.extend(STEPS.iter().map(|&step| Action::Install {
        plan: plan(2, Slot::B),
        step,
    }));
    assert_eq!(actions, expected);
    assert_eq!(last, Action::Finish(Outcome::Installed(plan(2, Slot::B))));
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
        outcome(setup, vec![Event::BootStatus(status), latest(meta(5))]),
        Outcome::WouldInstall(plan(5, Slot::A))
    );
}

#[test]
fn check_stops_where_an_update_would_start_installing() {
    let (actions, last) = drive(
        setup(Mode::Check),
        vec![Event::BootStatus(installed()), latest(meta(2))],
    );
    assert_eq!(actions, vec![Action::ReadBootStatus, Action::FetchLatest]);
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
        let (actions, last) = drive(setup(Mode::Update), vec![Event::BootStatus(status)]);
        assert_eq!(actions, vec![Action::ReadBootStatus]);
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
        outcome(setup(Mode::Update), vec![Event::BootStatus(status)]),
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
            Event::BootStatus(status.clone()),
            Event::Recorded(Box::new(record)),
            latest(meta(2)),
        ],
    );
    assert_eq!(
        actions,
        vec![
            Action::ReadBootStatus,
            Action::RecordFailedTrial {
                trial: Slot::B,
                info: info(2)
            },
            Action::FetchLatest,
        ]
    );
    let Action::Finish(Outcome::Skipped {
        latest: 2,
        reason: Skip::FailedBefore { reason },
    }) = last
    else {
        panic!("expected the failed version to be skipped, got {last:?}");
    };
    assert!(reason.contains("its trial in slot b failed"), "{reason}");

    // Recorded once: the next run goes straight to the bucket.
    let known = Setup {
        failed: vec![failed_version(2, id(2))],
        ..setup(Mode::Update)
    };
    let (_, next) = drive(known, vec![Event::BootStatus(status)]);
    assert_eq!(next, Action::FetchLatest);
}

#[test]
fn a_newer_version_than_the_failed_one_is_installed() {
    let status = boot_status(
        slot(Slot::A, SlotState::Good, Some(1)),
        slot(Slot::B, SlotState::Trial { tries_left: 0 }, Some(2)),
        Slot::A,
    );
    let known = Setup {
        failed: vec![failed_version(2, id(2))],
        ..setup(Mode::Check)
    };
    assert_eq!(
        outcome(known, vec![Event::BootStatus(status), latest(meta(3))]),
        Outcome::WouldInstall(plan(3, Slot::B))
    );
}

#[test]
fn versions_that_are_not_installed_and_why() {
    let decide = |setup: Setup, status: BootStatus, meta: Meta| {
        outcome(setup, vec![Event::BootStatus(status), latest(meta)])
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
            latest: 3,
            reason: Skip::Older { booted: 5 }
        }
    );
    assert!(!older.is_error());

    let same = decide(setup(Mode::Update), booted_v5.clone(), meta(5));
    assert_eq!(same, Outcome::UpToDate { version: 5 });

    let reused_id = decide(
        setup(Mode::Update),
        booted_v5.clone(),
        meta_with(6, id(5), MIB),
    );
    assert_eq!(
        reused_id,
        Outcome::Skipped {
            latest: 6,
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
                latest: 6,
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
            latest: 6,
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
        vec![Event::BootStatus(pending.clone()), latest(meta(2))],
    );
    assert_eq!(
        done,
        Outcome::PendingTrial {
            slot: Slot::B,
            version: 2
        }
    );
    assert_eq!(done.reboot_pending(), Some((Slot::B, 2)));

    // A newer version replaces the pending one.
    let (_, next) = drive(
        setup(Mode::Update),
        vec![Event::BootStatus(pending), latest(meta(3))],
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
    let (_, next) = drive(
        setup(Mode::Update),
        vec![Event::BootStatus(torn), latest(meta(2))],
    );
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
    let mut events = vec![Event::BootStatus(installed())];
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
            Event::BootStatus(installed()),
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
            Event::BootStatus(installed()),
            Event::Failed("the channel's meta: signed by an unknown key".into()),
        ],
    );
    assert_eq!(failed.latest(), None);
    assert_eq!(
        failed.to_string(),
        "failed fetching the channel's meta: the channel's meta: signed by an unknown key"
    );

    let mut events = vec![Event::BootStatus(installed()), latest(meta(2))];
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
            latest: Some(2),
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
            Event::BootStatus(status),
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

    assert_eq!(state.latest, Some(LatestSeen { version: 2, at }));

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
        Some(LatestSeen { version: 2, at }),
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
    Outcome::UpToDate { version: 7 }.record(at, &mut state);
    assert_eq!(state.last_check.unwrap().latest, Some(7));
    assert_eq!(state.last_error, None);
}
