# SPDX-License-Identifier: Apache-2.0
"""ovkd's two providers: which one --provider picks (ovkvm only where a
hardware KVM can run it), the provider kept in each VM's inventory record
across an ovkd restart, and a real VM deployed from an OVF and powered on
and off by ovkvm, in the nested-KVM guest of tests/ovkvm_guest.py."""
import json
import os
import shlex
import shutil
import signal
import subprocess

import pytest

from conftest import build_dir, need, run, tool
from ovkvm_guest import debian_kernel, host_kvm, make_initramfs, run_with_kvm
from test_ovkd import Ovkd, deploy, wait_power


def running(pid):
    """Whether pid runs (a zombie left to init to reap does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def auth(tmp_path):
    a = tmp_path / "auth"
    a.write_text("admin:s3cret-pw\n")
    return str(a)


@pytest.fixture
def small_ova(tmp_path, qemu_img):
    disk = tmp_path / "d.vmdk"
    run([qemu_img, "create", "-f", "vmdk", disk, "16M"])
    out = tmp_path / "app.ova"
    run([tool("ovf"), "create", "--name", "app", "--cpus", "1",
         "--memory", "128", "--disk", disk, out])
    return out


def test_help_names_the_providers():
    r = run([tool("ovkd"), "--help"])
    for word in ("--provider auto|qemu|ovkvm", "--ovkvm PATH", "svm or vmx",
                 "GracefulShutdown"):
        assert word in r.stdout, word


def test_auto_picks_qemu_without_hardware_kvm(tmp_path, auth, small_ova):
    """This machine's /dev/kvm (if any) has no svm or vmx: a paravirtual
    KVM counts as none, and auto runs VMs on QEMU."""
    if host_kvm():
        pytest.skip("this host has hardware KVM: auto picks ovkvm here")
    d = Ovkd(str(tmp_path / "state"), auth).start()
    try:
        log = open(d.log).read()
        assert "provider qemu (--provider auto: " in log, log
        if os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.W_OK):
            assert "neither svm nor vmx" in log, log
        status, vm, _ = deploy(d, small_ova)
        assert status == 201, vm
        assert vm["Oem"]["Ovk"]["Details"]["Provider"] == "qemu"
    finally:
        d.stop()


def test_provider_ovkvm_refused_without_kvm(tmp_path, auth):
    if host_kvm():
        pytest.skip("this host has hardware KVM: ovkvm can run here")
    state = tmp_path / "state"
    r = run([tool("ovkd"), "--state", state, "--auth-file", auth,
             "--provider", "ovkvm"], check=False, timeout=20)
    assert r.returncode == 1, r.stderr
    assert "--provider ovkvm: " in r.stderr, r.stderr
    assert "use --provider qemu" in r.stderr, r.stderr
    assert not (state / "ovkd.sock").exists()
    r = run([tool("ovkd"), "--provider", "xen"], check=False)
    assert r.returncode == 1 and "expected auto, qemu or ovkvm" in r.stderr


def test_provider_kept_in_the_record_across_restart(tmp_path, auth,
                                                     small_ova):
    """A VM started on QEMU says so in its record; a restarted ovkd (here
    also --provider qemu by hand) manages it with QEMU and powers it off."""
    need("qemu-system-x86_64")
    state = str(tmp_path / "state")
    d = Ovkd(state, auth).start()
    try:
        assert deploy(d, small_ova)[0] == 201
        record = os.path.join(state, "vms", "app.json")
        assert "provider" not in json.load(open(record))  # never started
        reset = "/redfish/v1/Systems/app/Actions/ComputerSystem.Reset"
        status, err, _ = d.request("POST", reset, {"ResetType": "On"})
        assert status == 204, err
        wait_power(d, "app", "On")
        rec = json.load(open(record))
        assert rec["provider"] == "qemu" and rec["vmm"]["pid"] > 0
        d.stop()
        d.extra = ["--provider", "qemu"]
        d.start()
        assert "app: found running (qemu pid %d)" % rec["vmm"]["pid"] in \
            open(d.log).read()
        vm = wait_power(d, "app", "On")
        assert vm["Oem"]["Ovk"]["Details"]["Provider"] == "qemu"
        status, err, _ = d.request("POST", reset, {"ResetType": "ForceOff"})
        assert status == 204, err
        wait_power(d, "app", "Off")
        assert json.load(open(record))["provider"] == "qemu"
        assert not running(rec["vmm"]["pid"])
    finally:
        d.request("POST", "/redfish/v1/Systems/app/Actions/"
                  "ComputerSystem.Reset", {"ResetType": "ForceOff"})
        d.stop()


GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
while true; do echo "PROV-GUEST up $(cut -d' ' -f1 /proc/uptime)"; sleep 1; done
"""

# Runs inside the nested-KVM guest (the host's files read-only, /tmp a
# fresh tmpfs): ovkd --provider ovkvm driven over its unix socket.
DRIVER = r'''
import http.client, json, os, signal, socket, subprocess, sys, time
ovkd, ova, kernel, initrd = sys.argv[1:5]
state, auth = "/tmp/ovkd", "/tmp/auth"
open(auth, "w").write("admin:pw\n")
sock = state + "/ovkd.sock"

def say(key, val):
    print("=== PROV", key, json.dumps(val), flush=True)

def start(provider, *extra):
    log = open("/tmp/ovkd.log", "a")
    p = subprocess.Popen([ovkd, "--state", state, "--auth-file", auth,
                          "--provider", provider, *extra], stdout=log,
                         stderr=log)
    for _ in range(600):
        try:
            req("GET", "/redfish/v1/")
            return p
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.05)
    say("ovkd-log", open("/tmp/ovkd.log").read())
    sys.exit(1)

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock)

def req(method, path, body=None):
    c = Conn("localhost", timeout=60)
    import base64
    h = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
    if body is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    text = r.read().decode()
    global location
    location = r.getheader("Location")
    return r.status, json.loads(text) if text else None

def task(action, body):
    st, t = req("POST", SYS + "/Actions/Oem/OvkComputerSystem." + action,
                body)
    where = location
    for _ in range(600):
        if st != 202:
            return st, {"TaskState": None, "error": t}
        if t["TaskState"] not in ("New", "Running"):
            break
        time.sleep(0.1)
        t = req("GET", where)[1]
    return st, t

def api(cmd, **kw):
    s = socket.socket(socket.AF_UNIX)
    s.connect(state + "/run/app/api.sock")
    f = s.makefile("rw")
    f.write(json.dumps(dict(command=cmd, **kw)) + "\n")
    f.flush()
    r = json.loads(f.readline())
    s.close()
    return r

SYS = "/redfish/v1/Systems/app"
RESET = SYS + "/Actions/ComputerSystem.Reset"
t0 = time.time()
# auto where there is hardware KVM: ovkvm, but a VM with no kernel to boot
# would start on QEMU (ovkvm has no firmware)
d = start("auto")
st, body = req("POST", "/redfish/v1/Systems",
               {"Name": "nokernel", "Oem": {"Ovk": {"Package": ova}}})
say("auto", ["provider ovkvm (--provider auto: hardware KVM" in
             open("/tmp/ovkd.log").read(), st,
             body["Oem"]["Ovk"]["Details"]["Provider"],
             req("DELETE", "/redfish/v1/Systems/nokernel")[0]])
d.send_signal(signal.SIGTERM)
d.wait(timeout=30)
d = start("ovkvm")
# ovkvm has no firmware: starting a package without a kernel is refused
st, body = req("POST", "/redfish/v1/Systems",
               {"Name": "nokernel", "Oem": {"Ovk": {"Package": ova,
                                                    "Start": True}}})
say("nokernel", [st, body["error"]["message"]])
st, body = req("POST", "/redfish/v1/Systems", {"Name": "app", "Oem": {"Ovk": {
    "Package": ova, "Kernel": kernel, "Initrd": initrd,
    "Cmdline": "console=ttyS0 quiet panic=-1"}}})
say("deploy", [st, body["PowerState"], body["Oem"]["Ovk"]["Details"]["Provider"]])
st, body = req("POST", RESET, {"ResetType": "On"})
say("on", [st, body])
st, body = req("GET", SYS)
say("after-on", [body["PowerState"], body["Oem"]["Ovk"]["Details"]["Provider"],
                 body["Oem"]["Ovk"]["Details"]["DiskServersRunning"]])
say("status", api("status")["return"]["state"])
# the guest's console: its init prints a line every second
con = socket.socket(socket.AF_UNIX)
con.connect(body["Oem"]["Ovk"]["Details"]["ConsoleSocket"])
con.settimeout(2)
seen, t = b"", time.time()
while b"PROV-GUEST up" not in seen and time.time() - t < 90:
    try:
        seen += con.recv(4096)
    except socket.timeout:
        pass
con.close()
say("console", "PROV-GUEST up" in seen.decode(errors="replace"))
say("boot-seconds", round(time.time() - t, 1))
st, body = req("POST", RESET, {"ResetType": "GracefulShutdown"})
say("graceful", [st, body["error"]["message"]])
st, _ = req("POST", RESET, {"ResetType": "Pause"})
say("pause", [st, req("GET", SYS)[1]["PowerState"], api("status")["return"]["state"]])
st, _ = req("POST", RESET, {"ResetType": "Resume"})
say("resume", [st, req("GET", SYS)[1]["PowerState"], api("status")["return"]["state"]])
st, body = req("GET", SYS + "/SimpleStorage/1")
say("io", "IO" in body["Devices"][0].get("Oem", {}).get("Ovk", {}))
# live-disk actions go to ovkvm's control socket with "disk": 0
st, t = task("Checkpoint", {"Name": "c1"})
say("checkpoint", [st, t["TaskState"], "c1" in t.get("Oem", {}).get(
    "Ovk", {}).get("Result", {}).get("Disks", [{}])[0].get("checkpoints", [])])
os.mkdir("/tmp/bk")
st, t = task("Backup", {"TargetDirectory": "/tmp/bk"})
b = t.get("Oem", {}).get("Ovk", {}).get("Result", {}).get("Backups", [{}])[0]
say("backup", [st, t["TaskState"], b.get("kind"), b.get("directory")])
if t["TaskState"] != "Completed":
    say("backup-task", t)
ovkdisk = os.path.join(os.path.dirname(ovkd), "..", "livedisk", "ovkdisk")
v = subprocess.run([ovkdisk, "verify", "/tmp/bk/disk0"], capture_output=True,
                   text=True)
say("verify", [v.returncode, v.stdout.count("ok ")])
pid = json.load(open(state + "/vms/app.json"))["vmm"]["pid"]
# ovkd stops (VMs kept running) and comes back with another default
d.send_signal(signal.SIGTERM)
d.wait(timeout=30)
os.kill(pid, 0)
d = start("qemu")
rec = json.load(open(state + "/vms/app.json"))
st, body = req("GET", SYS)
say("restarted", [rec["provider"], body["PowerState"],
                  body["Oem"]["Ovk"]["Details"]["Provider"],
                  "found running (ovkvm pid %d)" % pid in open("/tmp/ovkd.log").read()])
st, body = req("POST", RESET, {"ResetType": "ForceOff"})
say("forceoff", st)
st, body = req("GET", SYS)
def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
gone = not running(pid)
say("off", [body["PowerState"], gone])
d.send_signal(signal.SIGTERM)
say("ovkd-exit", d.wait(timeout=30))
# --on-exit shutdown: ovkvm has no button to press, so ovkd forces the VM
# off at once instead of waiting out --shutdown-timeout
d = start("ovkvm", "--on-exit", "shutdown", "--shutdown-timeout", "120")
st, _ = req("POST", RESET, {"ResetType": "On"})
pid = json.load(open(state + "/vms/app.json"))["vmm"]["pid"]
t = time.time()
d.send_signal(signal.SIGTERM)
rc = d.wait(timeout=60)
say("on-exit", [st, rc, time.time() - t < 30, not running(pid),
                json.load(open(state + "/vms/app.json"))["power"]])
say("seconds", round(time.time() - t0, 1))
say("ovkd-log", open("/tmp/ovkd.log").read())
'''


def prov_results(out):
    res = {}
    for line in out.splitlines():
        if "=== PROV " in line:
            key, val = line.split("=== PROV ", 1)[1].split(" ", 1)
            res[key] = json.loads(val)
    return res


def test_deploy_and_power_a_vm_on_ovkvm(qemu_img):
    """ovkd --provider ovkvm where there is KVM (nested under QEMU TCG on
    these machines): deploy an OVF with a kernel, On (ovkvm serves the disk
    itself), the guest's console, Pause/Resume, GracefulShutdown refused,
    a Checkpoint and a Backup through ovkvm's control socket,
    ovkd restarted with --provider qemu still managing it through ovkvm,
    ForceOff; ovkd --on-exit shutdown forces an ovkvm VM off at once."""
    ovkd, ovkvm = tool("ovkd"), tool("ovkvm")
    kernel = debian_kernel()
    work = os.path.join(build_dir(), "tests-ovkd-providers")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    disk = os.path.join(work, "d.vmdk")
    run([qemu_img, "create", "-f", "vmdk", disk, "16M"])
    ova = os.path.join(work, "app.ova")
    run([tool("ovf"), "create", "--name", "app", "--cpus", "1",
         "--memory", "128", "--disk", disk, ova])
    initrd = os.path.join(work, "guest.cpio.gz")
    make_initramfs(initrd, GUEST_INIT)
    driver = os.path.join(work, "driver.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    q = shlex.quote
    assert os.path.dirname(ovkvm) == os.path.join(build_dir(), "hypervisor")
    script = (f"python3 {q(driver)} {q(ovkd)} {q(ova)} {q(kernel.bzimage)} "
              f"{q(initrd)}; echo \"=== PROV driver {'$?'}\"\n")
    status, out = run_with_kvm(script, work, timeout=400)
    r = prov_results(out)
    tail = out[-6000:]
    assert r.get("driver") == 0, tail
    assert r["auto"] == [True, 201, "qemu", 204], tail
    assert r["nokernel"][0] == 400 and "Oem.Ovk.Kernel" in r["nokernel"][1]
    assert r["deploy"] == [201, "Off", "ovkvm"], tail
    assert r["on"] == [204, None], tail
    assert r["after-on"] == ["On", "ovkvm", 1], tail
    assert r["status"] == "running", tail
    assert r["console"] is True, tail
    assert r["graceful"][0] == 400 and "no ACPI power button" in \
        r["graceful"][1], tail
    assert r["pause"] == [204, "Paused", "paused"], tail
    assert r["resume"] == [204, "On", "running"], tail
    assert r["io"] is True, tail
    assert r["checkpoint"] == [202, "Completed", True], tail
    assert r["backup"] == [202, "Completed", "full", "/tmp/bk/disk0"], tail
    assert r["verify"] == [0, 1], tail
    assert r["restarted"] == ["ovkvm", "On", "ovkvm", True], tail
    assert r["forceoff"] == 204, tail
    assert r["off"] == ["Off", True], tail
    assert r["ovkd-exit"] == 0, tail
    assert r["on-exit"] == [204, 0, True, True, "Off"], tail
