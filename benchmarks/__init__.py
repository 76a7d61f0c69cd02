"""Benchmarks for admission-sim: ``python -m benchmarks [--quick] [--out PATH]``.

Not part of the test suite: it measures wall time, simulated tasks and SimPy events per wall
second, and peak memory, for the headline scenarios, each against a bare SimPy reference run in
the same process (so the ratio is comparable across machines), plus a scale series of the
window scenario. See ``docs/performance.md``.
"""
