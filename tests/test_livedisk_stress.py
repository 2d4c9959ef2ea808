# SPDX-License-Identifier: Apache-2.0
"""A live disk under load while backups come and go: pvblk serves a
monolithicSparse VMDK with change tracking on, a vhost-user-blk front end
(build/pvblk/vu_client, the virtio-blk path ovkvm uses too) keeps 32 random
4 KiB reads and writes in flight, qemu-io over NBD zeroes, discards, reads
and writes 1 MiB ranges, and ovkdisk backs the disk up again and again:
each backup creates a checkpoint, takes a view (a live snapshot) and
releases it (a live commit), all while the writes go on.

What must hold: no client waits forever on a request (each round has a
deadline), no request fails, pvblk neither crashes nor refuses, it stops
cleanly on SIGTERM, the image checks clean, and every backup verifies.

This found a use-after-free: a write's completion read its write tracker
after a live commit had freed it (pvblk crashed within minutes of this
load). CI runs it for 30 s; OVK_LONG_TESTS=1 (or OVK_STRESS_SECONDS=N)
for 10 minutes.
"""
import os
import signal
import subprocess
import time

from conftest import control_call as call, need, run, tool

LONG = os.environ.get("OVK_LONG_TESTS") == "1"
SECONDS = int(os.environ.get("OVK_STRESS_SECONDS", "600" if LONG else "30"))


def test_backups_while_vhost_user_and_nbd_clients_write(tmp_path):
    qemu_img, qemu_io = need("qemu-img"), need("qemu-io")
    pvblk, ovkdisk = tool("pvblk"), tool("ovkdisk")
    vu_client = tool("vu_client")
    d = str(tmp_path)
    img = os.path.join(d, "disk.vmdk")
    run([qemu_img, "create", "-q", "-f", "vmdk", "-o",
         "subformat=monolithicSparse", img, "96M"])
    api, vu, nbd = (os.path.join(d, n) for n in ("api.sock", "vu.sock",
                                                "nbd.sock"))
    log = open(os.path.join(d, "pvblk.log"), "w+")
    p = subprocess.Popen([pvblk, "-o", "rw", "--vhost-user-blk", vu,
                          "--nbd", f"unix:{nbd}", "--api-socket", api, img],
                         stdout=log, stderr=subprocess.STDOUT)

    def text():
        log.seek(0)
        return log.read()[-3000:]

    for _ in range(500):
        if os.path.exists(api) or p.poll() is not None:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # the vhost-user and NBD listeners after the API one
    assert "return" in call(api, command="checkpoint-create", name="t0"), \
        text()
    uri = f"nbd+unix:///?socket={nbd}"
    bk = os.path.join(d, "bk")
    end = time.monotonic() + SECONDS
    rounds = {"vhost-user": 0, "nbd": 0, "backup": 0}
    vu_proc = nbd_proc = bk_proc = None
    vu_t = nbd_t = bk_t = 0.0
    off = 0
    try:
        # three kinds of client, each restarted as it ends, until the time
        # is up; a round still running past its deadline is a hang
        while time.monotonic() < end or vu_proc or nbd_proc or bk_proc:
            now = time.monotonic()
            if vu_proc is None and now < end:
                vu_proc = subprocess.Popen(
                    [vu_client, vu, str(p.pid), "rw", "rand", "4096", "32",
                     "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
                vu_t = now
            if nbd_proc is None and now < end:
                off = (off + 13) % 90
                o = off << 20
                nbd_proc = subprocess.Popen(
                    [qemu_io, "-f", "raw", "-c", f"write -z {o} 1M",
                     "-c", f"discard {o + 65536} 512k", "-c", f"read {o} 2M",
                     "-c", f"write -P 7 {o} 64k", uri],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
                nbd_t = now
            if bk_proc is None and now < end:
                # a full backup every 16th, so the incremental chain stays
                # short of the 128 layers a chain may have
                full = ["--full"] if rounds["backup"] % 16 == 0 else []
                bk_proc = subprocess.Popen(
                    [ovkdisk, "backup", api, bk] + full,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
                bk_t = now
            for name, proc, t0, limit in (("vhost-user", vu_proc, vu_t, 60),
                                          ("nbd", nbd_proc, nbd_t, 60),
                                          ("backup", bk_proc, bk_t, 120)):
                if proc is None:
                    continue
                rc = proc.poll()
                if rc is None:
                    assert now - t0 < limit, (
                        f"{name} round {rounds[name] + 1} still running "
                        f"after {limit} s: a request never completed; "
                        f"pvblk: {text()}")
                    continue
                out = proc.stdout.read()
                assert rc == 0, (f"{name} round {rounds[name] + 1} exited "
                                 f"{rc}: {out[-2000:]}\npvblk: {text()}")
                rounds[name] += 1
                if name == "vhost-user":
                    vu_proc = None
                elif name == "nbd":
                    nbd_proc = None
                else:
                    bk_proc = None
            assert p.poll() is None, f"pvblk ended ({p.returncode}): {text()}"
            time.sleep(0.05)
        st = call(api, command="status")["return"]
        assert all(e["io"]["errors"] == 0 for e in st["exports"]), st
    finally:
        for proc in (vu_proc, nbd_proc, bk_proc):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "hung on SIGTERM"
    assert rc == 0, f"pvblk exited {rc}: {text()}"
    assert all(n > 0 for n in rounds.values()), rounds
    run([qemu_img, "check", "-q", img])
    run([ovkdisk, "verify", bk])
    print(f"rounds in {SECONDS} s: {rounds}")
