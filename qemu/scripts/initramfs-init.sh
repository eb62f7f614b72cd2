#!/bin/sh
# /init of the fixture initramfs (busybox).
#
# It loads the kernel modules listed in /etc/fixture/initramfs.env (virtio and
# friends; ext4 is built into Debian's cloud kernel), then, by MODE:
#   boot       find the root given as root=UUID=... on the kernel command line,
#              mount it read-only and switch_root into its init (init=, default
#              /init) -- what a host's initrd does;
#   installer  run the command in /etc/fixture/installer-command, print its exit
#              code and power off -- an installer environment.
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
init=/init
for argument in $(cat /proc/cmdline); do
	case "$argument" in
	root=*) root=${argument#root=} ;;
	init=*) init=${argument#init=} ;;
	esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"

# virtio-blk disks appear asynchronously after the module loads: wait for the
# root for up to 10 s.
tries=0
until device=$(findfs "$root" 2>/dev/null); do
	tries=$((tries + 1))
	[ "$tries" -le 100 ] || fail "root $root not found"
	usleep 100000
done

mkdir -p /newroot
mount -o ro "$device" /newroot || fail "mounting $device ($root) read-only"
for filesystem in /dev /proc /sys; do
	mount --move "$filesystem" "/newroot$filesystem" || fail "moving $filesystem into the root"
done
exec switch_root /newroot "$init"
