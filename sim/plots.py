"""Pictures of results (matplotlib, Agg canvas, no display needed). Plots never re-run a simulation.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas instead of through
``pyplot``, so that nothing depends on a display or on pyplot's global state (safe in worker
processes and in notebooks alike). Every ``*_figure`` function returns the Figure, so that tests
and notebooks can inspect it; the ``plot_*`` functions write PNGs.

* :func:`plot_comparison` / :func:`comparison_figure`: several runs (usually one per policy) over
  time, on stacked panels that share the time axis.
* :func:`plot_sweep` / :func:`sweep_figure`: one metric against one swept parameter, one line
  per policy, error bars over seeds (the ``runs.csv`` layout of a results folder).
* :func:`plot_results_dir`: reads a results folder (``manifest.json``, ``runs.csv``,
  ``timeseries/``, ``model_timeseries/``) and writes sensible PNGs into ``figures/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

if TYPE_CHECKING:
    from .results import Result

#: Bins used to average "calls in flight" over time: raw series flicker too fast to read.
IN_FLIGHT_BINS = 300
#: Metrics plotted against each swept parameter by :func:`plot_results_dir`, if present.
SWEEP_HEADLINE_METRICS = (
    "healthy_calls_per_second",
    "rows_per_second",
    "sim_time",
    "time_to_all_rows",
    "observed_max_target",
)
PARAM_PREFIX = "param:"
DPI = 110

_POLICY_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")
_MODEL_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:cyan", "tab:olive", "tab:gray")


@dataclass(frozen=True)
class RunSeries:
    """What a timeline needs from one run: a label and its two time-series tables."""

    label: str
    timeseries: pd.DataFrame
    model_timeseries: pd.DataFrame
    end: float | None = None  # the run's sim_time (the series stop at their last change)
    aimd: bool = True  # False: no request-admission controller, the limit panel shows the static cap

    @classmethod
    def from_result(cls, result: Result, label: str | None = None) -> RunSeries:
        return cls(
            label or result.policy,
            result.timeseries,
            result.model_timeseries,
            result.summary["sim_time"],
            result.scenario.request_admission.enabled,
        )

    @property
    def end_time(self) -> float:
        times = [float(t["time"].max()) for t in (self.timeseries, self.model_timeseries) if len(t)]
        if self.end is not None and self.end == self.end:  # not NaN
            times.append(float(self.end))
        return max(times, default=0.0)


# ---------------------------------------------------------------------------------------------
# Helpers on step functions and intervals
# ---------------------------------------------------------------------------------------------


def binned_mean(times: np.ndarray, values: np.ndarray, edges: np.ndarray, end: float = np.inf) -> np.ndarray:
    """Time-weighted mean of a step function (value ``values[k]`` from ``times[k]`` on) per bin.

    Rows sharing a time keep the last one, as the series do. Before the first sample the value is
    0; the function is defined up to ``end`` only (bins past it are NaN, a bin cut by it is
    averaged over its part before ``end``).
    """
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    edges = np.minimum(np.asarray(edges, dtype=float), end)
    if t.size == 0:
        return np.zeros(len(edges) - 1)
    cum = np.concatenate(([0.0], np.cumsum(v[:-1] * np.diff(t))))

    def integral(x: np.ndarray) -> np.ndarray:
        k = np.searchsorted(t, x, side="right") - 1
        inside = k >= 0
        kk = np.where(inside, k, 0)
        return np.where(inside, cum[kk] + v[kk] * (x - t[kk]), 0.0)

    widths = np.diff(edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(widths > 0, np.diff(integral(edges)) / widths, np.nan)


def cooldown_spans(model_series: pd.DataFrame) -> list[tuple[float, float]]:
    """Union of ``[time, cooldown_until)`` over the rows of one model (rows already in cooldown
    extend nothing; a renewed cooldown extends the span)."""
    rows = model_series[model_series["cooldown_until"] > model_series["time"]]
    spans: list[tuple[float, float]] = []
    for start, end in zip(rows["time"].to_numpy(float), rows["cooldown_until"].to_numpy(float), strict=True):
        if spans and start <= spans[-1][1]:
            if end > spans[-1][1]:
                spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _new_figure(width: float, height: float, hspace_inches: float = 0.0) -> Figure:
    """A Figure on an Agg canvas with fixed margins (in inches): a layout engine would cost more
    than the drawing itself on many-panel timelines."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=0.8 / width,
        right=1 - 0.2 / width,
        bottom=0.6 / height,
        top=1 - 0.6 / height,
        hspace=hspace_inches / 1.4 if hspace_inches else 0.2,
    )
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 2})
    return path


def _models_of(runs: Sequence[RunSeries]) -> list[str]:
    names: list[str] = []
    for run in runs:
        column = run.model_timeseries.get("model")
        if column is None:
            continue
        categories = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column)
        for name in map(str, categories):
            if name not in names:
                names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Comparison over time
# ---------------------------------------------------------------------------------------------


#: Runs whose lengths differ by more than this factor are shown on a zoomed time axis.
ZOOM_RATIO = 20.0


def auto_time_window(ends: Sequence[float]) -> float:
    """The time axis end: the longest run, unless one run is far longer than the typical one
    (e.g. ``global`` stopped by a 60 s limit while ``localized`` reached its threshold in 0.2 s);
    then three times the median run length, so the short runs stay readable."""
    longest = max(ends)
    typical = float(np.median(ends))
    if typical > 0 and longest > ZOOM_RATIO * typical:
        return 3.0 * typical
    return longest


def comparison_figure(
    runs: Sequence[RunSeries | Result], title: str | None = None, until: float | None = None
) -> Figure:
    """Runs over time on stacked panels sharing the time axis.

    Top: adaptive target (dashed) and active row groups (solid), one colour per run; then
    cumulative healthy calls (solid) and completed rows (dashed). Then, for each run, a panel of
    calls in flight per model (time-averaged per bin) and a panel of the AIMD current limit per
    model with its cooldown intervals shaded (the model's colour). Each run's lines stop at its own
    end. ``until`` sets the time axis to ``[0, until]``; by default :func:`auto_time_window` picks it.
    The row-group panel switches to a symmetric-log scale when runs differ by more than 20x.
    """
    series = [r if isinstance(r, RunSeries) else RunSeries.from_result(r) for r in runs]
    if not series:
        raise ValueError("comparison_figure needs at least one run")
    models = _models_of(series)
    model_color = {m: _MODEL_COLORS[i % len(_MODEL_COLORS)] for i, m in enumerate(models)}
    end = auto_time_window([s.end_time for s in series]) if until is None else float(until)
    end = end if end > 0 else 1.0
    n_rows = 2 + 2 * len(series)
    fig = _new_figure(11.0, 1.2 + 1.75 * n_rows, hspace_inches=0.45)
    axes = fig.subplots(n_rows, 1, sharex=True)
    ax_rg, ax_cum = axes[0], axes[1]
    peaks: list[float] = []

    for i, run in enumerate(series):
        color = _POLICY_COLORS[i % len(_POLICY_COLORS)]
        ts = run.timeseries
        run_end = min(run.end_time, end)
        ts = ts[ts["time"] <= run_end]
        if len(ts):
            peaks.append(float(max(ts["active_row_groups"].max(), ts["target"].max())))
            t = np.append(ts["time"].to_numpy(float), run_end)

            def step(column: str, ts: pd.DataFrame = ts) -> np.ndarray:
                values = ts[column].to_numpy(float)
                return np.append(values, values[-1])

            ax_rg.step(t, step("active_row_groups"), where="post", color=color, lw=1.4)
            ax_rg.step(t, step("target"), where="post", color=color, lw=1.2, ls="--")
            ax_cum.step(t, step("healthy_calls"), where="post", color=color, lw=1.4)
            ax_cum.step(t, step("completed_rows"), where="post", color=color, lw=1.2, ls="--")

        ax_in = axes[2 + 2 * i]
        ax_lim = axes[3 + 2 * i]
        mts = run.model_timeseries
        mts = mts[mts["time"] <= run_end]
        edges = np.linspace(0.0, end, IN_FLIGHT_BINS + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        if len(mts):
            by_model = mts.assign(model=mts["model"].astype(str)).groupby("model", sort=False, observed=True)
            for name, rows in by_model:
                mcolor = model_color[str(name)]
                times = rows["time"].to_numpy(float)
                in_flight = binned_mean(times, rows["in_flight"].to_numpy(float), edges, run_end)
                ax_in.plot(centres, in_flight, color=mcolor, lw=1.2)
                limit = rows["current_limit"].to_numpy(float)
                ax_lim.step(np.append(times, run_end), np.append(limit, limit[-1]), where="post", color=mcolor, lw=1.3)
                for start, stop in cooldown_spans(rows):
                    ax_lim.axvspan(start, min(stop, run_end), color=mcolor, alpha=0.15, lw=0)
        ax_in.set_ylabel("calls in flight")
        ax_in.set_title(f"{run.label}: calls in flight per model (mean per bin)", fontsize=9, loc="left")
        if run.aimd:
            ax_lim.set_ylabel("AIMD limit")
            ax_lim.set_title(f"{run.label}: AIMD current limit per model, cooldown shaded", fontsize=9, loc="left")
        else:
            ax_lim.set_ylabel("request cap")
            ax_lim.set_title(
                f"{run.label}: no request-admission controller; static cap per model", fontsize=9, loc="left"
            )
        ax_lim.set_ylim(bottom=0)
        ax_in.set_ylim(bottom=0)

    ax_rg.set_ylabel("row groups")
    if peaks and max(peaks) > 20 * max(1.0, min(peaks)):
        ax_rg.set_yscale("symlog", linthresh=1.0)
    ax_rg.set_ylim(bottom=0)
    ax_rg.set_title("adaptive target (dashed) and active row groups (solid)", fontsize=9, loc="left")
    ax_cum.set_ylabel("cumulative")
    ax_cum.set_title("healthy calls (solid) and completed rows (dashed)", fontsize=9, loc="left")
    run_handles = [
        Line2D([], [], color=_POLICY_COLORS[i % len(_POLICY_COLORS)], lw=2, label=s.label) for i, s in enumerate(series)
    ]
    ax_rg.legend(handles=run_handles, loc="upper left", fontsize=8, ncols=min(len(series), 4))
    model_handles = [Line2D([], [], color=model_color[m], lw=2, label=m) for m in models]
    if model_handles:
        axes[2].legend(handles=model_handles, loc="upper right", fontsize=8, ncols=min(len(models), 4))
    axes[-1].set_xlabel("simulated time (s)")
    axes[-1].set_xlim(0.0, end)
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_comparison(results: Sequence[Result], path: Path) -> Path:
    """Write :func:`comparison_figure` of ``results`` (one line per run, labelled by policy) to ``path``."""
    title = None
    if results:
        title = f"{results[0].scenario.name} (seed {results[0].seed})"
    return _save(comparison_figure(results, title=title), path)


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


def _param_column(runs: pd.DataFrame, param: str) -> str:
    for name in (param, PARAM_PREFIX + param):
        if name in runs.columns:
            return name
    raise KeyError(f"no column for swept parameter '{param}' (expected '{PARAM_PREFIX}{param}')")


def sweep_table(runs: pd.DataFrame, metric: str, param: str) -> pd.DataFrame:
    """Mean, standard deviation (over seeds) and count of ``metric`` per (line, parameter value).

    A line is a policy, further split by every other swept parameter that varies, so that runs
    of different grid points are never averaged together. Failed runs are dropped.
    """
    pcol = _param_column(runs, param)
    if metric not in runs.columns:
        raise KeyError(f"no metric column '{metric}' in the runs table")
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    others = [c for c in ok.columns if c.startswith(PARAM_PREFIX) and c != pcol and ok[c].nunique(dropna=False) > 1]
    keys = ["policy", *others] if "policy" in ok.columns else others
    frame = ok.assign(_value=pd.to_numeric(ok[metric], errors="coerce"))

    def variant(row: pd.Series) -> str:
        return ", ".join(f"{c[len(PARAM_PREFIX) :]}={row[c]}" for c in others)

    def label(row: pd.Series) -> str:
        parts = [str(row["policy"])] if "policy" in keys else []
        parts += [variant(row)] if others else []
        return ", ".join(parts) or metric

    if len(frame):
        frame = frame.assign(
            line=frame.apply(label, axis=1),
            variant=frame.apply(variant, axis=1),
            policy=frame["policy"].astype(str) if "policy" in frame.columns else "",
        )
    else:
        frame = frame.assign(line=pd.Series(dtype=str), variant=pd.Series(dtype=str), policy=pd.Series(dtype=str))
    grouped = frame.groupby(["line", "policy", "variant", pcol], sort=True)["_value"]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table.rename(columns={pcol: "value"})


_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def sweep_figure(runs: pd.DataFrame, metric: str, param: str) -> Figure:
    """``metric`` against the swept ``param``: one line per policy, error bars = std over seeds.

    With several swept parameters, each policy gets one line per combination of the others (same
    colour, another line style). Lines are nudged sideways a little so that equal values and their
    error bars stay visible.
    """
    table = sweep_table(runs, metric, param)
    key = _param_column(runs, param)
    key = key[len(PARAM_PREFIX) :] if key.startswith(PARAM_PREFIX) else key
    fig = _new_figure(7.5, 4.5)
    ax = fig.subplots()
    values = pd.unique(table["value"])
    numeric = pd.to_numeric(pd.Series(values), errors="coerce")
    is_numeric = len(values) > 0 and not numeric.isna().any()
    log_x = bool(is_numeric and (numeric > 0).all() and numeric.max() / numeric.min() >= 10)
    positions = None if is_numeric else {v: i for i, v in enumerate(values)}
    policies = list(dict.fromkeys(table["policy"]))
    variants = list(dict.fromkeys(table["variant"]))
    lines = list(table.groupby(["line", "policy", "variant"], sort=True))
    for i, ((line, policy, variant), rows) in enumerate(lines):
        rows = rows.copy()
        if is_numeric:
            rows["x"] = pd.to_numeric(rows["value"])
            rows = rows.sort_values("x")
        else:
            rows["x"] = rows["value"].map(positions)
        x = rows["x"].to_numpy(float)
        nudge = (i - (len(lines) - 1) / 2) * 0.012
        if log_x:
            x = x * 10 ** (nudge * np.log10(numeric.max() / numeric.min()))
        elif is_numeric:
            x = x + nudge * (float(numeric.max() - numeric.min()) or 1.0)
        else:
            x = x + nudge * 5
        v = variants.index(variant)
        ax.errorbar(
            x,
            rows["mean"].to_numpy(float),
            yerr=rows["std"].to_numpy(float),
            marker=_MARKERS[v % len(_MARKERS)],
            ls=_LINESTYLES[v % len(_LINESTYLES)],
            capsize=3,
            lw=1.5,
            color=_POLICY_COLORS[policies.index(policy) % len(_POLICY_COLORS)],
            label=str(line),
        )
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(sorted(numeric), labels=[f"{v:g}" for v in sorted(numeric)])
    elif positions is not None:
        ax.set_xticks(list(positions.values()), labels=[str(v) for v in positions])
    seeds = int(table["count"].max()) if len(table) else 0
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {key} (mean ± std over {seeds} seed{'s' if seeds != 1 else ''})", fontsize=10)
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=8)
    return fig


def plot_sweep(runs: pd.DataFrame, metric: str, param: str, path: Path) -> Path:
    """Write :func:`sweep_figure` to ``path``."""
    return _save(sweep_figure(runs, metric, param), path)


#: Metrics shown as bars per policy by :func:`summary_figure` for a compare folder, if present.
SUMMARY_METRICS = (
    "sim_time",
    "healthy_calls_per_second",
    "rows_per_second",
    "time_to_50pct_rows",
    "observed_max_target",
    "rate_limited_calls",
)


def summary_figure(runs: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS) -> Figure:
    """One small bar chart per metric: mean over seeds per policy, error bar = std over seeds."""
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    metrics = [m for m in metrics if m in ok.columns and pd.to_numeric(ok[m], errors="coerce").notna().any()]
    if not metrics:
        raise ValueError("none of the summary metrics is in the runs table")
    policies = list(dict.fromkeys(ok["policy"].astype(str)))
    cols = min(3, len(metrics))
    rows_n = -(-len(metrics) // cols)
    fig = _new_figure(3.6 * cols + 0.6, 2.6 * rows_n + 0.9, hspace_inches=0.5)
    fig.subplots_adjust(wspace=0.35)
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    seeds = int(ok.groupby("policy").size().max()) if len(ok) else 0
    for ax, metric in zip(axes, metrics, strict=False):
        values = pd.to_numeric(ok[metric], errors="coerce").groupby(ok["policy"].astype(str))
        mean, std = values.mean().reindex(policies), values.std().reindex(policies).fillna(0.0)
        colors = [_POLICY_COLORS[i % len(_POLICY_COLORS)] for i in range(len(policies))]
        ax.bar(range(len(policies)), mean.to_numpy(float), yerr=std.to_numpy(float), color=colors, capsize=3)
        ax.set_xticks(range(len(policies)), labels=policies, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"mean ± std over {seeds} seed{'s' if seeds != 1 else ''}", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# A results folder
# ---------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _aimd_enabled(manifest: dict) -> bool:
    return bool(((manifest.get("scenario") or {}).get("request_admission") or {}).get("enabled", True))


def _read_run_series(results_dir: Path, run: pd.Series, aimd: bool = True) -> RunSeries | None:
    ts_path = results_dir / "timeseries" / f"{run['run_id']}.csv"
    mts_path = results_dir / "model_timeseries" / f"{run['run_id']}.csv"
    if not ts_path.exists() or not mts_path.exists():
        return None
    end = pd.to_numeric(run.get("sim_time"), errors="coerce")
    return RunSeries(str(run["policy"]), pd.read_csv(ts_path), pd.read_csv(mts_path), float(end), aimd)


def plot_results_dir(results_dir: Path) -> list[Path]:
    """Write the figures of a results folder into ``<results_dir>/figures/``; return their paths.

    * a ``compare`` folder: one timeline (:func:`comparison_figure`) of the first seed, one line
      per policy, plus one per extra seed (up to three), and bars of headline metrics per policy
      (:func:`summary_figure`, ``summary.png``);
    * a ``sweep`` folder: :func:`sweep_figure` of each headline metric against each grid key
      with more than one value;
    * a single-run folder written by ``write_result`` (``timeseries.csv`` at the top): its timeline.
    """
    results_dir = Path(results_dir)
    manifest_path = results_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    figures = results_dir / "figures"
    written: list[Path] = []
    scenario_name = (manifest.get("scenario") or {}).get("name", results_dir.name)

    runs_csv = results_dir / "runs.csv"
    if not runs_csv.exists():
        if (results_dir / "timeseries.csv").exists() and (results_dir / "model_timeseries.csv").exists():
            run = RunSeries(
                str(manifest.get("policy", results_dir.name)),
                pd.read_csv(results_dir / "timeseries.csv"),
                pd.read_csv(results_dir / "model_timeseries.csv"),
                (manifest.get("summary") or {}).get("sim_time"),
                _aimd_enabled(manifest),
            )
            title = f"{scenario_name} (seed {manifest.get('seed', '?')})"
            written.append(_save(comparison_figure([run], title=title), figures / "timeline.png"))
        return written

    runs = pd.read_csv(runs_csv)
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    kind = manifest.get("kind")
    grid = manifest.get("grid") or {}
    swept = [k for k, values in grid.items() if len(values) > 1 and PARAM_PREFIX + k in runs.columns]

    if kind == "compare" or (kind is None and not swept):
        seeds = [s for s in manifest.get("seeds", []) if s in set(ok.get("seed", []))] or sorted(set(ok["seed"]))
        for n, seed in enumerate(seeds):
            rows = ok[ok["seed"] == seed]
            aimd = _aimd_enabled(manifest)
            series = [s for _, row in rows.iterrows() if (s := _read_run_series(results_dir, row, aimd)) is not None]
            if not series:
                continue
            name = "comparison.png" if n == 0 else f"comparison__seed-{_slug(str(seed))}.png"
            fig = comparison_figure(series, title=f"{scenario_name} (seed {seed})")
            written.append(_save(fig, figures / name))
            if n >= 2:  # the first few seeds tell the story; more would only add files
                break
        try:
            written.append(_save(summary_figure(ok), figures / "summary.png"))
        except ValueError:
            pass  # no summary metric in this table

    metrics = [
        m for m in SWEEP_HEADLINE_METRICS if m in ok.columns and pd.to_numeric(ok[m], errors="coerce").notna().any()
    ]
    for key in swept:
        for metric in metrics:
            path = figures / f"sweep__{_slug(metric)}__{_slug(key)}.png"
            written.append(plot_sweep(ok, metric, key, path))
    return written


# ---------------------------------------------------------------------------------------------
# Validation: the real engine and the simulator on the same axes (sim/validate.py)
# ---------------------------------------------------------------------------------------------

#: What the validation overlay shows, one panel each: (time-series column, panel label).
OVERLAY_PANELS = (
    ("target", "adaptive target"),
    ("in_flight_tasks", "tasks in flight"),
    ("healthy_calls", "cumulative healthy calls"),
)


def validation_overlay_figure(sim_runs: Sequence[Result], real_runs: Sequence[Result], title: str = "") -> Figure:
    """Target, tasks in flight and cumulative healthy calls over time: the simulated run in black,
    every real repeat in colour (thin, so that their spread shows the real run-to-run variation)."""
    fig = _new_figure(8.0, 2.2 * len(OVERLAY_PANELS) + 0.6)
    axes = fig.subplots(len(OVERLAY_PANELS), 1, sharex=True)
    for ax, (column, label) in zip(axes, OVERLAY_PANELS, strict=True):
        for k, result in enumerate(real_runs):
            ts = result.timeseries
            if column in ts.columns:
                ax.step(ts["time"], ts[column], where="post", lw=0.9, alpha=0.8, color=_POLICY_COLORS[k % 7])
        for result in sim_runs:
            ts = result.timeseries
            if column in ts.columns:
                ax.step(ts["time"], ts[column], where="post", lw=1.6, color="black")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s): simulated for the simulator, wall clock for the real engine")
    handles = [Line2D([], [], color="black", lw=1.6, label="simulator")]
    handles += [Line2D([], [], color=_POLICY_COLORS[k % 7], lw=0.9, label=f"real r{k}") for k in range(len(real_runs))]
    axes[0].legend(handles=handles, loc="upper left", fontsize="small", ncol=min(4, len(handles)))
    if title:
        axes[0].set_title(title)
    return fig


def plot_validation_overlay(
    sim_runs: Sequence[Result], real_runs: Sequence[Result], path: Path, title: str = ""
) -> Path:
    """Write :func:`validation_overlay_figure` as a PNG."""
    return _save(validation_overlay_figure(sim_runs, real_runs, title), Path(path))
