//! The update cycle as an explicit state machine, in the style of zincati's
//! update agent: a [`Machine`] says which [`Action`] to perform next, the
//! executor ([`super::run`]) performs it and reports the result as an
//! [`Event`], and `Machine::advance` computes the next [`Cycle`] from the
//! event alone. Transitions do no I/O and read no clock, so every one of
//! them is unit-tested here, without disks or network.
//!
//! The cycle, in order (DESIGN §5, issue 5):
//!
//! 1. read the disk ([`DiskState`]: the boot state, each slot's signed meta
//!    kept on the ESP, the failed versions and revoked keys recorded
//!    there); the health gate: the booted slot must be good (no update
//!    from a trial boot that has not been marked good);
//! 2. remember a failed trial of the other slot (it fell back) as a failed
//!    version, on the ESP and in the state file, so it is never installed
//!    again;
//! 3. fetch and verify the channel's latest meta, waiting for the network
//!    with bounded backoff while it is unreachable;
//! 4. decide (docs/security.md): refuse a meta for another channel or
//!    architecture, or one `pack` signed for no channel; record the keys a
//!    recovery key revokes in it; refuse it once expired (the channel is
//!    stale); nothing to do when it is the booted version or already waits
//!    in the other slot as its pending trial, failed before, is not newer
//!    than the rollback floor (the highest version the slots hold, by
//!    their signed metas), is the booted version's id (or its very image,
//!    published again by `publish --revert-to`), or does not fit the slot;
//!    wait while a staged rollout has not reached this host, or was halted
//!    (DESIGN §3, "Staged rollouts");
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

use crate::state_dir::{CheckRecord, ErrorRecord, FailedVersion, LatestSeen, State};
use abnix_core::boot::{state::slot_index, BootStatus, SlotInfo, SlotState};
use abnix_formats::digest::Digest;
use abnix_formats::layout::Arch;
use abnix_formats::machine_id::MachineId;
use abnix_formats::meta::{Meta, Publication, SignedMeta};
use abnix_formats::rollout::{Admission, Place, Rollout};
use abnix_formats::sign::PublicKey;
use abnix_formats::slot::Slot;

/// `check` stops where `update` would start installing; `install
/// --bundle` installs like `update`, from a bundle instead of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Update,
    /// The version on offer is a local bundle's, which its operator chose:
    /// a meta `pack` signed for no channel fits too (docs/cli.md, "install
    /// --bundle"); a published one must still be for this host's channel.
    Bundle,
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
    fn delay(&self, attempts: u32, waited: Duration) -> Option<Duration> {
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
    /// Versions that failed before, as the state file remembers them (the
    /// ESP's record comes with the [`DiskState`]).
    pub failed: Vec<FailedVersion>,
    /// Size of each slot, in bytes.
    pub slot_size: u64,
    /// Boot attempts of the new trial.
    pub tries: u8,
    pub network: NetworkWait,
    /// What a meta must name to be for this device.
    pub device: Device,
    pub clock: Clock,
    /// This host's machine id, which gives its place in staged rollouts;
    /// without one it comes last.
    pub machine_id: Option<MachineId>,
}

/// What a meta must name to be for this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `None` on an air-gapped host (no bucket configured): only a bundle
    /// signed for no channel fits.
    pub channel: Option<String>,
    /// The architecture of its disk's root partitions.
    pub arch: Arch,
}

/// The time a run starts at, and how far it is trusted for expiry
/// (docs/security.md, "Freshness").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now: DateTime<Utc>,
    /// Whether `now` is trusted: the kernel reports the clock synchronized,
    /// or the config says to trust it always.
    pub trusted: bool,
    /// The newest signing time the state file remembers verifying.
    pub newest_signed: Option<DateTime<Utc>>,
}

impl Clock {
    /// What the device takes "now" to be, given the newest signing time it
    /// has verified: never earlier than that, and without a trusted clock,
    /// that alone. `None`: no time known at all.
    pub fn now(&self, newest_signed: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let newest = self.newest_signed.max(newest_signed);
        match self.trusted {
            true => Some(newest.map_or(self.now, |newest| newest.max(self.now))),
            false => newest,
        }
    }
}

/// What the disk holds, as a run reads it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskState {
    pub boot: BootStatus,
    /// Each slot's signed meta kept beside its boot files, as verified with
    /// the device's keys now (indexed like the slots).
    pub(crate) kept: [KeptMeta; 2],
    /// The failed versions recorded on the ESP.
    pub failed: Vec<FailedVersion>,
    /// The keys a recovery key revoked, recorded on the ESP.
    pub(crate) revoked: Vec<PublicKey>,
}

impl DiskState {
    /// A disk whose slots keep no signed meta, and with nothing recorded.
    #[cfg(test)]
    fn unsigned(boot: BootStatus) -> DiskState {
        DiskState {
            boot,
            kept: [KeptMeta::Unsigned, KeptMeta::Unsigned],
            failed: Vec::new(),
            revoked: Vec::new(),
        }
    }

    fn kept(&self, slot: Slot) -> &KeptMeta {
        &self.kept[slot_index(slot)]
    }
}

/// A slot's signed meta kept on the ESP, as it counts for the rollback
/// floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptMeta {
    /// None that can be read (no complete files; files written before
    /// metas were kept; a damaged copy): the slot file's version stands.
    Unsigned,
    /// Verified by these keys, none revoked; the slot file agrees with it.
    Signed {
        version: u64,
        signed_at: Option<DateTime<Utc>>,
        signers: Vec<PublicKey>,
        /// The SHA-256 of its image.
        image: Digest,
    },
    /// Signed only by keys the device does not trust (revoked, or no longer
    /// listed): the slot's version counts for nothing.
    Void { reason: String },
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
    fn describe(self, plan: &Plan) -> String {
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

    /// The channel's latest meta this plan installs.
    pub fn latest(&self) -> Latest {
        Latest::of(self.meta())
    }

    /// The slot information its boot files carry.
    pub(crate) fn slot_info(&self) -> SlotInfo {
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

/// The channel's latest meta (or a bundle's), as verified: its version,
/// when it was signed and expires, and its staged rollout; a meta `pack`
/// signed (a bundle's, for no channel) has none of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub version: u64,
    pub signed_at: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub rollout: Option<Rollout>,
}

impl Latest {
    fn of(meta: &Meta) -> Latest {
        let published = meta.published.as_ref();
        Latest {
            version: meta.version,
            signed_at: published.map(|p| p.signed_at),
            expires: published.map(|p| p.expires),
            rollout: published.and_then(|p| p.rollout),
        }
    }
}

/// This host's place in a version's staged rollout: by its machine id, or
/// last without one.
pub fn rollout_place(machine_id: Option<&MachineId>, version: u64) -> Place {
    machine_id.map_or(Place::LAST, |id| Place::of(id, version))
}

/// Why a meta that verified is not for this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// As `pack` signs it, for no channel: a bundle's meta put in the bucket.
    NotPublished {
        version: u64,
    },
    OtherChannel {
        version: u64,
        channel: String,
    },
    OtherArch {
        version: u64,
        arch: Arch,
    },
}

/// Why the channel's latest version is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not newer than the rollback floor: the highest version a slot holds
    /// (by its signed meta), booted or not. Versions never go back.
    NotNewer { floor: u64, slot: Slot },
    /// Newer, but with the booted version's id: both slots would hold a
    /// root with the same filesystem UUID.
    SameIdAsBooted { id: Uuid },
    /// It fell back (or was rolled back) before.
    FailedBefore { reason: String },
    /// Its image is larger than a slot.
    TooLarge { image: u64, slot_size: u64 },
    /// It is the booted version's very image (same id and SHA-256),
    /// published again under a new number (`publish --revert-to`): this
    /// host runs it already.
    SameImageAsBooted { running: u64 },
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
    /// Reading or verifying the bundle (`install --bundle`).
    Bundle,
    Install {
        step: Step,
        plan: Box<Plan>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    /// The channel's latest meta, when it was verified.
    pub latest: Option<Latest>,
    pub error: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Refused(Refusal),
    /// The channel's meta verified, but is not for this device.
    Unfit(Unfit),
    /// The channel's meta expired: the channel is stale, the device keeps
    /// what it runs.
    Stale {
        latest: Latest,
        /// When it was signed and expired.
        signed_at: DateTime<Utc>,
        expires: DateTime<Utc>,
        /// The booted version.
        running: u64,
    },
    /// The channel's latest version is the booted one.
    UpToDate {
        latest: Latest,
    },
    Skipped {
        latest: Latest,
        reason: Skip,
    },
    /// The latest version waits in the other slot for its trial, which the
    /// next boot starts.
    PendingTrial {
        slot: Slot,
        latest: Latest,
    },
    /// The latest version is staged and its rollout has not reached this
    /// host (`Admission::Waiting`), or was halted before it installed it
    /// (`Admission::Halted`).
    Waiting {
        latest: Latest,
        admission: Admission,
        /// Whether the host has a usable machine id (without one it comes
        /// last).
        machine_id: bool,
    },
    /// `check`: an update would install this.
    WouldInstall(Box<Plan>),
    /// `update`: installed; the slot boots next on trial.
    Installed(Box<Plan>),
    Failed(Failure),
}

impl Outcome {
    /// The channel's latest meta, if this run verified it and it is for
    /// this device.
    pub fn latest(&self) -> Option<Latest> {
        match self {
            Outcome::Refused(_) | Outcome::Unfit(_) => None,
            Outcome::Stale { latest, .. }
            | Outcome::UpToDate { latest }
            | Outcome::Skipped { latest, .. }
            | Outcome::PendingTrial { latest, .. }
            | Outcome::Waiting { latest, .. } => Some(*latest),
            Outcome::WouldInstall(plan) | Outcome::Installed(plan) => Some(plan.latest()),
            Outcome::Failed(failure) => failure.latest,
        }
    }

    /// Whether this needs a human: the updater cannot make progress by
    /// itself (as opposed to "nothing new", or a version it is right to
    /// ignore).
    pub fn is_error(&self) -> bool {
        match self {
            Outcome::Refused(_)
            | Outcome::Unfit(_)
            | Outcome::Stale { .. }
            | Outcome::Failed(_) => true,
            Outcome::Skipped { reason, .. } => {
                matches!(reason, Skip::SameIdAsBooted { .. } | Skip::TooLarge { .. })
            }
            Outcome::UpToDate { .. }
            | Outcome::PendingTrial { .. }
            | Outcome::Waiting { .. }
            | Outcome::WouldInstall(_)
            | Outcome::Installed(_) => false,
        }
    }

    /// Whether a new version waits for a reboot after this run.
    pub fn reboot_pending(&self) -> Option<(Slot, u64)> {
        match self {
            Outcome::Installed(plan) => Some((plan.target, plan.meta().version)),
            Outcome::PendingTrial { slot, latest } => Some((*slot, latest.version)),
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
            latest: latest.map(|l| l.version),
            result: result.clone(),
        });
        if let Some(latest) = latest {
            state.latest = Some(LatestSeen {
                version: latest.version,
                at,
                signed_at: latest.signed_at,
                expires: latest.expires,
                rollout: latest.rollout,
            });
        }
        if self.is_error() {
            state.last_error = Some(ErrorRecord {
                at,
                message: result,
            });
        }
    }

    /// For `install --bundle`, whose operator chose the version: whether it
    /// runs, or waits for the reboot into it. Anything else (a refusal, a
    /// version ignored by the bucket's rules) did not do what was asked.
    pub fn bundle_in_place(&self) -> bool {
        matches!(
            self,
            Outcome::Installed(_)
                | Outcome::PendingTrial { .. }
                | Outcome::UpToDate { .. }
                | Outcome::Skipped {
                    reason: Skip::SameImageAsBooted { .. },
                    ..
                }
        )
    }

    /// Records an install from a bundle: only as the last error, when the
    /// bundle's version is not in place (it is no check of the channel; the
    /// failed versions are recorded as they are met).
    pub fn record_install(&self, at: DateTime<Utc>, state: &mut State) {
        if !self.bundle_in_place() {
            state.last_error = Some(ErrorRecord {
                at,
                message: self.to_string(),
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
            Outcome::Unfit(Unfit::NotPublished { version }) => write!(
                f,
                "refused version {version}: its meta is a bundle's, signed by pack for no channel (publish signs it for one)"
            ),
            Outcome::Unfit(Unfit::OtherChannel { version, channel }) => write!(
                f,
                "refused version {version}: it is published for channel \"{channel}\", not this device's"
            ),
            Outcome::Unfit(Unfit::OtherArch { version, arch }) => write!(
                f,
                "refused version {version}: it is built for {arch} machines, not this device's"
            ),
            Outcome::Stale {
                latest,
                signed_at,
                expires,
                running,
            } => write!(
                f,
                "refused version {}: the channel is stale, its meta expired {} (signed {}; the publisher re-signs it with publish --resign); still running version {running}",
                latest.version,
                expires.format("%Y-%m-%d %H:%M:%S UTC"),
                signed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            ),
            Outcome::UpToDate { latest } => write!(f, "up to date (version {})", latest.version),
            Outcome::Skipped { latest, reason } => {
                let latest = latest.version;
                match reason {
                Skip::NotNewer { floor, slot } => write!(
                    f,
                    "ignored version {latest}: not newer than version {floor} in slot {slot} (versions never go back)"
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
                Skip::SameImageAsBooted { running } => write!(
                    f,
                    "up to date: version {latest} is the image of the booted version {running}, published again"
                ),
            }
            }
            Outcome::PendingTrial { slot, latest } => write!(
                f,
                "version {} is installed in slot {slot} and boots at the next reboot",
                latest.version
            ),
            Outcome::Waiting {
                latest,
                admission,
                machine_id,
            } => {
                let version = latest.version;
                match admission {
                    Admission::Halted { at } => write!(
                        f,
                        "not installing version {version}: its rollout was halted at {}",
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                    Admission::Waiting { turn } | Admission::Admitted { turn } => {
                        write!(
                            f,
                            "waiting for version {version}: its staged rollout reaches this host at {}",
                            turn.format("%Y-%m-%d %H:%M:%S UTC")
                        )?;
                        if !machine_id {
                            write!(f, " (no usable machine id: this host comes last)")?;
                        }
                        Ok(())
                    }
                }
            }
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
                    Stage::State => "recording on the disk and in the state".to_owned(),
                    Stage::Network => "waiting for the network".to_owned(),
                    Stage::Meta => "fetching the channel's meta".to_owned(),
                    Stage::Bundle => "reading the bundle".to_owned(),
                    Stage::Install { step, plan } => step.describe(plan),
                };
                write!(f, "failed {stage}: {}", failure.error)
            }
        }
    }
}

/// The failed-version record of a trial in slot `trial` that fell back to
/// the other slot.
pub(crate) fn failed_trial_record(
    trial: Slot,
    info: &SlotInfo,
    at: DateTime<Utc>,
) -> FailedVersion {
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
        disk: Box<DiskState>,
        trial: SlotInfo,
    },
    Fetching {
        disk: Box<DiskState>,
        /// Attempts so far, this one excluded.
        attempts: u32,
        waited: Duration,
    },
    WaitingForNetwork {
        disk: Box<DiskState>,
        attempts: u32,
        waited: Duration,
        delay: Duration,
    },
    RecordingRevocations {
        disk: Box<DiskState>,
        signed: Box<SignedMeta>,
        keys: Vec<PublicKey>,
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
    /// Read the disk's [`DiskState`].
    ReadDisk,
    /// Add this to the failed versions on the ESP and in the state file.
    RecordFailedTrial {
        trial: Slot,
        info: SlotInfo,
    },
    /// Record these keys as revoked on the ESP: a recovery key's meta
    /// revokes them.
    RecordRevocations(Vec<PublicKey>),
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
    pub(crate) fn describe(&self) -> String {
        match self {
            Action::ReadDisk => "reading the boot state".into(),
            Action::RecordFailedTrial { trial, info } => format!(
                "recording version {} (slot {trial}) as failed: its trial fell back",
                info.version
            ),
            Action::RecordRevocations(keys) => format!(
                "recording the keys a recovery key revoked: {}",
                keys.iter()
                    .map(|k| k.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
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
    Disk(Box<DiskState>),
    /// The failed trial was saved as this record.
    Recorded(Box<FailedVersion>),
    /// The revocations were recorded.
    Revoked,
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

    /// A run that installs `plan` at once: its steps, in the same order and
    /// with the same ending as after a decision to install, without reading
    /// the disk, fetching the channel's latest meta or deciding. For a
    /// caller that chose the version and the slot itself: the machine tests
    /// write given versions into given slots through the executor.
    pub fn installing(setup: Setup, plan: Plan) -> Machine {
        Machine {
            setup,
            cycle: Cycle::Installing {
                plan: Box::new(plan),
                step: Step::FetchIndex,
            },
        }
    }

    pub(crate) fn action(&self) -> Action {
        match &self.cycle {
            Cycle::Start => Action::ReadDisk,
            Cycle::RecordingFailedTrial { trial, .. } => Action::RecordFailedTrial {
                trial: self.setup.booted.other(),
                info: trial.clone(),
            },
            Cycle::Fetching { .. } => Action::FetchLatest,
            Cycle::WaitingForNetwork { delay, .. } => Action::Wait(*delay),
            Cycle::RecordingRevocations { keys, .. } => Action::RecordRevocations(keys.clone()),
            Cycle::Installing { plan, step } => Action::Install {
                plan: plan.clone(),
                step: *step,
            },
            Cycle::Done(outcome) => Action::Finish(outcome.clone()),
        }
    }

    /// The transition: the next cycle, given what the last action produced.
    pub(crate) fn advance(mut self, event: Event) -> Machine {
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
            (Cycle::Start, Event::Disk(disk)) => self.gate(disk),
            (Cycle::Start, Event::Failed(error)) => Self::failed(Stage::Disk, error),

            (Cycle::RecordingFailedTrial { mut disk, .. }, Event::Recorded(record)) => {
                // The decision below must see the version as failed too.
                disk.failed.push(*record);
                Cycle::Fetching {
                    disk,
                    attempts: 0,
                    waited: Duration::ZERO,
                }
            }
            (Cycle::RecordingFailedTrial { .. }, Event::Failed(error)) => {
                Self::failed(Stage::State, error)
            }

            (Cycle::Fetching { disk, .. }, Event::Latest(signed)) => self.decide(disk, *signed),
            (
                Cycle::Fetching {
                    disk,
                    attempts,
                    waited,
                },
                Event::Unreachable(reason),
            ) => {
                let attempts = attempts + 1;
                match self.setup.network.delay(attempts, waited) {
                    Some(delay) => Cycle::WaitingForNetwork {
                        disk,
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
            (Cycle::Fetching { .. }, Event::Failed(error)) => match self.setup.mode {
                Mode::Bundle => Self::failed(Stage::Bundle, error),
                Mode::Check | Mode::Update => Self::failed(Stage::Meta, error),
            },

            (
                Cycle::WaitingForNetwork {
                    disk,
                    attempts,
                    waited,
                    delay,
                },
                Event::Waited,
            ) => Cycle::Fetching {
                disk,
                attempts,
                waited: waited + delay,
            },

            (
                Cycle::RecordingRevocations {
                    mut disk,
                    signed,
                    keys,
                },
                Event::Revoked,
            ) => {
                disk.revoked.extend(keys);
                self.decide(disk, *signed)
            }
            (Cycle::RecordingRevocations { .. }, Event::Failed(error)) => {
                Self::failed(Stage::State, error)
            }

            (Cycle::Installing { plan, step }, Event::StepDone) => match step.next() {
                Some(step) => Cycle::Installing { plan, step },
                None => Cycle::Done(Outcome::Installed(plan)),
            },
            (Cycle::Installing { plan, step }, Event::Failed(error)) => {
                Cycle::Done(Outcome::Failed(Failure {
                    latest: Some(plan.latest()),
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
    fn gate(&self, disk: Box<DiskState>) -> Cycle {
        let booted = self.setup.booted;
        let slot = disk.boot.slot(booted);
        if slot.info.is_none() {
            return Cycle::Done(Outcome::Refused(Refusal::BootedIncomplete(booted)));
        }
        if slot.state != SlotState::Good {
            return Cycle::Done(Outcome::Refused(Refusal::NotGood {
                slot: booted,
                state: slot.state,
            }));
        }
        // Recorded on the ESP, whatever the state file says: the state
        // file may be lost.
        let unrecorded_trial = disk
            .boot
            .failed_trial(booted)
            .and_then(|s| s.info.clone())
            .filter(|info| {
                !disk
                    .failed
                    .iter()
                    .any(|f| same_version(f, info.version, info.id))
            });
        match unrecorded_trial {
            Some(trial) => Cycle::RecordingFailedTrial { disk, trial },
            None => Cycle::Fetching {
                disk,
                attempts: 0,
                waited: Duration::ZERO,
            },
        }
    }

    fn has_failed<'d>(
        &'d self,
        disk: &'d DiskState,
        version: u64,
        id: Uuid,
    ) -> Option<&'d FailedVersion> {
        disk.failed
            .iter()
            .chain(&self.setup.failed)
            .find(|f| same_version(f, version, id))
    }

    /// What to do with the channel's latest meta.
    fn decide(&self, disk: Box<DiskState>, signed: SignedMeta) -> Cycle {
        let meta = signed.meta();
        let version = meta.version;
        let unfit = |unfit| Cycle::Done(Outcome::Unfit(unfit));
        let published = meta.published.as_ref();
        match published {
            // A bundle's meta: for no channel, with no revocations, expiry
            // or rollout; its operator chose it for this host.
            None if self.setup.mode == Mode::Bundle => {}
            None => return unfit(Unfit::NotPublished { version }),
            Some(p) if Some(&p.channel) != self.setup.device.channel.as_ref() => {
                return unfit(Unfit::OtherChannel {
                    version,
                    channel: p.channel.clone(),
                })
            }
            Some(_) => {}
        }
        if meta.arch != self.setup.device.arch {
            return unfit(Unfit::OtherArch {
                version,
                arch: meta.arch,
            });
        }
        let unrecorded: Vec<PublicKey> = published
            .map(|p| p.revoked())
            .unwrap_or_default()
            .into_iter()
            .filter(|key| !disk.revoked.contains(key))
            .collect();
        if !unrecorded.is_empty() {
            return Cycle::RecordingRevocations {
                disk,
                signed: Box::new(signed),
                keys: unrecorded,
            };
        }
        let latest = Latest::of(meta);
        let booted = disk.boot.slot(self.setup.booted);
        let running = booted
            .info
            .as_ref()
            .expect("the health gate let only a complete booted slot through");
        if let Some(published) = published.filter(|p| self.is_expired(&disk, p)) {
            return Cycle::Done(Outcome::Stale {
                latest,
                signed_at: published.signed_at,
                expires: published.expires,
                running: running.version,
            });
        }
        let skip = |reason| Cycle::Done(Outcome::Skipped { latest, reason });
        if (version, meta.id) == (running.version, running.id) {
            return Cycle::Done(Outcome::UpToDate { latest });
        }
        let target = self.setup.booted.other();
        let pending = super::pending_trial(&disk.boot, self.setup.booted)
            .and_then(|s| s.info.as_ref())
            .is_some_and(|info| (info.version, info.id) == (version, meta.id));
        if pending {
            return Cycle::Done(Outcome::PendingTrial {
                slot: target,
                latest,
            });
        }
        if let Some(failed) = self.has_failed(&disk, version, meta.id) {
            return skip(Skip::FailedBefore {
                reason: failed.reason.clone(),
            });
        }
        if let Some((floor, slot)) = rollback_floor(&disk, Some(self.setup.booted)) {
            // The same version again into the slot that holds it (an
            // activation a power cut interrupted) goes back nowhere.
            let again = slot == target
                && disk
                    .boot
                    .slot(target)
                    .info
                    .as_ref()
                    .is_some_and(|info| (info.version, info.id) == (version, meta.id));
            if version < floor || (version == floor && !again) {
                return skip(Skip::NotNewer { floor, slot });
            }
        }
        if meta.id == running.id {
            let same_image = matches!(
                disk.kept(self.setup.booted),
                KeptMeta::Signed { image, .. } if *image == meta.image.sha256
            );
            return skip(match same_image {
                true => Skip::SameImageAsBooted {
                    running: running.version,
                },
                false => Skip::SameIdAsBooted { id: meta.id },
            });
        }
        if meta.image.size > self.setup.slot_size {
            return skip(Skip::TooLarge {
                image: meta.image.size,
                slot_size: self.setup.slot_size,
            });
        }
        if let Some((published, rollout)) =
            published.and_then(|p| p.rollout.as_ref().map(|rollout| (p, rollout)))
        {
            let place = rollout_place(self.setup.machine_id.as_ref(), version);
            let admission = rollout.admission(place, self.now(&disk, published));
            if !matches!(admission, Admission::Admitted { .. }) {
                return Cycle::Done(Outcome::Waiting {
                    latest,
                    admission,
                    machine_id: self.setup.machine_id.is_some(),
                });
            }
        }
        let plan = Box::new(Plan {
            target,
            signed,
            tries: self.setup.tries,
        });
        match self.setup.mode {
            Mode::Check => Cycle::Done(Outcome::WouldInstall(plan)),
            Mode::Update | Mode::Bundle => Cycle::Installing {
                plan,
                step: Step::FetchIndex,
            },
        }
    }

    /// The device's notion of now: the clock if it is trusted, and never
    /// earlier than the newest signing time verified (the state file's, the
    /// slots' metas', this one's). It decides expiry, and where a staged
    /// rollout stands: a clock that is not trusted never lets a host in
    /// before a signing time shows its turn has come.
    fn now(&self, disk: &DiskState, published: &Publication) -> DateTime<Utc> {
        let kept = disk.kept.iter().filter_map(|kept| match kept {
            KeptMeta::Signed { signed_at, .. } => *signed_at,
            _ => None,
        });
        let newest = kept.chain([published.signed_at]).max();
        self.setup
            .clock
            .now(newest)
            .expect("the meta's own signing time is known")
    }

    /// Whether `published` has expired by the device's notion of now.
    fn is_expired(&self, disk: &DiskState, published: &Publication) -> bool {
        published.expired(self.now(disk, published))
    }
}

/// The rollback floor: the highest version a slot holds, by its signed meta
/// (or, without one, its slot file), given the keys revoked on the disk,
/// and the slot that holds it. A failed trial of a slot other than
/// `booted` does not count (it is remembered as failed instead), nor does
/// a meta only revoked keys signed.
pub fn rollback_floor(disk: &DiskState, booted: Option<Slot>) -> Option<(u64, Slot)> {
    Slot::ALL
        .into_iter()
        .filter_map(|slot| {
            let status = disk.boot.slot(slot);
            let info = status.info.as_ref()?;
            let failed_trial =
                Some(slot) != booted && status.state == (SlotState::Trial { tries_left: 0 });
            if failed_trial {
                return None;
            }
            match disk.kept(slot) {
                KeptMeta::Unsigned => Some((info.version, slot)),
                KeptMeta::Signed {
                    version, signers, ..
                } => signers
                    .iter()
                    .any(|key| !disk.revoked.contains(key))
                    .then_some((*version, slot)),
                KeptMeta::Void { .. } => None,
            }
        })
        .max_by_key(|&(version, _)| version)
}

/// Whether a failed-version record is of this version (by number or id).
fn same_version(failed: &FailedVersion, version: u64, id: Uuid) -> bool {
    failed.version == version || failed.id == id
}

#[cfg(test)]
mod tests;
