"""A run file's ``[bench]`` table: read by the hardware modes and ``optdiff calibrate``, refused
with the offending key named, ignored by the model's configuration (it is not in a checkpoint)."""
import argparse
import json

import pytest

from optdiff.cli import main
from optdiff.cli_hardware import _device, _nominal, make_trainer
from optdiff.config import ConfigError, load_config
from optdiff.hardware.config import BenchConfig

RUN = """
[optics]
n = 32
layers = 2
[model]
image_size = 8
sets = 2
[train]
steps = 2
batch = 4

[bench]
seed = 3
[bench.slm]
crosstalk = 0.05
lut_curvature = 0.0
"""


@pytest.fixture
def run_file(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text(RUN)
    return p


def test_model_config_ignores_bench_table(run_file):
    cfg = load_config(run_file)
    assert cfg.optics.n == 32 and "bench" not in cfg.to_dict()


def test_bench_table_reaches_the_device_and_twin(run_file, tmp_path):
    args = argparse.Namespace(config=str(run_file), mode="online", slm_aware=False, refine_every=0,
                              twin=None, bench_seed=1)
    nominal = _nominal(args)
    assert nominal.slm.crosstalk == 0.05 and nominal.slm.lut_curvature == 0.0 and nominal.seed == 3
    assert nominal != BenchConfig()
    cfg = load_config(run_file)
    assert _device(cfg, 1, nominal).nominal == nominal
    tr = make_trainer(args, cfg, tmp_path / "out")
    assert tr.hw.twin.nominal == nominal
    # without --config: the reference bench
    assert _nominal(argparse.Namespace(config=None)) == BenchConfig()


def test_calibrate_reads_bench_table(run_file, tmp_path):
    out = tmp_path / "cal"
    assert main(["calibrate", "--config", str(run_file), "--frames", "6", "--holdout", "2", "--quick",
                 "--reveal", "--out", str(out), "--no-progress"]) == 0
    start = json.loads((out / "twin.json").read_text())["report"]["start"]
    # the fit starts from the design in [bench], not from the reference bench
    assert start["crosstalk"] == 0.05 and start["lut_curvature"] == 0.0
    ref = BenchConfig()
    assert (ref.slm.crosstalk, ref.slm.lut_curvature) != (0.05, 0.0)


def test_bad_bench_table_is_named(run_file, tmp_path, capsys):
    run_file.write_text(RUN + "bogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        _nominal(argparse.Namespace(config=str(run_file)))
    assert main(["train", "--config", str(run_file), "--mode", "online", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "bogus" in capsys.readouterr().err
