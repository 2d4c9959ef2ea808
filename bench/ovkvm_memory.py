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
    OVK_BUILD=build /usr/bin/python3 bench/ovkvm_memory.py --breakdown

--breakdown boots ovkvm alone twice, with no disk and with one
monolithicSparse VMDK (64 MiB, made by qemu-img in the outer guest's
/tmp) that the guest reads 16 MiB from and writes 4 MiB to before the
marker, and attributes every KiB of the overhead: each mapping of
/proc/PID/smaps goes to one row (guest RAM, ovkvm's own image, each
shared library, the main heap, each thread's stack found from the stack
pointer in /proc/PID/task/TID/syscall, glibc's per-thread malloc arenas
(anonymous heaps at a 64 MiB boundary), io_uring rings, the vCPUs'
kvm_run pages, other anonymous memory), with how much of it is
transparent huge pages. The rows sum to the RSS; guest RAM is the one
mapping of exactly --memory bytes, left out of the overhead.
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

# --breakdown: the same wait, then every mapping of smaps on one line
# ("BD-MAP name start-end perms path size rss private_clean private_dirty
# anonymous anon_huge_pages", KiB), each thread's name and /proc/.../syscall (its stack
# pointer is the second-to-last field) and the kernel's RSS split.
BREAKDOWN_SAMPLE = r"""
i=0
while ! grep -q MEMBENCH-READY "$log" 2>/dev/null && [ $i -lt 600 ]; do
  sleep 0.2; i=$((i+1))
done
sleep 1
awk -v n="$name" '
  function flush() {
    if (hdr != "") print "BD-MAP", n, hdr, sz, rss, pc, pd, an, ah
    sz = rss = pc = pd = an = ah = 0
  }
  /^[0-9a-f]+-[0-9a-f]+ / {
    flush(); p = ""
    for (k = 6; k <= NF; k++) p = p (k > 6 ? "_" : "") $k
    hdr = $1 " " $2 " " (p == "" ? "-" : p); next
  }
  /^Size:/ { sz = $2 }
  /^Rss:/ { rss = $2 }
  /^Private_Clean:/ { pc = $2 }
  /^Private_Dirty:/ { pd = $2 }
  /^Anonymous:/ { an = $2 }
  /^AnonHugePages:/ { ah = $2 }
  END { flush() }' /proc/$pid/smaps
for t in /proc/$pid/task/*; do
  echo "BD-THREAD $name ${t##*/} $(cat $t/comm) $(cat $t/syscall)"
done
grep -E '^(VmRSS|RssAnon|RssFile|RssShmem):' /proc/$pid/status |
  sed "s/^/BD-STATUS $name /"
wait $pid
"""

# The ovkvm guest for --breakdown: with a disk, read 16 MiB and write
# 4 MiB through it first, so the engine's queue, caches and the I/O
# threads have worked before the sample.
BREAKDOWN_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {mods}; do insmod /lib/modules/$m 2>/dev/null; done
if [ -b /dev/vda ]; then
  dd if=/dev/vda of=/dev/null bs=1M count=16 2>/dev/null
  dd if=/dev/zero of=/dev/vda bs=1M seek=32 count=4 conv=fsync 2>/dev/null
  echo "disk-used"
fi
echo "MEMBENCH-READY"
sleep 6
poweroff -f
"""
BREAKDOWN_MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
]
ARENA_ALIGN = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: arenas align to it


def classify(maps, threads, mem_kib):
    """Rows {label: [mappings, size, rss, private, thp]} (KiB) for one
    sample: maps are (start, end, perms, path, size, rss, pclean, pdirty,
    anon, anon_huge_pages),
    threads {tid: (comm, stack pointer or None)}."""
    rows = {}
    stacks = {}
    for comm, sp in threads.values():
        for m in maps:
            if sp is not None and m[0] <= sp < m[1]:
                stacks.setdefault(m[0], []).append(comm)
    prev = None
    for m in maps:
        start, end, perms, path, size, rss, pc, pd, _, thp = m
        base = os.path.basename(path)
        if path == "-" and size == mem_kib:
            label = "guest RAM (not overhead)"
        elif path == "[stack]":
            label = "thread stack: main"
        elif start in stacks:
            names = stacks[start]
            kind = ("vCPUs" if names[0].startswith("vcpu") else
                    "virtio-blk queues" if names[0].startswith("blk") else
                    "engine workers" if names[0] == "engine worker" else
                    "other (named ovkvm)" if names[0] == "ovkvm"
                    else names[0])
            label = f"thread stack: {kind}"
        elif path == "[heap]":
            label = "malloc: main arena ([heap])"
        elif path == "-" and start % ARENA_ALIGN == 0 and size <= 65536:
            label = "malloc: per-thread arenas"
        elif (path == "-" and prev and prev[0] % ARENA_ALIGN == 0 and
              prev[1] == start and prev[3] == "-" and
              prev[4] + size <= 65536 and
              (prev[0] // ARENA_ALIGN) == (start // ARENA_ALIGN)):
            label = "malloc: per-thread arenas"
        elif "io_uring" in path:
            label = "io_uring rings (SQ/CQ/SQEs)"
        elif "kvm-vcpu" in path:
            label = "kvm_run pages (vCPUs)"
        elif path.startswith("anon_inode"):
            label = f"other {path}"
        elif base == "ovkvm":
            label = "ovkvm text/data"
        elif (path == "-" and prev and prev[3].endswith("/ovkvm") and
              prev[1] == start):
            label = "ovkvm .bss"
        elif base.startswith("vmlinuz") or base.endswith(".cpio.gz"):
            label = "kernel + initrd files (mmap)"
        elif ".so" in base:
            label = "lib " + base.split(".so")[0]
        elif path.startswith("["):
            label = path
        elif path == "-":
            label = "other anonymous (malloc mmap, guard pages)"
        else:
            label = "other file " + base
        r = rows.setdefault(label, [0, 0, 0, 0, 0])
        r[0] += 1
        r[1] += size
        r[2] += rss
        r[3] += pc + pd
        r[4] += thp
        prev = m
    return rows


def breakdown():
    """Attribute ovkvm's RSS, with no disk and with one VMDK (see the
    module text); prints one table per case."""
    import subprocess
    work = os.path.join(build_dir(), "bench-ovkvm-memory")
    os.makedirs(work, exist_ok=True)
    kernel = debian_kernel()
    initrd = os.path.join(work, "breakdown.cpio.gz")
    files = [(os.path.join(kernel.modules, m),
              "lib/modules/" + os.path.basename(m))
             for m in BREAKDOWN_MODULES]
    make_initramfs(initrd, BREAKDOWN_INIT.format(
        mods=" ".join(os.path.basename(m) for m in BREAKDOWN_MODULES)), files)
    q = shlex.quote
    ovkvm = os.path.join(build_dir(), "hypervisor", "ovkvm")
    base = (f"{q(ovkvm)} --kernel {q(kernel.bzimage)} --initrd {q(initrd)}"
            f" --memory {MEM_MB}M --cpus 2 --cmdline"
            f" 'console=ttyS0 loglevel=4' --console file:$log")
    cases = {"no-disk": base,
             "one-vmdk": base + " --disk /tmp/bd.vmdk"}
    script = ("qemu-img create -q -f vmdk -o subformat=monolithicSparse"
              " /tmp/bd.vmdk 64M\n")
    for name, cmd in cases.items():
        script += (f"name={name}; log=/tmp/{name}.log; rm -f $log\n"
                   f"{cmd} >/tmp/{name}.err 2>&1 &\npid=$!\n"
                   f"{BREAKDOWN_SAMPLE}"
                   f"grep -q disk-used $log && echo BD-DISK-USED {name}\n"
                   f"sed 's/^/BD-ERR {name} /' /tmp/{name}.err\n")
    if os.environ.get("OVK_BREAKDOWN_LOG"):  # re-read a saved run
        with open(os.environ["OVK_BREAKDOWN_LOG"]) as f:
            out = f.read()
    else:
        _, out = run_with_kvm(script, work, timeout=600)
        with open(os.path.join(work, "breakdown.log"), "w") as f:
            f.write(out)
    head = subprocess.run(["git", "-C", os.path.dirname(__file__), "describe",
                           "--always", "--dirty"], capture_output=True,
                          text=True)
    print(f"# ovkvm RSS by mapping, {MEM_MB} MiB guest, 2 vCPUs, at "
          f"{head.stdout.strip()}; KiB")
    for name in cases:
        maps, threads, status = [], {}, {}
        for line in out.splitlines():
            if "BD-" not in line:
                continue
            f = line[line.index("BD-"):].split()
            if len(f) < 2 or f[1] != name:
                continue
            if f[0] == "BD-MAP" and len(f) == 11:
                a, b = (int(x, 16) for x in f[2].split("-"))
                maps.append((a, b, f[3], f[4]) +
                            tuple(int(x) for x in f[5:11]))
            elif f[0] == "BD-THREAD" and len(f) >= 4:
                sc = f[4:]
                sp = int(sc[-2], 16) if len(sc) >= 3 else None
                comm = f[3]
                # a thread inherits its creator's name: the engine's
                # workers started by a queue thread are not in poll(2)
                if comm.startswith("blk") and sc[:1] != ["7"]:
                    comm = "engine worker"
                threads[f[2]] = (comm, sp)
            elif f[0] == "BD-STATUS":
                status[f[2].rstrip(":")] = int(f[3])
            elif f[0] == "BD-ERR":
                print("#", " ".join(f[2:]))
        if not maps:
            print(f"\n{name}: no sample (did it boot?)")
            print(out[-3000:])
            continue
        used = f"BD-DISK-USED {name}" in out
        mem_kib = MEM_MB * 1024
        rows = classify(maps, threads, mem_kib)
        total = sum(r[2] for r in rows.values())
        guest = rows.get("guest RAM (not overhead)", [0] * 5)[2]
        print(f"\n{name}{' (guest read 16 MiB, wrote 4 MiB)' if used else ''}"
              f": RSS {total} (status VmRSS {status.get('VmRSS')}, RssAnon "
              f"{status.get('RssAnon')}, RssFile {status.get('RssFile')}), "
              f"guest RAM {guest}, overhead {total - guest}; "
              f"{len(threads)} threads: "
              + ", ".join(sorted(c for c, _ in threads.values())))
        print("| what | mappings | mapped | Rss | private | of it THP |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, r in sorted(rows.items(), key=lambda kv: -kv[1][2]):
            if label.startswith("guest RAM"):
                continue
            print(f"| {label} | {r[0]} | {r[1]} | {r[2]} | {r[3]} "
                  f"| {r[4]} |")
        print(f"| **overhead** | | | **{total - guest}** | | |")


def main():
    if sys.argv[1:2] == ["--breakdown"]:
        return breakdown()
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
