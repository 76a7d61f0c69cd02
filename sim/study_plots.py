"""Heat maps of the policy study (sim/study.py): localized over global, per map cell.

Each map is one figure with two panels, healthy calls inside the 429 window and end-to-end rows/s.
A cell's colour is log2 of the localized/global ratio (blue: localized ahead, red: global ahead,
clipped at 4x), its text the ratio; cells beyond the threshold are hatched (``///`` localized
ahead, ``\\\\\\`` global ahead). Where the x axis is the window start, a black line marks when the
target's ramp to the hard cap ends without any 429 (the ``ramp`` table): a first 429 to its right
comes after the ramp. Agg canvas, no display; plots never re-run a simulation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .study import AXIS_LABELS, LOG2_CLIP, METRICS, THRESHOLD, StudyMap

DPI = 90


def _label(r: float) -> str:
    if math.isnan(r):
        return "n/a"
    if math.isinf(r):
        return "inf"
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x" if r >= 2 else f"{r:.2f}"


def _tick(value: float) -> str:
    return f"{value:g}"


def map_figure(
    cells: pd.DataFrame, smap: StudyMap, ramp: pd.DataFrame | None = None, threshold: float = THRESHOLD
) -> Figure:
    """The two heat maps of one study map from its rows of the cell table."""
    rows = cells[cells["map"] == smap.name]
    if rows.empty:
        raise ValueError(f"no cells of map {smap.name!r}")
    xs, ys = list(smap.x_values), list(smap.y_values)
    height = 0.5 * len(ys) + 1.9
    fig = Figure(figsize=(11.5, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    image = None
    for ax, (name, (_metric, label)) in zip(axes, METRICS.items(), strict=True):
        grid = rows.pivot(index="y", columns="x", values=f"ratio_{name}").reindex(index=ys, columns=xs)
        values = grid.to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.clip(np.log2(values), -LOG2_CLIP, LOG2_CLIP)
        shown = np.where(np.isnan(values), np.nan, shown)
        image = ax.imshow(shown, cmap="RdBu", vmin=-LOG2_CLIP, vmax=LOG2_CLIP, origin="lower", aspect="auto")
        for j in range(len(ys)):
            for i in range(len(xs)):
                r = values[j, i]
                strong = not math.isnan(r) and abs(math.log2(r) if r > 0 else LOG2_CLIP) > 1.2
                ax.text(i, j, _label(r), ha="center", va="center", fontsize=7, color="white" if strong else "black")
                hatch = None
                if not math.isnan(r) and r > 1 + threshold:
                    hatch = "///"
                elif not math.isnan(r) and r < 1 - threshold:
                    hatch = "\\\\\\"
                if hatch:
                    ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, hatch=hatch, lw=0, alpha=0.45))
        ax.set_xticks(range(len(xs)), [_tick(v) for v in xs])
        ax.set_yticks(range(len(ys)), [_tick(v) for v in ys])
        ax.set_xlabel(AXIS_LABELS[smap.x])
        ax.set_ylabel(AXIS_LABELS[smap.y])
        ax.set_title(f"{label}: localized / global", fontsize=10)
        _ramp_line(ax, smap, ramp, xs, ys)
    legend = [
        Patch(facecolor="white", edgecolor="grey", hatch="///", label=f"localized ahead by > {threshold:.0%}"),
        Patch(facecolor="white", edgecolor="grey", hatch="\\\\\\", label=f"global ahead by > {threshold:.0%}"),
    ]
    if smap.x == "window_start" and ramp is not None and not ramp.empty:
        legend.append(Patch(facecolor="black", label="ramp to the hard cap ends (no 429)"))
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    fig.suptitle(f"When do the policies differ? map '{smap.name}': {smap.title}", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.93, bottom=1.05 / height, top=1 - 0.55 / height, wspace=0.3)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), fraction=0.025, pad=0.02)
        bar.set_ticks([-2, -1, 0, 1, 2], labels=["1/4", "1/2", "1", "2", "4"])
        bar.set_label("localized / global (log scale)", fontsize=8)
    return fig


def _ramp_line(ax, smap: StudyMap, ramp: pd.DataFrame | None, xs: list[float], ys: list[float]) -> None:
    """Where the first 429 meets the end of the ramp, in the categorical x positions."""
    if smap.x != "window_start" or ramp is None or ramp.empty:
        return
    by_scale = dict(zip(ramp["loop_scale"], ramp["ramp_seconds"], strict=True))
    px, py = [], []
    for j, yv in enumerate(ys):
        scale = yv if smap.y == "loop_scale" else smap.fixed.loop_scale
        t = by_scale.get(scale, math.nan)
        if math.isnan(t):
            continue
        px.append(float(np.interp(t, xs, range(len(xs)), right=len(xs) - 0.5)))
        py.append(j)
    if px:
        ax.plot(px, py, color="black", lw=1.5, marker="|", markersize=12)


def plot_map(
    cells: pd.DataFrame,
    smap: StudyMap,
    path: str | Path,
    ramp: pd.DataFrame | None = None,
    threshold: float = THRESHOLD,
) -> Path:
    """Write :func:`map_figure` as a PNG, under a temporary name first, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        map_figure(cells, smap, ramp, threshold).savefig(tmp, format="png", pil_kwargs={"compress_level": 9})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
