# SPDX-License-Identifier: Apache-2.0
"""vmdkgen: build VMDK images byte by byte from the documented format.

An independent writer for tests: it knows exactly what it stored, so a
reader can be checked against it. Layouts follow VMware's Virtual Disk
Format 5.0 document (hosted sparse "KDMV" extents, streamOptimized grain
records and markers, descriptors), the ESX "COWD" sparse header and the
ESXi seSparse layout QEMU reads (constant and volatile headers, u64 tables).

Every builder returns bytes; `expected(...)` gives the disk contents a
correct reader must return.
"""
import struct
import zlib

SECTOR = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF
ZERO = "zero"  # a grain value meaning "zeroed grain" (GTE = 1)

FLAG_NL_TEST = 1 << 0
FLAG_RGD = 1 << 1
FLAG_ZERO_GRAIN = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17

MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3


def _sectors(nbytes):
    return (nbytes + SECTOR - 1) // SECTOR


def _pad(b, align=SECTOR):
    return b + b"\0" * (-len(b) % align)


def descriptor(extents, create_type, cid=0x12345678, parent_cid=0xFFFFFFFF,
               parent_hint=None):
    """Descriptor text. extents: (access, sectors, type, filename, offset)
    tuples; filename None for ZERO; offset None to leave it out."""
    lines = ["# Disk DescriptorFile", "version=1", 'encoding="UTF-8"',
             f"CID={cid:08x}", f"parentCID={parent_cid:08x}",
             f'createType="{create_type}"']
    if parent_hint:
        lines.append(f'parentFileNameHint="{parent_hint}"')
    lines += ["", "# Extent description"]
    for access, sectors, typ, fname, off in extents:
        s = f"{access} {sectors} {typ}"
        if fname is not None:
            s += f' "{fname}"'
        if off is not None:
            s += f" {off}"
        lines.append(s)
    lines += ["", "# The Disk Data Base", "#DDB", "",
              'ddb.virtualHWVersion = "4"', 'ddb.adapterType = "lsilogic"',
              'ddb.geometry.cylinders = "16"', 'ddb.geometry.heads = "16"',
              'ddb.geometry.sectors = "63"', ""]
    return "\n".join(lines)


def sparse_header(capacity, grain_sectors, desc_offset, desc_size, rgd_offset,
                  gd_offset, overhead, version=1, flags=FLAG_NL_TEST | FLAG_RGD,
                  gtes_per_gt=512, unclean=0, compress=0, magic=b"KDMV"):
    """The 512-byte hosted sparse header (all sizes in sectors)."""
    h = struct.pack("<4sIIQQQQIQQQB4sH", magic, version, flags, capacity,
                    grain_sectors, desc_offset, desc_size, gtes_per_gt,
                    rgd_offset, gd_offset, overhead, unclean, b"\n \r\n",
                    compress)
    assert len(h) == 79
    return _pad(h)


def marker(num_sectors, mtype):
    return _pad(struct.pack("<QII", num_sectors, 0, mtype))


def _gd_entries(capacity, grain_sectors, gtes=512):
    per_gt = grain_sectors * gtes
    return (capacity + per_gt - 1) // per_gt


def _grain_bytes(data, grain_size):
    assert len(data) <= grain_size
    return data + b"\0" * (grain_size - len(data))


def sparse_extent(size, grains, grain_size=65536, version=1, zero_flag=None,
                  desc=None, desc_sectors=20, damage_gd=False, unclean=0,
                  header_fix=None):
    """A hosted sparse (monolithicSparse / twoGbMaxExtentSparse) extent.

    size: virtual bytes (a multiple of 512); grains: {grain index: bytes
    (<= grain_size, zero-padded) or ZERO}; desc: descriptor text to embed.
    damage_gd: the primary directory points outside the file, the
    redundant one is good. header_fix(dict) may edit header fields.
    """
    gs = grain_size // SECTOR
    capacity = size // SECTOR
    n_gd = _gd_entries(capacity, gs)
    gd_sectors = _sectors(n_gd * 4)
    gt_sectors = 4  # 512 entries * 4 bytes
    if zero_flag is None:
        zero_flag = any(v is ZERO for v in grains.values())
    flags = FLAG_NL_TEST | FLAG_RGD | (FLAG_ZERO_GRAIN if zero_flag else 0)

    desc_off = 1 if desc is not None else 0
    dsz = desc_sectors if desc is not None else 0
    rgd = 1 + dsz
    rgt = rgd + gd_sectors
    gd = rgt + n_gd * gt_sectors
    gt = gd + gd_sectors
    end_meta = gt + n_gd * gt_sectors
    overhead = (end_meta + gs - 1) // gs * gs

    gts = [[0] * 512 for _ in range(n_gd)]
    body = b""
    next_sector = overhead
    for idx in sorted(grains):
        v = grains[idx]
        if v is ZERO:
            gts[idx // 512][idx % 512] = 1
            continue
        gts[idx // 512][idx % 512] = next_sector
        body += _grain_bytes(v, grain_size)
        next_sector += gs

    fields = dict(capacity=capacity, grain_sectors=gs, desc_offset=desc_off,
                  desc_size=dsz, rgd_offset=rgd, gd_offset=gd,
                  overhead=overhead, version=version, flags=flags,
                  unclean=unclean)
    if header_fix:
        header_fix(fields)
    out = bytearray(overhead * SECTOR)
    out[0:512] = sparse_header(**fields)
    if desc is not None:
        d = desc.encode()
        assert len(d) <= dsz * SECTOR
        out[512:512 + len(d)] = d
    rgd_e = [rgt + i * gt_sectors for i in range(n_gd)]
    gd_e = [gt + i * gt_sectors for i in range(n_gd)]
    if damage_gd:
        gd_e = [0x7FFFFF00 + i for i in range(n_gd)]
    out[rgd * SECTOR:rgd * SECTOR + 4 * n_gd] = struct.pack(f"<{n_gd}I", *rgd_e)
    out[gd * SECTOR:gd * SECTOR + 4 * n_gd] = struct.pack(f"<{n_gd}I", *gd_e)
    for i, t in enumerate(gts):
        raw = struct.pack("<512I", *t)
        a = (rgt + i * gt_sectors) * SECTOR
        out[a:a + 2048] = raw
        a = (gt + i * gt_sectors) * SECTOR
        out[a:a + 2048] = raw
    return bytes(out) + body


def stream_extent(size, grains, grain_size=65536, desc=None, desc_sectors=2,
                  unknown_marker=False, cut_footer=False, level=6):
    """A streamOptimized extent as VMware writes it: header with gdOffset =
    GD_AT_END, descriptor, compressed grain records, GT marker + GT per
    table, GD marker + GD, FOOTER marker + footer, EOS marker.

    unknown_marker: a marker of unknown type 7 (one sector of payload)
    after the first grain. cut_footer: the stream ends after the grains
    (an interrupted transfer: no tables, no footer).
    """
    gs = grain_size // SECTOR
    capacity = size // SECTOR
    n_gd = _gd_entries(capacity, gs)
    flags = FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS
    dsz = desc_sectors if desc is not None else 0
    overhead = 1 + dsz

    def header(gd_offset):
        return sparse_header(capacity, gs, 1 if desc is not None else 0, dsz,
                             0, gd_offset, overhead, version=3, flags=flags,
                             compress=1)

    out = bytearray(header(GD_AT_END))
    if desc is not None:
        d = desc.encode()
        assert len(d) <= dsz * SECTOR
        out += d + b"\0" * (dsz * SECTOR - len(d))
    gts = [[0] * 512 for _ in range(n_gd)]
    first = True
    for idx in sorted(grains):
        data = _grain_bytes(grains[idx], grain_size)
        # the last grain of a disk whose size is not a grain multiple is short
        lba = idx * gs
        if (lba + gs) > capacity:
            data = data[:(capacity - lba) * SECTOR]
        c = zlib.compress(data, level)
        gts[idx // 512][idx % 512] = len(out) // SECTOR
        out += _pad(struct.pack("<QI", lba, len(c)) + c)
        if unknown_marker and first:
            out += marker(1, 7) + _pad(b"progress marker payload")
        first = False
    if cut_footer:
        return bytes(out)
    gd = [0] * n_gd
    for i, t in enumerate(gts):
        if not any(t):
            continue
        out += marker(4, MARKER_GT)
        gd[i] = len(out) // SECTOR
        out += struct.pack("<512I", *t)
    gd_sectors = _sectors(n_gd * 4)
    out += marker(gd_sectors, MARKER_GD)
    gd_at = len(out) // SECTOR
    out += _pad(struct.pack(f"<{n_gd}I", *gd))
    out += marker(1, MARKER_FOOTER)
    out += header(gd_at)
    out += marker(0, MARKER_EOS)
    return bytes(out)


def cowd_extent(size, grains, grain_size=65536, unclean=0):
    """An ESX "COWD" sparse extent (vmfsSparse): 2048-byte header, a grain
    directory, grain tables of 4096 entries, grains."""
    gs = grain_size // SECTOR
    capacity = size // SECTOR
    per_gt = 4096
    n_gd = (capacity + gs * per_gt - 1) // (gs * per_gt)
    gd = 4
    gd_sectors = _sectors(n_gd * 4)
    gt = gd + gd_sectors
    gt_sectors = per_gt * 4 // SECTOR
    first_grain = gt + n_gd * gt_sectors
    gts = [[0] * per_gt for _ in range(n_gd)]
    body = b""
    nxt = first_grain
    for idx in sorted(grains):
        gts[idx // per_gt][idx % per_gt] = nxt
        body += _grain_bytes(grains[idx], grain_size)
        nxt += gs
    hdr = bytearray(2048)
    struct.pack_into("<4sIIIIIII", hdr, 0, b"COWD", 1, 3, capacity, gs, gd,
                     n_gd, nxt)
    struct.pack_into("<III", hdr, 32, 16, 16, 63)  # root: geometry
    struct.pack_into("<I", hdr, 1060, 1)           # generation
    struct.pack_into("<I", hdr, 1636, 1)           # savedGeneration
    hdr[1648] = unclean
    out = bytearray(first_grain * SECTOR)
    out[0:2048] = hdr
    out[gd * SECTOR:gd * SECTOR + 4 * n_gd] = struct.pack(
        f"<{n_gd}I", *[gt + i * gt_sectors for i in range(n_gd)])
    for i, t in enumerate(gts):
        a = (gt + i * gt_sectors) * SECTOR
        out[a:a + per_gt * 4] = struct.pack(f"<{per_gt}I", *t)
    return bytes(out) + body


SE_GT_ENTRIES = 4096


def se_gte(cluster):
    """seSparse table entry of an allocated grain at cluster (type 3: the
    low 12 bits of the cluster in bits 48..59, the rest in bits 0..47)."""
    return (3 << 60) | ((cluster & 0xFFF) << 48) | (cluster >> 12)


def sesparse_extent(size, grains, replay_journal=0):
    """(bytes, layout) of a seSparse extent of size bytes holding grains
    ({grain index: 4096 bytes or ZERO}); 4 KiB grains, stored in index
    order. layout gives the byte offsets of "gd", "gts" (table i at gts +
    i * 32768) and "grains" (cluster c at grains + c * 4096)."""
    sectors = size // SECTOR
    n_grains = (sectors + 7) // 8
    n_gd = (n_grains + SE_GT_ENTRIES - 1) // SE_GT_ENTRIES
    gd_sectors = _sectors(n_gd * 8)
    gd, gts = 2, 2 + gd_sectors
    grains_at = gts + n_gd * 64
    body = bytearray()
    entries = [0] * (n_gd * SE_GT_ENTRIES)
    for idx in sorted(grains):
        v = grains[idx]
        if v is ZERO:
            entries[idx] = 2 << 60
            continue
        entries[idx] = se_gte(len(body) // 4096)
        body += _grain_bytes(v, 4096)
    out = bytearray(grains_at * SECTOR)
    struct.pack_into("<6Q", out, 0, 0xCAFEBABE, 0x0000000200000001, sectors,
                     8, 64, 0)
    struct.pack_into("<2Q", out, 80, 1, 1)                 # volatile header
    struct.pack_into("<2Q", out, 128, gd, gd_sectors)
    struct.pack_into("<2Q", out, 144, gts, n_gd * 64)
    struct.pack_into("<2Q", out, 192, grains_at, len(body) // SECTOR)
    struct.pack_into("<4Q", out, SECTOR, 0xCAFECAFE, n_gd, 1, replay_journal)
    struct.pack_into(f"<{n_gd}Q", out, gd * SECTOR,
                     *[(0x10000000 << 32) | i for i in range(n_gd)])
    struct.pack_into(f"<{len(entries)}Q", out, gts * SECTOR, *entries)
    layout = {"gd": gd * SECTOR, "gts": gts * SECTOR,
              "grains": grains_at * SECTOR}
    return bytes(out) + bytes(body), layout


def expected(size, grains, grain_size=65536, parent=None):
    """The disk a correct reader returns for a sparse extent holding
    grains over parent (bytes of the parent disk, or zeros)."""
    buf = bytearray(parent if parent is not None else bytes(size))
    assert len(buf) == size
    for idx, v in grains.items():
        a = idx * grain_size
        n = min(grain_size, size - a)
        if v is ZERO:
            buf[a:a + n] = bytes(n)
        else:
            buf[a:a + n] = _grain_bytes(v, grain_size)[:n]
    return bytes(buf)


def pattern(seed, n):
    """n bytes of a recognisable, non-repeating-per-sector pattern."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += struct.pack("<IIQ", seed, i, (seed * 0x9E3779B97F4A7C15 + i)
                           & 0xFFFFFFFFFFFFFFFF)
        i += 1
    return bytes(out[:n])
