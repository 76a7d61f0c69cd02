"""What does a summary metric measure? Its group, unit, and which direction is better.

The command line groups a run's summary (throughput, target, blocking, tasks, per model), puts
units in its tables and tells, in ``compare``, whether a higher or a lower value is better. The
definitions are in ``docs/metrics.md``; this table is the part of them a program needs. Every
key of a run's summary has an entry (a test checks it against a real run), so a new metric
cannot appear in the tables without a unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower", ""]

#: Display order of the groups.
GROUPS = ("run", "throughput", "target", "blocking", "tasks", "per model")


@dataclass(frozen=True)
class MetricInfo:
    """How to show one metric: ``group`` (see :data:`GROUPS`), ``unit`` and ``better``."""

    group: str
    unit: str
    better: Better = ""
    numeric: bool = True


def _m(group: str, unit: str, better: Better = "", numeric: bool = True) -> MetricInfo:
    return MetricInfo(group, unit, better, numeric)


METRICS: dict[str, MetricInfo] = {
    "scenario": _m("run", "", numeric=False),
    "policy": _m("run", "", numeric=False),
    "seed": _m("run", ""),
    "engine": _m("run", "", numeric=False),
    "stop_reason": _m("run", "", numeric=False),
    "budget_exhausted": _m("run", "", numeric=False),
    "budget_message": _m("run", "", numeric=False),
    "scheduler_events": _m("run", "events"),
    "max_events": _m("run", "events"),
    "timeseries_rows_aggregated": _m("run", "rows"),
    "model_timeseries_rows_aggregated": _m("run", "rows"),
    "recorder_note": _m("run", "", numeric=False),
    "sim_time": _m("run", "s", "lower"),
    "total_rows": _m("run", "rows"),
    "completed_rows": _m("throughput", "rows", "higher"),
    "completed_row_groups": _m("throughput", "groups", "higher"),
    "rows_per_second": _m("throughput", "rows/s", "higher"),
    "successful_calls": _m("throughput", "calls", "higher"),
    "healthy_calls": _m("throughput", "calls", "higher"),
    "healthy_calls_while_limited": _m("throughput", "calls", "higher"),
    "healthy_calls_per_second": _m("throughput", "calls/s", "higher"),
    "rate_limited_calls": _m("throughput", "calls", "lower"),
    "time_to_first_row": _m("throughput", "s", "lower"),
    "time_to_50pct_rows": _m("throughput", "s", "lower"),
    "time_to_all_rows": _m("throughput", "s", "lower"),
    "row_group_latency_p50": _m("throughput", "s", "lower"),
    "row_group_latency_p95": _m("throughput", "s", "lower"),
    "row_group_latency_max": _m("throughput", "s", "lower"),
    "mode": _m("target", "", numeric=False),
    "hard_cap": _m("target", "groups"),
    "final_target": _m("target", "groups"),
    "observed_max_target": _m("target", "groups", "higher"),
    "max_row_groups_in_flight": _m("target", "groups", "higher"),
    "active_row_groups_time_mean": _m("target", "groups", "higher"),
    "max_admitted_rows": _m("target", "rows"),
    "adaptive_evaluations": _m("blocking", "count"),
    "main_loop_iterations": _m("blocking", "count"),
    "deferred_admission_candidate_columns": _m("blocking", "", numeric=False),
    "deferred_admission_independent_columns": _m("blocking", "", numeric=False),
    "deferred_at_end": _m("tasks", "tasks", "lower"),
    "max_deferred": _m("tasks", "tasks", "lower"),
    "deferred_tasks_time_mean": _m("tasks", "tasks", "lower"),
    "salvage_cycles": _m("tasks", "count", "lower"),
    "salvage_rounds": _m("tasks", "count", "lower"),
    "salvage_drain_time": _m("tasks", "s", "lower"),
    "dispatches": _m("tasks", "tasks"),
    "max_in_flight_tasks": _m("tasks", "tasks"),
    "in_flight_tasks_time_mean": _m("tasks", "tasks"),
    "max_queued_tasks": _m("tasks", "tasks"),
    "queued_tasks_time_mean": _m("tasks", "tasks"),
    "request_pressure_advisory_skips": _m("tasks", "count"),
}

#: Per-model summary keys ``<prefix>[<model>]``.
PER_MODEL: dict[str, MetricInfo] = {
    "calls_ok": _m("per model", "calls", "higher"),
    "calls_429": _m("per model", "calls", "lower"),
    "busy_fraction": _m("per model", "0-1", "higher"),
    "idle_with_work_left": _m("per model", "s", "lower"),
    "idle_in_cooldown": _m("per model", "s"),
    "cooldown_time": _m("per model", "s"),
    "call_latency_p50": _m("per model", "s", "lower"),
    "call_latency_p90": _m("per model", "s", "lower"),
    "call_latency_p99": _m("per model", "s", "lower"),
    "call_latency_mean": _m("per model", "s", "lower"),
}

#: ``blocked_<reason>``: evaluations that returned that block reason.
BLOCKED = _m("blocking", "count", "lower")

_PER_MODEL_KEY = re.compile(r"(?P<prefix>[a-z_0-9]+)\[(?P<model>.+)\]")


def metric_info(name: str) -> MetricInfo | None:
    """The entry for a summary key, or None for a key this table does not know."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("blocked_"):
        return BLOCKED
    match = _PER_MODEL_KEY.fullmatch(name)
    if match and match["prefix"] in PER_MODEL:
        return PER_MODEL[match["prefix"]]
    return None


def better_mark(info: MetricInfo | None) -> str:
    """``higher`` / ``lower`` / empty, for a table's 'better' column."""
    return info.better if info is not None else ""
