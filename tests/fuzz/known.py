"""Known defects: failures the fuzzer finds whose fix belongs to someone else's code.

Each :class:`Known` names the defect, says whose fix it waits for (``in flight``: the C++ fixes
being made now; ``reported``: found by this fuzzer, reported to the owner of the file), matches
the fuzz results it explains, and has a ``probe``: a few lines of Python that fail (an exception
or a crash) while the defect is there. ``tests/test_fuzz.py`` runs every probe as a strict xfail:
the day a fix lands its xfail passes, and the entry must be deleted here, so nothing stays hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

NEAR_END = 2**64 - 2**20


@dataclass(frozen=True)
class Known:
    name: str
    reason: str
    match: Callable[[dict], bool]
    probe: str


def _tags(r) -> str:
    return " ".join(r.get("tags", []))


def _offset(text: str) -> int:
    m = re.search(r"offset=(\d+)", text)
    return int(m.group(1)) if m else 0


def _near_end(r) -> bool:
    """The case, or (for a crash that comes later) an earlier case of the same process, drew normals
    near the end of a stream."""
    if r["entry"] in ("standard_normal", "ddpm_update") and ("offset:lastnumbers" in _tags(r) or _offset(r["desc"]) > NEAR_END):
        return True
    return bool(r.get("delayed")) and any(("standard_normal" in h or "ddpm_update" in h) and _offset(h) > NEAR_END
                                          for h in r.get("history", []))


def _is(r, entries, outcomes, tags=()) -> bool:
    return ((not entries or r["entry"] in entries or any(r["entry"].startswith(e) for e in entries if e.endswith(".")))
            and r["outcome"] in outcomes and (not tags or any(t in _tags(r) for t in tags)))


OPTICS = ("Propagator", "Propagator.", "propagate", "PhaseStack", "PhaseStack.")
GEOMETRY_TAGS = ("wavelength:absurd", "pitch:absurd", "distance:absurd", "distances:absurd", "input_distance:absurd",
                 "tilt:steep", "tilts:steep", "input_tilt:steep")
HUGE_TAGS = ("field:huge", "phases:huge", "grad_intensity:huge", "target:huge")
GEOM = "wavelength=850e-9, pitch=9.2e-6"

KNOWN = [
    # ------------------------------------------------------------- in flight (C++ core)
    Known("standard_normal/ddpm_update: offset + size reaching 2**64 wraps in C++ (crash, heap corruption)",
          "in flight (C++): the numbers 2**64 - size .. 2**64 - 1 of a stream are allowed by the Python front "
          "and make the core write out of bounds",
          lambda r: r["outcome"] in ("crash", "wrong_value", "hang") and _near_end(r),
          "import optdiff\nz = optdiff.standard_normal(4096, seed=0, offset=2**64 - 4096)\nassert z.shape == (4096,)"),
    Known("unaligned arrays reach the C++ core",
          "in flight (C++): an array at an odd address (np.frombuffer(..., offset=1)) should be refused with a "
          "ValueError naming it; today it reaches kernels that assume alignment",
          lambda r: _is(r, (), ("crash", "wrong_value", "nonfinite", "hang"), (":unaligned",)),
          "import numpy as np, optdiff\nb = bytearray(8 * 64 + 1)\nu = np.frombuffer(b, np.complex64, 64, 1).reshape(8, 8)\n"
          f"p = optdiff.Propagator(8, distance=1e-3, {GEOM})\n"
          "try:\n    p.forward(u)\nexcept ValueError as e:\n    assert 'field' in str(e)\n"
          "else:\n    raise AssertionError('unaligned field accepted')"),
    Known("absurd physical parameters give NaN/Inf fields",
          "in flight (C++): distance 1e300, wavelength 2e-308 or 1.7e308, pitch 5e-324 or 1.8e308 pass the checks "
          "and the transfer function becomes NaN",
          lambda r: _is(r, OPTICS, ("nonfinite", "wrong_value"), GEOMETRY_TAGS),
          "import numpy as np, optdiff\nout = optdiff.Propagator(8, distance=1e300, "
          f"{GEOM}).forward(np.ones((8, 8), np.complex64))\nassert np.all(np.isfinite(out))"),
    Known("intensity overflow: a huge field gives Inf instead of an error",
          "in flight (C++): |E|^2 of a complex64 field of 1e30 (or complex128 of 1e300) overflows to Inf; outputs "
          "that would overflow should raise",
          lambda r: _is(r, OPTICS, ("nonfinite",), HUGE_TAGS),
          "import numpy as np, optdiff\nst = optdiff.PhaseStack(8, distances=[1e-3], "
          f"{GEOM})\nf = np.full((1, 8, 8), 1e30, np.complex64)\n"
          "try:\n    I = st.forward(f, np.zeros((1, 8, 8), np.float32))\nexcept ValueError:\n    pass\n"
          "else:\n    assert np.all(np.isfinite(I)), 'Inf intensity'"),
    Known("PhaseStack.forward(out=...): errors name 'intensity', overlap with field/phases not detected",
          "in flight (C++): out's checks report the internal name 'intensity' and a partial overlap of out with "
          "field or phases is accepted",
          lambda r: _is(r, ("PhaseStack.forward",), ("bad_message", "accepted_bad", "wrong_value", "crash"), ("out:",)),
          "import numpy as np, optdiff\nst = optdiff.PhaseStack(8, distances=[1e-3], "
          f"{GEOM})\n"
          "try:\n    st.forward(np.ones((2, 8, 8), np.complex64), np.zeros((1, 8, 8), np.float32), "
          "out=np.empty((3, 8, 8), np.float32))\nexcept ValueError as e:\n    assert 'out' in str(e), str(e)"),
    Known("ddpm_update: NaN/Inf in x or eps not rejected",
          "in flight (C++): ddpm_update does not scan x and eps for NaN/Inf (every other entry point raises "
          "ValueError naming the array)",
          lambda r: _is(r, ("ddpm_update",), ("accepted_bad",), ("x:nonfinite", "eps:nonfinite")),
          "import numpy as np, optdiff\nx = np.zeros(8, np.float32); e = x.copy(); e[3] = np.nan\n"
          "try:\n    optdiff.ddpm_update(x, e, c1=1, c2=1, sigma=0, seed=0, stream=0)\n"
          "except ValueError as exc:\n    assert 'eps' in str(exc)\nelse:\n    raise AssertionError('NaN accepted')"),
    # ------------------------------------------------------------- reported (found by this fuzzer)
    Known("ddpm_update: results that overflow (huge sigma, c1, x) come back as Inf",
          "reported (C++ / sampling_step.py): float64 coefficients or values whose update overflows give Inf "
          "silently; outputs that would overflow should raise",
          lambda r: _is(r, ("ddpm_update",), ("nonfinite",)),
          "import numpy as np, optdiff\nx = np.ones(1000)\n"
          "try:\n    y = optdiff.ddpm_update(x, x, c1=1, c2=0, sigma=1.7e308, seed=0, stream=0)\n"
          "except ValueError:\n    pass\nelse:\n    assert np.all(np.isfinite(y)), 'Inf result'"),
    Known("set_num_threads: the error does not name the argument n",
          "reported (optics/backends/cpu.py): 'number of threads must be a positive integer' for set_num_threads(n)",
          lambda r: _is(r, ("set_num_threads",), ("bad_message",)),
          "import re, optdiff\ntry:\n    optdiff.set_num_threads('')\nexcept ValueError as e:\n"
          "    assert re.search(r'\\bn\\b', str(e)), str(e)"),
    Known("Propagator.transfer_function(dtype=...): NumPy's error does not name dtype",
          "reported (optics/propagator.py): np.dtype(3) raises 'Cannot interpret 3 as a data type'",
          lambda r: _is(r, ("Propagator.transfer_function",), ("bad_message", "bad_exception")),
          f"import optdiff\np = optdiff.Propagator(8, distance=1e-3, {GEOM})\n"
          "try:\n    p.transfer_function(3)\nexcept (TypeError, ValueError) as e:\n    assert 'dtype' in str(e), str(e)"),
    Known("standard_normal: dtype= ignored or blamed on out when out= is given",
          "reported (optics/sampling_step.py): standard_normal(out=float64 array, dtype=np.int32) returns the "
          "float64 numbers without a word, and dtype=float16 is reported as a problem of out",
          lambda r: _is(r, ("standard_normal",), ("accepted_bad", "bad_message"), ("dtype:",)),
          "import numpy as np, optdiff\ntry:\n    optdiff.standard_normal(out=np.empty(3), dtype=np.int32, seed=0)\n"
          "except (TypeError, ValueError) as e:\n    assert 'dtype' in str(e)\nelse:\n    raise AssertionError('dtype ignored')"),
    Known("standard_normal/ddpm_update: a non-array argument is sent to the CUDA backend; a shape of 2**64 overflows",
          "reported (optics/sampling_step.py, optics/backends/__init__.py backend_for): out=[0.0] or x=[...] raise "
          "RuntimeError 'needs a CUDA device' (or pass), shape=(2**64 + 4,) an OverflowError, instead of "
          "TypeError/ValueError naming the argument",
          lambda r: _is(r, ("standard_normal", "ddpm_update"), ("bad_exception", "accepted_bad", "bad_message"),
                        ("out:notarray", "shape:", "x:notarray", "eps:notarray")),
          "import optdiff\ntry:\n    optdiff.standard_normal((2**64 + 4,), seed=0)\nexcept ValueError as e:\n"
          "    assert 'shape' in str(e)\n"
          "try:\n    optdiff.standard_normal(out=[0.0], seed=0)\nexcept TypeError as e:\n    assert 'out' in str(e)"),
    Known("ODU.intensity: +-Inf pixels are clipped silently, NaN is reported as a problem of 'field'",
          "reported (odu/unit.py): the images are not checked for NaN/Inf before the amplitude encoding clips them",
          lambda r: _is(r, ("ODU.intensity",), ("accepted_bad", "bad_message"), ("r:nonfinite",)),
          "import numpy as np\nfrom optdiff.config import OpticsConfig\nfrom optdiff.odu import ODU, init_phases\n"
          "o = OpticsConfig(n=16, upsample=2, distance=3e-3, layers=2)\nodu = ODU(o, 6)\nr = np.zeros((1, 6, 6)); r[0, 0, 0] = np.inf\n"
          "try:\n    odu.intensity(r, init_phases(o, image_size=6))\nexcept ValueError as e:\n    assert 'images' in str(e)\n"
          "else:\n    raise AssertionError('Inf pixel accepted')"),
    Known("PhaseStack(distances=[[a, b]]): nested distances are flattened silently",
          "reported (optics/specs.py): np.asarray(distances).reshape(-1) turns a nested list into more layers "
          "instead of refusing it",
          lambda r: _is(r, ("PhaseStack",), ("accepted_bad",), ("distances:bad",)),
          f"import optdiff\ntry:\n    optdiff.PhaseStack(4, distances=[[1e-3, 2e-3]], {GEOM})\n"
          "except ValueError as e:\n    assert 'distances' in str(e)\nelse:\n    raise AssertionError('nested distances accepted')"),
    Known("PhaseStack(distances=[], tilts=[...]): the error blames tilts",
          "reported (optics/specs.py): with no distances the tilts' shape check fires first",
          lambda r: _is(r, ("PhaseStack",), ("bad_message",), ("distances:",)) and "tilts" in r.get("detail", ""),
          f"import optdiff\ntry:\n    optdiff.PhaseStack(4, distances=[], tilts=[(0.0, 0.0)], {GEOM})\n"
          "except ValueError as e:\n    assert 'distances' in str(e), str(e)"),
]


def classify(r: dict) -> str | None:
    """The known defect that explains failed result ``r``, or None."""
    for k in KNOWN:
        try:
            if k.match(r):
                return k.name
        except (KeyError, TypeError):
            continue
    return None
