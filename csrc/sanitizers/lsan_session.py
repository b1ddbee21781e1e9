"""pytest plugin for `./dev sanitize`: one LeakSanitizer check after the tests, in-process.

When the interpreter exits, CPython and NumPy leave interpreter-lifetime memory unreachable on
purpose, and LSan's own exit-time check (which runs after that teardown) would report it as
leaks that are not optdiff's. So the sanitize run turns that check off
(ASAN_OPTIONS=leak_check_at_exit=0; PYTHONMALLOC=malloc makes every object a malloc block LSan
can follow) and this plugin runs LSan from an exit handler instead: after pytest has finished,
before the interpreter tears anything down. Every live object is reachable then, so what LSan
reports was really lost (by the C++ core, its bindings, or a reference leaked by them).
Loaded with `-p lsan_session`.

One exclusion: SciPy's f2py extension modules lose a few strings when they are imported
(PyFortranObject_NewAsAttr); the tests import scipy.stats lazily, so it is imported here first
with LSan paused. Nothing else is excluded.
"""

import atexit
import ctypes
import gc
import importlib
import os
import sys


def _lsan(name):
    try:
        return getattr(ctypes.CDLL(None), name)
    except AttributeError:  # not running under ASan/LSan
        return None


def pytest_sessionstart(session):
    disable, enable = _lsan("__lsan_disable"), _lsan("__lsan_enable")
    if disable is None:
        return
    disable()
    try:
        for name in ("scipy.stats",):
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    finally:
        enable()


def _check_leaks():
    check = _lsan("__lsan_do_recoverable_leak_check")
    gc.collect()
    if check():
        print("\nLeakSanitizer: memory leaked during the tests (report above)", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # too late for pytest's exit status: leave with an error right here


def pytest_unconfigure(config):
    # The check waits for the interpreter's exit handlers: then no Python frame of pytest is
    # still running. CPython 3.11 keeps running frames in mmap'd memory that LSan does not
    # scan, so a frame object owned by a running frame would look leaked.
    if _lsan("__lsan_do_recoverable_leak_check") is not None:
        atexit.register(_check_leaks)
