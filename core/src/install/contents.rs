//! What the target holds before the installer touches it, and whether that
//! may be overwritten.
//!
//! Nothing and an earlier abnix layout may always be overwritten (a
//! reinstall); anything else only with `--wipe`, so a typo in a device name
//! never costs someone their data.

use std::fmt;

use crate::layout::Layout;
use crate::probe::{Signature, SignatureKind};

/// The target's contents, from [`crate::probe::probe_signatures`] on the
/// whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// No signature at all: a new disk, or one already wiped.
    Empty,
    /// Exactly one partition table, and it is an abnix layout.
    EarlierAbnix(Box<Layout>),
    /// Anything else: other partition tables, filesystems, RAID, LVM, LUKS.
    Foreign(Vec<Signature>),
}

impl Contents {
    pub fn classify(signatures: &[Signature], disk_size: u64) -> Contents {
        match signatures {
            [] => Contents::Empty,
            [Signature {
                kind: SignatureKind::Gpt(gpt),
                ..
            }] => match Layout::from_gpt(gpt, disk_size) {
                Ok(layout) => Contents::EarlierAbnix(Box::new(layout)),
                Err(_) => Contents::Foreign(signatures.to_vec()),
            },
            _ => Contents::Foreign(signatures.to_vec()),
        }
    }

    /// Whether the installer may overwrite this without `--wipe`.
    pub fn replaceable(&self) -> bool {
        !matches!(self, Contents::Foreign(_))
    }
}

impl fmt::Display for Contents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contents::Empty => f.write_str("nothing"),
            Contents::EarlierAbnix(_) => f.write_str("an earlier abnix installation"),
            Contents::Foreign(found) => {
                let found: Vec<String> = found.iter().map(ToString::to_string).collect();
                f.write_str(&found.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::{Guid, Partition};
    use crate::layout::{compute, Arch, LayoutConfig, MIB};

    fn layout() -> Layout {
        let cfg = LayoutConfig {
            slot_size: 16 * MIB,
            esp_size: 16 * MIB,
            min_rw_size: 16 * MIB,
            arch: Arch::X86_64,
        };
        compute(128 * MIB, 512, &cfg).unwrap()
    }

    fn gpt_signature(gpt: crate::gpt::Gpt) -> Signature {
        Signature {
            kind: SignatureKind::Gpt(Box::new(gpt)),
            magic: vec![(512, 8)],
        }
    }

    #[test]
    fn nothing_and_an_abnix_layout_are_replaceable() {
        assert_eq!(Contents::classify(&[], 128 * MIB), Contents::Empty);
        let layout = layout();
        let abnix = gpt_signature(layout.to_gpt(&[1; 32]));
        let contents = Contents::classify(&[abnix], 128 * MIB);
        assert_eq!(contents, Contents::EarlierAbnix(Box::new(layout)));
        assert!(contents.replaceable());
        assert_eq!(contents.to_string(), "an earlier abnix installation");
    }

    #[test]
    fn anything_else_is_foreign_and_named() {
        let mut other = layout().to_gpt(&[1; 32]);
        other.partitions[5] = Some(Partition {
            type_guid: Guid::LINUX_FILESYSTEM,
            guid: Guid::v4_from_bytes([7; 16]),
            first_lba: other.last_usable_lba - 10,
            last_lba: other.last_usable_lba,
            attributes: 0,
            name: "home".into(),
        });
        let ext4 = Signature {
            kind: SignatureKind::Ext {
                version: 4,
                label: Some("data".into()),
            },
            magic: vec![(1080, 2)],
        };
        let foreign = Contents::classify(&[gpt_signature(other.clone())], 128 * MIB);
        assert!(!foreign.replaceable());
        assert!(foreign.to_string().contains("6 \"home\""), "{foreign}");

        let abnix_and_ext4 = [gpt_signature(layout().to_gpt(&[1; 32])), ext4.clone()];
        let contents = Contents::classify(&abnix_and_ext4, 128 * MIB);
        assert!(
            !contents.replaceable(),
            "an abnix table plus more is foreign"
        );
        assert!(contents
            .to_string()
            .ends_with("; ext4 filesystem labelled \"data\""));
        assert_eq!(
            Contents::classify(&[ext4], 128 * MIB).to_string(),
            "ext4 filesystem labelled \"data\""
        );
    }
}
