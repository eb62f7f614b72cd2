//! libblkid's view of a disk: every signature util-linux knows
//! (filesystems, RAID and volume-manager members, encrypted volumes,
//! partition tables, each at every place libblkid probes for it), read
//! through `wipefs --no-act --json`, which lists all of them where `blkid -p`
//! stops at the first.
//!
//! This is the installer's second opinion next to abnix's own probe
//! (`crate::probe`): libblkid knows a hundred formats abnix does not
//! (XFS, btrfs, ZFS, NTFS, bcache, F2FS, firmware RAID, …). It runs on a
//! device or a disk-image file alike, and needs no root for a file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// util-linux's program that lists libblkid's findings.
pub const WIPEFS: &str = "wipefs";

/// How libblkid is asked: the `wipefs` to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libblkid {
    pub(crate) program: PathBuf,
}

impl Default for Libblkid {
    /// `wipefs` from the PATH.
    fn default() -> Libblkid {
        Libblkid {
            program: WIPEFS.into(),
        }
    }
}

/// One signature libblkid found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkidSignature {
    /// libblkid's name for it (`xfs`, `zfs_member`, `crypto_LUKS`, `dos`).
    pub(crate) kind: String,
    /// Where its magic bytes are, and how many: zeroing them makes libblkid
    /// stop seeing this copy.
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) label: Option<String>,
    pub(crate) uuid: Option<String>,
    /// `filesystem`, `raid`, `crypto`, `partition-table` or `other`.
    pub(crate) usage: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibblkidError {
    #[error("{} is not installed (it comes with util-linux)", .0.display())]
    NotInstalled(PathBuf),
    #[error("running {}: {reason}", program.display())]
    Spawn { program: PathBuf, reason: String },
    #[error("{} {} failed ({status}): {stderr}", program.display(), path.display())]
    Failed {
        program: PathBuf,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{} printed what is not its JSON ({reason}): {output:?}", program.display())]
    Output {
        program: PathBuf,
        reason: String,
        output: String,
    },
}

/// `wipefs --json`'s output.
#[derive(Deserialize)]
struct Listing {
    signatures: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    offset: String,
    length: u64,
    label: Option<String>,
    uuid: Option<String>,
    usage: Option<String>,
}

impl Libblkid {
    /// Every signature libblkid finds on the whole device or file at `path`
    /// (partition tables and whole-disk filesystems; what is inside
    /// partitions is the partition table's business).
    pub(crate) fn probe(&self, path: &Path) -> Result<Vec<BlkidSignature>, LibblkidError> {
        let output = Command::new(&self.program)
            .args(["--no-act", "--json", "--output"])
            .arg("TYPE,OFFSET,LENGTH,LABEL,UUID,USAGE")
            .arg(path)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LibblkidError::NotInstalled(self.program.clone()),
                _ => LibblkidError::Spawn {
                    program: self.program.clone(),
                    reason: e.to_string(),
                },
            })?;
        if !output.status.success() {
            return Err(LibblkidError::Failed {
                program: self.program.clone(),
                path: path.to_owned(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        parse(&output.stdout).map_err(|reason| LibblkidError::Output {
            program: self.program.clone(),
            reason,
            output: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }
}

/// Parses `wipefs --json`: nothing at all when it found nothing (older
/// util-linux), else `{"signatures": [...]}`.
fn parse(stdout: &[u8]) -> Result<Vec<BlkidSignature>, String> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let listing: Listing = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
    listing
        .signatures
        .into_iter()
        .map(|e| {
            let hex = e.offset.strip_prefix("0x").unwrap_or(&e.offset);
            let offset = u64::from_str_radix(hex, 16)
                .map_err(|_| format!("offset {:?} is not hexadecimal", e.offset))?;
            Ok(BlkidSignature {
                kind: e.kind,
                offset,
                length: e.length,
                label: e.label.filter(|l| !l.is_empty()),
                uuid: e.uuid.filter(|u| !u.is_empty()),
                usage: e.usage.unwrap_or_default(),
            })
        })
        .collect()
}

/// What people call libblkid's types, for the common ones.
fn common_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "xfs" => "XFS filesystem",
        "btrfs" => "btrfs filesystem",
        "ntfs" => "NTFS filesystem",
        "exfat" => "exFAT filesystem",
        "vfat" => "FAT filesystem",
        "f2fs" => "F2FS filesystem",
        "zfs_member" => "ZFS pool member",
        "bcache" => "bcache device",
        "bcachefs" => "bcachefs filesystem",
        "crypto_LUKS" => "LUKS encrypted volume",
        "BitLocker" => "BitLocker encrypted volume",
        "linux_raid_member" => "Linux software RAID member",
        "LVM2_member" => "LVM2 physical volume",
        "iso9660" => "ISO 9660 filesystem",
        "udf" => "UDF filesystem",
        "swap" => "swap area",
        "swsuspend" => "hibernation image",
        "squashfs" => "squashfs filesystem",
        "erofs" => "EROFS filesystem",
        "apfs" => "APFS container",
        "hfsplus" => "HFS+ filesystem",
        "dos" => "MBR partition table",
        "gpt" => "GPT partition table",
        "PMBR" => "protective MBR",
        _ => return None,
    })
}

impl fmt::Display for BlkidSignature {
    /// `XFS filesystem labelled "data01"`, `reiserfs filesystem`,
    /// `isw_raid_member (raid)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (common_name(&self.kind), self.usage.as_str()) {
            (Some(name), _) => f.write_str(name)?,
            (None, "filesystem") => write!(f, "{} filesystem", self.kind)?,
            (None, "") => f.write_str(&self.kind)?,
            (None, usage) => write!(f, "{} ({usage})", self.kind)?,
        }
        if let Some(label) = &self.label {
            write!(f, " labelled {label:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipefs_json_is_read_with_hex_offsets_and_null_labels() {
        let out = br#"{
           "signatures": [
              {"type": "xfs", "offset": "0x0", "length": 4, "label": "data01",
               "uuid": "c5630958-d938-4ee3-af2e-ebf89e0c50ed", "usage": "filesystem"},
              {"type": "dos", "offset": "0x1fe", "length": 2, "label": null,
               "uuid": null, "usage": "partition-table"}
           ]
        }"#;
        let found = parse(out).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].offset, found[0].length), (0, 4));
        assert_eq!(found[0].to_string(), "XFS filesystem labelled \"data01\"");
        assert_eq!((found[1].offset, found[1].label.as_deref()), (0x1fe, None));
        assert_eq!(found[1].to_string(), "MBR partition table");
        assert_eq!(parse(b"").unwrap(), []);
        assert_eq!(parse(b"{\"signatures\": [\n\n]}\n").unwrap(), []);
        assert!(
            parse(b"{\"signatures\": [{\"type\": \"x\", \"offset\": \"zz\", \"length\": 1}]}")
                .unwrap_err()
                .contains("not hexadecimal")
        );
        assert!(parse(b"wipefs: oops").is_err());
    }

    #[test]
    fn unknown_types_are_named_with_their_usage() {
        let sig = |kind: &str, usage: &str| BlkidSignature {
            kind: kind.into(),
            offset: 0,
            length: 1,
            label: None,
            uuid: None,
            usage: usage.into(),
        };
        assert_eq!(
            sig("reiserfs", "filesystem").to_string(),
            "reiserfs filesystem"
        );
        assert_eq!(
            sig("isw_raid_member", "raid").to_string(),
            "isw_raid_member (raid)"
        );
        assert_eq!(sig("mystery", "").to_string(), "mystery");
    }

    #[test]
    fn a_missing_wipefs_is_named() {
        let missing = Libblkid {
            program: "/nonexistent/wipefs".into(),
        };
        assert_eq!(
            missing.probe(Path::new("/dev/null")).unwrap_err(),
            LibblkidError::NotInstalled("/nonexistent/wipefs".into())
        );
        assert_eq!(
            LibblkidError::NotInstalled("wipefs".into()).to_string(),
            "wipefs is not installed (it comes with util-linux)"
        );
    }
}
