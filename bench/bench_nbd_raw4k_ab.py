#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Raw 4 KiB random reads over NBD, side by side in one run: two pvblk
binaries (e.g. before and after a change) and nbdkit's file plugin, each
serving the same 1 GiB raw file (256 MiB of data, page cache warm) on a
unix socket to fio's nbd engine at depth 1 and 32 (3 s after a 1 s ramp).
ROUNDS rounds run every server once each, in turn; medians are printed.

Usage: bench/bench_nbd_raw4k_ab.py PVBLK_BEFORE PVBLK_AFTER [ROUNDS]
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time

before, after = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
work = tempfile.mkdtemp(prefix="bench_nbd_raw4k.", dir="/var/tmp")
img = f"{work}/d.raw"
with open(img, "wb") as f:
    f.truncate(1 << 30)
    for _ in range(256):
        f.write(os.urandom(1 << 20))
srv = {
    "before": lambda s: [before, "-o", "rw", "-f", "raw", "--nbd",
                         f"unix:{s}", img],
    "after": lambda s: [after, "-o", "rw", "-f", "raw", "--nbd",
                        f"unix:{s}", img],
    "nbdkit": lambda s: ["nbdkit", "-f", "-U", s, "file", img],
}
jobs = [("randread 4k qd1", ["--rw=randread", "--bs=4k", "--iodepth=1"]),
        ("randread 4k qd32", ["--rw=randread", "--bs=4k", "--iodepth=32"])]
print(f"load average at start: {open('/proc/loadavg').read().strip()}")
res = {}
try:
    for r in range(rounds):
        for name, mk in srv.items():
            s = f"{work}/{name}.sock"
            p = subprocess.Popen(mk(s), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            while not os.path.exists(s):
                if p.poll() is not None:
                    raise SystemExit(f"{name} did not start")
                time.sleep(0.02)
            for job, a in jobs:
                out = subprocess.run(
                    ["fio", "--name=b", "--ioengine=nbd",
                     f"--uri=nbd+unix:///?socket={s}", "--time_based",
                     "--runtime=3", "--ramp_time=1", "--size=256M",
                     "--output-format=json", *a],
                    capture_output=True, text=True, check=True)
                j = json.loads(out.stdout[out.stdout.index("{"):])
                res.setdefault((job, name), []).append(
                    j["jobs"][0]["read"]["iops"])
            p.send_signal(signal.SIGTERM)
            p.wait(30)
            if os.path.exists(s):
                os.unlink(s)
finally:
    subprocess.run(["rm", "-rf", work])
print(f"load average at end: {open('/proc/loadavg').read().strip()}")
print(f"median IOPS of {rounds} rounds")
print("| job | before | after | nbdkit | after/before | after/nbdkit |")
print("|---|---|---|---|---|---|")
for job, _ in jobs:
    m = {n: statistics.median(res[(job, n)]) for n in srv}
    print(f"| {job} | {m['before']:.0f} | {m['after']:.0f} | "
          f"{m['nbdkit']:.0f} | {m['after'] / m['before']:.2f}x | "
          f"{m['after'] / m['nbdkit']:.2f}x |")
