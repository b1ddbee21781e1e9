"""Run every variant of a configuration into a folder, resumably, and collect the results.

Layout of ``out``: ``checkpoint-<variant>.npz`` (after every round, atomic), ``result-<variant>.json``
(when the variant is finished), ``history-<variant>.json``, and at the end ``results.json``,
``results.md`` and ``paths.png``. A finished variant is not run again on ``resume``; an unfinished
one continues from its checkpoint; a finished variant's result must belong to the same
configuration (its signature is stored with it). ``multipath-adaptive`` takes its references
from the ``separate`` variant's final validation quality, so ``separate`` runs first;
``separate-matched`` gives each domain ``round(distinct masks / D)`` masks (at least 1), the
distinct masks being the mean over the multi-path variants run, so it runs last.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..diffusion.checkpoint import CheckpointError, atomic_write
from .config import VARIANTS
from .search import VariantRun
from .state import restore_run, run_signature, save_run

__all__ = ["run_variants", "ORDER"]

#: Variants run in this order (the adaptive one needs the separate models' qualities).
ORDER = VARIANTS


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1))


def run_variants(search, optics, domains, out, resume: bool = False, progress: bool = False,
                 max_rounds: int | None = None, log=print) -> dict:
    """Train ``search.variants`` (in :data:`ORDER`) into ``out``; returns ``{variant: result}``.

    ``max_rounds``: stop after this many rounds in this call (a test's way of interrupting a run);
    the results of unfinished variants are then missing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and any(out.glob("checkpoint-*.npz")):
        raise FileExistsError(f"{out} already holds a run (checkpoint-*.npz): pass --resume to continue it, "
                              f"or choose another --out")
    results, left = {}, max_rounds
    for variant in [v for v in ORDER if v in search.variants]:
        res_path = out / f"result-{variant}.json"
        refs = matched = None
        if variant == "multipath-adaptive":
            sep = results["separate"]
            refs = [sep["val_quality"][k] for k in sep["domains"]]
        if variant == "separate-matched":
            multi = [r["distinct_masks"] for v, r in results.items() if v.startswith("multipath")]
            matched = min(optics.layers, max(1, round(sum(multi) / len(multi) / len(domains))))
        run = VariantRun(search, optics, domains, variant, references=refs, matched_masks=matched)
        sig = json.loads(json.dumps(run_signature(run)))
        if resume and res_path.is_file():
            try:
                stored = json.loads(res_path.read_text())
            except ValueError as exc:
                raise CheckpointError(f"{res_path}: not a result file ({exc})") from None
            if not isinstance(stored, dict) or stored.get("signature") != sig:
                raise CheckpointError(f"{res_path}: the finished variant belongs to another configuration; "
                                      f"remove it (or choose another --out) to run it again")
            results[variant] = stored["result"]
            continue
        ckpt = out / f"checkpoint-{variant}.npz"
        if resume and ckpt.is_file():
            restore_run(ckpt, run)
            log(f"{variant}: resumed at round {run.round} of {run.total_rounds}")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=run.total_rounds, initial=run.round, desc=variant, unit="round", leave=False)
        while not run.done:
            if left is not None:
                if left <= 0:
                    return results
                left -= 1
            row = run.run_round()
            save_run(ckpt, run)
            if bar is not None:
                bar.set_postfix_str(" | ".join(f"{q:.3g}" for q in row["val_quality"]))
                bar.update(1)
        if bar is not None:
            bar.close()
        results[variant] = run.results()
        _write_json(out / f"history-{variant}.json", run.history)
        _write_json(res_path, {"signature": sig, "result": results[variant]})
        log(f"{variant}: " + ", ".join(f"{k} {q:.4g}" for k, q in results[variant]["test_quality"].items())
            + f"; {results[variant]['distinct_masks']} distinct masks")
    return results
