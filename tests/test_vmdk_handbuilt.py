# SPDX-License-Identifier: Apache-2.0
"""Images written byte by byte by tests/vmdkgen.py (our own writer, from the
format documents): the shapes QEMU cannot make (VMware's GD_AT_END streams,
vmfs, COWD vmfsSparse, ZERO/RDONLY/NOACCESS extents, damaged directories)
and broken ones. The generator knows what it stored; where QEMU can read
the image too, it must agree."""
import os
import shutil
import struct

import pytest

import vmdkgen as g
from conftest import assert_same_file, run

MiB = 1 << 20
G = 65536


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def qemu_raw(img, out):
    """qemu-img's reading of img into out, or None without qemu-img."""
    q = shutil.which("qemu-img")
    if not q:
        return None
    run([q, "convert", "-f", "vmdk", "-O", "raw", img, out])
    return out


def read_back(vmdk, img, tmp_path, name="out.raw"):
    out = tmp_path / name
    run([vmdk, "convert", "-O", "raw", img, out])
    return open(out, "rb").read()


def some_grains(size, seed=1):
    n = size // G
    return {0: g.pattern(seed, G), 1: g.pattern(seed + 1, 700),
            n // 2: g.pattern(seed + 2, G), n - 1: g.pattern(seed + 3, G)}


def test_vmfs_flat(vmdk, tmp_path):
    size = 3 * MiB + 1024
    data = g.pattern(42, size)
    write(tmp_path / "d-flat.vmdk", data)
    img = write(tmp_path / "d.vmdk", g.descriptor(
        [("RW", size // 512, "VMFS", "d-flat.vmdk", None)], "vmfs").encode())
    assert read_back(vmdk, img, tmp_path) == data
    q = qemu_raw(img, tmp_path / "q.raw")
    if q:
        assert open(q, "rb").read() == data


def test_vmfs_sparse_cowd_delta(vmdk, tmp_path):
    size = 4 * MiB
    base = g.pattern(7, size)
    write(tmp_path / "base-flat.vmdk", base)
    write(tmp_path / "base.vmdk", g.descriptor(
        [("RW", size // 512, "VMFS", "base-flat.vmdk", None)], "vmfs",
        cid=0xAABBCCDD).encode())
    grains = some_grains(size, 100)
    write(tmp_path / "child-delta.vmdk", g.cowd_extent(size, grains))
    img = write(tmp_path / "child.vmdk", g.descriptor(
        [("RW", size // 512, "VMFSSPARSE", "child-delta.vmdk", None)],
        "vmfsSparse", cid=0x01020304, parent_cid=0xAABBCCDD,
        parent_hint="base.vmdk").encode())
    want = g.expected(size, grains, parent=base)
    assert read_back(vmdk, img, tmp_path) == want
    q = qemu_raw(img, tmp_path / "q.raw")
    if q:
        assert open(q, "rb").read() == want


def test_vmfs_sparse_cowd_alone(vmdk, tmp_path):
    size = 2 * MiB + 512
    grains = {0: g.pattern(5, G), 32: g.pattern(6, 512)}
    write(tmp_path / "s-delta.vmdk", g.cowd_extent(size, grains))
    img = write(tmp_path / "s.vmdk", g.descriptor(
        [("RW", size // 512, "VMFSSPARSE", "s-delta.vmdk", None)],
        "vmfsSparse").encode())
    assert read_back(vmdk, img, tmp_path) == g.expected(size, grains)


def mixed_image(tmp_path, noaccess="NOACCESS"):
    """RW FLAT a | RDONLY FLAT b (at sector 8 of its file) | ZERO |
    noaccess FLAT c | RW FLAT d, 1 MiB each."""
    parts = {n: g.pattern(i + 10, MiB) for i, n in enumerate("abcd")}
    write(tmp_path / "a.bin", parts["a"])
    write(tmp_path / "b.bin", b"\xee" * 4096 + parts["b"])
    write(tmp_path / "c.bin", parts["c"])
    write(tmp_path / "d.bin", parts["d"])
    s = MiB // 512
    img = write(tmp_path / "mixed.vmdk", g.descriptor([
        ("RW", s, "FLAT", "a.bin", 0),
        ("RDONLY", s, "FLAT", "b.bin", 8),
        ("NOACCESS" if False else "RW", s, "ZERO", None, None),
        (noaccess, s, "FLAT", "c.bin", 0),
        ("RW", s, "FLAT", "d.bin", 0),
    ], "twoGbMaxExtentFlat").encode())
    want = parts["a"] + parts["b"] + bytes(MiB) + parts["c"] + parts["d"]
    return img, want


def test_mixed_extents_sum_and_content(vmdk, tmp_path):
    img, want = mixed_image(tmp_path, noaccess="RDONLY")
    r = run([vmdk, "info", "--output=json", img])
    import json
    info = json.loads(r.stdout)
    assert info["virtual-size"] == 5 * MiB  # QEMU would say 2 MiB
    kinds = [(e["access"], e["type"]) for e in info["extents"]]
    assert kinds == [("RW", "FLAT"), ("RDONLY", "FLAT"), ("RW", "ZERO"),
                     ("RDONLY", "FLAT"), ("RW", "FLAT")]
    assert info["extents"][1]["file-offset"] == 4096
    assert info["extents"][2]["filename"] is None
    assert read_back(vmdk, img, tmp_path) == want


def test_noaccess_extent_read_fails_clearly(vmdk, tmp_path):
    img, _ = mixed_image(tmp_path)
    r = run([vmdk, "convert", "-O", "raw", img, tmp_path / "o.raw"],
            check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("vmdk: ")
    assert "noaccess" in r.stderr.lower(), r.stderr
    # reads that avoid the NOACCESS extent work
    r = run([vmdk, "bench", "-c", "4", "-d", "2", "-s", "1M", "-o", "0",
             "-S", "0", img])
    r = run([vmdk, "bench", "-c", "1", "-s", "4096", "-o", str(3 * MiB + 512),
             img], check=False)
    assert r.returncode != 0 and "noaccess" in r.stderr.lower(), r.stderr


def test_zeroed_grain_v2(vmdk, tmp_path):
    size = 2 * MiB
    grains = {0: g.pattern(1, G), 1: g.ZERO, 5: g.pattern(2, G), 6: g.ZERO}
    d = g.descriptor([("RW", size // 512, "SPARSE", "z.vmdk", None)],
                     "monolithicSparse")
    img = write(tmp_path / "z.vmdk",
                g.sparse_extent(size, grains, version=2, desc=d))
    want = g.expected(size, grains)
    assert read_back(vmdk, img, tmp_path) == want
    q = qemu_raw(img, tmp_path / "q.raw")
    if q:
        assert open(q, "rb").read() == want
    import json
    m = json.loads(run([vmdk, "map", "--output=json", img]).stdout)
    z = [e for e in m if e["present"] and e["zero"]]
    assert {(e["start"], e["length"]) for e in z} == {(G, G), (6 * G, G)}


def test_zeroed_grain_hides_parent(vmdk, tmp_path):
    size = MiB
    base = g.pattern(3, size)
    write(tmp_path / "base-flat.vmdk", base)
    write(tmp_path / "base.vmdk", g.descriptor(
        [("RW", size // 512, "FLAT", "base-flat.vmdk", 0)], "monolithicFlat",
        cid=0x11110000).encode())
    grains = {2: g.ZERO, 3: g.pattern(4, G)}
    d = g.descriptor([("RW", size // 512, "SPARSE", "child.vmdk", None)],
                     "monolithicSparse", cid=0x2222, parent_cid=0x11110000,
                     parent_hint="base.vmdk")
    img = write(tmp_path / "child.vmdk",
                g.sparse_extent(size, grains, version=2, desc=d))
    want = g.expected(size, grains, parent=base)
    assert read_back(vmdk, img, tmp_path) == want
    q = qemu_raw(img, tmp_path / "q.raw")
    if q:
        assert open(q, "rb").read() == want


@pytest.mark.parametrize("unknown", [False, True])
def test_stream_gd_at_end_vmware_shape(vmdk, tmp_path, unknown):
    size = 3 * MiB + 1536  # the last grain is short
    grains = some_grains(size, 20)
    grains[48] = g.pattern(99, size - 48 * G)
    d = g.descriptor([("RW", size // 512, "SPARSE", "s.vmdk", None)],
                     "streamOptimized")
    img = write(tmp_path / "s.vmdk", g.stream_extent(
        size, grains, desc=d, unknown_marker=unknown))
    want = g.expected(size, grains)
    assert read_back(vmdk, img, tmp_path) == want
    import json
    info = json.loads(run([vmdk, "info", "--output=json", img]).stdout)
    assert info["compressed"] is True
    assert info["create-type"] == "streamOptimized"
    assert info["extents"][0]["version"] == 3
    q = qemu_raw(img, tmp_path / "q.raw")
    if q and not unknown:
        assert open(q, "rb").read() == want


def test_stream_cut_short_keeps_written_grains(vmdk, tmp_path):
    """An interrupted download: grain records, no tables, no footer; an
    unknown marker on the way must be skipped by its sector count."""
    size = 2 * MiB
    grains = {0: g.pattern(1, G), 3: g.pattern(2, G), 20: g.pattern(3, G)}
    d = g.descriptor([("RW", size // 512, "SPARSE", "c.vmdk", None)],
                     "streamOptimized")
    img = write(tmp_path / "c.vmdk", g.stream_extent(
        size, grains, desc=d, unknown_marker=True, cut_footer=True))
    assert read_back(vmdk, img, tmp_path) == g.expected(size, grains)


def test_damaged_primary_gd_uses_redundant(vmdk, tmp_path):
    size = 3 * MiB
    grains = some_grains(size, 30)
    d = g.descriptor([("RW", size // 512, "SPARSE", "r.vmdk", None)],
                     "monolithicSparse")
    img = write(tmp_path / "r.vmdk",
                g.sparse_extent(size, grains, desc=d, damage_gd=True))
    assert read_back(vmdk, img, tmp_path) == g.expected(size, grains)


def test_cid_mismatch_names_both(vmdk, tmp_path):
    size = MiB
    write(tmp_path / "base-flat.vmdk", bytes(size))
    write(tmp_path / "base.vmdk", g.descriptor(
        [("RW", size // 512, "FLAT", "base-flat.vmdk", 0)], "monolithicFlat",
        cid=0x1234ABCD).encode())
    d = g.descriptor([("RW", size // 512, "SPARSE", "child.vmdk", None)],
                     "monolithicSparse", cid=0x55, parent_cid=0x0BADC0DE,
                     parent_hint="base.vmdk")
    img = write(tmp_path / "child.vmdk", g.sparse_extent(size, {}, desc=d))
    r = run([vmdk, "info", img], check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("vmdk: ")
    assert "1234abcd" in r.stderr.lower() and "0badc0de" in r.stderr.lower()


def two_file_image(tmp_path, extent_bytes, size=MiB):
    """A descriptor naming one sparse extent file with the given bytes."""
    ext = write(tmp_path / "e-s001.vmdk", extent_bytes)
    img = write(tmp_path / "e.vmdk", g.descriptor(
        [("RW", size // 512, "SPARSE", "e-s001.vmdk", None)],
        "twoGbMaxExtentSparse").encode())
    return img, ext


def fix(**kw):
    def f(fields):
        fields.update(kw)
    return f


GOOD = {0: g.pattern(1, G)}
BROKEN = [
    ("magic", fix(), lambda b: b"XXXX" + b[4:], ["magic"]),
    ("version4", fix(version=4), None, ["version"]),
    ("incompat_flag", fix(flags=1 | 2 | (1 << 20)), None, ["flags"]),
    ("grain_not_pow2", fix(grain_sectors=100), None, ["grainsize"]),
    ("gd_beyond_eof", fix(gd_offset=1 << 30, rgd_offset=1 << 30), None,
     ["gdoffset", "grain directory"]),
    ("truncated", fix(), lambda b: b[:300], ["bytes", "header", "size"]),
    ("tables_cut_off", fix(), lambda b: b[:4 * 512],
     ["gdoffset", "grain", "overhead", "truncated"]),
]


@pytest.mark.parametrize("name,hfix,mangle,words", BROKEN,
                         ids=[b[0] for b in BROKEN])
def test_broken_extent_header(vmdk, tmp_path, name, hfix, mangle, words):
    data = g.sparse_extent(MiB, GOOD, header_fix=hfix)
    if mangle:
        data = mangle(data)
    img, ext = two_file_image(tmp_path, data)
    for cmd in (["info"], ["convert", "-O", "raw"]):
        args = [vmdk] + cmd + [img] + ([tmp_path / "o.raw"]
                                        if cmd[0] == "convert" else [])
        r = run(args, check=False)
        assert r.returncode != 0, (name, r.stdout)
        err = r.stderr
        assert err.startswith("vmdk: "), err
        assert "e-s001.vmdk" in err, err
        assert any(w in err.lower() for w in words), err


def test_descriptor_offset_beyond_eof(vmdk, tmp_path):
    d = g.descriptor([("RW", MiB // 512, "SPARSE", "m.vmdk", None)],
                     "monolithicSparse")
    data = g.sparse_extent(MiB, GOOD, desc=d,
                           header_fix=fix(desc_offset=1 << 20))
    img = write(tmp_path / "m.vmdk", data)
    r = run([vmdk, "info", img], check=False)
    assert r.returncode != 0
    assert "m.vmdk" in r.stderr and "descriptoroffset" in r.stderr.lower(), \
        r.stderr


def test_monolithic_truncated_file(vmdk, tmp_path):
    d = g.descriptor([("RW", MiB // 512, "SPARSE", "t.vmdk", None)],
                     "monolithicSparse")
    data = g.sparse_extent(MiB, GOOD, desc=d)
    img = write(tmp_path / "t.vmdk", data[:len(data) - G // 2])
    r = run([vmdk, "convert", "-O", "raw", img, tmp_path / "o.raw"],
            check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("vmdk: ") and "t.vmdk" in r.stderr, r.stderr


def test_generator_matches_qemu_on_plain_sparse(vmdk, tmp_path):
    """Cross-check of the generator itself: QEMU reads what it writes."""
    if not shutil.which("qemu-img"):
        pytest.skip("qemu-img is not installed")
    size = 5 * MiB + 512
    grains = some_grains(size - 512, 50)
    d = g.descriptor([("RW", size // 512, "SPARSE", "p.vmdk", None)],
                     "monolithicSparse")
    img = write(tmp_path / "p.vmdk", g.sparse_extent(size, grains, desc=d))
    q = qemu_raw(img, tmp_path / "q.raw")
    assert open(q, "rb").read() == g.expected(size, grains)
    out = tmp_path / "o.raw"
    run([vmdk, "convert", "-O", "raw", img, out])
    assert_same_file(out, q)
