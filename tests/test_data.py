"""Tests for optdiff.data: IDX/Quick, Draw!/image-folder readers, transforms, load_dataset."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from optdiff.data import (
    DATASETS,
    load_dataset,
    read_idx,
    read_image_folder,
    read_quickdraw,
    resize_images,
    to_model_range,
)
from optdiff.data import datasets as data

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    code = _CODES[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool | None = None) -> Path:
    raw = idx_bytes(arr)
    if gz is None:
        gz = str(path).endswith(".gz")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_mnist_dir(root: Path, n_train=30, n_test=20, splits=("train", "t10k"), gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if prefix not in splits:
            continue
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", y)
        out[prefix] = (x, y)
    return out


# ------------------------------------------------------------------------------ read_idx

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((4, 5, 3)) * 50).astype(dtype)
    p = write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), arr)
    out = read_idx(p)
    assert out.shape == arr.shape
    assert out.dtype == np.dtype(dtype)  # native byte order
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 0  # writeable copy


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    p = tmp_path / "labels-idx1-ubyte"  # no .gz suffix, gzip content
    p.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(p), arr)


def _corrupt_cases():
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return {
        "empty": (b"", "bytes"),
        "bad_magic": (b"\x01\x02" + good[2:], "magic"),
        "bad_type": (b"\x00\x00\x07\x03" + good[4:], "type code"),
        "zero_dims": (b"\x00\x00\x08\x00", "dimensions"),
        "short_header": (good[:9], "header"),
        "truncated_data": (good[:-5], "truncated"),
        "trailing": (good + b"\x00\x00", "trailing"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_corrupt(tmp_path, case, gz):
    payload, needle = _corrupt_cases()[case]
    p = tmp_path / f"{case}.idx"
    p.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(ValueError) as ei:
        read_idx(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert needle in msg


def test_read_idx_truncated_gzip_stream(tmp_path):
    comp = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    p = tmp_path / "t.gz"
    p.write_bytes(comp[: len(comp) // 2])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(p)


def test_read_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# ------------------------------------------------------------------------------ quickdraw / folder

def test_read_quickdraw(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (7, 784), dtype=np.uint8)
    p = tmp_path / "cat.npy"
    np.save(p, arr)
    out = read_quickdraw(p)
    assert out.shape == (7, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.reshape(7, 784), arr)
    np.testing.assert_array_equal(read_quickdraw(p, indices=[1, 5]).reshape(2, 784), arr[[1, 5]])
    np.save(tmp_path / "bad.npy", np.zeros((3, 100), np.uint8))
    with pytest.raises(ValueError, match="784"):
        read_quickdraw(tmp_path / "bad.npy")
    np.save(tmp_path / "badtype.npy", np.zeros((3, 784), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        read_quickdraw(tmp_path / "badtype.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="junk.npy"):
        read_quickdraw(tmp_path / "junk.npy")


def _save_png(path: Path, arr: np.ndarray, mode="L"):
    from PIL import Image

    if mode == "RGB":
        arr = np.stack([arr] * 3, axis=-1)
    Image.fromarray(arr, mode=mode).save(path)


def test_read_image_folder_flat_and_sizes(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (6, 6), dtype=np.uint8) for _ in range(3)]
    for i, im in enumerate(imgs):
        _save_png(tmp_path / f"im{i}.png", im, mode="RGB" if i == 1 else "L")
    (tmp_path / "notes.txt").write_text("ignored")
    out = read_image_folder(tmp_path)
    assert out.shape == (3, 6, 6) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], imgs[0])
    np.testing.assert_array_equal(out[1], imgs[1])  # gray RGB -> L is exact
    # a differently sized image is rejected with a clear message ...
    _save_png(tmp_path / "zbig.png", rng.integers(0, 256, (9, 9), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"zbig\.png.*differs"):
        read_image_folder(tmp_path)
    # ... unless size= resizes everything on load
    out = read_image_folder(tmp_path, size=4)
    assert out.shape == (4, 4, 4)


def test_read_image_folder_classes(tmp_path):
    for cls, val in (("b_dogs", 200), ("a_cats", 50)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _save_png(tmp_path / cls / f"{i}.png", np.full((5, 5), val, np.uint8))
    x, y, names = read_image_folder(tmp_path, return_labels=True)
    assert names == ["a_cats", "b_dogs"]
    np.testing.assert_array_equal(y, [0, 0, 1, 1])
    assert np.all(x[:2] == 50) and np.all(x[2:] == 200)
    _save_png(tmp_path / "loose.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="one layout"):
        read_image_folder(tmp_path)


def test_read_image_folder_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        read_image_folder(tmp_path)


# ------------------------------------------------------------------------------ transforms

def test_resize_area_block_mean_and_mean_preservation():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28))
    half = resize_images(x, 14)
    np.testing.assert_allclose(half, x.reshape(3, 14, 2, 14, 2).mean(axis=(2, 4)), atol=1e-12)
    r20 = resize_images(x, 20)
    assert r20.shape == (3, 20, 20) and r20.dtype == np.float64
    np.testing.assert_allclose(r20.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-12)
    assert r20.min() >= x.min() - 1e-12 and r20.max() <= x.max() + 1e-12


def test_resize_constant_and_upsample():
    c = np.full((2, 8, 8), 7, dtype=np.uint8)
    for s, m in ((20, "auto"), (20, "bilinear"), (5, "area"), (8, "auto")):
        np.testing.assert_allclose(resize_images(c, s, method=m), 7.0, atol=1e-12)
    ramp = np.tile(np.arange(8.0), (8, 1))
    up = resize_images(ramp, 16)
    assert up.shape == (16, 16)
    assert np.all(np.diff(up, axis=1) >= -1e-12)  # monotone ramp stays monotone
    assert up.min() >= 0 and up.max() <= 7
    with pytest.raises(ValueError):
        resize_images(np.zeros(5), 3)
    with pytest.raises(ValueError):
        resize_images(c, 4, method="cubic")


def test_to_model_range():
    u = np.array([0, 255, 51], dtype=np.uint8)
    np.testing.assert_allclose(to_model_range(u), [-1.0, 1.0, 51 / 127.5 - 1])
    np.testing.assert_allclose(to_model_range(np.array([0.0, 0.5, 1.0])), [-1, 0, 1])
    np.testing.assert_allclose(to_model_range(np.array([0, 8, 16]), max_value=16), [-1, 0, 1])
    assert to_model_range(u).dtype == np.float64
    with pytest.raises(ValueError, match="max_value"):
        to_model_range(np.array([1, 2], dtype=np.int32))


# ------------------------------------------------------------------------------ load_dataset

def test_datasets_tuple():
    assert set(DATASETS) == {"digits", "fashion-mnist", "mnist", "quickdraw", "folder"}


def test_digits_default():
    x, y = load_dataset("digits")
    assert x.dtype == np.float64 and y.dtype == np.int64
    assert x.shape[1:] == (20, 20) and x.shape[0] == y.shape[0]
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1.0
    xt, yt = load_dataset("digits", split="test")
    xa, _ = load_dataset("digits", split="all", size=8)
    assert x.shape[0] + xt.shape[0] == xa.shape[0] == 1797
    from sklearn.datasets import load_digits

    np.testing.assert_allclose(xa, load_digits().images / 8.0 - 1.0)  # size 8 = native, exact


def test_digits_classes_limit_seed():
    x, y = load_dataset("digits", classes=[0, 1, 2], size=12)
    assert set(np.unique(y)) == {0, 1, 2} and x.shape[1:] == (12, 12)
    a, la = load_dataset("digits", limit=50, seed=3)
    b, lb = load_dataset("digits", limit=50, seed=3)
    c, _ = load_dataset("digits", limit=50, seed=4)
    assert a.shape == (50, 20, 20)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(load_dataset("digits", limit=0, data_dir="")[0], load_dataset("digits")[0])
    with pytest.raises(ValueError, match="out of range"):
        load_dataset("digits", classes=[10])
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")


def test_mnist_from_idx_dir(tmp_path):
    ref = make_mnist_dir(tmp_path / "mnist", gz=False)
    x, y = load_dataset("mnist", data_dir=tmp_path / "mnist", size=None)
    assert x.shape == (30, 28, 28)
    np.testing.assert_allclose(x, ref["train"][0] / 127.5 - 1.0)
    np.testing.assert_array_equal(y, ref["train"][1])
    xt, yt = load_dataset("mnist", data_dir=tmp_path / "mnist", split="t10k", classes=[0, 1, 2])
    assert xt.shape[1:] == (20, 20)
    np.testing.assert_array_equal(yt, [v for v in ref["t10k"][1] if v < 3])
    # data_dir/mnist sub-folder is searched as well
    xs, _ = load_dataset("mnist", data_dir=tmp_path, split="all")
    assert xs.shape[0] == 50


def test_mnist_only_t10k(tmp_path):
    make_mnist_dir(tmp_path, splits=("t10k",))
    with pytest.raises(FileNotFoundError) as ei:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(ei.value)
    assert "t10k" in msg and "split='test'" in msg and str(tmp_path) in msg
    x, y = load_dataset("mnist", data_dir=tmp_path, split="test")
    assert x.shape == (20, 20, 20)


def test_mnist_needs_data_dir():
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_dataset("mnist")


def test_missing_fashion_mnist_lists_places(tmp_path, monkeypatch):
    fake_system = tmp_path / "system" / "fashion-mnist"
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", str(fake_system))
    user = tmp_path / "user"
    user.mkdir()
    with pytest.raises(FileNotFoundError) as ei:
        load_dataset("fashion-mnist", data_dir=user)
    msg = str(ei.value)
    for place in (str(user), str(user / "fashion-mnist"), str(fake_system)):
        assert place in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-dir" in msg


def test_fashion_mnist_from_data_dir(tmp_path):
    make_mnist_dir(tmp_path / "fashion-mnist")
    x, y = load_dataset("fashion-mnist", data_dir=tmp_path, split="test", size=10)
    assert x.shape == (20, 10, 10)


def test_quickdraw(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("cat", 20), ("apple", 15), ("bus", 11)):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, (n, 784), dtype=np.uint8))
    assert data.dataset_class_names("quickdraw", tmp_path) == ["apple", "bus", "cat"]
    x, y = load_dataset("quickdraw", data_dir=tmp_path, split="all", size=None)
    assert x.shape == (46, 28, 28)
    np.testing.assert_array_equal(np.bincount(y), [15, 11, 20])
    apple = np.load(tmp_path / "apple.npy").reshape(-1, 28, 28)
    np.testing.assert_allclose(x[:15], apple / 127.5 - 1)
    xtr, ytr = load_dataset("quickdraw", data_dir=tmp_path, classes=["cat", "apple"])
    xte, yte = load_dataset("quickdraw", data_dir=tmp_path, split="test", classes=[0, 2])
    assert set(ytr) == {0, 2} and set(yte) == {0, 2}
    assert xtr.shape[0] + xte.shape[0] == 35 and xte.shape[0] == 1 + 2
    xl, yl = load_dataset("quickdraw", data_dir=tmp_path, limit=7, seed=1)
    assert xl.shape == (7, 20, 20) and np.all(np.diff(yl) >= 0)
    with pytest.raises(ValueError, match="unknown class"):
        load_dataset("quickdraw", data_dir=tmp_path, classes=["dog"])
    with pytest.raises(FileNotFoundError, match="npy"):
        load_dataset("quickdraw", data_dir=tmp_path / "empty")


def test_folder_dataset(tmp_path):
    for cls, val in (("x", 0), ("y", 255)):
        (tmp_path / cls).mkdir()
        for i in range(10):
            _save_png(tmp_path / cls / f"{i:02d}.png", np.full((12, 12), val, np.uint8))
    x, y = load_dataset("folder", data_dir=tmp_path, split="all", size=6)
    assert x.shape == (20, 6, 6)
    assert np.all(x[y == 0] == -1) and np.all(x[y == 1] == 1)
    assert data.dataset_class_names("folder", tmp_path) == ["x", "y"]
    assert data.dataset_class_names("fashion-mnist")[9] == "Ankle boot"
    xt, _ = load_dataset("folder", data_dir=tmp_path, split="test")
    assert xt.shape[0] == 2
    with pytest.raises(FileNotFoundError):
        load_dataset("folder")


def test_package_never_mentions_shared_path():
    pkg = Path(data.__file__).parent.parent  # the whole optdiff package
    for f in pkg.rglob("*.py"):
        assert "../shared" not in f.read_text(encoding="utf-8"), f


@pytest.mark.skipif(not Path(data.FASHION_MNIST_SYSTEM_DIR).is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_system_fashion_mnist():
    x, y = load_dataset("fashion-mnist", split="test", classes=[0, 1, 2], limit=30)
    assert x.shape == (30, 20, 20) and set(np.unique(y)) <= {0, 1, 2}
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.skipif(not os.environ.get("OPTDIFF_TEST_MNIST_DIR"), reason="OPTDIFF_TEST_MNIST_DIR not set")
def test_real_mnist_test_split():
    x, y = load_dataset("mnist", data_dir=os.environ["OPTDIFF_TEST_MNIST_DIR"], split="test", limit=25)
    assert x.shape == (25, 20, 20) and y.min() >= 0 and y.max() <= 9
