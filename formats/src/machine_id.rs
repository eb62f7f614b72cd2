//! A host's systemd machine id (machine-id(5)): its place in staged
//! rollouts and the name of its report. It becomes part of an object key,
//! so nothing but 32 lowercase hexadecimal characters, not all zero, is one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where systemd keeps the machine id.
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// A machine id: 32 lowercase hexadecimal characters, not all zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a machine id (32 lowercase hexadecimal characters, not all zero)")]
pub struct InvalidMachineId(String);

impl MachineId {
    /// The content of `/etc/machine-id`: the id and one optional newline
    /// (not `uninitialized`, systemd's mark of a first boot).
    pub fn from_file_text(text: &str) -> Result<MachineId, InvalidMachineId> {
        text.strip_suffix('\n').unwrap_or(text).parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MachineId {
    type Err = InvalidMachineId;

    fn from_str(text: &str) -> Result<MachineId, InvalidMachineId> {
        let hex = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || text.bytes().all(|b| b == b'0') {
            return Err(InvalidMachineId(text.chars().take(64).collect()));
        }
        Ok(MachineId(text.to_owned()))
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for MachineId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MachineId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MachineId, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_file_holds_the_id_and_one_optional_newline() {
        for text in [ID.to_owned(), format!("{ID}\n")] {
            assert_eq!(MachineId::from_file_text(&text).unwrap().as_str(), ID);
        }
        for text in [format!("{ID}\n\n"), format!(" {ID}\n"), "\n".into()] {
            assert!(MachineId::from_file_text(&text).is_err(), "{text:?}");
        }
    }

    /// What could walk out of the hosts/ prefix, and what systemd writes
    /// before it has an id, is never a machine id.
    #[test]
    fn only_32_lowercase_hex_characters_not_all_zero_are_an_id() {
        for bad in [
            "",
            "uninitialized",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "00000000000000000000000000000000",
            "../../../../../../../../channel.m",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdef-123456789abcdef",
            "g123456789abcdef0123456789abcdef",
            "0123456789abcdef 123456789abcdef",
        ] {
            assert!(bad.parse::<MachineId>().is_err(), "{bad:?}");
        }
    }
}
