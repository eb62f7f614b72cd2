//! The A/B boot state and its transitions, as pure functions.
//!
//! [`BootState`] is what the GRUB backend stores in its environment block
//! (see [`super::grub::env`]) and what the GRUB script in `grub.cfg` (see
//! [`super::grub::cfg`]) acts on; `BootState::next_boot` models that script
//! so tests can predict which slot GRUB boots. systemd-boot keeps the same
//! information in entry file names instead (see [`super::systemd_boot::bls`]).

use abnix_formats::slot::Slot;

/// Most tries a trial slot can get: GRUB script has no arithmetic, so
/// `grub.cfg` spells out the decrement for each count, and a tries counter
/// is one digit in the environment block (one byte, so a torn write can never
/// leave half of it).
pub const MAX_TRIES: u8 = 9;

/// What the bootloader may do with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Never booted automatically: empty, being rewritten, or given up on.
    Bad,
    /// A new version on probation: booted while tries are left, each boot
    /// attempt uses one. `tries_left == 0` means the trial failed.
    Trial { tries_left: u8 },
    /// Proved healthy (mark-good ran on it).
    Good,
}

impl SlotState {
    /// Whether the bootloader picks this slot on its own, given complete
    /// boot files.
    fn is_eligible(self) -> bool {
        match self {
            SlotState::Bad => false,
            SlotState::Trial { tries_left } => tries_left > 0,
            SlotState::Good => true,
        }
    }

    /// A trial with tries left: activated, not yet proved or failed.
    pub fn is_pending_trial(self) -> bool {
        matches!(self, SlotState::Trial { tries_left } if tries_left > 0)
    }
}

/// A state change that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a trial needs 1 to {MAX_TRIES} tries, not {0}")]
    InvalidTries(u8),
    #[error("slot {0} is not good, so it cannot be preferred")]
    NotGood(Slot),
    #[error("slot {0} is waiting for its trial; mark it bad to cancel the update instead")]
    OtherOnTrial(Slot),
}

/// The boot state of both slots, as the GRUB backend stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    /// The slot the bootloader tries first.
    pub primary: Slot,
    /// Per-slot state, indexed by `slot_index`.
    pub(crate) slots: [SlotState; 2],
}

/// What GRUB finds of a slot's files on the ESP when it boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotFiles {
    /// Its `slot.cfg` exists and loads its kernel and initrd.
    pub(crate) complete: bool,
    /// It has the last-good mark (`abnix/<slot>/good`): the version in it
    /// passed mark-good and has not been rewritten or put on trial since.
    /// Only the rescue path looks at it; see `BootState::next_boot`.
    pub(crate) marked_good: bool,
}

/// What the GRUB backend does on the next boot (see `BootState::next_boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextBoot {
    pub(crate) slot: Slot,
    /// The state after the bootloader recorded this boot attempt.
    pub(crate) state_after: BootState,
    /// No slot was eligible, so the bootloader fell back to the last good
    /// slot, or failing that to any slot with complete boot files, rather
    /// than stopping.
    rescue: bool,
}

pub fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl BootState {
    /// The state GRUB assumes when the environment block is missing or
    /// unreadable: no slot is eligible, so it takes the rescue path (see
    /// `BootState::next_boot`), in this order. `grub.cfg` sets these same
    /// values before `load_env`.
    pub const FALLBACK: BootState = BootState {
        primary: Slot::A,
        slots: [SlotState::Bad, SlotState::Bad],
    };

    pub fn slot(&self, slot: Slot) -> SlotState {
        self.slots[slot_index(slot)]
    }

    fn with_slot(mut self, slot: Slot, state: SlotState) -> BootState {
        self.slots[slot_index(slot)] = state;
        self
    }

    /// The order in which the bootloader considers the slots.
    fn order(&self) -> [Slot; 2] {
        [self.primary, self.primary.other()]
    }

    /// Before a slot is rewritten: the bootloader must never pick it.
    pub(crate) fn mark_bad(self, slot: Slot) -> BootState {
        self.with_slot(slot, SlotState::Bad)
    }

    /// Makes `slot` the trial slot that boots next, with `tries` attempts.
    pub(crate) fn activate(self, slot: Slot, tries: u8) -> Result<BootState, TransitionError> {
        if !(1..=MAX_TRIES).contains(&tries) {
            return Err(TransitionError::InvalidTries(tries));
        }
        Ok(BootState {
            primary: slot,
            ..self.with_slot(slot, SlotState::Trial { tries_left: tries })
        })
    }

    /// The running slot proved healthy: it is good and keeps booting, unless
    /// the other slot waits for its trial (activated by an update while this
    /// slot runs), which keeps its turn. Also repairs a slot that booted
    /// through the rescue path (state unknown).
    pub(crate) fn mark_good(self, slot: Slot) -> BootState {
        let other_pending = self.slot(slot.other()).is_pending_trial();
        BootState {
            primary: if other_pending { self.primary } else { slot },
            ..self.with_slot(slot, SlotState::Good)
        }
    }

    /// Operator rollback: a good slot boots next; the other slot keeps its
    /// state, so it stays the fallback. Not while the other slot waits for
    /// its trial: that is cancelled by marking it bad.
    pub(crate) fn prefer(self, slot: Slot) -> Result<BootState, TransitionError> {
        if self.slot(slot) != SlotState::Good {
            return Err(TransitionError::NotGood(slot));
        }
        if self.slot(slot.other()).is_pending_trial() {
            return Err(TransitionError::OtherOnTrial(slot.other()));
        }
        Ok(BootState {
            primary: slot,
            ..self
        })
    }

    /// What GRUB does at the next boot, given what it finds of each slot's
    /// files.
    ///
    /// Mirrors the script in `grub.cfg`: the first eligible slot in
    /// [`order`](Self::order) with complete files boots; a trial slot has
    /// its tries decremented (and saved) first. With no eligible slot (a
    /// damaged or missing block, both slots bad or failed), the rescue path
    /// boots the first slot in the same order that is complete and marked
    /// good, else the first complete one, and changes no state: GRUB's
    /// `save_env` cannot write a damaged or missing block, and with an
    /// intact one there is nothing a reset could improve (see docs/boot.md,
    /// "The script"). So a machine never stops at a prompt while anything
    /// can boot, and prefers the version last proved good to one whose
    /// trial failed. `None` only when no slot has complete files.
    pub(crate) fn next_boot(&self, files: [SlotFiles; 2]) -> Option<NextBoot> {
        let files_of = |slot: Slot| files[slot_index(slot)];
        let normal = self
            .order()
            .into_iter()
            .find(|&slot| files_of(slot).complete && self.slot(slot).is_eligible());
        if let Some(slot) = normal {
            let state_after = match self.slot(slot) {
                SlotState::Trial { tries_left } => self.with_slot(
                    slot,
                    SlotState::Trial {
                        tries_left: tries_left - 1,
                    },
                ),
                _ => *self,
            };
            return Some(NextBoot {
                slot,
                state_after,
                rescue: false,
            });
        }
        let complete: Vec<Slot> = self
            .order()
            .into_iter()
            .filter(|&slot| files_of(slot).complete)
            .collect();
        let last_good = complete.iter().find(|&&slot| files_of(slot).marked_good);
        last_good.or(complete.first()).map(|&slot| NextBoot {
            slot,
            state_after: *self,
            rescue: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Complete files, no last-good mark.
    const PLAIN: SlotFiles = SlotFiles {
        complete: true,
        marked_good: false,
    };
    const BOTH: [SlotFiles; 2] = [PLAIN; 2];

    /// Which slots are complete, none marked good.
    fn complete(a: bool, b: bool) -> [SlotFiles; 2] {
        [a, b].map(|complete| SlotFiles {
            complete,
            marked_good: false,
        })
    }

    fn installed() -> BootState {
        BootState::FALLBACK.mark_good(Slot::A)
    }

    /// Boots `state` until it settles on a slot that is not on trial,
    /// returning the slots booted in order.
    fn boot_until_settled(mut state: BootState, files: [SlotFiles; 2]) -> (Vec<Slot>, BootState) {
        let mut booted = Vec::new();
        for _ in 0..=MAX_TRIES {
            let next = state.next_boot(files).expect("something boots");
            booted.push(next.slot);
            state = next.state_after;
            if !matches!(state.slot(next.slot), SlotState::Trial { .. }) {
                break;
            }
        }
        (booted, state)
    }

    #[test]
    fn install_boots_a() {
        let next = installed().next_boot(BOTH).unwrap();
        assert_eq!(next.slot, Slot::A);
        assert!(!next.rescue);
        assert_eq!(next.state_after, installed());
    }

    #[test]
    fn trial_that_never_turns_good_falls_back_after_its_tries() {
        let state = installed().mark_bad(Slot::B).activate(Slot::B, 3).unwrap();
        let (booted, settled) = boot_until_settled(state, BOTH);
        assert_eq!(booted, [Slot::B, Slot::B, Slot::B, Slot::A]);
        assert_eq!(settled.slot(Slot::B), SlotState::Trial { tries_left: 0 });
        assert_eq!(settled.primary, Slot::B, "the failed slot keeps its place");
    }

    #[test]
    fn trial_that_turns_good_keeps_booting() {
        let state = installed().activate(Slot::B, 2).unwrap();
        let first = state.next_boot(BOTH).unwrap();
        assert_eq!(first.slot, Slot::B);
        let good = first.state_after.mark_good(Slot::B);
        assert_eq!(good.slot(Slot::B), SlotState::Good);
        for _ in 0..3 {
            assert_eq!(good.next_boot(BOTH).unwrap().slot, Slot::B);
        }
    }

    #[test]
    fn slots_without_complete_files_are_never_booted() {
        let state = installed().activate(Slot::B, 3).unwrap();
        assert_eq!(
            state.next_boot(complete(true, false)).unwrap().slot,
            Slot::A
        );
        // A good slot whose files vanished: the trial slot still boots.
        let next = installed().next_boot(complete(false, true)).unwrap();
        assert_eq!(next.slot, Slot::B);
        assert!(next.rescue);
        assert_eq!(BootState::FALLBACK.next_boot(complete(false, false)), None);
    }

    #[test]
    fn fallback_state_rescues_the_first_complete_slot() {
        let next = BootState::FALLBACK.next_boot(BOTH).unwrap();
        assert_eq!((next.slot, next.rescue), (Slot::A, true));
        assert_eq!(next.state_after, BootState::FALLBACK);
        let next = BootState::FALLBACK
            .next_boot(complete(false, true))
            .unwrap();
        assert_eq!((next.slot, next.rescue), (Slot::B, true));
    }

    #[test]
    fn rescue_prefers_the_last_good_slot_to_a_failed_trial() {
        // A damaged block reads as FALLBACK: A first, nothing eligible. A
        // holds a failed trial (complete, unmarked), B the good version.
        let b_good = [
            PLAIN,
            SlotFiles {
                complete: true,
                marked_good: true,
            },
        ];
        let next = BootState::FALLBACK.next_boot(b_good).unwrap();
        assert_eq!((next.slot, next.rescue), (Slot::B, true));
        assert_eq!(
            next.state_after,
            BootState::FALLBACK,
            "rescue writes nothing"
        );
        // Both marked: the primary order decides.
        let both_marked = b_good.map(|files| SlotFiles {
            marked_good: true,
            ..files
        });
        assert_eq!(
            BootState::FALLBACK.next_boot(both_marked).unwrap().slot,
            Slot::A
        );
        // A mark without loadable files counts for nothing.
        let marked_but_gone = [
            PLAIN,
            SlotFiles {
                complete: false,
                marked_good: true,
            },
        ];
        assert_eq!(
            BootState::FALLBACK.next_boot(marked_but_gone).unwrap().slot,
            Slot::A
        );
        // The normal path does not look at marks.
        let a_marked_b_trial = installed().activate(Slot::B, 2).unwrap();
        let next = a_marked_b_trial
            .next_boot([
                SlotFiles {
                    complete: true,
                    marked_good: true,
                },
                PLAIN,
            ])
            .unwrap();
        assert_eq!((next.slot, next.rescue), (Slot::B, false));
    }

    #[test]
    fn exhausted_trial_and_bad_other_slot_still_boots_something() {
        let state = BootState {
            primary: Slot::B,
            slots: [SlotState::Bad, SlotState::Trial { tries_left: 0 }],
        };
        let next = state.next_boot(BOTH).unwrap();
        assert_eq!((next.slot, next.rescue), (Slot::B, true));
    }

    #[test]
    fn prefer_rolls_back_to_a_good_slot_and_keeps_the_other_as_fallback() {
        let both_good = installed().activate(Slot::B, 3).unwrap().mark_good(Slot::B);
        let rolled_back = both_good.prefer(Slot::A).unwrap();
        assert_eq!(rolled_back.next_boot(BOTH).unwrap().slot, Slot::A);
        assert_eq!(rolled_back.slot(Slot::B), SlotState::Good);
        assert_eq!(
            rolled_back.next_boot(complete(false, true)).unwrap().slot,
            Slot::B
        );
    }

    #[test]
    fn rejected_transitions_name_the_problem() {
        assert_eq!(
            installed().activate(Slot::B, 0),
            Err(TransitionError::InvalidTries(0))
        );
        assert_eq!(
            installed().activate(Slot::B, MAX_TRIES + 1),
            Err(TransitionError::InvalidTries(MAX_TRIES + 1))
        );
        let pending = installed().activate(Slot::B, 3).unwrap();
        assert_eq!(
            pending.prefer(Slot::A),
            Err(TransitionError::OtherOnTrial(Slot::B))
        );
        let err = installed().prefer(Slot::B).unwrap_err();
        assert_eq!(err, TransitionError::NotGood(Slot::B));
        assert_eq!(
            err.to_string(),
            "slot b is not good, so it cannot be preferred"
        );
    }

    #[test]
    fn mark_good_leaves_a_pending_trial_its_turn() {
        let pending = installed().activate(Slot::B, 3).unwrap();
        let state = pending.mark_good(Slot::A);
        assert_eq!(state, pending);
        assert_eq!(state.next_boot(BOTH).unwrap().slot, Slot::B);
    }

    #[test]
    fn mark_bad_keeps_the_running_slot_primary() {
        let state = installed().mark_bad(Slot::B);
        assert_eq!(state.primary, Slot::A);
        assert_eq!(state.slot(Slot::B), SlotState::Bad);
        assert_eq!(state.slot(Slot::A), SlotState::Good);
    }
}
