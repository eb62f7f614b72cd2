#!/usr/bin/env python3
"""Checks what nix/tests/eval/default.nix evaluates nix/modules/*.nix to.

    check.py --lib DIR [--configs FILE]
        evaluates with nixpkgs' lib/ at DIR (nix-instantiate), each refusal
        separately so that its error message can be checked
    check.py --cases FILE --refusals FILE [--configs FILE]
        checks evaluations made elsewhere (the flake's checks.module-eval):
        the cases as JSON, and the refusals as {name: refused?}

It checks
  - the units against systemd/: each unit file there is a unit the host
    module generates with its defaults, directive by directive, both ways;
  - DESIGN §6: the read-only root, /etc on tmpfs, the rw partition and its
    bind mounts, no boot loader from NixOS, the config file, the units'
    order and their settings following the abnix.* options;
  - that the installer ISO waits for its target disk itself;
  - that every refusal is refused, with the message a NixOS user would see.

--configs FILE writes every config.toml the host cases generated, with the
abnix.* settings it came from, as JSON: core's nix_contract test parses
each with the Rust config parser and compares (nix/testdata/module-configs.json).
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[3]
FAILURES = []

# Units the host module generates that systemd/ has no file for, and why.
NIX_ONLY: dict[str, str] = {}

# Directives whose value is a space-separated list (systemd.unit(5)): the
# order and the split into lines do not matter.
LIST_DIRECTIVES = {
    "Requires", "Requisite", "Wants", "Upholds", "BindsTo", "PartOf", "Conflicts",
    "Before", "After", "OnFailure", "OnSuccess", "Documentation",
    "RequiresMountsFor", "WantsMountsFor", "WantedBy", "RequiredBy", "UpheldBy",
    "Also", "Alias", "SuccessExitStatus",
}
TRUE = {"1", "yes", "y", "true", "t", "on"}
FALSE = {"0", "no", "n", "false", "f", "off"}


def fail(message):
    FAILURES.append(message)


def check(condition, message):
    if not condition:
        fail(message)


def nix_eval(lib, attribute):
    expression = f"(import {REPO}/nix/tests/eval {{ lib = import {lib}; }}).{attribute}"
    env = dict(os.environ, NIX_CONFIG="build-users-group =")
    return subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expression],
        capture_output=True, text=True, env=env)


def parse_unit_file(path):
    """A unit file as {section: {directive: [values]}}."""
    sections, section = {}, None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            sys.exit(f"{path}:{number}: continued lines are not supported by this check")
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        name, sep, value = line.partition("=")
        if section is None or not sep:
            sys.exit(f"{path}:{number}: not a directive: {raw}")
        section.setdefault(name.strip(), []).append(value.strip())
    return sections


def shell_canonical(text):
    """The commands of a shell script as bash prints them back."""
    result = subprocess.run(
        ["bash", "-c", 'eval "f() {\n$BODY\n}" && declare -f f'],
        capture_output=True, text=True, env=dict(os.environ, BODY=text))
    if result.returncode != 0:
        return f"(not valid shell: {result.stderr.strip()})"
    return result.stdout


def module_values(value, case, package):
    """A module directive's value as the list of lines systemd would read."""
    values = value if isinstance(value, list) else [value]
    lines = []
    for item in values:
        if isinstance(item, str):
            item = item.strip()
            if item in case["scripts"] or item.split(" ")[0] in case["scripts"]:
                # A job script (the unit's `script`): its commands, without
                # the `set -e` NixOS puts first.
                text = case["scripts"][item.split(" ")[0]]
                item = ("script", text.removeprefix("set -e\n"))
            else:
                item = item.replace(f"{package}/bin/", "/usr/bin/")
        lines.append(item)
    return lines


def same_value(name, module, file):
    if name in LIST_DIRECTIVES:
        tokens = lambda values: sorted(str(word) for value in values for word in str(value).split())
        return tokens(module) == tokens(file)
    if len(module) != len(file):
        return False
    for ours, theirs in zip(module, file):
        if isinstance(ours, tuple):
            # systemd reads "$$" on a command line as a literal "$".
            words = shlex.split(theirs.replace("$$", "$"))
            if len(words) != 3 or words[:2] != ["/bin/sh", "-c"]:
                return False
            if shell_canonical(ours[1]) != shell_canonical(words[2]):
                return False
        elif isinstance(ours, bool):
            if theirs.lower() not in (TRUE if ours else FALSE):
                return False
        elif str(ours) != theirs:
            return False
    return True


def compare_unit(name, module_unit, file_unit, case, package):
    where = f"systemd/{name} and nix/modules/host.nix"
    for section in sorted(set(module_unit) | set(file_unit)):
        ours = {key: module_values(value, case, package)
                for key, value in module_unit.get(section, {}).items()}
        # NixOS's `path` option: its way to give a unit the tools a
        # distribution has on its default PATH, which the files rely on.
        if "Environment" in ours:
            ours["Environment"] = [v for v in ours["Environment"] if not str(v).startswith("PATH=")]
            if not ours["Environment"]:
                del ours["Environment"]
        theirs = file_unit.get(section, {})
        for directive in sorted(set(ours) | set(theirs)):
            if directive not in theirs:
                fail(f"{where}: the module sets [{section}] {directive}={ours[directive]}, the file does not")
            elif directive not in ours:
                fail(f"{where}: the file sets [{section}] {directive}={theirs[directive]}, the module does not")
            elif not same_value(directive, ours[directive], theirs[directive]):
                fail(f"{where}: [{section}] {directive} differs: module {ours[directive]}, file {theirs[directive]}")


def check_units_against_files(case):
    package = case["settings"]["packagePath"]
    files = {path.name: path for path in sorted((REPO / "systemd").iterdir())
             if path.suffix in (".service", ".timer", ".target", ".socket", ".path", ".mount")}
    check(len(files) >= 4, f"only {len(files)} unit files in systemd/")
    for name, path in files.items():
        if name in NIX_ONLY:
            fail(f"systemd/{name} exists: drop it from NIX_ONLY in {__file__}")
        if name not in case["units"]:
            fail(f"systemd/{name} has no counterpart in nix/modules/host.nix (with its defaults)")
            continue
        compare_unit(name, case["units"][name], parse_unit_file(path), case, package)
    for name in case["units"]:
        if name.startswith("abnix-") and name not in files and name not in NIX_ONLY:
            fail(f"nix/modules/host.nix generates {name}, which systemd/ has no file for")
    return len(files)


def parse_duration(text):
    """A duration as pure.patterns.duration writes it, in seconds."""
    number, unit = re.fullmatch(r"([0-9]+)(s|m|min|h|d)?", text).groups()
    return int(number) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[unit]


def directive(unit, section, name):
    value = unit.get(section, {}).get(name, [])
    return value if isinstance(value, list) else [value]


def words(unit, section, name):
    return [word for value in directive(unit, section, name) for word in str(value).split()]


def check_host(name, case):
    """DESIGN §6 for one evaluated host."""
    at = f"case {name}:"
    abnix, fs, units, settings = case["abnix"], case["fileSystems"], case["units"], case["settings"]

    # The root: the slot, read-only, by the version id, never checked.
    root = fs["/"]
    version_id = abnix["versionId"] or "00000000-0000-4000-8000-000000000000"
    check(root["device"] == f"/dev/disk/by-uuid/{version_id}", f"{at} / is {root['device']}")
    check(root["fsType"] == abnix["fsType"], f"{at} / is {root['fsType']}, abnix.fsType {abnix['fsType']}")
    check("ro" in root["options"] and root["noCheck"], f"{at} / is not read-only and unchecked: {root}")

    # /etc: the etc overlay, its upper layer on a tmpfs that stage 1 mounts.
    check(settings["etcOverlay"] == {"enable": True, "mutable": True},
          f"{at} /etc is not a mutable overlay: {settings['etcOverlay']}")
    check(settings["initrdSystemd"], f"{at} the etc overlay needs systemd in stage 1")
    rw_etc = fs["/.rw-etc"]
    check(rw_etc["fsType"] == "tmpfs" and rw_etc["neededForBoot"], f"{at} /.rw-etc: {rw_etc}")
    check("/sysroot/.rw-etc" in words(case["initrdUnits"]["rw-etc.service"], "Unit", "RequiresMountsFor"),
          f"{at} rw-etc.service does not wait for the tmpfs")

    # The rw partition and its bind mounts, all in stage 1.
    rw = fs["/rw"]
    check(rw == {"device": "/dev/disk/by-partlabel/abnix-rw", "fsType": "ext4", "options": ["x-initrd.mount"],
                 "depends": [], "noCheck": False, "neededForBoot": True}, f"{at} /rw: {rw}")
    layout = case["initrdUnits"]["abnix-rw-layout.service"]
    for mount in ("/var", "/home", "/root"):
        bind = fs[mount]
        check(bind["device"] == f"/rw{mount}" and bind["fsType"] == "none" and "bind" in bind["options"]
              and bind["depends"] == ["/rw"] and bind["neededForBoot"]
              and "x-systemd.requires-mounts-for=/sysroot/rw" in bind["options"],
              f"{at} {mount} is not a stage-1 bind mount of /rw{mount} after /rw: {bind}")
        unit = f"sysroot-{mount[1:]}.mount"
        check(unit in words(layout, "Install", "RequiredBy") and unit in words(layout, "Unit", "Before"),
              f"{at} abnix-rw-layout does not run before {unit}")
        check(any(f"/sysroot/rw{mount}" in line for line in directive(layout, "Service", "ExecStart")),
              f"{at} abnix-rw-layout does not create /sysroot/rw{mount}")
    check(set(fs) == {"/", "/.rw-etc", "/rw", "/var", "/home", "/root"}, f"{at} mounts: {sorted(fs)}")
    machine_id = case["initrdUnits"]["abnix-machine-id.service"]
    check("initrd.target" in words(machine_id, "Install", "WantedBy"), f"{at} the machine id is not restored")
    if abnix["credentialsFile"] not in ("chain", "systemd", "profile", "anonymous"):
        check(abnix["credentialsFile"].startswith("/"), f"{at} credentials {abnix['credentialsFile']}")

    # No boot loader, no switching, no Nix: abnix owns the disk.
    for key, expected in (("grub", False), ("systemdBoot", False), ("switch", False), ("nix", False)):
        check(settings[key] == expected, f"{at} {key} is {settings[key]}")
    check(settings["generators"].get("systemd-bless-boot-generator") == "/dev/null",
          f"{at} systemd-bless-boot-generator is not masked")
    check(settings["userborn"] == {"enable": True, "passwordFilesLocation": "/var/lib/nixos"},
          f"{at} users: {settings['userborn']}")

    # The config, one file under /etc/abnix, with the updater's optional
    # keys only where an option is set (core's config.rs parses each, see
    # --configs).
    check("abnix/config.toml" in case["etc"], f"{at} no /etc/abnix/config.toml")
    toml = tomllib.loads(case["etc"]["abnix/config.toml"])
    for key, option in (("recovery_keys", "recoveryKeys"), ("revoked_keys", "revokedKeys"),
                        ("trust_clock", "trustClock"), ("check_deadline", "checkDeadline"),
                        ("update_deadline", "updateDeadline"), ("min_transfer_rate", "minTransferRate"),
                        ("report", "report"), ("report_credentials", "reportCredentialsFile"),
                        ("report_bucket", "reportBucket")):
        check(toml.get(key) == (abnix[option] or None),
              f"{at} config.toml has {key} = {toml.get(key)!r}, abnix.{option} is {abnix[option]!r}")

    # An air-gapped host (bucket null): none of the bucket's keys, and the
    # updater takes bucket and channel both or neither.
    air_gapped = abnix["bucket"] is None
    bucket_keys = {"endpoint", "region", "bucket", "prefix", "channel", "path_style", "credentials"}
    if air_gapped:
        check(abnix["channel"] is None and not abnix["report"], f"{at} air-gapped with a channel or reports")
        check(not bucket_keys & set(toml), f"{at} an air-gapped config.toml has {sorted(bucket_keys & set(toml))}")
    else:
        check(bucket_keys - {"endpoint"} <= set(toml),
              f"{at} config.toml lacks the bucket's keys: {sorted(toml)}")

    # os-release: IMAGE_ID the channel as os-release(5) allows it (lower
    # case, digits, "._-"; any other byte a "-"), none without a channel;
    # IMAGE_VERSION the version.
    image_id = None if air_gapped else "".join(
        chr(b) if re.fullmatch(rb"[a-z0-9._-]", bytes([b])) else "-" for b in abnix["channel"].lower().encode())
    check(settings["image"] == {"id": image_id, "version": str(abnix["version"])},
          f"{at} system.image is {settings['image']}, expected IMAGE_ID {image_id}, IMAGE_VERSION {abnix['version']}")

    # The units: mark-good after boot-complete.target, which requires the
    # success units; the updater after the network, started by its timer
    # only, so nothing at boot waits for it.
    mark_good = units["abnix-mark-good.service"]
    check("boot-complete.target" in words(mark_good, "Unit", "Requires")
          and "boot-complete.target" in words(mark_good, "Unit", "After"), f"{at} mark-good: {mark_good}")
    target = units["boot-complete.target"]
    for key in ("Requires", "After"):
        check(sorted(words(target, "Unit", key)) == sorted(abnix["successUnits"]),
              f"{at} boot-complete.target {key}= is not abnix.successUnits")
    for other, unit in units.items():
        for key in ("Requires", "Wants", "Before", "Requisite", "BindsTo"):
            check("abnix-update.service" not in words(unit, "Unit", key),
                  f"{at} {other} has {key}=abnix-update.service: it would wait for the updater")
    if air_gapped:
        # Nothing polls a bucket: install --bundle is run by hand.
        present = sorted(unit for unit in ("abnix-update.service", "abnix-update.timer") if unit in units)
        check(present == [], f"{at} an air-gapped host has {present}")
        check("abnix-grow.service" in units, f"{at} no abnix-grow.service")
    else:
        check_updater(at, abnix, units)
    # Every abnix service sandboxed (systemd/README.md, "Sandboxing").
    for other, unit in units.items():
        if other.startswith("abnix-") and other.endswith(".service"):
            check(directive(unit, "Service", "ProtectSystem") == ["strict"]
                  and directive(unit, "Service", "NoNewPrivileges") == [True]
                  and directive(unit, "Service", "CapabilityBoundingSet") != []
                  and directive(unit, "Service", "SystemCallFilter")[:1] == ["@system-service"],
                  f"{at} {other} is not sandboxed: {unit.get('Service')}")
    deadline = [unit for unit in units if unit.startswith("abnix-health-deadline.")]
    if abnix["healthTimeout"] is None:
        check(deadline == [], f"{at} healthTimeout = null still has {deadline}")
    else:
        check(directive(units["abnix-health-deadline.timer"], "Timer", "OnBootSec") == [abnix["healthTimeout"]],
              f"{at} the deadline is not abnix.healthTimeout")
    check(settings["systemPackages"] == ["abnix"] or "abnix" in settings["systemPackages"],
          f"{at} abnix-update is not on the PATH")


def check_updater(at, abnix, units):
    """The updater after the network, started by its timer only, so nothing
    at boot waits for it."""
    update = units["abnix-update.service"]
    check("network-online.target" in words(update, "Unit", "After")
          and "network-online.target" in words(update, "Unit", "Wants"), f"{at} update: {update}")
    check("Install" not in update, f"{at} abnix-update.service is started by something but its timer")
    # A backstop an hour above the updater's own deadline (6h by default).
    deadline_seconds = parse_duration(abnix["updateDeadline"] or "6h") + 3600
    check(directive(update, "Service", "TimeoutStartSec")
          in ([f"{deadline_seconds // 3600}h"], [f"{deadline_seconds}s"]),
          f"{at} abnix-update.service's TimeoutStartSec= is not an hour above abnix.updateDeadline: "
          f"{directive(update, 'Service', 'TimeoutStartSec')}")
    timer = units["abnix-update.timer"]
    check(directive(timer, "Timer", "OnUnitActiveSec") == [abnix["checkInterval"]]
          and directive(timer, "Timer", "RandomizedDelaySec") == [abnix["checkJitter"]],
          f"{at} abnix-update.timer does not follow checkInterval and checkJitter: {timer}")


def check_disabled(case):
    check(not any(unit.startswith("abnix") for unit in case["units"]), "case disabled: abnix units")
    check(case["fileSystems"] == {} and case["etc"] == {}, "case disabled: mounts or files")
    check(case["settings"]["grub"] and not case["settings"]["etcOverlay"]["enable"],
          "case disabled: NixOS's own defaults changed")


def check_installer(case):
    unit = case["units"]["abnix-install.service"]
    for other, sections in case["units"].items():
        for section in sections.values():
            for value in section.values():
                check("systemd-udev-settle" not in json.dumps(value),
                      f"case installer: {other} depends on systemd-udev-settle.service, which NixOS does not ship")
    pre = directive(unit, "Service", "ExecStartPre")
    check(len(pre) == 1 and "wait-for-disk" in pre[0], f"case installer: no wait for the disk: {pre}")
    check("multi-user.target" in words(unit, "Install", "WantedBy"), "case installer: not started at boot")
    check('bundle = "/iso/abnix/bundle"' in case["etc"].get("abnix/install.toml", ""),
          "case installer: /etc/abnix/install.toml does not name the bundle on the medium")
    iso = case["isoImage"]
    check(iso["volumeID"] == "ABNIX_INSTALLER" and iso["makeEfiBootable"] and iso["makeUsbBootable"],
          f"case installer: the ISO does not boot from UEFI and USB: {iso}")
    check([entry["target"] for entry in iso["contents"]] == ["/abnix/bundle"],
          f"case installer: the bundle is not on the medium: {iso['contents']}")
    check("ForwardToConsole=yes" in case["etc"].get("systemd/journald.conf.d/abnix-installer.conf", ""),
          "case installer: the journal does not go to the console")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib")
    parser.add_argument("--cases")
    parser.add_argument("--refusals")
    parser.add_argument("--configs")
    args = parser.parse_args()

    if args.lib:
        result = nix_eval(args.lib, "cases")
        if result.returncode != 0:
            sys.exit(f"the cases do not evaluate:\n{result.stderr}")
        cases = json.loads(result.stdout)
        listing = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "--expr",
             f"builtins.mapAttrs (_: r: r.message) (import {REPO}/nix/tests/eval {{ lib = import {args.lib}; }}).refusals"],
            capture_output=True, text=True, env=dict(os.environ, NIX_CONFIG="build-users-group ="))
        if listing.returncode != 0:
            sys.exit(f"the refusals do not evaluate:\n{listing.stderr}")
        expected = sorted(json.loads(listing.stdout).items())
        # Each in its own nix-instantiate, so each error can be read; they
        # are small, so several at once.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = pool.map(lambda item: nix_eval(args.lib, f'refusals."{item[0]}".report'), expected)
        for (name, message), outcome in zip(expected, outcomes):
            if outcome.returncode == 0:
                fail(f"refusal {name}: evaluated, should fail with: {message}")
            elif " ".join(message.split()) not in " ".join(outcome.stderr.split()):
                fail(f"refusal {name}: failed without saying {message!r}:\n{outcome.stderr[-2000:]}")
        refusals = len(json.loads(listing.stdout))
    else:
        cases = json.load(open(args.cases))
        refused = json.load(open(args.refusals))
        for name, was_refused in sorted(refused.items()):
            check(was_refused, f"refusal {name}: evaluated, should fail")
        refusals = len(refused)

    hosts = [name for name, case in cases.items() if case.get("abnix")]
    compared = check_units_against_files(cases["minimal"])
    for name in hosts:
        check_host(name, cases[name])
    check_disabled(cases["disabled"])
    check_installer(cases["installer"])

    if args.configs:
        configs = [{"case": name, "toml": cases[name]["etc"]["abnix/config.toml"], "settings": cases[name]["abnix"]}
                   for name in sorted(hosts)]
        pathlib.Path(args.configs).write_text(json.dumps(configs, indent=2, ensure_ascii=False) + "\n")

    if FAILURES:
        print(f"module evaluation: {len(FAILURES)} problems:", file=sys.stderr)
        for failure in FAILURES:
            print(f"  {failure}", file=sys.stderr)
        sys.exit(1)
    refused = "with the message a user sees" if args.lib else "(their messages are checked by nix/check.sh)"
    print(f"module evaluation: {len(cases)} cases ({len(hosts)} hosts) as expected, {compared} units equal to "
          f"systemd/'s, {refusals} refusals {refused}")


if __name__ == "__main__":
    main()
