"""The bounded columnar series (sim/series.py): exact below the cap, thinned and bounded above it,
with counts and time integrals that stay exact."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from sim.series import CALL_WIDTH, CallSeries, StepSeries, weighted_sum


def _step_rows(n: int, seed: int = 0) -> list[tuple[float, ...]]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(0.01, n))
    values = rng.integers(0, 50, size=(n, 2))
    return [(float(t), int(a), int(b)) for t, (a, b) in zip(times, values, strict=True)]


def test_step_series_keeps_every_change_below_its_cap() -> None:
    s = StepSeries(3, cap=1000, mean_columns=(1,))
    rows = _step_rows(500)
    for row in rows:
        s.add(row)
    s.add(rows[-1][:1] + rows[-1][1:])  # nothing changed: ignored
    assert not s.thinned and s.n == 500
    np.testing.assert_array_equal(s.rows(), np.array(rows))


def test_step_series_merges_same_instant_samples_and_skips_unchanged_ones() -> None:
    s = StepSeries(2, cap=10, mean_columns=(1,))
    for row in [(0.0, 1), (0.0, 2), (1.0, 2), (2.0, 3)]:
        s.add(row)
    assert s.rows().tolist() == [[0.0, 2.0], [2.0, 3.0]]


def test_step_series_stays_within_its_cap_and_its_integral_stays_exact() -> None:
    rows = _step_rows(100_000)
    s = StepSeries(3, cap=1000, mean_columns=(1, 2))
    full = StepSeries(3, cap=None, mean_columns=(1, 2))
    for row in rows:
        s.add(row)
        full.add(row)
    assert s.thinned and s.n <= 1000 and not full.thinned
    kept = s.rows()
    everything = full.rows()
    assert kept[0].tolist() == list(rows[0]) and kept[-1].tolist() == list(rows[-1])
    assert {tuple(r) for r in kept.tolist()} <= {tuple(r) for r in everything.tolist()}
    assert np.all(np.diff(kept[:, 0]) > 0)
    assert s.merged == full.n - s.n
    end = rows[-1][0] + 1.0
    widths = np.diff(np.append(everything[:, 0], end))
    for j, k in enumerate((1, 2)):
        assert s.time_integral(j, end) == pytest.approx(float(np.dot(widths, everything[:, k])), rel=1e-12)


def _calls(n: int, n_models: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, CALL_WIDTH))
    out[:, 0] = np.cumsum(rng.exponential(0.001, n))
    out[:, 1] = rng.integers(0, n_models, n)
    out[:, 2:5] = rng.integers(0, 100, size=(n, 3))
    out[:, 5] = rng.random(n)
    sent = rng.random(n) < 0.5
    out[:, 6] = sent
    out[:, 7] = ~sent
    out[:, 8] = ~sent & (rng.random(n) < 0.1)
    return out


def _feed(series: CallSeries, rows: np.ndarray) -> None:
    for r in rows.tolist():
        series.add(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5], int(r[6]), int(r[7]), int(r[8]))


def test_call_series_keeps_every_row_below_its_cap() -> None:
    rows = _calls(2000, 3)
    s = CallSeries(3, cap=5000)
    _feed(s, rows)
    assert not s.thinned
    np.testing.assert_array_equal(s.rows(), rows)


@pytest.mark.parametrize("cap", [64, 1000])
def test_call_series_is_bounded_and_keeps_counts_exact(cap: int) -> None:
    n_models = 4
    rows = _calls(50_000, n_models)
    s = CallSeries(n_models, cap=cap)
    _feed(s, rows)
    assert s.thinned and s.n <= cap
    assert len(s.data) == s.n * CALL_WIDTH
    kept = s.rows()
    assert np.all(np.diff(kept[:, 0]) >= 0)
    for m in range(n_models):
        mine, theirs = kept[kept[:, 1] == m], rows[rows[:, 1] == m]
        np.testing.assert_array_equal(mine[:, 6:].sum(axis=0), theirs[:, 6:].sum(axis=0))
        # each kept row is the model's true state after its last event in that cell
        state = {tuple(r) for r in theirs[:, :6].tolist()}
        assert all(tuple(r) in state for r in mine[:, :6].tolist())
        assert mine[-1, :6].tolist() == theirs[-1, :6].tolist()  # the final state is kept
    assert s.merged == len(rows) - s.n


def test_a_full_detail_series_has_no_cap() -> None:
    s = CallSeries(2, cap=None)
    rows = _calls(5000, 2)
    _feed(s, rows)
    assert not s.thinned and s.n == 5000


def test_caps_too_small_to_thin_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        StepSeries(2, cap=1, mean_columns=())
    with pytest.raises(ValueError, match="2 rows per model"):
        CallSeries(4, cap=7)


def test_weighted_sums_are_exact_and_do_not_depend_on_the_blas_thread_count() -> None:
    """A long ``np.dot`` goes to BLAS, whose last digits depend on its thread count (the time
    means of a production-sized run differed between OPENBLAS_NUM_THREADS=1 and the default)."""
    code = (
        "import numpy as np; from sim.series import weighted_sum; rng = np.random.default_rng(1); "
        "print(repr(weighted_sum(rng.random(300_000), rng.random(300_000) * 1e4)))"
    )
    outputs = set()
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1
    rng = np.random.default_rng(1)
    weights, values = rng.random(300_000), rng.random(300_000) * 1e4
    assert float(outputs.pop()) == math.fsum((weights * values).tolist()) == weighted_sum(weights, values)
