"""kill -9 at random moments of ``optdiff train`` (during checkpoint writes too), then ``--resume``.

After every kill: each checkpoint on disk loads; the next start leaves no orphan temporary file
of a dead writer; and after the last resume the loss curve, the validation log and every array
of the final checkpoint (parameters and Adam state) are bitwise those of an uninterrupted run.
"""

import csv
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import optdiff
from optdiff.diffusion.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = str(REPO / "examples" / "tiny.toml")
PKG_PARENT = str(Path(optdiff.__file__).resolve().parent.parent)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")


def _env(write_seconds=0.0):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [PKG_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env["MPLBACKEND"] = "Agg"
    if write_seconds:
        env["OPTDIFF_KILLTEST_WRITE_SECONDS"] = str(write_seconds)
    return env


class Run:
    """One ``optdiff train`` process; stderr lines are collected with their arrival times."""

    def __init__(self, args, write_seconds=0.0):
        cmd = ([sys.executable, str(HERE / "kill_helper.py")] if write_seconds
               else [sys.executable, "-m", "optdiff"])
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=_env(write_seconds), cwd=str(HERE), text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def wait_for(self, prefix, timeout=60.0):
        """Time the first stderr line starting with ``prefix`` arrived, or None at exit."""
        end = time.monotonic() + timeout
        while True:
            try:
                t, line = self.lines.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line within {timeout} s: {''.join(self.stderr)}") from None
            if line is None:
                return None
            if line.startswith(prefix):
                return t

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.finish()

    def finish(self, timeout=120):
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        self.proc.stderr.close()
        return rc


def _temporaries(folder: Path):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def _tmp_pid(name: str) -> int:
    return int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])


def _rows(path: Path, cols):
    with open(path, newline="") as f:
        return [tuple(r[c] for c in cols) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from optdiff.data import load_dataset

    x, _ = load_dataset("digits", size=12, limit=200, seed=0)
    path = tmp_path_factory.mktemp("data") / "digits12.npy"
    np.save(path, x)
    return path


def _args(out: Path, data: Path, resume: bool):
    args = ["train", "--config", TINY, "--out", str(out), "--dataset", "npy", "--data-dir", str(data),
            "--set", "optics.n=24", "--set", "diffusion.T=40", "--set", "train.steps=60",
            "--set", "train.batch=8", "--set", "train.ckpt_every=3", "--set", "train.val_every=8",
            "--set", "train.threads=1", "--set", "data.val_count=32",
            # FFTW_MEASURE picks plans by timing, so two processes may round differently: the
            # bitwise comparison across processes needs the deterministic planner
            "--planner", "estimate"]
    return args + (["--resume"] if resume else [])


TRAIN_COLS = ("step", "set", "set_step", "loss", "lr")
VAL_COLS = ("step", "set", "val_mse", "zero_mse")


def test_kill_minus_nine_then_resume_is_bitwise_an_uninterrupted_run(tmp_path, data):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = Run(_args(ref_dir, data, resume=False))
    t_start = ref.wait_for("optdiff train:")
    assert ref.finish() == 0, "".join(ref.stderr)
    train_time = time.monotonic() - t_start        # from the trainer's start line to the exit
    assert not _temporaries(ref_dir)

    rng = np.random.default_rng(20261130)
    # kill -9: during startup, at random moments of training, while a checkpoint is half written
    plan = ["write", "train", "startup", "write", "train", "write", "train"]
    ckpt = run_dir / "checkpoint.npz"
    orphans_seen = 0
    for i, mode in enumerate(plan):
        resume = ckpt.exists()
        run = Run(_args(run_dir, data, resume), write_seconds=0.6 if mode == "write" else 0.0)
        if mode == "startup":
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            started = run.wait_for("optdiff train:")
            if started is None:
                pytest.fail(f"cycle {i}: the run ended before training: {''.join(run.stderr)}")
            # the next start removed every temporary a killed writer left behind
            left = [n for n in _temporaries(run_dir) if _tmp_pid(n) != run.proc.pid]
            assert not left, f"cycle {i}: orphan temporaries after a restart: {left}"
            if mode == "write":
                if run.wait_for(f"KILLTEST write {int(rng.integers(1, 3))}") is None:
                    pytest.fail(f"cycle {i}: no checkpoint write: {''.join(run.stderr)}")
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                time.sleep(rng.uniform(0.0, 0.5) * train_time)
        rc = run.kill()
        assert rc in (-signal.SIGKILL, 0), f"cycle {i} ({mode}): exit {rc}: {''.join(run.stderr)}"
        if mode == "write":
            assert rc == -signal.SIGKILL
            orphans = [n for n in _temporaries(run_dir) if n.startswith(".checkpoint.npz.tmp-")]
            assert orphans, f"cycle {i}: killed mid-write but no temporary file was left"
            orphans_seen += 1
        if ckpt.exists():  # every checkpoint on disk loads
            load_checkpoint(ckpt)
        if rc == 0:
            break
    assert orphans_seen >= 1

    final = Run(_args(run_dir, data, resume=ckpt.exists()))
    assert final.finish() == 0, "".join(final.stderr)
    assert not _temporaries(run_dir), "orphan temporaries after the final run"

    assert _rows(run_dir / "train_log.csv", TRAIN_COLS) == _rows(ref_dir / "train_log.csv", TRAIN_COLS)
    assert _rows(run_dir / "val_log.csv", VAL_COLS) == _rows(ref_dir / "val_log.csv", VAL_COLS)
    cfg_a, arrays_a, meta_a = load_checkpoint(ref_dir / "checkpoint.npz")
    cfg_b, arrays_b, meta_b = load_checkpoint(ckpt)
    assert cfg_a == cfg_b and meta_a["step"] == meta_b["step"] == 240
    assert sorted(arrays_a) == sorted(arrays_b)
    for k in arrays_a:
        assert arrays_a[k].dtype == arrays_b[k].dtype and arrays_a[k].tobytes() == arrays_b[k].tobytes(), k


# prefixes of rows after the checkpoint (step 13) that a kill can leave, and garbage
@pytest.mark.parametrize("partial", [("1", "1"), ("13,1,3,0.25", "15,0,0.5"), ("x,y", "\x00\x00")])
def test_resume_drops_a_half_written_log_line(tmp_path, data, partial):
    """A kill can cut the logs' last line anywhere (buffered writes): resuming must not keep it."""
    from optdiff.config import load_config
    from optdiff.diffusion.trainer import Trainer

    over = ["optics.n=24", "diffusion.T=40", "train.steps=5", "train.batch=4", "train.ckpt_every=0",
            "train.val_every=5", "train.threads=1", "data.val_count=32", "data.dataset=\"npy\"",
            f"data.data_dir=\"{data}\""]
    cfg = load_config(TINY, over)
    ref = Trainer(cfg, tmp_path / "ref")
    ref.fit()
    run = Trainer(cfg, tmp_path / "run")
    run.fit(max_steps=13)                  # checkpoint at step 13 (fit saves when it stops)
    for name, text in zip(("train_log.csv", "val_log.csv"), partial):
        with open(tmp_path / "run" / name, "a", newline="") as f:
            f.write(text)                  # the start of a row the kill cut off
    Trainer(cfg, tmp_path / "run").fit(resume=True)
    for name, cols in (("train_log.csv", TRAIN_COLS), ("val_log.csv", VAL_COLS)):
        assert _rows(tmp_path / "run" / name, cols) == _rows(tmp_path / "ref" / name, cols), name
