#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What changed since a checkpoint of an RBD disk, on a throwaway one-node
# cluster (tests/cephcluster.py): `vmdk checkpoint changed` (RBD snapshot +
# rbd_diff_iterate2: fast-diff object maps first, then exact extents) vs
# `rbd diff --from-snap` (the rbd CLI, exact extents), on an 8 GiB image with
# 1 MiB of data every 64 MiB and three small writes after the checkpoint,
# with and without the fast-diff feature. `vmdk checkpoint list` (connect and
# open only) is the baseline the diff adds to. Both answers are checked equal.
# REPEAT rounds (default 5); medians in seconds.
# Usage: bench/bench_rbd_changed.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vmdk=$(find "$build" -type f -name vmdk -perm -u+x -path '*tools*' | head -n 1)
[ -x "$vmdk" ] || { echo "vmdk not built in $build" >&2; exit 1; }
for p in qemu-io ceph-mon ceph-osd rbd; do
  command -v $p >/dev/null || { echo "$p is not installed" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/bench_rbd_changed.XXXXXX)
trap 'python3 tests/cephcluster.py --stop "$work/ceph" || true; rm -rf "$work"' EXIT
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 tests/cephcluster.py "$work/ceph" >/dev/null
python3 - "$vmdk" "$work" "${REPEAT:-5}" <<'PYEOF'
import statistics, subprocess, sys, time

vmdk, work, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
conf = f"{work}/ceph/ceph.conf"
spec = lambda img: f"rbd:rbd/{img}:conf={conf}"

def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

def timed(*cmd):
    t0 = time.monotonic()
    out = run(*cmd)
    return time.monotonic() - t0, out

print("| image | vmdk checkpoint list | vmdk checkpoint changed | rbd diff --from-snap |")
print("|---|---|---|---|")
for label, feats in (("fast-diff", "layering,exclusive-lock,object-map,fast-diff"),
                     ("no object map", "layering,exclusive-lock")):
    img = label.replace(" ", "-")
    run("rbd", "-c", conf, "create", "--size", "8G", "--image-feature", feats,
        f"rbd/{img}")
    args = []
    for i in range(128):
        args += ["-c", f"write -P 1 {i * 64}M 1M"]
    run("qemu-io", "-f", "raw", *args, spec(img))
    run(vmdk, "checkpoint", "create", spec(img), "k")
    run("qemu-io", "-f", "raw", "-c", "write -P 2 100M 4k", "-c",
        "write -P 2 3000M 64k", "-c", "write -P 2 8000M 512", spec(img))
    t = {"list": [], "changed": [], "rbd": []}
    for _ in range(repeat):
        t["list"].append(timed(vmdk, "checkpoint", "list", spec(img))[0])
        d, ours = timed(vmdk, "checkpoint", "changed", spec(img), "k")
        t["changed"].append(d)
        d, theirs = timed("rbd", "-c", conf, "diff", "--from-snap",
                          "ovk-ckpt-k", f"rbd/{img}")
        t["rbd"].append(d)
    a = [tuple(map(int, l.split())) for l in ours.split("\n") if l]
    b = [tuple(map(int, l.split()[:2])) for l in theirs.split("\n")[1:] if l]
    assert a == b == [(100 << 20, 4096), (3000 << 20, 65536),
                      (8000 << 20, 512)], (a, b)
    m = {k: statistics.median(v) for k, v in t.items()}
    print(f"| {label} | {m['list']:.2f} | {m['changed']:.2f} | {m['rbd']:.2f} |")
PYEOF
