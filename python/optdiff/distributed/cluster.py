"""Connecting to Dask: a LocalCluster on this machine or an existing scheduler, progress, shared folders.

:func:`open_client` is a context manager giving a ``distributed.Client``: with ``workers=K`` it
starts a ``LocalCluster`` of K worker *processes* (the optics hold the GIL only briefly, but
NumPy glue between the calls does not, and processes also isolate a crash) with
``threads_per_worker = max(1, cores // K)`` so K workers never ask for more threads than the
machine has; with ``scheduler=ADDRESS`` it connects to a running scheduler (``dask scheduler``,
a dask-jobqueue cluster, ...) and gives up after ``connect_timeout`` seconds with a
``ConnectionError`` naming the address instead of waiting forever. The dashboard address is
printed either way.

Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that variable at all
switches off glibc's adaptive mmap threshold, so every array over 128 KiB is a fresh mmap whose
pages fault in again on each training step: 17 MB of page faults per step instead of 2 MB at
N = 128, batch 32, and set tasks about 15 % slower (measured, docs/distributed.md). optdiff's
own LocalCluster starts its workers without Dask's default value of it; on a cluster whose workers have it without ``MALLOC_MMAP_THRESHOLD_``,
:func:`open_client` prints :data:`TRIM_HINT`, the configuration that fixes it.

:func:`prepare_shared_dir` checks, before any task runs, that the output folder can be written
here and by every worker and that the workers' files are visible here (a folder that is not
shared between the machines of a cluster is reported, not discovered after hours of training).
:func:`completed` yields finished futures with a tqdm bar on the client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

__all__ = ["open_client", "completed", "machine_cores", "prepare_shared_dir", "default_threads_per_worker",
           "DEFAULT_CONNECT_TIMEOUT"]

DEFAULT_CONNECT_TIMEOUT = 10.0
_TRIM = "MALLOC_TRIM_THRESHOLD_"
_TRIM_KEY = "distributed.nanny.pre-spawn-environ"
_DASK_DEFAULT_TRIM = "65536"
_MMAP = "MALLOC_MMAP_THRESHOLD_"
TRIM_HINT = (f"the Dask workers run with {_TRIM} set and no {_MMAP}, so glibc maps every large array "
             f"afresh and page-faults it in again each step (set tasks about 15 % slower); in the "
             f"workers' Dask configuration set {_TRIM_KEY}: {{{_TRIM}: 134217728, {_MMAP}: 67108864}} "
             f"(YAML example in docs/distributed.md)")


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads_per_worker(workers: int) -> int:
    """Threads for each of ``workers`` processes so that together they use the cores once."""
    return max(1, machine_cores() // max(1, int(workers)))


def _worker_env(name: str):
    return os.environ.get(name)


def _trim_hint(client) -> str | None:
    """:data:`TRIM_HINT` when a worker of ``client`` has ``MALLOC_TRIM_THRESHOLD_`` set but no
    ``MALLOC_MMAP_THRESHOLD_`` (which restores a large, fixed mmap threshold)."""
    try:
        trim, mmap = client.run(_worker_env, _TRIM), client.run(_worker_env, _MMAP)
    except Exception:  # a hint only: workers that cannot answer are not an error
        return None
    return TRIM_HINT if any(v is not None and mmap.get(w) is None for w, v in trim.items()) else None


def _local_environ() -> dict:
    """The nannies' environment for optdiff's LocalCluster: Dask's, without its default
    MALLOC_TRIM_THRESHOLD_ (a value the user configured, or one paired with MALLOC_MMAP_THRESHOLD_,
    is kept)."""
    import dask

    env = dict(dask.config.get(_TRIM_KEY, default={}) or {})
    if str(env.get(_TRIM)) == _DASK_DEFAULT_TRIM and _MMAP not in env:
        env.pop(_TRIM)
    return env


def _dashboard_line(client) -> str:
    link = getattr(client, "dashboard_link", None)
    if not link:
        return "Dask dashboard: not available"
    try:
        import bokeh  # noqa: F401  (the dashboard is served only with bokeh installed)
    except ImportError:
        return f"Dask dashboard: {link} (served only when bokeh is installed: pip install bokeh)"
    return f"Dask dashboard: {link}"


@contextlib.contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None,
                threads_per_worker: int | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                log=None):
    """A ``distributed.Client`` on a new LocalCluster (``workers``) or an existing ``scheduler``.

    Exactly one of ``workers`` / ``scheduler``. ``log(msg)`` receives the dashboard line
    (default: printed to stderr). The LocalCluster is closed on exit; a remote cluster is left
    running (only this client disconnects).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("the Dask extra is not installed: pip install 'optdiff[dask]' "
                          "(dask and distributed)") from None
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if (workers is None) == (scheduler is None):
        raise ValueError("give either workers (a LocalCluster) or scheduler (an address), not both or neither")
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ValueError(f"--scheduler: expected an address such as tcp://host:8786, got {scheduler!r}")
        try:
            client = Client(scheduler, timeout=f"{float(connect_timeout)}s", set_as_default=False)
        except Exception as exc:  # OSError (timeout, refused), ValueError (bad address), garbage answers
            raise ConnectionError(
                f"--scheduler {scheduler}: cannot connect to a Dask scheduler there within "
                f"{connect_timeout:g} s ({type(exc).__name__}: {exc})") from None
        try:
            log(_dashboard_line(client))
            hint = _trim_hint(client)
            if hint:
                log("note: " + hint)
            yield client
        finally:
            client.close()
        return
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    tpw = int(threads_per_worker) if threads_per_worker else default_threads_per_worker(workers)
    if tpw < 1:
        raise ValueError(f"threads per worker must be >= 1, got {threads_per_worker}")
    import dask

    # the workers' statistical profiler samples every thread's stack every 10 ms: 5-10 % of a set
    # task's CPU (measured, docs/distributed.md); off unless asked for in Dask's own configuration
    profile = os.environ.get("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED") is not None
    settings = {_TRIM_KEY: _local_environ()}
    if not profile:
        settings["distributed.worker.profile.enabled"] = False
    with dask.config.set(settings):
        # dashboard on a free port (':0'): several runs on one machine must not fight over 8787
        cluster = LocalCluster(n_workers=workers, threads_per_worker=tpw, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        client = Client(cluster, set_as_default=False)
        try:
            log(f"LocalCluster: {workers} worker processes x {tpw} thread(s); " + _dashboard_line(client))
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def completed(futures, desc: str, progress: bool = True, unit: str = "task"):
    """Yield each future of ``futures`` as it finishes (``distributed.as_completed``), with a bar."""
    from distributed import as_completed

    futures = list(futures)
    if not futures:
        return
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(futures), desc=desc, unit=unit, dynamic_ncols=True)
    try:
        # the futures' own client's loop: our clients are not made the process-wide default
        for fut in as_completed(futures, loop=futures[0].client.loop):
            if bar is not None:
                bar.update(1)
            yield fut
    finally:
        if bar is not None:
            bar.close()


def _probe(folder: str, token: str) -> str:
    """On a worker: write a probe file into ``folder``; returns its path or ``'error: ...'``."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f".probe-{token}-{os.getpid()}"
        path.write_text("optdiff shared-folder probe\n")
        return str(path)
    except OSError as exc:
        return f"error: {type(exc).__name__}: {exc}"


def prepare_shared_dir(path, client=None) -> Path:
    """Create ``path`` and check that this process and every worker of ``client`` can write it
    and that the workers' files are seen here; ``ValueError`` naming the folder otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"shared directory {path}: exists and is not a directory") from None
    except OSError as exc:
        raise ValueError(f"shared directory {path}: cannot create it ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise ValueError(f"shared directory {path}: exists and is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"shared directory {path}: not writable ({exc.strerror or exc})") from None
    if client is None:
        return path
    token = uuid.uuid4().hex[:12]
    answers = client.run(_probe, str(path.resolve()), token)
    try:
        for worker, answer in sorted(answers.items()):
            if answer.startswith("error: "):
                raise ValueError(f"shared directory {path}: not writable on worker {worker} ({answer[7:]})")
            if not Path(answer).exists():
                raise ValueError(f"shared directory {path}: worker {worker} wrote {answer} but this machine "
                                 f"does not see it; the output folder must be on a file system every worker "
                                 f"shares (NFS, Lustre, ...)")
    finally:
        for answer in answers.values():
            if not answer.startswith("error: "):
                with contextlib.suppress(OSError):
                    os.unlink(answer)
    return path
