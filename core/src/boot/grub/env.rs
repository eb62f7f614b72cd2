//! GRUB environment blocks, and the abnix boot state kept in one.
//!
//! The format is GRUB's own (grub-core/lib/envblk.c): the signature line
//! `# GRUB Environment Block`, then `name=value` lines, then `#` padding to a
//! fixed size. In values, `\` escapes the next byte (GRUB writes `\\` and
//! `\` + newline); lines starting with `#` are skipped. GRUB accepts a block
//! of any size and `save_env` rewrites it in place without changing its size.
//!
//! abnix keeps its boot state in a 512-byte block, so every state change is a
//! write of one sector. Every value is one byte and the keys have a fixed
//! order, so the line structure never changes: a write torn at any byte
//! leaves each value either old or new, never a mix inside a value, and the
//! block always parses. Which combinations that allows, and why each one
//! still boots, is worked through in `docs/boot.md`.

use crate::boot::state::{slot_index, BootState, SlotState};
use abnix_formats::slot::Slot;

/// The first line of every GRUB environment block.
pub const SIGNATURE: &str = "# GRUB Environment Block\n";

/// Size of abnix's environment block: one sector, so that a state change is
/// one sector write. GRUB's `load_env` and `save_env` accept it (checked
/// under SeaBIOS and OVMF, see `docs/boot.md`).
pub const STATE_BLOCK_SIZE: usize = 512;

/// Version of the abnix key set below.
const FORMAT: &str = "1";
const FORMAT_KEY: &str = "abnix_format";
const PRIMARY_KEY: &str = "abnix_primary";

/// The environment variable holding a slot's state, as used in `grub.cfg`.
pub fn slot_key(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "abnix_a",
        Slot::B => "abnix_b",
    }
}

/// Every variable `grub.cfg` loads, in block order.
pub(crate) fn state_keys() -> [&'static str; 4] {
    [
        FORMAT_KEY,
        PRIMARY_KEY,
        slot_key(Slot::A),
        slot_key(Slot::B),
    ]
}

/// The one-byte encoding of a slot state, as `grub.cfg` tests it.
pub(crate) fn state_value(state: SlotState) -> char {
    match state {
        SlotState::Bad => 'x',
        SlotState::Good => 'g',
        SlotState::Trial { tries_left } => {
            char::from_digit(u32::from(tries_left), 10).expect("tries fit in one digit")
        }
    }
}

/// Why bytes are not a well-formed GRUB environment block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    #[error("not a GRUB environment block: it does not start with {SIGNATURE:?}")]
    NoSignature,
    #[error("GRUB environment block: the line at byte {offset} has no '='")]
    MissingEquals { offset: usize },
    #[error("GRUB environment block: the value of {name:?} runs past the end of the block")]
    Unterminated { name: String },
    #[error("GRUB environment block: invalid variable name {name:?} at byte {offset}")]
    InvalidName { name: String, offset: usize },
    #[error("GRUB environment block: the line at byte {offset} is not UTF-8")]
    NotUtf8 { offset: usize },
    #[error("GRUB environment block: the value of {name:?} contains a NUL byte")]
    NulInValue { name: String },
    #[error("GRUB environment block needs {needed} bytes but has {size}")]
    TooLarge { needed: usize, size: usize },
}

/// The variables of a GRUB environment block, in block order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EnvBlock {
    vars: Vec<(String, String)>,
}

impl EnvBlock {
    /// Parses a whole block; any malformed line is an error.
    #[cfg(test)]
    fn parse(bytes: &[u8]) -> Result<EnvBlock, EnvError> {
        let (block, problem) = Self::parse_prefix(bytes);
        match problem {
            Some(err) => Err(err),
            None => Ok(block),
        }
    }

    /// Parses like GRUB's `load_env`: variables up to the first malformed
    /// line count, and the problem (if any) is returned next to them.
    fn parse_prefix(bytes: &[u8]) -> (EnvBlock, Option<EnvError>) {
        let mut block = EnvBlock::default();
        let Some(body) = bytes.strip_prefix(SIGNATURE.as_bytes()) else {
            return (block, Some(EnvError::NoSignature));
        };
        let base = SIGNATURE.len();
        let mut pos = 0;
        while pos < body.len() {
            if body[pos] == b'#' {
                pos = next_line(body, pos);
                continue;
            }
            match parse_var(body, pos, base) {
                Ok((name, value, next)) => {
                    block.set(&name, &value);
                    pos = next;
                }
                Err(err) => return (block, Some(err)),
            }
        }
        (block, None)
    }

    /// The value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name`, keeping its place if it exists (like GRUB), else
    /// appending it.
    fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.vars.push((name.to_owned(), value.to_owned())),
        }
    }

    #[cfg(test)]
    fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The block padded with `#` to exactly `size` bytes, escaped as GRUB
    /// does.
    fn serialize(&self, size: usize) -> Result<Vec<u8>, EnvError> {
        let mut out = SIGNATURE.as_bytes().to_vec();
        for (name, value) in &self.vars {
            check_name(name, out.len())?;
            if value.contains('\0') {
                return Err(EnvError::NulInValue { name: name.clone() });
            }
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            for &b in value.as_bytes() {
                if b == b'\\' || b == b'\n' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'\n');
        }
        if out.len() > size {
            return Err(EnvError::TooLarge {
                needed: out.len(),
                size,
            });
        }
        out.resize(size, b'#');
        Ok(out)
    }
}

/// Start of the line after the one at `pos`; a `\` hides the next byte, as
/// in GRUB's `find_next_line`.
fn next_line(body: &[u8], mut pos: usize) -> usize {
    while pos < body.len() {
        match body[pos] {
            b'\\' => pos += 2,
            b'\n' => return pos + 1,
            _ => pos += 1,
        }
    }
    body.len()
}

/// One `name=value` line at `pos`: the name, the unescaped value and where
/// the next line starts. `base` turns positions into block offsets.
fn parse_var(body: &[u8], pos: usize, base: usize) -> Result<(String, String, usize), EnvError> {
    let offset = base + pos;
    let eq = body[pos..]
        .iter()
        .position(|&b| b == b'=')
        .ok_or(EnvError::MissingEquals { offset })?;
    let name =
        std::str::from_utf8(&body[pos..pos + eq]).map_err(|_| EnvError::NotUtf8 { offset })?;
    check_name(name, offset)?;
    let unterminated = || EnvError::Unterminated {
        name: name.to_owned(),
    };
    let mut value = Vec::new();
    let mut p = pos + eq + 1;
    loop {
        match body.get(p) {
            None => return Err(unterminated()),
            Some(b'\n') => break,
            Some(b'\\') => {
                value.push(*body.get(p + 1).ok_or_else(unterminated)?);
                p += 2;
            }
            Some(&b) => {
                value.push(b);
                p += 1;
            }
        }
    }
    let value = String::from_utf8(value).map_err(|_| EnvError::NotUtf8 { offset })?;
    if value.contains('\0') {
        return Err(EnvError::NulInValue {
            name: name.to_owned(),
        });
    }
    Ok((name.to_owned(), value, p + 1))
}

fn check_name(name: &str, offset: usize) -> Result<(), EnvError> {
    let bad = name.is_empty() || name.starts_with('#') || name.contains(['=', '\n', '\\', '\0']);
    if bad {
        return Err(EnvError::InvalidName {
            name: name.to_owned(),
            offset,
        });
    }
    Ok(())
}

/// The abnix state block for `state`: [`STATE_BLOCK_SIZE`] bytes, keys in
/// the fixed order of `state_keys`.
pub fn encode_state(state: &BootState) -> Vec<u8> {
    let mut block = EnvBlock::default();
    block.set(FORMAT_KEY, FORMAT);
    block.set(PRIMARY_KEY, state.primary.name());
    for slot in Slot::ALL {
        block.set(
            slot_key(slot),
            &state_value(state.slots[slot_index(slot)]).to_string(),
        );
    }
    block
        .serialize(STATE_BLOCK_SIZE)
        .expect("the abnix state block fits in one sector")
}

/// The boot state GRUB acts on, read from an environment block, and what is
/// wrong with the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedState {
    pub state: BootState,
    /// Each deviation from a block abnix writes, in words; empty for a
    /// clean block.
    pub problems: Vec<String>,
}

/// Reads the boot state from an environment block exactly as `grub.cfg`
/// does, so the result is what GRUB will act on even for a damaged block:
/// it starts from [`BootState::FALLBACK`], takes the variables GRUB's
/// `load_env` would load, and treats unknown values as `grub.cfg` does.
pub fn decode_state(bytes: &[u8]) -> DecodedState {
    let mut problems = Vec::new();
    let (block, problem) = EnvBlock::parse_prefix(bytes);
    if let Some(err) = problem {
        problems.push(err.to_string());
    }
    if bytes.len() != STATE_BLOCK_SIZE {
        problems.push(format!(
            "the block is {} bytes, not {STATE_BLOCK_SIZE}",
            bytes.len()
        ));
    }
    if block.get(FORMAT_KEY) != Some(FORMAT) {
        problems.push(format!(
            "{FORMAT_KEY} is {:?}, expected {FORMAT:?}",
            block.get(FORMAT_KEY)
        ));
    }
    let mut state = BootState::FALLBACK;
    match block.get(PRIMARY_KEY) {
        Some("a") => state.primary = Slot::A,
        Some("b") => state.primary = Slot::B,
        other => problems.push(format!(
            "{PRIMARY_KEY} is {other:?}; GRUB tries slot {} first",
            state.primary
        )),
    }
    for slot in Slot::ALL {
        let key = slot_key(slot);
        let value = block.get(key);
        let parsed = match value {
            Some("g") => Some(SlotState::Good),
            Some("x") => Some(SlotState::Bad),
            Some(v) => v
                .parse::<u8>()
                .ok()
                .filter(|_| v.len() == 1)
                .map(|tries_left| SlotState::Trial { tries_left }),
            None => None,
        };
        match parsed {
            Some(s) => state.slots[slot_index(slot)] = s,
            None => problems.push(format!(
                "{key} is {value:?}; GRUB treats slot {slot} as bad"
            )),
        }
    }
    DecodedState { state, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::state::{SlotFiles, MAX_TRIES};

    fn block(text: &str, size: usize) -> Vec<u8> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(size, b'#');
        bytes
    }

    #[test]
    fn parses_what_grub_editenv_writes() {
        // `grub-editenv f create; grub-editenv f set x='a\b' 'nl=1
        // 2'` writes this (1024 bytes, escapes as in envblk.c).
        let bytes = block(
            "# GRUB Environment Block\nx=a\\\\b\nnl=1\\\n2\nsaved_entry=0\n",
            1024,
        );
        let env = EnvBlock::parse(&bytes).unwrap();
        assert_eq!(env.get("x"), Some("a\\b"));
        assert_eq!(env.get("nl"), Some("1\n2"));
        assert_eq!(env.get("saved_entry"), Some("0"));
        assert_eq!(env.serialize(1024).unwrap(), bytes);
    }

    #[test]
    fn round_trips_any_value() {
        let mut env = EnvBlock::default();
        env.set("plain", "value");
        env.set("tricky", "back\\slash\nnew line = # ' \"");
        env.set("empty", "");
        let bytes = env.serialize(512).unwrap();
        assert_eq!(bytes.len(), 512);
        assert_eq!(EnvBlock::parse(&bytes).unwrap(), env);
        env.set("plain", "changed");
        assert_eq!(env.vars().next(), Some(("plain", "changed")));
    }

    #[test]
    fn skips_comment_lines_and_keeps_the_last_duplicate() {
        let bytes = block(
            "# GRUB Environment Block\n# note \\\nstill comment\nk=1\nk=2\n",
            100,
        );
        let env = EnvBlock::parse(&bytes).unwrap();
        assert_eq!(env.vars().collect::<Vec<_>>(), [("k", "2")]);
    }

    #[test]
    fn rejects_malformed_blocks_naming_the_problem() {
        assert_eq!(
            EnvBlock::parse(&block("# GRUB Environment Blob\n", 64)),
            Err(EnvError::NoSignature)
        );
        assert_eq!(
            EnvBlock::parse(b"# GRUB Environment Block\nno_equals\n"),
            Err(EnvError::MissingEquals { offset: 25 })
        );
        assert_eq!(
            EnvBlock::parse(b"# GRUB Environment Block\nk=unterminated"),
            Err(EnvError::Unterminated { name: "k".into() })
        );
        assert_eq!(
            EnvBlock::parse(b"# GRUB Environment Block\nk=ends in escape\\"),
            Err(EnvError::Unterminated { name: "k".into() })
        );
        assert_eq!(
            EnvBlock::parse(b"# GRUB Environment Block\n=1\n"),
            Err(EnvError::InvalidName {
                name: String::new(),
                offset: 25
            })
        );
        assert_eq!(
            EnvBlock::parse(b"# GRUB Environment Block\nk=\xff\n"),
            Err(EnvError::NotUtf8 { offset: 25 })
        );
        assert_eq!(
            EnvBlock::parse(b"# GRUB Environment Block\nk=a\0b\n"),
            Err(EnvError::NulInValue { name: "k".into() })
        );
        let err = EnvBlock::parse(b"# GRUB Environment Block\nk=x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "GRUB environment block: the value of \"k\" runs past the end of the block"
        );
    }

    #[test]
    fn serialize_refuses_what_grub_could_not_read_back() {
        let mut env = EnvBlock::default();
        env.set("k", &"v".repeat(600));
        assert_eq!(
            env.serialize(512),
            Err(EnvError::TooLarge {
                needed: 25 + 2 + 600 + 1,
                size: 512
            })
        );
        for bad in ["", "#x", "a=b", "a\nb", "a\\b"] {
            let mut env = EnvBlock::default();
            env.set(bad, "1");
            assert!(
                matches!(env.serialize(512), Err(EnvError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        let mut env = EnvBlock::default();
        env.set("k", "a\0");
        assert_eq!(
            env.serialize(512),
            Err(EnvError::NulInValue { name: "k".into() })
        );
    }

    #[test]
    fn parse_prefix_keeps_the_variables_before_the_damage() {
        let (env, problem) = EnvBlock::parse_prefix(b"# GRUB Environment Block\na=1\nbroken");
        assert_eq!(env.get("a"), Some("1"));
        assert_eq!(problem, Some(EnvError::MissingEquals { offset: 29 }));
    }

    fn all_states() -> Vec<BootState> {
        let mut slot_states = vec![SlotState::Bad, SlotState::Good];
        slot_states.extend((0..=MAX_TRIES).map(|tries_left| SlotState::Trial { tries_left }));
        let mut states = Vec::new();
        for primary in Slot::ALL {
            for &a in &slot_states {
                for &b in &slot_states {
                    states.push(BootState {
                        primary,
                        slots: [a, b],
                    });
                }
            }
        }
        states
    }

    #[test]
    fn state_block_round_trips_with_a_fixed_layout() {
        let layout = |bytes: &[u8]| -> Vec<usize> {
            bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'=' || b == b'\n')
                .map(|(i, _)| i)
                .collect()
        };
        let reference = layout(&encode_state(&BootState::FALLBACK));
        for state in all_states() {
            let bytes = encode_state(&state);
            assert_eq!(bytes.len(), STATE_BLOCK_SIZE);
            assert_eq!(layout(&bytes), reference, "{state:?}");
            let decoded = decode_state(&bytes);
            assert_eq!(decoded.state, state);
            assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        }
        let text = String::from_utf8(encode_state(&BootState::FALLBACK)).unwrap();
        assert!(text.starts_with(
            "# GRUB Environment Block\nabnix_format=1\nabnix_primary=a\nabnix_a=x\nabnix_b=x\n#"
        ));
    }

    #[test]
    fn damaged_blocks_decode_to_what_grub_does() {
        let garbage = decode_state(&[0x5a; STATE_BLOCK_SIZE]);
        assert_eq!(garbage.state, BootState::FALLBACK);
        assert!(garbage.problems[0].starts_with("not a GRUB environment block"));

        let odd = block(
            "# GRUB Environment Block\nabnix_format=1\nabnix_primary=c\nabnix_a=g\nabnix_b=12\n",
            STATE_BLOCK_SIZE,
        );
        let decoded = decode_state(&odd);
        assert_eq!(
            decoded.state,
            BootState {
                primary: Slot::A,
                slots: [SlotState::Good, SlotState::Bad]
            }
        );
        assert_eq!(
            decoded.problems,
            [
                "abnix_primary is Some(\"c\"); GRUB tries slot a first",
                "abnix_b is Some(\"12\"); GRUB treats slot b as bad"
            ]
        );

        // What grub-editenv would leave: 1024 bytes, a foreign variable.
        let foreign = block(
            "# GRUB Environment Block\nsaved_entry=x\nabnix_format=1\nabnix_primary=b\nabnix_a=g\nabnix_b=3\n",
            1024,
        );
        let decoded = decode_state(&foreign);
        assert_eq!(
            decoded.state,
            BootState {
                primary: Slot::B,
                slots: [SlotState::Good, SlotState::Trial { tries_left: 3 }]
            }
        );
        assert_eq!(decoded.problems, ["the block is 1024 bytes, not 512"]);
    }

    /// The point of the fixed layout: a write of `new` over `old` torn at
    /// any byte decodes cleanly, each value old or new, and GRUB still
    /// boots a slot with complete files.
    #[test]
    fn torn_state_writes_decode_to_old_or_new_values() {
        let a_good = BootState::FALLBACK.mark_good(Slot::A);
        let b_trial = a_good.activate(Slot::B, 3).unwrap();
        let b_good = b_trial.mark_good(Slot::B);
        let transitions = [
            (BootState::FALLBACK, a_good),
            (a_good, a_good.mark_bad(Slot::B)),
            (a_good.mark_bad(Slot::B), b_trial),
            (
                b_trial,
                b_trial
                    .next_boot(
                        [SlotFiles {
                            complete: true,
                            marked_good: false,
                        }; 2],
                    )
                    .unwrap()
                    .state_after,
            ),
            (b_trial, b_good),
            (b_good, b_good.prefer(Slot::A).unwrap()),
            (b_good, b_good.mark_bad(Slot::A)),
            (
                b_good.mark_bad(Slot::A),
                b_good.mark_bad(Slot::A).activate(Slot::A, 9).unwrap(),
            ),
        ];
        for (old, new) in transitions {
            let (old_bytes, new_bytes) = (encode_state(&old), encode_state(&new));
            for cut in 0..=STATE_BLOCK_SIZE {
                let mut torn = new_bytes[..cut].to_vec();
                torn.extend_from_slice(&old_bytes[cut..]);
                let decoded = decode_state(&torn);
                assert!(
                    decoded.problems.is_empty(),
                    "cut {cut}: {:?}",
                    decoded.problems
                );
                let got = decoded.state;
                assert!(got.primary == old.primary || got.primary == new.primary);
                for i in 0..2 {
                    assert!(got.slots[i] == old.slots[i] || got.slots[i] == new.slots[i]);
                }
                // Slot files are complete for every slot the old or new
                // state lets boot; the torn state must pick one of them.
                let files = [0, 1].map(|i| SlotFiles {
                    complete: old.slots[i] != SlotState::Bad || new.slots[i] != SlotState::Bad,
                    marked_good: false,
                });
                let next = got.next_boot(files).expect("a torn state still boots");
                assert!(files[slot_index(next.slot)].complete);
            }
        }
    }
}
