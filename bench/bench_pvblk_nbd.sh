#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pvblk's NBD server against qemu-nbd (same VMDK: monolithicSparse and
# streamOptimized) and against qemu-nbd and nbdkit's file plugin (raw),
# all over a unix socket with the same clients: fio's nbd engine (4 KiB
# random read and write at depth 1 and 32, 1 MiB sequential read at depth
# 8) and `nbdcopy URI null:` of the whole disk. Each server serves a fresh
# copy of the image; REPEAT rounds (default 3) run every server once each,
# in turn, and the medians are printed with the ratios to pvblk and the
# server's CPU time per request (utime+stime from /proc/PID/stat).
# A streamOptimized grain can be written once only, so random writes are
# not run on the stream image.
# Usage: bench/bench_pvblk_nbd.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
pvblk=$(find "$build" -type f -name pvblk -perm -u+x | head -n 1)
[ -x "$pvblk" ] || { echo "pvblk not built in $build" >&2; exit 1; }
for p in fio nbdcopy qemu-nbd nbdkit qemu-img; do
  command -v $p >/dev/null || { echo "$p is not installed" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/bench_pvblk_nbd.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
exec python3 - "$pvblk" "$work" "${REPEAT:-3}" "${RUNTIME:-4}" <<'PYEOF'
import json, os, signal, statistics, subprocess, sys, time

pvblk, work, repeat, runtime = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
TICK = os.sysconf("SC_CLK_TCK")

src = f"{work}/src.raw"
with open(src, "wb") as f:          # 512 MiB of data in a 1 GiB disk
    f.truncate(1 << 30)
    blk = bytearray(os.urandom(1 << 20))
    for i in range(512):
        blk[i % 4096] ^= 0xFF
        f.seek(i * (2 << 20))
        f.write(blk)
images = {}
for kind, sub in (("sparse", "monolithicSparse"), ("stream", "streamOptimized")):
    images[kind] = f"{work}/{kind}.vmdk"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk",
                    "-o", f"subformat={sub}", src, images[kind]], check=True)
images["raw"] = src

def servers(kind):
    fmt = "raw" if kind == "raw" else "vmdk"
    out = {"pvblk": lambda img, s: [pvblk, "-o", "rw", "-f", fmt, "--nbd",
                                    f"unix:{s}", img],
           "qemu-nbd": lambda img, s: ["qemu-nbd", "-t", "-k", s, "-f", fmt,
                                       "-x", "", img]}
    if kind == "raw":
        out["nbdkit"] = lambda img, s: ["nbdkit", "-f", "-U", s, "file", img]
    return out

JOBS = [("randread 4k qd1", ["--rw=randread", "--bs=4k", "--iodepth=1"]),
        ("randread 4k qd32", ["--rw=randread", "--bs=4k", "--iodepth=32"]),
        ("seqread 1M qd8", ["--rw=read", "--bs=1M", "--iodepth=8"]),
        ("randwrite 4k qd1", ["--rw=randwrite", "--bs=4k", "--iodepth=1"]),
        ("randwrite 4k qd32", ["--rw=randwrite", "--bs=4k", "--iodepth=32"])]

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / TICK

def start(cmd, sock):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.monotonic()
    while not os.path.exists(sock):
        if p.poll() is not None or time.monotonic() - t > 30:
            raise SystemExit(f"server did not start: {cmd}")
        time.sleep(0.02)
    return p

res = {}   # (kind, job, server) -> list of (rate, cpu_us_per_req)
for r in range(repeat):
    for kind in ("sparse", "stream", "raw"):
        for name, mk in servers(kind).items():
            img = f"{work}/copy.{'raw' if kind == 'raw' else 'vmdk'}"
            subprocess.run(["cp", "--sparse=always", images[kind], img], check=True)
            sock = f"{work}/s.sock"
            p = start(mk(img, sock), sock)
            uri = f"nbd+unix:///?socket={sock}"
            for job, args in JOBS:
                if kind == "stream" and "write" in job:
                    continue
                c0 = cpu(p.pid)
                out = subprocess.run(["fio", "--name=b", "--ioengine=nbd",
                                      f"--uri={uri}", "--time_based",
                                      f"--runtime={runtime}", "--ramp_time=1",
                                      "--output-format=json", *args],
                                     capture_output=True, text=True)
                c1 = cpu(p.pid)
                if out.returncode:
                    raise SystemExit(out.stderr + out.stdout)
                j = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]
                d = j["write" if "write" in job else "read"]
                reqs = d["total_ios"] or 1
                rate = d["bw_bytes"] / (1 << 20) if "1M" in job else d["iops"]
                res.setdefault((kind, job, name), []).append(
                    (rate, (c1 - c0) * 1e6 / reqs))
            c0 = cpu(p.pid)
            t0 = time.monotonic()
            subprocess.run(["nbdcopy", uri, "null:"], check=True)
            t1 = time.monotonic()
            c1 = cpu(p.pid)
            res.setdefault((kind, "nbdcopy to null", name), []).append(
                (1.0 / (t1 - t0), (c1 - c0) * 1e6 / (1 << 30 >> 20)))
            p.send_signal(signal.SIGTERM)
            p.wait(60)
            os.unlink(img)
            if os.path.exists(sock):
                os.unlink(sock)
        print(f"round {r + 1}/{repeat}: {kind} done", flush=True)

print(f"\nmedian of {repeat}; rate = IOPS (4k), MiB/s (1M), 1/s (nbdcopy: whole"
      " disks per second); cpu = server CPU us per request (nbdcopy: per MiB);"
      " ratio = pvblk rate / peer rate")
print("| image | job | pvblk | peer | ratio | cpu us/req pvblk / peer |")
print("|---|---|---|---|---|---|")
for kind in ("sparse", "stream", "raw"):
    for job in [j for j, _ in JOBS] + ["nbdcopy to null"]:
        ours = res.get((kind, job, "pvblk"))
        if not ours:
            continue
        mo = statistics.median(x for x, _ in ours)
        co = statistics.median(c for _, c in ours)
        for peer in ("qemu-nbd", "nbdkit"):
            theirs = res.get((kind, job, peer))
            if not theirs:
                continue
            mp = statistics.median(x for x, _ in theirs)
            cp = statistics.median(c for _, c in theirs)
            print(f"| {kind} | {job} | {mo:.4g} | {peer} {mp:.4g} | "
                  f"{mo / mp:.2f}x | {co:.1f} / {cp:.1f} |")
# the issue's cross goal: monolithicSparse through pvblk vs nbdkit on raw
for job in [j for j, _ in JOBS] + ["nbdcopy to null"]:
    a, b = res.get(("sparse", job, "pvblk")), res.get(("raw", job, "nbdkit"))
    if a and b:
        ma, mb = statistics.median(x for x, _ in a), statistics.median(x for x, _ in b)
        print(f"| sparse (pvblk) vs raw (nbdkit) | {job} | {ma:.4g} | nbdkit {mb:.4g} | {ma / mb:.2f}x | |")
print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")
PYEOF
