"""Command line of the fuzz harness: ``python -m tests.fuzz --cases 100000`` (from the repository
root) or ``python tests/fuzz/run.py --cases 100000``.

Runs cases ``start .. start+cases-1`` of run ``--seed`` on ``--workers`` subprocesses with a
progress bar, then prints a summary: outcome counts, failures per entry point, and each failure
with its one-line reproducer ``python tests/fuzz/run.py --seed S --replay I`` (which runs that one
case in this process, so a crash reproduces as a crash). Failures that match a known defect
(:mod:`fuzz.known`) are listed apart. Exit status 1 when there are unknown failures.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the fuzz package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "fuzz"
    import fuzz  # noqa: F401

from .cases import FAILURES, Context, entries, judge, make_case  # noqa: E402
from .harness import run_cases  # noqa: E402
from .known import classify  # noqa: E402


def _bar(total: int, quiet: bool):
    if quiet:
        return None
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="case", dynamic_ncols=True, smoothing=0.05)
    except ImportError:
        return None


def summarize(results: list[dict], seed: int, elapsed: float, limit: int = 40) -> tuple[str, int]:
    """(text, number of unknown failures)."""
    counts = collections.Counter(r["outcome"] for r in results)
    known = collections.Counter()
    unknown = []
    per_entry = collections.defaultdict(collections.Counter)
    for r in results:
        if r["outcome"] in FAILURES:
            name = classify(r)
            per_entry[r["entry"]][r["outcome"]] += 1
            if name:
                known[name] += 1
            else:
                unknown.append(r)
    lines = [f"fuzz run seed={seed}: {len(results)} cases in {elapsed:.1f} s "
             f"({len(results) / max(elapsed, 1e-9):.0f} cases/s)",
             "outcomes: " + ", ".join(f"{k} {counts[k]}" for k in ("ok", "clean_error") + FAILURES if counts[k]),
             "summary: crashes {crash}, hangs {hang}, NaN/Inf from finite {nonfinite}, wrong shapes {wrong_shape}, "
             "wrong values {wrong_value}, silently accepted bad inputs {accepted_bad}, valid inputs refused "
             "{rejected_good}, bad messages {bad_message}, other exceptions {bad_exception}, harness errors "
             "{harness_error}".format(**{k: counts[k] for k in FAILURES})]
    if per_entry:
        lines.append("failures per entry point:")
        for e in sorted(per_entry):
            lines.append(f"  {e}: " + ", ".join(f"{k} {v}" for k, v in sorted(per_entry[e].items())))
    if known:
        lines.append("known defects (expected until their fixes land):")
        for k, v in sorted(known.items()):
            lines.append(f"  {v:6d}  {k}")
    lines.append(f"unknown failures: {len(unknown)}")
    by_kind = collections.defaultdict(list)
    for r in unknown:
        by_kind[(r["entry"], r["outcome"])].append(r)
    shown = 0
    for (e, o), rs in sorted(by_kind.items()):
        for r in rs[:3]:
            if shown >= limit:
                break
            shown += 1
            lines.append(f"  [{o}] {r['desc'][:300]}")
            lines.append(f"      {r['detail'][:300]}")
            lines.append(f"      reproduce: python tests/fuzz/run.py --seed {seed} --replay {r['i']}")
        if len(rs) > 3:
            lines.append(f"      ... and {len(rs) - 3} more {o} in {e}")
    return "\n".join(lines), len(unknown)


def replay(seed: int, index: int, only=None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        case = make_case(seed, index, Context(tmp=tmp), only)
        print(f"case {index} of seed {seed}: {case.entry} ({case.kind}; {', '.join(case.tags) or 'no changes'})")
        print(f"  {case.desc}")
        sys.stdout.flush()
        outcome, detail = judge(case)
    print(f"  outcome: {outcome}{': ' + detail if detail else ''}")
    return 0 if outcome in ("ok", "clean_error") else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="number of cases (default 2000)")
    p.add_argument("--start", type=int, default=0, help="first case index (default 0)")
    p.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--entries", help=f"comma-separated entry points only (of: {', '.join(entries())})")
    p.add_argument("--replay", type=int, metavar="INDEX", help="run case INDEX here and print its outcome")
    p.add_argument("--json", help="write every result to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    only = set(args.entries.split(",")) if args.entries else None
    if args.replay is not None:
        return replay(args.seed, args.replay, only)
    bar = _bar(args.cases, args.quiet)
    bad = [0]

    def tick(r):
        if bar is not None:
            if r["outcome"] not in ("ok", "clean_error") and not classify(r):
                bad[0] += 1
                bar.set_postfix(unknown_failures=bad[0], refresh=False)
            bar.update(1)
    t0 = time.perf_counter()
    results = run_cases(args.seed, range(args.start, args.start + args.cases), workers=args.workers, only=only,
                        on_result=tick)
    if bar is not None:
        bar.close()
    text, n_unknown = summarize(results, args.seed, time.perf_counter() - t0)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if n_unknown else 0


if __name__ == "__main__":
    sys.exit(main())
