#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""pvblk vs qemu-storage-daemon (in an IOThread), both serving the same image over
vhost-user-blk to the same small front end (build/pvblk/vu_client: one
virtqueue over memfd memory), one after the other in one run.

  /usr/bin/python3 bench/bench_vhost_user.py [BUILD] [SECONDS] [REPEAT]

For raw, monolithicSparse and streamOptimized copies of one 256 MiB disk
(half random, half text per 64 KiB, so a stream has something to inflate):
4 KiB random reads and writes at depth 1 and 32, and 1 MiB sequential
reads at depth 1 (writes only on raw and monolithicSparse: QEMU cannot
write a stream in place). Prints requests per second, the ratio
pvblk/qsd, and each backend's CPU time per request (utime + stime from
/proc/PID/stat over the run); median of REPEAT runs (default 3), the two
backends' runs interleaved. IMAGES="raw monolithicSparse streamOptimized"
and WORKLOADS="d1" (a substring of the workload names) pick a subset.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
SECONDS = sys.argv[2] if len(sys.argv) > 2 else "2"
REPEAT = int(sys.argv[3]) if len(sys.argv) > 3 else 3
SIZE = 256 << 20

WORKLOADS = [
    ("4k rand read d1", "read", "rand", 4096, 1),
    ("4k rand read d32", "read", "rand", 4096, 32),
    ("4k rand write d1", "write", "rand", 4096, 1),
    ("4k rand write d32", "write", "rand", 4096, 32),
    ("1M seq read d1", "read", "seq", 1 << 20, 1),
]


def make_images(d):
    raw = os.path.join(d, "disk.raw")
    text = (b"ovk pvblk vhost-user-blk benchmark line of text\n" * 700)
    with open(raw, "wb") as f:
        for _ in range(SIZE // 65536):
            f.write(os.urandom(32768) + text[:32768])
    imgs = {"raw": raw}
    for sub in ("monolithicSparse", "streamOptimized"):
        p = os.path.join(d, sub + ".vmdk")
        subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o",
                        f"subformat={sub}", raw, p], check=True)
        imgs[sub] = p
    return imgs


def wait_sock(sock, p):
    for _ in range(300):
        if os.path.exists(sock):
            return
        if p.poll() is not None:
            raise RuntimeError("backend exited")
        time.sleep(0.02)
    raise RuntimeError("no socket")


def start(backend, image, sock, fmt):
    if os.path.exists(sock):
        os.unlink(sock)
    if backend == "pvblk":
        cmd = [os.path.join(BUILD, "pvblk/pvblk"), "-o", "rw",
               "--vhost-user-blk", sock, image]
    else:
        # in an IOThread, as QEMU recommends for performance; its event
        # loop busy-polls (poll-max-ns, 32 us by default) as pvblk's
        # queue threads do (--poll-us, 32 by default)
        cmd = ["qemu-storage-daemon",
               "--object", "iothread,id=io0",
               "--blockdev", f"driver=file,filename={image},node-name=f",
               "--blockdev", f"driver={fmt},file=f,node-name=d",
               "--export", "type=vhost-user-blk,id=e,node-name=d,"
               f"addr.type=unix,addr.path={sock},writable=on,"
               "iothread=io0"]
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    wait_sock(sock, p)
    return p


def run_one(sock, pid, w):
    _, op, pat, bs, depth = w
    r = subprocess.run([os.path.join(BUILD, "pvblk/vu_client"), sock,
                        str(pid), op, pat, str(bs), str(depth), SECONDS],
                       capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError(r.stderr)
    f = r.stdout.split()
    return float(f[1]), float(f[5])


def main():
    d = tempfile.mkdtemp(prefix="bench_vu_", dir=os.environ.get("TMPDIR"))
    try:
        imgs = make_images(d)
        print(f"# load average {os.getloadavg()[0]:.1f}, "
              f"{os.cpu_count()} CPUs, {SECONDS} s per run, "
              f"median of {REPEAT}")
        print("| image | workload | pvblk IOPS | qsd IOPS | ratio | "
              "pvblk CPU us/req | qsd CPU us/req |")
        print("|---|---|---|---|---|---|---|")
        only = os.environ.get("IMAGES", "").split()
        only_w = os.environ.get("WORKLOADS", "")
        for kind, image in imgs.items():
            if only and kind not in only:
                continue
            fmt = "raw" if kind == "raw" else "vmdk"
            for w in WORKLOADS:
                if w[1] == "write" and kind == "streamOptimized":
                    continue
                if only_w and only_w not in w[0]:
                    continue
                # both backends up at once, their runs interleaved, so a
                # change in the machine's load falls on both alike
                procs, imgs_used = {}, []
                try:
                    for backend in ("pvblk", "qsd"):
                        # a copy each: both backends hold their image's
                        # lock, as QEMU does, so they cannot share one
                        img = image + "." + backend
                        shutil.copy(image, img)
                        imgs_used.append(img)
                        with open(img, "rb") as f:  # warm the page cache
                            while f.read(1 << 20):
                                pass
                        sock = os.path.join(d, backend + ".sock")
                        procs[backend] = (start(backend, img, sock, fmt),
                                          sock)
                    runs = {"pvblk": [], "qsd": []}
                    for _ in range(REPEAT):
                        for backend, (p, sock) in procs.items():
                            runs[backend].append(run_one(sock, p.pid, w))
                finally:
                    for p, _ in procs.values():
                        p.terminate()
                        p.wait()
                    for img in imgs_used:
                        os.unlink(img)
                res = {k: (statistics.median(r[0] for r in v),
                           statistics.median(r[1] for r in v))
                       for k, v in runs.items()}
                a, b = res["pvblk"], res["qsd"]
                print(f"| {kind} | {w[0]} | {a[0]:.0f} | {b[0]:.0f} | "
                      f"{a[0] / b[0]:.2f}x | {a[1]:.1f} | {b[1]:.1f} |",
                      flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
