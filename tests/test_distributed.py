"""Dask: sets trained as separate tasks equal the serial trainer bitwise (also after a worker is
killed mid-set), samples are the same for any worker count, sweeps skip finished points, and bad
input (unknown or empty grid, unreachable scheduler, unwritable folder, foreign parts) gives a
message naming the problem.

One real LocalCluster with 2 worker processes (1 thread each) serves the whole module and is closed
by its fixture (clients first), so the suite's warnings-as-errors sees no shutdown warning. The FFTW
planner is set to "estimate" here and in every task: that is what makes results bitwise equal
across processes (docs/api.md, Threads).
"""

import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from helpers import squares  # noqa: E402

from optdiff import _core  # noqa: E402
from optdiff.cli import main  # noqa: E402
from optdiff.config import Config, ConfigError  # noqa: E402
from optdiff.diffusion.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from optdiff.diffusion.model import generate  # noqa: E402
from optdiff.diffusion.trainer import Trainer, load_model  # noqa: E402
from optdiff.distributed.cluster import open_client, prepare_shared_dir  # noqa: E402
from optdiff.distributed.sampling import sample_on_cluster  # noqa: E402
from optdiff.distributed.set_trainer import SetTrainer, part_path  # noqa: E402
from optdiff.distributed.sweep import read_sweep, run_sweep  # noqa: E402
from optdiff.distributed.train import existing_parts, train_on_cluster  # noqa: E402
from optdiff.optics import set_planner_effort  # noqa: E402


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    # a .npy data set: the workers need no scikit-learn import (seconds on a loaded machine)
    path = tmp_path_factory.mktemp("data") / "squares.npy"
    np.save(path, squares(96))
    return str(path)


def _cfg(data_file, **over) -> Config:
    d = {
        "optics": {"n": 24, "upsample": 2, "distance": 3e-3},
        "model": {"image_size": 8, "sets": 2},
        "diffusion": {"T": 40, "beta_end": 0.2},
        "data": {"dataset": "npy", "data_dir": data_file, "val_count": 16},
        "train": {"steps": 120, "batch": 8, "val_every": 25, "ckpt_every": 10, "progress": False, "threads": 1},
        "sample": {"count": 7, "batch": 3, "sampler": "ddpm"},
    }
    for k, v in over.items():
        sec, key = k.split("__")
        d.setdefault(sec, {})[key] = v
    return Config.from_dict(d)


@pytest.fixture(scope="module", autouse=True)
def estimate_planner():
    before = _core.get_planner_effort()
    set_planner_effort("estimate")
    yield
    _core.set_planner_effort(before)


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2, threads_per_worker=1, log=lambda msg: None) as c:
        yield c


@pytest.fixture(scope="module")
def serial(data_file, tmp_path_factory):
    """The serial trainer's run of the module's configuration: the reference."""
    out = tmp_path_factory.mktemp("serial")
    tr = Trainer(_cfg(data_file), out)
    tr.fit()
    return out


@pytest.fixture(scope="module")
def distributed_run(client, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    summary = train_on_cluster(client, _cfg(data_file), out, planner="estimate", progress=False)
    return out, summary


def _same_checkpoint(a, b):
    ca, aa, ma = load_checkpoint(a / "checkpoint.npz")
    cb, ab, mb = load_checkpoint(b / "checkpoint.npz")
    for c in (ca, cb):  # where the work ran (threads) and progress bars are not part of the result
        c["run"]["train"] = {k: v for k, v in c["run"]["train"].items() if k not in ("threads", "progress")}
    assert ca == cb and sorted(aa) == sorted(ab)
    for k in aa:  # parameters and Adam state, bit for bit
        assert aa[k].dtype == ab[k].dtype and np.array_equal(aa[k], ab[k]), k
    assert ma["rng_state"] == mb["rng_state"] and ma["step"] == mb["step"]


def _rows(path, cols):
    with open(path, newline="") as f:
        return [tuple(r[c] for c in cols) for r in csv.DictReader(f)]


# ---------------------------------------------------------------------------- one set alone
@pytest.mark.parametrize("order,distill", [("interleaved", 0), ("sequential", 0), ("interleaved", 4)])
def test_sets_trained_alone_equal_the_serial_trainer(data_file, tmp_path, order, distill):
    """No Dask: each set by itself (set 1 interrupted and resumed from its part) then assembled;
    with the distillation start too (each task distils its own set)."""
    from optdiff.distributed.assemble import assemble

    cfg = _cfg(data_file, train__order=order, train__steps=12, train__ckpt_every=5, train__val_every=7,
               train__distill_steps=distill)
    Trainer(cfg, tmp_path / "serial").fit()
    parts = tmp_path / "dist" / "parts"
    SetTrainer(cfg, part_path(parts, 0).parent, 0).run()
    first = SetTrainer(cfg, part_path(parts, 1).parent, 1)
    first.run(max_steps=9)  # stops mid-way with a part written at schedule step 9
    assert load_checkpoint(part_path(parts, 1))[2]["done"] is False
    again = SetTrainer(cfg, part_path(parts, 1).parent, 1)
    again.run()
    assert again.resumed_at == [9]
    summary = assemble(cfg.to_dict(), str(tmp_path / "dist"), planner="estimate", threads=1)
    _same_checkpoint(tmp_path / "serial", tmp_path / "dist")
    for name, cols in (("train_log.csv", ("step", "set", "set_step", "loss", "lr")),
                       ("val_log.csv", ("step", "set", "val_mse", "zero_mse"))):
        assert _rows(tmp_path / "serial" / name, cols) == _rows(tmp_path / "dist" / name, cols), name
    serial = json.loads((tmp_path / "serial" / "summary.json").read_text())
    assert summary["val_mse"] == serial["val_mse"] and summary["steps"] == serial["steps"] == 24
    assert (summary["distill_s"] > 0) == (serial["distill_s"] > 0) == (distill > 0)


# ---------------------------------------------------------------------------- on the cluster
def test_training_on_two_workers_equals_serial(serial, distributed_run):
    out, summary = distributed_run
    _same_checkpoint(serial, out)
    cols = ("step", "set", "set_step", "loss", "lr")
    assert _rows(serial / "train_log.csv", cols) == _rows(out / "train_log.csv", cols)
    assert summary["distributed"]["resumed_at"] == {}
    assert summary["val_mse"] == json.loads((serial / "summary.json").read_text())["val_mse"]


def test_rerun_reuses_finished_parts(client, data_file, distributed_run):
    out, _ = distributed_run
    before = {m: os.stat(part_path(out / "parts", m)).st_mtime_ns for m in range(2)}
    train_on_cluster(client, _cfg(data_file), out, planner="estimate", progress=False)
    assert {m: os.stat(part_path(out / "parts", m)).st_mtime_ns for m in range(2)} == before


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_killed_worker_mid_set_resumes_to_the_same_result(client, data_file, serial, tmp_path):
    cfg = _cfg(data_file)
    out = tmp_path / "killed"
    box = {}

    def run():
        try:
            box["summary"] = train_on_cluster(client, cfg, out, planner="estimate", progress=False)
        except BaseException as exc:  # reported by the main thread
            box["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    part, killed = part_path(out / "parts", 0), None
    deadline = time.monotonic() + 120
    while killed is None and th.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
        if not part.exists():
            continue
        meta = load_checkpoint(part)[2]
        if meta["done"] or meta["step"] > meta["total_steps"] // 2:
            break  # too late to kill mid-set: the test fails below rather than pass vacuously
        holders = [w for w, keys in client.processing().items() if any("optdiff-set-000" in str(k) for k in keys)]
        if holders:
            pid = client.run(os.getpid, workers=holders)[holders[0]]
            os.kill(pid, signal.SIGKILL)
            killed = (pid, meta["step"])
    th.join(180)
    assert not th.is_alive() and "error" not in box, box.get("error")
    assert killed is not None, "set 0's worker was not killed while set 0 was training"
    resumed = box["summary"]["distributed"]["resumed_at"]
    assert "0" in resumed and resumed["0"][0] >= killed[1]  # continued from a part, not from scratch
    _same_checkpoint(serial, out)
    cols = ("step", "set", "set_step", "loss", "lr")
    assert _rows(serial / "train_log.csv", cols) == _rows(out / "train_log.csv", cols)  # no row twice
    cols = ("step", "set", "val_mse", "zero_mse")
    assert _rows(serial / "val_log.csv", cols) == _rows(out / "val_log.csv", cols)


def test_local_workers_start_without_malloc_trim(client):
    # Dask's default MALLOC_TRIM_THRESHOLD_ makes every large array page-fault again each step;
    # optdiff's LocalCluster drops it and keeps the rest of Dask's worker environment
    from optdiff.distributed import cluster

    assert set(client.run(cluster._worker_env, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
    assert set(client.run(cluster._worker_env, "OMP_NUM_THREADS").values()) == {"1"}
    assert cluster._trim_hint(client) is None

    class Remote:  # a remote cluster: worker a kept Dask's default, b has the fix, c neither variable
        def __init__(self, mmap_a=None):
            self.env = {"MALLOC_TRIM_THRESHOLD_": {"tcp://a": "65536", "tcp://b": "134217728", "tcp://c": None},
                        "MALLOC_MMAP_THRESHOLD_": {"tcp://a": mmap_a, "tcp://b": "67108864", "tcp://c": None}}

        def run(self, fn, name):
            return self.env[name]

    assert cluster._trim_hint(Remote()) == cluster.TRIM_HINT
    assert cluster._trim_hint(Remote(mmap_a="67108864")) is None
    assert "MALLOC_TRIM_THRESHOLD_" in cluster.TRIM_HINT and "pre-spawn-environ" in cluster.TRIM_HINT


def test_local_environ_keeps_a_users_malloc_choice():
    import dask

    from optdiff.distributed import cluster

    key = "distributed.nanny.pre-spawn-environ"
    with dask.config.set({key: {"MALLOC_TRIM_THRESHOLD_": 65536, "OMP_NUM_THREADS": 1}}):
        assert cluster._local_environ() == {"OMP_NUM_THREADS": 1}          # Dask's default: dropped
    with dask.config.set({key: {"MALLOC_TRIM_THRESHOLD_": 1 << 27}}):
        assert cluster._local_environ() == {"MALLOC_TRIM_THRESHOLD_": 1 << 27}  # the user's value: kept
    both = {"MALLOC_TRIM_THRESHOLD_": 65536, "MALLOC_MMAP_THRESHOLD_": 1 << 26}
    with dask.config.set({key: both}):
        assert cluster._local_environ() == both


def test_samples_identical_for_any_worker_count(client, distributed_run):
    out, _ = distributed_run
    model = load_model(out / "checkpoint.npz", nthreads=1)[0]
    sc = model.cfg.sample  # 7 images in chunks of 3: the last chunk is short
    ref = generate(model.predict_eps, model.schedule, sc, sc.count, model.H)
    lines = []
    with open_client(scheduler=client.scheduler.address, log=lines.append) as other:  # --scheduler ADDRESS
        two = sample_on_cluster(other, out / "checkpoint.npz", sc, planner="estimate", progress=False)
    assert lines and lines[0].startswith("Dask dashboard: http")
    one_worker = [sorted(client.scheduler_info()["workers"])[0]]
    one = sample_on_cluster(client, out / "checkpoint.npz", sc, planner="estimate", progress=False,
                            workers=one_worker)
    assert ref.shape == (7, 8, 8)
    assert np.array_equal(two, ref) and np.array_equal(one, ref)


# ---------------------------------------------------------------------------- sweeps
def _write_sweep(path, data_file, grid="seed = [0, 1]"):
    path.write_text(f"""
samples = 4
[optics]
n = 24
upsample = 2
distance = 3e-3
[model]
image_size = 8
sets = 2
[diffusion]
T = 20
beta_end = 0.2
[data]
dataset = "npy"
data_dir = "{data_file}"
val_count = 16
[train]
steps = 3
batch = 4
val_every = 0
ckpt_every = 0
[grid]
{grid}
""")
    return path


def test_sweep_rerun_skips_finished_points(client, data_file, tmp_path):
    sweep = _write_sweep(tmp_path / "grid.toml", data_file)
    out = tmp_path / "sweep"
    first = run_sweep(client, sweep, out, planner="estimate", progress=False)
    assert (first["ran"], first["skipped"]) == (2, 0)
    results = sorted(out.glob("points/*/result.json"))
    assert len(results) == 2
    stamps = [os.stat(p).st_mtime_ns for p in results]
    table = (out / "results.csv").read_text()
    rows = list(csv.DictReader(table.splitlines()))
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert all(0 < float(r["val_mse"]) and np.isfinite(float(r["fid_pixels"])) for r in rows)
    assert "| seed |" in (out / "results.md").read_text()

    again = run_sweep(client, sweep, out, planner="estimate", progress=False)
    assert (again["ran"], again["skipped"]) == (0, 2)
    assert [os.stat(p).st_mtime_ns for p in results] == stamps  # nothing recomputed or rewritten
    assert (out / "results.csv").read_text() == table

    _write_sweep(sweep, data_file, grid="seed = [0, 1, 2]")  # a grown grid runs only the new point
    grown = run_sweep(client, sweep, out, planner="estimate", progress=False)
    assert (grown["ran"], grown["skipped"]) == (1, 2)
    assert len(list(csv.DictReader((out / "results.csv").read_text().splitlines()))) == 3


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("grid, message", [
    ("wavelenght = [1e-6]", "unknown key 'wavelenght'"),
    ("\"optics.nn\" = [32]", "unknown key 'optics.nn'"),
    ("seed = []", "seed = []: empty list"),
    ("seed = 3", "must be a list"),
    ("", "empty grid"),
    ("layers = [0]", "grid point (layers=0)"),
])
def test_bad_sweep_files_are_named(tmp_path, data_file, grid, message):
    path = _write_sweep(tmp_path / "grid.toml", data_file, grid=grid)
    with pytest.raises(ConfigError) as exc:
        read_sweep(path)
    assert message in str(exc.value)


def test_sweep_unknown_top_level_key(tmp_path, data_file):
    path = _write_sweep(tmp_path / "grid.toml", data_file)
    path.write_text("sample_count = 3\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sample_count'\]"):
        read_sweep(path)


def test_unreachable_scheduler_fails_fast(tmp_path, data_file, capsys):
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="tcp://127.0.0.1:9"):
        with open_client(scheduler="tcp://127.0.0.1:9", connect_timeout=2, log=lambda msg: None):
            pass
    sweep = _write_sweep(tmp_path / "grid.toml", data_file)
    code = main(["sweep", str(sweep), "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "2"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect to a Dask scheduler" in err[0] and "tcp://127.0.0.1:9" in err[0]
    assert time.monotonic() - t0 < 20  # two 2 s timeouts, not a hang


def test_unwritable_shared_dir(tmp_path, client):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="a-file: exists and is not a directory"):
        prepare_shared_dir(blocker, client)
    with pytest.raises(ValueError, match="cannot create it"):
        prepare_shared_dir(blocker / "below", client)
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs an ordinary user
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(ValueError, match="read-only: not writable"):
                prepare_shared_dir(ro, client)
        finally:
            ro.chmod(0o755)


def test_parts_of_another_configuration_are_refused(data_file, tmp_path):
    cfg = _cfg(data_file, train__steps=2)
    SetTrainer(cfg, part_path(tmp_path / "parts", 0).parent, 0).run()
    other = _cfg(data_file, train__steps=2, train__lr=0.01)
    with pytest.raises(CheckpointError, match=r"another configuration \(differs in train.lr\)"):
        existing_parts(other, tmp_path)
    threads_only = _cfg(data_file, train__steps=2, train__threads=3)  # threads do not change results
    assert existing_parts(threads_only, tmp_path)[0]["done"] is True


def test_cli_train_with_workers(data_file, serial, tmp_path, capsys):
    cfg_file = tmp_path / "run.toml"
    from optdiff.config import config_to_toml

    cfg_file.write_text(config_to_toml(_cfg(data_file)))
    code = main(["train", "--config", str(cfg_file), "--workers", "1", "--out", str(tmp_path / "cli"),
                 "--planner", "estimate", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "LocalCluster: 1 worker processes" in err and "Dask dashboard: http" in err
    _same_checkpoint(serial, tmp_path / "cli")
    assert (tmp_path / "cli" / "training.png").exists()
    code = main(["train", "--config", str(cfg_file), "--workers", "1", "--max-steps", "3"])
    assert code == 2 and "--max-steps: not with --workers" in capsys.readouterr().err
