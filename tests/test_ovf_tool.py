# SPDX-License-Identifier: Apache-2.0
"""`ovf info|validate|pack|unpack` on packages shaped like real producers'
(VMware OVF 1.x, VirtualBox OVF 2.0, OVF 0.9, collections), manifests in
every spelling, signatures, and tar variants (ustar, GNU, pax, gzip'd)."""
import json
import os
import subprocess
import tarfile

import pytest

import ovfgen
from conftest import need, run, tool


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-img")
    need("qemu-io")


def ovf(*args, check=True):
    return run([tool("ovf")] + list(args), check=check)


def info_json(pkg):
    return json.loads(ovf("info", "--output=json", pkg).stdout)


@pytest.fixture
def vmware(tmp_path):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks,
                          tmp_path / "appliance.ova")
    return folder, desc, disks, ova


def test_info_vmware_ova_json(vmware):
    folder, desc, disks, ova = vmware
    j = info_json(ova)
    assert j["kind"] == "ova" and j["ovf_version"] == "1.x"
    assert j["disks"][0]["capacity_bytes"] == 64 << 20
    assert j["disks"][0]["format"].endswith("#streamOptimized")
    assert [n["name"] for n in j["networks"]] == ["VM Network"]
    vm = j["content"]
    assert vm["id"] == "vm1" and vm["eula"] is True
    hw = vm["hardware"]
    assert hw["cpus"] == 2 and hw["memory_bytes"] == 2048 << 20
    kinds = [i["kind"] for i in hw["items"]]
    for k in ("cpu", "memory", "scsi", "sata", "ide", "disk", "cdrom",
              "nic", "serial"):
        assert k in kinds
    disk = next(i for i in hw["items"] if i["kind"] == "disk")
    assert disk["parent"] == "3" and disk["address_on_parent"] == "0"
    assert disk["disk_capacity_bytes"] == 64 << 20
    props = vm["products"][0]["properties"]
    assert props[0]["key"] == "hostname" and props[0]["user_configurable"]
    assert {"name": "BootOrderSection", "required": False,
            "namespace": "http://www.vmware.com/schema/ovf"} in vm["other_sections"]
    assert j["verify"]["digests_ok"] is True
    assert j["verify"]["signature"] == "none"


def test_info_text_names_everything(vmware):
    out = ovf("info", vmware[3]).stdout
    assert "cpus: 2, memory: 2.0 GiB" in out
    assert "vmdisk1 capacity 64.0 MiB" in out
    assert "property appliance.hostname = appliance" in out
    assert "eula: yes" in out
    assert "manifest: all digests match" in out


def test_validate_vmware_folder_and_ova(vmware):
    folder, desc, disks, ova = vmware
    for pkg in (folder, os.path.join(folder, desc), ova):
        r = ovf("validate", pkg)
        assert "valid (0 errors" in r.stdout


def vbox_folder(tmp_path):
    folder = tmp_path / "vbox"
    folder.mkdir()
    ovfgen.make_disk(folder / "vbox-disk001.vmdk", "32M")
    desc = ovfgen.vbox_envelope("vbox-disk001.vmdk", None, 32 << 20)
    (folder / "vbox.ovf").write_text(desc)
    ovfgen.write_manifest(str(folder), "vbox.mf", ["vbox.ovf", "vbox-disk001.vmdk"])
    return folder


def test_virtualbox_ovf2(tmp_path):
    folder = vbox_folder(tmp_path)
    ova = ovfgen.make_ova(str(folder), ["vbox.ovf", "vbox-disk001.vmdk", "vbox.mf"],
                          tmp_path / "vbox.ova")
    j = info_json(ova)
    assert j["ovf_version"] == "2.x"
    hw = j["content"]["hardware"]
    assert hw["memory_bytes"] == 1024 << 20 and hw["cpus"] == 1
    nic = next(i for i in hw["items"] if i["kind"] == "nic")
    assert nic["connection"] == "NAT"
    disk = next(i for i in hw["items"] if i["kind"] == "disk")
    assert disk["host_resource"] == "/disk/vmdisk1"
    assert any(i["kind"] == "sata" for i in hw["items"])
    assert any(o["name"] == "Machine" and not o["required"]
               for o in j["content"]["other_sections"])
    r = ovf("validate", ova)
    assert "valid (0 errors" in r.stdout


def test_ovf09(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    ovfgen.make_disk(folder / "old.vmdk", "16M", fmt="monolithicSparse")
    size = os.path.getsize(folder / "old.vmdk")
    (folder / "old.ovf").write_text(ovfgen.ovf09_envelope("old.vmdk", size, 16 << 20))
    j = info_json(str(folder))
    assert j["ovf_version"] == "0.9"
    assert j["content"]["id"] == "old-vm"
    assert j["content"]["hardware"]["memory_bytes"] == 256 << 20
    assert j["disks"][0]["capacity_bytes"] == 16 << 20
    assert j["networks"][0]["name"] == "bridged"
    r = ovf("validate", str(folder))
    assert "valid (0 errors" in r.stdout  # no manifest: only a warning


def test_collection_two_systems(tmp_path):
    folder = tmp_path / "coll"
    folder.mkdir()
    for i in (1, 2):
        ovfgen.make_disk(folder / f"d{i}.vmdk", "8M")
    files = [(f"file{i}", f"d{i}.vmdk", os.path.getsize(folder / f"d{i}.vmdk"), None)
             for i in (1, 2)]
    disks = [(f"vmdisk{i}", f"file{i}", 8, None) for i in (1, 2)]
    systems = ("  <VirtualSystemCollection ovf:id=\"vapp\">\n"
               "    <Info>A vApp</Info>\n"
               "    <StartupSection><Info>Startup order</Info>"
               "<Item ovf:id=\"web\" ovf:order=\"0\"/></StartupSection>\n"
               + ovfgen.vmware_system("web", ["vmdisk1"], product=False, eula=False)
               + ovfgen.vmware_system("db", ["vmdisk2"], product=False, eula=False)
               + "  </VirtualSystemCollection>\n")
    (folder / "vapp.ovf").write_text(
        ovfgen.vmware_envelope(files, disks, systems, units="byte * 2 ^ 20"))
    j = info_json(str(folder))
    c = j["content"]
    assert c["type"] == "VirtualSystemCollection"
    assert [s["id"] for s in c["systems"]] == ["web", "db"]
    assert j["disks"][1]["capacity_bytes"] == 8 << 20
    assert "valid (0 errors" in ovf("validate", str(folder)).stdout


@pytest.mark.parametrize("algo,spaced,crlf", [
    ("SHA1", False, False), ("SHA256", True, False),
    ("SHA512", False, True), ("SHA256", True, True)])
def test_manifest_spellings(tmp_path, algo, spaced, crlf):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), manifest=False)
    ovfgen.write_manifest(folder, "appliance.mf", [desc] + disks, algo, spaced, crlf)
    j = info_json(folder)
    assert j["verify"]["digests_ok"] is True
    assert {d["algorithm"] for d in j["verify"]["digests"]} == {algo}
    assert "valid (0 errors" in ovf("validate", folder).stdout


def test_manifest_mismatch_names_file(vmware, tmp_path):
    folder, desc, disks, _ = vmware
    with open(os.path.join(folder, disks[0]), "r+b") as f:
        f.seek(1000)
        f.write(b"X")
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    assert f"appliance.mf:{disks[0]}: SHA256 digest mismatch" in r.stdout


def test_manifest_missing_and_extra(tmp_path):
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), manifest=False)
    # lists a file that is absent, omits the disk
    ovfgen.write_manifest(folder, "appliance.mf", [desc], "SHA256")
    with open(os.path.join(folder, "appliance.mf"), "a") as f:
        f.write("SHA256(gone.vmdk)= " + "0" * 64 + "\n")
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    assert "appliance.mf:gone.vmdk: listed in the manifest but not in the package" in r.stdout
    assert f"appliance.mf:{disks[0]}: in the package but not in the manifest" in r.stdout


def test_signed_package_and_tampered(tmp_path):
    need("openssl")
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path))
    key, crt = ovfgen.make_cert(str(tmp_path))
    ovfgen.sign(folder, "appliance.mf", "appliance.cert", key, crt)
    j = info_json(folder)
    v = j["verify"]
    assert v["signature"] == "verified"
    assert "CN=Appliance Signer" in v["cert_subject"]
    assert v["cert_time_valid"] and v["cert_self_signed"]
    assert "valid (0 errors" in ovf("validate", folder).stdout
    # tamper with the manifest (and make the digests agree with a change)
    desc_path = os.path.join(folder, desc)
    with open(desc_path, "a") as f:
        f.write("<!-- changed -->\n")
    ovfgen.write_manifest(folder, "appliance.mf", [desc] + disks)
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    assert "appliance.cert: appliance.cert: the SHA256 signature does not match appliance.mf" in r.stdout
    assert info_json(folder)["verify"]["signature"] == "bad"


def test_dangling_references(vmware):
    folder, desc, disks, _ = vmware
    p = os.path.join(folder, desc)
    text = open(p).read()
    text = text.replace("ovf:/disk/vmdisk1", "ovf:/disk/nosuchdisk")
    text = text.replace("<rasd:Parent>3</rasd:Parent>", "<rasd:Parent>99</rasd:Parent>", 1)
    text = text.replace('ovf:size="', 'ovf:size="1', 1)
    open(p, "w").write(text)
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    out = r.stdout
    assert ("VirtualSystem[vm1]/VirtualHardwareSection/Item[InstanceID=10]: "
            "rasd:HostResource \"ovf:/disk/nosuchdisk\" names no Disk") in out
    assert "rasd:Parent 99 is the InstanceID of no item" in out
    assert "References/File[@id=file1]: ovf:size is 1" in out


def test_schema_type_errors(vmware):
    folder, desc, disks, _ = vmware
    p = os.path.join(folder, desc)
    text = open(p).read()
    text = text.replace("<rasd:ResourceType>3</rasd:ResourceType>",
                        "<rasd:ResourceType>three</rasd:ResourceType>")
    text = text.replace('ovf:capacity="64"', 'ovf:capacity="lots"')
    open(p, "w").write(text)
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    assert 'rasd:ResourceType "three" is not an unsigned 16-bit integer' in r.stdout
    assert 'DiskSection/Disk[@diskId=vmdisk1]: ovf:capacity "lots" is not an unsigned integer' in r.stdout


def test_required_unknown_section_is_an_error(vmware):
    folder, desc, disks, _ = vmware
    p = os.path.join(folder, desc)
    text = open(p).read().replace(
        '<vmw:BootOrderSection ovf:required="false"', "<vmw:BootOrderSection")
    open(p, "w").write(text)
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    assert "section BootOrderSection {http://www.vmware.com/schema/ovf} is not understood" in r.stdout


@pytest.mark.parametrize("digest", ["sha1", "sha256", "sha512"])
def test_pack_order_and_validate(vmware, tmp_path, digest):
    folder, desc, disks, _ = vmware
    out = tmp_path / "packed.ova"
    ovf("pack", "--digest", digest, folder, out)
    names = [line.split()[-1] for line in
             run(["tar", "-tvf", out]).stdout.splitlines()]
    assert names == [desc, "appliance.mf"] + disks
    with tarfile.open(out) as t:
        mf = t.extractfile("appliance.mf").read().decode()
    assert mf.startswith(digest.upper() + "(appliance.ovf)= ")
    assert "valid (0 errors" in ovf("validate", out).stdout


def test_pack_never_replaces_and_leaves_nothing_on_failure(vmware, tmp_path):
    """pack builds OUT.tmp-* beside OUT and renames it without replacing: an
    existing OUT is refused and kept, and a failure midway (a referenced
    file unreadable) leaves neither OUT nor the temporary file."""
    folder, desc, disks, _ = vmware
    d = tmp_path / "o"
    d.mkdir()
    out = d / "packed.ova"
    out.write_bytes(b"keep me")
    r = ovf("pack", folder, out, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert out.read_bytes() == b"keep me" and os.listdir(d) == ["packed.ova"]
    out.unlink()
    ovf("pack", folder, out)
    assert os.listdir(d) == ["packed.ova"]
    assert "valid (0 errors" in ovf("validate", out).stdout
    out.unlink()
    last = os.path.join(folder, disks[-1])
    os.chmod(last, 0)
    try:
        if os.access(last, os.R_OK):  # root reads it anyway: make it a folder
            os.chmod(last, 0o644)
            os.rename(last, last + ".away")
            os.mkdir(last)
        r = ovf("pack", folder, out, check=False)
    finally:
        if os.path.isdir(last):
            os.rmdir(last)
            os.rename(last + ".away", last)
        os.chmod(last, 0o644)
    assert r.returncode == 1, r.stdout
    assert os.listdir(d) == []


def test_pack_long_names_use_pax(tmp_path):
    name = "n" * 120
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path), name=name,
                                               manifest=False)
    out = tmp_path / "long.ova"
    ovf("pack", folder, out)
    with tarfile.open(out) as t:
        assert t.getnames() == [desc, f"{name}.mf"] + disks
    assert "valid (0 errors" in ovf("validate", out).stdout


def test_unpack_round_trip(vmware, tmp_path):
    folder, desc, disks, ova = vmware
    dest = tmp_path / "out"
    ovf("unpack", ova, dest)
    for n in [desc, "appliance.mf"] + disks:
        assert open(dest / n, "rb").read() == open(os.path.join(folder, n), "rb").read()
    assert "valid (0 errors" in ovf("validate", str(dest)).stdout


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_gnu_and_pax_archives(vmware, tmp_path, fmt):
    folder, desc, disks, _ = vmware
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks,
                          tmp_path / "x.ova", fmt=fmt)
    assert "valid (0 errors" in ovf("validate", ova).stdout


def test_gzipped_ova_accepted_with_warning(vmware, tmp_path):
    folder, desc, disks, _ = vmware
    ova = ovfgen.make_ova(folder, [desc, "appliance.mf"] + disks,
                          tmp_path / "z.ova", gz=True)
    r = ovf("validate", ova)
    assert "gzip-compressed" in r.stdout and "valid (0 errors" in r.stdout
    assert info_json(ova)["kind"] == "ova+gzip"


def test_order_warnings(vmware, tmp_path):
    folder, desc, disks, _ = vmware
    ova = ovfgen.make_ova(folder, disks + [desc, "appliance.mf"], tmp_path / "o.ova")
    r = ovf("validate", ova)
    assert "the descriptor is member 2 of the OVA; it must be the first" in r.stdout


def test_member_over_8gib(tmp_path):
    """A 9 GiB flat disk member: GNU base-256 and pax size headers, built
    sparse (nothing near 9 GiB is written)."""
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        size = 9 << 30
        desc = ovfgen.vmware_envelope(
            [("file1", "big.raw", size, None)], [("vmdisk1", "file1", 9, None)],
            ovfgen.vmware_system("big", ["vmdisk1"]), units="byte * 2^30")
        desc = desc.replace("#streamOptimized", "#monolithicFlat")
        out = tmp_path / f"big{fmt}.ova"
        with open(out, "wb") as f:
            ti = tarfile.TarInfo("big.ovf")
            data = desc.encode()
            ti.size = len(data)
            f.write(ti.tobuf(format=fmt))
            f.write(data + bytes(-len(data) % 512))
            ti = tarfile.TarInfo("big.raw")
            ti.size = size
            f.write(ti.tobuf(format=fmt))
            start = f.tell()
            f.seek(start + (8 << 30) + 12345)
            f.write(b"beyond eight gibibytes")
            f.seek(start + size)
            f.write(bytes(1024))
        j = info_json(str(out))
        assert j["disks"][0]["capacity_bytes"] == size
        assert j["files"][0]["size"] == size
        dest = tmp_path / f"unpacked{fmt}"
        ovf("unpack", out, dest)
        st = os.stat(dest / "big.raw")
        assert st.st_size == size and st.st_blocks * 512 < (64 << 20)
        with open(dest / "big.raw", "rb") as f:
            f.seek((8 << 30) + 12345)
            assert f.read(22) == b"beyond eight gibibytes"


def _drop_info(text, start_tag):
    """Removes the first Info element that follows start_tag."""
    at = text.index(start_tag)
    i = text.index("<Info>", at)
    j = text.index("</Info>", i) + len("</Info>")
    return text[:i] + text[j:]


@pytest.mark.parametrize("tag,where", [
    ("<DiskSection>", "Envelope/DiskSection: "),
    ("<NetworkSection>", "Envelope/NetworkSection: "),
    ('<VirtualSystem ovf:id="vm1">', "VirtualSystem[vm1]: "),
    ("<OperatingSystemSection", "VirtualSystem[vm1]/OperatingSystemSection[@id=101]: "),
    ("<VirtualHardwareSection>", "VirtualSystem[vm1]/VirtualHardwareSection: "),
    ("<ProductSection", "VirtualSystem[vm1]/ProductSection: "),
    ("<EulaSection>", "VirtualSystem[vm1]/EulaSection: "),
    ("<AnnotationSection", "VirtualSystem[vm1]/AnnotationSection: "),
])
def test_missing_info_in_each_section(vmware, tag, where):
    folder, desc, disks, _ = vmware
    p = os.path.join(folder, desc)
    text = open(p).read()
    line = text[:text.index(tag)].count("\n") + 1
    open(p, "w").write(_drop_info(text, tag))
    r = ovf("validate", folder, check=False)
    assert r.returncode == 1
    hits = [l for l in r.stdout.splitlines() if "Info element is missing" in l]
    assert len(hits) == 1, r.stdout
    assert where in hits[0] and hits[0].endswith("line %d" % line), hits[0]


def test_missing_info_startup_collection_and_unknown_sections(tmp_path):
    folder = tmp_path / "coll"
    folder.mkdir()
    ovfgen.make_disk(folder / "a.vmdk", "8M")
    size = os.path.getsize(folder / "a.vmdk")
    text = ovfgen.vmware_envelope(
        [("file1", "a.vmdk", size, None)],
        [("vmdisk1", "file1", 8, None)],
        '  <VirtualSystemCollection ovf:id="coll">\n'
        "    <StartupSection>\n"
        '      <Item ovf:id="vm1" ovf:order="0"/>\n'
        "    </StartupSection>\n"
        + ovfgen.vmware_system("vm1") +
        "  </VirtualSystemCollection>\n")
    text = text.replace(
        "  <DiskSection>",
        '  <FutureSection ovf:required="false"><Note>x</Note></FutureSection>\n'
        '  <vmw:VendorSection ovf:required="false"/>\n  <DiskSection>', 1)
    (folder / "c.ovf").write_text(text)
    r = ovf("validate", str(folder), check=False)
    assert r.returncode == 1
    hits = sorted(l for l in r.stdout.splitlines() if "Info element is missing" in l)
    assert len(hits) == 3, r.stdout
    assert any("Envelope/FutureSection: " in h for h in hits)
    assert any("VirtualSystemCollection[coll]: " in h for h in hits)
    assert any("VirtualSystemCollection[coll]/StartupSection: " in h for h in hits)
    assert not any("VendorSection" in h for h in hits)  # the vendor's schema


def test_every_producer_shape_has_its_infos(tmp_path):
    """The producer-shaped descriptors the tests build (VMware 1.x, VirtualBox
    2.0, OVF 0.9) raise no Info finding."""
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path / "vmw"))
    texts = [open(os.path.join(folder, desc)).read(),
             ovfgen.vbox_envelope("d.vmdk", 1, 1 << 20),
             ovfgen.ovf09_envelope("d.vmdk", 1, 1 << 20)]
    for i, t in enumerate(texts):
        d = tmp_path / ("p%d" % i)
        d.mkdir()
        (d / "x.ovf").write_text(t)
        r = ovf("validate", str(d), check=False)
        assert "Info element is missing" not in r.stdout, r.stdout


def test_pack_digests_sparse_files_in_one_pass(tmp_path):
    """pack digests each file while copying it (holes fed as zeros) and
    fills the manifest in afterwards: the digests equal hashlib's over the
    whole files, holes in the middle and at the end included."""
    import hashlib
    folder, desc, disks = ovfgen.vmware_folder(str(tmp_path / "f"))
    data = os.path.join(folder, "data.bin")
    with open(data, "wb") as f:
        f.seek(3 << 20)
        f.write(os.urandom(1 << 20))
        f.truncate(8 << 20)
    p = os.path.join(folder, desc)
    text = open(p).read().replace(
        "</References>",
        f'  <File ovf:href="data.bin" ovf:id="file9" ovf:size="{8 << 20}"/>\n  </References>', 1)
    open(p, "w").write(text)
    out = tmp_path / "p.ova"
    ovf("pack", folder, out)
    with tarfile.open(out) as t:
        mf = t.extractfile("appliance.mf").read().decode()
        names = t.getnames()
    assert names[:2] == [desc, "appliance.mf"] and "data.bin" in names
    want = {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in [desc, "data.bin"] + disks}
    got = dict((l.split("(")[1].split(")")[0], l.split("= ")[1])
               for l in mf.splitlines())
    assert got == want
    assert "valid (0 errors, 0 warnings)" in ovf("validate", out).stdout
