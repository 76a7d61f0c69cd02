"""Fit the event loop's per-operation CPU costs to measurements of the real scheduler.

A measurement is a micro-scenario (healthy-only runs: four model columns behind a full-column
seed, one-row groups, mock endpoints of constant latency) and what the real scheduler did on it:
its CPU time over the run and, for adaptive runs, when the row-group target first reached given
values. Both are linear in the costs once the *counts* of each operation are known:

* CPU time = sum over operations of count x cost (the loop's busy time);
* time to target N = the same sum over the operations run until then, plus the idle time.

Counts depend on the costs (a saturated loop merges completions into fewer passes), so the fit
alternates: simulate every measured scenario with the current costs and count each operation,
solve a ridge-regularized least-squares problem for the costs (relative errors, a weak pull towards
the prior so that operations the data cannot tell apart keep the prior's ratios), and repeat until
the costs settle. The residual (simulated minus counted) of each quantity is kept as an offset, so
at the fixed point the simulation itself reproduces the measurement. See ``docs/event-loop.md``.

``python -m sim.calibrate --measurements FILE --out PROFILE`` writes a profile TOML.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .event_loop import LoopCosts, LoopProfile, load_profile
from .policies import get_policy
from .scenario import Scenario, scenario_from_dict
from .scheduler import Scheduler
from .workload import Task, build_workload

OPERATIONS = LoopCosts.names()
HEALTHY_MODELS = ("cooling", "healthy_1", "healthy_2", "healthy_3")


class CalibrationError(InputError):
    """Measurements cannot be read or do not describe a micro-scenario the fit knows."""


# ---------------------------------------------------------------------------------------------
# Micro-scenarios
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MicroScenario:
    """A healthy-only run: seed -> four model columns, each on its own model (``docs/event-loop.md``)."""

    latency_s: float
    max_parallel_requests: int = 4
    hard_cap: int = 64
    rows: int = 256
    #: ``fixed`` (target pinned at the hard cap) or an adaptive policy from target 1
    policy: str = "fixed"
    #: max_in_flight_tasks = max_model_task_admission
    budgets: int = 1024

    def scenario(
        self, loop_model: str = "calibrated", profile: str = "reference-2core", scale: float = 1.0
    ) -> Scenario:
        models = [
            {
                "name": name,
                "max_parallel_requests": self.max_parallel_requests,
                "latency": {"distribution": "constant", "mean": self.latency_s},
            }
            for name in HEALTHY_MODELS
        ]
        columns: list[dict[str, Any]] = [{"name": "seed", "strategy": "full_column"}]
        columns += [{"name": name, "depends_on": ["seed"], "model": name} for name in HEALTHY_MODELS]
        lat_ms = f"{self.latency_s * 1000:g}"
        return scenario_from_dict(
            {
                "name": f"healthy-only-{lat_ms}ms-mpr{self.max_parallel_requests}-cap{self.hard_cap}-{self.policy}",
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
            },
            source="micro-scenario",
        )


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


def measurements_from_dicts(items: Iterable[Mapping[str, Any]], source: str) -> list[Measurement]:
    """Measurements from their JSON form (see ``sim/profiles/*.measurements.json``)."""
    out: list[Measurement] = []
    for i, item in enumerate(items):
        try:
            micro = MicroScenario(**item["micro"])
            out.append(
                Measurement(
                    str(item["name"]),
                    micro,
                    float(item["cpu_s"]),
                    float(item["wall_s"]),
                    float(item["rows_per_s"]),
                    {int(k): float(v) for k, v in item.get("target_reached_s", {}).items()},
                    None if item.get("blocked_evaluations") is None else int(item["blocked_evaluations"]),
                )
            )
        except (KeyError, TypeError, ValueError) as err:
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
    return {
        "name": m.name,
        "micro": m.micro.__dict__,
        "cpu_s": m.cpu_s,
        "wall_s": m.wall_s,
        "rows_per_s": m.rows_per_s,
        "target_reached_s": {str(k): v for k, v in sorted(m.target_reached_s.items())},
        "blocked_evaluations": m.blocked_evaluations,
    }


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
        c["dispatch"] = self.recorder.dispatches
        c["checkpoint"] = self.completed_row_groups
        c["target_evaluation"] = self.row_groups.evaluations
        c["salvage_pass"] = self.salvage_cycles
        return c

    def _dispatch_pass(self):  # noqa: ANN202 - a SimPy sub-generator
        self.counts["main_loop_pass"] += 1
        return (yield from super()._dispatch_pass())

    def _loop_start(self, task: Task) -> None:
        gen = task.gen
        if gen.kind == "local":
            self.counts["local_task"] += 1
        else:
            self.counts["worker_start"] += 1
            if self.gen_request_resource[gen.index] is not None:
                self.counts["request_acquire"] += 1
        super()._loop_start(task)

    def _send(self, task: Task, lease: Any) -> None:
        self.counts["request_send"] += 1
        super()._send(task, lease)

    def _answered(self, task: Task, lease: Any, answer: Any) -> None:
        self.counts["completion"] += 1
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

    @property
    def calls(self) -> int:
        return self.counts["completion"]

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
    )


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    costs_us: dict[str, float]
    iterations: int
    #: quantity name -> (measured, simulated with the fitted costs), seconds
    comparison: dict[str, tuple[float, float]]
    #: operations no measurement exercised: their cost is the prior's
    unconstrained: list[str]


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename: never half a profile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _simulate_all(
    measurements: Sequence[Measurement], costs_us: Mapping[str, float], workdir: Path
) -> list[SimulatedRun]:
    """Simulate each distinct micro-scenario once (repeats of a measurement share the run)."""
    path = workdir / "fit-step.toml"
    _atomic_write(path, profile_toml(costs_us, name="fit-step", measured_on={}))
    watch: dict[MicroScenario, set[int]] = {}
    for m in measurements:
        watch.setdefault(m.micro, set()).update(m.target_reached_s)
    runs = {micro: simulate_micro(micro, str(path), watch_targets=sorted(w)) for micro, w in watch.items()}
    return [runs[m.micro] for m in measurements]


def _rows(
    measurements: Sequence[Measurement], runs: Sequence[SimulatedRun], costs_s: np.ndarray
) -> tuple[list[np.ndarray], list[float], list[str], list[float], list[float]]:
    """Linear rows ``counts . costs + offset = measured`` for every measured quantity; also the
    quantities' names, simulated and measured values."""
    xs: list[np.ndarray] = []
    ys: list[float] = []
    names: list[str] = []
    simulated: list[float] = []
    measured_values: list[float] = []
    for m, run in zip(measurements, runs, strict=True):
        counts = np.array([run.counts[op] for op in OPERATIONS], dtype=float)
        xs.append(counts)
        ys.append(m.cpu_s)  # busy time is exactly the counted sum: no offset
        names.append(f"{m.name}: cpu_s")
        simulated.append(run.cpu_s)
        measured_values.append(m.cpu_s)
        for value, measured in sorted(m.target_reached_s.items()):
            snap = run.target_snapshots.get(value)
            if snap is None:
                continue
            t, _busy, snap_counts = snap
            row = np.array([snap_counts[op] for op in OPERATIONS], dtype=float)
            offset = t - float(row @ costs_s)  # idle time and work counted but not yet run
            xs.append(row)
            ys.append(measured - offset)
            names.append(f"{m.name}: target {value} at s")
            simulated.append(t)
            measured_values.append(measured)
    return xs, ys, names, simulated, measured_values


def fit_costs(
    measurements: Sequence[Measurement],
    prior_us: Mapping[str, float],
    *,
    iterations: int = 4,
    prior_weight: float = 0.05,
    tolerance: float = 0.005,
) -> FitResult:
    """Fit per-operation costs (microseconds) to ``measurements``, starting from ``prior_us``.

    Each iteration simulates every measurement with the current costs, builds one linear row per
    measured quantity (relative error weights) and solves the ridge problem pulling each cost
    towards its prior by ``prior_weight`` (relative). Stops after ``iterations`` or when no cost
    moves by more than ``tolerance`` (relative).
    """
    missing = [op for op in OPERATIONS if op not in prior_us]
    if missing:
        raise CalibrationError(f"prior profile: costs_us.{missing[0]}: missing")
    prior = np.array([max(float(prior_us[op]), 1e-3) for op in OPERATIONS]) * 1e-6
    costs = prior.copy()
    exercised = np.zeros(len(OPERATIONS), dtype=bool)
    done = 0
    with tempfile.TemporaryDirectory(prefix="admission-sim-fit-") as tmp:
        workdir = Path(tmp)
        for done in range(1, iterations + 1):  # noqa: B007 - the count is reported
            runs = _simulate_all(measurements, dict(zip(OPERATIONS, costs * 1e6, strict=True)), workdir)
            xs, ys, _names, _sim, _meas = _rows(measurements, runs, costs)
            exercised |= np.array(xs).sum(axis=0) > 0
            # Unknowns are relative costs u = c / prior, so the ridge pulls u towards 1.
            a = np.array([x * prior / y for x, y in zip(xs, ys, strict=True)])
            b = np.ones(len(ys))
            ridge = math.sqrt(prior_weight) * np.eye(len(OPERATIONS))
            u, *_ = np.linalg.lstsq(np.vstack([a, ridge]), np.concatenate([b, ridge @ np.ones(len(OPERATIONS))]))
            new = np.maximum(u, 0.01) * prior
            moved = float(np.max(np.abs(new - costs) / costs))
            costs = new
            if moved < tolerance:
                break
        runs = _simulate_all(measurements, dict(zip(OPERATIONS, costs * 1e6, strict=True)), workdir)
    _xs, _ys, names, simulated, measured_values = _rows(measurements, runs, costs)
    comparison = dict(zip(names, zip(measured_values, simulated, strict=True), strict=True))
    costs_us = {op: round(float(c) * 1e6, 1) for op, c in zip(OPERATIONS, costs, strict=True)}
    unconstrained = [op for op, seen in zip(OPERATIONS, exercised, strict=True) if not seen]
    return FitResult(costs_us, done, comparison, unconstrained)


# ---------------------------------------------------------------------------------------------
# Profile files
# ---------------------------------------------------------------------------------------------


def machine_description() -> dict[str, str]:
    """Where a fit ran: machine, Python and (if installed) the real engine's version."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            engine = f"data-designer-engine {version('data-designer-engine')}"
        except PackageNotFoundError:
            engine = "not installed"
    except ImportError:  # pragma: no cover - importlib.metadata is in the standard library
        engine = "unknown"
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "engine": engine,
    }


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def profile_toml(
    costs_us: Mapping[str, float], *, name: str, measured_on: Mapping[str, str], description: str = ""
) -> str:
    lines = ["[profile]", f"name = {_toml_string(name)}"]
    if description:
        lines.append(f"description = {_toml_string(description)}")
    lines += ["", "[measured_on]"]
    lines += [f"{k} = {_toml_string(str(v))}" for k, v in measured_on.items()]
    lines += ["", "# CPU cost of each piece of scheduler work, in microseconds (docs/event-loop.md)", "[costs_us]"]
    lines += [f"{op} = {float(costs_us[op]):.1f}" for op in OPERATIONS]
    return "\n".join(lines) + "\n"


def write_profile(
    path: str | Path, fit: FitResult, *, name: str, measured_on: Mapping[str, str], description: str = ""
) -> LoopProfile:
    """Write the fitted profile atomically (temporary file, then rename) and read it back."""
    path = Path(path)
    _atomic_write(path, profile_toml(fit.costs_us, name=name, measured_on=measured_on, description=description))
    return load_profile(str(path))


def calibrate(
    measurements_path: str | Path,
    out: str | Path,
    *,
    prior: str = "reference-2core",
    name: str | None = None,
    iterations: int = 4,
) -> FitResult:
    """Fit a profile to a measurements file and write it to ``out`` (what ``calibrate`` runs).

    The profile's ``measured_on`` is the measurements file's own table if it has one (the machine
    the real scheduler ran on), else this machine. Raises :class:`InputError` subclasses on bad
    input, before anything is written."""
    path = Path(measurements_path)
    measurements = load_measurements(path)
    start = load_profile(prior)
    fit = fit_costs(measurements, start.costs_us, iterations=iterations)
    meta = json.loads(path.read_text(encoding="utf-8")).get("measured_on")
    measured_on = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else machine_description()
    out = Path(out)
    write_profile(
        out, fit, name=name or out.stem, measured_on=measured_on, description=f"fitted by sim.calibrate to {path.name}"
    )
    return fit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", required=True, help="measurements JSON (see sim/profiles)")
    parser.add_argument("--out", required=True, help="profile TOML to write")
    parser.add_argument("--prior", default="reference-2core", help="profile to start from (name or path)")
    parser.add_argument("--name", default=None, help="profile name (default: the file name)")
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        fit = calibrate(args.measurements, args.out, prior=args.prior, name=args.name, iterations=args.iterations)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for quantity, (measured, simulated) in fit.comparison.items():
        print(f"{quantity}: measured {measured:.4f}  simulated {simulated:.4f}")
    if fit.unconstrained:
        print(f"not exercised by the measurements (prior kept): {', '.join(fit.unconstrained)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
