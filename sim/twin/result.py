"""A real run's record as the simulator's :class:`~sim.results.Result`, and its on-disk layout.

Summary names are the simulator's wherever the meaning is the same (docs/twin.md lists them);
``engine`` says which engine produced the numbers. For the real engine ``sim_time`` is the wall
seconds of ``AsyncTaskScheduler.run()`` (also given as ``duration``). The extra tables (one row per
provider call, the exact target changes, admissions and checkpoints) live on :class:`TwinResult`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import SCHEDULER_SERIES_COLUMNS, TIME_MEAN_COLUMNS, row_progress_metrics, time_weighted_mean
from ..results import Result, atomic_directory
from ..row_group_admission import REASONS
from ..scenario import Scenario

#: Time-series columns of a real run: the simulator's, then calls in flight at the mock endpoints.
TWIN_SERIES_COLUMNS = (*SCHEDULER_SERIES_COLUMNS, "provider_in_flight")
#: A real run whose process CPU over run() exceeds this share of one core is CPU-bound: its
#: timings then depend on the machine (docs/twin.md).
CPU_BOUND_UTILIZATION = 0.7
NAN = float("nan")


@dataclass(frozen=True)
class TwinResult(Result):
    """A :class:`Result` from the real engine, with the tables only a real run has."""

    calls: pd.DataFrame = field(default_factory=pd.DataFrame)
    target_changes: pd.DataFrame = field(default_factory=pd.DataFrame)
    admissions: pd.DataFrame = field(default_factory=pd.DataFrame)
    checkpoints: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def cpu_bound(self) -> bool:
        return bool(self.summary["cpu_bound"])


def _limited_mask(calls: pd.DataFrame, scenario: Scenario) -> np.ndarray:
    """For each successful healthy answer: was another model limited then (its last answer a 429,
    or inside the cooldown that 429 started)? The simulator's ``healthy_calls_while_limited``."""
    n_models = len(scenario.models)
    cooldown = [
        m.rate_limit.retry_after
        if m.rate_limit.retry_after > 0
        else (scenario.request_admission.cooldown_seconds if scenario.request_admission.enabled else 0.0)
        for m in scenario.models
    ]
    last_429 = [False] * n_models
    until = [-math.inf] * n_models
    out = np.zeros(len(calls), dtype=bool)
    order = np.argsort(calls["answered_at"].to_numpy(), kind="stable")
    models = calls["model_index"].to_numpy()
    limited = calls["rate_limited"].to_numpy()
    answered = calls["answered_at"].to_numpy()
    for k in order:
        m, t = int(models[k]), float(answered[k])
        if limited[k]:
            last_429[m] = True
            until[m] = t + cooldown[m]
        else:
            last_429[m] = False
            out[k] = any(j != m and (last_429[j] or until[j] > t) for j in range(n_models))
    return out


def result_from_raw(scenario: Scenario, raw: Mapping[str, Any], engine_version: str) -> TwinResult:
    """Build the :class:`TwinResult` of one real run from the child's record."""
    model_names = [m.name for m in scenario.models]
    healthy = {i for i, m in enumerate(scenario.models) if m.rate_limit.pattern == "never"}
    duration = float(raw["duration"])
    total_rows = scenario.row_groups.total_rows
    sched = raw["scheduler"]

    calls = pd.DataFrame(raw["calls"], columns=["model_index", "column", "sent_at", "answered_at", "rate_limited"])
    calls["rate_limited"] = calls["rate_limited"].astype(bool)
    calls.insert(0, "model", [model_names[i] for i in calls["model_index"]])
    calls["latency"] = calls["answered_at"] - calls["sent_at"]
    ok = ~calls["rate_limited"]
    is_healthy = calls["model_index"].isin(healthy)
    while_limited = _limited_mask(calls, scenario) if len(calls) else np.zeros(0, dtype=bool)
    n_healthy = int((ok & is_healthy).sum())

    series = pd.DataFrame(raw["series"], columns=list(TWIN_SERIES_COLUMNS))
    target_changes = pd.DataFrame(raw["target_changes"], columns=["time", "target"])
    admissions = pd.DataFrame(raw["admissions"], columns=["time", "row_group", "size"])
    checkpoints = pd.DataFrame(raw["checkpoints"], columns=["time", "row_group", "size", "surviving_rows"])
    admitted_at = dict(zip(admissions["row_group"], admissions["time"], strict=True))
    row_groups = pd.DataFrame(
        {
            "row_group": checkpoints["row_group"],
            "size": checkpoints["surviving_rows"],
            "admitted_at": [admitted_at.get(rg, NAN) for rg in checkpoints["row_group"]],
            "checkpointed_at": checkpoints["time"],
        }
    )
    row_groups["latency"] = row_groups["checkpointed_at"] - row_groups["admitted_at"]
    completed_rows = int(checkpoints["surviving_rows"].sum())

    cpu = float(raw["cpu_seconds"])
    utilization = cpu / duration if duration > 0 else 0.0
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "policy": raw["policy"],
        "seed": raw["seed"],
        "engine": "real",
        "engine_version": engine_version,
        "stop_reason": raw["stop_reason"],
        "sim_time": duration,
        "duration": duration,
        "total_rows": total_rows,
        "completed_rows": completed_rows,
        "completed_row_groups": int((checkpoints["surviving_rows"] > 0).sum()),
        "rows_per_second": completed_rows / duration if duration > 0 else 0.0,
        "successful_calls": int(ok.sum()),
        "rate_limited_calls": int((~ok).sum()),
        "healthy_calls": n_healthy,
        "healthy_calls_while_limited": int((ok & is_healthy & while_limited).sum()),
        "healthy_calls_per_second": n_healthy / duration if duration > 0 else 0.0,
        "mode": "adaptive" if raw["adaptive"] else "fixed",
        "hard_cap": sched["hard_cap"],
        "final_target": sched["final_target"],
        "observed_max_target": sched["observed_max_target"],
        "max_row_groups_in_flight": sched["max_row_groups_in_flight"],
        "max_admitted_rows": sched["max_admitted_rows"],
        "adaptive_evaluations": sched["adaptive_evaluations"],
    }
    for reason in REASONS:
        summary[f"blocked_{reason}"] = int(sched["blocked_reasons"].get(reason, 0))
    summary.update(
        {
            "deferred_at_end": sched["deferred_at_end"],
            "max_deferred": int(series["deferred_tasks"].max()) if len(series) else 0,
            "salvage_cycles": sched["salvage_cycles"],
            "salvage_rounds": sched["salvage_rounds"],
            "max_in_flight_tasks": int(series["in_flight_tasks"].max()) if len(series) else 0,
            "max_queued_tasks": int(series["queued_tasks"].max()) if len(series) else 0,
            "request_pressure_advisory_skips": sched["request_pressure_advisory_skips"],
        }
    )
    for i, name in enumerate(model_names):
        mine = calls["model_index"] == i
        summary[f"calls_ok[{name}]"] = int((mine & ok).sum())
        summary[f"calls_429[{name}]"] = int((mine & ~ok).sum())
    summary.update(_progress_metrics(row_groups, series, duration, total_rows))
    summary.update(
        {
            "cpu_seconds": cpu,
            "cpu_utilization": utilization,
            "cpu_bound": utilization > CPU_BOUND_UTILIZATION,
            "user_cpu_seconds": float(raw["user_seconds"]),
            "system_cpu_seconds": float(raw["system_seconds"]),
            "voluntary_context_switches": int(raw["voluntary_switches"]),
            "involuntary_context_switches": int(raw["involuntary_switches"]),
            "loop_lag_mean_ms": raw["loop_lag"]["mean_ms"],
            "loop_lag_p99_ms": raw["loop_lag"]["p99_ms"],
            "loop_lag_max_ms": raw["loop_lag"]["max_ms"],
            "first_target_change": float(target_changes["time"].iloc[0]) if len(target_changes) else NAN,
            "target_changes": len(target_changes),
        }
    )

    columns = pd.DataFrame(
        [
            {
                "column": c.name,
                "generator": c.generator_name,
                "kind": c.resolved_kind,
                "model": c.model or "",
                "successful_calls": int(((calls["column"] == c.name) & ok).sum()),
                "rate_limited_calls": int(((calls["column"] == c.name) & ~ok).sum()),
                "deferred_at_end": int(raw["deferred_by_column"].get(c.name, 0)),
            }
            for c in scenario.columns
        ]
    )
    final_limits = {row["model"]: row["final_limit"] for row in raw["models"]}
    models = pd.DataFrame(
        [
            {
                "model": m.name,
                "provider_model": f"{m.provider}/{m.resolved_model_id}",
                "domain": m.domain,
                "max_parallel_requests": m.max_parallel_requests,
                "rate_limit_pattern": m.rate_limit.pattern,
                "successful_calls": summary[f"calls_ok[{m.name}]"],
                "rate_limited_calls": summary[f"calls_429[{m.name}]"],
                "max_in_flight": _max_in_flight(calls[calls["model_index"] == i]),
                "final_limit": final_limits.get(m.name, m.max_parallel_requests),
                # the simulator's interval metrics need the controller's internal timeline: not sampled
                "unfinished_calls": NAN,
                "busy_fraction": NAN,
                "idle_with_work_left": NAN,
                "cooldown_time": NAN,
            }
            for i, m in enumerate(scenario.models)
        ]
    )
    blocked = {r: summary[f"blocked_{r}"] for r in REASONS if summary[f"blocked_{r}"]}
    return TwinResult(
        scenario=scenario,
        policy=raw["policy"],
        seed=raw["seed"],
        summary=MappingProxyType(summary),
        timeseries=series,
        model_timeseries=_model_series(calls),
        columns=columns,
        models=models,
        row_groups=row_groups,
        blocked_reasons=MappingProxyType(blocked),
        deferred_admission=MappingProxyType({}),
        wall_seconds=duration,
        calls=calls.drop(columns=["model_index"]),
        target_changes=target_changes,
        admissions=admissions,
        checkpoints=checkpoints,
    )


def _progress_metrics(row_groups: pd.DataFrame, series: pd.DataFrame, duration: float, total_rows: int) -> dict:
    """The simulator's row-progress and time-mean metrics, from checkpoints and samples."""
    ordered = row_groups.sort_values("checkpointed_at", kind="stable")
    out: dict[str, Any] = row_progress_metrics(
        ordered["size"].tolist(),
        ordered["checkpointed_at"].tolist(),
        ordered["latency"].dropna().tolist(),
        total_rows,
    )
    for column in TIME_MEAN_COLUMNS:
        out[f"{column}_time_mean"] = time_weighted_mean(series["time"].tolist(), series[column].tolist(), duration)
    return out


def _max_in_flight(calls: pd.DataFrame) -> int:
    if calls.empty:
        return 0
    steps = pd.concat([pd.Series(1, index=calls["sent_at"]), pd.Series(-1, index=calls["answered_at"])])
    steps = steps.groupby(level=0).sum().sort_index()
    return int(steps.cumsum().max())


def _model_series(calls: pd.DataFrame) -> pd.DataFrame:
    """Per model, calls in flight at the mock after every send and answer (the simulator's model
    series; waiting, current limit and cooldown are inside the real controller: not sampled)."""
    rows = []
    for model, part in calls.groupby("model", sort=False):
        sends = pd.DataFrame({"time": part["sent_at"], "delta": 1, "rate_limited": False})
        answers = pd.DataFrame({"time": part["answered_at"], "delta": -1, "rate_limited": part["rate_limited"]})
        events = pd.concat([sends, answers]).sort_values(["time", "delta"], kind="stable")
        events["in_flight"] = events["delta"].cumsum()
        events["model"] = model
        rows.append(events)
    columns = ["time", "model", "in_flight", "waiting", "current_limit", "cooldown_until", "rate_limited"]
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.concat(rows).sort_values("time", kind="stable").reset_index(drop=True)
    out["waiting"] = out["current_limit"] = out["cooldown_until"] = NAN
    return out[columns]


def write_twin_result(result: TwinResult, out_dir: str | Path, extra_manifest: Mapping[str, Any] | None = None) -> Path:
    """Write a real run as the simulator's files plus ``calls.csv``, ``target_changes.csv``,
    ``admissions.csv`` and ``checkpoints.csv``, atomically (see :func:`sim.results.atomic_directory`)."""
    from .. import __version__

    tmp, commit = atomic_directory(Path(out_dir))
    try:
        manifest = {
            "package_version": __version__,
            "engine": "real",
            "engine_version": result.summary["engine_version"],
            "scenario": result.scenario.model_dump(mode="json"),
            "policy": result.policy,
            "seed": result.seed,
            "summary": dict(result.summary),
            "blocked_reasons": dict(result.blocked_reasons),
        }
        manifest.update(extra_manifest or {})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        result.summary_frame().to_csv(tmp / "summary.csv", index=False)
        tables = {
            "timeseries": result.timeseries,
            "model_timeseries": result.model_timeseries,
            "columns": result.columns,
            "models": result.models,
            "row_groups": result.row_groups,
            "calls": result.calls,
            "target_changes": result.target_changes,
            "admissions": result.admissions,
            "checkpoints": result.checkpoints,
        }
        for name, frame in tables.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit()
