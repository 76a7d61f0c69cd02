"""Executors change how long a sweep takes, never its numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import load_scenario
from sim.executors import ExecutorUnavailable, LocalExecutor, SerialExecutor, make_executor
from sim.sweep import RunSpec, execute_run, plan_sweep, resolve_scenario_path, run_sweep


def _plan():
    base = load_scenario(resolve_scenario_path("window-recovery"), ["row_groups.count=8"])
    return plan_sweep(base, grid={"scheduler.initial_target": [1, 3]}, policies=["global", "localized"], seeds=[0, 1])


def test_process_executor_gives_the_same_runs_csv_as_serial(tmp_path: Path) -> None:
    plan = _plan()
    serial = run_sweep(plan, tmp_path / "serial", executor=SerialExecutor(), progress=False, figures=False)
    with LocalExecutor(jobs=2) as local:
        run_sweep(plan, tmp_path / "local", executor=local, progress=False, figures=False)
    assert len(serial.runs) == 8 and serial.failed == 0
    assert (tmp_path / "serial" / "runs.csv").read_bytes() == (tmp_path / "local" / "runs.csv").read_bytes()
    for run_id in serial.runs["run_id"]:
        name = f"{run_id}.csv"
        assert (tmp_path / "serial" / "timeseries" / name).read_bytes() == (
            tmp_path / "local" / "timeseries" / name
        ).read_bytes()


def test_local_executor_yields_every_outcome_once() -> None:
    specs = [r.spec for r in _plan().runs[:4]]
    with LocalExecutor(jobs=2) as ex:
        outcomes = list(ex.run(specs))
    assert sorted(o.run_id for o in outcomes) == [s.run_id for s in specs]
    assert all(o.status == "ok" and o.summary["completed_rows"] == 32 for o in outcomes)


def test_execute_run_turns_a_bad_spec_into_a_failed_outcome() -> None:
    good = _plan().runs[0].spec
    bad_scenario = dict(good.scenario, row_groups={"count": 0})
    outcome = execute_run(RunSpec("r9", bad_scenario, "global", 0, {}))
    assert outcome.status == "failed" and outcome.summary == {} and outcome.timeseries is None
    assert outcome.error.startswith("ScenarioError: run r9: row_groups.count")
    unknown = execute_run(RunSpec("r8", good.scenario, "no-such-policy", 0, {}))
    assert unknown.status == "failed" and "no-such-policy" in unknown.error
    plugin = execute_run(RunSpec("r7", good.scenario, "global", 0, {}, ("no_such_module_xyz:register",)))
    assert plugin.status == "failed" and "cannot import module 'no_such_module_xyz'" in plugin.error


def test_make_executor_names() -> None:
    assert isinstance(make_executor("serial"), SerialExecutor)
    local = make_executor("local", jobs=3)
    assert isinstance(local, LocalExecutor) and local.jobs == 3
    assert make_executor("local").jobs >= 1
    with pytest.raises(ExecutorUnavailable, match="unknown executor 'gpu'"):
        make_executor("gpu")
    with pytest.raises(ExecutorUnavailable, match="--jobs must be >= 1"):
        make_executor("local", jobs=0)


def test_missing_dask_executor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "sim.dask_executor", raising=False)
    monkeypatch.setitem(sys.modules, "dask", None)  # `import dask` now raises ImportError
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ExecutorUnavailable, match=r"pip install -e '\.\[distributed\]'"):
        make_executor("dask")
