# shellcheck shell=bash
# Waits, on the installer ISO, until the machine has a disk to install onto:
# a whole disk with a size, writable, that is not the installer's own medium.
# Disks behind slow controllers (USB, some NVMe and RAID cards) show up
# seconds after boot; `abnix-install --auto` chooses among the disks present
# when it starts, and checks each fully (docs/cli.md). This replaces waiting
# for systemd-udev-settle.service, which NixOS no longer ships: udev's queue
# is drained on every round (`udevadm settle`), so the disks found have
# their device nodes and properties.
#
#   abnix-wait-for-disk SECONDS MEDIUM
#
# MEDIUM is where the installer's medium is mounted (/iso); its disk is not
# a target. Exits 0 as soon as a disk is there, 1 with what it saw once
# SECONDS have passed. Run by writeShellApplication (errexit, nounset,
# pipefail) with util-linux and systemd on the PATH; nix/check.sh tests it.

if (($# != 2)) || [[ ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: abnix-wait-for-disk SECONDS MEDIUM" >&2
  exit 2
fi
timeout=$1 medium=$2

# The whole disk the medium is mounted from, if it is mounted.
medium_disk() {
  local source parent
  source=$(findmnt --noheadings --output SOURCE --mountpoint "$medium" 2>/dev/null) || return 0
  [[ -n $source ]] || return 0
  source=$(readlink -f "$source")
  parent=$(lsblk --noheadings --nodeps --output PKNAME "$source" 2>/dev/null || true)
  if [[ -n ${parent// /} ]]; then echo "/dev/${parent// /}"; else echo "$source"; fi
}

# Whole disks with a size (an empty card reader slot has none), writable,
# not RAM-backed, and not the medium.
targets() {
  local skip name type size ro
  skip=$(medium_disk)
  while read -r name type size ro; do
    [[ $type == disk && $size != 0 && $ro == 0 && $name != "$skip" ]] || continue
    [[ $name == /dev/zram* || $name == /dev/ram* ]] && continue
    echo "$name"
  done < <(lsblk --noheadings --nodeps --paths --bytes --output NAME,TYPE,SIZE,RO)
}

echo "abnix: waiting up to $timeout s for a disk to install onto"
deadline=$((SECONDS + timeout))
while true; do
  udevadm settle --timeout=10 || echo "abnix: udev is still busy after 10 s; looking at the disks anyway"
  found=$(targets)
  if [[ -n $found ]]; then
    echo "abnix: disks to choose from: $(echo "$found" | tr '\n' ' ')"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    echo "abnix: no disk to install onto appeared within $timeout s: none is a writable whole disk" \
      "other than the installer's medium ($(medium_disk || true))."
    echo "abnix: connect the target disk (or check its controller) and reboot the installer; the block devices now:"
    lsblk --output NAME,TYPE,SIZE,RO,RM,MOUNTPOINTS || true
    exit 1
  fi
  sleep 1
done
