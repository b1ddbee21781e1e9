"""The CNN feature classifier: trains on the bundled digits, beats chance by far, round-trips
through its checkpoint with data set and accuracy, and refuses data of another set."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cnn = pytest.importorskip("optdiff.evaluation.cnn_features")


@pytest.fixture(scope="module")
def digits():
    from optdiff.data import load_dataset

    xtr, ytr = load_dataset("digits", split="train", size=12, limit=600, seed=0)
    xte, yte = load_dataset("digits", split="test", size=12)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def net(digits):
    torch.set_num_threads(2)
    xtr, ytr, xte, yte = digits
    return cnn.CNNFeatureNet(12, np.unique(ytr), "digits").fit(xtr, ytr, epochs=4, held_out=(xte, yte))


def test_cnn_learns_digits(net, digits):
    _, _, xte, yte = digits
    assert net.accuracy_held_out == net.accuracy(xte, yte) > 0.8  # chance: 0.1
    f, p = net.features(xte[:5]), net.predict_proba(xte[:5])
    assert f.shape == (5, 128) and p.shape == (5, 10) and np.allclose(p.sum(axis=1), 1.0)
    # unit mean variance per feature on the training images (float64 statistics of float32 features)
    assert np.mean(np.var(net.features(digits[0]), axis=0)) == pytest.approx(1.0, rel=1e-5)


def test_checkpoint_round_trip_and_wrong_data_set(net, digits, tmp_path):
    from optdiff.diffusion.checkpoint import CheckpointError

    path = net.save(tmp_path / "features.npz")
    back = cnn.CNNFeatureNet.load(path, dataset="digits", image_size=12)
    assert back.accuracy_held_out == net.accuracy_held_out and back.classes.tolist() == list(range(10))
    assert back.feature_scale == net.feature_scale != 1.0
    x = digits[2][:7]
    np.testing.assert_array_equal(back.features(x), net.features(x))
    with pytest.raises(ValueError, match="trained on 'digits'.*not on 'mnist'"):
        cnn.CNNFeatureNet.load(path, dataset="mnist")
    with pytest.raises(ValueError, match="at 12x12, not on 'digits' at 20x20"):
        cnn.CNNFeatureNet.load(path, image_size=20)
    with pytest.raises(ValueError, match="expected 12x12"):
        net.features(np.zeros((2, 20, 20)))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x55
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="bad.npz"):
        cnn.CNNFeatureNet.load(tmp_path / "bad.npz")


def test_bad_labels_and_classes():
    with pytest.raises(ValueError, match="two classes"):
        cnn.CNNFeatureNet(12, [3], "digits")
    net = cnn.CNNFeatureNet(12, [0, 1], "digits")
    with pytest.raises(ValueError, match="outside the classifier's classes"):
        net.fit(np.zeros((4, 12, 12)), [0, 1, 2, 1], epochs=1)
