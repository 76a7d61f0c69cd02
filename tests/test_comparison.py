"""Comparison tables: ratios against a baseline policy and statistics over seeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sim.comparison import compare_table, format_number, seed_statistics


def test_compare_table_ratios_and_seed_statistics() -> None:
    runs = pd.DataFrame(
        {
            "run_id": ["r0", "r1", "r2", "r3", "r4"],
            "status": ["ok", "ok", "ok", "ok", "failed"],
            "policy": ["fixed", "fixed", "localized", "localized", "localized"],
            "seed": [0, 1, 0, 1, 2],
            "stop_reason": ["completed", "completed", "completed", "max_time", None],
            "sim_time": [10.0, 20.0, 5.0, 10.0, None],
            "healthy_calls": [0, 0, 4, 6, None],
        }
    )
    table = compare_table(runs, ["fixed", "localized"])
    assert table.loc["sim_time", "fixed"] == 15.0 and table.loc["sim_time", "localized"] == 7.5
    assert table.loc["sim_time", "localized/fixed"] == 0.5
    assert table.loc["healthy_calls", "localized/fixed"] == float("inf")  # x / 0
    assert table.loc["stop_reason", "localized"] == "completed x1, max_time x1"
    stats = seed_statistics(runs, ["fixed", "localized"])
    row = stats.loc[("sim_time", "localized")]
    assert (row["mean"], row["p50"], row["min"], row["max"], row["runs"]) == (7.5, 7.5, 5.0, 10.0, 2)
    assert row["p95"] == pytest.approx(9.75)
    assert row["std"] == pytest.approx(3.5355339, rel=1e-6)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (math.nan, "-"), (math.inf, "inf"), (300.0, "300"), (0.18283, "0.1828"), ("max_time", "max_time")],
)
def test_format_number(value, text):
    assert format_number(value) == text
