#!/usr/bin/env bash
# bench_vmdkfs.sh - vmdkfs vs qemu-storage-daemon's FUSE export vs vmdkmount,
# side by side in one run on the same images, with fio (io_uring, O_DIRECT)
# on the mounted raw file. Median of RUNS runs per row.
#
# Usage: bench/bench_vmdkfs.sh [BUILDDIR]     (as root; default build)
# Env:   SIZE=1024 (MiB of data), RUNS=3, SECS=5 (seconds per fio run),
#        WORK=/var/tmp/ovk-bench (scratch; needs ~3x SIZE free)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vmdkfs=$(realpath "$build/vmdkfs/vmdkfs")
SIZE=${SIZE:-1024} RUNS=${RUNS:-3} SECS=${SECS:-5}
WORK=${WORK:-/var/tmp/ovk-bench}
for p in fio qemu-img qemu-storage-daemon vmdkmount; do
  command -v $p >/dev/null || { echo "bench: $p is not installed" >&2; exit 1; }
done

mkdir -p "$WORK"
mounts=() pids=()
cleanup() {
  for m in "${mounts[@]}"; do
    fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null ||
      umount -l "$m" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== images: $SIZE MiB of data in $WORK"
if [ ! -f "$WORK/data.raw" ] || [ "$(stat -c %s "$WORK/data.raw")" != $((SIZE << 20)) ]; then
  # half random (incompressible), half text-like (compressible)
  head -c $((SIZE << 19)) /dev/urandom > "$WORK/data.raw"
  { yes "ovk benchmark line of compressible text 0123456789" || true; } |
    head -c $((SIZE << 19)) >> "$WORK/data.raw"  # yes dies of SIGPIPE
  rm -f "$WORK"/data-*.vmdk
fi
for sf in monolithicSparse streamOptimized; do
  [ -f "$WORK/data-$sf.vmdk" ] ||
    qemu-img convert -f raw -O vmdk -o subformat=$sf "$WORK/data.raw" "$WORK/data-$sf.vmdk"
done

# mount_<peer> IMAGE DIR  -> sets F to the raw file to benchmark
mount_vmdkfs() {
  mkdir -p "$2"; "$vmdkfs" "${@:3}" "$1" "$2"; mounts+=("$2")
  pids+=($(pgrep -n -x vmdkfs)); F="$2/disk"
}
mount_qsd() {
  local drv=$3 w=${4:-off}
  : > "$2"
  qemu-storage-daemon --blockdev driver=file,filename="$1",node-name=f,cache.direct=off \
    --blockdev driver=$drv,file=f,node-name=d \
    --export type=fuse,id=e,node-name=d,mountpoint="$2",writable=$w >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do mountpoint -q "$2" 2>/dev/null && break; sleep 0.05; done
  mounts+=("$2"); F="$2"
}
mount_vmdkmount() {
  mkdir -p "$2"; vmdkmount "$1" "$2" >/dev/null; mounts+=("$2")
  for _ in $(seq 100); do [ -e "$2/vmdk1" ] && break; sleep 0.05; done
  F="$2/vmdk1"
}
umount_last() {
  local m=${mounts[-1]}
  fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount "$m"
  unset 'mounts[-1]'; sleep 0.3
}

# fio_run FILE RW BS DEPTH [extra...] -> prints MB/s (seq) or IOPS (rand)
fio_run() {
  local f=$1 rw=$2 bs=$3 qd=$4; shift 4
  fio --name=b --filename="$f" --ioengine=io_uring --direct=1 --rw=$rw --bs=$bs \
    --iodepth=$qd --runtime=$SECS --time_based --norandommap --randrepeat=0 \
    --output-format=terse --terse-version=3 "$@" 2>/dev/null |
  awk -F';' -v rw=$rw '{
    if (rw ~ /write/) { bw=$48; iops=$49 } else { bw=$7; iops=$8 }
    if (rw ~ /rand/) printf "%d\n", iops; else printf "%.0f\n", bw/1024 }'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bench() {  # FILE RW BS DEPTH -> median over RUNS
  for _ in $(seq "$RUNS"); do fio_run "$@"; done | median
}

rss_max=0
rss_watch() {  # PID: sample VmRSS every 0.2 s into $WORK/rss
  local pid=$1 max=0
  while kill -0 "$pid" 2>/dev/null; do
    r=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$max" ] && max=$r && echo "$max" > "$WORK/rss"
    sleep 0.2
  done
}

rows=("read 1M 1 seq-1MiB-qd1" "randread 4k 1 rand-4KiB-qd1" "randread 4k 32 rand-4KiB-qd32")
printf "\n%-17s %-18s %10s %10s %10s %10s %8s %8s\n" image test vmdkfs qsd-fuse vmdkmount raw-vmdkfs vs-best vs-raw
for sf in monolithicSparse streamOptimized; do
  img="$WORK/data-$sf.vmdk"
  mount_vmdkfs "$img" "$WORK/m-ours"; f_ours=$F
  echo 0 > "$WORK/rss"; rss_watch "${pids[-1]}" & watcher=$!
  mount_qsd "$img" "$WORK/m-qsd" vmdk; f_qsd=$F
  mount_vmdkmount "$img" "$WORK/m-vm"; f_vm=$F
  mount_vmdkfs "$WORK/data.raw" "$WORK/m-raw" -o format=raw; f_raw=$F
  for row in "${rows[@]}"; do
    set -- $row
    a=$(bench "$f_ours" $1 $2 $3); b=$(bench "$f_qsd" $1 $2 $3)
    c=$(bench "$f_vm" $1 $2 $3);   r=$(bench "$f_raw" $1 $2 $3)
    best=$(( b > c ? b : c ))
    printf "%-17s %-18s %10s %10s %10s %10s %7.2fx %7.2fx\n" $sf $4 $a $b $c $r \
      "$(echo "$a / ($best + 0.0001)" | bc -l)" "$(echo "$a / ($r + 0.0001)" | bc -l)"
  done
  kill $watcher 2>/dev/null || true
  rss=$(cat "$WORK/rss")
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  umount_last; umount_last; umount_last; umount_last
done
echo "(seq rows: MB/s; rand rows: IOPS; fio io_uring O_DIRECT, median of $RUNS x ${SECS}s)"
echo "vmdkfs peak RSS during the read benchmark: $((rss_max / 1024)) MiB"

echo; echo "== random 4 KiB writes with fsync (fio --fsync=1), vmdkfs -o rw vs qsd writable FUSE export"
printf "%-12s %-14s %10s %10s %8s\n" image phase vmdkfs qsd-fuse ratio
for sf in monolithicSparse monolithicFlat; do
  for who in ours qsd; do
    rm -f "$WORK/w-$who"*.vmdk
    qemu-img create -q -f vmdk -o subformat=$sf "$WORK/w-$who.vmdk" 256M
  done
  mount_vmdkfs "$WORK/w-ours.vmdk" "$WORK/m-wo" -o rw; f_ours=$F
  mount_qsd "$WORK/w-qsd.vmdk" "$WORK/m-wq" vmdk on; f_qsd=$F
  for phase in allocating overwriting; do
    # first pass allocates grains; the second writes the same offsets again
    a=$(fio_run "$f_ours" randwrite 4k 1 --fsync=1 --randseed=7 --size=256M || true)
    b=$(fio_run "$f_qsd" randwrite 4k 1 --fsync=1 --randseed=7 --size=256M || true)
    printf "%-12s %-14s %10s %10s %7.2fx\n" $sf $phase "${a:-n/a}" "${b:-n/a}" \
      "$(echo "${a:-0} / (${b:-0} + 0.0001)" | bc -l)"
  done
  umount_last; umount_last
done
echo "(IOPS, one run of ${SECS}s each; a failing write shows n/a or 0)"
