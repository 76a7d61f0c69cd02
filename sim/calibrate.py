"""Fit the event loop's per-operation CPU costs to measurements of the real scheduler.

A measurement is a micro-scenario (four model columns behind a full-column seed, one-row groups,
mock endpoints of constant latency; healthy-only or with a 429 burst on one column) and what the
real scheduler did on it: its CPU time over the run and, for adaptive runs, when the row-group
target first reached given values. Both are linear in the costs once the *counts* of each
operation are known:

* CPU time = sum over operations of count x cost (the loop's busy time);
* time to target N = the same sum over the operations run until then, plus the idle time.

Counts depend on the costs (a saturated loop merges completions into fewer passes), so the fit
alternates: simulate every measured scenario with the current costs and count each operation,
solve a ridge-regularized least-squares problem for the costs (relative errors, a weak pull towards
the prior so that operations the data cannot tell apart keep the prior's ratios), and repeat until
the costs settle. The residual (simulated minus counted) of each quantity is kept as an offset, so
at the fixed point the simulation itself reproduces the measurement. See ``docs/event-loop.md``,
"Calibrating".

:func:`run_micro_set` measures the fixed set (:func:`micro_set`) on this machine with the real
twin; ``admission-sim calibrate`` runs it and fits; ``python -m sim.calibrate --measurements FILE
--out PROFILE`` refits stored runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, RunFailed
from .event_loop import DIRECT_DEFAULTS, LoopCosts, LoopProfile, load_profile, with_direct_defaults
from .policies import get_policy
from .row_group_admission import REASONS
from .scenario import Scenario, scenario_from_dict
from .scheduler import Scheduler
from .workload import Task, build_workload

OPERATIONS = LoopCosts.names()
#: the costs charged only on the direct path (no request-admission controller), fitted on their own
DIRECT_PATH_COSTS = tuple(DIRECT_DEFAULTS)
HEALTHY_MODELS = ("cooling", "healthy_1", "healthy_2", "healthy_3")


class CalibrationError(InputError):
    """Measurements cannot be read or do not describe a micro-scenario the fit knows."""


# ---------------------------------------------------------------------------------------------
# Micro-scenarios
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MicroScenario:
    """A calibration run: seed -> four model columns, each on its own model, one-row groups,
    constant-latency mocks (``docs/event-loop.md``, "Calibrating").

    Healthy-only by default. With ``rate_limit = "window"`` the ``cooling`` model answers 429 at
    once to every call sent in ``[0, burst_s)`` (a *burst*; the run then completes), so deferral,
    salvage passes and retry pacing run and their costs can be fitted. Fields added
    after the first measurements have defaults that reproduce the old healthy-only runs, so old
    measurement files stay loadable.
    """

    latency_s: float
    max_parallel_requests: int = 4
    hard_cap: int = 64
    rows: int = 256
    #: ``fixed`` (target pinned at the hard cap) or an adaptive policy from target 1
    policy: str = "fixed"
    #: max_in_flight_tasks = max_model_task_admission
    budgets: int = 1024
    #: 429 pattern of the ``cooling`` model: ``never``, ``window`` or ``always``
    rate_limit: str = "never"
    #: end of the 429 window (``window``), seconds from the start of the run
    burst_s: float = 0.0
    #: the request-admission controller in front of every call (the healthy-only runs had it)
    request_admission: bool = True
    #: request-admission cooldown after a 429 without Retry-After, seconds (None: the default)
    cooldown_s: float | None = None

    def __post_init__(self) -> None:
        if self.rate_limit not in ("never", "window"):
            raise ValueError(f"rate_limit: must be never or window, got {self.rate_limit!r}")
        if self.rate_limit == "window" and not self.burst_s > 0:
            raise ValueError("burst_s: a 429 window needs burst_s > 0")

    @property
    def label(self) -> str:
        """A short name: kind, latency, parallel requests, hard cap, rows, policy, and what differs."""
        kind = "healthy" if self.rate_limit == "never" else f"burst{self.burst_s:g}s"
        label = f"{kind}-{self.latency_s * 1000:g}ms-mpr{self.max_parallel_requests}-cap{self.hard_cap}-{self.rows}r"
        label += f"-{self.policy}" + (f"-budgets{self.budgets}" if self.budgets != 1024 else "")
        if not self.request_admission:
            label += "-admission-off"
        elif self.cooldown_s is not None:
            label += f"-cooldown{self.cooldown_s:g}s"
        return label

    def scenario(
        self, loop_model: str = "calibrated", profile: str = "reference-2core", scale: float = 1.0
    ) -> Scenario:
        models: list[dict[str, Any]] = [
            {
                "name": name,
                "max_parallel_requests": self.max_parallel_requests,
                "latency": {"distribution": "constant", "mean": self.latency_s},
            }
            for name in HEALTHY_MODELS
        ]
        if self.rate_limit == "window":
            models[0]["rate_limit"] = {"pattern": "window", "start": 0.0, "end": self.burst_s, "latency": 0.0}
        columns: list[dict[str, Any]] = [{"name": "seed", "strategy": "full_column"}]
        columns += [{"name": name, "depends_on": ["seed"], "model": name} for name in HEALTHY_MODELS]
        data: dict[str, Any] = {
            "name": self.label,
            "row_groups": {"count": self.rows, "size": 1},
            "models": models,
            "columns": columns,
            "scheduler": {
                "policy": self.policy,
                "max_concurrent_row_groups": self.hard_cap,
                "initial_target": 1,
                "max_in_flight_tasks": self.budgets,
                "max_model_task_admission": self.budgets,
                "salvage_max_rounds": 2,
                "request_pressure_advisory": True,
                "loop": {"model": loop_model, "profile": profile, "scale": scale},
            },
        }
        if not self.request_admission:
            data["request_admission"] = {"enabled": False}
        elif self.cooldown_s is not None:
            data["request_admission"] = {"cooldown_seconds": self.cooldown_s}
        return scenario_from_dict(data, source="micro-scenario")


@dataclass(frozen=True)
class Measurement:
    """What the real scheduler did on one micro-scenario (one run, or the mean of repeats)."""

    name: str
    micro: MicroScenario
    cpu_s: float
    wall_s: float
    rows_per_s: float
    #: target value -> seconds from the start of the run until the target first reached it
    target_reached_s: dict[int, float] = field(default_factory=dict)
    #: target evaluations that found a block reason other than no_pending_row_groups (not fitted:
    #: a check of the evaluation cadence)
    blocked_evaluations: int | None = None
    #: calls answered 429 and salvage cycles run (not fitted: checks of the retry pacing)
    rate_limited_calls: int | None = None
    salvage_cycles: int | None = None
    #: share of one core a busy loop got just before and just after the run, the smaller
    #: (:func:`cpu_share`); below ``clean_share`` the machine was contended and the run is
    #: compared, not fitted.
    #: None: not probed (the stored reference runs, taken on an unloaded machine)
    cpu_share: float | None = None
    #: 1-minute load average when the run started (for the record)
    load_1m: float | None = None

    @property
    def kind(self) -> str:
        """``healthy`` (no 429) or ``burst``."""
        return "healthy" if self.micro.rate_limit == "never" else "burst"


def _optional(item: Mapping[str, Any], key: str, kind: type) -> Any:
    value = item.get(key)
    return None if value is None else kind(value)


def _positive(item: Mapping[str, Any], key: str) -> float:
    value = float(item[key])
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key}: must be a positive number of seconds, got {item[key]!r}")
    return value


def measurements_from_dicts(items: Iterable[Mapping[str, Any]], source: str) -> list[Measurement]:
    """Measurements from their JSON form (see ``sim/profiles/*.measurements.json``); keys added
    after the first files are optional, so every older file still loads."""
    out: list[Measurement] = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, Mapping):
                raise TypeError("expected an object")
            micro_data = item["micro"]
            if not isinstance(micro_data, Mapping):
                raise TypeError("micro: expected an object")
            micro = MicroScenario(**micro_data)
            out.append(
                Measurement(
                    str(item["name"]),
                    micro,
                    _positive(item, "cpu_s"),
                    _positive(item, "wall_s"),
                    float(item["rows_per_s"]),
                    {int(k): float(v) for k, v in (item.get("target_reached_s") or {}).items()},
                    _optional(item, "blocked_evaluations", int),
                    _optional(item, "rate_limited_calls", int),
                    _optional(item, "salvage_cycles", int),
                    _optional(item, "cpu_share", float),
                    _optional(item, "load_1m", float),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CalibrationError(f"{source}: measurements.{i}: {err}") from None
    if not out:
        raise CalibrationError(f"{source}: no measurements")
    return out


def load_measurements(path: str | Path) -> list[Measurement]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such measurements file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CalibrationError(f"{path}: cannot read: {err}") from None
    items = data.get("measurements") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CalibrationError(f"{path}: measurements: expected a list")
    return measurements_from_dicts(items, str(path))


def measurements_from_harness(runs_jsonl: str | Path, timelines: str | Path | None = None) -> list[Measurement]:
    """Measurements from the real-scheduler harness format: one JSON run per line (``params``,
    ``wall_s``, ``cpu_s``, ``completed_rows``) and, per run, a timeline file whose
    ``target_change_at`` lists ``[time, new target]`` (``<set>__<scenario>_<mode>_<policy>_r<n>.json``).
    Adaptive runs with default budgets contribute the times to targets 8, 16 and 32; runs with
    small budgets the time to target 4 (before any call returns)."""
    out: list[Measurement] = []
    path = Path(runs_jsonl)
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        run = json.loads(line)
        p = run["params"]
        adaptive = p["mode"] == "adaptive"
        micro = MicroScenario(
            latency_s=float(p["latency_ms"]) / 1000.0,
            max_parallel_requests=int(p["max_parallel_requests"]),
            hard_cap=int(p["max_concurrent_row_groups"]),
            rows=int(p["row_groups"]),
            policy=p["policy"] if adaptive else "fixed",
            budgets=int(p["max_in_flight_tasks"]),
        )
        reached: dict[int, float] = {}
        scenario = p["scenario"] if str(p["scenario"]).startswith("lb_") else f"lb_{p['scenario']}"
        tag = f"{run.get('calibration_set', 'run')}__{scenario}_{p['mode']}_{p['policy']}_r{p['repeat']}"
        if adaptive and timelines is not None and (Path(timelines) / f"{tag}.json").exists():
            changes = json.loads((Path(timelines) / f"{tag}.json").read_text(encoding="utf-8"))["target_change_at"]
            wanted = (8, 16, 32) if micro.budgets >= 1024 else (4,)
            for value in wanted:
                hit = next((t for t, target in changes if target >= value), None)
                if hit is not None:
                    reached[value] = float(hit)
        wall = float(run["wall_s"])
        reasons = run.get("row_group_admission", {}).get("blocked_reasons_scheduler", {})
        blocked = sum(n for reason, n in reasons.items() if reason != "no_pending_row_groups") if adaptive else None
        rows_per_s = int(run["completed_rows"]) / wall
        out.append(Measurement(f"{tag}#{i}", micro, float(run["cpu_s"]), wall, rows_per_s, reached, blocked))
    return out


def measurement_to_dict(m: Measurement) -> dict[str, Any]:
    """The JSON form; micro-scenario fields at their default and unset checks are left out, so a
    healthy-only run is written exactly as the first measurement files wrote it."""
    defaults = MicroScenario(m.micro.latency_s)
    micro = {
        f.name: getattr(m.micro, f.name)
        for f in fields(MicroScenario)
        if f.name in _FIRST_MICRO_FIELDS or getattr(m.micro, f.name) != getattr(defaults, f.name)
    }
    out: dict[str, Any] = {
        "name": m.name,
        "micro": micro,
        "cpu_s": m.cpu_s,
        "wall_s": m.wall_s,
        "rows_per_s": m.rows_per_s,
        "target_reached_s": {str(k): v for k, v in sorted(m.target_reached_s.items())},
        "blocked_evaluations": m.blocked_evaluations,
    }
    for key in ("rate_limited_calls", "salvage_cycles", "cpu_share", "load_1m"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    return out


#: The micro-scenario fields of the first measurement files: always written.
_FIRST_MICRO_FIELDS = ("latency_s", "max_parallel_requests", "hard_cap", "rows", "policy", "budgets")


# ---------------------------------------------------------------------------------------------
# Counting the operations of a simulated run
# ---------------------------------------------------------------------------------------------


class _CountingScheduler(Scheduler):
    """The calibrated scheduler, counting each costed operation (and snapshotting the counts when
    the target first reaches a value). Counting happens here, not in the scheduler's hot path."""

    def __init__(self, *args: Any, watch_targets: Sequence[int] = ()) -> None:
        super().__init__(*args)
        self.counts = dict.fromkeys(OPERATIONS, 0)
        self._watch = set(watch_targets)
        self.target_snapshots: dict[int, tuple[float, float, dict[str, int]]] = {}

    def current_counts(self) -> dict[str, int]:
        c = dict(self.counts)
        c["direct_dispatch" if self._direct else "dispatch"] = self.recorder.dispatches
        c["checkpoint"] = self.completed_row_groups
        c["target_evaluation"] = self.row_groups.evaluations
        c["salvage_pass"] = self.salvage_cycles
        return c

    @property
    def _direct(self) -> bool:
        """No request-admission controller: passes and dispatches cost the direct-path values."""
        return self.request_admission is None

    def _dispatch_pass(self):  # noqa: ANN202 - a SimPy sub-generator
        self.counts["direct_main_loop_pass" if self._direct else "main_loop_pass"] += 1
        return (yield from super()._dispatch_pass())

    def _loop_start(self, task: Task) -> None:
        gen = task.gen
        if gen.kind == "local":
            self.counts["local_task"] += 1
        elif self.gen_request_resource[gen.index] is None:
            self.counts["direct_call_start"] += 1
        else:
            self.counts["worker_start"] += 1
            self.counts["request_acquire"] += 1
        super()._loop_start(task)

    def _send(self, task: Task, lease: Any) -> None:
        if lease is not None:  # a direct call's send is part of its direct_call_start
            self.counts["request_send"] += 1
        super()._send(task, lease)

    def _answered(self, task: Task, lease: Any, answer: Any) -> None:
        self.counts["completion" if lease is not None else "direct_completion"] += 1
        super()._answered(task, lease, answer)

    def _admit(self, rg_id: int, size: int) -> None:
        self.counts["row_group_admission"] += 1
        super()._admit(rg_id, size)

    def _replace_deferred(self, tasks: list[Task]) -> None:
        if not tasks:  # a salvage round takes the whole working list back into the queue
            self.counts["salvage_task"] += len(self.deferred)
        super()._replace_deferred(tasks)

    def _evaluate_target(self) -> None:
        super()._evaluate_target()
        target = self.row_groups.target
        for value in self._watch:
            if target >= value and value not in self.target_snapshots:
                self.target_snapshots[value] = (self.env.now, self.loop.busy_time, self.current_counts())


@dataclass(frozen=True)
class SimulatedRun:
    """A micro-scenario simulated with a profile: numbers comparable to a :class:`Measurement`."""

    cpu_s: float
    wall_s: float
    rows_per_s: float
    counts: dict[str, int]
    #: target -> (simulated time, busy time until then, counts until then)
    target_snapshots: dict[int, tuple[float, float, dict[str, int]]]
    rate_limited_calls: int = 0
    salvage_cycles: int = 0

    @property
    def calls(self) -> int:
        return self.counts["completion"] + self.counts["direct_completion"]

    def target_reached_s(self, value: int) -> float | None:
        snap = self.target_snapshots.get(value)
        return snap[0] if snap is not None else None


def simulate_micro(
    micro: MicroScenario, profile: str = "reference-2core", scale: float = 1.0, watch_targets: Sequence[int] = ()
) -> SimulatedRun:
    """Run one micro-scenario with the calibrated loop and count its operations."""
    scenario = micro.scenario("calibrated", profile, scale)
    sched = _CountingScheduler(
        scenario, build_workload(scenario), get_policy(micro.policy), scenario.seed, watch_targets=watch_targets
    )
    sched.run()
    wall = sched.env.now
    return SimulatedRun(
        sched.loop.busy_time,
        wall,
        sched.completed_rows / wall if wall > 0 else math.nan,
        sched.current_counts(),
        sched.target_snapshots,
        int(sum(sched.recorder.model_429)),
        sched.salvage_cycles,
    )


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------

#: Below this share of a core (:func:`cpu_share`) a run's machine was contended: its quantities
#: are compared but not fitted. Wall times inflate under load, and on a 2-vCPU machine CPU time
#: does too (the 20 ms fixed run: 2.68 s of CPU at share 0.14, 1.56 s at 0.99).
CLEAN_SHARE = 0.9
#: An exercised operation whose work is under this share of every fitted quantity is reported as
#: weakly constrained: its fitted cost is mostly the prior's.
WEAK_SHARE = 0.01


@dataclass(frozen=True)
class Quantity:
    """One measured number next to its simulated value; fitted ones are rows of the linear problem."""

    #: ``<measurement>: <quantity>``
    name: str
    measured: float
    simulated: float
    fitted: bool
    #: why a quantity is only compared (empty for fitted ones): ``direct call path`` (request
    #: admission off), ``contended (share x)``, ``a count``, ``not reached in simulation``
    why_not: str = ""
    #: counts of each operation the quantity is linear in, and the simulated remainder (idle time,
    #: work not counted), for fitted quantities
    counts: np.ndarray | None = None
    offset: float = 0.0

    @property
    def relative_error(self) -> float:
        return (self.simulated - self.measured) / self.measured if self.measured else math.nan


@dataclass
class FitResult:
    costs_us: dict[str, float]
    iterations: int
    #: fitted quantity name -> (measured, simulated with the fitted costs), seconds
    comparison: dict[str, tuple[float, float]]
    #: operations no fitted measurement exercised: their cost is the prior's
    unconstrained: list[str]
    #: every quantity (fitted and compared only) with the fitted costs, and with the prior's
    quantities: list[Quantity] = field(default_factory=list)
    prior_quantities: list[Quantity] = field(default_factory=list)
    prior_us: dict[str, float] = field(default_factory=dict)
    #: exercised operations whose work stays under WEAK_SHARE of every fitted quantity -> that share
    weak: dict[str, float] = field(default_factory=dict)
    #: largest share of a run's simulated CPU time that the operation counts do not cover (0 while
    #: :class:`_CountingScheduler` counts every cost the scheduler charges; a new cost charged but not
    #: counted shows here, and is held fixed by the fit)
    uncounted_share: float = 0.0

    @staticmethod
    def mean_abs_error(quantities: Sequence[Quantity]) -> float:
        errors = [abs(q.relative_error) for q in quantities if q.fitted]
        return float(np.mean(errors)) if errors else math.nan


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, not mkstemp's private one
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _simulate_all(
    measurements: Sequence[Measurement], costs_us: Mapping[str, float], workdir: Path
) -> list[SimulatedRun]:
    """Simulate each distinct micro-scenario once (repeats of a measurement share the run)."""
    path = workdir / "fit-step.toml"
    _atomic_write(path, profile_toml(costs_us, name="fit-step", measured_on={}, exact=True))
    watch: dict[MicroScenario, set[int]] = {}
    for m in measurements:
        watch.setdefault(m.micro, set()).update(m.target_reached_s)
    runs = {micro: simulate_micro(micro, str(path), watch_targets=sorted(w)) for micro, w in watch.items()}
    return [runs[m.micro] for m in measurements]


def _quantities(
    measurements: Sequence[Measurement],
    runs: Sequence[SimulatedRun],
    costs_s: np.ndarray,
    *,
    clean_share: float,
    fit_direct_path: bool,
) -> list[Quantity]:
    """Every measured quantity next to its simulation. CPU time and times to target values are
    linear in the costs (``counts . costs + offset``); counts of 429s and salvage cycles are
    compared only."""
    out: list[Quantity] = []
    for m, run in zip(measurements, runs, strict=True):
        direct = not m.micro.request_admission and not fit_direct_path
        contended = m.cpu_share is not None and m.cpu_share < clean_share
        # request admission off: cheaper per call than the profile's path; a contended machine
        # inflates wall times and, sharing a core's caches, CPU times too (docs/event-loop.md)
        why = "direct call path" if direct else f"contended (share {m.cpu_share:.2f})" if contended else ""
        counts = np.array([run.counts.get(op, 0) for op in OPERATIONS], dtype=float)
        out.append(
            Quantity(
                f"{m.name}: cpu_s",
                m.cpu_s,
                run.cpu_s,
                not why,
                why,
                counts,
                run.cpu_s - float(counts @ costs_s),  # work the counts do not cover (none today)
            )
        )
        for value, measured in sorted(m.target_reached_s.items()):
            snap = run.target_snapshots.get(value)
            name = f"{m.name}: target {value} at s"
            if snap is None:
                out.append(Quantity(name, measured, math.nan, False, "not reached in simulation"))
                continue
            t, _busy, snap_counts = snap
            row = np.array([snap_counts.get(op, 0) for op in OPERATIONS], dtype=float)
            out.append(Quantity(name, measured, t, not why, why, row, t - float(row @ costs_s)))
        for key, simulated in (("rate_limited_calls", run.rate_limited_calls), ("salvage_cycles", run.salvage_cycles)):
            measured_count = getattr(m, key)
            if measured_count is not None and m.kind == "burst":
                out.append(Quantity(f"{m.name}: {key}", float(measured_count), float(simulated), False, "a count"))
    return out


def fit_costs(
    measurements: Sequence[Measurement],
    prior_us: Mapping[str, float],
    *,
    iterations: int = 4,
    prior_weight: float = 0.05,
    tolerance: float = 0.005,
    clean_share: float = CLEAN_SHARE,
    fit_direct_path: bool = False,
    free: Iterable[str] | None = None,
) -> FitResult:
    """Fit per-operation costs (microseconds) to ``measurements``, starting from ``prior_us``.

    Each iteration simulates every measurement with the current costs, builds one linear row per
    fitted quantity (relative error weights) and solves the ridge problem pulling each cost
    towards its prior by ``prior_weight`` (relative). Stops after ``iterations`` or when no cost
    moves by more than ``tolerance`` (relative). Runs with request admission off are compared,
    not fitted, unless ``fit_direct_path``; runs on a contended machine (cpu share below
    ``clean_share``) likewise. ``free``: fit only these operations and hold every other at its
    prior (the direct-path costs are fitted to direct-path runs this way, the facade-path costs
    staying as they are); None fits all.
    """
    prior_us = with_direct_defaults(prior_us)
    missing = [op for op in OPERATIONS if op not in prior_us]
    if missing:
        raise CalibrationError(f"prior profile: costs_us.{missing[0]}: missing")
    free_ops = set(OPERATIONS if free is None else free)
    unknown = sorted(free_ops - set(OPERATIONS))
    if unknown:
        raise CalibrationError(f"free: {unknown[0]}: unknown cost (known: {', '.join(OPERATIONS)})")
    solved = np.array([op in free_ops for op in OPERATIONS])
    prior = np.array([max(float(prior_us[op]), 1e-3) for op in OPERATIONS]) * 1e-6
    costs = prior.copy()
    exercised = np.zeros(len(OPERATIONS), dtype=bool)
    done = 0
    options = {"clean_share": clean_share, "fit_direct_path": fit_direct_path}
    with tempfile.TemporaryDirectory(prefix="admission-sim-fit-") as tmp:
        workdir = Path(tmp)
        runs = _simulate_all(measurements, dict(zip(OPERATIONS, costs * 1e6, strict=True)), workdir)
        first = _quantities(measurements, runs, costs, **options)
        if not any(q.fitted for q in first):
            raise CalibrationError(
                "measurements: none can be fitted (each has request admission off or ran on a contended machine)"
            )
        quantities = first
        for done in range(1, iterations + 1):  # noqa: B007 - the count is reported
            rows = [q for q in quantities if q.fitted]
            xs = np.array([q.counts for q in rows])
            exercised |= xs.sum(axis=0) > 0
            # Unknowns are relative costs u = c / prior, so the ridge pulls u towards 1; each row is
            # divided by its measured value (relative errors).
            a = xs * prior / np.array([q.measured for q in rows])[:, None]
            b = np.array([(q.measured - q.offset) / q.measured for q in rows])
            b -= a[:, ~solved] @ (costs[~solved] / prior[~solved])  # held operations keep their cost
            a = a[:, solved]
            ridge = math.sqrt(prior_weight) * np.eye(int(solved.sum()))
            u, *_ = np.linalg.lstsq(np.vstack([a, ridge]), np.concatenate([b, ridge @ np.ones(int(solved.sum()))]))
            new = costs.copy()
            new[solved] = np.maximum(u, 0.01) * prior[solved]
            moved = float(np.max(np.abs(new - costs) / costs))
            costs = new
            runs = _simulate_all(measurements, dict(zip(OPERATIONS, costs * 1e6, strict=True)), workdir)
            quantities = _quantities(measurements, runs, costs, **options)
            if moved < tolerance:
                break
    fitted = [q for q in quantities if q.fitted]
    comparison = {q.name: (q.measured, q.simulated) for q in fitted}
    costs_us = {op: round(float(c) * 1e6, 1) for op, c in zip(OPERATIONS, costs, strict=True)}
    if done == 0:
        exercised = np.array([q.counts for q in fitted]).sum(axis=0) > 0
    unconstrained = [op for op, seen in zip(OPERATIONS, exercised, strict=True) if not seen]
    shares = np.array([q.counts * costs / q.measured for q in fitted]).max(axis=0)
    weak = {
        op: float(share)
        for op, share, seen in zip(OPERATIONS, shares, exercised, strict=True)
        if seen and share < WEAK_SHARE
    }
    uncounted = max(
        (abs(q.offset) / q.simulated for q in quantities if q.name.endswith(": cpu_s") and q.simulated > 0),
        default=0.0,
    )
    return FitResult(
        costs_us,
        done,
        comparison,
        unconstrained,
        quantities,
        first,
        {op: float(prior_us[op]) for op in OPERATIONS},
        weak,
        uncounted,
    )


def machine_ratio(
    measurements: Sequence[Measurement], reference: Sequence[Measurement], clean_share: float = CLEAN_SHARE
) -> float:
    """How much CPU this set's machine takes for the reference set's work: the median, over the
    clean runs of micro-scenarios both sets measured, of CPU time over the reference mean."""
    by_micro: dict[MicroScenario, list[float]] = {}
    for m in reference:
        by_micro.setdefault(m.micro, []).append(m.cpu_s)
    ratios = [
        m.cpu_s / float(np.mean(by_micro[m.micro]))
        for m in measurements
        if m.micro in by_micro and (m.cpu_share is None or m.cpu_share >= clean_share)
    ]
    if not ratios:
        raise CalibrationError("reference: no clean run of a micro-scenario both sets measured")
    return float(np.median(ratios))


def rescaled(measurements: Sequence[Measurement], factor: float) -> list[Measurement]:
    """The measurements with their CPU times and times to targets divided by ``factor`` (runs of a
    machine ``factor`` x as slow as the reference, expressed in the reference machine's time)."""
    return [
        replace(
            m,
            cpu_s=m.cpu_s / factor,
            wall_s=m.wall_s / factor,
            rows_per_s=m.rows_per_s * factor,
            target_reached_s={k: v / factor for k, v in m.target_reached_s.items()},
        )
        for m in measurements
    ]


def fit_direct_path_costs(
    measurements: Sequence[Measurement],
    prior_us: Mapping[str, float],
    *,
    reference: Sequence[Measurement] = (),
    **options: Any,
) -> tuple[FitResult, float]:
    """Fit only the direct-path costs (:data:`DIRECT_PATH_COSTS`) to the runs with request
    admission off, every other cost held at the prior (``docs/event-loop.md``, "The direct path").
    With ``reference`` runs (the prior's own measurements), the runs are first rescaled by
    :func:`machine_ratio`, so that a faster or slower machine's runs describe the prior's machine;
    returns the fit and the ratio used (1 without a reference). The direct-path costs start from
    their facade-path values (:data:`sim.event_loop.DIRECT_DEFAULTS`), whatever the prior has, so
    a refit does not depend on an earlier one.
    """
    facade = {op: v for op, v in prior_us.items() if op not in DIRECT_PATH_COSTS}
    prior_us = with_direct_defaults(facade)
    direct = [m for m in measurements if not m.micro.request_admission]
    if not direct:
        raise CalibrationError("measurements: no run with request admission off (the direct path)")
    ratio = machine_ratio(measurements, reference, options.get("clean_share", CLEAN_SHARE)) if reference else 1.0
    fit = fit_costs(rescaled(direct, ratio), prior_us, fit_direct_path=True, free=DIRECT_PATH_COSTS, **options)
    return fit, ratio


# ---------------------------------------------------------------------------------------------
# Profile files
# ---------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> dict[str, str]:
    """Where a fit ran: machine, Python and (if installed) the real engine's version."""
    from importlib.metadata import PackageNotFoundError, version

    engines = []
    for package in ("data-designer-engine", "data-designer-config"):
        try:
            engines.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}, {platform.system()} "
        f"{platform.release()}",
        "python": platform.python_version(),
        "engine": ", ".join(engines) if engines else "not installed",
    }


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def profile_toml(
    costs_us: Mapping[str, float],
    *,
    name: str,
    measured_on: Mapping[str, str],
    description: str = "",
    exact: bool = False,
) -> str:
    """A profile TOML; costs to 0.1 us, or ``exact`` (every digit, for the fit's own steps)."""
    lines = ["[profile]", f"name = {_toml_string(name)}"]
    if description:
        lines.append(f"description = {_toml_string(description)}")
    lines += ["", "[measured_on]"]
    lines += [f"{k} = {_toml_string(str(v))}" for k, v in measured_on.items()]
    lines += ["", "# CPU cost of each piece of scheduler work, in microseconds (docs/event-loop.md)", "[costs_us]"]
    lines += [f"{op} = {float(costs_us[op])!r}" if exact else f"{op} = {float(costs_us[op]):.1f}" for op in OPERATIONS]
    return "\n".join(lines) + "\n"


def write_profile(
    path: str | Path, fit: FitResult, *, name: str, measured_on: Mapping[str, str], description: str = ""
) -> LoopProfile:
    """Write the fitted profile atomically (temporary file, then rename) and read it back."""
    path = Path(path)
    _atomic_write(path, profile_toml(fit.costs_us, name=name, measured_on=measured_on, description=description))
    return load_profile(str(path))


# ---------------------------------------------------------------------------------------------
# Measuring on this machine: the fixed micro-scenario set on the real twin
# ---------------------------------------------------------------------------------------------


def micro_set(quick: bool = False) -> tuple[MicroScenario, ...]:
    """The micro-scenarios ``calibrate`` runs on the real scheduler (``docs/event-loop.md``,
    "Calibrating"): healthy-only runs at several latencies and parallelism (the loop saturated
    and idle), the ramp with default and small budgets, and zero-latency 429 bursts with request
    admission on (fitted) and off (compared: the direct call path). ``quick``: three small runs."""
    burst = {"latency_s": 0.001, "rate_limit": "window", "burst_s": 0.3}
    if quick:
        return (
            MicroScenario(0.02, 4, 16, 32, "fixed"),
            MicroScenario(0.1, 4, 16, 32, "localized"),
            MicroScenario(hard_cap=16, rows=32, policy="localized", cooldown_s=0.02, **{**burst, "burst_s": 0.1}),
        )
    return (
        MicroScenario(0.02, 4, 64, 256, "fixed"),
        MicroScenario(0.02, 4, 64, 256, "localized"),
        MicroScenario(0.02, 8, 64, 256, "fixed"),
        MicroScenario(0.05, 4, 64, 256, "fixed"),
        MicroScenario(0.1, 4, 64, 128, "fixed"),
        MicroScenario(0.2, 4, 64, 128, "fixed"),
        MicroScenario(0.2, 4, 64, 256, "localized"),
        MicroScenario(0.2, 4, 64, 256, "localized", budgets=16),
        MicroScenario(policy="localized", cooldown_s=0.02, **burst),
        MicroScenario(policy="fixed", cooldown_s=0.02, **burst),
        MicroScenario(policy="localized", request_admission=False, **burst),
        MicroScenario(policy="fixed", request_admission=False, **burst),
    )


def watched_targets(micro: MicroScenario) -> tuple[int, ...]:
    """Target values whose first time is measured: 8, 16 and 32 on the ramp with default budgets,
    4 with small budgets (before any call returns); none in fixed mode."""
    if micro.policy == "fixed":
        return ()
    return (8, 16, 32) if micro.budgets >= 1024 else (4,)


def cpu_share(seconds: float = 0.05) -> float:
    """Share of one core this process gets now: CPU time over wall time of a short busy loop.
    About 1 on an idle core; lower when other processes compete (wall times then inflate)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        pass
    return min(1.0, (time.process_time() - cpu0) / (time.perf_counter() - wall0))


def measurement_from_twin(
    micro: MicroScenario, result: Any, name: str, *, share: float | None = None, load_1m: float | None = None
) -> Measurement:
    """A :class:`Measurement` from one real run (a :class:`sim.twin.TwinResult`). A run that did
    not complete is a :class:`RunFailed`: its numbers describe a different amount of work."""
    summary = result.summary
    if summary["stop_reason"] != "completed":
        raise RunFailed(f"{name}: the real run stopped early ({summary['stop_reason']}); it is no measurement")
    changes = result.target_changes
    reached: dict[int, float] = {}
    for value in watched_targets(micro):
        hit = changes["time"][changes["target"] >= value]
        if len(hit):
            reached[value] = float(hit.iloc[0])
    adaptive = micro.policy != "fixed"
    blocked = sum(int(summary[f"blocked_{r}"]) for r in REASONS if r != "no_pending_row_groups") if adaptive else None
    return Measurement(
        name,
        micro,
        float(summary["cpu_seconds"]),
        float(summary["duration"]),
        float(summary["rows_per_second"]),
        reached,
        blocked,
        int(summary["rate_limited_calls"]),
        int(summary["salvage_cycles"]),
        share,
        load_1m,
    )


def run_micro_set(
    micros: Sequence[MicroScenario],
    repeats: int = 1,
    *,
    timeout: float = 600.0,
    on_run: Callable[[str], None] | None = None,
) -> list[Measurement]:
    """Run every micro-scenario ``repeats`` times on the real scheduler (repeat k uses seed k;
    repeats are the outer loop, so a burst of load on the machine spreads over the set). Raises
    :class:`sim.twin.TwinUnavailable` before anything runs when the twin extra is missing, and
    :class:`RunFailed` (or ``KeyboardInterrupt``) if a run does not finish: no partial list."""
    from .twin import require_engine, run_twin

    require_engine()
    out: list[Measurement] = []
    for k in range(repeats):
        for micro in micros:
            name = f"{micro.label}_r{k}"
            share = cpu_share()
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            result = run_twin(micro.scenario("none"), seed=k, timeout=timeout)
            share = min(share, cpu_share())
            out.append(measurement_from_twin(micro, result, name, share=round(share, 3), load_1m=load))
            if on_run is not None:
                on_run(name)
    return out


def measurements_json(measurements: Sequence[Measurement], measured_on: Mapping[str, str], description: str) -> str:
    data = {
        "description": description,
        "measured_on": dict(measured_on),
        "measurements": [measurement_to_dict(m) for m in measurements],
    }
    return json.dumps(data, indent=1) + "\n"


def write_measurements(
    path: str | Path, measurements: Sequence[Measurement], measured_on: Mapping[str, str], description: str
) -> None:
    """Store runs as a measurements file, atomically (temporary file, then rename)."""
    _atomic_write(Path(path), measurements_json(measurements, measured_on, description))


def measurements_path_for(out: str | Path) -> Path:
    """Where ``calibrate`` stores the runs behind a profile: ``<out stem>.measurements.json``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.measurements.json")


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def read_measurements(
    paths: Sequence[str | Path], kinds: Iterable[str] = ("healthy", "burst")
) -> tuple[list[Measurement], dict[str, str]]:
    """The measurements of every file, keeping the ``kinds`` asked for, and the machine they were
    measured on (the first file's ``measured_on``; files from several machines are named)."""
    wanted = set(kinds)
    out: list[Measurement] = []
    machines: list[dict[str, str]] = []
    for path in paths:
        loaded = load_measurements(path)
        out += [m for m in loaded if m.kind in wanted]
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("measured_on")
        if isinstance(meta, dict):
            machines.append({str(k): str(v) for k, v in meta.items()})
    if not out:
        raise CalibrationError(f"--kinds {','.join(sorted(wanted))}: no measurement of that kind in the files")
    if not machines:
        return out, machine_description()
    measured_on = dict(machines[0])
    others = [m for m in machines[1:] if m != machines[0]]
    if others:
        measured_on["also"] = "; ".join(" / ".join(m.values()) for m in others)
    return out, measured_on


def calibrate(
    measurements_path: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    prior: str = "reference-2core",
    name: str | None = None,
    iterations: int = 4,
    kinds: Iterable[str] = ("healthy", "burst"),
    direct_path: bool = False,
    reference: str | Path | None = None,
) -> FitResult:
    """Fit a profile to measurements files and write it to ``out`` (what ``calibrate
    --measurements`` runs). ``direct_path``: fit only the direct-path costs to the runs with
    request admission off (:func:`fit_direct_path_costs`; ``reference``: the prior's own
    measurements file, to rescale the runs to the prior's machine).

    The profile's ``measured_on`` is the measurements files' own table if they have one (the
    machine the real scheduler ran on), else this machine. Raises :class:`InputError` subclasses
    on bad input, before anything is written."""
    paths = [measurements_path] if isinstance(measurements_path, str | Path) else list(measurements_path)
    measurements, measured_on = read_measurements(paths, kinds)
    start = load_profile(prior)
    sources = ", ".join(Path(p).name for p in paths)
    description = f"fitted by sim.calibrate to {sources}"
    if direct_path:
        ref = load_measurements(reference) if reference is not None else []
        fit, ratio = fit_direct_path_costs(measurements, start.costs_us, reference=ref, iterations=iterations)
        measured_on = start.measured_on
        description = (
            f"{start.description}; direct-path costs fitted by sim.calibrate to the request-admission-off runs of "
            f"{sources}" + (f" rescaled by {ratio:.3f} to {Path(reference).name}" if reference is not None else "")
        )
    else:
        fit = fit_costs(measurements, start.costs_us, iterations=iterations)
    out = Path(out)
    write_profile(out, fit, name=name or out.stem, measured_on=measured_on, description=description)
    return fit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", required=True, action="append", help="measurements JSON (see sim/profiles)")
    parser.add_argument("--out", required=True, help="profile TOML to write")
    parser.add_argument("--prior", default="reference-2core", help="profile to start from (name or path)")
    parser.add_argument("--name", default=None, help="profile name (default: the file name)")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument(
        "--direct-path", action="store_true", help="fit only the direct-path costs (runs with request admission off)"
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="with --direct-path: the prior's measurements (rescales the runs to its machine)",
    )
    args = parser.parse_args(argv)
    try:
        fit = calibrate(
            args.measurements,
            args.out,
            prior=args.prior,
            name=args.name,
            iterations=args.iterations,
            direct_path=args.direct_path,
            reference=args.reference,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for q in fit.quantities:
        note = "" if q.fitted else f"  (compared only: {q.why_not})"
        print(f"{q.name}: measured {q.measured:.4f}  simulated {q.simulated:.4f}{note}")
    if fit.unconstrained:
        print(f"not exercised by the measurements (prior kept): {', '.join(fit.unconstrained)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
