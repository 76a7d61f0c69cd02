"""Pictures of results (matplotlib, Agg canvas, no display needed). Plots never re-run a simulation.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas instead of through
``pyplot``, so that nothing depends on a display or on pyplot's global state (safe in worker
processes and in notebooks alike). Every ``*_figure`` function returns the Figure, so that tests
and notebooks can inspect it; the ``plot_*`` functions write PNGs.

* :func:`plot_comparison` / :func:`comparison_figure`: several runs (usually one per policy) over
  time, on stacked panels that share the time axis, plus the blocked evaluations per reason.
* :func:`plot_sweep` / :func:`sweep_figure`: one metric against one swept parameter, one line
  per policy, error bars over seeds (the ``runs.csv`` layout of a results folder).
* :func:`plot_results_dir`: reads a results folder (``manifest.json``, ``runs.csv``,
  ``timeseries/``, ``model_timeseries/``) and writes sensible PNGs into ``figures/``.

A policy has one colour in every figure (:data:`POLICY_COLORS`, :func:`policy_colors`); models
use another palette (:func:`model_styles`), so a model line is never mistaken for a policy.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from .results import find_series, read_call_latency, read_series
from .row_group_admission import REASONS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .results import Result

#: Bins used to average "calls in flight" over time: raw series flicker too fast to read.
IN_FLIGHT_BINS = 300
#: Candidate metrics plotted against each swept parameter by :func:`plot_results_dir`; only those
#: that carry information are drawn (see :func:`informative_sweep_metrics`).
SWEEP_HEADLINE_METRICS = (
    "sim_time",
    "time_to_all_rows",
    "time_to_50pct_rows",
    "healthy_calls_per_second",
    "rows_per_second",
    "observed_max_target",
    "max_deferred",
    "rate_limited_calls",
)
PARAM_PREFIX = "param:"
DPI = 110
#: Values whose largest is more than this many times their smallest (positive) one go on a log scale.
LOG_SCALE_RATIO = 20.0

# ---------------------------------------------------------------------------------------------
# Colours: one per policy, everywhere
# ---------------------------------------------------------------------------------------------

#: The colour of each built-in policy, in every figure and notebook.
POLICY_COLORS: Mapping[str, str] = {"fixed": "#7f7f7f", "global": "#d62728", "localized": "#1f77b4"}
#: Colours for other (plug-in) policies, picked by a stable hash of the name (see :func:`policy_color`).
EXTRA_POLICY_COLORS = ("#9467bd", "#8c564b", "#bcbd22", "#17becf", "#e377c2", "#ff7f0e", "#2ca02c", "#393b79")
#: Models get their own palette (ColorBrewer Dark2 without its grey), never a policy colour.
MODEL_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
MODEL_LINESTYLES = ("-", "--", ":", "-.")


def policy_color(name: str) -> str:
    """The policy's colour: fixed for built-ins, a stable hash of the name otherwise (the same in
    every process and figure, unlike ``hash()``)."""
    if name in POLICY_COLORS:
        return POLICY_COLORS[name]
    return EXTRA_POLICY_COLORS[zlib.crc32(name.encode()) % len(EXTRA_POLICY_COLORS)]


def policy_colors(names: Sequence[str]) -> dict[str, str]:
    """Colours for the policies of one figure: :func:`policy_color`, except that two plug-ins
    whose hashes collide are told apart (in sorted-name order, so the result is deterministic)."""
    colors = {name: POLICY_COLORS[name] for name in names if name in POLICY_COLORS}
    for name in sorted(set(names) - set(colors)):
        start = EXTRA_POLICY_COLORS.index(policy_color(name))
        free = [
            EXTRA_POLICY_COLORS[(start + k) % len(EXTRA_POLICY_COLORS)]
            for k in range(len(EXTRA_POLICY_COLORS))
            if EXTRA_POLICY_COLORS[(start + k) % len(EXTRA_POLICY_COLORS)] not in colors.values()
        ]
        colors[name] = free[0] if free else policy_color(name)
    return {name: colors[name] for name in names}


def model_styles(models: Sequence[str]) -> dict[str, dict[str, str]]:
    """Colour and line style per model, by position in the scenario (so the same scenario draws
    its models alike in every figure); the line style changes once the palette wraps."""
    n = len(MODEL_COLORS)
    return {
        m: {"color": MODEL_COLORS[i % n], "ls": MODEL_LINESTYLES[(i // n) % len(MODEL_LINESTYLES)]}
        for i, m in enumerate(models)
    }


# ---------------------------------------------------------------------------------------------
# Axis labels with units
# ---------------------------------------------------------------------------------------------

#: Human axis labels (with units, as in docs/metrics.md) for the metrics the figures plot.
METRIC_LABELS: Mapping[str, str] = {
    "sim_time": "simulated run time (s)",
    "time_to_all_rows": "time to all rows (s)",
    "time_to_50pct_rows": "time to 50% of rows (s)",
    "time_to_first_row": "time to first row (s)",
    "healthy_calls_per_second": "healthy calls per second (calls/s)",
    "rows_per_second": "rows per second (rows/s)",
    "healthy_calls": "healthy calls (calls)",
    "successful_calls": "successful calls (calls)",
    "rate_limited_calls": "rate-limited calls (429s)",
    "observed_max_target": "observed max target (row groups)",
    "max_row_groups_in_flight": "max row groups in flight (groups)",
    "max_deferred": "max deferred tasks (tasks)",
    "completed_rows": "completed rows (rows)",
    "row_group_latency_p50": "row-group latency p50 (s)",
    "row_group_latency_p95": "row-group latency p95 (s)",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def human_number(value: Any) -> str:
    """A number as people write it: ``11,620``, ``60``, ``0.183``, ``0.0258``; never ``1.2e+04``
    or ``0.000e+00``. Missing values read ``-``; magnitudes below 0.001 read ``<0.001``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    v = float(value)
    if not np.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 1000 or (v == int(v) and abs(v) >= 1):
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    if abs(v) >= 0.001:
        return f"{v:.3g}"
    return "<0.001" if v > 0 else ">-0.001"


def spans_decades(values: Sequence[float] | np.ndarray) -> bool:
    """True if the positive values differ by more than :data:`LOG_SCALE_RATIO` (a log axis reads better)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size and v.max() > LOG_SCALE_RATIO * v.min())


def _quiet_log_ticks(axis: Any) -> None:
    """No labels on a log axis' minor ticks: they are what collides."""
    axis.set_minor_formatter(NullFormatter())


def _log_ticks(axis: Any, values: Sequence[float] | np.ndarray) -> None:
    """A log axis labelled in plain numbers at 1-2-5 steps (1 per decade when it spans many), no
    minor labels."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    decades = np.log10(v.max() / v.min()) if v.size else 0.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades > 3 else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: human_number(x)))
    _quiet_log_ticks(axis)


@dataclass(frozen=True)
class RunSeries:
    """What a timeline needs from one run: a label, its two time-series tables and its counters."""

    label: str
    timeseries: pd.DataFrame
    model_timeseries: pd.DataFrame
    end: float | None = None  # the run's sim_time (the series stop at their last change)
    aimd: bool = True  # False: no request-admission controller (the per-model limit is the static cap)
    blocked: Mapping[str, int] = field(default_factory=dict)  # blocked evaluations per reason (totals)
    evaluations: int | None = None  # adaptive evaluations (None: unknown; 0: fixed cap)
    scenario: str | None = None
    seed: int | None = None

    @classmethod
    def from_result(cls, result: Result, label: str | None = None) -> RunSeries:
        return cls(
            label or result.policy,
            result.timeseries,
            result.model_timeseries,
            result.summary["sim_time"],
            result.scenario.request_admission.enabled,
            dict(result.blocked_reasons),
            int(result.summary.get("adaptive_evaluations", 0)),
            result.scenario.name,
            result.seed,
        )

    @property
    def end_time(self) -> float:
        times = [float(t["time"].max()) for t in (self.timeseries, self.model_timeseries) if len(t)]
        if self.end is not None and self.end == self.end:  # not NaN
            times.append(float(self.end))
        return max(times, default=0.0)


def default_title(series: Sequence[RunSeries]) -> str:
    """``<scenario>: <policies>, seed <s>`` from the runs' own names."""
    scenarios = list(dict.fromkeys(s.scenario for s in series if s.scenario))
    seeds = list(dict.fromkeys(s.seed for s in series if s.seed is not None))
    parts = [", ".join(scenarios) or "runs"]
    title = f"{parts[0]}: {', '.join(s.label for s in series)}"
    if seeds:
        title += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
    return title


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


def _new_figure(width: float, height: float, hspace_inches: float = 0.0, top_inches: float = 0.6) -> Figure:
    """A Figure on an Agg canvas with fixed margins (in inches): a layout engine would cost more
    than the drawing itself on many-panel timelines."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=0.8 / width,
        right=1 - 0.2 / width,
        bottom=0.6 / height,
        top=1 - top_inches / height,
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


def _step_xy(ts: pd.DataFrame, column: str, run_end: float) -> tuple[np.ndarray, np.ndarray]:
    """A step function's corners, held to ``run_end``."""
    t = np.append(ts["time"].to_numpy(float), run_end)
    values = ts[column].to_numpy(float)
    return t, np.append(values, values[-1])


def _set_count_scale(ax: Axes, peaks: Sequence[float]) -> None:
    """Symmetric log (linear below 1) when the runs' peaks span decades, else linear from 0."""
    if spans_decades(peaks) or (peaks and min(peaks) == 0 and max(peaks) > LOG_SCALE_RATIO):
        ax.set_yscale("symlog", linthresh=1.0)
        _quiet_log_ticks(ax.yaxis)
        ax.set_ylim(0, 2.5 * max(peaks))  # headroom: autoscale would put the top line on the frame
        return
    ax.set_ylim(bottom=0)


def _limit_is_informative(mts: pd.DataFrame) -> bool:
    """A limit panel shows something only if some model's limit moved or some model cooled down."""
    if mts.empty:
        return False
    moved = mts.groupby(mts["model"].astype(str), observed=True)["current_limit"].nunique().gt(1).any()
    return bool(moved or (mts["cooldown_until"] > mts["time"]).any())


def _identical_leaders(frames: Sequence[pd.DataFrame], ends: Sequence[float]) -> list[int]:
    """For each frame, the index of the first frame equal to it (its own index if none is)."""
    leaders: list[int] = []
    for i, frame in enumerate(frames):
        match = next(
            (j for j in range(i) if leaders[j] == j and ends[j] == ends[i] and frames[j].equals(frame)),
            i,
        )
        leaders.append(match)
    return leaders


def _blocked_rows(series: Sequence[RunSeries]) -> list[str]:
    """Reasons (in the real check order) that blocked at least one evaluation in some run."""
    return [r for r in REASONS if any(s.blocked.get(r, 0) > 0 for s in series)]


def comparison_figure(
    runs: Sequence[RunSeries | Result], title: str | None = None, until: float | None = None
) -> Figure:
    """Runs over time on stacked panels sharing the time axis, one colour per policy.

    1. adaptive target (dashed) and active row groups (solid);
    2. cumulative healthy calls (solid) and completed rows (dashed; left out while no run completed a row);
    3. deferred (429) tasks (solid) and queued ready tasks (dotted): the work that can block growth;
    4. per run, calls in flight per model (time-averaged per bin), and per run whose limit moved
       or whose models cooled down, the per-model limit with cooldowns shaded (the model's colour).

    Below, off the time axis: evaluations of the target blocked per reason, totals over each run
    (the recorded series hold no per-reason counts over time; panel 3 shows when deferred work
    existed, the only time the ``deferred_tasks`` reason can block).

    Count axes switch to a symmetric-log scale when the runs' peaks span decades. ``until`` sets
    the time axis to ``[0, until]``; by default :func:`auto_time_window` picks it, and a figure
    whose axis cuts a run says so and names the run's real length. Each run's lines stop at its end.
    """
    series = [r if isinstance(r, RunSeries) else RunSeries.from_result(r) for r in runs]
    if not series:
        raise ValueError("comparison_figure needs at least one run")
    colors = policy_colors([s.label for s in series])
    models = _models_of(series)
    styles = model_styles(models)
    longest = max(s.end_time for s in series)
    end = auto_time_window([s.end_time for s in series]) if until is None else float(until)
    end = end if end > 0 else 1.0
    cut = [s for s in series if s.end_time > end * (1 + 1e-9)]
    # Runs whose model series are identical share one set of model panels (drawing them twice says nothing).
    leader = _identical_leaders([s.model_timeseries for s in series], [s.end_time for s in series])
    twins = {i: [s.label for j, s in enumerate(series) if leader[j] == i] for i in set(leader)}
    limit_panels = [
        leader[i] == i and _limit_is_informative(s.model_timeseries[s.model_timeseries["time"] <= end])
        for i, s in enumerate(series)
    ]
    reasons = _blocked_rows(series)

    n_time = 3 + len(twins) + sum(limit_panels)
    panel_h = 1.75
    bar_h = 0.9 + 0.22 * len(reasons) * len(series) if reasons else 0.0
    top = 0.75 if cut else 0.6
    height = 0.6 + top + panel_h * n_time + (bar_h + 0.9 if reasons else 0.0)
    fig = _new_figure(11.0, height, hspace_inches=0.45, top_inches=top)
    if reasons:
        outer = fig.add_gridspec(
            2, 1, height_ratios=[panel_h * n_time, bar_h], hspace=1.0 / ((panel_h * n_time + bar_h) / 2)
        )
        time_spec, bar_spec = outer[0].subgridspec(n_time, 1, hspace=0.45 / 1.4), outer[1]
    else:
        time_spec, bar_spec = fig.add_gridspec(n_time, 1, hspace=0.45 / 1.4), None
    axes: list[Axes] = []
    for k in range(n_time):
        axes.append(fig.add_subplot(time_spec[k], sharex=axes[0] if axes else None))
    ax_rg, ax_cum, ax_q = axes[0], axes[1], axes[2]
    rg_peaks: list[float] = []
    cum_peaks: list[float] = []
    q_peaks: list[float] = []
    any_rows = any((s.timeseries.loc[s.timeseries["time"] <= end, "completed_rows"] > 0).any() for s in series)
    edges = np.linspace(0.0, end, IN_FLIGHT_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    panel = 3

    for i, (run, show_limit) in enumerate(zip(series, limit_panels, strict=True)):
        color = colors[run.label]
        run_end = min(run.end_time, end)
        ts = run.timeseries[run.timeseries["time"] <= run_end]
        if len(ts):
            rg_peaks.append(float(max(ts["active_row_groups"].max(), ts["target"].max())))
            ax_rg.step(*_step_xy(ts, "active_row_groups", run_end), where="post", color=color, lw=1.4)
            ax_rg.step(*_step_xy(ts, "target", run_end), where="post", color=color, lw=1.2, ls="--")
            cum_peaks.append(float(ts["healthy_calls"].max()))
            ax_cum.step(*_step_xy(ts, "healthy_calls", run_end), where="post", color=color, lw=1.4)
            if any_rows:
                cum_peaks.append(float(ts["completed_rows"].max()))
                ax_cum.step(*_step_xy(ts, "completed_rows", run_end), where="post", color=color, lw=1.2, ls="--")
            q_peaks += [float(ts["deferred_tasks"].max()), float(ts["queued_tasks"].max())]
            ax_q.step(*_step_xy(ts, "deferred_tasks", run_end), where="post", color=color, lw=1.4)
            ax_q.step(*_step_xy(ts, "queued_tasks", run_end), where="post", color=color, lw=1.0, ls=":")

        if leader[i] != i:
            continue
        label = ", ".join(twins[i]) + (" (identical)" if len(twins[i]) > 1 else "")
        ax_in = axes[panel]
        ax_lim = axes[panel + 1] if show_limit else None
        panel += 2 if show_limit else 1
        mts = run.model_timeseries
        mts = mts[mts["time"] <= run_end]
        caps: set[int] = set()
        if len(mts):
            by_model = mts.assign(model=mts["model"].astype(str)).groupby("model", sort=False, observed=True)
            for name, rows in by_model:
                style = styles[str(name)]
                times = rows["time"].to_numpy(float)
                in_flight = binned_mean(times, rows["in_flight"].to_numpy(float), edges, run_end)
                ax_in.plot(centres, in_flight, lw=1.2, **style)
                limit = rows["current_limit"].to_numpy(float)
                caps.update(int(v) for v in np.unique(limit))
                if ax_lim is not None:
                    ax_lim.step(np.append(times, run_end), np.append(limit, limit[-1]), where="post", lw=1.3, **style)
                    for start, stop in cooldown_spans(rows):
                        ax_lim.axvspan(start, min(stop, run_end), color=style["color"], alpha=0.15, lw=0)
        ax_in.set_ylabel("calls in flight")
        ax_in.set_title(f"{label}: calls in flight per model (mean per bin)", fontsize=9, loc="left")
        ax_in.set_ylim(bottom=0, top=ax_in.get_ylim()[1] * 1.3)  # headroom for the note
        if ax_lim is None:
            cap_text = f"{min(caps)}-{max(caps)}" if len(caps) > 1 else (str(next(iter(caps))) if caps else "?")
            kind = "AIMD limit never moved" if run.aimd else "no request-admission controller"
            ax_in.text(
                0.995,
                0.95,
                f"{kind}: per-model cap {cap_text} calls throughout, no cooldowns (limit panel left out)",
                transform=ax_in.transAxes,
                ha="right",
                va="top",
                fontsize=7.5,
                color="#444444",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        if ax_lim is not None:
            if run.aimd:
                ax_lim.set_ylabel("AIMD limit (calls)")
                ax_lim.set_title(f"{label}: AIMD current limit per model, cooldown shaded", fontsize=9, loc="left")
            else:
                ax_lim.set_ylabel("request cap (calls)")
                ax_lim.set_title(
                    f"{label}: static cap per model (no request-admission controller), Retry-After cooldown shaded",
                    fontsize=9,
                    loc="left",
                )
            ax_lim.set_ylim(bottom=0)

    ax_rg.set_ylabel("row groups")
    _set_count_scale(ax_rg, rg_peaks)
    ax_rg.set_title("adaptive target (dashed) and active row groups (solid)", fontsize=9, loc="left")
    ax_cum.set_ylabel("calls" + (" / rows" if any_rows else ""))
    _set_count_scale(ax_cum, cum_peaks)
    cum_title = "cumulative healthy calls (solid) and completed rows (dashed)"
    if not any_rows:
        cum_title = "cumulative healthy calls (no run completed a row in this window)"
    ax_cum.set_title(cum_title, fontsize=9, loc="left")
    ax_q.set_ylabel("tasks")
    _set_count_scale(ax_q, q_peaks)
    ax_q.set_title(
        "deferred 429 tasks (solid; only these can trigger the deferred_tasks block) and queued ready tasks (dotted)",
        fontsize=9,
        loc="left",
    )
    # A run whose scheduler series (the target aside) repeat an earlier run's is drawn under it: say so.
    same = _identical_leaders(
        [s.timeseries.drop(columns=["target"], errors="ignore") for s in series], [s.end_time for s in series]
    )
    run_handles = [
        Line2D(
            [],
            [],
            color=colors[s.label],
            lw=2,
            label=s.label + (f" (= {series[same[i]].label})" if same[i] != i else ""),
        )
        for i, s in enumerate(series)
    ]
    ax_rg.legend(
        handles=run_handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        ncols=min(len(series), 4),
        frameon=False,
    )
    model_handles = [Line2D([], [], lw=2, label=m, **styles[m]) for m in models]
    if model_handles:
        axes[3].legend(
            handles=model_handles,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=8,
            ncols=min(len(models), 5),
            frameon=False,
            title=None,
        )
    for run in cut:
        ax_rg.annotate(
            f"{run.label} runs on to {run.end_time:.3g} s →",
            xy=(1.0, 0.5 - 0.12 * cut.index(run)),
            xycoords="axes fraction",
            ha="right",
            va="center",
            fontsize=8,
            color=colors[run.label],
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    xlabel = "simulated time (s)"
    if cut:
        xlabel += f", zoomed to the first {end:.3g} s of {longest:.3g} s"
    axes[-1].set_xlabel(xlabel)
    axes[-1].set_xlim(0.0, end)
    for ax in axes:
        ax.grid(alpha=0.3)

    if bar_spec is not None:
        _blocked_panel(fig.add_subplot(bar_spec), series, reasons, colors)
    fig.suptitle(title or default_title(series), y=1 - 0.2 / height)
    if cut:
        names = ", ".join(f"{r.label} ({r.end_time:.3g} s)" for r in cut)
        fig.text(
            0.5,
            1 - 0.48 / height,
            f"time axis zoomed to 0-{end:.3g} s: cut off {names}",
            ha="center",
            va="center",
            fontsize=9,
            style="italic",
            color="#444444",
        )
    return fig


def _blocked_panel(ax: Axes, series: Sequence[RunSeries], reasons: Sequence[str], colors: Mapping[str, str]) -> None:
    """Horizontal bars: blocked evaluations per reason (rows) and run (bars), count as text."""
    height = 0.62 / len(series)
    counts: list[float] = []
    for i, run in enumerate(series):
        y = np.arange(len(reasons)) + (i - (len(series) - 1) / 2) * height
        values = np.array([run.blocked.get(r, 0) for r in reasons], dtype=float)
        counts += list(values)
        label = f"{run.label}: {run.evaluations} evaluations" if run.evaluations else run.label
        if run.evaluations == 0:
            label = f"{run.label} (fixed cap: no evaluations)"
        ax.barh(y, values, height=height * 0.9, color=colors[run.label], label=label)
        for yy, v in zip(y, values, strict=True):
            if v > 0:
                ax.text(v, yy, f" {int(v)}", va="center", ha="left", fontsize=7)
    # Reason names inside the panel, above their bars: the figure's left margin is sized for numbers.
    ax.set_yticks([])
    ax.set_ylim(len(reasons) - 0.5, -0.75)
    for k, reason in enumerate(reasons):
        ax.text(0.003, k - 0.47, reason, transform=ax.get_yaxis_transform(), fontsize=8, va="center", ha="left")
    if spans_decades(counts):
        ax.set_xscale("symlog", linthresh=1.0)
        _quiet_log_ticks(ax.xaxis)
    ax.set_xlim(left=0, right=max(counts, default=1) * (40 if spans_decades(counts) else 1.7))  # room for the legend
    ax.set_xlabel("blocked evaluations of the adaptive target (count, totals over each run)")
    ax.set_title(
        "why growth stopped: blocked evaluations per reason (run totals)",
        fontsize=9,
        loc="left",
    )
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="x")


def plot_comparison(results: Sequence[Result], path: Path) -> Path:
    """Write :func:`comparison_figure` of ``results`` (one line per run, labelled by policy) to ``path``."""
    return _save(comparison_figure(results), path)


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


def informative_sweep_metrics(
    runs: pd.DataFrame, param: str, metrics: Sequence[str] = SWEEP_HEADLINE_METRICS
) -> list[str]:
    """The metrics worth a figure against ``param``: present, not constant over the ok runs, not
    the same information as a metric already kept (equal, proportional or inversely proportional
    run by run: ``time_to_all_rows`` is ``sim_time`` when every run completes), and not the swept
    value itself (``observed_max_target`` under a cap that always binds is the cap)."""
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    swept = pd.to_numeric(ok[_param_column(ok, param)], errors="coerce").to_numpy(float)
    kept: list[str] = []
    kept_values: list[np.ndarray] = []
    for metric in metrics:
        if metric not in ok.columns:
            continue
        values = pd.to_numeric(ok[metric], errors="coerce").to_numpy(float)
        finite = values[np.isfinite(values)]
        if finite.size == 0 or np.all(finite == finite[0]):
            continue
        if np.allclose(values, swept, equal_nan=True):
            continue
        if any(_same_information(values, other) for other in kept_values):
            continue
        kept.append(metric)
        kept_values.append(values)
    return kept


def _same_information(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` is ``b`` times a constant, or a constant over ``b``, run by run (missing in
    the same runs): e.g. ``rows_per_second`` of runs that all complete is ``total_rows / sim_time``."""
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or np.any(a == 0) or np.any(b == 0):
        return bool(a.size and np.allclose(a, b))
    return bool(np.allclose(a / b, (a / b)[0], rtol=1e-9) or np.allclose(a * b, (a * b)[0], rtol=1e-9))


def sweep_figure(runs: pd.DataFrame, metric: str, param: str) -> Figure:
    """``metric`` against the swept ``param``: one line per policy, error bars = std over seeds.

    With several swept parameters, each policy gets one line per combination of the others (same
    colour, another line style). Lines are nudged sideways a little so that equal values and their
    error bars stay visible. Either axis goes to a log scale when its values span decades; only the
    swept values are labelled on a log x axis (minor labels would collide).
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
    colors = policy_colors([str(p) for p in policies])
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
            color=colors[str(policy)],
            label=str(line),
        )
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(sorted(numeric), labels=[f"{v:g}" for v in sorted(numeric)])
        ax.xaxis.set_minor_locator(NullLocator())
    elif positions is not None:
        ax.set_xticks(list(positions.values()), labels=[str(v) for v in positions])
    if spans_decades(table["mean"]) and (table["mean"] > 0).all():
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, table["mean"])
    on_diagonal = is_numeric and any(
        np.allclose(rows["mean"].to_numpy(float), pd.to_numeric(rows["value"]).to_numpy(float))
        for _, rows in table.groupby("line")
    )
    if on_diagonal:
        # A line sits on y = x (e.g. a target that always reaches the cap): draw it, so the eye can tell which.
        xs = np.array(sorted(numeric), dtype=float)
        ax.plot(xs, xs, color="black", lw=0.8, ls=":", label=f"= {key}", zorder=0)
    seeds = int(table["count"].max()) if len(table) else 0
    ax.set_xlabel(key)
    ax.set_ylabel(metric_label(metric))
    scenario = _scenario_of(runs)
    ax.set_title(
        f"{scenario + ': ' if scenario else ''}{metric} vs {key}\n"
        f"mean ± std over {seeds} seed{'s' if seeds != 1 else ''}{_seed_list(runs)}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=8)
    return fig


def _scenario_of(runs: pd.DataFrame) -> str:
    if "scenario" not in runs.columns:
        return ""
    return ", ".join(map(str, dict.fromkeys(runs["scenario"].dropna())))


def _seed_list(runs: pd.DataFrame) -> str:
    if "seed" not in runs.columns or runs.empty:
        return ""
    seeds = sorted(set(runs["seed"].tolist()))
    return f" ({', '.join(map(str, seeds))})" if len(seeds) <= 6 else f" ({seeds[0]}..{seeds[-1]})"


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
    """One small bar chart per metric: mean over seeds per policy, error bar = std over seeds.

    Metrics that are all zero or all missing are left out (no information); a metric whose
    policies differ by decades gets a log axis; each bar carries its value.
    """
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs

    def informative(metric: str) -> bool:
        if metric not in ok.columns:
            return False
        values = pd.to_numeric(ok[metric], errors="coerce")
        return bool(values.notna().any() and values.fillna(0).ne(0).any())

    left_out = [m for m in metrics if m in ok.columns and not informative(m)]
    metrics = [m for m in metrics if informative(m)]
    if not metrics:
        raise ValueError("none of the summary metrics is in the runs table with a non-zero value")
    policies = list(dict.fromkeys(ok["policy"].astype(str)))
    colors = policy_colors(policies)
    cols = min(3, len(metrics))
    rows_n = -(-len(metrics) // cols)
    fig = _new_figure(3.6 * cols + 0.6, 2.6 * rows_n + 1.1, hspace_inches=0.5, top_inches=0.8)
    fig.subplots_adjust(wspace=0.4)
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    seeds = int(ok.groupby("policy").size().max()) if len(ok) else 0
    for ax, metric in zip(axes, metrics, strict=False):
        values = pd.to_numeric(ok[metric], errors="coerce").groupby(ok["policy"].astype(str))
        mean, std = values.mean().reindex(policies), values.std().reindex(policies).fillna(0.0)
        heights = mean.to_numpy(float)
        ax.bar(
            range(len(policies)),
            np.nan_to_num(heights),
            yerr=std.to_numpy(float),
            color=[colors[p] for p in policies],
            capsize=3,
        )
        if spans_decades(heights):
            ax.set_yscale("log")
            _log_ticks(ax.yaxis, heights)
        for x, h in enumerate(heights):
            text = "not reached" if not np.isfinite(h) else human_number(h)
            ax.annotate(
                text,
                (x, h if np.isfinite(h) and h > 0 else 0),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.margins(y=0.15)
        ax.set_xticks(range(len(policies)), labels=policies, fontsize=8)
        ax.set_title(metric_label(metric), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    scenario = _scenario_of(ok)
    fig.suptitle(
        f"{scenario + ': ' if scenario else ''}mean ± std over {seeds} seed{'s' if seeds != 1 else ''}{_seed_list(ok)}"
        + (f"\nleft out, 0 or not reached under every policy: {', '.join(left_out)}" if left_out else ""),
        fontsize=10,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# A results folder
# ---------------------------------------------------------------------------------------------


def call_latency_figure(bins: pd.DataFrame, title: str = "") -> Figure:
    """Cumulative share of each model's calls by latency, from ``Result.call_latency`` (one line per
    model and outcome: successes solid, 429 answers dotted; each step is one histogram bin, so the
    curve is exact at bin edges; docs/metrics.md, "Call latency")."""
    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(bins["model"].astype(str)))
    styles = model_styles(models)
    for (model, outcome), group in bins.groupby(["model", "outcome"], sort=False, observed=True):
        upper = np.where(np.isfinite(group["upper"]), group["upper"], group["lower"]).astype(float)
        share = np.cumsum(group["count"].to_numpy()) / group["count"].sum()
        upper, share = np.append(group["lower"].iloc[0], upper), np.append(0.0, share)  # from 0 at the first bin
        dotted = outcome != "success"
        label = f"{model} ({'429' if dotted else 'ok'}, {int(group['count'].sum())} calls)"
        ax.step(upper, share, where="post", color=styles[str(model)]["color"], ls=":" if dotted else "-", label=label)
    positive = bins.loc[bins["upper"] > 0, "upper"]
    if len(positive):
        ax.set_xscale("log")
    ax.set_xlabel("call latency (s, upper bin edge)")
    ax.set_ylabel("share of calls at or below")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    ax.set_title(title or "call latency per model", fontsize="medium")
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _aimd_enabled(manifest: dict) -> bool:
    return bool(((manifest.get("scenario") or {}).get("request_admission") or {}).get("enabled", True))


def _blocked_of(row: Mapping[str, Any]) -> dict[str, int]:
    """``blocked_<reason>`` counts of a runs.csv row or a summary (missing reasons: 0)."""
    out = {}
    for reason in REASONS:
        value = pd.to_numeric(row.get(f"blocked_{reason}"), errors="coerce")
        out[reason] = int(value) if value == value and value is not None else 0
    return out


def _int_or_none(value: Any) -> int | None:
    value = pd.to_numeric(value, errors="coerce")
    return int(value) if value is not None and value == value else None


def _read_run_series(
    results_dir: Path, run: pd.Series, aimd: bool = True, scenario: str | None = None
) -> RunSeries | None:
    ts_path = find_series(results_dir / "timeseries", str(run["run_id"]))
    mts_path = find_series(results_dir / "model_timeseries", str(run["run_id"]))
    if ts_path is None or mts_path is None:
        return None
    end = pd.to_numeric(run.get("sim_time"), errors="coerce")
    return RunSeries(
        str(run["policy"]),
        read_series(ts_path),
        read_series(mts_path),
        float(end),
        aimd,
        _blocked_of(run),
        _int_or_none(run.get("adaptive_evaluations")),
        scenario,
        _int_or_none(run.get("seed")),
    )


def plot_results_dir(results_dir: Path) -> list[Path]:
    """Write the figures of a results folder into ``<results_dir>/figures/``; return their paths.

    * a ``compare`` folder: one timeline (:func:`comparison_figure`) of the first seed, one line
      per policy, plus one per extra seed (up to three), and bars of headline metrics per policy
      (:func:`summary_figure`, ``summary.png``);
    * a ``sweep`` folder: :func:`sweep_figure` of each headline metric that varies
      (:func:`informative_sweep_metrics`) against each grid key with more than one value;
    * a single-run folder written by ``write_result`` (``timeseries.parquet``, or ``.csv``, at the top): its timeline,
      and :func:`call_latency_figure` (``call_latency.png``) when it holds ``call_latency.parquet``.
    """
    results_dir = Path(results_dir)
    manifest_path = results_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    figures = results_dir / "figures"
    written: list[Path] = []
    scenario_name = (manifest.get("scenario") or {}).get("name", results_dir.name)

    runs_csv = results_dir / "runs.csv"
    if not runs_csv.exists():
        ts_path, mts_path = find_series(results_dir, "timeseries"), find_series(results_dir, "model_timeseries")
        if ts_path is not None and mts_path is not None:
            summary = manifest.get("summary") or {}
            run = RunSeries(
                str(manifest.get("policy", results_dir.name)),
                read_series(ts_path),
                read_series(mts_path),
                summary.get("sim_time"),
                _aimd_enabled(manifest),
                _blocked_of(summary),
                _int_or_none(summary.get("adaptive_evaluations")),
                scenario_name,
                _int_or_none(manifest.get("seed")),
            )
            written.append(_save(comparison_figure([run]), figures / "timeline.png"))
        bins = read_call_latency(results_dir)  # None for folders written before the histograms
        if bins is not None and len(bins):
            written.append(
                _save(call_latency_figure(bins, f"{scenario_name}: call latency"), figures / "call_latency.png")
            )
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
            series = [
                s
                for _, row in rows.iterrows()
                if (s := _read_run_series(results_dir, row, aimd, scenario_name)) is not None
            ]
            if not series:
                continue
            name = "comparison.png" if n == 0 else f"comparison__seed-{_slug(str(seed))}.png"
            written.append(_save(comparison_figure(series), figures / name))
            if n >= 2:  # the first few seeds tell the story; more would only add files
                break
        try:
            written.append(_save(summary_figure(ok), figures / "summary.png"))
        except ValueError:
            pass  # no summary metric in this table

    for key in swept:
        for metric in informative_sweep_metrics(ok, key):
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
                ax.step(
                    ts["time"],
                    ts[column],
                    where="post",
                    lw=0.9,
                    alpha=0.8,
                    color=EXTRA_POLICY_COLORS[k % len(EXTRA_POLICY_COLORS)],
                )
        for result in sim_runs:
            ts = result.timeseries
            if column in ts.columns:
                ax.step(ts["time"], ts[column], where="post", lw=1.6, color="black")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s): simulated for the simulator, wall clock for the real engine")
    handles = [Line2D([], [], color="black", lw=1.6, label="simulator")]
    handles += [
        Line2D([], [], color=EXTRA_POLICY_COLORS[k % len(EXTRA_POLICY_COLORS)], lw=0.9, label=f"real r{k}")
        for k in range(len(real_runs))
    ]
    axes[0].legend(handles=handles, loc="upper left", fontsize="small", ncol=min(4, len(handles)))
    if title:
        axes[0].set_title(title)
    return fig


def plot_validation_overlay(
    sim_runs: Sequence[Result], real_runs: Sequence[Result], path: Path, title: str = ""
) -> Path:
    """Write :func:`validation_overlay_figure` as a PNG."""
    return _save(validation_overlay_figure(sim_runs, real_runs, title), Path(path))
