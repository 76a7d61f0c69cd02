"""Executors change how long a sweep takes, never its numbers."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
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
        name = f"{run_id}.parquet"
        assert (tmp_path / "serial" / "timeseries" / name).read_bytes() == (
            tmp_path / "local" / "timeseries" / name
        ).read_bytes()


def test_local_workers_write_their_own_series_and_send_back_only_summaries(tmp_path: Path, monkeypatch) -> None:
    """The parent writes no series of a local executor's runs: they arrive as None, already on disk."""
    import sim.sweep as sweep_mod

    seen = []
    real = sweep_mod._record
    monkeypatch.setattr(sweep_mod, "_record", lambda tmp, outcome: (seen.append(outcome), real(tmp, outcome)))
    plan = _plan()
    with LocalExecutor(jobs=2) as local:
        run_sweep(plan, tmp_path / "local", executor=local, progress=False, figures=False)
    assert len(seen) == 8 and all(o.timeseries is None and o.model_timeseries is None for o in seen)
    for o in seen:
        assert (tmp_path / "local" / "timeseries" / f"{o.run_id}.parquet").is_file()
        assert (tmp_path / "local" / "model_timeseries" / f"{o.run_id}.parquet").is_file()


def test_a_run_sends_its_series_as_parquet_bytes_when_asked_or_when_the_folder_refuses(tmp_path: Path) -> None:
    import dataclasses
    import io

    import pandas as pd

    spec = _plan().runs[0].spec
    plain = execute_run(spec)  # in memory: the frames themselves
    remote = execute_run(dataclasses.replace(spec, return_series=True))
    assert isinstance(remote.timeseries, bytes) and isinstance(remote.model_timeseries, bytes)
    for sent, frame in ((remote.timeseries, plain.timeseries), (remote.model_timeseries, plain.model_timeseries)):
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(sent)), frame)
    missing = tmp_path / "no-such-folder"  # the worker's write fails: the series come back instead
    fallback = execute_run(dataclasses.replace(spec, series_dir=str(missing)))
    assert fallback.status == "ok" and isinstance(fallback.model_timeseries, bytes)


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
    assert plugin.status == "failed" and "importing 'no_such_module_xyz'" in plugin.error


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


# ---------------------------------------------------------------------------------------------
# Worker deaths and the parent's death
# ---------------------------------------------------------------------------------------------


def _die_on(run_ids: tuple[str, ...], marker_dir: str | None, spec: RunSpec):
    """Kill the worker on the listed runs: always, or (with ``marker_dir``) on the first attempt only."""
    if spec.run_id in run_ids:
        marker = Path(marker_dir or "") / spec.run_id
        if marker_dir is None or not marker.exists():
            if marker_dir is not None:
                marker.write_text("died once")
            os._exit(3)
    return execute_run(spec)


def _exits(spec: RunSpec):
    if spec.run_id == "r0001":
        sys.exit(0)  # a plug-in or policy calling sys.exit must not end the worker
    return execute_run(spec)


def test_a_worker_that_dies_costs_one_run_and_the_others_are_kept() -> None:
    specs = [r.spec for r in _plan().runs[:5]]
    with LocalExecutor(jobs=2, fn=functools.partial(_die_on, ("r0001",), None)) as ex:
        outcomes = {o.run_id: o for o in ex.run(specs)}
    assert sorted(outcomes) == [s.run_id for s in specs]
    assert outcomes["r0001"].status == "failed"
    assert outcomes["r0001"].error == "the worker process died in each of 2 attempts (exit code 3)"
    assert all(outcomes[s.run_id].status == "ok" for s in specs if s.run_id != "r0001")
    reference = {o.run_id: o.summary for o in SerialExecutor().run(specs)}
    assert all(outcomes[r].summary == reference[r] for r in reference if r != "r0001")


def test_a_run_whose_worker_died_once_is_run_again(tmp_path: Path) -> None:
    specs = [r.spec for r in _plan().runs[:3]]
    with LocalExecutor(jobs=2, fn=functools.partial(_die_on, ("r0000", "r0002"), str(tmp_path))) as ex:
        outcomes = {o.run_id: o for o in ex.run(specs)}
    assert {r: o.status for r, o in outcomes.items()} == {"r0000": "ok", "r0001": "ok", "r0002": "ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r0000", "r0002"]


def test_with_no_retries_a_dying_worker_fails_its_run_at_once(tmp_path: Path) -> None:
    specs = [r.spec for r in _plan().runs[:2]]
    with LocalExecutor(jobs=1, fn=functools.partial(_die_on, ("r0000",), str(tmp_path)), retries=0) as ex:
        outcomes = {o.run_id: o for o in ex.run(specs)}
    assert outcomes["r0000"].error == "the worker process died in each of 1 attempts (exit code 3)"
    assert outcomes["r0001"].status == "ok"


def test_sys_exit_in_a_run_is_a_failed_run_not_a_dead_worker() -> None:
    specs = [r.spec for r in _plan().runs[:3]]
    with LocalExecutor(jobs=1, fn=_exits) as ex:
        outcomes = {o.run_id: o for o in ex.run(specs)}
    assert outcomes["r0001"].status == "failed" and outcomes["r0001"].error == "SystemExit: 0"
    assert outcomes["r0000"].status == outcomes["r0002"].status == "ok"


def test_a_sweep_with_a_dying_worker_journals_every_other_run(tmp_path: Path) -> None:
    plan = _plan()
    with LocalExecutor(jobs=2, fn=functools.partial(_die_on, ("r0002",), None)) as ex:
        report = run_sweep(plan, tmp_path / "out", executor=ex, progress=False, figures=False)
    assert report.failed == 1
    assert list(report.runs["status"]) == ["ok", "ok", "failed", "ok", "ok", "ok", "ok", "ok"]
    assert "worker process died" in report.runs.loc[2, "error"]


_ORPHAN_SCRIPT = """
import sys, time
import sim.executors as executors
from sim import load_scenario
from sim.sweep import plan_sweep, resolve_scenario_path

executors._USE_PDEATHSIG = sys.argv[1] == "pdeathsig"


def sleep_forever(spec):
    time.sleep(600)


base = load_scenario(resolve_scenario_path("window-recovery"), ["row_groups.count=2"])
specs = [r.spec for r in plan_sweep(base, policies=["global"], seeds=[0, 1]).runs]
ex = executors.LocalExecutor(jobs=2, fn=sleep_forever)
outcomes = ex.run(specs)
while len(ex.worker_pids) < 2:
    time.sleep(0.05)
print(" ".join(map(str, ex.worker_pids)), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mechanism", ["pdeathsig", "watchdog"])
def test_workers_die_when_the_parent_is_killed(mechanism: str) -> None:
    root = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, mechanism], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30  # a bound on waiting, not a speed assertion
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [p for p in pids if _alive(p)]
        for pid in survivors:  # never leave a process behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        assert survivors == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_execute_run_turns_a_policy_calling_sys_exit_into_a_failed_outcome() -> None:
    """A policy's ``sys.exit(0)`` inside a sweep run is that run's failure, never the sweep's success."""
    from sim.policies import POLICIES, register_policy

    @register_policy("exits-test")
    def exits(view) -> bool:  # noqa: ANN001 - a policy as a user writes it
        raise SystemExit(0)

    try:
        # cooling-2048 always has deferred work, so the policy is consulted
        base = load_scenario("cooling-2048", ["row_groups.count=8"])
        spec = plan_sweep(base, policies=["exits-test"], seeds=[0]).runs[0].spec
        outcome = execute_run(spec)
    finally:
        POLICIES.pop("exits-test")
    assert outcome.status == "failed" and outcome.error.startswith("SystemExit")
