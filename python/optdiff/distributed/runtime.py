"""What a task needs to know about the process it runs in: FFTW planner effort and thread count.

A Dask worker process runs many tasks one after another, so every task sets the planner effort
it was given (the default ``"measure"`` when none) instead of inheriting the last task's, and
takes as many optics threads as its worker has (``LocalCluster(threads_per_worker=...)``, a
jobqueue job's cores), so K workers on K cores do not oversubscribe the machine.
"""

from __future__ import annotations

__all__ = ["apply_planner", "task_threads", "EFFORTS"]

EFFORTS = ("estimate", "measure", "patient")


def apply_planner(planner: str | None) -> None:
    """Set FFTW's planner effort for the plans this task makes (None: the default, ``measure``)."""
    from ..optics import set_planner_effort

    effort = planner or "measure"
    if effort not in EFFORTS:
        raise ValueError(f"planner must be one of {EFFORTS}, got {planner!r}")
    set_planner_effort(effort)


def task_threads(default: int) -> int:
    """The thread count of the Dask worker running this task, else ``default``."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):  # not inside a worker
        return int(default)
