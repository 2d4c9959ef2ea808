# SPDX-License-Identifier: Apache-2.0
"""Builders for OVF packages in the shapes real producers write.

Descriptors are written as VMware (OVF 1.x, vmw: sections), VirtualBox
(OVF 2.0, vbox: section, sasd/epasd) and pre-standard OVF 0.9 do; disks are
made with qemu-img; OVAs are built with python's tarfile (the reference
implementation, not ours); certificates with the openssl CLI.
"""
import gzip
import hashlib
import os
import subprocess
import tarfile

NS1 = "http://schemas.dmtf.org/ovf/envelope/1"
NS2 = "http://schemas.dmtf.org/ovf/envelope/2"
NS09 = "http://www.vmware.com/schema/ovf/1/envelope"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
STREAM_FMT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def sh(*cmd):
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


def make_disk(path, size="64M", fmt="streamOptimized", writes=None):
    """A VMDK (or raw when fmt='raw') with a few known patterns written by
    qemu-io. Returns path."""
    raw = str(path) + ".src.raw"
    sh("qemu-img", "create", "-q", "-f", "raw", raw, size)
    for off, pat, ln in writes or [(0, 0x11, "64k"), ("1M", 0x22, "300k"),
                                   ("5M", 0x33, "1M")]:
        sh("qemu-io", "-f", "raw", "-c", f"write -P {pat} {off} {ln}", raw)
    if fmt == "raw":
        os.rename(raw, path)
        return str(path)
    sh("qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
       f"subformat={fmt}", raw, path)
    os.unlink(raw)
    return str(path)


def _item(ns, rt, iid, name, extra=""):
    return (f"      <{ns}Item>\n"
            f"        <rasd:ElementName>{name}</rasd:ElementName>\n"
            f"        <rasd:InstanceID>{iid}</rasd:InstanceID>\n"
            f"        <rasd:ResourceType>{rt}</rasd:ResourceType>\n"
            f"{extra}"
            f"      </{ns}Item>\n")


def vmware_system(sysid="vm1", disk_ids=("vmdisk1",), network="VM Network",
                  product=True, eula=True, mem_units="byte * 2^20",
                  mem="2048"):
    """A VirtualSystem as vCenter/ovftool write it."""
    items = [
        _item("", 3, 1, "2 virtual CPU(s)",
              "        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n"
              "        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>\n"),
        _item("", 4, 2, f"{mem}MB of memory",
              f"        <rasd:AllocationUnits>{mem_units}</rasd:AllocationUnits>\n"
              f"        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>\n"),
        _item("", 6, 3, "SCSI controller 0",
              "        <rasd:Address>0</rasd:Address>\n"
              "        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>\n"),
        _item("", 20, 4, "SATA controller 0",
              "        <rasd:Address>0</rasd:Address>\n"
              "        <rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>\n"),
        _item("", 5, 5, "IDE 0", "        <rasd:Address>0</rasd:Address>\n"),
    ]
    iid = 10
    for i, d in enumerate(disk_ids):
        items.append(_item("", 17, iid, f"Hard disk {i + 1}",
                           f"        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n"
                           f"        <rasd:HostResource>ovf:/disk/{d}</rasd:HostResource>\n"
                           "        <rasd:Parent>3</rasd:Parent>\n"))
        iid += 1
    items.append(_item("", 15, iid, "CD/DVD drive 1",
                       "        <rasd:AddressOnParent>0</rasd:AddressOnParent>\n"
                       "        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>\n"
                       "        <rasd:Parent>5</rasd:Parent>\n"))
    items.append(_item("", 10, iid + 1, "Network adapter 1",
                       "        <rasd:AddressOnParent>7</rasd:AddressOnParent>\n"
                       "        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>\n"
                       f"        <rasd:Connection>{network}</rasd:Connection>\n"
                       "        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>\n"))
    items.append(_item("", 21, iid + 2, "Serial port 1", ""))
    prod = ""
    if product:
        prod = ("    <ProductSection ovf:class=\"appliance\">\n"
                "      <Info>Information about the installed software</Info>\n"
                "      <Product>Test Appliance</Product>\n"
                "      <Vendor>Example Inc.</Vendor>\n"
                "      <Version>1.2</Version>\n"
                "      <FullVersion>1.2.3-45</FullVersion>\n"
                "      <Category>Networking</Category>\n"
                "      <Property ovf:key=\"hostname\" ovf:type=\"string\" ovf:userConfigurable=\"true\" ovf:value=\"appliance\">\n"
                "        <Label>Host name</Label>\n"
                "        <Description>The host name</Description>\n"
                "      </Property>\n"
                "      <Property ovf:key=\"ip0\" ovf:type=\"string\" ovf:value=\"\"/>\n"
                "    </ProductSection>\n")
    eul = ""
    if eula:
        eul = ("    <EulaSection>\n"
               "      <Info>End User License Agreement</Info>\n"
               "      <License>You may test this appliance.\nNo warranty.</License>\n"
               "    </EulaSection>\n")
    return (f"  <VirtualSystem ovf:id=\"{sysid}\">\n"
            "    <Info>A virtual machine</Info>\n"
            f"    <Name>{sysid}</Name>\n"
            "    <OperatingSystemSection ovf:id=\"101\" vmw:osType=\"otherLinux64Guest\">\n"
            "      <Info>The kind of installed guest operating system</Info>\n"
            "      <Description>Other Linux (64-bit)</Description>\n"
            "    </OperatingSystemSection>\n"
            "    <VirtualHardwareSection>\n"
            "      <Info>Virtual hardware requirements</Info>\n"
            "      <System>\n"
            "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
            "        <vssd:InstanceID>0</vssd:InstanceID>\n"
            f"        <vssd:VirtualSystemIdentifier>{sysid}</vssd:VirtualSystemIdentifier>\n"
            "        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>\n"
            "      </System>\n"
            + "".join(items) +
            "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n"
            "    </VirtualHardwareSection>\n"
            "    <AnnotationSection ovf:required=\"false\">\n"
            "      <Info>A human-readable annotation</Info>\n"
            "      <Annotation>Built by ovfgen</Annotation>\n"
            "    </AnnotationSection>\n"
            + prod + eul +
            "    <vmw:BootOrderSection ovf:required=\"false\" vmw:type=\"disk\">\n"
            "      <Info>Virtual hardware device boot order</Info>\n"
            "    </vmw:BootOrderSection>\n"
            "  </VirtualSystem>\n")


def vmware_envelope(files, disks, systems, networks=("VM Network",),
                    units="byte * 2^30"):
    """files: [(id, href, size, extra_attrs)], disks: [(diskId, fileRef,
    capacity, populated)], systems: XML of the content element."""
    refs = "".join(
        f"    <File ovf:href=\"{href}\" ovf:id=\"{fid}\""
        + (f" ovf:size=\"{size}\"" if size is not None else "")
        + (f" {extra}" if extra else "") + "/>\n"
        for fid, href, size, extra in files)
    dks = "".join(
        f"    <Disk ovf:capacity=\"{cap}\" ovf:capacityAllocationUnits=\"{units}\""
        f" ovf:diskId=\"{did}\""
        + (f" ovf:fileRef=\"{fref}\"" if fref else "")
        + f" ovf:format=\"{STREAM_FMT}\""
        + (f" ovf:populatedSize=\"{pop}\"" if pop is not None else "")
        + "/>\n"
        for did, fref, cap, pop in disks)
    nets = "".join(
        f"    <Network ovf:name=\"{n}\">\n"
        f"      <Description>The {n} network</Description>\n"
        "    </Network>\n" for n in networks)
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<Envelope vmw:buildId=\"build-123\" xmlns=\"{NS1}\"\n"
            "  xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\"\n"
            f"  xmlns:ovf=\"{NS1}\"\n"
            f"  xmlns:rasd=\"{RASD}\"\n"
            "  xmlns:vmw=\"http://www.vmware.com/schema/ovf\"\n"
            f"  xmlns:vssd=\"{VSSD}\"\n"
            "  xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n"
            "  <References>\n" + refs + "  </References>\n"
            "  <DiskSection>\n"
            "    <Info>Virtual disk information</Info>\n" + dks +
            "  </DiskSection>\n"
            "  <NetworkSection>\n"
            "    <Info>The list of logical networks</Info>\n" + nets +
            "  </NetworkSection>\n" + systems + "</Envelope>\n")


def vbox_envelope(href, size, cap_bytes):
    """An OVF 2.0 descriptor as VirtualBox 7 exports it."""
    return f"""<?xml version="1.0"?>
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="{NS2}" xmlns:ovf="{NS2}" xmlns:rasd="{RASD}" xmlns:vssd="{VSSD}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd" xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd">
  <References>
    <File ovf:id="file1" ovf:href="{href}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{cap_bytes}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="0b0e7e0e-1111-2222-3333-444455556666"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vbox-vm">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>vbox-vm</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>1 virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>1024 MB of memory</rasd:Caption>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <EthernetPortItem>
        <epasd:AutomaticAllocation>true</epasd:AutomaticAllocation>
        <epasd:Caption>Ethernet adapter on 'NAT'</epasd:Caption>
        <epasd:Connection>NAT</epasd:Connection>
        <epasd:InstanceID>5</epasd:InstanceID>
        <epasd:ResourceSubType>E1000</epasd:ResourceSubType>
        <epasd:ResourceType>10</epasd:ResourceType>
      </EthernetPortItem>
      <StorageItem>
        <sasd:AddressOnParent>0</sasd:AddressOnParent>
        <sasd:Caption>disk1</sasd:Caption>
        <sasd:HostResource>/disk/vmdisk1</sasd:HostResource>
        <sasd:InstanceID>6</sasd:InstanceID>
        <sasd:Parent>3</sasd:Parent>
        <sasd:ResourceType>17</sasd:ResourceType>
      </StorageItem>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.19-linux" uuid="{{0b0e7e0e-1111-2222-3333-444455556666}}" name="vbox-vm">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"""


def ovf09_envelope(href, size, cap_bytes):
    """A pre-standard OVF 0.9 descriptor (VMware 2008): Section/Content with
    xsi:type."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="{NS09}" xmlns:ovf="{NS09}" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{href}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <Section xsi:type="ovf:DiskSection_Type">
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{cap_bytes}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/specifications/vmdk.html#sparse"/>
  </Section>
  <Section xsi:type="ovf:NetworkSection_Type">
    <Info>The list of logical networks</Info>
    <Network ovf:name="bridged"><Description>The bridged network</Description></Network>
  </Section>
  <Content ovf:id="old-vm" xsi:type="ovf:VirtualSystem_Type">
    <Info>A virtual machine</Info>
    <Section ovf:id="36" xsi:type="ovf:OperatingSystemSection_Type">
      <Info>The kind of installed guest operating system</Info>
    </Section>
    <Section xsi:type="ovf:VirtualHardwareSection_Type">
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <Item>
        <rasd:Caption>1 virtual CPU(s)</rasd:Caption>
        <rasd:InstanceId>1</rasd:InstanceId>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>256 MB of memory</rasd:Caption>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </Section>
  </Content>
</Envelope>
"""


def digest(path, algo="SHA256"):
    h = hashlib.new(algo.lower())
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def write_manifest(folder, mfname, names, algo="SHA256", spaced=False,
                   crlf=False):
    """A manifest in ovftool's style ("SHA256(f)= hex") or the spaced one
    ("SHA256 (f) = hex"), optionally with CRLF line ends."""
    eol = "\r\n" if crlf else "\n"
    lines = []
    for n in names:
        d = digest(os.path.join(folder, n), algo)
        lines.append(f"{algo} ({n}) = {d}" if spaced else f"{algo}({n})= {d}")
    with open(os.path.join(folder, mfname), "w", newline="") as f:
        f.write(eol.join(lines) + eol)


def make_cert(tmp, days=365):
    """A self-signed RSA key and certificate made with the openssl CLI."""
    key = os.path.join(tmp, "signer.key")
    crt = os.path.join(tmp, "signer.crt")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
       key, "-out", crt, "-days", str(days), "-subj",
       "/C=US/O=Example Inc./CN=Appliance Signer")
    return key, crt


def sign(folder, mfname, certname, key, crt, algo="sha256"):
    """ovftool's .cert: 'SHA256(x.mf)= <hex signature>' then the PEM."""
    mf = os.path.join(folder, mfname)
    r = subprocess.run(["openssl", "dgst", f"-{algo}", "-sign", key, "-hex",
                        mf], check=True, capture_output=True, text=True)
    sig = r.stdout.strip().split("= ")[-1]
    with open(crt) as f:
        pem = f.read()
    with open(os.path.join(folder, certname), "w") as f:
        f.write(f"{algo.upper()}({mfname})= {sig}\n{pem}")


def make_ova(folder, names, out, fmt=tarfile.USTAR_FORMAT, gz=False):
    """An OVA holding names (in that order) from folder."""
    opener = gzip.open(out, "wb") if gz else open(out, "wb")
    with opener as fo:
        with tarfile.open(fileobj=fo, mode="w", format=fmt) as t:
            for n in names:
                t.add(os.path.join(folder, n), arcname=n)
    return str(out)


def vmware_folder(tmp, name="appliance", disk_size="64M", sysid="vm1",
                  algo="SHA256", manifest=True, disks=1, **kw):
    """A folder as ovftool exports a VM: descriptor, streamOptimized disks,
    manifest. Returns (folder, descriptor name, [disk file names])."""
    folder = os.path.join(tmp, name)
    os.makedirs(folder, exist_ok=True)
    files, dks, dnames = [], [], []
    for i in range(disks):
        dn = f"{name}-disk{i + 1}.vmdk"
        make_disk(os.path.join(folder, dn), disk_size)
        files.append((f"file{i + 1}", dn, os.path.getsize(os.path.join(folder, dn)), None))
        dks.append((f"vmdisk{i + 1}", f"file{i + 1}",
                    _size_bytes(disk_size) >> 20, 12345))
        dnames.append(dn)
    desc = vmware_envelope(files, dks,
                           vmware_system(sysid, [d[0] for d in dks], **kw),
                           units="byte * 2^20")
    ovf = f"{name}.ovf"
    with open(os.path.join(folder, ovf), "w") as f:
        f.write(desc)
    if manifest:
        write_manifest(folder, f"{name}.mf", [ovf] + dnames, algo)
    return folder, ovf, dnames


def _size_bytes(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = str(s)
    if s[-1] in mult:
        return int(s[:-1]) * mult[s[-1]]
    return int(s)
