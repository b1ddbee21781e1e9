"""Large sample sets drawn in chunks across Dask workers, the same images for any worker count.

:func:`~optdiff.diffusion.model.generate` draws ``count`` samples in chunks of
``sample.batch`` images, chunk ``i`` from its own random stream ``default_rng([seed, i])``:
a chunk's images depend on the seed, the chunk's index and size, and the model, never on which
chunks were drawn before it or where. :func:`sample_chunk` draws one chunk exactly as
``generate`` does, so :func:`sample_on_cluster` (one task per chunk, results put back in chunk
order) returns ``generate``'s array whatever the number of workers (bitwise with the FFTW
planner ``estimate``; with ``measure`` two processes may pick different FFT plans).
Each worker loads the checkpoint once and keeps the model while the file is unchanged.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

from ..config import SampleConfig

__all__ = ["sample_chunk", "sample_on_cluster", "chunk_sizes"]

_MODELS: dict = {}  # per worker process: (path, mtime_ns, size, backend) -> model


def chunk_sizes(count: int, batch: int) -> list[int]:
    """Sizes of ``generate``'s chunks: ``batch`` images each, the last one the remainder."""
    if count < 1 or batch < 1:
        raise ValueError(f"count and sample.batch must be >= 1, got {count} and {batch}")
    return [min(batch, count - start) for start in range(0, count, batch)]


def _model(checkpoint: str, backend: str | None, threads: int):
    from ..diffusion.trainer import load_model

    st = os.stat(checkpoint)
    key = (os.path.abspath(checkpoint), st.st_mtime_ns, st.st_size, backend)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time: a new file replaces the old one
        _MODELS[key] = load_model(checkpoint, nthreads=threads, backend=backend)[0]
    return _MODELS[key]


def sample_chunk(checkpoint: str, sample: dict, index: int, size: int, planner: str | None = None,
                 backend: str | None = None, threads: int | None = None) -> np.ndarray:
    """Task: chunk ``index`` (``size`` images) of the samples of ``checkpoint`` with ``sample``
    settings (a ``[sample]`` dict); float64 ``[size, H, W]``."""
    from ..diffusion.samplers import ddim_sample, ddpm_sample
    from ..optics import set_num_threads
    from .runtime import apply_planner, task_threads

    apply_planner(planner)
    n = threads or task_threads(1)
    set_num_threads(n)
    sc = SampleConfig(**sample)
    model = _model(checkpoint, backend, n)
    rng = np.random.default_rng([sc.seed, int(index)])
    shape = (int(size), model.H, model.W)
    if sc.sampler == "ddpm":
        return ddpm_sample(model.predict_eps, model.schedule, shape, rng, clip_x0=sc.clip_x0)
    return ddim_sample(model.predict_eps, model.schedule, shape, rng, steps=sc.steps, eta=sc.eta,
                       clip_x0=sc.clip_x0)


def sample_on_cluster(client, checkpoint, sample: SampleConfig, count: int | None = None,
                      planner: str | None = None, backend: str | None = None, retries: int = 2,
                      progress: bool = True, workers=None) -> np.ndarray:
    """``count`` (default ``sample.count``) samples of ``checkpoint``, one task per chunk of
    ``sample.batch``; equal to ``generate``'s. ``workers``: restrict the tasks to these worker
    addresses (Dask's ``workers=``)."""
    from .cluster import completed

    checkpoint = os.path.abspath(os.fspath(checkpoint))
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    count = sample.count if count is None else int(count)
    sizes = chunk_sizes(count, sample.batch)
    sd = dict(vars(sample))
    run = uuid.uuid4().hex[:8]
    futures = [client.submit(sample_chunk, checkpoint, sd, i, b, planner, backend, key=f"optdiff-sample-{i}-{run}",
                             retries=int(retries), pure=False, workers=workers)
               for i, b in enumerate(sizes)]
    index = {f.key: i for i, f in enumerate(futures)}
    chunks = [None] * len(futures)
    try:
        for fut in completed(futures, "sample chunks", progress, unit="chunk"):
            chunks[index[fut.key]] = fut.result()
    except BaseException:
        client.cancel(futures)
        raise
    return np.concatenate(chunks, axis=0)
