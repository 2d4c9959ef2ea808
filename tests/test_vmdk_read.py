# SPDX-License-Identifier: Apache-2.0
"""The engine reads every VMDK subformat QEMU can write, byte for byte as
qemu-img does: images are made and filled with qemu-img/qemu-io, then
`vmdk convert -O raw` must equal `qemu-img convert -O raw`, and `vmdk map`
must agree with `qemu-img map` on where data lies."""
import json
import os
import tempfile

import pytest

from conftest import _data_ranges, assert_same_file, need, run

MiB = 1 << 20
GiB = 1 << 30
ODD = 10 * MiB + 3 * 512  # not a multiple of the 64 KiB grain

# (qemu-io command) applied in order; sizes chosen to cross grains, leave
# holes, zero data, and touch the last (partial) grain.
WRITES = [
    "write -P 0x11 0 66048",            # grain 0 + one sector of grain 1
    "write -P 0x22 1049088 3072",       # unaligned, inside a grain
    "write -P 0x33 2M 192k",
    "write -z 2162688 64k",             # a whole grain zeroed inside data
    "write -z 2M 1k",                   # partial zero at a grain start
    "write -P 0x44 4194000 1000",       # odd offset and length
    f"write -P 0x55 {ODD - 1536} 1536",  # the last sectors of the disk
]

SUBFORMATS = [
    ("monolithicSparse", False),
    ("monolithicSparse", True),
    ("monolithicFlat", False),
    ("twoGbMaxExtentSparse", False),
    ("twoGbMaxExtentSparse", True),
    ("twoGbMaxExtentFlat", False),
]


def qemu_create(path, size, subformat="monolithicSparse", zeroed=False,
                backing=None):
    opts = [f"subformat={subformat}"]
    if zeroed:
        opts.append("zeroed_grain=on")
    cmd = [need("qemu-img"), "create", "-q", "-f", "vmdk", "-o",
           ",".join(opts)]
    if backing:
        cmd += ["-b", backing, "-F", "vmdk"]
    run(cmd + [path, str(size)])


def qemu_write(path, cmds):
    args = [need("qemu-io"), "-f", "vmdk"]
    for c in cmds:
        args += ["-c", c]
    r = run(args + [path])
    assert "error" not in r.stdout.lower(), r.stdout


def assert_reads_like_qemu(vmdk, img, tmp_path, name="x"):
    ours = tmp_path / f"{name}.ours.raw"
    peer = tmp_path / f"{name}.qemu.raw"
    run([need("qemu-img"), "convert", "-f", "vmdk", "-O", "raw", img, peer])
    run([vmdk, "convert", "-O", "raw", img, ours])
    assert os.path.getsize(ours) == os.path.getsize(peer)
    assert_same_file(ours, peer)
    return ours, peer


@pytest.mark.parametrize("subformat,zeroed", SUBFORMATS,
                         ids=[f"{s}{'-zeroed' if z else ''}"
                              for s, z in SUBFORMATS])
def test_subformat_reads_like_qemu(vmdk, tmp_path, subformat, zeroed):
    img = str(tmp_path / "disk.vmdk")
    qemu_create(img, ODD, subformat, zeroed)
    qemu_write(img, WRITES)
    assert_reads_like_qemu(vmdk, img, tmp_path)


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat"])
def test_empty_image_reads_zeros(vmdk, tmp_path, subformat):
    img = str(tmp_path / "empty.vmdk")
    qemu_create(img, 3 * MiB, subformat)
    ours, _ = assert_reads_like_qemu(vmdk, img, tmp_path)
    assert open(ours, "rb").read() == bytes(3 * MiB)


def test_stream_optimized_from_raw(vmdk, tmp_path):
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(ODD)
    qemu_write_raw = [need("qemu-io"), "-f", "raw"]
    for c in WRITES:
        qemu_write_raw += ["-c", c]
    run(qemu_write_raw + [raw])
    img = str(tmp_path / "stream.vmdk")
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "vmdk", "-o",
         "subformat=streamOptimized", raw, img])
    ours, _ = assert_reads_like_qemu(vmdk, img, tmp_path)
    assert_same_file(ours, raw)


def test_stream_optimized_two_threads(vmdk, tmp_path):
    """Compressed image read by two worker threads, each on its own queue."""
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        for i in range(96):  # 6 MiB of distinct, compressible grains
            f.write(bytes([i % 251 + 1]) * (32 << 10) + os.urandom(32 << 10))
    img = str(tmp_path / "stream.vmdk")
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "vmdk", "-o",
         "subformat=streamOptimized", raw, img])
    for threads in ("1", "2", "4"):
        out = tmp_path / f"out{threads}.raw"
        run([vmdk, "convert", "--threads", threads, "-m", "16", "-O", "raw",
             img, out])
        assert_same_file(out, raw)


@pytest.mark.parametrize("base_fmt", ["monolithicSparse", "monolithicFlat",
                                      "twoGbMaxExtentSparse"])
def test_delta_chain_reads_like_qemu(vmdk, tmp_path, base_fmt):
    base = str(tmp_path / "base.vmdk")
    mid = str(tmp_path / "mid.vmdk")
    top = str(tmp_path / "top.vmdk")
    qemu_create(base, ODD, base_fmt)
    qemu_write(base, WRITES)
    qemu_create(mid, ODD, backing="base.vmdk")
    qemu_write(mid, ["write -P 0xa1 64k 64k", "write -P 0xa2 2100000 5000",
                     "write -z 0 4k"])
    qemu_create(top, ODD, backing="mid.vmdk")
    qemu_write(top, ["write -P 0xb1 5M 1M", "write -z 2M 128k",
                     f"write -P 0xb2 {ODD - 512} 512"])
    assert_reads_like_qemu(vmdk, mid, tmp_path, "mid")
    assert_reads_like_qemu(vmdk, top, tmp_path, "top")
    info = json.loads(run([vmdk, "info", "--output=json", top]).stdout)
    chain = info["chain"]
    assert [os.path.basename(c["filename"]) for c in chain] == \
        ["top.vmdk", "mid.vmdk", "base.vmdk"]
    assert chain[0]["parent-cid"] == chain[1]["cid"]
    assert chain[1]["parent-cid"] == chain[2]["cid"]
    assert chain[2]["parent-cid"] == "ffffffff"


@pytest.mark.parametrize("subformat", ["monolithicSparse",
                                       "twoGbMaxExtentSparse",
                                       "twoGbMaxExtentFlat"])
def test_over_4gib(vmdk, tmp_path, subformat):
    img = str(tmp_path / "big.vmdk")
    size = 6 * GiB
    qemu_create(img, size, subformat)
    qemu_write(img, [
        "write -P 0x61 0 4k",
        f"write -P 0x62 {2 * GiB - 512} 1k",     # across the 2 GiB mark
        f"write -P 0x63 {4 * GiB - 32768} 64k",  # across 4 GiB
        f"write -P 0x64 {size - 65536 - 512} 65536",
        f"write -P 0x65 {size - 512} 512",
    ])
    ours, _ = assert_reads_like_qemu(vmdk, img, tmp_path)
    with open(ours, "rb") as f:
        f.seek(4 * GiB - 32768)
        assert f.read(65536) == b"\x63" * 65536
        f.seek(size - 512)
        assert f.read() == b"\x65" * 512


def _data_set(entries):
    """Merged [start, end) ranges where a map says data is stored."""
    out = []
    for e in sorted(entries, key=lambda e: e["start"]):
        if not e["data"]:
            continue
        s, t = e["start"], e["start"] + e["length"]
        if out and out[-1][1] == s:
            out[-1][1] = t
        else:
            out.append([s, t])
    return out


@pytest.mark.parametrize("subformat,zeroed", SUBFORMATS,
                         ids=[f"{s}{'-zeroed' if z else ''}"
                              for s, z in SUBFORMATS])
def test_map_agrees_with_qemu(vmdk, tmp_path, subformat, zeroed):
    img = str(tmp_path / "disk.vmdk")
    qemu_create(img, ODD, subformat, zeroed)
    qemu_write(img, WRITES)
    peer = json.loads(run([need("qemu-img"), "map", "--output=json", "-f",
                           "vmdk", img]).stdout)
    ours = json.loads(run([vmdk, "map", "--output=json", img]).stdout)
    assert _data_set(ours) == _data_set(peer)
    # our map covers the disk exactly, in order
    pos = 0
    for e in ours:
        assert e["start"] == pos and e["length"] > 0
        pos += e["length"]
    assert pos == ODD


def test_map_of_chain_depths(vmdk, tmp_path):
    base = str(tmp_path / "base.vmdk")
    top = str(tmp_path / "top.vmdk")
    qemu_create(base, 4 * MiB)
    qemu_write(base, ["write -P 1 0 128k"])
    qemu_create(top, 4 * MiB, backing="base.vmdk")
    qemu_write(top, ["write -P 2 64k 64k"])
    peer = json.loads(run([need("qemu-img"), "map", "--output=json", top]).stdout)
    ours = json.loads(run([vmdk, "map", "--output=json", top]).stdout)
    assert _data_set(ours) == _data_set(peer)

    def depth_at(entries, off):
        for e in entries:
            if e["start"] <= off < e["start"] + e["length"]:
                return e["depth"], e["data"]
    for off in (0, 64 << 10, 3 * MiB):
        assert depth_at(ours, off) == depth_at(peer, off), off


@pytest.mark.parametrize("subformat", ["monolithicSparse", "twoGbMaxExtentFlat"])
def test_info_json(vmdk, tmp_path, subformat):
    img = str(tmp_path / "disk.vmdk")
    qemu_create(img, ODD, subformat)
    qemu_write(img, ["write -P 7 0 128k"])
    info = json.loads(run([vmdk, "info", "--output=json", img]).stdout)
    peer = json.loads(run([need("qemu-img"), "info", "--output=json",
                           img]).stdout)
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == peer["virtual-size"] == ODD
    assert info["create-type"] == subformat
    fs = peer.get("format-specific", {}).get("data", {})
    if "cid" in fs:
        assert int(info["cid"], 16) == fs["cid"]
        assert int(info["parent-cid"], 16) == fs["parent-cid"]
    assert len(info["chain"]) == 1
    ext = info["extents"]
    assert ext, info
    assert sum(e["size"] for e in ext) == ODD
    pos = 0
    for e in ext:
        assert e["offset"] == pos
        pos += e["size"]
        assert e["access"] == "RW"
        assert e["type"] == ("SPARSE" if "Sparse" in subformat else "FLAT")
        assert os.path.exists(e["filename"]) or os.path.exists(
            os.path.join(tmp_path, e["filename"]))
    if subformat == "monolithicSparse":
        assert info["cluster-size"] == 65536
        assert info["allocation"]["data"] == 128 << 10
        assert info["allocation"]["unallocated"] == ODD - (128 << 10)
    a = info["allocation"]
    assert a["data"] + a["zero"] + a["unallocated"] == ODD


def test_info_shows_disk_database(vmdk, tmp_path):
    """The descriptor's ddb.* entries, as qemu-img wrote them, in both
    outputs; a hand-made descriptor's repeated key keeps its first value,
    and backslashes and UTF-8 in values come out as valid JSON."""
    img = tmp_path / "disk.vmdk"
    run([need("qemu-img"), "create", "-q", "-f", "vmdk", "-o",
         "adapter_type=lsilogic,hwversion=6", img, "1G"])
    info = json.loads(run([vmdk, "info", "--output=json", img]).stdout)
    ddb = info["ddb"]
    assert ddb["adapterType"] == "lsilogic" and ddb["virtualHWVersion"] == "6"
    assert {"geometry.cylinders", "geometry.heads", "geometry.sectors"} <= set(ddb)
    text = run([vmdk, "info", img]).stdout
    assert "disk database:\n" in text and "    adapterType = lsilogic\n" in text

    (tmp_path / "f.bin").write_bytes(bytes(MiB))
    hand = tmp_path / "hand.vmdk"
    hand.write_text('# Disk DescriptorFile\nversion=1\nCID=12345678\n'
                    'parentCID=ffffffff\ncreateType="monolithicFlat"\n'
                    'RW 2048 FLAT "f.bin" 0\n'
                    'ddb.adapterType = "ide"\n'
                    'ddb.comment = "caf\u00e9 \\\\ back"\n'
                    'ddb.adapterType = "buslogic"\n', encoding="utf-8")
    ddb = json.loads(run([vmdk, "info", "--output=json", hand]).stdout)["ddb"]
    assert ddb == {"adapterType": "ide", "comment": "caf\u00e9 \\\\ back"}, ddb

    raw = tmp_path / "r.raw"
    raw.write_bytes(bytes(MiB))
    info = json.loads(run([vmdk, "info", "--output=json", "-f", "raw", raw]).stdout)
    assert info["ddb"] == {}


def test_compare(vmdk, tmp_path):
    img = str(tmp_path / "disk.vmdk")
    qemu_create(img, ODD)
    qemu_write(img, WRITES)
    raw = tmp_path / "disk.raw"
    run([need("qemu-img"), "convert", "-O", "raw", img, raw])
    r = run([vmdk, "compare", img, raw], check=False)
    assert r.returncode == 0, r.stderr
    assert "identical" in r.stdout
    # a different byte deep inside a data grain
    qemu_write(img, ["write -P 0x99 2228736 512"])
    r = run([vmdk, "compare", img, raw], check=False)
    assert r.returncode == 1, r.stderr
    assert "Content mismatch at offset 2228736!" in r.stdout
    peer = run([need("qemu-img"), "compare", img, str(raw)], check=False)
    assert peer.returncode == 1
    assert "2228736" in peer.stdout
    # in a hole of one side
    img2 = str(tmp_path / "b.vmdk")
    qemu_create(img2, ODD)
    qemu_write(img2, WRITES + ["write -P 0x9 8M 512"])
    img3 = str(tmp_path / "c.vmdk")
    qemu_create(img3, ODD)
    qemu_write(img3, WRITES)
    r = run([vmdk, "compare", img2, img3], check=False)
    assert r.returncode == 1 and f"offset {8 * MiB}!" in r.stdout


def test_compare_different_sizes(vmdk, tmp_path):
    a = str(tmp_path / "a.vmdk")
    b = str(tmp_path / "b.vmdk")
    qemu_create(a, 4 * MiB)
    qemu_create(b, 6 * MiB)
    qemu_write(a, ["write -P 3 1M 64k"])
    qemu_write(b, ["write -P 3 1M 64k", "write -z 5M 64k"])
    r = run([vmdk, "compare", a, b], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    qemu_write(b, ["write -P 4 5M 512"])
    r = run([vmdk, "compare", a, b], check=False)
    assert r.returncode == 1
    assert f"Content mismatch at offset {5 * MiB}!" in r.stdout
    r = run([vmdk, "compare", b, a], check=False)
    assert r.returncode == 1
    assert f"Content mismatch at offset {5 * MiB}!" in r.stdout


def test_compare_error_exit_2(vmdk, tmp_path):
    a = str(tmp_path / "a.vmdk")
    qemu_create(a, MiB)
    r = run([vmdk, "compare", a, tmp_path / "missing.vmdk"], check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("vmdk: ") and "missing.vmdk" in r.stderr


def _traced_syscalls(cmd, names):
    """Run cmd under strace -f; return {syscall: successful calls}."""
    strace = need("strace")
    env = dict(os.environ)
    # LeakSanitizer cannot run under ptrace; other runs check for leaks
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    r = run([strace, "-f", "-qq", "-e", "trace=" + ",".join(names),
             "-e", "signal=none", "-o", "/dev/stderr"] + [str(c) for c in cmd],
            env=env)
    counts = dict.fromkeys(names, 0)
    for line in r.stderr.splitlines():
        for n in names:
            if f"{n}(" in line and "= -1" not in line:
                counts[n] += 1
    return counts


def _image_with_zeros_inside_data(tmp_path):
    """A sparse image whose data includes written zero blocks and holes."""
    img = str(tmp_path / "z.vmdk")
    qemu_create(img, ODD)
    qemu_write(img, WRITES + ["write -P 0 3M 256k",     # zeros stored as data
                              "write -P 0x66 3200k 4k"])
    return img


def test_convert_copies_in_the_kernel(vmdk, tmp_path):
    """Raw output moves uncompressed data with copy_file_range, not through
    the engine's reads and a buffer; written zeros still become holes."""
    img = _image_with_zeros_inside_data(tmp_path)
    peer = tmp_path / "peer.raw"
    run([need("qemu-img"), "convert", "-f", "vmdk", "-O", "raw", img, peer])
    ours = tmp_path / "ours.raw"
    n = _traced_syscalls([vmdk, "convert", "-O", "raw", img, ours],
                         ["copy_file_range", "pwrite64", "io_uring_enter"])
    assert n["copy_file_range"] > 0, n
    assert n["pwrite64"] == 0 and n["io_uring_enter"] == 0, n
    assert_same_file(ours, peer)
    assert _data_ranges(ours) == _data_ranges(peer)  # the same holes


def test_convert_to_another_file_system(vmdk, tmp_path):
    """Across file systems (tmpfs output) copy_file_range says EXDEV; the
    data is written from a mapping of the source pages, still not read
    through the engine; same bytes, same holes, also with -S 0."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system other than the tests'")
    img = _image_with_zeros_inside_data(tmp_path)
    peer = tmp_path / "peer.raw"
    run([need("qemu-img"), "convert", "-f", "vmdk", "-O", "raw", img, peer])
    with tempfile.TemporaryDirectory(dir=shm) as d:
        ours = os.path.join(d, "ours.raw")
        for sparse in ("4k", "0"):
            n = _traced_syscalls([vmdk, "convert", "-S", sparse, "-O", "raw",
                                  img, ours],
                                 ["pwrite64", "io_uring_enter"])
            assert n["pwrite64"] > 0 and n["io_uring_enter"] == 0, n
            assert_same_file(ours, peer)
            if sparse != "0":
                assert _data_ranges(ours) == _data_ranges(peer)


def test_convert_force_share_reads_through_engine(vmdk, tmp_path):
    """-U never maps SRC's files (a writer could shrink them): the engine
    reads, pwrite writes, and the bytes are the same."""
    img = _image_with_zeros_inside_data(tmp_path)
    peer = tmp_path / "peer.raw"
    run([need("qemu-img"), "convert", "-f", "vmdk", "-O", "raw", img, peer])
    ours = tmp_path / "ours.raw"
    n = _traced_syscalls([vmdk, "convert", "-U", "-O", "raw", img, ours],
                         ["copy_file_range", "pwrite64"])
    assert n["copy_file_range"] == 0 and n["pwrite64"] > 0, n
    assert_same_file(ours, peer)
