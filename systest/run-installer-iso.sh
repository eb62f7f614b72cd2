#!/usr/bin/env bash
# Runs an abnix installer ISO (`nix-build -A installer`) in QEMU against an
# empty disk, the way it runs on a real machine: it boots, shows what it will
# do, installs the bundled version and powers off. Then boot the disk with
# systest/boot-disk.sh.
#
#   systest/run-installer-iso.sh --iso FILE --disk FILE [options] [-- EXTRA_QEMU_ARGS...]
#
#   --iso FILE            the ISO (result/iso/*.iso)
#   --disk FILE           the target disk; created as qcow2 if missing
#   --size SIZE           size of a new disk (default: 16G)
#   --firmware bios|uefi  default: uefi
#   --arch x86_64|aarch64 default: x86_64
#   --state DIR           keeps the UEFI variables, shared with boot-disk.sh
#                         (default: ./abnix-vm-<disk name>)
#   --memory MIB          default: 2048
#   --headless            no window: the serial console only
#   --timeout SECONDS     stop QEMU and fail if the installer has not powered
#                         off by then (default: no limit)
#
# Afterwards:
#   systest/boot-disk.sh --disk FILE --in-place --firmware <same>
set -euo pipefail
# shellcheck source=systest/vm-common.sh
source "$(dirname "$0")/vm-common.sh"

iso="" disk="" size=16G firmware=uefi arch=x86_64 state_dir="" memory=2048
headless=no timeout="" extra=()
while (($#)); do
  case $1 in
  --iso) iso=$2 && shift ;;
  --disk) disk=$2 && shift ;;
  --size) size=$2 && shift ;;
  --firmware) firmware=$2 && shift ;;
  --arch) arch=$2 && shift ;;
  --state) state_dir=$2 && shift ;;
  --memory) memory=$2 && shift ;;
  --headless) headless=yes ;;
  --timeout) timeout=$2 && shift ;;
  --) shift && extra=("$@") && break ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[[ -n $iso && -n $disk ]] || die "--iso FILE and --disk FILE are required (see --help)"
[[ -r $iso ]] || die "cannot read the ISO $iso"
[[ -z $timeout || $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout takes whole seconds, not '$timeout'"
check_size "$size"
need qemu-img qemu-utils qemu

if [[ ! -e $disk ]]; then
  qemu-img create -q -f qcow2 "$disk" "$size"
  echo "run-installer-iso: created the empty disk $disk ($size)" >&2
fi
format=$(qemu-img info --output=json "$disk" | sed -n 's/.*"format": *"\([a-z0-9]*\)".*/\1/p' | head -n1)

state_dir=${state_dir:-./abnix-vm-$(basename "$disk" | sed 's/\.[^.]*$//')}
mkdir -p "$state_dir"

vm_command "$arch" "$firmware" "$state_dir" "$memory" "$headless"
# The installer's own medium boots first; it must not be chosen as the
# target (abnix-install skips the disk it booted from).
if [[ $arch == x86_64 ]]; then
  qemu+=(-drive "if=none,id=installer,media=cdrom,readonly=on,file=$iso")
  qemu+=(-device "ide-cd,drive=installer,bootindex=0")
else
  qemu+=(-device "virtio-scsi-pci,id=scsi")
  qemu+=(-drive "if=none,id=installer,media=cdrom,readonly=on,file=$iso")
  qemu+=(-device "scsi-cd,drive=installer,bootindex=0")
fi
qemu+=(-drive "if=none,id=target,format=$format,file=$disk")
qemu+=(-device "virtio-blk-pci,drive=target,bootindex=1")
# The installer powers off when done; a reboot (a failed run, a panic) must
# not boot into something half-written either.
qemu+=(-no-reboot)

echo "run-installer-iso: installing $iso onto $disk ($firmware, $arch)" >&2
status=0
if [[ -n $timeout ]]; then
  timeout --foreground "$timeout" "${qemu[@]}" "${extra[@]}" || status=$?
  ((status != 124)) || die "the installer did not power off within $timeout seconds"
else
  "${qemu[@]}" "${extra[@]}" || status=$?
fi
((status == 0)) || die "QEMU exited with status $status"

echo "run-installer-iso: the VM powered off. Boot the installed disk with:" >&2
echo "  $(dirname "$0")/boot-disk.sh --disk $disk --in-place --firmware $firmware --arch $arch" >&2
