"""Many runs: grid expansion, seeds, run specs, execution, the results folder and resume.

A sweep is planned first (:func:`plan_sweep`): the factorial grid of dotted-key overrides x
policies x seeds becomes a list of numbered runs (``r0000``, ``r0001``, ... in grid, then policy,
then seed order), each with its fully resolved scenario. The plan is written as ``manifest.json``
into a folder named ``.partial-<name>-<random>`` before anything runs; every finished run is
appended to a journal there (``runs.jsonl``, plus its time series), so an interrupted sweep keeps
what it finished and :func:`resume_sweep` runs only what is missing. Only when every run has an
outcome are ``runs.csv`` and the figures written and the folder renamed to its final name.

``runs.csv`` is built from the journal in run-id order by one code path, whether or not the sweep
was interrupted, so a resumed sweep gives the same file as an uninterrupted one. Wall-clock time
is kept out of it (``timing.csv``), so re-running a manifest gives an identical ``runs.csv``.

This module knows nothing about the model's internals: it calls :func:`sim.simulate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .catalog import BUNDLED_DIR, resolve_scenario
from .comparison import compare_table
from .errors import InputError, RunFailed
from .files import read_user_text
from .policies import get_policy, load_plugin
from .results import (
    ResultsWriteError,
    atomic_directory,
    check_new_folder,
    commit_folder,
    describe_os_error,
    series_bytes,
    write_series_atomic,
)
from .scenario import Scenario, ScenarioError, parse_override, scenario_from_dict, with_overrides

if TYPE_CHECKING:
    from .executors import Executor

PARAM_PREFIX = "param:"
JOURNAL = "runs.jsonl"
STATE = ".sweep-state.json"
#: Columns of runs.csv before the grid parameters and the summary metrics.
FIXED_COLUMNS = ("run_id", "status", "error", "policy", "seed")

#: Planning caps, checked before anything is printed or run: a typo such as ``--seeds 100000`` or
#: a 2000 x 2000 grid fails at once with the number instead of running (or planning) for hours.
MAX_SEEDS = 1000
MAX_GRID_POINTS = 10_000
MAX_RUNS = 100_000
#: Largest seed a scenario takes (``Scenario.seed``).
MAX_SEED = 2**63 - 1
#: Manifests hold one entry per run (a few hundred bytes each at MAX_RUNS); journals one summary
#: line per run (a few KB). Larger files are not ours.
MAX_MANIFEST_BYTES = 256_000_000
MAX_JOURNAL_BYTES = 2_000_000_000
MAX_STATE_BYTES = 100_000


# Which scenario a name means is sim/catalog.py's question; re-exported for existing imports.
BUNDLED_SCENARIOS = BUNDLED_DIR
resolve_scenario_path = resolve_scenario


class SweepError(InputError):
    """A usage problem with a sweep (bad grid, manifest, folder): nothing was run. CLI exit 2."""


class SweepRunFailed(RunFailed):
    """Runs ran, then the sweep could not be finished (disk full or read-only, the final folder
    taken, a run without an outcome). The ``.partial-*`` folder keeps every journaled run and
    stays resumable; ``partial_dir`` names it. CLI exit 1."""

    def __init__(self, message: str, partial_dir: Path) -> None:
        super().__init__(message)
        self.partial_dir = partial_dir


class SweepInterrupted(Exception):
    """The sweep was interrupted (Ctrl-C); finished runs are kept in ``partial_dir``."""

    def __init__(self, partial_dir: Path, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} runs; finished runs are kept in {partial_dir}")
        self.partial_dir = partial_dir
        self.done = done
        self.total = total


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs for one run; plain data, so it pickles to any executor."""

    run_id: str
    scenario: dict[str, Any]  # fully resolved scenario incl. the grid point: Scenario.model_dump(mode="json")
    policy: str
    seed: int
    overrides: dict[str, Any]  # the grid point only, for the table
    plugins: tuple[str, ...] = ()  # module:function specs loaded in the worker before the run
    #: The sweep folder, when the worker can write into it: the worker writes its own time series
    #: there (``timeseries/<run_id>.parquet``, atomically) and sends back only the summary.
    series_dir: str | None = None
    #: Without ``series_dir``: send the time series back as parquet bytes (a remote worker).
    return_series: bool = False


@dataclass
class RunOutcome:
    """What came back from one run. ``summary`` is empty when the run failed.

    The series are None when the worker wrote them itself (``series_dir``), parquet bytes when
    asked to send them back (``return_series``), else the frames."""

    run_id: str
    status: str  # "ok" | "failed"
    error: str | None
    summary: dict[str, Any]
    timeseries: pd.DataFrame | bytes | None
    model_timeseries: pd.DataFrame | bytes | None
    wall_seconds: float


def execute_run(spec: RunSpec) -> RunOutcome:
    """Run one spec; a failing run (invalid scenario, exception) becomes a ``failed`` outcome.

    Module-level so that process and Dask executors can pickle it. ``KeyboardInterrupt`` is not
    caught: an interrupted run is not an outcome and is run again on resume.
    """
    from . import simulate

    started = time.perf_counter()
    try:
        for plugin in spec.plugins:
            load_plugin(plugin)
        scenario = scenario_from_dict(spec.scenario, source=f"run {spec.run_id}")
        result = simulate(scenario, policy=spec.policy, seed=spec.seed)
        summary = {k: _plain(v) for k, v in result.summary.items()}
        series = _series_of(spec, result.timeseries, result.model_timeseries)
        return RunOutcome(spec.run_id, "ok", None, summary, *series, time.perf_counter() - started)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - one failing run (or a policy's sys.exit) must not end the sweep
        message = " ".join(f"{type(err).__name__}: {err}".split())
        return RunOutcome(spec.run_id, "failed", message, {}, None, None, time.perf_counter() - started)


def _series_of(spec: RunSpec, ts: pd.DataFrame, mts: pd.DataFrame) -> tuple[Any, Any]:
    """Write the run's series into the sweep folder (``series_dir``), or encode them to send back
    (``return_series``), or else return the frames themselves (in-memory plans, tests).

    If the folder refuses the write (disk full), the series go back as bytes and the sweep's own
    write reports the error, so a disk problem stops the sweep resumably instead of failing a run.
    """
    if spec.series_dir is not None:
        folder = Path(spec.series_dir)
        try:
            for name, frame in (("timeseries", ts), ("model_timeseries", mts)):
                write_series_atomic(frame, folder / name / f"{spec.run_id}.parquet")
            return None, None
        except OSError:
            pass
    elif not spec.return_series:
        return ts, mts
    return series_bytes(ts), series_bytes(mts)


def _plain(value: Any) -> Any:
    """numpy scalars to Python values, so the journal is plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------
# Planning: grid x policies x seeds
# ---------------------------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """Split ``v1,v2`` on commas outside brackets and quotes (so ``[1,2],[3]`` is two values)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current: list[str] = []
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["a.b=1,2", "c=x,y"]`` -> ``{"a.b": [1, 2], "c": ["x", "y"]}`` (values read as TOML)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise SweepError(f"--grid '{item}': expected key=v1,v2,..., e.g. scheduler.initial_target=1,8,64")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key in grid:
            raise SweepError(f"--grid '{key}' is given twice; list all its values in one --grid")
        texts = split_values(raw)
        if any(not t for t in texts):
            raise SweepError(f"--grid '{item}': empty value (values are separated by commas)")
        values = []
        for t in texts:
            try:
                values.append(parse_override(f"{key}={t}", option="--grid")[1])
            except ScenarioError as err:
                raise SweepError(str(err)) from None
        grid[key] = values
    return grid


def seed_list(start: int, count: int) -> list[int]:
    """``--seeds N`` means seeds ``start .. start+N-1`` (start: ``--seed`` or the scenario's seed).

    Checked before anything runs: ``--seeds`` within 1..:data:`MAX_SEEDS`, seeds non-negative and
    within the scenario's seed range.
    """
    if count < 1:
        raise SweepError(f"--seeds must be >= 1, got {count}")
    if count > MAX_SEEDS:
        raise SweepError(f"--seeds {count}: at most {MAX_SEEDS} seeds per sweep")
    if start < 0:
        raise SweepError(f"--seed {start}: seeds must be >= 0")
    if start + count - 1 > MAX_SEED:
        raise SweepError(f"--seed {start} with --seeds {count}: seeds must be <= {MAX_SEED}")
    return list(range(start, start + count))


def _json_value(key: str, value: Any) -> Any:
    """A grid value as the plain JSON value the manifest stores, or :class:`SweepError`.

    The manifest must give back exactly the value that ran, with its type, so ``--from-manifest``
    reproduces the sweep. JSON has no dates or times (TOML has), and writing them as strings would
    turn a run that failed on a date into one that runs on a string: they are refused up front.
    Numpy scalars become the Python values they hold; tuples become lists.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(key, v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_value(key, v) for k, v in value.items()}
    raise SweepError(
        f"--grid {key}: {value} is a {type(value).__name__}, which a manifest cannot store with its type; "
        "grid values are numbers, strings, booleans, arrays or tables (quote a date to pass it as text)"
    )


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: its spec, or the reason its grid point is not a valid scenario."""

    run_id: str
    policy: str
    seed: int
    overrides: dict[str, Any]
    spec: RunSpec | None
    error: str | None = None


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a compare or sweep, fixed before anything runs."""

    kind: str
    scenario: Scenario
    scenario_source: str
    grid: dict[str, list[Any]]
    policies: list[str]
    seeds: list[int]
    runs: list[PlannedRun]
    plugins: tuple[str, ...] = ()
    command: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        from . import __version__

        return {
            "kind": self.kind,
            "package_version": __version__,
            "command": list(self.command),
            "scenario_source": self.scenario_source,
            "scenario": self.scenario.model_dump(mode="json"),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "policies": list(self.policies),
            "seeds": list(self.seeds),
            "plugins": list(self.plugins),
            "runs": [
                {"run_id": r.run_id, "policy": r.policy, "seed": r.seed, "overrides": dict(r.overrides)}
                for r in self.runs
            ],
        }

    def digest(self) -> str:
        """8 hex digits identifying what is run (not how it was typed), for the default folder name."""
        m = self.manifest()
        m.pop("command")
        return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:8]


def _run_ids(n: int) -> list[str]:
    width = max(4, len(str(max(n - 1, 0))))
    return [f"r{i:0{width}d}" for i in range(n)]


def _validate_grid(base: Scenario, grid: Mapping[str, Sequence[Any]]) -> None:
    """A key none of whose values gives a valid scenario is a usage error (unknown key, typo)."""
    for key, values in grid.items():
        if not values:
            raise SweepError(f"--grid {key}: no values")
        errors = []
        for value in values:
            try:
                with_overrides(base, {key: value})
            except ScenarioError as err:
                errors.append(str(err))
        if len(errors) == len(values):
            raise SweepError(f"--grid {key}: no value gives a valid scenario:\n{errors[0]}")


def plan_sweep(
    base: Scenario,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    policies: Sequence[str] = ("fixed", "global", "localized"),
    seeds: Sequence[int] | None = None,
    kind: str = "sweep",
    scenario_source: str = "",
    plugins: Sequence[str] = (),
    command: Sequence[str] = (),
) -> SweepPlan:
    """Expand grid x policies x seeds into numbered runs and validate every grid point.

    Rules: an unknown policy, or a grid key none of whose values is valid, raises
    :class:`SweepError` (nothing runs). A grid point that is invalid although each of its keys has
    valid values (one bad value, or a bad combination) becomes failed runs with the validation
    message, and the rest of the sweep goes on.
    """
    grid = {k: [_json_value(k, v) for v in values] for k, values in (grid or {}).items()}
    policies = list(policies)
    if not policies:
        raise SweepError("no policies given")
    if len(set(policies)) != len(policies):
        raise SweepError(f"policies listed twice: {policies}")
    for name in policies:
        get_policy(name)
    seeds = [base.seed] if seeds is None else [_seed(s) for s in seeds]
    if not seeds:
        raise SweepError("no seeds given")
    if len(seeds) > MAX_SEEDS:
        raise SweepError(f"{len(seeds)} seeds: at most {MAX_SEEDS} seeds per sweep")
    _check_size(grid, len(policies), len(seeds))
    _validate_grid(base, grid)
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    resolved: list[tuple[dict[str, Any] | None, str | None]] = []
    for point in points:
        try:
            resolved.append((with_overrides(base, point).model_dump(mode="json") if point else _dump(base), None))
        except ScenarioError as err:
            resolved.append((None, " ".join(f"ScenarioError: {err}".split())))
    ids = iter(_run_ids(len(points) * len(policies) * len(seeds)))
    runs = []
    for point, (scenario, error) in zip(points, resolved, strict=True):
        for policy in policies:
            for seed in seeds:
                run_id = next(ids)
                spec = None if scenario is None else RunSpec(run_id, scenario, policy, seed, point, tuple(plugins))
                runs.append(PlannedRun(run_id, policy, seed, point, spec, error))
    return SweepPlan(kind, base, scenario_source, grid, policies, seeds, runs, tuple(plugins), list(command))


def _seed(value: Any) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepError(f"seed {value!r}: seeds are integers")
    if not 0 <= value <= MAX_SEED:
        raise SweepError(f"seed {value}: seeds must be in 0..{MAX_SEED}")
    return value


def _check_size(grid: Mapping[str, Sequence[Any]], n_policies: int, n_seeds: int) -> None:
    """Refuse a plan too large to be meant, from the sizes alone (nothing is expanded yet)."""
    points = math.prod(len(values) for values in grid.values())
    if points > MAX_GRID_POINTS:
        sizes = " x ".join(str(len(values)) for values in grid.values())
        raise SweepError(f"--grid: {points:,} grid points ({sizes}); at most {MAX_GRID_POINTS:,} per sweep")
    runs = points * n_policies * n_seeds
    if runs > MAX_RUNS:
        raise SweepError(
            f"{runs:,} runs ({points:,} grid points x {n_policies} policies x {n_seeds} seeds); "
            f"at most {MAX_RUNS:,} per sweep"
        )


def _dump(scenario: Scenario) -> dict[str, Any]:
    return scenario.model_dump(mode="json")


class _ManifestRun(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    run_id: str = Field(min_length=1, max_length=64)
    policy: str = Field(min_length=1)
    seed: int = Field(ge=0, le=MAX_SEED)
    overrides: dict[str, Any]


class _Manifest(BaseModel):
    """The part of ``manifest.json`` a plan is rebuilt from, typed as strictly as a scenario."""

    model_config = ConfigDict(strict=True, extra="ignore")

    kind: str = Field(min_length=1)
    scenario: dict[str, Any]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    policies: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1, max_length=MAX_SEEDS)
    plugins: list[str] = Field(default_factory=list)
    scenario_source: str = ""
    runs: list[_ManifestRun] = Field(max_length=MAX_RUNS)


def _validate_manifest(data: Any, source: str) -> _Manifest:
    try:
        manifest = _Manifest.model_validate(data)
    except RecursionError:
        raise SweepError(f"{source}: malformed manifest: values are nested too deeply") from None
    except ValidationError as err:
        item = err.errors()[0]
        key = ".".join(str(p) for p in item.get("loc", ())) or "(top level)"
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        raise SweepError(f"{source}: malformed manifest: {key}: {item.get('msg', 'invalid')}{more}") from None
    seen: set[str] = set()
    for i, run in enumerate(manifest.runs):
        if run.run_id in seen:
            raise SweepError(f"{source}: malformed manifest: runs.{i}.run_id: '{run.run_id}' is listed twice")
        seen.add(run.run_id)
    return manifest


def plan_from_manifest(
    manifest: Mapping[str, Any] | str | Path,
    *,
    plugins: Sequence[str] = (),
    command: Sequence[str] = (),
) -> SweepPlan:
    """Rebuild the exact plan of a manifest (same runs, ids, overrides, seeds).

    Plugins listed in the manifest are *not* imported from it: pass them again (``--plugin``);
    a missing one is an error that says which.
    """
    source = "manifest"
    if not isinstance(manifest, Mapping):
        path = Path(manifest)
        if path.is_dir():
            path = path / "manifest.json"
        source = str(path)
        text = read_user_text(path, "manifest", MAX_MANIFEST_BYTES, SweepError)
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as err:
            raise SweepError(f"{path}: malformed manifest: not JSON ({err})") from None
        except RecursionError:
            raise SweepError(f"{path}: malformed manifest: values are nested too deeply") from None
    checked = _validate_manifest(manifest, source)
    missing = [p for p in checked.plugins if p not in plugins]
    if missing:
        raise SweepError(
            f"{source}: the runs used plugins {missing}; pass them again with --plugin "
            "(plugins are never imported from files)"
        )
    try:
        base = scenario_from_dict(checked.scenario, source=f"{source}: scenario")
    except ScenarioError as err:
        raise SweepError(str(err)) from None
    grid = {k: list(v) for k, v in checked.grid.items()}
    policies = list(checked.policies)
    seeds = list(checked.seeds)
    kind = checked.kind
    scenario_source = checked.scenario_source
    for name in policies:
        get_policy(name)
    runs = []
    cache: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for item in checked.runs:
        overrides = dict(item.overrides)
        key = json.dumps(overrides, sort_keys=True)
        if key not in cache:
            try:
                cache[key] = (
                    with_overrides(base, overrides).model_dump(mode="json") if overrides else _dump(base),
                    None,
                )
            except ScenarioError as err:
                cache[key] = (None, " ".join(f"ScenarioError: {err}".split()))
        scenario, error = cache[key]
        run_id, policy, seed = item.run_id, item.policy, item.seed
        spec = None if scenario is None else RunSpec(run_id, scenario, policy, seed, overrides, tuple(plugins))
        runs.append(PlannedRun(run_id, policy, seed, overrides, spec, error))
    return SweepPlan(kind, base, scenario_source, grid, policies, seeds, runs, tuple(plugins), list(command))


# ---------------------------------------------------------------------------------------------
# Running a plan into a results folder
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """Where the results went and what they say."""

    out: Path
    runs: pd.DataFrame
    failed: int
    figures: list[Path] = field(default_factory=list)
    figures_note: str | None = None


def default_out(plan: SweepPlan, root: str | Path = "results") -> Path:
    """``results/<scenario>/<kind>-<YYYYmmdd-HHMMSS.ffffff UTC>-<8 hex of the plan>-<6 random hex>``.

    Two identical sweeps started in the same second (or microsecond) get different names: the
    random part differs. Should names ever meet anyway, the folder is created exclusively and the
    final rename never replaces anything (:func:`sim.results.atomic_directory`).
    """
    now = time.time_ns()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now // 1_000_000_000))
    micro = (now // 1000) % 1_000_000
    return Path(root) / plan.scenario.name / f"{plan.kind}-{stamp}.{micro:06d}-{plan.digest()}-{secrets.token_hex(3)}"


def run_plan(plan: SweepPlan, *, executor: Executor | None = None) -> pd.DataFrame:
    """Run a plan in memory (no folder, no resume, no time series kept): the ``runs.csv`` table."""
    from .executors import make_executor

    records: dict[str, dict[str, Any]] = {}
    for run in plan.runs:
        if run.spec is None:
            records[run.run_id] = {"status": "failed", "error": run.error, "summary": {}}
    ex = make_executor("serial") if executor is None else executor
    try:
        for outcome in ex.run([run.spec for run in plan.runs if run.spec is not None]):
            records[outcome.run_id] = {"status": outcome.status, "error": outcome.error, "summary": outcome.summary}
    finally:
        if executor is None:
            ex.close()
    return runs_frame(plan, records)


def compare(
    scenario: Scenario,
    policies: Sequence[str] = ("fixed", "global", "localized"),
    seeds: Sequence[int] | None = None,
    *,
    baseline: str | None = None,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """The ``admission-sim compare`` table from Python: metrics x policies (mean over seeds) with
    ``<policy>/<baseline>`` ratios. The baseline is ``fixed`` when listed, else the first policy."""
    plan = plan_sweep(scenario, policies=policies, seeds=seeds, kind="compare")
    runs = run_plan(plan, executor=executor)
    policies = list(policies)
    return compare_table(runs, policies, baseline or ("fixed" if "fixed" in policies else policies[0]))


def run_sweep(
    plan: SweepPlan,
    out: str | Path | None = None,
    *,
    executor: Executor | None = None,
    progress: bool | None = None,
    figures: bool = True,
) -> SweepReport:
    """Run every run of ``plan`` into a new results folder (``out``, default :func:`default_out`).

    The folder is built as ``.partial-<name>-<random>`` next to ``out``; on Ctrl-C this raises
    :class:`SweepInterrupted` naming it, and :func:`resume_sweep` finishes it.
    """
    final = Path(out) if out is not None else default_out(plan)
    if os.path.lexists(final):
        raise SweepError(f"{final} already exists; remove it or choose another --out")
    tmp, _commit = atomic_directory(final)
    try:
        _write_json(tmp / "manifest.json", plan.manifest())
        _write_json(tmp / STATE, {"final": str(final.resolve())})
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)  # made above; nothing has run yet
        raise ResultsWriteError(f"{final}: cannot write the sweep folder: {describe_os_error(err)}") from None
    return _run_into(plan, tmp, final, executor=executor, progress=progress, figures=figures)


def resume_sweep(
    partial_dir: str | Path,
    *,
    out: str | Path | None = None,
    executor: Executor | None = None,
    plugins: Sequence[str] = (),
    progress: bool | None = None,
    figures: bool = True,
) -> SweepReport:
    """Finish an interrupted sweep: run only the runs without an outcome, then finalize."""
    tmp = Path(partial_dir)
    if not (tmp / "manifest.json").is_file() or not (tmp / STATE).is_file():
        raise SweepError(f"{tmp}: not an unfinished sweep folder (expected manifest.json and {STATE})")
    plan = plan_from_manifest(tmp / "manifest.json", plugins=plugins)
    if out is not None:
        final = Path(out)
    else:
        text = read_user_text(tmp / STATE, "sweep state file", MAX_STATE_BYTES, SweepError)
        try:
            state = json.loads(text)
            final = Path(state["final"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise SweepError(
                f"{tmp / STATE}: unreadable ({type(err).__name__}: {err}); pass --out to choose the final folder"
            ) from None
    if os.path.lexists(final):
        raise SweepError(f"{final} already exists; remove it or pass --out to choose another folder")
    check_new_folder(final)
    return _run_into(plan, tmp, final, executor=executor, progress=progress, figures=figures)


def _run_into(
    plan: SweepPlan,
    tmp: Path,
    final: Path,
    *,
    executor: Executor | None,
    progress: bool | None,
    figures: bool,
) -> SweepReport:
    from tqdm import tqdm

    from .executors import make_executor

    done = _read_journal(tmp / JOURNAL, repair=True)
    try:
        (tmp / "timeseries").mkdir(exist_ok=True)
        (tmp / "model_timeseries").mkdir(exist_ok=True)
    except OSError as err:
        raise _unfinished(tmp, len(done), "cannot write the sweep folder", err) from None
    total = len(plan.runs)
    failed = sum(1 for rec in done.values() if rec["status"] != "ok")
    bar = tqdm(
        total=total,
        initial=len(done),
        desc=plan.kind,
        unit="run",
        file=sys.stderr,
        disable=(not progress) if progress is not None else None,
        dynamic_ncols=True,
    )
    bar.set_postfix(failed=failed)

    def record(outcome: RunOutcome) -> None:
        nonlocal failed
        try:
            _record(tmp, outcome)
        except OSError as err:
            raise _unfinished(tmp, len(done), f"cannot record run {outcome.run_id}", err) from None
        done[outcome.run_id] = {"status": outcome.status}
        failed += outcome.status != "ok"
        bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)

    own = executor is None
    ex = make_executor("serial") if executor is None else executor
    try:
        for run in plan.runs:
            if run.run_id not in done and run.spec is None:
                record(RunOutcome(run.run_id, "failed", run.error, {}, None, None, 0.0))
        # Workers that see this folder write their own series; others send them back as bytes.
        where = {"series_dir": str(tmp.resolve())} if getattr(ex, "writes_local_files", False) else {}
        pending = [
            dataclasses.replace(run.spec, **(where or {"return_series": True}))
            for run in plan.runs
            if run.run_id not in done and run.spec is not None
        ]
        if pending:
            for outcome in ex.run(pending):
                record(outcome)
    except KeyboardInterrupt:
        bar.close()
        raise SweepInterrupted(tmp, len(done), total) from None
    finally:
        if own:
            ex.close()
        bar.close()
    if os.path.lexists(final):
        raise SweepRunFailed(
            f"{final} appeared while the sweep ran; every run is kept in {tmp}: "
            f"finish with: admission-sim sweep --resume {tmp} --out OTHER",
            tmp,
        )
    try:
        runs = _finalize_tables(plan, tmp)
        figs: list[Path] = []
        note = None
        if figures:
            figs, note = _plot(tmp)
    except KeyboardInterrupt:
        # Every run is kept (journal intact): --resume only redoes this finalization.
        raise SweepInterrupted(tmp, total, total) from None
    except OSError as err:
        raise _unfinished(tmp, total, "cannot write runs.csv", err) from None
    # The journal and state stay until the folder is under its final name, so a rename that
    # fails (the name taken meanwhile, a disk error) leaves a folder that --resume finishes.
    try:
        commit_folder(tmp, final)
    except ResultsWriteError as err:
        raise SweepRunFailed(
            f"{err}; every run is kept there: finish with: admission-sim sweep --resume {tmp} --out OTHER", tmp
        ) from None
    for name in (JOURNAL, STATE):
        with contextlib.suppress(OSError):  # the folder is complete either way
            (final / name).unlink()
    figs = [final / p.relative_to(tmp) for p in figs]
    return SweepReport(final, runs, int((runs["status"] != "ok").sum()), figs, note)


def _unfinished(tmp: Path, done: int, doing: str, err: OSError) -> SweepRunFailed:
    return SweepRunFailed(
        f"{tmp}: {doing}: {describe_os_error(err)}; the {done} runs journaled so far are kept: "
        f"fix the disk and resume with: admission-sim sweep --resume {tmp}",
        tmp,
    )


def _record(tmp: Path, outcome: RunOutcome) -> None:
    """Write the run's series if the worker sent them back, then its journal line (the line marks
    the run as finished).

    Each series is written under a temporary name and renamed, so a full disk never leaves a
    truncated series under a run's name; the journal line is flushed and fsynced.
    """
    for folder, data in (("timeseries", outcome.timeseries), ("model_timeseries", outcome.model_timeseries)):
        if data is not None:  # None: not produced, or written by the worker itself
            write_series_atomic(data, tmp / folder / f"{outcome.run_id}.parquet")
    line = {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "error": outcome.error,
        "summary": {k: _plain(v) for k, v in outcome.summary.items()},
        "wall_seconds": outcome.wall_seconds,
    }
    data = (json.dumps(line, allow_nan=True) + "\n").encode("utf-8")
    with open(tmp / JOURNAL, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_journal(path: Path, *, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Finished runs by id (the last line of a run id wins).

    A line is a finished run only if it is a complete JSON record; anything else (a torn last line
    from a kill or a full disk, a damaged line) is not, and that run is simply run again. With
    ``repair``, a torn last line (no final newline) is cut off before anything is appended, so the
    next line does not fuse with the fragment.
    """
    records: dict[str, dict[str, Any]] = {}
    if not os.path.lexists(path):
        return records
    text = read_user_text(path, "sweep journal", MAX_JOURNAL_BYTES, SweepError)
    if repair and text and not text.endswith("\n"):
        keep = len(text[: text.rfind("\n") + 1].encode("utf-8"))
        try:
            os.truncate(path, keep)
        except OSError as err:
            raise SweepRunFailed(
                f"{path}: cannot repair the torn last line: {describe_os_error(err)}", path.parent
            ) from None
    # Split on "\n" only (the journal's own separator); the last piece is "" or a torn fragment.
    for line in text.split("\n")[:-1]:
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if (
            isinstance(rec, dict)
            and isinstance(rec.get("run_id"), str)
            and rec.get("status") in ("ok", "failed")
            and isinstance(rec.get("summary", {}), dict)
        ):
            records[rec["run_id"]] = rec
    return records


def _finalize_tables(plan: SweepPlan, tmp: Path) -> pd.DataFrame:
    records = _read_journal(tmp / JOURNAL)
    missing = [r.run_id for r in plan.runs if r.run_id not in records]
    if missing:
        raise SweepRunFailed(
            f"{tmp}: runs without an outcome after running: {missing[:5]}; "
            f"resume with: admission-sim sweep --resume {tmp}",
            tmp,
        )
    runs = runs_frame(plan, records)
    runs.to_csv(tmp / "runs.csv", index=False)
    pd.DataFrame(
        [{"run_id": r.run_id, "wall_seconds": records[r.run_id].get("wall_seconds", 0.0)} for r in plan.runs]
    ).to_csv(tmp / "timing.csv", index=False)
    return runs


#: runs.csv of MAX_RUNS runs with every metric is a few hundred MB.
MAX_RUNS_CSV_BYTES = 2_000_000_000


class ResultsFolderError(InputError):
    """A folder given as results (``plot``) has no usable ``runs.csv``: empty, not CSV, or not
    written by a compare or sweep. CLI exit 2."""


def read_runs_table(folder: str | Path) -> pd.DataFrame:
    """``<folder>/runs.csv`` as written by a compare or sweep, or :class:`ResultsFolderError`.

    The one loader for code that reads a results folder back (figures), so a foreign or empty
    file is one line naming the file and the reason, not a pandas traceback from deep inside.
    """
    import io

    path = Path(folder) / "runs.csv"
    text = read_user_text(path, "runs table (runs.csv)", MAX_RUNS_CSV_BYTES, ResultsFolderError)
    if not text.strip():
        raise ResultsFolderError(f"{path}: empty; not a runs table written by compare or sweep")
    try:
        runs = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        reason = " ".join(str(err).split())
        raise ResultsFolderError(f"{path}: not a CSV runs table: {reason}") from None
    missing = [c for c in FIXED_COLUMNS if c not in runs.columns]
    if missing:
        raise ResultsFolderError(
            f"{path}: not a runs table written by compare or sweep: no column {', '.join(missing)}"
        )
    if runs.empty:
        raise ResultsFolderError(f"{path}: the runs table has no runs")
    bad = sorted(set(runs["status"].astype(str)) - {"ok", "failed"})
    if bad:
        raise ResultsFolderError(f"{path}: column status: unexpected value {bad[0]!r} (expected ok or failed)")
    if runs["run_id"].duplicated().any():
        raise ResultsFolderError(
            f"{path}: column run_id: {runs['run_id'][runs['run_id'].duplicated()].iloc[0]!r} twice"
        )
    return runs


def runs_frame(plan: SweepPlan, records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run in run-id order: fixed columns, ``param:<key>`` per grid key, then metrics.

    Summary keys ``policy`` and ``seed`` are the fixed columns already; every other summary key
    keeps its name. Metric columns appear in the order first seen along the run ids.
    """
    metric_names: dict[str, None] = {}
    for run in plan.runs:
        for key in records[run.run_id].get("summary", {}):
            if key not in FIXED_COLUMNS:
                metric_names.setdefault(key, None)
    rows = []
    for run in plan.runs:
        rec = records[run.run_id]
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "status": rec["status"],
            "error": rec.get("error") or "",
            "policy": run.policy,
            "seed": run.seed,
        }
        for key in plan.grid:
            row[PARAM_PREFIX + key] = _cell(run.overrides.get(key))
        summary = rec.get("summary", {})
        for key in metric_names:
            row[key] = summary.get(key)
        rows.append(row)
    columns = list(FIXED_COLUMNS) + [PARAM_PREFIX + k for k in plan.grid] + list(metric_names)
    return pd.DataFrame(rows, columns=columns)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _plot(folder: Path) -> tuple[list[Path], str | None]:
    """Figures via sim.plots.plot_results_dir, if that module exists; never fails the sweep."""
    try:
        from .plots import plot_results_dir
    except ImportError as err:
        return [], f"figures skipped: sim.plots.plot_results_dir is not available ({err})"
    try:
        return list(plot_results_dir(folder)), None
    except Exception as err:  # noqa: BLE001 - a plotting bug must not lose a finished sweep
        return [], f"figures skipped: plot_results_dir failed: {type(err).__name__}: {err}"


def _write_json(path: Path, data: Any) -> None:
    """Plain JSON only (no ``default=str``): a value that is not JSON is refused when planning."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
