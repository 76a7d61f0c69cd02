"""Regression thresholds: run the listed scenarios and compare metrics to bounds.

A thresholds file (``results/thresholds.toml``) is a list of ``[[check]]`` tables. Each check
names a scenario (a path, relative to the thresholds file first, or a bundled scenario's name),
dotted-key ``overrides``, ``seeds`` (how many, from ``seed`` or the scenario's seed), a ``metric``
(any column of ``runs.csv``, e.g. ``healthy_calls``), and a bound (``min``, ``max`` or both) on
either one ``policy``'s value or the ``ratio`` of two policies' values. Over several seeds the
value is the ``aggregate`` of the per-seed values (mean by default; a ratio divides the two
aggregates). Identical runs shared by several checks run once.

The file is validated before anything runs, as strictly as a scenario (pydantic in strict mode:
``min = "5"`` or ``seeds = true`` are errors, not conversions), and so is every check's scenario,
policy and metric name; a problem is a :class:`ThresholdsError` whose message names the file, the
key and the reason (CLI exit 2). A bound that fails, or a run that fails, is a failed check (CLI
exit 1).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .comparison import STATISTICS, format_number
from .errors import InputError, RunFailed
from .files import read_user_text
from .policies import POLICIES
from .results import TEXT_SUMMARY_KEYS, summary_metric_names
from .scenario import ScenarioError, load_scenario
from .sweep import RunOutcome, RunSpec, resolve_scenario_path, seed_list

if TYPE_CHECKING:
    from .executors import Executor

DEFAULT_THRESHOLDS = Path("results/thresholds.toml")
#: The shipped file, used when ``results/thresholds.toml`` is not in the working directory.
SHIPPED_THRESHOLDS = Path(__file__).resolve().parent.parent / DEFAULT_THRESHOLDS


def default_thresholds() -> Path:
    """``results/thresholds.toml`` in the working directory, else the one shipped with the package."""
    return DEFAULT_THRESHOLDS if DEFAULT_THRESHOLDS.exists() else SHIPPED_THRESHOLDS


#: A thresholds file is a few dozen checks; anything larger is the wrong file.
MAX_THRESHOLDS_BYTES = 1_000_000


class ThresholdsError(InputError):
    """The thresholds file is malformed (file, key, reason). CLI exit 2."""


class CheckRunFailed(RunFailed):
    """The runs of a check ran, but their outcome cannot be evaluated. CLI exit 1."""


class _Strict(BaseModel):
    # strict: TOML already gives typed values, so a string or a boolean where a number belongs is
    # a mistake to report, never a value to convert (as in scenarios).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Ratio(_Strict):
    """``metric(numerator) / metric(denominator)`` on the same scenario and seeds."""

    numerator: str = Field(min_length=1)
    denominator: str = Field(min_length=1)


class Check(_Strict):
    """One bound on one metric of one scenario."""

    name: str | None = None
    scenario: str = Field(min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: int = Field(default=1, ge=1, le=1000)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1000)
    metric: str = Field(min_length=1)
    policy: str | None = None
    ratio: Ratio | None = None
    aggregate: Literal["mean", "p50", "p95", "min", "max"] = "mean"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> Check:
        if (self.policy is None) == (self.ratio is None):
            raise ValueError("give exactly one of 'policy' or 'ratio'")
        if self.min is None and self.max is None:
            raise ValueError("give a bound: 'min', 'max' or both")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("bounds must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    @property
    def policies(self) -> list[str]:
        return [self.policy] if self.policy is not None else [self.ratio.numerator, self.ratio.denominator]

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        who = self.policy if self.policy is not None else f"{self.ratio.numerator}/{self.ratio.denominator}"
        return f"{self.scenario} {who} {self.metric}"

    @property
    def bound_text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in [{format_number(self.min)}, {format_number(self.max)}]"
        return f">= {format_number(self.min)}" if self.min is not None else f"<= {format_number(self.max)}"


class ThresholdsFile(_Strict):
    check: list[Check] = Field(min_length=1)


@dataclass(frozen=True)
class CheckResult:
    check: Check
    value: float | None
    passed: bool
    detail: str = ""


def load_thresholds(path: str | Path) -> ThresholdsFile:
    """Read and validate a thresholds file; errors name the file, the key and the reason."""
    path = Path(path)
    text = read_user_text(path, "thresholds file", MAX_THRESHOLDS_BYTES, ThresholdsError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ThresholdsError(f"{path}: invalid TOML: {err}") from None
    except RecursionError:
        raise ThresholdsError(f"{path}: invalid TOML: values are nested too deeply") from None
    try:
        return ThresholdsFile.model_validate(data)
    except RecursionError:
        raise ThresholdsError(f"{path}: values are nested too deeply") from None
    except ValidationError as err:
        lines = []
        for item in err.errors():
            key = ".".join(str(p) for p in item.get("loc", ())) or "(top level)"
            msg = item.get("msg", "invalid").removeprefix("Value error, ")
            if item.get("type") == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{path}: {key}: {msg}")
        raise ThresholdsError("\n".join(lines)) from None


def plan_checks(
    thresholds: ThresholdsFile, path: Path, plugins: Sequence[str] = ()
) -> tuple[list[RunSpec], dict[int, list[list[str]]]]:
    """Resolve every check into runs; return the unique specs and, per check, its run ids per policy.

    Raises :class:`ThresholdsError` (naming ``check.<i>``) for an unknown scenario, a bad override,
    an unknown policy or a metric that the scenario's runs do not report as a number, before
    anything runs.
    """
    specs: dict[str, RunSpec] = {}
    run_ids: dict[int, list[list[str]]] = {}
    for i, check in enumerate(thresholds.check):
        try:
            scenario = load_scenario(resolve_scenario_path(check.scenario, path.parent), check.overrides)
        except ScenarioError as err:
            raise ThresholdsError(f"{path}: check.{i} ({check.label}): scenario: {err}") from None
        for name in check.policies:
            if name not in POLICIES:
                raise ThresholdsError(
                    f"{path}: check.{i} ({check.label}): unknown policy '{name}'; "
                    f"registered: {', '.join(sorted(POLICIES))}"
                )
        known = summary_metric_names(scenario)
        if check.metric not in known:
            raise ThresholdsError(
                f"{path}: check.{i} ({check.label}): metric: unknown metric '{check.metric}'; "
                f"known: {', '.join(sorted(known))}"
            )
        if check.metric in TEXT_SUMMARY_KEYS:
            raise ThresholdsError(f"{path}: check.{i} ({check.label}): metric: '{check.metric}' is not numeric")
        seeds = seed_list(scenario.seed if check.seed is None else check.seed, check.seeds)
        dumped = scenario.model_dump(mode="json")
        scenario_key = json.dumps(dumped, sort_keys=True)
        per_policy = []
        for policy in check.policies:
            ids = []
            for seed in seeds:
                key = f"{scenario_key}|{policy}|{seed}"
                if key not in specs:
                    specs[key] = RunSpec(
                        f"c{len(specs):04d}", dumped, policy, seed, dict(check.overrides), tuple(plugins)
                    )
                ids.append(specs[key].run_id)
            per_policy.append(ids)
        run_ids[i] = per_policy
    return list(specs.values()), run_ids


def _aggregate(values: list[float], how: str) -> float:
    return STATISTICS[how](pd.Series(values, dtype=float))


def evaluate(
    thresholds: ThresholdsFile,
    run_ids: dict[int, list[list[str]]],
    outcomes: dict[str, RunOutcome],
    path: Path = DEFAULT_THRESHOLDS,
) -> list[CheckResult]:
    results = []
    for i, check in enumerate(thresholds.check):
        values = []
        problem = ""
        for ids in run_ids[i]:
            failed = [outcomes[r] for r in ids if outcomes[r].status != "ok"]
            if failed:
                problem = f"run failed: {failed[0].error}"
                break
            # plan_checks validated the metric name; a run without it is a bug, not bad input.
            missing = [r for r in ids if check.metric not in outcomes[r].summary]
            if missing:
                raise CheckRunFailed(
                    f"{path}: check.{i} ({check.label}): run {missing[0]} reported no metric '{check.metric}'"
                )
            try:
                values.append(_aggregate([float(outcomes[r].summary[check.metric]) for r in ids], check.aggregate))
            except (TypeError, ValueError):
                raise CheckRunFailed(
                    f"{path}: check.{i} ({check.label}): run {ids[0]} reported a non-numeric '{check.metric}'"
                ) from None
        if problem:
            results.append(CheckResult(check, None, False, problem))
            continue
        if check.ratio is None:
            value = values[0]
        elif values[1] == 0:
            value = math.inf if values[0] != 0 else 1.0
        else:
            value = values[0] / values[1]
        ok = (check.min is None or value >= check.min) and (check.max is None or value <= check.max)
        results.append(CheckResult(check, value, ok))
    return results


def run_checks(
    path: str | Path = DEFAULT_THRESHOLDS,
    *,
    executor: Executor | None = None,
    plugins: Sequence[str] = (),
) -> list[CheckResult]:
    """Validate ``path``, run every needed run once, and evaluate every check."""
    from .executors import make_executor

    path = Path(path)
    thresholds = load_thresholds(path)
    specs, run_ids = plan_checks(thresholds, path, plugins)
    own = executor is None
    ex = make_executor("serial") if own else executor
    try:
        outcomes = {o.run_id: o for o in ex.run(specs)}
    finally:
        if own:
            ex.close()
    return evaluate(thresholds, run_ids, outcomes, path)


def format_results(results: Sequence[CheckResult]) -> str:
    """A pass/fail table: check, value, bound, result (and why, for a failed run)."""
    header = ("check", "value", "bound", "result")
    rows = [
        (r.check.label, format_number(r.value), r.check.bound_text, "PASS" if r.passed else "FAIL") for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    for r in results:
        if not r.passed:
            why = r.detail or f"value {format_number(r.value)} is not {r.check.bound_text}"
            lines.append(f"FAIL {r.check.label} ({r.check.metric} {r.check.bound_text}): {why}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
