#!/usr/bin/env bash
# Image pipeline benchmark (issue 2 item 4, issue 4 "Performance", DESIGN §9).
#
# Builds a realistic ext4 image (mkfs.ext4 -d of the first IMAGE_MIB of real
# files under /usr, in path order), cuts it into content-defined chunks
# compressed as independent zstd frames (bench/src/bin/write_image.rs, a
# stand-in for `abnix-update pack`), then times on the same machine in one run,
# each best of RUNS, target file sparse and freshly created, `sync` before
# every run (untimed), source object warm in the page cache:
#   (a)  write_image (abnix_core::pipeline) into a sparse file, fdatasync at the end
#   (b)  zstd -dc image.zst | dd of=FILE conv=notrunc bs=1M
#   (b') the same with conv=notrunc,fsync: (b) with the sync (a) does
#   (c)  zstd -dc image.zst > FILE
#   (d)  zstd -dc image.zst | tee FILE | sha256sum  (= tee >(sha256sum) > FILE,
#        but the shell waits for sha256sum, so its time counts)
# and prints wall time, MB/s of raw image, CPU time (user + sys of every
# process: the figure that survives a busy machine), peak RSS, and the ratios
# a/b, a/b', a/c of wall times.
#
# Figures from one run (RUNS=3) on the build machine: 2 vCPU Xeon with SHA-NI,
# shared with other jobs (load average 1-10 during the run), so wall times are
# noisy; CPU times are the stable figures.
#   image: 1280 MiB raw, 345 MiB compressed, 3518 chunks; 2 CPUs
#   (a)  write_image                             3.52 s  381 MB/s  2.40 s CPU  48.4 MiB RSS
#   (b)  zstd -dc | dd conv=notrunc bs=1M        3.16 s  425 MB/s  1.66 s CPU   5.0 MiB RSS
#   (b') zstd -dc | dd conv=notrunc,fsync bs=1M  4.08 s  329 MB/s  1.73 s CPU   5.1 MiB RSS
#   (c)  zstd -dc > file                         3.12 s  430 MB/s  1.61 s CPU   5.2 MiB RSS
#   (d)  zstd -dc | tee file | sha256sum        10.82 s  124 MB/s  6.01 s CPU   4.9 MiB RSS
#   (a+) write_image --verify (read-back)        8.51 s  158 MB/s  4.60 s CPU  42.5 MiB RSS
#   a/b = 1.11 (aim <= 1.10), a/b' = 0.86, a/c = 1.13
# Reading: (a) does what (b') does (it syncs at the end) in less time, and
# what (b) does within the noise of the aim. Its extra CPU over (b) is the
# per-chunk SHA-256 (SHA-NI). An earlier version also hashed the whole image
# a second time while streaming: 3.29 s CPU and a/b = 1.16 in the same
# conditions; that pass now happens only on read-back (see the pipeline's
# module doc). (d), the DESIGN §9 budget, costs 2.5x the CPU of (a):
# coreutils sha256sum has no SHA-NI (~400 MB/s).
# Peak RSS stays under 64 MiB (budget 32 MiB in flight).
# (a+) predates two changes (write-behind, and a read-back that hashes the
# whole image once instead of every chunk too): bench/install.sh has their
# figures.
#
# Usage: bench/pipeline.sh   (as root or not; needs zstd, mkfs.ext4, GNU time)
#   WORK=/var/tmp/abnix-bench-pipeline IMAGE_MIB=1280 RUNS=3
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/tmp/abnix-bench-pipeline}
IMAGE_MIB=${IMAGE_MIB:-1280}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

for tool in zstd mkfs.ext4 /usr/bin/time dd tee sha256sum; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

cargo build --quiet --release -p abnix-bench --bin write_image
BIN=$CARGO_TARGET_DIR/release/write_image
mkdir -p "$WORK"
RAW=$WORK/image.raw
PACKED=$WORK/packed
OUT=$WORK/out.img

if [ ! -s "$RAW" ]; then
    echo "building a ${IMAGE_MIB} MiB ext4 image from files under /usr ..."
    rm -rf "$WORK/tree"
    mkdir -p "$WORK/tree"
    # Real files up to ~85% of the image, so the filesystem is mostly full
    # (free space in an image is zeros, which would flatter every contender).
    find /usr -xdev -type f -printf '%s\t%p\n' | LC_ALL=C sort -t$'\t' -k2 >"$WORK/sizes"
    awk -F'\t' -v max=$((IMAGE_MIB * 1024 * 1024 * 85 / 100)) \
        '{ total += $1; if (total > max) exit; print $2 }' "$WORK/sizes" >"$WORK/files"
    tar -cf - --verbatim-files-from -T "$WORK/files" 2>/dev/null | tar -xf - -C "$WORK/tree"
    mkfs.ext4 -q -F -L bench -U 6d1c1d5e-8a53-4c39-9a86-0e0f3c9b4d11 -d "$WORK/tree" "$RAW" "${IMAGE_MIB}M"
    rm -rf "$WORK/tree" "$PACKED"
fi
if [ ! -s "$PACKED/image.chunks" ]; then
    echo "packing into independent zstd frames ..."
    "$BIN" pack "$RAW" "$PACKED"
fi
SIZE=$(stat -c %s "$RAW")
OBJECT=$PACKED/image.zst
echo "image: $((SIZE >> 20)) MiB raw, $(($(stat -c %s "$OBJECT") >> 20)) MiB compressed," \
    "$(($(wc -l <"$PACKED/image.chunks") - 1)) chunks; $(nproc) CPUs"
cat "$OBJECT" >/dev/null

# measure NAME COMMAND: prints the best elapsed seconds of RUNS, with that
# run's CPU seconds (user + sys, all processes) and peak RSS; sets $best.
measure() {
    local name=$1 cmd=$2 i t u s m cpu rss
    best=""
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$OUT"
        truncate -s "$SIZE" "$OUT"
        sync
        /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" bash -c "$cmd" >/dev/null
        read -r t u s m <"$WORK/time"
        if [ -z "$best" ] || awk "BEGIN { exit !($t < $best) }"; then
            best=$t cpu=$(awk "BEGIN { print $u + $s }") rss=$m
        fi
    done
    printf '%-46s %6.2f s %5.0f MB/s %6.2f s CPU %6.1f MiB RSS\n' "$name" "$best" \
        "$(awk "BEGIN { print $SIZE / $best / 1e6 }")" "$cpu" "$(awk "BEGIN { print $rss / 1024 }")"
}

measure "(a)  write_image" "'$BIN' write '$PACKED' '$OUT'"
a=$best
cmp "$OUT" "$RAW" || { echo "write_image wrote something else" >&2; exit 1; }
measure "(b)  zstd -dc | dd conv=notrunc bs=1M" \
    "zstd -dc '$OBJECT' | dd of='$OUT' conv=notrunc bs=1M status=none"
b=$best
measure "(b') zstd -dc | dd conv=notrunc,fsync bs=1M" \
    "zstd -dc '$OBJECT' | dd of='$OUT' conv=notrunc,fsync bs=1M status=none"
b_sync=$best
measure "(c)  zstd -dc > file" "zstd -dc '$OBJECT' > '$OUT'"
c=$best
measure "(d)  zstd -dc | tee file | sha256sum" "zstd -dc '$OBJECT' | tee '$OUT' | sha256sum"
measure "(a+) write_image --verify (read-back)" "'$BIN' write '$PACKED' '$OUT' --verify"
rm -f "$OUT"

awk -v a="$a" -v b="$b" -v bs="$b_sync" -v c="$c" 'BEGIN {
    printf "a/b  = %.2f   (aim: <= 1.10)\n", a / b
    printf "a/b'\'' = %.2f\n", a / bs
    printf "a/c  = %.2f\n", a / c
}'
