#!/usr/bin/env bash
# Boots a disk that abnix wrote (an installer run, or a template image from
# `nix-build -A template`) in QEMU, through its real boot loader: GRUB on
# SeaBIOS or OVMF, systemd-boot on OVMF.
#
#   systest/boot-disk.sh --disk FILE [options] [-- EXTRA_QEMU_ARGS...]
#
#   --disk FILE           the disk image (qcow2 or raw)
#   --firmware bios|uefi  default: uefi
#   --arch x86_64|aarch64 default: x86_64
#   --state DIR           keeps the overlay disk and the UEFI variables
#                         (default: ./abnix-vm-<disk name>)
#   --size SIZE           virtual size of the overlay, e.g. 32G: bigger than
#                         the image shows abnix-grow filling the disk
#   --in-place            write to FILE itself instead of an overlay
#   --fresh               forget the overlay and variables of earlier runs
#   --memory MIB          default: 2048
#   --headless            no window: the serial console only
#
# By default the image is never written: a qcow2 overlay in the state
# directory takes the writes, so a template from the Nix store boots as is
# and every later run continues where the last one stopped (updates, slots).
# The serial console is on stdin/stdout (Ctrl-A X quits QEMU).
set -euo pipefail
# shellcheck source=systest/vm-common.sh
source "$(dirname "$0")/vm-common.sh"

disk="" firmware=uefi arch=x86_64 state_dir="" size="" in_place=no fresh=no
memory=2048 headless=no extra=()
while (($#)); do
  case $1 in
  --disk) disk=$2 && shift ;;
  --firmware) firmware=$2 && shift ;;
  --arch) arch=$2 && shift ;;
  --state) state_dir=$2 && shift ;;
  --size) size=$2 && shift ;;
  --in-place) in_place=yes ;;
  --fresh) fresh=yes ;;
  --memory) memory=$2 && shift ;;
  --headless) headless=yes ;;
  --) shift && extra=("$@") && break ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[[ -n $disk ]] || die "--disk FILE is required (see --help)"
[[ -r $disk ]] || die "cannot read the disk image $disk"
[[ -z $size ]] || check_size "$size"
need qemu-img qemu-utils qemu

format=$(qemu-img info --output=json "$disk" | sed -n 's/.*"format": *"\([a-z0-9]*\)".*/\1/p' | head -n1)
[[ -n $format ]] || die "qemu-img cannot tell the format of $disk"

state_dir=${state_dir:-./abnix-vm-$(basename "$disk" | sed 's/\.[^.]*$//')}
[[ $fresh == yes ]] && rm -rf "$state_dir"
mkdir -p "$state_dir"

if [[ $in_place == yes ]]; then
  [[ -w $disk ]] || die "$disk is not writable; drop --in-place to boot it through an overlay"
  [[ -z $size ]] || qemu-img resize -f "$format" "$disk" "$size" >/dev/null
  boot_disk=$disk boot_format=$format
else
  boot_disk=$state_dir/disk.qcow2 boot_format=qcow2
  if [[ ! -e $boot_disk ]]; then
    qemu-img create -q -f qcow2 -F "$format" -b "$(realpath "$disk")" "$boot_disk" ${size:+"$size"}
  elif [[ -n $size ]]; then
    qemu-img resize -q "$boot_disk" "$size"
  fi
fi

vm_command "$arch" "$firmware" "$state_dir" "$memory" "$headless"
qemu+=(-drive "file=$boot_disk,format=$boot_format,if=virtio")
echo "boot-disk: booting $disk ($firmware, $arch); state in $state_dir" >&2
exec "${qemu[@]}" "${extra[@]}"
