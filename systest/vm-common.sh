# shellcheck shell=bash
# Shared by systest/boot-disk.sh and systest/run-installer-iso.sh (sourced, not run):
# the QEMU command line for an abnix machine, for BIOS or UEFI, x86_64 or
# aarch64: `vm_command ARCH FIRMWARE STATE_DIR MEMORY_MIB HEADLESS` fills the
# array `qemu` with everything but the disks.
#
# Environment:
#   OVMF_CODE, OVMF_VARS  UEFI firmware and its variable-store template. The
#                         Nix `vm` output and the flake's dev shell set them
#                         to nixpkgs' OVMF; otherwise Debian's ovmf /
#                         qemu-efi-aarch64 files, or the edk2 firmware QEMU
#                         ships next to itself (nixpkgs' qemu has it)
#   QEMU_ACCEL            kvm or tcg (default: kvm when /dev/kvm is usable)
#
# The tools are found on the PATH, so they come from Debian's packages or
# from Nix (`nix develop` in this repository, or `nix shell nixpkgs#qemu`).

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# need TOOL DEBIAN_PACKAGE NIXPKGS_ATTRIBUTE
need() {
  command -v "$1" >/dev/null ||
    die "$1 is not on the PATH: apt-get install $2 (Debian), or nix shell nixpkgs#$3 (Nix; \`nix develop\` in this repository has it)"
}

# The UEFI firmware (CODE or VARS) for ARCH: $OVMF_CODE / $OVMF_VARS, else
# the first that exists of Debian's file and QEMU's own edk2 build.
firmware_file() {
  local arch=$1 kind=$2 qemu_binary=$3 override share file
  local -a candidates
  if [[ $kind == CODE ]]; then override=${OVMF_CODE:-}; else override=${OVMF_VARS:-}; fi
  if [[ -n $override ]]; then
    echo "$override"
    return
  fi
  share=$(dirname "$(readlink -f "$(command -v "$qemu_binary")")")/../share/qemu
  case $arch/$kind in
  x86_64/CODE) candidates=(/usr/share/OVMF/OVMF_CODE_4M.fd "$share/edk2-x86_64-code.fd") ;;
  x86_64/VARS) candidates=(/usr/share/OVMF/OVMF_VARS_4M.fd "$share/edk2-i386-vars.fd") ;;
  aarch64/CODE) candidates=(/usr/share/AAVMF/AAVMF_CODE.fd "$share/edk2-aarch64-code.fd") ;;
  aarch64/VARS) candidates=(/usr/share/AAVMF/AAVMF_VARS.fd "$share/edk2-arm-vars.fd") ;;
  esac
  for file in "${candidates[@]}"; do
    if [[ -r $file ]]; then
      echo "$file"
      return
    fi
  done
  echo "${candidates[0]}"
}

# Sizes as abnix's command lines take them: bytes or K/M/G/T.
check_size() {
  [[ $1 =~ ^[0-9]+[KMGT]?$ ]] || die "'$1' is not a size (bytes, or a number with K, M, G or T)"
}

vm_command() {
  local arch=$1 firmware=$2 state_dir=$3 memory=$4 headless=$5
  local accel=${QEMU_ACCEL:-}
  if [[ -z $accel ]]; then
    if [[ -w /dev/kvm && $arch == "$(uname -m)" ]]; then accel=kvm; else accel=tcg; fi
  fi

  case $arch in
  x86_64)
    need qemu-system-x86_64 qemu-system-x86 qemu
    qemu=(qemu-system-x86_64 -machine "q35,accel=$accel")
    [[ $accel == kvm ]] && qemu+=(-cpu host) || qemu+=(-cpu max)
    ;;
  aarch64)
    [[ $firmware == uefi ]] || die "aarch64 boots with UEFI only (--firmware uefi)"
    need qemu-system-aarch64 qemu-system-arm qemu
    qemu=(qemu-system-aarch64 -machine "virt,accel=$accel")
    [[ $accel == kvm ]] && qemu+=(-cpu host) || qemu+=(-cpu max)
    ;;
  *) die "unknown architecture '$arch' (x86_64 or aarch64)" ;;
  esac

  qemu+=(-m "$memory" -smp 2 -device virtio-rng-pci)
  # The user network: the host is 10.0.2.2, e.g. a local S3 server.
  qemu+=(-nic "user,model=virtio-net-pci")
  qemu+=(-serial mon:stdio)
  if [[ $headless == yes ]]; then
    qemu+=(-display none)
  elif [[ $arch == aarch64 ]]; then
    qemu+=(-device virtio-gpu-pci -device usb-ehci -device usb-kbd -device usb-tablet)
  fi

  if [[ $firmware == uefi ]]; then
    local code vars hint
    code=$(firmware_file "$arch" CODE "${qemu[0]}")
    vars=$(firmware_file "$arch" VARS "${qemu[0]}")
    hint="apt-get install ovmf qemu-efi-aarch64 (Debian); with Nix, \`nix develop\` in this repository sets"
    hint+=" OVMF_CODE and OVMF_VARS to nixpkgs' OVMF (pkgs.OVMF.fd.firmware and .variables)"
    [[ -r $code ]] || die "no UEFI firmware at $code: $hint"
    [[ -r $vars ]] || die "no UEFI variable template at $vars: $hint"
    # The variables live with the machine: boot entries and counters survive
    # a reboot and a restart of this script, as on real hardware.
    if [[ ! -e $state_dir/efi-vars.fd ]]; then
      cp "$vars" "$state_dir/efi-vars.fd"
      chmod u+w "$state_dir/efi-vars.fd"
    fi
    qemu+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code")
    qemu+=(-drive "if=pflash,format=raw,unit=1,file=$state_dir/efi-vars.fd")
  elif [[ $firmware != bios ]]; then
    die "unknown firmware '$firmware' (bios or uefi)"
  fi
}
