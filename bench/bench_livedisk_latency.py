#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The guest's I/O latency while its disk is viewed, consolidated and
backed up, against idle.

pvblk -o rw serves a monolithicSparse VMDK (SIZE, every grain written)
over vhost-user-blk and a control socket. build/pvblk/vu_client, a small
vhost-user-blk front end, issues 4 KiB random requests at depth 1,
alternating reads and writes, for the whole run and logs each request's
completion time and latency. Meanwhile the script goes through phases and
notes when each starts and ends (the same CLOCK_MONOTONIC):
  idle           nothing but the client
  view           a view is open (writes go to its delta child)
  consolidation  view-release: the live commit merging the child back
  backup         ovkdisk backup --full reading the whole view
  idle after     nothing but the client again
The view/release cycle runs CYCLES times so that the short commits give
enough samples. Prints p50, p99 and the request count of each phase, and
p99 over the p99 of "idle after" (the issue's goal: at most 2): the first
idle phase still warms the caches (its tail is the longer one).

Usage: bench/bench_livedisk_latency.py [BUILD_DIR] [SIZE_MIB] [CYCLES]
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
SIZE_MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 512
CYCLES = int(sys.argv[3]) if len(sys.argv) > 3 else 5


def ctl(api, **req):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(api)
        s.sendall(json.dumps(req).encode() + b"\n")
        r = json.loads(s.makefile().readline())
    assert "return" in r, (req, r)
    return r["return"]


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


def main():
    tmp = tempfile.mkdtemp(prefix="bench_livedisk_latency.",
                           dir=os.environ.get("TMPDIR", "/var/tmp"))
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    raw = os.path.join(tmp, "fill.raw")
    with open(raw, "wb") as f:
        for _ in range(SIZE_MIB):
            f.write(os.urandom(1 << 20))
    img = os.path.join(tmp, "disk.vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=monolithicSparse", raw, img], check=True)
    os.unlink(raw)
    vu = os.path.join(tmp, "vu.sock")
    api = os.path.join(tmp, "api.sock")
    log = open(os.path.join(tmp, "pvblk.log"), "w")
    d = subprocess.Popen([os.path.join(BUILD, "pvblk/pvblk"), "-o", "rw",
                          "--vhost-user-blk", vu, "--api-socket", api, img],
                         stderr=log)
    for _ in range(200):
        if os.path.exists(api) and os.path.exists(vu):
            break
        time.sleep(0.05)
    marks = []  # (phase, start, end)
    lat = os.path.join(tmp, "lat.txt")
    seconds = 8 + CYCLES * 5 + 40
    c = subprocess.Popen([os.path.join(BUILD, "pvblk/vu_client"), vu,
                          str(d.pid), "rw", "rand", "4096", "1",
                          str(seconds), lat], stdout=subprocess.PIPE,
                         text=True)
    try:
        time.sleep(4)  # warm up
        t = time.monotonic()
        time.sleep(6)
        marks.append(("idle", t, time.monotonic()))
        for _ in range(CYCLES):
            ctl(api, command="view-create")
            t = time.monotonic()
            time.sleep(3)
            marks.append(("view", t, time.monotonic()))
            t = time.monotonic()
            ctl(api, command="view-release")
            marks.append(("consolidation", t, time.monotonic()))
            time.sleep(0.5)
        t = time.monotonic()
        subprocess.run([os.path.join(BUILD, "livedisk/ovkdisk"), "backup",
                        "--full", api, os.path.join(tmp, "bk")],
                       check=True, stdout=subprocess.DEVNULL)
        marks.append(("backup", t, time.monotonic()))
        t = time.monotonic()
        time.sleep(4)
        marks.append(("idle after", t, time.monotonic()))
    finally:
        c.kill()
        c.wait()
        d.terminate()
        d.wait()
    # the client was killed: its last line may be cut short
    rows = [tuple(map(float, f)) for f in (line.split() for line in open(lat))
            if len(f) == 2]
    by = {}
    for phase, a, b in marks:
        s = by.setdefault(phase, {"lat": [], "secs": 0.0})
        s["lat"] += [ms for tc, ms in rows if a <= tc <= b]
        s["secs"] += b - a
    idle99 = pct(by["idle after"]["lat"], 99)
    print(f"{SIZE_MIB} MiB monolithicSparse VMDK, 4 KiB random 50/50 "
          f"read/write at depth 1 over vhost-user-blk, {CYCLES} view cycles")
    print(f"{'phase':<14} {'seconds':>8} {'requests':>9} {'p50 us':>8} "
          f"{'p99 us':>8} {'p99/idle after':>15}")
    for phase in ["idle", "view", "consolidation", "backup", "idle after"]:
        s = by[phase]
        print(f"{phase:<14} {s['secs']:8.2f} {len(s['lat']):9d} "
              f"{pct(s['lat'], 50):8.0f} {pct(s['lat'], 99):8.0f} "
              f"{pct(s['lat'], 99) / idle99:15.2f}")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
