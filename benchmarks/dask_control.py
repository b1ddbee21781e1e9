"""Control for benchmarks/dask_train.py, no Dask anywhere: CPU seconds of the serial trainer
(``log=False``: no periodic validation), of the 10 set tasks (``train_set``) one after another
in one process, and of two serial trainers running at once in two processes.

    python benchmarks/dask_control.py
"""
from __future__ import annotations

import multiprocessing as mp
import tempfile
import time


def _cfg():
    from optdiff.config import Config

    cfg = Config()
    cfg.train.steps = 20
    cfg.train.progress = False
    cfg.train.threads = 1
    return cfg


def serial(q=None) -> float:
    import optdiff
    from optdiff.diffusion.trainer import Trainer

    optdiff.set_num_threads(1)
    c0 = time.process_time()
    Trainer(_cfg(), tempfile.mkdtemp(), log=False).fit()
    cpu = time.process_time() - c0
    if q is not None:
        q.put(cpu)
    return cpu


def sets() -> float:
    from optdiff.distributed.set_trainer import train_set

    d, c0 = tempfile.mkdtemp(), time.process_time()
    for m in range(10):
        train_set(_cfg().to_dict(), d, m, threads=1)
    return time.process_time() - c0


def main() -> None:
    serial()
    sets()  # warm-up: imports, FFT plans
    a, b = serial(), sets()
    print(f"one process: serial CPU {a:.1f} s, 10 set tasks one after another {b:.1f} s, ratio {b / a:.2f}")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=serial, args=(q,)) for _ in range(2)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    cs = [q.get() for _ in procs]
    print(f"two serial trainers at once in two processes: CPU {cs[0]:.1f} s and {cs[1]:.1f} s each "
          f"(alone {a:.1f} s), wall {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
