//! The updater on the device (DESIGN §5, §6): marking the booted slot good,
//! and the update cycle.
//!
//! The cycle is an explicit state machine ([`machine`]): pure transitions
//! from one [`machine::Cycle`] to the next given what the last action
//! produced, unit-tested without disks or network; [`run`] performs the
//! actions on a real disk, bucket and state directory.

pub mod machine;
pub mod notify;
pub mod records;
pub mod restart;
pub mod run;
pub mod schedule;

use std::path::Path;
use std::time::Duration;

use tracing::warn;

use abnix_core::boot::{BootControl, BootError, BootStatus, SlotInfo, SlotState, SlotStatus};
use abnix_formats::machine_id::MachineId;
use abnix_formats::report::ReportedState;
use abnix_formats::slot::Slot;

/// How long a command waits for another run to release the update lock
/// before it gives up with a message naming the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The machine id in `path`; `None` (logged) when the file is missing,
/// empty, `uninitialized` or not a machine id: the host then comes last in
/// every staged rollout (DESIGN §3, "Staged rollouts").
pub fn read_machine_id(path: &Path) -> Option<MachineId> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| {
            warn!(
                "no machine id in {}: {e}; this host comes last in staged rollouts",
                path.display()
            )
        })
        .ok()?;
    let id = MachineId::from_file_text(&text).ok();
    if id.is_none() {
        warn!(
            "{} holds no machine id ({:?}); this host comes last in staged rollouts",
            path.display(),
            text.trim().chars().take(40).collect::<String>()
        );
    }
    id
}

/// Whether the kernel reports the system clock synchronized (by
/// systemd-timesyncd, chrony or ntpd: what `timedatectl` shows as "System
/// clock synchronized"). Read-only: `adjtimex` with no modes set.
pub fn clock_synchronized() -> bool {
    // SAFETY: timex is plain data; with modes 0, adjtimex only reads.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut timex) };
    state >= 0 && state != libc::TIME_ERROR
}

/// A slot's state as `status` and the reports name it (docs/boot.md's
/// terms; a trial with no tries left is a failed trial).
pub fn reported_state(state: SlotState) -> ReportedState {
    match state {
        SlotState::Bad => ReportedState::Bad,
        SlotState::Trial { tries_left: 0 } => ReportedState::Failed,
        SlotState::Trial { .. } => ReportedState::Trial,
        SlotState::Good => ReportedState::Good,
    }
}

/// A slot's state in one word, as `status` shows it.
pub fn state_name(state: SlotState) -> &'static str {
    reported_state(state).name()
}

/// The other slot when it waits for its trial and boots next: an update
/// was installed and the reboot into it is pending.
pub fn pending_trial(status: &BootStatus, booted: Slot) -> Option<&SlotStatus> {
    let other = status.slot(booted.other());
    (other.state.is_pending_trial() && other.info.is_some() && status.next == Some(other.slot))
        .then_some(other)
}

/// What `mark-good` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkedGood {
    /// The slot was good already (every boot after the first): nothing
    /// written.
    AlreadyGood(SlotInfo),
    /// The slot was on trial (or came up through the rescue path) and is
    /// good now.
    Marked(SlotInfo),
}

/// Marks the booted slot good, unless it already is.
pub fn mark_good(boot: &mut dyn BootControl, booted: Slot) -> Result<MarkedGood, BootError> {
    let status = boot.status()?;
    let slot = status.slot(booted);
    let info = slot.info.clone().ok_or(BootError::NotComplete(booted))?;
    if slot.state == SlotState::Good {
        return Ok(MarkedGood::AlreadyGood(info));
    }
    boot.mark_good(booted)?;
    Ok(MarkedGood::Marked(info))
}

/// How `rollback` makes the other slot boot next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackHow {
    /// The booted slot is good: the other becomes the primary, the booted
    /// one stays as its fallback (`BootControl::prefer`).
    Prefer,
    /// The booted slot is still on trial (or came up through the rescue
    /// path): it is marked bad, which ends its trial; the good other slot
    /// is then the only one the bootloader picks.
    AbandonBooted,
}

/// What `rollback` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The slot that boots next, and its (good) version.
    pub to: Slot,
    pub to_version: SlotInfo,
    /// The version rolled back from, recorded as failed so it is never
    /// installed again; `None` when the booted slot's files are gone.
    pub from_version: Option<SlotInfo>,
    pub how: RollbackHow,
}

/// Why there is nothing to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefusal {
    #[error("slot {0} is empty (no complete boot files): there is nothing to roll back to")]
    Empty(Slot),
    #[error("slot {slot} holds version {version}, which is {state}, not good: only a proven version is rolled back to")]
    NotGood {
        slot: Slot,
        version: u64,
        state: &'static str,
    },
}

/// The rollback from `booted` to the other slot, if it holds a good
/// version.
pub fn rollback_plan(status: &BootStatus, booted: Slot) -> Result<Rollback, RollbackRefusal> {
    let other = status.slot(booted.other());
    let Some(to_version) = other.info.clone() else {
        return Err(RollbackRefusal::Empty(other.slot));
    };
    if other.state != SlotState::Good {
        return Err(RollbackRefusal::NotGood {
            slot: other.slot,
            version: to_version.version,
            state: state_name(other.state),
        });
    }
    let current = status.slot(booted);
    Ok(Rollback {
        to: other.slot,
        to_version,
        from_version: current.info.clone(),
        how: if current.state == SlotState::Good {
            RollbackHow::Prefer
        } else {
            RollbackHow::AbandonBooted
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn slot(slot: Slot, state: SlotState, version: Option<u64>) -> SlotStatus {
        SlotStatus {
            slot,
            state,
            info: version.map(|version| SlotInfo {
                version,
                id: Uuid::from_u128(version.into()),
                label: format!("v{version}"),
                cmdline: String::new(),
            }),
        }
    }

    fn status(a: SlotStatus, b: SlotStatus, next: Option<Slot>) -> BootStatus {
        BootStatus {
            next,
            slots: [a, b],
        }
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(SlotState::Good), "good");
        assert_eq!(state_name(SlotState::Bad), "bad");
        assert_eq!(state_name(SlotState::Trial { tries_left: 2 }), "trial");
        assert_eq!(state_name(SlotState::Trial { tries_left: 0 }), "failed");
    }

    #[test]
    fn a_pending_trial_is_the_other_slot_booting_next() {
        let trial = SlotState::Trial { tries_left: 3 };
        let a = slot(Slot::A, SlotState::Good, Some(1));
        let pending = status(a.clone(), slot(Slot::B, trial, Some(2)), Some(Slot::B));
        assert_eq!(
            pending_trial(&pending, Slot::A).map(|s| s.slot),
            Some(Slot::B)
        );
        // Once booted into it, nothing is pending any more.
        assert_eq!(pending_trial(&pending, Slot::B), None);
        // Activated but not first (a power cut inside activate).
        let torn = status(a.clone(), slot(Slot::B, trial, Some(2)), Some(Slot::A));
        assert_eq!(pending_trial(&torn, Slot::A), None);
        let failed = status(
            a,
            slot(Slot::B, SlotState::Trial { tries_left: 0 }, Some(2)),
            Some(Slot::A),
        );
        assert_eq!(pending_trial(&failed, Slot::A), None);
    }

    #[test]
    fn rollback_goes_to_a_good_other_slot() {
        let both_good = status(
            slot(Slot::A, SlotState::Good, Some(1)),
            slot(Slot::B, SlotState::Good, Some(2)),
            Some(Slot::B),
        );
        let plan = rollback_plan(&both_good, Slot::B).unwrap();
        assert_eq!(plan.to, Slot::A);
        assert_eq!(plan.to_version.version, 1);
        assert_eq!(plan.from_version.map(|v| v.version), Some(2));
        assert_eq!(plan.how, RollbackHow::Prefer);

        // From a trial boot, the trial is abandoned.
        let on_trial = status(
            slot(Slot::A, SlotState::Good, Some(1)),
            slot(Slot::B, SlotState::Trial { tries_left: 2 }, Some(2)),
            Some(Slot::B),
        );
        assert_eq!(
            rollback_plan(&on_trial, Slot::B).unwrap().how,
            RollbackHow::AbandonBooted
        );
    }

    #[test]
    fn rollback_is_refused_without_a_good_version_to_go_to() {
        let empty = status(
            slot(Slot::A, SlotState::Good, Some(1)),
            slot(Slot::B, SlotState::Bad, None),
            Some(Slot::A),
        );
        let refusal = rollback_plan(&empty, Slot::A).unwrap_err();
        assert_eq!(refusal, RollbackRefusal::Empty(Slot::B));
        assert!(refusal.to_string().contains("slot b is empty"), "{refusal}");

        for (state, word) in [
            (SlotState::Trial { tries_left: 0 }, "failed"),
            (SlotState::Trial { tries_left: 3 }, "trial"),
        ] {
            let other = status(
                slot(Slot::A, SlotState::Good, Some(1)),
                slot(Slot::B, state, Some(2)),
                Some(Slot::A),
            );
            let refusal = rollback_plan(&other, Slot::A).unwrap_err();
            assert_eq!(
                refusal,
                RollbackRefusal::NotGood {
                    slot: Slot::B,
                    version: 2,
                    state: word
                }
            );
            assert!(
                refusal.to_string().contains(&format!("which is {word}")),
                "{refusal}"
            );
        }
    }
}
