#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ovk on Ceph RBD against its peers, on one throwaway one-node cluster
# (tests/cephcluster.py) in one run:
#  - convert: `vmdk convert disk.vmdk rbd:...` vs `qemu-img convert -O raw
#    disk.vmdk rbd:...` (a 256 MiB monolithicSparse VMDK, 128 MiB of random
#    data in 1 MiB runs every 2 MiB); wall time and the tool's CPU time.
#  - NBD export: pvblk vs qemu-nbd serving the same rbd: image over a unix
#    socket, read with fio's nbd engine (4 KiB random read at depth 32, 1 MiB
#    sequential read at depth 8) and nbdcopy to null; server CPU per request.
#  - fio's rbd engine on the same image and jobs: what librbd itself gives.
# REPEAT rounds (default 3), each tool once per round in turn; medians.
# Usage: bench/bench_rbd.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vmdk=$(find "$build" -type f -name vmdk -perm -u+x -path '*tools*' | head -n 1)
pvblk=$(find "$build" -type f -name pvblk -perm -u+x | head -n 1)
[ -x "$vmdk" ] && [ -x "$pvblk" ] || { echo "vmdk/pvblk not built in $build" >&2; exit 1; }
for p in fio nbdcopy qemu-nbd qemu-img ceph-mon ceph-osd rbd; do
  command -v $p >/dev/null || { echo "$p is not installed" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/bench_rbd.XXXXXX)
trap 'python3 tests/cephcluster.py --stop "$work/ceph" || true; rm -rf "$work"' EXIT
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 tests/cephcluster.py "$work/ceph" >/dev/null
python3 - "$vmdk" "$pvblk" "$work" "${REPEAT:-3}" "${RUNTIME:-5}" <<'PYEOF'
import json, os, resource, signal, statistics, subprocess, sys, time

vmdk, pvblk, work, repeat, runtime = sys.argv[1:4] + [int(sys.argv[4]), sys.argv[5]]
conf = f"{work}/ceph/ceph.conf"
env = dict(os.environ, CEPH_CONF=conf)
TICK = os.sysconf("SC_CLK_TCK")
spec = lambda img: f"rbd:rbd/{img}:conf={conf}"

raw = f"{work}/src.raw"
with open(raw, "wb") as f:
    f.truncate(256 << 20)
    blk = bytearray(os.urandom(1 << 20))
    for i in range(128):
        blk[i % 4096] ^= 0xFF
        f.seek(i * (2 << 20))
        f.write(blk)
src = f"{work}/src.vmdk"
subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                "subformat=monolithicSparse", raw, src], check=True)
os.unlink(raw)

def timed(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    t1 = time.monotonic()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t1 - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

def rbd(*a):
    subprocess.run(["rbd", "-c", conf, *a], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

res = {}
n = 0
for r in range(repeat):
    for name in ("vmdk convert", "qemu-img convert"):
        n += 1
        img = f"c{n}"
        cmd = ([vmdk, "convert", src, spec(img)] if name == "vmdk convert"
               else ["qemu-img", "convert", "-O", "raw", src, spec(img)])
        res.setdefault(("convert 256M VMDK to RBD", name), []).append(timed(cmd))
        # both made the same image
        subprocess.run(["qemu-img", "compare", "-q", src, spec(img)],
                       check=True)
        rbd("rm", f"rbd/{img}")
    print(f"round {r + 1}/{repeat}: convert done", flush=True)

# the image every reader reads
subprocess.run([vmdk, "convert", src, spec("readme")], check=True)

JOBS = [("randread 4k qd32", ["--rw=randread", "--bs=4k", "--iodepth=32"]),
        ("seqread 1M qd8", ["--rw=read", "--bs=1M", "--iodepth=8"])]

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / TICK

def fio(args, extra):
    out = subprocess.run(["fio", "--name=b", "--time_based",
                          f"--runtime={runtime}", "--ramp_time=1",
                          "--output-format=json", *extra, *args],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr + out.stdout)
    j = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]["read"]
    return j

servers = {
    "pvblk": lambda s: [pvblk, "-f", "raw", "--nbd", f"unix:{s}", spec("readme")],
    "qemu-nbd": lambda s: ["qemu-nbd", "-t", "-r", "-k", s, "-f", "raw", "-x",
                           "", spec("readme")],
}
for r in range(repeat):
    for name, mk in servers.items():
        sock = f"{work}/s.sock"
        p = subprocess.Popen(mk(sock), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        t = time.monotonic()
        while not os.path.exists(sock):
            if p.poll() is not None or time.monotonic() - t > 60:
                raise SystemExit(f"{name} did not start")
            time.sleep(0.05)
        uri = f"nbd+unix:///?socket={sock}"
        for job, args in JOBS:
            c0 = cpu(p.pid)
            d = fio(args, ["--ioengine=nbd", f"--uri={uri}"])
            c1 = cpu(p.pid)
            rate = d["bw_bytes"] / (1 << 20) if "1M" in job else d["iops"]
            res.setdefault((f"NBD {job}", name), []).append(
                (rate, (c1 - c0) * 1e6 / (d["total_ios"] or 1)))
        c0 = cpu(p.pid)
        t0 = time.monotonic()
        subprocess.run(["nbdcopy", uri, "null:"], check=True)
        t1 = time.monotonic()
        c1 = cpu(p.pid)
        res.setdefault(("NBD nbdcopy 256M to null", name), []).append(
            ((t1 - t0), (c1 - c0) * 1e6 / 256))
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        if os.path.exists(sock):
            os.unlink(sock)
    for job, args in JOBS:
        d = fio(args, ["--ioengine=rbd", "--clientname=admin", "--pool=rbd",
                       "--rbdname=readme"])
        rate = d["bw_bytes"] / (1 << 20) if "1M" in job else d["iops"]
        res.setdefault((f"NBD {job}", "fio rbd engine"), []).append((rate, 0.0))
    print(f"round {r + 1}/{repeat}: reads done", flush=True)

print(f"\nmedian of {repeat}. convert: seconds (lower is better) and the "
      "tool's CPU seconds; NBD: IOPS (4k) or MiB/s (1M) and the server's CPU "
      "us per request; nbdcopy: seconds and server CPU us per MiB")
print("| test | tool | value | cpu |")
print("|---|---|---|---|")
for (test, tool), v in res.items():
    print(f"| {test} | {tool} | {statistics.median(x[0] for x in v):.2f} | "
          f"{statistics.median(x[1] for x in v):.2f} |")
def med(t, tool):
    return statistics.median(x[0] for x in res[(t, tool)])
c = "convert 256M VMDK to RBD"
print(f"\nconvert: qemu-img / vmdk time = {med(c, 'qemu-img convert') / med(c, 'vmdk convert'):.2f}x")
for job, _ in JOBS:
    t = f"NBD {job}"
    print(f"{t}: pvblk / qemu-nbd = {med(t, 'pvblk') / med(t, 'qemu-nbd'):.2f}x, "
          f"pvblk / fio rbd = {med(t, 'pvblk') / med(t, 'fio rbd engine'):.2f}x")
t = "NBD nbdcopy 256M to null"
print(f"{t}: qemu-nbd / pvblk time = {med(t, 'qemu-nbd') / med(t, 'pvblk'):.2f}x")
PYEOF
