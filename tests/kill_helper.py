"""Runs ``python -m optdiff ...`` with slow checkpoint writes, for tests/test_kill.py.

``OPTDIFF_KILLTEST_WRITE_SECONDS``: every ``.npz`` the process writes goes out in 1 KiB chunks
spread over this many seconds, and ``KILLTEST write <n>`` is printed to stderr when write ``n``
starts, so a test can send SIGKILL while a checkpoint is half written.
Nothing else changes: the command line is optdiff's own.
"""

import io
import os
import runpy
import sys
import time

import numpy as np

_seconds = float(os.environ.get("OPTDIFF_KILLTEST_WRITE_SECONDS", "0"))
_writes = 0


def _slow(saver):
    def write(f, *args, **kw):
        global _writes
        buf = io.BytesIO()
        saver(buf, *args, **kw)
        data = buf.getvalue()
        chunks = [data[i:i + 1024] for i in range(0, len(data), 1024)]
        _writes += 1
        sys.stderr.write(f"KILLTEST write {_writes}\n")
        sys.stderr.flush()
        for c in chunks:
            f.write(c)
            f.flush()
            time.sleep(_seconds / len(chunks))
    return write


if _seconds > 0:
    np.savez = _slow(np.savez)
    np.savez_compressed = _slow(np.savez_compressed)

sys.argv = ["optdiff", *sys.argv[1:]]
runpy.run_module("optdiff", run_name="__main__", alter_sys=True)
