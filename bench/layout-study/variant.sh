#!/usr/bin/env bash
# Builds a root image the way nix/builders/root-image.sh did in phase A of
# issue 27 (commit 2ea8c04, mkfs.erofs or mkfs.ext4 under faketime and
# fakeroot), with its mkfs replaced by a layout prototype (docs/delta.md,
# "Layout for small deltas: the study"). Today's root-image.sh runs
# abnix-mkimage instead, which no shim reaches: this reproduces the study,
# it does not measure main's images (bench/delta.sh does). Needs a git
# checkout, and faketime and fakeroot, which scripts/setup no longer
# installs.
#
#   variant.sh VARIANT UUID STORE_PATHS LINKS OUT
#
# VARIANT:
#   erofs-1.5          Debian 12's mkfs.erofs (today's bench images)
#   erofs-X.Y          erofs-utils X.Y from $EROFS_UTILS/erofs-X.Y/bin (built
#                      from source)
#   erofs-writer       bench/layout-study/erofs-writer.py
#   ext4               mkfs.ext4 as phase A's root-image.sh ran it
#   ext4-writer        bench/layout-study/ext4-writer.py
# each followed by any options for the tool after a '+' each, e.g.
# erofs-1.9.3+--MZ or erofs-writer+--stable-nids.
#
# A shim named after the tool comes first on PATH and hands root-image.sh's
# arguments (UUID, options, OUT, tree) to the variant, so the staging of the
# tree stays phase A's root-image.sh's own.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
EROFS_UTILS=${EROFS_UTILS:-/var/tmp/abnix-study}

if (($# != 5)); then
  echo "usage: $0 VARIANT UUID STORE_PATHS LINKS OUT" >&2
  exit 2
fi
variant=$1
shift
shims=$(mktemp -d)
trap 'rm -rf "$shims"' EXIT
phase_a=$shims/root-image.sh
git -C "$root" show 2ea8c04:nix/builders/root-image.sh >"$phase_a"

extra=
if [[ $variant == *+* ]]; then
  extra=${variant#*+}
  extra=${extra//+/ }
  variant=${variant%%+*}
fi

case $variant in
erofs-1.5)
  fs=erofs
  if [[ -n $extra ]]; then
    printf '#!/bin/sh\nexec %q %s "$@"\n' "$(command -v mkfs.erofs)" "$extra" >"$shims/mkfs.erofs"
  fi
  ;;
erofs-writer*)
  fs=erofs
  printf '#!/bin/sh\nexec python3 %q %s "$@"\n' "$here/erofs-writer.py" "$extra" >"$shims/mkfs.erofs"
  ;;
erofs-*)
  fs=erofs
  version=${variant#erofs-}
  version=${version%%-*}
  printf '#!/bin/sh\nexec %q %s "$@"\n' "$EROFS_UTILS/erofs-$version/bin/mkfs.erofs" "$extra" >"$shims/mkfs.erofs"
  ;;
ext4)
  fs=ext4
  # root-image.sh's mkfs.ext4 command line is the variant.
  [[ -z $extra ]] || { echo "$0: ext4 takes no options" >&2; exit 2; }
  ;;
ext4-writer*)
  fs=ext4
  printf '#!/bin/sh\nexec python3 %q %s "$@"\n' "$here/ext4-writer.py" "$extra" >"$shims/mkfs.ext4"
  # The writer makes the image at its final size; resize2fs -M would move
  # blocks.
  printf '#!/bin/sh\nexit 0\n' >"$shims/resize2fs"
  ;;
*)
  echo "$0: unknown variant $variant" >&2
  exit 2
  ;;
esac
chmod +x "$shims"/*
# Not exec: the trap removes the shims and phase A's script afterwards.
PATH=$shims:$PATH bash "$phase_a" "$fs" "$@"
