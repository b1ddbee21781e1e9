"""Checkpoints: one ``.npz`` file holding named arrays plus a JSON header.

Layout: a NumPy ``.npz`` (zip) archive whose members are the user's arrays and one extra
entry ``"__config__"``, a 0-d unicode array holding JSON::

    {"format": "optdiff-checkpoint", "version": 1,
     "config": {...}, "meta": {...},
     "arrays": {"name": {"dtype": "<f8", "shape": [4, 100, 100]}, ...}}

``config`` describes what the arrays mean (sizes, physics, schedule: what a loader checks
with ``expect``), ``meta`` is free-form (training step, loss, time, versions). Both must be
JSON-serialisable (numpy scalars and small arrays are converted; tuples come back as lists).
Files load without pickle. Writes are atomic: the archive is written to a temporary file in
the destination folder, fsync'ed, then renamed over the target with ``os.replace``, so a
crash or error mid-write leaves any previous checkpoint intact.

Temporary files are named ``.<name>.tmp-<pid>-<random>``. A process killed mid-write (kill -9,
power loss) leaves one behind; the next write of the same file, and
:func:`remove_stale_temporaries`, delete those whose writer is gone (see there).

Loading checks every member's CRC before parsing it, so any corruption of the file (a flipped
byte anywhere, truncation, another file type) is a :class:`CheckpointError`, never another
exception and never silently different arrays.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "HEADER_KEY", "CheckpointError",
           "save_checkpoint", "load_checkpoint", "atomic_write", "remove_stale_temporaries"]

FORMAT_NAME = "optdiff-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "__config__"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format/version, or does not match."""


def _as_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint path must be a file name (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.size > 4096:
            raise TypeError(f"array of size {obj.size} in config/meta: store it in arrays instead")
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _to_json(value: Any, what: str) -> Any:
    """Round-trip through JSON so callers get back exactly what ``load`` will return."""
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint {what} is not JSON serialisable: {exc}") from None


def save_checkpoint(path: str | os.PathLike, config: Mapping[str, Any],
                    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None,
                    compress: bool = False) -> Path:
    """Write ``arrays`` + header to ``path`` (exactly that name; no suffix is added).

    Parameters
    ----------
    config, meta
        JSON-serialisable dicts (``meta`` may be None -> ``{}``).
    arrays
        ``{name: ndarray}``; names are non-empty, contain no ``/`` or ``\\`` and do not start
        with ``"__"`` (reserved). Any numeric/bool dtype and shape; object arrays are refused
        (they would need pickle). Arrays are stored bit-exactly (dtype, byte order, shape).
    compress
        Use zip deflate (``np.savez_compressed``) instead of stored members.

    Returns the destination ``Path``. The parent folder must exist.
    """
    path = _as_path(path)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"checkpoint folder does not exist: {path.parent} (path {path})")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path is a directory: {path}")

    arrs: dict[str, np.ndarray] = {}
    manifest: dict[str, dict] = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("__"):
            raise ValueError(f"arrays: invalid checkpoint array name {name!r} (names are non-empty strings "
                             f"without '/' or '\\', not starting with '__')")
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} has object dtype; checkpoints store numeric arrays only")
        arrs[name] = a
        manifest[name] = {"dtype": a.dtype.str, "shape": list(a.shape)}
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
              "config": _to_json(dict(config), "config"), "meta": _to_json(dict(meta), "meta"),
              "arrays": manifest}
    header_arr = np.array(json.dumps(header, default=_json_default))

    saver = np.savez_compressed if compress else np.savez
    atomic_write(path, lambda f: saver(f, **arrs, **{HEADER_KEY: header_arr}), binary=True)
    return path


_TMP_TAG = ".tmp-"
_active_tmp: set[str] = set()       # temporaries this process is writing now (any thread)
_active_lock = threading.Lock()


def _tmp_prefix(name: str) -> str:
    return f".{name}{_TMP_TAG}"


def _proc_stat(pid: int):
    """Fields of /proc/<pid>/stat after the command name (None where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return raw[raw.rindex(b")") + 2:].split()
    except (OSError, ValueError):
        return None


def _boot_time():
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _writer_gone(pid: int, tmp_mtime: float) -> bool:
    """Whether the process that created a temporary (by its pid) can no longer be writing it."""
    if pid == os.getpid():
        return True  # our own leftover (writes in progress here are excluded by the caller)
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] in (b"Z", b"X"):  # killed, not yet reaped by its parent
        return True
    try:  # a pid reused by a process that started after the temporary was last written
        btime = _boot_time()
        started = btime + int(stat[19]) / os.sysconf("SC_CLK_TCK") if btime is not None else None
    except (ValueError, IndexError, OSError):
        started = None
    return started is not None and started > tmp_mtime + 2.0


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporaries that interrupted :func:`atomic_write` calls left behind.

    ``path``: the target file (only its ``.<name>.tmp-<pid>-*`` temporaries are considered) or a
    folder (every ``.*.tmp-<pid>-*`` in it). A temporary is stale when its writer process is
    dead (or a zombie), is this process (and the write is not in progress in another thread),
    or its pid now belongs to a process started after the temporary was written. Temporaries
    of other live writers are kept. Returns the removed paths; never raises for a file that
    vanishes or cannot be removed.
    """
    path = Path(path)
    folder, prefix = (path, ".") if path.is_dir() else (path.parent, _tmp_prefix(path.name))
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        name = e.name
        if not name.startswith(prefix) or _TMP_TAG not in name:
            continue
        pid_text = name.rsplit(_TMP_TAG, 1)[1].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        full = os.path.join(folder, name)
        with _active_lock:
            if full in _active_tmp:
                continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            mtime = e.stat(follow_symlinks=False).st_mtime
            if _writer_gone(int(pid_text), mtime):
                os.unlink(full)
                removed.append(Path(full))
        except OSError:
            continue
    return removed


def atomic_write(path, write, binary: bool = False) -> None:
    """Write ``path`` all or nothing: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced and renamed over ``path``; on any error the old file is left intact.
    Stale temporaries of ``path`` left by killed writers are removed first."""
    path = Path(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path.name)}{os.getpid()}-", dir=path.parent)
    with _active_lock:
        _active_tmp.add(tmp)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        with _active_lock:
            _active_tmp.discard(tmp)
    try:  # make the rename itself durable (best effort; not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member: its bytes are read whole (the CRC is checked) before they are parsed,
    and the header must account for exactly the bytes that follow it."""
    data = zf.read(info)                        # BadZipFile on a CRC mismatch
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays are not stored in checkpoints")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(data) - f.tell():
        raise ValueError(f"member {info.filename!r}: header says {shape} {dtype}, "
                         f"but {len(data) - f.tell()} data bytes follow")
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _read_archive(path: Path) -> dict:
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected archive member {info.filename!r}")
            name = info.filename[:-4]
            if name in out:
                raise ValueError(f"archive member {info.filename!r} appears twice")
            out[name] = _read_member(zf, info)
    return out


def load_checkpoint(path: str | os.PathLike, expect: Mapping[str, Any] | None = None):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    expect
        Optional ``{config_key: value}`` that must match the stored config (compared after a
        JSON round trip, so tuples equal lists), e.g. ``{"n": 100, "layers": 4, "sets": 10}``.

    Returns
    -------
    (config: dict, arrays: dict[str, ndarray], meta: dict); arrays are fully loaded (the file
    is closed) and bit-identical to what was saved.

    Raises
    ------
    CheckpointError (a ``ValueError``) naming the file and the problem: not a file, not an
    npz/zip archive (corrupt or truncated), no ``__config__`` header or a malformed one,
    another format or version, arrays missing or differing from the header, or config
    values differing from ``expect`` (every differing key with both values).
    """
    path = _as_path(path)
    if expect is not None and not isinstance(expect, Mapping):
        raise TypeError(f"expect must be a dict of config values (or None), got {type(expect).__name__}")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a regular file: {path}")
    try:
        is_zip = zipfile.is_zipfile(path)
    except Exception:
        is_zip = False
    if not is_zip:
        raise CheckpointError(
            f"{path}: not an optdiff checkpoint (not an .npz/zip archive; the file is corrupt, "
            f"truncated or of another type)")
    try:
        arrays = _read_archive(path)
    except Exception as exc:  # whatever a damaged archive makes zipfile or NumPy raise
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})"[:2000]) from None
    if HEADER_KEY not in arrays:
        raise CheckpointError(
            f"{path}: .npz archive without a '{HEADER_KEY}' header: not an optdiff checkpoint")
    raw_header = arrays.pop(HEADER_KEY)

    try:
        if raw_header.shape != () or raw_header.dtype.kind != "U":
            raise ValueError("header is not a string")
        header = json.loads(str(raw_header))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: malformed '{HEADER_KEY}' header ({exc})") from None
    fmt, ver = header.get("format"), header.get("version")
    if fmt != FORMAT_NAME:
        raise CheckpointError(f"{path}: format is {fmt!r}, expected {FORMAT_NAME!r}")
    if ver != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ver!r}; this optdiff reads version {FORMAT_VERSION}")
    config, meta, manifest = header.get("config"), header.get("meta"), header.get("arrays")
    if not isinstance(config, dict) or not isinstance(meta, dict) or not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: header lacks the 'config', 'meta' or 'arrays' objects")

    missing = sorted(set(manifest) - set(arrays))
    extra = sorted(set(arrays) - set(manifest))
    if missing or extra:
        raise CheckpointError(f"{path}: arrays do not match the header (missing: {missing}, unexpected: {extra})")
    for name, spec in manifest.items():
        a = arrays[name]
        if not isinstance(spec, dict):
            raise CheckpointError(f"{path}: header entry of array {name!r} is not an object")
        if a.dtype.str != spec.get("dtype") or list(a.shape) != spec.get("shape"):
            raise CheckpointError(
                f"{path}: array {name!r} is {a.dtype.str} {list(a.shape)}, header says "
                f"{spec.get('dtype')} {spec.get('shape')}")

    if expect:
        want = _to_json(dict(expect), "expect")
        diffs = []
        for key, value in want.items():
            if key not in config:
                diffs.append(f"{key}: missing from the checkpoint config, expected {value!r}")
            elif config[key] != value:
                diffs.append(f"{key}: checkpoint has {config[key]!r}, expected {value!r}")
        if diffs:
            raise CheckpointError(f"{path}: checkpoint does not match the requested model: " + "; ".join(diffs))
    return config, arrays, meta
