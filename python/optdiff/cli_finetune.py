"""``optdiff finetune``: reward finetuning of a trained ODU with PRDP or DDPO (docs/finetune.md)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["register", "COMMANDS", "cmd_finetune"]


def register(sub, parsers, add_config_flags) -> None:
    p = sub.add_parser(
        "finetune", help="steer a trained model towards a reward (PRDP or DDPO)",
        description="Finetune a trained optical diffusion model on a reward, online: each round samples "
                    "--batch images from the current model (one reward query each) and updates the phases "
                    "with PRDP (reward-difference regression on pairs, proximal clipping) or DDPO (PPO-style "
                    "clipped policy gradient). Writes OUT/checkpoint.npz (the finetuned model; 'optdiff sample' "
                    "reads it), reward_curve.csv/png (reward and FID to the data per round), samples_before.png, "
                    "samples_after.png, summary.json. Example: optdiff finetune runs/train/checkpoint.npz "
                    "--reward class:3 --method prdp --rounds 20 --data-dir ~/mnist --out runs/ft3")
    p.add_argument("checkpoint", help="the trained model (optdiff train's checkpoint.npz)")
    p.add_argument("--reward", required=True,
                   help="class:K (probability of class K under the classifier), logclass:K (its log), legibility "
                        "(the largest class probability), or module:function (a Python callable "
                        "images [B,H,W] -> [B])")
    p.add_argument("--method", choices=("prdp", "ddpo"), default="prdp", help="objective (default prdp)")
    p.add_argument("--rounds", type=int, default=20, help="online rounds (default 20)")
    p.add_argument("--out", default="runs/finetune", help="output folder (default runs/finetune)")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.npz to --rounds")
    g = p.add_argument_group("rounds and updates")
    g.add_argument("--batch", type=int, default=32, help="trajectories = reward queries per round (default 32)")
    g.add_argument("--epochs", type=int, default=2, help="passes over each round's trajectories (default 2)")
    g.add_argument("--minibatch", type=int, default=16, help="trajectories per Adam step (default 16)")
    g.add_argument("--lr", type=float, default=3e-3, help="Adam rate of the phases (default 3e-3)")
    g.add_argument("--readout-lr", type=float, default=0.0,
                   help="Adam rate of the digital read-out (default 0: only the phases change)")
    g.add_argument("--beta", type=float, default=0.1, help="PRDP: the KL weight beta of the RL objective, whose log-ratios are taken against the pretrained model (default 0.1)")
    g.add_argument("--clip", type=float, default=None,
                   help="proximal clip: PRDP clips each step's log-ratio to [-clip, clip], DDPO each ratio to "
                        "[1-clip, 1+clip] (default 0.01)")
    g.add_argument("--kl", type=float, default=0.0,
                   help="PRDP: weight of an extra KL term to the pretrained model, not in the paper (--beta already anchors PRDP to the pretrained model; default 0)")
    g.add_argument("--adv-clip", type=float, default=5.0, help="DDPO: advantage clip (default 5)")
    g.add_argument("--sets", default="all",
                   help="time sets to finetune: all, low (the less noisy half) or indices like 0,1 (default all)")
    g.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default T: DDPM; fewer: DDIM with eta = 1)")
    g.add_argument("--timestep-fraction", type=float, default=1.0,
                   help="fraction of the trainable steps used per minibatch (default 1)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-reward-failures", type=int, default=3,
                   help="consecutive failed reward rounds before stopping (default 3)")
    e = p.add_argument_group("classifier and evaluation")
    e.add_argument("--classifier", metavar="FILE",
                   help="classifier checkpoint (optdiff report's features/<data>/cnn.npz or mlp.npz; default: "
                        "train one on the model's data set, saved as OUT/classifier.npz)")
    e.add_argument("--classifier-kind", choices=("cnn", "mlp"), default="cnn",
                   help="kind trained when --classifier is not given (cnn needs PyTorch)")
    e.add_argument("--data-dir", help="folder of the model's data set (default: the one it was trained on)")
    e.add_argument("--eval-count", type=int, default=128, help="evaluation samples (fixed noise; default 128)")
    e.add_argument("--eval-every", type=int, default=5, help="evaluate every K rounds and at the end (default 5)")
    e.add_argument("--fid-count", type=int, default=1000, help="data images the FID compares with (default 1000)")
    e.add_argument("--threads", type=int, default=None, help="CPU threads of the optics")
    e.add_argument("--no-progress", action="store_true", help="one line per round instead of a progress bar")


def _data(model, data_dir):
    from .data import load_dataset

    d = model.cfg.data
    if d.dataset == "npy":
        raise ValueError("the model was trained on a .npy file without labels: pass --classifier")
    return load_dataset(d.dataset, data_dir=(data_dir if data_dir is not None else d.data_dir) or None,
                        split=d.split, size=model.H, seed=model.cfg.train.seed)


def _classifier(args, model, out: Path, log):
    """(classifier or None, real images or None)."""
    from .finetune.rewards import load_classifier, needs_classifier, save_classifier, train_classifier

    need = needs_classifier(args.reward)
    try:
        x, y = _data(model, args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        if need and not args.classifier:
            raise ValueError(f"--reward {args.reward} needs a classifier: pass --classifier, or --data-dir so one "
                             f"can be trained ({exc})") from None
        log(f"no data for the FID ({exc}); the reward curve has no FID")
        x = y = None
    if x is not None and args.reward.strip().startswith(("class:", "logclass:")) and not args.classifier:
        k = args.reward.strip().split(":", 1)[1]
        labels = sorted(int(v) for v in __import__("numpy").unique(y))
        if not k.lstrip("-").isdigit() or int(k) not in labels:  # before a classifier is trained for it
            raise ValueError(f"--reward {args.reward}: the data set {model.cfg.data.dataset!r} has the classes "
                             f"{labels}, not {k}")
    real = None
    if x is not None:
        rng = __import__("numpy").random.default_rng(12345)
        real = x[rng.permutation(x.shape[0])[: args.fid_count]]
    if args.classifier:
        clf = load_classifier(args.classifier, image_size=model.H)
        ds = getattr(clf, "dataset", None)
        if ds and ds != model.cfg.data.dataset:
            raise ValueError(f"--classifier {args.classifier}: made for {ds!r}, the model generates "
                             f"{model.cfg.data.dataset!r}")
        return clf, real
    if x is None:
        return None, None
    path = out / "classifier.npz"
    if path.exists():
        return load_classifier(path, image_size=model.H), real
    log(f"training a {args.classifier_kind} classifier on {x.shape[0]} {model.cfg.data.dataset} images ...")
    n_ho = min(1000, x.shape[0] // 5)
    clf = train_classifier(x[n_ho:], y[n_ho:], model.cfg.data.dataset, kind=args.classifier_kind,
                           held_out=(x[:n_ho], y[:n_ho]))
    acc = clf.accuracy(x[:n_ho], y[:n_ho])
    log(f"classifier held-out accuracy {acc:.3f} -> {path}")
    save_classifier(clf, path)
    return clf, real


def cmd_finetune(args) -> dict:
    from .diffusion.trainer import load_model
    from .finetune import FinetuneConfig, Finetuner, make_reward

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"CHECKPOINT {ckpt}: no such file")
    cfg = FinetuneConfig(method=args.method, rounds=args.rounds, batch=args.batch, epochs=args.epochs,
                         minibatch=args.minibatch, lr=args.lr, readout_lr=args.readout_lr, beta=args.beta,
                         clip=args.clip, kl=args.kl, adv_clip=args.adv_clip, sets=args.sets, steps=args.steps,
                         timestep_fraction=args.timestep_fraction, seed=args.seed, eval_count=args.eval_count,
                         eval_every=args.eval_every, max_reward_failures=args.max_reward_failures).validate()
    if args.fid_count < 2:
        raise ValueError(f"--fid-count must be >= 2, got {args.fid_count}")
    model, _, _ = load_model(ckpt, nthreads=args.threads)
    out = Path(args.out)
    if (out / "checkpoint.npz").exists() and not args.resume:
        raise FileExistsError(f"{out / 'checkpoint.npz'} exists: pass --resume to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    clf, real = _classifier(args, model, out, print)
    reward = make_reward(args.reward, clf)
    ft = Finetuner(model, reward, out, cfg, space=clf if hasattr(clf, "features") else None, real_images=real,
                   base_checkpoint=str(ckpt), reward_name=args.reward, progress=not args.no_progress)
    summary = ft.fit(resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    print(f"finetuned model -> {out / 'checkpoint.npz'}; curve {out / 'reward_curve.png'}")
    return summary


COMMANDS = {"finetune": cmd_finetune}
