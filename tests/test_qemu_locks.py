# SPDX-License-Identifier: Apache-2.0
"""ovk and QEMU see each other's image locks (issue 17, item 7): QEMU's
lock bytes (block/file-posix.c) are taken and honoured by the engine, so a
writer on either side keeps the other side's writers (and locking readers)
out, while readers of both sides share. Checked with real qemu-io,
qemu-img and qemu-storage-daemon holding the image."""
import contextlib
import os
import subprocess
import time

import pytest

from conftest import need, run, tool
from test_vmdkfs import force_unmount, is_mounted, vmdkfs

MiB = 1 << 20


@pytest.fixture
def image(tmp_path):
    need("qemu-img")
    img = tmp_path / "d.vmdk"
    run(["qemu-img", "create", "-q", "-f", "vmdk", img, "4M"])
    return img


@contextlib.contextmanager
def qemu_io_holding(img, *opts):
    """qemu-io with img open (read-write unless opts has -r), waiting at
    its prompt until the block ends."""
    p = subprocess.Popen([need("qemu-io"), "-f", "vmdk", *opts, str(img)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        # a command's answer proves the image is open (and locked)
        p.stdin.write("read 0 512\n")
        p.stdin.flush()
        line = p.stdout.readline()
        assert "read 512/512 bytes" in line, line
        yield p
    finally:
        p.stdin.close()
        p.wait(timeout=30)


@contextlib.contextmanager
def qsd_exporting(img, tmp_path):
    """qemu-storage-daemon serving img over a writable NBD export."""
    sock = tmp_path / "qsd.sock"
    p = subprocess.Popen(
        [need("qemu-storage-daemon"),
         "--blockdev", f"driver=file,filename={img},node-name=f",
         "--blockdev", "driver=vmdk,file=f,node-name=v",
         "--nbd-server", f"addr.type=unix,addr.path={sock}",
         "--export", "type=nbd,id=e,node-name=v,writable=on"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):  # the export is up once its socket exists
            if sock.exists() or p.poll() is not None:
                break
            time.sleep(0.05)
        assert sock.exists(), p.communicate(timeout=10)[0]
        yield p
    finally:
        p.terminate()
        p.wait(timeout=30)


def ovk_refused(img, tmp_path, *cmd):
    r = subprocess.run([tool("vmdk"), *cmd], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0, f"vmdk {' '.join(cmd)} ran against QEMU"
    assert str(img) in r.stderr and "in use" in r.stderr, r.stderr
    return r


def vmdkfs_refused(img, mnt, *opts):
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run([tool("vmdkfs"), *opts, str(img), str(mnt)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        force_unmount(mnt)
    assert r.returncode != 0, f"vmdkfs {opts} mounted against QEMU"
    assert "in use" in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_qemu_writer_keeps_ovk_writers_out(image, tmp_path):
    with qemu_io_holding(image):
        ovk_refused(image, tmp_path, "resize", str(image), "8M")
        vmdkfs_refused(image, tmp_path / "m", "-o", "rw")
        ovk_refused(image, tmp_path, "snapshot", "create", str(image),
                    str(tmp_path / "child.vmdk"))
        assert not (tmp_path / "child.vmdk").exists()
        # a locking reader too, as qemu-img info without -U; -U reads
        r = ovk_refused(image, tmp_path, "info", str(image))
        assert "-U" in r.stderr
        run([tool("vmdk"), "info", "-U", image])
    # once QEMU is gone, ovk gets in
    run([tool("vmdk"), "resize", image, "8M"])
    r = run(["qemu-img", "info", "--output=json", image])
    assert '"virtual-size": 8388608' in r.stdout


def test_qsd_export_keeps_ovk_writers_out(image, tmp_path):
    with qsd_exporting(image, tmp_path):
        ovk_refused(image, tmp_path, "resize", str(image), "8M")
        vmdkfs_refused(image, tmp_path / "m", "-o", "rw")


def test_ovk_writer_keeps_qemu_out(image, tmp_path):
    with vmdkfs(image, tmp_path / "m", "-o", "rw"):
        r = run(["qemu-io", "-f", "vmdk", "-c", "write -P 7 0 4k", image],
                check=False)
        assert "lock" in r.stderr + r.stdout
        r = run(["qemu-img", "info", image], check=False)
        assert r.returncode != 0 and "lock" in r.stderr
        run(["qemu-img", "info", "-U", image])
    # the write never happened
    run(["qemu-io", "-f", "vmdk", "-c", "read -P 0 0 4k", image])


def test_readers_of_both_sides_share(image, tmp_path):
    with vmdkfs(image, tmp_path / "m") as m:
        run(["qemu-img", "info", image])
        run(["qemu-img", "info", "-U", image])
        run(["qemu-io", "-r", "-f", "vmdk", "-c", "read 0 4k", image])
        # but QEMU may not write under an ovk reader
        r = run(["qemu-io", "-f", "vmdk", "-c", "write 0 4k", image],
                check=False)
        assert "lock" in r.stderr + r.stdout
        assert os.path.getsize(m / "disk") == 4 * MiB
    with qemu_io_holding(image, "-r"):
        run([tool("vmdk"), "info", image])
        with vmdkfs(image, tmp_path / "m2") as m:
            assert os.path.getsize(m / "disk") == 4 * MiB
        ovk_refused(image, tmp_path, "resize", str(image), "8M")
