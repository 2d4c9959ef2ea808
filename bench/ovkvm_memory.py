#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""VMM memory overhead (issue 18): the resident memory of the VMM process
that is not guest RAM, for ovkvm and QEMU -accel kvm (-M microvm and
-M q35) booting the same Debian kernel and busybox initramfs, in one
outer guest (nested KVM under QEMU TCG when the host has no /dev/kvm).

Once the guest's init has printed its marker (the kernel is up, init
runs, it sleeps), the VMM's /proc/PID/smaps is read: RSS is the sum of
every mapping's Rss; guest RAM is the Rss of the guest-memory mapping
(the largest mapping at least --memory in size); overhead = RSS - guest
RAM. "private" is the same over Private_Clean + Private_Dirty, which
leaves out shared library pages that other processes use too.
Firecracker publishes an overhead bound of 5 MiB; issue 18's goal is the
same. Median of ROUNDS (default 3).

    OVK_BUILD=build /usr/bin/python3 bench/ovkvm_memory.py [ROUNDS]
"""
import os
import shlex
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from conftest import build_dir  # noqa: E402
from ovkvm_guest import debian_kernel, make_initramfs, run_with_kvm  # noqa: E402

MEM_MB = 256
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "MEMBENCH-READY"
sleep 6
poweroff -f
"""

# The VMM's pid in $pid, its console in $log: wait for the marker, then
# print "MEASURE name rss_kib guest_kib private_kib".
SAMPLE = r"""
i=0
while ! grep -q MEMBENCH-READY "$log" 2>/dev/null && [ $i -lt 600 ]; do
  sleep 0.2; i=$((i+1))
done
sleep 1
awk -v name="$name" -v min=%(min)d '
  /^Size:/ { sz = $2 }
  /^Rss:/ { rss += $2; if (sz >= min && $2 > g) g = $2 }
  /^Private_(Clean|Dirty):/ { priv += $2 }
  END { print "MEASURE", name, rss, g, priv }' /proc/$pid/smaps
wait $pid
"""


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = os.path.join(build_dir(), "bench-ovkvm-memory")
    os.makedirs(work, exist_ok=True)
    kernel = debian_kernel()
    initrd = os.path.join(work, "guest.cpio.gz")
    make_initramfs(initrd, INIT)
    q = shlex.quote
    ovkvm = os.path.join(build_dir(), "hypervisor", "ovkvm")
    cmdline = "console=ttyS0 loglevel=4"
    sample = SAMPLE % {"min": MEM_MB * 1024}
    qemu = (f"qemu-system-x86_64 -accel kvm -cpu host -smp 2 -m {MEM_MB}M"
            f" -nographic -no-reboot -nodefaults -monitor none"
            f" -kernel {q(kernel.bzimage)} -initrd {q(initrd)}")
    vmms = {
        "ovkvm": f"{q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd "
                 f"{q(initrd)} --memory {MEM_MB}M --cpus 2 --cmdline "
                 f"'{cmdline}' --console file:$log",
        "qemu-microvm": f"{qemu} -M microvm -serial file:$log -append "
                        f"'{cmdline} earlyprintk=ttyS0'",
        "qemu-q35": f"{qemu} -M q35 -serial file:$log -append '{cmdline}'",
    }
    script = ""
    for r in range(rounds):
        for name, cmd in vmms.items():
            script += (f"name={name}; log=/tmp/{name}-{r}.log; rm -f $log\n"
                       f"{cmd} >/dev/null 2>&1 &\npid=$!\n{sample}")
    _, out = run_with_kvm(script, work, timeout=120 * 3 * rounds)
    res = {}
    for line in out.splitlines():
        if "MEASURE" in line:
            f = line.split("MEASURE", 1)[1].split()
            res.setdefault(f[0], []).append(tuple(int(x) for x in f[1:4]))
    print(f"# {MEM_MB} MiB guest, 2 vCPUs, median of {rounds}; KiB")
    print("| VMM | RSS | guest RAM resident | overhead (RSS - guest) "
          "| private - guest |")
    print("|---|---:|---:|---:|---:|")
    for name in vmms:
        if name not in res:
            print(f"| {name} | (no measurement: did it boot?) | | | |")
            continue
        rss = statistics.median(x[0] for x in res[name])
        g = statistics.median(x[1] for x in res[name])
        over = statistics.median(x[0] - x[1] for x in res[name])
        priv = statistics.median(x[2] - x[1] for x in res[name])
        print(f"| {name} | {rss:.0f} | {g:.0f} | {over:.0f} | {priv:.0f} |")
    if "MEASURE" not in out:
        print(out[-3000:])


if __name__ == "__main__":
    main()
