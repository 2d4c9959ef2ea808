# SPDX-License-Identifier: Apache-2.0
"""pvblk's NBD server with extended headers (NBD_OPT_EXTENDED_HEADERS:
32-byte request and reply headers, 64-bit lengths).

No client installed here speaks extended headers: Debian 12 has libnbd
1.14 (nbdinfo, nbdcopy, nbdsh; extended headers came in libnbd 1.18) and
QEMU 7.2 (they came in 8.2). So the extended side is driven by the small
byte-for-byte client below, written from the NBD protocol document, and
every result is checked with real clients (qemu-io, qemu-img, nbdinfo,
nbdcopy) that use the compact headers, which must keep working unchanged.
"""
import json
import os
import socket
import ssl
import struct

import pytest

from conftest import need, run
from test_pvblk_nbd import Pvblk, Raw, free_port, make_image, make_tls_creds

OPT_STARTTLS, OPT_GO, OPT_STRUCTURED_REPLY, OPT_SET_META = 5, 7, 8, 10
OPT_EXPORT_NAME, OPT_EXTENDED_HEADERS = 1, 11
REP_ACK, REP_INFO, REP_META = 1, 3, 4
ERR = 1 << 31
REP_ERR_INVALID, REP_ERR_TLS_REQD = ERR | 3, ERR | 5
REP_ERR_EXT_HEADER_REQD = ERR | 10
REQ_MAGIC, EXT_REQ_MAGIC = 0x25609513, 0x21E41C71
EXT_REPLY_MAGIC = 0x6E8A278C
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 5, 6, 7
FLAG_FUA, FLAG_NO_HOLE, FLAG_DF, FLAG_REQ_ONE = 1, 2, 4, 8
FLAG_PAYLOAD_LEN = 1 << 5
T_NONE, T_DATA, T_HOLE, T_BS, T_BS_EXT = 0, 1, 2, 5, 6
T_ERROR = (1 << 15) + 1
DONE = 1
EINVAL, ENOSPC, EOVERFLOW, EPERM = 22, 28, 75, 1
STATE_HOLE, STATE_ZERO = 1, 2
K, M, G = 1 << 10, 1 << 20, 1 << 30


class Ext(Raw):
    """An NBD client with extended headers, byte for byte."""

    def negotiate(self, meta=(b"base:allocation",), name=b"disk",
                  greet=True):
        if greet:
            self.greet()
        assert self.replies(OPT_EXTENDED_HEADERS)[-1][0] == REP_ACK
        if meta:
            d = struct.pack(">I", len(name)) + name + \
                struct.pack(">I", len(meta))
            for q in meta:
                d += struct.pack(">I", len(q)) + q
            r = self.replies(OPT_SET_META, d)
            assert r[-1][0] == REP_ACK, r
            self.ctx = {d[4:]: struct.unpack(">I", d[:4])[0]
                        for t, d in r if t == REP_META}
        self.opt_go(name)

    def xreq(self, cmd, off, length, flags=0, cookie=7, payload=b""):
        self.s.sendall(struct.pack(">IHHQQQ", EXT_REQ_MAGIC, flags, cmd,
                                   cookie, off, length) + payload)

    def chunk(self):
        """One extended reply chunk: (flags, type, cookie, offset,
        payload)."""
        magic, fl, typ, cookie, off, n = struct.unpack(">IHHQQQ",
                                                       self.recv(32))
        assert magic == EXT_REPLY_MAGIC, hex(magic)
        assert n < 64 * M, n
        return fl, typ, cookie, off, self.recv(n)

    def reply(self, cookie=7, off=None):
        """Every chunk of one reply, up to DONE; each echoes the cookie
        and the request's offset."""
        out = []
        while True:
            fl, typ, ck, o, d = self.chunk()
            assert ck == cookie
            if off is not None:
                assert o == off, (o, off)
            out.append((typ, d))
            if fl & DONE:
                return out

    def status(self, cmd, off, length, flags=0, payload=b""):
        """The error of a command answered with one chunk (0: NONE)."""
        self.xreq(cmd, off, length, flags, payload=payload)
        ((typ, d),) = self.reply(off=off)
        if typ == T_NONE:
            assert d == b""
            return 0
        assert typ == T_ERROR, typ
        return struct.unpack(">I", d[:4])[0]

    def read(self, off, length, flags=0):
        """The bytes of a READ rebuilt from its data and hole chunks, or
        the error number."""
        self.xreq(CMD_READ, off, length, flags)
        buf = bytearray(length)
        seen = 0
        for typ, d in self.reply(off=off):
            if typ == T_ERROR:
                return struct.unpack(">I", d[:4])[0]
            if typ == T_DATA:
                o = struct.unpack(">Q", d[:8])[0]
                buf[o - off:o - off + len(d) - 8] = d[8:]
                seen += len(d) - 8
            elif typ == T_HOLE:
                o, n = struct.unpack(">QI", d)
                seen += n   # buf is zeros already
            else:
                assert typ == T_NONE and length == 0, typ
        assert seen == length
        return bytes(buf)

    def write(self, off, data, flags=0):
        return self.status(CMD_WRITE, off, len(data),
                           flags | FLAG_PAYLOAD_LEN, data)

    def block_status(self, off, length, flags=0):
        """{context id: [(length, flags)]} from BLOCK_STATUS_EXT chunks."""
        self.xreq(CMD_BLOCK_STATUS, off, length, flags)
        out = {}
        for typ, d in self.reply(off=off):
            if typ == T_ERROR:
                return struct.unpack(">I", d[:4])[0]
            assert typ == T_BS_EXT, typ
            cid, count = struct.unpack(">II", d[:8])
            assert count * 16 + 8 == len(d) and count >= 1
            ext = []
            for i in range(count):
                n, pad, fl = struct.unpack(">QII", d[8 + 16 * i:24 + 16 * i])
                assert n > 0 and pad == 0
                ext.append((n, fl))
            out[cid] = ext
        return out

    def dropped(self):
        """The server closed the connection (no reply)."""
        try:
            return self.s.recv(32) == b""
        except ConnectionResetError:
            return True


def qio_ok(url, *cmds, fmt="raw"):
    """qemu-io (compact headers) runs cmds against url; pattern checks
    must hold."""
    args = [need("qemu-io"), "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    r = run(args + [url])
    assert "verification failed" not in r.stdout, r.stdout
    return r.stdout


# ---- negotiation ---------------------------------------------------------

def test_negotiation(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        c = Ext(srv.sock)
        c.greet()
        # the option carries no data
        assert c.replies(OPT_EXTENDED_HEADERS, b"x")[-1][0] == \
            REP_ERR_INVALID
        assert c.replies(OPT_EXTENDED_HEADERS)[-1][0] == REP_ACK
        # asking twice is harmless
        assert c.replies(OPT_EXTENDED_HEADERS)[-1][0] == REP_ACK
        # no downgrade to 20-byte structured chunks afterwards
        assert c.replies(OPT_STRUCTURED_REPLY)[-1][0] == \
            REP_ERR_EXT_HEADER_REQD
        # extended headers imply chunked replies: meta contexts may be set
        d = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 1) + \
            struct.pack(">I", 15) + b"base:allocation"
        r = c.replies(OPT_SET_META, d)
        assert [t for t, _ in r] == [REP_META, REP_ACK], r
        r = c.replies(OPT_GO, struct.pack(">I", 4) + b"disk" +
                      struct.pack(">H", 0))
        assert r[-1][0] == REP_ACK
        flags = [struct.unpack(">QH", d[2:12])[1] for t, d in r
                 if t == REP_INFO and d[:2] == b"\0\0"][0]
        assert flags & (1 << 7), "DF offered: replies are chunked"
        assert c.read(0, 8) == b"\x11" * 8
        # a compact request on an extended connection: the stream cannot
        # be resynchronised, so the server hangs up
        c.request(CMD_READ, 0, 4096)
        c.s.sendall(b"\0" * 4)   # the 32 bytes of a header, wrong magic
        assert c.dropped()
        c.close()

        # NBD_OPT_EXPORT_NAME is not for clients with extended headers
        c = Ext(srv.sock)
        c.greet()
        assert c.replies(OPT_EXTENDED_HEADERS)[-1][0] == REP_ACK
        c.opt(OPT_EXPORT_NAME, b"disk")
        assert c.dropped()
        c.close()

        # a client that does not ask gets the compact headers as before
        c = Raw(srv.sock)
        c.go(structured=True)
        c.request(CMD_FLUSH, 0, 0)
        assert c.simple() == (0, b"")
        # PAYLOAD_LEN is no compact flag: the write's bytes are skipped
        c.request(CMD_WRITE, 0, 3, FLAG_PAYLOAD_LEN, payload=b"abc")
        assert c.simple() == (EINVAL, b"")
        c.request(CMD_FLUSH, 0, 0)     # and the stream is still in step
        assert c.simple() == (0, b"")
        c.close()
        # and an extended request from it is a bad magic: dropped
        c = Ext(srv.sock)
        c.go()
        c.xreq(CMD_READ, 0, 4096)
        assert c.dropped()
        c.close()


# ---- commands ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["raw", "sparse"])
def test_commands(tmp_path, kind):
    img, _ = make_image(str(tmp_path), kind)
    fmt = "raw" if kind == "raw" else "vmdk"
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        c = Ext(srv.sock)
        c.negotiate()
        assert c.size == 64 * M
        assert c.write(3, b"ABCDE") == 0                   # misaligned
        assert c.read(1, 10) == b"\x11\x11ABCDE\x11\x11\x11"
        assert c.write(8 * M, b"\x44" * (1 * M), FLAG_FUA) == 0
        assert c.read(8 * M - 4, 8) == b"\0" * 4 + b"\x44" * 4
        # a big read of mostly holes comes back right
        data = c.read(0, 16 * M)
        assert data[:3] == b"\x11" * 3 and data[3:8] == b"ABCDE"
        assert data[1 * M:4 * M] == b"\x22" * (3 * M)
        assert data[8 * M:9 * M] == b"\x44" * M
        assert data[9 * M:] == b"\0" * (7 * M)
        assert c.status(CMD_WRITE_ZEROES, 1 * M, 1 * M) == 0
        assert c.status(CMD_WRITE_ZEROES, 2 * M, 64 * K, FLAG_NO_HOLE) == 0
        assert c.status(CMD_TRIM, 3 * M, 1 * M) == 0
        assert c.status(CMD_CACHE, 0, 64 * M) == 0
        assert c.status(CMD_FLUSH, 0, 0) == 0
        assert c.read(1 * M, 1 * M + 64 * K) == b"\0" * (M + 64 * K)
        st = c.block_status(0, 64 * M)
        (ext,) = st.values()
        assert sum(n for n, _ in ext) == 64 * M
        assert ext[0][1] == 0                              # data at 0
        assert ext[-1][1] == STATE_HOLE | STATE_ZERO       # tail is a hole
        one = c.block_status(0, 64 * M, FLAG_REQ_ONE)
        assert len(list(one.values())[0]) == 1
        c.xreq(CMD_DISC, 0, 0)
        assert c.dropped()
        c.close()
    qio_ok(f"{img}", "read -P 0x11 0 3", "read -P 0x41 3 1",
           "read -P 0x44 8M 1M", "read -P 0 1M 1M", fmt=fmt)
    if kind == "sparse":
        run([need("qemu-img"), "check", img])


def test_errors_keep_the_connection_sane(tmp_path):
    img, _ = make_image(str(tmp_path), "raw")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        c = Ext(srv.sock)
        c.negotiate()
        size, mx = c.size, c.max_block
        assert mx == 32 * M
        # past the end, and wrapping around
        assert c.read(size - 10, 20) == EINVAL
        assert c.status(CMD_WRITE_ZEROES, size - 4096, 8192) == ENOSPC
        assert c.status(CMD_TRIM, 2 ** 64 - 4096, 8192) == EINVAL
        assert c.block_status(size, 1) == EINVAL
        assert c.block_status(0, 0) == EINVAL
        # READ stays within the maximum payload, even with 64-bit lengths
        assert c.read(0, mx + 1) == EINVAL
        assert c.read(0, 5 * G) == EINVAL
        # a WRITE must say its payload length
        assert c.status(CMD_WRITE, 0, 0) == EINVAL
        # a payload on a command that takes none: skipped, then EINVAL
        assert c.status(CMD_TRIM, 0, 5, FLAG_PAYLOAD_LEN, b"12345") == EINVAL
        assert c.status(CMD_FLUSH, 0, 3, FLAG_PAYLOAD_LEN, b"abc") == EINVAL
        # unknown command and unknown flag
        assert c.status(42, 0, 0) == EINVAL
        assert c.status(CMD_READ, 0, 4096, 1 << 9) == EINVAL
        # FLUSH with a length
        assert c.status(CMD_FLUSH, 0, 1) == EINVAL
        # a zero-length READ is one empty final chunk
        c.xreq(CMD_READ, 0, 0)
        assert c.reply(off=0) == [(T_NONE, b"")]
        # still in step: a write and a read after all of that
        assert c.write(0, b"still") == 0
        assert c.read(0, 5) == b"still"
        # a payload larger than the maximum cannot be skipped: dropped
        c.xreq(CMD_WRITE, 0, mx + 1, FLAG_PAYLOAD_LEN)
        assert c.dropped()
        c.close()
        c = Ext(srv.sock)
        c.negotiate()
        c.xreq(CMD_TRIM, 0, 8 * G, FLAG_PAYLOAD_LEN)
        assert c.dropped()
        c.close()
        # a bad magic mid-stream: dropped, and the others go on
        c = Ext(srv.sock)
        c.negotiate()
        c.s.sendall(b"\xde\xad\xbe\xef" + b"\0" * 28)
        assert c.dropped()
        c.close()
        qio_ok(srv.url, "read -P 0x73 0 1", "read -P 0x11 5 100")
    # BLOCK_STATUS without a context selected
    with Pvblk(str(tmp_path), img, "-o", "ro") as srv:
        c = Ext(srv.sock)
        c.negotiate(meta=())
        assert c.block_status(0, 4096) == EINVAL
        assert c.write(0, b"x") == EPERM
        assert c.read(0, 1) == b"s"
        c.close()


def test_pipelined_replies_match_their_cookies(tmp_path):
    """Requests in flight together: each chunk names its request by cookie
    and offset, whatever order the replies come back in."""
    img, _ = make_image(str(tmp_path), "sparse")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        c = Ext(srv.sock)
        c.negotiate(meta=(b"base:allocation", b"qemu:allocation-depth"))
        reqs = {}
        for i in range(32):
            off = i * M
            if i % 4 == 0:
                c.xreq(CMD_WRITE, off, 4096, FLAG_PAYLOAD_LEN, cookie=i,
                       payload=bytes([i]) * 4096)
            elif i % 4 == 1:
                c.xreq(CMD_READ, off, 128 * K, cookie=i)
            elif i % 4 == 2:
                c.xreq(CMD_BLOCK_STATUS, off, 16 * M, cookie=i)
            else:
                c.xreq(CMD_WRITE_ZEROES, off, 8 * G, cookie=i)  # ENOSPC
            reqs[i] = off
        done, chunks = set(), {}
        while len(done) < 32:
            fl, typ, ck, o, d = c.chunk()
            assert ck in reqs and ck not in done and o == reqs[ck]
            chunks.setdefault(ck, []).append((typ, d))
            if fl & DONE:
                done.add(ck)
        for i, got in chunks.items():
            kinds = [t for t, _ in got]
            if i % 4 == 0:
                assert kinds == [T_NONE]
            elif i % 4 == 1:
                assert set(kinds) <= {T_DATA, T_HOLE}
            elif i % 4 == 2:
                assert kinds == [T_BS_EXT, T_BS_EXT]
            else:
                assert kinds == [T_ERROR]
                assert struct.unpack(">I", got[0][1][:4])[0] == ENOSPC
        assert c.read(4 * M, 8) == bytes([4]) * 8
        c.close()


def test_extended_headers_over_tls(tmp_path):
    """With TLS required, extended headers are negotiated after STARTTLS
    (before it the server says TLS is required) and work over GnuTLS."""
    img, _ = make_image(str(tmp_path), "raw")
    srvdir, clidir = make_tls_creds(str(tmp_path))
    port = free_port()
    with Pvblk(str(tmp_path), img, "-o", "rw", "--tls-creds", srvdir,
               addr=f"tcp:127.0.0.1:{port}") as srv:
        c = Ext.__new__(Ext)
        c.s = socket.create_connection(("127.0.0.1", port), 20)
        c.s.settimeout(20)
        c.greet()
        assert c.replies(OPT_EXTENDED_HEADERS)[-1][0] == REP_ERR_TLS_REQD
        assert c.replies(OPT_STARTTLS)[-1][0] == REP_ACK
        ctx = ssl.create_default_context(
            cafile=os.path.join(clidir, "ca-cert.pem"))
        c.s = ctx.wrap_socket(c.s, server_hostname="localhost")
        c.negotiate(greet=False)
        assert c.write(5 * M, b"tls!" * 1024) == 0
        assert c.read(5 * M - 2, 8) == b"\0\0tls!tl"
        (ext,) = c.block_status(0, c.size).values()
        assert sum(n for n, _ in ext) == c.size
        c.close()
        srv.stop()
    with open(img, "rb") as f:
        f.seek(5 * M)
        assert f.read(4) == b"tls!"


# ---- lengths over 4 GiB ---------------------------------------------------

@pytest.mark.parametrize("kind", ["raw", "sparse"])
def test_over_4gib_zero_trim_and_status(tmp_path, kind):
    qi = need("qemu-img")
    d = str(tmp_path)
    if kind == "raw":
        img, fmt = os.path.join(d, "big.raw"), "raw"
    else:
        img, fmt = os.path.join(d, "big.vmdk"), "vmdk"
    run([qi, "create", "-f", fmt, img, "12G"])
    qio_ok(img, "write -P 0x55 1G 1M", "write -P 0x66 5G 1M",
           "write -P 0x77 11G 1M", fmt=fmt)
    with Pvblk(d, img, "-o", "rw") as srv:
        c = Ext(srv.sock)
        c.negotiate()
        assert c.size == 12 * G
        # one BLOCK_STATUS over the whole disk, with extents over 4 GiB
        (ext,) = c.block_status(0, 12 * G).values()
        offs, o = [], 0
        for n, fl in ext:
            offs.append((o, n, fl))
            o += n
        assert o <= 12 * G
        data = [(x, n) for x, n, fl in offs if not fl & STATE_HOLE]
        assert any(x <= 5 * G < x + n for x, n in data), offs
        holes = [n for x, n, fl in offs if fl & STATE_HOLE]
        assert max(holes) > 4 * G, offs
        # zero 6 GiB from 512 MiB in one request: both patches inside go
        assert c.status(CMD_WRITE_ZEROES, 512 * M, 6 * G) == 0
        assert c.read(1 * G, 4096) == b"\0" * 4096
        assert c.read(5 * G, 4096) == b"\0" * 4096
        # trim 5 GiB at the end in one request: the last patch goes
        assert c.status(CMD_TRIM, 7 * G, 5 * G) == 0
        assert c.read(11 * G, 1 * M) in (b"\0" * M, b"\x77" * M)
        assert c.status(CMD_CACHE, 0, 12 * G) == 0
        # status still adds up over 64-bit extents (a VMDK zeroes its
        # allocated grains in place: they stay data)
        (ext,) = c.block_status(0, 12 * G).values()
        assert sum(n for n, _ in ext) == 12 * G, ext
        c.close()
        # a compact client sees the same through qemu-io
        qio_ok(srv.url, "read -P 0 1G 1M", "read -P 0 5G 1M", fmt="raw")
    if kind == "sparse":
        run([qi, "check", img])


def test_block_status_of_a_4tib_disk(tmp_path):
    """A 4 TiB sparse VMDK: BLOCK_STATUS for all of it in one request
    (a 64-bit length), two contexts; asking on from where each reply
    stopped covers the disk in a few replies."""
    qi = need("qemu-img")
    img = str(tmp_path / "huge.vmdk")
    run([qi, "create", "-f", "vmdk", img, "4T"])
    with Pvblk(str(tmp_path), img, "-o", "ro") as srv:
        c = Ext(srv.sock)
        c.negotiate(meta=(b"base:allocation", b"qemu:allocation-depth"))
        off, replies = 0, 0
        while off < c.size:
            st = c.block_status(off, c.size - off)
            assert len(st) == 2
            got = [sum(n for n, _ in ext) for ext in st.values()]
            assert min(got) > 0
            off += min(got)
            replies += 1
            assert replies < 1000
        assert off == 4 << 40
        assert replies <= 2, replies   # nothing there: one hole
        c.close()


def test_block_status_chunk_stops_after_16384_lookups(tmp_path):
    """A chain whose grains alternate between base and child: every engine
    lookup answers one 64 KiB grain (the depth changes), base:allocation
    calls them all data. The chunk stops after 16,384 lookups (1 GiB), the
    depth chunk after 256 descriptors, and both the extended client asking
    on and nbdinfo (compact) cover the whole disk."""
    d = str(tmp_path)
    qi, qio = need("qemu-img"), need("qemu-io")
    g, n = 64 * K, 16384 + 64
    with open(os.path.join(d, "even.raw"), "wb") as f:
        f.truncate(n * g)
        for i in range(0, n, 2):
            f.seek(i * g)
            f.write(b"\x5a" * g)
    run([qi, "convert", "-f", "raw", "-O", "vmdk", "even.raw", "base.vmdk"],
        cwd=d)
    os.unlink(os.path.join(d, "even.raw"))
    run([qi, "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk",
         "child.vmdk"], cwd=d)
    cmds = "".join(f"write -P 0x5b {i * g} 64k\n" for i in range(1, n, 2))
    run([qio, "-f", "vmdk", "child.vmdk"], input=cmds, cwd=d)
    with Pvblk(d, os.path.join(d, "child.vmdk"), "-o", "ro") as srv:
        c = Ext(srv.sock)
        c.negotiate(meta=(b"base:allocation", b"qemu:allocation-depth"))
        alloc, depth = c.ctx[b"base:allocation"], \
            c.ctx[b"qemu:allocation-depth"]
        st = c.block_status(0, c.size)
        assert st[alloc] == [(16384 * g, 0)]
        assert len(st[depth]) == 256
        assert st[depth][:2] in ([(g, 2), (g, 1)], [(g, 1), (g, 2)])
        off = 0
        while off < c.size:
            (ext,) = [e for k, e in c.block_status(off, c.size - off).items()
                      if k == alloc]
            off += sum(x for x, _ in ext)
        assert off == n * g
        c.close()
        m = json.loads(run([need("nbdinfo"), "--json", "--map",
                            srv.url]).stdout)
        assert sum(e["length"] for e in m) == n * g
        assert all(e["type"] == 0 for e in m), m


# ---- old clients ---------------------------------------------------------

def test_compact_clients_still_work(tmp_path):
    img, _ = make_image(str(tmp_path), "sparse")
    out = str(tmp_path / "out.raw")
    with Pvblk(str(tmp_path), img, "-o", "rw") as srv:
        qio_ok(srv.url, "write -P 0x5a 2M 64k", "read -P 0x5a 2M 64k",
               "write -z 1M 64k", "discard 40M 4k", "read -P 0x11 0 64k")
        m = json.loads(run([need("nbdinfo"), "--json", "--map",
                            srv.url]).stdout)
        assert m[0]["offset"] == 0 and m[0]["type"] == 0
        run([need("nbdcopy"), srv.url, out])
        # an extended client beside them
        c = Ext(srv.sock)
        c.negotiate()
        assert c.read(2 * M, 4) == b"\x5a" * 4
        c.close()
    run([need("qemu-img"), "compare", "-f", "vmdk", "-F", "raw", img, out])
