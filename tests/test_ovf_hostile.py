# SPDX-License-Identifier: Apache-2.0
"""Hostile input: each is refused with a clear error naming the file and
what was wrong, and nothing crashes (exit status 1, never a signal)."""
import io
import os
import tarfile

import pytest

import ovfgen
from conftest import need, run, tool

DESC_HEAD = ('<?xml version="1.0"?>\n')


def ovf(*args):
    r = run([tool("ovf")] + [str(a) for a in args], check=False)
    assert r.returncode in (0, 1), f"exit {r.returncode}: {r.stderr}"
    return r


def minimal(extra_refs="", body=""):
    return ovfgen.vmware_envelope([], [], (
        '  <VirtualSystem ovf:id="vm"><Info>x</Info>'
        '<VirtualHardwareSection><Info>hw</Info></VirtualHardwareSection>'
        + body + '</VirtualSystem>\n'))


def write_folder(tmp_path, text):
    d = tmp_path / "pkg"
    d.mkdir(exist_ok=True)
    (d / "p.ovf").write_text(text)
    return d


def test_xxe_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    text = minimal().replace(
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<?xml version="1.0"?>\n<!DOCTYPE Envelope [<!ENTITY xxe SYSTEM '
        f'"file://{secret}">]>\n').replace("<Info>x</Info>", "<Info>&xxe;</Info>")
    d = write_folder(tmp_path, text)
    r = ovf("info", "--output=json", d)
    assert r.returncode == 1
    assert "p.ovf: line" in r.stderr and "DOCTYPE refused" in r.stderr
    assert "TOPSECRET" not in r.stdout + r.stderr


def test_billion_laughs_refused(tmp_path):
    ents = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10))
    text = minimal().replace('<?xml version="1.0" encoding="UTF-8"?>\n',
                             f'<?xml version="1.0"?>\n<!DOCTYPE Envelope [{ents}]>\n')
    text = text.replace("<Info>x</Info>", "<Info>&lol9;</Info>")
    d = write_folder(tmp_path, text)
    r = ovf("validate", d)
    assert r.returncode == 1
    assert "DOCTYPE refused" in r.stdout


def test_external_dtd_refused(tmp_path):
    text = minimal().replace('<?xml version="1.0" encoding="UTF-8"?>\n',
                             '<?xml version="1.0"?>\n<!DOCTYPE Envelope SYSTEM "http://127.0.0.1:9/x.dtd">\n')
    r = ovf("info", write_folder(tmp_path, text))
    assert r.returncode == 1 and "DOCTYPE refused" in r.stderr


def test_not_xml_and_wrong_root(tmp_path):
    r = ovf("info", write_folder(tmp_path, "<Envelope><unclosed></Envelope>"))
    assert r.returncode == 1 and "p.ovf: line 1:" in r.stderr
    r = ovf("info", write_folder(tmp_path, '<?xml version="1.0"?><html/>'))
    assert r.returncode == 1
    assert "root element is <html>, expected <Envelope>" in r.stderr


def tar_with(tmp_path, entries):
    out = tmp_path / "evil.ova"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return out


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "a/../../b",
                                  "x/.."])
def test_tar_traversal_refused(tmp_path, name):
    ova = tar_with(tmp_path, [("p.ovf", minimal().encode()), (name, b"pwned")])
    dest = tmp_path / "out" / "deeper"
    r = ovf("unpack", ova, dest)
    assert r.returncode == 1
    assert "names must be relative and must not contain \"..\"" in r.stderr
    assert not (tmp_path / "out" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert ovf("validate", ova).returncode == 1


def test_truncated_tar(tmp_path):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks, tmp_path / "t.ova")
    data = open(ova, "rb").read()
    for cut in (100, 1500, len(data) // 2):
        p = tmp_path / f"cut{cut}.ova"
        p.write_bytes(data[:cut])
        r = ovf("validate", p)
        assert r.returncode == 1
        assert f"cut{cut}.ova: truncated tar" in r.stdout


def test_corrupt_header_checksum(tmp_path):
    ova = tar_with(tmp_path, [("p.ovf", minimal().encode())])
    data = bytearray(open(ova, "rb").read())
    data[10] ^= 0x55
    ova.write_bytes(bytes(data))
    r = ovf("info", ova)
    assert r.returncode == 1
    assert "bad tar header at offset 0: checksum does not match" in r.stderr


def test_truncated_gzip_ova(tmp_path):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks, tmp_path / "g.ova", gz=True)
    data = open(ova, "rb").read()
    p = tmp_path / "gcut.ova"
    p.write_bytes(data[:len(data) // 2])
    r = ovf("info", p)
    assert r.returncode == 1
    assert "gcut.ova: gzip data ends early" in r.stderr


def test_huge_pax_and_longname_bounded(tmp_path):
    # a pax header claiming a path longer than the 1 MiB bound
    out = tmp_path / "pax.ova"
    rec = b"x" * (2 << 20)
    with open(out, "wb") as f:
        ti = tarfile.TarInfo("PaxHeaders/x")
        ti.type = tarfile.XHDTYPE
        ti.size = len(rec)
        f.write(ti.tobuf(format=tarfile.USTAR_FORMAT))
        f.write(rec)
        f.write(bytes(1024))
    r = ovf("info", out)
    assert r.returncode == 1 and "extended header at offset 0" in r.stderr


def test_no_descriptor(tmp_path):
    ova = tar_with(tmp_path, [("disk.vmdk", b"x" * 100)])
    r = ovf("info", ova)
    assert r.returncode == 1 and "no OVF descriptor (*.ovf)" in r.stderr


def test_href_outside_package(tmp_path):
    text = ovfgen.vmware_envelope([("f1", "../../etc/passwd", 10, None)], [],
                                  ovfgen.vmware_system("vm", []))
    d = write_folder(tmp_path, text)
    r = ovf("validate", d)
    assert r.returncode == 1
    assert 'ovf:href "../../etc/passwd" is not a relative name inside the package' in r.stdout


def test_bad_manifest_lines_and_cert(tmp_path):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    with open(os.path.join(folder, "appliance.mf"), "a") as f:
        f.write("garbage line without digest\nMD5(appliance.ovf)= 00\n")
    with open(os.path.join(folder, "appliance.cert"), "w") as f:
        f.write("SHA256(appliance.mf)= zz\nnot a certificate\n")
    r = ovf("validate", folder)
    assert r.returncode == 1
    assert "manifest line is not ALGO(name)= hex" in r.stdout
    assert "digest MD5 not supported" in r.stdout
    assert "appliance.cert: first line is not" in r.stdout or \
           "signature is not hex" in r.stdout


def _escaping_folder(tmp_path, shape):
    """A package folder whose one File reaches a host file: by an href with
    "..", through a symlinked file, or through a symlinked subfolder."""
    d = tmp_path / "pkg"
    d.mkdir()
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("HOST-SECRET\n")
    if shape == "dotdot":
        href = "../host/secret.txt"
    elif shape == "symlinked-file":
        href = "disk.vmdk"
        os.symlink(secret, d / "disk.vmdk")
    else:
        href = "sub/secret.txt"
        os.symlink(secret.parent, d / "sub")
    (d / "p.ovf").write_text(ovfgen.vmware_envelope(
        [("f1", href, None, None)], [], ovfgen.vmware_system("vm", [])))
    return d, href


@pytest.mark.parametrize("shape", ["dotdot", "symlinked-file", "symlinked-subfolder"])
def test_pack_refuses_what_validate_refuses(tmp_path, shape):
    d, href = _escaping_folder(tmp_path, shape)
    assert ovf("validate", d).returncode == 1
    out = tmp_path / "out.ova"
    r = ovf("pack", d, out)
    assert r.returncode == 1, r.stderr
    assert "References/File[@id=f1]" in r.stderr and href in r.stderr
    assert "nothing packed" in r.stderr
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out.ova")]



def _ova_with_subfolder(tmp_path):
    return tar_with(tmp_path, [("p.ovf", minimal().encode()),
                               ("sub/evil.txt", b"from the archive\n"),
                               ("top.txt", b"new top\n")])


def test_unpack_refuses_existing_folder(tmp_path):
    ova = _ova_with_subfolder(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "top.txt").write_text("kept\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dest / "sub")
    r = ovf("unpack", ova, dest)
    assert r.returncode == 1
    assert f"{dest} already exists; unpack makes a new folder" in r.stderr
    assert (dest / "top.txt").read_text() == "kept\n"
    assert os.listdir(outside) == []


def test_unpack_overwrite_never_follows_a_symlinked_folder(tmp_path):
    ova = _ova_with_subfolder(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dest / "sub")
    r = ovf("unpack", "--overwrite", ova, dest)
    assert r.returncode == 1
    assert f"{dest}/sub/evil.txt: refused" in r.stderr
    assert os.listdir(outside) == []


def test_unpack_overwrite_replaces_files_not_their_targets(tmp_path):
    ova = _ova_with_subfolder(tmp_path)
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("host file\n")
    os.symlink(victim, dest / "top.txt")         # a symlink in the way
    os.link(victim, dest / "sub" / "evil.txt")   # a hard link in the way
    r = ovf("unpack", "--overwrite", ova, dest)
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "host file\n"
    assert not os.path.islink(dest / "top.txt")
    assert (dest / "top.txt").read_text() == "new top\n"
    assert (dest / "sub" / "evil.txt").read_text() == "from the archive\n"
    assert os.stat(victim).st_nlink == 1


def _disk_package(tmp_path, content, capacity_mib):
    """A folder whose Disk declares a streamOptimized VMDK of capacity_mib
    MiB; its file holds content (bytes, or a path to an image)."""
    d = tmp_path / "pkg"
    d.mkdir()
    if isinstance(content, bytes):
        (d / "disk1.vmdk").write_bytes(content)
    else:
        os.rename(content, d / "disk1.vmdk")
    size = os.path.getsize(d / "disk1.vmdk")
    (d / "p.ovf").write_text(ovfgen.vmware_envelope(
        [("file1", "disk1.vmdk", size, None)],
        [("vmdisk1", "file1", capacity_mib, None)],
        ovfgen.vmware_system("vm", ["vmdisk1"]), units="byte * 2^20"))
    return d


def test_validate_random_bytes_declared_stream_vmdk(tmp_path):
    d = _disk_package(tmp_path, os.urandom(3 << 20), 10)
    r = ovf("validate", d)
    assert r.returncode == 1
    assert (f"error: DiskSection/Disk[@diskId=vmdisk1]: ovf:format says {ovfgen.STREAM_FMT} "
            f"but {d}/disk1.vmdk is not a VMDK (it reads as raw)") in r.stdout
    assert "invalid" in r.stdout.splitlines()[-1]


def test_validate_capacity_and_create_type_against_the_disk(tmp_path):
    need("qemu-img")
    need("qemu-io")
    # a real streamOptimized disk of 64 MiB declared as 10 MiB
    img = ovfgen.make_disk(tmp_path / "s.vmdk", "64M")
    d = _disk_package(tmp_path, img, 10)
    r = ovf("validate", d)
    assert r.returncode == 1
    assert ('ovf:capacity="10" ovf:capacityAllocationUnits="byte * 2^20" is 10485760 '
            f"bytes but {d}/disk1.vmdk holds a disk of 67108864 bytes") in r.stdout
    # the same disk declared right: valid
    os.rename(d, tmp_path / "bad")
    d = _disk_package(tmp_path, str(tmp_path / "bad" / "disk1.vmdk"), 64)
    r = ovf("validate", d)
    assert r.returncode == 0, r.stdout
    # a monolithicSparse disk is not the streamOptimized one declared
    os.rename(d, tmp_path / "good")
    img = ovfgen.make_disk(tmp_path / "m.vmdk", "64M", fmt="monolithicSparse")
    d = _disk_package(tmp_path, img, 64)
    r = ovf("validate", d)
    assert r.returncode == 1
    assert f"{d}/disk1.vmdk is a VMDK of createType monolithicSparse" in r.stdout
