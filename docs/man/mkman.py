#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Render a program's --help texts as a man page (roff) on standard output.

Usage: mkman.py PROGRAM NAME SECTION "SUMMARY" [SUBCOMMAND ...]

The --help text is the one source: the page holds it and, for each
SUBCOMMAND (words separated by spaces, e.g. "snapshot create"), the text of
`PROGRAM SUBCOMMAND --help`, so the two can never disagree. Lines that end
with a colon at the left margin become subsection headings; everything else
is kept as written, in no-fill mode, as the terminal shows it.
"""
import datetime
import os
import subprocess
import sys


def help_text(argv):
    """The text argv prints for --help (stdout, or stderr if stdout is
    empty: some tools print usage there)."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.run(argv + ["--help"], capture_output=True, text=True,
                       env=env, timeout=30)
    out = p.stdout if p.stdout.strip() else p.stderr
    if not out.strip():
        sys.exit(f"mkman: {' '.join(argv)} --help printed nothing")
    return out


def escape(line):
    """Roff-safe text: backslashes doubled, leading dots and quotes
    guarded, hyphens of options kept as ASCII minus."""
    line = line.replace("\\", "\\e").replace("-", "\\-")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def body(text):
    """The help text as roff: headings (a line ending in ':' at column 0
    that is not a usage line) as .SS, the rest verbatim."""
    out = [".nf"]
    for line in text.rstrip("\n").split("\n"):
        if (line and not line[0].isspace() and line.endswith(":")
                and not line.lower().startswith("usage")):
            out += [".fi", ".SS " + escape(line[:-1]), ".nf"]
        elif not line.strip():
            out.append("")
        else:
            out.append(escape(line))
    out.append(".fi")
    return out


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    prog, name, section, summary = sys.argv[1:5]
    subs = sys.argv[5:]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
            .date() if epoch else datetime.date.today())
    page = [
        f'.TH {name.upper()} {section} "{date.isoformat()}" "ovk" '
        '"Open Virtualization Kit"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary)}",
        ".SH DESCRIPTION",
    ]
    page += body(help_text([prog]))
    if subs:
        page.append(".SH COMMANDS")
        for sub in subs:
            words = sub.split()
            page.append(".SS " + escape(f"{name} {sub}"))
            page += body(help_text([prog] + words))
    page += [
        ".SH SEE ALSO",
        escape("vmdk(1), vmdkfs(1), ovf(1), ovffs(1), pvblk(8), ovkvm(1), ovkd(8), "
               "qemu-img(1)"),
        ".PP",
        "The ovk documentation: README.md and docs/ARCHITECTURE.md.",
    ]
    sys.stdout.write("\n".join(page) + "\n")


main()
