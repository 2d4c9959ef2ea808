# SPDX-License-Identifier: Apache-2.0
"""Defects outside testers found in the engine and the `vmdk` tool (issue
17): each test drives the real tool, with qemu-img/qemu-io as the
independent reference, and fails on the behaviour the testers reported."""
import hashlib
import os
import re

import pytest

from conftest import run

MiB = 1 << 20


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def qemu_vmdk(qemu_img, qemu_io, path, size="4M", subformat=None,
              backing=None, pattern=0x5A):
    cmd = [qemu_img, "create", "-q", "-f", "vmdk"]
    if subformat:
        cmd += ["-o", f"subformat={subformat}"]
    if backing:
        cmd += ["-b", os.path.basename(str(backing)), "-F", "vmdk"]
    run(cmd + [path, size] if not backing else cmd + [path])
    run([qemu_io, "-f", "vmdk", "-c", f"write -P {pattern} 0 1M", path])
    return path


# ---- 1: convert must not write over a file the source reads ------------

def _refused_and_intact(vmdk, qemu_img, src, dst, ofmt="raw"):
    before = {p: digest(p) for p in os.listdir(".") if os.path.isfile(p)}
    r = run([vmdk, "convert", "-O", ofmt, src, dst], check=False)
    assert r.returncode != 0, "convert over its own source exited 0"
    assert "reads" in r.stderr and os.path.basename(str(dst)) in r.stderr
    after = {p: digest(p) for p in os.listdir(".") if os.path.isfile(p)}
    assert after == before
    run([qemu_img, "check", "-q", src])


@pytest.mark.parametrize("ofmt", ["raw", "vmdk"])
def test_convert_refuses_the_source_itself(vmdk, qemu_img, qemu_io, tmp_path,
                                           monkeypatch, ofmt):
    monkeypatch.chdir(tmp_path)
    qemu_vmdk(qemu_img, qemu_io, "d.vmdk")
    _refused_and_intact(vmdk, qemu_img, "d.vmdk", "d.vmdk", ofmt)
    # another spelling and a hard link name the same inode
    os.mkdir("sub")
    _refused_and_intact(vmdk, qemu_img, "d.vmdk", "sub/../d.vmdk", ofmt)
    os.link("d.vmdk", "alias.vmdk")
    _refused_and_intact(vmdk, qemu_img, "d.vmdk", "alias.vmdk", ofmt)


def test_convert_refuses_an_extent_file(vmdk, qemu_img, qemu_io, tmp_path,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    qemu_vmdk(qemu_img, qemu_io, "f.vmdk", subformat="monolithicFlat")
    _refused_and_intact(vmdk, qemu_img, "f.vmdk", "f-flat.vmdk")


def test_convert_refuses_a_backing_file(vmdk, qemu_img, qemu_io, tmp_path,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    qemu_vmdk(qemu_img, qemu_io, "base.vmdk")
    qemu_vmdk(qemu_img, qemu_io, "top.vmdk", backing="base.vmdk",
              pattern=0x33)
    _refused_and_intact(vmdk, qemu_img, "top.vmdk", "base.vmdk")
    # the chain still reads as before: base's 0x5a was overwritten in top
    run([qemu_io, "-f", "vmdk", "-c", "read -P 0x33 0 1M", "top.vmdk"])
    run([qemu_io, "-f", "vmdk", "-c", "read -P 0x5a 0 1M", "base.vmdk"])


def test_convert_vmdk_output_whose_extent_is_a_source_file(
        vmdk, qemu_img, qemu_io, tmp_path, monkeypatch):
    """-O vmdk monolithicFlat names its extent DST-flat.vmdk: when that is
    the source's extent the convert must fail and leave it alone."""
    monkeypatch.chdir(tmp_path)
    qemu_vmdk(qemu_img, qemu_io, "x.vmdk", subformat="monolithicFlat")
    os.rename("x.vmdk", "y.vmdk")  # y.vmdk still reads x-flat.vmdk
    before = digest("x-flat.vmdk")
    r = run([vmdk, "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat",
             "y.vmdk", "x.vmdk"], check=False)
    assert r.returncode != 0
    assert "x-flat.vmdk" in r.stderr
    assert digest("x-flat.vmdk") == before
    assert not os.path.exists("x.vmdk")
    run([qemu_io, "-f", "vmdk", "-c", "read -P 0x5a 0 1M", "y.vmdk"])


# ---- 2: snapshot create touches the parent only when all went well -----

def test_snapshot_create_leaves_the_parent_alone(vmdk, qemu_img, qemu_io,
                                                 tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qemu_vmdk(qemu_img, qemu_io, "base.vmdk")
    run([vmdk, "snapshot", "create", "base.vmdk", "d1.vmdk"])
    before = digest("base.vmdk")
    # CHILD exists: refused, and the parent is untouched
    r = run([vmdk, "snapshot", "create", "base.vmdk", "d1.vmdk"], check=False)
    assert r.returncode != 0 and "d1.vmdk" in r.stderr
    assert digest("base.vmdk") == before
    # a second snapshot of the frozen parent: parent unchanged, and the
    # first delta still passes its parentCID check
    run([vmdk, "snapshot", "create", "base.vmdk", "d2.vmdk"])
    assert digest("base.vmdk") == before
    for d in ("d1.vmdk", "d2.vmdk"):
        run([vmdk, "info", d])
        run([qemu_img, "check", "-q", d])
        run([qemu_io, "-f", "vmdk", "-c", "read -P 0x5a 0 1M", d])


# ---- 8, 9: delta chains that loop, are too deep, or fail deep down ------

def _flat_layer(d, name, cid, parent=None, parent_cid=0xFFFFFFFF,
                flat="data.bin"):
    """A descriptor of a 1 MiB disk on the flat file `flat`, maybe a delta
    on parent (the flat extent holds every byte, so the parent is only
    opened and checked)."""
    from vmdkgen import descriptor
    if not os.path.exists(d / flat):
        with open(d / flat, "wb") as f:
            f.truncate(MiB)
    text = descriptor([("RW", 2048, "FLAT", flat, 0)], "monolithicFlat",
                      cid=cid, parent_cid=parent_cid, parent_hint=parent)
    (d / name).write_text(text)


def _fails_cleanly(r):
    # an exit status, not a signal (a stack overflow is SIGSEGV: < 0)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("vmdk: ")


def test_chain_naming_itself(vmdk, tmp_path):
    _flat_layer(tmp_path, "a.vmdk", 1, parent="a.vmdk", parent_cid=1)
    r = run([vmdk, "info", tmp_path / "a.vmdk"], check=False)
    _fails_cleanly(r)
    assert "itself" in r.stderr and "a.vmdk" in r.stderr


def test_chain_loop_of_two(vmdk, tmp_path):
    _flat_layer(tmp_path, "a.vmdk", 1, parent="b.vmdk", parent_cid=2)
    _flat_layer(tmp_path, "b.vmdk", 2, parent="a.vmdk", parent_cid=1)
    os.link(tmp_path / "b.vmdk", tmp_path / "b-link.vmdk")
    _flat_layer(tmp_path, "c.vmdk", 3, parent="b-link.vmdk", parent_cid=2)
    for top in ("a.vmdk", "c.vmdk"):
        r = run([vmdk, "info", tmp_path / top], check=False)
        _fails_cleanly(r)
        assert "loop" in r.stderr
    r = run([vmdk, "convert", "-O", "raw", tmp_path / "c.vmdk",
             tmp_path / "out.raw"], check=False)
    _fails_cleanly(r)


def test_chain_depth_is_bounded(vmdk, tmp_path):
    n = 140
    for i in range(n):
        _flat_layer(tmp_path, f"l{i}.vmdk", i + 1,
                    parent=f"l{i - 1}.vmdk" if i else None,
                    parent_cid=i if i else 0xFFFFFFFF)
    run([vmdk, "info", tmp_path / "l100.vmdk"])  # deep, but allowed
    r = run([vmdk, "info", tmp_path / f"l{n - 1}.vmdk"], check=False)
    _fails_cleanly(r)
    assert "deeper than" in r.stderr
    # the links next to the failure and to the top are named, the middle
    # counted: one readable sentence, not 128 links of it
    assert len(r.stderr) < 2000, r.stderr
    assert re.search(r"; \.\.\. \d+ more links \.\.\.;", r.stderr), r.stderr
    assert (f"l{n - 2}.vmdk is the parent of {tmp_path}/l{n - 1}.vmdk"
            in r.stderr), r.stderr


def _long_chain(d, n, missing_base):
    stem = "layer-with-a-rather-long-file-name-as-backup-tools-make-" * 2
    names = [f"{stem}{i:03d}.vmdk" for i in range(n)]
    for i in range(n):
        if i == 0 and missing_base:
            continue
        _flat_layer(d, names[i], i + 1, parent=names[i - 1] if i else None,
                    parent_cid=i if i else 0xFFFFFFFF)
    return names


def test_deep_chain_error_names_the_missing_file_first(vmdk, tmp_path):
    names = _long_chain(tmp_path, 30, missing_base=True)
    r = run([vmdk, "info", tmp_path / names[-1]], check=False)
    _fails_cleanly(r)
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"vmdk: {tmp_path / names[0]}: ")
    assert "No such file or directory" in first.split(";")[0]


def test_deep_chain_error_says_too_many_open_files(vmdk, tmp_path):
    import resource

    names = _long_chain(tmp_path, 40, missing_base=False)
    run([vmdk, "info", tmp_path / names[-1]])

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))
    r = run([vmdk, "info", tmp_path / names[-1]], check=False,
            preexec_fn=few_fds)
    _fails_cleanly(r)
    assert "Too many open files" in r.stderr.split(";")[0]


# ---- 10: special files where an image file is expected ------------------

def _special(path, kind):
    import socket
    if kind == "fifo":
        os.mkfifo(path)
        return None
    if kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(1)
        return s
    os.symlink("/dev/zero", path)  # a character device
    return None


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
def test_special_file_as_image_is_refused(vmdk, tmp_path, kind):
    keep = _special(tmp_path / "d.vmdk", kind)
    for cmd in (["info"], ["check"], ["convert", "-O", "raw"]):
        args = [vmdk] + cmd + [tmp_path / "d.vmdk"]
        if cmd[0] == "convert":
            args.append(tmp_path / "out.raw")
        # a hang is the defect: the timeout turns it into a failure
        r = run(args, check=False, timeout=60)
        assert r.returncode != 0 and "expected an image file" in r.stderr, \
            (cmd, r.stderr)
    if keep:
        keep.close()


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
def test_special_file_as_extent_is_refused(vmdk, tmp_path, kind):
    from vmdkgen import descriptor
    (tmp_path / "d.vmdk").write_text(descriptor(
        [("RW", 2048, "FLAT", "d-flat.vmdk", 0)], "monolithicFlat"))
    keep = _special(tmp_path / "d-flat.vmdk", kind)
    r = run([vmdk, "info", tmp_path / "d.vmdk"], check=False, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith(f"vmdk: {tmp_path / 'd-flat.vmdk'}: is ")
    assert "expected an image file" in r.stderr
    if keep:
        keep.close()


# ---- 11: descriptor text two readers could read differently -------------

_HEAD = ('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
         'createType="monolithicFlat"\n\n')


def _two_flat_files(d):
    for n in ("a.bin", "b.bin"):
        with open(d / n, "wb") as f:
            f.truncate(MiB)


def test_descriptor_text_after_a_nul_is_refused(vmdk, qemu_img, tmp_path):
    _two_flat_files(tmp_path)
    p = tmp_path / "d.vmdk"
    p.write_bytes((_HEAD + 'RW 2048 FLAT "a.bin" 0\n\0'
                   'RW 2048 FLAT "b.bin" 0\n').encode())
    # qemu-img counts the extent after the NUL: a 2 MiB disk
    r = run([qemu_img, "info", "--output=json", p])
    assert '"virtual-size": 2097152' in r.stdout
    r = run([vmdk, "info", p], check=False)
    assert r.returncode == 1
    assert "NUL byte at offset" in r.stderr and "d.vmdk" in r.stderr


def test_descriptor_nul_padding_at_the_end_is_fine(vmdk, qemu_img, tmp_path):
    _two_flat_files(tmp_path)
    p = tmp_path / "d.vmdk"
    p.write_bytes((_HEAD + 'RW 2048 FLAT "a.bin" 0\n').encode() + bytes(300))
    r = run([qemu_img, "info", "--output=json", p])
    assert '"virtual-size": 1048576' in r.stdout
    r = run([vmdk, "info", "--output=json", p])
    assert '"virtual-size": 1048576' in r.stdout


@pytest.mark.parametrize("line", ['createType="twoGbMaxExtentFlat"',
                                  "CID=87654321", "parentCID=00000001",
                                  "version=1"])
def test_descriptor_key_given_twice_is_refused(vmdk, tmp_path, line):
    _two_flat_files(tmp_path)
    p = tmp_path / "d.vmdk"
    p.write_text(_HEAD + line + '\nRW 2048 FLAT "a.bin" 0\n')
    r = run([vmdk, "info", p], check=False)
    assert r.returncode == 1
    key = line.split("=")[0]
    assert f"line 7: {key} is given a second time" in r.stderr


# ---- 14: the descriptor we write is the one VMware's writers write -------

def _descriptor_of(path):
    """The descriptor text of a VMDK: the file itself, or the one embedded
    in a sparse file (header field descriptorOffset, in sectors)."""
    import struct
    data = open(path, "rb").read(1 << 16)
    if data[:4] == b"KDMV":
        off, size = struct.unpack_from("<QQ", data, 28)
        data = open(path, "rb").read((off + size) * 512)[off * 512:]
    return data.split(b"\0")[0].decode()


def _ddb(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("ddb.") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()[4:]] = v.strip().strip('"')
    return out


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat",
                                       "streamOptimized",
                                       "twoGbMaxExtentSparse", "vmfs"])
def test_created_descriptor_is_vmware_like(vmdk, qemu_img, tmp_path,
                                           subformat):
    import re
    img = tmp_path / "d.vmdk"
    run([vmdk, "create", "-o", f"subformat={subformat}", img, "1G"])
    text = _descriptor_of(img)
    lines = text.splitlines()
    assert lines[:3] == ["# Disk DescriptorFile", "version=1",
                         'encoding="UTF-8"']
    ddb = _ddb(text)
    assert re.fullmatch(r"[0-9a-f]{32}", ddb["longContentID"])
    assert ddb["adapterType"] == "lsilogic"
    assert (ddb["geometry.heads"], ddb["geometry.sectors"]) == ("255", "63")
    assert ddb["geometry.cylinders"] == "131"  # ceil(2097152 / (255 * 63))
    assert ddb["toolsInstallType"] == "4"
    assert ddb["toolsVersion"] == "2147483647"
    # the other readers still read it
    r = run([qemu_img, "info", "--output=json", img])
    assert '"virtual-size": 1073741824' in r.stdout
    if subformat != "vmfs":  # qemu-img check knows no flat kinds
        run([qemu_img, "check", img])
    zeros = tmp_path / "z.raw"
    with open(zeros, "wb") as f:
        f.truncate(1 << 30)
    run([qemu_img, "compare", "-f", "vmdk", "-F", "raw", img, zeros])
    if subformat in ("monolithicSparse", "streamOptimized"):
        from conftest import need
        r = run([need("vmdkinfo"), img])
        assert "1073741824 bytes" in r.stdout or "1.0 GiB" in r.stdout


def test_created_ide_geometry_and_large_scsi_cylinders(vmdk, tmp_path):
    img = tmp_path / "ide.vmdk"
    run([vmdk, "create", "-o", "adapter_type=ide", img, "1G"])
    ddb = _ddb(_descriptor_of(img))
    assert ddb["adapterType"] == "ide"
    assert ddb["geometry.heads"] == "16"
    assert ddb["geometry.cylinders"] == "2081"  # ceil(2097152 / (16 * 63))
    big = tmp_path / "big.vmdk"
    run([vmdk, "create", big, "600G"])
    assert _ddb(_descriptor_of(big))["geometry.cylinders"] == "65535"


def test_convert_keeps_the_source_adapter(vmdk, qemu_img, tmp_path):
    src = tmp_path / "s.vmdk"
    run([qemu_img, "create", "-q", "-f", "vmdk", "-o",
         "adapter_type=buslogic", src, "16M"])
    out = tmp_path / "o.vmdk"
    run([vmdk, "convert", "-O", "vmdk", src, out])
    assert _ddb(_descriptor_of(out))["adapterType"] == "buslogic"
    out2 = tmp_path / "o2.vmdk"
    run([vmdk, "convert", "-O", "vmdk", "-o", "adapter_type=pvscsi", src,
         out2])
    assert _ddb(_descriptor_of(out2))["adapterType"] == "pvscsi"
    raw = tmp_path / "r.raw"
    with open(raw, "wb") as f:
        f.truncate(16 << 20)
    out3 = tmp_path / "o3.vmdk"
    run([vmdk, "convert", "-f", "raw", "-O", "vmdk", raw, out3])
    assert _ddb(_descriptor_of(out3))["adapterType"] == "lsilogic"
    run([qemu_img, "compare", out3, raw])


def test_help_shows_the_adapter_default(vmdk):
    r = run([vmdk, "create", "--help"])
    assert "adapter_type=lsilogic (default" in r.stdout
