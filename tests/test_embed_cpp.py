"""The C++ core is usable without Python: run the embedding test program.

The program is built with the package (OPTDIFF_BUILD_TESTS, on by default) but not installed
into the wheel; it is found in this checkout's build tree (scikit-build's build/{wheel_tag}/,
or an in-tree build such as build/dev/), or at $OPTDIFF_EMBED_TEST.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

import optdiff

ROOT = Path(__file__).resolve().parent.parent


def find_program():
    if os.environ.get("OPTDIFF_EMBED_TEST"):
        return Path(os.environ["OPTDIFF_EMBED_TEST"])
    # Several build trees may hold one: take the newest, not a stale one.
    for c in sorted(ROOT.glob("build/*/optdiff_embed_test"), key=lambda p: p.stat().st_mtime, reverse=True):
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def newest_build_tree():
    caches = sorted(ROOT.glob("build/*/CMakeCache.txt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return caches[0] if caches else None


def test_cpp_program_using_the_public_header():
    prog = find_program()
    if prog is None:
        cache = newest_build_tree()
        if cache is None:
            pytest.skip("no CMake build tree in this checkout (optdiff installed from elsewhere)")
        if re.search(r"^OPTDIFF_BUILD_TESTS:BOOL=OFF$", cache.read_text(), re.M):
            pytest.skip("optdiff_embed_test was not built (OPTDIFF_BUILD_TESTS=OFF)")
        pytest.fail(f"{cache.parent} was configured with OPTDIFF_BUILD_TESTS=ON but has no optdiff_embed_test")
    r = subprocess.run([str(prog)], capture_output=True, text=True, timeout=600)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed, 0 failed" in r.stdout


def test_test_program_is_not_installed_into_the_package():
    pkg = Path(optdiff.__file__).resolve().parent
    assert not (pkg / "bin" / "optdiff_embed_test").exists(), "the C++ test program belongs to the build tree"
