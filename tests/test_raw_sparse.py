# SPDX-License-Identifier: Apache-2.0
"""Sparse raw files: `vmdk map`, `compare` and `convert` see their holes as
zeros (SEEK_DATA/SEEK_HOLE) and skip them instead of reading them."""
import json
import os

import pytest

from conftest import need, run

MiB = 1 << 20
TiB = 1 << 40


def sparse_raw(path, size, writes):
    """A file of size bytes, holes except (offset, byte, length) writes."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, byte, length in writes:
            f.seek(off)
            f.write(bytes([byte]) * length)
    with open(path, "rb") as f:
        try:
            first = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        except OSError:
            first = -1
    if writes and first != min(w[0] for w in writes):
        pytest.skip("the file system of the test folder reports no holes")
    return str(path)


def qemu_vmdk(path, size, writes):
    run([need("qemu-img"), "create", "-q", "-f", "vmdk", str(path),
         str(size)])
    args = [need("qemu-io"), "-f", "vmdk"]
    for off, byte, length in writes:
        args += ["-c", f"write -P {byte} {off} {length}"]
    run(args + [str(path)])
    return str(path)


def test_map_reports_holes(vmdk, tmp_path):
    raw = sparse_raw(tmp_path / "s.raw", 64 * MiB,
                     [(8 * MiB, 0x11, MiB), (40 * MiB, 0x22, 2 * MiB)])
    runs = json.loads(run([vmdk, "map", "--output=json", raw]).stdout)
    got = [(r["start"], r["length"], r["data"], r["zero"]) for r in runs]
    assert got == [
        (0, 8 * MiB, False, True),
        (8 * MiB, MiB, True, False),
        (9 * MiB, 31 * MiB, False, True),
        (40 * MiB, 2 * MiB, True, False),
        (42 * MiB, 22 * MiB, False, True),
    ]


# Reading 2 TiB of holes would take hours; skipping them takes moments, so
# a generous timeout tells the two apart on any machine.
def test_compare_2tib_sparse_raw_with_vmdk(vmdk, tmp_path):
    writes = [(0, 0x21, MiB), (TiB, 0x22, MiB), (2 * TiB - MiB, 0x23, MiB)]
    raw = sparse_raw(tmp_path / "big.raw", 2 * TiB, writes)
    img = qemu_vmdk(tmp_path / "big.vmdk", 2 * TiB, writes)
    r = run([vmdk, "compare", raw, img], timeout=120)
    assert r.returncode == 0
    with open(raw, "r+b") as f:
        f.seek(TiB + 4097)
        f.write(b"\x00")
    r = run([vmdk, "compare", raw, img], check=False, timeout=120)
    assert r.returncode == 1
    assert str(TiB + 4097) in r.stdout


def test_convert_sparse_raw_stays_sparse(vmdk, tmp_path):
    writes = [(0, 0x31, MiB), (TiB // 2, 0x32, 3 * MiB)]
    raw = sparse_raw(tmp_path / "in.raw", TiB, writes)
    out = tmp_path / "out.raw"
    run([vmdk, "convert", "-O", "raw", raw, out], timeout=120)
    assert os.path.getsize(out) == TiB
    assert os.stat(out).st_blocks * 512 < 64 * MiB
    with open(out, "rb") as f:
        f.seek(TiB // 2 - 4096)
        assert f.read(4096 + 3 * MiB + 4096) == \
            b"\0" * 4096 + b"\x32" * (3 * MiB) + b"\0" * 4096
