"""``optdiff report``: train or load the models a TOML names, evaluate them on each data set and
write a Markdown report with tables and figures; resumable.

Work is split into *parts* (one data set's feature networks; one model's training, per-set MSE,
samples, sample metrics, chain FID, speed). A finished part leaves its result in
``OUT/parts/<data set>/<model>/<part>.json`` (atomic write) and is not redone when the command is
run again; the models, samples and feature networks it made are files beside it (training an
ODU resumes from its own checkpoint). ``OUT/config.json`` records the configuration: a folder
holding parts of another configuration is refused. ``report.md`` and ``report.json`` are
written last, in one atomic step each, only when every part is done; a failed run leaves none.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import ConfigError, SampleConfig
from ..diffusion.checkpoint import load_checkpoint, save_checkpoint
from ..diffusion.model import generate
from ..diffusion.schedule import NoiseSchedule, timestep_sets
from ..diffusion.trainer import split_train_val, write_json_atomic
from . import costs
from .baselines import LinearDenoiser, ZeroPredictor
from .metrics import FeatureNet, check_samples, fid_along_chain, fid_report, frechet_distance
from .report_config import ReportConfig, load_report_config

__all__ = ["run_report"]


class _Parts:
    def __init__(self, out: Path, log: Callable[[str], None]):
        self.root, self.log = out / "parts", log
        self.seconds: dict = {}  # parts done by this run and their time

    def run(self, name: str, fn: Callable[[], dict]) -> dict:
        path = self.root / f"{name}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())["result"]
            except (ValueError, KeyError, TypeError):
                pass  # unreadable (cannot happen with atomic writes; redo it)
        t0 = time.perf_counter()
        self.log(f"report: {name} ...")
        res = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"result": res, "seconds": self.seconds[name]})
        return json.loads(path.read_text())["result"]


def _load_data(d, seed: int, base: Path):
    from ..data import load_dataset

    if d.dataset == "npy":
        try:
            x = np.load(base / d.data_dir, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"[datasets.{d.label}] {base / d.data_dir}: not a readable .npy file ({exc})") from None
        y = np.zeros(x.shape[0], np.int64)
    else:
        x, y = load_dataset(d.dataset, data_dir=d.data_dir or None, split=d.split, classes=d.classes,
                            size=d.image_size, limit=d.limit or None, seed=seed)
    x = check_samples(x, d.image_size, what=f"data set {d.label!r}")
    idx = np.arange(x.shape[0])
    tr_i, ho_i = split_train_val(idx, d.held_out, seed)
    if ho_i.size < d.held_out:
        raise ConfigError(f"[datasets.{d.label}] held_out = {d.held_out}: the data set has only {x.shape[0]} "
                          f"images (at most half can be held out)")
    return x[tr_i], y[tr_i], x[ho_i], y[ho_i]


class _RealCache:
    """A feature space that computes the reference images' features and probabilities once (the
    same real set is compared with every model's samples, at every sample count)."""

    def __init__(self, space, real: np.ndarray):
        self.space, self.real = space, real
        self._memo = {}

    def _of(self, method: str, x):
        if x is not self.real:
            return getattr(self.space, method)(x)
        if method not in self._memo:
            self._memo[method] = getattr(self.space, method)(x)
        return self._memo[method]

    def features(self, x):
        return self._of("features", x)

    def predict_proba(self, x):
        return self._of("predict_proba", x)


class _Runner:
    def __init__(self, cfg: ReportConfig, out: Path, log, progress: bool):
        self.cfg, self.s, self.out, self.log, self.progress = cfg, cfg.settings, out, log, progress
        self.parts = _Parts(out, log)
        s = self.s
        self.schedule = NoiseSchedule(s.T, "linear", s.beta_start, s.beta_end)
        self.odu_paths: dict = {}
        self.results: dict = {"datasets": {}, "costs": None}

    # ------------------------------------------------------------------ feature spaces
    def features(self, d, xtr, ytr, xho, yho) -> dict:
        s, spaces, info = self.s, {}, {}
        folder = self.out / "features" / d.label
        folder.mkdir(parents=True, exist_ok=True)
        if "cnn" in s.features:
            from .cnn_features import CNNFeatureNet

            if d.features_checkpoint:
                path = self.cfg.base_dir / d.features_checkpoint
                net = CNNFeatureNet.load(path, dataset=d.dataset, image_size=d.image_size)
                info["cnn"] = {"accuracy": net.accuracy(xho, yho), "checkpoint": str(path), "trained_here": False}
            else:
                path = folder / "cnn.npz"

                def train_cnn():
                    net = CNNFeatureNet(d.image_size, np.unique(ytr), d.dataset, seed=s.seed)
                    net.fit(xtr, ytr, epochs=s.feature_epochs, held_out=(xho, yho))
                    net.save(path)
                    return {"accuracy": net.accuracy_held_out, "checkpoint": str(path), "trained_here": True}

                info["cnn"] = self.parts.run(f"{d.label}/features-cnn", train_cnn)
                net = CNNFeatureNet.load(path, dataset=d.dataset, image_size=d.image_size)
            spaces["cnn"] = net
        if "mlp" in s.features:
            path = folder / "mlp.npz"

            def train_mlp():
                net = FeatureNet(seed=s.seed).fit(xtr, ytr)
                save_checkpoint(path, {"format": "optdiff-feature-mlp", "dataset": d.dataset,
                                       "image_size": d.image_size}, net.to_arrays())
                return {"accuracy": net.accuracy(xho, yho), "checkpoint": str(path), "trained_here": True}

            info["mlp"] = self.parts.run(f"{d.label}/features-mlp", train_mlp)
            spaces["mlp"] = FeatureNet.from_arrays(load_checkpoint(path)[1])
        if s.inception_weights:
            from .inception import load_inception

            spaces["inception"] = load_inception(self.cfg.base_dir / s.inception_weights)
            info["inception"] = {"backend": spaces["inception"].backend, "weights": s.inception_weights}
        return spaces, info

    # ------------------------------------------------------------------ models
    def _odu(self, m, d, xtr, xho, folder: Path):
        from ..config import load_config
        from ..diffusion.trainer import Trainer, load_model

        if m.checkpoint:
            path = self.cfg.base_dir / m.checkpoint[d.label]
        else:
            s = self.s
            over = list(m.set) + [f"model.image_size={d.image_size}", f"diffusion.T={s.T}",
                                  'diffusion.schedule="linear"', f"diffusion.beta_start={s.beta_start!r}",
                                  f"diffusion.beta_end={s.beta_end!r}", f"train.threads={s.threads}",
                                  f"train.progress={'true' if self.progress else 'false'}"]
            cfg = load_config(self.cfg.base_dir / m.config, over)
            path = folder / "checkpoint.npz"

            def train():
                tr = Trainer(cfg, folder, images=xtr, val_images=xho)
                summary = tr.fit(resume=path.exists())
                return {"steps": summary["steps"], "train_seconds": summary["elapsed_s"]}

            self.parts.run(f"{d.label}/{m.label}/train", train)
        model, _, _ = load_model(path, nthreads=self.s.threads)
        self.odu_paths[(d.label, m.label)] = path
        if model.H != d.image_size:
            raise ValueError(f"[models.{m.label}] {path}: the ODU works on {model.H}x{model.H} images, the data "
                             f"set {d.label!r} is {d.image_size}x{d.image_size}")
        sch = model.schedule
        if sch.T != self.s.T or not np.allclose(sch.betas, self.schedule.betas):
            raise ValueError(f"[models.{m.label}] {path}: trained with another noise schedule (T={sch.T}, "
                             f"{sch.kind}) than the report's (T={self.s.T}, linear {self.s.beta_start}..{self.s.beta_end})")
        o = model.cfg.optics
        params = o.n * o.n * o.layers * model.M
        flops = costs.odu_flops(o.n, o.layers, model.H, o.padding, o.input_distance > 0,
                                k=o.pixels_per_image_pixel(model.H))["total"]
        return model.predict_eps, params, flops, model

    def _digital(self, m, d, xtr, folder: Path, odu_params: int | None):
        from .digital import nets
        from .digital.flops import count_flops
        from .digital.train import TorchPredictor, load_net, save_net, train_ddpm

        if m.checkpoint:  # trained before (checked against the report by load_report_config)
            path = self.cfg.base_dir / m.checkpoint[d.label]
        else:
            if m.size == "reference":
                widths = dict(nets.REFERENCE_SIZES[m.kind])
            else:
                target = odu_params if m.size == "matched" else int(m.size)
                widths, _ = nets.match_width(m.kind, target, work_size=m.work_size)
            widths["work_size"] = m.work_size
            path = folder / "net.npz"

            def train():
                net = nets.build_net({"kind": m.kind, "image_size": d.image_size, **widths})
                losses = train_ddpm(net, xtr, self.schedule, m.steps, m.batch, m.lr, seed=self.s.seed)
                loss = float(np.mean(losses[-50:])) if losses else None
                save_net(path, net, {"steps": m.steps, "final_loss": loss, "schedule": self._schedule_meta()})
                return {"widths": widths, "steps": m.steps, "final_loss": loss}

            self.parts.run(f"{d.label}/{m.label}/train", train)
        net, _ = load_net(path, expect={"kind": m.kind, "image_size": d.image_size})
        return TorchPredictor(net), nets.count_params(net), count_flops(net, d.image_size)["total"], net

    def _schedule_meta(self) -> dict:
        """The noise schedule a model was trained with, stored in its checkpoint (checked on reuse)."""
        return {"T": self.s.T, "beta_start": self.s.beta_start, "beta_end": self.s.beta_end}

    def _linear(self, m, d, xtr, folder: Path, sets):
        if m.checkpoint:  # trained before; its own time sets
            path = self.cfg.base_dir / m.checkpoint[d.label]
        else:
            path = folder / "linear.npz"

            def train():
                n = None if m.samples_per_set == "exact" else m.samples_per_set
                lin = LinearDenoiser(m.ridge).fit(xtr, self.schedule, sets, n, rng=self.s.seed)
                save_checkpoint(path, {"format": "optdiff-linear-denoiser", **self._schedule_meta()}, lin.to_arrays())
                return {"sets": len(sets)}

            self.parts.run(f"{d.label}/{m.label}/train", train)
        lin = LinearDenoiser.from_arrays(load_checkpoint(path)[1], self.s.T)
        D = d.image_size ** 2
        return lin.predict, len(lin.sets) * (D * D + D), 2.0 * D * D + D, lin

    # ------------------------------------------------------------------ one data set
    def dataset(self, d) -> dict:
        s = self.s
        xtr, ytr, xho, yho = _load_data(d, s.seed, self.cfg.base_dir)
        spaces, finfo = self.features(d, xtr, ytr, xho, yho)
        res = {"train_images": int(xtr.shape[0]), "held_out": int(xho.shape[0]), "features": finfo, "models": {},
               "reference": d.reference}
        real = xtr if d.reference == "train" else xho  # what FID / KID / IS compare the samples with
        spaces = {name: _RealCache(sp, real) for name, sp in spaces.items()}
        models = sorted(self.cfg.models, key=lambda m: m.kind != "odu")  # the ODU first: its size is matched
        sets, odu_params = timestep_sets(s.T, s.sets), None
        for m in models:
            folder = self.out / "models" / d.label / m.label
            folder.mkdir(parents=True, exist_ok=True)
            r: dict = {"kind": m.kind}
            if m.kind == "samples":
                pred, params, flops, obj = None, None, None, None
            elif m.kind == "odu":
                pred, params, flops, obj = self._odu(m, d, xtr, xho, folder)
                sets, odu_params = obj.set_ranges, params
            elif m.kind == "linear":
                pred, params, flops, obj = self._linear(m, d, xtr, folder, sets)
            else:
                pred, params, flops, obj = self._digital(m, d, xtr, folder, odu_params)
            r.update(params=params, flops_per_step=flops)
            key = f"{d.label}/{m.label}"
            if pred is not None and "mse" in s.metrics:
                r["mse"] = self.parts.run(f"{key}/mse", lambda pred=pred, sets=sets: {"mse": self._mse(pred, xho, sets).tolist(),
                                                                   "sets": [list(x) for x in sets]})["mse"]
            samples = self._samples(m, d, pred, folder, key)
            if spaces and {"fid", "kid", "is"} & set(s.metrics):
                r["quality"] = self.parts.run(f"{key}/quality", lambda samples=samples: self._quality(spaces, real, samples))
                counts = sorted(set(s.sample_counts) - {s.samples})
                r["quality_at"] = {str(k): self.parts.run(f"{key}/quality-{k}", lambda samples=samples, k=k: self._quality(
                    spaces, real, samples[:k])) for k in counts}
                if counts:
                    r["quality_at"][str(s.samples)] = r["quality"]
            if pred is not None and "chain" in s.metrics and spaces:
                space = spaces.get("cnn") or next(iter(spaces.values()))
                r["chain"] = self.parts.run(f"{key}/chain", lambda pred=pred, space=space: fid_along_chain(
                    pred, self.schedule, space, xho, s.chain_samples, s.chain_steps, seed=s.seed,
                    batch=s.sample_batch, which=s.chain_which))
            if pred is not None and s.speed:
                r["speed"] = self.parts.run(f"{key}/speed", lambda pred=pred: self._speed(pred, d.image_size))
            if m.kind == "odu" and s.speed and s.gpu_backend:
                r["speed_gpu"] = self.parts.run(f"{key}/speed-{s.gpu_backend}", lambda path=self.odu_paths[
                    (d.label, m.label)]: self._gpu_speed(path, d.image_size))
            r["samples_file"] = str((folder / "samples.npy").relative_to(self.out)) if m.kind != "samples" else \
                str(self.cfg.base_dir / m.samples[d.label])
            res["models"][m.label] = r
        res["mse_zero"] = self._mse(ZeroPredictor(), xho, sets).tolist() if "mse" in s.metrics else None
        res["sets"] = [list(x) for x in sets]
        if spaces and {"fid", "kid", "is"} & set(s.metrics):
            res["real_vs_real"] = self.parts.run(f"{d.label}/real", lambda: self._real_rows(spaces, xtr, xho))
        return res

    def _mse(self, pred, xho, sets) -> np.ndarray:
        from .baselines import per_set_mse

        return per_set_mse(pred, xho, self.schedule, sets, rng=self.s.seed, samples=self.s.mse_samples)

    def _samples(self, m, d, pred, folder: Path, key: str) -> np.ndarray:
        s = self.s
        if m.kind == "samples":
            path = self.cfg.base_dir / m.samples[d.label]
            try:
                x = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise ValueError(f"[models.{m.label}] {path}: not a readable .npy file ({exc})") from None
            return check_samples(x, d.image_size, what=f"[models.{m.label}] samples {path}", min_count=s.samples)[:s.samples]
        path = folder / "samples.npy"

        def draw():
            from ..diffusion.checkpoint import atomic_write
            from ..plots import save_grid

            sc = SampleConfig(sampler=s.sampler, steps=s.sample_steps, count=s.samples, batch=s.sample_batch,
                              seed=s.seed)
            t0 = time.perf_counter()
            x = generate(pred, self.schedule, sc, s.samples, d.image_size, progress=self.progress)
            dt = time.perf_counter() - t0
            atomic_write(path, lambda f: np.save(f, x), binary=True)
            save_grid(x[:64], folder / "samples.png")
            return {"count": int(x.shape[0]), "sampling_seconds": dt, "nan": int(np.count_nonzero(~np.isfinite(x)))}

        self.parts.run(f"{key}/samples", draw)
        return check_samples(np.load(path), d.image_size, what=f"samples of {m.label}")

    def _quality(self, spaces, real, fake) -> dict:
        s = self.s
        out = {}
        for name, sp in spaces.items():
            t0 = time.perf_counter()
            rep = fid_report(sp, real, fake, kid_subsets=s.kid_subsets, kid_subset_size=s.kid_subset_size,
                             is_splits=s.is_splits, seed=s.seed)
            rep.pop("note", None)
            rep["seconds"] = time.perf_counter() - t0
            out[name] = rep
        return out

    def _real_rows(self, spaces, xtr, xho) -> dict:
        rng = np.random.default_rng(self.s.seed)
        other = xtr[rng.permutation(xtr.shape[0])[:xho.shape[0]]]
        noise = np.clip(rng.standard_normal(xho.shape), -1, 1)
        return {name: {"real_vs_real": frechet_distance(sp.features(xho), sp.features(other)),
                       "noise_vs_real": frechet_distance(sp.features(xho), sp.features(noise))}
                for name, sp in spaces.items()}

    def _speed(self, pred, H: int) -> dict:
        s = self.s
        x = np.random.default_rng(0).standard_normal((s.speed_batch, H, H))
        t = self.schedule.T // 2
        return costs.measure_rate(lambda: pred(x, t), s.speed_batch, repeats=s.speed_repeats)

    def _gpu_speed(self, path, H: int) -> dict:
        """The ODU's step on ``gpu_backend`` ("cuda"; "cuda-emu": the same code on the CPU, for tests)."""
        from ..diffusion.trainer import load_model
        from ..optics.backends import available_backends

        be = self.s.gpu_backend
        if be == "cuda" and "cuda" not in available_backends():
            from ..optics.backends.cuda import cuda_unavailable_reason

            return {"backend": be, "skipped": f"no CUDA device ({cuda_unavailable_reason()})"}
        try:
            model = load_model(path, nthreads=self.s.threads, backend=be)[0]
            return {"backend": be, **self._speed(model.predict_eps, H)}
        except (RuntimeError, ValueError, ImportError, OSError) as exc:
            return {"backend": be, "skipped": f"{type(exc).__name__}: {exc}"[:500]}

    # ------------------------------------------------------------------ costs
    def cost_rows(self) -> list:
        rows, s = [], self.s
        watts, src = costs.cpu_power_watts()
        for dlabel, dres in self.results["datasets"].items():
            for mlabel, r in dres["models"].items():
                if "speed" in r:
                    rows.append(costs.energy_row(f"{mlabel} ({dlabel}, CPU, batch {s.speed_batch})", r["params"],
                                                 r["flops_per_step"], r["speed"], s.T, watts, src))
                g = r.get("speed_gpu") or {}
                if "image_steps_per_s" in g:
                    gpu = g["backend"] == "cuda"
                    rows.append(costs.energy_row(
                        f"{mlabel} ({dlabel}, {'GPU' if gpu else 'cuda-emu: the GPU code on the CPU'}, batch "
                        f"{s.speed_batch})", r["params"], r["flops_per_step"], g, s.T,
                        costs.GPU_WATTS if gpu else watts, "NVIDIA H200 board power" if gpu else src))
        if s.speed and s.speed_reference_sizes:
            rows += self.parts.run("costs/reference-sizes", self._reference_sizes)["rows"]
        H = self.cfg.datasets[0].image_size
        odu = [r for d in self.results["datasets"].values() for r in d["models"].values() if r["kind"] == "odu"]
        rows += costs.optical_bench_rows(H, s.T, params=odu[0]["params"] if odu else None)
        rows += [dict(r, params=None, flops_per_step=None, image_steps_per_s=None) for r in costs.REFERENCE_ROWS]
        return rows

    def _reference_sizes(self) -> dict:
        from .digital import nets
        from .digital.flops import count_flops
        from .digital.train import TorchPredictor

        s, H, rows = self.s, self.cfg.datasets[0].image_size, []
        watts, src = costs.cpu_power_watts()
        for kind in ("fc", "unet"):
            net = nets.build_net({"kind": kind, "image_size": H, **nets.REFERENCE_SIZES[kind]})
            rate = self._speed(TorchPredictor(net), H) if kind == "fc" else costs.measure_rate(
                lambda net=net: TorchPredictor(net)(np.zeros((s.speed_batch, H, H)), 1), s.speed_batch, repeats=1,
                warmup=0)
            rows.append(costs.energy_row(f"{kind} reference size (untrained, CPU, batch {s.speed_batch})",
                                         nets.count_params(net), count_flops(net, H)["total"], rate, s.T, watts, src))
        return {"rows": rows}


def run_report(config_path, out, inception_weights: str | None = None, progress: bool = False,
               log: Callable[[str], None] = print) -> Path:
    """Run the report of ``config_path`` into folder ``out``; returns the path of ``report.md``."""
    from .report_md import write_report

    if inception_weights:
        inception_weights = str(Path(inception_weights).resolve())
    cfg = load_report_config(config_path, inception_weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"config": cfg.raw, "inception_weights": cfg.settings.inception_weights}
    cpath = out / "config.json"
    if cpath.is_file():
        try:
            old = json.loads(cpath.read_text())
        except ValueError:
            old = None
        if old != json.loads(json.dumps(stamp)):
            raise ConfigError(f"{out} holds the parts of another report configuration ({cpath}); use a new "
                              f"--out folder, or delete that one to start over")
    write_json_atomic(cpath, stamp)
    from ..optics import set_num_threads

    set_num_threads(cfg.settings.threads)
    try:
        from .digital import torch_available

        if torch_available():
            import torch

            torch.set_num_threads(cfg.settings.threads)
    except ImportError:
        pass
    run = _Runner(cfg, out, log, progress)
    t0 = time.perf_counter()
    for d in cfg.datasets:
        run.results["datasets"][d.label] = run.dataset(d)
    run.results["costs"] = run.cost_rows() if cfg.settings.speed else []
    run.results["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                              "rapl": costs.read_rapl_uj() is not None, "cpu_power": costs.cpu_power_watts()}
    run.results["seconds_this_run"] = time.perf_counter() - t0
    run.results["parts_done_this_run"] = run.parts.seconds
    return write_report(cfg, run.results, out)
