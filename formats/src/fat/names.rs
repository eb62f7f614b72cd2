//! Names: path splitting, long-name rules, 8.3 short names with numeric
//! tails, and the case-insensitive matching FAT uses.
//!
//! Format facts are from the Microsoft FAT specification (fatgen103):
//! "FAT Long Directory Entries" (which characters a long name may hold, 255
//! UTF-16 units at most), "DIR_Name" (which characters a short name may hold)
//! and "The Basis-Name Generation Algorithm" / "The Numeric-Tail Generation
//! Algorithm" (how a short name is derived from a long one).

use std::collections::HashSet;

use super::FatError;

/// An 8.3 name as stored: 8 bytes of base, 3 of extension, space padded.
pub(super) type ShortName = [u8; 11];

/// The longest long name, in UTF-16 units (fatgen103: 255 characters).
pub(super) const MAX_LONG_NAME_UNITS: usize = 255;

/// Characters no long name may contain (fatgen103: the short-name set plus
/// `. + , ; = [ ]` and space are allowed; these are not).
const ILLEGAL_IN_LONG_NAME: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// Punctuation a short name may contain besides A-Z and 0-9 (fatgen103,
/// "DIR_Name"). Bytes above 127 are allowed there too, but mean different
/// letters in different OEM code pages, so abnix never writes them.
const SHORT_NAME_PUNCTUATION: &[u8] = b"$%'-_@~`!(){}^#&";

/// Windows NT extension in DIR_NTRes, honoured by Linux (msdos_fs.h
/// CASE_LOWER_BASE / CASE_LOWER_EXT) and EDK2: the base or extension of a
/// short-only name is shown in lower case.
pub(super) const NT_LOWER_BASE: u8 = 0x08;
pub(super) const NT_LOWER_EXT: u8 = 0x10;

/// Splits a '/'-separated path into its components; a leading and a trailing
/// '/' are optional, "" and "/" are the root (no components).
pub(super) fn split_path(path: &str) -> Result<Vec<&str>, FatError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|component| {
            check_long_name(component)
                .map_err(|why| FatError::InvalidName(format!("{path}: {why}")))?;
            Ok(component)
        })
        .collect()
}

/// Why `name` cannot be a long name, if it cannot.
fn check_long_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty path component".into());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not a name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || ILLEGAL_IN_LONG_NAME.contains(c))
    {
        return Err(format!("illegal character {c:?} in '{name}'"));
    }
    // Windows and Linux strip trailing dots and spaces when they look a name
    // up, so a stored name ending in one could never be found again; leading
    // spaces are ignored likewise (fatgen103, "Name Limits").
    if name.ends_with('.') || name.ends_with(' ') || name.starts_with(' ') {
        return Err(format!(
            "'{name}' starts with a space or ends with a dot or space"
        ));
    }
    let units = name.encode_utf16().count();
    if units > MAX_LONG_NAME_UNITS {
        return Err(format!(
            "'{name}' is {units} UTF-16 units long, more than {MAX_LONG_NAME_UNITS}"
        ));
    }
    Ok(())
}

/// Whether two names are the same under FAT's case-insensitive matching.
/// FAT drivers compare through a one-to-one upcase table, so a character
/// whose upper case is several characters (German sharp s) stays as it is.
pub(super) fn same_name(a: &str, b: &str) -> bool {
    fn upcase(c: char) -> char {
        let mut upper = c.to_uppercase();
        match (upper.next(), upper.next()) {
            (Some(single), None) => single,
            _ => c,
        }
    }
    a.chars().map(upcase).eq(b.chars().map(upcase))
}

fn short_name_byte(c: char) -> Option<u8> {
    if c.is_ascii_alphanumeric() {
        Some(c.to_ascii_uppercase() as u8)
    } else if c.is_ascii() && SHORT_NAME_PUNCTUATION.contains(&(c as u8)) {
        Some(c as u8)
    } else {
        None
    }
}

/// Copies the short-name form of `part` into `out`; true if anything was
/// lost on the way (a character replaced, dropped or cut off). Upper-casing
/// alone loses nothing: lookups ignore case.
fn fill_short_part(part: &str, out: &mut [u8]) -> bool {
    let mut lossy = false;
    let mut len = 0;
    for c in part.chars() {
        if c == ' ' || c == '.' {
            lossy = true;
            continue;
        }
        if len == out.len() {
            return true;
        }
        out[len] = short_name_byte(c).unwrap_or_else(|| {
            lossy = true;
            b'_'
        });
        len += 1;
    }
    lossy
}

/// The 11-byte volume label for `label`, upper-cased and space padded;
/// `None` for an empty label. A label follows the short-name rules, except
/// that it may contain spaces (not leading) and has no extension.
pub(super) fn volume_label(label: &str) -> Result<Option<ShortName>, FatError> {
    if label.is_empty() {
        return Ok(None);
    }
    let valid = label.len() <= 11
        && !label.starts_with(' ')
        && label
            .chars()
            .all(|c| c == ' ' || short_name_byte(c).is_some());
    if !valid {
        return Err(FatError::InvalidName(format!(
            "volume label '{label}': at most 11 letters, digits, spaces or {}",
            String::from_utf8_lossy(SHORT_NAME_PUNCTUATION)
        )));
    }
    let mut out = [b' '; 11];
    for (dst, c) in out.iter_mut().zip(label.chars()) {
        *dst = short_name_byte(c).unwrap_or(b' ');
    }
    Ok(Some(out))
}

/// The basis name of fatgen103's algorithm: leading dots and all spaces
/// dropped, the part before the last dot as base (8 at most), the part after
/// it as extension (3 at most), anything not allowed replaced by '_'.
/// Returns it with a flag that says whether the conversion lost information
/// (then the short name needs a numeric tail).
pub(super) fn basis_name(long: &str) -> (ShortName, bool) {
    let stripped = long.trim_start_matches('.');
    let mut lossy = stripped.len() != long.len();
    let (base, ext) = match stripped.rfind('.') {
        Some(dot) => (&stripped[..dot], &stripped[dot + 1..]),
        None => (stripped, ""),
    };
    let mut name = [b' '; 11];
    lossy |= fill_short_part(base, &mut name[..8]);
    lossy |= fill_short_part(ext, &mut name[8..]);
    if name[0] == b' ' {
        name[0] = b'_';
        lossy = true;
    }
    (name, lossy)
}

/// A short name for `long` that no entry in `taken` has: the basis name
/// itself when it is exact and free, else the basis with the first free
/// numeric tail "~1" .. "~999999" (fatgen103, "Numeric-Tail Generation").
pub(super) fn unique_short_name(long: &str, taken: &HashSet<ShortName>) -> Option<ShortName> {
    let (basis, lossy) = basis_name(long);
    if !lossy && !taken.contains(&basis) {
        return Some(basis);
    }
    let base_len = basis[..8].iter().position(|&b| b == b' ').unwrap_or(8);
    (1..=999_999u32).find_map(|n| {
        let tail = format!("~{n}");
        let keep = base_len.min(8 - tail.len());
        let mut candidate = basis;
        candidate[..8].fill(b' ');
        candidate[..keep].copy_from_slice(&basis[..keep]);
        candidate[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        (!taken.contains(&candidate)).then_some(candidate)
    })
}

/// How a short-only entry's name reads: "BASE.EXT", with DIR_NTRes case bits
/// applied. A leading 0x05 stands for 0xE5 (fatgen103, "DIR_Name[0]").
/// Bytes above 127 are OEM code-page characters; they are shown as the
/// Latin-1 character of the same value, which is exact for ASCII only.
pub(super) fn short_name_display(name: &ShortName, nt_res: u8) -> String {
    let mut raw = *name;
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    let part = |bytes: &[u8], lower: bool| -> String {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        let text = text.trim_end_matches(' ');
        if lower {
            text.to_ascii_lowercase()
        } else {
            text.to_string()
        }
    };
    let base = part(&raw[..8], nt_res & NT_LOWER_BASE != 0);
    let ext = part(&raw[8..], nt_res & NT_LOWER_EXT != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(s: &str) -> ShortName {
        let mut name = [b' '; 11];
        let (base, ext) = s.split_once('.').unwrap_or((s, ""));
        name[..base.len()].copy_from_slice(base.as_bytes());
        name[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
        name
    }

    #[test]
    fn paths_split_with_optional_slashes() {
        assert_eq!(split_path("").unwrap(), Vec::<&str>::new());
        assert_eq!(split_path("/").unwrap(), Vec::<&str>::new());
        assert_eq!(split_path("/EFI/BOOT/").unwrap(), vec!["EFI", "BOOT"]);
        assert_eq!(
            split_path("loader/entries/a+3.conf").unwrap(),
            vec!["loader", "entries", "a+3.conf"]
        );
    }

    #[test]
    fn bad_paths_are_rejected_with_the_reason() {
        for (path, why) in [
            ("a//b", "empty path component"),
            ("a/../b", "'..' is not a name"),
            ("a/b:c", "illegal character ':'"),
            ("tab\there", "illegal character '\\t'"),
            ("trailing.", "ends with a dot"),
            (" lead", "starts with a space"),
        ] {
            match split_path(path) {
                Err(FatError::InvalidName(msg)) => {
                    assert!(msg.starts_with(path) && msg.contains(why), "{path}: {msg}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        let long = "x".repeat(256);
        assert!(
            matches!(split_path(&long), Err(FatError::InvalidName(m)) if m.contains("256 UTF-16 units"))
        );
        assert!(split_path(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn matching_ignores_case() {
        assert!(same_name("BOOTX64.EFI", "bootx64.efi"));
        assert!(same_name("grüße", "GRÜßE"));
        assert!(!same_name("grüße", "GRÜSSE"));
        assert!(!same_name("a", "ab"));
    }

    #[test]
    fn exact_short_names_need_no_tail() {
        let none = HashSet::new();
        assert_eq!(
            unique_short_name("BOOTX64.EFI", &none),
            Some(short("BOOTX64.EFI"))
        );
        assert_eq!(unique_short_name("kernel", &none), Some(short("KERNEL")));
        assert_eq!(unique_short_name("grubenv", &none), Some(short("GRUBENV")));
    }

    #[test]
    fn lossy_short_names_get_numeric_tails() {
        let mut taken = HashSet::new();
        let first = unique_short_name("loader.conf", &taken).unwrap();
        assert_eq!(first, short("LOADER~1.CON"));
        taken.insert(first);
        assert_eq!(
            unique_short_name("loader.config", &taken),
            Some(short("LOADER~2.CON"))
        );
        assert_eq!(
            unique_short_name("abnix-a+3.conf", &HashSet::new()),
            Some(short("ABNIX-~1.CON"))
        );
        assert_eq!(
            unique_short_name(".hidden", &HashSet::new()),
            Some(short("HIDDEN~1"))
        );
        assert_eq!(
            unique_short_name("a b", &HashSet::new()),
            Some(short("AB~1"))
        );
        assert_eq!(
            unique_short_name("ünï", &HashSet::new()),
            Some(short("_N_~1"))
        );
    }

    #[test]
    fn a_taken_exact_name_gets_a_tail() {
        let taken = HashSet::from([short("KERNEL")]);
        assert_eq!(unique_short_name("Kernel", &taken), Some(short("KERNEL~1")));
    }

    #[test]
    fn tails_shorten_the_base_as_they_grow() {
        let mut taken = HashSet::new();
        for _ in 0..10 {
            taken.insert(unique_short_name("longfilename.txt", &taken).unwrap());
        }
        assert!(taken.contains(&short("LONGFI~9.TXT")));
        assert!(taken.contains(&short("LONGF~10.TXT")));
    }

    #[test]
    fn volume_labels_are_upper_cased_and_checked() {
        assert_eq!(volume_label("").unwrap(), None);
        assert_eq!(volume_label("abnix-esp").unwrap(), Some(*b"ABNIX-ESP  "));
        assert_eq!(volume_label("NO NAME").unwrap(), Some(*b"NO NAME    "));
        for bad in ["twelve chars", " lead", "a.b", "ü"] {
            assert!(
                matches!(volume_label(bad), Err(FatError::InvalidName(m)) if m.contains(bad)),
                "{bad}"
            );
        }
    }

    #[test]
    fn short_names_display_with_case_bits() {
        assert_eq!(short_name_display(&short("BOOTX64.EFI"), 0), "BOOTX64.EFI");
        assert_eq!(
            short_name_display(&short("BOOTX64.EFI"), NT_LOWER_BASE | NT_LOWER_EXT),
            "bootx64.efi"
        );
        assert_eq!(
            short_name_display(&short("LOADER"), NT_LOWER_BASE),
            "loader"
        );
        assert_eq!(
            short_name_display(&short("README.TXT"), NT_LOWER_EXT),
            "README.txt"
        );
        let mut kanji = short("XAB");
        kanji[0] = 0x05;
        assert_eq!(short_name_display(&kanji, 0), "\u{e5}AB");
    }
}
