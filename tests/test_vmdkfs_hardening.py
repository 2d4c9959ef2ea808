# SPDX-License-Identifier: Apache-2.0
"""vmdkfs defects outside testers found (issue 17): real FUSE mounts of
qemu-img-made images; every test unmounts in teardown."""
import errno
import os
import subprocess

import pytest

from conftest import need, run, tool
from test_vmdkfs import force_unmount, is_mounted, vmdkfs

MiB = 1 << 20


def _read_all(path, bs):
    """Reads path to its end in bs-byte reads; the bytes, or the OSError."""
    got = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            b = os.read(fd, bs)
            if not b:
                return got
            got += len(b)
    except OSError as e:
        return e
    finally:
        os.close(fd)


# ---- 5: a damaged image under a mount reads as EIO, never short ---------

@pytest.mark.parametrize("subformat,cut", [("monolithicFlat", "d-flat.vmdk"),
                                           ("monolithicSparse", "d.vmdk")])
@pytest.mark.parametrize("bs", [4096, 1 << 20])
def test_truncated_image_under_mount_reads_eio(tmp_path, subformat, cut, bs):
    need("qemu-img")
    raw = tmp_path / "r.raw"
    raw.write_bytes(os.urandom(8 * MiB))
    img = tmp_path / "d.vmdk"
    run(["qemu-img", "convert", "-O", "vmdk", "-o", f"subformat={subformat}",
         raw, img])
    with vmdkfs(img, tmp_path / "m") as m:
        os.truncate(tmp_path / cut, 2 * MiB)
        r = _read_all(m / "disk", bs)
        assert isinstance(r, OSError), f"read {r} bytes of 8 MiB, no error"
        assert r.errno == errno.EIO


# ---- 6: a failed -o snapshot=CHILD leaves no CHILD ----------------------

def test_failed_snapshot_mount_leaves_no_child(tmp_path):
    need("qemu-img")
    img = tmp_path / "d.vmdk"
    run(["qemu-img", "create", "-q", "-f", "vmdk", img, "4M"])
    child = tmp_path / "child.vmdk"
    os.makedirs(tmp_path / "m2")
    with vmdkfs(img, tmp_path / "m1", "-o", "rw"):
        r = subprocess.run([tool("vmdkfs"), "-o", f"snapshot={child}", img,
                            tmp_path / "m2"], capture_output=True, text=True,
                           timeout=60)
        if r.returncode == 0:
            force_unmount(tmp_path / "m2")
        assert r.returncode != 0, "snapshot of an image held rw mounted"
        assert "d.vmdk" in r.stderr
        assert not child.exists(), "the failed command left CHILD behind"
        assert not is_mounted(tmp_path / "m2")
    # the retry, once the writer is gone, works
    with vmdkfs(img, tmp_path / "m2", "-o", f"snapshot={child}") as m:
        assert os.path.getsize(m / "disk") == 4 * MiB
    run(["qemu-img", "check", child])

