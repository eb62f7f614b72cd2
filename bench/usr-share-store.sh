#!/usr/bin/env bash
# A Nix store stand-in for delta benchmarks (issue 27): every directory of
# /usr/share becomes a "store path" DIR/store/<hash>-<name>, the hash 32
# characters of Nix's base-32 alphabet taken from the SHA-256 of the name,
# so that store paths sort in an order unrelated to their names, as in
# /nix/store (on Debian 12's /usr/share python3 and qemu land 30th and
# 31st of 116, with 97% of the files after them). Hard links where DIR is
# on the same filesystem as /usr/share, else copies; made once.
#
#   usr-share-store.sh DIR
#
# Writes DIR/usr-v1.paths (every store path but qemu's, ~8 MB) and
# DIR/usr-v2.paths (every store path but python3's, ~144 KB): the second
# version drops one store path and adds one.
set -euo pipefail
dir=$1
added=qemu
removed=python3
for name in "$added" "$removed"; do
  [[ -d /usr/share/$name ]] || { echo "missing /usr/share/$name (this bench expects a Debian build machine)" >&2; exit 1; }
done
mkdir -p "$dir/store"
: >"$dir/usr-v1.paths.tmp"
: >"$dir/usr-v2.paths.tmp"
# NAME HASH-NAME per directory.
nix_names() {
  python3 - /usr/share/*/ <<'PY'
import hashlib, os, sys
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
for source in sys.argv[1:]:
    name = os.path.basename(source.rstrip("/"))
    n = int.from_bytes(hashlib.sha256(name.encode()).digest()[:20], "little")
    print(name, "".join(alphabet[(n >> (5 * i)) & 31] for i in range(32))[::-1] + "-" + name)
PY
}
nix_names | while read -r name hashed; do
  source=/usr/share/$name
  path=$dir/store/$hashed
  if [[ ! -e $path ]]; then
    cp -al "$source" "$path.tmp" 2>/dev/null || { rm -rf "$path.tmp"; cp -a "$source" "$path.tmp"; }
    mv "$path.tmp" "$path"
  fi
  [[ $name == "$added" ]] || echo "$path" >>"$dir/usr-v1.paths.tmp"
  [[ $name == "$removed" ]] || echo "$path" >>"$dir/usr-v2.paths.tmp"
done
sort -o "$dir/usr-v1.paths" "$dir/usr-v1.paths.tmp"
sort -o "$dir/usr-v2.paths" "$dir/usr-v2.paths.tmp"
rm "$dir/usr-v1.paths.tmp" "$dir/usr-v2.paths.tmp"
