//! GRUB scripts: `grub.cfg`, written once at install, and each slot's
//! `slot.cfg`, written with the slot's boot files.
//!
//! `grub.cfg` holds all the logic and never changes; the boot state it acts
//! on is in the environment block (see [`super::env`]) and the kernel
//! command line of each slot is in that slot's `slot.cfg`. What the script
//! does is modelled by `BootState::next_boot`.
//!
//! GRUB script has no arithmetic, so the decrement of a trial slot's tries is
//! spelled out for each count; it has no variable indirection either, so the
//! per-slot part is generated once per slot.

use std::fmt::Write as _;

use super::env::{slot_key, state_keys, state_value};
use crate::boot::esp;
use crate::boot::state::{BootState, SlotState, MAX_TRIES};
use abnix_formats::slot::Slot;

/// Options of the generated `grub.cfg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrubCfgOptions {
    /// Mirror GRUB's console on the PC's first serial port (115200 baud),
    /// for headless machines and tests: x86 only
    /// ([`abnix_formats::layout::Arch::has_pc_serial_port`]).
    pub(crate) serial_console: bool,
}

/// The `grub.cfg` that GRUB loads from `$prefix` (`/abnix` on the ESP).
pub(crate) fn grub_cfg(options: &GrubCfgOptions) -> String {
    let env = esp::absolute(esp::GRUB_ENV);
    let fallback = BootState::FALLBACK;
    let mut cfg = String::new();
    cfg.push_str(
        "# abnix boot script. Written once at install and never changed: the boot\n\
         # state is in grubenv, each slot's kernel command line in its slot.cfg.\n",
    );
    if options.serial_console {
        cfg.push_str(
            "serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n",
        );
    }
    cfg.push_str("\n# What a missing or damaged grubenv means: no slot is eligible.\n");
    writeln!(cfg, "set abnix_primary={}", fallback.primary).unwrap();
    for slot in Slot::ALL {
        writeln!(
            cfg,
            "set {}={}",
            slot_key(slot),
            state_value(fallback.slot(slot))
        )
        .unwrap();
    }
    writeln!(
        cfg,
        "# Only these variables: nothing in grubenv can change root or prefix.\n\
         load_env --file {env} {}",
        state_keys().join(" ")
    )
    .unwrap();
    cfg.push_str(&format!(
        r#"
# Boots slot $1 if its slot.cfg loads its kernel and initrd; returns if not.
function abnix_boot {{
  set abnix_loaded=
  if [ -f /{dir}/$1/slot.cfg ]; then
    source /{dir}/$1/slot.cfg
  fi
  if [ "$abnix_loaded" = "$1" ]; then
    boot
  fi
}}

# Boots slot $1 if it holds the last version proved good (a file
# outside grubenv, so it survives a damaged block); returns if not.
function abnix_boot_good {{
  if [ -f /{dir}/$1/{mark} ]; then
    abnix_boot $1
  fi
}}
"#,
        dir = esp::ABNIX_DIR,
        mark = esp::GRUB_GOOD_MARK,
    ));
    for slot in Slot::ALL {
        cfg.push_str(&try_slot_function(slot, &env));
    }
    // The rescue path changes no state: save_env cannot write a damaged or
    // missing block, and an intact block without an eligible slot has no
    // tries worth resetting (docs/boot.md, "The script").
    cfg.push_str(&format!(
        r#"
{normal}
echo "{RESCUE_MESSAGE}"
{rescue_good}
echo "abnix: no slot marked good loads; booting the first slot that loads"
{rescue_any}
echo "abnix: no slot has loadable boot files"
sleep 10
reboot
"#,
        normal = in_boot_order("abnix_try_a", "abnix_try_b"),
        rescue_good = in_boot_order("abnix_boot_good a", "abnix_boot_good b"),
        rescue_any = in_boot_order("abnix_boot a", "abnix_boot b"),
    ));
    cfg
}

/// What `grub.cfg` prints when it takes the rescue path: no slot is
/// eligible by the state block (see `BootState::next_boot`).
pub const RESCUE_MESSAGE: &str = "abnix: no slot is eligible; booting the last good slot";

/// `abnix_try_<slot>`: boots the slot if its state makes it eligible,
/// recording a trial attempt first.
fn try_slot_function(slot: Slot, env: &str) -> String {
    let var = slot_key(slot);
    let mut decrement = String::new();
    for tries in (1..=MAX_TRIES).rev() {
        let keyword = if tries == MAX_TRIES { "if" } else { "elif" };
        let before = state_value(SlotState::Trial { tries_left: tries });
        let after = state_value(SlotState::Trial {
            tries_left: tries - 1,
        });
        writeln!(
            decrement,
            "  {keyword} [ \"${var}\" = {before} ]; then\n    set {var}={after}\n    set abnix_trial=y"
        )
        .unwrap();
    }
    decrement.push_str("  fi\n");
    format!(
        r#"
function abnix_try_{slot} {{
  if [ "${var}" = {good} ]; then
    echo "abnix: booting slot {slot}"
    abnix_boot {slot}
    return
  fi
  set abnix_trial=n
{decrement}  if [ "$abnix_trial" = y ]; then
    # Record the attempt before booting: a trial whose attempt cannot be
    # saved does not boot at all, so it can never boot forever.
    if save_env --file {env} {var}; then
      echo "abnix: booting slot {slot} on trial, ${var} tries left after this one"
      abnix_boot {slot}
      # Its files did not load: the trial has failed.
      set {var}={failed}
      save_env --file {env} {var}
    fi
  fi
}}
"#,
        good = state_value(SlotState::Good),
        failed = state_value(SlotState::Trial { tries_left: 0 }),
    )
}

fn in_boot_order(for_a: &str, for_b: &str) -> String {
    format!(
        "if [ \"$abnix_primary\" = b ]; then\n  {for_b}\n  {for_a}\nelse\n  {for_a}\n  {for_b}\nfi"
    )
}

/// Why a kernel command line cannot go into `slot.cfg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error(
        "kernel argument {0:?} cannot pass through GRUB unchanged: GRUB escapes single quotes \
         and backslashes (other than \\xHH) with a backslash, which the kernel does not undo"
    )]
    Escaped(String),
    #[error(
        "kernel argument {0:?} has double quotes GRUB cannot reproduce: only \"name=value\" \
         and name=\"value\" are supported"
    )]
    Quotes(String),
    #[error("the kernel command line has an unterminated double quote")]
    Unterminated,
    #[error("the kernel command line contains the control character {0:?}")]
    Control(char),
}

/// Splits a kernel command line into arguments like the kernel's
/// `next_arg` (lib/cmdline.c): whitespace separates them, except inside
/// double quotes, which stay part of the argument.
pub(crate) fn kernel_args(cmdline: &str) -> Result<Vec<&str>, CmdlineError> {
    if let Some(c) = cmdline.chars().find(|c| c.is_control()) {
        return Err(CmdlineError::Control(c));
    }
    let mut args = Vec::new();
    let mut start = None;
    let mut in_quote = false;
    for (i, c) in cmdline.char_indices() {
        if c == ' ' && !in_quote {
            if let Some(s) = start.take() {
                args.push(&cmdline[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
        if c == '"' {
            in_quote = !in_quote;
        }
    }
    if in_quote {
        return Err(CmdlineError::Unterminated);
    }
    if let Some(s) = start {
        args.push(&cmdline[s..]);
    }
    Ok(args)
}

/// The argument GRUB's `linux` command must get so the kernel sees `arg`.
///
/// GRUB builds the command line from its arguments (grub-core/lib/cmdline.c):
/// it wraps an argument containing a space in double quotes and puts a
/// backslash before `\`, `'` and `"` (except in `\xHH`). So an argument
/// with quotes is passed without them and GRUB adds them back where needed:
/// `name="a b"` reaches the kernel as `"name=a b"`, which the kernel and
/// systemd read as the same parameter. Arguments GRUB would alter otherwise
/// are refused.
fn grub_word(arg: &str) -> Result<String, CmdlineError> {
    let unquoted = match arg.matches('"').count() {
        0 => arg.to_owned(),
        2 if arg.starts_with('"') && arg.ends_with('"') => arg[1..arg.len() - 1].to_owned(),
        2 => match arg.split_once('=') {
            Some((name, value))
                if !name.contains('"') && value.starts_with('"') && value.ends_with('"') =>
            {
                format!("{name}={}", &value[1..value.len() - 1])
            }
            _ => return Err(CmdlineError::Quotes(arg.to_owned())),
        },
        _ => return Err(CmdlineError::Quotes(arg.to_owned())),
    };
    let bytes = unquoted.as_bytes();
    let escaped_by_grub = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'\''
            || (b == b'\\'
                && !(bytes.get(i + 1) == Some(&b'x')
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 3).is_some_and(u8::is_ascii_hexdigit)))
    });
    if escaped_by_grub {
        return Err(CmdlineError::Escaped(arg.to_owned()));
    }
    Ok(unquoted)
}

/// `slot.cfg` of a slot: loads its kernel with its command line plus
/// `abnix.slot=<slot>`, then its initrd, and sets `abnix_loaded` to the slot
/// only if both loaded. Each argument is single-quoted, so GRUB expands
/// nothing in it.
pub fn slot_cfg(slot: Slot, cmdline: &str) -> Result<String, CmdlineError> {
    let mut words = Vec::new();
    for arg in kernel_args(cmdline)? {
        words.push(format!("'{}'", grub_word(arg)?));
    }
    words.push(format!("abnix.slot={slot}"));
    Ok(format!(
        "# abnix: loads slot {slot}. Written after its kernel, initrd and slot.json; removed\n\
         # before the slot is rewritten. grub.cfg sources it.\n\
         if linux {kernel} {args}; then\n\
         \x20 if initrd {initrd}; then\n\
         \x20   set abnix_loaded={slot}\n\
         \x20 fi\n\
         fi\n",
        kernel = esp::absolute(&esp::kernel(slot)),
        initrd = esp::absolute(&esp::initrd(slot)),
        args = words.join(" "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// GRUB's own syntax checker must accept what we generate. It is part of
    /// grub-common, installed wherever these tests run.
    fn grub_script_check(script: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.cfg");
        std::fs::write(&path, script).unwrap();
        let out = Command::new("grub-script-check")
            .arg(&path)
            .output()
            .expect("grub-script-check (grub-common) must be installed");
        assert!(
            out.status.success(),
            "grub-script-check rejected:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn grub_cfg_is_valid_grub_script() {
        for serial_console in [false, true] {
            grub_script_check(&grub_cfg(&GrubCfgOptions { serial_console }));
        }
    }

    #[test]
    fn grub_cfg_sets_the_fallback_before_loading_only_abnix_variables() {
        let cfg = grub_cfg(&GrubCfgOptions::default());
        let defaults = cfg.find("set abnix_a=x").unwrap();
        let load = cfg
            .find("load_env --file /abnix/grubenv abnix_format abnix_primary abnix_a abnix_b\n")
            .unwrap();
        assert!(cfg.contains("set abnix_primary=a\n"));
        assert!(defaults < load);
        assert!(!cfg.contains("serial"));
    }

    #[test]
    fn grub_cfg_spells_out_every_decrement() {
        let cfg = grub_cfg(&GrubCfgOptions::default());
        for slot in Slot::ALL {
            let var = slot_key(slot);
            for tries in 1..=MAX_TRIES {
                let step = format!(
                    "[ \"${var}\" = {tries} ]; then\n    set {var}={}\n",
                    tries - 1
                );
                assert!(cfg.contains(&step), "missing {step:?}");
            }
            assert!(cfg.contains(&format!("if save_env --file /abnix/grubenv {var}; then")));
        }
    }

    #[test]
    fn grub_cfg_rescues_slots_marked_good_first() {
        let cfg = grub_cfg(&GrubCfgOptions::default());
        let mark = esp::absolute(&esp::grub_good_mark(Slot::A)).replace("/a/", "/$1/");
        assert!(cfg.contains(&format!("if [ -f {mark} ]; then\n    abnix_boot $1\n")));
        let rescue = &cfg[cfg.find(RESCUE_MESSAGE).unwrap()..];
        let normal = &cfg[..cfg.find(RESCUE_MESSAGE).unwrap()];
        assert!(
            !normal.contains("abnix_boot_good a"),
            "only the rescue path"
        );
        for slot in Slot::ALL {
            let good = rescue.find(&format!("abnix_boot_good {slot}\n")).unwrap();
            let any = rescue.find(&format!("abnix_boot {slot}\n")).unwrap();
            assert!(good < any, "slot {slot}");
        }
    }

    #[test]
    fn slot_cfg_passes_the_command_line_through_single_quotes() {
        let cfg = slot_cfg(
            Slot::B,
            "init=/nix/store/x-system/init  quiet $x;{}# a=\\x41",
        )
        .unwrap();
        assert_eq!(
            cfg.lines().nth(2).unwrap(),
            "if linux /abnix/b/kernel 'init=/nix/store/x-system/init' 'quiet' '$x;{}#' 'a=\\x41' \
             abnix.slot=b; then"
        );
        assert!(cfg.contains("  if initrd /abnix/b/initrd; then\n    set abnix_loaded=b\n"));
        grub_script_check(&cfg);
        grub_script_check(&slot_cfg(Slot::A, "").unwrap());
    }

    #[test]
    fn quoted_kernel_arguments_lose_their_quotes_for_grub_to_add() {
        let cfg = slot_cfg(Slot::A, r#"dyndbg="file x.c +p" "x=a b" y="" z="1""#).unwrap();
        assert!(cfg.contains(r#"'dyndbg=file x.c +p' 'x=a b' 'y=' 'z=1' abnix.slot=a"#));
        grub_script_check(&cfg);
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            kernel_args(r#"  a "b c" d="e f"g  h "#).unwrap(),
            ["a", r#""b c""#, r#"d="e f"g"#, "h"]
        );
        assert_eq!(kernel_args("").unwrap(), Vec::<&str>::new());
        assert_eq!(kernel_args(r#"a "b"#), Err(CmdlineError::Unterminated));
        assert_eq!(kernel_args("a\tb"), Err(CmdlineError::Control('\t')));
    }

    #[test]
    fn refuses_arguments_grub_would_alter() {
        for arg in ["it's", r"back\slash", r"end\", r"bad\x4g"] {
            assert_eq!(
                slot_cfg(Slot::A, arg),
                Err(CmdlineError::Escaped(arg.to_owned())),
                "{arg}"
            );
        }
        for arg in [r#"a"b"c"#, r#"d="e f"g"#, r#""a"="b""#, r#"x="""""#] {
            assert_eq!(
                slot_cfg(Slot::A, arg),
                Err(CmdlineError::Quotes(arg.to_owned())),
                "{arg}"
            );
        }
        let err = slot_cfg(Slot::A, "x=it's").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("kernel argument \"x=it's\" cannot pass through GRUB"));
    }
}
