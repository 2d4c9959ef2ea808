#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench_vmdkfs.sh - vmdkfs vs qemu-storage-daemon's FUSE export vs vmdkmount,
# side by side in one run on the same images, with fio (io_uring, O_DIRECT)
# on the mounted raw file; the buffered table runs the same peers with
# page-cache reads (--direct=0), as scanners, tar and rsync read, beside
# the same fio job on the raw data file with no FUSE at all. Runs are interleaved (one run of every peer, then
# the next round) so that load from other users of the machine falls on all
# peers alike; each cell is the median of RUNS runs. Besides throughput, the
# daemon's CPU time per request (from /proc/PID/stat) is shown: it varies
# far less with machine load than IOPS at depth 1 do.
#
# Usage: bench/bench_vmdkfs.sh [BUILDDIR]     (as root; default build)
# Env:   SIZE=1024 (MiB of data), RUNS=3, SECS=5 (seconds per fio run),
#        WORK=/var/tmp/ovk-bench (scratch; needs ~3x SIZE free),
#        PARTS="reads buffered writes" (which tables to run; "uring" adds
#        reads through vmdkfs -o io_uring beside the /dev/fuse loop),
#        URING=1 (0: no vmdkfs -o io_uring column in the writes table)
# Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vmdkfs=$(realpath "$build/vmdkfs/vmdkfs")
SIZE=${SIZE:-1024} RUNS=${RUNS:-3} SECS=${SECS:-5}
WORK=${WORK:-/var/tmp/ovk-bench} PARTS=${PARTS:-reads buffered writes}
URING=${URING:-1}
part() { [[ " $PARTS " == *" $1 "* ]]; }
cmd="SIZE=$SIZE RUNS=$RUNS SECS=$SECS WORK=$WORK PARTS='$PARTS' bash bench/bench_vmdkfs.sh $build"
# FUSE over io_uring needs the fuse module's enable_uring; turned on for the
# run (and back off at exit) when the kernel has it.
uring_param=/sys/module/fuse/parameters/enable_uring uring_was=
if [ "$URING" = 1 ] || part uring; then
  if [ -w "$uring_param" ]; then
    uring_was=$(cat "$uring_param")
    [ "$uring_was" = Y ] || echo 1 > "$uring_param"
  else
    echo "bench: $uring_param is missing: no vmdkfs -o io_uring figures" >&2
    URING=0 PARTS=${PARTS//uring/}
  fi
fi
for p in fio qemu-img qemu-storage-daemon vmdkmount; do
  command -v $p >/dev/null || { echo "bench: $p is not installed" >&2; exit 1; }
done

mkdir -p "$WORK"
mounts=() pids=() owners=()
cleanup() {
  for m in "${mounts[@]}"; do
    fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null ||
      umount -l "$m" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$uring_was" = N ] && echo 0 > "$uring_param"
  true
}
trap cleanup EXIT

echo "# vmdkfs read and write benchmark"
echo
echo "Command: \`$cmd\`  "
echo "Date: $(date -u '+%F %T') UTC, kernel $(uname -r), $(nproc) CPUs, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
if part reads || part buffered || part uring; then  # the data and its two images
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
fi

# mount_<peer> IMAGE DIR  -> sets F to the raw file to benchmark, P to the
# daemon's pid
mount_vmdkfs() {
  mkdir -p "$2"; "$vmdkfs" "${@:3}" "$1" "$2"; mounts+=("$2"); owners+=("")
  P=$(pgrep -n -x vmdkfs); pids+=("$P"); F="$2/disk"
}
mount_qsd() {
  local drv=$3 w=${4:-off}
  : > "$2"
  qemu-storage-daemon --blockdev driver=file,filename="$1",node-name=f,cache.direct=off \
    --blockdev driver=$drv,file=f,node-name=d \
    --export type=fuse,id=e,node-name=d,mountpoint="$2",writable=$w >/dev/null 2>&1 &
  P=$!; pids+=("$P")
  for _ in $(seq 100); do mountpoint -q "$2" 2>/dev/null && break; sleep 0.05; done
  mounts+=("$2"); owners+=("$P"); F="$2"
}
mount_vmdkmount() {
  mkdir -p "$2"; vmdkmount "$1" "$2" >/dev/null; mounts+=("$2"); owners+=("")
  for _ in $(seq 100); do [ -e "$2/vmdk1" ] && break; sleep 0.05; done
  P=$(pgrep -n -x vmdkmount); F="$2/vmdk1"
}
# qemu-storage-daemon outlives its unmounted export (and was seen using
# half a CPU afterwards), so the daemon that owns a mount is stopped with it
# rather than left to take CPU from the peers measured after it.
umount_last() {
  local m=${mounts[-1]}
  fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount "$m"
  local o=${owners[-1]}
  if [ -n "$o" ]; then
    kill "$o" 2>/dev/null || true
    wait "$o" 2>/dev/null || true
  fi
  unset 'mounts[-1]' 'owners[-1]'; sleep 0.3
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# fio_run FILE PID RW BS DEPTH [extra...] -> "VALUE CPU_US_PER_REQ": MB/s
# (seq) or IOPS (rand), and the daemon's CPU microseconds per request
fio_run() {
  local f=$1 pid=$2 rw=$3 bs=$4 qd=$5 t0 t1; shift 5
  t0=$(cpu_ticks "$pid")
  fio --name=b --filename="$f" --ioengine=io_uring --direct=${DIRECT:-1} --rw=$rw --bs=$bs \
    --iodepth=$qd --runtime=$SECS --time_based --norandommap --randrepeat=0 \
    --output-format=terse --terse-version=3 "$@" 2>/dev/null > "$WORK/fio.out" || true
  t1=$(cpu_ticks "$pid")
  awk -F';' -v rw=$rw -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '{
    if (rw ~ /write/) { bw=$48; iops=$49; ms=$50 } else { bw=$7; iops=$8; ms=$9 }
    ios = iops * ms / 1000
    v = (rw ~ /rand/) ? sprintf("%d", iops) : sprintf("%.0f", bw/1024)
    printf "%s %.1f\n", v, (ios > 0) ? t / hz * 1e6 / ios : 0 }' "$WORK/fio.out"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "n/a")}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", (b > 0) ? a / b : 0 }'; }

rss_watch() {  # PID: keep its VmHWM (peak RSS) in $WORK/rss, read every 0.2 s
  local pid=$1 max=0
  while kill -0 "$pid" 2>/dev/null; do
    r=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$max" ] && max=$r && echo "$max" > "$WORK/rss"
    sleep 0.2
  done
}

if part reads; then
peers=(ours qsd vm raw)
rows=("read 1M 1 seq-1MiB-qd1" "read 1M 8 seq-1MiB-qd8" "randread 4k 1 rand-4KiB-qd1"
      "randread 4k 32 rand-4KiB-qd32")
rss_max=0
echo "## Reads (seq rows: MB/s; rand rows: IOPS; median of $RUNS interleaved runs of ${SECS}s)"
echo
echo "| image | test | vmdkfs | qsd-fuse | vmdkmount | raw via vmdkfs | vmdkfs / best peer | vmdkfs / raw | CPU us/req vmdkfs | qsd | vmdkmount | raw via vmdkfs |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for sf in monolithicSparse streamOptimized; do
  img="$WORK/data-$sf.vmdk"
  # every peer reads from the page cache, the raw baseline too
  cat "$img" "$WORK/data.raw" > /dev/null
  declare -A file=() pid=()
  mount_vmdkfs "$img" "$WORK/m-ours"; file[ours]=$F pid[ours]=$P
  echo 0 > "$WORK/rss"; rss_watch "$P" & watcher=$!
  mount_qsd "$img" "$WORK/m-qsd" vmdk; file[qsd]=$F pid[qsd]=$P
  mount_vmdkmount "$img" "$WORK/m-vm"; file[vm]=$F pid[vm]=$P
  mount_vmdkfs "$WORK/data.raw" "$WORK/m-raw" -o format=raw; file[raw]=$F pid[raw]=$P
  for row in "${rows[@]}"; do
    set -- $row
    declare -A val=() cpu=()
    for _ in $(seq "$RUNS"); do
      for p in "${peers[@]}"; do
        read -r v c < <(fio_run "${file[$p]}" "${pid[$p]}" $1 $2 $3)
        val[$p]+="$v " cpu[$p]+="$c "
      done
    done
    for p in "${peers[@]}"; do
      val[$p]=$(echo ${val[$p]} | tr ' ' '\n' | median)
      cpu[$p]=$(echo ${cpu[$p]} | tr ' ' '\n' | median)
    done
    best=$(( val[qsd] > val[vm] ? val[qsd] : val[vm] ))
    echo "| $sf | $4 | ${val[ours]} | ${val[qsd]} | ${val[vm]} | ${val[raw]} |" \
      "$(ratio ${val[ours]} $best) | $(ratio ${val[ours]} ${val[raw]}) |" \
      "${cpu[ours]} | ${cpu[qsd]} | ${cpu[vm]} | ${cpu[raw]} |"
  done
  kill $watcher 2>/dev/null || true
  rss=$(cat "$WORK/rss")
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  umount_last; umount_last; umount_last; umount_last
done
echo
echo "vmdkfs peak RSS during the read benchmark: $((rss_max / 1024)) MiB"
fi

if part buffered; then
# Buffered reads: fio --direct=0 (page cache), seq 1 MiB at depth 4. Every
# run starts with the file's own page cache dropped (fio's default
# invalidate=1, a POSIX_FADV_DONTNEED of the file), so each FUSE file is
# read through its daemon from the image in the host page cache. "raw file"
# is the identical job on the raw data file with no FUSE (its first pass
# then comes from the disk); "raw file, cached" keeps the raw file's pages
# (--invalidate=0, warmed first): plain page-cache copies, the ceiling.
echo
echo "## Buffered reads (fio --direct=0, io_uring, seq 1 MiB, depth 4; MB/s, median of $RUNS interleaved runs of ${SECS}s)"
echo
echo "| image | vmdkfs | qsd-fuse | vmdkmount | raw file | raw file, cached | vmdkfs / raw file | vmdkfs / cached | vmdkfs / best peer | CPU us/req vmdkfs | qsd | vmdkmount |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for sf in ${BUF_IMAGES:-monolithicSparse}; do
  img="$WORK/data-$sf.vmdk"
  cat "$img" "$WORK/data.raw" > /dev/null
  declare -A file=() pid=() val=() cpu=()
  mount_vmdkfs "$img" "$WORK/m-ours"; file[ours]=$F pid[ours]=$P
  ra=$(awk -v m="$WORK/m-ours" '$5 == m {print $3}' /proc/self/mountinfo | tail -n 1)
  ra=$(cat "/sys/class/bdi/$ra/read_ahead_kb" 2>/dev/null || echo "n/a")
  mount_qsd "$img" "$WORK/m-qsd" vmdk; file[qsd]=$F pid[qsd]=$P
  mount_vmdkmount "$img" "$WORK/m-vm"; file[vm]=$F pid[vm]=$P
  for _ in $(seq "$RUNS"); do
    for p in ours qsd vm; do
      read -r v c < <(DIRECT=0 fio_run "${file[$p]}" "${pid[$p]}" read 1M 4)
      val[$p]+="$v " cpu[$p]+="$c "
    done
    read -r v _ < <(DIRECT=0 fio_run "$WORK/data.raw" $$ read 1M 4)
    val[raw]+="$v "
    cat "$WORK/data.raw" > /dev/null
    read -r v _ < <(DIRECT=0 fio_run "$WORK/data.raw" $$ read 1M 4 --invalidate=0)
    val[cached]+="$v "
  done
  for p in ours qsd vm raw cached; do
    val[$p]=$(echo ${val[$p]} | tr ' ' '\n' | median)
  done
  for p in ours qsd vm; do
    cpu[$p]=$(echo ${cpu[$p]} | tr ' ' '\n' | median)
  done
  best=$(( val[qsd] > val[vm] ? val[qsd] : val[vm] ))
  echo "| $sf | ${val[ours]} | ${val[qsd]} | ${val[vm]} | ${val[raw]} | ${val[cached]} |" \
    "$(ratio ${val[ours]} ${val[raw]}) | $(ratio ${val[ours]} ${val[cached]}) |" \
    "$(ratio ${val[ours]} $best) | ${cpu[ours]} | ${cpu[qsd]} | ${cpu[vm]} |"
  umount_last; umount_last; umount_last
done
echo
echo "read_ahead_kb of the vmdkfs mount's BDI: $ra"
fi

if part uring; then
echo
echo "## Reads through vmdkfs: /dev/fuse loop vs -o io_uring (seq rows: MB/s; rand rows: IOPS; median of $RUNS interleaved runs of ${SECS}s)"
echo
echo "| image | test | vmdkfs | vmdkfs io_uring | io_uring / loop | CPU us/req vmdkfs | vmdkfs io_uring |"
echo "|---|---|---:|---:|---:|---:|---:|"
for sf in monolithicSparse streamOptimized; do
  img="$WORK/data-$sf.vmdk"
  cat "$img" > /dev/null
  declare -A file=() pid=()
  mount_vmdkfs "$img" "$WORK/m-ours"; file[ours]=$F pid[ours]=$P
  mount_vmdkfs "$img" "$WORK/m-ouru" -o io_uring,share; file[ouru]=$F pid[ouru]=$P
  for row in "read 1M 1 seq-1MiB-qd1" "read 1M 8 seq-1MiB-qd8" "randread 4k 1 rand-4KiB-qd1" "randread 4k 32 rand-4KiB-qd32"; do
    set -- $row
    declare -A val=() cpu=()
    for _ in $(seq "$RUNS"); do
      for p in ours ouru; do
        read -r v c < <(fio_run "${file[$p]}" "${pid[$p]}" $1 $2 $3)
        val[$p]+="$v " cpu[$p]+="$c "
      done
    done
    for p in ours ouru; do
      val[$p]=$(echo ${val[$p]} | tr ' ' '\n' | median)
      cpu[$p]=$(echo ${cpu[$p]} | tr ' ' '\n' | median)
    done
    echo "| $sf | $4 | ${val[ours]} | ${val[ouru]} | $(ratio ${val[ouru]} ${val[ours]}) | ${cpu[ours]} | ${cpu[ouru]} |"
  done
  umount_last; umount_last
done
fi

if part writes; then
echo
echo "## Random 4 KiB writes with fsync (fio --fsync=1, depth 1): vmdkfs -o rw vs qsd writable FUSE export"
echo
echo "Each run starts from fresh images; the first pass allocates grains, the"
echo "second writes the same offsets. 'host file' is the same fio job on a plain"
echo "file in \$WORK, no FUSE and no image format: the floor the host's"
echo "write + fdatasync sets for any daemon. Median of $RUNS runs of ${SECS}s."
echo
if [ "$URING" = 1 ]; then
  echo "'vmdkfs io_uring' is the same vmdkfs mount with -o io_uring (FUSE over"
  echo "io_uring, one pinned thread per CPU queue), run in the same rounds."
  echo
  echo "| image | phase | vmdkfs IOPS | qsd-fuse IOPS | ratio | host file IOPS | vmdkfs / host | vmdkfs io_uring IOPS | io_uring / host | CPU us/req vmdkfs | qsd | vmdkfs io_uring |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| image | phase | vmdkfs IOPS | qsd-fuse IOPS | ratio | host file IOPS | vmdkfs / host | CPU us/req vmdkfs | qsd |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
fi
wpeers="ours qsd"; [ "$URING" = 1 ] && wpeers="ours qsd ouru"
for sf in monolithicSparse monolithicFlat; do
  declare -A wv=() wc=()
  for _ in $(seq "$RUNS"); do
    for who in $wpeers; do
      rm -f "$WORK/w-$who"*.vmdk
      qemu-img create -q -f vmdk -o subformat=$sf "$WORK/w-$who.vmdk" 256M
    done
    rm -f "$WORK/w-host.raw"
    truncate -s 256M "$WORK/w-host.raw"
    mount_vmdkfs "$WORK/w-ours.vmdk" "$WORK/m-wo" -o rw; f_ours=$F p_ours=$P
    mount_qsd "$WORK/w-qsd.vmdk" "$WORK/m-wq" vmdk on; f_qsd=$F p_qsd=$P
    if [ "$URING" = 1 ]; then
      mount_vmdkfs "$WORK/w-ouru.vmdk" "$WORK/m-wu" -o rw,io_uring; f_ouru=$F p_ouru=$P
    fi
    for phase in allocating overwriting; do
      read -r a ca < <(fio_run "$f_ours" "$p_ours" randwrite 4k 1 --fsync=1 --randseed=7 --size=256M)
      read -r b cb < <(fio_run "$f_qsd" "$p_qsd" randwrite 4k 1 --fsync=1 --randseed=7 --size=256M)
      read -r h _ < <(fio_run "$WORK/w-host.raw" $$ randwrite 4k 1 --fsync=1 --randseed=7 --size=256M)
      wv[$phase.ours]+="${a:-0} " wv[$phase.qsd]+="${b:-0} " wv[$phase.host]+="${h:-0} "
      wc[$phase.ours]+="${ca:-0} " wc[$phase.qsd]+="${cb:-0} "
      if [ "$URING" = 1 ]; then
        read -r u cu < <(fio_run "$f_ouru" "$p_ouru" randwrite 4k 1 --fsync=1 --randseed=7 --size=256M)
        wv[$phase.ouru]+="${u:-0} " wc[$phase.ouru]+="${cu:-0} "
      fi
    done
    [ "$URING" = 1 ] && umount_last
    umount_last; umount_last
  done
  for phase in allocating overwriting; do
    for k in $wpeers host; do
      wv[$phase.$k]=$(echo ${wv[$phase.$k]} | tr ' ' '\n' | median)
    done
    for k in $wpeers; do
      wc[$phase.$k]=$(echo ${wc[$phase.$k]} | tr ' ' '\n' | median)
    done
    if [ "$URING" = 1 ]; then
      echo "| $sf | $phase | ${wv[$phase.ours]} | ${wv[$phase.qsd]} |" \
        "$(ratio "${wv[$phase.ours]}" "${wv[$phase.qsd]}") | ${wv[$phase.host]} |" \
        "$(ratio "${wv[$phase.ours]}" "${wv[$phase.host]}") | ${wv[$phase.ouru]} |" \
        "$(ratio "${wv[$phase.ouru]}" "${wv[$phase.host]}") | ${wc[$phase.ours]} | ${wc[$phase.qsd]} | ${wc[$phase.ouru]} |"
    else
      echo "| $sf | $phase | ${wv[$phase.ours]} | ${wv[$phase.qsd]} |" \
        "$(ratio "${wv[$phase.ours]}" "${wv[$phase.qsd]}") | ${wv[$phase.host]} |" \
        "$(ratio "${wv[$phase.ours]}" "${wv[$phase.host]}") | ${wc[$phase.ours]} | ${wc[$phase.qsd]} |"
    fi
  done
done
rm -f "$WORK/w-host.raw"
echo
echo "(a failing write shows 0)"
fi
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
