#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Live snapshot latency: 4 queue threads, 32 reads and writes in flight
# each (up to 256 KiB, half of them 4 KiB aligned) on a 64 MiB sparse VMDK
# whose grains are allocated, first for 3 s without snapshots, then with a
# snapshot every 250 ms (12). Prints the bdev_snapshot call's median and
# maximum and the completion latencies the queues saw, split into
# completions while a snapshot call ran (plus 20 ms after it) and the rest.
# Usage: bench/bench_live_snapshot.sh [BUILD_DIR] [TMP_DIR]
set -eu
build=${1:-build}
exec "$build/tests/c/vmdk/live_snapshot" bench "${2:-${TMPDIR:-/tmp}}"
