#!/usr/bin/env bash
# Fails when a crate in Cargo.lock declares a rust-version above the
# workspace's (Cargo.toml's `workspace.package.rust-version`, the rustc of the
# oldest NixOS release abnix supports, nix/README.md "Toolchain"): nixpkgs'
# buildRustPackage with that release's rustc would refuse to build it, and
# every Nix output with it.
#
#   nix/check-rust-version.sh                    check Cargo.lock
#   nix/check-rust-version.sh --metadata FILE    check `cargo metadata` output
#                                                saved in FILE (nix/check.sh's
#                                                test of this script)
#
# Cargo.lock does not record rust-version: `cargo metadata` reads it from
# each locked crate's manifest, fetching the crates it does not have yet
# (crates.io). Crates that declare no rust-version cannot be checked and are
# counted. `resolver = "3"` in Cargo.toml makes `cargo update` pick versions
# that pass (Cargo's incompatible-rust-versions = "fallback").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

metadata=""
case ${1:-} in
"") ;;
--metadata) metadata=${2:?--metadata takes a file} ;;
*)
  echo "usage: $0 [--metadata FILE]" >&2
  exit 2
  ;;
esac

if [[ -z $metadata ]]; then
  metadata=$(mktemp)
  trap 'rm -f "$metadata"' EXIT
  cargo metadata --locked --format-version 1 >"$metadata" ||
    { echo "check-rust-version: cargo metadata failed (is Cargo.lock up to date?)" >&2 && exit 1; }
fi

python3 - Cargo.toml "$metadata" <<'EOF'
import json, sys, tomllib

def version(text):
    # rust-version is "1.95" or "1.95.0" (Cargo: no pre-release, no build).
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

workspace = tomllib.load(open(sys.argv[1], "rb"))["workspace"]["package"]["rust-version"]
supported = version(workspace)
metadata = json.load(open(sys.argv[2]))

too_new, undeclared, checked = [], [], 0
for package in metadata["packages"]:
    name = f'{package["name"]} {package["version"]}'
    declared = package.get("rust_version")
    if package["source"] is None:
        # A workspace member: it must inherit the workspace's rust-version.
        if declared is None or version(declared) != supported:
            too_new.append(f"{name} (workspace member) declares {declared}, not the workspace's {workspace}")
        continue
    if declared is None:
        undeclared.append(name)
        continue
    checked += 1
    if version(declared) > supported:
        too_new.append(f"{name} needs rustc {declared}")

if too_new:
    print(f"check-rust-version: FAILED: {len(too_new)} locked crates need more than rustc {workspace}, "
          "the workspace's rust-version (the oldest supported NixOS release's rustc, nix/README.md):",
          file=sys.stderr)
    for line in sorted(too_new):
        print(f"  {line}", file=sys.stderr)
    print("Pin them to older versions (cargo update -p NAME --precise VERSION; resolver 3 picks "
          "compatible ones by itself on `cargo update`), then bring fuzz/Cargo.lock in line "
          "(scripts/test says how).", file=sys.stderr)
    sys.exit(1)
print(f"check-rust-version: {checked} locked crates declare a rust-version of at most {workspace}; "
      f"{len(undeclared)} declare none")
EOF
