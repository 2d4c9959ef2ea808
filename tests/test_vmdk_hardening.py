"""Defects outside testers found in the engine and the `vmdk` tool (issue
17): each test drives the real tool, with qemu-img/qemu-io as the
independent reference, and fails on the behaviour the testers reported."""
import hashlib
import os

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
