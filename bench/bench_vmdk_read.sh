#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench_vmdk_read.sh - reading VMDKs: `vmdk bench` vs `qemu-img bench -f vmdk`
# (4 KiB and 64 KiB requests, depth 1 and 32) and `vmdk convert -O raw` vs
# `qemu-img convert -O raw`, side by side in one run, median of REPEAT runs,
# page cache warm. Prints a markdown table; ratio = qemu time / our time
# (> 1: we are faster).
#
# Usage: bench/bench_vmdk_read.sh [BUILD_DIR]   (default: build)
# Env:   REPEAT (3), TARGET_S (seconds per qemu-img bench run, 1.5),
#        DATA_MIB (1024)
# Images (1 GiB of data, monolithicSparse and streamOptimized made by
# qemu-img convert from the same raw file) are cached in bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
REPEAT=${REPEAT:-3}
TARGET_S=${TARGET_S:-1.5}
DATA_MIB=${DATA_MIB:-1024}
VMDK=$BUILD/blockengine/tools/vmdk
[ -x "$VMDK" ] || { echo "no $VMDK: build first" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "qemu-img is missing" >&2; exit 1; }
OUT=bench/out/vmdk_read
mkdir -p "$OUT"

raw=$OUT/data-${DATA_MIB}M.raw
if [ ! -f "$raw" ]; then
  # incompressible-ish: per 64 KiB, 40 KiB random + 24 KiB of text-like bytes
  /usr/bin/python3 - "$raw" "$DATA_MIB" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
text = bytes(rnd.choice(b"etaoin shrdlu\n") for _ in range(24 << 10))
with open(path + ".tmp", "wb") as f:
    for _ in range(mib * 16):
        f.write(os.urandom(40 << 10) + text)
os.rename(path + ".tmp", path)
PY
fi
sparse=$OUT/sparse-${DATA_MIB}M.vmdk
stream=$OUT/stream-${DATA_MIB}M.vmdk
[ -f "$sparse" ] || qemu-img convert -f raw -O vmdk "$raw" "$sparse"
[ -f "$stream" ] || qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$raw" "$stream"
cat "$raw" "$sparse" "$stream" > /dev/null   # warm the page cache

calc() { awk "BEGIN { print $1 }"; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# seconds printed by a bench run ("Run completed in X seconds.")
bench_s() { "$@" | awk '/Run completed/ {print $4}'; }
wall_s() {
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
  calc "$t1 - $t0"
}

echo "| case | image | qemu-img (s) | vmdk (s) | ratio qemu/vmdk |"
echo "|---|---|---:|---:|---:|"
for img in sparse stream; do
  f=${!img}
  for size in 4k 64k; do
    for depth in 1 32; do
      # calibrate the count on qemu-img so one of its runs takes ~TARGET_S
      c0=2000
      t=$(bench_s qemu-img bench -f vmdk -c $c0 -d $depth -s $size "$f")
      count=$(awk -v c0=$c0 -v t="$t" -v tg="$TARGET_S" 'BEGIN {
        c = c0 * tg / (t + 0.0001); if (c < c0) c = c0; if (c > 2000000) c = 2000000
        printf "%d", c }')
      q=(); o=()
      for ((r = 0; r < REPEAT; r++)); do
        q+=("$(bench_s qemu-img bench -f vmdk -c "$count" -d $depth -s $size "$f")")
        o+=("$(bench_s "$VMDK" bench -c "$count" -d $depth -s $size "$f")")
      done
      qm=$(median "${q[@]}"); om=$(median "${o[@]}")
      printf '| bench -s %s -d %s -c %s | %s | %.3f | %.3f | %.2fx |\n' \
        "$size" "$depth" "$count" "$img" "$qm" "$om" "$(calc "$qm / ($om + 0.000001)")"
    done
  done
  q=(); o=()
  for ((r = 0; r < REPEAT; r++)); do
    # start each run with no dirty pages left by the previous one, so that
    # neither tool pays for the other's write-back; alternate who goes first
    for who in $( ((r % 2)) && echo "o q" || echo "q o"); do
      rm -f "$OUT/$who.raw"; sync
      if [ "$who" = q ]; then
        q+=("$(wall_s qemu-img convert -f vmdk -O raw "$f" "$OUT/q.raw")")
      else
        o+=("$(wall_s "$VMDK" convert -O raw "$f" "$OUT/o.raw")")
      fi
    done
  done
  cmp "$OUT/q.raw" "$OUT/o.raw" || { echo "convert outputs differ for $img" >&2; exit 1; }
  rm -f "$OUT/q.raw" "$OUT/o.raw"
  qm=$(median "${q[@]}"); om=$(median "${o[@]}")
  printf '| convert -O raw | %s | %.3f | %.3f | %.2fx |\n' \
    "$img" "$qm" "$om" "$(calc "$qm / ($om + 0.000001)")"
done
echo
echo "($(nproc) CPUs; $(qemu-img --version | head -n 1); median of $REPEAT runs; ${DATA_MIB} MiB of data)"
