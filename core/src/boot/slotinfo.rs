//! The slot file, `abnix/<slot>/slot.json`: which version a slot's boot
//! files belong to. Written after the kernel and initrd (so it exists only
//! when they are complete) and removed before they are, by mark-bad.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use abnix_formats::meta::Meta;
use abnix_formats::slot::Slot;

/// Version of the slot file format.
const FORMAT: u32 = 1;

/// Longest kernel command line a version may bring. The x86 kernel keeps
/// 2048 bytes including the final NUL (`COMMAND_LINE_SIZE`); the rest is
/// left for what abnix and the bootloaders add (`abnix.slot=a`, GRUB's
/// `BOOT_IMAGE=/abnix/a/kernel`, systemd-boot's `initrd=\abnix\a\initrd`).
/// Beyond the limit the kernel silently truncates, losing `abnix.slot=`.
pub(crate) const MAX_CMDLINE: usize = 1960;

/// Longest label; it is shown in boot menus.
pub(crate) const MAX_LABEL: usize = 200;

/// What the boot files of a slot are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The version number (anti-rollback order).
    pub version: u64,
    /// The version id: the root filesystem's UUID.
    pub id: Uuid,
    pub label: String,
    /// The version's kernel command line, without `abnix.slot=`.
    pub cmdline: String,
}

/// Why slot information cannot be stored or was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotInfoError {
    #[error("label {0:?} is empty, longer than {MAX_LABEL} bytes or has control characters")]
    BadLabel(String),
    #[error("the kernel command line is {0} bytes, more than {MAX_CMDLINE}")]
    CmdlineTooLong(usize),
    #[error("the kernel command line contains the control character {0:?}")]
    CmdlineControl(char),
    #[error("the kernel command line already has abnix.slot=, which boot control adds")]
    CmdlineHasSlot,
    #[error("slot file: {0}")]
    Json(String),
    #[error("slot file has format {found}, this abnix reads {FORMAT}")]
    Format { found: u32 },
    #[error("slot file of slot {expected} says it belongs to slot {found}")]
    WrongSlot { expected: Slot, found: Slot },
}

/// The JSON shape of the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotFile {
    format: u32,
    slot: String,
    version: u64,
    id: Uuid,
    label: String,
    cmdline: String,
}

impl SlotInfo {
    /// What the slot file of a version says, from its meta.
    pub fn of(meta: &Meta) -> SlotInfo {
        SlotInfo {
            version: meta.version,
            id: meta.id,
            label: meta.label.clone(),
            cmdline: meta.cmdline.clone(),
        }
    }

    /// Checks what the bootloaders need of the fields: one line each,
    /// within the kernel's command line size.
    pub fn validate(&self) -> Result<(), SlotInfoError> {
        let label_ok = !self.label.is_empty()
            && self.label.len() <= MAX_LABEL
            && !self.label.chars().any(char::is_control);
        if !label_ok {
            return Err(SlotInfoError::BadLabel(self.label.clone()));
        }
        if self.cmdline.len() > MAX_CMDLINE {
            return Err(SlotInfoError::CmdlineTooLong(self.cmdline.len()));
        }
        if let Some(c) = self.cmdline.chars().find(|c| c.is_control()) {
            return Err(SlotInfoError::CmdlineControl(c));
        }
        if self
            .cmdline
            .split_ascii_whitespace()
            .any(|arg| arg.starts_with("abnix.slot="))
        {
            return Err(SlotInfoError::CmdlineHasSlot);
        }
        Ok(())
    }

    /// The slot file of `slot`.
    pub(crate) fn to_file(&self, slot: Slot) -> Result<Vec<u8>, SlotInfoError> {
        self.validate()?;
        let file = SlotFile {
            format: FORMAT,
            slot: slot.name().to_owned(),
            version: self.version,
            id: self.id,
            label: self.label.clone(),
            cmdline: self.cmdline.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("plain data serializes");
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Reads the slot file found in `slot`'s directory.
    pub(crate) fn from_file(bytes: &[u8], slot: Slot) -> Result<SlotInfo, SlotInfoError> {
        let file: SlotFile =
            serde_json::from_slice(bytes).map_err(|e| SlotInfoError::Json(e.to_string()))?;
        if file.format != FORMAT {
            return Err(SlotInfoError::Format { found: file.format });
        }
        let found = file
            .slot
            .parse::<Slot>()
            .map_err(|e| SlotInfoError::Json(e.to_string()))?;
        if found != slot {
            return Err(SlotInfoError::WrongSlot {
                expected: slot,
                found,
            });
        }
        let info = SlotInfo {
            version: file.version,
            id: file.id,
            label: file.label,
            cmdline: file.cmdline,
        };
        info.validate()?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SlotInfo {
        SlotInfo {
            version: 42,
            id: Uuid::from_u128(0x3f0c_0000_0000_4000_8000_0000_0000_0001),
            label: "kiosk 2026-11-22 (firefox 140) \"quoted\" ü".into(),
            cmdline: r#"init=/nix/store/x-nixos-system/init dyndbg="file a.c +p""#.into(),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = info().to_file(Slot::B).unwrap();
        assert_eq!(SlotInfo::from_file(&bytes, Slot::B), Ok(info()));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"slot\": \"b\""), "{text}");
    }

    #[test]
    fn rejects_fields_the_bootloaders_cannot_carry() {
        let with = |f: fn(&mut SlotInfo)| {
            let mut i = info();
            f(&mut i);
            i.to_file(Slot::A).unwrap_err()
        };
        assert_eq!(
            with(|i| i.label.clear()),
            SlotInfoError::BadLabel(String::new())
        );
        assert_eq!(
            with(|i| i.label = "two\nlines".into()),
            SlotInfoError::BadLabel("two\nlines".into())
        );
        assert!(matches!(
            with(|i| i.label = "x".repeat(MAX_LABEL + 1)),
            SlotInfoError::BadLabel(_)
        ));
        assert_eq!(
            with(|i| i.cmdline = "x".repeat(MAX_CMDLINE + 1)),
            SlotInfoError::CmdlineTooLong(MAX_CMDLINE + 1)
        );
        assert_eq!(
            with(|i| i.cmdline = "a\nb".into()),
            SlotInfoError::CmdlineControl('\n')
        );
        assert_eq!(
            with(|i| i.cmdline = "quiet abnix.slot=a".into()),
            SlotInfoError::CmdlineHasSlot
        );
        assert_eq!(
            SlotInfoError::CmdlineHasSlot.to_string(),
            "the kernel command line already has abnix.slot=, which boot control adds"
        );
    }

    #[test]
    fn rejects_foreign_or_misplaced_files() {
        let bytes = info().to_file(Slot::A).unwrap();
        assert_eq!(
            SlotInfo::from_file(&bytes, Slot::B),
            Err(SlotInfoError::WrongSlot {
                expected: Slot::B,
                found: Slot::A
            })
        );
        let future = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"format\": 1", "\"format\": 2");
        assert_eq!(
            SlotInfo::from_file(future.as_bytes(), Slot::A),
            Err(SlotInfoError::Format { found: 2 })
        );
        let truncated = &bytes[..bytes.len() / 2];
        assert!(matches!(
            SlotInfo::from_file(truncated, Slot::A),
            Err(SlotInfoError::Json(_))
        ));
        let extra = String::from_utf8(bytes)
            .unwrap()
            .replace("\"format\": 1", "\"format\": 1, \"x\": 0");
        assert!(matches!(
            SlotInfo::from_file(extra.as_bytes(), Slot::A),
            Err(SlotInfoError::Json(e)) if e.contains("unknown field `x`")
        ));
    }
}
