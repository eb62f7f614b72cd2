#!/usr/bin/env bash
# The Nix side's checks that need no nixpkgs (DESIGN §8.4), for CI:
#   - every .nix file parses (nix-instantiate --parse) and is deadnix-clean;
#   - the shell scripts are shellcheck-clean;
#   - nix/check-rust-version.sh refuses a crate that needs a newer rustc;
#   - nix/modules/host.nix and installer-iso.nix evaluate with nixpkgs' lib
#     (nix/vendor) for the cases of nix/tests/eval, and the results are what
#     nix/tests/eval/check.py expects (units equal to systemd/'s, DESIGN §6,
#     refusals with their messages); their config.toml files must equal
#     nix/testdata/module-configs.json, which core's tests parse;
#   - the installer's abnix-wait-for-disk waits for a disk that is not its
#     medium (lsblk, findmnt and udevadm answering from files);
#   - nix/lib/pure.nix evaluates (nix-instantiate --eval --strict): its
#     output for fixed inputs must equal nix/testdata/, which the Rust side
#     parses with its real parsers; its properties hold and bad input is
#     rejected with a message that names the problem;
#   - nix/package.nix's source (pure.cargoSources) holds the whole Cargo
#     workspace: cargo loads it from a copy of exactly those paths;
#   - nix/builders/root-image.sh builds erofs and ext4 images that are
#     byte-for-byte reproducible, carry the version id as UUID and hold the
#     tree they were given.
#
#   nix/check.sh            run the checks
#   nix/check.sh --update   rewrite nix/testdata/ from nix/lib/pure.nix and
#                           the modules first
#
# Tools: nix-bin, deadnix (cargo install --locked deadnix@1.3.1), shellcheck,
# cargo (with the registry cache of Cargo.lock's crates), python3, xz,
# util-linux, erofs-utils, e2fsprogs; scripts/setup
# installs them; abnix-mkimage is built here (cargo build -p abnix-image).
# A missing tool fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Only parsing and evaluation happen here, never a build: without this, Nix
# warns on stderr when Debian's nix-bin came without its nixbld group (as
# with --no-install-recommends), and the warning lands in captured values.
export NIX_CONFIG="build-users-group ="

update=no
case ${1:-} in
"") ;;
--update) update=yes ;;
*)
  echo "usage: $0 [--update]" >&2
  exit 2
  ;;
esac

fail() {
  echo "nix/check.sh: FAILED: $*" >&2
  exit 1
}
step() { printf '\n== %s\n' "$*"; }

for tool in nix-instantiate deadnix shellcheck cargo python3 bash tar xz lsblk fsck.erofs \
  debugfs dumpe2fs e2fsck blkid; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (run ./scripts/setup)"
done

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT

mapfile -t nix_files < <(git ls-files --cached --others --exclude-standard -- '*.nix')
((${#nix_files[@]} > 0)) || fail "no .nix files found"

step "nix-instantiate --parse (${#nix_files[@]} files)"
for file in "${nix_files[@]}"; do
  nix-instantiate --parse "$file" >/dev/null || fail "$file does not parse"
done

step "deadnix"
deadnix --fail "${nix_files[@]}" || fail "deadnix found unused code"

step "shellcheck"
shellcheck -x nix/check.sh nix/check-rust-version.sh nix/builders/root-image.sh nix/modules/wait-for-disk.sh \
  systest/vm-common.sh systest/boot-disk.sh systest/run-installer-iso.sh ||
  fail "shellcheck found problems"

step "check-rust-version.sh: a locked crate that needs a newer rustc fails it"
rust_version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["rust-version"])')
metadata() {
  python3 - "$rust_version" "$1" >"$work/metadata.json" <<'EOF'
import json, sys
member = {"name": "abnix-core", "version": "0.1.0", "source": None, "rust_version": sys.argv[1]}
crate = {"name": "newer-crate", "version": "1.0.0",
         "source": "registry+https://github.com/rust-lang/crates.io-index", "rust_version": sys.argv[2]}
print(json.dumps({"packages": [member, crate]}))
EOF
}
metadata "$rust_version"
nix/check-rust-version.sh --metadata "$work/metadata.json" >/dev/null ||
  fail "check-rust-version.sh refused a crate that needs exactly the workspace's rustc"
metadata 999.0
if nix/check-rust-version.sh --metadata "$work/metadata.json" 2>"$work/rust-version.err"; then
  fail "check-rust-version.sh accepted a crate that needs a newer rustc than $rust_version"
fi
grep -q "newer-crate 1.0.0 needs rustc" "$work/rust-version.err" ||
  fail "check-rust-version.sh failed without naming the crate: $(cat "$work/rust-version.err")"
echo "a crate that needs rustc $rust_version passes, one that needs more is named"

step "modules: host.nix and installer-iso.nix evaluated with nixpkgs' lib (nix/tests/eval)"
mkdir "$work/nixpkgs-lib"
tar -xJf nix/vendor/nixpkgs-lib.tar.xz -C "$work/nixpkgs-lib" || fail "cannot unpack nix/vendor/nixpkgs-lib.tar.xz"
python3 nix/tests/eval/check.py --lib "$work/nixpkgs-lib/nixpkgs-lib/lib" --configs "$work/module-configs.json" ||
  fail "the modules do not evaluate as expected"
if [[ $update == yes ]]; then
  cp "$work/module-configs.json" nix/testdata/module-configs.json
  echo "rewrote nix/testdata/module-configs.json"
fi
diff -u nix/testdata/module-configs.json "$work/module-configs.json" ||
  fail "nix/testdata/module-configs.json differs from what the modules generate (nix/check.sh --update rewrites it)"

step "pure.nix: outputs for the fixtures (nix/testdata)"
nix-instantiate --eval --strict --json nix/testdata/fixtures.nix >"$work/fixtures.json"
mkdir "$work/testdata"
python3 - "$work/fixtures.json" "$work/testdata" <<'EOF'
import json, pathlib, sys
for name, text in json.load(open(sys.argv[1])).items():
    pathlib.Path(sys.argv[2], name).write_text(text)
EOF
if [[ $update == yes ]]; then
  cp "$work"/testdata/* nix/testdata/
  echo "rewrote nix/testdata from nix/lib/pure.nix"
fi
for generated in "$work"/testdata/*; do
  committed=nix/testdata/$(basename "$generated")
  diff -u "$committed" "$generated" ||
    fail "$committed differs from what nix/lib/pure.nix produces (nix/check.sh --update rewrites it)"
done
echo "nix/testdata matches nix/lib/pure.nix"

step "pure.nix: properties"
python3 - nix/testdata <<'EOF'
import json, pathlib, re, sys, tomllib
data = pathlib.Path(sys.argv[1])
MIB = 1024 * 1024

tomls = sorted(data.glob("*.toml"))
assert len(tomls) >= 5, tomls
for path in tomls:
    tomllib.loads(path.read_text())

config = tomllib.loads((data / "config.toml").read_text())
assert config["reboot_window"] == "02:00-04:00" and config["path_style"] is True, config
# A unit systemd spells "min" and the Rust side must read (examples/kiosk).
assert config["check_interval"] == "15min", config
assert len(config["trusted_keys"]) == 2, config
minimal = tomllib.loads((data / "config-minimal.toml").read_text())
assert "endpoint" not in minimal and "reboot_window" not in minimal, minimal

for entry in json.loads((data / "version-id.json").read_text()):
    uuid = entry["id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid), uuid
ids = [e["id"] for e in json.loads((data / "version-id.json").read_text())]
assert len(set(ids)) == len(ids), "different versions of one system must get different ids"

for example in json.loads((data / "layout.json").read_text()):
    layout = example["layout"]
    parts = layout["partitions"]
    assert [p["name"] for p in parts] == ["abnix-bios", "abnix-esp", "abnix-a", "abnix-b", "abnix-rw"], parts
    end = MIB
    for part in parts:
        assert part["start"] % MIB == 0 and part["size"] % MIB == 0, part
        assert part["start"] >= end, f"{part} overlaps the partition before it"
        end = part["start"] + part["size"]
    backup_gpt = 128 * 128 + layout["sectorSize"]
    assert end <= layout["diskSize"] - backup_gpt, f"abnix-rw runs into the backup GPT: {example}"
    assert parts[2]["size"] == parts[3]["size"], "the slots differ in size"
# The third example is the minimum disk for a 64 MiB abnix-rw.
assert json.loads((data / "layout.json").read_text())[2]["layout"]["partitions"][4]["size"] == 64 * MIB

version = json.loads((data / "version.json").read_text())
assert version["cmdline"].startswith("init=/nix/store/") and "/init " in version["cmdline"], version

systemd_boot = tomllib.loads((data / "install-systemd-boot.toml").read_text())
assert systemd_boot["bootloader"] == "systemd-boot", systemd_boot
assert not any(key.startswith("grub_") for key in systemd_boot), systemd_boot
assert systemd_boot["arch"] == "aarch64" and systemd_boot["systemd_boot_efi"].endswith("/systemd-bootaa64.efi"), systemd_boot

# aarch64 with GRUB: arm64-efi modules and no BIOS part; x86_64 keeps both.
aarch64 = tomllib.loads((data / "install-aarch64.toml").read_text())
assert aarch64["arch"] == "aarch64" and aarch64["bootloader"] == "grub", aarch64
assert "grub_bios_dir" not in aarch64 and aarch64["grub_efi_dir"].endswith("/arm64-efi"), aarch64
x86_64 = tomllib.loads((data / "install.toml").read_text())
assert x86_64["arch"] == "x86_64" and x86_64["grub_efi_dir"].endswith("/x86_64-efi"), x86_64
assert x86_64["grub_bios_dir"].endswith("/i386-pc"), x86_64

durations = json.loads((data / "durations.json").read_text())
accepted = [e for e in durations["examples"] if e["seconds"] is not None]
refused = [e for e in durations["examples"] if e["seconds"] is None]
assert len(accepted) >= 5 and len(refused) >= 5, durations
assert {"text": "15min", "seconds": 900} in accepted, accepted
print("TOML and JSON parse; ids, layouts and the version description hold their invariants")
EOF

step "pure.nix: evaluation and rejection"
pure_eval() {
  nix-instantiate --eval --strict --json --expr "let pure = import ./nix/lib/pure.nix; in $1" 2>&1
}
expect_value() {
  local got
  got=$(pure_eval "$1") || fail "$1 did not evaluate: $got"
  [[ $got == "$2" ]] || fail "$1 gave $got, expected $2"
}
expect_error() {
  local got
  if got=$(pure_eval "$1"); then
    fail "$1 should be rejected but gave $got"
  fi
  grep -qF -- "$2" <<<"$got" || fail "$1 was rejected without naming the problem ('$2'): $got"
}
expect_value 'pure.parseSize "512M"' 536870912
expect_value 'pure.parseSize "1T"' 1099511627776
expect_value 'pure.parseSize "4096"' 4096
expect_error 'pure.parseSize "4X"' "'4X' is not a size"
expect_error 'pure.parseSize "1.5G"' "'1.5G' is not a size"
expect_value 'pure.parseDuration "15min"' 900
expect_value 'pure.parseDuration "15m"' 900
expect_value 'pure.parseDuration "90"' 90
expect_value 'pure.parseDuration "007m"' 420
expect_value 'pure.parseDuration "99999999d"' 8639999913600
expect_error 'pure.parseDuration "5M"' "'5M' is not a duration"
expect_error 'pure.parseDuration "1h30m"' "'1h30m' is not a duration"
expect_error 'pure.parseDuration "123456789"' "'123456789' is not a duration"
expect_value 'builtins.match pure.patterns.duration "6h"' '["h"]'
expect_value 'builtins.match pure.patterns.duration "90"' '[null]'
expect_value 'builtins.match pure.patterns.duration "6 h"' null
expect_value 'pure.parseVersion "12"' 12
expect_value 'pure.parseVersion 7' 7
expect_error 'pure.parseVersion "07"' "whole number such as 7, not '07'"
expect_error 'pure.parseVersion "-1"' "whole number such as 7, not '-1'"
expect_error 'pure.layout { diskSize = "1G"; espSize = "512M"; slotSize = "1G"; }' "too small for the layout"
expect_error 'pure.layout { diskSize = 1073741825; espSize = "64M"; slotSize = "64M"; }' "not a multiple of the sector size 512"
expect_value 'pure.installerArch "x86_64-linux"' '"x86_64"'
expect_value 'pure.installerArch "aarch64-linux"' '"aarch64"'
expect_error 'pure.installerArch "riscv64-linux"' "hosts run on x86_64-linux or aarch64-linux, not 'riscv64-linux'"
expect_value 'pure.isUuid (pure.uuidFromString "abnix")' true
expect_value 'pure.versionId { version = 1; toplevel = "/nix/store/a"; } == pure.versionId { version = 1; toplevel = "/nix/store/a"; }' true
expect_value 'pure.versionId { version = 1; toplevel = "/nix/store/a"; } != pure.versionId { version = 1; toplevel = "/nix/store/b"; }' true
expect_value 'pure.cmdline { toplevel = "/nix/store/x"; kernelParams = [ "quiet" "console=ttyS0" ]; }' '"init=/nix/store/x/init quiet console=ttyS0"'
expect_value 'pure.checkRebootWindow { reboot = "immediate"; rebootWindow = null; }' null
expect_value 'pure.checkRebootWindow { reboot = "window"; rebootWindow = "02:00-04:00"; }' null
expect_value 'pure.checkRebootWindow { reboot = "window"; rebootWindow = null; } != null' true
expect_value 'pure.checkRebootWindow { reboot = "never"; rebootWindow = "02:00-04:00"; } != null' true
expect_value 'builtins.match pure.patterns.rebootWindow "24:00-04:00"' null
expect_value 'builtins.match pure.patterns.publicKey "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc="' '[]'
expect_value 'builtins.match pure.patterns.publicKey "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkd="' null
expect_value 'pure.imageId "kiosk"' '"kiosk"'
expect_value 'pure.imageId "Kiosk-2_b.x"' '"kiosk-2_b.x"'
expect_value 'pure.imageId "a:b+ü"' '"a-b---"'
expect_value 'pure.isTransferRate "64K/60s"' true
expect_value 'pure.isTransferRate "1/1"' true
expect_value 'pure.isTransferRate "0K/60s"' false
expect_value 'pure.isTransferRate "64K/0"' false
expect_value 'pure.isTransferRate "64K"' false
expect_value 'pure.isTransferRate "64KB/60s"' false
expect_value 'builtins.match pure.patterns.size "512M"' '[]'
expect_value 'builtins.match pure.patterns.size "512MB"' null
expect_error 'pure.deviceConfig (pure.defaults // { bucket = "b"; trustedKeys = [ ]; credentialsFile = { }; })' "cannot write set as a TOML value"

# Strings that need escaping come back unchanged through a real TOML parser.
tricky_config='pure.deviceConfig (pure.defaults // {
  bucket = "fleet"; trustedKeys = [ ]; prefix = "a \"quoted\" \\ back\nslash\ttab"; })'
pure_eval "$tricky_config" | python3 -c '
import json, sys, tomllib
parsed = tomllib.loads(json.load(sys.stdin))
expected = "a \"quoted\" \\ back\nslash\ttab"
assert parsed["prefix"] == expected, (parsed["prefix"], expected)
' || fail "a string with quotes, backslashes and control characters did not survive TOML"
echo "values, rejections and TOML escaping as expected"

step "package.nix: its source holds the Cargo workspace"
mapfile -t cargo_sources < <(nix-instantiate --eval --strict --json --expr \
  '(import ./nix/lib/pure.nix).cargoSources (builtins.fromTOML (builtins.readFile ./Cargo.toml))' |
  python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)))')
((${#cargo_sources[@]} > 2)) || fail "pure.cargoSources gave no workspace members"
mkdir "$work/cargo-source"
cp -a "${cargo_sources[@]}" "$work/cargo-source/" || fail "a path of pure.cargoSources is missing"
# --no-deps: every member's manifest and targets, and no network.
(cd "$work/cargo-source" && cargo metadata --offline --locked --no-deps --format-version 1 >/dev/null) ||
  fail "cargo cannot load the workspace from nix/package.nix's source (${cargo_sources[*]})"
echo "cargo loads the workspace from ${cargo_sources[*]}"

step "installer ISO: abnix-wait-for-disk waits for a disk that is not the medium"
# The script as writeShellApplication runs it, with lsblk, findmnt and
# udevadm answering from files: which disks exist, which one holds /iso.
# The real lsblk must take the same options.
lsblk --noheadings --nodeps --paths --bytes --output NAME,TYPE,SIZE,RO >/dev/null ||
  fail "lsblk does not take the options abnix-wait-for-disk uses"
fake=$work/fake-bin
mkdir "$fake"
cat >"$fake/lsblk" <<'EOF'
#!/usr/bin/env bash
# Each call shows the next line of disks-N (the last one from then on).
case " $* " in
*" PKNAME "*) echo "${FAKE_PARENT:-}" ;;
*"NAME,TYPE,SIZE,RO "*)
  calls=$(($(cat "$FAKE_DIR/calls" 2>/dev/null || echo 0) + 1))
  echo "$calls" >"$FAKE_DIR/calls"
  file=$FAKE_DIR/disks-$calls
  [[ -e $file ]] || file=$(find "$FAKE_DIR" -name 'disks-*' | sort -V | tail -n1)
  cat "$file"
  ;;
*) echo "NAME TYPE SIZE RO RM MOUNTPOINTS (listing)" ;;
esac
EOF
cat >"$fake/findmnt" <<'EOF'
#!/bin/sh
[ -n "${FAKE_MEDIUM:-}" ] && echo "$FAKE_MEDIUM"
EOF
printf '#!/bin/sh\nexit 0\n' >"$fake/udevadm"
chmod +x "$fake"/*
wait_for_disk() {
  # $1: seconds; then one disks file per lsblk call.
  local seconds=$1 n=0
  shift
  rm -rf "$work/disks" && mkdir "$work/disks"
  for disks in "$@"; do
    n=$((n + 1))
    printf '%s' "$disks" >"$work/disks/disks-$n"
  done
  FAKE_DIR=$work/disks PATH=$fake:$PATH bash -euo pipefail nix/modules/wait-for-disk.sh "$seconds" /iso
}
out=$(FAKE_MEDIUM=/dev/sr0 wait_for_disk 5 $'/dev/sr0 rom 1000000 1\n/dev/vda disk 17179869184 0\n') ||
  fail "abnix-wait-for-disk did not find /dev/vda: $out"
[[ $out == *"disks to choose from: /dev/vda "* ]] || fail "abnix-wait-for-disk: $out"
# A USB installer stick (/dev/sdb, holding /iso), an empty card reader, zram
# and a read-only disk come first; the target disk only on the third look.
usb=$'/dev/sdb disk 8000000000 0\n/dev/sdc disk 0 0\n/dev/zram0 disk 4000000000 0\n/dev/sdd disk 64000000 1\n'
out=$(FAKE_MEDIUM=/dev/sdb wait_for_disk 30 "$usb" "$usb" "$usb"$'/dev/nvme0n1 disk 512110190592 0\n') ||
  fail "abnix-wait-for-disk did not wait for /dev/nvme0n1: $out"
[[ $out == *"disks to choose from: /dev/nvme0n1 "* && $(cat "$work/disks/calls") == 3 ]] ||
  fail "abnix-wait-for-disk did not wait until the disk came: $out"
# The medium mounted from a partition: its whole disk is skipped too.
if out=$(FAKE_MEDIUM=/dev/sdb1 FAKE_PARENT=sdb wait_for_disk 2 "$usb"); then
  fail "abnix-wait-for-disk took the installer's own medium or a disk that cannot be a target: $out"
fi
[[ $out == *"no disk to install onto appeared within 2 s"*"(/dev/sdb)"*"(listing)"* ]] ||
  fail "abnix-wait-for-disk gave up without saying why: $out"
if FAKE_DIR=$work/disks PATH=$fake:$PATH bash nix/modules/wait-for-disk.sh 0 /iso >/dev/null 2>&1; then
  fail "abnix-wait-for-disk accepted a timeout of 0"
fi
echo "it waits until a disk other than the medium is there, and says what it saw when none comes"

step "root image builder: reproducible erofs and ext4 with the version id"
# root-image.sh writes both formats with abnix-mkimage (the image/ crate): built
# here in CI's release profile, into the target directory the later cargo
# steps share.
cargo build --release --locked --quiet -p abnix-image --bin abnix-mkimage || fail "building abnix-mkimage"
target_dir=$(cargo metadata --offline --locked --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export PATH="$target_dir/release:$PATH"
uuid=602ca684-2bac-458d-8517-a23b37fff6a6
store=$work/store/nix/store
mkdir -p "$store/0000-hello/bin" "$store/1111-data/share"
printf '#!/bin/sh\necho hello\n' >"$store/0000-hello/bin/hello"
chmod 0555 "$store/0000-hello/bin/hello"
for i in $(seq 1 200); do echo "$i" >"$store/1111-data/share/file-$i"; done
ln -s ../../0000-hello/bin/hello "$store/1111-data/share/link"
printf '%s\n' "$store/0000-hello" "$store/1111-data" >"$work/store-paths"
printf '%s\n' "/nix/store/0000-hello/bin/hello /bin/sh" >"$work/links"

for fs in erofs ext4; do
  for run in 1 2; do
    bash nix/builders/root-image.sh "$fs" "$uuid" "$work/store-paths" "$work/links" "$work/$fs.$run" ||
      fail "root-image.sh $fs failed"
    # A different time of day must not change a single byte.
    sleep 1
  done
  cmp -s "$work/$fs.1" "$work/$fs.2" || fail "two $fs builds from the same tree differ"
  [[ $(blkid -o value -s UUID "$work/$fs.1") == "$uuid" ]] || fail "the $fs image's UUID is not the version id"
  [[ $(blkid -o value -s TYPE "$work/$fs.1") == "$fs" ]] || fail "the image is not $fs"
done

mkdir "$work/extracted"
fsck.erofs --extract="$work/extracted" "$work/erofs.1" >/dev/null || fail "fsck.erofs rejects the image"
[[ $(readlink "$work/extracted/bin/sh") == /nix/store/0000-hello/bin/hello ]] || fail "erofs: /bin/sh is not the link asked for"
[[ -d $work/extracted/.rw-etc && -d $work/extracted/rw ]] || fail "erofs: mount points are missing"
[[ $(stat -c %a "$work/extracted/tmp") == 1777 ]] || fail "erofs: /tmp is not 1777"
[[ $(cat "$work/extracted/nix/store/1111-data/share/file-200") == 200 ]] || fail "erofs: store contents differ"

dumpe2fs -h "$work/ext4.1" 2>/dev/null | grep -q '^Filesystem features:.*read-only' ||
  fail "ext4: the read-only feature is not set"
debugfs -R "stat /bin/sh" "$work/ext4.1" 2>/dev/null | grep -q 'Fast link dest: "/nix/store/0000-hello/bin/hello"' ||
  fail "ext4: /bin/sh is not the link asked for"
[[ $(debugfs -R "cat /nix/store/1111-data/share/file-200" "$work/ext4.1" 2>/dev/null) == 200 ]] ||
  fail "ext4: store contents differ"
debugfs -R "stat /nix/store/0000-hello/bin/hello" "$work/ext4.1" 2>/dev/null | grep -q 'User: *0 *Group: *0' ||
  fail "ext4: files are not owned by root"
printf '%s\n' "/nix/store/9999-missing/bin/sh /bin/sh" >"$work/bad-links"
if bash nix/builders/root-image.sh erofs "$uuid" "$work/store-paths" "$work/bad-links" "$work/bad" 2>"$work/bad.err"; then
  fail "root-image.sh accepted a link to a path outside the closure"
fi
grep -q "points to /nix/store/9999-missing/bin/sh, which is not in the image" "$work/bad.err" ||
  fail "root-image.sh rejected a dangling link without saying which: $(cat "$work/bad.err")"
if bash nix/builders/root-image.sh btrfs "$uuid" "$work/store-paths" "$work/links" "$work/bad" 2>"$work/bad.err"; then
  fail "root-image.sh accepted an unknown filesystem type"
fi
grep -q "unknown filesystem type 'btrfs'" "$work/bad.err" || fail "root-image.sh: unclear error for a bad type"
echo "both images are reproducible, carry the id and hold the tree; bad input is refused"

printf '\nnix/check.sh: all checks passed\n'
