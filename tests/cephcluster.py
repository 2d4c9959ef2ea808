# SPDX-License-Identifier: Apache-2.0
"""A throwaway single-node Ceph cluster for the RBD tests and benchmarks.

One monitor and one OSD (BlueStore on a 4 GiB file) on 127.0.0.1, auth
none, pool size 1, all state in one folder. Needs Debian's ceph-mon,
ceph-osd and ceph-common (.ci/setup installs them).

    c = CephCluster(folder); c.start(); ... c.stop()

or `python3 tests/cephcluster.py FOLDER` to start one by hand (prints the
conf path; stop it with `python3 tests/cephcluster.py --stop FOLDER`).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

POOL = "rbd"
PROGRAMS = ("ceph-mon", "ceph-osd", "ceph", "monmaptool", "rbd")


def missing_programs():
    """The Ceph programs that are not installed (empty when all are)."""
    return [p for p in PROGRAMS if not shutil.which(p)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CephCluster:
    def __init__(self, folder):
        self.dir = os.path.abspath(folder)
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.pool = POOL

    def _run(self, *cmd, timeout=120, check=True):
        r = subprocess.run([str(c) for c in cmd], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited "
                               f"{r.returncode}: {r.stderr.strip()[-2000:]}"
                               f"\n(logs in {self.dir}/log)")
        return r

    def ceph(self, *args, **kw):
        return self._run("ceph", "-c", self.conf, "--connect-timeout", "30",
                         *args, **kw)

    def rbd(self, *args, **kw):
        return self._run("rbd", "-c", self.conf, "-p", self.pool, *args, **kw)

    def spec(self, image, snap=None):
        """The rbd: name ovk and qemu-img both take for image."""
        s = f"rbd:{self.pool}/{image}"
        if snap:
            s += f"@{snap}"
        return s + f":conf={self.conf}"

    def _write_conf(self, port):
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""[global]
fsid = {self.fsid}
mon host = [v2:127.0.0.1:{port}]
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
ms bind ipv6 = false
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
mon data = {d}/mon/$name
osd data = {d}/osd/$name
keyring = /dev/null
[osd]
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 4294967296
osd memory target = 536870912
osd op num shards = 1
osd op num threads per shard = 2
""")

    def start(self, timeout=120):
        os.makedirs(self.dir, exist_ok=True)
        for sub in ("run", "log", "mon/mon.a", "osd/osd.0"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.fsid = str(uuid.uuid4())
        port = _free_port()
        self._write_conf(port)
        monmap = os.path.join(self.dir, "monmap")
        self._run("monmaptool", "--create", "--fsid", self.fsid, "--addv",
                  "a", f"[v2:127.0.0.1:{port}]", monmap)
        self._run("ceph-mon", "-c", self.conf, "--mkfs", "-i", "a",
                  "--monmap", monmap)
        self._run("ceph-mon", "-c", self.conf, "-i", "a")
        osd_uuid = str(uuid.uuid4())
        self.ceph("osd", "new", osd_uuid)
        self._run("ceph-osd", "-c", self.conf, "-i", "0", "--mkfs",
                  "--osd-uuid", osd_uuid)
        self._run("ceph-osd", "-c", self.conf, "-i", "0")
        self.ceph("osd", "pool", "create", self.pool, "16", "16")
        self.ceph("osd", "pool", "set", self.pool, "size", "1",
                  "--yes-i-really-mean-it")
        self.ceph("osd", "pool", "application", "enable", self.pool, "rbd")
        # ready when an object round-trips through the pool
        end = time.monotonic() + timeout
        while True:
            r = self._run("rados", "-c", self.conf, "-p", self.pool, "stat",
                          "ovk-probe", check=False, timeout=60)
            if r.returncode == 0 or "No such file" in r.stderr:
                w = self._run("rados", "-c", self.conf, "-p", self.pool,
                              "create", "ovk-probe", check=False, timeout=60)
                if w.returncode == 0 or "exists" in w.stderr:
                    return self
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"Ceph cluster in {self.dir} not ready "
                                   f"after {timeout} s: {r.stderr.strip()}")
            time.sleep(1)

    def pid(self, name):
        try:
            with open(os.path.join(self.dir, "run", f"{name}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill(self, name, sig=signal.SIGTERM, wait=20):
        """Stops daemon name ("osd.0", "mon.a"); True once it is gone."""
        pid = self.pid(name)
        if not pid:
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        return False

    def start_osd(self, timeout=120):
        """Starts osd.0 again (after kill) and waits until the pool serves
        I/O."""
        self._run("ceph-osd", "-c", self.conf, "-i", "0")
        end = time.monotonic() + timeout
        while True:
            r = self._run("rados", "-c", self.conf, "-p", self.pool, "stat",
                          "ovk-probe", check=False, timeout=60)
            if r.returncode == 0:
                return
            if time.monotonic() > end:
                raise RuntimeError(f"osd.0 of {self.dir} not back after "
                                   f"{timeout} s: {r.stderr.strip()}")
            time.sleep(1)

    def stop(self):
        self.kill("osd.0")
        self.kill("mon.a")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--stop":
        CephCluster(sys.argv[2]).stop()
    elif len(sys.argv) == 2:
        print(CephCluster(sys.argv[1]).start().conf)
    else:
        sys.exit("usage: cephcluster.py FOLDER | --stop FOLDER")
