#!/bin/sh
# /init of the fixture initramfs (busybox).
#
# It loads the kernel modules listed in /etc/fixture/initramfs.env (virtio and
# friends; ext4 is built into Debian's cloud kernel), then, by MODE:
#   boot          find the root given as root=UUID=... on the kernel command
#                 line, mount it read-only and switch_root into its init (init=,
#                 default INIT) -- what a host's initrd does;
#   systemd-host  the same, with what a NixOS host's stage 1 mounts before it
#                 starts systemd from the root (nix/modules/host.nix); prints
#                 the version's marker line (the root's
#                 /etc/abnix-fixture/fixture.env);
#   installer     run the command in /etc/fixture/installer-command, print its
#                 exit code and power off -- an installer environment.
#
# Any failure exits this script: PID 1 exiting makes the kernel panic, and with
# panic=N on the command line the machine reboots, as a real broken boot would.

export PATH=/bin

fail() {
	echo "ABNIX-INITRAMFS error: $*"
	exit 1
}

. /etc/fixture/initramfs.env || fail "no /etc/fixture/initramfs.env"

mount -t proc proc /proc || fail "mounting /proc"
mount -t sysfs sysfs /sys || fail "mounting /sys"
mount -t devtmpfs devtmpfs /dev || fail "mounting /dev"

for module in $MODULES; do
	insmod "/lib/modules/$module.ko" || fail "loading module $module"
done

if [ "$MODE" = installer ]; then
	command=$(cat /etc/fixture/installer-command)
	echo "ABNIX-INSTALLER run: $command"
	sh -c "$command"
	echo "ABNIX-INSTALLER exit=$?"
	sync
	poweroff -f
fi

root=
# shellcheck disable=SC2153 # INIT comes from initramfs.env
init=$INIT
slot=none
for argument in $(cat /proc/cmdline); do
	case "$argument" in
	root=*) root=${argument#root=} ;;
	init=*) init=${argument#init=} ;;
	abnix.slot=*) slot=${argument#abnix.slot=} ;;
	esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"

# The UUID of the erofs filesystem on device $1, which busybox's findfs does
# not know: its superblock, at 1024, starts with the magic e2 e1 f5 e0 and
# holds the UUID's 16 bytes at 48 (the kernel's fs/erofs/erofs_fs.h).
erofs_uuid() {
	# shellcheck disable=SC2046 # one word per byte
	set -- $(od -An -tx1 -j1024 -N64 "$1" 2>/dev/null)
	[ "$#" -eq 64 ] && [ "$1$2$3$4" = e2e1f5e0 ] || return 1
	shift 48
	echo "$1$2$3$4-$5$6-$7$8-$9${10}-${11}${12}${13}${14}${15}${16}"
}

# The device holding the filesystem $root (UUID=...) names.
find_root() {
	findfs "$root" 2>/dev/null && return
	case "$root" in
	UUID=*) ;;
	*) return 1 ;;
	esac
	for block in /sys/class/block/*; do
		if [ "$(erofs_uuid "/dev/${block##*/}")" = "${root#UUID=}" ]; then
			echo "/dev/${block##*/}"
			return
		fi
	done
	return 1
}

# The device of the partition whose GPT name is $1: the kernel reports it as
# PARTNAME in the partition's uevent.
partition_named() {
	for uevent in /sys/class/block/*/uevent; do
		if grep -qx "PARTNAME=$1" "$uevent"; then
			echo "/dev/$(sed -n 's/^DEVNAME=//p' "$uevent")"
			return
		fi
	done
	return 1
}

# What a NixOS host mounts in stage 1 (nix/modules/host.nix), under /newroot:
# /etc as an overlay whose upper layer is a tmpfs on /.rw-etc (writable, every
# change gone at the next boot); abnix-rw at /rw, its var/, home/ and root/
# created if missing and bound at /var, /home and /root; the machine id kept
# next to abnix's state and copied into /etc.
host_mounts() {
	mount -t tmpfs -o mode=0755 rw-etc /newroot/.rw-etc || fail "mounting /.rw-etc"
	mkdir /newroot/.rw-etc/upper /newroot/.rw-etc/work
	mount -t overlay -o lowerdir=/newroot/etc,upperdir=/newroot/.rw-etc/upper,workdir=/newroot/.rw-etc/work \
		etc /newroot/etc || fail "mounting the /etc overlay"
	rw=$(partition_named abnix-rw) || fail "no partition named abnix-rw"
	mount -o rw "$rw" /newroot/rw || fail "mounting $rw (abnix-rw) on /rw"
	for directory in var home root; do
		permissions=0755
		[ "$directory" = root ] && permissions=0700
		[ -d "/newroot/rw/$directory" ] || mkdir -m "$permissions" "/newroot/rw/$directory" ||
			fail "creating /rw/$directory"
		mount -o bind "/newroot/rw/$directory" "/newroot/$directory" || fail "binding /rw/$directory"
	done
	saved=/newroot/var/lib/abnix/machine-id
	if [ ! -s "$saved" ]; then
		mkdir -p /newroot/var/lib/abnix
		if ! { tr -d - </proc/sys/kernel/random/uuid >"$saved.tmp" && mv "$saved.tmp" "$saved"; }; then
			fail "saving a machine id"
		fi
	fi
	cp "$saved" /newroot/etc/machine-id || fail "copying the machine id"
}

# virtio-blk disks appear asynchronously after the module loads: wait for the
# root for up to 10 s.
tries=0
until device=$(find_root); do
	tries=$((tries + 1))
	[ "$tries" -le 100 ] || fail "root $root not found"
	usleep 100000
done

mkdir -p /newroot
mount -o ro "$device" /newroot || fail "mounting $device ($root) read-only"
if [ "$MODE" = systemd-host ]; then
	. /newroot/etc/abnix-fixture/fixture.env || fail "no /etc/abnix-fixture/fixture.env in the root"
	echo "ABNIX-FIXTURE version=$VERSION id=$ID slot=$slot behaviour=$BEHAVIOUR root=$device"
	host_mounts
	echo "ABNIX-FIXTURE rw=$rw"
fi
for filesystem in /dev /proc /sys; do
	mount --move "$filesystem" "/newroot$filesystem" || fail "moving $filesystem into the root"
done
exec switch_root /newroot "$init"
