# SPDX-License-Identifier: Apache-2.0
"""Live disks: pvblk's control socket (--api-socket) and ovkdisk's views,
backups and restores of a disk that is being written.

Without a guest: pvblk serves a VMDK over NBD and real NBD clients
(qemu-io, nbdcopy) write to it while the tests take views, checkpoints and
backups through the socket. With a guest: QEMU (TCG) runs Debian's kernel
on a disk pvblk serves over vhost-user-blk, and writes numbered records
while ovkdisk views and backs the disk up.
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import control_call, need, run, tool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "guest"))
import guestvm  # noqa: E402

MiB = 1 << 20


class Daemon:
    """pvblk -o rw serving image over NBD (and vhost-user-blk when asked)
    with a control socket."""

    def __init__(self, d, image, vhost=None):
        self.nbd = os.path.join(d, "nbd.sock")
        self.api = os.path.join(d, "api.sock")
        self.log = open(os.path.join(d, "pvblk.log"), "w+")
        cmd = [tool("pvblk"), "-o", "rw", "--nbd", f"unix:{self.nbd}",
               "--api-socket", self.api]
        if vhost:
            cmd += ["--vhost-user-blk", vhost]
        self.p = subprocess.Popen(cmd + [str(image)], stdout=self.log,
                                  stderr=subprocess.STDOUT)
        for _ in range(500):
            if os.path.exists(self.api) or self.p.poll() is not None:
                break
            time.sleep(0.02)
        assert os.path.exists(self.api), self.text()
        self.uri = f"nbd+unix:///?socket={self.nbd}"

    def text(self):
        self.log.seek(0)
        return self.log.read()

    def call(self, **req):
        """One request; returns the decoded reply."""
        return control_call(self.api, **req)

    def ok(self, **req):
        r = self.call(**req)
        assert "return" in r, (req, r, self.text())
        return r["return"]

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=60)
        assert rc == 0, f"pvblk exited {rc}:\n{self.text()}"
        assert not os.path.exists(self.api)


def qio(uri, *cmds, fmt="raw"):
    args = [need("qemu-io"), "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    r = run(args + [uri])
    assert "verification failed" not in r.stdout, r.stdout
    return r


def image(d, size="64M"):
    p = os.path.join(d, "disk.vmdk")
    run([need("qemu-img"), "create", "-f", "vmdk", p, size])
    qio(p, "write -P 1 0 4M", "write -P 2 32M 1M", fmt="vmdk")
    return p


def snapshot_of(uri, out):
    """The live disk's bytes now, through NBD."""
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "raw", uri, out])
    return out


def same(a, b, fa="raw", fb="raw"):
    r = run([need("qemu-img"), "compare", "-f", fa, "-F", fb, a, b],
            check=False)
    return r.returncode == 0


# ---- the control socket --------------------------------------------------

def test_status_and_checkpoints(tmp_path):
    img = image(str(tmp_path))
    d = Daemon(str(tmp_path), img)
    try:
        st = d.ok(command="status")
        assert st["size"] == 64 * MiB and not st["read_only"]
        assert st["top"] == os.path.realpath(img)
        assert [c["file"] for c in st["chain"]] == [img]
        assert st["exports"][0]["protocol"] == "nbd"
        assert st["checkpoints"] == [] and st["view"] is None
        assert "gt_cache_hits" in st["engine"]
        assert st["exports"][0]["connections"] == 0
        with socket.socket(socket.AF_UNIX) as c:  # an NBD client, idle
            c.connect(d.nbd)
            for _ in range(100):
                st = d.ok(command="status")
                if st["exports"][0]["connections"] == 1:
                    break
                time.sleep(0.05)
            assert st["exports"][0]["connections"] == 1
        assert d.ok(command="checkpoint-create", name="a") == {"name": "a"}
        assert "error" in d.call(command="checkpoint-create", name="a")
        d.ok(command="checkpoint-create", name="b")
        assert d.ok(command="checkpoint-list")["checkpoints"] == ["a", "b"]
        qio(d.uri, "write -P 9 8M 128k")
        ch = d.ok(command="changed", since="a")
        assert ch["extents"] == [[8 * MiB, 128 * 1024]]
        assert ch["next"] is None
        d.ok(command="checkpoint-delete", name="a")
        assert d.ok(command="checkpoint-list")["checkpoints"] == ["b"]
        assert "error" in d.call(command="changed", since="a")
        assert "error" in d.call(command="checkpoint-delete", name="a")
    finally:
        d.stop()


def test_hostile_clients_get_errors_not_a_crash(tmp_path):
    img = image(str(tmp_path))
    d = Daemon(str(tmp_path), img)
    try:
        bad = [b"garbage", b"[1,2]", b"{}", b'{"command": 7}',
               b'{"command": "nope"}', b'{"command": "status", "x": 1}',
               b'{"command": "checkpoint-create"}',
               b'{"command": "checkpoint-create", "name": "a/b"}',
               b'{"command": "checkpoint-create", "name": "' + b"x" * 200
               + b'"}', b'{"command": "grow", "size": -1}',
               b'{"command": "view-create", "nbd": "tcp:1.2.3.4:5"}',
               b'{"command": "changed", "since": "zz", "offset": '
               b'99999999999}', b"\xff\xfe\x00{",
               b'{"command": "status", "command": "status"}']
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.api)
            f = s.makefile("rb")
            for line in bad:
                s.sendall(line + b"\n")
                r = json.loads(f.readline())
                assert "error" in r and r["error"], (line, r)
        # a line longer than the limit: an error, then a hang-up
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.api)
            s.sendall(b"{" * 10000)
            r = json.loads(s.makefile("rb").readline())
            assert "longer than" in r["error"]
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass  # hung up with our unread bytes still queued
        # more clients than allowed: the extra ones are closed, the daemon
        # goes on answering
        held = []
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.api)
            held.append(s)
        for s in held:
            s.close()
        assert d.ok(command="status")["size"] == 64 * MiB
        assert d.p.poll() is None
    finally:
        d.stop()


def test_view_is_frozen_while_nbdcopy_writes(tmp_path):
    """A view exported over NBD keeps the bytes of the moment it was taken
    while a writer goes on; release merges the writes back (live commit)
    and the disk then holds them."""
    nbdcopy = need("nbdcopy")
    t = tmp_path
    img = image(str(t))
    d = Daemon(str(t), img)
    try:
        before = snapshot_of(d.uri, t / "before.raw")
        view_sock = str(t / "view.sock")
        v = d.ok(command="view-create", nbd=f"unix:{view_sock}")
        assert v["path"] == os.path.realpath(img)
        assert os.path.exists(v["child"])
        # nbdcopy writes 24 MiB of random data into the live disk while
        # the view is read
        src = t / "new.raw"
        src.write_bytes(os.urandom(24 * MiB))
        run(["truncate", "-s", "64M", src])
        w = subprocess.Popen([nbdcopy, str(src), d.uri])
        got = t / "view.raw"
        run([nbdcopy, v["nbd"], str(got)])
        assert w.wait(timeout=120) == 0
        assert same(got, before)
        st = d.ok(command="status")
        assert st["view"]["path"] == v["path"]
        assert st["top"] == v["child"]
        r = d.ok(command="view-release")
        assert not os.path.exists(view_sock)
        after = snapshot_of(d.uri, t / "after.raw")
        assert same(after, src)
        # live commit: the child is merged back and gone
        assert r["committed"]
        assert not os.path.exists(v["child"])
        st = d.ok(command="status")
        assert st["top"] == v["path"] and len(st["chain"]) == 1
    finally:
        d.stop()
    run([need("qemu-img"), "check", img])
    assert same(t / "after.raw", img, fb="vmdk")


def test_view_mounted_with_vmdkfs_and_scanned(tmp_path):
    """ovkdisk view mounts the frozen disk read-only: a file planted before
    the view is there, one written after it is not; clamscan finds the
    planted one; release unmounts and merges."""
    need("mkfs.ext4")
    need("fusermount3")
    t = tmp_path
    tree = t / "tree"
    (tree / "etc").mkdir(parents=True)
    planted = b"ovk-livedisk-planted-" + b"\x02" * 64
    (tree / "etc" / "planted.bin").write_bytes(planted)
    run(["mkfs.ext4", "-q", "-F", "-d", tree, t / "fs.raw", "32M"])
    img = str(t / "disk.vmdk")
    run([need("qemu-img"), "convert", "-O", "vmdk", t / "fs.raw", img])
    d = Daemon(str(t), img)
    mnt = t / "mnt"
    mnt.mkdir()
    try:
        r = run([tool("ovkdisk"), "view", "--output=json", d.api, mnt])
        info = json.loads(r.stdout)
        assert info["consistency"] == "crash-consistent"
        try:
            # the live disk changes after the view: not seen in it
            qio(d.uri, "write -P 7 0 1M")
            got = (mnt / "fs" / "disk" / "etc" / "planted.bin").read_bytes()
            assert got == planted
            if subprocess.run(["which", "clamscan"],
                              capture_output=True).returncode == 0:
                db = t / "test.hdb"
                db.write_text(f"{hashlib.md5(planted).hexdigest()}:"
                              f"{len(planted)}:Ovk.Test.Planted\n")
                s = subprocess.run(["clamscan", "-r", "--no-summary", "-d",
                                    db, mnt / "fs"], capture_output=True,
                                   text=True)
                assert s.returncode == 1, s.stdout + s.stderr
                assert "planted.bin: Ovk.Test.Planted.UNOFFICIAL FOUND" \
                    in s.stdout
        finally:
            rel = run([tool("ovkdisk"), "release", "--output=json", d.api,
                       mnt])
        assert not os.path.ismount(mnt)
        assert json.loads(rel.stdout)["top"]
        st = d.ok(command="status")
        assert st["view"] is None and len(st["chain"]) == 1
        qio(d.uri, "read -P 7 0 1M")
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        d.stop()


# ---- backups -------------------------------------------------------------

def manifest(bk):
    return json.loads((bk / "manifest.json").read_text())


def test_full_and_incremental_backups_restore_each_point(tmp_path):
    t = tmp_path
    img = image(str(t), "128M")
    d = Daemon(str(t), img)
    bk = t / "bk"
    points = []
    try:
        for i, writes in enumerate([[], ["write -P 3 8M 1M",
                                         "write -z 0 64k"],
                                    ["write -P 4 100M 3M"],
                                    ["write -P 5 8M 64k",
                                     "write -P 6 127M 1M"]]):
            if writes:
                qio(d.uri, *writes)
            r = run([tool("ovkdisk"), "backup", "--output=json", d.api, bk])
            e = json.loads(r.stdout)
            assert e["kind"] == ("full" if i == 0 else "incremental")
            points.append((e, snapshot_of(d.uri, t / f"at{i}.raw")))
            # an incremental reads only what changed: whole 64 KiB blocks
            if i:
                want = sum(int(w.split()[-1].rstrip("Mk")) *
                           (MiB if w.endswith("M") else 1024)
                           for w in writes)
                assert e["read_bytes"] == want, (e, writes)
        assert len(manifest(bk)["backups"]) == 4
        # only the last backup's checkpoint is kept on the disk
        assert d.ok(command="checkpoint-list")["checkpoints"] == \
            [points[-1][0]["checkpoint"]]
        st = d.ok(command="status")
        assert st["view"] is None and len(st["chain"]) == 1
    finally:
        d.stop()
    run([need("qemu-img"), "check", img])
    r = run([tool("ovkdisk"), "verify", bk])
    assert r.stdout.count("ok ") == 4, r.stdout
    for i, (e, raw) in enumerate(points):
        out = t / f"restored{i}.raw"
        run([tool("ovkdisk"), "restore", "--at", e["checkpoint"], bk, out])
        assert same(out, raw), i
        # each point is a plain VMDK chain that QEMU reads too
        assert same(bk / e["file"], raw, fa="vmdk")
    # a changed byte in a backup file is found
    f = bk / points[1][0]["file"]
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xff
    f.write_bytes(bytes(data))
    r = run([tool("ovkdisk"), "verify", bk], check=False)
    assert r.returncode == 1 and "BAD" in r.stdout


@pytest.mark.parametrize("fmt,ext,qfmt,sub", [
    ("vmdk-stream", "vmdk", "vmdk", "streamOptimized"),
    ("vmdk-sparse", "vmdk", "vmdk", "monolithicSparse"),
    ("raw", "raw", "raw", None)])
def test_backup_formats(tmp_path, fmt, ext, qfmt, sub):
    """--format: the full backup is a file of that format, the incremental
    one builds on it (a delta VMDK, or for raw a whole raw file); the
    manifest records the format; restore and verify read each."""
    t = tmp_path
    img = image(str(t))
    d = Daemon(str(t), img)
    bk = t / "bk"
    points = []
    try:
        for writes in [[], ["write -P 3 8M 1M", "write -z 0 64k"]]:
            if writes:
                qio(d.uri, *writes)
            r = run([tool("ovkdisk"), "backup", "--output=json", "--format",
                     fmt, d.api, bk])
            e = json.loads(r.stdout)
            assert e["format"] == fmt and e["file"].endswith("." + ext)
            points.append((e, snapshot_of(d.uri, t / f"at{len(points)}.raw")))
        # a backup of the other family cannot build on these
        other = "vmdk-sparse" if fmt == "raw" else "raw"
        r = run([tool("ovkdisk"), "backup", "--incremental", "--format",
                 other, d.api, bk], check=False)
        assert r.returncode == 1 and "--full" in r.stderr, r.stderr
    finally:
        d.stop()
    full, incr = points[0][0], points[1][0]
    assert full["kind"] == "full" and incr["kind"] == "incremental"
    assert incr["read_bytes"] == MiB + 64 * 1024
    info = json.loads(run([need("qemu-img"), "info", "--output=json", "-f",
                           qfmt, bk / full["file"]]).stdout)
    if sub:
        assert info["format-specific"]["data"]["create-type"] == sub
        assert incr["parent"] == full["file"]
    else:
        assert incr["parent"] is None  # a whole file: no chain
    assert [b["format"] for b in manifest(bk)["backups"]] == [fmt, fmt]
    r = run([tool("ovkdisk"), "verify", bk])
    assert r.stdout.count("ok ") == 2, r.stdout
    for i, (e, raw) in enumerate(points):
        out = t / f"restored{i}.raw"
        run([tool("ovkdisk"), "restore", "--at", e["checkpoint"], bk, out])
        assert same(out, raw), i
        assert same(bk / e["file"], raw, fa=qfmt), i
    r = run([tool("ovkdisk"), "backup", "--format", "qcow2", "x", bk],
            check=False)
    assert r.returncode == 1 and "vmdk-stream" in r.stderr


def test_killed_backup_leaves_earlier_ones_valid(tmp_path):
    t = tmp_path
    img = image(str(t), "512M")
    d = Daemon(str(t), img)
    bk = t / "bk"
    try:
        run([tool("ovkdisk"), "backup", d.api, bk])
        at0 = snapshot_of(d.uri, t / "at0.raw")
        first = manifest(bk)
        # much to copy, so that the kill lands while it copies
        src = t / "big.raw"
        src.write_bytes(os.urandom(256 * MiB))
        run([need("nbdcopy"), str(src), d.uri])
        p = subprocess.Popen([tool("ovkdisk"), "backup", d.api, bk],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(1000):
            if d.ok(command="status")["view"] is not None:
                break
            time.sleep(0.01)
        time.sleep(0.3)
        p.kill()
        p.wait()
        assert manifest(bk) == first
        r = run([tool("ovkdisk"), "verify", bk])
        assert "ok " in r.stdout
        run([tool("ovkdisk"), "restore", bk, t / "r0.raw"])
        assert same(t / "r0.raw", at0)
        # the next backup cleans up after the dead one and is incremental
        r = run([tool("ovkdisk"), "backup", "--output=json", d.api, bk])
        e = json.loads(r.stdout)
        assert e["kind"] == "incremental"
        at1 = snapshot_of(d.uri, t / "at1.raw")
        run([tool("ovkdisk"), "restore", bk, t / "r1.raw"])
        assert same(t / "r1.raw", at1)
        assert len(d.ok(command="checkpoint-list")["checkpoints"]) == 1
        # what the dead backup wrote is gone: only the manifest's files
        names = {b["file"] for b in manifest(bk)["backups"]} | \
            {b["blockhash_file"] for b in manifest(bk)["backups"]}
        assert set(os.listdir(bk)) == names | {"manifest.json"}
    finally:
        d.stop()


def test_quiesce_runs_before_the_view(tmp_path):
    t = tmp_path
    img = image(str(t))
    d = Daemon(str(t), img)
    bk = t / "bk"
    mark = t / "quiesced"
    try:
        # a failing command: no view, no backup, no checkpoint
        r = run([tool("ovkdisk"), "backup", "--quiesce", "false", d.api,
                 bk], check=False)
        assert r.returncode == 1 and "--quiesce" in r.stderr
        st = d.ok(command="status")
        assert st["view"] is None and st["checkpoints"] == []
        r = run([tool("ovkdisk"), "backup", "--output=json", "--quiesce",
                 f"touch {mark}", d.api, bk])
        assert mark.exists()
        assert json.loads(r.stdout)["consistency"] == "quiesced"
        r = run([tool("ovkdisk"), "backup", "--output=json", d.api, bk])
        assert json.loads(r.stdout)["consistency"] == "crash-consistent"
    finally:
        d.stop()


# ---- a running guest -----------------------------------------------------

REC = 4096
STOP_AT = 63 * MiB  # the host fills this block with "S" when done
MAX_REC = 15000     # records 1..MAX_REC stay below STOP_AT

# Record i is "SEQ %08d\n" in block i, written and fsync'ed before record
# i+1 is started and before the console says "wrote i". So any
# point-in-time copy of the disk holds records 1..k and nothing past k.
GUEST_WRITER = r"""
i=1
while [ $i -le %(max)d ]; do
  printf 'SEQ %%08d\n' $i | dd of=/dev/vda bs=%(rec)d seek=$i conv=sync,fsync 2>/dev/null || { echo "IOERR at $i"; exit 1; }
  echo "wrote $i"
  if [ $((i %% 20)) = 0 ]; then
    echo 3 > /proc/sys/vm/drop_caches
    if dd if=/dev/vda bs=%(rec)d skip=%(stop)d count=1 2>/dev/null | grep -q SSSS; then
      break
    fi
  fi
  i=$((i+1))
done
echo "last $i"
"""


def records(data):
    """k such that data holds exactly records 1..k (asserting the rest of
    the record area is zeros)."""
    k = 0
    while k + 1 <= MAX_REC:
        blk = data[(k + 1) * REC:(k + 2) * REC]
        want = b"SEQ %08d\n" % (k + 1)
        if blk[:len(want)] != want:
            break
        assert blk[len(want):] == bytes(REC - len(want)), k + 1
        k += 1
    rest = data[(k + 1) * REC:STOP_AT]
    assert rest == bytes(len(rest)), f"data after record {k}"
    return k


def logged(console):
    text = guestvm.console_text(console)
    assert "IOERR" not in text, text[-2000:]
    # Only whole lines count: the console file may end in the middle of
    # "wrote 123", and a kernel message may land inside a line.
    whole = text[:text.rfind("\n") + 1]
    n = [int(m) for m in re.findall(r"^wrote (\d+)\r?$", whole, re.M)]
    return max(n) if n else 0


@pytest.fixture(scope="module")
def guest_kernel():
    need("qemu-system-x86_64")
    try:
        return guestvm.kernel(guestvm.cache_dir(
            os.environ.get("OVK_BUILD") and os.path.abspath(
                os.environ["OVK_BUILD"])))
    except guestvm.GuestUnavailable as e:
        pytest.skip(f"no guest kernel: {e}")


def test_guest_writes_through_views_and_backups(guest_kernel, tmp_path):
    """A QEMU guest on vhost-user-blk keeps writing numbered records while
    the host takes a view (mounted with vmdkfs), releases it, and takes
    three backups; each view and restored backup holds a whole prefix of
    the records, at least those the guest had reported before it was
    taken, and the guest never sees an I/O error."""
    need("fusermount3")
    t = tmp_path
    img = str(t / "disk.vmdk")
    run([need("qemu-img"), "create", "-f", "vmdk", img, "64M"])
    vu = str(t / "vu.sock")
    d = Daemon(str(t), img, vhost=vu)
    vmlinuz, moddir = guest_kernel
    initrd = t / "initrd.gz"
    guestvm.initramfs(str(initrd), GUEST_WRITER % {
        "max": MAX_REC, "rec": REC, "stop": STOP_AT // REC}, moddir,
        modules=guestvm.VIRTIO_MODULES)
    console = str(t / "console.log")
    qemu = guestvm.start(vmlinuz, str(initrd), [
        "-chardev", f"socket,id=vu0,path={vu}",
        "-device", "vhost-user-blk-pci,chardev=vu0,num-queues=1"], console)
    bk = t / "bk"
    points = []

    def wait_for(n):
        for _ in range(6000):
            if logged(console) >= n or qemu.poll() is not None:
                break
            time.sleep(0.1)
        assert logged(console) >= n, guestvm.console_text(console)[-3000:]

    try:
        wait_for(50)
        mnt = t / "mnt"
        mnt.mkdir()
        lo = logged(console)
        run([tool("ovkdisk"), "view", d.api, mnt])
        try:
            hi = logged(console) + 1
            k = records((mnt / "disk").read_bytes())
            assert lo <= k <= hi, (lo, k, hi)
            wait_for(hi + 20)  # the guest goes on meanwhile
        finally:
            run([tool("ovkdisk"), "release", d.api, mnt])
        for i in range(4):  # a full backup, then three incremental ones
            wait_for(logged(console) + 30)
            lo = logged(console)
            r = run([tool("ovkdisk"), "backup", "--output=json", d.api, bk])
            hi = logged(console) + 1
            e = json.loads(r.stdout)
            assert e["kind"] == ("full" if i == 0 else "incremental")
            points.append((e, lo, hi))
        # the stop marker: a block of "S" bytes
        qio(d.uri, f"write -P 0x53 {STOP_AT} {REC}")
        rc, text = guestvm.finish(qemu, console, timeout=600)
        st = d.ok(command="status")
        top = st["top"]
        # every view was merged back while the guest wrote
        assert top == os.path.realpath(img) and len(st["chain"]) == 1
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        d.stop()
    assert rc == 0, text[-3000:]
    assert "IOERR" not in text
    run([tool("ovkdisk"), "verify", bk])
    for i, (e, lo, hi) in enumerate(points):
        out = t / f"r{i}.raw"
        run([tool("ovkdisk"), "restore", "--at", e["checkpoint"], bk, out])
        k = records(out.read_bytes())
        assert lo <= k <= hi, (i, lo, k, hi)
    # the disk itself holds every record the guest wrote
    final = t / "final.raw"
    run([need("qemu-img"), "convert", "-O", "raw", top, final])
    last = int(text.split("last ")[1].split()[0])
    assert records(final.read_bytes()) >= last - 1


# ---- patching a stopped VM's disk ------------------------------------------

def test_patch_reviews_then_commits_or_discards(tmp_path):
    need("fuse2fs")
    need("fusermount3")
    need("debugfs")
    t = tmp_path
    tree = t / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("old\n")
    run(["mkfs.ext4", "-q", "-F", "-d", tree, t / "fs.raw", "32M"])
    img = t / "disk.vmdk"
    run([need("qemu-img"), "convert", "-O", "vmdk", t / "fs.raw", img])
    before = t / "before.raw"
    run([need("qemu-img"), "convert", "-O", "raw", img, before])
    new = t / "motd"
    new.write_text("patched by ovkdisk\n")
    (t / "tool.sh").write_text("#!/bin/sh\necho hi\n")

    def dump(raw, path):
        out = t / "dumped"
        if out.exists():
            out.unlink()
        run(["debugfs", "-R", f"dump {path} {out}", raw])
        return out.read_bytes() if out.exists() else None

    def flat(name):
        p = t / name
        run([need("qemu-img"), "convert", "-O", "raw", img, p])
        return p

    # patch, review, discard: the image is as before
    r = run([tool("ovkdisk"), "patch", img, "--copy", f"{new}:/etc/motd",
             "--copy", f"{t / 'tool.sh'}:/usr/local/bin/tool.sh"])
    assert "etc/motd differ" in r.stdout, r.stdout
    assert "Only in" in r.stdout and "usr" in r.stdout, r.stdout
    child = t / "disk-patch.vmdk"
    assert child.exists()
    assert same(img, before, fa="vmdk")
    r = run([tool("ovkdisk"), "patch", img, "--copy", f"{new}:/x"],
            check=False)
    assert r.returncode == 1 and "pending" in r.stderr
    run([tool("ovkdisk"), "patch", img, "--discard"])
    assert not child.exists()
    assert same(img, before, fa="vmdk")
    # patch again and commit: the guest's filesystem holds the new files
    run([tool("ovkdisk"), "patch", img, "--copy", f"{new}:/etc/motd"])
    run([tool("ovkdisk"), "patch", img, "--commit"])
    assert not child.exists()
    raw = flat("after.raw")
    run(["e2fsck", "-fn", raw])
    assert dump(raw, "/etc/motd") == b"patched by ovkdisk\n"


def test_sigterm_with_a_view_open_leaves_a_valid_chain(tmp_path):
    t = tmp_path
    img = image(str(t))
    d = Daemon(str(t), img)
    v = d.ok(command="view-create", nbd=f"unix:{t / 'view.sock'}")
    qio(d.uri, "write -P 8 2M 1M")
    live = snapshot_of(d.uri, t / "live.raw")
    d.stop()
    assert "stays a delta" in d.text()
    assert not os.path.exists(t / "view.sock")
    run([need("qemu-img"), "check", v["child"]])
    assert same(v["child"], live, fa="vmdk")


def test_grow(tmp_path):
    t = tmp_path
    raw = t / "disk.raw"
    run([need("qemu-img"), "create", "-f", "raw", raw, "16M"])
    d = Daemon(str(t), raw)
    try:
        assert "error" in d.call(command="grow", size=8 << 20)
        assert d.ok(command="grow", size=32 << 20)["size"] == 32 << 20
        assert d.ok(command="status")["size"] == 32 << 20
        assert os.path.getsize(raw) == 32 << 20
        # a new NBD connection is offered the new size and writes there
        info = json.loads(run([need("qemu-img"), "info", "--output=json",
                               d.uri]).stdout)
        assert info["virtual-size"] == 32 << 20, info
        qio(d.uri, "write -P 5 30M 1M", "read -P 5 30M 1M")
    finally:
        d.stop()
    # a monolithicSparse VMDK grows while open, as far as its grain
    # directory has room (4 GiB for qemu-img's 64 MiB layout)
    (t / "v").mkdir()
    img = image(str(t / "v"))
    d = Daemon(str(t / "v"), img)
    try:
        r = d.call(command="grow", size=8 << 30)
        assert "error" in r and "at most 4294967296" in str(r), r
        assert d.ok(command="status")["size"] == 64 * MiB
        assert d.ok(command="grow", size=128 << 20)["size"] == 128 << 20
        assert d.ok(command="status")["size"] == 128 << 20
        qio(d.uri, "write -P 3 60M 1M", "write -P 6 100M 1M")
    finally:
        d.stop()
    run([need("qemu-img"), "check", img])
    info = json.loads(run([need("qemu-img"), "info", "--output=json",
                           img]).stdout)
    assert info["virtual-size"] == 128 << 20
    qio(img, "read -P 1 0 4M", "read -P 2 32M 1M", "read -P 3 60M 1M",
        "read -P 6 100M 1M", "write -P 4 127M 1M", "read -P 4 127M 1M",
        fmt="vmdk")
    with open(raw, "rb") as f:
        f.seek(30 << 20)
        assert f.read(1 << 20) == b"\x05" * (1 << 20)
    run([need("qemu-img"), "check", img])


# The guest prints its disk's size in sectors whenever it changes, until
# the size passes a target; then writes a block at the new end.
GUEST_WATCHER = r"""
last=0
for i in $(seq 1200); do
  s=$(cat /sys/block/vda/size)
  if [ "$s" != "$last" ]; then echo "size $s"; last=$s; fi
  if [ "$s" -ge %(target)d ]; then
    printf 'PAST THE OLD END' | dd of=/dev/vda bs=512 seek=$((s - 1)) conv=sync,fsync 2>/dev/null && echo "wrote-at-end"
    break
  fi
  sleep 0.1
done
echo "watch-done"
"""


def test_guest_sees_its_disk_grow(guest_kernel, tmp_path):
    """A QEMU guest on vhost-user-blk watches its disk's size; `grow` on
    pvblk's control socket makes QEMU read the configuration again (the
    configuration-change message on the backend channel) and the guest's
    driver picks up the new capacity with no reboot, then writes a block
    past the old end that the host finds in the image."""
    t = tmp_path
    raw = t / "disk.raw"
    run([need("qemu-img"), "create", "-f", "raw", raw, "16M"])
    vu = str(t / "vu.sock")
    d = Daemon(str(t), raw, vhost=vu)
    vmlinuz, moddir = guest_kernel
    initrd = t / "initrd.gz"
    guestvm.initramfs(str(initrd), GUEST_WATCHER % {
        "target": (48 << 20) // 512}, moddir,
        modules=guestvm.VIRTIO_MODULES)
    console = str(t / "console.log")
    qemu = guestvm.start(vmlinuz, str(initrd), [
        "-chardev", f"socket,id=vu0,path={vu}",
        "-device", "vhost-user-blk-pci,chardev=vu0,num-queues=1"], console)
    try:
        for _ in range(3000):
            if "size 32768" in guestvm.console_text(console) or \
                    qemu.poll() is not None:
                break
            time.sleep(0.1)
        assert "size 32768" in guestvm.console_text(console), \
            guestvm.console_text(console)[-3000:]
        r = d.ok(command="grow", size=48 << 20)
        assert r == {"size": 48 << 20, "clients_told": 1}, r
        guestvm.finish(qemu, console, timeout=120)
        text = guestvm.console_text(console)
        assert "size 98304" in text, text[-3000:]
        assert "wrote-at-end" in text, text[-3000:]
        assert "watch-done" in text, text[-3000:]
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        d.stop()
    with open(raw, "rb") as f:
        f.seek((48 << 20) - 512)
        assert f.read(16) == b"PAST THE OLD END"
