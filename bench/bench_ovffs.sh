#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Time to first byte and full-read time of a streamOptimized disk holding
# 1 GiB of data inside an OVA: through ovffs (<disk>.raw served straight
# from the tar member) versus `tar -xf` then `qemu-img convert -O raw`.
# Runs both side by side, REPEAT times (default 3), and prints medians and
# the ratios. Usage: bench/bench_ovffs.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
repeat=${REPEAT:-3}
ovffs=$(find "$build" -type f -name ovffs -perm -u+x | head -n 1)
[ -x "$ovffs" ] || { echo "ovffs not built in $build" >&2; exit 1; }
work=$(mktemp -d /var/tmp/bench_ovffs.XXXXXX)
mnt=$work/mnt
cleanup() { fusermount3 -u "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "building the OVA (1 GiB of data, not very compressible) in $work"
python3 - "$work" <<'EOF'
import os, sys
w = sys.argv[1]
with open(f"{w}/src.raw", "wb") as f:
    f.truncate(2 << 30)
    blk = bytearray(os.urandom(1 << 20))
    for i in range(1024):          # 1 GiB of data, every other MiB
        blk[i % 4096] ^= 0xff      # no two MiB alike
        f.seek(i * (2 << 20))
        f.write(blk)
EOF
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$work/src.raw" "$work/disk1.vmdk"
rm -f "$work/src.raw"
size=$(stat -c %s "$work/disk1.vmdk")
cat >"$work/b.ovf" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="$size"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
EOF
(cd "$work" && tar -cf b.ova b.ovf disk1.vmdk && rm -f disk1.vmdk)
mkdir -p "$mnt"

now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

ours_ttfb=() ours_all=() peer_ttfb=() peer_all=()
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq "$repeat"); do
  drop
  t0=$(now)
  "$ovffs" "$work/b.ova" "$mnt"
  head -c 4096 "$mnt/disks/vmdisk1.raw" >/dev/null
  t1=$(now)
  cat "$mnt/disks/vmdisk1.raw" >/dev/null
  t2=$(now)
  fusermount3 -u "$mnt"
  ours_ttfb+=("$(awk "BEGIN{print $t1 - $t0}")")
  ours_all+=("$(awk "BEGIN{print $t2 - $t0}")")

  drop
  rm -rf "$work/x"; mkdir "$work/x"
  t0=$(now)
  tar -xf "$work/b.ova" -C "$work/x"
  qemu-img convert -O raw "$work/x/disk1.vmdk" "$work/x/disk1.raw"
  head -c 4096 "$work/x/disk1.raw" >/dev/null
  t1=$(now)
  cat "$work/x/disk1.raw" >/dev/null
  t2=$(now)
  peer_ttfb+=("$(awk "BEGIN{print $t1 - $t0}")")
  peer_all+=("$(awk "BEGIN{print $t2 - $t0}")")
  rm -rf "$work/x"
  echo "run $i: ovffs ${ours_ttfb[-1]} / ${ours_all[-1]} s, tar+qemu-img ${peer_ttfb[-1]} / ${peer_all[-1]} s (first byte / whole)"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ot=$(median "${ours_ttfb[@]}"); oa=$(median "${ours_all[@]}")
pt=$(median "${peer_ttfb[@]}"); pa=$(median "${peer_all[@]}")
echo "runs: $repeat (medians, seconds); load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo "ovffs:                 first byte $ot   whole disk $oa"
echo "tar -xf + qemu-img:    first byte $pt   whole disk $pa"
echo "ratio first byte: $(awk "BEGIN{printf \"%.1f\", $pt / $ot}")x (goal >= 10x)"
echo "ratio whole read: $(awk "BEGIN{printf \"%.2f\", $pa / $oa}")x (goal >= 2x)"
# each run pairs the two side by side: on a shared machine the median of
# the per-run ratios is less at the mercy of load that changes between runs
ratios=()
for i in "${!ours_all[@]}"; do
  ratios+=("$(awk "BEGIN{print ${peer_all[$i]} / ${ours_all[$i]}}")")
done
echo "median of per-run whole-read ratios: $(printf '%.2f' "$(median "${ratios[@]}")")x"
