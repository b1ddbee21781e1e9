"""The parent side: runs case indices on worker subprocesses, catches crashes and hangs.

:func:`run_cases` keeps ``workers`` processes busy, one case each at a time (a worker runs many
cases). A worker that dies (a signal, an abort) or exceeds a case's time limit is recorded
against the case it was running (``crash`` / ``hang``), killed if needed and replaced; the run
goes on. Results are dicts: ``i, entry, kind, desc, tags, outcome, detail, dt``.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import optdiff

TESTS = Path(__file__).resolve().parents[1]
GENERATION_TIMEOUT = 120.0
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from fuzz.worker import main; main()"


def _env():
    env = dict(os.environ)
    pkg_parent = str(Path(optdiff.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "2")
    env["MPLBACKEND"] = "Agg"
    return env


class _Worker:
    def __init__(self, seed: int, only: str, root: Path, number: int):
        self.tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"w{number}-"))
        self.log = open(self.tmp.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", BOOT, str(TESTS), str(seed), only, str(self.tmp)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=_env())
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.history: list[str] = []      # what this process ran before (a crash may come later)
        self.case: int | None = None
        self.begin: dict = {}
        self.deadline = 0.0
        self.started = 0.0

    def send(self, i: int) -> None:
        self.case, self.begin = i, {}
        self.started = time.monotonic()
        self.deadline = self.started + GENERATION_TIMEOUT
        self.proc.stdin.write(f"{i}\n".encode())
        self.proc.stdin.flush()

    def lines(self):
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        return [json.loads(x) for x in done if x.strip()]

    def log_tail(self) -> str:
        try:
            self.log.flush()
            return self.tmp.with_suffix(".log").read_bytes()[-600:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, kill=False) -> None:
        if kill and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"


def run_alone(seed: int, only: str, index: int, root: Path, timeout: float = 120.0) -> str:
    """The outcome of case ``index`` run in a fresh process (``crash``/``hang`` included)."""
    w = _Worker(seed, only, root, 10**6 + index)
    try:
        w.send(index)
        end = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(w.fd, selectors.EVENT_READ)
        while time.monotonic() < end:
            if not sel.select(timeout=max(0.0, end - time.monotonic())):
                continue
            msgs = w.lines()
            if msgs is None:
                return "crash"
            for m in msgs:
                if "outcome" in m:
                    return m["outcome"]
        return "hang"
    finally:
        w.stop(kill=True)


def run_cases(seed: int, indices: Iterable[int], workers: int = 2, only: Iterable[str] | None = None,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the cases ``indices`` of run ``seed``; returns their results in index order."""
    pending = deque(indices)
    only_s = ",".join(sorted(only)) if only else ""
    root = Path(tempfile.mkdtemp(prefix="optdiff-fuzz-"))
    results: dict[int, dict] = {}
    sel = selectors.DefaultSelector()
    pool: list[_Worker] = []
    counter = [0]

    def spawn():
        w = _Worker(seed, only_s, root, counter[0])
        counter[0] += 1
        sel.register(w.fd, selectors.EVENT_READ, w)
        return w

    def finish(w: _Worker, res: dict):
        info = {"i": w.case, "entry": w.begin.get("entry", "?"), "kind": w.begin.get("kind", "?"),
                "desc": w.begin.get("desc", ""), "tags": w.begin.get("tags", [])}
        info.update(res)
        results[w.case] = info
        w.history = (w.history + [f"{w.case}: {' '.join(info['tags'])} {info['desc'][:800]}"])[-100:]
        w.case = None
        if on_result:
            on_result(info)

    def replace(w: _Worker, res: dict, kill: bool):
        sel.unregister(w.fd)
        finish(w, res)
        w.stop(kill=kill)
        pool[pool.index(w)] = nw = spawn()
        if pending:
            nw.send(pending.popleft())

    try:
        for _ in range(max(1, workers)):
            w = spawn()
            pool.append(w)
            if pending:
                w.send(pending.popleft())
        while any(w.case is not None for w in pool):
            now = time.monotonic()
            wait = max(0.0, min(w.deadline for w in pool if w.case is not None) - now)
            for key, _ in sel.select(timeout=min(wait, 5.0)):
                w = key.data
                msgs = w.lines()
                if msgs is None:                                  # the worker died
                    rc = w.proc.wait()
                    res = {"outcome": "crash", "dt": time.monotonic() - w.started,
                           "detail": f"worker died ({_signal_name(rc)}) running this case; log: {w.log_tail()}"}
                    alone = run_alone(seed, only_s, w.case, root)
                    if alone != "crash":   # memory corrupted by an earlier case of the same process
                        res.update(delayed=True, history=list(w.history), detail=res["detail"] + (
                            f"; the case alone gives {alone}: an earlier case of this process corrupted memory"))
                    replace(w, res, kill=False)
                    continue
                for m in msgs:
                    if "begin" in m:
                        w.begin = m
                        w.deadline = time.monotonic() + float(m.get("timeout", 20.0))
                    else:
                        finish(w, {k: m[k] for k in ("outcome", "detail", "dt")})
                        if pending:
                            w.send(pending.popleft())
            now = time.monotonic()
            for w in list(pool):
                if w.case is not None and now > w.deadline:
                    replace(w, {"outcome": "hang", "dt": now - w.started,
                                "detail": f"no answer within {w.deadline - w.started:.0f} s"}, kill=True)
    finally:
        for w in pool:
            try:
                sel.unregister(w.fd)
            except (KeyError, ValueError):
                pass
            w.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)
    return [results[i] for i in sorted(results)]
