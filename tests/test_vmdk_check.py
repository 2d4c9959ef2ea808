# SPDX-License-Identifier: Apache-2.0
"""`vmdk check`: clean images exit 0; hand-damaged ones exit 2 (corruption)
or 3 (leaks only) with a finding naming the entry; -r repairs safely."""
import json
import os
import struct

import pytest

from conftest import need, run
import vmdkgen

MiB = 1 << 20


@pytest.fixture
def img(vmdk, tmp_path):
    src = tmp_path / "s.raw"
    with open(src, "wb") as f:
        f.truncate(8 * MiB)
        f.write(os.urandom(200000))
        f.seek(5 * MiB)
        f.write(os.urandom(70000))
    p = tmp_path / "a.vmdk"
    run([vmdk, "convert", "-O", "vmdk", src, p])
    return p


def tables(p):
    """(gd sector, rgd sector, gt0 sector, rgt0 sector) of a monolithicSparse."""
    b = p.read_bytes()
    rgd, gd = struct.unpack_from("<QQ", b, 48)
    gt0 = struct.unpack_from("<I", b, gd * 512)[0]
    rgt0 = struct.unpack_from("<I", b, rgd * 512)[0]
    return gd, rgd, gt0, rgt0


def poke32(p, off, v):
    with open(p, "r+b") as f:
        f.seek(off)
        f.write(struct.pack("<I", v))


def check(vmdk, p, *args):
    return run([vmdk, "check", *args, p], check=False)


@pytest.mark.parametrize("sf", ["monolithicSparse", "twoGbMaxExtentSparse",
                                "streamOptimized", "monolithicFlat"])
def test_clean_images(vmdk, tmp_path, sf):
    p = tmp_path / "c.vmdk"
    run([vmdk, "create", "-o", f"subformat={sf}", p, "3G"])
    r = check(vmdk, p)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No errors" in r.stdout


def test_qemu_made_image_is_clean(vmdk, tmp_path):
    p = tmp_path / "q.vmdk"
    run([need("qemu-img"), "create", "-f", "vmdk", p, "1G"])
    run([need("qemu-io"), "-c", "write -P 7 1M 200k", p])
    assert check(vmdk, p).returncode == 0


def test_raw_image_has_nothing_to_check(vmdk, tmp_path):
    """A raw image has no metadata: check runs, says so, and finds nothing."""
    p = tmp_path / "d.img"
    with open(p, "wb") as f:
        f.truncate(4 * MiB)
        f.write(os.urandom(4096))
    q = run([need("qemu-img"), "info", "--output=json", p])
    assert json.loads(q.stdout)["format"] == "raw"
    r = check(vmdk, p)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "raw image has no metadata" in r.stdout
    assert "No errors" in r.stdout
    r = check(vmdk, p, "--output=json")
    assert r.returncode == 0, r.stdout + r.stderr
    j = json.loads(r.stdout)
    assert j["format"] == "raw" and j["corruptions"] == 0 and j["leaks"] == 0
    assert any("nothing to check" in f for f in j["findings"])


def test_gt_entry_out_of_range(vmdk, img):
    gd, rgd, gt0, rgt0 = tables(img)
    size = os.path.getsize(img)
    for s in (gt0, rgt0):
        poke32(img, s * 512 + 4 * 1, size // 512 + 1000)
    r = check(vmdk, img)
    assert r.returncode == 2
    assert "grain table 0 entry 1" in r.stdout and "outside" in r.stdout


def test_double_reference(vmdk, img):
    gd, rgd, gt0, rgt0 = tables(img)
    first = struct.unpack_from("<I", img.read_bytes(), gt0 * 512)[0]
    for s in (gt0, rgt0):
        poke32(img, s * 512 + 4 * 100, first)
    r = check(vmdk, img, "--output=json")
    assert r.returncode == 2
    j = json.loads(r.stdout)
    assert j["corruptions"] >= 1
    assert any("entry 100" in f and "already references" in f for f in j["findings"])


def test_leaked_grain_at_end_and_repair(vmdk, qemu_img, img):
    with open(img, "r+b") as f:
        f.seek(0, 2)
        f.write(os.urandom(3 * 65536))
    r = check(vmdk, img)
    assert r.returncode == 3 and "3 leaked grains" in r.stdout
    size = os.path.getsize(img)
    r = check(vmdk, img, "-r", "leaks")
    assert r.returncode == 0, r.stdout
    assert os.path.getsize(img) == size - 3 * 65536
    assert check(vmdk, img).returncode == 0
    assert run([qemu_img, "check", img], check=False).returncode == 0


def test_rgd_mismatch_and_repair(vmdk, img):
    gd, rgd, gt0, rgt0 = tables(img)
    poke32(img, rgt0 * 512 + 4 * 1, 0)   # redundant table forgets grain 1
    r = check(vmdk, img)
    assert r.returncode == 2 and "grain table 0 and its redundant copy" in r.stdout
    assert check(vmdk, img, "-r", "leaks").returncode == 2   # not a leak repair
    r = check(vmdk, img, "-r", "all")
    assert r.returncode == 0, r.stdout
    assert "Repaired" in r.stdout
    assert check(vmdk, img).returncode == 0
    b = img.read_bytes()
    assert b[gt0 * 512:gt0 * 512 + 2048] == b[rgt0 * 512:rgt0 * 512 + 2048]


def test_rgd_behind_after_interrupted_flush(vmdk, img):
    """A kill between writing a grain table and its redundant copy leaves the
    copy one flush behind (entries still 0) with uncleanShutdown set: that is
    the crash state the write path allows, not corruption."""
    gd, rgd, gt0, rgt0 = tables(img)
    poke32(img, rgt0 * 512 + 4 * 1, 0)   # the copy has not got grain 1 yet
    with open(img, "r+b") as f:
        f.seek(72)
        f.write(b"\1")
    r = check(vmdk, img)
    assert r.returncode == 0, r.stdout
    assert "a flush was interrupted" in r.stdout
    r = check(vmdk, img, "-r", "all")
    assert r.returncode == 0 and "Repaired" in r.stdout, r.stdout
    b = img.read_bytes()
    assert b[gt0 * 512:gt0 * 512 + 2048] == b[rgt0 * 512:rgt0 * 512 + 2048]
    # a copy naming a sector in the metadata area is corruption, unclean or
    # not (two different grains are not: see the next test)
    poke32(img, rgt0 * 512 + 4 * 1, 7)
    r = check(vmdk, img)
    assert r.returncode == 2 and "ERROR" in r.stdout, r.stdout


def test_rgd_behind_zeroed_and_reallocated(vmdk, tmp_path):
    """With zeroed grains, one flush can turn a grain into a zeroed entry (1),
    a zeroed entry into a grain, or (discard, then write) one grain into a new
    one. A kill between the primary table and its copy leaves the copy with
    the old values: a warning on an unclean image, never corruption."""
    qemu_img, qemu_io = need("qemu-img"), need("qemu-io")
    p = tmp_path / "z.vmdk"
    run([qemu_img, "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", p, "8M"])
    run([qemu_io, "-c", "write -P 1 0 192k", "-c", "write -z 192k 64k", p])
    gd, rgd, gt0, rgt0 = tables(p)
    b = p.read_bytes()
    e = list(struct.unpack_from("<4I", b, gt0 * 512))
    assert e[0] > 1 and e[1] > 1 and e[2] > 1 and e[3] == 1, e
    end = os.path.getsize(p) // 512
    new, old = end, end + 128               # two grains appended past the end
    with open(p, "ab") as f:
        f.write(os.urandom(2 * 65536))
    poke32(p, gt0 * 512, 1)                  # grain 0: zeroed, was e[0]
    poke32(p, gt0 * 512 + 4 * 3, new)        # grain 3: written, was zeroed
    poke32(p, rgt0 * 512 + 4 * 2, old)       # grain 2: e[2], was (in the copy) old
    with open(p, "r+b") as f:
        f.seek(72)
        f.write(b"\1")
    r = check(vmdk, p)
    assert r.returncode == 3, r.stdout       # e[0] and old: leaks
    assert "ERROR" not in r.stdout and "a flush was interrupted" in r.stdout, r.stdout
    # the same tables on a cleanly closed image are corruption
    with open(p, "r+b") as f:
        f.seek(72)
        f.write(b"\0")
    r = check(vmdk, p)
    assert r.returncode == 2 and "redundant copy (RGD) differ" in r.stdout, r.stdout
    r = check(vmdk, p, "-r", "all")
    # the trailing leak is cut; e[0], inside the grain area, stays a leak
    assert r.returncode == 3 and "Repaired: redundant" in r.stdout, r.stdout
    assert "ERROR" not in check(vmdk, p).stdout
    b = p.read_bytes()
    assert b[gt0 * 512:gt0 * 512 + 2048] == b[rgt0 * 512:rgt0 * 512 + 2048]
    assert run([qemu_img, "check", p], check=False).returncode == 0


def test_unclean_flag_reported(vmdk, img):
    with open(img, "r+b") as f:
        f.seek(72)
        f.write(b"\1")
    r = check(vmdk, img, "--output=json")
    assert json.loads(r.stdout)["unclean"] is True
    assert any("uncleanShutdown" in f for f in json.loads(r.stdout)["findings"])


def test_cannot_run(vmdk, tmp_path):
    r = check(vmdk, tmp_path / "missing.vmdk")
    assert r.returncode == 1


@pytest.fixture
def cowd(vmdk, tmp_path):
    p = tmp_path / "w.vmdk"
    run([vmdk, "create", "-o", "subformat=vmfsSparse", p, "64M"])
    run([vmdk, "bench", "-w", "-c", "100", "-s", "4k", "-S", "12k",
         "--pattern", "7", p])
    return p, tmp_path / "w-delta.vmdk"


def cowd_tables(delta):
    b = delta.read_bytes()
    gd_off = struct.unpack_from("<I", b, 20)[0]
    gt0 = struct.unpack_from("<I", b, gd_off * 512)[0]
    return b, gt0


def test_cowd_clean(vmdk, cowd):
    r = check(vmdk, cowd[0], "--output=json")
    assert r.returncode == 0, r.stdout
    j = json.loads(r.stdout)
    assert j["allocated-clusters"] == 100 * 8     # 512-byte grains
    assert j["total-clusters"] == 64 * MiB // 512


def test_cowd_double_reference(vmdk, cowd):
    p, delta = cowd
    b, gt0 = cowd_tables(delta)
    first = struct.unpack_from("<I", b, gt0 * 512)[0]
    poke32(delta, gt0 * 512 + 4 * 2000, first)
    r = check(vmdk, p)
    assert r.returncode == 2, r.stdout
    assert "entry 2000" in r.stdout and "already uses" in r.stdout


def test_cowd_entry_outside_file(vmdk, cowd):
    p, delta = cowd
    b, gt0 = cowd_tables(delta)
    poke32(delta, gt0 * 512 + 4 * 3, len(b) // 512 + 10)
    r = check(vmdk, p)
    assert r.returncode == 2 and "grain table 0 entry 3" in r.stdout, r.stdout


def test_cowd_free_sector_too_small(vmdk, cowd):
    p, delta = cowd
    poke32(delta, 28, 10)
    r = check(vmdk, p)
    assert r.returncode == 2 and "freeSector" in r.stdout, r.stdout


def test_cowd_trailing_leak_repaired(vmdk, qemu_img, cowd):
    p, delta = cowd
    size = os.path.getsize(delta)
    with open(delta, "r+b") as f:
        f.seek(0, 2)
        f.write(os.urandom(5 * 512))
    poke32(delta, 28, (size + 5 * 512) // 512)
    r = check(vmdk, p)
    assert r.returncode == 3 and "5 leaked grains" in r.stdout, r.stdout
    r = check(vmdk, p, "-r", "leaks")
    assert r.returncode == 0, r.stdout
    assert os.path.getsize(delta) == size
    assert check(vmdk, p).returncode == 0
    # still reads as written, and the engine appends after it again
    run([vmdk, "bench", "-w", "-c", "10", "-s", "4k", "-S", "4k", "-o", "32M", p])
    assert check(vmdk, p).returncode == 0


def test_cowd_unclean_flag_reported(vmdk, cowd):
    p, delta = cowd
    poke32(delta, 1648, 1)
    r = check(vmdk, p, "--output=json")
    j = json.loads(r.stdout)
    assert j["unclean"] is True
    assert any("uncleanShutdown" in f for f in j["findings"])


# ---- seSparse (hand-built: nothing here writes seSparse) ----------------

SE_MiB = 4 * MiB


@pytest.fixture
def se(tmp_path):
    """A 4 MiB seSparse extent with data grains 0, 3, 700 and a zeroed 5;
    returns a writer: write(extra_grains=..., poke=[(off, u64)...]) -> path."""
    def write(grains=None, poke=(), replay_journal=0, name="se.vmdk"):
        g = {0: vmdkgen.pattern(1, 4096), 3: vmdkgen.pattern(2, 4096),
             700: vmdkgen.pattern(3, 4096), 5: vmdkgen.ZERO}
        g.update(grains or {})
        data, lay = vmdkgen.sesparse_extent(SE_MiB, g, replay_journal)
        data = bytearray(data)
        for off, v in poke:
            struct.pack_into("<Q", data, lay[off[0]] + off[1] if isinstance(off, tuple)
                             else off, v)
        (tmp_path / "se-sesparse.vmdk").write_bytes(bytes(data))
        p = tmp_path / name
        p.write_text(vmdkgen.descriptor(
            [("RW", SE_MiB // 512, "SESPARSE", "se-sesparse.vmdk", None)],
            "seSparse"))
        return p, lay, g
    return write


def test_sesparse_clean(vmdk, se):
    p, _, g = se()
    r = check(vmdk, p, "--output=json")
    assert r.returncode == 0, r.stdout + r.stderr
    j = json.loads(r.stdout)
    assert j["allocated-clusters"] == 3
    assert j["total-clusters"] == SE_MiB // 4096
    # and it reads as built (the generator and the reader agree)
    raw = p.parent / "se.raw"
    run([vmdk, "convert", "-O", "raw", p, raw])
    assert raw.read_bytes() == vmdkgen.expected(SE_MiB, g, 4096)


def test_sesparse_double_reference(vmdk, se):
    # grain 9 names cluster 1, which grain 3 already uses
    p, _, _ = se(poke=[(("gts", 8 * 9), vmdkgen.se_gte(1))])
    r = check(vmdk, p)
    assert r.returncode == 2, r.stdout
    assert "entry 9 names grain 1" in r.stdout and "already uses" in r.stdout


def test_sesparse_entry_out_of_range(vmdk, se):
    p, _, _ = se(poke=[(("gts", 8 * 4), vmdkgen.se_gte(500))])
    r = check(vmdk, p)
    assert r.returncode == 2 and "grain table 0 entry 4" in r.stdout, r.stdout


def test_sesparse_unknown_entry_type(vmdk, se):
    p, _, _ = se(poke=[(("gts", 8 * 6), 5 << 60)])
    r = check(vmdk, p)
    assert r.returncode == 2 and "entry 6 is 0x5000000000000000" in r.stdout, r.stdout


def test_sesparse_entry_past_disk_end(vmdk, tmp_path, se):
    # the table has 4096 entries; a 4 MiB disk uses 1024 of them
    p, _, _ = se(poke=[(("gts", 8 * 2000), vmdkgen.se_gte(2))])
    r = check(vmdk, p)
    assert r.returncode == 2 and "grain 2000 of 1024" in r.stdout, r.stdout


def test_sesparse_leak(vmdk, se):
    # grain 3 dropped from its table: its cluster is leaked, nothing corrupt
    p, _, _ = se(poke=[(("gts", 8 * 3), 0)])
    r = check(vmdk, p)
    assert r.returncode == 3, r.stdout
    assert "Leaked grains: 1" in r.stdout
    r = check(vmdk, p, "-r", "all")
    assert r.returncode == 3 and "Not repaired" in r.stdout, r.stdout


def test_sesparse_regions_overlap(vmdk, se):
    # the grain directory moved onto the volatile header: the engine refuses
    # to open the image, the check still reports why
    p, _, _ = se(poke=[(128, 1)])
    r = check(vmdk, p)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "grain directory (sectors 1..1) overlaps the volatile header" in r.stdout
    assert "cannot be opened" in r.stdout


def test_sesparse_gd_entry_out_of_range(vmdk, se):
    p, _, _ = se(poke=[(("gd", 0), (0x10000000 << 32) | 7)])
    r = check(vmdk, p, "--output=json")
    assert r.returncode == 2, r.stdout + r.stderr
    f = json.loads(r.stdout)["findings"]
    assert any("grain directory entry 0 is 0x1000000000000007" in x and
               "below 1" in x for x in f), f


def test_sesparse_replay_journal_unclean(vmdk, se):
    p, _, _ = se(replay_journal=1)
    # the reader refuses it (the journal must be replayed by ESXi)
    r = check(vmdk, p)
    assert r.returncode == 1 and "replay_journal" in r.stderr, r.stderr
