"""The Markdown report of ``optdiff report`` and its figures (per-set MSE, FID along the chain).

Everything the report says comes from the results dict of :mod:`optdiff.evaluation.report`
(also written as ``report.json``); ``report.md`` is written atomically, last.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

from ..diffusion.checkpoint import atomic_write
from ..diffusion.trainer import write_json_atomic
from . import costs

__all__ = ["write_report", "plot_chain"]

BETTER_LOW = {"fid": True, "kid": True, "is": False}


def plot_chain(chains: dict, path, title: str = "") -> Path:
    """FID of each model's chain state against the timestep (the reference work's Fig. 3)."""
    from ..plots import _plt, _savefig

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, c in chains.items():
        ax.plot(c["t"], c["fid"], "o-", label=name)
    ax.invert_xaxis()
    ax.set_yscale("log")
    ax.set_xlabel("timestep t (generation runs right to left)")
    ax.set_ylabel("FID")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "FID along the sampling chain", fontsize=9)
    return _savefig(fig, path)


def _f(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def _verdicts(dres: dict, spaces: list) -> list[str]:
    """Sentences: where the ODU is ahead of / behind each other model, metric by metric."""
    models = dres["models"]
    odus = [k for k, r in models.items() if r["kind"] == "odu"]
    out = []
    for o in odus:
        ro = models[o]
        for b, rb in models.items():
            if b == o:
                continue
            wins, losses = [], []
            if ro.get("mse") and rb.get("mse"):
                better = [i for i, (x, y) in enumerate(zip(ro["mse"], rb["mse"])) if x < y]
                worse = [i for i in range(len(ro["mse"])) if i not in better]
                if better:
                    wins.append(f"per-set MSE on sets {better}")
                if worse:
                    losses.append(f"per-set MSE on sets {worse}")
            for sp in spaces:
                qo, qb = (ro.get("quality") or {}).get(sp), (rb.get("quality") or {}).get(sp)
                if not qo or not qb:
                    continue
                for met, low in BETTER_LOW.items():
                    a, c = qo[met], qb[met]
                    (wins if (a < c) == low else losses).append(f"{met.upper()} ({sp}) {_f(a)} vs {_f(c)}")
            if ro.get("speed") and rb.get("speed"):
                a, c = ro["speed"]["image_steps_per_s"], rb["speed"]["image_steps_per_s"]
                (wins if a > c else losses).append(f"speed of the simulation on this CPU {_f(a, 3)} vs {_f(c, 3)} "
                                                   f"image-steps/s (the optical bench's is in the cost table)")
            if ro.get("params") and rb.get("params"):
                out.append(f"- **{o} vs {b}** ({_f(ro['params'])} vs {_f(rb['params'])} parameters): "
                           f"ahead on {'; '.join(wins) or 'nothing'}; behind on {'; '.join(losses) or 'nothing'}.")
            else:
                out.append(f"- **{o} vs {b}**: ahead on {'; '.join(wins) or 'nothing'}; "
                           f"behind on {'; '.join(losses) or 'nothing'}.")
    return out


def _counts_table(models: dict, spaces: list) -> list[str]:
    """FID and KID of the first k samples of each model, for each k of ``sample_counts``."""
    rows = [(k, n, r["quality_at"][n]) for k, r in models.items() for n in sorted(r.get("quality_at") or {}, key=int)]
    if not rows:
        return []
    L = ["### FID and KID by number of samples", "",
         "The same samples: the metrics of the first k of them (the real images are the same for every k). "
         "FID is biased upwards with few samples; KID is unbiased (its spread shrinks with k).", "",
         "| model | samples | " + " | ".join(f"FID ({sp}) | KID ({sp})" for sp in spaces) + " |",
         "|---" * (2 + 2 * len(spaces)) + "|"]
    for k, n, q in rows:
        cells = []
        for sp in spaces:
            v = q.get(sp)
            cells += [_f(v["fid"]), f"{v['kid']:.4g} ± {v['kid_std']:.2g}"] if v else ["-", "-"]
        L.append(f"| {k} | {int(n):,} | " + " | ".join(cells) + " |")
    return L + [""]


def _dataset_section(label: str, dres: dict, out: Path, settings) -> list[str]:
    from ..plots import plot_set_mse

    ref = dres.get("reference", "held_out")
    L = [f"## Data set `{label}`", "",
         f"{dres['train_images']} training images, {dres['held_out']} held-out images (per-set MSE and the "
         f"chain FID are computed on the held-out ones, FID / KID / IS of the samples against "
         f"{'all training images' if ref == 'train' else 'the held-out ones'}; every model sees the same "
         f"training images, noise draws and start noise).", ""]
    models = dres["models"]
    sets = dres["sets"]
    if dres.get("mse_zero") is not None:
        cols = [k for k, r in models.items() if r.get("mse")]
        L += ["### Per-set eps-MSE (held-out images)", "",
              "| set | t | " + " | ".join(cols) + " | zero |", "|---" * (len(cols) + 3) + "|"]
        for i, (a, b) in enumerate(sets):
            best = min(models[c]["mse"][i] for c in cols) if cols else None
            cells = [(f"**{_f(models[c]['mse'][i])}**" if models[c]["mse"][i] == best else _f(models[c]["mse"][i]))
                     for c in cols]
            L.append(f"| {i} | {a}-{b - 1} | " + " | ".join(cells) + f" | {_f(dres['mse_zero'][i])} |")
        fig = plot_set_mse({**{c: models[c]["mse"] for c in cols}, "zero": dres["mse_zero"]},
                           out / f"set_mse_{label}.png", set_ranges=[tuple(s) for s in sets])
        L += ["", f"![per-set MSE]({fig.name})", ""]
    spaces = sorted({sp for r in models.values() for sp in (r.get("quality") or {})})
    if spaces:
        n = {sp: next(r["quality"][sp]["n_fake"] for r in models.values() if r.get("quality")) for sp in spaces}
        L += ["### Sample quality", "",
              f"Samples: {settings.samples} per model ({settings.sampler}"
              f"{f', {settings.sample_steps} steps' if settings.sampler == 'ddim' else ''}, seed {settings.seed}); "
              f"KID: {settings.kid_subsets} subsets of up to {settings.kid_subset_size}; IS: {settings.is_splits} splits.",
              "", "| model | parameters | FLOPs per step | " +
              " | ".join(f"FID ({sp}) | KID ({sp}) | IS ({sp})" for sp in spaces) + " |",
              "|---" * (3 + 3 * len(spaces)) + "|"]
        for k, r in models.items():
            q = r.get("quality") or {}
            cells = []
            for sp in spaces:
                v = q.get(sp)
                cells += ([_f(v["fid"]), f"{v['kid']:.4g} ± {v['kid_std']:.2g}", f"{v['is']:.3g} ± {v['is_std']:.2g}"]
                          if v else ["-", "-", "-"])
            fl = r.get("flops_per_step")
            L.append(f"| {k} | {_f(r.get('params'))} | {_f(None if fl is None else float(fl), 3)} | " + " | ".join(cells) + " |")
        rr = dres.get("real_vs_real") or {}
        L.append("| *held-out vs training images* | | | " + " | ".join(
            f"{_f(rr[sp]['real_vs_real'])} | | " if sp in rr else "- | | " for sp in spaces) + " |")
        L.append("| *clipped noise vs held-out* | | | " + " | ".join(
            f"{_f(rr[sp]['noise_vs_real'])} | | " if sp in rr else "- | | " for sp in spaces) + " |")
        L += ["", f"Samples per metric: {n}. IS of the {'training' if ref == 'train' else 'held-out'} images "
              "(the attainable value): " + ", ".join(
                  f"{sp} {_f(next(r['quality'][sp]['is_real'] for r in models.values() if r.get('quality')), 3)}"
                  for sp in spaces), ""]
        L += _counts_table(models, spaces)
    chains = {k: r["chain"] for k, r in models.items() if r.get("chain")}
    if chains:
        ts = next(iter(chains.values()))["t"]
        which = next(iter(chains.values()))["which"]
        L += [f"### FID along the chain ({'predicted x0' if which == 'x0' else 'noisy state x_t'}, CNN features)",
              "", "| t | " + " | ".join(chains) + " |", "|---" * (len(chains) + 1) + "|"]
        for i, t in enumerate(ts):
            L.append(f"| {t} | " + " | ".join(_f(c["fid"][i]) for c in chains.values()) + " |")
        L.append("| final samples | " + " | ".join(_f(c["final_fid"]) for c in chains.values()) + " |")
        fig = plot_chain(chains, out / f"chain_{label}.png")
        L += ["", f"![FID along the chain]({fig.name})", ""]
    grids = [(k, f"models/{label}/{k}/samples.png") for k, r in models.items()
             if (out / "models" / label / k / "samples.png").is_file()]
    if grids:
        L += ["### Samples", "", " | ".join(f"{k}" for k, _ in grids), "|---" * len(grids) + "|",
              " | ".join(f"![{k}]({p})" for k, p in grids), ""]
    v = _verdicts(dres, spaces)
    if v:
        L += ["### Where the ODU wins and where it loses", ""] + v + [""]
    return L


def write_report(cfg, results: dict, out: Path) -> Path:
    """Write figures, ``report.json`` and (last) ``report.md`` into ``out``."""
    from .._version import __version__

    s = cfg.settings
    L = [f"# {s.title}", "",
         f"Generated by `optdiff report` (optdiff {__version__}) on "
         f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {results['machine']['processor']}, "
         f"{results['machine']['platform']}; {s.threads} threads. DDPM: T = {s.T}, linear betas "
         f"{s.beta_start:g}..{s.beta_end:g}, eps-prediction, the same for every model. Numbers: `report.json`.", ""]
    L += ["## Feature spaces", "", "| data set | space | held-out accuracy | network |", "|---|---|---|---|"]
    for dl, dres in results["datasets"].items():
        for sp, info in dres["features"].items():
            acc = info.get("accuracy")
            L.append(f"| {dl} | {sp} | {_f(acc, 4) if acc is not None else '-'} | "
                     f"{'trained here' if info.get('trained_here') else info.get('checkpoint') or info.get('backend')} |")
    if s.inception_weights:
        L += ["", f"Inception-v3: weights `{s.inception_weights}`, network built by "
                  f"{next(iter(results['datasets'].values()))['features']['inception']['backend']}."]
    else:
        L += ["", "Inception-v3 rows: **skipped** (no `--inception-weights PATH` given; nothing is downloaded)."]
    L += ["", "FID/KID/IS in the CNN or MLP features are comparable within this report only; papers use "
              "Inception-v3.", ""]
    for dl, dres in results["datasets"].items():
        L += _dataset_section(dl, dres, out, s)
    if results.get("costs"):
        watts, src = results["machine"]["cpu_power"]
        L += ["## Speed and energy", "",
              f"Throughput measured here (median of {s.speed_repeats} timed runs of one denoising step of a "
              f"batch of {s.speed_batch}); a full generation is T = {s.T} steps. CPU energy: "
              f"{'RAPL counters' if results['machine']['rapl'] else f'{watts:g} W x time ({src}); no RAPL counter is readable here'}. "
              "FLOPs: counted (digital nets: forward hooks; simulated ODU: FFT count of the angular-spectrum "
              "propagation); the optical bench computes optically and spends 0 digital FLOPs on the denoiser. "
              "Constants and sources: docs/evaluation.md.", "",
              costs.cost_table_markdown(results["costs"]), ""]
        skipped = {g["skipped"] for d in results["datasets"].values() for r in d["models"].values()
                   if (g := r.get("speed_gpu")) and "skipped" in g}
        L += [f"GPU row: not measured ({'; '.join(sorted(skipped))})." for _ in [0] if skipped] + ([""] if skipped else [])
    done = results.get("parts_done_this_run") or {}
    L += ["---", f"This run: {results['seconds_this_run']:.0f} s; {len(done)} part(s) computed now, the others "
                 f"were read from `parts/` (finished before and not redone)."]
    write_json_atomic(out / "report.json", results)
    path = out / "report.md"
    atomic_write(path, lambda f: f.write("\n".join(L) + "\n"))
    return path
