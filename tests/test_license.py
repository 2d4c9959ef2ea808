# SPDX-License-Identifier: Apache-2.0
"""Every source file says its license (SPDX), and the license is there."""
import os
import re
import subprocess

from conftest import REPO

TAG = "SPDX-License-Identifier: Apache-2.0"
SOURCE = re.compile(r"\.(c|h|py|sh|map)$|(^|/)meson\.build$|"
                    r"^meson_options\.txt$|^\.ci/")


def test_every_source_file_has_an_spdx_line():
    files = subprocess.run(["git", "-C", REPO, "ls-files"],
                           capture_output=True, text=True,
                           check=True).stdout.split()
    sources = [f for f in files if SOURCE.search(f) and "/corpus/" not in f]
    assert len(sources) > 100
    missing = []
    for f in sources:
        with open(os.path.join(REPO, f), errors="replace") as fh:
            head = "".join(fh.readline() for _ in range(3))
        if TAG not in head:
            missing.append(f)
    assert not missing, f"no '{TAG}' in the first 3 lines of: {missing}"


def test_license_file_is_apache_2():
    with open(os.path.join(REPO, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
