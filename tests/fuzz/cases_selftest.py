"""Entries that check the harness itself (weight 0: only run when asked for by name): a case
that kills its process, one that hangs, and a plain one."""

from __future__ import annotations

from .cases import Case, entry


@entry("_selftest.crash", weight=0)
def gen_crash(rng, ctx):
    def call():
        import ctypes

        return ctypes.string_at(0)   # reads address 0: SIGSEGV
    return Case("_selftest.crash", "good", call, "ctypes.string_at(0)")


@entry("_selftest.hang", weight=0)
def gen_hang(rng, ctx):
    def call():
        import time

        time.sleep(3600)
    return Case("_selftest.hang", "good", call, "time.sleep(3600)", timeout=2.0)


@entry("_selftest.ok", weight=0)
def gen_ok(rng, ctx):
    x = int(rng.integers(100))
    return Case("_selftest.ok", "good", lambda: x + 1, f"{x} + 1",
                check=lambda y: None if y == x + 1 else ("wrong_value", str(y)))
