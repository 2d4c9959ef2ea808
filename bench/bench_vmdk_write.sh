#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# bench_vmdk_write.sh - write throughput of `vmdk bench -w` (the ovk engine)
# against `qemu-img bench -w -f vmdk`, side by side: 4 KiB and 64 KiB
# requests, queue depth 1 and 32, allocating (a fresh monolithicSparse
# image each run) and overwriting (grains already allocated). Median of 3.
#
# Equal durability and equal timing: neither flushes between requests;
# qemu-img flushes when it closes the image, after printing its time, and
# vmdk bench -w flushes once at the end, also after its timer stops.
#
# Usage: bench/bench_vmdk_write.sh [BUILD_DIR] [COUNT]   (default build, 20000)
set -eu
BUILD=${1:-build}
COUNT=${2:-20000}
VMDK="$BUILD/blockengine/tools/vmdk"
DIR=$(mktemp -d /var/tmp/ovk-wbench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

median() { sort -n | sed -n 2p; }

# seconds for one run: $1 tool, $2 mode, $3 size, $4 depth
one() {
	img="$DIR/b.vmdk"
	rm -f "$img"
	qemu-img create -q -f vmdk "$img" 4G
	if [ "$2" = overwrite ]; then
		"$VMDK" bench -w -c "$COUNT" -s "$3" -d 32 "$img" >/dev/null
	fi
	if [ "$1" = ovk ]; then
		"$VMDK" bench -w -c "$COUNT" -s "$3" -d "$4" "$img" |
			sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p'
	else
		qemu-img bench -w -f vmdk -c "$COUNT" -s "$3" -d "$4" "$img" |
			sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p'
	fi
}

printf '%-10s %-6s %-5s %10s %10s %7s\n' mode size depth ovk_s qemu_s ratio
for mode in alloc overwrite; do
	for size in 4k 64k; do
		for depth in 1 32; do
			o=$( (one ovk $mode $size $depth; one ovk $mode $size $depth;
			      one ovk $mode $size $depth) | median)
			q=$( (one qemu $mode $size $depth; one qemu $mode $size $depth;
			      one qemu $mode $size $depth) | median)
			r=$(echo "$q $o" | awk '{ printf "%.2f", $1 / $2 }')
			printf '%-10s %-6s %-5s %10s %10s %7s\n' $mode $size $depth \
				"$o" "$q" "${r}x"
		done
	done
done
