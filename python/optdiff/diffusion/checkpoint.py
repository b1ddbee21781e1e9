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
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "HEADER_KEY", "CheckpointError",
           "save_checkpoint", "load_checkpoint"]

FORMAT_NAME = "optdiff-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "__config__"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format/version, or does not match."""


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
    path = Path(path)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"checkpoint folder does not exist: {path.parent}")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path is a directory: {path}")

    arrs: dict[str, np.ndarray] = {}
    manifest: dict[str, dict] = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("__"):
            raise ValueError(f"invalid checkpoint array name {name!r}")
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


def atomic_write(path, write, binary: bool = False) -> None:
    """Write ``path`` all or nothing: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced and renamed over ``path``; on any error the old file is left intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    try:  # make the rename itself durable (best effort; not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a regular file: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not an optdiff checkpoint (not an .npz/zip archive; the file is corrupt, "
            f"truncated or of another type)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if HEADER_KEY not in names:
                raise CheckpointError(
                    f"{path}: .npz archive without a '{HEADER_KEY}' header: not an optdiff checkpoint")
            raw_header = z[HEADER_KEY]
            arrays = {k: z[k] for k in names if k != HEADER_KEY}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from None

    try:
        if raw_header.shape != () or raw_header.dtype.kind != "U":
            raise ValueError("header is not a string")
        header = json.loads(str(raw_header))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except ValueError as exc:
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
