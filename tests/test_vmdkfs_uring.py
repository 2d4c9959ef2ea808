# SPDX-License-Identifier: Apache-2.0
"""vmdkfs -o io_uring: FUSE over io_uring on real mounts of qemu-img-made
images. The tests turn the fuse module's enable_uring on themselves (and
restore it); every test unmounts in teardown."""
import contextlib
import mmap
import os
import signal
import subprocess
import time

import pytest

from conftest import need, run, tool
from test_vmdkfs import (files_equal, force_unmount, is_mounted, to_vmdk,
                         wait_unmounted)

MiB = 1 << 20
PARAM = "/sys/module/fuse/parameters/enable_uring"
QUEUES_LINE = "FUSE over io_uring: serving requests on"


def _set_uring(value):
    with open(PARAM, "w") as f:
        f.write(value)


@pytest.fixture
def uring_param():
    """Makes enable_uring writable for the test and puts it back after."""
    if not os.path.exists(PARAM):
        pytest.skip("this kernel has no FUSE over io_uring (Linux 6.14+ "
                    "built with CONFIG_FUSE_IO_URING): no " + PARAM)
    if os.geteuid() != 0:
        pytest.skip(f"only root can turn on {PARAM}")
    with open(PARAM) as f:
        was = f.read().strip()
    try:
        _set_uring("1")
    except OSError as e:
        pytest.skip(f"cannot turn on {PARAM}: {e}")
    yield _set_uring
    _set_uring("1" if was == "Y" else "0")


@contextlib.contextmanager
def vmdkfs_fg(image, mnt, *opts):
    """vmdkfs -f on mnt; yields the process (stderr piped to a file so the
    log can be read while it runs). Always unmounted and reaped."""
    os.makedirs(mnt, exist_ok=True)
    log = open(f"{mnt}.log", "w+")
    p = subprocess.Popen([tool("vmdkfs"), "-f", *map(str, opts), str(image),
                          str(mnt)], stderr=log, text=True)
    p.log = log
    try:
        deadline = time.time() + 20
        while not is_mounted(mnt) and time.time() < deadline:
            assert p.poll() is None, read_log(p)
            time.sleep(0.02)
        assert is_mounted(mnt), read_log(p)
        yield p
    finally:
        force_unmount(mnt)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def read_log(p):
    with open(p.log.name) as f:
        return f.read()


def wait_log(p, text, timeout=10):
    deadline = time.time() + timeout
    while text not in read_log(p) and time.time() < deadline:
        time.sleep(0.02)
    return read_log(p)


def direct_write(path, off, data):
    """O_DIRECT write of data at off, then fsync."""
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [buf], off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def direct_read(path, off, n):
    buf = mmap.mmap(-1, n)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.preadv(fd, [buf], off) == n
        return bytes(buf)
    finally:
        os.close(fd)
        buf.close()


# (offset, length): 4 KiB writes in several grains, a 1 MiB write (the
# largest request) and a write across a grain boundary
SPANS = [(0, 4096), (64 * 1024 + 4096, 4096), (3 * MiB, MiB),
         (5 * MiB - 8192, 16384)]


def write_pattern(disk, expected):
    """Writes SPANS through the mount and into the expected raw file."""
    with open(expected, "r+b") as ref:
        for i, (off, n) in enumerate(SPANS):
            data = bytes([(i * 37 + 11) & 0xff]) * 512 + os.urandom(n - 512)
            direct_write(disk, off, data)
            assert direct_read(disk, off, n) == data
            ref.seek(off)
            ref.write(data)


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat"])
def test_uring_rw_writes_match_qemu_img(uring_param, tmp_path, subformat):
    """Writes with O_DIRECT + fsync through an -o rw,io_uring mount travel
    the ring (the daemon says so once every CPU queue is registered) and
    reach the image as qemu-img reads it."""
    need("qemu-img")
    expected = tmp_path / "expected.raw"
    with open(expected, "wb") as f:
        f.write(os.urandom(8 * MiB))
    img = tmp_path / "d.vmdk"
    to_vmdk(expected, img, subformat)
    with vmdkfs_fg(img, tmp_path / "m", "-o", "rw,io_uring") as p:
        assert QUEUES_LINE in wait_log(p, QUEUES_LINE), read_log(p)
        write_pattern(tmp_path / "m" / "disk", expected)
        # the whole disk reads back as the expected bytes
        assert files_equal(tmp_path / "m" / "disk", expected)
    assert p.returncode == 0, read_log(p)
    run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", img, expected])
    run(["qemu-img", "check", img])


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized"])
def test_uring_ro_reads_match_qemu_img_convert(uring_param, tmp_path,
                                               subformat):
    """A read-only -o io_uring mount (whose large replies libfuse splices:
    from the image file, or from the worker's memfd for compressed
    grains) reads as qemu-img convert writes the disk."""
    need("qemu-img")
    src = tmp_path / "src.raw"
    with open(src, "wb") as f:
        f.write(os.urandom(3 * MiB))
        f.write(b"compressible text line 0123456789\n" * (60000))
        f.truncate(8 * MiB)
    img = tmp_path / "d.vmdk"
    to_vmdk(src, img, subformat)
    ref = tmp_path / "ref.raw"
    run(["qemu-img", "convert", "-O", "raw", img, ref])
    with vmdkfs_fg(img, tmp_path / "m", "-o", "io_uring") as p:
        assert QUEUES_LINE in wait_log(p, QUEUES_LINE), read_log(p)
        disk = tmp_path / "m" / "disk"
        run(["cmp", disk, ref])
        for off, n in [(0, 512 << 10), (MiB + 4096, 4096),
                       (5 * MiB, 64 << 10)]:
            with open(ref, "rb") as r:
                r.seek(off)
                assert direct_read(disk, off, n) == r.read(n)
    assert p.returncode == 0, read_log(p)


def test_uring_unmount_and_sigterm_clean(uring_param, tmp_path):
    """fusermount3 -u ends an io_uring daemon with status 0, and so does
    SIGTERM, which also unmounts."""
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img)
    mnt = tmp_path / "m"
    with vmdkfs_fg(img, mnt, "-o", "rw,io_uring") as p:
        wait_log(p, QUEUES_LINE)
        direct_write(mnt / "disk", MiB, b"\x5a" * 4096)
        run(["fusermount3", "-u", mnt])
        assert p.wait(timeout=20) == 0, read_log(p)
    with vmdkfs_fg(img, mnt, "-o", "rw,io_uring") as p:
        assert QUEUES_LINE in wait_log(p, QUEUES_LINE), read_log(p)
        assert direct_read(mnt / "disk", MiB, 4096) == b"\x5a" * 4096
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0, read_log(p)
        assert wait_unmounted(mnt)
    assert "error" not in read_log(p).lower(), read_log(p)


def test_uring_falls_back_when_kernel_refuses(uring_param, tmp_path):
    """With enable_uring off the kernel does not offer the ring: the daemon
    says so in one line and serves /dev/fuse."""
    uring_param("0")
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img)
    mnt = tmp_path / "m"
    with vmdkfs_fg(img, mnt, "-o", "rw,io_uring") as p:
        data = os.urandom(8192)
        direct_write(mnt / "disk", 8192, data)
        assert direct_read(mnt / "disk", 8192, 8192) == data
        log = read_log(p)
        assert log.count("FUSE over io_uring") == 1, log
        assert "does not offer it" in log and "/dev/fuse" in log, log
    assert p.returncode == 0, read_log(p)


def test_uring_auto_falls_back_quietly(uring_param, tmp_path):
    """-o io_uring=auto with enable_uring off: no log line, /dev/fuse."""
    uring_param("0")
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img)
    with vmdkfs_fg(img, tmp_path / "m", "-o", "io_uring=auto") as p:
        assert os.path.getsize(tmp_path / "m" / "disk") == 4 * MiB
        assert direct_read(tmp_path / "m" / "disk", 0, 4096) == bytes(4096)
        assert "io_uring" not in read_log(p)


def test_uring_bad_mode_refused(tmp_path):
    r = subprocess.run([tool("vmdkfs"), "-o", "io_uring=fast", "x.vmdk",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "io_uring must be on, off or auto, not 'fast'" in r.stderr
