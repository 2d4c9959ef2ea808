# SPDX-License-Identifier: Apache-2.0
"""pvblk's NBD server, driven by real NBD clients (qemu-img, qemu-io,
nbdinfo, nbdcopy, fio's nbd engine) and by a few hand-made bad clients.

Each test makes its images with qemu-img/qemu-io, starts
`pvblk --nbd unix:SOCK` (or tcp with TLS) in the foreground, and stops it
with SIGTERM, expecting a clean exit.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import need, run, tool

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = \
    1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META = 8, 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 1 << 31
REP_ERR_UNSUP, REP_ERR_POLICY, REP_ERR_INVALID = ERR | 1, ERR | 2, ERR | 3
REP_ERR_TLS_REQD, REP_ERR_UNKNOWN, REP_ERR_TOO_BIG = ERR | 5, ERR | 6, ERR | 9
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
EPERM, EINVAL, ENOSPC, EOVERFLOW = 1, 22, 28, 75


# ---- images -------------------------------------------------------------

def make_image(d, kind, size="64M"):
    """An image of kind sparse|stream|raw|delta with known data; returns
    (path, list of (offset, length, pattern byte) written)."""
    qi = need("qemu-img")
    qio = need("qemu-io")
    data = [(0, 65536, 0x11), (1 << 20, 3 << 20, 0x22), (40 << 20, 4096, 0x33)]
    if kind == "raw":
        p = os.path.join(d, "disk.raw")
        run([qi, "create", "-f", "raw", p, size])
        fmt = "raw"
    else:
        p = os.path.join(d, "disk.vmdk")
        sub = "monolithicSparse" if kind != "stream" else "streamOptimized"
        if kind == "stream":
            src = os.path.join(d, "src.raw")
            run([qi, "create", "-f", "raw", src, size])
            for off, n, pat in data:
                run([qio, "-f", "raw", "-c", f"write -P {pat} {off} {n}", src])
            run([qi, "convert", "-f", "raw", "-O", "vmdk", "-o",
                 "subformat=streamOptimized", src, p])
            os.unlink(src)
            return p, data
        run([qi, "create", "-f", "vmdk", "-o", f"subformat={sub}", p, size])
        fmt = "vmdk"
    for off, n, pat in data:
        run([qio, "-f", fmt, "-c", f"write -P {pat} {off} {n}", p])
    return p, data


def make_chain(d):
    """base.vmdk with data in [0, 1M) and [4M, 5M), child.vmdk over it with
    data in [2M, 3M) and [4M, 5M)."""
    qi, qio = need("qemu-img"), need("qemu-io")
    base = os.path.join(d, "base.vmdk")
    child = os.path.join(d, "child.vmdk")
    run([qi, "create", "-f", "vmdk", base, "16M"])
    run([qio, "-f", "vmdk", "-c", "write -P 1 0 1M", "-c",
         "write -P 1 4M 1M", base])
    # a relative parent name: the engine follows none outside the folder
    run([qi, "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk",
         "child.vmdk"], cwd=d)
    run([qio, "-f", "vmdk", "-c", "write -P 2 2M 1M", "-c",
         "write -P 2 4M 1M", child])
    return base, child


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ---- the server ---------------------------------------------------------

class Pvblk:
    """pvblk in the foreground; ready once its socket accepts."""

    def __init__(self, d, image, *opts, name="disk", sock=None, addr=None,
                 env=None):
        self.sock = sock or os.path.join(d, "nbd.sock")
        self.addr = addr or f"unix:{self.sock}"
        self.name = name
        self.log = os.path.join(d, "pvblk.log")
        args = [tool("pvblk"), *opts, "--nbd", self.addr]
        if name is not None:
            args += ["--export-name", name]
        args.append(image)
        self.logf = open(self.log, "w")
        self.p = subprocess.Popen(args, stdout=self.logf,
                                  stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while not self._ready():
            if self.p.poll() is not None:
                raise AssertionError(f"pvblk exited {self.p.returncode}: "
                                     f"{self.output()}")
            if time.monotonic() > deadline:
                self.p.kill()
                raise AssertionError("pvblk's socket never accepted")
            time.sleep(0.02)

    def _ready(self):
        if self.addr.startswith("tcp:"):
            host, port = self.addr[4:].rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), 1).close()
                return True
            except OSError:
                return False
        return os.path.exists(self.sock)

    @property
    def url(self):
        return f"nbd+unix:///{self.name or ''}?socket={self.sock}"

    def output(self):
        with open(self.log) as f:
            return f.read()

    def stop(self, expect=0):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError("pvblk did not stop on SIGTERM")
        self.logf.close()
        assert rc == expect, f"pvblk exited {rc}: {self.output()}"
        assert not os.path.exists(self.sock), "socket left behind"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            if exc[0] is None:
                self.stop()
            else:
                self.p.kill()
                self.p.wait()
        return False


# ---- a minimal hand-made client, for what real clients never send --------

class Raw:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(path)

    def recv(self, n):
        b = b""
        while len(b) < n:
            k = self.s.recv(n - len(b))
            if not k:
                raise EOFError(f"closed after {len(b)} of {n} bytes")
            b += k
        return b

    def greet(self, cflags=3):
        magic, opt, flags = struct.unpack(">QQH", self.recv(18))
        assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
        assert flags & 1, "fixed newstyle"
        self.s.sendall(struct.pack(">I", cflags))

    def opt(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def rep(self):
        magic, opt, typ, n = struct.unpack(">QIII", self.recv(20))
        assert magic == REPMAGIC
        return opt, typ, self.recv(n)

    def replies(self, opt, data=b""):
        """All replies to one option, up to its ACK or error."""
        self.opt(opt, data)
        out = []
        while True:
            o, typ, d = self.rep()
            assert o == opt
            out.append((typ, d))
            if typ == REP_ACK or typ & ERR:
                return out

    def opt_go(self, name):
        """NBD_OPT_GO for name, acknowledged; keeps the export's size and
        flags, and its maximum block size when the server says it."""
        r = self.replies(OPT_GO, struct.pack(">I", len(name)) + name +
                         struct.pack(">H", 0))
        assert r[-1][0] == REP_ACK, r
        for typ, d in r:
            if typ == REP_INFO and struct.unpack(">H", d[:2])[0] == 0:
                self.size, self.flags = struct.unpack(">QH", d[2:12])
            if typ == REP_INFO and struct.unpack(">H", d[:2])[0] == 3:
                self.max_block = struct.unpack(">III", d[2:14])[2]

    def go(self, name=b"disk", structured=False):
        self.greet()
        if structured:
            assert self.replies(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
        self.opt_go(name)

    def request(self, cmd, off, length, flags=0, cookie=7, payload=b""):
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie,
                                   off, length) + payload)

    def simple(self, datalen=0):
        magic, err, cookie = struct.unpack(">IIQ", self.recv(16))
        assert magic == 0x67446698
        return err, (self.recv(datalen) if not err and datalen else b"")

    def close(self):
        self.s.close()


def served_ok(srv):
    """The server still answers a real client."""
    r = run([need("qemu-img"), "info", "--output=json", srv.url])
    return json.loads(r.stdout)["virtual-size"]


# ---- real clients -------------------------------------------------------

@pytest.mark.parametrize("kind", ["sparse", "stream", "raw"])
def test_qemu_img_reads_match_the_image(tmp_path, kind):
    qi = need("qemu-img")
    img, _ = make_image(str(tmp_path), kind)
    fmt = "raw" if kind == "raw" else "vmdk"
    with Pvblk(str(tmp_path), img) as srv:
        assert served_ok(srv) == 64 << 20
        run([qi, "compare", "-f", fmt, "-F", "raw", img, srv.url])
        out = str(tmp_path / "copy.raw")
        run([qi, "convert", "-f", "raw", "-O", "raw", srv.url, out])
        run([qi, "compare", "-f", fmt, "-F", "raw", img, out])


@pytest.mark.parametrize("kind", ["sparse", "stream", "raw"])
def test_qemu_io_writes_reach_the_image(tmp_path, kind):
    qio = need("qemu-io")
    img, _ = make_image(str(tmp_path), kind)
    fmt = "raw" if kind == "raw" else "vmdk"
    # grains never written: a streamOptimized image takes these too (the
    # engine appends new grains)
    cmds = ["write -P 0x44 8M 64k",
            f"write -P 0x45 {(10 << 20) + 12345} 1000",   # unaligned
            "write -f -P 0x46 20M 4k",                   # FUA
            "write -z 30M 64k"]                          # WRITE_ZEROES
    checks = ["read -P 0x44 8M 64k", f"read -P 0x45 {(10 << 20) + 12345} 1000",
              "read -P 0x46 20M 4k", "read -P 0 30M 64k", "read -P 0x22 3M 1M"]
    if kind != "stream":   # overwrite, zero and trim written data
        cmds += ["write -P 0x47 12345 1000", "write -z 1M 64k",
                 "write -z -u 2M 64k", "discard 40M 4k"]
        checks += ["read -P 0x47 12345 1000", "read -P 0 1M 64k",
                   "read -P 0 2M 64k", "read -P 0 40M 4k"]
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        args = [qio, "-f", "raw"]
        for c in cmds:
            args += ["-c", c]
        r = run(args + [srv.url])
        assert "failed" not in r.stdout, r.stdout
        args = [qio, "-f", "raw"]
        for c in checks:
            args += ["-c", c]
        r = run(args + [srv.url])
        assert "Pattern verification failed" not in r.stdout, r.stdout
        if kind == "stream":
            # a stream's written grain cannot be rewritten: the client
            # gets an error, the log says why, the server goes on
            r = run([qio, "-f", "raw", "-c", "write -P 9 1M 4k", srv.url],
                    check=False)
            assert "Operation not supported" in r.stdout + r.stderr
            served_ok(srv)
    if kind == "stream":
        assert "already written" in srv.output()
        # said at start, before any guest meets it
        assert "is streamOptimized: each grain can be written once" in \
            srv.output().splitlines()[0], srv.output()
    else:
        assert "warning" not in srv.output(), srv.output()
    args = [qio, "-r", "-f", fmt]
    for c in checks:
        args += ["-c", c]
    r = run(args + [img])
    assert "Pattern verification failed" not in r.stdout, r.stdout
    if fmt == "vmdk":
        run([need("qemu-img"), "check", img])


def test_nbdinfo_lists_the_export_and_its_flags(tmp_path):
    nbdinfo = need("nbdinfo")
    img, _ = make_image(str(tmp_path), "sparse")
    with Pvblk(str(tmp_path), img, "-o", "ro") as srv:
        r = run([nbdinfo, "--json", "--list", srv.url])
        info = json.loads(r.stdout)
        (e,) = info["exports"]
        assert e["export-name"] == "disk"
        assert e["description"] == img
        assert e["export-size"] == 64 << 20
        assert e["is_read_only"] is True and e["can_trim"] is False
        assert e["can_flush"] is True and e["can_multi_conn"] is True
        assert e["can_fua"] is False and e["can_zero"] is False
        assert e["block_size_minimum"] == 1
        assert e["block_size_preferred"] == 65536   # the grain
        assert e["block_size_maximum"] == 32 << 20
        assert set(e["contexts"]) == {"base:allocation",
                                      "qemu:allocation-depth"}
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        e = json.loads(run([nbdinfo, "--json", srv.url]).stdout)["exports"][0]
        assert e["is_read_only"] is False
        assert e["can_trim"] and e["can_zero"] and e["can_fua"]


def test_nbdinfo_map_on_a_delta_chain(tmp_path):
    nbdinfo = need("nbdinfo")
    _, child = make_chain(str(tmp_path))
    M = 1 << 20
    with Pvblk(str(tmp_path), child) as srv:
        alloc = json.loads(run([nbdinfo, "--json", "--map",
                                srv.url]).stdout)
        depth = json.loads(run([nbdinfo, "--json",
                                "--map=qemu:allocation-depth",
                                srv.url]).stdout)

    def at(m, off):
        for e in m:
            if e["offset"] <= off < e["offset"] + e["length"]:
                return e["type"]
        raise AssertionError(f"{off} not mapped in {m}")
    # data in either layer is data; elsewhere a hole reading as zeros
    for off in (0, 2 * M, 4 * M, 5 * M - 1):
        assert at(alloc, off) == 0, alloc
    for off in (1 * M, 3 * M, 6 * M, 16 * M - 1):
        assert at(alloc, off) == 3, alloc
    # depth: 1 = child, 2 = base, 0 = nowhere
    assert at(depth, 0) == 2 and at(depth, M - 1) == 2, depth
    assert at(depth, 2 * M) == 1 and at(depth, 4 * M) == 1, depth
    assert at(depth, M) == 0 and at(depth, 8 * M) == 0, depth


def test_nbdcopy_both_directions(tmp_path):
    nbdcopy = need("nbdcopy")
    qi = need("qemu-img")
    img, _ = make_image(str(tmp_path), "sparse")
    out = str(tmp_path / "out.raw")
    src = str(tmp_path / "in.raw")
    with open(src, "wb") as f:
        f.truncate(64 << 20)
        for i in range(0, 64 << 20, 5 << 20):
            f.seek(i)
            f.write(bytes([i >> 20 & 0xFF]) * 70000)
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        run([nbdcopy, srv.url, out])
        # -U: pvblk holds the image for writing, and QEMU's lock bytes
        # (which pvblk takes too) refuse a locking reader meanwhile
        run([qi, "compare", "-U", "-f", "vmdk", "-F", "raw", img, out])
        run([nbdcopy, src, srv.url])
    run([qi, "compare", "-f", "raw", "-F", "vmdk", src, img])
    run([qi, "check", img])


def api_status(path):
    """The control socket's status reply, once the socket exists."""
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "no control socket"
        time.sleep(0.02)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(b'{"command": "status"}\n')
        return json.loads(s.makefile().readline())["return"]


def test_status_counts_bytes_clients_moved(tmp_path):
    """The control socket's status counts, per export, the requests and
    data bytes real clients moved, and errors; connections that ended
    stay counted."""
    qio, nbdcopy = need("qemu-io"), need("nbdcopy")
    img, _ = make_image(str(tmp_path), "raw")
    api = str(tmp_path / "api.sock")
    src = str(tmp_path / "in.raw")
    with open(src, "wb") as f:
        f.write(os.urandom(3 << 20))
    with Pvblk(str(tmp_path), img, "-o", "rw", "--api-socket", api) as srv:
        exp, = api_status(api)["exports"]
        assert exp["protocol"] == "nbd" and exp["queues"] == 1
        assert exp["io"] == {"requests": 0, "read_bytes": 0,
                             "written_bytes": 0, "errors": 0}
        assert "vrings" not in exp
        run([qio, "-f", "raw", "-c", "write -P 0x5a 8M 64k", "-c",
             "write -P 0x5b 9M 512", srv.url])
        io = api_status(api)["exports"][0]["io"]
        assert io["written_bytes"] == 65536 + 512, io
        assert io["requests"] >= 2 and io["errors"] == 0, io
        run([nbdcopy, src, srv.url])
        io = api_status(api)["exports"][0]["io"]
        assert io["written_bytes"] == 65536 + 512 + (3 << 20), io
        read0 = io["read_bytes"]
        run([qio, "-f", "raw", "-c", "read -P 0x5a 8M 64k", srv.url])
        run([nbdcopy, srv.url, str(tmp_path / "out.raw")])
        exp, = api_status(api)["exports"]
        io = exp["io"]
        # nbdcopy may skip holes; the data it read was at least ours
        assert io["read_bytes"] >= read0 + 65536 + 65536 + 512 + (3 << 20)
        assert io["written_bytes"] == 65536 + 512 + (3 << 20), io
        assert exp["connections"] == 0 and io["errors"] == 0, exp
        # a live connection's error shows at once, and stays when it goes
        c = Raw(srv.sock)
        c.go()
        c.request(CMD_READ, c.size - 10, 20)                # past the end
        assert c.simple()[0] == EINVAL
        exp, = api_status(api)["exports"]
        assert exp["connections"] == 1 and exp["io"]["errors"] == 1, exp
        c.request(CMD_DISC, 0, 0)
        c.close()
        requests = exp["io"]["requests"]
        deadline = time.monotonic() + 10
        while api_status(api)["exports"][0]["connections"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        io = api_status(api)["exports"][0]["io"]
        assert io["errors"] == 1 and io["requests"] == requests, io
        assert io["written_bytes"] == 65536 + 512 + (3 << 20), io


def test_fio_nbd_engine_verifies(tmp_path):
    fio = need("fio")
    img, _ = make_image(str(tmp_path), "sparse")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        r = run([fio, "--name=v", "--ioengine=nbd", f"--uri={srv.url}",
                 "--rw=randwrite", "--bs=4k", "--size=16M", "--iodepth=16",
                 "--verify=crc32c", "--do_verify=1", "--numjobs=1",
                 "--verify_state_save=0", "--output-format=json"],
                check=False, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr + r.stdout
        job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
        assert job["error"] == 0
        assert job["write"]["io_bytes"] == 16 << 20
        assert job["read"]["io_bytes"] == 16 << 20   # the verify pass
    run([need("qemu-img"), "check", img])


# ---- modes, locks, TLS ---------------------------------------------------

def test_read_only_refuses_writes(tmp_path):
    img, _ = make_image(str(tmp_path), "sparse")
    before = sha(img)
    with Pvblk(str(tmp_path), img, "-o", "ro") as srv:
        r = run([need("qemu-io"), "-f", "raw", "-c", "write -P 9 0 4k",
                 srv.url], check=False)
        assert r.returncode != 0 or "failed" in r.stdout + r.stderr
        c = Raw(srv.sock)
        c.go()
        assert c.flags & 2, "READ_ONLY flag"
        c.request(CMD_WRITE, 0, 4096, payload=b"x" * 4096)
        assert c.simple()[0] == EPERM
        c.request(CMD_READ, 0, 4096)
        err, d = c.simple(4096)
        assert err == 0 and d == b"\x11" * 4096
        c.close()
    assert sha(img) == before


def test_stream_served_read_only_or_snapshot_is_not_warned_about(tmp_path):
    img, _ = make_image(str(tmp_path), "stream")
    for opts in (["-o", "ro"], ["-o", f"snapshot={tmp_path / 'c.vmdk'}"]):
        with Pvblk(str(tmp_path), img, *opts) as srv:
            served_ok(srv)
        assert "warning" not in srv.output(), srv.output()


def test_snapshot_leaves_the_base_untouched(tmp_path):
    qio = need("qemu-io")
    img, _ = make_image(str(tmp_path), "sparse")
    child = str(tmp_path / "child.vmdk")
    before = sha(img)
    with Pvblk(str(tmp_path), img, "-o", f"snapshot={child}") as srv:
        run([qio, "-f", "raw", "-c", "write -P 0x55 0 64k", srv.url])
        run([qio, "-f", "raw", "-c", "read -P 0x22 1M 1M", srv.url])
    assert sha(img) == before
    r = run([qio, "-r", "-f", "vmdk", "-c", "read -P 0x55 0 64k", "-c",
             "read -P 0x22 1M 1M", child])
    assert "Pattern verification failed" not in r.stdout


def test_failed_start_leaves_no_snapshot_child(tmp_path):
    """-o snapshot makes its child before the servers start; when a server
    cannot start (here, its socket's folder does not exist) the child goes
    too, so the same command can simply be run again."""
    img, _ = make_image(str(tmp_path), "sparse")
    child = tmp_path / "child.vmdk"
    before = sha(img)
    r = run([tool("pvblk"), "-o", f"snapshot={child}", "--nbd",
             f"unix:{tmp_path}/missing/nbd.sock", img], check=False)
    assert r.returncode == 1 and "missing/nbd.sock" in r.stderr
    assert not child.exists()
    assert sha(img) == before


def test_second_writer_is_refused_naming_the_image(tmp_path):
    img, _ = make_image(str(tmp_path), "sparse")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        r = run([tool("pvblk"), "-o", "rw", "--nbd",
                 f"unix:{tmp_path}/other.sock", img], check=False)
        assert r.returncode == 1
        assert "disk.vmdk" in r.stderr and "in use" in r.stderr, r.stderr
        assert not os.path.exists(tmp_path / "other.sock")
        served_ok(srv)


def test_tcp_without_tls_needs_loopback(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    r = run([tool("pvblk"), "--nbd", "tcp:0.0.0.0:0", img], check=False)
    assert r.returncode == 1
    assert "--tls-creds" in r.stderr and "127.0.0.1" in r.stderr, r.stderr


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_tls_creds(d):
    """A CA and a server certificate for 127.0.0.1 in QEMU's layout."""
    certtool = need("certtool")
    srv, cli = os.path.join(d, "srv"), os.path.join(d, "cli")
    os.makedirs(srv)
    os.makedirs(cli)
    ca_key, ca = os.path.join(srv, "ca-key.pem"), os.path.join(srv, "ca-cert.pem")
    with open(os.path.join(d, "ca.info"), "w") as f:
        f.write('cn = ovk test CA\nca\ncert_signing_key\nexpiration_days = 2\n')
    with open(os.path.join(d, "srv.info"), "w") as f:
        f.write('organization = ovk\ncn = localhost\nip_address = 127.0.0.1\n'
                'dns_name = localhost\ntls_www_server\nencryption_key\n'
                'signing_key\nexpiration_days = 2\n')
    run([certtool, "--generate-privkey", "--outfile", ca_key])
    run([certtool, "--generate-self-signed", "--load-privkey", ca_key,
         "--template", os.path.join(d, "ca.info"), "--outfile", ca])
    key = os.path.join(srv, "server-key.pem")
    run([certtool, "--generate-privkey", "--outfile", key])
    run([certtool, "--generate-certificate", "--load-privkey", key,
         "--load-ca-certificate", ca, "--load-ca-privkey", ca_key,
         "--template", os.path.join(d, "srv.info"), "--outfile",
         os.path.join(srv, "server-cert.pem")])
    with open(ca) as a, open(os.path.join(cli, "ca-cert.pem"), "w") as b:
        b.write(a.read())
    return srv, cli


def test_tls_with_qemu_img(tmp_path):
    qi = need("qemu-img")
    img, _ = make_image(str(tmp_path), "sparse")
    srvdir, clidir = make_tls_creds(str(tmp_path))
    port = free_port()
    with Pvblk(str(tmp_path), img, "-o", "rw", "--tls-creds", srvdir,
               addr=f"tcp:127.0.0.1:{port}") as srv:
        obj = f"tls-creds-x509,id=tls0,endpoint=client,dir={clidir}"
        opts = (f"driver=nbd,host=127.0.0.1,port={port},export=disk,"
                f"tls-creds=tls0")
        r = run([qi, "info", "--object", obj, "--image-opts", opts])
        assert "67108864" in r.stdout
        out = str(tmp_path / "copy.raw")
        run([qi, "convert", "--object", obj, "--image-opts", opts,
             "-O", "raw", out])
        # -U: the image is held for writing by pvblk (QEMU's lock bytes)
        run([qi, "compare", "-U", "-f", "vmdk", "-F", "raw", img, out])
        run([need("qemu-io"), "--object", obj, "--image-opts", opts,
             "-c", "write -P 0x77 5M 64k"])
        # a client without TLS is told to use it, and gets nothing
        r = run([qi, "info", f"nbd://127.0.0.1:{port}/disk"], check=False)
        assert r.returncode != 0
        assert "TLS" in r.stderr, r.stderr
        srv.stop()
    r = run([need("qemu-io"), "-r", "-f", "vmdk", "-c",
             "read -P 0x77 5M 64k", img])
    assert "Pattern verification failed" not in r.stdout


def make_psk(d, user):
    """A key file for user as psktool writes it, in a folder of its own
    under QEMU's name for it (keys.psk)."""
    os.makedirs(d)
    keys = os.path.join(d, "keys.psk")
    run([need("psktool"), "-u", user, "-p", keys])
    return keys


def test_tls_psk_with_nbdinfo_and_qemu(tmp_path):
    """--tls-psk: libnbd's and QEMU's PSK clients read the export; a wrong
    key, an unknown user and a client without TLS are refused while the
    server goes on serving."""
    nbdinfo, qi, qio = need("nbdinfo"), need("qemu-img"), need("qemu-io")
    img, data = make_image(str(tmp_path), "raw")
    keys = make_psk(str(tmp_path / "psk"), "alice")
    wrong = make_psk(str(tmp_path / "wrong"), "alice")   # another key
    bob = make_psk(str(tmp_path / "bob"), "bob")
    with Pvblk(str(tmp_path), img, "-o", "rw", "--tls-psk", keys) as srv:
        url = f"nbds+unix://alice@/disk?socket={srv.sock}&tls-psk-file="
        r = run([nbdinfo, "--json", url + keys])
        info = json.loads(r.stdout)
        e, = info["exports"]
        assert e["export-size"] == 64 << 20 and info["TLS"] is True
        # the data, through QEMU's tls-creds-psk (keys.psk in dir)
        obj = (f"tls-creds-psk,id=tls0,endpoint=client,dir="
               f"{os.path.dirname(keys)},username=alice")
        opts = f"driver=nbd,path={srv.sock},export=disk,tls-creds=tls0"
        cmds = []
        for off, n, pat in data:
            cmds += ["-c", f"read -P {pat} {off} {n}"]
        r = run([qio, "--object", obj, "--image-opts", opts,
                 "-c", "write -P 0x66 7M 64k", *cmds,
                 "-c", "read -P 0x66 7M 64k"])
        assert "verification failed" not in r.stdout, r.stdout
        # wrong key, unknown user: the handshake fails, the client says so
        for f, user in ((wrong, "alice"), (bob, "bob")):
            r = run([nbdinfo, f"nbds+unix://{user}@/disk?socket={srv.sock}"
                     f"&tls-psk-file={f}"], check=False)
            assert r.returncode != 0
            assert "gnutls_handshake" in r.stderr, r.stderr
        bad = (f"tls-creds-psk,id=tls0,endpoint=client,dir="
               f"{os.path.dirname(wrong)},username=alice")
        r = run([qi, "info", "--object", bad, "--image-opts", opts],
                check=False)
        assert r.returncode != 0 and "TLS handshake failed" in r.stderr
        # no TLS at all: told it is required
        r = run([qi, "info", srv.url], check=False)
        assert r.returncode != 0 and "TLS" in r.stderr, r.stderr
        r = run([nbdinfo, url + keys])
        assert "export-size: 67108864" in r.stdout
        assert srv.output().count("TLS handshake failed") == 3, srv.output()
        assert "--tls-psk" in srv.output()
    r = run([qio, "-r", "-f", "raw", "-c", "read -P 0x66 7M 64k", img])
    assert "verification failed" not in r.stdout


def test_tls_psk_over_tcp_on_any_address(tmp_path):
    """With --tls-psk a TCP socket may listen beyond loopback (as with
    --tls-creds); a PSK client reads over it."""
    nbdinfo = need("nbdinfo")
    img, _ = make_image(str(tmp_path), "raw")
    keys = make_psk(str(tmp_path / "psk"), "alice")
    port = free_port()
    with Pvblk(str(tmp_path), img, "--tls-psk", keys,
               addr=f"tcp:0.0.0.0:{port}") as srv:
        r = run([nbdinfo, "--size", f"nbds://alice@127.0.0.1:{port}/disk"
                 f"?tls-psk-file={keys}"])
        assert r.stdout.strip() == str(64 << 20)
        r = run([need("qemu-img"), "info", f"nbd://127.0.0.1:{port}/disk"],
                check=False)
        assert r.returncode != 0 and "TLS" in r.stderr, r.stderr
        srv.p.send_signal(signal.SIGTERM)
        assert srv.p.wait(60) == 0


def test_tls_psk_file_errors_at_start(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    sock = str(tmp_path / "s.sock")
    bad = tmp_path / "bad.psk"
    for text, want in (("alice\n", "line 1: expected USERNAME:HEXKEY"),
                       ("alice:abc\n", "line 1: the key after 'alice:'"),
                       ("\n", "no USERNAME:HEXKEY line")):
        bad.write_text(text)
        r = run([tool("pvblk"), "--nbd", f"unix:{sock}", "--tls-psk",
                 str(bad), img], check=False)
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert str(bad) in r.stderr
    r = run([tool("pvblk"), "--nbd", f"unix:{sock}", "--tls-psk",
             str(tmp_path / "none.psk"), img], check=False)
    assert r.returncode == 1 and "No such file" in r.stderr, r.stderr
    keys = make_psk(str(tmp_path / "psk"), "alice")
    r = run([tool("pvblk"), "--nbd", f"unix:{sock}", "--tls-psk", keys,
             "--tls-creds", str(tmp_path), img], check=False)
    assert r.returncode == 1 and "not both" in r.stderr, r.stderr
    assert not os.path.exists(sock)


# ---- bad clients ---------------------------------------------------------

def test_option_errors_then_go(tmp_path):
    img, _ = make_image(str(tmp_path), "sparse")
    with Pvblk(str(tmp_path), img) as srv:
        c = Raw(srv.sock)
        c.greet()
        assert c.replies(99)[-1][0] == REP_ERR_UNSUP
        assert c.replies(OPT_LIST, b"junk")[-1][0] == REP_ERR_INVALID
        assert c.replies(OPT_STARTTLS)[-1][0] == REP_ERR_POLICY
        # a name length pointing past the data
        assert c.replies(OPT_INFO, struct.pack(">I", 500) + b"ab"
                         )[-1][0] == REP_ERR_INVALID
        assert c.replies(OPT_INFO, struct.pack(">I", 4) + b"nope" +
                         struct.pack(">H", 0))[-1][0] == REP_ERR_UNKNOWN
        q = b"base:allocation"
        meta = struct.pack(">I", 4) + b"disk" + struct.pack(">II", 1,
                                                              len(q)) + q
        assert c.replies(OPT_SET_META, meta)[-1][0] == REP_ERR_INVALID
        assert c.replies(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
        r = c.replies(OPT_SET_META, meta)
        assert [t for t, _ in r] == [REP_META, REP_ACK]
        assert r[0][1][4:] == q
        # every qemu: context through its namespace
        qq = b"qemu:"
        r = c.replies(OPT_LIST_META, struct.pack(">I", 4) + b"disk" +
                      struct.pack(">II", 1, len(qq)) + qq)
        assert [d[4:] for t, d in r if t == REP_META] == \
            [b"qemu:allocation-depth"]
        assert c.replies(OPT_GO, b"\0" * 100000)[-1][0] == REP_ERR_TOO_BIG
        r = c.replies(OPT_LIST)
        assert r[0][0] == REP_SERVER and r[0][1][4:8] == b"disk"
        c.opt(OPT_GO, struct.pack(">I", 4) + b"disk" + struct.pack(">H", 0))
        while True:
            _, typ, _ = c.rep()
            if typ == REP_ACK:
                break
        c.request(CMD_READ, 1 << 20, 4096, flags=4)   # DF
        magic, flags, typ, cookie, n = struct.unpack(">IHHQI", c.recv(20))
        assert (magic, flags, typ, n) == (0x668E33EF, 1, 1, 8 + 4096)
        assert c.recv(n)[8:] == b"\x22" * 4096
        # a read over data and unallocated grains: data and hole chunks
        c.request(CMD_READ, 0, 1 << 20)
        chunks = []
        while True:
            magic, flags, typ, cookie, n = struct.unpack(">IHHQI",
                                                         c.recv(20))
            body = c.recv(n)
            chunks.append((typ, struct.unpack(">Q", body[:8])[0],
                           n - 8 if typ == 1 else
                           struct.unpack(">I", body[8:12])[0]))
            if flags & 1:
                break
        assert chunks == [(1, 0, 65536), (2, 65536, (1 << 20) - 65536)]
        c.request(CMD_READ, 0, 0)       # zero length: one empty final chunk
        assert struct.unpack(">IHHQI", c.recv(20)) == (0x668E33EF, 1, 0, 7, 0)
        c.close()
        served_ok(srv)


def test_garbage_handshakes_are_dropped(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    with Pvblk(str(tmp_path), img) as srv:
        for junk in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(300),
                     b"\0\0\0\1" + os.urandom(64), b"\0\0\0\3"):
            c = Raw(srv.sock)
            c.recv(18)
            c.s.sendall(junk)
            c.s.shutdown(socket.SHUT_WR)
            rest = b""
            while True:
                k = c.s.recv(4096)    # the server closes: EOF, no hang
                if not k:
                    break
                rest += k
            c.close()
        # an export name that does not exist: dropped without an answer
        c = Raw(srv.sock)
        c.greet()
        c.opt(OPT_EXPORT_NAME, b"nope")
        assert c.s.recv(10) == b""
        c.close()
        assert served_ok(srv) == 64 << 20
    assert "protocol violation" in srv.output()


def test_bad_requests_get_errors_and_the_data_survives(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    qio = need("qemu-io")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        c = Raw(srv.sock)
        c.go()
        size = c.size
        c.request(CMD_WRITE, 3, 5, payload=b"ABCDE")        # misaligned
        assert c.simple()[0] == 0
        c.request(CMD_READ, 1, 10)
        assert c.simple(10) == (0, b"\x11\x11ABCDE\x11\x11\x11")
        c.request(CMD_READ, size - 10, 20)                  # past the end
        assert c.simple()[0] == EINVAL
        c.request(CMD_WRITE, size - 2, 4, payload=b"wxyz")
        assert c.simple()[0] == ENOSPC
        c.request(CMD_READ, 0, 64 << 20)                    # too large
        assert c.simple()[0] == EINVAL
        c.request(CMD_READ, 2 ** 64 - 4096, 8192)           # wraps around
        assert c.simple()[0] == EINVAL
        c.request(42, 0, 0)                                 # unknown
        assert c.simple()[0] == EINVAL
        c.request(CMD_READ, 0, 4096, flags=1 << 9)          # unknown flag
        assert c.simple()[0] == EINVAL
        c.request(CMD_READ, 0, 4096, flags=4)               # DF, simple
        assert c.simple()[0] == EINVAL
        c.request(CMD_FLUSH, 0, 0)
        assert c.simple()[0] == 0
        # leave in the middle of a write's payload
        c.request(CMD_WRITE, 1 << 20, 1 << 20, payload=b"Z" * 5000)
        c.close()
        # a write larger than the maximum cannot be skipped: dropped
        c = Raw(srv.sock)
        c.go()
        c.request(CMD_WRITE, 0, 64 << 20)
        assert c.s.recv(16) == b""
        c.close()
        r = run([qio, "-f", "raw", "-c", "read -P 0x22 1M 3M", "-c",
                 "read -P 0x11 8 56", srv.url])
        assert "Pattern verification failed" not in r.stdout
    with open(img, "rb") as f:
        assert f.read(10) == b"\x11\x11\x11ABCDE\x11\x11"


def test_a_client_that_never_reads_blocks_only_itself(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    with Pvblk(str(tmp_path), img) as srv:
        c = Raw(srv.sock)
        c.go()
        c.s.setblocking(False)
        hdr = struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ, 1, 0, 32 << 20)
        for _ in range(64):        # 2 GiB of replies nobody reads
            try:
                c.s.send(hdr)
            except BlockingIOError:
                break
        served_ok(srv)
        run([need("qemu-io"), "-r", "-f", "raw", "-c", "read -P 0x22 1M 1M",
             srv.url])
        srv.stop()                 # and it does not hold up SIGTERM
        c.close()


def test_200_idle_connections(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    with Pvblk(str(tmp_path), img) as srv:
        idle = []
        for i in range(200):
            c = Raw(srv.sock)
            if i % 2:
                c.greet()          # half of them stop in the options
            idle.append(c)
        assert served_ok(srv) == 64 << 20
        run([need("qemu-io"), "-r", "-f", "raw", "-c", "read -P 0x11 0 64k",
             srv.url])
        srv.stop()
        for c in idle:
            c.close()


def test_kill9_keeps_every_fua_acknowledged_write(tmp_path):
    qio = need("qemu-io")
    img, _ = make_image(str(tmp_path), "sparse")
    srv = Pvblk(str(tmp_path), img, "-o", "rw")
    n = 400
    cmds = []
    for i in range(n):
        cmds += ["-c", f"write -f -P {i % 250 + 1} {i * 69632} 4096"]
    cli = subprocess.Popen(["stdbuf", "-oL", qio, "-f", "raw", *cmds,
                            srv.url], stdout=subprocess.PIPE, text=True)
    acked = 0
    for line in cli.stdout:
        if line.startswith("wrote "):
            acked += 1
            if acked == 40:
                srv.p.kill()       # SIGKILL while writes are in flight
                break
    srv.p.wait()
    cli.stdout.close()
    cli.wait()
    srv.logf.close()
    assert acked == 40
    checks = []
    for i in range(acked):
        checks += ["-c", f"read -P {i % 250 + 1} {i * 69632} 4096"]
    r = run([qio, "-r", "-f", "vmdk", *checks, img])
    assert "Pattern verification failed" not in r.stdout, r.stdout
    run([need("qemu-img"), "check", img])


CMD_WRITE_ZEROES = 6
FLAG_FUA, FLAG_NO_HOLE, FLAG_FAST_ZERO = 1, 2, 16
ENOTSUP = 95


@pytest.mark.parametrize("kind", ["sparse", "raw"])
def test_write_zeroes_flags(tmp_path, kind):
    """The flags go to the engine: FAST_ZERO on data is done (a VMDK grain
    or a raw file zeroed in place), FAST_ZERO with NO_HOLE over a VMDK's
    unallocated grains is refused with ENOTSUP (it would write zero bytes)
    and leaves the data alone; NO_HOLE leaves the range allocated."""
    nbdinfo = need("nbdinfo")
    img, _ = make_image(str(tmp_path), kind)
    blocks0 = os.stat(img).st_blocks * 512
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        c = Raw(srv.sock)
        c.go()
        assert c.flags & (1 << 11), "SEND_FAST_ZERO"
        c.request(CMD_WRITE_ZEROES, 1 << 20, 65536, flags=FLAG_FAST_ZERO)
        assert c.simple()[0] == 0
        c.request(CMD_READ, 1 << 20, 65536 + 4096)
        assert c.simple(65536 + 4096) == (0, bytes(65536) + b"\x22" * 4096)
        c.request(CMD_WRITE_ZEROES, 48 << 20, 1 << 20,
                  flags=FLAG_NO_HOLE | FLAG_FAST_ZERO)
        assert c.simple()[0] == (ENOTSUP if kind == "sparse" else 0)
        c.request(CMD_WRITE_ZEROES, 48 << 20, 1 << 20,
                  flags=FLAG_NO_HOLE | FLAG_FUA)
        assert c.simple()[0] == 0
        c.request(CMD_READ, 48 << 20, 4096)
        assert c.simple(4096) == (0, bytes(4096))
        c.close()
        if kind == "raw":
            # fallocate(ZERO_RANGE): blocks reserved (unwritten extents,
            # which SEEK_DATA still calls a hole)
            assert os.stat(img).st_blocks * 512 >= blocks0 + (1 << 20)
        else:
            m = json.loads(run([nbdinfo, "--json", "--map", srv.url]).stdout)
            at = [e for e in m
                  if e["offset"] <= 48 << 20 < e["offset"] + e["length"]]
            assert at and at[0]["type"] & 1 == 0, m   # not a hole
    assert "FAST_ZERO" not in srv.output()    # a refusal is not logged
    r = run([need("qemu-io"), "-r", "-f", "raw" if kind == "raw" else "vmdk",
             "-c", "read -P 0 1M 64k", "-c", "read -P 0x22 1088k 2496k",
             img])
    assert "Pattern verification failed" not in r.stdout


def test_multi_conn_writes_are_visible_to_other_connections(tmp_path):
    img, _ = make_image(str(tmp_path), "sparse")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        a, b = Raw(srv.sock), Raw(srv.sock)
        a.go()
        b.go()
        assert a.flags & (1 << 8), "CAN_MULTI_CONN"
        a.request(CMD_WRITE, 5 << 20, 8192, payload=b"\x5a" * 8192)
        assert a.simple()[0] == 0
        b.request(CMD_FLUSH, 0, 0)
        assert b.simple()[0] == 0
        b.request(CMD_READ, 5 << 20, 8192)
        assert b.simple(8192) == (0, b"\x5a" * 8192)
        a.close()
        b.close()


def _dirty_ranges(url, bitmap):
    """(offset, length) of the dirty extents nbdinfo reports for a bitmap."""
    r = run([need("nbdinfo"), "--json", f"--map=qemu:dirty-bitmap:{bitmap}",
             url])
    return [(e["offset"], e["length"]) for e in json.loads(r.stdout)
            if e["type"] & 1]


@pytest.mark.parametrize("kind", ["sparse", "raw"])
def test_incremental_pull_backup_with_existing_tools(tmp_path, kind):
    """Checkpoints (vmdk checkpoint) appear as qemu:dirty-bitmap:NAME; a
    full backup, then an incremental one that reads only the changed
    blocks (nbdinfo --map for the list, qemu-img dd for the bytes), restore
    the disk exactly."""
    qi, qio = need("qemu-img"), need("qemu-io")
    img, _ = make_image(str(tmp_path), kind)
    vmdk = tool("vmdk")
    run([vmdk, "checkpoint", "create", img, "full1"])
    assert run([vmdk, "checkpoint", "list", img]).stdout == "full1\n"
    writes = [(3 << 20, 65536, 0x44), ((20 << 20) + 4096, 4096, 0x55),
              ((50 << 20) - 512, 1024, 0x66)]
    full = str(tmp_path / "full.raw")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        # the checkpoint is listed as a context, after the fixed ones
        info = json.loads(run([need("nbdinfo"), "--json", srv.url]).stdout)
        assert info["exports"][0]["contexts"] == [
            "base:allocation", "qemu:allocation-depth",
            "qemu:dirty-bitmap:full1"]
        run([need("nbdcopy"), srv.url, full])       # the full backup
        assert _dirty_ranges(srv.url, "full1") == []
        for off, ln, pat in writes:
            run([qio, "-f", "raw", "-c", f"write -P {pat} {off} {ln}",
                 srv.url])
        dirty = _dirty_ranges(srv.url, "full1")
        # every write is covered, at 64 KiB granularity, and nothing else
        for off, ln, _ in writes:
            assert any(d <= off and off + ln <= d + n for d, n in dirty), \
                (off, ln, dirty)
        assert sum(n for _, n in dirty) <= 4 * 65536, dirty
        # the incremental backup: only the dirty extents are read, through
        # nbdfuse (libnbd's) and dd
        restored = str(tmp_path / "restored.raw")
        shutil.copy(full, restored)
        mnt, pidfile = tmp_path / "nbdmnt", tmp_path / "nbdfuse.pid"
        mnt.mkdir()
        fuse = subprocess.Popen([need("nbdfuse"), "-r", "-P", str(pidfile),
                                 f"{mnt}/disk", srv.url])
        try:
            for _ in range(200):
                if pidfile.exists() or fuse.poll() is not None:
                    break
                time.sleep(0.05)
            assert pidfile.exists(), "nbdfuse did not start"
            for d, n in dirty:
                assert d % 65536 == 0 and n % 65536 == 0, dirty
                run(["dd", f"if={mnt}/disk", f"of={restored}", "bs=65536",
                     f"skip={d // 65536}", f"seek={d // 65536}",
                     f"count={n // 65536}", "conv=notrunc", "status=none"])
        finally:
            run(["fusermount3", "-u", mnt], check=False)
            fuse.wait(timeout=20)
    run([qi, "compare", "-f", "raw", restored, img])
    # the change record survives the server: reopened, it says the same
    changed = run([vmdk, "checkpoint", "changed", "--output=json", img,
                   "full1"]).stdout
    assert [(e["offset"], e["length"]) for e in json.loads(changed)] == dirty
    run([vmdk, "checkpoint", "delete", img, "full1"])
    assert run([vmdk, "checkpoint", "list", img]).stdout == ""


CMD_BLOCK_STATUS = 7


def test_block_status_pipelined_with_reads(tmp_path):
    """Block status runs off the connection's thread: pipelined with reads
    on one connection, every request gets its whole reply (matched by
    cookie), and a client that leaves with block status in flight leaves a
    server that stops cleanly."""
    img, _ = make_image(str(tmp_path), "sparse")
    ctxs = [b"base:allocation", b"qemu:allocation-depth"]
    with Pvblk(str(tmp_path), img) as srv:
        for leave_early in (False, True):
            c = Raw(srv.sock)
            c.greet()
            assert c.replies(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
            meta = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 2)
            for q in ctxs:
                meta += struct.pack(">I", len(q)) + q
            r = c.replies(OPT_SET_META, meta)
            ids = {d[4:]: struct.unpack(">I", d[:4])[0]
                   for t, d in r if t == REP_META}
            c.opt(OPT_GO, struct.pack(">I", 4) + b"disk" +
                  struct.pack(">H", 0))
            while c.rep()[1] != REP_ACK:
                pass
            n = 40
            reqs = b""
            for i in range(n):
                if i % 2:
                    reqs += struct.pack(">IHHQQI", 0x25609513, 0,
                                        CMD_BLOCK_STATUS, 1000 + i, 0,
                                        48 << 20)
                else:
                    reqs += struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ,
                                        1000 + i, 40 << 20, 4096)
            c.s.sendall(reqs)
            if leave_early:
                c.close()
                continue
            done, status = set(), {}
            while len(done) < n:
                magic, flags, typ, cookie, ln = struct.unpack(
                    ">IHHQI", c.recv(20))
                assert magic == 0x668E33EF
                body = c.recv(ln)
                i = cookie - 1000
                if i % 2 == 0:
                    assert typ == 1 and body[8:] == b"\x33" * 4096
                else:
                    assert typ == 5, (typ, body)     # BLOCK_STATUS
                    cid, = struct.unpack(">I", body[:4])
                    ext = [struct.unpack(">II", body[k:k + 8])
                           for k in range(4, len(body), 8)]
                    status.setdefault(i, {})[cid] = ext
                if flags & 1:
                    done.add(i)
            alloc = ids[b"base:allocation"]
            for i, per in status.items():
                assert set(per) == set(ids.values())
                ext = per[alloc]
                assert sum(k for k, _ in ext) == 48 << 20
                assert ext[0] == (65536, 0)           # data at 0
                assert ext[1][1] == 3                 # then a hole
            c.close()
        served_ok(srv)
