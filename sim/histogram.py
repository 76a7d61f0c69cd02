"""Per-call latency as streaming histograms: fixed log-spaced bins, O(1) per call, bounded memory.

A run can answer millions of calls; keeping every latency would grow with the run. Instead each
(model, outcome) keeps counts on one fixed bin layout, plus the exact sum, minimum and maximum
(docs/metrics.md, "Call latency"):

* ``ZERO``: exactly 0 (a zero-latency mock endpoint), and anything that is not > 0;
* ``UNDER``: 0 < x < ``LOW`` (1e-6 s);
* ``BINS_PER_DECADE`` (100) log-spaced bins per decade from ``LOW`` to ``HIGH`` (1e5 s), bin ``k``
  being ``[EDGES[k], EDGES[k + 1])`` with ``EDGES[k] = 10 ** (k / 100 - 6)``: each bin is
  ``10 ** 0.01 - 1`` = 2.33 % wider at its top than at its bottom;
* ``OVER``: x >= ``HIGH`` (infinity included).

The bin of a latency is one ``log10`` and at most two comparisons against the stored edges, so the
bin a value lands in always satisfies ``EDGES[k] <= x < EDGES[k + 1]`` exactly, whatever the
rounding of ``log10``. Percentiles from the counts are within one bin of the exact ones
(:meth:`LatencyHistograms.percentile`).
"""

from __future__ import annotations

import math
from typing import Final

#: Bin layout: decades from LOW to HIGH, BINS_PER_DECADE log-spaced bins in each.
LOW: Final[float] = 1e-6
HIGH: Final[float] = 1e5
BINS_PER_DECADE: Final[int] = 100
DECADES: Final[int] = 11
N_LOG_BINS: Final[int] = BINS_PER_DECADE * DECADES
#: EDGES[k] = 10 ** (k / BINS_PER_DECADE - 6); EDGES[0] == LOW and EDGES[-1] == HIGH exactly.
EDGES: Final[list[float]] = [10.0 ** ((k - 6 * BINS_PER_DECADE) / BINS_PER_DECADE) for k in range(N_LOG_BINS + 1)]
#: Largest ratio of a bin's upper to its lower edge, minus one (2.33 %): the percentiles' relative bound.
RELATIVE_WIDTH: Final[float] = 10.0 ** (1.0 / BINS_PER_DECADE) - 1.0
#: Slots of one histogram: zero, underflow, the log bins, overflow.
ZERO: Final[int] = 0
UNDER: Final[int] = 1
FIRST_LOG: Final[int] = 2
OVER: Final[int] = FIRST_LOG + N_LOG_BINS
WIDTH: Final[int] = OVER + 1

_SCALE: Final[float] = float(BINS_PER_DECADE)
_OFFSET: Final[float] = 6.0 * _SCALE  # bins below 1 s: -log10(LOW) decades
_INF: Final[float] = math.inf


def bin_index(x: float) -> int:
    """The slot of latency ``x`` (seconds) in one histogram (see the module docstring)."""
    if LOW <= x < HIGH:  # the common case first, in one chained comparison
        k = int(math.log10(x) * _SCALE + _OFFSET)  # truncation is floor: the argument is >= 0 up to rounding
        if x < EDGES[k]:
            k -= 1
        elif x >= EDGES[k + 1]:
            k += 1
        return FIRST_LOG + k
    if x >= HIGH:
        return OVER
    if x > 0.0:
        return UNDER
    return ZERO  # zero, and NaN, which has no bin


def bin_edges(slot: int) -> tuple[float, float]:
    """``[lower, upper)`` of a slot; ``(0, 0)`` for the zero slot, ``(HIGH, inf)`` for overflow."""
    if slot == ZERO:
        return 0.0, 0.0
    if slot == UNDER:
        return 0.0, LOW
    if slot == OVER:
        return HIGH, _INF
    k = slot - FIRST_LOG
    return EDGES[k], EDGES[k + 1]


class LatencyHistograms:
    """``n`` histograms on the shared bin layout, in one flat list (histogram ``h`` owns
    ``counts[h * WIDTH:(h + 1) * WIDTH]``), with their exact sums, minima and maxima."""

    __slots__ = ("n", "counts", "sums", "mins", "maxs")

    def __init__(self, n: int) -> None:
        self.n = n
        self.counts: list[int] = [0] * (n * WIDTH)
        self.sums: list[float] = [0.0] * n
        self.mins: list[float] = [_INF] * n
        self.maxs: list[float] = [-_INF] * n

    def add(self, h: int, x: float) -> None:
        """One value into histogram ``h``: O(1), one list element incremented."""
        self.counts[h * WIDTH + bin_index(x)] += 1
        self.sums[h] += x
        if x < self.mins[h]:
            self.mins[h] = x
        if x > self.maxs[h]:
            self.maxs[h] = x

    # -- after the run -------------------------------------------------------------------------

    def bins(self, h: int) -> list[int]:
        return self.counts[h * WIDTH : (h + 1) * WIDTH]

    def count(self, h: int) -> int:
        return sum(self.bins(h))

    def mean(self, h: int) -> float:
        n = self.count(h)
        return self.sums[h] / n if n else math.nan

    def percentile(self, h: int, p: float) -> float:
        """The ``p``-th percentile (0-100) of histogram ``h``; NaN when it is empty.

        Exact percentile meant: the order statistic of rank ``max(1, ceil(p / 100 * n))``, the
        smallest value with at least ``p`` % of the values at or below it (numpy's
        ``method="inverted_cdf"``). The estimate lies in that value's bin, interpolated linearly by
        rank inside it and with the bin's edges clipped to the exact minimum and maximum, so it is
        off by less than one bin: under 2.33 % (:data:`RELATIVE_WIDTH`) of the value in the log
        bins, under ``LOW`` below it, exact in the zero slot and when all values are equal.
        """
        counts = self.bins(h)
        n = sum(counts)
        if n == 0:
            return math.nan
        target = p / 100.0 * n
        rank = max(1, math.ceil(round(target, 9)))  # round: 0.9 * 10 must be rank 9, not 10
        seen = 0
        for slot, c in enumerate(counts):
            if c and seen + c >= rank:
                if slot == ZERO:
                    return 0.0
                lo, hi = bin_edges(slot)
                lo = max(lo, self.mins[h])
                hi = min(hi, self.maxs[h])
                frac = min(1.0, max(0.0, (target - seen) / c))
                return lo + (hi - lo) * frac
            seen += c
        return self.maxs[h]  # not reached: rank <= n

    def nonempty(self, h: int) -> list[tuple[float, float, int]]:
        """``(lower, upper, count)`` of each non-empty slot of histogram ``h``, in bin order."""
        return [(*bin_edges(slot), c) for slot, c in enumerate(self.bins(h)) if c]
