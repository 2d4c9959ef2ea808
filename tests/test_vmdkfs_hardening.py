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
