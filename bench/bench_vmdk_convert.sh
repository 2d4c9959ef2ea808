#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# bench_vmdk_convert.sh - raw -> streamOptimized: `vmdk convert` vs
# `qemu-img convert`, median wall time of 3 runs each, and output sizes.
#
# Usage: bench/bench_vmdk_convert.sh [BUILD_DIR] [SIZE_MIB]
# The input is SIZE_MIB (default 1024) MiB: per 8 MiB, 3 MiB of text-like
# data, 1 MiB of random bytes, 1 MiB of a repeating pattern, 3 MiB of holes.
set -eu
BUILD=${1:-build}
MIB=${2:-1024}
VMDK=$BUILD/blockengine/tools/vmdk
W=$(mktemp -d /var/tmp/bench_convert.XXXXXX)
trap 'rm -rf "$W"' EXIT

python3 - "$W/src.raw" "$MIB" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
M = 1 << 20
rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
         for _ in range(4000)]
text = b" ".join(rnd.choice(words) for _ in range(600000))[:3 * M]
with open(path, "wb") as f:
    f.truncate(mib * M)
    for base in range(0, mib * M, 8 * M):
        f.seek(base)
        f.write(text)
        f.write(rnd.randbytes(M))
        f.write(bytes(range(256)) * 4096)
PY
sync

median() { sort -n | sed -n 2p; }
timeit() { # prints "wall_seconds cpu_seconds" (cpu = user + sys)
	/usr/bin/time -f "%e %U %S" -o "$W/time" "$@" >/dev/null
	awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$W/time"
}

for i in 1 2 3; do
	rm -f "$W/o.vmdk"
	timeit "$VMDK" convert -O vmdk -o subformat=streamOptimized "$W/src.raw" "$W/o.vmdk"
done | median > "$W/t_ovk"
for i in 1 2 3; do
	rm -f "$W/q.vmdk"
	timeit qemu-img convert -O vmdk -o subformat=streamOptimized "$W/src.raw" "$W/q.vmdk"
done | median > "$W/t_qemu"
qemu-img compare "$W/src.raw" "$W/o.vmdk" >/dev/null
t_ovk=$(cut -d' ' -f1 "$W/t_ovk"); t_qemu=$(cut -d' ' -f1 "$W/t_qemu")
c_ovk=$(cut -d' ' -f2 "$W/t_ovk"); c_qemu=$(cut -d' ' -f2 "$W/t_qemu")
s_ovk=$(stat -c %s "$W/o.vmdk"); s_qemu=$(stat -c %s "$W/q.vmdk")
printf "input: %s MiB raw (mixed data and holes), %s cores\n" "$MIB" "$(nproc)"
printf "load average at the end (1/5/15 min): %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-24s %10s %10s %14s\n" tool "median s" "its cpu s" "output bytes"
printf "%-24s %10.2f %10.2f %14s\n" "vmdk convert (ovk)" "$t_ovk" "$c_ovk" "$s_ovk"
printf "%-24s %10.2f %10.2f %14s\n" "qemu-img convert" "$t_qemu" "$c_qemu" "$s_qemu"
printf "time ratio qemu/ovk: %.2fx, size ratio ovk/qemu: %.3f\n" \
	"$(echo "$t_qemu / $t_ovk" | bc -l)" "$(echo "$s_ovk / $s_qemu" | bc -l)"
