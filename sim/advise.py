"""Which row-group settings for this workload? A search over what a DataDesigner user controls.

The settings searched are the ones a user can set (``max_concurrent_row_groups`` as a fixed
horizon; adaptive admission under policy ``localized`` with that value as its hard cap;
``buffer_size`` when the scenario gives ``num_records``; ``max_in_flight_tasks``). The search does
not walk the full grid:

1. *coarse*: a geometric ladder of caps (1, 2, 4, ... up to the number of row groups) for both
   modes, at the scenario's ``buffer_size`` and ``max_in_flight_tasks``, one seed each;
2. *refine*: geometric midpoints around the best cap of each mode, a few rounds;
3. *neighbours*: half and double ``buffer_size`` (with the same cap, and with the cap that keeps
   the same rows open) and a quarter and four times ``max_in_flight_tasks``, around the best
   settings;
4. *seeds*: successive halving. Every setting starts on one seed; the best third by the
   objective, the Pareto front and the shipped default move up to more seeds, until every
   front member and the recommendation have all of them.

Every (setting, seed) evaluation is one run of :func:`sim.simulate` through the sweep machinery
(:func:`sim.sweep.plan_sweep` builds the run specs, an executor from :mod:`sim.executors` runs
them, so a Dask cluster works as well as local processes). With ``out`` the evaluations are
appended to a journal there, so an interrupted search started again with the same ``out`` only
runs what is missing. Metrics are defined in ``docs/advise.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import InputError, RunFailed
from .row_group_admission import REASONS
from .scenario import Scenario
from .series import weighted_sum
from .sweep import plan_sweep

if TYPE_CHECKING:
    from .executors import Executor
    from .output import Report
    from .sweep import RunOutcome, RunSpec

#: DataDesigner's shipped horizon: ``RunConfig.max_concurrent_row_groups`` defaults to 3, fixed.
DEFAULT_HORIZON = 3
#: The adaptive policy searched (the fix DataDesigner's adaptive admission carries).
ADAPTIVE_POLICY = "localized"
#: The ``RunConfig`` fields the advice sets (data-designer 0.9.7, ``data_designer.config.RunConfig``).
RUN_CONFIG_FIELDS = ("buffer_size", "max_concurrent_row_groups", "max_in_flight_tasks")
#: Files of an advice folder.
JOURNAL = "evaluations.jsonl"
MANIFEST = "advise-manifest.json"

#: Metrics aggregated over seeds as ``<name>_mean`` and ``<name>_std``.
MEAN_METRICS = (
    "throughput",
    "time_to_first_checkpoint",
    "time_to_50pct_rows",
    "total_time",
    "peak_open_row_groups",
    "peak_open_rows",
)
#: A model using at least this share of its request slots on average is called saturated.
SATURATED_SLOTS = 0.8


class AdviceError(InputError):
    """A bad ``advise`` argument (objective, constraint, seeds, folder): nothing was run."""


class AdviceInterrupted(RunFailed):
    """The search was interrupted; with an ``out`` folder, finished evaluations are kept there."""


# ---------------------------------------------------------------------------------------------
# Settings and objectives
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Setting:
    """One point of the search: what the user would put into ``RunConfig``, plus the mode."""

    policy: str  # "fixed" or ADAPTIVE_POLICY
    max_concurrent_row_groups: int
    buffer_size: int | None  # None when the scenario gives count/size (not searched)
    max_in_flight_tasks: int

    @property
    def adaptive(self) -> bool:
        return self.policy != "fixed"

    @property
    def key(self) -> str:
        buffer = "-" if self.buffer_size is None else str(self.buffer_size)
        return f"{self.policy}:cap={self.max_concurrent_row_groups}:buffer={buffer}:tasks={self.max_in_flight_tasks}"

    @property
    def label(self) -> str:
        horizon = (
            f"adaptive<= {self.max_concurrent_row_groups}"
            if self.adaptive
            else f"fixed {self.max_concurrent_row_groups}"
        )
        buffer = "" if self.buffer_size is None else f", buffer {self.buffer_size}"
        return f"{horizon}{buffer}, tasks {self.max_in_flight_tasks}"

    def overrides(self) -> dict[str, Any]:
        """Scenario overrides. DataDesigner's builder passes ``max_in_flight_tasks`` as the model
        task admission too, so both are set."""
        out: dict[str, Any] = {
            "scheduler.max_concurrent_row_groups": self.max_concurrent_row_groups,
            "scheduler.max_in_flight_tasks": self.max_in_flight_tasks,
            "scheduler.max_model_task_admission": self.max_in_flight_tasks,
        }
        if self.buffer_size is not None:
            out["row_groups.buffer_size"] = self.buffer_size
        return out

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Objective:
    """What "best" means: ``throughput``, ``first-checkpoint`` or ``mix:W`` (weight W on
    throughput, 1-W on time to first checkpoint, each relative to the best evaluated value).

    Settings within ``tolerance`` (relative) of the best score are treated as equal; among them
    the one with fewer open rows, then the earlier first checkpoint, then the fixed mode wins.
    """

    name: str
    weight: float  # weight of throughput in the score
    tolerance: float = 0.02

    @classmethod
    def parse(cls, text: str | Objective, tolerance: float = 0.02) -> Objective:
        if isinstance(text, Objective):
            return text
        if not 0.0 <= tolerance < 1.0:
            raise AdviceError(f"tolerance: must be in [0, 1), got {tolerance}")
        if text == "throughput":
            return cls("throughput", 1.0, tolerance)
        if text == "first-checkpoint":
            return cls("first-checkpoint", 0.0, tolerance)
        if isinstance(text, str) and text.startswith("mix:"):
            try:
                weight = float(text[4:])
            except ValueError:
                weight = math.nan
            if 0.0 <= weight <= 1.0:
                return cls(f"mix:{weight:g}", weight, tolerance)
        raise AdviceError(
            f"objective '{text}': choose throughput, first-checkpoint or mix:W with W in [0, 1] (weight on throughput)"
        )

    def scores(self, table: pd.DataFrame) -> pd.Series:
        """Score per row of an aggregated table (higher is better; NaN for failed settings)."""
        thr = table["throughput_mean"].astype(float)
        ttfc = table["time_to_first_checkpoint_mean"].astype(float).fillna(np.inf)
        best_thr = thr.max()
        best_ttfc = ttfc[np.isfinite(ttfc)].min() if np.isfinite(ttfc).any() else np.nan
        thr_part = thr / best_thr if best_thr and best_thr > 0 else thr * 0.0
        ttfc_part = best_ttfc / ttfc if np.isfinite(best_ttfc) else ttfc * 0.0
        return self.weight * thr_part + (1.0 - self.weight) * ttfc_part


# ---------------------------------------------------------------------------------------------
# One evaluation: metrics of one run
# ---------------------------------------------------------------------------------------------


def slot_utilization(model_timeseries: pd.DataFrame | None, limits: Mapping[str, int], end: float) -> dict[str, float]:
    """Per model: time-weighted mean of calls in flight over ``[0, end]``, divided by its
    ``max_parallel_requests`` (busy fraction only says "at least one call in flight")."""
    out = {name: 0.0 for name in limits}
    if model_timeseries is None or model_timeseries.empty or end <= 0:
        return out
    for name, rows in model_timeseries.groupby("model", observed=True, sort=False):
        times = rows["time"].to_numpy(dtype=float)
        in_flight = rows["in_flight"].to_numpy(dtype=float)
        widths = np.diff(np.append(times, max(end, times[-1])))
        out[str(name)] = weighted_sum(widths, in_flight) / end / max(1, limits.get(str(name), 1))
    return out


def evaluation_metrics(outcome: RunOutcome, scenario: Scenario) -> dict[str, Any]:
    """What advise keeps of one run: the summary's progress, memory and block-reason numbers,
    plus the peak of open rows and the request-slot use derived from the time series."""
    s = outcome.summary
    sim_time = float(s["sim_time"])
    ts = outcome.timeseries
    peak_rows = int(ts["active_rows"].max()) if ts is not None and not ts.empty else 0
    limits = {m.name: m.max_parallel_requests for m in scenario.models}
    slots = slot_utilization(outcome.model_timeseries, limits, sim_time)
    out: dict[str, Any] = {
        "throughput": float(s["rows_per_second"]),
        "time_to_first_checkpoint": float(s["time_to_first_row"]),
        "time_to_50pct_rows": float(s["time_to_50pct_rows"]),
        "total_time": sim_time,
        "peak_open_row_groups": int(s["max_row_groups_in_flight"]),
        "peak_open_rows": peak_rows,
        "completed_rows": int(s["completed_rows"]),
        "total_rows": int(s["total_rows"]),
        "stop_reason": str(s["stop_reason"]),
        "open_row_groups_time_mean": float(s["active_row_groups_time_mean"]),
        "observed_max_target": int(s["observed_max_target"]),
        "adaptive_evaluations": int(s["adaptive_evaluations"]),
        "rate_limited_calls": int(s["rate_limited_calls"]),
    }
    for reason in REASONS:
        out[f"blocked_{reason}"] = int(s.get(f"blocked_{reason}", 0))
    for m in scenario.models:
        out[f"busy[{m.name}]"] = float(s[f"busy_fraction[{m.name}]"])
        out[f"slots[{m.name}]"] = slots[m.name]
        out[f"calls_429[{m.name}]"] = int(s[f"calls_429[{m.name}]"])
        out[f"cooldown[{m.name}]"] = float(s[f"cooldown_time[{m.name}]"]) / sim_time if sim_time > 0 else 0.0
    return out


@dataclass(frozen=True)
class Evaluation:
    """One (setting, seed) run: its metrics, or why it failed."""

    setting: Setting
    seed: int
    status: str  # "ok" | "failed"
    error: str | None
    metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# The journal of an advice folder
# ---------------------------------------------------------------------------------------------


class Journal:
    """Finished evaluations, in memory and (with a folder) appended to ``evaluations.jsonl``.

    A line is written and fsynced only when its run has finished, so a killed search loses at most
    the runs in flight; a torn last line is ignored (that run is simply run again).
    """

    def __init__(self, scenario: Scenario, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.done: dict[tuple[str, int], Evaluation] = {}
        if self.folder is None:
            return
        manifest = {"kind": "advise", "scenario": scenario.model_dump(mode="json")}
        path = self.folder / MANIFEST
        if path.exists():
            try:
                existing = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise AdviceError(f"{path}: unreadable ({err}); choose another --out") from None
            if existing.get("scenario") != manifest["scenario"]:
                raise AdviceError(f"{path}: this folder holds evaluations of another scenario; choose another --out")
            self._read()
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise AdviceError(f"{self.folder}: exists and is not an advice folder; choose another --out")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps(manifest, indent=2) + "\n")

    def _read(self) -> None:
        assert self.folder is not None
        path = self.folder / JOURNAL
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            # a torn last line: end it, so the next record starts on a line of its own
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n")
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                ev = Evaluation(
                    Setting(**rec["setting"]), int(rec["seed"]), rec["status"], rec["error"], rec["metrics"]
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            self.done[(ev.setting.key, ev.seed)] = ev

    def add(self, ev: Evaluation) -> None:
        self.done[(ev.setting.key, ev.seed)] = ev
        if self.folder is None:
            return
        line = {
            "setting": ev.setting.as_dict(),
            "seed": ev.seed,
            "status": ev.status,
            "error": ev.error,
            "metrics": ev.metrics,
        }
        with open(self.folder / JOURNAL, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def has(self, setting: Setting, seed: int) -> bool:
        return (setting.key, seed) in self.done


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Running evaluations through the sweep machinery
# ---------------------------------------------------------------------------------------------


def _specs_for(base: Scenario, setting: Setting, seeds: Sequence[int]) -> tuple[list[RunSpec], list[Evaluation]]:
    """Run specs of one setting on ``seeds`` (via :func:`plan_sweep`), and failed evaluations
    for seeds whose scenario is invalid (say, a buffer larger than the plan allows)."""
    plan = plan_sweep(
        base,
        grid={k: [v] for k, v in setting.overrides().items()},
        policies=[setting.policy],
        seeds=list(seeds),
        kind="advise",
    )
    specs, failed = [], []
    for run in plan.runs:
        run_id = f"{setting.key}@{run.seed}"
        if run.spec is None:
            failed.append(Evaluation(setting, run.seed, "failed", run.error, {}))
        else:
            specs.append(dataclasses.replace(run.spec, run_id=run_id))
    return specs, failed


class _Runner:
    """Evaluates (setting, seed) pairs not yet in the journal, with a progress bar."""

    def __init__(
        self,
        base: Scenario,
        journal: Journal,
        executor: Executor,
        progress: bool | None,
        on_evaluation: Callable[[Evaluation], None] | None,
    ) -> None:
        from tqdm import tqdm

        self.base = base
        self.journal = journal
        self.executor = executor
        self.on_evaluation = on_evaluation
        self.runs = 0
        self.bar = tqdm(
            desc="advise",
            unit="run",
            total=0,
            file=sys.stderr,
            disable=(not progress) if progress is not None else None,
            dynamic_ncols=True,
        )

    def evaluate(self, pairs: Iterable[tuple[Setting, Sequence[int]]]) -> None:
        by_id: dict[str, Setting] = {}
        specs: list[RunSpec] = []
        for setting, seeds in pairs:
            missing = [s for s in seeds if not self.journal.has(setting, s)]
            if not missing:
                continue
            new_specs, failed = _specs_for(self.base, setting, missing)
            for ev in failed:
                self._record(ev)
            for spec in new_specs:
                by_id[spec.run_id] = setting
            specs.extend(new_specs)
        if not specs:
            return
        self.bar.total += len(specs)
        self.bar.refresh()
        for outcome in self.executor.run(specs):
            setting = by_id[outcome.run_id]
            seed = int(outcome.run_id.rsplit("@", 1)[1])
            if outcome.status == "ok":
                try:
                    ev = Evaluation(setting, seed, "ok", None, evaluation_metrics(outcome, self.base))
                except (KeyError, ValueError, TypeError) as err:
                    ev = Evaluation(setting, seed, "failed", f"metrics: {type(err).__name__}: {err}", {})
            else:
                ev = Evaluation(setting, seed, "failed", outcome.error, {})
            self._record(ev)
            self.runs += 1
            self.bar.update(1)

    def _record(self, ev: Evaluation) -> None:
        self.journal.add(ev)
        if self.on_evaluation is not None:
            self.on_evaluation(ev)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# Aggregation, Pareto front, choice
# ---------------------------------------------------------------------------------------------


def aggregate(evaluations: Iterable[Evaluation], models: Sequence[str], objective: Objective) -> pd.DataFrame:
    """One row per setting: mean and spread (sample std) over its seeds, feasibility inputs, score."""
    by_setting: dict[Setting, list[Evaluation]] = {}
    for ev in evaluations:
        by_setting.setdefault(ev.setting, []).append(ev)
    rows = []
    for setting in sorted(by_setting, key=_setting_order):
        evs = sorted(by_setting[setting], key=lambda e: e.seed)
        ok = [e.metrics for e in evs if e.status == "ok"]
        failed = [e for e in evs if e.status != "ok"]
        row: dict[str, Any] = {
            "setting": setting.label,
            "mode": "adaptive" if setting.adaptive else "fixed",
            "policy": setting.policy,
            "max_concurrent_row_groups": setting.max_concurrent_row_groups,
            "buffer_size": setting.buffer_size,
            "max_in_flight_tasks": setting.max_in_flight_tasks,
            "seeds": len(ok),
            "failed_runs": len(failed),
            "error": failed[0].error if failed else "",
        }
        for name in MEAN_METRICS:
            values = np.array([m[name] for m in ok], dtype=float)
            row[f"{name}_mean"] = float(values.mean()) if values.size else np.nan
            row[f"{name}_std"] = float(values.std(ddof=1)) if values.size > 1 else np.nan
        row["peak_open_rows_max"] = max((m["peak_open_rows"] for m in ok), default=np.nan)
        row["completed_fraction"] = (
            float(np.mean([m["completed_rows"] / m["total_rows"] if m["total_rows"] else 0.0 for m in ok]))
            if ok
            else np.nan
        )
        for model in models:
            row[f"busy[{model}]"] = float(np.mean([m[f"busy[{model}]"] for m in ok])) if ok else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    usable = (table["failed_runs"] == 0) & (table["seeds"] > 0)
    table["score"] = objective.scores(table.where(usable)).where(usable)
    table["_setting"] = list(sorted(by_setting, key=_setting_order))
    return table


#: Columns that must all be equal for two settings to count as the same outcome.
OUTCOME_COLUMNS = ("seeds", *(f"{name}_mean" for name in MEAN_METRICS), "peak_open_rows_max")


def _same_outcome(table: pd.DataFrame) -> list[str]:
    """For each row, the label of the first earlier row (fixed first, smaller caps first) with
    exactly the same outcome on the same seeds, else "" (an adaptive cap its target never
    reached gives the same runs as any larger cap, and as fixed when nothing blocks growth)."""
    first: dict[tuple[Any, ...], str] = {}
    order = sorted(
        table.index, key=lambda i: (table.loc[i, "mode"] == "adaptive", table.loc[i, "max_concurrent_row_groups"], i)
    )
    out = {}
    for i in order:
        key = tuple(table.loc[i, list(OUTCOME_COLUMNS)].fillna(-1.0).tolist()) + (table.loc[i, "failed_runs"],)
        if table.loc[i, "seeds"] == 0:
            out[i] = ""
            continue
        out[i] = first.setdefault(key, table.loc[i, "setting"])
        if out[i] == table.loc[i, "setting"]:
            out[i] = ""
    return [out[i] for i in table.index]


def _setting_order(s: Setting) -> tuple[Any, ...]:
    return (s.adaptive, s.buffer_size or 0, s.max_in_flight_tasks, s.max_concurrent_row_groups)


def pareto_mask(table: pd.DataFrame) -> pd.Series:
    """True for rows not dominated by any other usable row on (throughput up, time to first
    checkpoint down, peak open rows down), using means over seeds. Failed settings are never on it."""
    usable = table["score"].notna().to_numpy()
    thr = table["throughput_mean"].to_numpy(dtype=float)
    ttfc = np.nan_to_num(table["time_to_first_checkpoint_mean"].to_numpy(dtype=float), nan=np.inf)
    rows = table["peak_open_rows_mean"].to_numpy(dtype=float)
    keep = []
    for i in range(len(table)):
        if not usable[i]:
            keep.append(False)
            continue
        better_eq = usable & (thr >= thr[i]) & (ttfc <= ttfc[i]) & (rows <= rows[i])
        strictly = (thr > thr[i]) | (ttfc < ttfc[i]) | (rows < rows[i])
        keep.append(not bool((better_eq & strictly).any()))
    return pd.Series(keep, index=table.index)


def rank(table: pd.DataFrame, objective: Objective, max_open_rows: int | None) -> list[int]:
    """Row indices of feasible settings, best first: score within tolerance of the best ties,
    then fewer open rows, earlier first checkpoint, fixed before adaptive, smaller cap."""
    feasible = table["score"].notna()
    if max_open_rows is not None:
        feasible &= table["peak_open_rows_max"] <= max_open_rows
    cand = table[feasible]
    if cand.empty:
        return []
    best = cand["score"].max()
    tied = cand["score"] >= best * (1.0 - objective.tolerance)
    order = cand.assign(
        _tier=(~tied).astype(int),
        _score=-cand["score"].where(~tied, best),
        _ttfc=cand["time_to_first_checkpoint_mean"].fillna(np.inf),
        _adaptive=(cand["mode"] == "adaptive").astype(int),
    ).sort_values(
        ["_tier", "_score", "peak_open_rows_mean", "_ttfc", "_adaptive", "max_concurrent_row_groups"],
        kind="mergesort",
    )
    return list(order.index)


# ---------------------------------------------------------------------------------------------
# What limited progress
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What held a setting back, read from its runs (summed or averaged over seeds)."""

    admission: str  # the dominant blocked reason, or what the fixed horizon did
    bottleneck: str  # the most used endpoint and how saturated it was
    slot_use: dict[str, float]  # model -> mean share of request slots in use

    def text(self) -> str:
        return f"admission: {self.admission}; bottleneck: {self.bottleneck}"


def limits_of(evaluations: Sequence[Evaluation], setting: Setting, models: Sequence[str], groups: int) -> Limits:
    ok = [e.metrics for e in evaluations if e.status == "ok"]
    if not ok:
        return Limits("unknown (every run failed)", "unknown", {})
    cap = setting.max_concurrent_row_groups
    horizon = min(cap, groups)
    open_mean = float(np.mean([m["open_row_groups_time_mean"] for m in ok]))
    if setting.adaptive:
        blocked = {r: sum(m[f"blocked_{r}"] for m in ok) for r in REASONS}
        evaluations_total = sum(m["adaptive_evaluations"] for m in ok)
        reason, count = max(blocked.items(), key=lambda kv: (kv[1], kv[0]))
        reached = max(m["observed_max_target"] for m in ok)
        if count == 0:
            admission = f"no block reason; the target reached {reached} of cap {cap}"
        else:
            share = count / evaluations_total if evaluations_total else 0.0
            admission = (
                f"blocked by {reason} in {share:.0%} of {evaluations_total // len(ok)} evaluations per run; "
                f"target reached {reached} of cap {cap}"
            )
    else:
        admission = f"fixed horizon {cap}: {open_mean:.1f} of {horizon} row groups open on average"
    slot_use = {name: float(np.mean([m[f"slots[{name}]"] for m in ok])) for name in models}
    if not slot_use:
        return Limits(admission, "no model endpoints (local work only)", {})
    top = max(slot_use, key=lambda n: (slot_use[n], n))
    busy = float(np.mean([m[f"busy[{top}]"] for m in ok]))
    calls_429 = {name: float(np.mean([m[f"calls_429[{name}]"] for m in ok])) for name in models}
    cooldown = {name: float(np.mean([m.get(f"cooldown[{name}]", 0.0) for m in ok])) for name in models}
    limited = max(models, key=lambda n: (calls_429[n], n))
    if slot_use[top] >= SATURATED_SLOTS:
        bottleneck = f"endpoint '{top}' ({slot_use[top]:.0%} of its request slots in use, busy {busy:.0%})"
    elif calls_429[limited] > 0:
        bottleneck = (
            f"provider capacity of '{limited}' ({calls_429[limited]:.0f} 429s per run, in cooldown "
            f"{cooldown[limited]:.0%} of the time, {slot_use[limited]:.0%} of its request slots in use)"
        )
    else:
        bottleneck = (
            f"no endpoint saturated (most used: '{top}', {slot_use[top]:.0%} of its slots, busy {busy:.0%}): "
            "ready work was short (row groups open, dependencies)"
        )
    if calls_429[limited] > 0 and not bottleneck.startswith("provider"):
        bottleneck += f"; '{limited}' answered {calls_429[limited]:.0f} 429s per run"
    return Limits(admission, bottleneck, slot_use)


# ---------------------------------------------------------------------------------------------
# The advice
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A setting with its aggregated row and what limited its progress."""

    setting: Setting
    row: dict[str, Any]
    limits: Limits


@dataclass
class Advice:
    """The answer: every setting tried, the Pareto front, the recommendation and the default."""

    scenario: Scenario
    objective: Objective
    max_open_rows: int | None
    seeds: list[int]
    evaluated: pd.DataFrame
    front: pd.DataFrame
    recommended: Choice | None
    default: Choice
    runs: int  # simulations run by this call (the rest came from the journal)
    evaluations: int
    files: list[Path] = field(default_factory=list)

    def run_config_lines(self) -> list[str]:
        """Python lines applying the recommendation in DataDesigner (``import`` + ``set_run_config``)."""
        if self.recommended is None:
            return []
        return run_config_lines(self.recommended.setting)


def run_config_lines(setting: Setting) -> list[str]:
    """``RunConfig`` fields for ``setting``. Adaptive admission is not a ``RunConfig`` field
    (data-designer 0.9.7): the engine's scheduler takes ``adaptive_row_group_admission``, so an
    adaptive recommendation says so in a comment and sets the hard cap."""
    kwargs = []
    if setting.buffer_size is not None:
        kwargs.append(f"buffer_size={setting.buffer_size}")
    kwargs.append(f"max_concurrent_row_groups={setting.max_concurrent_row_groups}")
    kwargs.append(f"max_in_flight_tasks={setting.max_in_flight_tasks}")
    lines = ["import data_designer.config as dd", ""]
    if setting.adaptive:
        lines += [
            "# Adaptive admission is not a RunConfig field: the engine's AsyncTaskScheduler needs",
            "# adaptive_row_group_admission=True (adaptive_row_group_initial_target=1); the value",
            "# below is then its hard cap.",
        ]
    lines.append(f"data_designer.set_run_config(dd.RunConfig({', '.join(kwargs)}))")
    return lines


def _row_groups(scenario: Scenario, buffer_size: int | None) -> int:
    rg = scenario.row_groups
    if buffer_size is None or rg.num_records is None:
        return rg.max_groups
    return -(-rg.num_records // buffer_size)


def cap_ladder(groups: int) -> list[int]:
    """1, 2, 4, ... below ``groups``, then ``groups`` (a larger cap admits the same)."""
    caps, c = [], 1
    while c < groups:
        caps.append(c)
        c *= 2
    caps.append(max(1, groups))
    return caps


def _seed_list(scenario: Scenario, seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise AdviceError(f"seeds: must be >= 1, got {seeds}")
        return list(range(scenario.seed, scenario.seed + int(seeds)))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out) or any(s < 0 for s in out):
        raise AdviceError(f"seeds: need distinct seeds >= 0, got {list(seeds)}")
    return out


def _rungs(n: int) -> list[int]:
    """Seed budgets of successive halving: 1, 2, 4, ... then all ``n``."""
    rungs, r = [], 1
    while r < n:
        rungs.append(r)
        r *= 2
    return rungs + [n]


@dataclass(frozen=True)
class SearchBudget:
    """How wide the search goes. The defaults keep a bundled workload near a minute on 2 cores."""

    refine_rounds: int = 2  # cap midpoint rounds per mode
    neighbours_of: int = 1  # best settings whose buffer/task neighbours are tried
    eta: int = 3  # successive halving keeps the best 1/eta at each rung
    buffer_sizes: bool = True
    in_flight_tasks: bool = True


def advise(
    scenario: Scenario,
    objective: str | Objective = "throughput",
    max_open_rows: int | None = None,
    seeds: int | Sequence[int] = 3,
    executor: Executor | None = None,
    *,
    out: str | Path | None = None,
    budget: SearchBudget = SearchBudget(),
    progress: bool | None = None,
    on_evaluation: Callable[[Evaluation], None] | None = None,
    tolerance: float = 0.02,
) -> Advice:
    """Search row-group settings for ``scenario`` and recommend one (see the module docstring).

    ``seeds``: a count (seeds from ``scenario.seed``) or the seeds. ``executor``: from
    :func:`sim.executors.make_executor` (default: serial, in this process). ``out``: a folder
    for the journal and the tables; run again with the same folder to resume.
    """
    from .executors import make_executor

    objective = Objective.parse(objective, tolerance)
    if max_open_rows is not None and (isinstance(max_open_rows, bool) or int(max_open_rows) < 1):
        raise AdviceError(f"max_open_rows: must be >= 1, got {max_open_rows}")
    seed_list = _seed_list(scenario, seeds)
    journal = Journal(scenario, out)
    own = executor is None
    ex = make_executor("serial") if executor is None else executor
    runner = _Runner(scenario, journal, ex, progress, on_evaluation)
    try:
        search = _Search(scenario, objective, max_open_rows, seed_list, budget, runner)
        search.run()
    except KeyboardInterrupt:
        where = f"; finished evaluations are kept in {out}, run again with it to resume" if out else ""
        raise AdviceInterrupted(f"advise interrupted after {runner.runs} runs{where}") from None
    finally:
        runner.close()
        if own:
            ex.close()
    advice = search.advice()
    if out is not None:
        advice.files = write_advice(advice, Path(out))
    return advice


class _Search:
    """The search state: which settings exist, how many seeds each has."""

    def __init__(
        self,
        scenario: Scenario,
        objective: Objective,
        max_open_rows: int | None,
        seeds: list[int],
        budget: SearchBudget,
        runner: _Runner,
    ) -> None:
        self.scenario = scenario
        self.objective = objective
        self.max_open_rows = max_open_rows
        self.seeds = seeds
        self.budget = budget
        self.runner = runner
        self.models = [m.name for m in scenario.models]
        sched = scenario.scheduler
        rg = scenario.row_groups
        self.base_buffer = rg.buffer_size if rg.num_records is not None else None
        self.base_tasks = sched.max_in_flight_tasks
        self.default = Setting("fixed", DEFAULT_HORIZON, self.base_buffer, self.base_tasks)
        self.settings: dict[Setting, int] = {}  # setting -> seeds it is evaluated on

    # -- evaluation --------------------------------------------------------------------------

    def add(self, settings: Iterable[Setting]) -> None:
        """Evaluate new settings on the first rung (one seed)."""
        new = [s for s in dict.fromkeys(settings) if s not in self.settings]
        for s in new:
            self.settings[s] = 1
        self.runner.evaluate((s, self.seeds[:1]) for s in new)

    def promote(self, settings: Iterable[Setting], n_seeds: int) -> None:
        todo = [s for s in dict.fromkeys(settings) if self.settings[s] < n_seeds]
        for s in todo:
            self.settings[s] = n_seeds
        self.runner.evaluate((s, self.seeds[:n_seeds]) for s in todo)

    def table(self, settings: Iterable[Setting] | None = None, n_seeds: int | None = None) -> pd.DataFrame:
        """Aggregated table; with ``n_seeds``, every setting on its first ``n_seeds`` seeds only
        (common random numbers, so settings are compared on the same draws)."""
        chosen = self.settings if settings is None else {s: self.settings[s] for s in settings}
        evs = [
            self.runner.journal.done[(s.key, seed)]
            for s, n in chosen.items()
            for seed in self.seeds[: n if n_seeds is None else min(n, n_seeds)]
            if (s.key, seed) in self.runner.journal.done
        ]
        return aggregate(evs, self.models, self.objective)

    def best(self, settings: Iterable[Setting] | None = None, k: int = 1) -> list[Setting]:
        table = self.table(settings)
        if table.empty:
            return []
        return [table.loc[i, "_setting"] for i in rank(table, self.objective, self.max_open_rows)[:k]]

    # -- stages ------------------------------------------------------------------------------

    def run(self) -> None:
        self.add(self._coarse())
        for policy in ("fixed", ADAPTIVE_POLICY):
            self._refine_caps(lambda s, p=policy: s.policy == p and self._base_knobs(s))
        if self.budget.buffer_sizes or self.budget.in_flight_tasks:
            leaders = self.best(k=self.budget.neighbours_of)
            self.add(n for s in leaders for n in self._neighbours(s))
            top = self.best()
            if top:
                t = top[0]
                self._refine_caps(
                    lambda s: (
                        (s.policy, s.buffer_size, s.max_in_flight_tasks)
                        == (t.policy, t.buffer_size, t.max_in_flight_tasks)
                    )
                )
        self._race()

    def _base_knobs(self, s: Setting) -> bool:
        return s.buffer_size == self.base_buffer and s.max_in_flight_tasks == self.base_tasks

    def _coarse(self) -> list[Setting]:
        groups = _row_groups(self.scenario, self.base_buffer)
        caps = cap_ladder(groups)
        out = [self.default]
        out += [Setting("fixed", c, self.base_buffer, self.base_tasks) for c in caps]
        out += [Setting(ADAPTIVE_POLICY, c, self.base_buffer, self.base_tasks) for c in caps if c > 1]
        return out

    def _refine_caps(self, family: Callable[[Setting], bool]) -> None:
        for _ in range(self.budget.refine_rounds):
            members = [s for s in self.settings if family(s)]
            top = self.best(members)
            if not top:
                return
            best = top[0]
            caps = sorted({s.max_concurrent_row_groups for s in members})
            i = caps.index(best.max_concurrent_row_groups)
            new = []
            for lo, hi in (
                (caps[i - 1] if i > 0 else None, caps[i]),
                (caps[i], caps[i + 1] if i + 1 < len(caps) else None),
            ):
                if lo is None or hi is None or hi - lo < 2:
                    continue
                if best.adaptive and self._cap_never_bound(dataclasses.replace(best, max_concurrent_row_groups=lo)):
                    continue  # the target stayed below cap `lo`: every larger cap gives the same runs
                mid = int(round(math.sqrt(lo * hi)))
                mid = min(max(mid, lo + 1), hi - 1)
                new.append(dataclasses.replace(best, max_concurrent_row_groups=mid))
            new = [s for s in new if s not in self.settings]
            if not new:
                return
            self.add(new)

    def _cap_never_bound(self, setting: Setting) -> bool:
        """True if every evaluated run of this adaptive setting kept its target below the cap."""
        if setting not in self.settings:
            return False
        runs = [self.runner.journal.done.get((setting.key, seed)) for seed in self.seeds[: self.settings[setting]]]
        return all(
            ev is not None
            and ev.status == "ok"
            and ev.metrics["observed_max_target"] < setting.max_concurrent_row_groups
            for ev in runs
        )

    def _neighbours(self, s: Setting) -> list[Setting]:
        out = []
        rg = self.scenario.row_groups
        if self.budget.buffer_sizes and s.buffer_size is not None and rg.num_records is not None:
            for factor in (0.5, 2.0):
                b = int(min(rg.num_records, max(1, round(s.buffer_size * factor))))
                if b == s.buffer_size:
                    continue
                same_rows = max(1, round(s.max_concurrent_row_groups * s.buffer_size / b))
                for cap in dict.fromkeys((s.max_concurrent_row_groups, same_rows)):
                    out.append(
                        dataclasses.replace(
                            s, buffer_size=b, max_concurrent_row_groups=min(cap, _row_groups(self.scenario, b))
                        )
                    )
        if self.budget.in_flight_tasks:
            for factor in (0.25, 4.0):
                t = int(min(10_000_000, max(1, round(s.max_in_flight_tasks * factor))))
                if t != s.max_in_flight_tasks:
                    out.append(dataclasses.replace(s, max_in_flight_tasks=t))
        return out

    def _race(self) -> None:
        """Successive halving over seeds, compared on common seeds at each rung; then to a fixed
        point where the front, the best setting and the default all have every seed."""
        n = len(self.seeds)
        eta = max(2, self.budget.eta)
        rungs = _rungs(n)
        for lo, hi in zip(rungs, rungs[1:], strict=False):
            at_rung = [s for s, k in self.settings.items() if k >= lo]
            keep = max(1, math.ceil(len(at_rung) / eta))
            self.promote(self._contenders(at_rung, keep, lo), hi)
        for _ in range(len(self.settings) + 1):
            everyone = list(self.settings)
            wanted = self._contenders(everyone, 1, 1) + self._contenders(everyone, 1, None)
            todo = [s for s in dict.fromkeys(wanted) if self.settings[s] < n]
            if not todo:
                return
            self.promote(todo, n)

    def _contenders(self, settings: list[Setting], keep: int, n_seeds: int | None) -> list[Setting]:
        table = self.table(settings, n_seeds)
        on_front = [table.loc[i, "_setting"] for i in table.index[pareto_mask(table)]]
        ranked = [table.loc[i, "_setting"] for i in rank(table, self.objective, self.max_open_rows)[:keep]]
        return list(dict.fromkeys([*ranked, *on_front, self.default]))

    # -- the answer --------------------------------------------------------------------------

    def advice(self) -> Advice:
        table = self.table()
        table["on_front"] = pareto_mask(table)
        table["feasible"] = table["score"].notna() & (
            table["peak_open_rows_max"] <= self.max_open_rows if self.max_open_rows is not None else True
        )
        order = rank(table, self.objective, self.max_open_rows)
        table["rank"] = pd.Series(range(1, len(order) + 1), index=order, dtype="Int64").reindex(table.index)
        recommended = self._choice(table, table.loc[order[0], "_setting"]) if order else None
        default = self._choice(table, self.default)
        evaluated = table.drop(columns="_setting").reset_index(drop=True)
        evaluated["same_as"] = _same_outcome(evaluated)
        front = evaluated[evaluated["on_front"] & (evaluated["same_as"] == "")].sort_values(
            ["throughput_mean", "time_to_first_checkpoint_mean"], ascending=[False, True], kind="mergesort"
        )
        front["also"] = [
            ", ".join(evaluated.loc[evaluated["same_as"] == label, "setting"]) for label in front["setting"]
        ]
        return Advice(
            scenario=self.scenario,
            objective=self.objective,
            max_open_rows=self.max_open_rows,
            seeds=list(self.seeds),
            evaluated=evaluated,
            front=front.reset_index(drop=True),
            recommended=recommended,
            default=default,
            runs=self.runner.runs,
            evaluations=sum(self.settings.values()),
        )

    def _choice(self, table: pd.DataFrame, setting: Setting) -> Choice:
        i = next(i for i in table.index if table.loc[i, "_setting"] == setting)
        row = {k: v for k, v in table.loc[i].items() if k != "_setting"}
        evs = [self.runner.journal.done[(setting.key, s)] for s in self.seeds[: self.settings[setting]]]
        groups = _row_groups(self.scenario, setting.buffer_size)
        return Choice(setting, row, limits_of(evs, setting, self.models, groups))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

#: Front columns of the printed table: (front.csv column, header, unit). The throughput's spread
#: shares its cell; busy fractions per model and the settings with the same runs go to a second
#: table and the notes, so the tables fit sim.output.MAX_WIDTH columns whatever the models.
TABLE_COLUMNS = (
    ("setting", "setting", ""),
    ("seeds", "seeds", ""),
    ("throughput_mean", "rows/s", "mean ± sd"),
    ("time_to_first_checkpoint_mean", "1st ckpt", "s"),
    ("time_to_50pct_rows_mean", "50% rows", "s"),
    ("total_time_mean", "total", "s"),
    ("peak_open_row_groups_mean", "open", "groups"),
    ("peak_open_rows_max", "open", "rows"),
)
#: Width the text lines of the advice are wrapped to (sim.output.MAX_WIDTH).
TEXT_WIDTH = 100


def front_table(advice: Advice) -> pd.DataFrame:
    """The front with short column names, busy fractions per model as percentages."""
    cols = {key: header for key, header, _unit in TABLE_COLUMNS}
    cols["throughput_std"] = "±"
    for m in advice.scenario.models:
        cols[f"busy[{m.name}]"] = f"busy {m.name}"
    cols["also"] = "same runs as"
    table = advice.front[list(cols)].rename(columns=cols)
    for m in advice.scenario.models:
        table[f"busy {m.name}"] = (100 * table[f"busy {m.name}"]).round(0).astype("Int64").astype(str) + "%"
    return table


def _cell(row: Mapping[str, Any], key: str) -> Any:
    value = row[key]
    if key == "throughput_mean":
        spread = row["throughput_std"]
        return f"{value:.2f}" + ("" if pd.isna(spread) else f" ± {spread:.2f}")
    if isinstance(value, float | np.floating) and math.isfinite(value):
        return round(float(value), 2)
    return value


def _percent(share: Any) -> Any:
    return None if pd.isna(share) else f"{100 * share:.0f}%"


def _wrap(lines: Iterable[str]) -> list[str]:
    """Text lines wrapped at :data:`TEXT_WIDTH`, continuation lines indented like their line."""
    import textwrap

    out: list[str] = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip(" ")))
        wrapped = textwrap.wrap(
            line, TEXT_WIDTH, subsequent_indent=indent + "  ", break_long_words=False, break_on_hyphens=False
        )
        out += wrapped or [""]
    return out


def _fitted_code(lines: list[str]) -> list[str]:
    """The RunConfig lines as printed: a ``set_run_config(dd.RunConfig(...))`` call too long for
    the text width goes over three lines (still valid Python), never wrapped mid-call."""
    call = "data_designer.set_run_config("
    out = []
    for line in lines:
        if line.startswith(call) and line.endswith(")") and len(line) + 4 > TEXT_WIDTH:
            out += [call, f"    {line[len(call) : -1]}", ")"]
        else:
            out.append(line)
    return out


def advice_report(advice: Advice) -> Report:
    """The advice as a :class:`sim.output.Report` (what ``advise`` prints): the front and the busy
    fractions as tables that fit a terminal; the recommendation with its RunConfig lines and the
    shipped default as text."""
    from .output import Column, Report, Table, format_value

    constraint = f", at most {advice.max_open_rows} open rows" if advice.max_open_rows is not None else ""
    lines = _wrap(
        [
            f"advise {advice.scenario.name}: objective {advice.objective.name}{constraint}; "
            f"{len(advice.evaluated)} settings, {advice.evaluations} evaluations on seeds {advice.seeds}"
            f" ({advice.runs} simulated now)",
            "Pareto front: throughput up, first checkpoint down, open rows down; means over seeds.",
        ]
    )
    front = advice.front.to_dict(orient="records")
    # The setting's label wraps (it can be 40 characters), so the numbers never get cut short.
    columns = [
        Column(header, unit, numeric=key != "setting", wrap=key == "setting") for key, header, unit in TABLE_COLUMNS
    ]
    rows = [[_cell(r, key) for key, _h, _u in TABLE_COLUMNS] for r in front]
    models = [m.name for m in advice.scenario.models]
    # One wrapped cell per setting, so any number of endpoints (and long names) fits the width.
    busy = [[r["setting"], ", ".join(f"{m} {format_value(_percent(r[f'busy[{m}]']))}" for m in models)] for r in front]
    tables = [
        Table("Pareto front", columns, rows, stacked_units=True),
        Table(
            "Endpoint busy share",
            [
                Column("setting", numeric=False),
                Column("share of the run each endpoint was busy", numeric=False, wrap=True),
            ],
            busy,
        ),
    ]
    footer = [""]
    same = [(r["setting"], r["also"]) for r in front if isinstance(r.get("also"), str) and r["also"]]
    if same:
        footer += ["Settings with the same runs as a front setting:"]
        footer += [f"  {setting}: {also}" for setting, also in same]
        footer.append("")
    if advice.recommended is None:
        footer.append(f"No setting tried keeps open rows at or below {advice.max_open_rows}.")
    else:
        footer += ["Recommended:", *_describe(advice.recommended), "", "Apply it in DataDesigner:"]
        footer += [f"    {line}" if line else "" for line in _fitted_code(advice.run_config_lines())]
    footer += ["", f"Shipped default (fixed {DEFAULT_HORIZON}):", *_describe(advice.default)]
    if advice.recommended is not None and advice.recommended.setting != advice.default.setting:
        rec, dft = advice.recommended.row, advice.default.row
        gain = rec["throughput_mean"] / dft["throughput_mean"] if dft["throughput_mean"] else math.nan
        footer.append(
            f"  the recommendation: {gain:.2f}x its throughput, first checkpoint "
            f"{rec['time_to_first_checkpoint_mean'] - dft['time_to_first_checkpoint_mean']:+.1f} s, "
            f"open rows {rec['peak_open_rows_max']:.0f} vs {dft['peak_open_rows_max']:.0f}"
        )
    return Report(data={}, rows=[], tables=tables, lines=lines, footer=_wrap(footer))


def _describe(choice: Choice) -> list[str]:
    r = choice.row
    spread = r["throughput_std"]
    spread_text = "" if pd.isna(spread) else f" ± {spread:.2f}"
    return [
        f"  {choice.setting.label}  ({r['seeds']} seeds)",
        f"    {r['throughput_mean']:.2f}{spread_text} rows/s; first checkpoint"
        f" {r['time_to_first_checkpoint_mean']:.1f} s; 50% of rows {r['time_to_50pct_rows_mean']:.1f} s;"
        f" total {r['total_time_mean']:.1f} s",
        f"    peak {r['peak_open_row_groups_mean']:.1f} row groups / {r['peak_open_rows_max']:.0f} rows open",
        f"    limited by: {choice.limits.admission}",
        f"                {choice.limits.bottleneck}",
    ]


def format_advice(advice: Advice) -> str:
    """The advice as the text ``advise`` prints (and ``advice.txt`` holds): :func:`advice_report`
    rendered as plain text, at most :data:`sim.output.MAX_WIDTH` columns wide."""
    import io

    from .output import emit

    buf = io.StringIO()
    emit(advice_report(advice), file=buf)
    return buf.getvalue()


def write_advice(advice: Advice, folder: Path) -> list[Path]:
    """``evaluated.csv``, ``front.csv``, ``advice.txt`` and ``front.png`` into ``folder``; each
    file is written under a temporary name and renamed, so none is ever half-written."""
    from .advise_plots import plot_front

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, table in (("evaluated.csv", advice.evaluated), ("front.csv", advice.front)):
        _write_atomic(folder / name, table.to_csv(index=False))
        files.append(folder / name)
    _write_atomic(folder / "advice.txt", format_advice(advice))
    files.append(folder / "advice.txt")
    files.append(plot_front(advice, folder / "front.png"))
    return files
