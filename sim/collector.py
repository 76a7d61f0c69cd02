"""How a run uses Python's cyclic garbage collector.

A run allocates millions of short-lived, acyclic objects (tasks, heap entries, answers) while the
interpreter holds hundreds of thousands of long-lived ones (modules, pandas, the scenario). With
the default thresholds, the collector's older-generation passes keep re-walking that long-lived
heap: about 10-15 % of a compiled run's CPU (docs/performance.md, "Garbage collection"). During a
run, the long-lived heap is frozen (never walked) and young collections are rarer; reference
counting still frees everything acyclic at once, and collections still run, so memory stays
bounded. Nothing in the model observes collection, so results are unchanged.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Allocations between young collections during a run (CPython's default is 700).
RUN_GEN0_THRESHOLD = 100_000


@contextmanager
def tuned_for_a_run() -> Iterator[None]:
    """Freeze the heap that exists now and raise the young threshold; restore both afterwards.

    A caller's own frozen objects or disabled collector are left as they are."""
    old_threshold = gc.get_threshold()
    freeze = gc.isenabled() and gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.set_threshold(max(RUN_GEN0_THRESHOLD, old_threshold[0]), *old_threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old_threshold)
        if freeze:
            gc.unfreeze()
