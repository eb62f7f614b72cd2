#!/usr/bin/env bash
# Measures layout prototypes on issue 27's case (bench/usr-share-store.sh:
# ~120 store paths from /usr/share, one ~144 KB path dropped, one ~8 MB
# path added): for each VARIANT (see variant.sh), builds the two images,
# packs them with the default chunking (bench/src/bin/delta.rs `measure`),
# and splits the delta download with bench/delta-bytes.py.
#
#   run.sh VARIANT...        WORK=/var/tmp/abnix-study
#   CASE="V1.paths V2.paths" measures another pair of store path lists
#   instead, e.g. bench/delta.sh's (a) from its WORK/{erofs-v1,erofs-v2}.paths
#
# Results: WORK/VARIANT/{measure,bytes}.txt. Images and bundles are kept
# and reused, so one WORK per case (they are not rebuilt when CASE
# changes); one variant at a time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
WORK=${WORK:-/var/tmp/abnix-study}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p abnix-bench --bin delta
bin=$CARGO_TARGET_DIR/release/delta

mkdir -p "$WORK/case"
if [[ -n ${CASE:-} ]]; then
  read -r v1_paths v2_paths <<<"$CASE"
  cp "$v1_paths" "$WORK/case/v1.paths"
  cp "$v2_paths" "$WORK/case/v2.paths"
else
  "$root/bench/usr-share-store.sh" "$WORK/case"
  cp "$WORK/case/usr-v1.paths" "$WORK/case/v1.paths"
  cp "$WORK/case/usr-v2.paths" "$WORK/case/v2.paths"
fi
: >"$WORK/case/links"
for variant in "$@"; do
  out=$WORK/$variant
  mkdir -p "$out"
  for v in 1 2; do
    if [[ ! -s $out/v$v.img ]]; then
      start=$(date +%s)
      "$here/variant.sh" "$variant" "77777777-0000-4000-8000-00000000000$v" \
        "$WORK/case/v$v.paths" "$WORK/case/links" "$out/v$v.img.tmp"
      mv "$out/v$v.img.tmp" "$out/v$v.img"
      echo "$variant v$v built in $(($(date +%s) - start)) s" >>"$out/build.txt"
    fi
  done
  if [[ ! -s $out/measure.txt ]]; then
    "$bin" measure "$out/v1.img" "$out/v2.img" "$out/m" 16K/64K/256K >"$out/measure.txt.tmp"
    mv "$out/measure.txt.tmp" "$out/measure.txt"
  fi
  python3 "$root/bench/delta-bytes.py" "$out/v1.img" "$out"/m/old-*/*.index \
    "$out/v2.img" "$out"/m/new-*/*.index >"$out/bytes.txt"
  echo "== $variant"
  cat "$out/measure.txt" "$out/bytes.txt"
done
