#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Live commit stall: 4 queue threads, 32 reads and writes in flight each
# (up to 256 KiB) on a 64 MiB sparse VMDK, half of it written before; 8
# rounds of bdev_snapshot, 500 ms of writes to the child, bdev_commit_live,
# 500 ms of writes to the parent. Prints each commit's duration and the
# longest time any bdev_aio_readv/writev call took during it, and the
# longest outside commits.
# Usage: bench/bench_live_commit.sh [BUILD_DIR] [TMP_DIR]
set -eu
build=${1:-build}
exec "$build/tests/c/vmdk/live_commit" bench "${2:-${TMPDIR:-/tmp}}"
