"""Forward-Forward training (optdiff.ff): goodness and loss, label embedding, the optical transforms,
a tiny run that learns, bad input, NaN stop, resume and the ff-train command line."""

import math

import numpy as np
import pytest

from optdiff import PhaseStack
from optdiff.ff import (
    FibreTransform,
    FreeSpaceTransform,
    RidgeReadout,
    check_threshold,
    embed_labels,
    ff_loss,
    ff_loss_grad,
    goodness,
    neutral_embedding,
)


def test_goodness_and_loss_hand_example():
    y = np.array([[1.0, 2.0], [0.0, 1.0]])
    assert goodness(y).tolist() == [5.0, 1.0]
    assert goodness(y, "mean").tolist() == [2.5, 0.5]
    theta = 2.0
    want = 0.5 * (math.log1p(math.exp(-3.0)) + math.log1p(math.exp(-1.0)))  # pos g=5, neg g=1
    assert ff_loss(np.array([5.0]), np.array([1.0]), theta) == pytest.approx(want, rel=1e-12)
    gp, gn = np.array([5.0, 1.5]), np.array([1.0, 3.0])
    dp, dn = ff_loss_grad(gp, gn, theta)
    h = 1e-6
    for i in range(2):
        e = np.eye(2)[i] * h
        assert dp[i] == pytest.approx((ff_loss(gp + e, gn, theta) - ff_loss(gp - e, gn, theta)) / (2 * h), rel=1e-6)
        assert dn[i] == pytest.approx((ff_loss(gp, gn + e, theta) - ff_loss(gp, gn - e, theta)) / (2 * h), rel=1e-6)


def test_torch_loss_matches_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    y = rng.standard_normal((6, 3, 2, 2))
    g = goodness(torch.from_numpy(y), "mean")
    np.testing.assert_allclose(g.numpy(), goodness(y, "mean"), rtol=1e-12)
    assert float(ff_loss(g[:3], g[3:], 1.5)) == pytest.approx(ff_loss(goodness(y, "mean")[:3],
                                                                      goodness(y, "mean")[3:], 1.5), rel=1e-12)


@pytest.mark.parametrize("theta", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_bad_threshold_refused(theta):
    with pytest.raises(ValueError, match="threshold"):
        check_threshold(theta)


def test_label_embedding():
    x = np.full((3, 4, 4), 0.25, np.float32)
    e = embed_labels(x, np.array([0, 2, 9]), 10)
    flat = e.reshape(3, 16)
    assert flat[0, :10].tolist() == [1.0] + [0.0] * 9
    assert flat[1, :10].argmax() == 2 and flat[1, :10].sum() == 1.0
    assert flat[2, 9] == 1.0
    np.testing.assert_array_equal(flat[:, 10:], 0.25)  # the rest of the image is untouched
    np.testing.assert_array_equal(x, 0.25)               # and the input is not modified
    n = neutral_embedding(x, 10).reshape(3, 16)
    np.testing.assert_allclose(n[:, :10], 0.1)
    p0, p1 = (embed_labels(x, np.array([c] * 3), 10, kind="grating") for c in (0, 1))
    assert not np.allclose(p0, p1) and np.allclose(p0[0], p0[1])


def test_embedding_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="11 labels do not fit in 9 pixels"):
        embed_labels(np.zeros((2, 3, 3)), np.array([0, 1]), 11)
    with pytest.raises(ValueError, match="labels must be in"):
        embed_labels(np.zeros((2, 4, 4)), np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="num_classes"):
        embed_labels(np.zeros((2, 4, 4)), np.array([0, 0]), 1)


def test_fibre_is_unitary_before_detection():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 300)).astype(np.float32)
    for kerr in (0.0, 2.0):
        f = FibreTransform(300, modes=40, pixels=64, kerr=kerr, seed=3)
        T = f.transmission.astype(np.complex128)
        np.testing.assert_allclose(T.conj().T @ T, np.eye(40), atol=1e-5)
        c_in, c_out, cam = f.fields(a)
        p_in = (np.abs(c_in) ** 2).sum(1)
        assert np.all(p_in <= 1 + 1e-5)  # the SLM field has unit power; only part of it is guided
        np.testing.assert_allclose((np.abs(c_out) ** 2).sum(1), p_in, rtol=1e-5)
        np.testing.assert_allclose((np.abs(cam) ** 2).sum(1), p_in, rtol=1e-5)
        np.testing.assert_allclose(f(a), 64 * np.abs(cam) ** 2, rtol=1e-6)
    lin, nl = FibreTransform(300, modes=40, seed=3), FibreTransform(300, modes=40, seed=3, kerr=2.0)
    assert not np.allclose(lin(a), nl(a), rtol=1e-2)  # the Kerr phase changes the speckle


def test_free_space_equals_phase_stack_output():
    rng = np.random.default_rng(2)
    tr = FreeSpaceTransform(30, layers=2, upsample=2, n=16, camera=8, distance=2e-3, phase_scale=1.3, seed=5)
    a = rng.random((3, 30)).astype(np.float32)
    # by hand: 30 values on a 6x6 square (6 dark), 2x2 SLM pixels each, centred on 16x16
    img = np.zeros((3, 36), np.complex64)
    img[:, :30] = np.exp(1j * 1.3 * a)
    field = np.zeros((3, 16, 16), np.complex64)
    field[:, 2:14, 2:14] = np.kron(img.reshape(3, 6, 6), np.ones((2, 2)))
    stack = PhaseStack(16, wavelength=850e-9, pitch=9.2e-6, distances=[2e-3, 2e-3], padding=2)
    I = stack.forward(field, tr.phases)
    want = I.reshape(3, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(3, 64)
    np.testing.assert_allclose(tr(a), want, rtol=1e-6, atol=1e-7)


def test_free_space_adjoint_gradient():
    rng = np.random.default_rng(3)
    tr = FreeSpaceTransform(16, layers=2, upsample=2, n=8, camera=4, distance=1e-3, seed=1)
    a = rng.random((2, 16)).astype(np.float32)
    w = rng.standard_normal((2, 16))
    feats, tape = tr.forward_train(a, tr.phases)
    g = tr.backward(tape, w.astype(np.float32))
    d = rng.standard_normal(tr.phases.shape)
    h = 1e-2
    f = lambda ph: float((w * tr(a, ph.astype(np.float32))).sum())  # noqa: E731
    fd = (f(tr.phases + h * d) - f(tr.phases - h * d)) / (2 * h)
    assert float((g * d).sum()) == pytest.approx(fd, rel=2e-2, abs=1e-4)  # float32 stack


def test_ridge_readout_separable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    X = np.eye(3)[y] * 2 + 0.1 * rng.standard_normal((90, 3))
    assert (RidgeReadout(1e-2).fit(X, y, 3).predict(X) == y).all()
    with pytest.raises(ValueError, match="lambda"):
        RidgeReadout(0.0)


# ---------------------------------------------------------------------------- torch part
def _digits(n=(300, 100, 100)):
    from optdiff.ff.data import load_split

    *parts, _ = load_split("digits", None, n, size=8, seed=0, pad=False)
    return parts


def _cfg(**train):
    from optdiff.ff.config import FFConfig

    d = {"data": {"dataset": "digits", "counts": [300, 100, 100], "size": 8, "pad": False},
         "model": {"kind": "ff", "embedding": "onehot", "vote": "all-but-first", "threshold": 1.0,
                   "layers": [{"kind": "fc", "units": 64}, {"kind": "fc", "units": 64}]},
         "train": {"epochs": 2, "batch": 50, "lr": 0.01, **train}}
    return FFConfig.from_dict(d)


def test_tiny_run_beats_chance(tmp_path):
    pytest.importorskip("torch")
    from optdiff.ff.trainer import FFTrainer

    tr = FFTrainer(_cfg(epochs=20), tmp_path, data=_digits(), progress=False)
    (_, _), (xv, yv), _ = tr.train_set, tr.val_set, tr.test_set
    before = float((tr.net.predict_goodness(xv) == yv).mean())
    rows = tr.run()
    acc = {r["inference"]: r["test_acc"] for r in rows}
    # chance is 0.1; the untrained network's goodness picks labels at about chance (measured 0.54 after)
    assert before < 0.2 and acc["goodness"] > 0.3 and acc["readout"] > 0.5, (before, acc)


def test_ff_with_optics_runs(tmp_path):
    pytest.importorskip("torch")
    from optdiff.ff.config import FFConfig
    from optdiff.ff.trainer import FFTrainer

    d = _cfg().to_dict()
    d["model"]["layers"] = [{"kind": "fc", "units": 36}, {"kind": "freespace", "n": 12, "upsample": 2, "trainable": True},
                            {"kind": "fibre", "modes": 20, "pixels": 25, "kerr": 0.5}, {"kind": "fc", "units": 16}]
    d["train"]["epochs"] = 1
    tr = FFTrainer(FFConfig.from_dict(d), tmp_path, data=_digits(), progress=False)
    before = tr.net.blocks[1].phases.detach().numpy().copy()
    rows = tr.run()
    assert not np.array_equal(before, tr.net.blocks[1].phases.detach().numpy())  # trained through the adjoint
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows) and rows[0]["optics_sim_flops"] > 0


def test_bad_layers_refused():
    pytest.importorskip("torch")
    from optdiff.ff.network import FFNet

    with pytest.raises(ValueError, match="at least one block"):
        FFNet([], (8, 8))
    with pytest.raises(ValueError, match="empty layer"):
        FFNet([{"kind": "fc", "units": 0}], (8, 8))
    with pytest.raises(ValueError, match="no trainable block"):
        FFNet([{"kind": "fibre"}], (8, 8))
    with pytest.raises(ValueError, match="threshold"):
        FFNet([{"kind": "fc", "units": 4}], (8, 8), theta=0.0)
    with pytest.raises(ValueError, match="do not fit"):
        FFNet([{"kind": "fc", "units": 4}], (3, 3), num_classes=10)


def test_nan_stops_training_and_keeps_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from optdiff.ff.trainer import FFTrainer

    tr = FFTrainer(_cfg(epochs=1), tmp_path, data=_digits(), progress=False)
    tr.train()
    saved = tr.checkpoint_path.read_bytes()
    tr.cfg.train.epochs = 2
    with torch.no_grad():
        tr.net.blocks[0][1].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 1: layer 0 \(fc\) produced NaN.*epoch 1\) is kept"):
        tr.train()
    assert tr.checkpoint_path.read_bytes() == saved
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_resume_equals_uninterrupted(tmp_path):
    pytest.importorskip("torch")
    from optdiff.ff.trainer import FFTrainer

    data = _digits()
    full = FFTrainer(_cfg(epochs=2), tmp_path / "a", data=data, progress=False)
    full.train()
    half = FFTrainer(_cfg(epochs=1), tmp_path / "b", data=data, progress=False)
    half.train()
    again = FFTrainer(_cfg(epochs=2), tmp_path / "b", data=data, progress=False)
    assert again.resume() and again.epoch == 1
    again.train()
    a, b = full.net.state_arrays(), again.net.state_arrays()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    other = FFTrainer(_cfg(epochs=2, lr=0.02), tmp_path / "b", data=data, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        other.resume()


def test_cli_ff_train(tmp_path, capsys):
    pytest.importorskip("torch")
    from optdiff.cli import main

    cfg = tmp_path / "ff.toml"
    body = ('[data]\ndataset = "digits"\ncounts = [200, 50, 50]\nsize = 8\npad = false\n'
            '[model]\nembedding = "onehot"\n[[model.layers]]\nkind = "fc"\nunits = 32\n'
            '[train]\nepochs = 1\nbatch = 50\n')
    cfg.write_text(body)
    assert main(["ff-train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "| goodness |" in capsys.readouterr().out and (tmp_path / "run" / "results.md").exists()
    assert main(["ff-train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 1  # exists, no --resume
    cfg.write_text(body.replace("epochs = 1", "epochs = 2"))
    assert main(["ff-train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress", "--resume"]) == 0
    cfg.write_text(body + "epoch = 3\n")
    assert main(["ff-train", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "unknown key(s) ['epoch']" in capsys.readouterr().err
    cfg.write_text(body.replace('embedding = "onehot"', 'embedding = "onehot"\nthreshold = -1'))
    assert main(["ff-train", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "threshold" in capsys.readouterr().err
