# SPDX-License-Identifier: Apache-2.0
"""pvblk serving several exports in one process (--export), driven by real
clients: qemu-img, qemu-io, nbdinfo over the one NBD socket (each export
picked by name), build/pvblk/vu_client on each vhost-user-blk socket,
the control socket, and ovkdisk backup --export.

The daemon serves three images, each with its own mode:
  alpha  a monolithicSparse VMDK, rw, on NBD and its own vhost-user-blk
  beta   a streamOptimized VMDK, snapshot (writes go to a delta child), NBD
  gamma  a raw file, ro, on NBD and its own vhost-user-blk (two queues)
"""
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import control_call, need, run, tool

MiB = 1 << 20


def make_images(d):
    """alpha.vmdk (sparse, 0x11 at 0), beta.vmdk (stream, 0x22 at 1M),
    gamma.raw (0x33 at 2M); returns their paths."""
    qi, qio = need("qemu-img"), need("qemu-io")
    alpha = os.path.join(d, "alpha.vmdk")
    beta = os.path.join(d, "beta.vmdk")
    gamma = os.path.join(d, "gamma.raw")
    src = os.path.join(d, "src.raw")
    run([qi, "create", "-f", "vmdk", "-o", "subformat=monolithicSparse",
         alpha, "64M"])
    run([qio, "-f", "vmdk", "-c", "write -P 0x11 0 1M", alpha])
    run([qi, "create", "-f", "raw", src, "48M"])
    run([qio, "-f", "raw", "-c", f"write -P 0x22 {MiB} 1M", src])
    run([qi, "convert", "-f", "raw", "-O", "vmdk", "-o",
         "subformat=streamOptimized", src, beta])
    os.unlink(src)
    run([qi, "create", "-f", "raw", gamma, "32M"])
    run([qio, "-f", "raw", "-c", f"write -P 0x33 {2 * MiB} 1M", gamma])
    return alpha, beta, gamma


def wait_path(p, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(p):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"{p} never appeared"
        time.sleep(0.02)
    return True


class Daemon:
    """pvblk with the three exports; ready once the control socket is."""

    def __init__(self, d, extra=()):
        self.d = d
        self.alpha, self.beta, self.gamma = make_images(d)
        self.nbd = os.path.join(d, "nbd.sock")
        self.api = os.path.join(d, "api.sock")
        self.vu_a = os.path.join(d, "alpha.vu")
        self.vu_g = os.path.join(d, "gamma.vu")
        self.child = os.path.join(d, "beta-child.vmdk")
        self.log = os.path.join(d, "pvblk.log")
        args = [tool("pvblk"), "--nbd", "unix:" + self.nbd,
                "--api-socket", self.api,
                "--export", f"{self.alpha},name=alpha,rw,nbd,"
                            f"vhost-user-blk={self.vu_a}",
                "--export", f"{self.beta},name=beta,"
                            f"snapshot={self.child},nbd",
                "--export", f"{self.gamma},name=gamma,ro,format=raw,nbd,"
                            f"vhost-user-blk={self.vu_g},num-queues=2",
                *extra]
        self.p = subprocess.Popen(args, stderr=open(self.log, "w"))
        if not wait_path(self.api, self.p):
            raise AssertionError("pvblk did not start:\n" +
                                 open(self.log).read())

    def url(self, name):
        return f"nbd+unix:///{name}?socket={self.nbd}"

    def call(self, **req):
        return control_call(self.api, **req)

    def ok(self, **req):
        r = self.call(**req)
        assert "return" in r, r
        return r["return"]

    def stop(self):
        """SIGTERM: pvblk exits 0 and leaves no socket behind."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            assert self.p.wait(timeout=30) == 0, open(self.log).read()
        for s in (self.nbd, self.api, self.vu_a, self.vu_g):
            assert not os.path.exists(s), s

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path))
    yield d
    d.kill()


def test_nbd_clients_pick_each_export_by_name(daemon):
    qio, qi = need("qemu-io"), need("qemu-img")
    d = daemon
    # each export's data, read over the one socket by name
    run([qio, "-r", "-f", "raw", "-c", "read -P 0x11 0 1M",
         d.url("alpha")])
    run([qio, "-r", "-f", "raw", "-c", f"read -P 0x22 {MiB} 1M",
         d.url("beta")])
    run([qio, "-r", "-f", "raw", "-c", f"read -P 0x33 {2 * MiB} 1M",
         d.url("gamma")])
    sizes = {n: json.loads(run([qi, "info", "--output=json",
                                d.url(n)]).stdout)["virtual-size"]
             for n in ("alpha", "beta", "gamma")}
    assert sizes == {"alpha": 64 * MiB, "beta": 48 * MiB, "gamma": 32 * MiB}
    # modes: alpha writes through, beta into its child, gamma refuses
    run([qio, "-f", "raw", "-c", "write -P 0x44 8M 64k", d.url("alpha")])
    run([qio, "-r", "-f", "raw", "-c", "read -P 0x44 8M 64k",
         d.url("alpha")])
    run([qio, "-f", "raw", "-c", "write -P 0x55 0 64k", d.url("beta")])
    run([qio, "-r", "-f", "raw", "-c", "read -P 0x55 0 64k", d.url("beta")])
    r = run([qio, "-f", "raw", "-c", "write -P 0x66 0 4k", d.url("gamma")],
            check=False)
    assert r.returncode != 0 or "failed" in r.stdout + r.stderr, r
    r = run([qio, "-r", "-f", "raw", "-c", "read -P 0 0 4k",
             d.url("gamma")])
    info = json.loads(run([need("nbdinfo"), "--json",
                           d.url("gamma")]).stdout)
    assert info["exports"][0]["is_read_only"] is True
    info = json.loads(run([need("nbdinfo"), "--json",
                           d.url("alpha")]).stdout)
    assert info["exports"][0]["is_read_only"] is False
    # an unknown name is refused by name, not served as another export
    r = run([qio, "-r", "-f", "raw", "-c", "read 0 4k", d.url("delta")],
            check=False)
    assert r.returncode != 0
    assert "no export of that name" in r.stdout + r.stderr, r
    r = run([need("nbdinfo"), d.url("delta")], check=False)
    assert r.returncode != 0
    d.stop()
    # the stream stayed untouched; its child and alpha check clean
    for img in (d.alpha, d.child, d.beta):
        run([qi, "check", img])
    run([qio, "-r", "-f", "vmdk", "-c", "read -P 0x44 8M 64k", d.alpha])
    run([qio, "-r", "-f", "vmdk", "-c", "read -P 0 0 64k", d.beta])
    run([qio, "-r", "-f", "vmdk", "-c", "read -P 0x55 0 64k", d.child])
    run([qio, "-r", "-f", "raw", "-c", "read -P 0 0 4k", d.gamma])


def test_nbdinfo_list_shows_every_export(daemon):
    r = run([need("nbdinfo"), "--json", "--list",
             f"nbd+unix://?socket={daemon.nbd}"])
    exports = json.loads(r.stdout)["exports"]
    assert [e["export-name"] for e in exports] == ["alpha", "beta", "gamma"]
    assert [e["description"] for e in exports] == [
        daemon.alpha, daemon.beta, daemon.gamma]
    assert [e["export-size"] for e in exports] == [64 * MiB, 48 * MiB,
                                                   32 * MiB]
    assert [e["is_read_only"] for e in exports] == [False, False, True]
    daemon.stop()


def test_each_vhost_user_blk_export_answers(daemon):
    vu = tool("vu_client")
    d = daemon
    for sock, mode in ((d.vu_a, "rw"), (d.vu_g, "read")):
        r = run([vu, sock, str(d.p.pid), mode, "rand", "4096", "4", "1"],
                timeout=60)
        assert "requests" in r.stdout, r.stdout
    # the ro export refuses the writes of its front end
    r = run([vu, d.vu_g, str(d.p.pid), "write", "seq", "4096", "1", "1"],
            check=False, timeout=60)
    assert r.returncode != 0 and "request failed" in r.stderr, r
    st = d.ok(command="status")
    by = {e["name"]: e for e in st["exports"]}
    assert by["alpha"]["io"]["written_bytes"] > 0
    vu_g = [x for x in by["gamma"]["listeners"]
            if x["protocol"] == "vhost-user-blk"][0]
    assert vu_g["queues"] == 2 and len(vu_g["vrings"]) == 2
    assert vu_g["io"]["written_bytes"] == 0 and vu_g["io"]["errors"] >= 1
    assert by["beta"]["io"]["requests"] == 0
    d.stop()
    run([need("qemu-img"), "check", d.alpha])


def test_control_socket_per_export(daemon):
    d = daemon
    lst = d.ok(command="export-list")["exports"]
    assert [(e["name"], e["mode"], e["image"]) for e in lst] == [
        ("alpha", "rw", d.alpha), ("beta", "snapshot", d.beta),
        ("gamma", "ro", d.gamma)]
    assert [sorted(e["protocols"]) for e in lst] == [
        ["nbd", "vhost-user-blk"], ["nbd"], ["nbd", "vhost-user-blk"]]
    st = d.ok(command="status")
    assert st["export"] == "alpha" and st["image"] == d.alpha  # the first
    assert [e["name"] for e in st["exports"]] == ["alpha", "beta", "gamma"]
    for e in st["exports"]:
        assert set(e["io"]) == {"requests", "read_bytes", "written_bytes",
                                "errors"}
    st = d.ok(command="status", export="beta")
    assert st["mode"] == "snapshot" and st["top"] == d.child
    assert [c["file"] for c in st["chain"]] == [d.child, d.beta]
    # checkpoints are each export's own
    assert d.ok(command="checkpoint-create", name="c1",
                export="beta") == {"name": "c1"}
    assert d.ok(command="checkpoint-list", export="beta")[
        "checkpoints"] == ["c1"]
    assert d.ok(command="checkpoint-list", export="alpha")[
        "checkpoints"] == []
    d.ok(command="checkpoint-create", name="a1")  # the first: alpha
    assert d.ok(command="checkpoint-list", export="alpha")[
        "checkpoints"] == ["a1"]
    run([need("qemu-io"), "-f", "raw", "-c", "write -P 7 4M 64k",
         d.url("beta")])
    ch = d.ok(command="changed", since="c1", export="beta")
    assert ch["extents"] == [[4 * MiB, 65536]], ch
    ch = d.ok(command="changed", since="a1", export="alpha")
    assert ch["extents"] == [], ch
    # over NBD each export offers its own checkpoints' dirty bitmaps
    nbdinfo = need("nbdinfo")
    m = json.loads(run([nbdinfo, "--json", "--map=qemu:dirty-bitmap:c1",
                        d.url("beta")]).stdout)
    dirty = [(e["offset"], e["length"]) for e in m if e["type"] & 1]
    assert dirty == [(4 * MiB, 65536)], m
    ctx = json.loads(run([nbdinfo, "--json", d.url("alpha")]).stdout)[
        "exports"][0]["contexts"]
    assert "qemu:dirty-bitmap:a1" in ctx and \
        "qemu:dirty-bitmap:c1" not in ctx, ctx
    # a read-only export takes no checkpoint
    assert "error" in d.call(command="checkpoint-create", name="g",
                             export="gamma")
    r = d.call(command="status", export="nope")
    assert "no export named 'nope'" in r["error"]
    assert "'alpha', 'beta', 'gamma'" in r["error"]
    d.ok(command="checkpoint-delete", name="c1", export="beta")
    d.stop()


def test_ovkdisk_backup_of_one_export(daemon, tmp_path):
    d = daemon
    qio = need("qemu-io")
    run([qio, "-f", "raw", "-c", "write -P 0x77 16M 1M", d.url("alpha")])
    bk = str(tmp_path / "bk")
    r = run([tool("ovkdisk"), "backup", "--output=json", "--export", "alpha",
             d.api, bk])
    out = json.loads(r.stdout)
    assert out["checkpoint"].startswith("ovkdisk-"), out
    restored = str(tmp_path / "restored.raw")
    run([tool("ovkdisk"), "restore", bk, restored])
    assert os.path.getsize(restored) == 64 * MiB
    run([qio, "-r", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c",
         "read -P 0x77 16M 1M", restored])
    # the backup's checkpoint is on alpha, not on the others
    assert len(d.ok(command="checkpoint-list", export="alpha")[
        "checkpoints"]) == 1
    assert d.ok(command="checkpoint-list", export="beta")[
        "checkpoints"] == []
    r = run([tool("ovkdisk"), "backup", "--export", "nope", d.api,
             str(tmp_path / "bk2")], check=False)
    assert r.returncode == 1 and "no export named 'nope'" in r.stderr, r
    d.stop()
    run([need("qemu-img"), "check", d.alpha])


def start_fails(tmp_path, args):
    """pvblk with args must exit 1; returns its stderr."""
    p = subprocess.run([tool("pvblk"), *args], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path))
    assert p.returncode == 1, p
    return p.stderr


def test_duplicate_names_and_images_are_refused(tmp_path):
    d = str(tmp_path)
    alpha, beta, gamma = make_images(d)
    nbd = "unix:" + os.path.join(d, "nbd.sock")
    err = start_fails(tmp_path, [
        "--nbd", nbd, "--export", f"{alpha},name=x,nbd",
        "--export", f"{beta},name=x,nbd"])
    assert "the name 'x' is taken by export 1" in err, err
    err = start_fails(tmp_path, [
        "--nbd", nbd, "--export", f"{alpha},name=a,rw,nbd",
        "--export", f"{d}/../{os.path.basename(d)}/alpha.vmdk,name=b,nbd"])
    assert "exports 'a' and 'b' both name the image" in err, err
    err = start_fails(tmp_path, [
        "--nbd", nbd, "--export", f"{alpha},name=a,nbd,"
                                  f"vhost-user-blk={d}/x.vu",
        "--export", f"{beta},name=b,vhost-user-blk={d}/x.vu"])
    assert f"the socket {d}/x.vu is export 'a''s already" in err, err
    err = start_fails(tmp_path, ["--nbd", nbd, "--export", f"{alpha},nbd"])
    assert "give the export a name=NAME" in err, err
    err = start_fails(tmp_path, ["--export", f"{alpha},name=a,nbd"])
    assert "no --nbd ADDRESS" in err, err
    err = start_fails(tmp_path, ["--nbd", nbd, "-o", "rw", "--export",
                                 f"{alpha},name=a,nbd"])
    assert "inside each --export" in err, err
    err = start_fails(tmp_path, ["--nbd", nbd, "--export",
                                 f"{alpha},name=a,nbd", alpha])
    assert "give no IMAGE" in err, err
    assert sorted(os.listdir(d)) == ["alpha.vmdk", "beta.vmdk", "gamma.raw"]


def test_a_bad_third_export_leaves_nothing_behind(tmp_path):
    d = str(tmp_path)
    alpha, beta, gamma = make_images(d)
    before = sorted(os.listdir(d))
    nbd = "unix:" + os.path.join(d, "nbd.sock")
    common = ["--nbd", nbd, "--api-socket", os.path.join(d, "api.sock"),
              "--export", f"{alpha},name=alpha,rw,nbd,"
                          f"vhost-user-blk={d}/alpha.vu",
              "--export", f"{beta},name=beta,snapshot,nbd"]
    # a bad option: refused before anything opens
    err = start_fails(tmp_path, common + [
        "--export", f"{gamma},name=gamma,ro,bogus=1,nbd"])
    assert "unknown option 'bogus=1'" in err, err
    assert sorted(os.listdir(d)) == before
    # an image that cannot be opened: the snapshot child made for beta
    # and every lock go again
    err = start_fails(tmp_path, common + [
        "--export", f"{d}/missing.raw,name=gamma,ro,format=raw,nbd"])
    assert "missing.raw" in err and "export 'gamma'" in err, err
    assert sorted(os.listdir(d)) == before
    # a socket that cannot be made: the sockets already listening go too
    err = start_fails(tmp_path, common + [
        "--export", f"{gamma},name=gamma,ro,format=raw,"
                    f"vhost-user-blk={d}/no/such/dir/g.vu"])
    assert "export 'gamma'" in err and "g.vu" in err, err
    assert sorted(os.listdir(d)) == before
    # and the images are whole and unlocked: qemu opens them read-write
    for img in (alpha, beta):
        run([need("qemu-img"), "check", img])
    run([need("qemu-io"), "-f", "vmdk", "-c", "write 0 4k", alpha])


def test_one_image_form_is_unchanged(tmp_path):
    """The old form: IMAGE, -o, --export-name; status keeps its members."""
    d = str(tmp_path)
    alpha, _, _ = make_images(d)
    sock = os.path.join(d, "nbd.sock")
    api = os.path.join(d, "api.sock")
    log = open(os.path.join(d, "log"), "w")
    p = subprocess.Popen([tool("pvblk"), "-o", "rw", "--nbd", "unix:" + sock,
                          "--export-name", "disk", "--api-socket", api,
                          alpha], stderr=log)
    try:
        assert wait_path(api, p)
        url = f"nbd+unix:///disk?socket={sock}"
        run([need("qemu-io"), "-f", "raw", "-c", "read -P 0x11 0 1M", url])
        # "" still names the one export
        run([need("qemu-io"), "-r", "-f", "raw", "-c", "read -P 0x11 0 1M",
             f"nbd+unix://?socket={sock}"])
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(api)
            s.sendall(b'{"command": "status"}\n')
            st = json.loads(s.makefile().readline())["return"]
        exp, = st["exports"]
        assert exp["protocol"] == "nbd" and exp["name"] == "disk"
        assert exp["queues"] == 1 and "vrings" not in exp
        assert exp["io"]["read_bytes"] >= 2 * MiB
        assert st["image"] == alpha and st["mode"] == "rw"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    run([need("qemu-img"), "check", alpha])


def test_negotiation_by_name_on_the_wire(daemon):
    """The options by hand: LIST gives every export, INFO and GO and
    EXPORT_NAME pick by name, an unknown name is NBD_REP_ERR_UNKNOWN, and
    meta contexts set for one export are not selected at a GO to another."""
    from test_pvblk_nbd import (Raw, OPT_LIST, OPT_INFO, OPT_GO,
                                OPT_EXPORT_NAME, OPT_STRUCTURED_REPLY,
                                OPT_SET_META, REP_SERVER, REP_ACK, REP_INFO,
                                REP_META, REP_ERR_UNKNOWN)
    d = daemon

    def name_data(name, nreq=0):
        return struct.pack(">I", len(name)) + name + struct.pack(">H", nreq)

    c = Raw(d.nbd)
    c.greet()
    r = c.replies(OPT_LIST)
    assert r[-1][0] == REP_ACK
    names = []
    for typ, data in r[:-1]:
        assert typ == REP_SERVER
        n = struct.unpack(">I", data[:4])[0]
        names.append((data[4:4 + n].decode(), data[4 + n:].decode()))
    assert names == [("alpha", d.alpha), ("beta", d.beta),
                     ("gamma", d.gamma)]
    assert c.replies(OPT_GO, name_data(b"delta"))[-1][0] == REP_ERR_UNKNOWN
    r = c.replies(OPT_INFO, name_data(b"gamma"))
    assert r[-1][0] == REP_ACK
    info = [x for t, x in r if t == REP_INFO and x[:2] == b"\0\0"][0]
    size, flags = struct.unpack(">QH", info[2:12])
    assert size == 32 * MiB and flags & 2  # NBD_FLAG_READ_ONLY
    # contexts set on beta, then GO to alpha: none selected there
    assert c.replies(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
    q = b"base:allocation"
    r = c.replies(OPT_SET_META, struct.pack(">I", 4) + b"beta" +
                  struct.pack(">II", 1, len(q)) + q)
    assert [t for t, _ in r] == [REP_META, REP_ACK]
    r = c.replies(OPT_GO, name_data(b"alpha"))
    assert r[-1][0] == REP_ACK
    info = [x for t, x in r if t == REP_INFO and x[:2] == b"\0\0"][0]
    assert struct.unpack(">Q", info[2:10])[0] == 64 * MiB
    c.request(7, 0, 65536)  # NBD_CMD_BLOCK_STATUS
    magic, fl, typ, cookie, n = struct.unpack(">IHHQI", c.recv(20))
    c.recv(n)
    assert magic == 0x668E33EF and typ & 0x8000, typ  # an error chunk
    c.close()
    # the same on beta itself is served
    c = Raw(d.nbd)
    c.greet()
    assert c.replies(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
    c.replies(OPT_SET_META, struct.pack(">I", 4) + b"beta" +
              struct.pack(">II", 1, len(q)) + q)
    assert c.replies(OPT_GO, name_data(b"beta"))[-1][0] == REP_ACK
    c.request(7, 0, 65536)
    magic, fl, typ, cookie, n = struct.unpack(">IHHQI", c.recv(20))
    c.recv(n)
    assert magic == 0x668E33EF and typ == 5, typ  # BLOCK_STATUS chunk
    c.close()
    # NBD_OPT_EXPORT_NAME picks by name too; an unknown one is hung up on
    c = Raw(d.nbd)
    c.greet()
    c.opt(OPT_EXPORT_NAME, b"gamma")
    size, flags = struct.unpack(">QH", c.recv(10))
    assert size == 32 * MiB and flags & 2
    c.close()
    c = Raw(d.nbd)
    c.greet()
    c.opt(OPT_EXPORT_NAME, b"nope")
    with pytest.raises((EOFError, ConnectionError)):
        c.recv(10)
    c.close()
    d.stop()


def test_sigterm_with_clients_on_every_export(daemon):
    """SIGTERM while clients hold connections to several exports (and one
    is still negotiating on the listener): every export drains, flushes
    and closes, and pvblk exits 0."""
    from test_pvblk_nbd import Raw, OPT_GO, REP_ACK
    d = daemon
    conns = []
    for name in (b"alpha", b"beta", b"gamma"):
        c = Raw(d.nbd)
        c.greet()
        r = c.replies(OPT_GO, struct.pack(">I", len(name)) + name +
                      struct.pack(">H", 0))
        assert r[-1][0] == REP_ACK
        conns.append(c)
    half = Raw(d.nbd)  # greeted, no option yet
    half.greet()
    vu = subprocess.Popen([tool("vu_client"), d.vu_a, str(d.p.pid), "rw",
                           "rand", "4096", "4", "30"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)
    st = d.ok(command="status")
    # the one still negotiating counts on the listener's (first) export
    assert [e["connections"] for e in st["exports"]] == [2, 1, 1], st
    t0 = time.monotonic()
    d.stop()
    assert time.monotonic() - t0 < 20
    vu.kill()
    vu.wait()
    for c in conns + [half]:
        c.close()
    for img in (d.alpha, d.child):
        run([need("qemu-img"), "check", img])
