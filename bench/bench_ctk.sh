#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# What changed-block tracking costs: 4 KiB writes at random offsets,
# depth 32, one queue (engine_bench MODE w vs wc), on a fully allocated
# raw file and on a monolithicSparse VMDK whose grains are all allocated.
# With tracking on, a checkpoint is created just before the timed run, so
# the map starts empty (the worst case: the first write to each 64 KiB
# chunk sets a bit in a page of the shared mapping that may fault in;
# later writes pay a mutex and a bit test). Runs alternate, ROUNDS times
# each; medians. Last, test_ctk cost times the marking alone, which does
# not depend on the disk or the machine's load as much.
# Usage: bench/bench_ctk.sh [BUILD_DIR] [COUNT] [ROUNDS]
set -eu
build=${1:-build}
count=${2:-200000}
rounds=${3:-5}
bench=$build/tests/c/engine_bench
dir=$(mktemp -d /var/tmp/ovk-ctkbench.XXXXXX)
trap 'rm -rf "$dir"' EXIT

qemu-img create -q -f raw -o preallocation=full "$dir/d.raw" 2G
qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse \
	"$dir/d.raw" "$dir/d.vmdk"
# convert skips zero grains: fill them so every write lands in place
qemu-io -f vmdk -c "write -P 0x11 0 1G" -c "write -P 0x11 1G 1G" \
	"$dir/d.vmdk" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for img in d.raw d.vmdk; do
	: >"$dir/w"; : >"$dir/wc"
	"$bench" "$dir/$img" "$count" 32 4096 w >/dev/null   # warm up
	i=0
	while [ $i -lt "$rounds" ]; do
		for m in w wc; do
			"$bench" "$dir/$img" "$count" 32 4096 $m >"$dir/out"
			sed 's/.* \([0-9]*\) IOPS/\1/' "$dir/out" >>"$dir/$m"
		done
		i=$((i + 1))
	done
	w=$(median <"$dir/w"); wc=$(median <"$dir/wc")
	echo "$img: untracked $w IOPS, tracked $wc IOPS (median of $rounds;" \
	     "all: $(tr '\n' ' ' <"$dir/w")/ $(tr '\n' ' ' <"$dir/wc"))" |
		sed 's/  */ /g'
	awk -v a="$w" -v b="$wc" 'BEGIN {printf "  cost: %.1f%%\n", (a - b) * 100 / a}'
done
"$build/tests/c/test_ctk" cost
