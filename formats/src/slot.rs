//! The two OS slots.

use std::fmt;
use std::str::FromStr;

/// One of the two OS slots: partitions `abnix-a` and `abnix-b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// Lowercase name, as used in `abnix.slot=`, ESP paths and GRUB variables.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The GPT partition name of the slot.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => "abnix-a",
            Slot::B => "abnix-b",
        }
    }

    /// The slot named by `abnix.slot=` on a kernel command line, if any.
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_ascii_whitespace()
            .filter_map(|arg| arg.strip_prefix("abnix.slot="))
            .next_back()
            .and_then(|s| s.parse().ok())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown slot {0:?} (expected \"a\" or \"b\")")]
pub struct UnknownSlot(String);

impl FromStr for Slot {
    type Err = UnknownSlot;

    fn from_str(s: &str) -> Result<Slot, UnknownSlot> {
        match s {
            "a" | "A" => Ok(Slot::A),
            "b" | "B" => Ok(Slot::B),
            _ => Err(UnknownSlot(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_from_cmdline() {
        assert_eq!(
            Slot::from_cmdline("root=UUID=x abnix.slot=b quiet"),
            Some(Slot::B)
        );
        assert_eq!(
            Slot::from_cmdline("abnix.slot=a abnix.slot=b"),
            Some(Slot::B)
        );
        assert_eq!(Slot::from_cmdline("abnix.slot=c"), None);
        assert_eq!(Slot::from_cmdline("quiet"), None);
    }
}
