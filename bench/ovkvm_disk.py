#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Guest-side disk throughput: ovkvm's virtio-blk against QEMU -accel kvm's
virtio-blk-pci, side by side in one outer guest (nested KVM under QEMU TCG
when the host has no /dev/kvm), on the same raw image and the same
monolithicSparse VMDK (QEMU through its own vmdk driver; both through the
host page cache: the engine does not use O_DIRECT, QEMU runs with its
default cache=writeback).  The guest's init writes then reads the disk with
busybox dd and O_DIRECT, 1 MiB blocks (sequential) and 4 KiB blocks
(sequential, one request at a time: per-request latency), timing each with
/proc/uptime.  Prints, per round and VMM and image, MB/s of each pass, then
the medians and the ovkvm/QEMU ratios.

    OVK_BUILD=build /usr/bin/python3 bench/ovkvm_disk.py [ROUNDS]
"""
import os
import re
import shlex
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from conftest import build_dir  # noqa: E402
from ovkvm_guest import debian_kernel, make_initramfs, run_with_kvm  # noqa: E402

MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
]

MB = 48  # per 1 MiB pass
SMALL = 1024  # 4 KiB requests per small pass

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {mods}; do insmod /lib/modules/$m; done
up() {{ cut -d' ' -f1 /proc/uptime; }}
pass() {{ s=$(up); "$@" 2>/dev/null; e=$(up); echo "$s $e"; }}
echo "MEASURE w1m $(pass dd if=/dev/zero of=/dev/vda bs=1M count={mb} oflag=direct)"
echo "MEASURE r1m $(pass dd if=/dev/vda of=/dev/null bs=1M count={mb} iflag=direct)"
echo "MEASURE w4k $(pass dd if=/dev/zero of=/dev/vda bs=4k count={small} seek=4096 oflag=direct)"
echo "MEASURE r4k $(pass dd if=/dev/vda of=/dev/null bs=4k count={small} skip=4096 iflag=direct)"
poweroff -f
"""


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = os.path.join(build_dir(), "bench-ovkvm-disk")
    os.makedirs(work, exist_ok=True)
    kernel = debian_kernel()
    initrd = os.path.join(work, "guest.cpio.gz")
    files = [(os.path.join(kernel.modules, m), "lib/modules/" +
              os.path.basename(m)) for m in MODULES]
    make_initramfs(initrd, INIT.format(
        mods=" ".join(os.path.basename(m) for m in MODULES), mb=MB,
        small=SMALL), files)
    q = shlex.quote
    ovkvm = os.path.join(build_dir(), "hypervisor", "ovkvm")
    cmdline = "console=ttyS0 loglevel=4"
    script = ("qemu-img create -q -f raw /tmp/d.raw 128M\n"
              "qemu-img create -q -f vmdk /tmp/d.vmdk 128M\n")
    for r in range(rounds):
        for fmt, img in (("raw", "/tmp/d.raw"), ("vmdk", "/tmp/d.vmdk")):
            script += (
                f"{q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd {q(initrd)}"
                f" --memory 256M --cpus 2 --cmdline '{cmdline}'"
                f" --disk {img} --console file:/tmp/o.log\n"
                f"sed 's/^/RESULT {r} ovkvm {fmt} /' /tmp/o.log | grep MEASURE\n"
                f"timeout 300 qemu-system-x86_64 -accel kvm -cpu host"
                f" -smp 2 -m 256M -nographic -no-reboot -nodefaults"
                f" -drive file={img},format={fmt},if=none,id=d0"
                f" -device virtio-blk-pci,drive=d0"
                f" -serial file:/tmp/q.log -monitor none -kernel {q(kernel.bzimage)}"
                f" -initrd {q(initrd)} -append '{cmdline}'\n"
                f"sed 's/^/RESULT {r} qemu {fmt} /' /tmp/q.log | grep MEASURE\n")
    _, out = run_with_kvm(script, work, timeout=300 * 4 * rounds)
    rates = {}
    sizes = {"w1m": MB, "r1m": MB, "w4k": SMALL * 4 / 1024,
             "r4k": SMALL * 4 / 1024}
    for line in out.splitlines():
        m = re.search(r"RESULT (\d+) (\w+) (\w+) .*?MEASURE (\w+) ([\d.]+) ([\d.]+)",
                      line)
        if not m:
            continue
        _, vmm, fmt, test, s, e = m.groups()
        secs = max(float(e) - float(s), 0.01)
        rate = sizes[test] * 1.048576 / secs
        print(f"round {m.group(1)} {vmm:5} {fmt:4} {test} {rate:8.1f} MB/s")
        rates.setdefault((fmt, test, vmm), []).append(rate)
    print("\nmedians (MB/s) and ratio ovkvm/qemu:")
    for fmt in ("raw", "vmdk"):
        for test in ("w1m", "r1m", "w4k", "r4k"):
            o = rates.get((fmt, test, "ovkvm"))
            qm = rates.get((fmt, test, "qemu"))
            if not o or not qm:
                print(f"{fmt:4} {test}: missing ({o}, {qm})")
                continue
            mo, mq = statistics.median(o), statistics.median(qm)
            print(f"{fmt:4} {test}: ovkvm {mo:8.1f}  qemu {mq:8.1f}  "
                  f"ratio {mo / mq:5.2f}  (n={len(o)})")


if __name__ == "__main__":
    main()
