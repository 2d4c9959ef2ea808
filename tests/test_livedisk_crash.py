# SPDX-License-Identifier: Apache-2.0
"""kill -9 of `ovkdisk backup` and of pvblk at chosen and at random points:
the backups taken before still restore and verify, the disk (the image and
any delta a view left) checks clean with ovk's and QEMU's checkers and
holds what a model of the writes says, and a pvblk started again on the
image merges a view's leftover delta and takes the next backup.

`ovkdisk backup` stops itself (SIGSTOP) at a named phase when
OVKDISK_STOP_AT names it, so that the kill lands there for sure; other
kills land after a random delay. OVK_LONG_TESTS=1 (or OVK_CRASH_ROUNDS=N)
runs many random kills instead of a few.
"""
import json
import os
import random
import signal
import subprocess
import time

from conftest import need, run, tool
from test_livedisk import Daemon, qio

MiB = 1 << 20
SIZE = 8 * MiB
LONG = os.environ.get("OVK_LONG_TESTS") == "1"
ROUNDS = int(os.environ.get("OVK_CRASH_ROUNDS", "40" if LONG else "2"))
SEED = int(os.environ.get("OVK_CRASH_SEED", str(random.randrange(1 << 30))))

# The phases of a backup OVKDISK_STOP_AT can name, in order.
PHASES = ["view", "copy", "written", "released", "manifest", "done"]


class Disk:
    """A pvblk daemon on image with a model of the disk's bytes: every
    write goes through NBD and into the model."""

    def __init__(self, d, rng):
        self.d = d
        self.rng = rng
        self.img = os.path.join(d, "disk.vmdk")
        run([need("qemu-img"), "create", "-f", "vmdk", self.img, str(SIZE)])
        self.model = bytearray(SIZE)
        self.daemon = None
        self.logs = []

    def start(self):
        """pvblk on the image; waits until its control socket answers
        (a killed daemon's socket file may still be there)."""
        if self.daemon:
            self.logs.append(self.daemon.text())
        api = os.path.join(self.d, "api.sock")
        if os.path.exists(api):
            os.unlink(api)  # so that Daemon waits for the new one
        self.daemon = Daemon(self.d, self.img)
        for _ in range(500):
            try:
                self.daemon.call(command="status")
                return self.daemon
            except (ConnectionRefusedError, FileNotFoundError):
                time.sleep(0.02)
        raise AssertionError(self.daemon.text())

    def kill(self):
        self.daemon.p.kill()
        self.daemon.p.wait()

    def write(self, n=3):
        """n writes of a few 4 KiB-aligned blocks with a random byte."""
        cmds = []
        for _ in range(n):
            off = self.rng.randrange(SIZE // 4096) * 4096
            ln = min(self.rng.choice([4096, 65536, 300 * 1024]), SIZE - off)
            pat = self.rng.randrange(1, 256)
            cmds.append(f"write -P {pat} {off} {ln}")
            self.model[off:off + ln] = bytes([pat]) * ln
        qio(self.daemon.uri, *cmds)

    def reads_as_model(self, path, fmt="vmdk"):
        out = os.path.join(self.d, "flat.raw")
        if os.path.exists(out):
            os.unlink(out)
        run([need("qemu-img"), "convert", "-U", "-f", fmt, "-O", "raw",
             path, out])
        with open(out, "rb") as f:
            return f.read() == bytes(self.model)


def manifest(bk):
    p = os.path.join(bk, "manifest.json")
    if not os.path.exists(p):
        return {"backups": []}
    with open(p) as f:
        return json.load(f)


def stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def backup(disk, bk, stop_at=None, kill_after=None):
    """ovkdisk backup; with stop_at, killed -9 once it stopped itself
    there; with kill_after, killed -9 after that many seconds. Returns
    the process (waited for)."""
    env = dict(os.environ)
    env.pop("OVKDISK_STOP_AT", None)
    if stop_at:
        env["OVKDISK_STOP_AT"] = stop_at
    p = subprocess.Popen([tool("ovkdisk"), "backup", "--output=json",
                          disk.daemon.api, bk], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if stop_at:
        for _ in range(3000):
            if p.poll() is not None or stopped(p.pid):
                break
            time.sleep(0.01)
        assert p.poll() is None, (stop_at, p.communicate())
        p.kill()
    elif kill_after is not None:
        time.sleep(kill_after)
        p.kill()
    p.communicate()
    return p


def check_backups(disk, bk, models):
    """Every backup the manifest names verifies and restores to the model
    of the disk when it was taken."""
    m = manifest(bk)
    if not m["backups"]:
        return
    r = run([tool("ovkdisk"), "verify", bk])
    assert r.stdout.count("ok ") == len(m["backups"]), r.stdout
    for b in m["backups"][-1:]:  # the last: the longest chain
        out = os.path.join(disk.d, "restored.raw")
        if os.path.exists(out):
            os.unlink(out)
        run([tool("ovkdisk"), "restore", "--at", b["checkpoint"], bk, out])
        with open(out, "rb") as f:
            assert f.read() == models[b["checkpoint"]], b["checkpoint"]


def good_backup(disk, bk, models, kind=None):
    r = run([tool("ovkdisk"), "backup", "--output=json", disk.daemon.api,
             bk])
    e = json.loads(r.stdout)
    if kind:
        assert e["kind"] == kind, (e, r.stderr)
    models[e["checkpoint"]] = bytes(disk.model)
    # nothing of a dead backup stays: only the manifest's files, and on
    # the disk only the last backup's checkpoint and no view
    m = manifest(bk)
    names = {b["file"] for b in m["backups"]} | \
        {b["blockhash_file"] for b in m["backups"]} | {"manifest.json"}
    assert set(os.listdir(bk)) == names, (os.listdir(bk), r.stderr)
    st = disk.daemon.ok(command="status")
    assert [c for c in st["checkpoints"] if c.startswith("ovkdisk-")] == \
        [e["checkpoint"]], (st, r.stderr)
    assert st["view"] is None and len(st["chain"]) == 1
    return e


def record_if_named(disk, bk, models, before):
    """A backup killed after its manifest was written is a whole backup:
    its model is the disk as it was."""
    for b in manifest(bk)["backups"][before:]:
        models[b["checkpoint"]] = bytes(disk.model)


def check_disk_closed(disk):
    """With no daemon running: both checkers pass on every layer, and the
    chain reads as the model."""
    top = disk.img
    live = sorted(f for f in os.listdir(disk.d) if "-live-" in f and
                  f.endswith(".vmdk"))
    for f in [os.path.basename(disk.img)] + live:
        p = os.path.join(disk.d, f)
        run([tool("vmdk"), "check", p])
        run([need("qemu-img"), "check", "-f", "vmdk", p])
        top = p
    assert disk.reads_as_model(top), top
    return live


def test_backup_killed_at_each_phase(tmp_path):
    """kill -9 of ovkdisk backup in each phase (holding the view, half way
    through the copy, after the file is written, after the view is
    released, with the manifest written but not renamed, after the
    manifest): the earlier backups stay valid, the next backup cleans up
    and is incremental, and the disk stays whole."""
    rng = random.Random(SEED)
    disk = Disk(str(tmp_path), rng)
    bk = str(tmp_path / "bk")
    models = {}
    disk.start()
    try:
        disk.write(8)
        good_backup(disk, bk, models, "full")
        for phase in PHASES:
            disk.write()
            n = len(manifest(bk)["backups"])
            backup(disk, bk, stop_at=phase)
            record_if_named(disk, bk, models, n)
            assert len(manifest(bk)["backups"]) == \
                n + (phase == "done"), phase
            check_backups(disk, bk, models)
            good_backup(disk, bk, models, "incremental")
        check_backups(disk, bk, models)
    finally:
        disk.daemon.stop()
    assert check_disk_closed(disk) == []


def test_backup_killed_at_random_times(tmp_path):
    """kill -9 of ovkdisk backup after a random delay, ROUNDS times."""
    rng = random.Random(SEED + 1)
    disk = Disk(str(tmp_path), rng)
    bk = str(tmp_path / "bk")
    models = {}
    disk.start()
    try:
        disk.write(8)
        good_backup(disk, bk, models, "full")
        for i in range(ROUNDS):
            disk.write()
            n = len(manifest(bk)["backups"])
            backup(disk, bk, kill_after=rng.uniform(0, 0.25))
            record_if_named(disk, bk, models, n)
            check_backups(disk, bk, models)
            if rng.random() < 0.5:
                good_backup(disk, bk, models, "incremental")
        good_backup(disk, bk, models, "incremental")
        check_backups(disk, bk, models)
    finally:
        disk.daemon.stop()
    assert check_disk_closed(disk) == [], f"seed {SEED + 1}"


def restart_and_back_up(disk, bk, models, kind="incremental"):
    """pvblk started again on the image merges what a view left, keeps
    the checkpoints, and the next backup works."""
    d = disk.start()
    log = d.text()
    st = d.ok(command="status")
    assert len(st["chain"]) == 1 and st["view"] is None, (st, log)
    assert not [f for f in os.listdir(disk.d) if "-live-" in f], log
    assert disk.reads_as_model(d.uri, fmt="raw")
    disk.write()
    good_backup(disk, bk, models, kind)
    check_backups(disk, bk, models)
    return log


def test_pvblk_killed_with_a_view_open(tmp_path):
    """kill -9 of pvblk while a view is open and the disk's writes go to
    its delta: the image and the delta check clean and read as the disk;
    pvblk started again merges the delta (it says so), the checkpoint of
    the last backup survives and the next backup is incremental."""
    disk = Disk(str(tmp_path), random.Random(SEED + 2))
    bk = str(tmp_path / "bk")
    models = {}
    d = disk.start()
    disk.write(8)
    good_backup(disk, bk, models, "full")
    v = d.ok(command="view-create", checkpoint="someone-elses")
    disk.write()  # into the view's delta child
    disk.kill()
    assert os.path.exists(v["child"])
    assert check_disk_closed(disk) == [os.path.basename(v["child"])]
    check_backups(disk, bk, models)
    log = restart_and_back_up(disk, bk, models)
    assert "merged 1 leftover view" in log and v["child"] in log, log
    # the view's own checkpoint moved back with the change map
    assert "someone-elses" in disk.daemon.ok(
        command="checkpoint-list")["checkpoints"]
    disk.daemon.stop()
    assert check_disk_closed(disk) == []


def test_pvblk_killed_during_a_backup(tmp_path):
    """kill -9 of pvblk while ovkdisk copies the view: ovkdisk finishes
    from the frozen file it holds (or fails) without harming the folder;
    pvblk started again merges the view's delta and backs up on."""
    disk = Disk(str(tmp_path), random.Random(SEED + 3))
    bk = str(tmp_path / "bk")
    models = {}
    disk.start()
    disk.write(8)
    good_backup(disk, bk, models, "full")
    for kind in ["incremental", "full"] if LONG else ["full"]:
        disk.write()
        n = len(manifest(bk)["backups"])
        env = dict(os.environ, OVKDISK_STOP_AT="copy")
        args = [tool("ovkdisk"), "backup", "--output=json"] + \
            (["--full"] if kind == "full" else []) + [disk.daemon.api, bk]
        p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        for _ in range(3000):
            if p.poll() is not None or stopped(p.pid):
                break
            time.sleep(0.01)
        assert p.poll() is None, p.communicate()
        disk.kill()
        # the daemon's writes after the view are in the delta
        p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=60)
        if p.returncode == 0:
            assert "view-release" in err, err  # it could not release
            assert len(manifest(bk)["backups"]) == n + 1
            models[json.loads(out)["checkpoint"]] = bytes(disk.model)
        check_backups(disk, bk, models)
        assert check_disk_closed(disk), "the view's delta is gone"
        log = restart_and_back_up(disk, bk, models)
        assert "merged 1 leftover view" in log, log
    disk.daemon.stop()
    assert check_disk_closed(disk) == []


def test_pvblk_killed_at_random_times(tmp_path):
    """kill -9 of pvblk after a random delay while views are taken and
    released (live commits) and the disk is written, ROUNDS times; each
    time the layers check clean and read as the model, and the restarted
    daemon merges what was left and backs up incrementally."""
    rng = random.Random(SEED + 4)
    disk = Disk(str(tmp_path), rng)
    bk = str(tmp_path / "bk")
    models = {}
    disk.start()
    disk.write(8)
    good_backup(disk, bk, models, "full")
    for i in range(ROUNDS):
        d = disk.daemon
        # a client that takes views and releases them, and writes, until
        # the daemon dies under it
        script = (
            "import json, socket, sys, time\n"
            "def call(c):\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    s.connect(sys.argv[1])\n"
            "    s.sendall(json.dumps({'command': c}).encode() + b'\\n')\n"
            "    s.makefile().readline()\n"
            "while True:\n"
            "    call('view-create')\n"
            "    call('view-release')\n")
        cyc = subprocess.Popen([need("python3"), "-c", script, d.api],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            disk.write(2)
            time.sleep(rng.uniform(0, 0.2))
        finally:
            disk.kill()
            cyc.kill()
            cyc.wait()
        check_disk_closed(disk)
        restart_and_back_up(disk, bk, models)
    disk.daemon.stop()
    assert check_disk_closed(disk) == [], f"seed {SEED + 4}"


def test_read_only_pvblk_says_a_leftover_view_makes_the_image_stale(
        tmp_path):
    disk = Disk(str(tmp_path), random.Random(SEED + 5))
    d = disk.start()
    d.ok(command="view-create")
    disk.write()
    disk.kill()
    api = os.path.join(disk.d, "api.sock")
    os.unlink(api)
    p = subprocess.Popen([tool("pvblk"), "-o", "ro", "--api-socket", api,
                          "--nbd", f"unix:{tmp_path / 'ro.sock'}",
                          disk.img], stderr=subprocess.PIPE, text=True)
    for _ in range(500):
        if os.path.exists(api):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert "is stale" in err and "disk-live-1.vmdk" in err, err
    # the delta is left alone
    assert check_disk_closed(disk) == ["disk-live-1.vmdk"]


def test_change_map_of_a_live_commit_killed_before_it_moved_back(tmp_path):
    """A live commit killed after it deleted the view's child but before
    the change map followed the disk back leaves disk-live-1.vmdk-ctk.ovk
    alone (made here with the offline commit and a rename, the same
    files): pvblk started again moves it back, so the checkpoints and the
    next incremental backup survive."""
    disk = Disk(str(tmp_path), random.Random(SEED + 6))
    bk = str(tmp_path / "bk")
    models = {}
    d = disk.start()
    disk.write(8)
    good_backup(disk, bk, models, "full")
    v = d.ok(command="view-create")
    disk.write()
    disk.kill()
    run([tool("vmdk"), "commit", v["child"]])
    os.rename(disk.img + "-ctk.ovk", v["child"] + "-ctk.ovk")
    log = restart_and_back_up(disk, bk, models)
    assert "moved the change map" in log, log
    assert not os.path.exists(v["child"] + "-ctk.ovk")
    disk.daemon.stop()
    assert check_disk_closed(disk) == []


def test_leftover_view_still_mounted_is_reported_not_dropped(tmp_path):
    """pvblk killed while `ovkdisk view` had the view mounted: the mount
    still holds the frozen image, so the delta cannot be merged yet.
    pvblk started again says so and exits instead of serving the stale
    image; once the mount is gone it merges and serves the disk."""
    need("fusermount3")
    disk = Disk(str(tmp_path), random.Random(SEED + 7))
    d = disk.start()
    disk.write(4)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run([tool("ovkdisk"), "view", d.api, mnt])
    try:
        disk.write()
        disk.kill()
        os.unlink(d.api)
        r = run([tool("pvblk"), "-o", "rw", "--nbd",
                 f"unix:{tmp_path / 'again.sock'}", disk.img], check=False,
                timeout=60)
        assert r.returncode == 1, r.stderr
        assert "disk-live-1.vmdk" in r.stderr and "not serving" in \
            r.stderr, r.stderr
        assert os.path.exists(os.path.join(disk.d, "disk-live-1.vmdk"))
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    for _ in range(100):  # vmdkfs closes the image as it exits
        r = subprocess.run(["pgrep", "-f", f"vmdkfs.*{mnt}"],
                           capture_output=True)
        if r.returncode:
            break
        time.sleep(0.05)
    assert check_disk_closed(disk) == ["disk-live-1.vmdk"]
    d = disk.start()
    assert "merged 1 leftover view" in d.text(), d.text()
    assert disk.reads_as_model(d.uri, fmt="raw")
    d.stop()
