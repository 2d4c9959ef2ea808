# SPDX-License-Identifier: Apache-2.0
"""The unix sockets ovk's daemons listen on (common/unixsock): pvblk's
NBD, vhost-user-blk and control sockets, ovkvm's console socket and ovkd's
API socket all come from unixsock_listen. What a user and a supervisor
rely on, tried with pvblk:

- the path appears only once the socket listens, so "the path exists"
  is a usable readiness test (no connection refused in between);
- a socket file a killed daemon left behind is replaced;
- a socket another daemon serves is refused, naming the path, and that
  daemon keeps serving;
- any other file at the path is left alone.
"""
import os
import socket
import subprocess
import time

from conftest import need, run, tool


def start(d, img, *extra):
    log = open(os.path.join(d, "pvblk.log"), "a+")
    return subprocess.Popen([tool("pvblk"), *extra, img], stdout=log,
                            stderr=subprocess.STDOUT), log


def stop(p):
    p.terminate()
    assert p.wait(timeout=60) == 0


def image(d):
    img = os.path.join(d, "disk.raw")
    run([need("qemu-img"), "create", "-q", "-f", "raw", img, "16M"])
    return img


def test_each_socket_accepts_as_soon_as_its_path_exists(tmp_path):
    """20 starts; each time every socket is connected to the moment its
    path shows (polled every millisecond): none may refuse."""
    d = str(tmp_path)
    img = image(d)
    socks = {"nbd": os.path.join(d, "nbd.sock"),
             "vhost-user": os.path.join(d, "vu.sock"),
             "api": os.path.join(d, "api.sock")}
    for i in range(20):
        p, log = start(d, img, "--nbd", f"unix:{socks['nbd']}",
                       "--vhost-user-blk", socks["vhost-user"],
                       "--api-socket", socks["api"])
        try:
            for name, path in socks.items():
                deadline = time.monotonic() + 20
                while not os.path.exists(path):
                    assert p.poll() is None, f"pvblk exited {p.returncode}"
                    assert time.monotonic() < deadline, f"no {name} socket"
                    time.sleep(0.001)
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)  # ConnectionRefusedError fails the test
                finally:
                    s.close()
        finally:
            stop(p)
        for path in socks.values():
            assert not os.path.exists(path), f"{path} left after start {i}"
            assert not os.path.exists(path + ".new")


def test_stale_live_and_foreign_files_at_the_path(tmp_path):
    d = str(tmp_path)
    img = image(d)
    nbd = os.path.join(d, "nbd.sock")
    # a socket file whose daemon is gone: replaced
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(nbd)
    stale.close()
    p, log = start(d, img, "-o", "ro", "--nbd", f"unix:{nbd}")
    try:
        deadline = time.monotonic() + 20
        while True:  # the stale file refuses until pvblk's socket replaces it
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(nbd)
                break
            except OSError:
                assert p.poll() is None, f"pvblk exited {p.returncode}"
                assert time.monotonic() < deadline, "never served"
                time.sleep(0.01)
            finally:
                s.close()
        # served: a second pvblk on the same path is refused, by name
        r = run([tool("pvblk"), "-o", "ro", "--nbd", f"unix:{nbd}", img],
                check=False, timeout=60)
        assert r.returncode != 0
        assert f"{nbd} exists and a server listens on it" in r.stderr, \
            r.stderr
        info = run([need("qemu-img"), "info", "--output=json",
                    f"nbd+unix:///?socket={nbd}"])
        assert '"virtual-size": 16777216' in info.stdout
    finally:
        stop(p)
    # any other file: left alone
    with open(nbd, "w") as f:
        f.write("keep me")
    r = run([tool("pvblk"), "-o", "ro", "--nbd", f"unix:{nbd}", img],
            check=False, timeout=60)
    assert r.returncode != 0
    assert f"{nbd} exists and is not a socket" in r.stderr, r.stderr
    with open(nbd) as f:
        assert f.read() == "keep me"
