"""How do runs compare? Side-by-side tables of policies and statistics over seeds.

Pure functions over a ``runs.csv``-shaped table (one row per run: ``policy``, ``seed``,
``status`` and the summary metrics), shared by ``compare``, ``check`` and notebooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

#: Metrics of the side-by-side compare table, in order; per-model calls and block reasons follow.
COMPARE_METRICS = (
    "stop_reason",
    "sim_time",
    "completed_rows",
    "rows_per_second",
    "successful_calls",
    "healthy_calls",
    "healthy_calls_while_limited",
    "rate_limited_calls",
    "observed_max_target",
    "max_row_groups_in_flight",
    "deferred_at_end",
)

STATISTICS: dict[str, Callable[[pd.Series], float]] = {
    "mean": lambda s: float(s.mean()),
    "p50": lambda s: float(s.quantile(0.5)),
    "p95": lambda s: float(s.quantile(0.95)),
    "min": lambda s: float(s.min()),
    "max": lambda s: float(s.max()),
    "std": lambda s: float(s.std(ddof=1)) if len(s) > 1 else 0.0,
}


def compare_metrics(runs: pd.DataFrame) -> list[str]:
    """The compare table's rows: headline metrics, calls per model, then block reasons."""
    names = [m for m in COMPARE_METRICS if m in runs.columns]
    names += [c for c in runs.columns if c.startswith("calls_ok[") or c.startswith("calls_429[")]
    names += [c for c in runs.columns if c.startswith("blocked_")]
    return names


def _ratio(value: Any, base: Any) -> float | None:
    try:
        v, b = float(value), float(base)
    except (TypeError, ValueError):
        return None
    if math.isnan(v) or math.isnan(b):
        return None
    if b == 0:
        return None if v == 0 else math.inf
    return v / b


def _mode(series: pd.Series) -> str:
    counts = series.astype(str).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{k} x{v}" for k, v in counts.items())


def compare_table(runs: pd.DataFrame, policies: Sequence[str], baseline: str | None = None) -> pd.DataFrame:
    """Metrics (rows) x policies (mean over seeds), with ``<policy>/<baseline>`` ratio columns.

    Non-numeric metrics (``stop_reason``) show their value, or each value with its count.
    Failed runs are left out.
    """
    baseline = baseline or policies[0]
    ok = runs[runs["status"] == "ok"]
    metrics = compare_metrics(ok)
    table: dict[str, list[Any]] = {}
    means: dict[str, list[Any]] = {}
    for policy in policies:
        sub = ok[ok["policy"] == policy]
        col = []
        for metric in metrics:
            values = sub[metric]
            if values.empty:
                col.append(None)
            elif pd.api.types.is_numeric_dtype(values):
                col.append(float(values.mean()))
            else:
                col.append(_mode(values))
        means[policy] = col
    for policy in policies:
        table[policy] = means[policy]
    for policy in policies:
        if policy == baseline:
            continue
        table[f"{policy}/{baseline}"] = [
            _ratio(v, b) if not isinstance(v, str) else None
            for v, b in zip(means[policy], means[baseline], strict=True)
        ]
    return pd.DataFrame(table, index=metrics)


def seed_statistics(runs: pd.DataFrame, policies: Sequence[str]) -> pd.DataFrame:
    """Per headline metric and policy: mean, p50, p95, min, max, std over seeds (ok runs only).

    Per-model calls and block reasons stay in :func:`compare_table` (means) to keep this short.
    """
    ok = runs[runs["status"] == "ok"]
    rows = []
    index = []
    for metric in COMPARE_METRICS:
        if metric not in ok.columns or not pd.api.types.is_numeric_dtype(ok[metric]):
            continue
        for policy in policies:
            values = ok.loc[ok["policy"] == policy, metric].astype(float)
            if values.empty:
                continue
            rows.append({name: fn(values) for name, fn in STATISTICS.items()} | {"runs": len(values)})
            index.append((metric, policy))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["metric", "policy"]))


def format_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if value == int(value) and abs(value) < 1e12:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def format_table(table: pd.DataFrame) -> str:
    """Compact numbers; every row keeps its full label (grep-friendly)."""
    return table.map(format_number).to_string(sparsify=False)
