# SPDX-License-Identifier: Apache-2.0
"""Writing VMDKs through the engine: images qemu-img makes, modified by a
seeded workload (tests/c/vmdk_workload.c) that also writes a raw shadow;
qemu-img check must find no errors and qemu-img compare must see the
shadow. Crash tests kill -9 the writer and check that every write before
the last completed flush survived. Snapshot and commit go through the
`vmdk` tool."""
import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import tool

MiB = 1 << 20


def sh(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check,
                          capture_output=True, text=True, **kw)


def qemu_check(img):
    r = sh("qemu-img", "check", img, check=False)
    # 0: clean; 3: only leaked clusters (allowed after a crash)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    assert "ERROR" not in r.stdout and "corrupt" not in r.stdout.lower(), r.stdout
    return r


def qemu_same(img, raw):
    r = sh("qemu-img", "compare", "-f", "vmdk", "-F", "raw", img, raw,
           check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def workload(img, *args, check=True):
    return sh(tool("vmdk_workload"), "run", img, *args, check=check)


def new_raw(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


def qemu_create(path, size, *opts, backing=None):
    cmd = ["qemu-img", "create", "-q", "-f", "vmdk"]
    for o in opts:
        cmd += ["-o", o]
    if backing:
        cmd += ["-b", backing, "-F", "vmdk"]
    cmd += [path, str(size)]
    sh(*cmd)


SUBFORMATS = [
    ("monolithicSparse", []),
    ("monolithicSparse-zeroed", ["zeroed_grain=on"]),
    ("twoGbMaxExtentSparse", ["subformat=twoGbMaxExtentSparse"]),
    ("twoGbMaxExtentSparse-zeroed",
     ["subformat=twoGbMaxExtentSparse", "zeroed_grain=on"]),
    ("monolithicFlat", ["subformat=monolithicFlat"]),
]


@pytest.mark.parametrize("name,opts", SUBFORMATS, ids=[s[0] for s in SUBFORMATS])
@pytest.mark.parametrize("depth", [1, 32])
def test_random_workload_matches_shadow(tmp_path, name, opts, depth):
    img, raw = tmp_path / "d.vmdk", tmp_path / "s.raw"
    qemu_create(img, 24 * MiB, *opts)
    new_raw(raw, 24 * MiB)
    workload(img, "--shadow", raw, "--ops", 3000, "--seed", depth * 7 + len(opts),
             "--depth", depth)
    qemu_check(img)
    qemu_same(img, raw)
    # qemu can read and write it after us
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x77 1M 4k", img)
    sh("qemu-io", "-f", "raw", "-c", "write -P 0x77 1M 4k", raw)
    qemu_check(img)
    qemu_same(img, raw)


def test_delta_child_fills_new_grains_from_parent(tmp_path):
    base, child, raw = tmp_path / "base.vmdk", tmp_path / "c.vmdk", tmp_path / "s.raw"
    qemu_create(base, 16 * MiB)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 16M", base)
    qemu_create(child, 16 * MiB, backing="base.vmdk")
    sh("qemu-img", "convert", "-O", "raw", base, raw)
    before = sh("qemu-img", "info", base).stdout
    workload(child, "--shadow", raw, "--ops", 2000, "--seed", 11, "--depth", 4)
    qemu_check(child)
    qemu_same(child, raw)
    # the parent is untouched and the child still matches its CID
    assert sh("qemu-img", "info", base).stdout == before
    sh("qemu-img", "compare", "-f", "vmdk", "-F", "raw", child, raw)


def test_concurrent_writers_share_grains(tmp_path):
    img, raw = tmp_path / "d.vmdk", tmp_path / "s.raw"
    qemu_create(img, 8 * MiB)
    new_raw(raw, 8 * MiB)
    workload(img, "--shadow", raw, "--threads", 8)
    r = qemu_check(img)
    qemu_same(img, raw)
    # each grain allocated once: the file holds no more grains than the disk
    assert os.path.getsize(img) < 8 * MiB + 1 * MiB, r.stdout


def read_header_unclean(path):
    with open(path, "rb") as f:
        f.seek(72)
        return f.read(1)[0]


def desc_cid(path):
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    for line in data.split(b"\n"):
        if line.startswith(b"CID="):
            return line[4:12].decode()
    return None


def test_clean_close_and_new_cid(tmp_path):
    img, raw = tmp_path / "d.vmdk", tmp_path / "s.raw"
    qemu_create(img, 4 * MiB)
    new_raw(raw, 4 * MiB)
    cid0 = desc_cid(img)
    workload(img, "--shadow", raw, "--ops", 50, "--seed", 1)
    cid1 = desc_cid(img)
    assert cid1 and cid1 != cid0 and cid1 not in ("ffffffff", "fffffffe")
    assert read_header_unclean(img) == 0
    qemu_check(img)


def test_descriptor_file_cid_rewritten(tmp_path):
    img, raw = tmp_path / "d.vmdk", tmp_path / "s.raw"
    qemu_create(img, 4 * MiB, "subformat=twoGbMaxExtentSparse")
    new_raw(raw, 4 * MiB)
    cid0 = desc_cid(img)
    workload(img, "--shadow", raw, "--ops", 50, "--seed", 2)
    assert desc_cid(img) != cid0
    assert not [p for p in os.listdir(tmp_path) if "ovk-tmp" in p]
    qemu_check(img)
    qemu_same(img, raw)


def test_rdonly_extent_refuses_writes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\0" * MiB)
    (tmp_path / "b.bin").write_bytes(b"\0" * MiB)
    (tmp_path / "d.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        'RW 2048 FLAT "a.bin" 0\nRDONLY 2048 FLAT "b.bin" 0\n')
    r = sh(tool("vmdk"), "bench", "-w", "-c", "1", "-s", "4k", "-o", str(MiB + 4096),
           tmp_path / "d.vmdk", check=False)
    assert r.returncode != 0
    assert "read-only" in r.stderr, r.stderr
    # a write that crosses from the RW extent into the RDONLY one fails too
    r = sh(tool("vmdk"), "bench", "-w", "-c", "1", "-s", "8k", "-o", str(MiB - 4096),
           tmp_path / "d.vmdk", check=False)
    assert r.returncode != 0 and "read-only" in r.stderr, r.stderr


def test_second_writer_refused(tmp_path):
    img = tmp_path / "d.vmdk"
    qemu_create(img, 64 * MiB)
    p = subprocess.Popen([tool("vmdk_workload"), "run", str(img), "--ops",
                          "100000", "--progress", "--flush-every", "1"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("start")
        r = workload(img, "--ops", "1", check=False)
        assert r.returncode != 0
        assert "in use" in r.stderr, r.stderr
    finally:
        p.kill()
        p.wait()


def run_until_killed(cmd, kill_after):
    """Runs cmd, kills it with SIGKILL after kill_after seconds; returns
    its stdout lines."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, text=True)
    time.sleep(kill_after)
    p.send_signal(signal.SIGKILL)
    out, _ = p.communicate()
    return out.splitlines()


@pytest.mark.parametrize("opts", [[], ["zeroed_grain=on"]], ids=["plain", "zeroed"])
def test_kill9_keeps_flushed_writes(tmp_path, opts):
    rnd = random.Random(1234 + len(opts))
    img = tmp_path / "d.vmdk"
    for it in range(10):
        if img.exists():
            img.unlink()
        qemu_create(img, 4 * MiB, *opts)
        seed = 100 + it
        common = ["--seed", seed, "--max-len", 70000]
        lines = run_until_killed([tool("vmdk_workload"), "run", img, "--ops", 20000,
                                  "--progress", "--flush-every", 7] + common,
                                 rnd.uniform(0.05, 0.6))
        done = max([int(line.split()[1]) for line in lines
                    if line.startswith("flushed")] or [0])
        started = max([int(line.split()[1]) + 1 for line in lines
                       if line.startswith("start")] or [0])
        if any(line.startswith("done") for line in lines):
            continue
        # io_uring lets go of a killed process's files (and their OFD
        # locks) shortly after it exits
        for _ in range(100):
            r = sh(tool("vmdk_workload"), "verify", img, "--done", done,
                   "--started", started, *common, check=False)
            if "in use" not in r.stderr:
                break
            time.sleep(0.05)
        qemu_check(img)
        assert r.returncode == 0, (it, done, started, r.stdout, r.stderr)
        # our own check agrees: clean or leaks only, never corruption
        c = sh(tool("vmdk"), "check", img, check=False)
        # (a string, not a tuple: pytest shows it whole)
        assert c.returncode in (0, 3), f"iteration {it}:\n{c.stdout}{c.stderr}"
        assert "ERROR" not in c.stdout, c.stdout
        # the killed session left the image marked unclean, once it had
        # written (a slow start, under ASan and load, can be killed before
        # its first write)
        if done:
            assert read_header_unclean(img) == 1


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs to fill up (skips when one cannot be mounted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = sh("mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", mnt, check=False)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs: " + r.stderr.strip())
    try:
        yield mnt
    finally:
        sh("umount", mnt, check=False)


def test_enospc_is_clean(tmp_path, small_fs):
    img = small_fs / "d.vmdk"
    qemu_create(img, 64 * MiB)
    r = sh(tool("vmdk"), "bench", "-w", "-c", "200", "-s", "64k", "-S", "64k",
           "--pattern", "51", img, check=False)
    assert r.returncode != 0
    assert "No space left on device" in r.stderr and "d.vmdk" in r.stderr, r.stderr
    qemu_check(img)
    # what was written reads back; the rest reads as zeros
    sh("qemu-img", "convert", "-O", "raw", img, tmp_path / "out.raw")
    data = (tmp_path / "out.raw").read_bytes()
    grains = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    assert all(g in (b"\x33" * 65536, b"\0" * 65536) for g in grains)
    assert grains[0] == b"\x33" * 65536


@pytest.mark.parametrize("depth", [1, 32])
def test_enospc_in_place(tmp_path, small_fs, depth):
    """Writes into the holes of a sparse raw image are DATA runs written in
    place: at depth 1 with pwritev on the calling thread, deeper through
    io_uring. A full file system fails the request with a message naming
    the file, and every write that succeeded reads back."""
    img = small_fs / "d.raw"
    new_raw(img, 64 * MiB)
    r = sh(tool("vmdk"), "bench", "-w", "-f", "raw", "-c", "200", "-s",
           "64k", "-d", depth, "--pattern", "51", img, check=False)
    assert r.returncode != 0
    assert "No space left on device" in r.stderr and "d.raw" in r.stderr, r.stderr
    data = img.read_bytes()
    grains = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    assert grains[0] == b"\x33" * 65536
    # bytes land whole pages at a time; nothing but the pattern or zeros
    assert set(data) <= {0, 0x33}


def test_snapshot_write_commit(tmp_path):
    vmdk = tool("vmdk")
    base, snap, raw = tmp_path / "base.vmdk", tmp_path / "snap.vmdk", tmp_path / "s.raw"
    qemu_create(base, 16 * MiB)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x21 0 10M", base)
    sh("qemu-img", "convert", "-O", "raw", base, raw)
    frozen = tmp_path / "frozen.raw"
    sh("cp", raw, frozen)
    sh(vmdk, "snapshot", "create", base, snap)
    workload(snap, "--shadow", raw, "--ops", 1500, "--seed", 21, "--depth", 8)
    qemu_check(snap)
    qemu_same(snap, raw)
    qemu_same(base, frozen)
    sh(vmdk, "commit", snap)
    assert not snap.exists()
    qemu_check(base)
    qemu_same(base, raw)


def test_live_snapshot_under_writer(tmp_path):
    img, raw = tmp_path / "d.vmdk", tmp_path / "s.raw"
    qemu_create(img, 16 * MiB, "zeroed_grain=on")
    new_raw(raw, 16 * MiB)
    workload(img, "--shadow", raw, "--ops", 2000, "--seed", 31, "--depth", 16,
             "--snapshot-at", "1000:" + str(tmp_path / "live.vmdk"))
    live = tmp_path / "live.vmdk"
    qemu_check(live)
    qemu_check(img)
    qemu_same(live, raw)
    info = sh("qemu-img", "info", "--backing-chain", live).stdout
    assert "d.vmdk" in info
    # the frozen layer is the state after op 999: check it on its own
    r = sh(tool("vmdk_workload"), "verify", img, "--done", 1000, "--started", 1000,
           "--seed", 31)
    assert "0 wrong" in r.stdout


def test_interrupted_commit_reruns(tmp_path):
    vmdk = tool("vmdk")
    base, snap, raw = tmp_path / "base.vmdk", tmp_path / "snap.vmdk", tmp_path / "s.raw"
    qemu_create(base, 128 * MiB)
    new_raw(raw, 128 * MiB)
    sh(vmdk, "snapshot", "create", base, snap)
    workload(snap, "--shadow", raw, "--ops", 4000, "--seed", 41, "--max-len", 300000)
    kills = 0
    for delay in (0.002, 0.005, 0.01, 0.02, 0.04):
        if not snap.exists():
            break
        p = subprocess.Popen([vmdk, "commit", str(snap)])
        time.sleep(delay)
        p.kill()
        p.wait()
        if p.returncode == -signal.SIGKILL and snap.exists():
            kills += 1
            qemu_check(base)
            qemu_check(snap)
    if snap.exists():
        # the io_uring of a killed commit lets go of its locks shortly after
        for _ in range(100):
            r = sh(vmdk, "commit", snap, check=False)
            if "in use" not in r.stderr:
                break
            time.sleep(0.05)
        assert r.returncode == 0, r.stderr
    assert not snap.exists()
    qemu_check(base)
    qemu_same(base, raw)
    if not kills:
        pytest.skip("commit finished before it could be killed (result checked)")


# ---- streamOptimized written through the engine -------------------------

def bench_write(img, offset, count, size, step, pattern, check=True):
    return sh(tool("vmdk"), "bench", "-w", "-c", count, "-s", size, "-S", step,
              "-o", offset, "-d", 8, "--pattern", pattern, img, check=check)


def shadow_apply(raw, offset, count, size, step, pattern):
    with open(raw, "r+b") as f:
        for i in range(count):
            f.seek(offset + i * step)
            f.write(bytes([pattern]) * size)


STREAM_MAKERS = ["ovk", "qemu-create", "qemu-convert"]


def make_stream(kind, img, raw, size):
    if kind == "ovk":
        sh(tool("vmdk"), "create", "-o", "subformat=streamOptimized", img, size)
        new_raw(raw, size)
    elif kind == "qemu-create":
        qemu_create(img, size, "subformat=streamOptimized")
        new_raw(raw, size)
    else:
        new_raw(raw, size)
        shadow_apply(raw, 3 * MiB, 20, 65536, 3 * 65536, 0x61)
        sh("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
           "-f", "raw", raw, img)


@pytest.mark.parametrize("kind", STREAM_MAKERS)
def test_stream_append_grains_any_order(tmp_path, kind):
    img, raw = tmp_path / "s.vmdk", tmp_path / "s.raw"
    size = 72 * MiB                      # three grain tables
    make_stream(kind, img, raw, size)
    # several sessions, each appending grains below the previous ones and
    # across table boundaries; each session ends with a fresh tail
    for i, (off, count, step) in enumerate([(60 * MiB, 40, 65536),
                                            (33 * MiB, 10, 5 * 65536),
                                            (0, 8, 65536),
                                            (30 * MiB, 40, 65536)]):
        bench_write(img, off, count, "64k", step, 0x10 + i)
        shadow_apply(raw, off, count, 65536, step, 0x10 + i)
        qemu_check(img)
        qemu_same(img, raw)
    r = sh(tool("vmdk"), "check", img, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sh(tool("vmdk"), "compare", img, raw, check=False).returncode == 0
    # still a stream: compressed grains, footer and end-of-stream marker
    info = json.loads(sh("qemu-img", "info", "--output=json", img).stdout)
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    b = img.read_bytes()
    assert int.from_bytes(b[-1536 + 12:-1536 + 16], "little") == 3
    assert b[-1024:-1020] == b"KDMV" and b[-512:] == bytes(512)
    assert read_header_unclean(img) == 0


def test_stream_partial_grains_filled_with_zeros(tmp_path):
    img, raw = tmp_path / "s.vmdk", tmp_path / "s.raw"
    size = 8 * MiB + 3 * 512             # a short last grain too
    make_stream("ovk", img, raw, size)
    bench_write(img, 4096, 30, "4k", 3 * 65536, 0x5c)
    shadow_apply(raw, 4096, 30, 4096, 3 * 65536, 0x5c)
    # the last (short) grain, written in part
    bench_write(img, size - 1024, 1, "512", 512, 0x3d)
    shadow_apply(raw, size - 1024, 1, 512, 512, 0x3d)
    qemu_check(img)
    qemu_same(img, raw)


def test_stream_rewrite_refused(tmp_path):
    img, raw = tmp_path / "s.vmdk", tmp_path / "s.raw"
    make_stream("ovk", img, raw, 4 * MiB)
    bench_write(img, MiB, 1, "64k", 65536, 0x11)
    shadow_apply(raw, MiB, 1, 65536, 65536, 0x11)
    before = img.read_bytes()
    for off, size in ((MiB, "64k"), (MiB + 4096, "4k"), (MiB + 61440, "8k")):
        r = bench_write(img, off, 1, size, 65536, 0x22, check=False)
        assert r.returncode != 0
        assert "already written" in r.stderr and "s.vmdk" in r.stderr, r.stderr
    # the refused writes changed nothing a reader sees
    qemu_check(img)
    qemu_same(img, raw)
    assert len(img.read_bytes()) <= len(before) + 65536


def test_stream_writes_match_qemu_behaviour(tmp_path):
    """QEMU writes unallocated stream grains in any order and refuses
    rewrites; so do we (and we also take part of a grain)."""
    img = tmp_path / "q.vmdk"
    qemu_create(img, 4 * MiB, "subformat=streamOptimized")
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 1 1M 64k", "-c", "write -P 2 0 64k", img)
    r = sh("qemu-io", "-f", "vmdk", "-c", "write -P 3 1M 64k", img, check=False)
    assert "allocated" in r.stdout + r.stderr
    r = bench_write(img, 0, 1, "64k", 65536, 4, check=False)
    assert r.returncode != 0 and "already written" in r.stderr
    bench_write(img, 2 * MiB, 1, "64k", 65536, 5)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 6 3M 64k", img)
    qemu_check(img)
    sh("qemu-io", "-f", "vmdk", "-r", "-c", "read -P 1 1M 64k", "-c", "read -P 2 0 64k",
       "-c", "read -P 5 2M 64k", "-c", "read -P 6 3M 64k", img)


# ---- vmfsSparse (COWD) written through the engine ---------------------------

@pytest.mark.parametrize("depth", [1, 16])
def test_cowd_random_workload_matches_shadow(tmp_path, depth):
    img, raw = tmp_path / "w.vmdk", tmp_path / "s.raw"
    sh(tool("vmdk"), "create", "-o", "subformat=vmfsSparse", img, 24 * MiB)
    new_raw(raw, 24 * MiB)
    workload(img, "--shadow", raw, "--ops", 3000, "--seed", 50 + depth,
             "--depth", depth)
    # our reader, then QEMU's (it reads VMFSSPARSE extents)
    r = sh(tool("vmdk"), "compare", img, raw, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    qemu_same(img, raw)
    # discards drop grains without reusing their sectors: leaks, no errors
    r = sh(tool("vmdk"), "check", img, check=False)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    assert "ERROR" not in r.stdout and "WARNING" not in r.stdout, r.stdout
    with open(tmp_path / "w-delta.vmdk", "rb") as f:
        hdr = f.read(2048)
    assert hdr[:4] == b"COWD"
    assert int.from_bytes(hdr[1648:1652], "little") == 0     # closed cleanly
    # a second session appends after the first one's grains
    workload(img, "--shadow", raw, "--ops", 500, "--seed", 99, "--depth", depth)
    qemu_same(img, raw)
    assert sh(tool("vmdk"), "check", img, check=False).returncode in (0, 3)


def test_cowd_delta_child_fills_from_parent(tmp_path):
    base, child, raw = tmp_path / "base.vmdk", tmp_path / "c.vmdk", tmp_path / "s.raw"
    qemu_create(base, 8 * MiB)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 8M", base)
    sh(tool("vmdk"), "create", "-o", "subformat=vmfsSparse", "-b", base, child)
    sh("qemu-img", "convert", "-O", "raw", base, raw)
    workload(child, "--shadow", raw, "--ops", 1000, "--seed", 12, "--depth", 4)
    r = sh(tool("vmdk"), "compare", child, raw, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    qemu_same(child, raw)
    assert sh(tool("vmdk"), "check", child, check=False).returncode in (0, 3)


def test_stream_kill9_then_repair(tmp_path):
    """A stream writer killed between flushes leaves no footer: our reader
    still finds every grain flushed before, and check -r all writes the
    tables and footer back so QEMU opens it again."""
    vmdk = tool("vmdk")
    img, before = tmp_path / "k.vmdk", tmp_path / "before.raw"
    sh(vmdk, "create", "-o", "subformat=streamOptimized", img, 2 << 30)
    bench_write(img, 0, 2000, "64k", 2 * 65536, 5)
    p = subprocess.Popen([str(vmdk), "bench", "-w", "-c", "16000", "-s", "64k",
                          "-S", str(2 * 65536), "-o", "65536", "-d", "8",
                          "--pattern", "6", str(img)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.15)
    p.kill()
    p.wait()
    for _ in range(100):        # io_uring lets go of the locks shortly after
        r = sh(vmdk, "convert", "-O", "raw", img, before, check=False)
        if "in use" not in r.stderr:
            break
        time.sleep(0.05)
    assert r.returncode == 0, r.stderr
    data = before.read_bytes()
    # the first session's grains were flushed when it closed
    for g in range(0, 2000, 97):
        assert data[g * 131072:g * 131072 + 65536] == b"\x05" * 65536, g
    r = sh(vmdk, "check", img, check=False)
    if r.returncode == 0:
        pytest.skip("the writer finished before it could be killed")
    assert r.returncode == 2 and "no readable footer" in r.stdout, r.stdout
    r = sh(vmdk, "check", "-r", "all", img, check=False)
    assert r.returncode == 0 and "Repaired" in r.stdout, r.stdout
    qemu_check(img)
    qemu_same(img, before)
    assert sh(vmdk, "check", img).returncode == 0
