"""studies/quadratic_class.py: the quadratic denoisers that bound the amplitude ODU's class."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
qc = pytest.importorskip("studies.quadratic_class")


def test_pair_products_are_every_product_once():
    z = np.arange(1.0, 4.0)[None]                       # z = (1, 2, 3)
    np.testing.assert_array_equal(qc.pair_products(z), [[1, 2, 3, 4, 6, 9]])


def test_least_squares_recovers_an_exact_quadratic_and_k0_is_affine():
    rng = np.random.default_rng(0)
    D, k = 6, 3
    P, mu = np.linalg.qr(rng.standard_normal((D, k)))[0].T, rng.standard_normal(D)
    W, c, A = rng.standard_normal((2, D)), rng.standard_normal(2), rng.standard_normal((2, k, k))

    stream = np.random.default_rng(1)

    def draw(n, rng=None):
        r = (stream if rng is None else rng).standard_normal((n, D))
        z = (r - mu) @ P.T
        return r, c + r @ W.T + np.einsum("na,jab,nb->nj", z, A, z)

    q = qc.QuadraticLstsq(P, mu, ridge=0.0).fit(draw, 3000, chunk=700)
    r, e = draw(50)
    np.testing.assert_allclose(q.predict(r), e, rtol=1e-8, atol=1e-8)
    # k = 0: ordinary least squares on [1, r]
    lin = qc.QuadraticLstsq(P[:0], mu, ridge=0.0).fit(lambda n: draw(n, np.random.default_rng(2)), 400)
    r, e = draw(400, np.random.default_rng(2))
    F = np.concatenate([np.ones((400, 1)), r], axis=1)
    np.testing.assert_allclose(lin.coef, np.linalg.lstsq(F, e, rcond=None)[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("semidefinite", [False, True])
def test_square_net_gradients_match_finite_differences(semidefinite):
    rng = np.random.default_rng(3)
    D, H = 5, 7
    net = qc.SquareNet(rng.standard_normal((D, D)), rng.standard_normal(D), H, seed=4, semidefinite=semidefinite)
    for v in net.p.values():
        v[...] = 0.5 * rng.standard_normal(v.shape)      # a loss of order one: central differences stay exact
    r, e = rng.standard_normal((9, D)), rng.standard_normal((9, D))
    _, grads = net.loss_and_grads(r, e)
    h = 1e-4                       # smaller steps lose digits to rounding (the loss is O(1), gradients O(1e-4))
    for name, g in grads.items():
        for _ in range(3):
            idx = tuple(int(rng.integers(0, s)) for s in net.p[name].shape)
            old = net.p[name][idx]
            net.p[name][idx] = old + h
            lp = net.loss_and_grads(r, e)[0]
            net.p[name][idx] = old - h
            lm = net.loss_and_grads(r, e)[0]
            net.p[name][idx] = old
            assert g[idx] == pytest.approx((lp - lm) / (2 * h), rel=1e-6, abs=1e-9), (name, idx)
    if semidefinite:   # each output's quadratic form has one sign
        V = net.V()
        assert np.all((V >= 0).all(axis=1) | (V <= 0).all(axis=1))


def test_a_square_net_starts_at_its_affine_map_and_learns_a_square():
    rng = np.random.default_rng(5)
    D = 3
    net = qc.SquareNet(np.eye(D), np.zeros(D), 4, seed=6)
    r = rng.standard_normal((20, D))
    np.testing.assert_allclose(net.predict(r), r)          # V = 0: the linear start
    u = np.array([1.0, -0.5, 0.25])
    target = lambda x: x + 0.5 * (x @ u)[:, None] ** 2    # noqa: E731
    first = None
    for i in range(1500):
        x = rng.standard_normal((64, D))
        loss = net.step(x, target(x), 0.02 * 0.5 * (1 + np.cos(np.pi * i / 1500)))
        first = loss if first is None else first
    assert loss < 1e-3 * first


def test_run_set_is_reproducible_and_reports_its_best():
    from optdiff.diffusion.schedule import NoiseSchedule, timestep_sets

    rng = np.random.default_rng(7)
    xtr, xte = rng.uniform(-1, 1, (60, 4, 4)), rng.uniform(-1, 1, (20, 4, 4))
    sched = NoiseSchedule()
    kw = dict(ks=[4], widths=[8], samples=600, steps=30, batch=32, lr=1e-3, seed=0, semidefinite=True,
              log=lambda s: None)
    a = qc.run_set(4, xtr, xte, sched, timestep_sets(1000, 10), **kw)
    b = qc.run_set(4, xtr, xte, sched, timestep_sets(1000, 10), **kw)
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    best = min(a["pca_4"], a["square_8"], a["semidef_8"])
    assert a["best_over_linear"] == round(best / a["linear"], 4)
    assert 0 < a["linear"] < a["zero"]


def test_bad_arguments_are_refused_by_name(capsys):
    for argv, word in ((["--set", "11"], "--set"), (["--pca", "a"], "--pca"), (["--widths", "0"], "--widths")):
        with pytest.raises(SystemExit):
            qc.main(argv)
        assert word in capsys.readouterr().err


def test_local_fit_finds_a_product_of_neighbours_and_not_one_of_far_pixels():
    rng = np.random.default_rng(8)
    side, n = 4, 4000
    D = side * side
    mean = np.zeros(D)

    def target(r):   # output pixel 5 = (1, 1) also reads r(1,1) * r(1,2); output 0 reads r(3,3)^2
        e = 0.3 * r
        e[:, 5] += r[:, 5] * r[:, 6]
        e[:, 0] += r[:, 15] ** 2
        return e

    r, vr = rng.standard_normal((n, D)), rng.standard_normal((500, D))
    P = np.zeros((0, D))
    lin = qc.QuadraticLstsq(P, mean, ridge=0.0).fit(lambda k: (r, target(r)), n, chunk=n)
    pred = qc.local_quadratic(r, target(r), vr, lin, 1, mean)
    err = np.mean((pred - target(vr)) ** 2, axis=0)
    # the neighbour product (variance 1) is recovered up to the first stage's sampling error
    # (16 linear coefficients from 4000 samples with that product as noise: ~16 / 4000)
    assert err[5] < 0.02 and np.all(np.delete(err, 0) < 0.02)
    assert err[0] > 1.0                                          # (3, 3) is not within radius 1 of (0, 0)
