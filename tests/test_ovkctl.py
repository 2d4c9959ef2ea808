# SPDX-License-Identifier: Apache-2.0
"""ovkctl, the command line over ovkd: a real ovkd (on its unix socket, and
once over HTTPS) driven only through ovkctl, human output and
--output=json."""
import json
import os
import time

import pytest

from conftest import need, run, tool
from test_ovkd import (PASSWORD, USER, free_port, ova, start_ovkd,  # noqa
                       stop_ovkd, tls_cert)


class Ctl:
    """ovkctl against one ovkd."""

    def __init__(self, state, auth, *base):
        self.state, self.auth = state, auth
        self.base = list(base) or ["--state", state, "--password-file", auth]

    def __call__(self, *args, check=True, **kw):
        return run([tool("ovkctl"), *self.base, *args], check=check, **kw)

    def json(self, *args):
        return json.loads(self(*args, "--output=json").stdout)


@pytest.fixture
def ctl(tmp_path):
    p, state, log = start_ovkd(tmp_path, "--accel", "tcg")
    c = Ctl(state, tmp_path / "auth")
    yield c
    for vm in c.json("list"):  # leave no QEMU behind
        if vm["PowerState"] != "Off":
            c("force-off", vm["Id"], check=False)
    stop_ovkd(p, log)


def test_list_deploy_show_export_delete(ctl, ova, tmp_path):
    package, _ = ova
    assert ctl("list").stdout == "no VMs\n"
    assert ctl.json("list") == []

    r = ctl("deploy", package)
    assert r.stdout == f"deployed {package} as web-1 (Off)\n"
    vm = ctl.json("deploy", package, "--name", "second")
    assert vm["Id"] == "second" and vm["PowerState"] == "Off"

    lines = ctl("list").stdout.splitlines()
    assert lines[0].split() == ["ID", "POWER", "CPUS", "MEMORY", "DISKS",
                                "NAME"]
    assert lines[1].split() == ["web-1", "Off", "2", "256Mi", "1", "web-1"]
    assert lines[2].split()[0] == "second"
    vms = ctl.json("list")
    assert [v["Id"] for v in vms] == ["web-1", "second"]
    assert all(v["SystemType"] == "Virtual" for v in vms)

    doc = ctl.json("show", "web-1")
    assert doc["ProcessorSummary"]["Count"] == 2
    assert doc["MemorySummary"]["TotalSystemMemoryGiB"] == 0.25
    disk = doc["Oem"]["Ovk"]["Details"]["Disks"][0]
    text = ctl("show", "web-1").stdout
    assert "Power:       Off" in text and f"Disk 0:      {disk}" in text

    # export writes a package that validates, relative paths are ours
    out = tmp_path / "out.ova"
    r = ctl("export", "web-1", "out.ova", cwd=tmp_path)
    assert r.stdout == f"exported web-1 to {out}\n"
    run([tool("ovf"), "validate", out])
    r = ctl("export", "web-1", out, check=False)
    assert r.returncode == 1 and "HTTP 500" in r.stderr

    assert ctl("delete", "web-1").stdout == "deleted web-1\n"
    assert not os.path.exists(disk)
    assert ctl.json("delete", "second") == {"Id": "second", "Deleted": True}
    assert ctl("list").stdout == "no VMs\n"


def test_power_stats_and_console(ctl, ova):
    need("qemu-system-x86_64")
    package, _ = ova
    ctl("deploy", package)
    r = ctl("stats", "web-1")
    assert "power Off" in r.stdout and "disk servers running 0" in r.stdout
    r = ctl("console", "web-1", check=False)
    assert r.returncode == 1 and "is Off" in r.stderr

    assert ctl("start", "web-1").stdout == "web-1: powered on (power On)\n"
    st = ctl.json("stats", "web-1")
    assert st["PowerState"] == "On" and st["DiskServersRunning"] == 1
    assert st["VMMResidentBytes"] > 0 and st["CPUSeconds"] >= 0
    assert [(d["CapacityBytes"], d["State"]) for d in st["Disks"]] == [
        (64 << 20, "Enabled")]
    lines = ctl("stats", "web-1").stdout.splitlines()
    assert "disk servers running 1" in lines[0]
    assert lines[1].split() == ["DISK", "SIZE", "STATE", "REQUESTS", "READ",
                                "WRITTEN", "ERRORS", "IMAGE"]
    assert lines[2].split()[:4] == ["0", "64.0", "MiB", "Enabled"]
    # per-disk I/O counters come from pvblk's control socket, passed
    # through by ovkd when this pvblk's status has them (issue 13)
    counts = "read_bytes" in run([tool("pvblk"), "--help"]).stdout
    io = st["Disks"][0].get("IO")
    if counts:
        assert set(io) == {"requests", "read_bytes", "written_bytes",
                           "errors"} and io["errors"] == 0, io
        assert lines[2].split()[4].isdigit()
    else:
        assert io is None and lines[2].split()[4:8] == ["-"] * 4

    # the console: what a script pipes in reaches QEMU's socket; Ctrl-]
    # ends the session at once, the VM stays on
    t0 = time.monotonic()
    r = ctl("console", "web-1", input="\x1d")
    assert time.monotonic() - t0 < 5
    assert ctl.json("show", "web-1")["PowerState"] == "On"

    assert ctl("pause", "web-1").stdout == "web-1: paused (power Paused)\n"
    r = ctl("pause", "web-1", check=False)
    assert r.returncode == 1 and "HTTP 409" in r.stderr
    assert ctl.json("resume", "web-1")["PowerState"] == "On"
    assert ctl("restart", "web-1").stdout == "web-1: restarted (power On)\n"
    r = ctl("stop", "web-1")
    assert r.stdout.startswith("web-1: asked to power off")
    r = ctl("delete", "web-1", check=False)
    assert r.returncode == 1 and "HTTP 409" in r.stderr, r.stderr
    assert ctl("force-off", "web-1").stdout == (
        "web-1: powered off (power Off)\n")
    assert ctl.json("stats", "web-1")["DiskServersRunning"] == 0


def test_errors_name_the_url_status_and_message(ctl, tmp_path):
    r = ctl("show", "nope", check=False)
    assert r.returncode == 1
    assert r.stderr == ("ovkctl: GET /redfish/v1/Systems/nope (socket "
                        f"{ctl.state}/ovkd.sock): HTTP 404: no virtual "
                        "machine nope\n")
    r = ctl("start", "nope", check=False)
    assert r.returncode == 1 and "HTTP 404: no virtual machine nope" in (
        r.stderr)
    bad = tmp_path / "wrong"
    bad.write_text(f"{USER}:not-the-password\n")
    r = run([tool("ovkctl"), "--state", ctl.state, "--password-file", bad,
             "list"], check=False)
    assert r.returncode == 1 and "HTTP 401" in r.stderr
    assert f"user {USER}, credentials from {bad}" in r.stderr
    # --user with a file that holds the bare password
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    r = run([tool("ovkctl"), "--state", ctl.state, "--user", USER,
             "--password-file", pw, "list"])
    assert r.stdout == "no VMs\n"
    r = ctl("deploy", tmp_path / "missing.ova", check=False)
    assert r.returncode == 1
    assert f"HTTP 404: {tmp_path}/missing.ova: No such file" in r.stderr

    # nobody on the socket
    r = run([tool("ovkctl"), "--socket", tmp_path / "none.sock",
             "--password-file", ctl.auth, "list"], check=False)
    assert r.returncode == 1 and "none.sock" in r.stderr
    assert "is ovkd running?" in r.stderr
    # the command line
    for args, msg in [(["frob"], "frob: no such command"),
                      (["show"], "show takes 1 argument, not 0"),
                      (["list", "--name", "x"], "are for deploy"),
                      (["list", "--output=yaml"], "only json"),
                      (["show", "../x"], "not a VM id")]:
        r = ctl(*args, check=False)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)


def test_over_https_with_cacert(tmp_path, tls_cert, ova):
    cert, key = tls_cert
    port = free_port()
    p, state, log = start_ovkd(tmp_path, "--listen", f"127.0.0.1:{port}",
                               "--tls-cert", cert, "--tls-key", key)
    url = f"https://127.0.0.1:{port}"
    try:
        c = Ctl(state, tmp_path / "auth", "--url", url, "--cacert", cert,
                "--password-file", tmp_path / "auth")
        assert c("list").stdout == "no VMs\n"
        package, _ = ova
        assert c.json("deploy", package)["Id"] == "web-1"
        # without our CA the certificate is refused, and ovkctl says so
        r = run([tool("ovkctl"), "--url", url, "--password-file",
                 tmp_path / "auth", "list"], check=False)
        assert r.returncode == 1 and url in r.stderr
        r = run([tool("ovkctl"), "--url", f"http://example.org:{port}",
                 "--password-file", tmp_path / "auth", "list"], check=False)
        assert r.returncode == 2 and "expected https://" in r.stderr
    finally:
        stop_ovkd(p, log)


def test_snapshot_and_backup_follow_their_tasks(ctl, ova, tmp_path):
    """backup and snapshot of a VM running on QEMU TCG wait for ovkd's
    task, show its progress and print what it made; ovkdisk verifies the
    backups; refusals name the status and the reason."""
    need("qemu-system-x86_64")
    package, _ = ova
    ctl("deploy", package, "--start")
    bk = tmp_path / "bk"
    r = ctl("backup", "web-1", "bk", cwd=tmp_path)
    assert r.stdout.startswith("web-1 disk 0: full backup ovkdisk-"), r
    assert f" in {bk}/disk0 (" in r.stdout
    assert "backup of web-1: 100%" in r.stderr
    t = ctl.json("backup", "web-1", bk, "--incremental")
    assert t["TaskState"] == "Completed", t
    b = t["Oem"]["Ovk"]["Result"]["Backups"][0]
    assert b["kind"] == "incremental" and b["disk"] == 0
    out = run([tool("ovkdisk"), "verify", bk / "disk0"]).stdout
    assert out.count("ok ovkdisk-") == 2, out

    r = ctl("snapshot", "web-1", "before-upgrade")
    lines = r.stdout.splitlines()
    assert lines[0] == "web-1: checkpoint before-upgrade taken"
    assert lines[1].startswith("disk 0 (") and \
        lines[1].endswith(" before-upgrade"), lines
    t = ctl.json("snapshot", "web-1")
    name = t["Oem"]["Ovk"]["Result"]["Checkpoint"]
    assert name.startswith("snap-")
    assert name in t["Oem"]["Ovk"]["Result"]["Disks"][0]["checkpoints"]

    r = ctl("backup", "web-1", "/no/such/folder/bk", check=False)
    assert r.returncode == 1 and "HTTP 400" in r.stderr
    assert "does not exist" in r.stderr
    r = ctl("snapshot", "web-1", "../../x", check=False)
    assert r.returncode == 1 and "HTTP 400" in r.stderr
    r = ctl("backup", "nope", bk, check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr
    r = ctl("snapshot", "web-1", "--full", check=False)
    assert r.returncode == 2 and "for backup" in r.stderr
    ctl("force-off", "web-1")
    r = ctl("backup", "web-1", bk, check=False)
    assert r.returncode == 1 and "HTTP 409" in r.stderr
    assert "power it on" in r.stderr


def test_help_names_every_command():
    out = run([tool("ovkctl"), "--help"]).stdout
    for cmd in ["list", "show ID", "deploy PACKAGE", "start ID", "stop ID",
                "force-off ID", "restart ID", "pause ID", "resume ID",
                "delete ID", "export ID OVA", "stats ID", "console ID",
                "snapshot ID [NAME]", "backup ID DIR", "--incremental",
                "--full", "Ctrl-]", "--output=json", "Examples:"]:
        assert cmd in out, cmd


def test_sigterm_keeps_or_stops_vms_as_configured(tmp_path, ova):
    """--on-exit keep (the default) leaves a VM running and says so;
    --on-exit shutdown asks the guest, then forces off what is still on
    after --shutdown-timeout (this VM has no OS to answer ACPI)."""
    need("qemu-system-x86_64")
    package, _ = ova
    p, state, log = start_ovkd(tmp_path, "--accel", "tcg")
    c = Ctl(state, tmp_path / "auth")
    vm = c.json("deploy", package, "--start")
    assert vm["PowerState"] == "On"
    with open(state / "vms" / "web-1.json") as f:
        qemu = json.load(f)["vmm"]["pid"]
    stop_ovkd(p, log)
    assert "1 running VM left running" in log.read_text()
    os.kill(qemu, 0)  # still there

    p, state, log = start_ovkd(tmp_path, "--accel", "tcg", "--on-exit",
                               "shutdown", "--shutdown-timeout", "1")
    assert c.json("show", "web-1")["PowerState"] == "On"
    stop_ovkd(p, log)
    text = log.read_text()
    assert "powering off 1 running VM (--on-exit shutdown)" in text
    assert "web-1: forced off (still on after --shutdown-timeout)" in text
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # reaped by its parent, ovkd, or by init
            os.kill(qemu, 0)
            time.sleep(0.1)

    p, state, log = start_ovkd(tmp_path, "--accel", "tcg")
    try:
        vm = c.json("show", "web-1")
        assert vm["PowerState"] == "Off"
        assert vm["Oem"]["Ovk"]["Details"]["LastEvent"] == (
            "ForceOff as ovkd stopped")
    finally:
        stop_ovkd(p, log)
