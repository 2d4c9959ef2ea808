#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Incremental backup of a running disk: `ovkdisk backup` (reads only the
# 64 KiB blocks the change map reports) vs a full copy of a point-in-time
# view with `qemu-img convert -O raw` (what a backup without change
# tracking reads). A 4 GiB monolithicSparse VMDK, fully written, served by
# `pvblk -o rw --nbd --api-socket`; before each round 1% of it (656 random
# 64 KiB blocks) is rewritten through NBD. Per round: ovkdisk's time, the
# disk bytes it read (its manifest's read_bytes) over the bytes changed,
# and qemu-img's time on a view of the same disk. Median of ROUNDS rounds.
# Usage: bench/bench_livedisk.sh [BUILD_DIR] [ROUNDS] [TMP_DIR]
set -euo pipefail
build=$(realpath "${1:-build}")
rounds=${2:-3}
tmp=$(mktemp -d "${3:-${TMPDIR:-/var/tmp}}/bench_livedisk.XXXXXX")
pvblk=$build/pvblk/pvblk
ovkdisk=$build/livedisk/ovkdisk
trap 'kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tmp"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# a 4 GiB disk whose every grain holds data
qemu-img create -q -f raw fill.raw 4G
head -c $((256 << 20)) /dev/urandom > chunk
for i in $(seq 0 15); do
  dd if=chunk of=fill.raw bs=1M seek=$((i * 256)) conv=notrunc status=none
done
rm chunk
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse fill.raw disk.vmdk
rm fill.raw
"$pvblk" -o rw --nbd unix:"$tmp/nbd.sock" --api-socket "$tmp/api.sock" \
  disk.vmdk 2>pvblk.log &
pid=$!
for _ in $(seq 100); do [ -S api.sock ] && break; sleep 0.1; done
uri="nbd+unix:///?socket=$tmp/nbd.sock"

ctl() { # one control request, prints the reply
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode()+b"\n"); print(s.makefile().readline().strip())' \
    api.sock "$1"
}
now() { date +%s.%N; }

"$ovkdisk" backup api.sock bk >/dev/null   # the full backup to start from
nblk=$(( (4 << 30) / 65536 ))
changed=$(( 656 * 65536 ))
for r in $(seq "$rounds"); do
  # 1% of the disk rewritten, random 64 KiB blocks (distinct)
  cmds=()
  for b in $(shuf -i 0-$((nblk - 1)) -n 656); do
    cmds+=(-c "write -P $((r + 1)) $((b * 65536)) 64k")
  done
  qemu-io -f raw "${cmds[@]}" "$uri" >/dev/null
  sync
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  "$ovkdisk" backup --incremental --output=json api.sock bk > inc.json
  t1=$(now)
  read_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["read_bytes"])' inc.json)
  # the peer: a full copy of a view of the same disk
  view=$(ctl '{"command":"view-create"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["return"]["path"])')
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t2=$(now)
  qemu-img convert -U -f vmdk -O raw "$view" full.raw
  t3=$(now)
  ctl '{"command":"view-release"}' >/dev/null
  rm -f full.raw
  python3 - "$t0" "$t1" "$t2" "$t3" "$read_bytes" "$changed" >> rounds.txt <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
rb, ch = int(sys.argv[5]), int(sys.argv[6])
print(f"{t1 - t0:.3f} {t3 - t2:.3f} {rb} {ch}")
PY
  tail -n 1 rounds.txt | awk '{printf "round: ovkdisk %ss, qemu-img convert %ss, read %d of %d changed bytes\n", $1, $2, $3, $4}'
done
python3 - rounds.txt <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
o = statistics.median(r[0] for r in rows)
q = statistics.median(r[1] for r in rows)
rb = statistics.median(r[2] for r in rows)
ch = rows[0][3]
print(f"median of {len(rows)}: ovkdisk incremental {o:.2f} s, "
      f"qemu-img convert of a view {q:.2f} s, speedup {q / o:.1f}x; "
      f"read {rb / 2**20:.1f} MiB for {ch / 2**20:.1f} MiB changed "
      f"({rb / ch:.2f}x the changed data)")
PY
kill -TERM $pid; wait $pid
