# SPDX-License-Identifier: Apache-2.0
"""`vmdk create` and `vmdk convert -O vmdk`: every subformat we write is
judged by QEMU's tools (qemu-img check / info / compare), the independent
reference."""
import json
import os

import pytest

from conftest import need, run

SUBFORMATS = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
              "twoGbMaxExtentFlat", "streamOptimized", "vmfs", "vmfsSparse"]
MiB = 1 << 20


def qinfo(path):
    r = run([need("qemu-img"), "info", "--output=json", path])
    return json.loads(r.stdout)


def qcheck(path):
    return run([need("qemu-img"), "check", path], check=False)


def make_raw(path, size, pieces, seed=1):
    """A raw file of size bytes with the given (offset, length) pieces of
    data (half random, half a byte pattern); the rest stays holes."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in pieces:
            f.seek(off)
            h = n // 2
            f.write(rnd.randbytes(h) + bytes([(off >> 9) & 0xff or 1]) * (n - h))


@pytest.mark.parametrize("sf", SUBFORMATS)
def test_create_each_subformat_is_clean(vmdk, tmp_path, sf):
    img = tmp_path / "d.vmdk"
    run([vmdk, "create", "-o", f"subformat={sf}", img, "3G"])
    assert qcheck(img).returncode == 0, qcheck(img).stdout
    info = qinfo(img)
    assert info["virtual-size"] == 3 << 30
    assert info["format-specific"]["data"]["create-type"] == sf
    # our reader opens it too (flat kinds: reading 3 GiB of holes is slow)
    if sf not in ("monolithicFlat", "twoGbMaxExtentFlat", "vmfs"):
        assert run([vmdk, "compare", img, img]).returncode == 0
    else:
        run([vmdk, "info", img])


def test_create_split_extent_names_and_sizes(vmdk, tmp_path):
    run([vmdk, "create", "-o", "subformat=twoGbMaxExtentFlat",
         tmp_path / "t.vmdk", "5G"])
    names = sorted(os.listdir(tmp_path))
    assert names == ["t-f001.vmdk", "t-f002.vmdk", "t-f003.vmdk", "t.vmdk"]
    sizes = [os.path.getsize(tmp_path / n) for n in names[:3]]
    assert sizes == [2047 * MiB, 2047 * MiB, 5 * 1024 * MiB - 2 * 2047 * MiB]
    run([vmdk, "create", "-o", "subformat=twoGbMaxExtentSparse",
         tmp_path / "s.vmdk", "5G"])
    assert (tmp_path / "s-s003.vmdk").exists()


def test_create_descriptor_fields(vmdk, tmp_path):
    img = tmp_path / "f.vmdk"
    run([vmdk, "create", "-o",
         "subformat=monolithicFlat,adapter_type=lsilogic,hwversion=11",
         img, "1G"])
    text = img.read_text()
    assert 'createType="monolithicFlat"' in text
    assert 'RW 2097152 FLAT "f-flat.vmdk" 0' in text
    assert 'ddb.adapterType = "lsilogic"' in text
    assert 'ddb.virtualHWVersion = "11"' in text
    assert 'ddb.geometry.heads = "255"' in text
    assert 'ddb.geometry.cylinders = "131"' in text   # ceil(2097152/(255*63))
    cid = [l for l in text.splitlines() if l.startswith("CID=")][0][4:]
    assert cid not in ("ffffffff", "fffffffe")
    assert "parentCID=ffffffff" in text
    # the flat file is sparse
    assert os.stat(tmp_path / "f-flat.vmdk").st_blocks == 0


def test_create_vmfs_and_vmfssparse_conventions(vmdk, tmp_path):
    run([vmdk, "create", "-o", "subformat=vmfs", tmp_path / "v.vmdk", "1G"])
    assert 'RW 2097152 VMFS "v-flat.vmdk"' in (tmp_path / "v.vmdk").read_text()
    run([vmdk, "create", "-o", "subformat=vmfsSparse", tmp_path / "w.vmdk", "1G"])
    assert 'VMFSSPARSE "w-delta.vmdk"' in (tmp_path / "w.vmdk").read_text()
    assert (tmp_path / "w-delta.vmdk").read_bytes()[:4] == b"COWD"


def test_create_zeroed_grain_header_v2(vmdk, tmp_path):
    img = tmp_path / "z.vmdk"
    run([vmdk, "create", "-o", "zeroed_grain=on", img, "64M"])
    hdr = img.read_bytes()[:512]
    assert int.from_bytes(hdr[4:8], "little") == 2
    assert int.from_bytes(hdr[8:12], "little") & 4
    assert qcheck(img).returncode == 0


def test_create_stream_header_v3_gd_at_end(vmdk, tmp_path):
    img = tmp_path / "s.vmdk"
    run([vmdk, "create", "-o", "subformat=streamOptimized", img, "1G"])
    b = img.read_bytes()
    assert int.from_bytes(b[4:8], "little") == 3
    flags = int.from_bytes(b[8:12], "little")
    assert flags & (1 << 16) and flags & (1 << 17)
    assert b[56:64] == b"\xff" * 8                     # GD_AT_END
    assert int.from_bytes(b[-1536 + 12:-1536 + 16], "little") == 3  # footer marker
    assert b[-1024:-1020] == b"KDMV"
    assert int.from_bytes(b[-512 + 12:-512 + 16], "little") == 0    # EOS
    assert b[-512:] == bytes(512)
    gd = int.from_bytes(b[-1024 + 56:-1024 + 64], "little")
    assert 0 < gd < len(b) // 512


def test_create_refuses_existing_and_bad_options(vmdk, tmp_path):
    img = tmp_path / "x.vmdk"
    img.write_text("keep me")
    r = run([vmdk, "create", img, "1G"], check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    assert img.read_text() == "keep me"
    for opts, size, word in [("subformat=bogus", "1G", "unknown subformat"),
                             ("subformat=monolithicFlat,zeroed_grain=on", "1G",
                              "zeroed_grain"),
                             ("adapter_type=scsi", "1G", "adapter type")]:
        r = run([vmdk, "create", "-o", opts, tmp_path / "n.vmdk", size], check=False)
        assert r.returncode == 1 and word in r.stderr, r.stderr
    r = run([vmdk, "create", tmp_path / "n.vmdk", "1000"], check=False)
    assert r.returncode == 1 and "multiple of 512" in r.stderr
    r = run([vmdk, "create", "-b", tmp_path / "nope.vmdk", tmp_path / "n.vmdk"],
            check=False)
    assert r.returncode == 1 and "not found" in r.stderr
    assert not (tmp_path / "n.vmdk").exists()


def test_create_cleans_up_partial_files(vmdk, tmp_path):
    # the second flat extent exists already: nothing of ours may stay
    (tmp_path / "p-f002.vmdk").write_text("other")
    r = run([vmdk, "create", "-o", "subformat=twoGbMaxExtentFlat",
             tmp_path / "p.vmdk", "3G"], check=False)
    assert r.returncode == 1 and "p-f002.vmdk" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["p-f002.vmdk"]


def test_create_delta_on_parent(vmdk, qemu_img, tmp_path):
    base = tmp_path / "base.vmdk"
    make_raw(tmp_path / "b.raw", 8 * MiB, [(0, 65536), (3 * MiB, 4096)])
    run([vmdk, "convert", "-O", "vmdk", tmp_path / "b.raw", base])
    sub = tmp_path / "snaps"
    sub.mkdir()
    child = sub / "child.vmdk"
    r = run([vmdk, "create", "-b", base, child], check=False)
    assert r.returncode == 0, r.stderr
    text = child.read_bytes()[512:512 * 21].rstrip(b"\0").decode()
    base_cid = [l for l in base.read_bytes()[512:512 * 21].decode(errors="replace")
                .splitlines() if l.startswith("CID=")][0][4:]
    assert f"parentCID={base_cid}" in text
    assert 'parentFileNameHint="../base.vmdk"' in text
    info = qinfo(child)
    assert info["virtual-size"] == 8 * MiB
    assert qcheck(child).returncode == 0
    # the child reads as its parent (qemu follows the hint)
    r = run([qemu_img, "compare", "-f", "raw", tmp_path / "b.raw", child],
            check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # a delta in the parent's own folder gets a bare hint
    run([vmdk, "create", "-b", base, tmp_path / "c2.vmdk", "8M"])
    assert b'parentFileNameHint="base.vmdk"' in (tmp_path / "c2.vmdk").read_bytes()
    r = run([vmdk, "create", "-b", base, tmp_path / "c3.vmdk", "16M"], check=False)
    assert r.returncode == 1 and "differs" in r.stderr


PIECES = [(0, 4096), (70000 // 512 * 512, 200704), (5 * MiB + 123 * 512, MiB),
          (33 * MiB - 512, 1024), (64 * MiB, 65536)]


@pytest.mark.parametrize("sf", SUBFORMATS)
def test_convert_raw_to_each_subformat(vmdk, qemu_img, tmp_path, sf):
    # size not a multiple of the grain; data across a GT boundary (32 MiB)
    size = 80 * MiB + 3 * 512
    src = tmp_path / "src.raw"
    make_raw(src, size, PIECES + [(size - 1536, 1536)])
    dst = tmp_path / "out.vmdk"
    run([vmdk, "convert", "-O", "vmdk", "-o", f"subformat={sf}", src, dst])
    r = qcheck(dst)
    assert r.returncode == 0, r.stdout + r.stderr
    info = qinfo(dst)
    assert info["virtual-size"] == size
    assert info["format-specific"]["data"]["create-type"] == sf
    r = run([qemu_img, "compare", "-f", "raw", "-F", "vmdk", src, dst], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert run([vmdk, "compare", src, dst], check=False).returncode == 0


def test_convert_skips_zeros(vmdk, tmp_path):
    src = tmp_path / "z.raw"
    make_raw(src, 64 * MiB, [(MiB, 65536)])
    with open(src, "r+b") as f:          # explicit zeros, not a hole
        f.seek(8 * MiB)
        f.write(bytes(4 * MiB))
    dst = tmp_path / "z.vmdk"
    run([vmdk, "convert", "-O", "vmdk", src, dst])
    # header + tables (~ 64 KiB aligned) + one grain
    assert os.path.getsize(dst) <= 2 * 65536 + 65536


def test_convert_vmdk_to_vmdk_chain(vmdk, qemu_img, tmp_path):
    src = tmp_path / "s.raw"
    make_raw(src, 16 * MiB, [(0, MiB), (9 * MiB, 8192)])
    run([qemu_img, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         src, tmp_path / "q.vmdk"])
    run([vmdk, "convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
         tmp_path / "q.vmdk", tmp_path / "o.vmdk"])
    assert run([qemu_img, "compare", src, tmp_path / "o.vmdk"],
               check=False).returncode == 0


def test_convert_over_4gib(vmdk, qemu_img, tmp_path):
    size = 5 * 1024 * MiB + 64 * 1024
    src = tmp_path / "big.raw"
    make_raw(src, size, [(0, 4096), (4 * 1024 * MiB + 12345 * 512, 65536),
                         (size - 4096, 4096)])
    for sf in ("monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse"):
        dst = tmp_path / f"{sf}.vmdk"
        run([vmdk, "convert", "-O", "vmdk", "-o", f"subformat={sf}", src, dst])
        assert qcheck(dst).returncode == 0
        r = run([qemu_img, "compare", "-f", "raw", src, dst], check=False)
        assert r.returncode == 0, sf + r.stdout


def test_stream_no_larger_than_qemu(vmdk, qemu_img, tmp_path):
    src = tmp_path / "m.raw"
    # compressible text-like data and random data, with holes
    with open(src, "wb") as f:
        f.truncate(48 * MiB)
        f.seek(0)
        f.write((b"The quick brown fox jumps over the lazy dog. " * 50000)[:2 * MiB])
        f.seek(20 * MiB)
        f.write(os.urandom(MiB))
        f.seek(40 * MiB)
        f.write(bytes(range(256)) * 8192)
    ours, theirs = tmp_path / "o.vmdk", tmp_path / "q.vmdk"
    run([vmdk, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, ours])
    run([qemu_img, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         src, theirs])
    assert os.path.getsize(ours) <= os.path.getsize(theirs)
    assert run([qemu_img, "compare", src, ours], check=False).returncode == 0


def test_stream_incompressible_grains_stored(vmdk, qemu_img, tmp_path):
    # random grains are stored (zlib stored blocks); random bytes that
    # repeat inside a grain still look compressible and are deflated
    src = tmp_path / "r.raw"
    block = os.urandom(4096)
    with open(src, "wb") as f:
        f.write(os.urandom(MiB))
        f.write(block * 256)
        f.write(os.urandom(MiB - 100) + b"a" * 100)
    ours, theirs = tmp_path / "o.vmdk", tmp_path / "q.vmdk"
    run([vmdk, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, ours])
    run([qemu_img, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         src, theirs])
    assert qcheck(ours).returncode == 0
    assert run([qemu_img, "compare", src, ours], check=False).returncode == 0
    assert run([vmdk, "compare", src, ours], check=False).returncode == 0
    # the repeated block compresses: far below 3 MiB
    assert os.path.getsize(ours) < 2 * MiB + 256 * 1024
    # a stored grain is as large as qemu's zlib output for it; for an image
    # this small, the metadata layouts differ by a few sectors
    assert os.path.getsize(ours) <= os.path.getsize(theirs) + 8192


def test_convert_refuses_existing_output(vmdk, tmp_path):
    src = tmp_path / "a.raw"
    make_raw(src, MiB, [(0, 512)])
    dst = tmp_path / "a.vmdk"
    dst.write_text("x")
    r = run([vmdk, "convert", "-O", "vmdk", src, dst], check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    assert dst.read_text() == "x"


def test_convert_raw_output_unchanged(vmdk, tmp_path):
    src = tmp_path / "a.raw"
    make_raw(src, 4 * MiB, [(4096, 8192)])
    run([vmdk, "convert", "-O", "vmdk", src, tmp_path / "a.vmdk"])
    run([vmdk, "convert", "-O", "raw", tmp_path / "a.vmdk", tmp_path / "b.raw"])
    assert (tmp_path / "b.raw").read_bytes() == src.read_bytes()


# ---- vmdk resize ------------------------------------------------------------

def qcompare(a, b, *fmt):
    return run([need("qemu-img"), "compare", *fmt, a, b], check=False)


@pytest.mark.parametrize("maker", ["qemu", "ovk"])
def test_resize_grow_monolithic_sparse(vmdk, qemu_img, tmp_path, maker):
    img, raw = tmp_path / "a.vmdk", tmp_path / "a.raw"
    make_raw(raw, 100 * MiB, [(0, 65536), (99 * MiB, MiB)])
    if maker == "qemu":
        run([qemu_img, "convert", "-O", "vmdk", "-f", "raw", raw, img])
    else:
        run([vmdk, "convert", "-O", "vmdk", raw, img])
    run([vmdk, "resize", img, "+300M"])
    assert qinfo(img)["virtual-size"] == 400 * MiB
    assert qcheck(img).returncode == 0, qcheck(img).stdout
    with open(raw, "r+b") as f:
        f.truncate(400 * MiB)
    assert qcompare(img, raw, "-F", "raw").returncode == 0
    # both writers allocate in the new span; both checkers agree
    run([need("qemu-io"), "-c", "write -P 4 390M 1M", img])
    run([vmdk, "bench", "-w", "-c", "10", "-s", "64k", "-o", "350M",
         "--pattern", "9", img])
    assert qcheck(img).returncode == 0
    assert run([vmdk, "check", img], check=False).returncode == 0
    run([need("qemu-io"), "-f", "raw", "-c", "write -P 4 390M 1M",
         "-c", "write -P 9 350M 640k", raw])
    assert qcompare(img, raw, "-F", "raw").returncode == 0


def test_resize_sparse_refusals(vmdk, qemu_img, tmp_path):
    img = tmp_path / "a.vmdk"
    run([qemu_img, "create", "-q", "-f", "vmdk", img, "100M"])
    run([need("qemu-io"), "-c", "write -P 1 90M 64k", img])
    r = run([vmdk, "resize", img, "50M"], check=False)
    assert r.returncode == 1 and "--shrink" in r.stderr
    r = run([vmdk, "resize", "--shrink", img, "50M"], check=False)
    assert r.returncode == 1 and "holds grains" in r.stderr
    run([vmdk, "resize", "--shrink", img, "95M"])
    assert qinfo(img)["virtual-size"] == 95 * MiB
    assert qcheck(img).returncode == 0
    for sf in ("streamOptimized", "vmfsSparse"):
        p = tmp_path / f"{sf}.vmdk"
        run([vmdk, "create", "-o", f"subformat={sf}", p, "64M"])
        r = run([vmdk, "resize", p, "128M"], check=False)
        assert r.returncode == 1 and "not supported" in r.stderr, r.stderr
        assert sf in r.stderr
    base, child = tmp_path / "b.vmdk", tmp_path / "c.vmdk"
    run([vmdk, "create", base, "64M"])
    run([vmdk, "create", "-b", base, child])
    r = run([vmdk, "resize", child, "128M"], check=False)
    assert r.returncode == 1 and "delta" in r.stderr


def test_resize_raw_grow_and_shrink(vmdk, qemu_img, tmp_path):
    """A raw image resizes as qemu-img resize does it: grows with zeros,
    shrinks only with --shrink, keeping the bytes before the new end."""
    img, ref = tmp_path / "r.img", tmp_path / "ref.raw"
    make_raw(img, 16 * MiB, [(0, 4096), (15 * MiB, MiB)])
    ref.write_bytes(img.read_bytes())
    run([vmdk, "resize", img, "+8M"])
    assert qinfo(img)["format"] == "raw"
    assert os.path.getsize(img) == 24 * MiB
    with open(ref, "r+b") as f:
        f.truncate(24 * MiB)
    assert qcompare(img, ref, "-f", "raw", "-F", "raw").returncode == 0
    r = run([vmdk, "resize", img, "8M"], check=False)
    assert r.returncode == 1 and "--shrink" in r.stderr, r.stderr
    assert os.path.getsize(img) == 24 * MiB
    run([vmdk, "resize", "--shrink", img, "-16M"])
    assert os.path.getsize(img) == 8 * MiB
    with open(ref, "r+b") as f:
        f.truncate(8 * MiB)
    assert qcompare(img, ref, "-f", "raw", "-F", "raw").returncode == 0
    r = run([vmdk, "resize", img, "1000"], check=False)
    assert r.returncode == 1 and "multiple of 512" in r.stderr, r.stderr


def test_resize_flat_grow_and_shrink(vmdk, qemu_img, tmp_path):
    img, raw = tmp_path / "f.vmdk", tmp_path / "f.raw"
    make_raw(raw, 64 * MiB, [(0, 4096), (63 * MiB, MiB)])
    run([vmdk, "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", raw, img])
    run([vmdk, "resize", img, "+64M"])
    assert qinfo(img)["virtual-size"] == 128 * MiB
    assert os.path.getsize(tmp_path / "f-flat.vmdk") == 128 * MiB
    assert qcheck(img).returncode == 0
    with open(raw, "r+b") as f:
        f.truncate(128 * MiB)
    assert qcompare(img, raw, "-F", "raw").returncode == 0
    r = run([vmdk, "resize", img, "32M"], check=False)
    assert r.returncode == 1 and "--shrink" in r.stderr
    run([vmdk, "resize", "--shrink", img, "-96M"])
    assert qinfo(img)["virtual-size"] == 32 * MiB
    assert os.path.getsize(tmp_path / "f-flat.vmdk") == 32 * MiB
    with open(raw, "r+b") as f:
        f.truncate(32 * MiB)
    assert qcompare(img, raw, "-F", "raw").returncode == 0


def test_resize_two_gb_flat_adds_extents(vmdk, qemu_img, tmp_path):
    img = tmp_path / "t.vmdk"
    run([qemu_img, "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat",
         img, "1G"])
    run([need("qemu-io"), "-c", "write -P 7 1023M 1M", img])
    run([vmdk, "resize", img, "5G"])
    assert sorted(os.listdir(tmp_path)) == ["t-f001.vmdk", "t-f002.vmdk",
                                            "t-f003.vmdk", "t.vmdk"]
    assert qinfo(img)["virtual-size"] == 5 << 30
    assert qcheck(img).returncode == 0
    run([need("qemu-io"), "-c", "write -P 8 4G 1M", img])
    run([need("qemu-io"), "-r", "-c", "read -P 7 1023M 1M", "-c", "read -P 8 4G 1M",
         "-c", "read -P 0 2G 1M", img])
    text = img.read_text()
    assert 'RW 4192256 FLAT "t-f002.vmdk" 0' in text
    assert run([vmdk, "compare", img, img]).returncode == 0


def test_resize_sparse_moves_full_directory(vmdk, qemu_img, tmp_path):
    # qemu's 100M image: one directory sector, room for 128 tables of
    # 32 MiB = 4 GiB; 5G needs 160, so the directory moves to the end
    img, raw = tmp_path / "a.vmdk", tmp_path / "a.raw"
    make_raw(raw, 100 * MiB, [(0, MiB), (90 * MiB, 65536)])
    run([qemu_img, "convert", "-O", "vmdk", "-f", "raw", raw, img])
    run([vmdk, "resize", img, "5G"])
    assert qinfo(img)["virtual-size"] == 5 << 30
    assert qcheck(img).returncode == 0, qcheck(img).stdout
    assert run([vmdk, "check", img], check=False).returncode == 0
    with open(raw, "r+b") as f:
        f.truncate(5 << 30)
    assert qcompare(img, raw, "-F", "raw").returncode == 0
    run([need("qemu-io"), "-c", "write -P 4 4G 1M", img])
    run([vmdk, "bench", "-w", "-c", "10", "-s", "64k", "-o", "4600M",
         "--pattern", "9", img])
    assert qcheck(img).returncode == 0
    assert run([vmdk, "check", img], check=False).returncode == 0
    run([need("qemu-io"), "-f", "raw", "-c", "write -P 4 4G 1M",
         "-c", "write -P 9 4600M 640k", raw])
    assert qcompare(img, raw, "-F", "raw").returncode == 0
    # and again, from the moved directory
    run([vmdk, "resize", img, "+20G"])
    assert qcheck(img).returncode == 0
    assert run([vmdk, "check", img], check=False).returncode == 0
    with open(raw, "r+b") as f:
        f.truncate(25 << 30)
    assert qcompare(img, raw, "-F", "raw").returncode == 0


def test_resize_two_gb_sparse_adds_extents(vmdk, qemu_img, tmp_path):
    img = tmp_path / "t.vmdk"
    run([qemu_img, "create", "-q", "-f", "vmdk", "-o",
         "subformat=twoGbMaxExtentSparse", img, "1G"])
    run([need("qemu-io"), "-c", "write -P 7 1023M 1M", img])
    run([vmdk, "resize", img, "5G"])
    assert sorted(os.listdir(tmp_path)) == ["t-s001.vmdk", "t-s002.vmdk",
                                            "t-s003.vmdk", "t.vmdk"]
    text = img.read_text()
    assert 'RW 4192256 SPARSE "t-s001.vmdk"' in text
    assert 'RW 2101248 SPARSE "t-s003.vmdk"' in text
    assert qinfo(img)["virtual-size"] == 5 << 30
    assert qcheck(img).returncode == 0
    assert run([vmdk, "check", img], check=False).returncode == 0
    run([need("qemu-io"), "-c", "write -P 8 4G 1M", "-c", "write -P 9 1500M 64k",
         img])
    run([need("qemu-io"), "-r", "-c", "read -P 7 1023M 1M", "-c", "read -P 8 4G 1M",
         "-c", "read -P 9 1500M 64k", "-c", "read -P 0 2G 1M", img])
    assert qcheck(img).returncode == 0
    assert run([vmdk, "check", img], check=False).returncode == 0
    r = run([vmdk, "resize", "--shrink", img, "4G"], check=False)
    assert r.returncode == 1 and "holds grains" in r.stderr


def _images(tmp_path, kind, qemu_img):
    """A fresh image of kind and its raw twin; returns (img, raw, new size)."""
    d = tmp_path / "img"
    if d.exists():
        for f in d.iterdir():
            f.unlink()
    d.mkdir(exist_ok=True)
    raw = d / "a.raw"
    img = d / "a.vmdk"
    if kind == "monolithicSparse":
        make_raw(raw, 100 * MiB, [(0, MiB), (90 * MiB, 65536)])
        run([qemu_img, "convert", "-O", "vmdk", "-f", "raw", raw, img])
        return img, raw, 5 << 30
    make_raw(raw, 1 << 30, [(0, MiB), (1023 * MiB, MiB)])
    run([qemu_img, "convert", "-O", "vmdk", "-o", f"subformat={kind}",
         "-f", "raw", raw, img])
    return img, raw, 5 << 30


@pytest.mark.parametrize("kind", ["monolithicSparse", "twoGbMaxExtentSparse",
                                  "twoGbMaxExtentFlat"])
def test_resize_interrupted_then_rerun(vmdk, qemu_img, tmp_path, kind):
    # die at each durable step in turn: the image stays valid (old size,
    # or the new one once the last step is done) and a rerun finishes
    step = 0
    while True:
        step += 1
        img, raw, new = _images(tmp_path, kind, qemu_img)
        old = os.path.getsize(raw)
        env = dict(os.environ, OVK_TEST_RESIZE_CRASH=str(step))
        r = run([vmdk, "resize", img, str(new)], check=False, env=env)
        if r.returncode == 0:
            break
        assert r.returncode == 86, r.stderr
        assert qcheck(img).returncode == 0, (step, qcheck(img).stdout)
        assert run([vmdk, "check", img], check=False).returncode in (0, 3), step
        size = qinfo(img)["virtual-size"]
        # QEMU sizes a sparse extent by its header: once the last extent's
        # header has grown (and before the descriptor names the new
        # extents) it sees that extent's full 2047 MiB
        assert size in (old, new) or (kind == "twoGbMaxExtentSparse" and
                                      size == 4192256 * 512), (step, size)
        with open(raw, "r+b") as f:
            f.truncate(size)
        assert qcompare(img, raw, "-F", "raw").returncode == 0, step
        run([vmdk, "resize", img, str(new)])
        assert qinfo(img)["virtual-size"] == new
        assert qcheck(img).returncode == 0, step
        assert run([vmdk, "check", img], check=False).returncode in (0, 3), step
        with open(raw, "r+b") as f:
            f.truncate(new)
        assert qcompare(img, raw, "-F", "raw").returncode == 0, step
    assert step > 2
