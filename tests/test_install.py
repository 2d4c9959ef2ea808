# SPDX-License-Identifier: Apache-2.0
"""What a third party gets from `meson install`: the library found through
pkg-config, an example program built against it alone, and a man page for
every program whose options all exist."""
import json
import os
import re
import subprocess

import pytest

from conftest import REPO, build_dir, need, run

PAGES = {  # man page -> (program's file in the build, subcommands)
    "vmdk.1": ("blockengine/tools/vmdk",
               ["create", "check", "info", "convert", "map", "compare",
                "snapshot create", "commit", "checkpoint", "resize",
                "bench"]),
    "vmdkfs.1": ("vmdkfs/vmdkfs", []),
    "ovf.1": ("ovffs/ovf", ["create"]),
    "ovffs.1": ("ovffs/ovffs", []),
    "pvblk.8": ("pvblk/pvblk", []),
    "ovkvm.1": ("hypervisor/ovkvm", []),
    "ovkd.8": ("mgmt/ovkd", []),
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


def test_example_builds_and_reads_a_vmdk(installed, tmp_path, qemu_img):
    """examples/disk-cat.c, compiled with nothing but pkg-config's flags
    against the installed library, reads a VMDK as qemu-img does."""
    dest, prefix, opts = installed
    pc = next(os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs
              if f == "blockengine.pc")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc),
               PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = run(["pkg-config", "--cflags", "--libs", "blockengine"],
                env=env).stdout.split()
    libdir = next(f[2:] for f in flags if f.startswith("-L"))
    sanitize = next(o["value"] for o in opts if o["name"] == "b_sanitize")
    extra = [] if sanitize == "none" else [f"-fsanitize={sanitize}"]
    exe = tmp_path / "disk-cat"
    run(["cc", "-std=gnu11", "-Wall", "-Werror", *extra,
         os.path.join(REPO, "examples", "disk-cat.c"), *flags,
         f"-Wl,-rpath,{libdir}", "-o", exe])
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
        for i in range(0, 8 << 20, 3 << 20):
            f.seek(i)
            f.write(os.urandom(70000))
    img = tmp_path / "disk.vmdk"
    run([qemu_img, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         raw, img])
    out = tmp_path / "out.raw"
    with open(out, "wb") as f:
        subprocess.run([exe, img], stdout=f, check=True,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    assert out.read_bytes() == raw.read_bytes()
    # the copy stays sparse: less is allocated than the disk's size
    assert os.stat(out).st_blocks * 512 < (8 << 20)


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
