"""ovkvm boots Debian's stock kernel on a real /dev/kvm.

One boot checks many things at once (each boot is slow when KVM is nested
inside QEMU TCG): the guest's own init reports its clocksource, CPU count
and the KVM paravirtual features its kernel found, writing to the serial
console from user space (so THR-empty interrupts work), then powers off
through ACPI, and ovkvm must exit 0.  See tests/ovkvm_guest.py for how
/dev/kvm is had on machines without one.
"""
import os
import shutil

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
                "--console", "Exit status", "Examples"):
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


def test_boots_debian_kernel_with_kvm_clock_on_two_cpus():
    ovkvm = tool("ovkvm")
    kernel = debian_kernel()
    # The work folder lives in the build tree, not /tmp, so the nested
    # guest sees it through its read-only share of the host's root.
    work = os.path.join(build_dir(), "tests-ovkvm")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    initrd = os.path.join(work, "guest-initramfs.cpio.gz")
    make_initramfs(initrd, GUEST_INIT)

    status, out = run_with_kvm(
        [ovkvm, "--kernel", kernel.bzimage, "--initrd", initrd,
         "--memory", "256M", "--cpus", "2",
         "--cmdline", "console=ttyS0 loglevel=4 panic=-1"],
        work)
    lines = guest_lines(out)
    assert status == 0, f"ovkvm exited {status}:\n{out[-4000:]}"
    assert "done" in lines, out[-4000:]
    assert "clocksource=kvm-clock" in lines, lines
    assert "cpus=2" in lines, lines
    assert "online=0-1" in lines, lines
    dmesg = "\n".join(lines)
    assert "Hypervisor detected: KVM" in dmesg, dmesg
    assert "kvm-clock" in dmesg, dmesg
