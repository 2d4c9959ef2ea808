# SPDX-License-Identifier: Apache-2.0
"""ovffs: mount packages and browse them; disks read through the engine
must equal `qemu-img convert -O raw` of the original disk files."""
import gzip
import json
import os
import subprocess
import time

import pytest

import ovfgen
from conftest import assert_same_file, need, run, tool


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-img")
    need("qemu-io")
    need("fusermount3")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")


class Mount:
    def __init__(self, pkg, mnt):
        self.mnt = str(mnt)
        os.makedirs(self.mnt, exist_ok=True)
        r = run([tool("ovffs"), pkg, self.mnt], check=False)
        assert r.returncode == 0, r.stderr
        self.stderr = r.stderr
        for _ in range(100):
            if os.path.ismount(self.mnt):
                break
            time.sleep(0.05)
        assert os.path.ismount(self.mnt)

    def path(self, *p):
        return os.path.join(self.mnt, *p)

    def close(self):
        for _ in range(50):
            if subprocess.run(["fusermount3", "-u", self.mnt],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True)


@pytest.fixture
def mount(tmp_path):
    mounts = []

    def _mount(pkg):
        m = Mount(str(pkg), tmp_path / f"mnt{len(mounts)}")
        mounts.append(m)
        return m
    yield _mount
    for m in mounts:
        m.close()


def qemu_raw(src, dst):
    run(["qemu-img", "convert", "-O", "raw", src, dst])
    return dst


def test_vmware_ova_tree(tmp_path, mount):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), disks=2)
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks, tmp_path / "a.ova")
    m = mount(ova)
    top = sorted(os.listdir(m.mnt))
    assert top == sorted([desc, "appliance.mf", "verify.txt", "vm1", "disks"])
    assert open(m.path(desc), "rb").read() == open(os.path.join(folder, desc), "rb").read()
    assert sorted(os.listdir(m.path("vm1"))) == ["eula.txt", "hardware.json",
                                                "product.json", "summary.txt"]
    hw = json.load(open(m.path("vm1", "hardware.json")))
    assert hw["cpus"] == 2 and hw["memory_bytes"] == 2 << 30
    prod = json.load(open(m.path("vm1", "product.json")))
    assert prod[0]["product"] == "Test Appliance"
    assert "No warranty." in open(m.path("vm1", "eula.txt")).read()
    assert "cpus: 2" in open(m.path("vm1", "summary.txt")).read()
    v = open(m.path("verify.txt")).read()
    assert "manifest: all digests match" in v
    for i, d in enumerate(disks):
        src = os.path.join(folder, d)
        assert open(m.path("disks", d), "rb").read() == open(src, "rb").read()
        ref = qemu_raw(src, str(tmp_path / f"ref{i}.raw"))
        assert_same_file(m.path("disks", f"vmdisk{i + 1}.raw"), ref)


def test_random_access_into_raw(tmp_path, mount):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks, tmp_path / "a.ova")
    ref = open(qemu_raw(os.path.join(folder, disks[0]), str(tmp_path / "r.raw")), "rb").read()
    m = mount(ova)
    with open(m.path("disks", "vmdisk1.raw"), "rb") as f:
        for off, ln in [(5 << 20, 4096), (1 << 20, 300 << 10), (12345, 777),
                        ((64 << 20) - 100, 100), (0, 65536)]:
            f.seek(off)
            assert f.read(ln) == ref[off:off + ln]


def test_read_only(tmp_path, mount):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    m = mount(folder)
    with pytest.raises(OSError):
        open(m.path("disks", "vmdisk1.raw"), "r+b")
    with pytest.raises(OSError):
        open(m.path("new-file"), "w")


def test_virtualbox_and_collection_folders(tmp_path, mount):
    folder = tmp_path / "vbox"
    folder.mkdir()
    ovfgen.make_disk(folder / "vbox-disk001.vmdk", "16M")
    (folder / "vbox.ovf").write_text(ovfgen.vbox_envelope("vbox-disk001.vmdk", None, 16 << 20))
    ova = ovfgen.make_ova(str(folder), ["vbox.ovf", "vbox-disk001.vmdk"], tmp_path / "v.ova")
    m = mount(ova)
    assert "vbox-vm" in os.listdir(m.mnt)
    ref = qemu_raw(str(folder / "vbox-disk001.vmdk"), str(tmp_path / "v.raw"))
    assert_same_file(m.path("disks", "vmdisk1.raw"), ref)
    assert "manifest: none" in open(m.path("verify.txt")).read()


def test_gzip_and_chunked_files(tmp_path, mount):
    """ovf:compression="gzip" and chunked files are served as the whole,
    decompressed original file, with random access."""
    folder = tmp_path / "gz"
    folder.mkdir()
    disk = ovfgen.make_disk(str(tmp_path / "d.vmdk"), "32M",
                            writes=[(0, 0x41, "1M"), ("9M", 0x42, "3M"),
                                    ("20M", 0x43, "5M")])
    orig = open(disk, "rb").read()
    # gzip'd file, written as several gzip members (like pigz/ovftool)
    with open(folder / "g.vmdk.gz", "wb") as f:
        for i in range(0, len(orig), 50000):
            f.write(gzip.compress(orig[i:i + 50000]))
    # chunked: compressed first, then split into chunks of 7000 bytes
    comp = gzip.compress(orig)
    for i in range(0, len(comp), 7000):
        (folder / f"c.vmdk.{i // 7000:09d}").write_bytes(comp[i:i + 7000])
    files = [("f1", "g.vmdk.gz", os.path.getsize(folder / "g.vmdk.gz"), 'ovf:compression="gzip"'),
             ("f2", "c.vmdk", len(comp), 'ovf:compression="gzip" ovf:chunkSize="7000"')]
    disks = [("vmdisk1", "f1", 32, None), ("vmdisk2", "f2", 32, None)]
    (folder / "gz.ovf").write_text(ovfgen.vmware_envelope(
        files, disks, ovfgen.vmware_system("gzvm", ["vmdisk1", "vmdisk2"]),
        units="byte * 2^20"))
    names = ["gz.ovf", "g.vmdk.gz"] + sorted(n for n in os.listdir(folder)
                                            if n.startswith("c.vmdk."))
    ovfgen.write_manifest(str(folder), "gz.mf", names)
    r = run([tool("ovf"), "validate", str(folder)])
    assert "valid (0 errors" in r.stdout
    ova = ovfgen.make_ova(str(folder), ["gz.ovf", "gz.mf"] + names[1:], tmp_path / "gz.ova")
    m = mount(ova)
    for name in ("g.vmdk.gz", "c.vmdk"):
        p = m.path("disks", name)
        assert os.path.getsize(p) == len(orig)
        with open(p, "rb") as f:
            for off in (len(orig) - 1000, 17, len(orig) // 2, 0):
                f.seek(off)
                assert f.read(5000) == orig[off:off + 5000]
            f.seek(0)
            assert f.read() == orig


def test_gzip_and_chunked_disks_raw(tmp_path, mount):
    """<disk>.raw of a gzip'd and of a chunked (gzip'd, then split)
    streamOptimized disk equals qemu-img convert -O raw of the original,
    also read from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor
    folder = tmp_path / "gz"
    folder.mkdir()
    disk = ovfgen.make_disk(str(tmp_path / "d.vmdk"), "32M",
                            writes=[(0, 0x41, "1M"), ("9M", 0x42, "3M"),
                                    ("20M", 0x43, "5M")])
    orig = open(disk, "rb").read()
    with open(folder / "g.vmdk.gz", "wb") as f:
        for i in range(0, len(orig), 50000):
            f.write(gzip.compress(orig[i:i + 50000]))
    comp = gzip.compress(orig)
    for i in range(0, len(comp), 7000):
        (folder / f"c.vmdk.{i // 7000:09d}").write_bytes(comp[i:i + 7000])
    # chunked without compression too
    for i in range(0, len(orig), 9000):
        (folder / f"p.vmdk.{i // 9000:09d}").write_bytes(orig[i:i + 9000])
    files = [("f1", "g.vmdk.gz", os.path.getsize(folder / "g.vmdk.gz"), 'ovf:compression="gzip"'),
             ("f2", "c.vmdk", len(comp), 'ovf:compression="gzip" ovf:chunkSize="7000"'),
             ("f3", "p.vmdk", len(orig), 'ovf:chunkSize="9000"')]
    disks = [("vmdisk1", "f1", 32, None), ("vmdisk2", "f2", 32, None),
             ("vmdisk3", "f3", 32, None)]
    (folder / "gz.ovf").write_text(ovfgen.vmware_envelope(
        files, disks, ovfgen.vmware_system("gzvm", ["vmdisk1", "vmdisk2", "vmdisk3"]),
        units="byte * 2^20"))
    names = ["gz.ovf", "g.vmdk.gz"] + sorted(n for n in os.listdir(folder)
                                            if n[:7] in ("c.vmdk.", "p.vmdk."))
    ova = ovfgen.make_ova(str(folder), names, tmp_path / "gz.ova")
    ref_path = qemu_raw(disk, str(tmp_path / "ref.raw"))
    ref = open(ref_path, "rb").read()
    for pkg in (str(folder), ova):
        m = mount(pkg)
        for i in (1, 2, 3):
            p = m.path("disks", f"vmdisk{i}.raw")
            assert_same_file(p, ref_path)

        def piece(off, p=m.path("disks", "vmdisk2.raw")):
            with open(p, "rb") as f:
                f.seek(off)
                return f.read(300 << 10) == ref[off:off + (300 << 10)]
        offs = [((k * 7919) << 10) % (len(ref) - (300 << 10)) for k in range(64)]
        with ThreadPoolExecutor(8) as ex:
            assert all(ex.map(piece, offs))


def test_gzipped_ova_disk_raw(tmp_path, mount):
    """A disk inside a gzip'd OVA (against the spec, seen in the wild)."""
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), disks=2)
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks,
                          tmp_path / "a.ova", gz=True)
    m = mount(ova)
    for i, d in enumerate(disks):
        ref = qemu_raw(os.path.join(folder, d), str(tmp_path / f"ref{i}.raw"))
        assert_same_file(m.path("disks", f"vmdisk{i + 1}.raw"), ref)


def test_ova_over_8gib_member_raw(tmp_path, mount):
    """A sparse 9 GiB flat disk in a GNU-format OVA, served by the engine."""
    import tarfile
    size = 9 << 30
    desc = ovfgen.vmware_envelope(
        [("file1", "big.raw", size, None)], [("vmdisk1", "file1", 9, None)],
        ovfgen.vmware_system("big", ["vmdisk1"]), units="byte * 2^30")
    # a flat disk: the descriptor must not call it streamOptimized
    desc = desc.replace("#streamOptimized", "#monolithicFlat")
    out = tmp_path / "big.ova"
    with open(out, "wb") as f:
        data = desc.encode()
        ti = tarfile.TarInfo("big.ovf")
        ti.size = len(data)
        f.write(ti.tobuf(format=tarfile.GNU_FORMAT))
        f.write(data + bytes(-len(data) % 512))
        ti = tarfile.TarInfo("big.raw")
        ti.size = size
        f.write(ti.tobuf(format=tarfile.GNU_FORMAT))
        start = f.tell()
        f.seek(start + (8 << 30) + 4096)
        f.write(b"past 8 GiB")
        f.seek(start + size)
        f.write(bytes(1024))
    m = mount(out)
    p = m.path("disks", "vmdisk1.raw")
    assert os.path.getsize(p) == size
    with open(p, "rb") as f:
        f.seek((8 << 30) + 4096)
        assert f.read(10) == b"past 8 GiB"
        f.seek(size - 10)
        assert f.read(100) == bytes(10)


def test_clear_error_on_bad_package(tmp_path):
    bad = tmp_path / "bad.ova"
    bad.write_bytes(b"this is not a tar archive" * 40)
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([tool("ovffs"), bad, mnt], check=False)
    assert r.returncode != 0
    assert "bad.ova: bad tar header at offset 0" in r.stderr
    assert not os.path.ismount(mnt)


def test_large_reads_and_readahead(tmp_path, mount):
    """The mount asks for 1 MiB reads and, as root, a 4 MiB read-ahead, so
    a sequential reader keeps several requests in flight."""
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    m = mount(folder)
    st = os.stat(m.mnt)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    line = next(l for l in open("/proc/self/mountinfo")
                if l.split()[2] == dev)
    assert "fuse.ovffs" in line and "max_read=1048576" in line
    if os.geteuid() != 0:
        pytest.skip("raising a mount's read-ahead needs root")
    with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
        assert int(f.read()) == 4096


def _daemon_pid(pkg):
    r = run(["pgrep", "-n", "-f", f"ovffs {pkg} "], check=False)
    assert r.returncode == 0, "no ovffs daemon for " + str(pkg)
    return int(r.stdout.split()[0])


def test_worker_threads_kept_one_fuse_fd(tmp_path, mount):
    """The loop config reaches libfuse as meant: one /dev/fuse descriptor
    (no per-thread clone_fd) and workers that stay after a whole read
    instead of one thread (with its own engine io_uring) per request.
    Built against FUSE_USE_VERSION 35 the v2 config was read as the v1
    struct: clone_fd on, max_idle_threads 0."""
    need("pgrep")
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), disk_size="64M")
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks, tmp_path / "t.ova")
    m = mount(ova)
    pid = _daemon_pid(ova)
    raw = next(n for n in os.listdir(m.path("disks")) if n.endswith(".raw"))
    with open(m.path("disks", raw), "rb") as f:
        while f.read(1 << 20):
            pass
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert fds.count("/dev/fuse") == 1, fds


def test_disk_not_what_it_claims_not_served_raw(tmp_path, mount):
    # declared a 10 MiB streamOptimized VMDK; the file is 3 MiB of noise
    folder = tmp_path / "pkg"
    folder.mkdir()
    noise = os.urandom(3 << 20)
    (folder / "disk1.vmdk").write_bytes(noise)
    (folder / "p.ovf").write_text(ovfgen.vmware_envelope(
        [("file1", "disk1.vmdk", len(noise), None)],
        [("vmdisk1", "file1", 10, None)],
        ovfgen.vmware_system("vm", ["vmdisk1"]), units="byte * 2^20"))
    m = mount(folder)
    assert sorted(os.listdir(m.path("disks"))) == ["disk1.vmdk"]
    assert open(m.path("disks", "disk1.vmdk"), "rb").read() == noise
    v = open(m.path("verify.txt")).read()
    assert "disks: NOT WHAT THE DESCRIPTOR DECLARES (not served as .raw)" in v
    assert (f"error: DiskSection/Disk[@diskId=vmdisk1]: ovf:format says {ovfgen.STREAM_FMT} "
            f"but {folder}/disk1.vmdk is not a VMDK") in v
    assert "Disk[@diskId=vmdisk1]" in m.stderr
