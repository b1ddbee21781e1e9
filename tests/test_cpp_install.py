"""`cmake --install` gives C++ projects optdiff: headers, optdiff::core and a package config.

Builds only the C++ core (no Python modules, no CUDA) into a temporary prefix once per session,
then configures, builds and runs examples/cpp_embed (find_package(optdiff) +
target_link_libraries(sim optdiff::core)) against that installed copy. Skips, saying why, when
cmake, a C++ compiler or FFTW3 is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import optdiff

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


def _generator():
    return ["-G", "Ninja"] if shutil.which("ninja") else []


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        pytest.skip("no C++ compiler found")
    tmp = tmp_path_factory.mktemp("cpp_install")
    build, prefix = tmp / "build", tmp / "prefix"
    r = _run(["cmake", "-S", ROOT, "-B", build, *_generator(), "-DOPTDIFF_BUILD_PYTHON=OFF",
              "-DOPTDIFF_BUILD_TESTS=OFF", "-DOPTDIFF_CUDA=OFF", "-DOPTDIFF_INSTALL_CPP=ON",
              f"-DCMAKE_INSTALL_PREFIX={prefix}"])
    if r.returncode != 0 and "optdiff needs FFTW3" in r.stderr:
        pytest.skip("FFTW3 development files are not installed (libfftw3-dev)")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(["cmake", "--build", build, "-j", str(os.cpu_count() or 1)])
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(["cmake", "--install", build])
    assert r.returncode == 0, r.stdout + r.stderr
    return prefix


def _config_dir(prefix: Path) -> Path:
    found = list(prefix.glob("lib*/cmake/optdiff/optdiffConfig.cmake"))
    assert len(found) == 1, f"expected one optdiffConfig.cmake under {prefix}, found {found}"
    return found[0].parent


def test_install_tree_has_headers_library_and_package_config(prefix):
    for h in ("optdiff.hpp", "plan.hpp", "physics.hpp", "sampler.hpp"):
        assert (prefix / "include" / "optdiff" / h).is_file(), h
    cfg = _config_dir(prefix)
    assert list(cfg.parent.parent.glob("liboptdiff_core.*")), "the core library is not installed"
    for f in ("optdiffConfigVersion.cmake", "optdiffTargets.cmake", "FindFFTW3.cmake"):
        assert (cfg / f).is_file(), f
    # The package version is the Python package's (CMakeLists' project() VERSION must follow pyproject).
    version = re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', (cfg / "optdiffConfigVersion.cmake").read_text())
    assert version and version.group(1) == optdiff.__version__
    # Only the C++ part is installed: no Python extension modules land in the prefix.
    assert not list(prefix.rglob("_core*.so")) and not list(prefix.rglob("_jax_ffi*.so"))


def test_example_project_builds_and_runs_against_the_installed_copy(prefix, tmp_path):
    build = tmp_path / "cpp_embed"
    r = _run(["cmake", "-S", ROOT / "examples" / "cpp_embed", "-B", build, *_generator(),
              f"-DCMAKE_PREFIX_PATH={prefix}"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(["cmake", "--build", build])
    assert r.returncode == 0, r.stdout + r.stderr
    exe = build / "sim"
    r = _run([exe])
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failed" in r.stdout
    assert r.stdout.count(" ok ") == 3, r.stdout


def test_wrong_version_request_is_refused(prefix, tmp_path):
    """find_package(optdiff 9.0) must not accept 0.x (SameMinorVersion compatibility)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.24)\nproject(v LANGUAGES CXX)\nfind_package(optdiff 9.0 REQUIRED)\n")
    r = _run(["cmake", "-S", src, "-B", tmp_path / "b", f"-DCMAKE_PREFIX_PATH={prefix}"])
    assert r.returncode != 0
    assert "optdiff" in r.stderr and "9.0" in r.stderr
