"""Sweeps end to end: grid expansion, runs.csv, manifest reproduction, failures, interrupt and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import sim.sweep as sweep_mod
from sim import load_scenario
from sim.cli import main
from sim.errors import RunFailed
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
        assert (out / "timeseries" / f"{run_id}.parquet").is_file()
        assert (out / "model_timeseries" / f"{run_id}.parquet").is_file()
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
    assert sorted(p.name for p in (partial / "timeseries").iterdir()) == ["r0000.parquet", "r0001.parquet"]
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
    assert sorted(p.name for p in (out / "timeseries").iterdir()) == [f"r{i:04d}.parquet" for i in range(8)]
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


# ---------------------------------------------------------------------------------------------
# Data safety: folder names, the final rename, torn journals, full disks, manifests, caps
# ---------------------------------------------------------------------------------------------


def _small_plan(**kwargs):
    base = load_scenario(sweep_mod.resolve_scenario_path("window-recovery"), ["row_groups.count=8"])
    return plan_sweep(base, policies=["localized"], seeds=[0, 1, 2, 3], **kwargs)


def _run(plan, out: Path, **kwargs):
    from sim.executors import SerialExecutor

    return sweep_mod.run_sweep(plan, out, executor=SerialExecutor(), progress=False, figures=False, **kwargs)


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real = sweep_mod.execute_run
    calls = {"n": 0}

    def interrupted(spec):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt
        return real(spec)

    monkeypatch.setattr(sweep_mod, "execute_run", interrupted)


@pytest.fixture(scope="module")
def reference_runs_csv(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("reference") / "ref"
    _run(_small_plan(), out)
    return (out / "runs.csv").read_bytes()


def test_identical_sweeps_started_in_the_same_second_get_different_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_mod.time, "time_ns", lambda: 1_767_268_800_123_456_789)
    plan = _small_plan()
    first, second = sweep_mod.default_out(plan), sweep_mod.default_out(plan)
    assert first != second and first.parent == second.parent == Path("results/window-recovery")
    assert first.name.startswith(f"sweep-20260101-120000.123456-{plan.digest()}-")


def test_a_final_folder_that_appears_during_the_sweep_is_never_replaced_and_the_journal_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_runs_csv: bytes
) -> None:
    final = tmp_path / "out"
    real = sweep_mod._finalize_tables

    def then_someone_takes_the_name(plan, tmp):
        runs = real(plan, tmp)
        final.mkdir()  # an empty folder: a plain os.rename would silently replace it
        return runs

    monkeypatch.setattr(sweep_mod, "_finalize_tables", then_someone_takes_the_name)
    with pytest.raises(sweep_mod.SweepRunFailed, match="appeared") as info:
        _run(_small_plan(), final)
    assert isinstance(info.value, RunFailed) and "\n" not in str(info.value)
    partial = info.value.partial_dir
    assert f"--resume {partial} --out OTHER" in str(info.value)
    assert final.is_dir() and list(final.iterdir()) == []
    assert {p.name for p in partial.iterdir()} >= {JOURNAL, sweep_mod.STATE, "manifest.json", "runs.csv"}
    monkeypatch.setattr(sweep_mod, "_finalize_tables", real)
    from sim.executors import SerialExecutor

    other = tmp_path / "other"
    sweep_mod.resume_sweep(partial, out=other, executor=SerialExecutor(), progress=False, figures=False)
    assert (other / "runs.csv").read_bytes() == reference_runs_csv
    assert not partial.exists() and list(final.iterdir()) == []


def test_resume_after_a_torn_last_journal_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_runs_csv: bytes
) -> None:
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(sweep_mod.SweepInterrupted) as info:
        _run(_small_plan(), tmp_path / "out")
    partial = info.value.partial_dir
    journal = partial / JOURNAL
    with open(journal, "a", encoding="utf-8") as fh:
        fh.write('{"run_id": "r0002", "status": "ok", "summ')  # the process died mid-write
    monkeypatch.undo()
    from sim.executors import SerialExecutor

    report = sweep_mod.resume_sweep(partial, executor=SerialExecutor(), progress=False, figures=False)
    assert report.failed == 0
    assert (tmp_path / "out" / "runs.csv").read_bytes() == reference_runs_csv


def test_a_full_disk_while_journaling_is_one_line_and_the_folder_stays_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_runs_csv: bytes
) -> None:
    import errno

    real = sweep_mod._record

    def disk_fills_on_the_third_run(tmp, outcome):
        if outcome.run_id == "r0002":
            with open(tmp / JOURNAL, "a", encoding="utf-8") as fh:
                fh.write('{"run_id": "r0002", "st')  # the part of the line that still fit
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, outcome)

    monkeypatch.setattr(sweep_mod, "_record", disk_fills_on_the_third_run)
    with pytest.raises(sweep_mod.SweepRunFailed) as info:
        _run(_small_plan(), tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, RunFailed)
    assert (
        "cannot record run r0002: No space left on device (errno 28); the 2 runs journaled so far are kept" in message
    )
    partial = info.value.partial_dir
    assert partial.name.startswith(".partial-out-") and not (tmp_path / "out").exists()
    monkeypatch.setattr(sweep_mod, "_record", real)
    from sim.executors import SerialExecutor

    sweep_mod.resume_sweep(partial, executor=SerialExecutor(), progress=False, figures=False)
    assert (tmp_path / "out" / "runs.csv").read_bytes() == reference_runs_csv


def test_runs_without_an_outcome_after_running_are_a_run_failure(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sweep_mod, "_record", lambda tmp, outcome: None)  # nothing journaled
    with pytest.raises(sweep_mod.SweepRunFailed, match="runs without an outcome after running"):
        _run(_small_plan(), tmp_path / "out")


def test_a_grid_with_a_toml_date_is_refused_before_anything_runs() -> None:
    grid = parse_grid(["description=1979-05-27,plain"])
    with pytest.raises(SweepError, match=r"--grid description: 1979-05-27 is a date, which a manifest cannot store"):
        _small_plan(grid=grid)
    with pytest.raises(SweepError, match="is a time"):
        _small_plan(grid=parse_grid(["description=07:32:00"]))


def test_numpy_grid_values_are_stored_as_plain_json(tmp_path: Path) -> None:
    import numpy as np

    plan = _small_plan(grid={"scheduler.initial_target": np.arange(1, 3)})
    manifest = plan.manifest()
    assert manifest["grid"] == {"scheduler.initial_target": [1, 2]}
    again = sweep_mod.plan_from_manifest(json.loads(json.dumps(manifest)))
    assert [r.spec.scenario for r in again.runs] == [r.spec.scenario for r in plan.runs]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"kind": "sweep", "scenario": {"name": "\xff"}}', "cannot read: not UTF-8 text"),
        (b"{not json", "malformed manifest: not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed manifest"),
        (
            b'{"kind": "sweep", "scenario": {}, "policies": ["global"], "seeds": [0], "runs": [{"run_id": "r0"}]}',
            "malformed manifest: runs.0.policy: Field required (and 2 more problems)",
        ),
        (
            b'{"kind": "sweep", "scenario": {}, "policies": ["global"], "seeds": [true], "runs": []}',
            "malformed manifest: seeds.0: Input should be a valid integer",
        ),
    ],
    ids=["non-utf8", "not-json", "deep", "missing-run-keys", "bool-seed"],
)
def test_a_bad_manifest_is_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    with pytest.raises(SweepError) as info:
        sweep_mod.plan_from_manifest(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_a_special_file_as_manifest_fails_at_once(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo)
    with pytest.raises(SweepError, match="cannot read: a named pipe"):
        sweep_mod.plan_from_manifest(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(SweepError, match="cannot read: a character device"):
            sweep_mod.plan_from_manifest("/dev/zero")


def test_seed_and_grid_caps_are_checked_before_planning() -> None:
    with pytest.raises(SweepError, match="--seed -1: seeds must be >= 0"):
        sweep_mod.seed_list(-1, 3)
    with pytest.raises(SweepError, match=f"--seeds 5000: at most {sweep_mod.MAX_SEEDS} seeds"):
        sweep_mod.seed_list(0, 5000)
    with pytest.raises(SweepError, match="seed -2: seeds must be in"):
        base = load_scenario(sweep_mod.resolve_scenario_path("window-recovery"))
        plan_sweep(base, policies=["global"], seeds=[-2])
    grid = {"scheduler.initial_target": list(range(1, 2001)), "row_groups.count": list(range(1, 2001))}
    with pytest.raises(SweepError, match=r"--grid: 4,000,000 grid points \(2000 x 2000\); at most 10,000"):
        _small_plan(grid=grid)
    with pytest.raises(SweepError, match=r"200,000 runs \(10,000 grid points x 4 policies x 5 seeds\)"):
        sweep_mod._check_size({"a": range(10), "b": range(1000)}, 4, 5)


def test_read_runs_table_refuses_empty_and_foreign_files(tmp_path: Path) -> None:
    from sim.sweep import ResultsFolderError, read_runs_table

    runs = tmp_path / "runs.csv"
    for content, expected in [
        ("", "empty; not a runs table"),
        ("a,b\n1,2\n", "no column run_id, status, error, policy, seed"),
        ("run_id,status,error,policy,seed\n", "has no runs"),
        ("run_id,status,error,policy,seed\nr0,weird,,global,0\n", "unexpected value 'weird'"),
    ]:
        runs.write_text(content)
        with pytest.raises(ResultsFolderError, match=expected) as info:
            read_runs_table(tmp_path)
        assert str(info.value).startswith(str(runs)) and "\n" not in str(info.value)
    with pytest.raises(ResultsFolderError, match="no such runs table"):
        read_runs_table(tmp_path / "nowhere")
