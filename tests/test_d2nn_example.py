"""examples/d2nn_torch.py: its two implementations (optdiff.torch and pure torch.fft) compute the
same model, and the script trains for a few steps and writes its outputs."""

import gzip
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "d2nn_torch.py"


@pytest.fixture(autouse=True)
def restore_threads():
    import optdiff

    before = optdiff.get_num_threads(), torch.get_num_threads()
    yield
    optdiff.set_num_threads(before[0])
    torch.set_num_threads(before[1])


def load():
    spec = importlib.util.spec_from_file_location("d2nn_torch", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A t10k IDX pair (uint8 images [K, 28, 28], labels [K]), gzipped as MNIST ships it."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_the_two_implementations_agree(dtype, tol):
    d = load()
    dt = getattr(torch, dtype)
    a, b = d.D2NN("optdiff", n=32, layers=2, dtype=dt), d.D2NN("torch-fft", n=32, layers=2, dtype=dt)
    torch.testing.assert_close(a.optics.phases, b.optics.phases, rtol=0, atol=0)  # the same start
    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 7, 3])
    la, lb = a(x), b(x)
    torch.nn.functional.cross_entropy(la, y).backward()
    torch.nn.functional.cross_entropy(lb, y).backward()
    la, lb = la.detach(), lb.detach()
    assert float((la - lb).norm() / lb.norm()) < tol
    ga, gb = a.optics.phases.grad, b.optics.phases.grad
    assert float((ga - gb).norm() / gb.norm()) < 10 * tol


@pytest.mark.parametrize("impl", ["optdiff", "torch-fft"])
def test_the_script_trains_a_few_steps(tmp_path, impl):
    d = load()
    rng = np.random.default_rng(0)
    write_idx(tmp_path, rng.integers(0, 256, (40, 28, 28)), rng.integers(0, 10, 40))
    out = tmp_path / "run"
    s = d.main(["--data-dir", str(tmp_path), "--impl", impl, "--n", "32", "--layers", "2", "--steps", "2",
                "--batch", "4", "--eval", "8", "--threads", "1", "--out", str(out)])
    assert s["impl"] == impl and s["steps"] == 2 and np.isfinite(s["first_loss"]) and np.isfinite(s["last_loss"])
    assert 0.0 <= s["heldout_accuracy"] <= 1.0 and s["heldout_images"] == 8
    assert np.load(out / "phases.npy").shape == (2, 32, 32)
    assert json.loads((out / "summary.json").read_text())["n"] == 32
    assert (out / "d2nn.png").stat().st_size > 0


def test_bad_arguments_are_refused():
    d = load()
    with pytest.raises(SystemExit):
        d.parse_args(["--data-dir", "x", "--steps", "0"])
    with pytest.raises(ValueError, match="impl must be one of"):
        d.D2NN("jax")
