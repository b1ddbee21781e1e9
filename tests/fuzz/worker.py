"""Worker process: reads case indices on stdin, answers JSON lines on its own copy of stdout.

For each index it first sends ``{"begin": i, "entry", "kind", "desc", "tags", "timeout"}`` (so the
parent knows what was running if the process then dies or hangs), then the judged outcome
``{"i": i, "outcome", "detail", "dt"}``. Anything the cases print goes to stderr (a log file the
parent keeps), never into the protocol. Address space is limited so that absurd sizes end in a
MemoryError instead of the machine swapping.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    seed, only, tmp = int(argv[0]), argv[1], argv[2]
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                  # stray prints go to the log, not the protocol
    try:
        import resource

        limit = int(os.environ.get("OPTDIFF_FUZZ_MEMORY", str(6 << 30)))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np

    import optdiff

    from .cases import Context, judge, make_case

    optdiff.set_num_threads(1)
    ctx = Context(tmp=tmp)
    only_set = set(only.split(",")) if only else None
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        i = int(line)
        t0 = time.perf_counter()
        try:
            with np.errstate(all="ignore"):
                case = make_case(seed, i, ctx, only_set)
        except Exception as exc:  # noqa: BLE001 - a harness bug is reported, not fatal
            proto.write(json.dumps({"begin": i, "entry": "?", "kind": "?", "desc": "", "tags": [], "timeout": 60}) + "\n")
            proto.write(json.dumps({"i": i, "outcome": "harness_error",
                                    "detail": f"case generation: {type(exc).__name__}: {exc}"[:600],
                                    "dt": time.perf_counter() - t0}) + "\n")
            continue
        proto.write(json.dumps({"begin": i, "entry": case.entry, "kind": case.kind, "desc": case.desc[:800],
                                "tags": list(case.tags), "timeout": case.timeout}) + "\n")
        outcome, detail = judge(case)
        try:
            optdiff.set_num_threads(1)
        except Exception:  # noqa: BLE001
            pass
        proto.write(json.dumps({"i": i, "outcome": outcome, "detail": detail[:800],
                                "dt": time.perf_counter() - t0}) + "\n")


if __name__ == "__main__":
    main()
