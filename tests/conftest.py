# SPDX-License-Identifier: Apache-2.0
"""Shared pytest fixtures for the ovk suites.

The build directory comes from the environment variable OVK_BUILD (default
<repo>/build; a relative path is taken relative to the repository root).
`tool(name)` finds an executable of that name anywhere under the build
directory.
"""
import json
import os
import shutil
import socket
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_dir():
    d = os.environ.get("OVK_BUILD", "build")
    if not os.path.isabs(d):
        d = os.path.join(REPO, d)
    return d


_tool_cache = {}


def tool(name):
    """Path of the built executable `name` (searched recursively in the
    build directory); skips the test when it has not been built."""
    if name in _tool_cache:
        return _tool_cache[name]
    root = build_dir()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if not d.endswith(".p") and not d.startswith("meson-")]
        if name in filenames:
            p = os.path.join(dirpath, name)
            if os.access(p, os.X_OK) and os.path.isfile(p):
                _tool_cache[name] = p
                return p
    pytest.skip(f"{name} is not built in {root} (set OVK_BUILD)")


def need(program):
    """Path of a system program; skips the test (with the reason) if it is
    not installed."""
    p = shutil.which(program)
    if not p:
        pytest.skip(f"{program} is not installed")
    return p


def control_call(path, **req):
    """One request on a JSON-lines control socket (pvblk's or ovkvm's
    --api-socket); returns the decoded reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(json.dumps(req).encode() + b"\n")
        return json.loads(s.makefile().readline())


def run(cmd, check=True, **kw):
    """Run cmd (a list), capturing text output."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       **kw)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {r.returncode}\n"
            f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


@pytest.fixture(name="tool")
def tool_fixture():
    return tool


@pytest.fixture
def vmdk():
    """Path of the `vmdk` command-line tool."""
    return tool("vmdk")


@pytest.fixture
def qemu_img():
    return need("qemu-img")


@pytest.fixture
def qemu_io():
    return need("qemu-io")


def _data_ranges(path):
    """(start, end) ranges of a file that may hold data (SEEK_DATA/HOLE)."""
    out = []
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                s = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            e = os.lseek(fd, s, os.SEEK_HOLE)
            out.append((s, e))
            off = e
    return out


def first_difference(a, b):
    """None if files a and b hold the same bytes, else the first differing
    offset. Holes are skipped, so large sparse files compare quickly."""
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    ranges = sorted(_data_ranges(a) + _data_ranges(b))
    chunk = 4 << 20
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        for s, e in ranges:
            s = max(s, pos)
            while s < e:
                n = min(chunk, e - s)
                fa.seek(s)
                fb.seek(s)
                x, y = fa.read(n), fb.read(n)
                x += bytes(n - len(x))
                y += bytes(n - len(y))
                if x != y:
                    for i in range(n):
                        if x[i] != y[i]:
                            return s + i
                s += n
            pos = max(pos, e)
    if sa != sb:
        return min(sa, sb)
    return None


def assert_same_file(a, b):
    d = first_difference(a, b)
    assert d is None, f"{a} and {b} differ at offset {d}"
