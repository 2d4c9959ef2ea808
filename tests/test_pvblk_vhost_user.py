# SPDX-License-Identifier: Apache-2.0
"""pvblk's vhost-user-blk backend driven by a real Linux guest.

QEMU (TCG) boots Debian's kernel with the guest disks served by pvblk over
vhost-user-blk; a script inside the guest makes and checks ext4
filesystems, discards and zeroes ranges; afterwards the host checks the
images with qemu-img and reads the guest's files back out of them through
the engine (vmdk convert) and e2fsprogs. Each boot costs several seconds,
so one boot serves several disks. The harness is tests/guest/guestvm.py.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import need, run, tool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "guest"))
import guestvm  # noqa: E402

MiB = 1 << 20
DISK = 64 * MiB
FS_KIB = 48 * 1024  # the filesystem; the last 16 MiB are for raw checks


@pytest.fixture(scope="module")
def guest_kernel():
    need("qemu-system-x86_64")
    try:
        return guestvm.kernel(guestvm.cache_dir(
            os.environ.get("OVK_BUILD") and os.path.abspath(
                os.environ["OVK_BUILD"])))
    except guestvm.GuestUnavailable as e:
        pytest.skip(f"no guest kernel: {e}")


class Pvblk:
    """One pvblk daemon serving image over vhost-user-blk."""

    def __init__(self, image, sock, mode="rw", queues=1):
        self.sock = str(sock)
        n = 0
        while os.path.exists(f"{sock}.{n}.log"):
            n += 1
        self.log = open(f"{sock}.{n}.log", "w+")
        self.p = subprocess.Popen(
            [tool("pvblk"), "-o", mode, "--vhost-user-blk", self.sock,
             "--num-queues", str(queues), str(image)],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(500):
            if os.path.exists(self.sock) or self.p.poll() is not None:
                break
            time.sleep(0.02)
        assert os.path.exists(self.sock), self.text()

    def text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=60)
        assert rc == 0, f"pvblk exited {rc}:\n{self.text()}"
        assert not os.path.exists(self.sock)


def vu_args(socks, queues=1):
    args = []
    for i, s in enumerate(socks):
        args += ["-chardev", f"socket,id=vu{i},path={s}",
                 "-device",
                 f"vhost-user-blk-pci,chardev=vu{i},num-queues={queues}"]
    return args


# Per disk: a filesystem holding payload.bin and a note, checked by
# e2fsck, read back after a remount; then the 16 MiB past the filesystem:
# written, discarded, written again, zeroed with WRITE_ZEROES.
GUEST_DISK_CHECK = r"""
check_disk() {
  d=$1; name=$2
  echo "== $d ($name)"
  serial=$(cat /sys/block/$d/serial)
  echo "serial $serial"
  case "$serial" in ovk-????????????????) ;; *) echo "bad serial"; exit 1;; esac
  [ "$(cat /sys/block/$d/ro)" = 0 ]
  [ "$(cat /sys/block/$d/size)" = 131072 ]
  [ "$(cat /sys/block/$d/queue/write_zeroes_max_bytes)" -gt 0 ]
  [ "$(cat /sys/block/$d/queue/discard_max_bytes)" -gt 0 ]
  if [ "$3" = fresh ]; then
    $MKE2FS -q -F -t ext4 /dev/$d %(fs_kib)d
  fi
  mount -t ext4 /dev/$d /mnt
  if [ "$3" = chain ]; then
    cmp /mnt/parent.txt /parent.txt
  fi
  cp /payload.bin /mnt/payload.bin
  mkdir -p /mnt/dir
  echo "written by the guest on $name" > /mnt/dir/note.txt
  fstrim -v /mnt
  sync
  umount /mnt
  $E2FSCK -fn /dev/$d
  mount -t ext4 -o ro /dev/$d /mnt
  echo 3 > /proc/sys/vm/drop_caches
  cmp /mnt/payload.bin /payload.bin
  umount /mnt
  # raw checks past the filesystem (offsets in MiB)
  dd if=/payload.bin of=/dev/$d bs=1M seek=48 count=8 oflag=direct 2>/dev/null
  dd if=/dev/$d of=/tmp/back bs=1M skip=48 count=8 iflag=direct 2>/dev/null
  cmp /tmp/back /payload.bin
  $BLKDISCARD -f -o $((48*1048576)) -l $((8*1048576)) /dev/$d
  dd if=/payload.bin of=/dev/$d bs=1M seek=56 count=8 oflag=direct 2>/dev/null
  $BLKDISCARD -f -z -o $((56*1048576)) -l $((8*1048576)) /dev/$d
  dd if=/dev/$d of=/tmp/back bs=1M skip=56 count=8 iflag=direct 2>/dev/null
  dd if=/dev/zero of=/tmp/zero bs=1M count=8 2>/dev/null
  cmp /tmp/back /tmp/zero
  rm -f /tmp/back /tmp/zero
  echo "== $d ok"
}
"""

TOOLS = ["mke2fs", "e2fsck", "blkdiscard"]


def tool_env():
    import shutil
    return "".join(f"{n.upper()}={shutil.which(n)}\n" for n in TOOLS)


def payload():
    # 8 MiB that do not compress: deterministic, so the host knows them
    import hashlib
    out = bytearray()
    block = b"ovk-vhost-user-blk"
    i = 0
    while len(out) < 8 * MiB:
        out += hashlib.sha256(block + i.to_bytes(8, "little")).digest() * 8
        i += 1
    return bytes(out[:8 * MiB])


def expected_serial(image):
    """GET_ID of an image without a ddb.uuid: FNV-1a 64 of its real path."""
    h = 0xcbf29ce484222325
    for b in os.path.realpath(str(image)).encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return f"ovk-{h:016x}"


def read_file_from_image(image, path, tmp, vmdk_tool):
    """Flatten image through the engine, check the filesystem, dump path."""
    raw = tmp / (os.path.basename(str(image)) + ".flat")
    if raw.exists():
        raw.unlink()
    run([vmdk_tool, "convert", "-O", "raw", image, raw])
    run(["e2fsck", "-fn", raw])
    out = tmp / "dumped"
    if out.exists():
        out.unlink()
    run(["debugfs", "-R", f"dump {path} {out}", raw])
    return out.read_bytes()


def boot_guest(kernel, tmp, script, socks, files, queues=1, smp=1):
    vmlinuz, moddir = kernel
    initrd = tmp / "initrd.gz"
    guestvm.initramfs(str(initrd), tool_env() + script, moddir,
                      tools=TOOLS, files=files)
    console = tmp / "console.log"
    rc, text = guestvm.boot(vmlinuz, str(initrd), vu_args(socks, queues),
                            str(console), smp=smp)
    return rc, text


def test_guest_filesystems_on_every_kind(guest_kernel, tmp_path, vmdk,
                                         qemu_img):
    need("debugfs")
    need("e2fsck")
    data = payload()
    t = tmp_path
    # a parent holding a filesystem, and a delta child on it
    tree = t / "tree"
    tree.mkdir()
    (tree / "parent.txt").write_text("from the parent layer\n")
    run(["mkfs.ext4", "-q", "-F", "-d", tree, t / "parent.raw",
         f"{FS_KIB}k"])
    run(["truncate", "-s", str(DISK), t / "parent.raw"])
    run([qemu_img, "convert", "-O", "vmdk", t / "parent.raw",
         t / "parent.vmdk"])
    run([vmdk, "create", "-b", t / "parent.vmdk", t / "child.vmdk"])
    # a streamOptimized disk holding the same filesystem: its grains can
    # be written only once, so the guest writes into a snapshot child
    run([qemu_img, "convert", "-O", "vmdk", "-o",
         "subformat=streamOptimized", t / "parent.raw", t / "stream.vmdk"])
    run([vmdk, "create", t / "sparse.vmdk", str(DISK)])
    run(["truncate", "-s", str(DISK), t / "disk.raw"])
    run([vmdk, "create", t / "ro.vmdk", str(DISK)])
    # (image served, pvblk -o, what the guest finds, image read back)
    disks = [("sparse.vmdk", "rw", "fresh", "sparse.vmdk"),
             ("stream.vmdk", f"snapshot={t / 'stream-child.vmdk'}", "chain",
              "stream-child.vmdk"),
             ("child.vmdk", "rw", "chain", "child.vmdk"),
             ("disk.raw", "rw", "fresh", "disk.raw")]
    servers = [Pvblk(t / name, t / f"s{i}.sock", mode=mode)
               for i, (name, mode, _, _) in enumerate(disks)]
    ro = Pvblk(t / "ro.vmdk", t / "ro.sock", mode="ro")
    try:
        # a front end that breaks the protocol and leaves: the daemon
        # must keep listening for QEMU
        c = socket.socket(socket.AF_UNIX)
        c.connect(servers[0].sock)
        c.sendall(struct.pack("<III", 1, 1, 0xffffffff))
        c.recv(16)
        c.close()
        script = GUEST_DISK_CHECK % {"fs_kib": FS_KIB}
        for i, (name, _, how, _) in enumerate(disks):
            script += f"check_disk vd{chr(ord('a') + i)} {name} {how}\n"
        script += r"""
echo "== read-only disk"
[ "$(cat /sys/block/vde/ro)" = 1 ]
if dd if=/payload.bin of=/dev/vde bs=4096 count=1 oflag=direct 2>/dev/null
then echo "write to a read-only disk succeeded"; exit 1; fi
dd if=/dev/vde of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
echo "== all ok"
"""
        rc, text = boot_guest(
            guest_kernel, t, script,
            [s.sock for s in servers] + [ro.sock],
            {"/payload.bin": data,
             "/parent.txt": b"from the parent layer\n"})
        assert rc == 0, text[-4000:]
        assert "== all ok" in text
        # GET_ID: the serial names the served image, also under -o snapshot
        for i, (name, _, _, _) in enumerate(disks):
            assert f"== vd{chr(ord('a') + i)} ({name})\nserial " \
                f"{expected_serial(t / name)}\n" in text, name
    finally:
        for s in servers + [ro]:
            s.stop()
    assert "too long" in servers[0].text()
    for name in ("sparse.vmdk", "stream.vmdk", "stream-child.vmdk",
                 "child.vmdk", "parent.vmdk"):
        r = run([qemu_img, "check", t / name], check=False)
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"
    for name, _, how, back in disks:
        got = read_file_from_image(t / back, "/payload.bin", t, vmdk)
        assert got == data, name
        note = read_file_from_image(t / back, "/dir/note.txt", t, vmdk)
        assert note == f"written by the guest on {name}\n".encode()
        if how == "chain":
            assert read_file_from_image(t / back, "/parent.txt", t,
                                        vmdk) == b"from the parent layer\n"
    # the layers under the guest's writes are untouched
    run([vmdk, "compare", t / "parent.vmdk", t / "parent.raw"])
    run([vmdk, "compare", t / "stream.vmdk", t / "parent.raw"])


def test_guest_two_queues_two_cpus(guest_kernel, tmp_path, vmdk, qemu_img):
    need("debugfs")
    data = payload()
    t = tmp_path
    run([vmdk, "create", t / "mq.vmdk", str(DISK)])
    s = Pvblk(t / "mq.vmdk", t / "mq.sock", queues=2)
    script = \
        GUEST_DISK_CHECK % {"fs_kib": FS_KIB} + r"""
[ "$(ls /sys/block/vda/mq | wc -l)" = 2 ]
[ "$(nproc)" = 2 ]
check_disk vda mq.vmdk fresh
mount -t ext4 /dev/vda /mnt
# each CPU submits through its own queue
taskset -c 0 cp /payload.bin /mnt/cpu0.bin &
taskset -c 1 cp /payload.bin /mnt/cpu1.bin &
wait
sync
umount /mnt
$E2FSCK -fn /dev/vda
echo "== all ok"
"""
    try:
        rc, text = boot_guest(guest_kernel, t, script, [s.sock],
                              {"/payload.bin": data}, queues=2, smp=2)
    finally:
        s.stop()
    assert rc == 0, text[-4000:]
    r = run([qemu_img, "check", t / "mq.vmdk"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ("/cpu0.bin", "/cpu1.bin", "/payload.bin"):
        assert read_file_from_image(t / "mq.vmdk", f, t, vmdk) == data, f


def test_guest_survives_pvblk_kill_and_restart(guest_kernel, tmp_path):
    """kill -9 pvblk while the guest does I/O, start it again on the same
    socket: QEMU reconnects (reconnect=1), the requests in flight are
    served again from the INFLIGHT_SHMFD record, the guest sees no error."""
    t = tmp_path
    data = payload()
    run(["truncate", "-s", str(DISK), t / "disk.raw"])
    sock = t / "r.sock"
    s1 = Pvblk(t / "disk.raw", sock)
    script = r"""
i=0
while [ $i -lt 12 ]; do
  off=$(( (i % 7) * 8 ))
  dd if=/payload.bin of=/dev/vda bs=1M seek=$off count=8 oflag=direct 2>/dev/null
  dd if=/dev/vda of=/tmp/back bs=1M skip=$off count=8 iflag=direct 2>/dev/null
  cmp /tmp/back /payload.bin
  echo "pass $i"
  i=$((i + 1))
done
if dmesg | grep -i 'error'; then echo "the guest saw errors"; exit 1; fi
echo "== all ok"
"""
    vmlinuz, moddir = guest_kernel
    initrd = t / "initrd.gz"
    guestvm.initramfs(str(initrd), script, moddir,
                      files={"/payload.bin": data})
    console = str(t / "console.log")
    qemu = guestvm.start(vmlinuz, str(initrd),
                         ["-chardev",
                          f"socket,id=vu0,path={sock},reconnect=1",
                          "-device", "vhost-user-blk-pci,chardev=vu0"],
                         console)
    s2 = None
    try:
        # orchestration only (no pass/fail on time): wait for the guest's
        # I/O loop to be under way, then kill the daemon in the middle
        for _ in range(3000):
            if "pass 2\n" in guestvm.console_text(console) or \
                    qemu.poll() is not None:
                break
            time.sleep(0.05)
        assert "pass 2\n" in guestvm.console_text(console), \
            guestvm.console_text(console)[-3000:]
        s1.p.kill()
        s1.p.wait()
        at_kill = len(guestvm.console_text(console))
        s2 = Pvblk(t / "disk.raw", sock)
        rc, text = guestvm.finish(qemu, console)
    finally:
        if qemu.poll() is None:
            qemu.kill()
        if s2:
            s2.stop()
    assert rc == 0, text[-4000:]
    assert "== all ok" in text
    # the guest went on doing I/O after the restart, through the new daemon
    assert "pass 11" in text[at_kill:]
    assert "front end connected" in s2.text()
