//! What the target holds before the installer touches it, and whether it is
//! provably blank.
//!
//! Blank means provably blank: every area where a signature can sit
//! ([`probe::signature_areas`]: the first 8 MiB, the last 2 MiB, btrfs's
//! superblock mirrors) reads as zeros, abnix's own probe finds nothing, and
//! neither does libblkid ([`Libblkid`], util-linux's prober, which knows
//! far more formats). Only a blank target, or a file the installer creates,
//! is written without `--wipe`; anything else, an earlier abnix
//! installation included (its abnix-rw holds that machine's data), is
//! named as precisely as the probes can and needs `--wipe`.

use std::fmt;
use std::io;
use std::path::Path;

use super::libblkid::{BlkidSignature, Libblkid, LibblkidError};
use crate::probe::{self, NonZero, Signature, SignatureKind, HEAD_AREA, TAIL_AREA};
use abnix_formats::disk::Disk;
use abnix_formats::layout::Layout;

/// What libblkid was able to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkidView {
    /// Its findings (none on a blank disk).
    Found(Vec<BlkidSignature>),
    /// `wipefs` is not installed, so libblkid could not look.
    NotInstalled,
    /// Not asked: the target is a file the installer creates.
    NotAsked,
}

/// The target's contents, as the probes found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// abnix's own probe (`probe::probe_signatures`), with the bytes that
    /// make each signature.
    signatures: Vec<Signature>,
    pub(crate) libblkid: BlkidView,
    /// The first non-zero byte of each signature area that has one.
    nonzero: Vec<NonZero>,
    /// The size of what was examined.
    size: u64,
}

/// Reading what the target holds failed.
#[derive(Debug, thiserror::Error)]
pub enum ExamineError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Libblkid(LibblkidError),
}

impl Contents {
    /// A file the installer creates: nothing in it to look at.
    pub(crate) fn new_file() -> Contents {
        Contents {
            signatures: Vec::new(),
            libblkid: BlkidView::NotAsked,
            nonzero: Vec::new(),
            size: 0,
        }
    }

    /// Examines `disk`, which `path` names for libblkid.
    pub(crate) fn examine<D: Disk + ?Sized>(
        disk: &mut D,
        path: &Path,
        libblkid: &Libblkid,
    ) -> Result<Contents, ExamineError> {
        let size = disk.size()?;
        let signatures = probe::probe_signatures(disk)?;
        let nonzero = probe::first_nonzero(disk)?;
        let libblkid = match libblkid.probe(path) {
            Ok(found) => BlkidView::Found(found),
            Err(LibblkidError::NotInstalled(_)) => BlkidView::NotInstalled,
            Err(e) => return Err(ExamineError::Libblkid(e)),
        };
        Ok(Contents {
            signatures,
            libblkid,
            nonzero,
            size,
        })
    }

    /// Nothing anywhere a signature can be, and both probes agree.
    pub fn is_blank(&self) -> bool {
        self.signatures.is_empty()
            && self.nonzero.is_empty()
            && match &self.libblkid {
                BlkidView::Found(found) => found.is_empty(),
                BlkidView::NotInstalled => false,
                BlkidView::NotAsked => true,
            }
    }

    /// Blank as far as abnix can see, but libblkid could not look.
    pub(crate) fn unproven(&self) -> bool {
        self.libblkid == BlkidView::NotInstalled
            && self.signatures.is_empty()
            && self.nonzero.is_empty()
    }

    /// The layout of an earlier abnix installation, when that is all the
    /// disk holds as far as both probes see.
    pub(crate) fn earlier_abnix(&self) -> Option<Layout> {
        let [Signature {
            kind: SignatureKind::Gpt(gpt),
            ..
        }] = self.signatures.as_slice()
        else {
            return None;
        };
        if !self.unexplained().is_empty() {
            return None;
        }
        Layout::from_gpt(gpt, self.size).ok()
    }

    /// libblkid's findings that abnix's own probe did not report.
    fn unexplained(&self) -> Vec<&BlkidSignature> {
        let BlkidView::Found(found) = &self.libblkid else {
            return Vec::new();
        };
        found
            .iter()
            .filter(|b| {
                !self
                    .signatures
                    .iter()
                    .any(|s| blkid_types(&s.kind).contains(&b.kind.as_str()))
            })
            .collect()
    }

    /// Every magic both probes found: `(offset, length)`.
    pub(crate) fn magic(&self) -> Vec<(u64, usize)> {
        let mut magic: Vec<(u64, usize)> = self
            .signatures
            .iter()
            .flat_map(|s| s.magic.iter().copied())
            .collect();
        if let BlkidView::Found(found) = &self.libblkid {
            magic.extend(found.iter().map(|b| (b.offset, b.length as usize)));
        }
        magic
    }
}

/// The names libblkid gives to what abnix's probe calls `kind`.
fn blkid_types(kind: &SignatureKind) -> &'static [&'static str] {
    match kind {
        SignatureKind::Gpt(_) | SignatureKind::DamagedGpt(_) => &["gpt", "PMBR"],
        SignatureKind::Mbr(_) => &["dos"],
        SignatureKind::Ext { .. } => &["ext2", "ext3", "ext4", "jbd"],
        SignatureKind::Erofs { .. } => &["erofs"],
        SignatureKind::Fat { .. } => &["vfat"],
        SignatureKind::Iso9660 { .. } => &["iso9660"],
        SignatureKind::Swap { .. } => &["swap", "swsuspend"],
        SignatureKind::Lvm2PhysicalVolume => &["LVM2_member"],
        SignatureKind::Luks { .. } => &["crypto_LUKS"],
        SignatureKind::LinuxRaid { .. } => &["linux_raid_member"],
    }
}

impl fmt::Display for Contents {
    /// What a person is told the target holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.libblkid == BlkidView::NotAsked && self.signatures.is_empty() {
            return f.write_str("nothing (a new file)");
        }
        if self.is_blank() {
            return write!(
                f,
                "nothing: the first {} MiB, the last {} MiB and btrfs's backup superblocks are zeros, and libblkid finds no signature",
                HEAD_AREA >> 20,
                TAIL_AREA >> 20
            );
        }
        if self.earlier_abnix().is_some() {
            return f.write_str(
                "an earlier abnix installation (its abnix-rw holds that machine's /var, /home and /root)",
            );
        }
        let mut items: Vec<String> = self.signatures.iter().map(ToString::to_string).collect();
        items.extend(self.unexplained().iter().map(ToString::to_string));
        if items.is_empty() {
            items.extend(self.nonzero.iter().map(ToString::to_string));
        }
        if items.is_empty() {
            f.write_str("nothing abnix's own probe can see")?;
        } else {
            f.write_str(&items.join("; "))?;
        }
        if self.libblkid == BlkidView::NotInstalled {
            f.write_str(" (libblkid could not look: wipefs, from util-linux, is not installed)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::AreaKind;
    use abnix_formats::gpt::{Guid, Partition};
    use abnix_formats::layout::{compute, Arch, LayoutConfig, MIB};

    fn layout() -> Layout {
        let cfg = LayoutConfig {
            slot_size: 16 * MIB,
            esp_size: 16 * MIB,
            min_rw_size: 16 * MIB,
            arch: Arch::X86_64,
        };
        compute(128 * MIB, 512, &cfg).unwrap()
    }

    fn gpt_signature(gpt: abnix_formats::gpt::Gpt) -> Signature {
        Signature {
            kind: SignatureKind::Gpt(Box::new(gpt)),
            magic: vec![(512, 8)],
        }
    }

    fn blkid(kind: &str, label: Option<&str>) -> BlkidSignature {
        BlkidSignature {
            kind: kind.into(),
            offset: 512,
            length: 8,
            label: label.map(Into::into),
            uuid: None,
            usage: String::new(),
        }
    }

    fn contents(signatures: Vec<Signature>, blkid: Vec<BlkidSignature>) -> Contents {
        Contents {
            signatures,
            libblkid: BlkidView::Found(blkid),
            nonzero: Vec::new(),
            size: 128 * MIB,
        }
    }

    #[test]
    fn blank_needs_zeros_and_both_probes_empty() {
        assert!(contents(vec![], vec![]).is_blank());
        assert!(Contents::new_file().is_blank());
        assert_eq!(Contents::new_file().to_string(), "nothing (a new file)");
        assert_eq!(
            contents(vec![], vec![]).to_string(),
            "nothing: the first 8 MiB, the last 2 MiB and btrfs's backup superblocks are zeros, and libblkid finds no signature"
        );

        let xfs = contents(vec![], vec![blkid("xfs", Some("data01"))]);
        assert!(!xfs.is_blank());
        assert_eq!(xfs.to_string(), "XFS filesystem labelled \"data01\"");

        let stray = Contents {
            nonzero: vec![
                NonZero {
                    area: AreaKind::Head,
                    offset: MIB,
                    disk_size: 128 * MIB,
                },
                NonZero {
                    area: AreaKind::Tail,
                    offset: 128 * MIB - 4096,
                    disk_size: 128 * MIB,
                },
            ],
            ..contents(vec![], vec![])
        };
        assert!(!stray.is_blank());
        assert_eq!(
            stray.to_string(),
            "unknown non-zero data at offset 1 MiB; unknown non-zero data at offset 131068 KiB (4 KiB before the end)"
        );

        let unproven = Contents {
            libblkid: BlkidView::NotInstalled,
            ..contents(vec![], vec![])
        };
        assert!(!unproven.is_blank() && unproven.unproven());
        assert_eq!(
            unproven.to_string(),
            "nothing abnix's own probe can see (libblkid could not look: wipefs, from util-linux, is not installed)"
        );
    }

    #[test]
    fn an_abnix_layout_is_recognized_but_not_blank() {
        let layout = layout();
        let abnix = contents(
            vec![gpt_signature(layout.to_gpt(&[1; 32]))],
            vec![blkid("gpt", None), blkid("PMBR", None)],
        );
        assert!(!abnix.is_blank());
        assert_eq!(abnix.earlier_abnix(), Some(layout));
        assert!(abnix.unexplained().is_empty());
        assert_eq!(
            abnix.to_string(),
            "an earlier abnix installation (its abnix-rw holds that machine's /var, /home and /root)"
        );
    }

    #[test]
    fn anything_else_is_named_once() {
        let mut other = layout().to_gpt(&[1; 32]);
        other.partitions[5] = Some(Partition {
            type_guid: Guid::LINUX_FILESYSTEM,
            guid: Guid::v4_from_bytes([7; 16]),
            first_lba: other.last_usable_lba - 10,
            last_lba: other.last_usable_lba,
            attributes: 0,
            name: "home".into(),
        });
        let foreign = contents(vec![gpt_signature(other)], vec![blkid("gpt", None)]);
        assert_eq!(foreign.earlier_abnix(), None);
        assert!(foreign.to_string().contains("6 \"home\""), "{foreign}");

        let ext4 = Signature {
            kind: SignatureKind::Ext {
                version: 4,
                label: Some("data".into()),
            },
            magic: vec![(1080, 2)],
        };
        // An abnix table plus a filesystem libblkid and abnix both see, plus
        // one only libblkid knows: not an earlier installation, each named
        // once.
        let mixed = contents(
            vec![gpt_signature(layout().to_gpt(&[1; 32])), ext4],
            vec![
                blkid("gpt", None),
                blkid("ext4", Some("data")),
                blkid("btrfs", Some("pool")),
            ],
        );
        assert_eq!(mixed.earlier_abnix(), None);
        let text = mixed.to_string();
        assert!(
            text.ends_with(
                "; ext4 filesystem labelled \"data\"; btrfs filesystem labelled \"pool\""
            ),
            "{text}"
        );
        assert_eq!(mixed.magic().len(), 2 + 3);
    }
}
