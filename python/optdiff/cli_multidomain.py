"""``optdiff multidomain CONFIG.toml --out DIR``: search multi-path optical networks for several
domains and compare them with separate and fully shared models (docs/multidomain.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["register", "COMMANDS", "cmd_multidomain"]

_EXAMPLE = """example config (every [multidomain] key optional; see docs/multidomain.md):

  [multidomain]
  task = "classify"        # or "generate" (the ODU's eps-MSE on t_range)
  image_size = 12
  positions = 3            # L
  candidates = 2           # K masks per position (+ a skip)
  rounds = 20
  [optics]
  n = 32
  distance = 10e-3
  init = "zero"
  [[domain]]
  name = "digits"
  [[domain]]
  name = "mnist"
  data_dir = "/path/to/mnist"
  split = "test"
"""


def register(sub, parsers, add_config_flags) -> None:
    p = sub.add_parser(
        "multidomain", help="search shared / domain-specific optical layers for several data sets",
        description="Train a super-network of candidate phase masks (K per position, plus a skip) with one "
                    "REINFORCE path controller per domain, adaptive balanced domain prioritisation, and "
                    "compare it with separate single-domain models and one fully shared model. Writes "
                    "checkpoints after every round (resumable), results.md, results.json and paths.png.",
        epilog=_EXAMPLE, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("config", help="TOML file with [multidomain], [optics] and [[domain]] tables")
    p.add_argument("--out", default="runs/multidomain", help="output folder (default runs/multidomain)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--planner", choices=("estimate", "measure", "patient"),
                   help="FFTW planning (estimate: a resumed run equals an uninterrupted one bit for bit across "
                        "processes; default measure; applied by optdiff's main)")


def cmd_multidomain(args) -> int:
    from .config import read_toml
    from .multidomain import load_domains, plot_paths, results_table, run_variants, search_config_from_dict

    search, optics, specs = search_config_from_dict(read_toml(args.config, "multidomain config"))
    out = Path(args.out)
    domains = load_domains(specs, search)
    print("domains: " + ", ".join(f"{d.key} ({d.train_x.shape[0]} train, {d.val_x.shape[0]} val, "
                                   f"{d.test_x.shape[0]} test, {d.classes} classes)" for d in domains))
    results = run_variants(search, optics, domains, out, resume=args.resume,
                           progress=not args.no_progress and sys.stderr.isatty())
    from .diffusion.checkpoint import atomic_write

    table = results_table(results)
    atomic_write(out / "results.md", lambda f: f.write(table))
    atomic_write(out / "results.json", lambda f: json.dump(results, f, indent=1))
    plot_paths(results, out / "paths.png")
    print(table)
    print(f"results: {out / 'results.md'}, figure: {out / 'paths.png'}")
    return 0


COMMANDS = {"multidomain": cmd_multidomain}
