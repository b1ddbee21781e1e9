"""``set_planner_effort("estimate")`` gives the plans of a fresh process even after timed planning.

FFTW reuses wisdom from MEASURE planning for later ESTIMATE plans, so without care a process that
trained with "measure" and then switched to "estimate" computed different last bits from a
fresh "estimate" process (seen in the Dask tests: a set trained on a worker against the serial
trainer in the test process)."""
import json
import os
import subprocess
import sys

import numpy as np

import optdiff
from optdiff.optics import set_planner_effort

SIZES = (24, 40, 56)


def results() -> list:
    out = []
    for n in SIZES:
        rng = np.random.default_rng(n)
        stack = optdiff.PhaseStack(n, wavelength=850e-9, pitch=9.2e-6, distances=[5e-3] * 3, padding=2,
                                   input_distance=5e-3)
        field = (rng.standard_normal((3, n, n)) + 1j * rng.standard_normal((3, n, n))).astype(np.complex64)
        phases = rng.uniform(0, 2 * np.pi, (3, n, n)).astype(np.float32)
        target = rng.uniform(0, 1, (3, n, n)).astype(np.float32)
        loss, g = stack.mse_loss_and_grad(field, phases, target)
        out.append([float(loss), g.astype(np.float64).tobytes().hex()])
    return out


def test_estimate_after_measure_equals_a_fresh_estimate_process():
    set_planner_effort("measure")
    try:
        results()                       # timed plans (and FFTW wisdom) for these sizes
        set_planner_effort("estimate")
        here = results()
    finally:
        set_planner_effort("measure")
    fresh = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True, text=True,
                                      check=True).stdout)
    assert here == fresh


if __name__ == "__main__":  # the fresh process: "estimate" from the start
    set_planner_effort("estimate")
    print(json.dumps(results()))
