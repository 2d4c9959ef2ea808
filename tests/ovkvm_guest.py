# SPDX-License-Identifier: Apache-2.0
"""Harness for booting real guests under ovkvm (the hypervisor tests).

These machines have no /dev/kvm, but QEMU's TCG emulates AMD SVM well
enough for a Debian kernel inside it to load kvm-amd and offer /dev/kvm.
So a test that needs KVM boots an outer QEMU TCG guest (“L1”) running
Debian's stock kernel with a busybox initramfs, shares the host's root
file system into it read-only over virtio-9p, and chroots into that to run
the host's own binaries (build/hypervisor/ovkvm) on the real /dev/kvm.
Where the host has /dev/kvm itself, the command runs directly instead.

The kernel comes from Debian's linux-image-amd64 package (`apt-get
download`, unpacked with `dpkg -x`) into a cache the tests reuse:
$OVK_KERNEL_CACHE, else /var/cache/ovk-tests/ovkvm-kernel.

The kernel is fetched by tests/guest/guestvm.py's fetch_kernel (one fetch
path for both harnesses), whose initramfs builder also makes the ovkvm
guest's initramfs on the command line below.
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "guest"))
import guestvm  # noqa: E402  (tests/guest/: the QEMU guest harness)

CACHE = os.environ.get("OVK_KERNEL_CACHE", "/var/cache/ovk-tests/ovkvm-kernel")

# Modules the outer guest loads, in order (paths under lib/modules/KVER/kernel).
KVM_MODULES = [
    "virt/lib/irqbypass.ko",
    "drivers/crypto/ccp/ccp.ko",
    "arch/x86/kvm/kvm.ko",
    "arch/x86/kvm/kvm-amd.ko",
]
NINEP_MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
]

L1_DONE = "=== OVKVM-L1 exit="


class Kernel:
    def __init__(self, root):
        self.root = root
        vmlinuz = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
        if not vmlinuz:
            raise FileNotFoundError(f"no vmlinuz in {root}")
        self.bzimage = vmlinuz[-1]
        self.version = os.path.basename(self.bzimage)[len("vmlinuz-"):]
        self.modules = os.path.join(root, "lib", "modules", self.version,
                                    "kernel")


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def debian_kernel():
    """The unpacked Debian kernel (fetched into the cache on first use, by
    tests/guest/guestvm.py's fetch_kernel); skips the test with the reason
    when it cannot be had."""
    try:
        return Kernel(CACHE)
    except FileNotFoundError:
        pass
    try:
        guestvm.fetch_kernel(CACHE)
    except guestvm.GuestUnavailable as e:
        pytest.skip(str(e))
    return Kernel(CACHE)


def busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(p):
            r = _run(["file", "-L", p]) if shutil.which("file") else None
            if r is None or "dynamically" not in r.stdout:
                return p
    pytest.skip("busybox-static is not installed")


def make_initramfs(out, init_script, files=()):
    """Write a gzip'd newc cpio with static busybox, /init = init_script and
    extra (source, dest-in-archive) files."""
    if not shutil.which("cpio"):
        pytest.skip("cpio is not installed")
    root = tempfile.mkdtemp(prefix="ovkvm-initramfs.")
    try:
        os.makedirs(os.path.join(root, "bin"))
        for d in ("proc", "sys", "dev", "tmp", "host", "lib/modules"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy(busybox(), os.path.join(root, "bin", "busybox"))
        with open(os.path.join(root, "init"), "w") as f:
            f.write(init_script)
        os.chmod(os.path.join(root, "init"), 0o755)
        for src, dest in files:
            d = os.path.join(root, dest.lstrip("/"))
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copy(src, d)
        with open(out, "wb") as f:
            find = subprocess.Popen(["find", "."], cwd=root,
                                    stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"],
                                    cwd=root, stdin=find.stdout,
                                    stdout=subprocess.PIPE)
            gz = subprocess.run(["gzip", "-1"], stdin=cpio.stdout, stdout=f)
            find.wait()
            cpio.wait()
            assert gz.returncode == 0 and cpio.returncode == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _l1_init(command):
    mods = "\n".join(
        f"insmod /lib/modules/{os.path.basename(m)} {'' if 'ccp' not in m else '2>/dev/null'}"
        for m in KVM_MODULES + NINEP_MODULES)
    return f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{mods}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro hostroot /host
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs tmp /host/tmp
[ -c /dev/kvm ] && echo "=== OVKVM-L1 /dev/kvm ready"
# a heartbeat for post-mortems: the L1 is alive, and what each thread of an
# ovkvm that runs is doing (state and the kernel function it waits in)
( while sleep 60; do
  echo "=== OVKVM-L1 alive uptime=$(cut -d' ' -f1 /proc/uptime) load=$(cut -d' ' -f1-3 /proc/loadavg)"
  for p in $(pidof ovkvm); do
    for t in /proc/$p/task/*; do
      echo "=== OVKVM-L1 thread $(cat $t/comm) $(cut -d' ' -f3 $t/stat) $(cat $t/wchan)"
    done
  done
done ) &
chroot /host /bin/sh -c {shlex.quote(command)} </dev/null
echo "{L1_DONE}$?"
poweroff -f
"""


def host_kvm():
    """Whether this host's own /dev/kvm can run an unmodified guest: it is
    there and usable, and the CPU offers hardware virtualization (svm or
    vmx). Some sandboxes offer a /dev/kvm without either (a paravirtual KVM
    such as PVM, which runs only kernels built for it): a stock kernel
    spins there forever with no exit, so such a host counts as having
    none and the tests nest a KVM under QEMU TCG instead."""
    if not (os.path.exists("/dev/kvm") and
            os.access("/dev/kvm", os.R_OK | os.W_OK)):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "svm" in flags or "vmx" in flags
    except OSError:
        pass
    return False


# The outer guest prints a heartbeat every 60 s (_l1_init); this long
# without a byte on its console means the emulator froze.
L1_STALL = 200


def _run_l1(qemu_cmd, log, timeout):
    """Runs the outer guest with its console into log; returns its exit
    status, "killed: hung" after timeout seconds, or "killed: frozen" when
    the console stays silent for L1_STALL seconds."""
    with open(log, "wb") as f:
        p = subprocess.Popen(qemu_cmd, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        start = last = time.monotonic()
        size = 0
        while True:
            try:
                return p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            cur = os.path.getsize(log)
            if cur != size:
                size, last = cur, now
            why = ("killed: hung" if now - start > timeout else
                   "killed: frozen" if now - last > L1_STALL else None)
            if why:
                p.kill()
                p.wait()
                return why


def run_with_kvm(script, workdir, timeout=300):
    """Run a shell script (host paths) where /dev/kvm exists: directly when
    the host has a hardware KVM (host_kvm), else inside an L1 QEMU TCG
    guest with nested SVM, where it sees the host's files read-only and a
    fresh tmpfs on /tmp.  Returns
    (exit status, output text).  `workdir` must not be under /tmp, which
    the L1 guest does not share."""
    if host_kvm():
        r = subprocess.run(["/bin/sh", "-c", script], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")

    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("no /dev/kvm and no qemu-system-x86_64 to nest one")
    kernel = debian_kernel()
    # The sanitizer settings of this run apply inside the guest too.
    command = "".join(f"export {v}={shlex.quote(os.environ[v])}\n"
                      for v in ("ASAN_OPTIONS", "UBSAN_OPTIONS")
                      if v in os.environ) + script
    initrd = os.path.join(workdir, "l1-initramfs.cpio.gz")
    files = [(os.path.join(kernel.modules, m),
              "lib/modules/" + os.path.basename(m))
             for m in KVM_MODULES + NINEP_MODULES]
    make_initramfs(initrd, _l1_init(command), files)
    qemu_cmd = [
        qemu, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1G",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-monitor", "none",
        "-kernel", kernel.bzimage, "-initrd", initrd,
        "-append", "console=ttyS0 quiet loglevel=4 panic=-1 no_timer_check",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ]
    # The console goes to a log file in workdir, kept for post-mortems.
    log = os.path.join(workdir, "l1-console.log")
    for attempt in (1, 2):
        rc = _run_l1(qemu_cmd, log, timeout)
        with open(log, "rb") as f:
            out = f.read().decode(errors="replace")
        if rc != "killed: frozen" or attempt == 2:
            break
        # The outer emulator itself stopped (its guest's heartbeat, printed
        # every minute whatever the command does, stopped too): a QEMU TCG
        # hang, not the code under test, whose own hangs leave the
        # heartbeat going. Said in the test report, and run once more.
        frozen = log + ".frozen"
        os.replace(log, frozen)
        warnings.warn(f"the outer QEMU TCG guest froze (no console output "
                      f"for {L1_STALL} s, heartbeat included); its log is "
                      f"{frozen}; running the command once more")
    for line in out.splitlines():
        if L1_DONE in line:
            return int(line.split(L1_DONE)[1].strip() or 255), out
    raise AssertionError(
        f"the outer QEMU guest ended ({rc}) without reporting the "
        f"command's exit status; console log {log}:\n{out[-4000:]}")


def _guest_initrd(out, script_path, kernel):
    """An initramfs for the ovkvm guest: tests/guest/guestvm.py's (busybox,
    virtio-blk and ext4 modules of this kernel, the script run with sh -e
    and its status printed as '=== GUEST_EXIT=N' before power-off)."""
    with open(script_path) as f:
        script = f.read()
    try:
        guestvm.initramfs(out, script, kernel.modules)
    except guestvm.GuestUnavailable as e:
        pytest.skip(str(e))


def _main(argv):
    """Command line: run ovkvm with Debian's kernel where /dev/kvm is (the
    outer TCG guest when the host has none), e.g. for a demo:

        python3 tests/ovkvm_guest.py [--build DIR] [--script FILE] \\
            [--guest-script FILE] [--log FILE] \\
            -- --disk /tmp/disk.vmdk,snapshot --memory 256M

    The arguments after -- go to ovkvm after --kernel (and --initrd, with
    --guest-script).  --script runs a shell script first, in the same place
    as ovkvm (in the outer guest only /tmp is writable; the host's files are
    read-only there, so paths given must not be under /tmp on the host).
    --guest-script runs a shell script inside the ovkvm guest, which has
    virtio-blk and ext4 loaded (tests/guest/guestvm.py's initramfs) and
    powers off after it.  The whole output goes to standard output, or to
    --log.  Exits with ovkvm's status; when that is 0, with the guest
    script's; 77 when KVM cannot be had here."""
    import argparse
    import re
    ap = argparse.ArgumentParser(prog="ovkvm_guest.py",
                                 description=_main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("OVK_BUILD", "build"))
    ap.add_argument("--script", help="shell script to run before ovkvm")
    ap.add_argument("--guest-script", help="shell script to run in the guest")
    ap.add_argument("--log", help="write the whole output here")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("ovkvm_args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    args = a.ovkvm_args[1:] if a.ovkvm_args[:1] == ["--"] else a.ovkvm_args
    build = os.path.abspath(a.build)
    ovkvm = os.path.join(build, "hypervisor", "ovkvm")
    if not os.access(ovkvm, os.X_OK):
        print(f"ovkvm_guest.py: no {ovkvm}: build first", file=sys.stderr)
        return 2
    try:
        kernel = debian_kernel()
        # Under the build tree, not /tmp: the outer guest sees it (read-only).
        work = os.path.join(build, "ovkvm-guest-cli")
        os.makedirs(work, exist_ok=True)
        pre = ""
        if a.script:
            with open(a.script) as f:
                pre = f.read()
        boot = [ovkvm, "--kernel", kernel.bzimage]
        if a.guest_script:
            initrd = os.path.join(work, "guest-initramfs.cpio.gz")
            _guest_initrd(initrd, a.guest_script, kernel)
            boot += ["--initrd", initrd]
            if "--cmdline" not in args:
                boot += ["--cmdline", "console=ttyS0 panic=-1 quiet loglevel=4"]
        cmd = " ".join(shlex.quote(x) for x in boot + args)
        status, out = run_with_kvm(f"{pre}\n{cmd}\n", work,
                                   timeout=a.timeout)
    except pytest.skip.Exception as e:
        print(f"ovkvm_guest.py: cannot run: {e}", file=sys.stderr)
        return 77
    except (AssertionError, subprocess.TimeoutExpired) as e:
        print(f"ovkvm_guest.py: {e}", file=sys.stderr)
        return 1
    if a.log:
        with open(a.log, "w") as f:
            f.write(out)
    else:
        print(out)
    if status == 0 and a.guest_script:
        m = re.search(r"=== GUEST_EXIT=(\d+)", out)
        status = int(m.group(1)) if m else 1
        if not m:
            print("ovkvm_guest.py: the guest script did not finish",
                  file=sys.stderr)
    return status


if __name__ == "__main__":
    import sys
    sys.exit(_main(sys.argv[1:]))
