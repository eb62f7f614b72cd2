#!/usr/bin/env bash
# Builds the root filesystem image of an abnix version (DESIGN §3): the store
# paths of a closure, the mount points a read-only NixOS root needs, and a few
# symlinks, as an erofs or ext4 image whose UUID is the version id.
#
#   root-image.sh FSTYPE UUID STORE_PATHS LINKS OUT
#
#   FSTYPE       erofs | ext4
#   UUID         the filesystem UUID (the version id)
#   STORE_PATHS  file with one store path per line (closureInfo's store-paths)
#   LINKS        file with "TARGET PATH" per line: symlinks to create in the
#                image, e.g. "/nix/store/…-bash/bin/sh /bin/sh"
#   OUT          the image file to write
#
# The same inputs give the same bytes: fixed UUIDs and hash seed, every
# timestamp at the epoch, every file owned by root. And two versions of a
# host share every block their contents allow, for delta updates
# (docs/delta.md): no seed depends on the version id, erofs keeps file data
# out of its metadata blocks and its store paths at stable places. Needs
# abnix-mkimage, and fsck.erofs or e2fsck, on PATH.
set -euo pipefail

if (($# != 5)); then
  echo "usage: $0 erofs|ext4 UUID STORE_PATHS LINKS OUT" >&2
  exit 2
fi
fs_type=$1 uuid=$2 store_paths=$3 links=$4 out=$5
case $fs_type in
erofs | ext4) ;;
*)
  echo "$0: unknown filesystem type '$fs_type' (erofs or ext4)" >&2
  exit 2
  ;;
esac

tree=$(mktemp -d)
trap 'chmod -R u+w "$tree"; rm -rf "$tree" "$tree.fsck"' EXIT

# Mount points of a read-only NixOS root (nix/modules/host.nix), and /.rw-etc
# where the tmpfs for the /etc overlay's upper layer is mounted.
mkdir -p "$tree"/{bin,dev,etc,home,nix/store,proc,root,run,rw,sys,tmp,usr/bin,var,.rw-etc}
chmod 1777 "$tree/tmp"
chmod 0700 "$tree/root"

while IFS= read -r path; do
  [[ -n $path ]] && cp -a "$path" "$tree/nix/store/"
done <"$store_paths"

# Written now because activation cannot write them into a read-only root.
while read -r target path; do
  [[ -n $path ]] || continue
  if [[ ! -e $tree$target ]]; then
    echo "$0: the link $path points to $target, which is not in the image" >&2
    exit 1
  fi
  ln -sfn "$target" "$tree$path"
done <"$links"

case $fs_type in
erofs)
  # abnix-mkimage (the image/ crate) in the store-path layout with stable
  # nids: each store path's data in one run, its inodes in one segment at a
  # home derived from its name, so a store path added, removed or changed
  # leaves the others' bytes as they were but for data addresses
  # (docs/delta.md, DESIGN §3). Uncompressed (the image object is
  # compressed per chunk already), no inline data for files (their tails
  # would sit among the inodes), every file owned by root, every time -T.
  # fsck.erofs is a gate, as e2fsck is for ext4: the writer is our own.
  abnix-mkimage erofs -U "$uuid" -T 1 "$out" "$tree"
  if ! fsck.erofs "$out" >"$tree.fsck" 2>&1; then
    cat "$tree.fsck" >&2
    echo "$0: fsck.erofs found errors in the new image" >&2
    exit 1
  fi
  ;;
ext4)
  # Our own writer (image/src/ext4): mkfs.ext4 has no option for the
  # layout that keeps an unchanged store path's bytes, metadata included
  # (docs/delta.md). It writes the UUID, the read-only feature, root as
  # every file's owner and every time at the epoch itself; the checksum
  # seed is a constant, not the version id.
  abnix-mkimage ext4 -U "$uuid" -T 1 "$out" "$tree"
  if ! e2fsck -fn "$out" >"$tree.fsck" 2>&1; then
    cat "$tree.fsck" >&2
    echo "$0: e2fsck found errors in the new image" >&2
    exit 1
  fi
  ;;
esac
