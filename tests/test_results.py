"""The immutable result, its tables, and its atomic on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sim import load_scenario, simulate, write_result
from sim.results import atomic_directory

SCENARIOS = Path(__file__).resolve().parent.parent / "sim" / "scenarios"


@pytest.fixture(scope="module")
def result():
    return simulate(load_scenario(SCENARIOS / "rpm-capacity.toml", ["row_groups.count=20"]))


def test_summary_is_read_only_and_consistent(result):
    s = result.summary
    with pytest.raises(TypeError):
        s["completed_rows"] = 0  # type: ignore[index]
    assert s["completed_rows"] == 80 == s["total_rows"]
    assert s["successful_calls"] == result.columns["successful_calls"].sum() == result.models["successful_calls"].sum()
    assert s["rate_limited_calls"] == result.models["rate_limited_calls"].sum()
    assert s["calls_ok[limited]"] + s["calls_ok[judge]"] == s["successful_calls"]
    assert sum(v for k, v in s.items() if k.startswith("blocked_")) == sum(result.blocked_reasons.values())


def test_tables_have_one_row_per_column_model_and_row_group(result):
    assert list(result.columns["column"]) == ["seed", "summary", "judge"]
    assert list(result.models["model"]) == ["limited", "judge"]
    assert len(result.row_groups) == 20
    assert (result.row_groups["latency"] >= 0).all()


def test_timeseries_is_time_ordered_and_ends_at_the_final_state(result):
    ts = result.timeseries
    assert ts["time"].is_monotonic_increasing
    assert ts["time"].is_unique
    last = ts.iloc[-1]
    assert last["completed_rows"] == result.summary["completed_rows"]
    assert last["successful_calls"] == result.summary["successful_calls"]
    mts = result.model_timeseries
    assert set(mts["model"].cat.categories) == {"limited", "judge"}
    assert (mts["in_flight"] >= 0).all()
    limited = mts[mts["model"] == "limited"]
    assert limited["current_limit"].min() < 16 <= limited["current_limit"].max()  # AIMD cut and recovered


def test_write_result_layout(result, tmp_path):
    out = write_result(result, tmp_path / "run")
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "summary.csv", "timeseries.csv", "model_timeseries.csv"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["policy"] == result.policy and manifest["seed"] == result.seed
    assert manifest["scenario"]["name"] == "rpm-capacity"
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "completed_rows"] == 80
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]


def test_failed_write_leaves_nothing(result, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        write_result(result, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_only_on_commit(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp, commit = atomic_directory(final)
    (tmp / "new.txt").write_text("new")
    assert (final / "old.txt").exists() and tmp.name.startswith(".partial-out-")
    commit()
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert not tmp.exists()
