"""The C++ core is usable without Python: run the embedding test program."""

import os
import subprocess
from pathlib import Path

import pytest

import optdiff


def find_program():
    here = Path(__file__).resolve().parent.parent
    candidates = [Path(optdiff.__file__).resolve().parent / "bin" / "optdiff_embed_test"]
    # Several build trees may hold one: take the newest, not a stale one.
    candidates += sorted(here.glob("build/*/optdiff_embed_test"), key=lambda p: p.stat().st_mtime, reverse=True)
    if os.environ.get("OPTDIFF_EMBED_TEST"):
        candidates.insert(0, Path(os.environ["OPTDIFF_EMBED_TEST"]))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def test_cpp_program_using_the_public_header():
    prog = find_program()
    if prog is None:
        pytest.skip("optdiff_embed_test was not built (OPTDIFF_BUILD_TESTS=OFF)")
    r = subprocess.run([str(prog)], capture_output=True, text=True, timeout=120)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed, 0 failed" in r.stdout
