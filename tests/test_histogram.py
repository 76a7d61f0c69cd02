"""The latency histograms' bin layout, their O(1) add, and percentiles within one bin of exact."""

from __future__ import annotations

import bisect
import math
import random

import numpy as np
import pytest

from sim.histogram import (
    EDGES,
    FIRST_LOG,
    HIGH,
    LOW,
    OVER,
    RELATIVE_WIDTH,
    UNDER,
    WIDTH,
    ZERO,
    LatencyHistograms,
    bin_edges,
    bin_index,
)


def test_layout_spans_1e_minus_6_to_1e5_at_100_bins_a_decade() -> None:
    assert (EDGES[0], EDGES[600], EDGES[-1]) == (1e-6, 1.0, 1e5) == (LOW, 1.0, HIGH)
    assert len(EDGES) == 1101 and WIDTH == 1103
    ratios = np.diff(np.log10(EDGES))
    assert ratios == pytest.approx(0.01, abs=1e-12)
    assert max(b / a for a, b in zip(EDGES, EDGES[1:], strict=False)) - 1 == pytest.approx(RELATIVE_WIDTH, rel=1e-12)
    assert RELATIVE_WIDTH == pytest.approx(0.0233, abs=1e-4)


def test_every_value_lands_in_the_bin_whose_stored_edges_hold_it() -> None:
    rng = random.Random(1)
    values = [10 ** rng.uniform(-6, 5) for _ in range(20_000)]
    values += (
        EDGES[:-1] + [math.nextafter(e, 0.0) for e in EDGES[1:]] + [math.nextafter(e, math.inf) for e in EDGES[:-1]]
    )
    for x in values:
        slot = bin_index(x)
        lo, hi = bin_edges(slot)
        assert lo <= x < hi, x
        assert slot == FIRST_LOG + bisect.bisect_right(EDGES, x) - 1


def test_special_slots() -> None:
    assert bin_index(0.0) == bin_index(-1.0) == bin_index(math.nan) == ZERO
    assert bin_index(5e-7) == bin_index(math.nextafter(LOW, 0.0)) == UNDER
    assert bin_index(HIGH) == bin_index(math.inf) == OVER
    assert bin_edges(ZERO) == (0.0, 0.0) and bin_edges(UNDER) == (0.0, LOW) and bin_edges(OVER) == (HIGH, math.inf)


def test_memory_is_fixed_and_counts_sums_and_extremes_are_exact() -> None:
    h = LatencyHistograms(2)
    rng = random.Random(2)
    values = [rng.lognormvariate(-1.0, 1.5) for _ in range(10_000)]
    for x in values:
        h.add(1, x)
    assert len(h.counts) == 2 * WIDTH  # independent of the number of values
    assert (h.count(0), h.count(1)) == (0, 10_000)
    assert h.sums[1] == pytest.approx(sum(values), rel=1e-12)
    assert (h.mins[1], h.maxs[1]) == (min(values), max(values))
    assert math.isnan(h.mean(0)) and math.isnan(h.percentile(0, 50))
    assert sum(c for _, _, c in h.nonempty(1)) == 10_000


@pytest.mark.parametrize("sigma", [0.01, 0.5, 3.0])
def test_percentiles_are_within_one_bin_of_the_exact_order_statistic(sigma: float) -> None:
    rng = random.Random(3)
    values = np.array([rng.lognormvariate(0.0, sigma) for _ in range(5_001)])
    h = LatencyHistograms(1)
    for x in values:
        h.add(0, float(x))
    for p in (0, 0.1, 1, 10, 50, 90, 99, 99.9, 100):
        truth = float(np.percentile(values, p, method="inverted_cdf"))
        assert abs(h.percentile(0, p) - truth) <= RELATIVE_WIDTH * truth * (1 + 1e-12), p
    assert (h.percentile(0, 0), h.percentile(0, 100)) == (values.min(), values.max())  # clipped to the extremes


def test_percentile_rank_is_the_inverted_cdf_one() -> None:
    h = LatencyHistograms(1)
    for x in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0):  # one value a bin, far apart
        h.add(0, x)
    # p90 of 10 values is the 9th (256), not the 10th: 0.9 * 10 is rank 9 despite rounding
    assert 256.0 / (1 + RELATIVE_WIDTH) <= h.percentile(0, 90) <= 256.0 * (1 + RELATIVE_WIDTH)
    assert 16.0 / (1 + RELATIVE_WIDTH) <= h.percentile(0, 50) <= 16.0 * (1 + RELATIVE_WIDTH)


def test_zeros_and_equal_values_give_exact_percentiles() -> None:
    h = LatencyHistograms(2)
    for _ in range(5):
        h.add(0, 0.0)
        h.add(1, 0.3)
    h.add(0, 2.0)
    assert h.percentile(0, 50) == 0.0 and h.percentile(0, 100) == 2.0
    assert h.percentile(1, 1) == h.percentile(1, 99) == 0.3
