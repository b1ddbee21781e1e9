"""Model-quality studies of optical diffusion models (not speed benchmarks; see studies/README.md).

Run them as scripts, e.g. ``python studies/quality.py --help``.
"""
