"""Is the simulator right? Run a scenario on both engines and put the numbers side by side.

For each policy the real twin (:mod:`sim.twin`) runs ``repeats`` times (real runs vary with the
machine: timing decides how many 429s a cooling column collects) and the simulator once (it is
deterministic). Per policy and metric the report gives the real mean +- sd, the simulated value and
the relative error ``(sim - real mean) / |real mean|``; per metric where the policies differ, whether
``sign(localized - global)`` is the same on both engines. A real run that timed out or failed is
recorded in the runs table with its status and is left out of every mean. Folder layout and
reading guide: docs/twin.md.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .results import Result, atomic_directory, write_result
from .scenario import Scenario, with_overrides

#: Metrics compared by default: what the policies are about (healthy work exposed while another
#: model is rate limited, the target's growth) and the run's length and output.
METRICS = (
    "sim_time",
    "completed_rows",
    "successful_calls",
    "rate_limited_calls",
    "healthy_calls",
    "healthy_calls_in_window",
    "healthy_calls_per_second",
    "observed_max_target",
    "max_row_groups_in_flight",
    "blocked_deferred_tasks",
)
DEFAULT_POLICIES = ("fixed", "global", "localized")
DEFAULT_REPEATS = 3


class ValidationError(InputError):
    """Bad validate input (policies, repeats): nothing ran."""


@dataclass(frozen=True)
class RunRecord:
    """One run of a validation: the engine, policy, repeat, its status and (if ok) its result."""

    engine: str
    policy: str
    repeat: int
    seed: int
    status: str  # "ok" | "timed_out" | "failed"
    result: Result | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate` measured."""

    scenario: Scenario
    policies: tuple[str, ...]
    repeats: int
    runs: tuple[RunRecord, ...]
    errors: pd.DataFrame  # policy, metric, real_mean, real_sd, real_n, sim, rel_error
    signs: pd.DataFrame  # metric, real_diff, sim_diff, agrees
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def runs_frame(self) -> pd.DataFrame:
        rows = []
        for run in self.runs:
            row: dict[str, Any] = {
                "run_id": run_id(run),
                "engine": run.engine,
                "policy": run.policy,
                "repeat": run.repeat,
                "seed": run.seed,
                "status": run.status,
                "error": run.error,
            }
            if run.result is not None:
                row.update(metric_values(run.result))
                for key in ("cpu_seconds", "cpu_utilization", "cpu_bound", "loop_lag_p99_ms", "stop_reason"):
                    if key in run.result.summary:
                        row[key] = run.result.summary[key]
            rows.append(row)
        return pd.DataFrame(rows)


def run_id(run: RunRecord) -> str:
    return f"{run.engine}__{run.policy}__r{run.repeat}"


def _window(scenario: Scenario) -> tuple[float, float] | None:
    """The 429 window of the first used model with a bounded ``window`` pattern, if any."""
    used = {c.model for c in scenario.columns if c.model is not None}
    for m in scenario.models:
        rl = m.rate_limit
        if m.name in used and rl.pattern == "window" and rl.end is not None:
            return rl.start, rl.end
    return None


def healthy_calls_in_window(result: Result) -> float:
    """Successful calls on never-429 models answered inside the scenario's 429 window (NaN if the
    scenario has none): the healthy work a policy keeps flowing while another model is down."""
    window = _window(result.scenario)
    if window is None:
        return math.nan
    start, end = window
    calls = getattr(result, "calls", None)
    if calls is not None and len(calls.columns):  # the real engine logs every call
        mask = calls["model"].isin(healthy_models(result.scenario)) & ~calls["rate_limited"]
        answered = calls.loc[mask, "answered_at"]
        return float(((answered >= start) & (answered < end)).sum())
    # The simulator logs one model-series row per call sent or answered: an answer is a row where
    # the model's in-flight count went down (its scheduler series is sampled too coarsely for this).
    series = result.model_timeseries
    total = 0
    for model in healthy_models(result.scenario):
        rows = series[series["model"].astype(str) == model]
        in_flight = rows["in_flight"].to_numpy()
        previous = np.concatenate(([0], in_flight[:-1]))
        times = rows["time"].to_numpy()
        answered = times[in_flight < previous]
        total += int(((answered >= start) & (answered < end)).sum())
    return float(total)


def healthy_models(scenario: Scenario) -> list[str]:
    """Models that never answer 429: their calls are the healthy ones (as in the summaries)."""
    return [m.name for m in scenario.models if m.rate_limit.pattern == "never"]


def metric_values(result: Result, metrics: Sequence[str] = METRICS) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in metrics:
        if metric == "healthy_calls_in_window":
            out[metric] = healthy_calls_in_window(result)
        else:
            value = result.summary.get(metric, math.nan)
            out[metric] = float(value) if isinstance(value, int | float) else math.nan
    return out


def relative_error(sim: float, real: float) -> float:
    """``(sim - real) / |real|``; 0 when both are 0, +-inf when only the real value is 0."""
    if math.isnan(sim) or math.isnan(real):
        return math.nan
    if real == 0:
        return 0.0 if sim == 0 else math.copysign(math.inf, sim)
    return (sim - real) / abs(real)


def _sign(x: float) -> int:
    return 0 if x == 0 or math.isnan(x) else (1 if x > 0 else -1)


def error_table(runs: Sequence[RunRecord], policies: Sequence[str], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    rows = []
    for policy in policies:
        real = [metric_values(r.result, metrics) for r in runs if r.engine == "real" and r.policy == policy and r.ok]
        sims = [metric_values(r.result, metrics) for r in runs if r.engine == "sim" and r.policy == policy and r.ok]
        for metric in metrics:
            values = np.array([v[metric] for v in real], dtype=float)
            values = values[~np.isnan(values)]
            sim = sims[0][metric] if sims else math.nan
            if values.size == 0 and math.isnan(sim):
                continue
            mean = float(values.mean()) if values.size else math.nan
            sd = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else math.nan)
            rows.append(
                {
                    "policy": policy,
                    "metric": metric,
                    "real_mean": mean,
                    "real_sd": sd,
                    "real_n": int(values.size),
                    "sim": sim,
                    "rel_error": relative_error(sim, mean),
                }
            )
    return pd.DataFrame(rows, columns=["policy", "metric", "real_mean", "real_sd", "real_n", "sim", "rel_error"])


def sign_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Per metric where localized and global differ on either engine: do the signs agree?"""
    columns = ["metric", "real_diff", "sim_diff", "agrees"]
    if errors.empty or not {"localized", "global"} <= set(errors["policy"]):
        return pd.DataFrame(columns=columns)
    by = errors.set_index(["policy", "metric"])
    rows = []
    for metric in dict.fromkeys(errors["metric"]):
        if ("localized", metric) not in by.index or ("global", metric) not in by.index:
            continue
        real = by.loc[("localized", metric), "real_mean"] - by.loc[("global", metric), "real_mean"]
        sim = by.loc[("localized", metric), "sim"] - by.loc[("global", metric), "sim"]
        if math.isnan(real) or math.isnan(sim) or (real == 0 and sim == 0):
            continue
        rows.append({"metric": metric, "real_diff": real, "sim_diff": sim, "agrees": _sign(real) == _sign(sim)})
    return pd.DataFrame(rows, columns=columns)


def validate(
    scenario: Scenario,
    policies: Iterable[str] = DEFAULT_POLICIES,
    repeats: int = DEFAULT_REPEATS,
    *,
    seed: int | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    timeout: float | None = None,
    jobs: int = 1,
    progress: Callable[[RunRecord], None] | None = None,
) -> ValidationReport:
    """Run every policy on the simulator once and on the real twin ``repeats`` times.

    Repeat ``k`` uses seed ``seed + k`` on both engines' mock endpoints (the simulator runs seed
    ``seed``). ``jobs`` > 1 runs real runs side by side: faster, but they then share the machine's
    cores, so keep 1 for measurements of CPU-bound scenarios.
    """
    from . import simulate
    from .twin import DEFAULT_TIMEOUT, TwinRunFailed, TwinTimeout, check_supported, require_engine, resolve_policy
    from .twin import run_twin as twin_run

    if overrides:
        scenario = with_overrides(scenario, overrides)
    names = tuple(dict.fromkeys(str(p).strip() for p in policies if str(p).strip()))
    if not names:
        raise ValidationError("--policies: give at least one policy")
    if not (isinstance(repeats, int) and 1 <= repeats <= 1000):
        raise ValidationError(f"--repeats: must be an integer from 1 to 1000, got {repeats!r}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValidationError(f"--jobs: must be a positive integer, got {jobs!r}")
    require_engine()
    for name in names:
        resolve_policy(scenario, name)
    check_supported(scenario)
    base_seed = scenario.seed if seed is None else int(seed)
    limit = DEFAULT_TIMEOUT if timeout is None else timeout

    records: list[RunRecord] = []
    for name in names:
        record = RunRecord("sim", name, 0, base_seed, "ok", simulate(scenario, policy=name, seed=base_seed))
        records.append(record)
        if progress is not None:
            progress(record)

    def real_run(job: tuple[str, int]) -> RunRecord:
        name, k = job
        run_seed = base_seed + k
        try:
            result = twin_run(scenario, policy=name, seed=run_seed, timeout=limit)
        except TwinTimeout as err:
            record = RunRecord("real", name, k, run_seed, "timed_out", error=str(err))
        except TwinRunFailed as err:
            record = RunRecord("real", name, k, run_seed, "failed", error=str(err))
        else:
            record = RunRecord("real", name, k, run_seed, "ok", result)
        if progress is not None:
            progress(record)
        return record

    jobs_list = [(name, k) for k in range(repeats) for name in names]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        records.extend(pool.map(real_run, jobs_list))

    errors = error_table(records, names)
    return ValidationReport(
        scenario=scenario,
        policies=names,
        repeats=repeats,
        runs=tuple(records),
        errors=errors,
        signs=sign_table(errors),
        warnings=tuple(_warnings(records)),
    )


def _warnings(records: Sequence[RunRecord]) -> list[str]:
    out = []
    for run in records:
        if run.engine != "real":
            continue
        if run.status != "ok":
            out.append(f"{run_id(run)}: {run.status}: {run.error}")
            continue
        s = run.result.summary
        if s.get("cpu_bound"):
            out.append(
                f"{run_id(run)}: CPU-bound real run (process CPU {s['cpu_utilization']:.2f} of a core over run()): "
                "its timings depend on the machine"
            )
    return out


def format_report(report: ValidationReport) -> str:
    """The error table and sign agreement as plain text, one line per policy and metric."""
    lines = [f"validate {report.scenario.name}: {report.repeats} real repeat(s) per policy, simulator once"]
    lines.append(f"{'policy':<10} {'metric':<26} {'real mean +- sd':>24} {'sim':>12} {'rel. error':>10}")
    for row in report.errors.itertuples(index=False):
        real = f"{row.real_mean:.4g} +- {row.real_sd:.2g}" if row.real_n else "n/a"
        lines.append(f"{row.policy:<10} {row.metric:<26} {real:>24} {row.sim:>12.4g} {_percent(row.rel_error):>10}")
    if not report.signs.empty:
        lines.append("sign(localized - global):")
        for row in report.signs.itertuples(index=False):
            verdict = "agrees" if row.agrees else "DISAGREES"
            lines.append(f"  {row.metric:<26} real {row.real_diff:+.4g}  sim {row.sim_diff:+.4g}  {verdict}")
    lines.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(lines)


def _percent(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{100 * x:+.1f}%"


def write_validation(report: ValidationReport, out_dir: str | Path) -> Path:
    """Write the report as a results folder, atomically (:func:`sim.results.atomic_directory`):
    ``manifest.json``, ``errors.csv``, ``signs.csv``, ``runs.csv``, one folder per run under
    ``runs/`` (the engines' own layouts) and ``figures/`` overlaying real and simulated runs."""
    from . import __version__
    from .twin import write_twin_result
    from .twin.result import TwinResult

    final = Path(out_dir)
    tmp, commit = atomic_directory(final)
    try:
        manifest = {
            "package_version": __version__,
            "kind": "validate",
            "scenario": report.scenario.model_dump(mode="json"),
            "policies": list(report.policies),
            "repeats": report.repeats,
            "warnings": list(report.warnings),
        }
        report.errors.to_csv(tmp / "errors.csv", index=False)
        report.signs.to_csv(tmp / "signs.csv", index=False)
        report.runs_frame().to_csv(tmp / "runs.csv", index=False)
        (tmp / "report.txt").write_text(format_report(report) + "\n")
        for run in report.runs:
            if run.result is None:
                continue
            target = tmp / "runs" / run_id(run)
            if isinstance(run.result, TwinResult):
                write_twin_result(run.result, target)
            else:
                write_result(run.result, target)
        figures, note = _figures(report, tmp / "figures")
        manifest["figures"] = [str(p.relative_to(tmp)) for p in figures]
        if note:
            manifest["figures_note"] = note
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit()


def _figures(report: ValidationReport, folder: Path) -> tuple[list[Path], str | None]:
    try:
        from .plots import plot_validation_overlay
    except ImportError as err:
        return [], f"figures skipped: {err}"
    paths = []
    for policy in report.policies:
        sims = [r.result for r in report.runs if r.engine == "sim" and r.policy == policy and r.ok]
        reals = [r.result for r in report.runs if r.engine == "real" and r.policy == policy and r.ok]
        if not sims and not reals:
            continue
        paths.append(plot_validation_overlay(sims[:1], reals, folder / f"overlay__{policy}.png", title=policy))
    return paths, None
