"""The advice as a picture: throughput against time to first checkpoint, one marker per setting.

Marker area grows with peak open rows (the memory proxy); the Pareto front is drawn in colour and
joined, the other settings tried in grey; the recommendation and the shipped default are ringed.
Built on an Agg canvas (no pyplot, no display), like the project's other figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from .advise import Advice

MODE_COLORS = {"fixed": "tab:blue", "adaptive": "tab:orange"}
#: Marker areas (points^2) for the smallest and largest peak of open rows.
MIN_AREA, MAX_AREA = 20.0, 400.0


def marker_areas(rows: pd.Series, largest: float) -> np.ndarray:
    """Area proportional to open rows, floored so the smallest setting stays visible."""
    values = rows.to_numpy(dtype=float)
    scale = largest if largest > 0 else 1.0
    return np.clip(MAX_AREA * np.nan_to_num(values, nan=0.0) / scale, MIN_AREA, MAX_AREA)


def short_label(row: pd.Series) -> str:
    """``fixed 8 x125``: the horizon and, when searched, the rows per group."""
    horizon = str(row["setting"]).split(",")[0]
    buffer = row.get("buffer_size")
    return horizon if buffer is None or pd.isna(buffer) else f"{horizon} x{int(buffer)}"


def front_figure(advice: Advice) -> Figure:
    """The figure; see the module docstring."""
    fig = Figure(figsize=(8.0, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    table = advice.evaluated[advice.evaluated["score"].notna()]
    largest = float(table["peak_open_rows_max"].max()) if not table.empty else 1.0
    others = table[~(table["on_front"] & (table["same_as"] == ""))]
    ax.scatter(
        others["time_to_first_checkpoint_mean"],
        others["throughput_mean"],
        s=marker_areas(others["peak_open_rows_mean"], largest),
        color="0.75",
        edgecolor="0.5",
        linewidth=0.5,
        label="tried, dominated",
        zorder=2,
    )
    front = advice.front.sort_values("time_to_first_checkpoint_mean", kind="mergesort")
    ax.plot(front["time_to_first_checkpoint_mean"], front["throughput_mean"], color="0.3", lw=0.8, zorder=3, ls=":")
    for mode, color in MODE_COLORS.items():
        part = front[front["mode"] == mode]
        if part.empty:
            continue
        ax.scatter(
            part["time_to_first_checkpoint_mean"],
            part["throughput_mean"],
            s=marker_areas(part["peak_open_rows_mean"], largest),
            color=color,
            edgecolor="black",
            linewidth=0.6,
            alpha=0.85,
            label=f"front, {mode}",
            zorder=4,
        )
        for _, row in part.iterrows():
            ax.annotate(
                short_label(row),
                (row["time_to_first_checkpoint_mean"], row["throughput_mean"]),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
            )
    for choice, label, color in (
        (advice.recommended, "recommended", "tab:green"),
        (advice.default, "default", "tab:red"),
    ):
        if choice is None:
            continue
        ax.scatter(
            [choice.row["time_to_first_checkpoint_mean"]],
            [choice.row["throughput_mean"]],
            s=MAX_AREA * 1.6,
            facecolor="none",
            edgecolor=color,
            linewidth=2.0,
            label=f"{label}: {choice.setting.label.split(',')[0]}",
            zorder=5,
        )
    ax.set_xlabel("time to first checkpoint (simulated s, mean over seeds)")
    ax.set_ylabel("durable throughput (rows checkpointed / s)")
    constraint = f", open rows <= {advice.max_open_rows}" if advice.max_open_rows is not None else ""
    ax.set_title(
        f"{advice.scenario.name}: objective {advice.objective.name}{constraint}\nmarker area = peak open rows",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    return fig


def plot_front(advice: Advice, path: str | Path) -> Path:
    """Write :func:`front_figure` as a PNG, under a temporary name first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    front_figure(advice).savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
