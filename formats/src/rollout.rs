//! Staged rollouts (DESIGN §3, "Staged rollouts"): a version published with
//! a [`Rollout`] reaches the hosts of its channel gradually, with no server
//! and no coordination. Each host takes a [`Place`] in `[0, 1)` from a hash
//! of its machine id and the version, and may install once the rollout has
//! reached that place: at `start + place × over`. A halted rollout admits
//! no host any more.
//!
//! The arithmetic is in whole seconds and integers, so every host (and a
//! fleet view reading the hosts' machine ids) computes the same turn.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::machine_id::MachineId;

/// The longest rollout a meta may carry: a year, far beyond any meta's
/// useful validity, and small enough for the arithmetic to stay exact.
pub const MAX_ROLLOUT_SECS: u64 = 366 * 24 * 3600;

/// A version's rollout, signed in its meta (`published.rollout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// When the first hosts may install (`publish` sets it to the signing
    /// time; `--resign` and `--halt` keep it).
    pub start: DateTime<Utc>,
    /// How long after `start` the last host may install, in seconds.
    pub over_secs: u64,
    /// Set by `publish --halt`: from then on no host starts installing the
    /// version; hosts that installed it keep it.
    pub halted_at: Option<DateTime<Utc>>,
}

/// A host's place in the rollouts of one version: hosts enter in the order
/// of their places, 0 first. Drawn from the machine id and the version, so
/// it is stable across runs and reboots, and each version picks other
/// early hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place(u64);

impl Place {
    /// The place of a host without a usable machine id: it enters last,
    /// when the rollout is complete.
    pub const LAST: Place = Place(u64::MAX);

    /// The place of the host with `machine_id` in the rollouts of `version`:
    /// the first 8 bytes of SHA-256 over a domain tag, the machine id and
    /// the version.
    pub fn of(machine_id: &MachineId, version: u64) -> Place {
        let mut hash = Sha256::new();
        hash.update(b"abnix rollout place\0");
        hash.update(machine_id.as_str().as_bytes());
        hash.update(b"\0");
        hash.update(version.to_be_bytes());
        let digest = hash.finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        Place(u64::from_be_bytes(first))
    }

    /// The place as a fraction of the fleet in `[0, 1]` (for display).
    pub fn fraction(self) -> f64 {
        self.0 as f64 / 2f64.powi(64)
    }
}

/// Whether a host may install a version now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The rollout has reached the host (at this time).
    Admitted { turn: DateTime<Utc> },
    /// The host's turn comes at this time.
    Waiting { turn: DateTime<Utc> },
    /// The rollout was halted at this time; the host does not start.
    Halted { at: DateTime<Utc> },
}

impl Rollout {
    /// When the host at `place` may install: `start + ⌈over × place⌉`
    /// seconds. The last place enters at `start + over`.
    pub fn turn(&self, place: Place) -> DateTime<Utc> {
        let over = u128::from(self.over_secs.min(MAX_ROLLOUT_SECS));
        let secs = (over * u128::from(place.0)).div_ceil(1 << 64);
        let secs = i64::try_from(secs).expect("bounded by MAX_ROLLOUT_SECS");
        self.start + chrono::Duration::seconds(secs)
    }

    /// Whether the host at `place` may install at `now` (the host's notion
    /// of now, see docs/security.md, "Staged rollouts").
    pub fn admission(&self, place: Place, now: DateTime<Utc>) -> Admission {
        if let Some(at) = self.halted_at {
            return Admission::Halted { at };
        }
        let turn = self.turn(place);
        match now >= turn {
            true => Admission::Admitted { turn },
            false => Admission::Waiting { turn },
        }
    }

    /// The share of the fleet the rollout has reached at `now`, in `[0, 1]`,
    /// frozen where it stood when it was halted.
    pub fn progress(&self, now: DateTime<Utc>) -> f64 {
        let now = self.halted_at.map_or(now, |halted| halted.min(now));
        let elapsed = (now - self.start).num_seconds();
        match (elapsed, self.over_secs) {
            (..0, _) => 0.0,
            (_, 0) => 1.0,
            (elapsed, over) => (elapsed as f64 / over as f64).min(1.0),
        }
    }

    /// The rollout with no host admitted from `at` on.
    pub fn halted(self, at: DateTime<Utc>) -> Rollout {
        Rollout {
            halted_at: Some(self.halted_at.unwrap_or(at)),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const DAY: u64 = 24 * 3600;

    fn rollout(over_secs: u64) -> Rollout {
        Rollout {
            start: t(0),
            over_secs,
            halted_at: None,
        }
    }

    /// `count` machine ids as systemd would make them (random 128 bits),
    /// from a fixed seed so the test is reproducible.
    fn fleet(count: usize) -> Vec<MachineId> {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(26);
        (0..count)
            .map(|_| MachineId::from_file_text(&format!("{:032x}", rng.random::<u128>())).unwrap())
            .collect()
    }

    /// 10,000 hosts under a rollout over 10 days: at each tenth of the way
    /// the share admitted is that tenth. The admitted count at fraction f is
    /// binomial(10,000, f) if the hash is uniform: its standard deviation is
    /// at most 50 hosts, so a tolerance of 200 (four deviations) fails a
    /// fair hash about once in 16,000 runs, and a hash that is off by 2% of
    /// the fleet anywhere always.
    #[test]
    fn a_fleet_of_10000_enters_in_proportion_to_the_time_elapsed() {
        let hosts = fleet(10_000);
        let rollout = rollout(10 * DAY);
        let version = 7;
        let places: Vec<Place> = hosts.iter().map(|id| Place::of(id, version)).collect();
        for tenth in 0..=10i64 {
            let now = t(tenth * DAY as i64);
            let admitted = places
                .iter()
                .filter(|&&p| matches!(rollout.admission(p, now), Admission::Admitted { .. }))
                .count() as i64;
            let expected = tenth * 1000;
            assert!(
                (admitted - expected).abs() <= 200,
                "day {tenth}: {admitted} admitted, expected {expected} ± 200"
            );
            assert!((rollout.progress(now) - tenth as f64 / 10.0).abs() < 1e-9);
        }
        // Nobody before the start, everybody at the end.
        let before = places
            .iter()
            .filter(|&&p| matches!(rollout.admission(p, t(-1)), Admission::Admitted { .. }))
            .count();
        assert_eq!(before, 0);
        assert!(places
            .iter()
            .all(|&p| rollout.admission(p, t(10 * DAY as i64))
                == Admission::Admitted {
                    turn: rollout.turn(p)
                }));
    }

    #[test]
    fn a_hosts_place_is_stable_and_depends_on_the_machine_id_and_version() {
        let id = MachineId::from_file_text("0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(Place::of(&id, 7), Place::of(&id, 7));
        assert_eq!(
            Place::of(&id, 7),
            Place::of(
                &MachineId::from_file_text("0123456789abcdef0123456789abcdef").unwrap(),
                7
            )
        );
        // A fixed value, computed independently (Python's hashlib): a
        // change of the hash would reorder every fleet mid-rollout, so it
        // is part of the format.
        assert_eq!(Place::of(&id, 7).0, 0x9260_9e33_dc9f_7f50);
        assert_ne!(Place::of(&id, 7), Place::of(&id, 8));
    }

    /// Different versions shuffle the order: the hosts of the first tenth
    /// of version 7 are about a tenth of those of version 8's first tenth,
    /// not the same hosts again.
    #[test]
    fn different_versions_pick_different_early_hosts() {
        let hosts = fleet(10_000);
        let early = |version| -> Vec<bool> {
            hosts
                .iter()
                .map(|id| Place::of(id, version).fraction() < 0.1)
                .collect()
        };
        let (seven, eight) = (early(7), early(8));
        let both = seven.iter().zip(&eight).filter(|(a, b)| **a && **b).count();
        // Independent: 10,000 × 0.1 × 0.1 = 100 expected (σ ≈ 10).
        assert!((50..=150).contains(&both), "{both} early in both");
    }

    #[test]
    fn turns_are_exact_at_the_edges() {
        let r = rollout(DAY);
        assert_eq!(r.turn(Place(0)), t(0));
        assert_eq!(r.turn(Place::LAST), t(DAY as i64));
        assert_eq!(r.turn(Place(1 << 63)), t(DAY as i64 / 2));
        // Over zero: everybody at the start.
        assert_eq!(rollout(0).turn(Place::LAST), t(0));
        // The admission and the turn agree to the second.
        let p = Place(1 << 62);
        assert_eq!(
            r.admission(p, t(DAY as i64 / 4 - 1)),
            Admission::Waiting {
                turn: t(DAY as i64 / 4)
            }
        );
        assert_eq!(
            r.admission(p, t(DAY as i64 / 4)),
            Admission::Admitted {
                turn: t(DAY as i64 / 4)
            }
        );
        // An absurd length is bounded, never an overflow.
        assert_eq!(
            rollout(u64::MAX).turn(Place::LAST),
            t(MAX_ROLLOUT_SECS as i64)
        );
    }

    #[test]
    fn a_halted_rollout_admits_nobody_and_its_progress_is_frozen() {
        let halted = rollout(10 * DAY).halted(t(3 * DAY as i64));
        assert_eq!(
            halted.admission(Place(0), t(9 * DAY as i64)),
            Admission::Halted {
                at: t(3 * DAY as i64)
            }
        );
        assert!((halted.progress(t(9 * DAY as i64)) - 0.3).abs() < 1e-9);
        // Halting again keeps the first halt.
        assert_eq!(halted.halted(t(5 * DAY as i64)), halted);
    }
}
