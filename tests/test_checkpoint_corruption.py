"""Checkpoint robustness: every one-byte corruption is a CheckpointError (or harmless), the CLI
reports it in one line, and temporaries left by a writer killed mid-write are cleaned up."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optdiff.cli import main
from optdiff.diffusion.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)

TINY = str(Path(__file__).resolve().parents[1] / "examples" / "tiny.toml")
CONFIG = {"n": 4, "layers": 2, "name": "tiny"}
META = {"step": 7, "loss": 0.5}


def small_arrays():
    return {"phases": np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4),
            "scale": np.array([[1.5, -2.0]]), "t": np.arange(3, dtype=np.int64)}


@pytest.mark.parametrize("compress", [False, True])
def test_every_one_byte_corruption_is_a_checkpoint_error_or_harmless(tmp_path, compress):
    src = save_checkpoint(tmp_path / "c.npz", CONFIG, small_arrays(), META, compress=compress)
    raw = src.read_bytes()
    want = small_arrays()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(raw)
    outcomes = {"ok": 0, "error": 0}
    fd = os.open(bad, os.O_RDWR)
    try:
        # every byte, every single-bit flip and the complement: covers the zip headers (version,
        # flags, method, sizes, CRCs, offsets), the .npy headers and the payloads
        masks = (1, 32, 64, 255) if compress else (1, 2, 4, 8, 16, 32, 64, 128, 255)
        for pos in range(len(raw)):
            for mask in masks:
                os.pwrite(fd, bytes([raw[pos] ^ mask]), pos)
                try:
                    config, arrays, meta = load_checkpoint(bad)
                except CheckpointError as exc:
                    assert str(bad) in str(exc) and "\n" not in str(exc)
                    outcomes["error"] += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - the point of the test
                    pytest.fail(f"byte {pos} ^ {mask:#x}: {type(exc).__name__}: {exc}")
                finally:
                    os.pwrite(fd, raw[pos:pos + 1], pos)
                _check_same(config, arrays, meta, want, (pos, mask))
                outcomes["ok"] += 1
    finally:
        os.close(fd)
    assert outcomes["error"] > 0.5 * len(masks) * len(raw)


def _check_same(config, arrays, meta, want, where):
    assert config == CONFIG and meta == META, where
    assert sorted(arrays) == sorted(want), where
    for k, a in want.items():
        assert arrays[k].dtype == a.dtype and arrays[k].shape == a.shape, (where, k)
        assert arrays[k].tobytes() == a.tobytes(), (where, k)


def _central_entry(raw: bytes) -> int:
    return raw.index(b"PK\x01\x02")


# (offset within the first central-directory entry, new byte): what used to escape the loader
ZIP_FIELDS = {"version needed": (6, 0xFF),      # NotImplementedError: zip file version
              "encrypted flag": (8, 0x01),       # RuntimeError: password required
              "patched-data flag": (8, 0x20),    # NotImplementedError
              "compression method": (10, 0x63)}  # NotImplementedError: method not supported


@pytest.mark.parametrize("field", sorted(ZIP_FIELDS))
def test_zip_directory_corruption(tmp_path, field):
    p = save_checkpoint(tmp_path / "c.npz", CONFIG, small_arrays(), META)
    raw = bytearray(p.read_bytes())
    off, value = ZIP_FIELDS[field]
    raw[_central_entry(raw) + off] = value
    p.write_bytes(raw)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(p)


def _corrupt_copy(src: Path, dst: Path) -> Path:
    raw = bytearray(src.read_bytes())
    raw[_central_entry(raw) + 6] = 0xFF
    dst.write_bytes(raw)
    return dst


@pytest.mark.parametrize("command", ["sample", "denoise", "show", "train --resume"])
def test_cli_reports_a_corrupt_checkpoint_in_one_line(tmp_path, capsys, command):
    good = save_checkpoint(tmp_path / "good.npz", CONFIG, small_arrays(), META)
    run = tmp_path / "run"
    run.mkdir()
    bad = _corrupt_copy(good, run / "checkpoint.npz")
    if command == "train --resume":
        argv = ["train", "--config", TINY, "--out", str(run), "--resume", "--set", "optics.n=24"]
    else:
        argv = [command, str(bad)] + (["--out", str(tmp_path / "o")] if command != "denoise" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("optdiff: error: ")]
    assert len(errors) == 1 and errors[0] == err[-1] and "Traceback" not in "\n".join(err), err
    assert "corrupt" in errors[0] and str(bad) in errors[0]


# ------------------------------------------------------------------------- stale temporaries
def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_are_removed_live_writers_kept(tmp_path):
    target = tmp_path / "checkpoint.npz"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        names = {
            "dead": f".checkpoint.npz.tmp-{_dead_pid()}-abc",
            "mine": f".checkpoint.npz.tmp-{os.getpid()}-def",
            "live": f".checkpoint.npz.tmp-{sleeper.pid}-ghi",
            "reused": f".checkpoint.npz.tmp-{sleeper.pid}-jkl",   # older than the process with its pid
            "other_file": f".summary.json.tmp-{_dead_pid()}-mno",
            "not_ours": ".checkpoint.npz.tmp-notapid",
            "plain": "checkpoint.npz.tmp-1-x",
        }
        for n in names.values():
            (tmp_path / n).write_bytes(b"partial")
        hour_ago = time.time() - 3600
        os.utime(tmp_path / names["reused"], (hour_ago, hour_ago))

        removed = {p.name for p in remove_stale_temporaries(target)}
        assert removed == {names["dead"], names["mine"], names["reused"]}
        left = set(os.listdir(tmp_path))
        assert {names["live"], names["other_file"], names["not_ours"], names["plain"]} <= left
        # a folder: every stale temporary in it, whatever file it was for
        removed = {p.name for p in remove_stale_temporaries(tmp_path)}
        assert removed == {names["other_file"]}
        # a save of the checkpoint cleans its own stale temporaries too
        (tmp_path / names["dead"]).write_bytes(b"partial")
        save_checkpoint(target, CONFIG, small_arrays(), META)
        assert not (tmp_path / names["dead"]).exists() and (tmp_path / names["live"]).exists()
    finally:
        sleeper.kill()
        sleeper.wait()


WRITER = r"""
import sys, time
import numpy as np
from optdiff.diffusion import checkpoint

def slow(f, **kw):
    f.write(b"PK\x03\x04 half an archive")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

np.savez = slow
checkpoint.save_checkpoint(sys.argv[1], {"n": 1}, {"x": np.zeros(3)}, {})
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_writer_killed_mid_write_leaves_a_temporary_the_next_save_removes(tmp_path):
    target = tmp_path / "checkpoint.npz"
    save_checkpoint(target, CONFIG, small_arrays(), META)
    before = target.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, env=env, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    orphans = [n for n in os.listdir(tmp_path) if n.startswith(".checkpoint.npz.tmp-")]
    assert orphans == [n for n in orphans if f"-{p.pid}-" in n] and len(orphans) == 1
    assert target.read_bytes() == before                       # the old checkpoint is intact
    load_checkpoint(target)
    save_checkpoint(target, CONFIG, small_arrays(), META)      # the next write cleans up
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]
