#!/usr/bin/env bash
# Fetch benchmark (issue 2 item 7, DESIGN §9): the whole download path of a
# device, from a local S3 server into a file, against the shell baseline.
#
# In one run on one machine: builds a realistic ext4 image (mkfs.ext4 -d of
# the first IMAGE_MIB * 85% of real files under /usr, in path order; cached
# under WORK), packs it with `abnix-update pack` (default level), publishes it
# to a fresh s3s-fs on 127.0.0.1 (anonymous access, so curl needs no
# signature), then times, best of RUNS each, target file removed and `sync`
# before every run (untimed), the object warm in the page cache:
#   (a)  abnix-update fetch --to FILE   (meta, signature, index, image:
#        parallel decompression, SHA-256 of every chunk against the signed
#        index, fsync at the end; no read-back, as in the baseline)
#   (b)  curl URL | zstd -d | tee FILE | sha256sum   (the DESIGN §9 baseline
#        `curl | zstd -d | tee >(sha256sum) > FILE`, written so that the
#        shell waits for sha256sum and its time counts)
#   (c)  zstd -dc image.zst > FILE      (local file, no network, no hashing)
# and, to explain the figures:
#   (c+) zstd -dc image.zst > FILE; sync FILE   ((c) with the fsync (a) does)
#   (d)  curl URL > /dev/null           (what the server delivers)
# Printed: wall time, MB/s of raw image, CPU time (user + sys of every
# process, the figure that survives a busy machine), peak RSS (of the
# largest process), and the ratios against the targets of issue 2:
# a/b <= 0.5 (a twice as fast as b), a/c <= 1.3, RSS of (a) <= 64 MiB.
#
# Figures, three runs (RUNS=3 each) on a quiet machine, 2026-12-06: 2 vCPU
# AMD EPYC (SHA extensions) in a Firecracker VM, where writing into the page
# cache is slow, so (c) is write-bound rather than CPU-bound; s3s-fs serves
# ~500-700 MB/s (d):
#   image: 1280 MiB raw, 337 MiB compressed; 2 CPUs
#   (a)  abnix-update fetch                  2.65-3.34 s  3.0-3.5 s CPU   37-41 MiB RSS
#   (b)  curl | zstd -d | tee | sha256sum    5.93-6.57 s  8.2-9.5 s CPU   10.8 MiB RSS
#   (c)  zstd -dc > file                     2.58-3.10 s  2.6-3.0 s CPU    3.7 MiB RSS
#   (c+) zstd -dc > file; sync file          3.24-3.46 s  2.8-2.9 s CPU    3.7 MiB RSS
#   (d)  curl > /dev/null                    1.89-2.53 s  0.25 s CPU
#   a/b  = 0.55, 0.51, 0.45 (target <= 0.50: met once; CPU ratio 0.35-0.41)
#   a/c  = 1.06, 1.23, 1.03 (target <= 1.30: met each time)
#   RSS of (a) 37.7-40.6 MiB (target <= 64: met)
# Reading: here (a) is held back by the server and the page cache, not by
# its own work: it takes well under half the CPU of (b), but (b)'s wall
# time is only about twice the time this machine needs to write the file
# at all, (c). On the previous build machine (2 vCPU Xeon, fast page cache,
# (c) 1.21 s) the same figures were a/b = 0.39 (met) and a/c = 1.61
# (missed, by its fsync: a/c+ = 1.20); the fetch has since started the
# writeback of every 16 MiB as it goes (core::disk::WriteBehind), which
# takes most of the fsync's work off the end; not measured there since.
#
# Usage: bench/fetch.sh   (needs s3s-fs, zstd, curl, mkfs.ext4, GNU time,
#   python3; ./scripts/setup installs them)
#   WORK=/var/tmp/abnix-bench-fetch IMAGE_MIB=1280 RUNS=3 ABNIX_UPDATE=
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/s3s-fs.sh
source scripts/lib/s3s-fs.sh

WORK=${WORK:-/var/tmp/abnix-bench-fetch}
IMAGE_MIB=${IMAGE_MIB:-1280}
RUNS=${RUNS:-3}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

for tool in s3s-fs zstd curl mkfs.ext4 /usr/bin/time tee sha256sum python3; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (run ./scripts/setup)" >&2
    exit 1
  }
done

# ABNIX_UPDATE=path measures another build (e.g. to compare a change).
if [ -n "${ABNIX_UPDATE:-}" ]; then
  BIN=$ABNIX_UPDATE
else
  cargo build --quiet --release -p abnix-updater
  BIN=$CARGO_TARGET_DIR/release/abnix-update
fi
mkdir -p "$WORK"
RAW=$WORK/image.raw
BUNDLE=$WORK/bundle

if [ ! -s "$RAW" ]; then
  echo "building a ${IMAGE_MIB} MiB ext4 image from files under /usr ..."
  rm -rf "$WORK/tree" "$BUNDLE"
  mkdir -p "$WORK/tree"
  # Real files up to ~85% of the image, so the filesystem is mostly full:
  # free space is zeros, which would flatter every contender.
  find /usr -xdev -type f -printf '%s\t%p\n' | LC_ALL=C sort -t$'\t' -k2 >"$WORK/sizes"
  awk -F'\t' -v max=$((IMAGE_MIB * 1024 * 1024 * 85 / 100)) \
    '{ total += $1; if (total > max) exit; print $2 }' "$WORK/sizes" >"$WORK/files"
  tar -cf - --verbatim-files-from -T "$WORK/files" 2>/dev/null | tar -xf - -C "$WORK/tree"
  mkfs.ext4 -q -F -L bench -U 2f0c9a4e-6b1d-4e7a-8c35-91d2e0b7a6f4 -d "$WORK/tree" "$RAW" "${IMAGE_MIB}M"
  rm -rf "$WORK/tree" "$WORK/sizes" "$WORK/files"
fi
if [ ! -s "$WORK/bench.key" ]; then
  "$BIN" keygen --name abnix-bench --out "$WORK/bench.key" >"$WORK/bench.pub"
fi
# pack writes the meta last: a bundle with a .meta is complete.
if ! compgen -G "$BUNDLE/*.meta" >/dev/null; then
  echo "packing ..."
  rm -rf "$BUNDLE"
  # Stand-ins for the kernel and initrd: real binaries of about that size.
  "$BIN" pack --image "$RAW" --kernel "$(command -v bash)" --initrd "$(command -v zstd)" \
    --cmdline "init=/nix/store/bench/init" --version 1 --label "fetch benchmark" \
    --key "$WORK/bench.key" --out "$BUNDLE"
fi
OBJECT=$(compgen -G "$BUNDLE/*.img.zst")
META=$(compgen -G "$BUNDLE/*.meta")
IMAGE_SHA256=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["image"]["sha256"])' "$META")
SIZE=$(stat -c %s "$RAW")

SERVER=$(mktemp -d /var/tmp/abnix-bench-fetch-s3.XXXXXX)
OUT=$WORK/out.img
cleanup() {
  [ -z "${S3S_PID:-}" ] || kill "$S3S_PID" 2>/dev/null || true
  rm -rf "$SERVER" "$SERVER.log" "$OUT" "$OUT.partial"
}
trap cleanup EXIT
mkdir "$SERVER/bench"
start_s3s_fs "$SERVER"
REMOTE=(--endpoint "$S3S_ENDPOINT" --region us-east-1 --bucket bench --channel fetch
  --path-style --anonymous --trusted-key "$(cat "$WORK/bench.pub")")
"$BIN" publish --bundle "$BUNDLE" "${REMOTE[@]}" >/dev/null
URL=$S3S_ENDPOINT/bench/fetch/$(basename "$OBJECT")

echo "image: $((SIZE >> 20)) MiB raw, $(($(stat -c %s "$OBJECT") >> 20)) MiB compressed;" \
  "$(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$OBJECT" >/dev/null

# CPU seconds the S3 server has used so far: on a small machine it competes
# with the client for the same cores.
server_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$S3S_PID/stat"
}

# measure NAME COMMAND...: runs COMMAND RUNS times and prints the best wall
# time with that run's CPU seconds (user + sys, all processes), the server's
# CPU seconds meanwhile, and peak RSS; sets $best, $best_cpu and $best_rss
# (KiB). COMMAND's stdout goes to $WORK/stdout.
measure() {
  local name=$1 i t u s m srv0 srv
  shift
  best=""
  for ((i = 0; i < RUNS; i++)); do
    rm -f "$OUT"
    sync
    srv0=$(server_cpu)
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/stdout"
    srv=$(awk "BEGIN { print $(server_cpu) - $srv0 }")
    read -r t u s m <"$WORK/time"
    if [ -z "$best" ] || awk "BEGIN { exit !($t < $best) }"; then
      best=$t best_cpu=$(awk "BEGIN { print $u + $s }") best_rss=$m best_srv=$srv
    fi
  done
  printf '%-38s %6.2f s %5.0f MB/s %6.2f s CPU %5.2f s server %6.1f MiB RSS\n' "$name" \
    "$best" "$(awk "BEGIN { print $SIZE / $best / 1e6 }")" "$best_cpu" "$best_srv" \
    "$(awk "BEGIN { print $best_rss / 1024 }")"
}

measure "(a)  abnix-update fetch" "$BIN" fetch --to "$OUT" "${REMOTE[@]}"
a=$best a_cpu=$best_cpu a_rss=$best_rss
grep -q '^resumes 0$' "$WORK/stdout" || {
  echo "fetch resumed: the figures are not comparable" >&2
  cat "$WORK/stdout" >&2
  exit 1
}
cmp "$OUT" "$RAW" || {
  echo "fetch wrote something else than the image" >&2
  exit 1
}
measure "(b)  curl | zstd -d | tee | sha256sum" \
  bash -c "curl -sSf '$URL' | zstd -dc | tee '$OUT' | sha256sum"
b=$best b_cpu=$best_cpu
read -r sum _ <"$WORK/stdout"
[ "$sum" = "$IMAGE_SHA256" ] || {
  echo "(b) got SHA-256 $sum, the meta says $IMAGE_SHA256" >&2
  exit 1
}
measure "(c)  zstd -dc > file" bash -c "zstd -dc '$OBJECT' > '$OUT'"
c=$best c_cpu=$best_cpu
measure "(c+) zstd -dc > file; sync file" bash -c "zstd -dc '$OBJECT' > '$OUT' && sync '$OUT'"
c_sync=$best
measure "(d)  curl > /dev/null" curl -sSf -o /dev/null "$URL"

awk -v a="$a" -v b="$b" -v c="$c" -v cs="$c_sync" -v rss="$a_rss" \
  -v ac="$a_cpu" -v bc="$b_cpu" -v cc="$c_cpu" 'BEGIN {
  printf "a/b  = %.2f   (target <= 0.50: %s)   CPU: %.2f\n", a / b, (a / b <= 0.5 ? "met" : "MISSED"), ac / bc
  printf "a/c  = %.2f   (target <= 1.30: %s)   CPU: %.2f\n", a / c, (a / c <= 1.3 ? "met" : "MISSED"), ac / cc
  printf "a/c+ = %.2f   (both with an fsync)\n", a / cs
  printf "RSS of (a) = %.1f MiB   (target <= 64: %s)\n", rss / 1024, (rss <= 65536 ? "met" : "MISSED")
}'
