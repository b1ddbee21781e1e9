"""Fuzz cases of everything that touches files or text: checkpoints, data loaders, configuration
and the command line (``optdiff.cli.main``)."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np

from optdiff.config import Config, apply_overrides, config_to_toml, load_config
from optdiff.data import load_dataset, read_idx, read_image_folder, read_quickdraw
from optdiff.diffusion.checkpoint import load_checkpoint, save_checkpoint

from .cases import CLEAN, Builder, Case, call_desc, entry, expect_array
from .values import NON_FINITE, Opaque, pick, random_real

FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "examples" / "tiny.toml")
_count = itertools.count()


def fresh(ctx) -> Path:
    d = Path(ctx.tmp) / f"d{next(_count)}"
    d.mkdir()
    return d


def _bitwise(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _corrupt(rng, raw: bytes) -> bytes:
    b = bytearray(raw)
    if rng.random() < 0.2:
        return bytes(b[: int(rng.integers(0, len(b)))])
    for _ in range(int(rng.integers(1, 4))):
        b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
    return bytes(b)


# ----------------------------------------------------------------------------- checkpoints
def _good_arrays(rng):
    return {"phases": random_real(rng, (2, 3, 3), np.float32), "step": np.arange(4, dtype=np.int64),
            "field": (random_real(rng, (2,), np.float64) + 1j).astype(np.complex64), "mask": np.array([True, False])}


@entry("save_checkpoint", weight=3)
def gen_save(rng, ctx):
    d = fresh(ctx)
    b = Builder(rng)
    b.arg("path", d / "c.npz", bad=[("nofolder", lambda r: d / "missing" / "c.npz"), ("isdir", lambda r: d),
                                    ("type", lambda r: pick(r, [None, 3, 1.5, ["c.npz"]]))])
    b.arg("config", {"n": 3, "name": "x", "vals": [1.0, 2.5], "flag": True},
          bad=[("type", lambda r: pick(r, [[1, 2], None, "cfg", 3])), ("object", lambda r: {"x": Opaque()}),
               ("big", lambda r: {"big": np.zeros(5000)})],
          odd=[("nan", lambda r: {"v": float("nan")}), ("intkey", lambda r: {1: "a"}), ("tuple", lambda r: {"t": (1, 2)})])
    arrays = _good_arrays(rng)
    b.arg("arrays", arrays, bad=[("name", lambda r: {pick(r, ["__x", "a/b", "", "a\\b"]): np.zeros(2)}),
                                 ("key", lambda r: {3: np.zeros(2)}), ("object", lambda r: {"o": np.array([{}, 1], dtype=object)}),
                                 ("type", lambda r: pick(r, [[("a", np.zeros(2))], None, "arrays", 3]))],
          odd=[("unicode", lambda r: {"s": np.array(["ab", "c"])}), ("empty", lambda r: {}),
               ("list", lambda r: {"l": [1.0, 2.0]})])
    b.arg("meta", None, bad=[("type", lambda r: pick(r, [[1], "meta", 3])), ("object", lambda r: {"o": Opaque()})])
    b.arg("compress", pick(rng, [False, True]))
    v, kind, names, tags = b.finish()

    def check(p):
        cfg, arrs, meta = load_checkpoint(p)
        if cfg != json.loads(json.dumps(v["config"])):
            return "wrong_value", f"config {cfg!r} != saved {v['config']!r}"
        want = {k: np.asarray(a) for k, a in v["arrays"].items()}
        if sorted(arrs) != sorted(want) or not all(_bitwise(arrs[k], want[k]) for k in want):
            return "wrong_value", "arrays differ after the round trip"
        return None
    return Case("save_checkpoint", kind, lambda: save_checkpoint(v["path"], v["config"], v["arrays"], v["meta"],
                compress=v["compress"]), call_desc("save_checkpoint", v), names, tags, check,
                allowed=CLEAN + FILE_ERRORS)


@entry("load_checkpoint", weight=4)
def gen_load(rng, ctx):
    d = fresh(ctx)
    arrays = _good_arrays(rng)
    good = save_checkpoint(d / "c.npz", {"n": 3, "layers": 2}, arrays, {"step": 1}, compress=bool(rng.integers(2)))
    raw = good.read_bytes()
    b = Builder(rng, p_bad=0.35, p_odd=0.45)

    def corrupted(r):
        q = d / "bad.npz"
        q.write_bytes(_corrupt(r, raw))
        return q

    def other(r):
        q = d / "other.npz"
        q.write_bytes(pick(r, [b"", b"PK\x05\x06" + b"\0" * 18, b"not a zip" * 30, raw[:40]]))
        return q
    b.arg("path", good, bad=[("missing", lambda r: d / "missing.npz"), ("isdir", lambda r: d), ("junk", other),
                             ("type", lambda r: pick(r, [None, 3, 2.5, [str(good)]]))],
          odd=[("corrupt", corrupted)])
    b.arg("expect", pick(rng, [None, {"n": 3}, {"layers": 2, "n": 3}]),
          bad=[("mismatch", lambda r: pick(r, [{"n": 4}, {"missing_key": 1}])), ("type", lambda r: pick(r, ["abc", [1, 2], 3])),
               ("object", lambda r: {"n": Opaque()})])
    v, kind, names, tags = b.finish()

    def check(res):
        cfg, arrs, meta = res
        if cfg != {"n": 3, "layers": 2} or meta != {"step": 1}:
            return "wrong_value", f"header differs: {cfg} {meta}"
        if sorted(arrs) != sorted(arrays) or not all(_bitwise(arrs[k], arrays[k]) for k in arrays):
            return "wrong_value", "a corrupted checkpoint loaded with different arrays"
        return None
    return Case("load_checkpoint", kind, lambda: load_checkpoint(v["path"], expect=v["expect"]),
                call_desc("load_checkpoint", v), names, tags, check)


# ---------------------------------------------------------------------------- data loaders
_IDX = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_bytes(rng):
    code = int(pick(rng, list(_IDX)))
    dims = tuple(int(x) for x in rng.integers(1, 5, size=int(rng.integers(1, 4))))
    data = (rng.standard_normal(dims) * 50).astype(_IDX[code])
    head = bytes([0, 0, code, len(dims)]) + b"".join(int(x).to_bytes(4, "big") for x in dims)
    return head, data


@entry("read_idx", weight=2)
def gen_read_idx(rng, ctx):
    d = fresh(ctx)
    head, data = _idx_bytes(rng)
    gz = bool(rng.integers(2))
    pack = (lambda x: gzip.compress(x, mtime=0)) if gz else (lambda x: x)
    p = d / "x.idx"
    p.write_bytes(pack(head + data.tobytes()))

    def spoil(kind):
        def make(r):
            body = head + data.tobytes()
            body = {"magic": b"\x01" + body[1:], "code": body[:2] + b"\x07" + body[3:], "ndim0": body[:3] + b"\x00" + body[4:],
                    "ndim17": body[:3] + b"\x11" + body[4:], "truncated": body[:-1], "trailing": body + b"\0",
                    "hugedims": body[:4] + b"\xff\xff\xff\xff" * (len(body[4:len(head)]) // 4) + body[len(head):],
                    "empty": b"", "short": body[:3]}[kind]
            q = d / f"{kind}.idx"
            q.write_bytes(pack(body) if kind != "badgzip" else b"\x1f\x8b" + body)
            return q
        return make
    b = Builder(rng, p_odd=0.0)
    b.arg("path", p, bad=[(k, spoil(k)) for k in ("magic", "code", "ndim0", "ndim17", "truncated", "trailing",
                                                     "hugedims", "empty", "short")]
          + [("badgzip", lambda r: (d / "g.idx").write_bytes(b"\x1f\x8b\x08garbage") and d / "g.idx"),
             ("missing", lambda r: d / "nope.idx"), ("type", lambda r: pick(r, [None, 3]))])
    v, kind, names, tags = b.finish()
    want = data.astype(data.dtype.newbyteorder("="))
    return Case("read_idx", kind, lambda: read_idx(v["path"]), call_desc("read_idx", v), names, tags,
                lambda a: expect_array(a, want.shape, want.dtype, finite=False) or (
                    None if np.array_equal(a, want) else ("wrong_value", "values differ")),
                allowed=CLEAN + FILE_ERRORS)


@entry("read_quickdraw", weight=2)
def gen_quickdraw(rng, ctx):
    d = fresh(ctx)
    K = int(rng.integers(1, 6))
    x = rng.integers(0, 256, size=(K, 784), dtype=np.uint8)
    p = d / "cat.npy"
    np.save(p, x)

    def bad_file(kind):
        def make(r):
            q = d / f"{kind}.npy"
            if kind == "junk":
                q.write_bytes(b"\x93NUMPY garbage" * 3)
            else:
                np.save(q, {"shape": x[:, :783], "dtype": x.astype(np.float32), "rank": x.reshape(-1),
                            "object": np.array([{}, 1], dtype=object)}[kind], allow_pickle=True)
            return q
        return make
    b = Builder(rng)
    b.arg("path", p, bad=[(k, bad_file(k)) for k in ("shape", "dtype", "rank", "object", "junk")]
          + [("missing", lambda r: d / "nope.npy"), ("type", lambda r: pick(r, [None, 3]))])
    idx = pick(rng, [None, [0], list(range(K))[::-1]])
    b.arg("indices", idx, bad=[("bad", lambda r: pick(r, [[1.5], [True], [K], [-1], "0", [[0, "a"]], [None]]))],
          odd=[("numpy", lambda r: np.arange(K, dtype=np.uint16)), ("empty", lambda r: [])])
    v, kind, names, tags = b.finish()

    def check(a):
        rows = x if v["indices"] is None else x[np.asarray(v["indices"], dtype=np.int64).reshape(-1)]
        return expect_array(a, (rows.shape[0], 28, 28), np.uint8) or (
            None if np.array_equal(a.reshape(-1, 784), rows) else ("wrong_value", "rows differ"))
    return Case("read_quickdraw", kind, lambda: read_quickdraw(v["path"], v["indices"]),
                call_desc("read_quickdraw", v), names, tags, check, allowed=CLEAN + FILE_ERRORS)


def _png_folder(rng, d: Path, sizes):
    from PIL import Image

    for i, s in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, size=(s, s), dtype=np.uint8)).save(d / f"im{i}.png")
    return d


@entry("read_image_folder", weight=1)
def gen_image_folder(rng, ctx):
    d = fresh(ctx)
    (d / "ok").mkdir()
    folder = _png_folder(rng, d / "ok", [5, 5, 5])
    b = Builder(rng, p_odd=0.15)

    def mixed(r):
        (d / "mixed").mkdir(exist_ok=True)
        return _png_folder(r, d / "mixed", [5, 7])

    def broken(r):
        (d / "broken").mkdir(exist_ok=True)
        _png_folder(r, d / "broken", [5])
        (d / "broken" / "zz.png").write_bytes(b"\x89PNG not really")
        return d / "broken"
    b.arg("path", folder, bad=[("empty", lambda r: (d / "empty").mkdir() or d / "empty"), ("broken", broken),
                               ("missing", lambda r: d / "nope"), ("type", lambda r: pick(r, [None, 3]))],
          odd=[("mixed", mixed)])   # images of two sizes: refused without size=, resized with it
    b.arg("size", pick(rng, [None, 4, 8]), bad=[("bad", lambda r: pick(r, [0, -2, 2.5, True, "8", (3, 1.5)]))])
    v, kind, names, tags = b.finish()
    if kind == "odd":
        names = ("size",)
    count = 2 if kind == "odd" else 3
    shape = (count, 5, 5) if v["size"] is None else (count, v["size"], v["size"])
    return Case("read_image_folder", kind, lambda: read_image_folder(v["path"], size=v["size"]),
                call_desc("read_image_folder", v), names, tags, lambda a: expect_array(a, shape, np.uint8),
                allowed=CLEAN + FILE_ERRORS)


@entry("load_dataset", weight=0.7)
def gen_load_dataset(rng, ctx):
    b = Builder(rng, p_odd=0.1)
    b.arg("name", "digits", bad=[("bad", lambda r: pick(r, ["imagenet", None, 3, ""]))])
    b.arg("split", pick(rng, ["train", "test", "all", "t10k"]), bad=[("bad", lambda r: pick(r, ["val", None, 1]))])
    b.arg("classes", pick(rng, [None, [0, 1], ["3"], (np.int64(2),)]),
          bad=[("bad", lambda r: pick(r, [["nope"], [99], [1.5], "012", [True], 3, [None]]))])
    b.arg("size", pick(rng, [8, 12, None]), bad=[("bad", lambda r: pick(r, [0, -1, 1.5, True, "8", 10**400]))])
    b.arg("limit", pick(rng, [None, 0, 5, 30]), bad=[("bad", lambda r: pick(r, [-1, 1.5, True, "5"]))],
          odd=[("huge", lambda r: pick(r, [2**62, 10**400]))])
    b.arg("seed", int(rng.integers(0, 100)), bad=[("bad", lambda r: pick(r, [-1, 1.5, True, "1", None]))],
          odd=[("huge", lambda r: 2**64 + 4)])
    v, kind, names, tags = b.finish()

    def check(res):
        x, y = res
        s = v["size"] if v["size"] is not None else 8
        p = expect_array(x, (x.shape[0], s, s), np.float64) or expect_array(y, (x.shape[0],), np.int64, name="labels")
        if p:
            return p
        if x.shape[0] == 0 or np.max(np.abs(x)) > 1:
            return "wrong_value", "images empty or outside [-1, 1]"
        return None
    return Case("load_dataset", kind, lambda: load_dataset(**v), call_desc("load_dataset", v), names, tags, check,
                allowed=CLEAN + FILE_ERRORS)


# ---------------------------------------------------------------------------- configuration
_GOOD = {("optics", "n"): [24, 64], ("optics", "method"): ["fresnel"], ("optics", "padding"): [1],
         ("optics", "wavelength"): [633e-9], ("model", "sets"): [5], ("model", "readout"): ["scalar"],
         ("diffusion", "T"): [50], ("diffusion", "schedule"): ["cosine"], ("data", "limit"): [10],
         ("data", "classes"): [[0, 1], ["3"]], ("train", "steps"): [0, 2**31 - 1], ("train", "seed"): [2**63 - 1],
         ("train", "set_weights"): [[1.0] * 10], ("sample", "sampler"): ["ddim"], ("sample", "eta"): [1]}


def _bad_value(rng, default):
    if isinstance(default, bool):
        return pick(rng, ["yes", 1, None, 0.0])
    if isinstance(default, int):
        return pick(rng, ["3", 3.5, True, None, -1, 2**64 + 4, 10**400, float("nan")])
    if isinstance(default, float):
        return pick(rng, ["x", None, True] + NON_FINITE + [10**400])
    if isinstance(default, str):
        return pick(rng, [3, None, ["a"]])
    return pick(rng, ["abc", 3, {"a": 1}, [float("nan")]])


def _config_arg(b: Builder, rng):
    sections = {n: f.default_factory() for n, f in ((f.name, f) for f in dataclasses.fields(Config))}
    sec = pick(rng, sorted(sections))
    keys = [f.name for f in dataclasses.fields(sections[sec]) if f.name not in ("data_dir", "camera_flip", "x0_sets")]
    key = pick(rng, keys)
    default = getattr(sections[sec], key)
    good = pick(rng, _GOOD.get((sec, key), [default]))
    bad = [("value", lambda r: {sec: {key: _bad_value(r, default)}}), ("unknownkey", lambda r: {sec: {key + "x": 1}}),
           ("unknownsection", lambda r: {sec + "x": {}}), ("section", lambda r: {sec: pick(r, [3, "x", [1]])}),
           ("type", lambda r: pick(r, [None, "cfg", [1]]))]
    b.arg("d", {sec: {key: good}} if good is not None else {}, bad=bad)
    return sec, key


@entry("Config.from_dict", weight=3)
def gen_from_dict(rng, ctx):
    b = Builder(rng, p_odd=0.0)
    sec, key = _config_arg(b, rng)
    v, kind, names, tags = b.finish()
    if kind == "bad":
        names = (key, sec, "configuration")
    return Case("Config.from_dict", kind, lambda: Config.from_dict(v["d"]), call_desc("Config.from_dict", v),
                names, tags, lambda c: None if isinstance(c, Config) else ("wrong_shape", type(c).__name__))


def _toml(x):
    """TOML text of a value (None where TOML has no such value)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return repr(float(x))
    if isinstance(x, str):
        return json.dumps(x)
    if isinstance(x, (list, tuple)):
        items = [_toml(y) for y in x]
        return None if None in items else "[" + ", ".join(items) + "]"
    if isinstance(x, dict):
        items = [f"{k} = {_toml(y)}" for k, y in x.items()]
        return None if any(i.endswith("= None") for i in items) else "{" + ", ".join(items) + "}"
    return None


@entry("load_config/apply_overrides", weight=3)
def gen_load_config(rng, ctx):
    d = fresh(ctx)
    b = Builder(rng, p_odd=0.0)
    sec, key = _config_arg(b, rng)
    ov = pick(rng, [[], ["train.steps=3"], ["optics.n=32", "sample.sampler=\"ddim\"", "sample.steps=20"]])
    b.arg("overrides", ov, bad=[("bad", lambda r: pick(r, [["nosection"], ["optics.n"], ["bogus.x=1"], [3],
                                                           "optics.n=5", ["optics.n=abc"], ["train.steps=1e400"],
                                                           ["optics.wavelength=1" + "0" * 400]]))])
    via_file = bool(rng.integers(2))
    v, kind, names, tags = b.finish()
    if "d" in names and "overrides" not in names:   # an override must not repair the spoilt value
        v["overrides"] = [o for o in v["overrides"] if not o.startswith(f"{sec}.{key}=")]
    if kind == "bad":
        names = (key, sec, "configuration", "override", "overrides", "n", "steps", "wavelength", "x")
    p = d / "c.toml"
    if via_file and not (isinstance(v["d"], dict) and all(isinstance(x, dict) for x in v["d"].values())
                         and all(_toml(x) is not None for t in v["d"].values() for x in t.values())):
        names += ("=" + str(p),)   # the file itself is garbage: the message names the file

    def call():
        if not via_file:
            return Config.from_dict(apply_overrides(v["d"], v["overrides"]))
        if isinstance(v["d"], dict) and all(isinstance(s, dict) for s in v["d"].values()):
            try:
                cfg = Config.from_dict(v["d"], validate=False)
                text = config_to_toml(cfg)
            except Exception:  # noqa: BLE001 - not a Config: write the raw pairs
                text = "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {_toml(x)}" for k, x in t.items())
                                 for s, t in v["d"].items())
            p.write_text(text)
        else:
            p.write_bytes(pick(rng, [b"[optics\nn = ", b"\xff\xfe\x00[optics]", b"optics = 3"]))
        return load_config(p, v["overrides"])
    return Case("load_config" if via_file else "apply_overrides", kind, call,
                f"{'load_config' if via_file else 'apply_overrides'}" + call_desc("", v), names, tags,
                lambda c: None if isinstance(c, Config) else ("wrong_shape", type(c).__name__))


# ----------------------------------------------------------------------------------- CLI
class CliError(ValueError):
    """The command line exited with an error status and a one-line message."""


def run_cli(argv):
    from optdiff.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
    text = err.getvalue()
    if "Traceback" in text:
        raise RuntimeError(f"traceback on stderr: {text[-500:]}")
    if rc:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        if not re.match(r"optdiff( \w+)?: error: ", last):
            raise RuntimeError(f"exit status {rc} without a one-line error: {text[-300:]!r}")
        raise CliError(last)
    return rc


def trained(ctx):
    def make():
        from optdiff.diffusion.trainer import Trainer

        d = fresh(ctx)
        x = np.clip(np.random.default_rng(0).standard_normal((40, 6, 6)) * 0.5, -1, 1)
        np.save(d / "data.npy", x)
        cfg = Config.from_dict({"optics": {"n": 16, "upsample": 2, "distance": 3e-3, "layers": 2},
                                "model": {"image_size": 6, "sets": 2}, "diffusion": {"T": 12, "beta_end": 0.2},
                                "data": {"dataset": "npy", "data_dir": str(d / "data.npy"), "val_count": 8},
                                "train": {"steps": 2, "batch": 4, "threads": 1, "progress": False, "val_every": 0,
                                          "ckpt_every": 0}, "sample": {"count": 2, "batch": 2}})
        Trainer(cfg, d / "run").fit()
        return d / "run" / "checkpoint.npz", d / "data.npy"
    return ctx.get("trained", make)


_BAD_FLAGS = {
    "train": [("n", ["--n", "-5"]), ("n", ["--n", "abc"]), ("n", ["--n", "99999999999999999999"]),
              ("steps", ["--steps", "1.5"]), ("steps", ["--steps", "-1"]), ("steps", ["--steps", "99999999999999999999"]),
              ("threads", ["--threads", "0"]), ("lr", ["--lr", "nan"]), ("lr", ["--lr", "-1"]),
              ("batch", ["--set", "train.batch=0"]), ("wavelength", ["--set", "optics.wavelength=\"x\""]),
              ("override", ["--set", "nosection"]), ("limit", ["--limit", "-3"]),
              ("resume", ["--resume", "/nonexistent/c.npz"]), ("dataset", ["--dataset", "imagenet"]),
              ("seed", ["--seed", "-1"]), ("planner", ["--planner", "fast"])],
    "sample": [("count", ["--count", "0"]), ("count", ["--count", "99999999999999999999"]),
               ("steps", ["--sample-steps", "0"]), ("steps", ["--sampler", "ddim", "--sample-steps", "999"]),
               ("eta", ["--eta", "nan"]), ("seed", ["--seed", "-1"]), ("sample", ["--set", "optics.n=5"]),
               ("threads", ["--threads", "0"]), ("count", ["--count", "x"])],
    "denoise": [("samples", ["--samples", "0"]), ("samples", ["--samples", "-3"]), ("samples", ["--samples", "1.5"]),
                ("dataset", ["--dataset", "nope"]), ("split", ["--split", "x"]), ("classes", ["--classes", "99"]),
                ("threads", ["--threads", "-2"])],
    "show": [("rows", ["--rows", "x"]), ("rows", ["--rows", "0"]), ("rows", ["--rows", "-2"]),
             ("seed", ["--seed", "-4"]), ("eta", ["--eta", "inf"])],
}


@entry("cli.main", weight=1.5)
def gen_cli(rng, ctx):
    ckpt, data = trained(ctx)
    d = fresh(ctx)
    cmd = pick(rng, ["train", "sample", "denoise", "show"])
    base = {"train": ["train", "--config", TINY, "--out", str(d / "run"), "--no-progress", "--dataset", "npy",
                      "--data-dir", str(data), "--image-size", "6", "--set", "optics.n=16", "--set", "diffusion.T=12",
                      "--set", "model.sets=2", "--set", "train.steps=1", "--set", "data.val_count=8",
                      "--set", "train.val_every=0", "--set", "optics.upsample=2", "--threads", "1"],
            "sample": ["sample", str(ckpt), "--out", str(d), "--count", "2", "--no-progress", "--threads", "1"],
            "denoise": ["denoise", str(ckpt), "--samples", "4", "--threads", "1"],
            "show": ["show", str(ckpt), "--out", str(d), "--rows", "2", "--threads", "1"]}[cmd]
    b = Builder(rng, p_bad=0.7, p_odd=0.15)
    flags = _BAD_FLAGS[cmd]
    b.arg("flags", [], bad=[(name, (lambda r, f=f: list(f))) for name, f in flags])
    if cmd != "train":
        def corrupt(r):
            q = d / "bad.npz"
            q.write_bytes(_corrupt(r, Path(ckpt).read_bytes()))
            return ["__checkpoint__", str(q)]
        b.arg("checkpoint", [], bad=[("missing", lambda r: ["__checkpoint__", str(d / "none.npz")])],
              odd=[("corrupt", corrupt)])
    v, kind, names, tags = b.finish()
    argv = list(base)
    if v.get("checkpoint"):
        argv[1] = v["checkpoint"][1]
    argv += v["flags"]
    if kind == "bad":
        names = tuple(t.split(":", 1)[1] for t in tags if t.startswith("flags:")) + (
            ("checkpoint",) if "checkpoint" in names else ())
    elif kind == "odd":
        names = ("checkpoint", "corrupt")
    return Case("cli.main", kind, lambda: run_cli(argv), "optdiff " + " ".join(argv[:2] + argv[len(base):]),
                names, tags, None, timeout=90.0)
