# shellcheck shell=bash
# Shared by qemu/boot-disk.sh and qemu/run-installer-iso.sh (sourced, not run):
# the QEMU command line for an abnix machine, for BIOS or UEFI, x86_64 or
# aarch64: `vm_command ARCH FIRMWARE STATE_DIR MEMORY_MIB HEADLESS` fills the
# array `qemu` with everything but the disks.
#
# Environment:
#   OVMF_CODE, OVMF_VARS  UEFI firmware and its variable-store template
#                         (default: Debian's ovmf / qemu-efi-aarch64 files;
#                         the Nix `vm` output sets them to nixpkgs' OVMF)
#   QEMU_ACCEL            kvm or tcg (default: kvm when /dev/kvm is usable)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null || die "$1 is not installed ($2)"
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
    need qemu-system-x86_64 "apt-get install qemu-system-x86"
    qemu=(qemu-system-x86_64 -machine "q35,accel=$accel")
    [[ $accel == kvm ]] && qemu+=(-cpu host) || qemu+=(-cpu max)
    ;;
  aarch64)
    [[ $firmware == uefi ]] || die "aarch64 boots with UEFI only (--firmware uefi)"
    need qemu-system-aarch64 "apt-get install qemu-system-arm"
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
    local code vars
    if [[ $arch == x86_64 ]]; then
      code=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
      vars=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
    else
      code=${OVMF_CODE:-/usr/share/AAVMF/AAVMF_CODE.fd}
      vars=${OVMF_VARS:-/usr/share/AAVMF/AAVMF_VARS.fd}
    fi
    [[ -r $code ]] || die "no UEFI firmware at $code (install ovmf / qemu-efi-aarch64, or set OVMF_CODE)"
    [[ -r $vars ]] || die "no UEFI variable template at $vars (set OVMF_VARS)"
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
