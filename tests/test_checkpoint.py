"""Tests for optdiff.diffusion.checkpoint: bit-exact round trip, atomic writes, clear errors."""

import json
import os

import numpy as np
import pytest

from optdiff.diffusion import checkpoint
from optdiff.diffusion.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEY,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

CONFIG = {"n": 100, "layers": 4, "sets": 10, "wavelength": 850e-9, "distances": [0.0342] * 4,
          "schedule": {"T": 1000, "kind": "linear"}, "name": "fashion", "flag": True, "none": None}


def sample_arrays():
    rng = np.random.default_rng(0)
    nan_payload = np.array([np.nan, -0.0, np.inf, 1e-310], dtype=np.float64)
    nan_payload.view(np.uint64)[0] = 0x7FF8DEADBEEF0001  # NaN with a payload
    return {
        "phases": rng.uniform(-np.pi, np.pi, (4, 10, 10)).astype(np.float32),
        "phases64": rng.standard_normal((2, 3, 3)),
        "special": nan_payload,
        "field": (rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4))).astype(np.complex64),
        "counts": np.arange(-5, 5, dtype=np.int8),
        "mask": rng.random((3, 3)) > 0.5,
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "u16": rng.integers(0, 65535, (2, 2, 2), dtype=np.uint16),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 7), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5))),
    }


def assert_bit_exact(a: np.ndarray, b: np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_bit_exact(tmp_path, compress):
    arrays = sample_arrays()
    meta = {"step": np.int64(1200), "loss": np.float32(0.25), "hist": np.arange(3), "path": tmp_path}
    p = save_checkpoint(tmp_path / "model.npz", CONFIG, arrays, meta, compress=compress)
    assert p == tmp_path / "model.npz" and p.is_file()
    config, loaded, meta2 = load_checkpoint(p)
    assert config == CONFIG
    assert meta2 == {"step": 1200, "loss": 0.25, "hist": [0, 1, 2], "path": str(tmp_path)}
    assert set(loaded) == set(arrays)
    for k in arrays:
        assert_bit_exact(loaded[k], arrays[k])
    assert loaded["big_endian"].dtype.str == ">f8"


def test_exact_path_no_suffix_and_permissions(tmp_path):
    p = save_checkpoint(tmp_path / "ckpt.bin", {"a": 1}, {"x": np.ones(2)}, None)
    assert p.name == "ckpt.bin" and not (tmp_path / "ckpt.bin.npz").exists()
    assert os.stat(p).st_mode & 0o777 == 0o644
    assert load_checkpoint(p)[2] == {}


def test_header_layout(tmp_path):
    p = save_checkpoint(tmp_path / "c.npz", {"n": 3}, {"w": np.zeros((2, 3), np.float32)}, {"m": 1})
    with np.load(p, allow_pickle=False) as z:
        header = json.loads(str(z[HEADER_KEY]))
    assert header["format"] == FORMAT_NAME == "optdiff-checkpoint"
    assert header["version"] == FORMAT_VERSION and isinstance(FORMAT_VERSION, int)
    assert header["config"] == {"n": 3} and header["meta"] == {"m": 1}
    assert header["arrays"] == {"w": {"dtype": "<f4", "shape": [2, 3]}}


def test_overwrite_replaces(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"v": 1}, {"x": np.zeros(3)}, {})
    save_checkpoint(p, {"v": 2}, {"y": np.ones(2)}, {})
    config, arrays, _ = load_checkpoint(p)
    assert config == {"v": 2} and set(arrays) == {"y"}
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def _old(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"v": 1}, {"x": np.arange(5.0)}, {"step": 1})
    return p, p.read_bytes()


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    p, before = _old(tmp_path)

    def half_then_fail(f, **kw):
        f.write(b"PK\x03\x04 partial garbage")
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(checkpoint.np, "savez", half_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(p, {"v": 2}, {"x": np.zeros(5)}, {})
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # temp file removed
    assert load_checkpoint(p)[0] == {"v": 1}


def test_failed_fsync_leaves_old_file_intact(tmp_path, monkeypatch):
    p, before = _old(tmp_path)

    def bad_fsync(fd):
        raise OSError(5, "I/O error (simulated)")

    monkeypatch.setattr(checkpoint.os, "fsync", bad_fsync)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(p, {"v": 2}, {"x": np.zeros(5)}, {})
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_invalid_inputs_do_not_touch_old_file(tmp_path):
    p, before = _old(tmp_path)
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(p, {}, {"o": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(ValueError, match="name"):
        save_checkpoint(p, {}, {"__config__": np.zeros(1)}, {})
    with pytest.raises(ValueError, match="name"):
        save_checkpoint(p, {}, {"a/b": np.zeros(1)}, {})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(p, {"bad": object()}, {}, {})
    with pytest.raises(FileNotFoundError):
        save_checkpoint(tmp_path / "nodir" / "c.npz", {}, {}, {})
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)
    assert issubclass(CheckpointError, ValueError)


def test_not_a_zip(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"hello, this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not an .npz/zip") as ei:
        load_checkpoint(p)
    assert str(p) in str(ei.value)
    q = tmp_path / "plain.npy"
    np.save(q, np.zeros(3))
    with pytest.raises(CheckpointError, match="not an .npz/zip"):
        load_checkpoint(q)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated(tmp_path, keep):
    p = save_checkpoint(tmp_path / "c.npz", CONFIG, sample_arrays(), {})
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    assert str(p) in str(ei.value)


def test_corrupted_array_bytes(tmp_path):
    p = save_checkpoint(tmp_path / "c.npz", {"n": 1}, {"w": np.zeros(4096)}, {})
    raw = bytearray(p.read_bytes())
    pos = raw.find(b"\x00" * 512) + 100  # inside the array payload
    raw[pos:pos + 8] = b"\xff" * 8
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(p)


def test_missing_header(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="header"):
        load_checkpoint(p)


def _write_with_header(path, header, arrays=None):
    arrays = arrays or {}
    np.savez(path, **arrays, **{HEADER_KEY: np.array(header if isinstance(header, str) else json.dumps(header))})


def test_other_format_or_version(tmp_path):
    p = tmp_path / "c.npz"
    base = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": {}, "meta": {}, "arrays": {}}
    _write_with_header(p, dict(base, format="other-format"))
    with pytest.raises(CheckpointError, match="other-format"):
        load_checkpoint(p)
    _write_with_header(p, dict(base, version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"version {FORMAT_VERSION + 1}"):
        load_checkpoint(p)
    _write_with_header(p, "{not json")
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(p)
    _write_with_header(p, dict(base, arrays={"w": {"dtype": "<f8", "shape": [3]}}))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(p)
    _write_with_header(p, dict(base, arrays={"w": {"dtype": "<f8", "shape": [4]}}), {"w": np.zeros(3)})
    with pytest.raises(CheckpointError, match="header says"):
        load_checkpoint(p)
    _write_with_header(p, dict(base), {"w": np.zeros(3)})  # header is valid
    with pytest.raises(CheckpointError, match="unexpected"):
        load_checkpoint(p)


def test_expect(tmp_path):
    p = save_checkpoint(tmp_path / "c.npz", CONFIG, {"w": np.zeros(2)}, {})
    config, _, _ = load_checkpoint(p, expect={"n": 100, "layers": 4, "sets": 10})
    assert config["layers"] == 4
    load_checkpoint(p, expect={"distances": (0.0342,) * 4})  # tuple == stored list
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p, expect={"n": 100, "layers": 5, "sets": 8})
    msg = str(ei.value)
    assert "layers: checkpoint has 4, expected 5" in msg
    assert "sets: checkpoint has 10, expected 8" in msg
    assert "n: checkpoint" not in msg
    with pytest.raises(CheckpointError, match="missing from the checkpoint config"):
        load_checkpoint(p, expect={"pitch": 9.2e-6})
