# SPDX-License-Identifier: Apache-2.0
"""`ovf create`: packages built around raw and VMDK images validate, their
disks are streamOptimized VMDKs that qemu-img checks clean and compares equal
to the source images, info shows what was asked, and ovffs serves them."""
import json
import os
import tarfile

import pytest

from conftest import assert_same_file, need, run, tool


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-img")
    need("qemu-io")


def ovf(*args, check=True):
    return run([tool("ovf")] + [str(a) for a in args], check=check)


def raw_image(path, size="64M"):
    run(["qemu-img", "create", "-f", "raw", path, size])
    if size != "64M":
        run(["qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", path])
        return str(path)
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 3M",
         "-c", "write -P 0x07 40M 100k", "-c", "write -P 0x11 63M 1M", path])
    return str(path)


def vmdk_image(path, subformat="monolithicSparse", size="10M"):
    """A VMDK with data at 0 and across a grain boundary at 5 MiB; stream
    images are converted from a sparse one (qemu appends only)."""
    src = str(path) + ".src" if subformat == "streamOptimized" else str(path)
    run(["qemu-img", "create", "-f", "vmdk", src, size])
    run(["qemu-io", "-c", "write -P 9 0 64k", "-c", "write -P 3 5M 130k", src])
    if src != str(path):
        run(["qemu-img", "convert", "-O", "vmdk", "-o",
             f"subformat={subformat}", src, path])
        os.unlink(src)
    return str(path)


def extract(ova, dest):
    with tarfile.open(ova) as t:
        names = t.getnames()
        t.extractall(dest)
    return names


def test_create_ova_validates_and_disks_equal_sources(tmp_path):
    raw = raw_image(tmp_path / "a.raw")
    vm = vmdk_image(tmp_path / "b.vmdk")
    out = tmp_path / "vm.ova"
    ovf("create", "--name", "web", "--cpus", "2", "--memory", "2048",
        "--disk", raw, "--disk", vm, "--network", "VM Network", out)
    r = ovf("validate", out)
    assert "valid (0 errors, 0 warnings)" in r.stdout
    names = extract(out, tmp_path / "x")
    # descriptor first, manifest next, disks in References order
    assert names == ["web.ovf", "web.mf", "web-disk1.vmdk", "web-disk2.vmdk"]
    for src, d in ((raw, "web-disk1.vmdk"), (vm, "web-disk2.vmdk")):
        p = str(tmp_path / "x" / d)
        run(["qemu-img", "check", p])
        info = json.loads(run(["qemu-img", "info", "--output=json", p]).stdout)
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
        run(["qemu-img", "compare", src, p])
    mf = (tmp_path / "x" / "web.mf").read_text().splitlines()
    assert [l.split("(")[1].split(")")[0] for l in mf] == \
        ["web.ovf", "web-disk1.vmdk", "web-disk2.vmdk"]
    assert all(l.startswith("SHA256(") for l in mf)


def test_create_info_shows_what_was_asked(tmp_path):
    raw = raw_image(tmp_path / "a.raw")
    out = tmp_path / "vm.ova"
    ovf("create", "--name", "db", "--cpus", "4", "--memory", "3G",
        "--disk", raw, "--network", "lan", "--network", "dmz", out)
    j = json.loads(ovf("info", "--output=json", out).stdout)
    assert j["ovf_version"] == "1.x"
    assert j["verify"]["digests_ok"] is True
    d = j["disks"][0]
    assert d["capacity_bytes"] == 64 << 20
    assert d["format"].endswith("vmdk.html#streamOptimized")
    # the grains holding data: 3 MiB + 100 KiB (2 grains) + 1 MiB
    assert d["populated_size"] == (4 << 20) + (128 << 10)
    assert [n["name"] for n in j["networks"]] == ["lan", "dmz"]
    vm = j["content"]
    assert vm["id"] == "db" and vm["name"] == "db"
    assert vm["os_id"] is not None
    hw = vm["hardware"]
    assert hw["cpus"] == 4 and hw["memory_bytes"] == 3 << 30
    mem = next(i for i in hw["items"] if i["kind"] == "memory")
    assert mem["allocation_units"] == "byte * 2^20" and mem["virtual_quantity"] == 3072
    scsi = next(i for i in hw["items"] if i["kind"] == "scsi")
    assert scsi["subtype"] == "lsilogic"
    disk = next(i for i in hw["items"] if i["kind"] == "disk")
    assert disk["parent"] == scsi["instance_id"]
    assert disk["address_on_parent"] == "0"
    assert disk["host_resource"] == "ovf:/disk/vmdisk1"
    assert disk["disk_capacity_bytes"] == 64 << 20
    nics = [i["connection"] for i in hw["items"] if i["kind"] == "nic"]
    assert nics == ["lan", "dmz"]


def test_create_controller_from_disk_adapter(tmp_path):
    """Without --controller, the first disk's ddb.adapterType picks the
    controller (an IDE disk stays on IDE, and the converted disk says ide);
    --controller still wins, and a raw disk gets lsilogic."""
    src = tmp_path / "ide.vmdk"
    run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "adapter_type=ide", src, "64M"])

    def controller(*extra):
        out = tmp_path / f"vm{len(os.listdir(tmp_path))}.ova"
        ovf("create", "--name", "v", "--cpus", "1", "--memory", "512",
            "--disk", src, *extra, out)
        j = json.loads(ovf("info", "--output=json", out).stdout)
        items = j["content"]["hardware"]["items"]
        disk = next(i for i in items if i["kind"] == "disk")
        ctl = next(i for i in items if i["instance_id"] == disk["parent"])
        with tarfile.open(out) as t:
            m = next(x for x in t.getmembers() if x.name.endswith(".vmdk"))
            head = t.extractfile(m).read(64 * 1024)
        return ctl["kind"], ctl.get("subtype"), head

    kind, _, head = controller()
    assert kind == "ide"
    assert b'ddb.adapterType = "ide"' in head
    kind, sub, _ = controller("--controller", "pvscsi")
    assert (kind, sub) == ("scsi", "VirtualSCSI")
    src = raw_image(tmp_path / "r.raw")
    kind, sub, _ = controller()
    assert (kind, sub) == ("scsi", "lsilogic")


def test_create_ovf2_folder(tmp_path):
    vm = vmdk_image(tmp_path / "s.vmdk", subformat="streamOptimized")
    out = tmp_path / "pkg"
    ovf("create", "--name", "n2", "--cpus", "1", "--memory", "512",
        "--disk", vm, "--ovf-version", "2", out)
    assert sorted(os.listdir(out)) == ["n2-disk1.vmdk", "n2.mf", "n2.ovf"]
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout
    j = json.loads(ovf("info", "--output=json", out).stdout)
    assert j["kind"] != "ova" and j["ovf_version"] == "2.x"
    assert j["verify"]["digests_ok"] is True
    assert j["networks"] == []
    run(["qemu-img", "check", str(out / "n2-disk1.vmdk")])
    run(["qemu-img", "compare", vm, str(out / "n2-disk1.vmdk")])


def test_create_from_delta_disk_reads_through_chain(tmp_path):
    base = vmdk_image(tmp_path / "base.vmdk")
    top = str(tmp_path / "top.vmdk")
    # relative parent name: the engine refuses to leave the folder by default
    run(["qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top])
    run(["qemu-io", "-c", "write -P 0x66 6M 64k", top])
    out = tmp_path / "d.ova"
    ovf("create", "--name", "d", "--cpus", "1", "--memory", "256",
        "--disk", top, out)
    extract(out, tmp_path / "x")
    run(["qemu-img", "compare", top, str(tmp_path / "x" / "d-disk1.vmdk")])


def test_created_ova_served_by_ovffs(tmp_path):
    need("fusermount3")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    from test_ovffs import Mount
    raw = raw_image(tmp_path / "a.raw")
    out = tmp_path / "vm.ova"
    ovf("create", "--name", "m", "--cpus", "1", "--memory", "128",
        "--disk", raw, out)
    m = Mount(str(out), tmp_path / "mnt")
    try:
        assert_same_file(m.path("disks", "vmdisk1.raw"), raw)
        assert "manifest: all digests match" in open(m.path("verify.txt")).read()
    finally:
        m.close()


def test_create_missing_disk(tmp_path):
    out = tmp_path / "vm.ova"
    r = ovf("create", "--name", "x", "--cpus", "1", "--memory", "128",
            "--disk", tmp_path / "nope.raw", out, check=False)
    assert r.returncode == 1
    assert "nope.raw: No such file or directory" in r.stderr
    assert not out.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mem", ["0", "-5", "lots", "12T", "1.5G", ""])
def test_create_bad_memory(tmp_path, mem):
    raw = raw_image(tmp_path / "a.raw", "1M")
    out = tmp_path / "vm.ova"
    r = ovf("create", "--name", "x", "--cpus", "1", "--memory", mem,
            "--disk", raw, out, check=False)
    assert r.returncode == 2
    assert "--memory" in r.stderr
    assert not out.exists()


def test_create_bad_cpus_and_version(tmp_path):
    raw = raw_image(tmp_path / "a.raw", "1M")
    base = ["create", "--name", "x", "--memory", "128", "--disk", raw]
    r = ovf(*base, "--cpus", "0", tmp_path / "o.ova", check=False)
    assert r.returncode == 2 and "--cpus" in r.stderr
    r = ovf(*base, "--cpus", "1", "--ovf-version", "3", tmp_path / "o.ova",
            check=False)
    assert r.returncode == 2 and "--ovf-version" in r.stderr
    r = ovf("create", "--cpus", "1", "--memory", "128", "--disk", raw,
            tmp_path / "o.ova", check=False)
    assert r.returncode == 2 and "--name" in r.stderr
    assert not (tmp_path / "o.ova").exists()


def test_create_refuses_existing_output(tmp_path):
    raw = raw_image(tmp_path / "a.raw", "1M")
    out = tmp_path / "vm.ova"
    out.write_bytes(b"keep me")
    r = ovf("create", "--name", "x", "--cpus", "1", "--memory", "128",
            "--disk", raw, out, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert out.read_bytes() == b"keep me"
    d = tmp_path / "dir"
    d.mkdir()
    r = ovf("create", "--name", "x", "--cpus", "1", "--memory", "128",
            "--disk", raw, d, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert os.listdir(d) == []


def test_create_unreadable_disk_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.vmdk"
    bad.write_bytes(b"KDMV" + bytes(508))
    out = tmp_path / "vm.ova"
    r = ovf("create", "--name", "x", "--cpus", "1", "--memory", "128",
            "--disk", bad, out, check=False)
    assert r.returncode == 1 and "bad.vmdk" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.vmdk"]


def test_create_ova_disk1_in_place_and_aligned(tmp_path):
    """Disk 1 is converted straight into the archive behind the room kept
    for the front: its data starts on a 4 KiB boundary, the descriptor is
    padded with trailing whitespace only, and the manifest covers the padded
    bytes."""
    raw = raw_image(tmp_path / "a.raw")
    out = tmp_path / "vm.ova"
    ovf("create", "--name", "w", "--cpus", "1", "--memory", "256",
        "--disk", raw, "--disk", raw, out)
    with tarfile.open(out) as t:
        members = t.getmembers()
        desc = t.extractfile("w.ovf").read()
    assert [m.name for m in members] == ["w.ovf", "w.mf", "w-disk1.vmdk", "w-disk2.vmdk"]
    assert members[2].offset_data % 4096 == 0
    assert desc.rstrip(b" \n").endswith(b"</Envelope>")
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout
    assert sorted(os.listdir(tmp_path)) == ["a.raw", "vm.ova"]


def test_create_second_disk_bad_leaves_nothing(tmp_path):
    """Disk 1 already lies in the half-built archive when disk 2 fails:
    neither the OVA nor the work folder is left."""
    raw = raw_image(tmp_path / "a.raw", "1M")
    bad = tmp_path / "bad.vmdk"
    bad.write_bytes(b"KDMV" + bytes(508))
    out = tmp_path / "vm.ova"
    r = ovf("create", "--name", "x", "--cpus", "1", "--memory", "128",
            "--disk", raw, "--disk", bad, out, check=False)
    assert r.returncode == 1 and "bad.vmdk" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.raw", "bad.vmdk"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real tmpfs (no FALLOC_FL_INSERT_RANGE there, and a size to fill)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size):
        d = tmp_path / ("fs%d" % len(mounted))
        d.mkdir()
        run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(d)])
        mounted.append(d)
        return d
    yield mount
    for d in mounted:
        run(["umount", str(d)])


def test_create_ova_on_tmpfs(tmp_path, small_tmpfs):
    raw = raw_image(tmp_path / "a.raw")
    d = small_tmpfs("64M")
    out = d / "vm.ova"
    ovf("create", "--name", "t", "--cpus", "1", "--memory", "128",
        "--disk", raw, "--disk", raw, out)
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout
    extract(out, tmp_path / "x")
    run(["qemu-img", "compare", raw, str(tmp_path / "x" / "t-disk2.vmdk")])
    assert os.listdir(d) == ["vm.ova"]


def test_create_ova_enospc_leaves_nothing(tmp_path, small_tmpfs):
    src = tmp_path / "noise.raw"
    src.write_bytes(os.urandom(8 << 20))  # does not compress
    d = small_tmpfs("4M")
    out = d / "vm.ova"
    r = ovf("create", "--name", "t", "--cpus", "1", "--memory", "128",
            "--disk", src, out, check=False)
    assert r.returncode == 1
    assert "No space left on device" in r.stderr
    assert os.listdir(d) == []


def _hw(j):
    return j["content"]["hardware"]["items"]


@pytest.mark.parametrize("ctl,kind,subtype,adapter", [
    ("lsilogic", "scsi", "lsilogic", "lsilogic"),
    ("pvscsi", "scsi", "VirtualSCSI", "lsilogic"),
    ("buslogic", "scsi", "buslogic", "buslogic"),
    ("ide", "ide", None, "ide"),
    ("sata", "sata", "vmware.sata.ahci", "lsilogic"),
    ("nvme", "nvme", "vmware.nvme.controller", "lsilogic"),
])
def test_create_controller_kinds(tmp_path, ctl, kind, subtype, adapter):
    raw = raw_image(tmp_path / "a.raw", "1M")
    out = tmp_path / "vm.ova"
    ovf("create", "--name", "c", "--cpus", "1", "--memory", "128",
        "--controller", ctl, "--disk", raw, "--disk", raw, "--disk", raw, out)
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout
    items = _hw(json.loads(ovf("info", "--output=json", out).stdout))
    ctls = [i for i in items if i["kind"] == kind]
    disks = [i for i in items if i["kind"] == "disk"]
    assert ctls and all(c.get("subtype") == subtype for c in ctls)
    assert len(disks) == 3
    ids = {c["instance_id"] for c in ctls}
    assert all(d["parent"] in ids for d in disks)
    # no two disks at one address of one controller
    assert len({(d["parent"], d["address_on_parent"]) for d in disks}) == 3
    if ctl == "ide":  # two per IDE controller
        assert len(ctls) == 2
    names = extract(out, tmp_path / "x")
    head = open(tmp_path / "x" / names[2], "rb").read(64 << 10)
    assert ('ddb.adapterType = "%s"' % adapter).encode() in head
    run(["qemu-img", "check", str(tmp_path / "x" / names[2])])


def test_create_ide_takes_four_disks(tmp_path):
    raw = raw_image(tmp_path / "a.raw", "1M")
    r = ovf("create", "--name", "c", "--cpus", "1", "--memory", "128",
            "--controller", "ide", *(["--disk", raw] * 5), tmp_path / "o.ova",
            check=False)
    assert r.returncode == 2 and "at most 4 disks" in r.stderr
    assert not (tmp_path / "o.ova").exists()


@pytest.mark.parametrize("os_arg,os_id,desc,vmw", [
    (None, 102, "Other 64-Bit", "otherGuest64"),
    ("ubuntu-64", 94, "Ubuntu 64-Bit", "ubuntu64Guest"),
    ("Windows-10-64", 120, "Microsoft Windows 10 64-bit", "windows9_64Guest"),
    ("96", 96, "Debian 64-Bit", None),
    ("4242", 4242, None, None),
])
def test_create_guest_os(tmp_path, os_arg, os_id, desc, vmw):
    raw = raw_image(tmp_path / "a.raw", "1M")
    out = tmp_path / "pkg"
    args = ["--os", os_arg] if os_arg else []
    ovf("create", "--name", "g", "--cpus", "1", "--memory", "128", *args,
        "--disk", raw, out)
    vm = json.loads(ovf("info", "--output=json", out).stdout)["content"]
    assert vm["os_id"] == os_id and vm["os_description"] == desc
    text = (out / "g.ovf").read_text()
    assert (('vmw:osType="%s"' % vmw) in text) if vmw else "vmw:osType" not in text
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout


def test_create_os_description_nic_type_and_bad_values(tmp_path):
    raw = raw_image(tmp_path / "a.raw", "1M")
    out = tmp_path / "pkg"
    ovf("create", "--name", "g", "--cpus", "1", "--memory", "128",
        "--os", "linux-64", "--os-description", "Alpine <3.20> & co",
        "--nic-type", "virtio", "--network", "a", "--network", "b",
        "--disk", raw, out)
    j = json.loads(ovf("info", "--output=json", out).stdout)
    assert j["content"]["os_description"] == "Alpine <3.20> & co"
    nics = [i for i in _hw(j) if i["kind"] == "nic"]
    assert [n["subtype"] for n in nics] == ["virtio", "virtio"]
    base = ["create", "--name", "x", "--cpus", "1", "--memory", "128",
            "--disk", raw]
    for opt, val in (("--os", "beos"), ("--os", "70000"), ("--os", "-1"),
                     ("--nic-type", "rtl8139"), ("--controller", "floppy")):
        r = ovf(*base, opt, val, tmp_path / "o.ova", check=False)
        assert r.returncode == 2 and opt in r.stderr, (opt, val, r.stderr)
    assert not (tmp_path / "o.ova").exists()


def test_create_help_and_list_os():
    h = ovf("create", "--help").stdout
    for opt in ("--name", "--cpus", "--memory", "--disk", "--network",
                "--nic-type", "--controller", "--os NAME|ID", "--os-description",
                "--ovf-version", "--list-os", "Exit status", "Example"):
        assert opt in h, opt
    rows = ovf("create", "--list-os").stdout.splitlines()
    assert rows[0].split()[:2] == ["NAME", "CIM"]
    names = {r.split()[0]: int(r.split()[1]) for r in rows[1:]}
    assert names["other-64"] == 102 and names["ubuntu-64"] == 94


@pytest.mark.parametrize("where", ["tmp_path", "tmpfs"])
def test_create_ova_writes_each_disk_once(tmp_path, request, where):
    """Every disk is converted by the engine straight into its place in the
    archive and hashed as it is written: the bytes create writes (its write
    syscalls, children reaped included) are the archive's, once, on any file
    system (tmpfs has no FALLOC_FL_INSERT_RANGE); nothing is read back.
    Before, disk 2 was converted beside the archive and copied (and on
    tmpfs disk 1 too), and each disk was read back to be hashed."""
    a = tmp_path / "a.raw"
    b = tmp_path / "b.raw"
    a.write_bytes(os.urandom(16 << 20))  # does not compress: VMDK ~16 MiB
    b.write_bytes(os.urandom(8 << 20))
    d = request.getfixturevalue("small_tmpfs")("64M") if where == "tmpfs" else tmp_path
    out = d / "vm.ova"
    r = run(["bash", "-c", '"$@"; cat /proc/$$/io', "sh", tool("ovf"), "create",
             "--name", "w", "--cpus", "1", "--memory", "128", "--disk", str(a),
             "--disk", str(b), str(out)])
    io = dict(l.split(": ") for l in r.stdout.splitlines() if ": " in l)
    with tarfile.open(out) as t:
        names = t.getnames()
        vmdks = t.getmember("w-disk1.vmdk").size + t.getmember("w-disk2.vmdk").size
    assert names == ["w.ovf", "w.mf", "w-disk1.vmdk", "w-disk2.vmdk"]
    assert vmdks > 24 << 20
    ova = out.stat().st_size
    assert vmdks < int(io["wchar"]) <= ova, (io["wchar"], ova)
    # the sources are read through io_uring; read(2) sees no VMDK bytes
    assert int(io["rchar"]) < 1 << 20, io["rchar"]
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout
    left = {"a.raw", "b.raw", "vm.ova"} if d == tmp_path else {"vm.ova"}
    assert set(os.listdir(d)) == left  # no work folder left behind
