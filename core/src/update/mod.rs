//! The updater on the device (DESIGN §5, §6): marking the booted slot good,
//! and the update cycle.
//!
//! The cycle is an explicit state machine ([`machine`]): pure transitions
//! from one [`machine::Cycle`] to the next given what the last action
//! produced, unit-tested without disks or network; [`run`] performs the
//! actions on a real disk, bucket and state directory.

use std::time::Duration;

use crate::boot::{BootControl, BootError, BootStatus, SlotInfo, SlotState, SlotStatus};
use crate::slot::Slot;

/// How long a command waits for another run to release the update lock
/// before it gives up with a message naming the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A slot's state in one word, as `status` shows it (docs/boot.md's terms;
/// a trial with no tries left is a failed trial).
pub fn state_name(state: SlotState) -> &'static str {
    match state {
        SlotState::Bad => "bad",
        SlotState::Trial { tries_left: 0 } => "failed",
        SlotState::Trial { .. } => "trial",
        SlotState::Good => "good",
    }
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
