#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Boot time of ovkvm against QEMU -accel kvm, side by side in one outer
guest (nested KVM under QEMU TCG when the host has no /dev/kvm): the same
Debian kernel and a busybox initramfs whose init prints its uptime and
powers off.  Prints, per round, each VMM's wall time (outer-guest uptime
before and after) and the guest's uptime when init ran.

    OVK_BUILD=build /usr/bin/python3 bench/ovkvm_boot.py [ROUNDS]
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from conftest import build_dir  # noqa: E402
from ovkvm_guest import debian_kernel, make_initramfs, run_with_kvm  # noqa: E402

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "MEASURE uptime-at-init=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = os.path.join(build_dir(), "bench-ovkvm-boot")
    os.makedirs(work, exist_ok=True)
    kernel = debian_kernel()
    initrd = os.path.join(work, "guest.cpio.gz")
    make_initramfs(initrd, INIT)
    q = shlex.quote
    ovkvm = os.path.join(build_dir(), "hypervisor", "ovkvm")
    cmdline = "console=ttyS0 loglevel=4"
    up = "$(cut -d' ' -f1 /proc/uptime)"
    script = ""
    for _ in range(rounds):
        script += (
            f"s={up}; {q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd {q(initrd)}"
            f" --memory 256M --cpus 2 --cmdline '{cmdline}'"
            f" --console file:/tmp/o.log; e={up}\n"
            f"echo \"MEASURE ovkvm wall $s $e\"; grep MEASURE /tmp/o.log\n"
            f"s={up}; timeout 300 qemu-system-x86_64 -accel kvm -cpu host"
            f" -smp 2 -m 256M -nographic -no-reboot -nodefaults"
            f" -serial file:/tmp/q.log -monitor none -kernel {q(kernel.bzimage)}"
            f" -initrd {q(initrd)} -append '{cmdline}'; e={up}\n"
            f"echo \"MEASURE qemu wall $s $e\"; grep MEASURE /tmp/q.log\n")
    _, out = run_with_kvm(script, work, timeout=300 * 2 * rounds)
    for line in out.splitlines():
        if "MEASURE" in line:
            print(line.split("MEASURE", 1)[1].strip())


if __name__ == "__main__":
    main()
