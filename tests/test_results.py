"""The immutable result, its tables, and its atomic on-disk layout."""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from sim import load_scenario, simulate, write_result
from sim.errors import InputError, RunFailed
from sim.results import (
    OutputPathError,
    ResultsWriteError,
    atomic_directory,
    find_series,
    read_call_latency,
    read_series,
    summary_metric_names,
)

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
    assert names == {
        "manifest.json",
        "summary.csv",
        "columns.csv",
        "models.csv",
        "timeseries.parquet",
        "model_timeseries.parquet",
        "row_groups.parquet",
        "call_latency.parquet",
        "call_latency_stats.csv",
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["policy"] == result.policy and manifest["seed"] == result.seed
    assert manifest["scenario"]["name"] == "rpm-capacity"
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "completed_rows"] == 80
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]


def test_series_round_trip_through_parquet_exactly(result, tmp_path):
    out = write_result(result, tmp_path / "run")
    for name in ("timeseries", "model_timeseries", "row_groups"):
        path = find_series(out, name)
        assert path is not None and path.suffix == ".parquet"
        pd.testing.assert_frame_equal(read_series(path), getattr(result, name), check_exact=True)
    assert read_series(out / "model_timeseries.parquet")["model"].cat.categories.tolist() == ["limited", "judge"]


def test_call_latency_tables_round_trip_and_agree_with_the_call_counts(result, tmp_path):
    bins, stats = result.call_latency, result.call_latency_stats
    assert list(bins.columns) == ["model", "outcome", "lower", "upper", "count"]
    assert (bins["count"] > 0).all() and (bins["lower"] < bins["upper"]).all()
    assert list(zip(stats["model"], stats["outcome"], strict=True)) == [
        ("limited", "success"),
        ("limited", "rate_limited"),
        ("judge", "success"),
        ("judge", "rate_limited"),
    ]
    per = bins.groupby(["model", "outcome"])["count"].sum()
    models = result.models.set_index("model")
    assert per[("limited", "rate_limited")] == models.loc["limited", "rate_limited_calls"] > 0
    assert per[("judge", "success")] == models.loc["judge", "successful_calls"]
    assert (
        stats.set_index(["model", "outcome"])["count"]
        == per.reindex(stats.set_index(["model", "outcome"]).index, fill_value=0)
    ).all()
    assert result.summary["call_latency_p50[judge]"] == stats.loc[2, "p50"]
    out = write_result(result, tmp_path / "run")
    pd.testing.assert_frame_equal(read_call_latency(out), bins, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(out / "call_latency_stats.csv"), stats, check_exact=False, rtol=1e-15)


def test_a_folder_written_before_the_latency_histograms_reads_as_none(result, tmp_path):
    out = write_result(result, tmp_path / "run")
    (out / "call_latency.parquet").unlink()
    assert read_call_latency(out) is None


def test_older_csv_series_are_still_found_and_read(result, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    result.timeseries.to_csv(folder / "timeseries.csv", index=False)
    path = find_series(folder, "timeseries")
    assert path == folder / "timeseries.csv"
    pd.testing.assert_frame_equal(read_series(path), result.timeseries)
    assert find_series(folder, "model_timeseries") is None
    result.timeseries.iloc[:1].to_parquet(folder / "timeseries.parquet")
    assert find_series(folder, "timeseries") == folder / "timeseries.parquet"  # parquet preferred


def test_failed_write_leaves_nothing(result, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(ResultsWriteError, match=r"run: cannot write the results: No space left on device \(errno 28\)"):
        write_result(result, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_results_folder_is_a_run_failure_in_one_line(result, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(ResultsWriteError) as info:
        write_result(result, tmp_path / "run")
    assert isinstance(info.value, RunFailed) and "\n" not in str(info.value)
    assert str(info.value).endswith("run: cannot create the results folder: Read-only file system (errno 30)")


@pytest.mark.parametrize("kind", ["folder", "file", "cwd", "dangling-symlink"])
def test_write_result_refuses_an_existing_target_and_touches_nothing(result, tmp_path, monkeypatch, kind):
    target = tmp_path / "results"
    if kind == "folder":
        target.mkdir()
        (target / "thresholds.toml").write_text("keep me")
        (target / "earlier-run").mkdir()
    elif kind == "file":
        target.write_text("keep me")
    elif kind == "dangling-symlink":
        target.symlink_to(tmp_path / "nowhere")
    else:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "keep.txt").write_text("keep me")
        target = Path(".")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputPathError, match="already exists") as info:
        write_result(result, target)
    assert isinstance(info.value, InputError)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if kind == "folder":
        assert (target / "thresholds.toml").read_text() == "keep me"


def test_a_too_long_folder_name_is_refused_before_anything_is_created(result, tmp_path):
    with pytest.raises(OutputPathError, match="the folder name is 300 bytes long; the limit is 255"):
        write_result(result, tmp_path / ("x" * 300))
    assert list(tmp_path.iterdir()) == []


def test_commit_never_replaces_a_folder_that_appeared(tmp_path):
    final = tmp_path / "out"
    tmp, commit = atomic_directory(final)
    (tmp / "new.txt").write_text("new")
    assert tmp.name.startswith(".partial-out-") and not final.exists()
    final.mkdir()  # an empty folder: os.replace would silently replace it
    with pytest.raises(ResultsWriteError, match=f"appeared while the results were written; they are kept in {tmp}"):
        commit()
    assert list(final.iterdir()) == [] and (tmp / "new.txt").read_text() == "new"
    final.rmdir()
    (final / "user").mkdir(parents=True)
    with pytest.raises(ResultsWriteError):
        commit()
    assert [p.name for p in final.iterdir()] == ["user"] and (tmp / "new.txt").exists()


def test_commit_renames_into_place(tmp_path):
    final = tmp_path / "deeper" / "out"
    tmp, commit = atomic_directory(final)
    (tmp / "new.txt").write_text("new")
    assert commit() == final
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert not tmp.exists() and [p.name for p in final.parent.iterdir()] == ["out"]


def test_atomic_directory_refuses_an_existing_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(OutputPathError, match="already exists"):
        atomic_directory(final)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (final / "old.txt").read_text() == "old"


@pytest.mark.parametrize("name", ["rpm-capacity", "window-recovery"])
def test_summary_metric_names_are_the_keys_a_run_writes(name):
    scenario = load_scenario(SCENARIOS / f"{name}.toml", ["row_groups.count=4"])
    assert summary_metric_names(scenario) == list(simulate(scenario).summary)
