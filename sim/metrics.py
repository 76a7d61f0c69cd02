"""What happened: an append-only recorder of counters, maxima and time series, and the summary
metrics derived from it after the run.

The scheduler calls the recorder at the moments the real scheduler samples its metrics (docs/metrics.md):
after each main-loop iteration, at dispatch, and when a call is sent or answered. Counters are
plain Python numbers; the time series and the row-group log are columnar arrays whose memory is
bounded by caps, not by the run's length (:mod:`sim.series`; docs/reliability.md, "Bounded
recorder"). Every per-call hook is O(1) amortized (a few comparisons, one row appended or
updated, one latency-histogram bin incremented: sim/histogram.py), because the recorder sits on
the simulator's hot path. Anything that needs a scan over the run (percentiles, time-weighted
means, interval overlaps) is computed once, after the run, by :func:`model_metrics` and
:func:`run_metrics`, and pandas tables are built by :mod:`sim.results`.
The recorder decides nothing.

The metrics answer "what limited progress?"; each one is defined, with its unit, in
``docs/metrics.md``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mypy_extensions import mypyc_attr

from .histogram import LatencyHistograms
from .scenario import Scenario
from .series import CALL_WIDTH, CallSeries, StepSeries, weighted_sum
from .workload import Workload

if TYPE_CHECKING:
    from .scheduler import Scheduler

SCHEDULER_SERIES_COLUMNS = (
    "time",
    "target",
    "active_row_groups",
    "active_rows",
    "queued_tasks",
    "in_flight_tasks",
    "deferred_tasks",
    "completed_rows",
    "successful_calls",
    "healthy_calls",
)
#: One row per call sent or answered; ``rate_limited`` is True only on the row of a 429 answer.
MODEL_SERIES_COLUMNS = ("time", "model", "in_flight", "waiting", "current_limit", "cooldown_until", "rate_limited")
#: Calls of the row's model sent, answered and answered 429 at the row (0 or 1 each) or, once the
#: series is thinned, since the model's previous row: counts over any time window stay exact.
CALL_COUNT_COLUMNS = ("sent", "answered", "answered_429")

#: Percentiles of each model's successful-call latency in the summary, ``call_latency_p<p>[<model>]``.
CALL_LATENCY_PERCENTILES = (50, 90, 99)
#: Outcome labels of the latency histograms, in histogram order (``2 * model + k``).
CALL_OUTCOMES = ("success", "rate_limited")

#: ``Result.call_latency``: one row per non-empty bin of a model's latency histogram for one outcome.
CALL_LATENCY_COLUMNS = ("model", "outcome", "lower", "upper", "count")
#: ``Result.call_latency_stats``: one row per model and outcome.
CALL_LATENCY_STATS_COLUMNS = (
    "model",
    "outcome",
    "count",
    "sum",
    "min",
    "max",
    "mean",
    *(f"p{p}" for p in CALL_LATENCY_PERCENTILES),
)

#: Scheduler-series columns whose time-weighted mean goes into the summary as ``<column>_time_mean``.
TIME_MEAN_COLUMNS = ("queued_tasks", "active_row_groups", "in_flight_tasks", "deferred_tasks")

NAN = float("nan")

#: Rows kept at full fidelity per run (docs/reliability.md, "Bounded recorder"); past them a series is
#: thinned to at most this many rows (sim/series.py), the summary stays exact. The bundled scenarios
#: record at most about 2,000 and 21,000 rows, so they keep every row. A scenario may set its own
#: caps, or ``recorder.detail = "full"`` to keep every row (memory then grows with the run).
MAX_SERIES_ROWS = 200_000
MAX_MODEL_SERIES_ROWS = 500_000
#: Busy and cooldown intervals kept per model or cooldown slot; past it, everything before the
#: current time is folded into exact running totals (lengths, overlaps, period counts).
MAX_INTERVALS = 100_000
_TIME_MEAN_INDEX = tuple(SCHEDULER_SERIES_COLUMNS.index(c) for c in TIME_MEAN_COLUMNS)
#: Scheduler-series columns stored as integers (all but ``time``).
_INT_SCHEDULER_COLUMNS = SCHEDULER_SERIES_COLUMNS[1:]


class RowGroupLog:
    """Checkpointed row groups, columnar: id, size, admitted_at, checkpointed_at (checkpoint order).

    It appends, pops and iterates ``(id, size, admitted_at, checkpointed_at)`` tuples, like the list
    of tuples it replaces, at 32 bytes a group instead of about 150."""

    __slots__ = ("ids", "sizes", "admitted", "checkpointed")

    def __init__(self) -> None:
        self.ids = array("q")
        self.sizes = array("q")
        self.admitted = array("d")
        self.checkpointed = array("d")

    def append(self, row: tuple[int, int, float, float]) -> None:
        rg_id, size, admitted_at, checkpointed_at = row
        self.ids.append(rg_id)
        self.sizes.append(size)
        self.admitted.append(admitted_at)
        self.checkpointed.append(checkpointed_at)

    def pop(self) -> tuple[int, int, float, float]:
        return (self.ids.pop(), self.sizes.pop(), self.admitted.pop(), self.checkpointed.pop())

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[int, int, float, float]]:
        return zip(self.ids, self.sizes, self.admitted, self.checkpointed, strict=True)

    def columns(self) -> dict[str, np.ndarray]:
        return {
            "row_group": np.frombuffer(self.ids, dtype=np.int64).copy() if len(self) else np.zeros(0, np.int64),
            "size": np.frombuffer(self.sizes, dtype=np.int64).copy() if len(self) else np.zeros(0, np.int64),
            "admitted_at": np.frombuffer(self.admitted, dtype=np.float64).copy() if len(self) else np.zeros(0),
            "checkpointed_at": np.frombuffer(self.checkpointed, dtype=np.float64).copy() if len(self) else np.zeros(0),
        }


Interval = list[float]  # [start, end), mutable so that a renewed cooldown extends it in place


@mypyc_attr(allow_interpreted_subclasses=True)  # a test records exact latencies in a subclass
class Recorder:
    """Counters, time series and interval logs of one run."""

    def __init__(
        self,
        scenario: Scenario,
        workload: Workload,
        max_series_rows: int | None = None,
        max_model_series_rows: int | None = None,
        max_intervals: int = MAX_INTERVALS,
    ) -> None:
        """Caps default to the scenario's ``recorder`` settings; ``None`` there (``detail = "full"``)
        keeps every row."""
        self.model_names = [m.name for m in scenario.models]
        n_models = len(self.model_names)
        n_gen = len(workload.generators)
        #: models that never answer 429: their calls are the "healthy" ones (the #743 headline)
        self.healthy_models = {i for i, m in enumerate(scenario.models) if m.rate_limit.pattern == "never"}
        self.calls_ok = [0] * n_gen
        self.calls_429 = [0] * n_gen
        self.model_ok = [0] * n_models
        self.model_429 = [0] * n_models
        self.model_in_flight = [0] * n_models
        self.model_waiting_count = [0] * n_models
        self.model_max_in_flight = [0] * n_models
        self.model_max_waiting = [0] * n_models
        self.model_limit = [m.max_parallel_requests for m in scenario.models]
        self.model_min_limit = [m.max_parallel_requests for m in scenario.models]
        self.model_cooldown_until = [0.0] * n_models
        #: integral of calls in flight over time per model (call-seconds), and when it last changed:
        #: over the answered calls it is their mean time in flight (Little's law), with no per-call log
        self.call_seconds = [0.0] * n_models
        self.in_flight_since = [0.0] * n_models
        #: per-call latency histograms, histogram ``2 * model + 1`` for 429 answers, ``2 * model`` for
        #: the others (sim/histogram.py; docs/metrics.md, "Call latency")
        self.latency = LatencyHistograms(2 * n_models)
        self.successful_calls = 0
        self.healthy_calls = 0
        #: healthy successes while another model was rate-limited: its last answer was a 429 or
        #: it is cooling down (the calls the localized fix is meant to keep flowing)
        self.healthy_calls_while_limited = 0
        self.model_last_429 = [False] * n_models
        self.max_row_groups_in_flight = 0
        self.max_queued_tasks = 0
        self.max_in_flight_tasks = 0
        self.dispatches = 0
        self.first_target_change: float | None = None
        self.target_changes = 0
        # Bounded memory: columnar series, thinned past their caps (sim/series.py).
        series_cap, calls_cap = _caps(scenario)
        self.max_series_rows = series_cap if max_series_rows is None else max_series_rows
        self.max_model_series_rows = calls_cap if max_model_series_rows is None else max_model_series_rows
        self.scheduler_series = StepSeries(len(SCHEDULER_SERIES_COLUMNS), self.max_series_rows, _TIME_MEAN_INDEX)
        self.call_series = CallSeries(n_models, self.max_model_series_rows)
        self.row_groups = RowGroupLog()
        self.row_groups_admitted = 0
        #: (stop reason, message) when a run budget ended the run
        self.budget_stop: tuple[str, str] | None = None
        self.scheduler_events = 0
        self.max_events = 0

        # Busy intervals per model: [start, end) while >= 1 call is in flight (zero-length ones dropped).
        self.busy_intervals: list[list[tuple[float, float]]] = [[] for _ in range(n_models)]
        self.busy_since = [0.0] * n_models
        # Work plan per model: one call per task of every generator bound to it (a cell-by-cell
        # generator has one task per row, a full-column one per row group, a multi-output one a
        # single task for all its columns); ``work_done_at`` is when the last planned call succeeded.
        sizes = workload.row_group_sizes
        total_rows, n_groups = sum(sizes), len(sizes)
        index = {name: i for i, name in enumerate(self.model_names)}
        self.planned_calls = [0] * n_models
        for g in workload.generators:
            if g.model is not None:
                self.planned_calls[index[g.model.name]] += total_rows if g.is_cell else n_groups
        self.work_done_at: list[float | None] = [None] * n_models
        # Cooldown intervals per cooldown slot. With request admission, models sharing a request
        # resource (provider, model id, domain) share its cooldown; without it, a model cools down
        # for its Retry-After (if any) after each 429.
        controlled = scenario.request_admission.enabled
        keys = {k: i for i, k in enumerate(workload.request_keys)}
        n_keys = len(keys)
        self.cooldown_slot: list[int] = []
        for i, m in enumerate(scenario.models):
            key = (m.provider, m.resolved_model_id, m.domain)
            slot = next((j for k, j in keys.items() if (k.provider, k.model_id, k.domain) == key), None)
            self.cooldown_slot.append(slot if controlled and slot is not None else n_keys + i)
        self.cooldown_intervals: list[list[Interval]] = [[] for _ in range(n_keys + n_models)]
        self.retry_after = [m.rate_limit.retry_after for m in scenario.models]
        self.max_intervals = max_intervals
        self.intervals = FoldedIntervals(n_models, n_keys + n_models)

    # -- scheduler-level samples ---------------------------------------------------------------

    def sample(self, sched: Scheduler) -> None:
        queued = sched.tasks.queued_total
        if queued > self.max_queued_tasks:
            self.max_queued_tasks = queued
        row = (
            sched.env.now,
            sched.row_groups.target,
            len(sched.active),
            sched.active_rows,
            queued,
            sched.in_flight,
            len(sched.deferred),
            sched.completed_rows,
            self.successful_calls,
            self.healthy_calls,
        )
        self.scheduler_series.add(row)

    def finish(self, scheduler_events: int, max_events: int) -> None:
        """End of run: the budget used (the final sample is always the series' last row)."""
        self.scheduler_events = scheduler_events
        self.max_events = max_events

    def budget_exhausted(self, reason: str, message: str) -> None:
        self.budget_stop = (reason, message)

    def dispatched(self, sched: Scheduler, count: int) -> None:
        self.dispatches += count
        if sched.in_flight > self.max_in_flight_tasks:
            self.max_in_flight_tasks = sched.in_flight
        queued = sched.tasks.queued_total + count
        if queued > self.max_queued_tasks:
            self.max_queued_tasks = queued

    def row_group_admitted(self, now: float, active: int) -> None:
        self.row_groups_admitted += 1
        if active > self.max_row_groups_in_flight:
            self.max_row_groups_in_flight = active

    def row_group_checkpointed(self, rg_id: int, size: int, admitted_at: float, now: float) -> None:
        self.row_groups.append((rg_id, size, admitted_at, now))

    def target_changed(self, now: float, target: int) -> None:
        self.target_changes += 1
        if self.first_target_change is None:
            self.first_target_change = now

    # -- model calls ---------------------------------------------------------------------------

    def model_waiting(self, model: int, delta: int) -> None:
        n = self.model_waiting_count[model] + delta
        self.model_waiting_count[model] = n
        if n > self.model_max_waiting[model]:
            self.model_max_waiting[model] = n

    @property
    def model_waiting_total(self) -> int:
        return sum(self.model_waiting_count)

    def model_sent(self, now: float, model: int, limit: int) -> None:
        prev = self.model_in_flight[model]
        self.call_seconds[model] += prev * (now - self.in_flight_since[model])
        self.in_flight_since[model] = now
        n = prev + 1
        self.model_in_flight[model] = n
        if n == 1:
            self.busy_since[model] = now
        if n > self.model_max_in_flight[model]:
            self.model_max_in_flight[model] = n
        self.model_limit[model] = limit
        if limit < self.model_min_limit[model]:
            self.model_min_limit[model] = limit
        self.call_series.add(
            now, model, n, self.model_waiting_count[model], limit, self.model_cooldown_until[model], 1, 0, 0
        )

    def model_answered(
        self, now: float, model: int, gen: int, rate_limited: bool, limit: int, cooldown_until: float, latency: float
    ) -> None:
        """A call of ``model`` answered at ``now``, ``latency`` seconds after it was sent."""
        prev = self.model_in_flight[model]
        self.call_seconds[model] += prev * (now - self.in_flight_since[model])
        self.in_flight_since[model] = now
        n = prev - 1
        self.model_in_flight[model] = n
        if n == 0:
            start = self.busy_since[model]
            if now > start:
                busy = self.busy_intervals[model]
                if busy and busy[-1][1] == start:
                    busy[-1] = (busy[-1][0], now)
                else:
                    busy.append((start, now))
                    if len(busy) > self.max_intervals:
                        self.fold_intervals(now)
        self.model_limit[model] = limit
        if limit < self.model_min_limit[model]:
            self.model_min_limit[model] = limit
        if cooldown_until > 0.0:  # the request-admission controller's blocked_until
            self.model_cooldown_until[model] = cooldown_until
        self.model_last_429[model] = rate_limited
        if rate_limited:
            self.latency.add(2 * model + 1, latency)
            self.calls_429[gen] += 1
            self.model_429[model] += 1
            if cooldown_until <= 0.0 and self.retry_after[model] > 0.0:  # no controller: Retry-After
                cooldown_until = now + self.retry_after[model]
                self.model_cooldown_until[model] = cooldown_until
            if cooldown_until > now:
                self._cooldown(self.cooldown_slot[model], now, cooldown_until)
        else:
            self.latency.add(2 * model, latency)
            self.calls_ok[gen] += 1
            ok = self.model_ok[model] + 1
            self.model_ok[model] = ok
            if ok == self.planned_calls[model]:
                self.work_done_at[model] = now
            self.successful_calls += 1
            if model in self.healthy_models:
                self.healthy_calls += 1
                if self._another_model_limited(model, now):
                    self.healthy_calls_while_limited += 1
        self.call_series.add(
            now,
            model,
            n,
            self.model_waiting_count[model],
            limit,
            self.model_cooldown_until[model],
            0,
            1,
            1 if rate_limited else 0,
        )

    def _another_model_limited(self, model: int, now: float) -> bool:
        until = self.model_cooldown_until
        for j, limited in enumerate(self.model_last_429):  # a plain loop: this runs on every healthy call
            if j != model and (limited or until[j] > now):
                return True
        return False

    def _cooldown(self, slot: int, start: float, end: float) -> None:
        """A 429 at ``start`` (re)sets the cooldown to end at ``end``, as the controller does."""
        intervals = self.cooldown_intervals[slot]
        if intervals and start <= intervals[-1][1]:
            intervals[-1][1] = end
        else:
            intervals.append([start, end])
            if len(intervals) > self.max_intervals:
                self.fold_intervals(start)

    def fold_intervals(self, until: float) -> None:
        """Fold every busy and cooldown interval before ``until`` into running totals, exactly.

        Intervals that straddle ``until`` are split there. The horizon metrics are clipped at
        ``until`` or, for a model whose work is already done, at ``work_done_at``: a model not done
        yet finishes at ``until`` or later, so the folded part lies wholly inside its horizon.
        """
        f = self.intervals
        cool_before: list[list[tuple[float, float]]] = []
        for slot, intervals in enumerate(self.cooldown_intervals):
            before = [(a, min(b, until)) for a, b in intervals if a < until]
            kept = [iv if iv[0] >= until else [until, iv[1]] for iv in intervals if iv[1] > until]
            split = bool(before) and bool(kept) and kept[0][0] == until and before[-1][1] == until
            f.cool[slot] += total_length(before)
            f.cool_periods[slot] += len(before) - (1 if f.cool_continues[slot] and before else 0)
            if before:
                f.cool_continues[slot] = split
            cool_before.append(before)
            self.cooldown_intervals[slot] = kept
        for m, busy in enumerate(self.busy_intervals):
            before = [(a, min(b, until)) for a, b in busy if a < until]
            if self.model_in_flight[m] > 0 and self.busy_since[m] < until:
                before.append((self.busy_since[m], until))
                self.busy_since[m] = until
            self.busy_intervals[m] = [iv if iv[0] >= until else (until, iv[1]) for iv in busy if iv[1] > until]
            if self.planned_calls[m] == 0:
                horizon = 0.0
            else:
                done_at = self.work_done_at[m]
                horizon = min(until, done_at) if done_at is not None else until
            busy_h = clip_intervals(before, horizon)
            cool_h = clip_intervals(cool_before[self.cooldown_slot[m]], horizon)
            f.busy[m] += total_length(before)
            f.busy_to_horizon[m] += total_length(busy_h)
            f.cool_to_horizon[m] += total_length(cool_h)
            f.overlap_to_horizon[m] += overlap_length(busy_h, cool_h)
        f.until = until
        f.folds += 1

    @property
    def series(self) -> list[tuple[Any, ...]]:
        """The stored scheduler rows as tuples (for tests and notebooks; results use the columns)."""
        cols = scheduler_columns(self)
        return list(zip(*(cols[c].tolist() for c in SCHEDULER_SERIES_COLUMNS), strict=True))

    @property
    def model_series(self) -> list[tuple[Any, ...]]:
        """The stored call rows as tuples ``MODEL_SERIES_COLUMNS`` (model as its index)."""
        cols = call_columns(self)
        return list(zip(*(cols[c].tolist() for c in MODEL_SERIES_COLUMNS), strict=True))

    def notes(self) -> list[str]:
        """What the result does not hold row by row, in words (empty when nothing was thinned)."""
        out = []
        s = self.scheduler_series
        if s.thinned:
            out.append(
                f"scheduler time series thinned past {self.max_series_rows} rows: {s.n} rows kept, the last "
                f"change in each {s.dt:.6g} s, {s.merged} samples merged; the time means are exact"
            )
        c = self.call_series
        if c.thinned:
            out.append(
                f"model time series thinned past {self.max_model_series_rows} rows: {c.n} rows kept, each model's "
                f"last change in each {c.dt:.6g} s, {c.merged} rows merged; columns sent, answered and "
                "answered_429 count the calls since the model's previous row, so call counts stay exact"
            )
        return out


def _caps(scenario: Scenario) -> tuple[int | None, int | None]:
    """The scenario's series caps: ``None`` (keep every row) with ``recorder.detail = "full"``."""
    rec = getattr(scenario, "recorder", None)
    if rec is None:
        return MAX_SERIES_ROWS, MAX_MODEL_SERIES_ROWS
    if rec.detail == "full":
        return None, None
    return rec.max_series_rows, rec.max_model_series_rows


def scheduler_columns(rec: Recorder) -> dict[str, np.ndarray]:
    """The scheduler series as typed columns (``time`` float, the counts int64), in time order."""
    rows = rec.scheduler_series.rows()
    out = {"time": rows[:, 0]}
    for j, name in enumerate(_INT_SCHEDULER_COLUMNS, start=1):
        out[name] = rows[:, j].astype(np.int64)
    return out


def call_latency_columns(rec: Recorder) -> dict[str, list[Any]]:
    """The non-empty latency bins: ``model``, ``outcome``, ``lower``, ``upper`` (s), ``count``."""
    out: dict[str, list[Any]] = {"model": [], "outcome": [], "lower": [], "upper": [], "count": []}
    for i, name in enumerate(rec.model_names):
        for k, outcome in enumerate(CALL_OUTCOMES):
            for lower, upper, count in rec.latency.nonempty(2 * i + k):
                out["model"].append(name)
                out["outcome"].append(outcome)
                out["lower"].append(lower)
                out["upper"].append(upper)
                out["count"].append(count)
    return out


def call_latency_stats(rec: Recorder) -> list[dict[str, Any]]:
    """One row per model and outcome: exact ``count``, ``sum``, ``min``, ``max``, ``mean`` (s) and the
    histogram's percentiles (NaN without calls)."""
    rows = []
    h = rec.latency
    for i, name in enumerate(rec.model_names):
        for k, outcome in enumerate(CALL_OUTCOMES):
            j = 2 * i + k
            n = h.count(j)
            rows.append(
                {
                    "model": name,
                    "outcome": outcome,
                    "count": n,
                    "sum": h.sums[j],
                    "min": h.mins[j] if n else NAN,
                    "max": h.maxs[j] if n else NAN,
                    "mean": h.mean(j),
                    **{f"p{p}": h.percentile(j, p) for p in CALL_LATENCY_PERCENTILES},
                }
            )
    return rows


def call_columns(rec: Recorder) -> dict[str, np.ndarray]:
    """The call series as typed columns: ``MODEL_SERIES_COLUMNS`` then the counts ``CALL_COUNT_COLUMNS``.

    ``rate_limited`` is true on a row that holds a 429 answer (its only answer, unless thinned)."""
    rows = rec.call_series.rows()
    assert rows.shape[1] == CALL_WIDTH
    return {
        "time": rows[:, 0],
        "model": rows[:, 1].astype(np.int64),
        "in_flight": rows[:, 2].astype(np.int64),
        "waiting": rows[:, 3].astype(np.int64),
        "current_limit": rows[:, 4].astype(np.int64),
        "cooldown_until": rows[:, 5],
        "rate_limited": rows[:, 8] > 0,
        "sent": rows[:, 6].astype(np.int64),
        "answered": rows[:, 7].astype(np.int64),
        "answered_429": rows[:, 8].astype(np.int64),
    }


# ---------------------------------------------------------------------------------------------
# Metrics computed once, after the run
# ---------------------------------------------------------------------------------------------


class FoldedIntervals:
    """Running totals of the busy and cooldown intervals folded away (all zero until the first fold)."""

    def __init__(self, n_models: int, n_slots: int) -> None:
        self.until = 0.0
        self.folds = 0
        self.busy = [0.0] * n_models
        self.busy_to_horizon = [0.0] * n_models
        self.cool_to_horizon = [0.0] * n_models
        self.overlap_to_horizon = [0.0] * n_models
        self.cool = [0.0] * n_slots
        self.cool_periods = [0] * n_slots
        #: the slot's first kept interval is the rest of one split at ``until`` (already counted)
        self.cool_continues = [False] * n_slots


def clip_intervals(intervals: Sequence[Sequence[float]], end: float) -> list[tuple[float, float]]:
    """Sorted, disjoint ``[start, stop)`` intervals cut at ``end`` (empty ones dropped)."""
    out = []
    for start, stop in intervals:
        if start >= end:
            break
        stop = min(stop, end)
        if stop > start:
            out.append((start, stop))
    return out


def total_length(intervals: Sequence[Sequence[float]]) -> float:
    return float(sum(stop - start for start, stop in intervals))


def overlap_length(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Length of the intersection of two sorted, disjoint interval lists (two-pointer sweep)."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return total


def busy_intervals(rec: Recorder, model: int, sim_time: float) -> list[tuple[float, float]]:
    """Intervals with >= 1 call of ``model`` in flight, the one still open at the end closed there."""
    intervals = list(rec.busy_intervals[model])
    if rec.model_in_flight[model] > 0 and sim_time > rec.busy_since[model]:
        intervals.append((rec.busy_since[model], sim_time))
    return clip_intervals(intervals, sim_time)


def cooldown_intervals(rec: Recorder, model: int, sim_time: float) -> list[tuple[float, float]]:
    """The model's cooldown intervals (of its request resource), clipped to the run."""
    return clip_intervals(rec.cooldown_intervals[rec.cooldown_slot[model]], sim_time)


def model_metrics(rec: Recorder, sim_time: float) -> list[dict[str, Any]]:
    """Per model: where its time went. One dict per model, in scenario order (see docs/metrics.md)."""
    rows = []
    f = rec.intervals
    for i, name in enumerate(rec.model_names):
        slot = rec.cooldown_slot[i]
        busy = busy_intervals(rec, i, sim_time)
        cool = cooldown_intervals(rec, i, sim_time)
        done_at = rec.work_done_at[i]
        if rec.planned_calls[i] == 0:
            horizon = 0.0  # no work planned: never idle "with work left"
        else:
            horizon = min(done_at, sim_time) if done_at is not None else sim_time
        busy_to_horizon = clip_intervals(busy, horizon)
        cool_to_horizon = clip_intervals(cool, horizon)
        busy_time = f.busy[i] + total_length(busy)
        cooldown_time = f.cool[slot] + total_length(cool)
        idle = max(0.0, horizon - (f.busy_to_horizon[i] + total_length(busy_to_horizon)))
        idle_in_cooldown = max(
            0.0,
            f.cool_to_horizon[i]
            + total_length(cool_to_horizon)
            - (f.overlap_to_horizon[i] + overlap_length(busy_to_horizon, cool_to_horizon)),
        )
        # calls still in flight at the end count up to sim_time
        call_seconds = rec.call_seconds[i] + rec.model_in_flight[i] * max(0.0, sim_time - rec.in_flight_since[i])
        answered = rec.model_ok[i] + rec.model_429[i]
        ok_latency = 2 * i  # the histogram of the model's successful calls
        continued = 1 if f.cool_continues[slot] and cool and cool[0][0] == f.until else 0
        cooldown_periods = f.cool_periods[slot] + len(cool) - continued
        rows.append(
            {
                "model": name,
                "planned_calls": rec.planned_calls[i],
                "unfinished_calls": max(0, rec.planned_calls[i] - rec.model_ok[i]),
                "busy_time": busy_time,
                "busy_fraction": busy_time / sim_time if sim_time > 0 else 0.0,
                "work_done_at": float(done_at) if done_at is not None else NAN,
                "idle_with_work_left": idle,
                "idle_in_cooldown": idle_in_cooldown,
                "cooldown_time": cooldown_time,
                "cooldown_fraction": cooldown_time / sim_time if sim_time > 0 else 0.0,
                "cooldown_periods": cooldown_periods,
                "min_limit": rec.model_min_limit[i],
                "call_seconds": call_seconds,
                "mean_call_seconds": call_seconds / answered if answered else NAN,
                **{f"call_latency_p{p}": rec.latency.percentile(ok_latency, p) for p in CALL_LATENCY_PERCENTILES},
                "call_latency_mean": rec.latency.mean(ok_latency),
            }
        )
    return rows


def time_weighted_mean(times: Sequence[float], values: Sequence[float], end: float) -> float:
    """Mean of a step function (``values[k]`` holds from ``times[k]`` to the next time) over
    ``[times[0], end]``; the last value if that span is empty, NaN without samples."""
    if len(times) == 0:
        return NAN
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    span = end - t[0]
    if span <= 0:
        return float(v[-1])
    widths = np.diff(np.append(t, max(end, t[-1])))
    return weighted_sum(widths, v) / float(span)


def row_progress_metrics(
    sizes: Sequence[int], checkpoint_times: Sequence[float], latencies: Sequence[float], total_rows: int
) -> dict[str, float]:
    """Time to the first, 50 % and all rows, and row-group latency percentiles, from the checkpointed
    row groups in checkpoint order (the simulator's recorder and the real twin share it)."""
    done = np.cumsum(sizes) if len(sizes) else np.zeros(0)

    def first_time_reaching(rows: float) -> float:
        if rows <= 0 or len(done) == 0 or done[-1] < rows:
            return NAN
        return float(checkpoint_times[int(np.searchsorted(done, rows, side="left"))])

    out = {
        "time_to_first_row": first_time_reaching(1),
        "time_to_50pct_rows": first_time_reaching(math.ceil(0.5 * total_rows)),
        "time_to_all_rows": first_time_reaching(total_rows),
    }
    latency = np.asarray(latencies, dtype=float)
    if latency.size:
        out["row_group_latency_p50"] = float(np.percentile(latency, 50))
        out["row_group_latency_p95"] = float(np.percentile(latency, 95))
        out["row_group_latency_max"] = float(latency.max())
    else:
        out["row_group_latency_p50"] = out["row_group_latency_p95"] = out["row_group_latency_max"] = NAN
    return out


def run_metrics(rec: Recorder, sim_time: float, total_rows: int) -> dict[str, Any]:
    """Per run: row progress, row-group latency and time-weighted means of the scheduler series."""
    rgs = rec.row_groups.columns()  # appended at checkpoint, so checkpoint times never decrease
    out: dict[str, Any] = row_progress_metrics(
        rgs["size"], rgs["checkpointed_at"], rgs["checkpointed_at"] - rgs["admitted_at"], total_rows
    )
    series = rec.scheduler_series
    if series.thinned:  # the stored rows are thinned; the integrals kept on the side are exact
        span = sim_time - series.first_time
        for j, column in enumerate(TIME_MEAN_COLUMNS):
            last = series.last[_TIME_MEAN_INDEX[j]]  # type: ignore[index]
            out[f"{column}_time_mean"] = series.time_integral(j, sim_time) / span if span > 0 else float(last)
    else:
        cols = scheduler_columns(rec)
        for column in TIME_MEAN_COLUMNS:
            out[f"{column}_time_mean"] = time_weighted_mean(cols["time"], cols[column], sim_time)
    out["scheduler_events"] = rec.scheduler_events
    out["max_events"] = rec.max_events
    out["budget_exhausted"] = rec.budget_stop is not None
    out["budget_message"] = rec.budget_stop[1] if rec.budget_stop is not None else ""
    out["timeseries_rows_aggregated"] = rec.scheduler_series.merged
    out["model_timeseries_rows_aggregated"] = rec.call_series.merged
    out["recorder_note"] = "; ".join(rec.notes())
    return out
