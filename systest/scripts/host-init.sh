#!/bin/sh
# /init of a fixture version: "the host". The fixture initramfs has mounted this
# root read-only and moved /dev, /proc and /sys into it.
#
# /etc/abnix-fixture/fixture.env sets:
#   VERSION, ID     the version number and id (the root filesystem's UUID)
#   BEHAVIOUR       healthy | never-healthy | kernel-panic
#   THEN            healthy only: poweroff | reboot | idle, once the commands ran
#   REBOOT_AFTER    never-healthy only: seconds before the health check "times
#                   out" and the machine reboots
# /etc/abnix-fixture/commands lists the shell commands a healthy host runs, one
# a line (such as abnix-update mark-good).
#
# Everything the test reads is a console line starting with ABNIX-FIXTURE.

export PATH=/bin
export HOME=/root
# A command's exit code, not that of the pipe its output goes through.
set -o pipefail

. /etc/abnix-fixture/fixture.env

say() {
	echo "ABNIX-FIXTURE $*"
}

# busybox's reboot and poweroff (without -f) signal PID 1, so a command such as
# the updater can restart the machine the usual way.
trap 'sync; reboot -f' TERM
trap 'sync; poweroff -f' USR2

slot=none
for argument in $(cat /proc/cmdline); do
	case "$argument" in
	abnix.slot=*) slot=${argument#abnix.slot=} ;;
	esac
done
say "version=$VERSION id=$ID slot=$slot behaviour=$BEHAVIOUR"

if [ "$BEHAVIOUR" = kernel-panic ]; then
	say "panicking"
	# PID 1 exiting makes the kernel panic ("Attempted to kill init!").
	exit 1
fi

mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp

# The read-write partition is found by its GPT partition name, which the
# kernel reports as PARTNAME in each partition's uevent. Mounted as a host
# mounts it (nix/modules/host.nix): abnix-rw at /rw, its var/, home/ and root/
# created if missing and bind-mounted at /var, /home and /root; abnix's state
# is /var/lib/abnix.
rw_device=
for uevent in /sys/class/block/*/uevent; do
	if grep -qx PARTNAME=abnix-rw "$uevent"; then
		rw_device=/dev/$(sed -n 's/^DEVNAME=//p' "$uevent")
	fi
done
mount_rw() {
	mount -o rw "$rw_device" /rw || return 1
	mkdir -p -m 0755 /rw/var /rw/home && mkdir -p -m 0700 /rw/root || return 1
	for directory in var home root; do
		mount -o bind "/rw/$directory" "/$directory" || return 1
	done
	mkdir -p /var/lib/abnix
}
if [ -z "$rw_device" ]; then
	say "rw=none"
elif mount_rw; then
	say "rw=$rw_device"
else
	say "rw=failed device=$rw_device"
fi

# A root that carries an (empty) /etc/machine-id gets the machine's own id
# there, as systemd makes it on a virtual machine: its SMBIOS UUID (QEMU's
# -uuid) without the dashes. The root is read-only: the id is bound over it.
if [ -f /etc/machine-id ]; then
	if tr -d - </sys/class/dmi/id/product_uuid >/run/machine-id &&
		mount -o bind /run/machine-id /etc/machine-id; then
		say "machine-id=$(cat /etc/machine-id)"
	else
		say "machine-id=failed"
	fi
fi

# QEMU's user network, statically: the host is 10.0.2.2.
ip link set lo up
if ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
	ip route add default via 10.0.2.2; then
	say "network=up"
else
	say "network=none"
fi

# Waits in the background so the traps above run as soon as a signal arrives.
pause() {
	sleep "$1" &
	wait $!
}

if [ "$BEHAVIOUR" = never-healthy ]; then
	say "never healthy: rebooting in $REBOOT_AFTER s"
	pause "$REBOOT_AFTER"
	sync
	reboot -f
fi

number=0
while IFS= read -r command; do
	number=$((number + 1))
	say "command=$number run: $command"
	# Its output goes through a pipe, as a service's goes to the journal: the
	# tools print plain lines, no progress bars or colours on the console.
	# In the background and waited for, so a reboot a command asks for (the
	# updater runs `reboot`, which signals PID 1) is honoured at once: a
	# shell runs its traps only between foreground commands.
	sh -c "$command" </dev/null 2>&1 | cat &
	wait $!
	say "command=$number exit=$?"
done </etc/abnix-fixture/commands

say "done then=$THEN"
sync
case "$THEN" in
poweroff) poweroff -f ;;
reboot) reboot -f ;;
esac
while true; do
	pause 3600
done
