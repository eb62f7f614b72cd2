//! The update cycle as an explicit state machine, in the style of zincati's
//! update agent: a [`Machine`] says which [`Action`] to perform next, the
//! executor ([`super::run`]) performs it and reports the result as an
//! [`Event`], and [`Machine::advance`] computes the next [`Cycle`] from the
//! event alone. Transitions do no I/O and read no clock, so every one of
//! them is unit-tested here, without disks or network.
//!
//! The cycle, in order (DESIGN §5, issue 5):
//!
//! 1. read the boot state; the health gate: the booted slot must be good
//!    (no update from a trial boot that has not been marked good);
//! 2. remember a failed trial of the other slot (it fell back) as a failed
//!    version, so it is never installed again;
//! 3. fetch and verify the channel's latest meta, waiting for the network
//!    with bounded backoff while it is unreachable;
//! 4. decide: nothing to do when the version is not newer than the booted
//!    one, failed before, is the booted version's id, does not fit the
//!    slot, or already waits in the other slot as its pending trial;
//! 5. install, stopping at the first failure: fetch the index, check that
//!    the ESP takes the boot files (before anything changes), mark the
//!    other slot bad, write and verify the image, write the boot files,
//!    activate the slot as the trial that boots next.
//!
//! The run ends in an [`Outcome`], which says what to record in the state
//! file and how the command exits; the reboot that follows an install is
//! the caller's (see [`super::restart`]).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::boot::{BootStatus, SlotInfo, SlotState};
use crate::meta::{Meta, SignedMeta};
use crate::slot::Slot;
use crate::state::{CheckRecord, ErrorRecord, FailedVersion, LatestSeen, State};

/// `check` stops where `update` would start installing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Update,
}

/// How long to wait for an unreachable bucket: exponential backoff from
/// `first_delay`, each delay at most `max_delay`, all of them together at
/// most `budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkWait {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub budget: Duration,
}

impl NetworkWait {
    /// The device default: the timer unit starts the updater after
    /// network-online.target, so the network is usually up; five minutes
    /// covers a slow DHCP or a link that flaps at boot.
    pub const DEFAULT: NetworkWait = NetworkWait {
        first_delay: Duration::from_secs(5),
        max_delay: Duration::from_secs(60),
        budget: Duration::from_secs(300),
    };

    /// The delay before another attempt, after `attempts` failed ones and
    /// `waited` spent waiting; `None` once the budget is spent.
    pub fn delay(&self, attempts: u32, waited: Duration) -> Option<Duration> {
        let left = self.budget.checked_sub(waited).filter(|d| !d.is_zero())?;
        let exponent = attempts.saturating_sub(1).min(16);
        let delay = self
            .first_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay)
            .min(left);
        Some(delay)
    }
}

/// What a run starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub mode: Mode,
    pub booted: Slot,
    /// Versions that failed before (the state file's list).
    pub failed: Vec<FailedVersion>,
    /// Size of each slot, in bytes.
    pub slot_size: u64,
    /// Boot attempts of the new trial.
    pub tries: u8,
    pub network: NetworkWait,
}

/// The steps of an install, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    FetchIndex,
    CheckBootFiles,
    MarkBad,
    WriteImage,
    WriteBootFiles,
    Activate,
}

impl Step {
    fn next(self) -> Option<Step> {
        match self {
            Step::FetchIndex => Some(Step::CheckBootFiles),
            Step::CheckBootFiles => Some(Step::MarkBad),
            Step::MarkBad => Some(Step::WriteImage),
            Step::WriteImage => Some(Step::WriteBootFiles),
            Step::WriteBootFiles => Some(Step::Activate),
            Step::Activate => None,
        }
    }

    /// What the step does, for logs, STATUS= and errors.
    pub fn describe(self, plan: &Plan) -> String {
        let (slot, version) = (plan.target, plan.meta().version);
        match self {
            Step::FetchIndex => format!("fetching the chunk index of version {version}"),
            Step::CheckBootFiles => {
                format!("checking that the ESP takes the boot files of version {version}")
            }
            Step::MarkBad => format!("marking slot {slot} bad"),
            Step::WriteImage => format!("writing the image of version {version} into slot {slot}"),
            Step::WriteBootFiles => {
                format!("writing the boot files of version {version} for slot {slot}")
            }
            Step::Activate => format!("activating slot {slot} as the trial that boots next"),
        }
    }
}

/// A version to install and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub target: Slot,
    pub signed: SignedMeta,
    pub tries: u8,
}

impl Plan {
    pub fn meta(&self) -> &Meta {
        self.signed.meta()
    }

    /// The slot information its boot files carry.
    pub fn slot_info(&self) -> SlotInfo {
        SlotInfo::of(self.meta())
    }
}

/// Why no update is attempted from this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `abnix.slot=` is missing or does not match the root.
    BootedUnknown(String),
    /// The booted slot's boot files are gone (its version is unknown).
    BootedIncomplete(Slot),
    /// The health gate: the booted slot is on trial (or came up through the
    /// bootloader's rescue path) and has not been marked good.
    NotGood { slot: Slot, state: SlotState },
}

/// Why the channel's latest version is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Older than the booted version: the anti-rollback order refuses it.
    Older { booted: u64 },
    /// Newer, but with the booted version's id: both slots would hold a
    /// root with the same filesystem UUID.
    SameIdAsBooted { id: Uuid },
    /// It fell back (or was rolled back) before.
    FailedBefore { reason: String },
    /// Its image is larger than a slot.
    TooLarge { image: u64, slot_size: u64 },
}

/// Where a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Opening the disk or reading the boot state.
    Disk,
    /// Writing the state file.
    State,
    /// The bucket stayed unreachable for the whole network wait.
    Network,
    /// Fetching or verifying the channel's meta.
    Meta,
    Install {
        step: Step,
        plan: Box<Plan>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    /// The channel's latest version, when the meta was verified.
    pub latest: Option<u64>,
    pub error: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Refused(Refusal),
    /// The channel's latest version is the booted one.
    UpToDate {
        version: u64,
    },
    Skipped {
        latest: u64,
        reason: Skip,
    },
    /// The latest version waits in the other slot for its trial, which the
    /// next boot starts.
    PendingTrial {
        slot: Slot,
        version: u64,
    },
    /// `check`: an update would install this.
    WouldInstall(Box<Plan>),
    /// `update`: installed; the slot boots next on trial.
    Installed(Box<Plan>),
    Failed(Failure),
}

impl Outcome {
    /// The channel's latest version, if this run verified its meta.
    pub fn latest(&self) -> Option<u64> {
        match self {
            Outcome::Refused(_) => None,
            Outcome::UpToDate { version } => Some(*version),
            Outcome::Skipped { latest, .. } => Some(*latest),
            Outcome::PendingTrial { version, .. } => Some(*version),
            Outcome::WouldInstall(plan) | Outcome::Installed(plan) => Some(plan.meta().version),
            Outcome::Failed(failure) => failure.latest,
        }
    }

    /// Whether this needs a human: the updater cannot make progress by
    /// itself (as opposed to "nothing new", or a version it is right to
    /// ignore).
    pub fn is_error(&self) -> bool {
        match self {
            Outcome::Refused(_) | Outcome::Failed(_) => true,
            Outcome::Skipped { reason, .. } => {
                matches!(reason, Skip::SameIdAsBooted { .. } | Skip::TooLarge { .. })
            }
            Outcome::UpToDate { .. }
            | Outcome::PendingTrial { .. }
            | Outcome::WouldInstall(_)
            | Outcome::Installed(_) => false,
        }
    }

    /// Whether a new version waits for a reboot after this run.
    pub fn reboot_pending(&self) -> Option<(Slot, u64)> {
        match self {
            Outcome::Installed(plan) => Some((plan.target, plan.meta().version)),
            Outcome::PendingTrial { slot, version } => Some((*slot, *version)),
            _ => None,
        }
    }

    /// Records the run in the state: the last check always, the channel's
    /// latest version when this run verified it, the last error when it is
    /// one.
    pub fn record(&self, at: DateTime<Utc>, state: &mut State) {
        let result = self.to_string();
        let latest = self.latest();
        state.last_check = Some(CheckRecord {
            at,
            latest,
            result: result.clone(),
        });
        if let Some(version) = latest {
            state.latest = Some(LatestSeen { version, at });
        }
        if self.is_error() {
            state.last_error = Some(ErrorRecord {
                at,
                message: result,
            });
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Refused(Refusal::BootedUnknown(why)) => {
                write!(f, "refused: the booted slot is not known: {why}")
            }
            Outcome::Refused(Refusal::BootedIncomplete(slot)) => write!(
                f,
                "refused: the booted slot {slot} has no complete boot files, so its version is unknown"
            ),
            Outcome::Refused(Refusal::NotGood { slot, state }) => write!(
                f,
                "refused: the booted slot {slot} is {} and not marked good yet; updates wait for mark-good",
                super::state_name(*state)
            ),
            Outcome::UpToDate { version } => write!(f, "up to date (version {version})"),
            Outcome::Skipped { latest, reason } => match reason {
                Skip::Older { booted } => write!(
                    f,
                    "ignored version {latest}: older than the booted version {booted} (versions never go back)"
                ),
                Skip::SameIdAsBooted { id } => write!(
                    f,
                    "refused version {latest}: its id {id} is the booted version's; every version needs a new id"
                ),
                Skip::FailedBefore { reason } => write!(
                    f,
                    "ignored version {latest}: it failed before ({reason}); waiting for a newer version"
                ),
                Skip::TooLarge { image, slot_size } => write!(
                    f,
                    "refused version {latest}: its image is {image} bytes, a slot holds {slot_size}"
                ),
            },
            Outcome::PendingTrial { slot, version } => write!(
                f,
                "version {version} is installed in slot {slot} and boots at the next reboot"
            ),
            Outcome::WouldInstall(plan) => write!(
                f,
                "version {} \"{}\" is available: an update would install it into slot {} ({} bytes to download)",
                plan.meta().version,
                plan.meta().label,
                plan.target,
                plan.meta().image.compressed_size + plan.meta().kernel.size + plan.meta().initrd.size
            ),
            Outcome::Installed(plan) => write!(
                f,
                "installed version {} \"{}\" into slot {}; it boots next, on trial ({} tries)",
                plan.meta().version, plan.meta().label, plan.target, plan.tries
            ),
            Outcome::Failed(failure) => {
                let stage = match &failure.stage {
                    Stage::Disk => "reading the disk".to_owned(),
                    Stage::State => "writing the state".to_owned(),
                    Stage::Network => "waiting for the network".to_owned(),
                    Stage::Meta => "fetching the channel's meta".to_owned(),
                    Stage::Install { step, plan } => step.describe(plan),
                };
                write!(f, "failed {stage}: {}", failure.error)
            }
        }
    }
}

/// The failed-version record of a trial in slot `trial` that fell back to
/// the other slot.
pub fn failed_trial_record(trial: Slot, info: &SlotInfo, at: DateTime<Utc>) -> FailedVersion {
    FailedVersion {
        version: info.version,
        id: info.id,
        label: info.label.clone(),
        at,
        reason: format!(
            "its trial in slot {trial} failed: the machine came back on slot {}",
            trial.other()
        ),
    }
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cycle {
    Start,
    RecordingFailedTrial {
        status: BootStatus,
        trial: SlotInfo,
    },
    Fetching {
        status: BootStatus,
        /// Attempts so far, this one excluded.
        attempts: u32,
        waited: Duration,
    },
    WaitingForNetwork {
        status: BootStatus,
        attempts: u32,
        waited: Duration,
        delay: Duration,
    },
    Installing {
        plan: Box<Plan>,
        step: Step,
    },
    Done(Outcome),
}

/// What the executor must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ReadBootStatus,
    /// Add this to the state's failed versions and save the state.
    RecordFailedTrial {
        trial: Slot,
        info: SlotInfo,
    },
    /// Fetch and verify the channel's latest meta.
    FetchLatest,
    Wait(Duration),
    Install {
        plan: Box<Plan>,
        step: Step,
    },
    Finish(Outcome),
}

impl Action {
    /// One line for logs and systemd's STATUS=.
    pub fn describe(&self) -> String {
        match self {
            Action::ReadBootStatus => "reading the boot state".into(),
            Action::RecordFailedTrial { trial, info } => format!(
                "recording version {} (slot {trial}) as failed: its trial fell back",
                info.version
            ),
            Action::FetchLatest => "checking the channel for a new version".into(),
            Action::Wait(delay) => format!(
                "the bucket is unreachable; trying again in {}s",
                delay.as_secs_f32()
            ),
            Action::Install { plan, step } => step.describe(plan),
            Action::Finish(outcome) => outcome.to_string(),
        }
    }
}

/// The result of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    BootStatus(BootStatus),
    /// The failed trial was saved as this record.
    Recorded(Box<FailedVersion>),
    /// The channel's latest meta, verified.
    Latest(Box<SignedMeta>),
    /// The bucket could not be reached (network down, DNS, refused).
    Unreachable(String),
    Waited,
    /// An install step is done.
    StepDone,
    /// The action failed.
    Failed(String),
}

/// A run of the update cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    setup: Setup,
    cycle: Cycle,
}

impl Machine {
    pub fn new(setup: Setup) -> Machine {
        Machine {
            setup,
            cycle: Cycle::Start,
        }
    }

    pub fn cycle(&self) -> &Cycle {
        &self.cycle
    }

    pub fn action(&self) -> Action {
        match &self.cycle {
            Cycle::Start => Action::ReadBootStatus,
            Cycle::RecordingFailedTrial { trial, .. } => Action::RecordFailedTrial {
                trial: self.setup.booted.other(),
                info: trial.clone(),
            },
            Cycle::Fetching { .. } => Action::FetchLatest,
            Cycle::WaitingForNetwork { delay, .. } => Action::Wait(*delay),
            Cycle::Installing { plan, step } => Action::Install {
                plan: plan.clone(),
                step: *step,
            },
            Cycle::Done(outcome) => Action::Finish(outcome.clone()),
        }
    }

    /// The transition: the next cycle, given what the last action produced.
    pub fn advance(mut self, event: Event) -> Machine {
        let cycle = std::mem::replace(&mut self.cycle, Cycle::Start);
        self.cycle = self.next(cycle, event);
        self
    }

    fn failed(stage: Stage, error: String) -> Cycle {
        Cycle::Done(Outcome::Failed(Failure {
            stage,
            latest: None,
            error,
        }))
    }

    fn next(&mut self, cycle: Cycle, event: Event) -> Cycle {
        match (cycle, event) {
            (Cycle::Start, Event::BootStatus(status)) => self.gate(status),
            (Cycle::Start, Event::Failed(error)) => Self::failed(Stage::Disk, error),

            (Cycle::RecordingFailedTrial { status, .. }, Event::Recorded(record)) => {
                // The decision below must see the version as failed too.
                self.setup.failed.push(*record);
                Cycle::Fetching {
                    status,
                    attempts: 0,
                    waited: Duration::ZERO,
                }
            }
            (Cycle::RecordingFailedTrial { .. }, Event::Failed(error)) => {
                Self::failed(Stage::State, error)
            }

            (Cycle::Fetching { status, .. }, Event::Latest(meta)) => self.decide(&status, *meta),
            (
                Cycle::Fetching {
                    status,
                    attempts,
                    waited,
                },
                Event::Unreachable(reason),
            ) => {
                let attempts = attempts + 1;
                match self.setup.network.delay(attempts, waited) {
                    Some(delay) => Cycle::WaitingForNetwork {
                        status,
                        attempts,
                        waited,
                        delay,
                    },
                    None => Self::failed(
                        Stage::Network,
                        format!(
                            "the bucket stayed unreachable ({attempts} attempts over {}s): {reason}",
                            waited.as_secs()
                        ),
                    ),
                }
            }
            (Cycle::Fetching { .. }, Event::Failed(error)) => Self::failed(Stage::Meta, error),

            (
                Cycle::WaitingForNetwork {
                    status,
                    attempts,
                    waited,
                    delay,
                },
                Event::Waited,
            ) => Cycle::Fetching {
                status,
                attempts,
                waited: waited + delay,
            },

            (Cycle::Installing { plan, step }, Event::StepDone) => match step.next() {
                Some(step) => Cycle::Installing { plan, step },
                None => Cycle::Done(Outcome::Installed(plan)),
            },
            (Cycle::Installing { plan, step }, Event::Failed(error)) => {
                Cycle::Done(Outcome::Failed(Failure {
                    latest: Some(plan.meta().version),
                    stage: Stage::Install { step, plan },
                    error,
                }))
            }

            // Each action has its own events: anything else is a bug in
            // the executor, not something a device can meet.
            (cycle, event) => unreachable!("event {event:?} in {cycle:?}"),
        }
    }

    /// The health gate, then the other slot's failed trial.
    fn gate(&self, status: BootStatus) -> Cycle {
        let booted = self.setup.booted;
        let slot = status.slot(booted);
        if slot.info.is_none() {
            return Cycle::Done(Outcome::Refused(Refusal::BootedIncomplete(booted)));
        }
        if slot.state != SlotState::Good {
            return Cycle::Done(Outcome::Refused(Refusal::NotGood {
                slot: booted,
                state: slot.state,
            }));
        }
        let unrecorded_trial = status
            .failed_trial(booted)
            .and_then(|s| s.info.clone())
            .filter(|info| self.has_failed(info.version, info.id).is_none());
        match unrecorded_trial {
            Some(trial) => Cycle::RecordingFailedTrial { status, trial },
            None => Cycle::Fetching {
                status,
                attempts: 0,
                waited: Duration::ZERO,
            },
        }
    }

    fn has_failed(&self, version: u64, id: Uuid) -> Option<&FailedVersion> {
        self.setup
            .failed
            .iter()
            .find(|f| f.version == version || f.id == id)
    }

    /// What to do with the channel's latest version.
    fn decide(&self, status: &BootStatus, signed: SignedMeta) -> Cycle {
        let meta = signed.meta();
        let booted = status.slot(self.setup.booted);
        let running = booted
            .info
            .as_ref()
            .expect("the health gate let only a complete booted slot through");
        let latest = meta.version;
        let skip = |reason| Cycle::Done(Outcome::Skipped { latest, reason });
        if latest < running.version {
            return skip(Skip::Older {
                booted: running.version,
            });
        }
        if latest == running.version {
            return Cycle::Done(Outcome::UpToDate { version: latest });
        }
        if meta.id == running.id {
            return skip(Skip::SameIdAsBooted { id: meta.id });
        }
        if let Some(failed) = self.has_failed(meta.version, meta.id) {
            return skip(Skip::FailedBefore {
                reason: failed.reason.clone(),
            });
        }
        let target = self.setup.booted.other();
        let pending = super::pending_trial(status, self.setup.booted)
            .and_then(|s| s.info.as_ref())
            .is_some_and(|info| info.version == meta.version && info.id == meta.id);
        if pending {
            return Cycle::Done(Outcome::PendingTrial {
                slot: target,
                version: latest,
            });
        }
        if meta.image.size > self.setup.slot_size {
            return skip(Skip::TooLarge {
                image: meta.image.size,
                slot_size: self.setup.slot_size,
            });
        }
        let plan = Box::new(Plan {
            target,
            signed,
            tries: self.setup.tries,
        });
        match self.setup.mode {
            Mode::Check => Cycle::Done(Outcome::WouldInstall(plan)),
            Mode::Update => Cycle::Installing {
                plan,
                step: Step::FetchIndex,
            },
        }
    }
}

#[cfg(test)]
mod tests;
