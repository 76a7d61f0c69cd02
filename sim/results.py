"""The immutable result of one run, its pandas tables, and its on-disk layout.

A :class:`Result` is built once from a finished scheduler. Its ``summary`` is a flat mapping of
plain values (one CSV row); its tables are pandas DataFrames. Writing goes into a temporary
folder that is renamed into place only when complete, so an interrupted write never leaves a
folder that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import InputError, RunFailed
from .metrics import (
    CALL_COUNT_COLUMNS,
    CALL_LATENCY_COLUMNS,
    CALL_LATENCY_STATS_COLUMNS,
    MODEL_SERIES_COLUMNS,
    SCHEDULER_SERIES_COLUMNS,
)
from .row_group_admission import REASONS, DeferredBlock
from .scenario import Scenario
from .workload import Workload

if TYPE_CHECKING:
    from .scheduler import Scheduler


@dataclass(frozen=True)
class Result:
    """What one run produced. Build with :func:`result_from_scheduler`."""

    scenario: Scenario
    policy: str
    seed: int
    summary: Mapping[str, Any]
    timeseries: pd.DataFrame
    model_timeseries: pd.DataFrame
    columns: pd.DataFrame
    models: pd.DataFrame
    row_groups: pd.DataFrame
    blocked_reasons: Mapping[str, int]
    deferred_admission: Mapping[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    #: non-empty latency bins per model and outcome (docs/metrics.md, "Call latency")
    call_latency: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CALL_LATENCY_COLUMNS)))
    #: exact count, sum, min, max, mean and the histogram's percentiles per model and outcome
    call_latency_stats: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(CALL_LATENCY_STATS_COLUMNS))
    )

    def summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame([dict(self.summary)])

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Result({self.scenario.name!r}, policy={self.policy!r}, seed={self.seed}, "
            f"sim_time={s['sim_time']:.3f}s, completed_rows={s['completed_rows']}, "
            f"healthy_calls={s['healthy_calls']}, observed_max_target={s['observed_max_target']})"
        )


def result_from_scheduler(sched: Scheduler, wall_seconds: float = 0.0) -> Result:
    from .metrics import (
        call_columns,
        call_latency_columns,
        call_latency_stats,
        model_metrics,
        run_metrics,
        scheduler_columns,
    )

    scenario = sched.scenario
    rec = sched.recorder
    rga = sched.row_groups
    gens = sched.workload.generators
    sim_time = float(sched.env.now)
    total_rows = sum(sched.workload.row_group_sizes)
    # A run stopped inside a salvage cycle holds part of its deferred work aside: it is still deferred.
    deferred_at_end = [*sched.deferred, *sched.salvage_set_aside]

    columns = pd.DataFrame(
        [
            {
                "column": col,
                "generator": g.name,
                "kind": g.kind,
                "model": g.model.name if g.model is not None else "",
                "successful_calls": rec.calls_ok[g.index] if g.model is not None else 0,
                "rate_limited_calls": rec.calls_429[g.index],
                "deferred_at_end": sum(1 for t in deferred_at_end if t.gen.index == g.index),
            }
            for g in gens
            for col in g.output_columns
        ]
    )
    ra = sched.request_admission
    model_rows = []
    for i, m in enumerate(scenario.models):
        res = ra.by_key.get(_key_of(m)) if ra is not None else None
        model_rows.append(
            {
                "model": m.name,
                "provider_model": f"{m.provider}/{m.resolved_model_id}",
                "domain": m.domain,
                "max_parallel_requests": m.max_parallel_requests,
                "rate_limit_pattern": m.rate_limit.pattern,
                "successful_calls": rec.model_ok[i],
                "rate_limited_calls": rec.model_429[i],
                "max_in_flight": rec.model_max_in_flight[i],
                "max_waiting": rec.model_max_waiting[i],
                "final_limit": res.current_limit if res is not None else m.max_parallel_requests,
                "limit_decreases": res.decreases if res is not None else 0,
                "limit_increases": res.increases if res is not None else 0,
            }
        )
    per_model = model_metrics(rec, sim_time)
    for row, extra in zip(model_rows, per_model, strict=True):
        row.update({k: v for k, v in extra.items() if k != "model"})
    models = pd.DataFrame(model_rows)

    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "policy": sched.policy.name,
        "seed": sched.seed,
        "engine": "sim",
        "stop_reason": sched.stop_reason,
        "sim_time": sim_time,
        "total_rows": total_rows,
        "completed_rows": sched.completed_rows,
        "completed_row_groups": sched.completed_row_groups,
        "rows_per_second": sched.completed_rows / sim_time if sim_time > 0 else 0.0,
        "successful_calls": rec.successful_calls,
        "rate_limited_calls": sum(rec.model_429),
        "healthy_calls": rec.healthy_calls,
        "healthy_calls_while_limited": rec.healthy_calls_while_limited,
        "healthy_calls_per_second": rec.healthy_calls / sim_time if sim_time > 0 else 0.0,
        "mode": "adaptive" if rga.adaptive else "fixed",
        "hard_cap": rga.hard_cap,
        "final_target": rga.target,
        "observed_max_target": rga.observed_max_target,
        "max_row_groups_in_flight": rec.max_row_groups_in_flight,
        "max_admitted_rows": rga.max_admitted_rows,
        "adaptive_evaluations": rga.evaluations,
        "main_loop_iterations": sched.iterations,
    }
    for reason in REASONS:
        summary[f"blocked_{reason}"] = rga.blocked_reasons.get(reason, 0)
    summary.update(
        {
            "deferred_at_end": len(deferred_at_end),
            "max_deferred": sched.max_deferred,
            "salvage_cycles": sched.salvage_cycles,
            "salvage_rounds": sched.salvage_rounds,
            "salvage_drain_time": sched.drain_time,
            "dispatches": rec.dispatches,
            "max_in_flight_tasks": rec.max_in_flight_tasks,
            "max_queued_tasks": rec.max_queued_tasks,
            "request_pressure_advisory_skips": sched.tasks.advisory_skips,
        }
    )
    for i, m in enumerate(scenario.models):
        summary[f"calls_ok[{m.name}]"] = rec.model_ok[i]
        summary[f"calls_429[{m.name}]"] = rec.model_429[i]
    for m, extra in zip(scenario.models, per_model, strict=True):
        for key in _PER_MODEL_SUMMARY:
            summary[f"{key}[{m.name}]"] = extra[key]
    summary.update(run_metrics(rec, sim_time, total_rows))

    deferred_admission = deferred_admission_diagnostics(rga.last_deferred_block, sched.workload)
    # The same diagnostics, flattened for runs.csv ("" when deferred work never blocked growth).
    summary["deferred_admission_candidate_columns"] = ",".join(deferred_admission.get("candidate_columns", []))
    summary["deferred_admission_independent_columns"] = ",".join(
        deferred_admission.get("independent_candidate_columns", [])
    )

    timeseries = pd.DataFrame(scheduler_columns(rec), columns=list(SCHEDULER_SERIES_COLUMNS))
    model_ts = pd.DataFrame(call_columns(rec), columns=[*MODEL_SERIES_COLUMNS, *CALL_COUNT_COLUMNS])
    model_ts["model"] = pd.Categorical.from_codes(model_ts["model"], categories=rec.model_names)
    row_groups = pd.DataFrame(rec.row_groups.columns())
    row_groups["latency"] = row_groups["checkpointed_at"] - row_groups["admitted_at"]
    call_latency = pd.DataFrame(call_latency_columns(rec), columns=list(CALL_LATENCY_COLUMNS)).astype(
        {"model": "str", "outcome": "str", "lower": "float64", "upper": "float64", "count": "int64"}
    )
    latency_stats = pd.DataFrame(call_latency_stats(rec), columns=list(CALL_LATENCY_STATS_COLUMNS))

    return Result(
        scenario=scenario,
        policy=sched.policy.name,
        seed=sched.seed,
        summary=MappingProxyType(summary),
        timeseries=timeseries,
        model_timeseries=model_ts,
        columns=columns,
        models=models,
        row_groups=row_groups,
        blocked_reasons=MappingProxyType(dict(rga.blocked_reasons)),
        deferred_admission=MappingProxyType(deferred_admission),
        wall_seconds=wall_seconds,
        call_latency=call_latency,
        call_latency_stats=latency_stats,
    )


#: Summary columns that are text, not numbers (a check cannot bound them).
TEXT_SUMMARY_KEYS = frozenset(
    {
        "scenario",
        "policy",
        "stop_reason",
        "mode",
        "deferred_admission_candidate_columns",
        "deferred_admission_independent_columns",
    }
)
_PER_MODEL_SUMMARY = (
    "busy_fraction",
    "idle_with_work_left",
    "idle_in_cooldown",
    "cooldown_time",
    "call_latency_p50",
    "call_latency_p90",
    "call_latency_p99",
    "call_latency_mean",
)


def summary_metric_names(scenario: Scenario) -> list[str]:
    """Every key of a run's ``summary`` for ``scenario``, in order, known before anything runs.

    ``check`` validates its metric names with it, so a typo fails before the runs start. A test
    pins it to the keys :func:`result_from_scheduler` actually writes, so the two cannot drift.
    """
    from .metrics import TIME_MEAN_COLUMNS

    names = [
        "scenario",
        "policy",
        "seed",
        "engine",
        "stop_reason",
        "sim_time",
        "total_rows",
        "completed_rows",
        "completed_row_groups",
        "rows_per_second",
        "successful_calls",
        "rate_limited_calls",
        "healthy_calls",
        "healthy_calls_while_limited",
        "healthy_calls_per_second",
        "mode",
        "hard_cap",
        "final_target",
        "observed_max_target",
        "max_row_groups_in_flight",
        "max_admitted_rows",
        "adaptive_evaluations",
        "main_loop_iterations",
        *(f"blocked_{reason}" for reason in REASONS),
        "deferred_at_end",
        "max_deferred",
        "salvage_cycles",
        "salvage_rounds",
        "salvage_drain_time",
        "dispatches",
        "max_in_flight_tasks",
        "max_queued_tasks",
        "request_pressure_advisory_skips",
    ]
    for m in scenario.models:
        names += [f"calls_ok[{m.name}]", f"calls_429[{m.name}]"]
    for m in scenario.models:
        names += [f"{key}[{m.name}]" for key in _PER_MODEL_SUMMARY]
    names += ["time_to_first_row", "time_to_50pct_rows", "time_to_all_rows"]
    names += ["row_group_latency_p50", "row_group_latency_p95", "row_group_latency_max"]
    names += [f"{column}_time_mean" for column in TIME_MEAN_COLUMNS]
    names += ["scheduler_events", "max_events", "budget_exhausted", "budget_message"]
    names += ["timeseries_rows_aggregated", "model_timeseries_rows_aggregated", "recorder_note"]
    names += ["deferred_admission_candidate_columns", "deferred_admission_independent_columns"]
    return names


def deferred_admission_diagnostics(block: DeferredBlock | None, workload: Workload) -> dict[str, Any]:
    """The real scheduler's ``deferred_admission`` block (docs/metrics.md) at the last deferred block.

    ``blocks_next_row_group`` is the policy's verdict (true at a block); the localized analysis'
    own verdict is ``localized_analysis_blocks`` (they differ under ``global``).
    """
    if block is None:
        return {}
    gens = workload.generators
    columns: dict[str, int] = {}
    request_resources: dict[str, int] = {}
    scheduler_resources: dict[str, int] = {}
    for g, n in enumerate(block.by_generator):
        if not n:
            continue
        gen = gens[g]
        columns[gen.output_columns[0]] = n
        if gen.request_key is not None:
            key = gen.request_key
            request_resources[key.label] = request_resources.get(key.label, 0) + n
            name = f"request:{key.provider_model}"
            scheduler_resources[name] = scheduler_resources.get(name, 0) + n
    analysis = block.analysis
    return {
        "count": block.count,
        "scope": block.policy,
        "blocks_next_row_group": True,
        "localized_analysis_blocks": analysis.blocks,
        "columns": columns,
        "request_resources": request_resources,
        "scheduler_resources": scheduler_resources,
        "deferred_keys": sorted(analysis.deferred_keys),
        "candidate_columns": list(analysis.candidate_columns),
        "blocked_columns": list(analysis.blocked_columns),
        "independent_candidate_columns": list(analysis.independent_columns),
    }


def _key_of(model):
    from .workload import RequestKey

    return RequestKey(model.provider, model.resolved_model_id, model.domain)


# ---------------------------------------------------------------------------------------------
# On-disk layout
# ---------------------------------------------------------------------------------------------


#: Longest file name most file systems take (bytes); a longer --out fails before anything runs.
NAME_MAX = 255
#: Prefix of a folder being written; it is never mistaken for a finished one.
PARTIAL_PREFIX = ".partial-"
#: errno values that say the path itself is wrong (bad input), not that the disk refused a write.
_BAD_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR})


class OutputPathError(InputError):
    """The results folder cannot be created at that path (it exists, a name is too long, a parent
    is a file). Raised before anything is written; nothing at the path is touched. CLI exit 2."""


class ResultsWriteError(RunFailed):
    """The file system refused to write results (read-only, full, no permission). CLI exit 1.

    ``kept`` is the ``.partial-*`` folder still holding what was written, if any.
    """

    def __init__(self, message: str, kept: Path | None = None) -> None:
        super().__init__(message)
        self.kept = kept


def describe_os_error(err: OSError) -> str:
    """``No space left on device (errno 28)``: the reason, in one line, without the path twice."""
    reason = err.strerror or str(err)
    return f"{reason} (errno {err.errno})" if err.errno is not None else reason


def check_new_folder(final: str | Path) -> Path:
    """``final`` as a :class:`Path`, or :class:`OutputPathError` if it exists or cannot be a name.

    ``lexists``: a dangling symlink counts as existing, so nothing is ever written through it.
    """
    final = Path(final)
    if os.path.lexists(final):
        raise OutputPathError(f"{final} already exists; remove it or choose another folder")
    if final.name in ("", ".", ".."):
        raise OutputPathError(f"{final}: not a folder name")
    size = len(os.fsencode(final.name))
    if size > NAME_MAX:
        raise OutputPathError(f"{final}: the folder name is {size} bytes long; the limit is {NAME_MAX}")
    return final


def _path_error(path: Path, err: OSError, doing: str, kept: Path | None = None) -> InputError | RunFailed:
    if err.errno in _BAD_PATH_ERRNOS:
        return OutputPathError(f"{path}: cannot {doing}: {describe_os_error(err)}")
    return ResultsWriteError(f"{path}: cannot {doing}: {describe_os_error(err)}", kept)


def atomic_directory(final: Path) -> tuple[Path, Callable[[], Path]]:
    """Create a sibling temporary folder; return it and a ``commit()`` that renames it to ``final``.

    ``final`` must not exist (:class:`OutputPathError`, nothing touched). The temporary name starts
    with ``.partial-`` so that an interrupted write is recognisable and never mistaken for a
    finished one. ``commit()`` never replaces or deletes anything it did not create: it first
    *reserves* ``final`` with ``os.mkdir`` (atomic, and it fails if anything at all is there), then
    renames the temporary folder onto that empty reservation (POSIX ``rename`` replaces an empty
    folder atomically; a folder that someone filled in between makes it fail with "not empty").
    A plain ``os.rename``/``os.replace`` would silently replace an *empty* folder someone else
    made, and ``rmtree`` first would delete user data. If the commit fails, the temporary folder
    is kept and :class:`ResultsWriteError` names it.
    """
    final = check_new_folder(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        short = os.fsencode(final.name)[:64].decode("utf-8", "ignore") or "out"
        tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{short}-", dir=final.parent))
    except OSError as err:
        raise _path_error(final, err, "create the results folder") from None
    # mkdtemp makes the folder 0700; the finished folder should get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)

    return tmp, lambda: commit_folder(tmp, final)


def commit_folder(tmp: Path, final: Path) -> Path:
    """Rename the finished folder ``tmp`` to ``final``, which must not exist; never replaces anything.

    ``os.mkdir(final)`` reserves the name (atomic; it fails if anything is there); the rename then
    replaces only that empty reservation. On failure ``tmp`` is kept and named in the
    :class:`ResultsWriteError`; the reservation is removed with ``rmdir``, which cannot remove a
    folder with anything in it.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(final)
    except FileExistsError:
        raise ResultsWriteError(
            f"{final} appeared while the results were written; they are kept in {tmp}", tmp
        ) from None
    except OSError as err:
        raise _as_commit_error(final, tmp, err) from None
    try:
        os.rename(tmp, final)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.rmdir(final)
        raise _as_commit_error(final, tmp, err) from None
    return final


def _as_commit_error(final: Path, tmp: Path, err: OSError) -> ResultsWriteError:
    return ResultsWriteError(
        f"{final}: cannot rename the results into place: {describe_os_error(err)}; they are kept in {tmp}", tmp
    )


def write_result(result: Result, out_dir: str | Path, extra_manifest: Mapping[str, Any] | None = None) -> Path:
    """Write one run as ``manifest.json``, ``summary.csv`` and its tables, atomically.

    Tables a person reads (``summary``, ``columns``, ``models``, ``call_latency_stats``) are CSV; the
    time series, the row-group log and the latency bins are parquet (:func:`write_series`).

    ``out_dir`` must not exist (:class:`OutputPathError`); a write the file system refuses (full,
    read-only) removes the temporary folder and raises :class:`ResultsWriteError`.
    """
    from . import __version__

    out_dir = Path(out_dir)
    tmp, commit = atomic_directory(out_dir)  # an existing out_dir is an error; nothing there is touched
    try:
        manifest = {
            "package_version": __version__,
            "scenario": result.scenario.model_dump(mode="json"),
            "policy": result.policy,
            "seed": result.seed,
            "summary": dict(result.summary),
            "blocked_reasons": dict(result.blocked_reasons),
            "deferred_admission": dict(result.deferred_admission),
        }
        if extra_manifest:
            manifest.update(extra_manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        result.summary_frame().to_csv(tmp / "summary.csv", index=False)
        write_series(result.timeseries, tmp / "timeseries.parquet")
        write_series(result.model_timeseries, tmp / "model_timeseries.parquet")
        write_series(result.row_groups, tmp / "row_groups.parquet")
        write_series(result.call_latency, tmp / "call_latency.parquet")
        result.columns.to_csv(tmp / "columns.csv", index=False)
        result.models.to_csv(tmp / "models.csv", index=False)
        result.call_latency_stats.to_csv(tmp / "call_latency_stats.csv", index=False)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder made above, nothing else
        if isinstance(err, OSError):
            raise ResultsWriteError(f"{out_dir}: cannot write the results: {describe_os_error(err)}") from None
        raise
    return commit()


# ---------------------------------------------------------------------------------------------
# Time-series files: parquet, and the CSV of folders written before
# ---------------------------------------------------------------------------------------------

#: Suffixes a time-series table is read from, preferred first (older folders hold CSV).
SERIES_SUFFIXES = (".parquet", ".csv")


def write_series(frame: pd.DataFrame, path: Path) -> None:
    """A time series as parquet (columnar, typed, compressed): what grows with a run is not CSV."""
    frame.to_parquet(path, engine="pyarrow", index=False, compression="zstd")


def series_bytes(frame: pd.DataFrame) -> bytes:
    """The same parquet file, in memory (for a worker that cannot write into the results folder)."""
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, engine="pyarrow", index=False, compression="zstd")
    return buf.getvalue()


def write_series_atomic(frame: pd.DataFrame | bytes, path: Path) -> None:
    """Write under a temporary name, then rename: a crash never leaves a truncated file at ``path``."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        if isinstance(frame, bytes):
            partial.write_bytes(frame)
        else:
            write_series(frame, partial)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def find_series(folder: Path, name: str) -> Path | None:
    """``<folder>/<name>.parquet``, else ``<name>.csv`` (folders written before parquet), else None."""
    for suffix in SERIES_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_call_latency(folder: Path) -> pd.DataFrame | None:
    """The latency bins of a ``write_result`` folder; None for a folder written before they existed."""
    path = find_series(Path(folder), "call_latency")
    return read_series(path) if path is not None else None


def read_series(path: Path) -> pd.DataFrame:
    """A time-series table written by :func:`write_series` or, in older folders, as CSV."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path, engine="pyarrow")
    return pd.read_csv(path)
