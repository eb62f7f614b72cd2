//! The unit files in systemd/: valid for systemd, running commands the
//! binary has, linking man pages it generates, and the same as the units
//! nix/modules/host.nix generates.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use abnix_core::units::parse_duration;

const UNITS: [&str; 6] = [
    "abnix-mark-good.service",
    "abnix-grow.service",
    "abnix-update.service",
    "abnix-update.timer",
    "abnix-health-deadline.service",
    "abnix-health-deadline.timer",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit(name: &str) -> String {
    fs::read_to_string(repo().join("systemd").join(name)).unwrap()
}

/// The values of `key=` in a unit file, in order.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

fn value(name: &str, key: &str) -> String {
    let found = values(&unit(name), key);
    assert_eq!(found.len(), 1, "{name}: {key}= {found:?}");
    found[0].clone()
}

/// `systemd-analyze verify` finds nothing wrong, with the binary where the
/// units expect it.
#[test]
fn systemd_accepts_the_units() {
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        let text = unit(name).replace("/usr/bin/abnix-update", env!("CARGO_BIN_EXE_abnix-update"));
        fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(UNITS.map(|name| dir.path().join(name)))
        .output()
        .expect("running systemd-analyze (install systemd)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && report.is_empty(), "{report}");
}

/// Each ExecStart= of the updater names a command and flags it has.
#[test]
fn the_units_run_commands_the_binary_has() {
    for name in [
        "abnix-mark-good.service",
        "abnix-update.service",
        "abnix-grow.service",
    ] {
        let exec = value(name, "ExecStart");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(args[0], "/usr/bin/abnix-update", "{name}");
        let out = Command::new(env!("CARGO_BIN_EXE_abnix-update"))
            .args(&args[1..])
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {exec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The settings that matter are the same here and in the NixOS module
/// (whose defaults are nix/lib/pure.nix's).
#[test]
fn the_units_match_the_nixos_module() {
    let host = fs::read_to_string(repo().join("nix/modules/host.nix")).unwrap();
    let pure = fs::read_to_string(repo().join("nix/lib/pure.nix")).unwrap();
    let in_nix = |text: &str, what: &str| {
        assert!(
            text.contains(what),
            "the NixOS module does not have {what:?}"
        )
    };

    let mark_good = "abnix-mark-good.service";
    assert_eq!(value(mark_good, "Requires"), "boot-complete.target");
    assert_eq!(
        value(mark_good, "After"),
        "local-fs.target boot-complete.target"
    );
    assert_eq!(value(mark_good, "DefaultDependencies"), "no");
    assert!(value(mark_good, "ExecStart").ends_with("mark-good --config /etc/abnix/config.toml"));
    in_nix(&host, "requires = [ \"boot-complete.target\" ];");
    in_nix(&host, "unitConfig.DefaultDependencies = false;");
    in_nix(&host, "ExecStart = \"${update} mark-good ${withConfig}\";");
    assert_eq!(value(mark_good, "TimeoutStartSec"), "5min");
    in_nix(&host, "TimeoutStartSec = \"5min\";");

    let grow = "abnix-grow.service";
    assert_eq!(value(grow, "After"), "local-fs.target");
    assert_eq!(value(grow, "DefaultDependencies"), "no");
    assert_eq!(value(grow, "RemainAfterExit"), "yes");
    assert_eq!(value(grow, "WantedBy"), "multi-user.target");
    assert!(value(grow, "ExecStart").ends_with("grow --config /etc/abnix/config.toml"));
    in_nix(&host, "ExecStart = \"${update} grow ${withConfig}\";");

    let update = "abnix-update.service";
    assert_eq!(value(update, "Wants"), "network-online.target");
    assert_eq!(
        value(update, "After"),
        "network-online.target abnix-mark-good.service"
    );
    assert_eq!(value(update, "SuccessExitStatus"), "4 SIGTERM");
    assert_eq!(value(update, "NotifyAccess"), "main");
    assert_eq!(value(update, "Nice"), "19");
    assert_eq!(value(update, "IOSchedulingClass"), "idle");
    assert!(value(update, "ExecStart").ends_with("update --config /etc/abnix/config.toml"));
    // A backstop above the updater's own deadline, which records why.
    let timeout = value(update, "TimeoutStartSec");
    assert_eq!(timeout, "7h");
    assert!(parse_duration(&timeout).unwrap() > abnix_updater::config::DEFAULT_UPDATE_DEADLINE);
    in_nix(&host, "TimeoutStartSec = \"7h\";");
    in_nix(&host, "wants = [ \"network-online.target\" ];");
    in_nix(&host, "\"abnix-mark-good.service\"");
    in_nix(&host, "SuccessExitStatus = \"4 SIGTERM\";");
    in_nix(&host, "NotifyAccess = \"main\";");
    in_nix(&host, "Nice = 19;");
    in_nix(&host, "IOSchedulingClass = \"idle\";");
    in_nix(&host, "ExecStart = \"${update} update ${withConfig}\";");

    let timer = "abnix-update.timer";
    assert_eq!(value(timer, "OnBootSec"), "1min");
    in_nix(&host, "OnBootSec = \"1min\";");
    in_nix(
        &pure,
        &format!("checkInterval = \"{}\";", value(timer, "OnUnitActiveSec")),
    );
    in_nix(
        &pure,
        &format!("checkJitter = \"{}\";", value(timer, "RandomizedDelaySec")),
    );
    in_nix(&pure, "configFile = \"/etc/abnix/config.toml\";");

    let deadline = "abnix-health-deadline.timer";
    in_nix(
        &pure,
        &format!("healthTimeout = \"{}\";", value(deadline, "OnBootSec")),
    );
    assert_eq!(value(deadline, "AccuracySec"), "1s");
    in_nix(&host, "AccuracySec = \"1s\";");
    let script = value("abnix-health-deadline.service", "ExecStart");
    for step in [
        "systemctl is-active --quiet boot-complete.target",
        "(systemctl is-active abnix-update.service)\" = activating",
        "systemctl reboot",
    ] {
        assert!(script.contains(step), "{script}");
        in_nix(&host, step);
    }
    // A postponed deadline is tried again (deadline_script_... below).
    let deadline = "abnix-health-deadline.service";
    assert_eq!(value(deadline, "Restart"), "on-failure");
    assert_eq!(value(deadline, "RestartSec"), "1min");
    in_nix(&host, "Restart = \"on-failure\";");
    in_nix(&host, "RestartSec = \"1min\";");
    in_nix(&host, "exit 75");
}

/// What the health deadline's script does, run with a `systemctl` that
/// answers as the case says: (its exit code, whether it rebooted).
fn run_deadline_script(boot_complete: bool, update_state: &str) -> (i32, bool) {
    let exec = value("abnix-health-deadline.service", "ExecStart");
    let script = exec
        .strip_prefix("/bin/sh -c '")
        .and_then(|s| s.strip_suffix('\''))
        .expect("ExecStart=/bin/sh -c '...'")
        .replace("$$", "$");
    let dir = tempfile::tempdir().unwrap();
    let systemctl = dir.path().join("systemctl");
    fs::write(
        &systemctl,
        "#!/bin/sh\ncase \"$*\" in\n\
         'is-active --quiet boot-complete.target') [ \"$BOOT_COMPLETE\" = yes ] ;;\n\
         'is-active abnix-update.service') echo \"$UPDATE_STATE\"; [ \"$UPDATE_STATE\" = active ] ;;\n\
         reboot) touch \"$REBOOTED\" ;;\n\
         *) exit 99 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
    let rebooted = dir.path().join("rebooted");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("BOOT_COMPLETE", if boot_complete { "yes" } else { "no" })
        .env("UPDATE_STATE", update_state)
        .env("REBOOTED", &rebooted)
        .output()
        .unwrap();
    (out.status.code().unwrap(), rebooted.exists())
}

/// The deadline reboots an unhealthy host, spares a healthy one, and one
/// that is updating it spares only for now: it fails (75), so that
/// `Restart=on-failure` runs it again; its timer fires once per boot, and
/// a deadline that met an update and exited 0 would leave an unhealthy
/// trial running for good.
#[test]
fn the_health_deadline_reboots_an_unhealthy_host_once_no_update_runs() {
    assert_eq!(run_deadline_script(true, "inactive"), (0, false));
    assert_eq!(run_deadline_script(true, "activating"), (0, false));
    assert_eq!(run_deadline_script(false, "activating"), (75, false));
    assert!(run_deadline_script(false, "inactive").1);
    assert!(run_deadline_script(false, "failed").1);
}

/// The subcommands `abnix-update --help` lists.
fn listed_subcommands() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_abnix-update"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let commands = help
        .split_once("Commands:\n")
        .expect("--help lists the commands")
        .1;
    commands
        .lines()
        .take_while(|line| line.starts_with("  "))
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .filter(|name| name != "help")
        .collect()
}

/// The words of bash's `opts` for the command itself (clap_complete's
/// `abnix__update)` case), options left out.
fn bash_commands(script: &str) -> std::collections::BTreeSet<String> {
    let case = script
        .split_once("\n        abnix__update)\n")
        .expect("the bash completions' case of the command itself")
        .1;
    let opts = case
        .lines()
        .next()
        .and_then(|line| line.trim().strip_prefix("opts=\""))
        .and_then(|line| line.strip_suffix('"'))
        .expect("its opts=");
    opts.split_whitespace()
        .filter(|word| !word.starts_with('-'))
        .map(str::to_owned)
        .collect()
}

/// The names of zsh's `_abnix-update_commands` list (`'NAME:description'`).
fn zsh_commands(script: &str) -> std::collections::BTreeSet<String> {
    let list = script
        .split_once("_abnix-update_commands() {\n    local commands; commands=(\n")
        .expect("the zsh completions' command list")
        .1;
    list.lines()
        .take_while(|line| line.starts_with('\''))
        .map(|line| {
            line[1..]
                .split_once(':')
                .expect("NAME:description")
                .0
                .to_owned()
        })
        .collect()
}

/// The `-a NAME` of fish's completions offered where a command is needed.
fn fish_commands(script: &str) -> std::collections::BTreeSet<String> {
    script
        .lines()
        .filter_map(|line| {
            line.strip_prefix(
                "complete -c abnix-update -n \"__fish_abnix_update_needs_command\" -f -a \"",
            )
        })
        .map(|rest| rest.split_once('"').expect("a quoted name").0.to_owned())
        .collect()
}

/// roff's text with its escaped hyphens plain.
fn man_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .replace("\\-", "-")
}

/// `generate-docs` writes a page per subcommand `--help` lists, the main
/// page refers to each, the completions know each, and the units'
/// `Documentation=` names pages among them.
#[test]
fn generated_docs_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_abnix-update"))
        .arg("generate-docs")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let subcommands = listed_subcommands();
    assert!(subcommands.len() >= 10, "{subcommands:?}");
    assert!(
        !subcommands.iter().any(|name| name == "generate-docs"),
        "hidden"
    );
    let page = man_text(&dir.path().join("abnix-update.8"));
    assert!(
        page.starts_with(".ie") && page.contains(".TH abnix-update 8 "),
        "{page}"
    );
    let bash = std::fs::read_to_string(dir.path().join("abnix-update.bash")).unwrap();
    let zsh = std::fs::read_to_string(dir.path().join("_abnix-update")).unwrap();
    let fish = std::fs::read_to_string(dir.path().join("abnix-update.fish")).unwrap();
    for name in &subcommands {
        // The main page refers to each subcommand's own page, which exists.
        let reference = format!("abnix-update-{name}(8)");
        assert!(
            page.contains(&reference),
            "abnix-update.8 lacks {reference}"
        );
        let sub_page = man_text(&dir.path().join(format!("abnix-update-{name}.8")));
        assert!(
            sub_page.contains(&format!(".TH abnix-update-{name} 8 ")),
            "abnix-update-{name}.8: {sub_page}"
        );
    }
    // Each shell's list of top-level commands, read as that shell reads it,
    // is the subcommands, `help` and the hidden generate-docs: whole words,
    // so a name found inside another word or an option does not pass.
    let mut expected: std::collections::BTreeSet<String> = subcommands.iter().cloned().collect();
    expected.extend(["help".to_owned(), "generate-docs".to_owned()]);
    for (shell, commands) in [
        ("bash", bash_commands(&bash)),
        ("zsh", zsh_commands(&zsh)),
        ("fish", fish_commands(&fish)),
    ] {
        assert_eq!(commands, expected, "the {shell} completions' commands");
    }
    // No page for what --help does not list.
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".8"))
        .collect();
    pages.sort();
    let mut expected: Vec<String> = subcommands
        .iter()
        .map(|name| format!("abnix-update-{name}.8"))
        .chain(["abnix-update.8".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);

    // Every man: link of the units names a page written here.
    for name in UNITS {
        for link in values(&unit(name), "Documentation")
            .iter()
            .flat_map(|links| links.split_whitespace())
        {
            let page = link
                .strip_prefix("man:")
                .and_then(|page| page.strip_suffix("(8)"))
                .unwrap_or_else(|| panic!("{name}: {link} is no section 8 man page"));
            assert!(
                dir.path().join(format!("{page}.8")).is_file(),
                "{name}: no page for {link}"
            );
        }
    }
}
