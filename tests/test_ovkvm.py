# SPDX-License-Identifier: Apache-2.0
"""ovkvm boots Debian's stock kernel on a real /dev/kvm.

One boot checks many things at once (each boot is slow when KVM is nested
inside QEMU TCG): the guest's own init reports its clocksource, CPU count
and the KVM paravirtual features its kernel found, writing to the serial
console from user space (so THR-empty interrupts work), then powers off
through ACPI, and ovkvm must exit 0.  See tests/ovkvm_guest.py for how
/dev/kvm is had on machines without one.
"""
import json
import os
import shlex
import shutil
import struct
import subprocess

import pytest

from conftest import build_dir, run, tool
from ovkvm_guest import debian_kernel, make_initramfs, run_with_kvm

GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "OVKVM-GUEST clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "OVKVM-GUEST cpus=$(grep -c ^processor /proc/cpuinfo)"
echo "OVKVM-GUEST online=$(cat /sys/devices/system/cpu/online)"
dmesg | grep -i -E 'kvm|hypervisor detected|ACPI: (FACP|APIC|DSDT)|smpboot' | sed 's/^/OVKVM-GUEST dmesg: /'
echo "OVKVM-GUEST done"
poweroff -f
"""


def guest_lines(out):
    return [line.split("OVKVM-GUEST ", 1)[1].rstrip("\r")
            for line in out.splitlines() if "OVKVM-GUEST " in line]


def test_help_lists_options():
    r = run([tool("ovkvm"), "--help"])
    for opt in ("--kernel", "--initrd", "--cmdline", "--memory", "--cpus",
                "--console", "--disk", "snapshot", "queues=N", "--api-socket",
                "written_bytes", "Exit status", "Examples"):
        assert opt in r.stdout


def test_rejects_non_kernel(tmp_path):
    bogus = tmp_path / "notakernel"
    bogus.write_bytes(b"\0" * 8192)
    r = run([tool("ovkvm"), "--kernel", bogus], check=False)
    assert r.returncode == 1
    assert "bzImage" in r.stderr


def test_rejects_bad_options():
    r = run([tool("ovkvm"), "--kernel", "/nonexistent", "--cpus", "0"],
            check=False)
    assert r.returncode == 1 and "--cpus" in r.stderr
    r = run([tool("ovkvm"), "--kernel", "/nonexistent", "--memory", "12X"],
            check=False)
    assert r.returncode == 1 and "--memory" in r.stderr


def triple_fault_image(path):
    """A bzImage-shaped file whose 64-bit entry point is ud2 with no IDT:
    #UD, then faults on the empty IDT, then a triple fault."""
    img = bytearray(64 * 1024)
    img[0x1f1] = 4                                   # setup_sects
    struct.pack_into("<H", img, 0x1fe, 0xaa55)       # boot_flag
    img[0x200:0x202] = b"\xeb\x66"                   # jump over the header
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, 0x020f)       # protocol 2.15
    img[0x211] = 0x01                                # LOADED_HIGH
    struct.pack_into("<I", img, 0x22c, 0x7fffffff)   # initrd_addr_max
    struct.pack_into("<I", img, 0x230, 0x200000)     # kernel_alignment
    img[0x234] = 1                                   # relocatable
    img[0x236] = 0x01                                # XLF_KERNEL_64
    struct.pack_into("<I", img, 0x238, 2047)         # cmdline_size
    struct.pack_into("<Q", img, 0x258, 0x1000000)    # pref_address
    struct.pack_into("<I", img, 0x260, 0x100000)     # init_size
    entry = 5 * 512 + 0x200
    img[entry:entry + 2] = b"\x0f\x0b"              # ud2
    with open(path, "wb") as f:
        f.write(img)


API_CLIENT = r"""
import json, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
for _ in range(600):  # ovkvm may take a while to start under nesting
    try:
        s.connect(path)
        break
    except OSError:
        time.sleep(0.1)
f = s.makefile("rw")
def ask(line):
    f.write(line + "\n")
    f.flush()
    print("=== OVKVM-API", line, "->", f.readline().strip(), flush=True)
ask('{"command": "status"}')
ask('{"command": "pause"}')
ask('{"command": "status"}')
ask('{"command": "resume"}')
ask('{"command": "status"}')
ask('{"command": "reboot-the-moon"}')
ask('not json')
ask('{"command": "shutdown"}')
"""


def api_replies(out):
    """{request: reply} from the API client's '=== OVKVM-API' lines, in
    order (a request asked twice keeps a list)."""
    res = []
    for line in out.splitlines():
        if "=== OVKVM-API " in line:
            req, rep = line.split("=== OVKVM-API ", 1)[1].split(" -> ", 1)
            res.append((req, json.loads(rep)))
    return res


def case_results(out):
    """{case: exit status} from the script's '=== OVKVM-CASE name rc=N'."""
    res = {}
    for line in out.splitlines():
        if "=== OVKVM-CASE " in line:
            name, rc = line.split("=== OVKVM-CASE ", 1)[1].split()
            res[name] = int(rc.split("=")[1])
    return res


def test_boots_debian_kernel_with_kvm_clock_on_two_cpus():
    """One nested boot, three cases: the real guest boots and powers off
    (status 0), a triple-faulting image ends ovkvm with status 2, and
    SIGTERM stops a booting guest cleanly (status 0, reason on stderr)."""
    ovkvm = tool("ovkvm")
    kernel = debian_kernel()
    # The work folder lives in the build tree, not /tmp, so the nested
    # guest sees it through its read-only share of the host's root.
    work = os.path.join(build_dir(), "tests-ovkvm")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    initrd = os.path.join(work, "guest-initramfs.cpio.gz")
    make_initramfs(initrd, GUEST_INIT)
    bad = os.path.join(work, "triple-fault.bzImage")
    triple_fault_image(bad)
    client = os.path.join(work, "api_client.py")
    with open(client, "w") as f:
        f.write(API_CLIENT)

    q = shlex.quote
    boot = (f"{q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd {q(initrd)} "
            f"--memory 256M --cpus 2 "
            f"--cmdline 'console=ttyS0 loglevel=4 panic=-1'")
    script = f"""
{boot}; echo "=== OVKVM-CASE boot rc=$?"
{q(ovkvm)} --kernel {q(bad)} --console file:/tmp/tf.log; echo "=== OVKVM-CASE triplefault rc=$?"
{q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd {q(initrd)} --console file:/tmp/term.log &
pid=$!; for i in $(seq 300); do [ -s /tmp/term.log ] && break; sleep 0.1; done
kill -TERM $pid; wait $pid; echo "=== OVKVM-CASE sigterm rc=$?"
{q(ovkvm)} --kernel {q(kernel.bzimage)} --cpus 2 --console file:/tmp/api.log --api-socket /tmp/api.sock &
pid=$!; python3 {q(client)} /tmp/api.sock; wait $pid; echo "=== OVKVM-CASE api rc=$?"
"""
    status, out = run_with_kvm(script, work)
    cases = case_results(out)
    lines = guest_lines(out)
    assert cases.get("boot") == 0, f"ovkvm exited {cases}:\n{out[-4000:]}"
    assert "done" in lines, out[-4000:]
    assert "clocksource=kvm-clock" in lines, lines
    assert "cpus=2" in lines, lines
    assert "online=0-1" in lines, lines
    dmesg = "\n".join(lines)
    assert "Hypervisor detected: KVM" in dmesg, dmesg
    assert "kvm-clock" in dmesg, dmesg
    assert "kvm-guest: KVM setup pv remote TLB flush" in dmesg, dmesg

    assert cases.get("triplefault") == 2, out[-4000:]
    assert "guest crashed: vCPU 0: triple fault" in out, out[-4000:]

    assert "runtime error:" not in out, out[-4000:]  # UBSan, if built in
    assert cases.get("sigterm") == 0, out[-4000:]
    assert "stopped by signal" in out, out[-4000:]

    # The control socket (a kernel without initrd: it stays up, panicked).
    replies = api_replies(out)
    def brief(r):
        # status also lists per-vCPU and per-disk statistics
        if "return" in r and "state" in r["return"]:
            ret = r["return"]
            assert len(ret["vcpus"]) == 2 and ret["disks"] == [], ret
            return {"return": {k: ret[k] for k in ("state", "cpus", "memory")}}
        return r
    assert [brief(r) for _, r in replies][:5] == [
        {"return": {"state": "running", "cpus": 2, "memory": 512 << 20}},
        {"return": {}},
        {"return": {"state": "paused", "cpus": 2, "memory": 512 << 20}},
        {"return": {}},
        {"return": {"state": "running", "cpus": 2, "memory": 512 << 20}},
    ], out[-4000:]
    assert "unknown command" in replies[5][1]["error"]
    assert "not JSON" in replies[6][1]["error"]
    assert replies[7][1] == {"return": {}}
    assert cases.get("api") == 0, out[-4000:]
    assert "shutdown requested on the API socket" in out


# Guest modules for virtio-blk and ext4, in load order (under kernel/).
DISK_MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "lib/crc16.ko",
    "fs/mbcache.ko",
    "fs/jbd2/jbd2.ko",
    "crypto/crc32c_generic.ko",
    "fs/ext4/ext4.ko",
]

DISK_GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
export LD_LIBRARY_PATH=/hostlib
for m in {mods}; do insmod /lib/modules/$m || echo "OVKVM-GUEST insmod $m failed"; done
echo "OVKVM-GUEST clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "OVKVM-GUEST cpus=$(grep -c ^processor /proc/cpuinfo)"
ls /dev/vd* | sed 's/^/OVKVM-GUEST dev /'
dmesg | grep -i -E 'pci|virtio|vd[ab]' | sed 's/^/OVKVM-GUEST dmesg: /'
echo "OVKVM-GUEST vda-queues=$(ls /sys/block/vda/mq | wc -l)"
grep -c virtio /proc/interrupts | sed 's/^/OVKVM-GUEST msix-lines=/'
# vda: a fresh ext4, written, checked, read back after a remount
# (the first 64 MiB; 72-80 MiB are left for the raw checks below)
/sbin/mke2fs -q -F -t ext4 /dev/vda 65536; echo "OVKVM-GUEST mkfs rc=$?"
mkdir -p /mnt /ro
mount -t ext4 /dev/vda /mnt
echo "written by the ovkvm guest" > /mnt/hello
dd if=/dev/urandom of=/mnt/big bs=64k count=160 2>/dev/null
md5sum /mnt/big | cut -d' ' -f1 > /tmp/big.md5
cp /tmp/big.md5 /mnt/big.md5
umount /mnt
/sbin/e2fsck -fn /dev/vda >/dev/null 2>&1; echo "OVKVM-GUEST fsck rc=$?"
mount -t ext4 /dev/vda /mnt
echo "OVKVM-GUEST readback=$(cat /mnt/hello)"
[ "$(md5sum /mnt/big | cut -d' ' -f1)" = "$(cat /tmp/big.md5)" ] && echo "OVKVM-GUEST big-ok"
umount /mnt
# vda past its filesystem: direct writes, DISCARD and WRITE_ZEROES
echo "OVKVM-GUEST limits wz=$(cat /sys/block/vda/queue/write_zeroes_max_bytes) discard=$(cat /sys/block/vda/queue/discard_max_bytes)"
head -c 8388608 /dev/urandom > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=1M seek=72 count=8 oflag=direct 2>/dev/null
dd if=/dev/vda of=/tmp/back bs=1M skip=72 count=8 iflag=direct 2>/dev/null
cmp -s /tmp/back /tmp/pat && echo "OVKVM-GUEST direct-rw-ok"
/sbin/blkdiscard -f -o $((72*1048576)) -l $((4*1048576)) /dev/vda; echo "OVKVM-GUEST discard rc=$?"
/sbin/blkdiscard -f -z -o $((76*1048576)) -l $((4*1048576)) /dev/vda; echo "OVKVM-GUEST zeroes rc=$?"
dd if=/dev/vda of=/tmp/back bs=1M skip=76 count=4 iflag=direct 2>/dev/null
head -c 4194304 /dev/zero | cmp -s - /tmp/back && echo "OVKVM-GUEST zeroes-read-ok"
rm -f /tmp/pat /tmp/back
# vdc: a raw disk given ,ro: the guest sees it read-only and reads it
echo "OVKVM-GUEST vdc-ro=$(cat /sys/block/vdc/ro)"
echo "OVKVM-GUEST vdc-md5=$(dd if=/dev/vdc bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
if dd if=/dev/zero of=/dev/vdc bs=4k count=1 oflag=direct 2>/dev/null; then
  echo "OVKVM-GUEST vdc-write-accepted"
else
  echo "OVKVM-GUEST vdc-write-refused"
fi
# vde grows while the guest runs: reading 4 MiB tells the host to grow it
s0=$(cat /sys/block/vde/size)
echo "OVKVM-GUEST vde-size0=$s0"
dd if=/dev/vde of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
for i in $(seq 100); do
  [ "$(cat /sys/block/vde/size)" != "$s0" ] && break
  sleep 0.1
done
echo "OVKVM-GUEST vde-size1=$(cat /sys/block/vde/size)"
echo "at the new end" | dd of=/dev/vde bs=512 seek=$(($(cat /sys/block/vde/size) - 1)) conv=sync oflag=direct 2>/dev/null && echo "OVKVM-GUEST vde-wrote-end"
# vdb: the streamOptimized disk (snapshot): its file is there, writes work
mount -t ext4 /dev/vdb /ro && echo "OVKVM-GUEST stream=$(cat /ro/seed)"
echo "scribbled in the snapshot" > /ro/scribble && sync && echo "OVKVM-GUEST snapwrite-ok"
umount /ro
/sbin/e2fsck -fn /dev/vdb >/dev/null 2>&1; echo "OVKVM-GUEST fsck-vdb rc=$?"
echo "OVKVM-GUEST done"
sleep 2  # the host's status poller sees the final statistics
poweroff -f
"""

# Polls ovkvm's status until the VM ends; prints the last reply.
STATUS_POLLER = r'''
import json, socket, subprocess, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(600):
    try:
        s.connect(sys.argv[1])
        break
    except OSError:
        time.sleep(0.1)
f = s.makefile("rw")
def call(**req):
    f.write(json.dumps(req) + "\n")
    f.flush()
    return f.readline().strip()
# with a disk index, size, ovkdisk and a folder in argv[2:6]: while the
# guest boots, disk 0 gets a checkpoint and ovkdisk backs it up (a view
# taken and merged back live); once the guest has written 10 MiB to it,
# "changed" lists what it wrote since the checkpoint; once the guest has
# read 4 MiB of disk argv[2] (its signal that it watches the size), that
# disk grows to argv[3] bytes
grow = len(sys.argv) > 3
live = len(sys.argv) > 5
if live:
    print("=== OVKVM-CHECKPOINT", call(command="checkpoint-create", disk=0,
                                      name="t0"), flush=True)
    b = subprocess.run([sys.argv[4], "backup", "--disk", "0", sys.argv[1],
                        sys.argv[5]], capture_output=True, text=True)
    print("=== OVKVM-BACKUP rc=%d %s" % (b.returncode, b.stderr.strip()),
          flush=True)
last = None
tick = time.monotonic()
while True:
    try:
        line = call(command="status")
    except OSError:
        break
    if not line:
        break
    last = line
    disks = json.loads(last).get("return", {}).get("disks", [])
    if time.monotonic() - tick >= 60:
        # a minute's progress, for the post-mortem of a guest that stops
        tick = time.monotonic()
        print("=== OVKVM-TICK", " ".join(
            "vd%c:req=%s,inflight=%s" % (97 + i, d.get("requests"),
                                         d.get("inflight"))
            for i, d in enumerate(disks)), flush=True)
    if live and disks and disks[0]["written_bytes"] >= 10 << 20:
        print("=== OVKVM-CHANGED", call(command="changed", disk=0,
                                      since="t0"), flush=True)
        live = False
    if grow:
        d = int(sys.argv[2])
        if len(disks) > d and disks[d]["read_bytes"] >= 4 << 20:
            print("=== OVKVM-GROW", call(command="disk-grow", disk=d,
                                       size=int(sys.argv[3])), flush=True)
            grow = False
    time.sleep(0.3)
print("=== OVKVM-STATUS", last, flush=True)
'''


def host_binary_files(paths):
    """(source, dest) pairs that put host binaries and the shared libraries
    they need (from ldd) into an initramfs: binaries in /sbin, libraries
    in /hostlib plus the loader at its own path."""
    files, seen = [], set()
    for p in paths:
        files.append((p, "/sbin/" + os.path.basename(p)))
        r = subprocess.run(["ldd", p], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if not lib.startswith("/") or lib in seen:
                continue
            seen.add(lib)
            real = os.path.realpath(lib)
            files.append((real, "/hostlib/" + os.path.basename(lib)))
            if "ld-linux" in lib:
                files.append((real, lib))
    return files


def test_virtio_blk_disks_mkfs_fsck_and_snapshot():
    """One nested boot: the guest (2 vCPUs) gets a monolithicSparse VMDK
    with two queues as /dev/vda, a streamOptimized VMDK holding an ext4
    with one file as /dev/vdb (,snapshot: the engine writes a stream's
    grains once, so the guest's writes go to a temporary delta child that
    ovkvm removes at exit), a raw file given ,ro as /dev/vdc, and a second
    stream served read-write (ovkvm warns at start) as /dev/vdd, and a raw
    file as /dev/vde that the host grows from 8 to 24 MiB (disk-grow on the
    control socket) while the guest watches its size. It makes
    an ext4 on vda's first 64 MiB, writes, checks and reads it back, then
    past the filesystem writes and reads with O_DIRECT, discards and
    zeroes ranges (blkdiscard [-z]); reads vdc and is refused a write;
    reads and writes vdb; sees vde grow and writes at its new end; powers
    off. Then qemu-img checks the images,
    the file is read from vda's ext4 and the zeroed range from vda on the
    host side, and the stream and ro images are unchanged with no child
    left behind."""
    for t in ("mke2fs", "e2fsck", "debugfs", "qemu-img", "ldd", "blkdiscard"):
        if not shutil.which(t) and not os.path.exists("/sbin/" + t):
            pytest.skip(f"{t} is missing")
    ovkvm = tool("ovkvm")
    ovkdisk = tool("ovkdisk")
    kernel = debian_kernel()
    work = os.path.join(build_dir(), "tests-ovkvm-disks")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # The stream image: an ext4 with /seed, converted by qemu-img.
    seed_dir = os.path.join(work, "seed")
    os.makedirs(seed_dir)
    with open(os.path.join(seed_dir, "seed"), "w") as f:
        f.write("from the stream image\n")
    raw = os.path.join(work, "seed.raw")
    run(["truncate", "-s", "32M", raw])
    run([shutil.which("mke2fs") or "/sbin/mke2fs", "-q", "-F", "-t", "ext4",
         "-d", seed_dir, raw])
    stream = os.path.join(work, "stream.vmdk")
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
         "subformat=streamOptimized", raw, stream])
    mods = [m for m in DISK_MODULES]
    files = [(os.path.join(kernel.modules, m), "lib/modules/" +
              os.path.basename(m)) for m in mods]
    files += host_binary_files([shutil.which("mke2fs") or "/sbin/mke2fs",
                                shutil.which("e2fsck") or "/sbin/e2fsck",
                                shutil.which("blkdiscard") or
                                "/sbin/blkdiscard"])
    poller = os.path.join(work, "status_poller.py")
    with open(poller, "w") as f:
        f.write(STATUS_POLLER)
    initrd = os.path.join(work, "guest-initramfs.cpio.gz")
    make_initramfs(initrd, DISK_GUEST_INIT.format(
        mods=" ".join(os.path.basename(m) for m in mods)), files)

    q = shlex.quote
    script = f"""
cd /tmp
qemu-img create -q -f vmdk -o subformat=monolithicSparse /tmp/disk.vmdk 96M
cp {q(stream)} /tmp/stream.vmdk
md5sum /tmp/stream.vmdk > /tmp/stream.md5
head -c 8388608 /dev/urandom > /tmp/ro.raw
md5sum /tmp/ro.raw > /tmp/ro.md5
echo "=== OVKVM-HOST ro-md5=$(cut -d' ' -f1 /tmp/ro.md5)"
qemu-img convert -O vmdk -o subformat=streamOptimized /tmp/ro.raw /tmp/s2.vmdk
truncate -s 8M /tmp/grow.raw
# a guest that stops answering is stopped after 8 minutes, well before the
# outer guest's 15: the status poller then prints ovkvm's last status
# (each disk's requests in flight, each vCPU's exits) for the post-mortem
timeout -k 30 -s TERM 480 {q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd {q(initrd)} --memory 320M --cpus 2 \
  --disk /tmp/disk.vmdk,queues=2 --disk /tmp/stream.vmdk,snapshot \
  --disk /tmp/ro.raw,ro --disk /tmp/s2.vmdk --disk /tmp/grow.raw \
  --api-socket /tmp/api.sock --cmdline 'console=ttyS0 loglevel=4 panic=-1' &
pid=$!; python3 {q(poller)} /tmp/api.sock 4 25165824 {q(ovkdisk)} /tmp/bk; wait $pid
echo "=== OVKVM-CASE disks rc=$?"
{q(ovkdisk)} verify /tmp/bk >/dev/null; echo "=== OVKVM-CASE backup-verify rc=$?"
ls /tmp/disk-live-* >/dev/null 2>&1; echo "=== OVKVM-CASE live-child-left rc=$?"
qemu-img check /tmp/disk.vmdk >/dev/null 2>&1; echo "=== OVKVM-CASE check-vda rc=$?"
qemu-img check /tmp/stream.vmdk >/dev/null 2>&1; echo "=== OVKVM-CASE check-vdb rc=$?"
md5sum -c /tmp/stream.md5 >/dev/null 2>&1; echo "=== OVKVM-CASE stream-unchanged rc=$?"
md5sum -c /tmp/ro.md5 >/dev/null 2>&1; echo "=== OVKVM-CASE ro-unchanged rc=$?"
qemu-img convert -O raw /tmp/disk.vmdk /tmp/zr.raw
head -c 4194304 /dev/zero | cmp -s -i 0:$((76*1048576)) -n 4194304 - /tmp/zr.raw; echo "=== OVKVM-CASE zeroes-on-host rc=$?"
rm -f /tmp/zr.raw
echo "=== OVKVM-HOST grow-size=$(stat -c %s /tmp/grow.raw) grow-end=$(dd if=/tmp/grow.raw bs=512 skip=49151 count=1 2>/dev/null | head -c 14)"
ls /tmp/*snapshot* >/dev/null 2>&1; echo "=== OVKVM-CASE child-left rc=$?"
qemu-img convert -O raw /tmp/disk.vmdk /tmp/disk.raw
echo "=== OVKVM-HOST hello=$(debugfs -R 'cat /hello' /tmp/disk.raw 2>/dev/null)"
"""
    status, out = run_with_kvm(script, work, timeout=900)
    cases = case_results(out)
    lines = guest_lines(out)
    assert cases.get("disks") == 0, f"ovkvm exited {cases}:\n{out[-6000:]}"
    assert "done" in lines, out[-6000:]
    assert "dev /dev/vda" in lines and "dev /dev/vdb" in lines, lines
    assert "clocksource=kvm-clock" in lines, lines
    assert "cpus=2" in lines, lines
    assert "vda-queues=2" in lines, lines
    assert "mkfs rc=0" in lines, lines
    assert "fsck rc=0" in lines, lines
    assert "readback=written by the ovkvm guest" in lines, lines
    assert "big-ok" in lines, lines
    assert "stream=from the stream image" in lines, lines
    assert "snapwrite-ok" in lines, lines
    assert "fsck-vdb rc=0" in lines, lines
    lim = [ln for ln in lines if ln.startswith("limits ")][0].split()
    assert all(int(x.split("=")[1]) > 0 for x in lim[1:]), lim
    assert "direct-rw-ok" in lines, lines
    assert "discard rc=0" in lines and "zeroes rc=0" in lines, lines
    assert "zeroes-read-ok" in lines, lines
    assert "vdc-ro=1" in lines, lines
    ro_md5 = out.split("=== OVKVM-HOST ro-md5=", 1)[1].split()[0]
    assert f"vdc-md5={ro_md5}" in lines, lines
    assert "vdc-write-refused" in lines, lines
    assert cases.get("ro-unchanged") == 0, out[-4000:]
    assert cases.get("zeroes-on-host") == 0, out[-4000:]
    assert "runtime error:" not in out, out[-4000:]
    assert cases.get("check-vda") == 0, out[-4000:]
    assert cases.get("check-vdb") == 0, out[-4000:]
    assert cases.get("stream-unchanged") == 0, out[-4000:]
    assert cases.get("child-left") != 0, "the snapshot child was left behind"
    assert "=== OVKVM-HOST hello=written by the ovkvm guest" in out, out[-4000:]
    status_line = [line for line in out.splitlines()
                   if "=== OVKVM-STATUS " in line][0]
    st = json.loads(status_line.split("=== OVKVM-STATUS ", 1)[1])["return"]
    assert [v["index"] for v in st["vcpus"]] == [0, 1], st
    assert all(v["exits"] > 0 for v in st["vcpus"]), st
    vda, vdb, vdc, vdd, vde = st["disks"]
    # disk 0's live-disk operations on ovkvm's socket: a checkpoint while
    # the guest boots, an ovkdisk backup (view-create, the frozen layer
    # read, view-release merging the child back live), and afterwards
    # the extents the guest wrote since the checkpoint
    def host_line(tag):
        return [ln.split(tag, 1)[1] for ln in out.splitlines()
                if tag in ln][0]
    assert json.loads(host_line("=== OVKVM-CHECKPOINT ")) == \
        {"return": {"name": "t0"}}, out[-4000:]
    assert host_line("=== OVKVM-BACKUP ").startswith("rc=0"), out[-4000:]
    assert cases.get("backup-verify") == 0, out[-4000:]
    assert cases.get("live-child-left") != 0, "a view's child was left"
    changed = json.loads(host_line("=== OVKVM-CHANGED "))["return"]
    assert changed["size"] == 96 << 20 and changed["next"] is None, changed
    assert changed["extents"] and \
        sum(n for _, n in changed["extents"]) >= 1 << 20, changed
    assert vda["top"] == vda["image"] == "/tmp/disk.vmdk", vda
    assert vda["view"] is None and "t0" in vda["checkpoints"], vda
    assert vda["size"] == 96 << 20, vda
    # vde grew under the running guest, which saw it and wrote at its end
    grow = [ln.split("=== OVKVM-GROW ", 1)[1] for ln in out.splitlines()
            if "=== OVKVM-GROW " in ln]
    assert grow and json.loads(grow[0]) == {"return": {"size": 24 << 20}}, \
        out[-4000:]
    assert "vde-size0=16384" in lines and "vde-size1=49152" in lines, lines
    assert "vde-wrote-end" in lines, lines
    assert "grow-size=25165824 grow-end=at the new end" in out, out[-4000:]
    # a stream served read-write is allowed, with a warning at start
    assert "--disk /tmp/s2.vmdk is streamOptimized" in out, out[-4000:]
    assert vdd["read_only"] is False, st
    assert vdc["read_only"] is True and vdc["written_bytes"] == 0, st
    assert vda["path"] == "/tmp/disk.vmdk" and vda["queues"] == 2, st
    assert vdb["snapshot"] is True and vdb["read_only"] is False, st
    # the guest wrote a 10 MiB file plus ext4's metadata, and read it back
    assert vda["written_bytes"] > 10 << 20, st
    assert vda["read_bytes"] > 10 << 20, st
    assert vda["requests"] > 100 and vda["errors"] == 0, st
    assert vdb["written_bytes"] > 0 and vdb["errors"] == 0, st
