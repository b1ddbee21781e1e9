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
    # ------------------------------------------------------------- reported (found by this fuzzer)
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
