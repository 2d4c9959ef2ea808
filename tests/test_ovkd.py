# SPDX-License-Identifier: Apache-2.0
"""ovkd: the Redfish management daemon, driven by real Redfish clients
(python3-sushy, redfishtool) and plain HTTP, deploying OVAs made by
`ovf create` and running them on QEMU with pvblk disks."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import need, run, tool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "guest"))
import guestvm  # noqa: E402

USER, PASSWORD = "admin", "s3cret-pw"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ovkd:
    """One ovkd process on a state folder; restartable."""

    def __init__(self, state, auth, extra=()):
        self.state, self.auth = state, auth
        self.extra = list(extra)  # more options (--provider ...)
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(os.path.dirname(state), "ovkd.log")

    def start(self):
        self.proc = subprocess.Popen(
            [tool("ovkd"), "--state", self.state, "--auth-file", self.auth,
             "--listen", f"127.0.0.1:{self.port}", "--accel", "tcg",
             *self.extra],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                self.get("/redfish/v1/", auth=False)
                return self
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None:
                    raise AssertionError(open(self.log).read())
                time.sleep(0.05)
        raise AssertionError("ovkd did not answer:\n" + open(self.log).read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=20) == 0, open(self.log).read()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, auth=True, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None), r
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None), e

    def get(self, path, auth=True):
        status, doc, _ = self.request("GET", path, auth=auth)
        return status, doc


@pytest.fixture
def ova(tmp_path, qemu_img):
    """An OVA with one 64 MiB disk holding a known pattern at 1 MiB."""
    disk = tmp_path / "d.vmdk"
    run([qemu_img, "create", "-f", "vmdk", disk, "64M"])
    run([need("qemu-io"), "-f", "vmdk", "-c", "write -P 0x5a 1M 1M", disk])
    out = tmp_path / "app.ova"
    run([tool("ovf"), "create", "--name", "web-1", "--cpus", "2",
         "--memory", "256", "--disk", disk, out])
    return out, disk


@pytest.fixture
def ovkd(tmp_path):
    state = tmp_path / "state"
    auth = tmp_path / "auth"
    auth.write_text(f"{USER}:{PASSWORD}\n")
    d = Ovkd(str(state), str(auth)).start()
    yield d
    # power off what a test left on, so no QEMU outlives it
    status, col = d.get("/redfish/v1/Systems")
    for m in (col or {}).get("Members", []):
        d.request("POST", m["@odata.id"] + "/Actions/ComputerSystem.Reset",
                  {"ResetType": "ForceOff"})
    d.stop()


def deploy(d, package, **oem):
    return d.request("POST", "/redfish/v1/Systems",
                     {"Oem": {"Ovk": {"Package": str(package), **oem}}})


def test_service_root_open_everything_else_needs_credentials(ovkd):
    status, root = ovkd.get("/redfish/v1/", auth=False)
    assert status == 200
    assert root["Systems"] == {"@odata.id": "/redfish/v1/Systems"}
    assert ovkd.get("/redfish", auth=False) == (200, {"v1": "/redfish/v1/"})
    status, err = ovkd.get("/redfish/v1/Systems", auth=False)
    assert status == 401 and "credentials" in err["error"]["message"]
    assert ovkd.get("/redfish/v1/Nope")[0] == 404
    status, err, resp = ovkd.request("DELETE", "/redfish/v1/Systems")
    assert status == 405 and resp.headers["Allow"] == "GET, POST"


def test_deploy_ova_and_read_it_with_sushy_and_redfishtool(ovkd, ova,
                                                           qemu_img):
    package, disk = ova
    status, vm, resp = deploy(ovkd, package)
    assert status == 201, vm
    assert resp.headers["Location"] == "/redfish/v1/Systems/web-1"
    assert vm["SystemType"] == "Virtual" and vm["PowerState"] == "Off"
    details = vm["Oem"]["Ovk"]["Details"]
    # the imported disk holds the package's disk, byte for byte
    assert len(details["Disks"]) == 1
    run([qemu_img, "compare", details["Disks"][0], disk])
    run([qemu_img, "check", details["Disks"][0]])

    sushy = pytest.importorskip("sushy", reason="python3-sushy is missing")
    from sushy import auth as sushy_auth
    s = sushy.Sushy(ovkd.url + "/redfish/v1",
                    auth=sushy_auth.BasicAuth(USER, PASSWORD))
    assert s.get_system_collection().members_identities == (
        "/redfish/v1/Systems/web-1",)
    system = s.get_system("/redfish/v1/Systems/web-1")
    assert system.name == "web-1"
    assert system.power_state == sushy.POWER_STATE_OFF
    assert system.memory_summary.size_gib is not None
    assert sushy.RESET_ON in system.get_allowed_reset_system_values()
    devices = [d for st in system.simple_storage.get_members()
               for d in st.devices]
    assert [d.capacity_bytes for d in devices] == [64 << 20]

    rt = need("redfishtool")
    out = run([rt, "-r", f"127.0.0.1:{ovkd.port}", "-S", "Never", "-u", USER,
               "-p", PASSWORD, "Systems", "-I", "web-1"]).stdout
    doc = json.loads(out)
    assert doc["Id"] == "web-1" and doc["ProcessorSummary"]["Count"] == 2


def test_tampered_package_is_refused_and_leaves_nothing(ovkd, ova, tmp_path):
    package, _ = ova
    bad = tmp_path / "bad.ova"
    data = bytearray(package.read_bytes())
    # flip a byte inside the disk member (past the descriptor and manifest)
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    status, err, _ = deploy(ovkd, bad)
    assert status == 400, err
    assert "manifest check failed" in err["error"]["message"]
    assert ovkd.get("/redfish/v1/Systems")[1]["Members"] == []
    disks = os.path.join(ovkd.state, "disks")
    assert not os.path.exists(disks) or not os.listdir(disks)
    assert not os.listdir(os.path.join(ovkd.state, "vms"))


def test_inventory_survives_restart_and_delete_removes_disks(ovkd, ova):
    package, _ = ova
    assert deploy(ovkd, package)[0] == 201
    status, vm, _ = deploy(ovkd, package, Start=False)
    assert status == 201 and vm["Id"] == "web-1-2"
    status, vm, _ = ovkd.request("PATCH", "/redfish/v1/Systems/web-1-2",
                                 {"Name": "renamed"})
    assert status == 200 and vm["Name"] == "renamed"
    ovkd.stop()
    ovkd.start()
    status, col = ovkd.get("/redfish/v1/Systems")
    assert col["Members@odata.count"] == 2
    assert ovkd.get("/redfish/v1/Systems/web-1-2")[1]["Name"] == "renamed"
    disk = ovkd.get("/redfish/v1/Systems/web-1")[1]["Oem"]["Ovk"][
        "Details"]["Disks"][0]
    assert os.path.exists(disk)
    assert ovkd.request("DELETE", "/redfish/v1/Systems/web-1")[0] == 204
    assert not os.path.exists(disk)
    assert ovkd.get("/redfish/v1/Systems/web-1")[0] == 404


def wait_power(d, vm_id, want, timeout=60):
    for _ in range(int(timeout * 10)):
        doc = d.get(f"/redfish/v1/Systems/{vm_id}")[1]
        if doc["PowerState"] == want:
            return doc
        time.sleep(0.1)
    raise AssertionError(f"{vm_id} never {want}: {doc}")


def test_power_cycle_on_qemu_with_pvblk_disks(ovkd, ova, tmp_path):
    """On (pvblk serves the disk to QEMU over vhost-user-blk), Pause,
    Resume, ForceRestart, ForceOff; a restarted ovkd finds the running VM,
    and notices when QEMU goes away."""
    need("qemu-system-x86_64")
    package, _ = ova
    assert deploy(ovkd, package)[0] == 201
    reset = "/redfish/v1/Systems/web-1/Actions/ComputerSystem.Reset"

    status, err, _ = ovkd.request("POST", reset, {"ResetType": "On"})
    assert status == 204, err
    vm = wait_power(ovkd, "web-1", "On")
    details = vm["Oem"]["Ovk"]["Details"]
    assert details["DiskServersRunning"] == 1
    assert vm["Status"]["Health"] == "OK"
    # the disk is held for writing: a second writer is refused
    r = run([tool("vmdk"), "resize", details["Disks"][0], "+1M"],
            check=False)
    assert r.returncode != 0 and details["Disks"][0] in r.stderr

    for kind, state in [("Pause", "Paused"), ("Resume", "On"),
                        ("ForceRestart", "On")]:
        status, err, _ = ovkd.request("POST", reset, {"ResetType": kind})
        assert status == 204, (kind, err)
        wait_power(ovkd, "web-1", state)
    status, err, _ = ovkd.request("POST", reset, {"ResetType": "Resume"})
    assert status == 409 and "running" in err["error"]["message"]
    status, err, _ = ovkd.request("POST", reset, {"ResetType": "Reboot?"})
    assert status == 400

    # a restarted ovkd finds the VM running, by pid and start time
    ovkd.stop()
    ovkd.start()
    vm = wait_power(ovkd, "web-1", "On")
    qemu_pid = None
    with open(os.path.join(ovkd.state, "vms", "web-1.json")) as f:
        qemu_pid = json.load(f)["vmm"]["pid"]
    # QEMU killed from outside: ovkd notices, stops pvblk, says Off
    os.kill(qemu_pid, signal.SIGKILL)
    vm = wait_power(ovkd, "web-1", "Off")
    assert vm["Oem"]["Ovk"]["Details"]["DiskServersRunning"] == 0
    assert "VMM exited" in vm["Oem"]["Ovk"]["Details"]["LastEvent"]
    # the image was closed cleanly: it checks clean and can be written
    run([need("qemu-img"), "check", vm["Oem"]["Ovk"]["Details"]["Disks"][0]])

    status, err, _ = ovkd.request("POST", reset, {"ResetType": "On"})
    assert status == 204, err
    wait_power(ovkd, "web-1", "On")
    status, err, _ = ovkd.request("POST", reset, {"ResetType": "ForceOff"})
    assert status == 204, err
    vm = wait_power(ovkd, "web-1", "Off")
    assert vm["Oem"]["Ovk"]["Details"]["DiskServersRunning"] == 0


def test_export_to_ova_and_deploy_it_again(ovkd, ova, tmp_path, qemu_img):
    """A VM written back as an OVA is a valid package that deploys again
    to the same disk bytes and the same CPUs and memory."""
    package, disk = ova
    assert deploy(ovkd, package)[0] == 201
    export = "/redfish/v1/Systems/web-1/Actions/Oem/OvkComputerSystem.Export"
    out = tmp_path / "out" / "web-1.ova"
    status, err, _ = ovkd.request("POST", export, {"Path": str(out)})
    assert status == 500 and str(out) in err["error"]["message"]
    out.parent.mkdir()
    status, err, _ = ovkd.request("POST", export, {"Path": str(out)})
    assert status == 204, err
    run([tool("ovf"), "validate", out])
    # an existing OUT is never replaced
    status, err, _ = ovkd.request("POST", export, {"Path": str(out)})
    assert status == 500
    status, vm, _ = deploy(ovkd, out)
    assert status == 201, vm
    assert vm["ProcessorSummary"]["Count"] == 2
    assert vm["MemorySummary"]["TotalSystemMemoryGiB"] == 0.25
    run([qemu_img, "compare", vm["Oem"]["Ovk"]["Details"]["Disks"][0], disk])


def test_deployed_appliance_boots_writes_its_disk_and_powers_off(
        ovkd, ova, tmp_path):
    """A real Linux guest (Debian's kernel under QEMU TCG) deployed from an
    OVA through Redfish: it finds its disk on vhost-user-blk from pvblk,
    writes to it and powers off by itself; ovkd notices, stops pvblk, and
    the write is on the VM's disk, read back through the engine."""
    need("qemu-system-x86_64")
    try:
        vmlinuz, moddir = guestvm.kernel(guestvm.cache_dir())
        initrd = tmp_path / "initrd.gz"
        guestvm.initramfs(str(initrd), (
            "test $(cat /sys/block/vda/size) -eq 131072\n"
            "echo OVKD-GUEST-WAS-HERE | dd of=/dev/vda bs=512 seek=8"
            " conv=notrunc 2>/dev/null\n"
            "sync\n"), moddir)
    except guestvm.GuestUnavailable as e:
        pytest.skip(f"no guest here: {e}")
    package, _ = ova
    status, vm, _ = deploy(ovkd, package, Kernel=vmlinuz, Initrd=str(initrd),
                           Cmdline="console=ttyS0 panic=-1 quiet loglevel=4",
                           Start=True)
    assert status == 201, vm
    assert vm["PowerState"] == "On", vm["Oem"]["Ovk"]["Details"]
    vm = wait_power(ovkd, "web-1", "Off", timeout=240)
    console = open(os.path.join(ovkd.state, "run", "web-1",
                                "console.log"), errors="replace").read()
    assert "=== GUEST_EXIT=0" in console, console[-3000:]
    assert vm["Oem"]["Ovk"]["Details"]["DiskServersRunning"] == 0
    disk = vm["Oem"]["Ovk"]["Details"]["Disks"][0]
    raw = tmp_path / "back.raw"
    run([tool("vmdk"), "convert", "-O", "raw", disk, raw])
    with open(raw, "rb") as f:
        f.seek(4096)
        assert f.read(20) == b"OVKD-GUEST-WAS-HERE\n"
    run([need("qemu-img"), "check", disk])


def wait_task(d, location, timeout=60):
    """GET a Redfish Task until it is no longer New or Running."""
    for _ in range(int(timeout * 10)):
        status, t = d.get(location)
        assert status == 200, t
        if t["TaskState"] not in ("New", "Running"):
            return t
        time.sleep(0.1)
    raise AssertionError(f"task {location} never ended: {t}")


def oem_action(d, vm_id, name, body):
    return d.request("POST", f"/redfish/v1/Systems/{vm_id}/Actions/Oem/"
                     f"OvkComputerSystem.{name}", body)


class EventStream:
    """curl -N reading ovkd's server-sent events: its lines, as they
    come, in a list."""

    def __init__(self, d):
        self.proc = subprocess.Popen(
            [need("curl"), "-sS", "-N", "-i", "-u", f"{USER}:{PASSWORD}",
             d.url + "/redfish/v1/EventService/SSE"],
            stdout=subprocess.PIPE, text=True)
        self.lines, self.headers = [], []
        self.connected = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.connected.wait(10), "no answer on the event stream"

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\r\n")
            if not self.connected.is_set():
                if line:
                    self.headers.append(line)
                else:
                    self.connected.set()
                continue
            self.lines.append(line)

    def events(self):
        return [json.loads(x[len("data: "):])["Events"][0]
                for x in list(self.lines) if x.startswith("data: ")]

    def wait_for(self, pred, timeout=20):
        for _ in range(int(timeout * 20)):
            for e in self.events():
                if pred(e):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no such event in {self.events()}")


def test_deploy_as_a_task_when_asked_async(ovkd, ova, tmp_path):
    """Prefer: respond-async makes a deploy a Task (202, Location); a
    package that is not there ends the task in Exception, leaving no VM."""
    package, _ = ova
    status, root = ovkd.get("/redfish/v1/")
    assert root["Tasks"]["@odata.id"] == "/redfish/v1/TaskService"
    assert root["EventService"]["@odata.id"] == "/redfish/v1/EventService"
    status, ts = ovkd.get("/redfish/v1/TaskService")
    assert status == 200 and ts["ServiceEnabled"] is True
    prefer = {"Prefer": "respond-async"}

    status, t, r = ovkd.request(
        "POST", "/redfish/v1/Systems",
        {"Oem": {"Ovk": {"Package": str(tmp_path / "nothing.ova")}}},
        headers=prefer)
    assert status == 202, t
    t = wait_task(ovkd, r.headers["Location"])
    assert t["TaskState"] == "Exception" and t["TaskStatus"] == "Critical"
    assert any("nothing.ova" in m["Message"] for m in t["Messages"]), t
    assert ovkd.get("/redfish/v1/Systems")[1]["Members"] == []

    status, t, r = ovkd.request(
        "POST", "/redfish/v1/Systems",
        {"Oem": {"Ovk": {"Package": str(package)}}}, headers=prefer)
    assert status == 202, t
    assert r.headers["Location"] == t["@odata.id"]
    assert t["@odata.id"].startswith("/redfish/v1/TaskService/Tasks/")
    t = wait_task(ovkd, r.headers["Location"])
    assert t["TaskState"] == "Completed" and t["PercentComplete"] == 100, t
    vm = t["Oem"]["Ovk"]["Result"]["System"]["@odata.id"]
    assert ovkd.get(vm)[1]["PowerState"] == "Off"
    members = ovkd.get("/redfish/v1/TaskService/Tasks")[1]["Members"]
    assert len(members) == 2
    assert ovkd.get("/redfish/v1/TaskService/Tasks/999")[0] == 404
    assert ovkd.get("/redfish/v1/TaskService/Tasks/..%2F1")[0] == 404
    for bad in ["+1", "%201", "01", "1x", "99999999999"]:
        assert ovkd.get("/redfish/v1/TaskService/Tasks/" + bad)[0] == 404
    # bytes that are not UTF-8 in the URL are quoted safely in the error
    for path in ["/redfish/v1/TaskService/Tasks/%BF",
                 "/redfish/v1/Systems/%C3%28/Actions/Oem/"
                 "OvkComputerSystem.Backup"]:
        status, doc = ovkd.get(path)
        assert status == 404 and "?" in doc["error"]["message"], doc


def test_backup_and_checkpoint_tasks_of_a_running_vm_with_events(
        ovkd, ova, tmp_path, qemu_img):
    """Backup (full, then incremental) and Checkpoint of a VM running on
    QEMU TCG as Redfish Tasks; ovkdisk verifies and restores what they
    wrote; bad input is refused with Redfish errors; an event stream read
    by curl -N tells the power changes and the ends of the tasks."""
    need("qemu-system-x86_64")
    package, disk = ova
    assert deploy(ovkd, package)[0] == 201
    status, es = ovkd.get("/redfish/v1/EventService")
    assert es["ServerSentEventUri"] == "/redfish/v1/EventService/SSE"
    sse = EventStream(ovkd)
    assert "Content-Type: text/event-stream" in sse.headers
    bk = tmp_path / "backups"

    # a VM that is off has no disk server to back up from
    status, err, _ = oem_action(ovkd, "web-1", "Backup",
                                {"TargetDirectory": str(bk)})
    assert status == 409 and "power it on" in err["error"]["message"], err

    status, err, _ = ovkd.request(
        "POST", "/redfish/v1/Systems/web-1/Actions/ComputerSystem.Reset",
        {"ResetType": "On"})
    assert status == 204, err
    vm = wait_power(ovkd, "web-1", "On")
    assert "#OvkComputerSystem.Backup" in vm["Actions"]["Oem"]
    sse.wait_for(lambda e: e["Oem"]["Ovk"].get("PowerState") == "On")

    status, t, r = oem_action(ovkd, "web-1", "Backup",
                              {"TargetDirectory": str(bk)})
    assert status == 202, t
    t = wait_task(ovkd, r.headers["Location"])
    assert t["TaskState"] == "Completed", t
    assert t["PercentComplete"] == 100 and t["TaskStatus"] == "OK"
    full = t["Oem"]["Ovk"]["Result"]["Backups"][0]
    assert full["kind"] == "full" and full["directory"] == str(bk / "disk0")
    raw = tmp_path / "restored.raw"
    run([tool("ovkdisk"), "restore", bk / "disk0", raw])
    run([qemu_img, "compare", "-f", "raw", raw, disk])

    # 1 MiB of the disk changes while the VM is off: vmdkfs writes through
    # the engine, whose change tracking the next incremental backup reads
    reset = "/redfish/v1/Systems/web-1/Actions/ComputerSystem.Reset"
    assert ovkd.request("POST", reset, {"ResetType": "ForceOff"})[0] == 204
    image = wait_power(ovkd, "web-1", "Off")["Oem"]["Ovk"]["Details"][
        "Disks"][0]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fs = subprocess.Popen([tool("vmdkfs"), "-f", "-o", "rw", image, mnt])
    try:
        for _ in range(100):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        with open(mnt / "disk", "r+b") as f:
            f.seek(8 << 20)
            f.write(b"\xa5" * (1 << 20))
    finally:
        run([need("fusermount3"), "-u", mnt], check=False)
        fs.wait(timeout=20)
    assert ovkd.request("POST", reset, {"ResetType": "On"})[0] == 204
    wait_power(ovkd, "web-1", "On")

    status, t, r = oem_action(ovkd, "web-1", "Backup",
                              {"TargetDirectory": str(bk),
                               "BackupType": "Incremental"})
    assert status == 202, t
    t = wait_task(ovkd, r.headers["Location"])
    assert t["TaskState"] == "Completed", t
    incr = t["Oem"]["Ovk"]["Result"]["Backups"][0]
    assert incr["kind"] == "incremental", incr
    assert incr["changed_bytes"] == 1 << 20, incr
    assert incr["disk_sha256"] != full["disk_sha256"]
    out = run([tool("ovkdisk"), "verify", bk / "disk0"]).stdout
    assert out.count("ok ") == 2, out

    status, t, r = oem_action(ovkd, "web-1", "Checkpoint",
                              {"Name": "before-upgrade"})
    assert status == 202, t
    t = wait_task(ovkd, r.headers["Location"])
    assert t["TaskState"] == "Completed", t
    cps = t["Oem"]["Ovk"]["Result"]["Disks"][0]["checkpoints"]
    assert "before-upgrade" in cps, t

    # a backup that fails midway ends its task in Exception
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "disk0").write_text("not a folder")
    status, t, r = oem_action(ovkd, "web-1", "Backup",
                              {"TargetDirectory": str(bad)})
    assert status == 202, t
    t = wait_task(ovkd, r.headers["Location"])
    assert t["TaskState"] == "Exception" and t["TaskStatus"] == "Critical"
    assert any("disk0" in m["Message"] and m["MessageSeverity"] ==
               "Critical" for m in t["Messages"]), t

    # bad input: clear Redfish errors, no task
    (tmp_path / "afile").write_text("x")
    for body, code, msgid, words in [
            ({}, 400, "ActionParameterMissing", "TargetDirectory"),
            ({"TargetDirectory": "backups"}, 400,
             "ActionParameterValueFormatError", "absolute"),
            ({"TargetDirectory": f"{tmp_path}/x/../../etc"}, 400,
             "ActionParameterValueFormatError", ".."),
            ({"TargetDirectory": f"{tmp_path}/no/such/dir"}, 400,
             "ActionParameterValueFormatError", "does not exist"),
            ({"TargetDirectory": f"{tmp_path}/afile"}, 400,
             "ActionParameterValueFormatError", "not a folder"),
            ({"TargetDirectory": str(bk), "BackupType": "Differential"},
             400, "ActionParameterValueNotInList", "Differential"),
            ({"TargetDirectory": str(bk), "Disk": 3}, 400,
             "ActionParameterUnknown", "Disk")]:
        status, err, _ = oem_action(ovkd, "web-1", "Backup", body)
        assert status == code, (body, err)
        assert err["error"]["code"] == "Base.1.8." + msgid, (body, err)
        assert words in err["error"]["message"], (body, err)
    for name in ["../../etc/passwd", "a/b", "", "ovkdisk-mine", "x" * 65]:
        status, err, _ = oem_action(ovkd, "web-1", "Checkpoint",
                                    {"Name": name})
        assert status == 400, (name, err)
        assert "checkpoint name" in err["error"]["message"]
    status, err, _ = oem_action(ovkd, "nope", "Backup",
                                {"TargetDirectory": str(bk)})
    assert status == 404 and "nope" in err["error"]["message"]
    status, err, _ = oem_action(ovkd, "..", "Checkpoint", {})
    assert status == 404
    status, err, r = ovkd.request(
        "GET", "/redfish/v1/Systems/web-1/Actions/Oem/"
        "OvkComputerSystem.Backup")
    assert status == 405

    status, err, _ = ovkd.request(
        "POST", "/redfish/v1/Systems/web-1/Actions/ComputerSystem.Reset",
        {"ResetType": "ForceOff"})
    assert status == 204, err
    wait_power(ovkd, "web-1", "Off")
    # the last backup restores to the disk as it is now
    run([tool("ovkdisk"), "restore", bk / "disk0", raw.with_suffix(".2")])
    run([qemu_img, "compare", "-f", "raw", raw.with_suffix(".2"), image])
    for _ in range(200):  # every power change, in order
        power = [e for e in sse.events()
                 if e["MessageId"] == "ResourceEvent.1.0.ResourceChanged"]
        if len(power) >= 4:
            break
        time.sleep(0.05)
    assert [e["Oem"]["Ovk"]["PowerState"] for e in power] == \
        ["On", "Off", "On", "Off"], power
    assert all(e["OriginOfCondition"]["@odata.id"] ==
               "/redfish/v1/Systems/web-1" for e in power)
    ids = [e["MessageId"] for e in sse.events()]
    assert ids.count("TaskEvent.1.0.TaskCompletedOK") == 3, ids
    assert ids.count("TaskEvent.1.0.TaskAborted") == 1, ids
    done = [e for e in sse.events() if e["MessageId"].startswith("Task")]
    assert done[0]["OriginOfCondition"]["@odata.id"].startswith(
        "/redfish/v1/TaskService/Tasks/")
    # ovkd ends its event streams as it stops
    ovkd.stop()
    assert sse.proc.wait(timeout=10) == 0
    ovkd.start()


def start_ovkd(tmp_path, *args):
    """ovkd with extra arguments; waits for its unix socket (made last: it
    answers once every listener is ready) and returns (process, state
    folder, log path)."""
    state = tmp_path / "state"
    auth = tmp_path / "auth"
    auth.write_text(f"{USER}:{PASSWORD}\n")
    log = tmp_path / "ovkd.log"
    p = subprocess.Popen([tool("ovkd"), "--state", state, "--auth-file",
                          auth, *args], stdout=open(log, "a"),
                         stderr=subprocess.STDOUT)
    sock = state / "ovkd.sock"
    for _ in range(200):
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(sock))
                return p, state, log
            except OSError:
                pass
        if p.poll() is not None:
            raise AssertionError(log.read_text())
        time.sleep(0.05)
    p.kill()
    raise AssertionError("no socket:\n" + log.read_text())


def stop_ovkd(p, log):
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0, log.read_text()


def curl(*args):
    r = run([need("curl"), "-sS", "-w", "\n%{http_code}", *args])
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def test_unix_socket_is_the_default_and_asks_for_credentials(tmp_path):
    p, state, log = start_ovkd(tmp_path)
    sock = state / "ovkd.sock"
    try:
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
        url = "http://localhost/redfish/v1/Systems"
        code, body = curl("--unix-socket", sock, url)
        assert code == 401 and "credentials" in body
        code, body = curl("--unix-socket", sock, "-u", "admin:wrong", url)
        assert code == 401
        code, body = curl("--unix-socket", sock, "-u",
                          f"{USER}:{PASSWORD}", url)
        assert code == 200 and json.loads(body)["Members"] == []
        code, body = curl("--unix-socket", sock,
                          "http://localhost/redfish/v1/")
        assert code == 200 and json.loads(body)["Systems"]
        # a second ovkd on the same socket is refused, the first untouched
        r = run([tool("ovkd"), "--state", tmp_path / "other", "--auth-file",
                 tmp_path / "auth", "--socket", sock], check=False)
        assert r.returncode == 1 and "another ovkd answers" in r.stderr
        assert curl("--unix-socket", sock, url)[0] == 401
    finally:
        stop_ovkd(p, log)
    assert not sock.exists()
    assert "0 running VMs left running" in log.read_text()


def test_stale_socket_is_replaced_and_a_file_is_not(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(state / "ovkd.sock"))
    stale.close()  # a socket file nobody listens on: a crashed ovkd's
    p, state, log = start_ovkd(tmp_path)
    code, _ = curl("--unix-socket", state / "ovkd.sock", "-u",
                   f"{USER}:{PASSWORD}", "http://localhost/redfish/v1/Systems")
    stop_ovkd(p, log)
    assert code == 200
    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    r = run([tool("ovkd"), "--state", state, "--auth-file", tmp_path / "auth",
             "--socket", plain], check=False)
    assert r.returncode == 1 and "is not a socket" in r.stderr
    assert plain.read_text() == "keep me"


@pytest.fixture
def tls_cert(tmp_path):
    """A self-signed certificate for 127.0.0.1 made with GnuTLS certtool."""
    certtool = need("certtool")
    key, cert, tmpl = (tmp_path / "key.pem", tmp_path / "cert.pem",
                       tmp_path / "cert.tmpl")
    tmpl.write_text('cn = "localhost"\nip_address = "127.0.0.1"\n'
                    'dns_name = "localhost"\nexpiration_days = 2\nca\n'
                    'signing_key\ntls_www_server\n')
    run([certtool, "--generate-privkey", "--key-type=ecdsa", "--outfile",
         key])
    run([certtool, "--generate-self-signed", "--load-privkey", key,
         "--template", tmpl, "--outfile", cert])
    return cert, key


def test_https_listener_with_certtool_cert(tmp_path, tls_cert, monkeypatch):
    cert, key = tls_cert
    # requests lets these variables override the verify= that sushy sets
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    port = free_port()
    p, state, log = start_ovkd(tmp_path, "--listen", f"127.0.0.1:{port}",
                               "--tls-cert", cert, "--tls-key", key)
    base = f"https://127.0.0.1:{port}/redfish/v1"
    try:
        code, body = curl("--cacert", cert, base + "/Systems")
        assert code == 401
        code, body = curl("--cacert", cert, "-u", f"{USER}:{PASSWORD}",
                          base + "/Systems")
        assert code == 200 and json.loads(body)["Members"] == []
        # not our CA: curl refuses the certificate
        r = run([need("curl"), "-sS", base + "/"], check=False)
        assert r.returncode == 60, r.stderr
        # no plain HTTP on the TLS port
        r = run([need("curl"), "-sS", f"http://127.0.0.1:{port}/redfish/v1/"],
                check=False)
        assert r.returncode != 0

        sushy = pytest.importorskip("sushy",
                                    reason="python3-sushy is missing")
        from sushy import auth as sushy_auth
        s = sushy.Sushy(base, verify=str(cert),
                        auth=sushy_auth.BasicAuth(USER, PASSWORD))
        assert s.get_system_collection().members_identities == ()
    finally:
        stop_ovkd(p, log)


def test_plain_http_off_loopback_is_refused(tmp_path, tls_cert):
    auth = tmp_path / "auth"
    auth.write_text(f"{USER}:{PASSWORD}\n")
    r = run([tool("ovkd"), "--state", tmp_path / "s", "--auth-file", auth,
             "--listen", "0.0.0.0:8443"], check=False)
    assert r.returncode == 1
    assert "only for loopback" in r.stderr and "--tls-cert" in r.stderr
    cert, key = tls_cert
    r = run([tool("ovkd"), "--state", tmp_path / "s", "--auth-file", auth,
             "--listen", "0.0.0.0:8443", "--tls-cert", cert], check=False)
    assert r.returncode == 1 and "go together" in r.stderr
    r = run([tool("ovkd"), "--state", tmp_path / "s", "--auth-file", auth,
             "--listen", "127.0.0.1:1", "--tls-cert", auth, "--tls-key",
             key], check=False)
    assert r.returncode == 1 and "expected PEM" in r.stderr
