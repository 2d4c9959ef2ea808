# SPDX-License-Identifier: Apache-2.0
"""What a third party gets from `meson install`: the library found through
pkg-config, an example program built against it alone, and a man page for
every program whose options all exist."""
import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from conftest import REPO, build_dir, need, run, tool

PAGES = {  # man page -> (program's file in the build, subcommands)
    "vmdk.1": ("blockengine/tools/vmdk",
               ["create", "check", "info", "convert", "map", "compare",
                "snapshot create", "commit", "checkpoint", "resize",
                "bench"]),
    "vmdkfs.1": ("vmdkfs/vmdkfs", []),
    "ovf.1": ("ovffs/ovf", ["create"]),
    "ovffs.1": ("ovffs/ovffs", []),
    "pvblk.8": ("pvblk/pvblk", []),
    "ovkdisk.1": ("livedisk/ovkdisk", []),
    "ovkvm.1": ("hypervisor/ovkvm", []),
    "ovkd.8": ("mgmt/ovkd", []),
    "ovkctl.1": ("mgmt/ovkctl", []),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The build installed into a fresh DESTDIR; returns (destdir, prefix)."""
    dest = tmp_path_factory.mktemp("destdir")
    run(["meson", "install", "-C", build_dir(), "--destdir", dest,
         "--quiet"])
    opts = json.loads(run(["meson", "introspect", build_dir(),
                           "--buildoptions"]).stdout)
    prefix = next(o["value"] for o in opts if o["name"] == "prefix")
    return dest, prefix, opts


def test_pkg_config_finds_blockengine(installed):
    dest, prefix, _ = installed
    need("pkg-config")
    pcs = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs
           if f == "blockengine.pc"]
    assert len(pcs) == 1, pcs
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]),
               PKG_CONFIG_SYSROOT_DIR=str(dest))
    out = run(["pkg-config", "--cflags", "--libs", "blockengine"],
              env=env).stdout
    assert f"-I{dest}{prefix}/include" in out
    assert "-lblockengine" in out
    assert os.path.isfile(f"{dest}{prefix}/include/blockengine.h")


EXAMPLES = {  # example -> pkg-config packages it needs
    "disk-cat": ["blockengine"],
    "backup-hash": ["blockengine", "libcrypto"],
    "stream-to-vmdk": ["blockengine"],
    "scan-signature": ["blockengine"],
    "nbd-changed": ["libnbd"],
}


@pytest.fixture(scope="module")
def examples(installed, tmp_path_factory):
    """Every example built against the installed copy with nothing but
    pkg-config's flags, as C11 with warnings as errors; each also compiles
    as C++. Returns {name: path of the program}."""
    dest, prefix, opts = installed
    pc = next(os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs
              if f == "blockengine.pc")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc),
               PKG_CONFIG_SYSROOT_DIR=str(dest))
    sanitize = next(o["value"] for o in opts if o["name"] == "b_sanitize")
    extra = [] if sanitize == "none" else [f"-fsanitize={sanitize}"]
    out = tmp_path_factory.mktemp("examples")
    built = {}
    for name, pkgs in EXAMPLES.items():
        src = os.path.join(REPO, "examples", name + ".c")
        cflags = run(["pkg-config", "--cflags", *pkgs], env=env).stdout.split()
        libs = run(["pkg-config", "--libs", *pkgs], env=env).stdout.split()
        rpath = [f"-Wl,-rpath,{f[2:]}" for f in libs if f.startswith("-L")]
        exe = out / name
        run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *extra, src,
             *cflags, *libs, *rpath, "-o", exe])
        run(["g++", "-x", "c++", "-std=c++20", "-Wall", "-Wextra", "-Werror",
             *cflags, "-c", src, "-o", out / (name + ".o")])
        built[name] = str(exe)
    return built


def test_header_compiles_as_cxx(installed, tmp_path):
    dest, prefix, _ = installed
    src = tmp_path / "t.cpp"
    src.write_text("#include <blockengine.h>\n"
                   "int main() { bdev_open_opts o{}; return o.flags; }\n")
    run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror",
         f"-I{dest}{prefix}/include", "-c", src, "-o", tmp_path / "t.o"])


def _raw_with_data(path, size=8 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(0, size, 3 << 20):
            f.seek(i)
            f.write(os.urandom(70000))
    return open(path, "rb").read()


def _exe_env():
    return dict(os.environ, ASAN_OPTIONS="detect_leaks=1")


def test_disk_cat_reads_a_vmdk(examples, tmp_path, qemu_img):
    raw = tmp_path / "src.raw"
    data = _raw_with_data(raw)
    img = tmp_path / "disk.vmdk"
    run([qemu_img, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         raw, img])
    out = tmp_path / "out.raw"
    with open(out, "wb") as f:
        subprocess.run([examples["disk-cat"], img], stdout=f, check=True,
                       env=_exe_env())
    assert out.read_bytes() == data
    # the copy stays sparse: less is allocated than the disk's size
    assert os.stat(out).st_blocks * 512 < (8 << 20)


def test_backup_hash_lists_and_hashes_every_allocated_byte(examples,
                                                           tmp_path,
                                                           qemu_img):
    raw = tmp_path / "src.raw"
    data = _raw_with_data(raw)
    base = tmp_path / "base.vmdk"
    run([qemu_img, "convert", "-O", "vmdk", raw, base])
    top = tmp_path / "top.vmdk"   # a delta: data in both layers
    run([qemu_img, "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk",
         "top.vmdk"], cwd=tmp_path)
    run([need("qemu-io"), "-f", "vmdk", "-c", "write -P 0x7e 5M 8k", top])
    data = bytearray(data)
    data[5 << 20:(5 << 20) + 8192] = b"\x7e" * 8192
    out = run([examples["backup-hash"], top], env=_exe_env()).stdout
    covered = bytearray(len(data))
    for line in out.splitlines():
        off, ln, digest = line.split()
        off, ln = int(off), int(ln)
        assert hashlib.sha256(data[off:off + ln]).hexdigest() == digest
        covered[off:off + ln] = b"\x01" * ln
    # every byte outside the listed ranges is zero
    assert all(b == 0 for b, c in zip(data, covered) if not c)
    assert sum(covered) < len(data)  # and holes were skipped


def test_stream_to_vmdk_writes_what_the_stream_held(examples, tmp_path,
                                                    qemu_img):
    raw = tmp_path / "src.raw"
    _raw_with_data(raw)
    out = tmp_path / "out.vmdk"
    with open(raw, "rb") as f:
        subprocess.run([examples["stream-to-vmdk"], "8M", out], stdin=f,
                       check=True, env=_exe_env())
    run([qemu_img, "compare", "-f", "raw", raw, out])
    run([qemu_img, "check", out])
    info = run([qemu_img, "info", out]).stdout
    assert "streamOptimized" in info
    # a bad size is refused, and nothing is left
    r = run([examples["stream-to-vmdk"], "8X", tmp_path / "bad.vmdk"],
            check=False, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and not (tmp_path / "bad.vmdk").exists()


def test_scan_signature_finds_every_copy(examples, tmp_path, qemu_img):
    img = tmp_path / "disk.vmdk"
    run([qemu_img, "create", "-f", "vmdk", img, "16M"])
    sig = "OVK-TEST-SIGNATURE-1234567890"
    where = [4096, (2 << 20) - 10, (9 << 20) + 7]  # one spans two chunks
    raw = tmp_path / "pattern"
    raw.write_text(sig)
    for off in where:
        run([need("qemu-io"), "-f", "vmdk", "-c",
             f"write -s {raw} {off} {len(sig)}", img])
    out = run([examples["scan-signature"], img, sig], env=_exe_env()).stdout
    assert sorted(int(x) for x in out.split()) == where


def test_nbd_changed_reads_pvblk_with_libnbd(examples, tmp_path, qemu_img):
    """The libnbd example against pvblk: base:allocation as nbdinfo sees
    it, and a checkpoint's dirty bitmap after a write through NBD."""
    img = tmp_path / "disk.vmdk"
    run([qemu_img, "create", "-f", "vmdk", img, "16M"])
    run([need("qemu-io"), "-f", "vmdk", "-c", "write 1M 128k", img])
    run([tool("vmdk"), "checkpoint", "create", img, "c1"])
    sock = tmp_path / "nbd.sock"
    srv = subprocess.Popen([tool("pvblk"), "-o", "rw", "--nbd",
                            f"unix:{sock}", img], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        url = f"nbd+unix:///?socket={sock}"
        run([need("qemu-io"), "-f", "raw", "-c", "write 8M 4k", url])
        ex = examples["nbd-changed"]
        alloc = run([ex, url, "base:allocation"], env=_exe_env()).stdout
        ref = json.loads(run([need("nbdinfo"), "--json", "--map", url]).stdout)
        assert [tuple(map(int, l.split())) for l in alloc.splitlines()] == \
            [(e["offset"], e["length"], e["type"]) for e in ref]
        dirty = run([ex, url, "qemu:dirty-bitmap:c1"], env=_exe_env()).stdout
        changed = [tuple(map(int, l.split())) for l in dirty.splitlines()
                   if l.split()[2] == "1"]
        assert changed == [(8 << 20, 65536, 1)]
        r = run([ex, url, "qemu:dirty-bitmap:nope"], check=False,
                env=_exe_env())
        assert r.returncode == 1 and "does not offer" in r.stderr
    finally:
        srv.terminate()
        srv.wait(timeout=20)


def _options(text):
    """Every option a help text documents in its option list: the leading
    '-x, --long[=ARG]' words of an indented line (examples and prose, which
    name other programs' options too, are not read)."""
    found = set()
    in_examples = False
    for line in text.splitlines():
        if line and not line[0].isspace():
            in_examples = line.lower().startswith("example")
        if in_examples:
            continue
        m = re.match(r"\s+((?:--?[A-Za-z][\w-]*(?:[= ][A-Z|a-z.\[\]]+)?"
                     r"(?:, | \| |\s*$)?)+)", line)
        if not m or not line.strip().startswith("-"):
            continue
        found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)",
                                m.group(1)))
    return sorted(found)


REJECTED = re.compile(r"unrecognized option|invalid option|unknown option",
                      re.I)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_man_page_installed_and_its_options_exist(installed, page):
    """The installed page renders, and each option it documents is one the
    program accepts: given alone, it is never refused as unknown."""
    dest, prefix, _ = installed
    section = page.rsplit(".", 1)[1]
    path = f"{dest}{prefix}/share/man/man{section}/{page}"
    assert os.path.isfile(path), path
    text = run([need("man"), "-l", "-P", "cat", path],
               env=dict(os.environ, MANWIDTH="100")).stdout
    assert "NAME" in text and "DESCRIPTION" in text
    prog, subs = PAGES[page]
    prog = os.path.join(build_dir(), prog)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    checked = 0
    for words in [[]] + [s.split() for s in subs]:
        helptext = run([prog, *words, "--help"], check=False, env=env)
        helptext = helptext.stdout or helptext.stderr
        for opt in _options(helptext):
            # no positional arguments: every command refuses to act, but
            # an unknown option is named as such before that
            r = run([prog, *words, opt], check=False, env=env,
                    stdin=subprocess.DEVNULL, timeout=30)
            assert not REJECTED.search(r.stderr), \
                f"{page}: {' '.join(words)} {opt} is documented but " \
                f"refused: {r.stderr.strip()}"
            checked += 1
    assert checked >= 3, f"{page}: found only {checked} options"
