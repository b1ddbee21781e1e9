"""The CUDA module links only the shared planner from csrc/, not the CPU core:
it must not load FFTW or an OpenMP runtime (cuFFT does its transforms).

Checked on the built optdiff._cuda: its NEEDED entries and undefined symbols,
and, when the CMake build tree that made it is in this checkout, its link
line (a linker with --as-needed drops unused libraries from NEEDED, so the
link line shows a stray dependency even where NEEDED does not).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"fftw3|gomp|libomp|libiomp")
FORBIDDEN_SYMBOLS = re.compile(r"^(fftwf?_|GOMP_|omp_|__kmpc_)")


def cuda_module() -> Path:
    spec = importlib.util.find_spec("optdiff._cuda")
    if spec is None or not spec.origin:
        pytest.skip("optdiff._cuda was not built (no nvcc/cuFFT, or OPTDIFF_CUDA=OFF)")
    return Path(spec.origin)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (binutils) is not installed")
    return path


def test_cuda_module_needs_no_fftw_or_openmp():
    so = cuda_module()
    dyn = subprocess.run([tool("readelf"), "-d", str(so)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    assert needed, f"readelf found no NEEDED entries in {so}:\n{dyn}"
    assert not [lib for lib in needed if FORBIDDEN.search(lib)], f"{so.name} needs {needed}"
    undefined = subprocess.run([tool("nm"), "-D", "--undefined-only", str(so)], capture_output=True, text=True,
                               check=True).stdout.split()
    assert not [s for s in undefined if FORBIDDEN_SYMBOLS.match(s)], "references FFTW or OpenMP symbols"


def newest_build_tree():
    """The build directory in this checkout with the most recently linked _cuda module, or None
    (scikit-build's is build/{wheel_tag}; install rewrites the RPATH, so the files differ)."""
    built = sorted(ROOT.glob("build/*/_cuda.*.so"), key=lambda p: p.stat().st_mtime, reverse=True)
    return built[0].parent if built else None


def test_cuda_module_link_line_has_no_fftw_or_openmp():
    cuda_module()
    tree = newest_build_tree()
    if tree is None or not (tree / "build.ninja").is_file():
        pytest.skip("the Ninja build tree of optdiff._cuda is not in this checkout")
    text = (tree / "build.ninja").read_text()
    block = re.search(r"^build _cuda\.[^:\n]*\.so: .*?(?=^build |\Z)", text, re.S | re.M)
    assert block, "no link statement for _cuda in build.ninja"
    libs = re.search(r"^\s*LINK_LIBRARIES = (.*)$", block.group(0), re.M)
    assert libs, "no LINK_LIBRARIES for _cuda in build.ninja"
    stray = [w for w in libs.group(1).split() if FORBIDDEN.search(w) or "optdiff_core" in w]
    assert not stray, f"_cuda is linked against {stray}"
