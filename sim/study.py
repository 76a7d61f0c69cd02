"""When do the policies differ? Heat maps of localized against global (docs/when-policies-differ.md).

One small base workload (:data:`BASE_TOML`: a seed, a ``cooling`` column whose model answers 429
inside a time window, and four healthy columns, some of which depend on ``cooling``), run with
the calibrated event-loop model. A study :class:`Point` names what is varied (when the window
starts, how long it lasts, the share of healthy columns that depend on ``cooling``, the
``llm_wait`` budget and the loop's CPU cost scale) and turns it into dotted-key overrides of the
base, the same ``--set`` keys ``validate`` takes. A :class:`StudyMap` is a two-axis grid of
points; every point runs with ``global`` and ``localized`` on the same seeds (through the sweep
executors, so ``--jobs`` and Dask work as for sweeps). Per cell the study keeps two ratios,
localized over global: healthy calls answered inside the 429 window, and end-to-end rows/s.

``python -m sim.study`` runs every map into a new results folder (atomic, as sim/results.py
writes folders) and draws one heat map per map; ``python -m sim.study twin`` runs ``validate``
on the checked points. Same seeds, same numbers: every run is deterministic.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import InputError
from .scenario import Scenario, scenario_from_dict, with_overrides

if TYPE_CHECKING:
    from .executors import Executor
    from .sweep import RunOutcome

#: The base workload. Healthy calls take 0.5 s on average, so the real twin's loop is far from
#: CPU-bound (about 40 calls in flight, a few ms of CPU each per call), and a run lasts seconds.
BASE_TOML = '''\
name = "when-policies-differ"
description = """Study base (docs/when-policies-differ.md): 128 one-row groups; seed -> a `cooling` column whose \
model answers 429 to calls sent inside a window, and four healthy columns on four other models, the first of \
which depends on `cooling`. Adaptive admission from target 1, hard cap 64; AIMD request admission on; the \
calibrated event-loop model."""
seed = 0

[row_groups]
count = 128
size = 1

[scheduler]
policy = "localized"
max_concurrent_row_groups = 64
initial_target = 1
max_in_flight_tasks = 1024
max_model_task_admission = 1024
salvage_max_rounds = 2
resalvage_backoff = 0.05

[scheduler.loop]
model = "calibrated"
profile = "reference-2core"
scale = 1.0

[request_admission]
enabled = true
cooldown_seconds = 1.0

[stop]
max_time = 600.0

[[models]]
name = "cooling"
max_parallel_requests = 8
latency = { distribution = "exponential", mean = 0.5 }
rate_limit = { pattern = "window", start = 0.0, end = 4.0, retry_after = 1.0, latency = 0.02 }

[[models]]
name = "healthy-a"
max_parallel_requests = 8
latency = { distribution = "exponential", mean = 0.5 }

[[models]]
name = "healthy-b"
max_parallel_requests = 8
latency = { distribution = "exponential", mean = 0.5 }

[[models]]
name = "healthy-c"
max_parallel_requests = 8
latency = { distribution = "exponential", mean = 0.5 }

[[models]]
name = "healthy-d"
max_parallel_requests = 8
latency = { distribution = "exponential", mean = 0.5 }

[[columns]]
name = "seed"
strategy = "full_column"
duration = 0.0

[[columns]]
name = "cooling"
depends_on = ["seed"]
model = "cooling"

[[columns]]
name = "h1"
depends_on = ["cooling"]
model = "healthy-a"

[[columns]]
name = "h2"
depends_on = ["seed"]
model = "healthy-b"

[[columns]]
name = "h3"
depends_on = ["seed"]
model = "healthy-c"

[[columns]]
name = "h4"
depends_on = ["seed"]
model = "healthy-d"
'''
#: The healthy columns, in the order they are made dependent on ``cooling``.
HEALTHY_COLUMNS = ("h1", "h2", "h3", "h4")
POLICIES = ("global", "localized")
#: A cell is a region of one policy when its ratio is beyond 1 +- this (10 %).
THRESHOLD = 0.10
#: Ratios are drawn on a log2 scale clipped to +-this (1/4x .. 4x).
LOG2_CLIP = 2.0
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
METRICS = {
    "window": ("healthy_calls_in_window", "healthy calls inside the 429 window"),
    "throughput": ("rows_per_second", "end-to-end rows/s"),
}


class StudyError(InputError):
    """Bad study input (a point value, a map name, the output folder): nothing ran. Exit 2."""


def base_scenario() -> Scenario:
    return scenario_from_dict(tomllib.loads(BASE_TOML), source="sim.study BASE_TOML")


@dataclass(frozen=True)
class Point:
    """One study setting; every field is an axis of some map. Defaults are the base's values."""

    window_start: float = 0.0  # s: calls sent from then on get 429 (the ramp is ~0.2 s at scale 1)
    window_length: float = 4.0  # s
    dependent_share: float = 0.25  # of the 4 healthy columns, the share that depends on `cooling`
    llm_wait: int = 1024  # scheduler.max_model_task_admission
    loop_scale: float = 1.0  # scheduler.loop.scale

    def __post_init__(self) -> None:
        k = self.dependent_share * len(HEALTHY_COLUMNS)
        if not (0 <= k <= len(HEALTHY_COLUMNS) and abs(k - round(k)) < 1e-9):
            raise StudyError(f"dependent_share: {self.dependent_share} is not a multiple of 1/{len(HEALTHY_COLUMNS)}")
        if self.window_start < 0 or self.window_length <= 0 or self.llm_wait < 1 or self.loop_scale <= 0:
            raise StudyError(f"{self}: window_start >= 0, window_length > 0, llm_wait >= 1, loop_scale > 0")

    def overrides(self) -> dict[str, Any]:
        """The point as ``--set`` keys of the base (what ``validate --set`` takes too)."""
        dependent = round(self.dependent_share * len(HEALTHY_COLUMNS))
        out: dict[str, Any] = {
            "models.cooling.rate_limit.start": self.window_start,
            "models.cooling.rate_limit.end": round(self.window_start + self.window_length, 9),
            "scheduler.max_model_task_admission": self.llm_wait,
            "scheduler.loop.scale": self.loop_scale,
        }
        for i, name in enumerate(HEALTHY_COLUMNS):
            out[f"columns.{name}.depends_on"] = ["cooling" if i < dependent else "seed"]
        return out

    def scenario(self, base: Scenario | None = None) -> Scenario:
        return with_overrides(base if base is not None else base_scenario(), self.overrides())

    def set_options(self) -> list[str]:
        """``--set k=v`` arguments for the command line (TOML values)."""
        return [f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in self.overrides().items()]


AXES = {f.name for f in Point.__dataclass_fields__.values()}


@dataclass(frozen=True)
class StudyMap:
    """A two-axis grid of points around ``fixed`` (the other fields)."""

    name: str
    title: str
    x: str
    x_values: tuple[float, ...]
    y: str
    y_values: tuple[float, ...]
    fixed: Point = field(default_factory=Point)

    def points(self) -> Iterator[tuple[float, float, Point]]:
        for yv in self.y_values:
            for xv in self.x_values:
                yield xv, yv, replace(self.fixed, **{self.x: xv, self.y: yv})


#: Axis labels for the figures.
AXIS_LABELS = {
    "window_start": "first 429 at (s)",
    "window_length": "429 window length (s)",
    "dependent_share": "share of healthy columns depending on `cooling`",
    "llm_wait": "llm_wait budget (max_model_task_admission)",
    "loop_scale": "loop CPU cost scale",
}
STARTS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
MAPS = (
    StudyMap(
        "ramp",
        "first 429 against the ramp (CPU cost scale)",
        "window_start",
        STARTS,
        "loop_scale",
        (0.5, 1.0, 2.0, 4.0, 8.0),
    ),
    StudyMap(
        "window",
        "first 429 and window length",
        "window_start",
        STARTS,
        "window_length",
        (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    ),
    StudyMap(
        "structure",
        "dependent work and llm_wait budget",
        "dependent_share",
        (0.0, 0.25, 0.5, 0.75, 1.0),
        "llm_wait",
        (2, 4, 8, 16, 64, 1024),
    ),
)
MAP_NAMES = {m.name: m for m in MAPS}


# ---------------------------------------------------------------------------------------------
# Running the maps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of the study plan: which map cell, which policy and seed."""

    map: str
    x: float
    y: float
    policy: str
    seed: int
    run_id: str


def _point_key(point: Point, policy: str, seed: int, extra: tuple[tuple[str, Any], ...] = ()) -> str:
    return json.dumps([asdict(point), policy, seed, list(extra)], sort_keys=True)


def plan_study(
    maps: Sequence[StudyMap] = MAPS, seeds: Sequence[int] = DEFAULT_SEEDS, base: Scenario | None = None
) -> tuple[list[Cell], list[Any], dict[str, Point]]:
    """Cells (map, x, y, policy, seed -> run id) and one run spec per distinct point x policy x seed
    (a point shared by two maps runs once). Run ids ``s0000``, ``s0001``, ... in map, y, x, policy,
    seed order: the same study always has the same ids."""
    from .sweep import RunSpec

    base = base if base is not None else base_scenario()
    cells: list[Cell] = []
    specs: list[RunSpec] = []
    points: dict[str, Point] = {}
    ids: dict[str, str] = {}
    for smap in maps:
        for xv, yv, point in smap.points():
            scenario = point.scenario(base).model_dump(mode="json")
            for policy in POLICIES:
                for seed in seeds:
                    key = _point_key(point, policy, seed)
                    if key not in ids:
                        ids[key] = run_id = f"s{len(ids):04d}"
                        points[run_id] = point
                        specs.append(RunSpec(run_id, scenario, policy, int(seed), point.overrides()))
                    cells.append(Cell(smap.name, xv, yv, policy, int(seed), ids[key]))
    return cells, specs, points


def ramp_specs(scales: Iterable[float], base: Scenario | None = None) -> list[Any]:
    """One localized run per loop scale without any 429: how long the target takes to reach the
    hard cap, the ramp the first 429 is compared with."""
    from .sweep import RunSpec

    base = base if base is not None else base_scenario()
    specs = []
    for i, scale in enumerate(scales):
        overrides = {"models.cooling.rate_limit.pattern": "never", "scheduler.loop.scale": scale}
        scenario = with_overrides(base, overrides).model_dump(mode="json")
        specs.append(RunSpec(f"ramp{i}", scenario, "localized", base.seed, overrides))
    return specs


def _healthy_in_window(scenario: Scenario, outcome: RunOutcome) -> float:
    from .validate import healthy_calls_in_window

    # The validate metric reads only the scenario and the per-model series of a result.
    return healthy_calls_in_window(SimpleNamespace(scenario=scenario, model_timeseries=outcome.model_timeseries))


def _ramp_end(outcome: RunOutcome) -> tuple[float, int]:
    """When the target stopped growing (it reached the hard cap, or every group was admitted
    first) and the target it reached."""
    ts = outcome.timeseries
    if ts is None or ts.empty:
        return math.nan, 0
    top = int(ts["target"].max())
    return float(ts.loc[ts["target"] >= top, "time"].iloc[0]), top


RUN_METRICS = (
    "sim_time",
    "completed_rows",
    "rows_per_second",
    "healthy_calls",
    "healthy_calls_while_limited",
    "observed_max_target",
    "max_row_groups_in_flight",
    "blocked_deferred_tasks",
    "rate_limited_calls",
)


@dataclass
class StudyResult:
    runs: pd.DataFrame  # one row per distinct run
    cells: pd.DataFrame  # one row per map cell: means per policy, ratios, regions
    ramp: pd.DataFrame  # loop_scale, ramp_seconds, ramp_target: the 429-free ramp per loop scale
    failed: list[str]
    folder: Path | None = None
    figures: list[Path] = field(default_factory=list)


def run_study(
    maps: Sequence[StudyMap] = MAPS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    executor: Executor | None = None,
    threshold: float = THRESHOLD,
) -> StudyResult:
    """Run every cell of ``maps`` with both policies on ``seeds``; nothing is written."""
    from .executors import make_executor

    base = base_scenario()
    cells, specs, points = plan_study(maps, seeds, base)
    scales = sorted({p.loop_scale for p in points.values()})
    ramps = ramp_specs(scales, base)
    ex = make_executor("serial") if executor is None else executor
    rows: dict[str, dict[str, Any]] = {}
    ramp_rows = []
    failed = []
    try:
        by_id = {s.run_id: s for s in specs}
        for outcome in ex.run([*specs, *ramps]):
            if outcome.status != "ok":
                failed.append(f"{outcome.run_id}: {outcome.error}")
                continue
            if outcome.run_id.startswith("ramp"):
                scale = scales[int(outcome.run_id[4:])]
                seconds, top = _ramp_end(outcome)
                ramp_rows.append({"loop_scale": scale, "ramp_seconds": seconds, "ramp_target": top})
                continue
            spec = by_id[outcome.run_id]
            point = points[outcome.run_id]
            row: dict[str, Any] = {"run_id": outcome.run_id, "policy": spec.policy, "seed": spec.seed, **asdict(point)}
            row.update({k: outcome.summary.get(k) for k in RUN_METRICS})
            row["healthy_calls_in_window"] = _healthy_in_window(point.scenario(base), outcome)
            rows[outcome.run_id] = row
    finally:
        if executor is None:
            ex.close()
    runs = pd.DataFrame([rows[s.run_id] for s in specs if s.run_id in rows])
    ramp = pd.DataFrame(ramp_rows, columns=["loop_scale", "ramp_seconds", "ramp_target"]).sort_values(
        "loop_scale", ignore_index=True
    )
    return StudyResult(runs, cell_table(cells, runs, threshold), ramp, failed)


def ratio(localized: float, global_: float) -> float:
    """localized / global of two means; 1 when both are 0, inf when only global is 0."""
    if math.isnan(localized) or math.isnan(global_):
        return math.nan
    if global_ == 0:
        return 1.0 if localized == 0 else math.inf
    return localized / global_


def region(r: float, threshold: float = THRESHOLD) -> str:
    """``localized`` (ratio > 1 + threshold), ``global`` (< 1 - threshold), else ``tie``."""
    if math.isnan(r):
        return "n/a"
    return "localized" if r > 1 + threshold else "global" if r < 1 - threshold else "tie"


def cell_table(cells: Sequence[Cell], runs: pd.DataFrame, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Per map cell: the mean of each metric per policy over the seeds, and per study metric the
    localized/global ratio and its region."""
    metrics = [m for m, _label in METRICS.values()] + ["observed_max_target", "sim_time"]
    frame = pd.DataFrame([asdict(c) for c in cells])
    if runs.empty:
        return pd.DataFrame()
    merged = frame.merge(runs[["run_id", *metrics]], on="run_id", how="inner")
    means = merged.groupby(["map", "y", "x", "policy"], sort=False)[metrics].mean().unstack("policy")
    out = pd.DataFrame(index=means.index)
    for metric in metrics:
        for policy in POLICIES:
            out[f"{metric}[{policy}]"] = means[(metric, policy)]
    for name, (metric, _label) in METRICS.items():
        out[f"ratio_{name}"] = [
            ratio(loc, glo) for loc, glo in zip(out[f"{metric}[localized]"], out[f"{metric}[global]"], strict=True)
        ]
        out[f"region_{name}"] = [region(r, threshold) for r in out[f"ratio_{name}"]]
    out["seeds"] = merged.groupby(["map", "y", "x"], sort=False)["seed"].nunique().reindex(out.index).to_numpy()
    return out.reset_index()


# ---------------------------------------------------------------------------------------------
# The results folder
# ---------------------------------------------------------------------------------------------


def default_out() -> Path:
    import datetime
    import secrets

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return Path("results") / "when-policies-differ" / f"study-{stamp}-{secrets.token_hex(3)}"


def write_study(
    result: StudyResult,
    out: str | Path,
    *,
    maps: Sequence[StudyMap] = MAPS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    threshold: float = THRESHOLD,
    figures: bool = True,
    command: Sequence[str] = (),
) -> Path:
    """Write the study into the new folder ``out``, atomically (sim/results.py): ``manifest.json``
    (maps, seeds, threshold, package version), ``base.toml``, ``runs.csv``, ``cells.csv``,
    ``ramp.csv``, ``figures/<map>.png``. Built under ``.partial-*`` and renamed when complete."""
    import shutil

    from . import __version__
    from .results import atomic_directory, check_new_folder

    final = check_new_folder(out)
    tmp, commit = atomic_directory(final)
    try:
        manifest = {
            "kind": "study",
            "package_version": __version__,
            "command": list(command),
            "policies": list(POLICIES),
            "seeds": [int(s) for s in seeds],
            "threshold": threshold,
            "maps": [{**asdict(m), "fixed": asdict(m.fixed)} for m in maps],
            "failed": result.failed,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / "base.toml").write_text(BASE_TOML, encoding="utf-8")
        result.runs.to_csv(tmp / "runs.csv", index=False)
        result.cells.to_csv(tmp / "cells.csv", index=False)
        result.ramp.to_csv(tmp / "ramp.csv", index=False)
        if figures:
            from .study_plots import plot_map

            result.figures = [
                plot_map(result.cells, m, tmp / "figures" / f"{m.name}.png", result.ramp, threshold) for m in maps
            ]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # made above by this call; nothing else is in it
        raise
    folder = commit()
    result.folder = folder
    result.figures = [folder / p.relative_to(tmp) for p in result.figures]
    return folder


def summary_lines(result: StudyResult, threshold: float = THRESHOLD) -> list[str]:
    """Per map and metric: how many cells each policy wins by more than the threshold."""
    lines = []
    for name, frame in result.cells.groupby("map", sort=False):
        for metric in METRICS:
            counts = frame[f"region_{metric}"].value_counts()
            ratios = frame[f"ratio_{metric}"].replace(math.inf, np.nan)
            lines.append(
                f"{name:<10} {metric:<10} localized ahead in {counts.get('localized', 0):>2}, "
                f"global in {counts.get('global', 0):>2}, tie in {counts.get('tie', 0):>2} of {len(frame)} cells"
                f" (ratio {ratios.min():.2f} .. {ratios.max():.2f}, > {threshold:.0%} counts)"
            )
    return lines


# ---------------------------------------------------------------------------------------------
# The points checked on the real scheduler
# ---------------------------------------------------------------------------------------------

#: Points checked with ``validate`` on the real twin (docs/when-policies-differ.md).
CHECK_POINTS = {
    "base": Point(),
    "short-window": Point(window_length=1.0),
    "after-ramp": Point(window_start=0.8),
    "all-dependent": Point(dependent_share=1.0),
    "late-short-window": Point(window_start=0.2, window_length=2.0),
    "small-llm-wait": Point(llm_wait=8),
}


def validate_command(name: str, base_toml: str = "base.toml", repeats: int = 2) -> str:
    """The ``validate`` command line that checks point ``name`` on the real scheduler."""
    point = CHECK_POINTS[name]
    return (
        f"python -m sim validate {base_toml} --policies global,localized --repeats {repeats} "
        f"--out twin-{name} " + " ".join(point.set_options())
    )


def twin_table(folders: dict[str, Path]) -> pd.DataFrame:
    """The study's two metrics per checked point and policy from ``validate`` folders: the
    simulator's value and the real runs' mean and spread, and the localized/global ratio of each."""
    rows = []
    for name, folder in folders.items():
        runs = pd.read_csv(Path(folder) / "runs.csv")
        runs = runs[runs["status"] == "ok"].copy()
        runs["rows_per_second"] = runs["completed_rows"] / runs["sim_time"]
        for engine, group in runs.groupby("engine", sort=False):
            row: dict[str, Any] = {"point": name, "engine": engine, "runs": len(group)}
            for short, (metric, _label) in METRICS.items():
                means = group.groupby("policy")[metric].mean()
                for policy in POLICIES:
                    values = group.loc[group["policy"] == policy, metric]
                    row[f"{metric}[{policy}]"] = float(values.mean())
                    row[f"{metric}[{policy}]_min"] = float(values.min())
                    row[f"{metric}[{policy}]_max"] = float(values.max())
                row[f"ratio_{short}"] = ratio(
                    float(means.get("localized", math.nan)), float(means.get("global", math.nan))
                )
            if "cpu_utilization" in group:
                row["cpu_utilization_max"] = float(group["cpu_utilization"].max())
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Export into the docs
# ---------------------------------------------------------------------------------------------

#: What ``export`` copies from a study folder into the repository's docs (source -> target).
EXPORTS = {
    "cells.csv": "data/when-policies-differ/cells.csv",
    "ramp.csv": "data/when-policies-differ/ramp.csv",
    **{f"figures/{m.name}.png": f"figures/when-policies-differ-{m.name}.png" for m in MAPS},
}


def export(folder: str | Path, docs: str | Path) -> list[Path]:
    """Copy a finished study's tables and figures to ``docs`` (the files docs/when-policies-differ.md
    and notebook 04 read). Each file is written under a temporary name and renamed; only these
    files are replaced, nothing else in ``docs`` is touched."""
    import os
    import shutil

    folder, docs = Path(folder), Path(docs)
    missing = [name for name in EXPORTS if not (folder / name).is_file()]
    if missing:
        raise StudyError(f"{folder}: not a finished study folder with figures (missing {missing[0]})")
    written = []
    for source, target in EXPORTS.items():
        path = docs / target
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.copyfile(folder / source, tmp)
        os.replace(tmp, path)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# python -m sim.study
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the maps into a new results folder and draw the heat maps (default)")
    run.add_argument(
        "--out", type=Path, default=None, help="new folder (default: results/when-policies-differ/study-*)"
    )
    run.add_argument("--seeds", type=int, default=len(DEFAULT_SEEDS), help="seeds 0..N-1 (default 5)")
    run.add_argument("--maps", default=",".join(MAP_NAMES), help=f"comma-separated, of {', '.join(MAP_NAMES)}")
    run.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--no-figures", action="store_true")
    twin = sub.add_parser("twin", help="print the validate commands of the checked points, or their table")
    twin.add_argument("folders", nargs="*", help="NAME=VALIDATE_FOLDER pairs: print the table instead")
    exp = sub.add_parser("export", help="copy a study folder's tables and figures into the docs")
    exp.add_argument("folder", type=Path)
    exp.add_argument("docs", type=Path, nargs="?", default=Path("docs"))
    args = parser.parse_args(
        ["run", *(argv or [])] if not argv or argv[0] not in ("run", "twin", "export", "-h", "--help") else argv
    )
    try:
        if args.command == "twin":
            return _twin_main(args.folders)
        if args.command == "export":
            for path in export(args.folder, args.docs):
                print(f"wrote {path}")
            return 0
        return _run_main(args, list(argv or []))
    except InputError as err:
        print(f"python -m sim.study: {err}", file=sys.stderr)
        return 2


def _run_main(args: argparse.Namespace, argv: list[str]) -> int:
    from .executors import make_executor
    from .results import check_new_folder

    names = [n.strip() for n in args.maps.split(",") if n.strip()]
    unknown = [n for n in names if n not in MAP_NAMES]
    if unknown or not names:
        raise StudyError(f"--maps: unknown map {unknown[0] if unknown else '(none)'}; maps: {', '.join(MAP_NAMES)}")
    if not 1 <= args.seeds <= 100:
        raise StudyError(f"--seeds: must be from 1 to 100, got {args.seeds}")
    out = check_new_folder(args.out if args.out is not None else default_out())
    maps = [MAP_NAMES[n] for n in names]
    seeds = tuple(range(args.seeds))
    with make_executor("serial" if args.jobs == 1 else "local", jobs=args.jobs) as ex:
        result = run_study(maps, seeds, executor=ex)
    folder = write_study(result, out, maps=maps, seeds=seeds, figures=not args.no_figures, command=argv)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {folder}")
    for line in result.failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if result.failed else 0


def _twin_main(pairs: Sequence[str]) -> int:
    if not pairs:
        for name in CHECK_POINTS:
            print(validate_command(name))
        return 0
    folders = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or name not in CHECK_POINTS:
            raise StudyError(f"{pair!r}: expected NAME=FOLDER with NAME one of {', '.join(CHECK_POINTS)}")
        folders[name] = Path(folder)
    print(twin_table(folders).to_csv(index=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
