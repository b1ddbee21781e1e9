"""Benchmark suite for optdiff: the ODU phase stack against the tools a user would pick instead.

Run ``python benchmarks/run_benchmarks.py --help`` (or ``pytest benchmarks/ --benchmark-only``).
"""
