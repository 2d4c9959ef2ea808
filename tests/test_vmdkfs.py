# SPDX-License-Identifier: Apache-2.0
"""vmdkfs: real FUSE mounts of qemu-img-made images holding real filesystems
(mkfs.ext4 -d, mkfs.vfat + mcopy) and real partition tables (sgdisk,
sfdisk). Every test unmounts in teardown, even when it fails."""
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time

import pytest

from conftest import need, run, tool

MiB = 1 << 20
IS_ROOT = os.geteuid() == 0


# ---- helpers -------------------------------------------------------------

def is_mounted(path):
    path = os.path.realpath(str(path))
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def force_unmount(path):
    for cmd in (["fusermount3", "-u", "-q"], ["umount"],
                ["fusermount3", "-uz", "-q"], ["umount", "-l"]):
        if not is_mounted(path):
            return
        subprocess.run(cmd + [str(path)], capture_output=True)
        time.sleep(0.2)


def wait_unmounted(path, timeout=10):
    end = time.time() + timeout
    while is_mounted(path) and time.time() < end:
        time.sleep(0.05)
    return not is_mounted(path)


@contextlib.contextmanager
def vmdkfs(image, mnt, *opts):
    """Mount image on mnt with vmdkfs (daemonised); always unmount."""
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run([tool("vmdkfs"), *map(str, opts), str(image),
                        str(mnt)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"vmdkfs failed: {r.stderr}"
    try:
        yield mnt
    finally:
        force_unmount(mnt)
        # the daemon unmounts its guest filesystems and exits
        time.sleep(0.1)


@contextlib.contextmanager
def loop_mount(source, target, *opts):
    """Kernel mount of a file (loop device); always unmounted."""
    os.makedirs(target, exist_ok=True)
    run(["mount", "-o", ",".join(("loop",) + opts), source, target])
    try:
        yield target
    finally:
        for cmd in (["umount"], ["umount", "-l"]):
            if is_mounted(target):
                subprocess.run(cmd + [str(target)], capture_output=True)


@contextlib.contextmanager
def fuse_driver(cmd, target):
    """A userspace filesystem driver (fuse2fs, fusefat) mounted on target."""
    os.makedirs(target, exist_ok=True)
    run(cmd + [target])
    try:
        yield target
    finally:
        force_unmount(target)


def make_tree(root):
    """A small known tree: text, binary, nested folders, a symlink, an
    empty file, odd names."""
    os.makedirs(root / "etc" / "deep" / "er")
    (root / "etc" / "hostname").write_text("guest\n")
    (root / "etc" / "deep" / "er" / "file with spaces.txt").write_text(
        "spaces\n" * 100)
    (root / "empty").write_bytes(b"")
    (root / "bin.dat").write_bytes(
        hashlib.sha256(b"seed").digest() * 20000)  # 640000 bytes
    os.symlink("etc/hostname", root / "link")
    os.utime(root / "etc" / "hostname", (1_600_000_000, 1_600_000_000))


def tree_listing(root, skip=("lost+found",)):
    """{relative path: (kind, content digest or link target, size)}"""
    out = {}
    root = str(root)
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in skip)
        for name in dirs + files:
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "", 0)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", hashlib.sha256(f.read()).hexdigest(),
                                st.st_size)
    return out


def mkfs_ext4(path, tree, size_mib):
    need("mkfs.ext4")
    run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-d", tree, path,
         f"{size_mib}M"])


def mkfs_vfat(path, tree, size_mib):
    need("mkfs.vfat")
    need("mcopy")
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
    run(["mkfs.vfat", path])  # no label: fusefat lists it as a file
    for name in sorted(os.listdir(tree)):
        if not os.path.islink(os.path.join(tree, name)):
            run(["mcopy", "-s", "-i", path, os.path.join(tree, name), "::"])


def fat_tree(root):
    # mixed-case long names: fusefat ignores the lowercase flags of 8.3
    # names, so every name here needs a long-name entry
    os.makedirs(root / "Docs Folder")
    (root / "ReadMe Now.txt").write_text("on fat\n")
    (root / "Docs Folder" / "LongFileName Document.txt").write_bytes(
        bytes(range(256)) * 300)


def put(disk, part_file, offset):
    with open(part_file, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(offset)
        shutil.copyfileobj(src, dst, MiB)


def to_vmdk(raw, vmdk, subformat="monolithicSparse"):
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "vmdk", "-o",
         f"subformat={subformat}", raw, vmdk])


def files_equal(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                return False
            if not x:
                return True


BROWSE_MODES = [
    pytest.param("kernel", marks=pytest.mark.skipif(
        not IS_ROOT, reason="kernel loop mounts need root")),
    "fuse",
]

# Partition tests mix ext4 and FAT: 'auto' uses the kernel as root and
# falls back to the userspace driver for what the kernel cannot mount
# (some kernels are built without vfat).
AUTO_MODES = [
    pytest.param("auto", marks=pytest.mark.skipif(
        not IS_ROOT, reason="kernel loop mounts need root")),
    "fuse",
]


def kernel_has(fstype):
    with open("/proc/filesystems") as f:
        if any(line.split()[-1] == fstype for line in f):
            return True
    return os.path.exists(f"/lib/modules/{os.uname().release}/kernel/fs/"
                          f"{'fat' if fstype == 'vfat' else fstype}")


@pytest.fixture(scope="module")
def ext4_image(tmp_path_factory):
    """(source tree, raw disk holding ext4 directly, its VMDK)"""
    d = tmp_path_factory.mktemp("ext4img")
    src = d / "src"
    make_tree(src)
    mkfs_ext4(d / "disk.raw", src, 16)
    to_vmdk(d / "disk.raw", d / "disk.vmdk")
    return src, d / "disk.raw", d / "disk.vmdk"


@pytest.fixture(scope="module")
def gpt_image(tmp_path_factory):
    """GPT disk: p1 ext4 'rootfs', p2 FAT 'data'."""
    need("sgdisk")
    d = tmp_path_factory.mktemp("gptimg")
    src1, src2 = d / "src1", d / "src2"
    make_tree(src1)
    fat_tree(src2)
    mkfs_ext4(d / "p1.img", src1, 8)
    mkfs_vfat(d / "p2.img", src2, 8)
    disk = d / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(20 * MiB)
    run(["sgdisk", "-n", "1:2048:+8M", "-t", "1:8300", "-c", "1:rootfs",
         "-n", "2:0:+8M", "-t", "2:0700", "-c", "2:data", disk])
    put(disk, d / "p1.img", 2048 * 512)
    put(disk, d / "p2.img", (2048 + 16384) * 512)
    to_vmdk(disk, d / "disk.vmdk")
    return {"dir": d, "raw": disk, "vmdk": d / "disk.vmdk",
            "parts": {"p1-linux-rootfs": (d / "p1.img", src1),
                      "p2-basic-data-data": (d / "p2.img", src2)}}


@pytest.fixture(scope="module")
def mbr_image(tmp_path_factory):
    """MBR disk: p1 primary FAT, p2 extended, p5 logical ext4."""
    need("sfdisk")
    d = tmp_path_factory.mktemp("mbrimg")
    src1, src5 = d / "src1", d / "src5"
    fat_tree(src1)
    make_tree(src5)
    mkfs_vfat(d / "p1.img", src1, 6)
    mkfs_ext4(d / "p5.img", src5, 6)
    disk = d / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(16 * MiB)
    layout = ("label: dos\n"
              "start=2048, size=12288, type=c\n"
              "start=14336, size=18432, type=5\n"
              "start=16384, size=12288, type=83\n")
    run(["sfdisk", "-q", disk], input=layout)
    put(disk, d / "p1.img", 2048 * 512)
    put(disk, d / "p5.img", 16384 * 512)
    to_vmdk(disk, d / "disk.vmdk")
    return {"dir": d, "raw": disk, "vmdk": d / "disk.vmdk",
            "parts": {"p1-fat32-lba": (d / "p1.img", src1),
                      "p5-linux": (d / "p5.img", src5)}}


# ---- the raw views ------------------------------------------------------

@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized",
                                       "monolithicFlat",
                                       "twoGbMaxExtentSparse"])
def test_disk_equals_qemu_img_raw(ext4_image, tmp_path, subformat):
    _, raw, _ = ext4_image
    img = tmp_path / "disk.vmdk"
    to_vmdk(raw, img, subformat)
    ref = tmp_path / "ref.raw"
    run(["qemu-img", "convert", "-O", "raw", img, ref])
    with vmdkfs(img, tmp_path / "mnt") as m:
        assert os.path.getsize(m / "disk") == os.path.getsize(ref)
        assert files_equal(m / "disk", ref)
        assert sorted(os.listdir(m)) == ["disk", "info.json", "partitions"]
        assert os.listdir(m / "partitions") == []


def test_delta_chain_shows_top(ext4_image, tmp_path):
    _, raw, _ = ext4_image
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    to_vmdk(raw, base)
    run(["qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F",
         "vmdk", child], cwd=tmp_path)
    run(["qemu-io", "-c", "write -P 0x5a 1M 64k", child])
    ref = tmp_path / "ref.raw"
    run(["qemu-img", "convert", "-O", "raw", child, ref])
    with vmdkfs(child, tmp_path / "mnt") as m:
        assert files_equal(m / "disk", ref)
        info = json.loads((m / "info.json").read_text())
        assert len(info["chain"]) == 2
    # an absolute parent path needs allow_escape
    abs_child = tmp_path / "abs.vmdk"
    run(["qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk",
         abs_child])
    os.makedirs(tmp_path / "m2")
    assert "allow" in vmdkfs_fails(abs_child, tmp_path / "m2")
    with vmdkfs(abs_child, tmp_path / "m3", "-o", "allow_escape") as m:
        assert files_equal(m / "disk", raw)


def daemon_pid(mnt):
    """Pid of the vmdkfs daemon serving mnt (its argv names the mount)."""
    want = os.path.realpath(str(mnt)).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(exe) == "vmdkfs" and want in argv:
            return int(pid)
    raise AssertionError(f"no vmdkfs daemon for {mnt}")


def direct_reads(path, ref, spans):
    """Read (offset, length) spans of path with O_DIRECT; compare to ref."""
    import mmap
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with open(ref, "rb") as r:
            for off, n in spans:
                buf = mmap.mmap(-1, n)
                assert os.preadv(fd, [buf], off) == n
                r.seek(off)
                assert buf[:] == r.read(n), f"bytes differ in {off}+{n}"
                buf.close()
    finally:
        os.close(fd)


def test_ro_reads_splice_from_image_files(tmp_path):
    """A read-only mount answers reads of `disk` by having libfuse splice
    the image's files to the kernel: requests that mix a sparse child's
    grains, a compressed parent's grains and zeros read as qemu-img
    reads them, and the daemon splices (strace)."""
    strace = need("strace")
    raw = tmp_path / "base.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(3 * MiB) + bytes(MiB) + os.urandom(2 * MiB))
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    to_vmdk(raw, base, "streamOptimized")
    run(["qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F",
         "vmdk", child], cwd=tmp_path)
    run(["qemu-io", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0x5b 1M 64k",
         "-c", "write -P 0x5c 2112k 8k", "-c", "write -z 5M 128k",
         "-c", "write -P 0x5d 3M 256k", child])
    ref = tmp_path / "ref.raw"
    run(["qemu-img", "convert", "-O", "raw", child, ref])
    spans = [(0, MiB), (0, 512 * 1024), (MiB - 4096, 3 * 4096),
             (MiB, MiB), (2 * MiB, 256 * 1024), (3 * MiB - 8192, 512 * 1024),
             (4 * MiB, 2 * MiB), (6 * MiB - 8192, 8192), (12288, 4096)]
    with vmdkfs(child, tmp_path / "mnt") as m:
        log = tmp_path / "strace.txt"
        tr = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=splice",
                               "-o", str(log), "-p",
                               str(daemon_pid(m))], stderr=subprocess.PIPE)
        try:
            time.sleep(1)  # strace attaches to every thread
            direct_reads(m / "disk", ref, spans)
            assert files_equal(m / "disk", ref)
        finally:
            tr.terminate()
            tr.wait(timeout=10)
        # splice(FD, [OFFSET], PIPE, ...): from a file, not from memory
        spliced = [ln for ln in log.read_text().splitlines()
                   if re.search(r"splice\(\d+, \[\d+\], ", ln) and
                   "= -1" not in ln]
        assert spliced, "the daemon never spliced from the image's files"


def test_stream_reads_reply_from_worker_memfd(tmp_path):
    """Reads of a streamOptimized disk (no host-file run to splice) are
    answered from each worker's memfd reply buffer by splice: four readers
    at once, O_DIRECT, spans of 8 KiB to 1 MiB at odd places, read exactly
    what qemu-img reads, and the daemon splices from its memfds (strace)."""
    import random
    import threading
    strace = need("strace")
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(4 * MiB) + bytes(MiB) +
                b"ovk memfd reply line\n" * (3 * MiB // 21) + os.urandom(MiB))
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img, "streamOptimized")
    ref = tmp_path / "ref.raw"
    run(["qemu-img", "convert", "-O", "raw", img, ref])
    size = os.path.getsize(ref)
    with vmdkfs(img, tmp_path / "mnt") as m:
        log = tmp_path / "strace.txt"
        tr = subprocess.Popen([strace, "-f", "-qq", "-y", "-e", "trace=splice",
                               "-o", str(log), "-p", str(daemon_pid(m))],
                              stderr=subprocess.PIPE)
        errors = []

        def reader(seed):
            rnd = random.Random(seed)
            spans = []
            for _ in range(60):
                n = rnd.choice([8192, 65536, 200704, 512 * 1024, MiB])
                spans.append((rnd.randrange(0, (size - n) // 4096) * 4096, n))
            try:
                direct_reads(m / "disk", ref, spans)
            except AssertionError as e:
                errors.append(f"reader {seed}: {e}")

        try:
            time.sleep(1)  # strace attaches to every thread
            threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            tr.terminate()
            tr.wait(timeout=10)
        assert not errors, errors
        assert files_equal(m / "disk", ref)
        assert re.search(r"splice\(\d+<[^>]*memfd:vmdkfs-reply", log.read_text()), \
            "the daemon never spliced from a reply memfd"


def test_info_json_matches_vmdk_info(ext4_image, tmp_path):
    _, _, img = ext4_image
    want = json.loads(run([tool("vmdk"), "info", "--output=json", img])
                      .stdout)
    with vmdkfs(img, tmp_path / "mnt") as m:
        got = json.loads((m / "info.json").read_text())
    assert got == want


def test_gpt_partitions(gpt_image, tmp_path):
    with vmdkfs(gpt_image["vmdk"], tmp_path / "mnt") as m:
        names = sorted(os.listdir(m / "partitions"))
        assert names == sorted(gpt_image["parts"])
        for name, (img, _) in gpt_image["parts"].items():
            p = m / "partitions" / name
            assert os.path.getsize(p) == os.path.getsize(img)
            assert files_equal(p, img)


def test_mbr_logical_partitions(mbr_image, tmp_path):
    with vmdkfs(mbr_image["vmdk"], tmp_path / "mnt") as m:
        names = sorted(os.listdir(m / "partitions"))
        assert names == ["p1-fat32-lba", "p2-extended", "p5-linux"]
        assert os.path.getsize(m / "partitions" / "p2-extended") == \
            18432 * 512
        for name, (img, _) in mbr_image["parts"].items():
            p = m / "partitions" / name
            assert os.path.getsize(p) == os.path.getsize(img)
            assert files_equal(p, img)


# ---- browsing guest filesystems -------------------------------------------

@pytest.mark.parametrize("mode", BROWSE_MODES)
def test_browse_ext4_equals_source(ext4_image, tmp_path, mode):
    if mode == "fuse":
        need("fuse2fs")
    src, _, img = ext4_image
    with vmdkfs(img, tmp_path / "mnt", "-o", f"browse={mode}") as m:
        status = (m / "fs" / "status.txt").read_text()
        assert "disk\text4\tmounted" in status, status
        assert tree_listing(m / "fs" / "disk") == tree_listing(src)
        st = os.stat(m / "fs" / "disk" / "etc" / "hostname")
        assert int(st.st_mtime) == 1_600_000_000


@pytest.mark.parametrize("mode", AUTO_MODES)
@pytest.mark.parametrize("layout", ["gpt", "mbr"])
def test_browse_partitions(gpt_image, mbr_image, tmp_path, mode, layout):
    if mode == "fuse":
        need("fuse2fs")
        need("fusefat")
    image = gpt_image if layout == "gpt" else mbr_image
    with vmdkfs(image["vmdk"], tmp_path / "mnt", "--browse",
                "-o", f"browse={mode}") as m:
        status = (m / "fs" / "status.txt").read_text()
        for name, (_, src) in image["parts"].items():
            assert f"{name}\t" in status and "not mounted" not in status, \
                status
            assert tree_listing(m / "fs" / name) == tree_listing(src), name
        assert "p2-extended" not in os.listdir(m / "fs")
        lines = dict(ln.split("\t", 1) for ln in status.splitlines())
        for name, line in lines.items():
            if mode == "fuse":
                assert "kernel" not in line
            elif "ext4" in line or kernel_has("vfat"):
                assert "(kernel, loop device)" in line, line


def test_browse_lists_unmountable_with_reason(mbr_image, tmp_path):
    """Forced kernel mode on a kernel without vfat, and a partition holding
    no filesystem: both are listed in fs/status.txt with the reason."""
    if not IS_ROOT:
        pytest.skip("kernel loop mounts need root")
    with vmdkfs(mbr_image["vmdk"], tmp_path / "mnt",
                "-o", "browse=kernel") as m:
        lines = dict(ln.split("\t", 1) for ln in
                     (m / "fs" / "status.txt").read_text().splitlines())
        assert "mounted read-only (kernel" in lines["p5-linux"]
        if not kernel_has("vfat"):
            assert lines["p1-fat32-lba"].startswith("vfat\tnot mounted: ")
            assert "p1-fat32-lba" not in os.listdir(m / "fs")
    raw = tmp_path / "blank.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    run(["sfdisk", "-q", raw], input="label: dos\nstart=2048, type=83\n")
    with vmdkfs(raw, tmp_path / "mnt2", "-o", "browse,format=raw") as m:
        status = (m / "fs" / "status.txt").read_text()
        assert status == ("p1-linux\t-\tnot mounted: no filesystem "
                          "recognised (not ext2/3/4, FAT or NTFS)\n")


def staging_mounts(img):
    """Mount points under the staging folders of daemons serving img (other
    vmdkfs instances on the machine, e.g. a concurrent test run, have their
    own staging folders and are left out)."""
    roots, points = [], []
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            head, _, tail = ln.partition(" - ")
            point, source = head.split()[4], tail.split()[1]
            points.append(point)
            if ("/vmdkfs." in point and point.endswith("/dev")
                    and source == str(img)):
                roots.append(point[:-len("/dev")])
    return [p for p in points if any(p.startswith(r + "/") for r in roots)]


def test_unmount_takes_guest_mounts_down(ext4_image, tmp_path):
    _, _, img = ext4_image
    mnt = tmp_path / "mnt"
    with vmdkfs(img, mnt, "--browse") as m:
        before = staging_mounts(img)
        assert before, "guest filesystem not mounted in staging"
        r = subprocess.run(["fusermount3", "-u", m], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert wait_unmounted(m)
        deadline = time.time() + 10
        while time.time() < deadline:
            with open("/proc/self/mountinfo") as f:
                left = [p for p in (ln.split()[4] for ln in f) if p in before]
            if not left:
                break
            time.sleep(0.1)
        assert not left, f"left mounted: {left}"


@pytest.mark.parametrize("mode", BROWSE_MODES)
def test_unmount_right_after_reading_guest_files(ext4_image, tmp_path, mode):
    """Files under fs/ closed just before the unmount: the kernel may never
    send their releases, and the daemon must still let the guest
    filesystems go and exit (not hang holding the image)."""
    if mode == "fuse":
        need("fuse2fs")
    _, _, img = ext4_image
    mnt = tmp_path / "mnt"
    with vmdkfs(img, mnt, "-o", f"browse={mode}") as m:
        for _ in range(20):
            for p in (m / "fs" / "disk" / "etc" / "hostname",
                      m / "fs" / "disk" / "bin.dat"):
                with open(p, "rb") as f:
                    f.read()
        r = subprocess.run(["fusermount3", "-u", m], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        wait_no_process_with_arg(str(mnt), timeout=15)


def thread_stacks(pid):
    """Every thread's stack of a live process (gdb), or where each waits
    in the kernel when gdb is missing: for a daemon that hangs."""
    if shutil.which("gdb"):
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex",
                            "thread apply all bt"], capture_output=True,
                           text=True, timeout=60)
        return r.stdout[-20000:]
    out = []
    for t in sorted(os.listdir(f"/proc/{pid}/task")):
        try:
            with open(f"/proc/{pid}/task/{t}/stack") as f:
                out.append(f"thread {t}:\n{f.read()}")
        except OSError as e:
            out.append(f"thread {t}: {e}")
    return "\n".join(out)


@pytest.mark.parametrize("opts", [(), ("-s",)], ids=["pool", "single"])
def test_sigterm_unmounts_everything(ext4_image, tmp_path, opts):
    _, _, img = ext4_image
    mnt = tmp_path / "mnt"
    os.makedirs(mnt)
    p = subprocess.Popen([tool("vmdkfs"), "-f", "--browse", *opts, img, mnt],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not is_mounted(mnt) and time.time() < deadline:
            time.sleep(0.05)
        assert is_mounted(mnt)
        assert (mnt / "fs" / "disk" / "etc" / "hostname").read_text() == \
            "guest\n"
        p.terminate()
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("vmdkfs did not exit within 20 s of SIGTERM; its "
                        "threads:\n" + thread_stacks(p.pid))
        assert rc == 0, p.stderr.read()
        assert not is_mounted(mnt)
        with open("/proc/self/mountinfo") as f:
            assert not [ln for ln in f if "/vmdkfs." in ln and
                        f"vmdkfs.{p.pid}" in ln]
    finally:
        if p.poll() is None:
            p.kill()
        force_unmount(mnt)


def mounts_of_daemon(pid):
    """Mount points under the staging folder of vmdkfs process pid."""
    with open("/proc/self/mountinfo") as f:
        return [p for p in (ln.split()[4] for ln in f) if f"/vmdkfs.{pid}." in p]


@pytest.mark.parametrize("mode", BROWSE_MODES)
def test_killed_daemon_leftovers_taken_down_by_next(ext4_image, tmp_path, mode):
    """A daemon killed with SIGKILL cannot unmount its guest filesystems:
    they stay mounted in its staging folder. The next vmdkfs takes them
    down, removes the folder and says so."""
    if mode == "fuse":
        need("fuse2fs")
    _, _, img = ext4_image
    mnt, mnt2 = tmp_path / "mnt", tmp_path / "mnt2"
    stack = contextlib.ExitStack()
    # a live daemon, whose staging folder the sweep must leave alone
    live = stack.enter_context(vmdkfs(img, tmp_path / "live", "--browse"))
    os.makedirs(mnt)
    p = subprocess.Popen([tool("vmdkfs"), "-f", "-o", f"browse={mode}", img, mnt],
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not is_mounted(mnt) and time.time() < deadline:
            time.sleep(0.05)
        assert (mnt / "fs" / "disk" / "etc" / "hostname").read_text() == "guest\n"
        left = mounts_of_daemon(p.pid)
        assert any(x.endswith("/fs/disk") for x in left), left
        p.kill()
        p.wait()
        assert mounts_of_daemon(p.pid) == left      # nobody took them down
        staging = next(x for x in left if x.endswith("/fs/disk"))[:-len("/fs/disk")]
    except BaseException:
        stack.close()
        raise
    finally:
        if p.poll() is None:
            p.kill()
        force_unmount(mnt)                           # the dead daemon's own mount
    try:
        os.makedirs(mnt2)
        r = subprocess.run([tool("vmdkfs"), "--browse", img, mnt2],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"left in {staging} by vmdkfs process {p.pid}" in r.stderr, r.stderr
        assert r.stderr.count("took down") == 1, r.stderr
        assert mounts_of_daemon(p.pid) == []
        assert not os.path.exists(staging)
        # the new mount works, with its own staging folder, and so does
        # the live one
        for m in (mnt2, live):
            assert (m / "fs" / "disk" / "etc" / "hostname").read_text() == "guest\n"
    finally:
        for x in reversed(mounts_of_daemon(p.pid)):  # only if the sweep failed
            subprocess.run(["umount", "-l", x], capture_output=True)
        force_unmount(mnt2)
        stack.close()
    if mode == "fuse":
        # fuse2fs of the dead daemon ends once its mount is gone
        wait_no_process_with_arg(staging + "/fs/disk", timeout=10)


# ---- real tools on the browsed tree --------------------------------------

def test_clamscan_finds_planted_file_only(tmp_path):
    need("clamscan")
    src = tmp_path / "src"
    make_tree(src)
    planted = src / "etc" / "deep" / "payload.bin"
    planted.write_bytes(b"ovk-planted-test-signature-" + b"\x01" * 64)
    data = planted.read_bytes()
    db = tmp_path / "test.hdb"
    db.write_text(f"{hashlib.md5(data).hexdigest()}:{len(data)}:"
                  "Ovk.Test.Planted\n")
    mkfs_ext4(tmp_path / "disk.raw", src, 16)
    to_vmdk(tmp_path / "disk.raw", tmp_path / "disk.vmdk")
    with vmdkfs(tmp_path / "disk.vmdk", tmp_path / "mnt", "--browse") as m:
        r = subprocess.run(["clamscan", "-r", "--no-summary", "-d", db,
                            m / "fs"], capture_output=True, text=True)
        found = [ln for ln in r.stdout.splitlines() if ln.endswith("FOUND")]
        assert r.returncode == 1, r.stdout + r.stderr
        assert found == [f"{m}/fs/disk/etc/deep/payload.bin: "
                         "Ovk.Test.Planted.UNOFFICIAL FOUND"], r.stdout


@pytest.mark.parametrize("mode", BROWSE_MODES)
def test_tar_backup_reproduces_tree(ext4_image, tmp_path, mode):
    if mode == "fuse":
        need("fuse2fs")
    src, _, img = ext4_image
    out = tmp_path / "restore"
    os.makedirs(out)
    with vmdkfs(img, tmp_path / "mnt", "-o", f"browse={mode}") as m:
        tar = tmp_path / "backup.tar"
        run(["tar", "-C", m / "fs" / "disk", "--exclude=./lost+found",
             "-cpf", tar, "."])
    run(["tar", "-C", out, "-xpf", tar])
    assert tree_listing(out) == tree_listing(src)
    for rel in ("etc/hostname", "bin.dat", "etc/deep"):
        a, b = os.lstat(src / rel), os.lstat(out / rel)
        assert (a.st_mode, int(a.st_mtime)) == (b.st_mode, int(b.st_mtime))


# ---- patch workflows ---------------------------------------------------

@pytest.mark.parametrize("driver", BROWSE_MODES)
def test_patch_rw_flat_image(ext4_image, tmp_path, driver):
    """Mount -o rw, mount the guest filesystem read-write from the disk
    file, change files, unmount everything: qemu-img check is clean and a
    fresh mount shows the change."""
    if driver == "fuse":
        need("fuse2fs")
    src, raw, _ = ext4_image
    img = tmp_path / "flat.vmdk"
    to_vmdk(raw, img, "monolithicFlat")
    guest = tmp_path / "guest"
    with vmdkfs(img, tmp_path / "mnt", "-o", "rw") as m:
        if driver == "kernel":
            ctx = loop_mount(m / "disk", guest, "rw")
        else:
            ctx = fuse_driver(["fuse2fs", "-o", "rw", str(m / "disk")], guest)
        with ctx:
            (guest / "etc" / "hostname").write_text("patched\n")
            (guest / "new-file").write_bytes(b"N" * 100000)
            os.unlink(guest / "bin.dat")
    run(["qemu-img", "check", img])
    with vmdkfs(img, tmp_path / "mnt2", "--browse") as m:
        root = m / "fs" / "disk"
        assert (root / "etc" / "hostname").read_text() == "patched\n"
        assert (root / "new-file").read_bytes() == b"N" * 100000
        assert not (root / "bin.dat").exists()
    r = run(["qemu-img", "compare", raw, img], check=False)
    assert r.returncode == 1  # the image really changed


def test_rw_second_writer_refused(tmp_path):
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    img = tmp_path / "flat.vmdk"
    to_vmdk(raw, img, "monolithicFlat")
    with vmdkfs(img, tmp_path / "m1", "-o", "rw"):
        os.makedirs(tmp_path / "m2")
        r = subprocess.run([tool("vmdkfs"), "-o", "rw", img, tmp_path / "m2"],
                           capture_output=True, text=True)
        assert r.returncode != 0
        assert "in use" in r.stderr
        assert not is_mounted(tmp_path / "m2")
        # readers that do not lock still work
        with vmdkfs(img, tmp_path / "m3", "-o", "share") as m3:
            assert os.path.getsize(m3 / "disk") == 4 * MiB


def test_rw_write_reaches_image(tmp_path):
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    img = tmp_path / "flat.vmdk"
    to_vmdk(raw, img, "monolithicFlat")
    pattern = os.urandom(256 * 1024)
    with vmdkfs(img, tmp_path / "m", "-o", "rw") as m:
        with open(m / "disk", "r+b") as f:
            f.seek(MiB + 512)
            f.write(pattern)
            f.flush()
            os.fsync(f.fileno())
        with open(m / "disk", "rb") as f:
            f.seek(MiB + 512)
            assert f.read(len(pattern)) == pattern
    out = tmp_path / "out.raw"
    run(["qemu-img", "convert", "-O", "raw", img, out])
    with open(out, "rb") as f:
        f.seek(MiB + 512)
        assert f.read(len(pattern)) == pattern
    run(["qemu-img", "check", img])


def test_ro_refuses_writes(ext4_image, tmp_path):
    _, _, img = ext4_image
    with vmdkfs(img, tmp_path / "m") as m:
        with pytest.raises(OSError):
            open(m / "disk", "r+b")


def test_snapshot_keeps_base(ext4_image, tmp_path):
    src, raw, _ = ext4_image
    base = tmp_path / "base.vmdk"
    to_vmdk(raw, base)
    child = tmp_path / "child.vmdk"
    os.makedirs(tmp_path / "m")
    r = subprocess.run([tool("vmdkfs"), "-o", f"snapshot={child}", base,
                        tmp_path / "m"], capture_output=True, text=True)
    if r.returncode != 0:
        force_unmount(tmp_path / "m")
    assert r.returncode == 0, r.stderr
    try:
        before = hashlib.sha256(base.read_bytes()).hexdigest()
        with loop_mount(tmp_path / "m" / "disk", tmp_path / "g", "rw") as g:
            (g / "etc" / "hostname").write_text("snap\n")
    finally:
        force_unmount(tmp_path / "m")
    assert hashlib.sha256(base.read_bytes()).hexdigest() == before
    run(["qemu-img", "check", child])
    with vmdkfs(child, tmp_path / "m2", "--browse") as m:
        assert (m / "fs" / "disk" / "etc" / "hostname").read_text() == \
            "snap\n"


def test_snapshot_child_named_after_the_image(tmp_path):
    """-o snapshot without a path puts IMAGE-snapshot-STAMP.vmdk next to
    the image, whatever folder vmdkfs was started from."""
    base = tmp_path / "img" / "base.vmdk"
    os.makedirs(base.parent)
    run(["qemu-img", "create", "-q", "-f", "vmdk", base, "8M"])
    os.makedirs(tmp_path / "m")
    r = subprocess.run([tool("vmdkfs"), "-o", "snapshot", "img/base.vmdk",
                        tmp_path / "m"], capture_output=True, text=True,
                       cwd=tmp_path)
    if r.returncode != 0:
        force_unmount(tmp_path / "m")
    assert r.returncode == 0, r.stderr
    force_unmount(tmp_path / "m")
    children = list(base.parent.glob("base-snapshot-*.vmdk"))
    assert len(children) == 1, list(base.parent.iterdir())
    assert json.loads(run(["qemu-img", "info", "--output=json",
                           children[0]]).stdout)["backing-filename"]


# ---- errors a user can act on --------------------------------------------

def vmdkfs_fails(*args):
    r = subprocess.run([tool("vmdkfs"), *map(str, args)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    return r.stderr


def test_error_missing_image(tmp_path):
    os.makedirs(tmp_path / "m")
    assert "no such file" in vmdkfs_fails(tmp_path / "nope.vmdk",
                                          tmp_path / "m")


def test_error_not_a_vmdk(tmp_path):
    os.makedirs(tmp_path / "m")
    (tmp_path / "x.vmdk").write_bytes(b"\0" * 4096)
    assert "not a VMDK" in vmdkfs_fails(tmp_path / "x.vmdk", tmp_path / "m")
    assert not is_mounted(tmp_path / "m")


def test_error_corrupt_header(ext4_image, tmp_path):
    _, _, img = ext4_image
    bad = tmp_path / "bad.vmdk"
    data = bytearray(img.read_bytes())
    data[4:8] = b"\xff\xff\xff\x7f"  # version
    bad.write_bytes(bytes(data))
    os.makedirs(tmp_path / "m")
    err = vmdkfs_fails(bad, tmp_path / "m")
    assert "bad.vmdk" in err


def test_error_mountpoint_missing_or_busy(ext4_image, tmp_path):
    _, _, img = ext4_image
    assert "does not exist" in vmdkfs_fails(img, tmp_path / "nodir")
    os.makedirs(tmp_path / "full")
    (tmp_path / "full" / "x").write_text("x")
    assert "not empty" in vmdkfs_fails(img, tmp_path / "full")
    with vmdkfs(img, tmp_path / "m"):
        assert "busy" in vmdkfs_fails(img, tmp_path / "m")


def wait_no_process_with_arg(arg, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        busy = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if arg.encode() in args:
                busy = True
                break
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError(f"a process still works on {arg}")


@pytest.fixture(scope="module")
def ntfs_image(tmp_path_factory):
    """GPT disk holding one NTFS partition, filled through ntfs-3g."""
    need("sgdisk")
    need("mkntfs")
    need("ntfs-3g")
    if not IS_ROOT:
        pytest.skip("filling an NTFS volume through ntfs-3g needs root here")
    d = tmp_path_factory.mktemp("ntfsimg")
    src = d / "src"
    fat_tree(src)
    (src / "Docs Folder" / "deeper").mkdir()
    (src / "Docs Folder" / "deeper" / "r\u00e9sum\u00e9.txt").write_text(
        "unicode name\n")
    (src / "big.bin").write_bytes(hashlib.sha256(b"ntfs").digest() * 40000)
    part = d / "p1.img"
    with open(part, "wb") as f:
        f.truncate(16 * MiB)
    run(["mkntfs", "-q", "-F", "-Q", "-L", "winvol", "-p", "2048",
         "-H", "16", "-S", "63", part])
    with fuse_driver(["ntfs-3g", str(part)], str(d / "fill")) as m:
        for name in os.listdir(src):
            s_, t_ = src / name, os.path.join(m, name)
            if os.path.isdir(s_):
                shutil.copytree(s_, t_)
            else:
                shutil.copyfile(s_, t_)
    # ntfs-3g closes the volume (marks it clean) after the unmount returns
    wait_no_process_with_arg(str(part))
    disk = d / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(20 * MiB)
    run(["sgdisk", "-n", "1:2048:+16M", "-t", "1:0700", "-c", "1:windows",
         disk])
    put(disk, part, 2048 * 512)
    to_vmdk(disk, d / "disk.vmdk")
    return src, d / "disk.vmdk"


@pytest.mark.parametrize("mode", AUTO_MODES)
def test_browse_ntfs_in_gpt(ntfs_image, tmp_path, mode):
    """An NTFS partition of a GPT disk shows its files under fs/ (the
    kernel's ntfs3 when it has one, else ntfs-3g)."""
    src, img = ntfs_image
    with vmdkfs(img, tmp_path / "mnt", "-o", f"browse={mode}") as m:
        status = (m / "fs" / "status.txt").read_text()
        name = "p1-basic-data-windows"
        assert f"{name}\tntfs\tmounted" in status, status
        got = tree_listing(m / "fs" / name,
                           skip=("lost+found", "System Volume Information"))
        assert got == tree_listing(src)
        if mode == "fuse":
            assert "ntfs-3g" in status, status


@contextlib.contextmanager
def vmdkfs_on_mount_path():
    """mount(8) runs helpers with a fixed PATH: vmdkfs must be installed
    there, so put a link to the built one in /usr/local/bin meanwhile."""
    link = "/usr/local/bin/vmdkfs"
    if os.path.lexists(link) and not os.path.islink(link):
        pytest.skip(f"{link} is another install; not replacing it")
    made = False
    if not os.path.lexists(link):
        os.symlink(tool("vmdkfs"), link)
        made = True
    try:
        yield
    finally:
        if made:
            os.unlink(link)


def test_mount_helper_readwrite(tmp_path):
    """fstab's way to write: -o readwrite through mount(8) and
    mount.fuse3 (a bare 'rw' from mount(8) stays read-only)."""
    if not IS_ROOT:
        pytest.skip("mount(8) with a FUSE type needs root here")
    need("mount.fuse3")
    img = tmp_path / "w.vmdk"
    run([need("qemu-img"), "create", "-q", "-f", "vmdk", img, "4M"])
    mnt = tmp_path / "m"
    os.makedirs(mnt)
    with vmdkfs_on_mount_path():
        try:
            r = subprocess.run(["mount", "-t", "fuse.vmdkfs", img, mnt, "-o",
                                "readwrite"], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r.stderr
            with open(mnt / "disk", "r+b") as f:
                f.seek(MiB + 512)
                f.write(b"written via fstab" * 30)
            r = subprocess.run(["umount", mnt], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr
            assert wait_unmounted(mnt)
        finally:
            force_unmount(mnt)
    out = tmp_path / "out.raw"
    # the daemon closes the image after the unmount returns
    for _ in range(50):
        r = subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                            img, out], capture_output=True, text=True)
        if r.returncode == 0:
            break
        time.sleep(0.1)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        f.seek(MiB + 512)
        assert f.read(17 * 30) == b"written via fstab" * 30


def test_help_documents_fstab(tmp_path):
    r = subprocess.run([tool("vmdkfs"), "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0
    assert "fuse.vmdkfs" in r.stdout and "readwrite" in r.stdout
    assert "max_threads" in r.stdout


def test_mount_helper(ext4_image, tmp_path):
    """mount -t fuse.vmdkfs goes through mount.fuse3, which runs the
    program named after the subtype: `vmdkfs` found on PATH."""
    if not IS_ROOT:
        pytest.skip("mount(8) with a FUSE type needs root here")
    need("mount.fuse3")
    src, _, img = ext4_image
    mnt = tmp_path / "m"
    os.makedirs(mnt)
    # mount(8) runs helpers with a fixed PATH: vmdkfs must be installed
    # there, so put a link to the built one in /usr/local/bin meanwhile.
    link = "/usr/local/bin/vmdkfs"
    if os.path.lexists(link) and not os.path.islink(link):
        pytest.skip(f"{link} is another install; not replacing it")
    made = False
    if not os.path.lexists(link):
        os.symlink(tool("vmdkfs"), link)
        made = True
    env = dict(os.environ)
    try:
        r = subprocess.run(["mount", "-t", "fuse.vmdkfs", img, mnt, "-o",
                            "browse"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert tree_listing(mnt / "fs" / "disk") == tree_listing(src)
        # mount(8) passes 'rw' by itself: the image stays read-only
        with pytest.raises(OSError):
            open(mnt / "disk", "r+b")
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        force_unmount(mnt)
        if made:
            os.unlink(link)


# ---- memory --------------------------------------------------------------

def _is_asan(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized"])
def test_read_benchmark_peak_rss_bound(tmp_path, subformat):
    """The daemon's peak RSS stays under 64 MiB through the reads of
    bench/bench_vmdkfs.sh (1 MiB at depth 1 and 8, 4 KiB at depth 1 and
    32, O_DIRECT via io_uring) on an image half random, half text."""
    fio = need("fio")
    exe = tool("vmdkfs")
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(128 * MiB))
        line = b"ovk benchmark line of compressible text 0123456789\n"
        f.write((line * (128 * MiB // len(line) + 1))[:128 * MiB])
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img, subformat)
    raw.unlink()
    with vmdkfs(img, tmp_path / "m") as m:
        pid = daemon_pid(m)
        for rw, bs, depth in (("read", "1M", 1), ("read", "1M", 8),
                              ("randread", "4k", 1), ("randread", "4k", 32)):
            run([fio, "--name=b", f"--filename={m / 'disk'}",
                 "--ioengine=io_uring", "--direct=1", f"--rw={rw}",
                 f"--bs={bs}", f"--iodepth={depth}", "--runtime=2",
                 "--time_based", "--norandommap", "--randrepeat=0",
                 "--output-format=terse"])
        hwm = vm_hwm_kib(pid)
    print(f"{subformat}: vmdkfs peak RSS {hwm} KiB")
    if _is_asan(exe):
        pytest.skip("RSS bound not checked under AddressSanitizer (shadow "
                    f"memory); measured {hwm} KiB")
    assert hwm < 64 * 1024, f"vmdkfs peak RSS {hwm} KiB"


def fuse_workers(pid):
    """How many FUSE worker threads (loop.c names them) the daemon has."""
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                n += f.read().strip() == "vmdkfs-worker"
        except OSError:
            pass
    return n


@pytest.mark.parametrize("opts,lo,hi", [((), 3, 16), (("-s",), 1, 1),
                                        (("-o", "max_threads=3"), 1, 3)],
                         ids=["default", "single", "max_threads3"])
def test_worker_pool_bounds(tmp_path, opts, lo, hi):
    """Workers start as requests overlap (a depth-32 reader gets more than
    the two that take turns reading at depth 1), never past the bound, and
    every byte read at depth 32 is the image's."""
    fio = need("fio")
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(32 * MiB))
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img)
    with vmdkfs(img, tmp_path / "m", *opts) as m:
        pid = daemon_pid(m)
        run([fio, "--name=b", f"--filename={m / 'disk'}",
             "--ioengine=io_uring", "--direct=1", "--rw=randread",
             "--bs=4k", "--iodepth=32", "--runtime=1", "--time_based",
             "--norandommap", "--randrepeat=0", "--output-format=terse"])
        n = fuse_workers(pid)
        assert lo <= n <= hi, f"{n} FUSE workers"
        assert files_equal(m / "disk", raw)


def mount_bdi(mnt):
    """The maj:min of the FUSE mount at mnt (its BDI's name)."""
    real = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        rows = [ln.split() for ln in f]
    return [r[2] for r in rows if r[4] == real][-1]


def test_mount_reads_ahead_past_the_kernel_default(tmp_path):
    """A buffered sequential reader (tar, rsync, a scanner) gets the
    mount's read-ahead raised from the kernel's 128 KiB FUSE default to
    4 MiB, so several requests are in flight; the data read that way is
    what qemu-img reads."""
    if os.geteuid() != 0:
        pytest.skip("raising a mount's read_ahead_kb needs root")
    raw = tmp_path / "d.raw"
    raw.write_bytes(os.urandom(6 * MiB))
    img = tmp_path / "d.vmdk"
    to_vmdk(raw, img)
    with vmdkfs(img, tmp_path / "mnt") as m:
        bdi = mount_bdi(m)
        with open(f"/sys/class/bdi/{bdi}/read_ahead_kb") as f:
            assert int(f.read()) == 4096
        with open(m / "disk", "rb") as f:  # buffered, front to back
            data = b"".join(iter(lambda: f.read(MiB), b""))
        assert data == raw.read_bytes()
