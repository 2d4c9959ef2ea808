#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed inputs of the NBD fuzzers into corpus/ (run from this
folder; the output is committed)."""
import os
import struct

IHAVEOPT = 0x49484156454F5054


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def name(n):
    return struct.pack(">I", len(n)) + n


def req(cmd, off, length, flags=0, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, cmd, 1, off,
                       length) + payload


def xreq(cmd, off, length, flags=0, payload=b""):
    """An extended request header (after NBD_OPT_EXTENDED_HEADERS)."""
    return struct.pack(">IHHQQQ", 0x21E41C71, flags, cmd, 1, off,
                       length) + payload


def meta(o, *queries):
    d = name(b"disk") + struct.pack(">I", len(queries))
    for q in queries:
        d += name(q)
    return opt(o, d)


go = opt(7, name(b"disk") + struct.pack(">H", 2) + struct.pack(">HH", 1, 3))
flags = struct.pack(">I", 3)
reqs = (req(0, 0, 4096) + req(1, 4096, 16, 1, b"x" * 16) + req(3, 0, 0) +
        req(4, 0, 65536) + req(6, 0, 65536, 2) + req(5, 0, 4096) +
        req(7, 0, 1 << 20, 8) + req(0, 1 << 30, 1) + req(2, 0, 0))
PAYLOAD_LEN = 1 << 5
xreqs = (xreq(0, 0, 4096) + xreq(1, 4096, 16, 1 | PAYLOAD_LEN, b"x" * 16) +
         xreq(3, 0, 0) + xreq(4, 0, 5 << 30) + xreq(6, 0, 6 << 30, 2) +
         xreq(5, 0, 1 << 33) + xreq(7, 0, 1 << 40, 8) +
         xreq(4, 0, 3, PAYLOAD_LEN, b"abc") + xreq(1, 0, 4) +
         xreq(0, 0, 2 ** 64 - 1) + xreq(2, 0, 0))
seeds = {
    "fuzz_nbd_handshake": {
        "export_name": b"\0" + flags + opt(1, b"disk") + reqs,
        "go_structured_meta": b"\0" + flags + opt(8) +
        meta(10, b"base:allocation", b"qemu:allocation-depth") + go + reqs,
        "list_info_abort": b"\0" + flags + opt(3) + opt(6, name(b"disk") +
                                                        b"\0\0") + meta(9, b"qemu:") + opt(2),
        "tls_required": b"\1" + flags + opt(3) + opt(5) + opt(1, b""),
        "read_only": b"\2" + flags + go + req(1, 0, 4, 0, b"abcd") + reqs,
        "extended": b"\0" + flags + opt(11) + opt(8) +
        meta(10, b"base:allocation") + go + xreqs,
        "extended_bad": b"\0" + flags + opt(11, b"?") + opt(11) +
        opt(11) + go + xreq(1, 0, 64 << 20, PAYLOAD_LEN),
        "extended_export_name": b"\0" + flags + opt(11) + opt(1, b"disk"),
        "bad_lengths": b"\0" + flags + opt(6, struct.pack(">I", 9999)) +
        opt(10, b"\0\0\0\0\xff\xff\xff\xff") + opt(99, b"?") + go,
    },
    "fuzz_nbd_request": {
        "mixed": b"".join(bytes([s]) + req(c, o, n, f)[:28] + b"\0" * 4 for s, c, o, n, f in [
            (0, 0, 0, 4096, 0), (1, 0, 0, 4096, 4), (3, 7, 0, 512, 8),
            (4, 1, 0, 512, 1), (0, 6, 1 << 30, 1, 16), (0, 0, 2 ** 64 - 1, 2, 0),
            (0, 1, 0, 64 << 20, 0), (0, 99, 0, 0, 0), (0, 2, 0, 0, 0)]),
        "extended": b"".join(bytes([s]) + xreq(c, o, n, f) for s, c, o, n, f in [
            (8, 0, 0, 4096, 0), (8, 1, 0, 512, PAYLOAD_LEN),
            (8, 1, 0, 512, 0), (10, 7, 0, 1 << 40, 8),
            (8, 4, 0, 5 << 30, 0), (8, 6, 0, 6 << 30, 2),
            (8, 5, 0, 1 << 33, 0), (8, 4, 0, 3, PAYLOAD_LEN),
            (12, 1, 0, 4, PAYLOAD_LEN), (8, 0, 0, 1 << 33, 0),
            (8, 0, 2 ** 64 - 1, 2, 0), (0, 4, 0, 4096, PAYLOAD_LEN)]),
    },
}
for h, files in seeds.items():
    os.makedirs(os.path.join("corpus", h), exist_ok=True)
    for n, b in files.items():
        with open(os.path.join("corpus", h, n), "wb") as f:
            f.write(b)
