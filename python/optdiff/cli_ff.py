"""``optdiff ff-train CONFIG.toml --out DIR``: Forward-Forward training (docs/forward_forward.md).

Trains one Forward-Forward network (conv/FC layers, optionally a free-space or multimode-fibre
optical transform between them) or a backprop baseline, as the TOML config says
(:mod:`optdiff.ff.config`), with progress bars and a checkpoint per epoch; ``--resume`` continues
from ``DIR/checkpoint.npz``. Writes ``results.json`` and ``results.md`` and prints the table.
torch is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["register", "COMMANDS", "cmd_ff_train"]


def register(sub, parsers, add_config_flags) -> None:
    p = sub.add_parser(
        "ff-train", help="train a Forward-Forward network (optionally with optics between layers)",
        description="Forward-Forward training (Hinton 2022): every layer learns from a local goodness loss on "
                    "positive (correct label embedded in the image) and negative (wrong label) data, so fixed "
                    "optics between layers need no gradient. The config's [model] kind may also be a backprop "
                    "baseline (bp-2conv-fc, lenet5). See docs/forward_forward.md for every key.")
    p.add_argument("config", metavar="CONFIG.toml", help="ff-train configuration ([data], [model], [train])")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: checkpoint.npz, results.json/.md")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.npz (same config; "
                                                         "[train] epochs may grow)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")


def cmd_ff_train(args) -> list:
    from .ff.config import load_ff_config

    cfg = load_ff_config(args.config)
    try:
        import torch  # noqa: F401  the optional extra: conv/FC layers
    except ImportError:
        raise ValueError("optdiff ff-train needs torch (pip install 'optdiff[torch]')") from None
    from .ff.trainer import FFTrainer, results_table

    out = Path(args.out)
    tr = FFTrainer(cfg, out, progress=not args.no_progress)
    rows = tr.run(resume=args.resume)
    print(results_table(rows), end="")
    print(f"results: {out / 'results.md'}, checkpoint: {tr.checkpoint_path}")
    return rows


COMMANDS = {"ff-train": cmd_ff_train}
