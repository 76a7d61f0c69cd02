"""Sweeps end to end: grid expansion, runs.csv, manifest reproduction, failures, interrupt and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import sim.sweep as sweep_mod
from sim import load_scenario
from sim.cli import main
from sim.sweep import (
    JOURNAL,
    SweepError,
    parse_grid,
    plan_sweep,
    split_values,
)

SMALL = ["--set", "row_groups.count=8"]
GRID = ["--grid", "scheduler.initial_target=1,4", "--grid", "row_groups.count=8,12"]


def sweep_args(out: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "window-recovery",
        *GRID,
        "--policies",
        "localized",
        "--seeds",
        "2",
        "--executor",
        "serial",
        "--no-figures",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def test_grid_sweep_writes_one_row_per_run_and_manifest_reproduces_it(tmp_path: Path) -> None:
    out = tmp_path / "s1"
    assert main(sweep_args(out)) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8
    assert list(runs["run_id"]) == [f"r{i:04d}" for i in range(8)]
    assert list(runs.columns[:7]) == [
        "run_id",
        "status",
        "error",
        "policy",
        "seed",
        "param:scheduler.initial_target",
        "param:row_groups.count",
    ]
    assert (runs["status"] == "ok").all()
    # grid order, then policy, then seed (seeds start at the scenario's seed, 0)
    assert list(runs["seed"]) == [0, 1] * 4
    assert list(runs["param:scheduler.initial_target"]) == [1, 1, 1, 1, 4, 4, 4, 4]
    assert list(runs["param:row_groups.count"]) == [8, 8, 12, 12] * 2
    assert list(runs["total_rows"]) == [32, 32, 48, 48] * 2  # size 4 rows per group
    assert "healthy_calls_while_limited" in runs.columns
    assert "wall_seconds" not in runs.columns
    for run_id in runs["run_id"]:
        assert (out / "timeseries" / f"{run_id}.csv").is_file()
        assert (out / "model_timeseries" / f"{run_id}.csv").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sweep"
    assert manifest["grid"] == {"scheduler.initial_target": [1, 4], "row_groups.count": [8, 12]}
    assert manifest["seeds"] == [0, 1] and manifest["policies"] == ["localized"]
    assert manifest["runs"][5] == {
        "run_id": "r0005",
        "policy": "localized",
        "seed": 1,
        "overrides": {"scheduler.initial_target": 4, "row_groups.count": 8},
    }
    assert not list(tmp_path.glob(".partial-*"))

    again = tmp_path / "s2"
    assert main(["sweep", "--from-manifest", str(out / "manifest.json"), "--out", str(again), "--no-figures"]) == 0
    assert (again / "runs.csv").read_bytes() == (out / "runs.csv").read_bytes()


def test_bad_grid_key_is_a_usage_error_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bad"
    code = main(["sweep", "window-recovery", "--grid", "scheduler.initial_targt=1,2", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--grid scheduler.initial_targt" in err and "unknown key" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_one_bad_grid_value_is_a_failed_row_and_the_sweep_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "partly"
    code = main(
        ["sweep", "window-recovery", *SMALL, "--grid", "scheduler.initial_target=0,2", "--policies", "global"]
        + ["--executor", "serial", "--no-figures", "--out", str(out)]
    )
    assert code == 1
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["failed", "ok"]
    assert "scheduler.initial_target" in runs.loc[0, "error"] and "greater than or equal to 1" in runs.loc[0, "error"]
    assert runs.loc[1, "completed_rows"] == 32
    assert "FAILED r0000" in capsys.readouterr().err


def test_exception_during_a_run_is_recorded_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim

    real = sim.simulate

    def flaky(scenario, policy=None, seed=None, overrides=()):
        if seed == 1:
            raise RuntimeError("boom in the model")
        return real(scenario, policy=policy, seed=seed, overrides=overrides)

    monkeypatch.setattr(sim, "simulate", flaky)
    out = tmp_path / "flaky"
    code = main(
        ["sweep", "window-recovery", *SMALL, "--policies", "fixed", "--seeds", "3", "--executor", "serial"]
        + ["--no-figures", "--out", str(out)]
    )
    assert code == 1
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["ok", "failed", "ok"]
    assert runs.loc[1, "error"] == "RuntimeError: boom in the model"
    assert pd.isna(runs.loc[1, "sim_time"]) and runs.loc[2, "sim_time"] > 0


def test_interrupted_sweep_keeps_finished_runs_and_resume_matches_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference"
    assert main(sweep_args(reference)) == 0

    real = sweep_mod.execute_run
    calls = {"n": 0}

    def interrupted_on_third(spec):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(spec)

    monkeypatch.setattr(sweep_mod, "execute_run", interrupted_on_third)
    out = tmp_path / "work" / "sweep"
    assert main(sweep_args(out)) == 130
    assert not out.exists()
    partials = list(out.parent.glob(".partial-sweep-*"))
    assert len(partials) == 1
    partial = partials[0]
    err = capsys.readouterr().err
    assert f"admission-sim sweep --resume {partial}" in err
    assert "after 2 of 8 runs" in err
    done = [json.loads(line)["run_id"] for line in (partial / JOURNAL).read_text().splitlines()]
    assert done == ["r0000", "r0001"]
    assert sorted(p.name for p in (partial / "timeseries").iterdir()) == ["r0000.csv", "r0001.csv"]
    assert not (partial / "runs.csv").exists()

    monkeypatch.setattr(sweep_mod, "execute_run", real)
    ran: list[str] = []

    def counting(spec):
        ran.append(spec.run_id)
        return real(spec)

    monkeypatch.setattr(sweep_mod, "execute_run", counting)
    assert main(["sweep", "--resume", str(partial), "--executor", "serial", "--no-figures"]) == 0
    assert ran == [f"r{i:04d}" for i in range(2, 8)]  # only the missing runs
    assert not partial.exists()
    assert (out / "runs.csv").read_bytes() == (reference / "runs.csv").read_bytes()
    assert sorted(p.name for p in (out / "timeseries").iterdir()) == [f"r{i:04d}.csv" for i in range(8)]
    assert not (out / JOURNAL).exists()


def test_resume_refuses_a_finished_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "done"
    assert main(sweep_args(out)) == 0
    assert main(["sweep", "--resume", str(out)]) == 2
    assert "not an unfinished sweep folder" in capsys.readouterr().err


def test_out_folder_that_exists_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").mkdir()
    assert main(sweep_args(tmp_path / "taken")) == 2
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Units: grid parsing, planning, comparison tables, the while-limited metric
# ---------------------------------------------------------------------------------------------


def test_parse_grid_reads_toml_values_and_keeps_brackets_together() -> None:
    assert split_values("[1,2], [3] ,'a,b'") == ["[1,2]", "[3]", "'a,b'"]
    grid = parse_grid(["scheduler.initial_target=1,8", "models.cooling.rate_limit.pattern=never,always", "x=[1,2],1.5"])
    assert grid == {
        "scheduler.initial_target": [1, 8],
        "models.cooling.rate_limit.pattern": ["never", "always"],
        "x": [[1, 2], 1.5],
    }
    with pytest.raises(SweepError, match="expected key=v1,v2"):
        parse_grid(["scheduler.initial_target"])
    with pytest.raises(SweepError, match="empty value"):
        parse_grid(["a=1,,2"])
    with pytest.raises(SweepError, match="given twice"):
        parse_grid(["a=1", "a=2"])


def test_plan_orders_grid_then_policy_then_seed() -> None:
    base = load_scenario(sweep_mod.resolve_scenario_path("window-recovery"))
    plan = plan_sweep(base, grid={"scheduler.initial_target": [1, 2]}, policies=["global", "localized"], seeds=[5, 6])
    assert [(r.run_id, r.overrides["scheduler.initial_target"], r.policy, r.seed) for r in plan.runs] == [
        ("r0000", 1, "global", 5),
        ("r0001", 1, "global", 6),
        ("r0002", 1, "localized", 5),
        ("r0003", 1, "localized", 6),
        ("r0004", 2, "global", 5),
        ("r0005", 2, "global", 6),
        ("r0006", 2, "localized", 5),
        ("r0007", 2, "localized", 6),
    ]
    assert plan.runs[4].spec.scenario["scheduler"]["initial_target"] == 2
    assert (
        plan.digest()
        == plan_sweep(
            base, grid={"scheduler.initial_target": [1, 2]}, policies=["global", "localized"], seeds=[5, 6]
        ).digest()
    )


def test_compare_from_python_matches_the_cli_folder(tmp_path: Path) -> None:
    from sim.sweep import compare

    base = load_scenario(sweep_mod.resolve_scenario_path("window-recovery"), ["row_groups.count=8"])
    table = compare(base, ["global", "localized"], seeds=[0, 1])
    assert list(table.columns) == ["global", "localized", "localized/global"]
    assert (
        main(
            [
                "compare",
                "window-recovery",
                "--set",
                "row_groups.count=8",
                "--policies",
                "global,localized",
                "--seeds",
                "2",
            ]
            + ["--out", str(tmp_path / "c"), "--no-figures", "--jobs", "1"]
        )
        == 0
    )
    runs = pd.read_csv(tmp_path / "c" / "runs.csv")
    assert table.loc["sim_time", "localized"] == pytest.approx(
        runs.loc[runs["policy"] == "localized", "sim_time"].mean()
    )
