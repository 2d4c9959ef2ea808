# SPDX-License-Identifier: Apache-2.0
"""Ceph RBD under the engine: rbd:POOL/IMAGE names wherever a path goes.

A one-node cluster (tests/cephcluster.py) is started once for the whole
session in a temporary folder and stopped at the end. Images are written
by ovk and checked by independent readers: qemu-img (qemu-block-extra's
rbd driver), the rbd CLI, nbdinfo/nbdcopy.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import cephcluster
import vmdkgen
from conftest import control_call, need, run, tool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "guest"))
import guestvm  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope="session")
def ceph(tmp_path_factory):
    miss = cephcluster.missing_programs()
    if miss:
        pytest.skip(f"Ceph is not installed (missing {', '.join(miss)}; "
                    ".ci/setup installs ceph-mon ceph-osd ceph-common)")
    c = cephcluster.CephCluster(tmp_path_factory.mktemp("ceph"))
    c.start()
    yield c
    c.stop()


_n = [0]


def fresh(prefix="img"):
    _n[0] += 1
    return f"{prefix}{os.getpid()}-{_n[0]}"


def qemu_sparse(d, name, subformat, size="64M"):
    """A VMDK written by qemu-img with data at 1 MiB and 40 MiB."""
    p = os.path.join(d, name)
    run([need("qemu-img"), "create", "-q", "-f", "vmdk", "-o",
         f"subformat={subformat}", p, size])
    run(["qemu-io", "-f", "vmdk", "-c", "write -P 0xab 1M 3M",
         "-c", "write -P 0xcd 40M 64k", p])
    return p


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized",
                                       "twoGbMaxExtentSparse",
                                       "monolithicFlat"])
def test_convert_qemu_vmdk_into_rbd(ceph, tmp_path, subformat):
    src = qemu_sparse(tmp_path, "d.vmdk", subformat)
    if subformat == "streamOptimized":
        # qemu-img writes streamOptimized only by convert
        so = tmp_path / "s.vmdk"
        run(["qemu-img", "convert", "-O", "vmdk", "-o",
             "subformat=streamOptimized", src, so])
        src = str(so)
    img = fresh()
    run([tool("vmdk"), "convert", src, ceph.spec(img)])
    run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", src,
         ceph.spec(img)])
    # the rbd CLI sees a raw image of the VMDK's virtual size
    info = run(["rbd", "-c", ceph.conf, "info", f"{ceph.pool}/{img}"]).stdout
    assert "64 MiB" in info


def test_convert_vmdkgen_stream_into_rbd(ceph, tmp_path):
    size = 8 * MiB
    grains = {0: vmdkgen.pattern(1, 65536), 7: vmdkgen.pattern(2, 65536),
              100: vmdkgen.pattern(3, 30000)}
    src = tmp_path / "gen.vmdk"
    src.write_bytes(vmdkgen.stream_extent(size, grains))
    img = fresh()
    run([tool("vmdk"), "convert", src, ceph.spec(img)])
    out = tmp_path / "out.raw"
    run(["rbd", "-c", ceph.conf, "export", f"{ceph.pool}/{img}", out])
    assert out.read_bytes() == vmdkgen.expected(size, grains)


def test_info_map_compare_on_rbd(ceph, tmp_path):
    src = qemu_sparse(tmp_path, "d.vmdk", "monolithicSparse")
    img = fresh()
    spec = ceph.spec(img)
    run([tool("vmdk"), "convert", src, spec])
    info = run([tool("vmdk"), "info", spec]).stdout
    assert "file format: raw" in info and "67108864 bytes" in info
    # holes come from RBD's allocation (rbd_diff_iterate2): the data at
    # 1..4 MiB and 40 MiB, the rest zero
    m = run([tool("vmdk"), "map", spec]).stdout.split("\n")[1:]
    rows = [r.split() for r in m if r.strip()]
    data = [(int(r[0], 16), int(r[1], 16)) for r in rows if r[3] == "data"]
    zero = sum(int(r[1], 16) for r in rows if r[3] == "zero")
    assert any(o <= 1 * MiB and o + n >= 4 * MiB for o, n in data)
    assert any(o <= 40 * MiB < o + n for o, n in data)
    assert zero >= 48 * MiB
    r = run([tool("vmdk"), "compare", src, spec])
    assert "identical" in r.stdout
    # a differing image is reported as such
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 10M 4k", spec])
    r = run([tool("vmdk"), "compare", src, spec], check=False)
    assert r.returncode == 1, r.stdout + r.stderr


def test_existing_image_not_overwritten(ceph, tmp_path):
    src = qemu_sparse(tmp_path, "d.vmdk", "monolithicSparse")
    img = fresh()
    run([tool("vmdk"), "convert", src, ceph.spec(img)])
    r = run([tool("vmdk"), "convert", src, ceph.spec(img)], check=False)
    assert r.returncode != 0
    assert f'image "{img}" exists in pool "{ceph.pool}"' in r.stderr


def test_rbd_back_to_stream_and_snapshot(ceph, tmp_path):
    src = qemu_sparse(tmp_path, "d.vmdk", "monolithicSparse")
    img = fresh()
    run([tool("vmdk"), "convert", src, ceph.spec(img)])
    run(["rbd", "-c", ceph.conf, "snap", "create",
         f"{ceph.pool}/{img}@before"])
    # change the head after the snapshot
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 0 1M", ceph.spec(img)])
    out = tmp_path / "back.vmdk"
    run([tool("vmdk"), "convert", "-O", "vmdk", "-o",
         "subformat=streamOptimized", ceph.spec(img, "before"), out])
    assert "streamOptimized" in run(["qemu-img", "info", out]).stdout
    run(["qemu-img", "compare", src, out])
    head = tmp_path / "head.vmdk"
    run([tool("vmdk"), "convert", "-O", "vmdk", ceph.spec(img), head])
    r = run(["qemu-img", "compare", src, head], check=False)
    assert r.returncode == 1
    run(["qemu-img", "compare", "-F", "raw", head, ceph.spec(img)])
    # a snapshot opens read-only: serving it writable is refused
    r = run([tool("pvblk"), "-o", "rw", "--nbd",
             f"unix:{tmp_path}/s.sock", ceph.spec(img, "before")],
            check=False, timeout=60)
    assert r.returncode != 0
    assert 'snapshot "before" is read-only' in r.stderr


def wait_socket(path, proc, timeout=60):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"pvblk exited: {proc.stderr.read()}")
        if time.monotonic() > end:
            raise AssertionError("pvblk did not listen")
        time.sleep(0.1)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_nbd_export_and_second_writer(ceph, tmp_path):
    need("nbdinfo")
    need("nbdcopy")
    src = qemu_sparse(tmp_path, "d.vmdk", "monolithicSparse")
    img = fresh()
    spec = ceph.spec(img)
    run([tool("vmdk"), "convert", src, spec])
    sock = str(tmp_path / "nbd.sock")
    p = subprocess.Popen([tool("pvblk"), "-o", "rw", "--nbd", f"unix:{sock}",
                          spec], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_socket(sock, p)
        uri = f"nbd+unix:///?socket={sock}"
        m = run(["nbdinfo", "--map", uri], timeout=60).stdout
        assert "hole,zero" in m and " data" in m
        out = tmp_path / "out.raw"
        run(["nbdcopy", uri, out], timeout=120)
        run(["qemu-img", "compare", "-f", "raw", out, src])
        # writes through NBD land in the image
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 20M 128k",
             uri], timeout=60)
        # the one-writer rule: a second writer is refused, naming the image
        r = run([tool("pvblk"), "-o", "rw", "--nbd",
                 f"unix:{tmp_path}/2.sock", spec], check=False, timeout=60)
        assert r.returncode != 0
        assert f'image "{ceph.pool}/{img}" is in use' in r.stderr
        r = run(["qemu-io", "-f", "raw", "-c", "write 0 4k", spec],
                check=False, timeout=60)
        assert r.returncode != 0
    finally:
        assert stop(p) == 0
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 20M 128k", spec],
            timeout=60)
    assert "read 131072/131072" in r.stdout


def test_osd_killed_mid_write_fails_cleanly(ceph, tmp_path):
    """With the OSD gone a writer must end with an error that says what
    failed, within the configured OSD operation timeout, not hang. The
    OSD is killed once the image's first data object exists (data is
    flowing); a machine fast enough to finish the whole convert before
    that gets a source four times larger (up to 1.5 GiB), so the kill
    always lands mid-write. (A kill right after the image is created,
    while the convert opens it, is not covered: librbd then waited past
    the 5 s timeout, more than 120 s.)"""
    raw = tmp_path / "d.raw"
    src = tmp_path / "d.vmdk"
    for mib in (96, 384, 1536):
        with open(raw, "wb") as f:
            for i in range(mib // 8):
                f.write(os.urandom(MiB) * 8)  # 8 MiB, no grain all zero
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", raw,
             src])
        os.unlink(raw)
        img = fresh()
        spec = ceph.spec(img) + ":rados_osd_op_timeout=5"
        p = subprocess.Popen([tool("vmdk"), "convert", src, spec],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        killed = False
        try:
            # kill the OSD once data is flowing: the image exists and its
            # first data object (named by its block_name_prefix) is there
            end = time.monotonic() + 60
            prefix = None
            while p.poll() is None:
                assert time.monotonic() < end, "no data object in 60 s"
                if prefix is None:
                    r = run(["rbd", "-c", ceph.conf, "info", "--format",
                             "json", f"{ceph.pool}/{img}"], check=False,
                            timeout=60)
                    if r.returncode == 0:
                        prefix = json.loads(r.stdout)["block_name_prefix"]
                elif prefix in run(["rados", "-c", ceph.conf, "-p",
                                    ceph.pool, "ls"], timeout=60).stdout:
                    break
                time.sleep(0.05)
            if p.poll() is not None:
                assert p.returncode == 0, p.stderr.read()
                continue  # done before the kill: a larger source
            ceph.kill("osd.0", signal.SIGKILL)
            killed = True
            t0 = time.monotonic()
            out, err = p.communicate(timeout=120)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if killed:
                ceph.start_osd()
        if p.returncode == 0:
            continue  # the last write landed just before the kill
        break
    else:
        raise AssertionError("every convert finished before the OSD was "
                             "killed, the 1.5 GiB one included")
    assert img in err and ("timed out" in err or "Connection" in err), err
    assert took < 100, f"took {took:.0f} s"


def test_vmdkfs_mounts_rbd_image(ceph, tmp_path):
    need("fusermount3")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    src = qemu_sparse(tmp_path, "d.vmdk", "monolithicSparse")
    img = fresh()
    run([tool("vmdk"), "convert", src, ceph.spec(img)])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run([tool("vmdkfs"), ceph.spec(img), mnt], timeout=60)
    try:
        run(["qemu-img", "compare", "-f", "raw", mnt / "disk", src])
    finally:
        run(["fusermount3", "-u", mnt])


def test_nbd_zeroes_and_trim_on_rbd(ceph, tmp_path):
    src = qemu_sparse(tmp_path, "d.vmdk", "monolithicSparse")
    img = fresh()
    spec = ceph.spec(img)
    run([tool("vmdk"), "convert", src, spec])
    sock = str(tmp_path / "nbd.sock")
    p = subprocess.Popen([tool("pvblk"), "-o", "rw", "--nbd", f"unix:{sock}",
                          spec], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_socket(sock, p)
        uri = f"nbd+unix:///?socket={sock}"
        r = run(["qemu-io", "-f", "raw", "-c", "write -z 1M 64k",
             "-c", "discard 2M 64k", "-c", "read -P 0 1M 64k",
             "-c", "read -P 0 2M 64k", "-c", "read -P 0xab 3M 64k", uri],
            timeout=60)
        assert "fail" not in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        assert stop(p) == 0
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0 1M 64k",
             "-c", "read -P 0 2M 64k", "-c", "read -P 0xab 3M 64k", spec],
            timeout=60)
    assert "fail" not in r.stdout + r.stderr, r.stdout + r.stderr


GUEST_ON_RBD = r"""
$MKE2FS -q -F -t ext4 /dev/vda
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt
echo "written by a guest whose disk is in Ceph" > /mnt/note.txt
dd if=/dev/urandom of=/mnt/big bs=64k count=64 2>/dev/null
md5sum /mnt/big | cut -d' ' -f1 > /mnt/big.md5
sync
umount /mnt
$E2FSCK -fn /dev/vda
mount -t ext4 -o ro /dev/vda /mnt
echo 3 > /proc/sys/vm/drop_caches
[ "$(md5sum /mnt/big | cut -d' ' -f1)" = "$(cat /mnt/big.md5)" ]
umount /mnt
echo "guest-on-rbd ok"
"""


def test_guest_runs_on_an_rbd_image(ceph, tmp_path):
    """A QEMU guest's disk is an RBD image served by pvblk over
    vhost-user-blk: the guest makes an ext4, writes and checks it; the
    host then reads the file back out of the image in Ceph."""
    for t in ("mke2fs", "e2fsck", "debugfs"):
        need(t)
    try:
        vmlinuz, moddir = guestvm.kernel(guestvm.cache_dir(
            os.environ.get("OVK_BUILD") and os.path.abspath(
                os.environ["OVK_BUILD"])))
    except guestvm.GuestUnavailable as e:
        pytest.skip(f"no guest kernel: {e}")
    img = fresh("guest")
    spec = ceph.spec(img)
    blank = tmp_path / "blank.vmdk"
    run([need("qemu-img"), "create", "-q", "-f", "vmdk", blank, "64M"])
    run([tool("vmdk"), "convert", blank, spec])
    sock = str(tmp_path / "vu.sock")
    p = subprocess.Popen([tool("pvblk"), "-o", "rw", "--vhost-user-blk",
                          sock, spec], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_socket(sock, p)
        initrd = tmp_path / "initrd.gz"
        env = "".join(f"{n.upper()}={shutil.which(n)}\n"
                      for n in ("mke2fs", "e2fsck"))
        guestvm.initramfs(str(initrd), env + GUEST_ON_RBD, moddir,
                          tools=["mke2fs", "e2fsck"])
        rc, text = guestvm.boot(vmlinuz, str(initrd), [
            "-chardev", f"socket,id=vu0,path={sock}",
            "-device", "vhost-user-blk-pci,chardev=vu0,num-queues=1"],
            str(tmp_path / "console.log"))
        assert rc == 0 and "guest-on-rbd ok" in text, text[-3000:]
    finally:
        assert stop(p) == 0
    raw = tmp_path / "back.raw"
    run([tool("vmdk"), "convert", "-O", "raw", spec, raw])
    run(["e2fsck", "-fn", raw])
    r = run(["debugfs", "-R", "cat /note.txt", raw])
    assert "written by a guest whose disk is in Ceph" in r.stdout


def api(path, **req):
    """One request on a control socket; its "return" member."""
    rep = control_call(path, **req)
    assert "return" in rep, rep
    return rep["return"]


def dirty(uri, name):
    r = run(["nbdinfo", "--json", f"--map=qemu:dirty-bitmap:{name}", uri],
            timeout=60)
    return [(e["offset"], e["length"]) for e in json.loads(r.stdout)
            if e["type"] & 1]


def ckpt_snaps(ceph, img):
    out = run(["rbd", "-c", ceph.conf, "snap", "ls", f"{ceph.pool}/{img}"],
              timeout=60).stdout
    return sorted(w for w in out.split() if w.startswith("ovk-ckpt-"))


def test_checkpoints_are_rbd_snapshots(ceph, tmp_path):
    """A checkpoint of an RBD disk is an RBD snapshot, and what changed
    since it comes from RBD's diff: the same extents through `vmdk
    checkpoint changed`, pvblk's control socket and NBD's
    qemu:dirty-bitmap:NAME, exactly the bytes written where the objects
    existed at the checkpoint; deleting it removes the snapshot."""
    need("nbdinfo")
    vmdk = tool("vmdk")
    raw = tmp_path / "d.raw"
    # data everywhere but 24..32 MiB (no RBD objects there)
    run(["qemu-img", "create", "-q", "-f", "raw", raw, "32M"])
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 24M", raw])
    img = fresh("ckpt")
    spec = ceph.spec(img)
    run([vmdk, "convert", raw, spec])
    run([vmdk, "checkpoint", "create", spec, "c1"])
    assert ckpt_snaps(ceph, img) == ["ovk-ckpt-c1"]
    sock, ctl = str(tmp_path / "nbd.sock"), str(tmp_path / "api.sock")
    p = subprocess.Popen([tool("pvblk"), "-o", "rw", "--nbd", f"unix:{sock}",
                          "--api-socket", ctl, spec],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_socket(sock, p)
        wait_socket(ctl, p)
        uri = f"nbd+unix:///?socket={sock}"
        assert dirty(uri, "c1") == []
        writes = [(1 * MiB, 4096), (10 * MiB + 512, 100 * 1024),
                  (26 * MiB, 4096)]
        run(["qemu-io", "-f", "raw"] +
            [a for o, n in writes for a in ("-c", f"write -P 0x22 {o} {n}")]
            + [uri], timeout=60)
        got = dirty(uri, "c1")
        # in objects that existed: exactly the bytes written; the object
        # at 24..28 MiB is new since, so it counts from its start
        assert got[:2] == writes[:2], got
        assert len(got) == 3 and got[2][0] == 24 * MiB and \
            got[2][0] + got[2][1] == 26 * MiB + 4096, got
        ch = api(ctl, command="changed", since="c1")
        assert [tuple(e) for e in ch["extents"]] == got, ch
        # another checkpoint through the control socket
        api(ctl, command="checkpoint-create", name="c2")
        assert api(ctl, command="checkpoint-list")["checkpoints"] == \
            ["c1", "c2"]
        assert dirty(uri, "c2") == []
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 5M 64k", uri],
            timeout=60)
        assert dirty(uri, "c2") == [(5 * MiB, 65536)]
        assert (5 * MiB, 65536) in dirty(uri, "c1")
        # RBD keeps the checkpoints: another program reads them while
        # pvblk holds the image's lock
        r = run([vmdk, "checkpoint", "changed", spec, "c2"], timeout=60)
        assert r.stdout == f"{5 * MiB} 65536\n", r.stdout
        api(ctl, command="checkpoint-delete", name="c1")
        assert ckpt_snaps(ceph, img) == ["ovk-ckpt-c2"]
        info = json.loads(run(["nbdinfo", "--json", uri]).stdout)
        assert "qemu:dirty-bitmap:c1" not in info["exports"][0]["contexts"]
    finally:
        assert stop(p) == 0
    assert run([vmdk, "checkpoint", "list", spec]).stdout == "c2\n"
    # the checkpoint opens as the disk was then
    r = run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 5M 64k",
             ceph.spec(img, "ovk-ckpt-c2")], timeout=60)
    assert "read 65536/65536" in r.stdout
    run([vmdk, "checkpoint", "delete", spec, "c2"])
    assert ckpt_snaps(ceph, img) == []
    r = run([vmdk, "checkpoint", "changed", spec, "c2"], check=False)
    assert r.returncode == 1 and "no checkpoint c2" in r.stderr


def test_checkpoint_changed_without_fast_diff(ceph, tmp_path):
    """An image without fast-diff (no object map): the exact diff asks
    every object, with the same answer."""
    img = fresh("nofd")
    run(["rbd", "-c", ceph.conf, "create", "--size", "16M",
         "--image-feature", "layering", f"{ceph.pool}/{img}"], timeout=60)
    spec = ceph.spec(img)
    # without the exclusive-lock feature a writer is refused, saying why
    r = run([tool("vmdk"), "checkpoint", "create", spec, "n1"], check=False)
    assert r.returncode == 1 and "no exclusive-lock feature" in r.stderr
    run(["rbd", "-c", ceph.conf, "feature", "enable", f"{ceph.pool}/{img}",
         "exclusive-lock"], timeout=60)
    run(["qemu-io", "-f", "raw", "-c", "write -P 1 0 16M", spec], timeout=60)
    vmdk = tool("vmdk")
    run([vmdk, "checkpoint", "create", spec, "n1"])
    run(["qemu-io", "-f", "raw", "-c", "write -P 2 7M 8k", "-c",
         "discard 12M 1M", spec], timeout=60)
    r = run([vmdk, "checkpoint", "changed", "--output=json", spec, "n1"])
    assert json.loads(r.stdout) == [
        {"offset": 7 * MiB, "length": 8192},
        {"offset": 12 * MiB, "length": MiB}], r.stdout
    # names RBD names cannot carry are refused, saying why
    r = run([vmdk, "checkpoint", "create", spec, "a@b"], check=False)
    assert r.returncode == 1 and "'@'" in r.stderr


@pytest.mark.parametrize("gz", [False, True])
def test_ovf_unpack_disks_into_rbd(ceph, tmp_path, gz):
    """`ovf unpack --disks-to rbd:POOL/PREFIX`: an OVA's streamOptimized
    disks go straight into RBD images PREFIX-DISKID (compared with the
    packaged VMDKs by qemu-img through its own rbd driver), the other
    files into the folder."""
    sys.path.insert(0, os.path.dirname(__file__))
    import ovfgen
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), disks=2,
                                               disk_size="16M")
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks,
                          tmp_path / "a.ova", gz=gz)
    prefix = fresh("ova")
    dest = tmp_path / "out"
    r = run([tool("ovf"), "unpack", "--disks-to",
             ceph.spec(prefix), ova, dest], timeout=120)
    assert r.stdout.split("\n")[:2] == [
        f"vmdisk{i} {ceph.spec(f'{prefix}-vmdisk{i}')}" for i in (1, 2)]
    assert sorted(os.listdir(dest)) == sorted([desc, "appliance.mf"])
    for i, d in enumerate(disks, 1):
        run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw",
             os.path.join(folder, d), ceph.spec(f"{prefix}-vmdisk{i}")],
            timeout=60)
    # the images exist now: a second unpack refuses and leaves them
    r = run([tool("ovf"), "unpack", "--disks-to", ceph.spec(prefix), ova,
             tmp_path / "again"], check=False, timeout=120)
    assert r.returncode == 1 and "exists" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "again")
    # a failure on the second disk leaves no image of the first
    other = fresh("ova")
    run(["rbd", "-c", ceph.conf, "create", "--size", "1M",
         f"{ceph.pool}/{other}-vmdisk2"], timeout=60)
    r = run([tool("ovf"), "unpack", "--disks-to", ceph.spec(other), ova,
             tmp_path / "third"], check=False, timeout=120)
    assert r.returncode == 1 and f"{other}-vmdisk2" in r.stderr, r.stderr
    ls = run(["rbd", "-c", ceph.conf, "ls", ceph.pool], timeout=60).stdout
    assert f"{other}-vmdisk1" not in ls.split()


def test_backups_of_a_served_rbd_disk(ceph, tmp_path):
    """ovkdisk's full and incremental backups of an RBD disk pvblk serves:
    the view is the backup checkpoint's RBD snapshot, the incremental
    reads only what RBD's diff says changed, and each point restores to
    the disk's bytes at that moment."""
    raw = tmp_path / "d.raw"
    run(["qemu-img", "create", "-q", "-f", "raw", raw, "32M"])
    run(["qemu-io", "-f", "raw", "-c", "write -P 1 0 8M", raw])
    img = fresh("bk")
    spec = ceph.spec(img)
    run([tool("vmdk"), "convert", raw, spec])
    sock, ctl = str(tmp_path / "nbd.sock"), str(tmp_path / "api.sock")
    p = subprocess.Popen([tool("pvblk"), "-o", "rw", "--nbd", f"unix:{sock}",
                          "--api-socket", ctl, spec],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    bk, points = tmp_path / "bk", []
    try:
        wait_socket(ctl, p)
        uri = f"nbd+unix:///?socket={sock}"
        for i, w in enumerate([None, "write -P 2 1M 64k", "write -P 3 20M 128k"]):
            if w:
                run(["qemu-io", "-f", "raw", "-c", w, uri], timeout=60)
            e = json.loads(run([tool("ovkdisk"), "backup", "--output=json",
                                ctl, bk], timeout=120).stdout)
            assert e["kind"] == ("full" if i == 0 else "incremental"), e
            if i:
                assert e["read_bytes"] == int(w.split()[-1][:-1]) * 1024, e
            at = tmp_path / f"at{i}.raw"
            run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, at],
                timeout=60)
            points.append((e["checkpoint"], at))
        # the last backup's checkpoint is kept, as an RBD snapshot
        assert ckpt_snaps(ceph, img) == [f"ovk-ckpt-{points[-1][0]}"]
        assert api(ctl, command="status")["view"] is None
    finally:
        assert stop(p) == 0
    for cp, at in points:
        out = tmp_path / f"r-{cp}.raw"
        run([tool("ovkdisk"), "restore", "--at", cp, bk, out], timeout=60)
        run(["qemu-img", "compare", "-f", "raw", "-F", "raw", out, at])
