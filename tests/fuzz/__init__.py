"""Fuzz harness of optdiff's public entry points (issue #13).

Every case is made from ``(seed, index)`` alone (:func:`fuzz.cases.make_case`), runs in a worker
subprocess (:mod:`fuzz.worker`, many cases per process) and is judged there: a clean
``TypeError``/``ValueError``/``MemoryError`` whose message names the argument, or a correct result
(right shape and dtype, finite for finite inputs, equal to a NumPy reference where there is one).
The parent (:mod:`fuzz.harness`) restarts a worker that crashes or hangs and records the case
that did it. ``python -m tests.fuzz --cases 100000`` is the long run; ``tests/test_fuzz.py`` runs a
seeded subset.
"""
