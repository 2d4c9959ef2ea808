# SPDX-License-Identifier: Apache-2.0
"""pvblk's vhost-user protocol, message by message, from a small front end
written here (no guest): negotiation, config space, REPLY_ACK, a ring set
up on memfd memory that serves real requests, GET_VRING_BASE's index,
read-only exports, malformed messages, and a front end that goes away.
"""
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import control_call, tool

GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE, SET_VRING_NUM, SET_VRING_ADDR = 5, 8, 9
SET_VRING_BASE, GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL = 10, 11, 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_BACKEND_REQ_FD, GET_CONFIG = 18, 21, 24
BACKEND_CONFIG_CHANGE_MSG = 2
F_PROTOCOL = 1 << 30
PF_REPLY_ACK, PF_CONFIG, PF_MQ = 1 << 3, 1 << 9, 1 << 0
PF_BACKEND_REQ = 1 << 5
VIRTIO_BLK_F_RO = 1 << 5
NUM = 16
MEM = 4 << 20


class Front:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.s.settimeout(10)

    def send(self, req, payload=b"", fds=(), flags=1):
        msg = struct.pack("<III", req, flags, len(payload)) + payload
        if fds:
            socket.send_fds(self.s, [msg], list(fds))
        else:
            self.s.sendall(msg)

    def recv(self):
        hdr = self.s.recv(12, socket.MSG_WAITALL)
        assert len(hdr) == 12, "no reply"
        req, flags, size = struct.unpack("<III", hdr)
        assert flags & 4, "reply flag not set"
        body = self.s.recv(size, socket.MSG_WAITALL) if size else b""
        return req, body

    def get_u64(self, req):
        self.send(req)
        r, body = self.recv()
        assert r == req
        return struct.unpack("<Q", body)[0]


@pytest.fixture
def server(tmp_path):
    procs = []

    def start(mode="rw", queues=2, size=4 << 20, api=None, extra=()):
        img = tmp_path / f"disk{len(procs)}.raw"
        with open(img, "wb") as f:
            f.write(bytes(range(256)) * (size // 256))
        sock = str(tmp_path / f"s{len(procs)}.sock")
        log = open(sock + ".log", "w+")
        extra = list(extra) + (["--api-socket", api] if api else [])
        p = subprocess.Popen([tool("pvblk"), "-o", mode, "--vhost-user-blk",
                              sock, "--num-queues", str(queues)] + extra +
                             [str(img)], stderr=log)
        procs.append((p, log))
        for _ in range(500):
            if os.path.exists(sock) and (not api or os.path.exists(api)):
                break
            assert p.poll() is None, open(sock + ".log").read()
            time.sleep(0.02)
        return sock, p, img
    yield start
    for p, log in procs:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        log.seek(0)


def negotiate(f, pf_want):
    feats = f.get_u64(GET_FEATURES)
    assert feats & F_PROTOCOL and feats & (1 << 32)
    pf = f.get_u64(GET_PROTOCOL_FEATURES)
    assert pf & pf_want == pf_want
    f.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf_want))
    f.send(SET_FEATURES, struct.pack("<Q", (1 << 32) | F_PROTOCOL))
    f.send(SET_OWNER)
    return feats


def get_config(f, off=0, size=60):
    f.send(GET_CONFIG, struct.pack("<III", off, size, 0) + bytes(size))
    r, body = f.recv()
    assert r == GET_CONFIG
    return body[12:]


def test_negotiation_and_config(server):
    sock, _, _ = server(queues=3, size=8 << 20)
    f = Front(sock)
    feats = negotiate(f, PF_CONFIG | PF_MQ)
    assert not feats & VIRTIO_BLK_F_RO
    assert f.get_u64(GET_QUEUE_NUM) == 3
    cfg = get_config(f)
    capacity, = struct.unpack_from("<Q", cfg, 0)
    assert capacity == (8 << 20) // 512
    assert struct.unpack_from("<H", cfg, 34)[0] == 3     # num_queues
    assert struct.unpack_from("<I", cfg, 20)[0] == 512   # blk_size
    # a partial read, and one past the config space
    assert get_config(f, 34, 2) == struct.pack("<H", 3)
    f.send(GET_CONFIG, struct.pack("<III", 250, 60, 0) + bytes(60))
    _, body = f.recv()
    assert struct.unpack_from("<I", body, 4)[0] == 0  # failed: size 0


def test_read_only_export_offers_ro(server):
    sock, _, _ = server(mode="ro")
    f = Front(sock)
    assert f.get_u64(GET_FEATURES) & VIRTIO_BLK_F_RO


def test_reply_ack(server):
    sock, _, _ = server()
    f = Front(sock)
    negotiate(f, PF_REPLY_ACK)
    # a good request acks 0, a bad ring index acks non-zero
    f.send(SET_VRING_NUM, struct.pack("<II", 0, 16), flags=1 | 8)
    assert struct.unpack("<Q", f.recv()[1])[0] == 0
    f.send(SET_VRING_NUM, struct.pack("<II", 7, 16), flags=1 | 8)
    assert struct.unpack("<Q", f.recv()[1])[0] != 0
    f.send(SET_VRING_NUM, struct.pack("<II", 0, 12), flags=1 | 8)
    assert struct.unpack("<Q", f.recv()[1])[0] != 0  # not a power of 2


def set_avail_idx(m, idx):
    """One 16-bit store, as a driver makes it: struct.pack_into zero-fills
    before it writes, and a device polling the ring would see that 0."""
    m[0x1002:0x1004] = struct.pack("<H", idx)


def setup_ring(f, base=0):
    fd = os.memfd_create("guest")
    os.ftruncate(fd, MEM)
    m = mmap.mmap(fd, MEM)
    # a ring resumed at base: every request before it is in the used ring
    set_avail_idx(m, base)
    struct.pack_into("<H", m, 0x2002, base)
    uva = 0x7f0000000000  # any address: the backend maps by the fd
    f.send(SET_MEM_TABLE, struct.pack("<IIQQQQ", 1, 0, 0, MEM, uva, 0),
           fds=[fd])
    f.send(SET_VRING_NUM, struct.pack("<II", 0, NUM))
    f.send(SET_VRING_BASE, struct.pack("<II", 0, base))
    f.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, uva, uva + 0x2000,
                                       uva + 0x1000, 0))
    kick, call = os.eventfd(0), os.eventfd(0)
    f.send(SET_VRING_CALL, struct.pack("<Q", 0), fds=[call])
    f.send(SET_VRING_KICK, struct.pack("<Q", 0), fds=[kick])
    f.send(SET_VRING_ENABLE, struct.pack("<II", 0, 1))
    os.close(fd)
    return m, kick, call


def do_request(m, kick, call, avail_idx, req_type, sector, nbytes, write):
    """Request with header at 0x3000, data at 0x10000, status 0x3100."""
    struct.pack_into("<IIQ", m, 0x3000, req_type, 0, sector)
    m[0x3100] = 0xee
    d = 0x3 if write else 0x1  # NEXT | WRITE for the guest-written data
    struct.pack_into("<QIHH", m, 0, 0x3000, 16, 1, 1)
    struct.pack_into("<QIHH", m, 16, 0x10000, nbytes, d, 2)
    struct.pack_into("<QIHH", m, 32, 0x3100, 1, 2, 0)
    struct.pack_into("<H", m, 0x1004 + 2 * (avail_idx % NUM), 0)
    set_avail_idx(m, (avail_idx + 1) & 0xffff)
    os.eventfd_write(kick, 1)
    r, _, _ = select.select([call], [], [], 10)
    assert r, "no interrupt"
    os.eventfd_read(call)
    used_idx, = struct.unpack_from("<H", m, 0x2002)
    assert used_idx == (avail_idx + 1) & 0xffff
    return m[0x3100]


def test_ring_serves_requests_and_vring_base(server):
    sock, _, img = server()
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    # the front end resumes a ring at index 100 (as after a migration)
    m, kick, call = setup_ring(f, base=100)
    assert do_request(m, kick, call, 100, 0, 1, 512, True) == 0  # IN
    assert m[0x10000:0x10000 + 512] == bytes(range(256)) * 2
    m[0x10000:0x10000 + 512] = b"\x42" * 512
    assert do_request(m, kick, call, 101, 1, 3, 512, False) == 0  # OUT
    # past the end: IOERR
    assert do_request(m, kick, call, 102, 0, 1 << 40, 512, True) == 1
    # GET_VRING_BASE stops the ring and says where it stopped
    f.send(GET_VRING_BASE, struct.pack("<II", 0, 0))
    r, body = f.recv()
    assert r == GET_VRING_BASE
    assert struct.unpack("<II", body) == (0, 103)
    # a stopped ring reads nothing more
    set_avail_idx(m, 104)
    os.eventfd_write(kick, 1)
    assert not select.select([call], [], [], 0.5)[0]
    f.s.close()
    with open(img, "rb") as fh:
        fh.seek(3 * 512)
        assert fh.read(512) == b"\x42" * 512


def test_malformed_messages_end_only_that_connection(server):
    sock, p, _ = server()
    for bad in (struct.pack("<III", GET_FEATURES, 1, 1 << 20),   # too long
                struct.pack("<III", SET_FEATURES, 1, 4) + b"abcd",  # size
                struct.pack("<III", GET_FEATURES, 2, 0),         # version
                struct.pack("<III", 999, 1, 0)):                # unknown
        f = Front(sock)
        f.s.sendall(bad)
        assert f.s.recv(64) == b"", "the connection should be closed"
        f.s.close()
    # guest memory larger than the file that holds it: refused (else the
    # daemon would fault on the first buffer past the file's end)
    f = Front(sock)
    negotiate(f, PF_REPLY_ACK)
    fd = os.memfd_create("short")
    os.ftruncate(fd, 4096)
    f.send(SET_MEM_TABLE, struct.pack("<IIQQQQ", 1, 0, 0, MEM, 1 << 40, 0),
           fds=[fd], flags=1 | 8)
    assert struct.unpack("<Q", f.recv()[1])[0] != 0
    os.close(fd)
    f.s.close()
    # a front end that sets a ring up and vanishes mid-way
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    setup_ring(f)
    f.s.close()
    f = Front(sock)
    assert f.get_u64(GET_QUEUE_NUM) == 2
    assert p.poll() is None


def wait_log(path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            log = f.read()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log: {log}")


def test_broken_ring_is_logged_naming_export_and_queue(server):
    """A ring the device cannot walk is logged once with the socket, the
    image, the queue and the reason; the daemon serves on."""
    sock, p, img = server()
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    m, kick, call = setup_ring(f)
    # a data buffer past the end of guest memory
    struct.pack_into("<IIQ", m, 0x3000, 0, 0, 0)
    struct.pack_into("<QIHH", m, 0, 0x3000, 16, 1, 1)
    struct.pack_into("<QIHH", m, 16, MEM - 256, 512, 3, 2)
    struct.pack_into("<QIHH", m, 32, 0x3100, 1, 2, 0)
    struct.pack_into("<H", m, 0x1004, 0)
    set_avail_idx(m, 1)
    os.eventfd_write(kick, 1)
    log = wait_log(sock + ".log", "virtqueue broken")
    line, = [x for x in log.splitlines() if "virtqueue broken" in x]
    assert f"vhost-user-blk {sock} ({img}), queue 0" in line
    assert "buffer outside guest memory" in line
    assert not select.select([call], [], [], 0.3)[0]
    assert p.poll() is None
    f.s.close()


def status(api):
    """The control socket's status reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(api)
        s.sendall(b'{"command": "status"}\n')
        return json.loads(s.makefile().readline())["return"]


def test_status_counts_requests_per_vring_and_names_a_broken_one(
        server, tmp_path):
    """The control socket's status shows what each vring answered and,
    once the front end breaks a ring, why; counts outlive the front end."""
    api = str(tmp_path / "api.sock")
    sock, p, _ = server(api=api)
    exp, = status(api)["exports"]
    assert exp["queues"] == 2
    assert exp["io"] == {"requests": 0, "read_bytes": 0, "written_bytes": 0,
                         "errors": 0}
    assert exp["vrings"] == [{"index": 0, "requests": 0, "broken": None},
                             {"index": 1, "requests": 0, "broken": None}]
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    m, kick, call = setup_ring(f)
    assert do_request(m, kick, call, 0, 0, 1, 4096, True) == 0  # IN
    assert do_request(m, kick, call, 1, 1, 8, 1024, False) == 0  # OUT
    assert do_request(m, kick, call, 2, 0, 1 << 40, 512, True) == 1
    exp, = status(api)["exports"]
    assert exp["io"] == {"requests": 3, "read_bytes": 4096,
                         "written_bytes": 1024, "errors": 1}
    assert exp["vrings"] == [{"index": 0, "requests": 3, "broken": None},
                             {"index": 1, "requests": 0, "broken": None}]
    # a data buffer past the end of guest memory breaks ring 0
    struct.pack_into("<IIQ", m, 0x3000, 0, 0, 0)
    struct.pack_into("<QIHH", m, 16, MEM - 256, 512, 3, 2)
    struct.pack_into("<H", m, 0x1004 + 2 * 3, 0)
    set_avail_idx(m, 4)
    os.eventfd_write(kick, 1)
    wait_log(sock + ".log", "virtqueue broken")
    exp, = status(api)["exports"]
    v0, v1 = exp["vrings"]
    assert "buffer outside guest memory" in v0["broken"], v0
    assert v0["requests"] == 3 and v1["broken"] is None
    # the front end goes: what its rings answered stays counted
    f.s.close()
    deadline = time.monotonic() + 10
    while "front end gone" not in open(sock + ".log").read():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    exp, = status(api)["exports"]
    assert exp["io"]["requests"] == 3 and exp["io"]["written_bytes"] == 1024
    assert p.poll() is None


def setup_ring_fd(f, fd):
    """setup_ring on the caller's memfd fd (kept open); returns m, kick,
    call."""
    os.ftruncate(fd, MEM)
    m = mmap.mmap(fd, MEM)
    uva = 0x7f0000000000
    f.send(SET_MEM_TABLE, struct.pack("<IIQQQQ", 1, 0, 0, MEM, uva, 0),
           fds=[fd])
    f.send(SET_VRING_NUM, struct.pack("<II", 0, NUM))
    f.send(SET_VRING_BASE, struct.pack("<II", 0, 0))
    f.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, uva, uva + 0x2000,
                                       uva + 0x1000, 0))
    kick, call = os.eventfd(0), os.eventfd(0)
    f.send(SET_VRING_CALL, struct.pack("<Q", 0), fds=[call])
    f.send(SET_VRING_KICK, struct.pack("<Q", 0), fds=[kick])
    f.send(SET_VRING_ENABLE, struct.pack("<II", 0, 1))
    assert f.get_u64(GET_QUEUE_NUM) == 2   # every message above applied
    return m, kick, call


def put_request(m, idx, base, req_type=0):
    """A 512-byte request at idx with descriptors 3*idx.., its header at
    base, data at base + 0x100, status at base + 0x400."""
    d = 3 * (idx % 5)
    struct.pack_into("<IIQ", m, base, req_type, 0, 0)
    m[base + 0x400] = 0xee
    struct.pack_into("<QIHH", m, 16 * d, base, 16, 1, d + 1)
    struct.pack_into("<QIHH", m, 16 * (d + 1), base + 0x100, 512, 3, d + 2)
    struct.pack_into("<QIHH", m, 16 * (d + 2), base + 0x400, 1, 2, 0)
    struct.pack_into("<H", m, 0x1004 + 2 * (idx % NUM), d)


def test_sealable_guest_memory_is_sealed_against_shrinking(server):
    import fcntl
    sock, _, _ = server()
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    fd = os.memfd_create("guest", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    m, kick, call = setup_ring_fd(f, fd)
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 0x3000)
    # growing stays allowed, and the ring serves on
    os.ftruncate(fd, 2 * MEM)
    put_request(m, 0, 0x3000)
    set_avail_idx(m, 1)
    os.eventfd_write(kick, 1)
    assert select.select([call], [], [], 10)[0], "no interrupt"
    assert m[0x3400] == 0
    f.s.close()
    os.close(fd)


def test_guest_memory_shrunk_under_the_device_breaks_only_the_queue(server):
    """A front end truncates its (unsealable) memfd after SET_MEM_TABLE and
    points a request past the new end: the daemon survives the SIGBUS,
    the queue is broken with a message that says why, and the next front
    end is served."""
    sock, p, _ = server()
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    fd = os.memfd_create("guest")          # no MFD_ALLOW_SEALING
    m, kick, call = setup_ring_fd(f, fd)
    put_request(m, 0, 0x3000)              # header past the new end
    os.ftruncate(fd, 0x3000)               # rings (below 0x3000) remain
    set_avail_idx(m, 1)
    os.eventfd_write(kick, 1)
    log = wait_log(sock + ".log", "virtqueue broken")
    line, = [x for x in log.splitlines() if "virtqueue broken" in x]
    assert "queue 0" in line and "shrank the file behind guest memory" in line
    assert "SIGBUS" in line
    assert p.poll() is None
    # the broken queue serves nothing more, even a request in memory
    if select.select([call], [], [], 0.2)[0]:
        os.eventfd_read(call)
    put_request(m, 1, 0x2400)
    set_avail_idx(m, 2)
    os.eventfd_write(kick, 1)
    assert not select.select([call], [], [], 0.5)[0]
    assert m[0x2800] == 0xee
    f.s.close()
    os.close(fd)
    # the next front end gets a working device
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    m, kick, call = setup_ring(f)
    assert do_request(m, kick, call, 0, 0, 1, 512, True) == 0
    assert m[0x10000:0x10000 + 512] == bytes(range(256)) * 2
    assert p.poll() is None
    f.s.close()


def test_grow_is_announced_on_the_backend_channel(server, tmp_path):
    """The front end gives pvblk a backend channel (BACKEND_REQ); a grow on
    the control socket then sends CONFIG_CHANGE_MSG on it, and the config
    space says the new capacity (QEMU reads it again on that message and
    interrupts the guest, whose driver resizes the disk)."""
    api = str(tmp_path / "api.sock")
    sock, p, img = server(size=4 << 20, api=api)
    f = Front(sock)
    negotiate(f, PF_CONFIG | PF_BACKEND_REQ)
    ours, theirs = socket.socketpair()
    f.send(SET_BACKEND_REQ_FD, fds=[theirs.fileno()])
    theirs.close()
    cap, = struct.unpack_from("<Q", get_config(f), 0)
    assert cap == (4 << 20) // 512

    def control(**req):
        return control_call(api, **req)

    r = control(command="grow", size=12 << 20)
    assert r["return"] == {"size": 12 << 20, "clients_told": 1}, r
    ours.settimeout(10)
    hdr = ours.recv(12, socket.MSG_WAITALL)
    assert struct.unpack("<III", hdr) == (BACKEND_CONFIG_CHANGE_MSG, 1, 0)
    cap, = struct.unpack_from("<Q", get_config(f), 0)
    assert cap == (12 << 20) // 512
    assert os.path.getsize(img) == 12 << 20
    # a front end that gave no channel is not told, and still sees it
    f.s.close()
    ours.close()
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    r = control(command="grow", size=16 << 20)
    assert r["return"] == {"size": 16 << 20, "clients_told": 0}, r
    cap, = struct.unpack_from("<Q", get_config(f), 0)
    assert cap == (16 << 20) // 512
    # a channel offered without negotiating BACKEND_REQ breaks the protocol
    f.s.close()
    f = Front(sock)
    negotiate(f, PF_CONFIG)
    a, b = socket.socketpair()
    f.send(SET_BACKEND_REQ_FD, fds=[b.fileno()])
    f.s.settimeout(10)
    assert f.s.recv(1) == b""  # pvblk hung up
    assert p.poll() is None


def need_event(event, new, old):
    """virtio's rule: notify when event lies in [old, new)."""
    return (new - event - 1) & 0xffff < (new - old) & 0xffff


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


def test_polling_queue_skips_kicks_and_sleeps_when_idle(server):
    """With EVENT_IDX a driver kicks only when avail_event asks for it.
    While the queue's thread polls the ring it stops asking, and must ask
    again before it sleeps, or a request would wait forever. 3000 reads
    and writes, each kicked only if avail_event says so: every one is
    answered with the right data, some kicks were not needed (the thread
    was polling), and once the front end goes quiet the thread sleeps."""
    sock, p, img = server(extra=["--poll-us", "1000"])
    f = Front(sock)
    f.get_u64(GET_FEATURES)
    f.get_u64(GET_PROTOCOL_FEATURES)
    f.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", PF_CONFIG))
    f.send(SET_FEATURES, struct.pack("<Q", (1 << 32) | (1 << 29) |
                                     F_PROTOCOL))
    f.send(SET_OWNER)
    m, kick, call = setup_ring(f)
    avail_event_at = 0x2004 + 8 * NUM
    used_event_at = 0x1004 + 2 * NUM
    kicks = 0
    for i in range(3000):
        write = i % 3 == 2
        sector = i % 64
        struct.pack_into("<IIQ", m, 0x3000, 1 if write else 0, 0, sector)
        m[0x3100] = 0xee
        if write:
            m[0x10000:0x10200] = struct.pack("<I", i) * 128
        struct.pack_into("<QIHH", m, 0, 0x3000, 16, 1, 1)
        struct.pack_into("<QIHH", m, 16, 0x10000, 512,
                         0x1 if write else 0x3, 2)
        struct.pack_into("<QIHH", m, 32, 0x3100, 1, 2, 0)
        struct.pack_into("<H", m, 0x1004 + 2 * (i % NUM), 0)
        # one 16-bit store each (see set_avail_idx)
        m[used_event_at:used_event_at + 2] = struct.pack("<H", i & 0xffff)
        set_avail_idx(m, (i + 1) & 0xffff)
        event, = struct.unpack_from("<H", m, avail_event_at)
        if need_event(event, (i + 1) & 0xffff, i & 0xffff):
            os.eventfd_write(kick, 1)
            kicks += 1
        r, _, _ = select.select([call], [], [], 10)
        assert r, f"request {i} not answered ({kicks} kicks so far)"
        os.eventfd_read(call)
        used_idx, = struct.unpack_from("<H", m, 0x2002)
        assert used_idx == (i + 1) & 0xffff
        assert m[0x3100] == 0
        if not write and i > 64 * 3:
            # the last write to this sector was request j
            j = max(k for k in range(i) if k % 3 == 2 and k % 64 == sector)
            assert m[0x10000:0x10200] == struct.pack("<I", j) * 128, i
    assert 0 < kicks < 3000
    time.sleep(0.3)
    c0 = cpu_seconds(p.pid)
    time.sleep(1.0)
    assert cpu_seconds(p.pid) - c0 < 0.1, "an idle queue keeps polling"
    f.s.close()


@pytest.mark.parametrize("where", ["path", "abstract"])
def test_ready_and_stopping_reach_the_service_manager(tmp_path, where):
    """As a systemd Type=notify service: READY=1 arrives on $NOTIFY_SOCKET
    only once every socket accepts, STOPPING=1 on SIGTERM, then exit 0."""
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(1 << 20))
    sock, api = str(tmp_path / "vu.sock"), str(tmp_path / "api.sock")
    nbd = str(tmp_path / "nbd.sock")
    mgr = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if where == "path":
        name = str(tmp_path / "notify")
        mgr.bind(name)
    else:
        name = "@ovk-test-notify-%d" % os.getpid()
        mgr.bind("\0" + name[1:])
    mgr.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=name)
    p = subprocess.Popen([tool("pvblk"), "--vhost-user-blk", sock,
                          "--nbd", "unix:" + nbd, "--api-socket", api,
                          str(img)], env=env, stderr=subprocess.PIPE)
    try:
        assert mgr.recv(256) == b"READY=1"
        for path in (sock, api, nbd):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)   # each one accepts by now
            s.close()
        p.send_signal(signal.SIGTERM)
        assert mgr.recv(256) == b"STOPPING=1"
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        mgr.close()


def test_bad_notify_socket_is_named_and_serving_goes_on(tmp_path):
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(1 << 20))
    sock = str(tmp_path / "vu.sock")
    env = dict(os.environ, NOTIFY_SOCKET="relative/notify")
    p = subprocess.Popen([tool("pvblk"), "--vhost-user-blk", sock,
                          str(img)], env=env, stderr=subprocess.PIPE,
                         text=True)
    for _ in range(500):
        if os.path.exists(sock):
            break
        time.sleep(0.02)
    f = Front(sock)
    assert f.get_u64(GET_FEATURES) & F_PROTOCOL
    f.s.close()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    err = p.stderr.read()
    assert "NOTIFY_SOCKET=relative/notify: expected an absolute path" in err
