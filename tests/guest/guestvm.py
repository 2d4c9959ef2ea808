# SPDX-License-Identifier: Apache-2.0
"""A real Linux guest for tests: Debian's stock kernel, a busybox initramfs
carrying the virtio modules, host tools (with their libraries) and a test
script, booted with QEMU's TCG. The script's exit status comes back to the
caller, parsed from the serial console, which is kept in a file.

Reusable by any suite that needs a guest (pvblk's vhost-user-blk, the
hypervisor). Everything is fetched at run time: the kernel package with
`apt-get download` (Debian's mirror), cached in OVK_GUEST_CACHE (default
/var/cache/ovk-tests when writable, else <build>/guest-cache) so later runs
reuse it.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile

# Load order matters: each needs the ones before it.
VIRTIO_MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
]

# Also ext4 and its helpers are modules in Debian's kernel.
EXT4_MODULES = [
    "lib/crc16.ko",
    "crypto/crc32c_generic.ko",
    "lib/libcrc32c.ko",
    "fs/mbcache.ko",
    "fs/jbd2/jbd2.ko",
    "fs/ext4/ext4.ko",
]

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /mnt
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /modules.order); do
  insmod /lib/modules/$m 2>/dev/null || echo "guest: insmod $m failed"
done
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
echo "=== guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu(s)"
sh -e /test.sh
rc=$?
echo "=== GUEST_EXIT=$rc"
sync
poweroff -f
"""


class GuestUnavailable(Exception):
    """The guest cannot be had here (no QEMU, no kernel): skip, saying why."""


def cache_dir(build=None):
    d = os.environ.get("OVK_GUEST_CACHE")
    if not d:
        d = "/var/cache/ovk-tests"
        try:
            os.makedirs(d, exist_ok=True)
            if not os.access(d, os.W_OK):
                raise PermissionError(d)
        except OSError:
            d = os.path.join(build or tempfile.gettempdir(), "guest-cache")
    os.makedirs(d, exist_ok=True)
    return d


def fetch_kernel(dest):
    """Unpack Debian's linux-image-amd64 (the package it depends on, got
    with apt-get download) into the folder dest, unless dest already holds
    a boot/vmlinuz-*.  Safe when several runs race: each unpacks beside
    dest and renames into place; the first wins.  The one fetch path of
    the guest harnesses (tests/ovkvm_guest.py uses it too)."""
    if glob.glob(os.path.join(dest, "boot", "vmlinuz-*")):
        return
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise GuestUnavailable("no apt-get/dpkg to fetch a kernel")
    r = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                       capture_output=True, text=True)
    m = re.search(r"Depends: (linux-image-[0-9]\S*)", r.stdout)
    if not m:
        raise GuestUnavailable("apt-cache knows no linux-image-amd64 "
                               "(no Debian package lists?) "
                               + r.stderr.strip())
    pkg = m.group(1)
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    dl = tempfile.mkdtemp(prefix=os.path.basename(dest) + ".", dir=parent)
    try:
        r = subprocess.run(["apt-get", "download", pkg], cwd=dl,
                           capture_output=True, text=True, timeout=600)
        debs = glob.glob(os.path.join(dl, "*.deb"))
        if r.returncode or not debs:
            raise GuestUnavailable(f"apt-get download {pkg} failed: "
                                   + r.stderr.strip()[-300:])
        unpacked = os.path.join(dl, "root")
        r = subprocess.run(["dpkg", "-x", debs[0], unpacked],
                           capture_output=True, text=True)
        if r.returncode:
            raise GuestUnavailable(f"dpkg -x {debs[0]} failed: "
                                   + r.stderr.strip()[-300:])
        try:
            os.rename(unpacked, dest)
        except OSError:
            pass  # another run put it there first
    finally:
        shutil.rmtree(dl, ignore_errors=True)


def kernel(cache):
    """(vmlinuz, module folder) of Debian's linux-image-amd64, fetched with
    apt-get download into cache on first use."""
    kern = os.path.join(cache, "kernel")
    fetch_kernel(kern)
    found = glob.glob(os.path.join(kern, "boot", "vmlinuz-*"))
    if not found:
        raise GuestUnavailable(f"no vmlinuz in {kern}")
    vmlinuz = sorted(found)[-1]
    ver = os.path.basename(vmlinuz)[len("vmlinuz-"):]
    return vmlinuz, os.path.join(kern, "lib", "modules", ver, "kernel")


def _libs(binary):
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        m = re.search(r"(/\S+)", line)
        if m and os.path.exists(m.group(1)):
            out.append(m.group(1))
    return out


def initramfs(out, script, moddir, modules=VIRTIO_MODULES + EXT4_MODULES,
              tools=(), files=None):
    """Write a gzip'd cpio initramfs to out: busybox, the modules (loaded in
    the given order at boot), host programs `tools` with their shared
    libraries, extra files {guest path: bytes}, and script as /test.sh (run
    with sh -e; its status is the guest's)."""
    busybox = shutil.which("busybox")
    if not busybox:
        raise GuestUnavailable("busybox (busybox-static) is not installed")
    root = tempfile.mkdtemp(prefix="initramfs-")
    try:
        for d in ("bin", "sbin", "lib/modules", "dev", "proc", "sys"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
        order = []
        for m in modules:
            src = os.path.join(moddir, m)
            if not os.path.exists(src):
                continue  # built into this kernel
            shutil.copy(src, os.path.join(root, "lib/modules"))
            order.append(os.path.basename(m))
        with open(os.path.join(root, "modules.order"), "w") as f:
            f.write("\n".join(order) + "\n")
        for t in tools:
            path = shutil.which(t) or t
            if not os.path.exists(path):
                raise GuestUnavailable(f"{t} is not installed on the host")
            for p in [path] + _libs(path):
                dst = os.path.join(root, p.lstrip("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(p, dst)
            link = os.path.join(root, "sbin", os.path.basename(path))
            if not os.path.exists(link):
                os.symlink(path, link)
        for p, data in (files or {}).items():
            dst = os.path.join(root, p.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as f:
                f.write(data)
        for name, text, mode in (("init", INIT, 0o755),
                                 ("test.sh", script, 0o755)):
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(root, name), mode)
        with open(out, "wb") as f:
            find = subprocess.Popen(["find", "."], cwd=root,
                                    stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"],
                                    cwd=root, stdin=find.stdout,
                                    stdout=subprocess.PIPE)
            gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout,
                                  stdout=f)
            find.stdout.close()
            cpio.stdout.close()
            if gz.wait() or cpio.wait() or find.wait():
                raise RuntimeError("building the initramfs failed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start(vmlinuz, initrd, qemu_args, console, mem="512M", smp=1):
    """Start the guest under TCG with memfd-backed shared memory (what
    vhost-user needs) plus qemu_args; the serial console goes to the file
    console. Returns the QEMU process: finish() waits for it."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise GuestUnavailable("qemu-system-x86_64 is not installed")
    cmd = [qemu, "-accel", "tcg", "-cpu", "max", "-m", mem,
           "-smp", str(smp), "-nodefaults", "-no-reboot",
           "-display", "none",
           "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
           "-machine", "pc,memory-backend=mem",
           "-kernel", vmlinuz, "-initrd", initrd,
           "-append", "console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check",
           "-serial", f"file:{console}"] + list(qemu_args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p, console, timeout=300):
    """Wait for the guest started with start(); returns (the test
    script's exit status, the console text), or raises with the
    console's tail when the guest did not say (crash, hang, QEMU error)."""
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    with open(console, errors="replace") as f:
        text = f.read()
    m = re.search(r"=== GUEST_EXIT=(\d+)", text)
    if not m:
        raise AssertionError(
            f"the guest did not finish (qemu exited {p.returncode}: "
            f"{err.strip()[-500:]})\nconsole tail:\n{text[-3000:]}")
    return int(m.group(1)), text


def boot(vmlinuz, initrd, qemu_args, console, mem="512M", smp=1,
         timeout=300):
    """start() and finish() in one."""
    return finish(start(vmlinuz, initrd, qemu_args, console, mem, smp),
                  console, timeout)


def console_text(console):
    try:
        with open(console, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main(argv=None):
    """Command line for scripts (.ci/demo): boot a guest whose disks are
    vhost-user-blk sockets, run a script in it, exit with its status."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--vhost-user-blk", action="append", default=[],
                    metavar="SOCKET", help="a disk (vda, vdb, ...)")
    ap.add_argument("--num-queues", type=int, default=1)
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--tool", action="append", default=[],
                    help="a host program to copy into the guest")
    ap.add_argument("--script", required=True, help="run in the guest")
    ap.add_argument("--console", required=True, help="serial log file")
    ap.add_argument("--cache", help="kernel cache folder")
    a = ap.parse_args(argv)
    try:
        vmlinuz, moddir = kernel(cache_dir() if not a.cache else a.cache)
        initrd = a.console + ".initrd.gz"
        with open(a.script) as f:
            initramfs(initrd, f.read(), moddir, tools=a.tool)
    except GuestUnavailable as e:
        print(f"guest unavailable: {e}", file=sys.stderr)
        return 77
    args = []
    for i, s in enumerate(a.vhost_user_blk):
        args += ["-chardev", f"socket,id=vu{i},path={s}", "-device",
                 f"vhost-user-blk-pci,chardev=vu{i},"
                 f"num-queues={a.num_queues}"]
    rc, text = boot(vmlinuz, initrd, args, a.console, smp=a.smp)
    os.unlink(initrd)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
