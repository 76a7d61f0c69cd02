"""The Dask executor: same outcomes as running in-process, streaming, failure handling, missing extra.

One LocalCluster (2 worker processes, 1 thread each, no dashboard, random ports) serves the whole
module. Functions sent to the workers are defined here and pickled by value, because the worker
processes cannot import this test module by name.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sim
from sim.executors import ExecutorUnavailable, make_executor
from sim.sweep import RunOutcome, RunSpec, SweepPlan, execute_run, plan_sweep, run_sweep

#: Seconds to wait for the cluster's workers (start-up or a nanny's restart after a death). A worker
#: process imports dask and this package: a few seconds, tens on a loaded 2-core machine.
WORKER_RESTART_TIMEOUT = 120

SCENARIO = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "healthy-bottleneck.toml"


def _plan() -> SweepPlan:
    """2 grid values x 2 policies x 2 seeds = 8 small runs (a few hundredths of a second each)."""
    return plan_sweep(
        sim.load_scenario(SCENARIO, ["models.flaky.rate_limit.end=5"]),
        grid={"row_groups.count": [16, 32]},
        policies=("global", "localized"),
        seeds=(0, 1),
        scenario_source=str(SCENARIO),
    )


def _same_summary(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Exactly equal, key by key (NaN equals NaN; the summary holds no wall-clock values)."""
    assert list(got) == list(want)
    for key, value in want.items():
        both_nan = isinstance(value, float) and math.isnan(value) and math.isnan(got[key])
        assert both_nan or got[key] == value, (key, got[key], value)


# --- functions executed on the workers (pickled by value) -------------------------------------


def _raise_for(bad_run_id: str, attempts_dir: str, spec: RunSpec) -> RunOutcome:
    """execute_run, except that ``bad_run_id`` raises on every attempt (and leaves a mark per attempt)."""
    if spec.run_id == bad_run_id:
        Path(attempts_dir, f"attempt-{time.monotonic_ns()}-{os.getpid()}").touch()
        raise RuntimeError(f"infrastructure broke for {spec.run_id}")
    return execute_run(spec)


def _die_for(bad_run_id: str, attempts_dir: str, gate: str, spec: RunSpec) -> RunOutcome:
    """execute_run, except that ``bad_run_id`` waits for ``gate``, then kills its worker process on
    every attempt."""
    if spec.run_id == bad_run_id:
        _wait_for(gate)
        Path(attempts_dir, f"attempt-{time.monotonic_ns()}-{os.getpid()}").touch()
        os._exit(17)
    return execute_run(spec)


def _wait_for(gate: str, seconds: float = 60) -> None:
    """Wait until ``gate`` exists; bounded, so that a broken test cannot hang the suite."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


def _gated(gate: str, marks: str, gated: frozenset[str], spec: RunSpec) -> RunOutcome:
    """execute_run, but runs in ``gated`` wait until the test creates ``gate``; marks every run started."""
    if spec.run_id in gated:
        _wait_for(gate)
    Path(marks, spec.run_id).touch()
    return execute_run(spec)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def executor() -> Iterator[Any]:
    pytest.importorskip("distributed")
    import cloudpickle
    import dask

    from sim.dask_executor import DaskExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # The LocalCluster closes for good a nanny whose worker has not re-registered within
    # lost-worker-timeout (Dask default 15 s, read when the worker is removed); a restart on a
    # loaded machine can take longer, which left the module without workers. Allow the same time
    # as the waits here.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": f"{WORKER_RESTART_TIMEOUT}s"}):
        ex = DaskExecutor(n_workers=2, threads_per_worker=1, processes=True, retries=1)
        try:
            ex.client.wait_for_workers(2, timeout=WORKER_RESTART_TIMEOUT)
            yield ex
        finally:
            ex.close()
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def plan() -> SweepPlan:
    return _plan()


@pytest.fixture(scope="module")
def specs(plan: SweepPlan) -> list[RunSpec]:
    return [run.spec for run in plan.runs]


@pytest.fixture(scope="module")
def expected(specs: list[RunSpec]) -> dict[str, RunOutcome]:
    """The same runs executed in this process, as the serial executor does."""
    return {spec.run_id: execute_run(spec) for spec in specs}


def _assert_same_as_in_process(got: RunOutcome, want: RunOutcome) -> None:
    assert got.status == want.status == "ok", (got.error, want.error)
    assert got.error is None
    _same_summary(got.summary, want.summary)
    pd.testing.assert_frame_equal(got.timeseries, want.timeseries)
    pd.testing.assert_frame_equal(got.model_timeseries, want.model_timeseries)


# --- tests -----------------------------------------------------------------------------------


def test_cluster_runs_give_the_same_outcomes_as_in_process(executor, specs, expected) -> None:
    outcomes = list(executor.run(specs))
    assert sorted(o.run_id for o in outcomes) == sorted(expected)
    assert executor.n_workers == 2
    for outcome in outcomes:
        _assert_same_as_in_process(outcome, expected[outcome.run_id])
    # The grid points really differ, so equality above is not vacuous.
    completed = {o.run_id: o.summary["completed_rows"] for o in outcomes}
    assert sorted(set(completed.values())) == [16, 32]


def test_dask_sweep_folder_matches_serial_sweep(executor, plan, tmp_path) -> None:
    """The whole results folder, byte for byte, except timing.csv (wall-clock seconds)."""
    serial = run_sweep(plan, tmp_path / "serial", executor=make_executor("serial"), progress=False, figures=False)
    dask = run_sweep(plan, tmp_path / "dask", executor=executor, progress=False, figures=False)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    want, got = files(serial.out), files(dask.out)
    assert want.pop("timing.csv") and got.pop("timing.csv")
    assert sorted(got) == sorted(want)
    assert "runs.csv" in got and len([k for k in got if k.startswith("timeseries/")]) == len(plan.runs)
    for name in want:
        assert got[name] == want[name], name
    assert dask.failed == 0 and list(dask.runs["status"]) == ["ok"] * len(plan.runs)


def test_outcomes_stream_in_completion_order(executor, specs, monkeypatch, tmp_path) -> None:
    # The first-submitted run cannot finish before the test has received the three others: an
    # executor that collected everything before yielding would never get past next().
    gate, first = tmp_path / "gate", specs[0].run_id
    monkeypatch.setattr(executor, "fn", functools.partial(_gated, str(gate), str(tmp_path), frozenset({first})))
    stream = executor.run(specs[:4])
    early = [next(stream).run_id for _ in range(3)]
    assert sorted(early) == sorted(s.run_id for s in specs[1:4])
    gate.touch()
    last = next(stream)
    assert (last.run_id, last.status) == (first, "ok")
    assert list(stream) == []


def test_raising_task_is_retried_once_then_recorded_failed(executor, specs, expected, tmp_path, monkeypatch) -> None:
    bad = specs[1].run_id
    monkeypatch.setattr(executor, "fn", functools.partial(_raise_for, bad, str(tmp_path)))
    outcomes = {o.run_id: o for o in executor.run(specs[:4])}

    assert set(outcomes) == {s.run_id for s in specs[:4]}
    failed = outcomes.pop(bad)
    assert failed.status == "failed"
    assert "RuntimeError: infrastructure broke for " + bad in failed.error
    assert "2 attempt(s)" in failed.error
    assert failed.summary == {} and failed.timeseries is None and failed.model_timeseries is None
    assert len(list(tmp_path.iterdir())) == 2  # first attempt + one retry
    for run_id, outcome in outcomes.items():
        _assert_same_as_in_process(outcome, expected[run_id])


def test_dying_worker_is_retried_once_then_recorded_failed(executor, specs, expected, tmp_path, monkeypatch) -> None:
    # Dask charges a dying worker to every run assigned to it, queued ones included (it keeps runs
    # on the scheduler only for batches larger than twice the cluster's threads), so the bad run
    # dies only once the good runs are back: the deaths then count against the bad run alone.
    bad, gate, attempts = specs[2].run_id, tmp_path / "gate", tmp_path / "attempts"
    attempts.mkdir()
    monkeypatch.setattr(executor, "fn", functools.partial(_die_for, bad, str(attempts), str(gate)))
    stream = executor.run(specs[:3])
    good = {o.run_id: o for o in (next(stream), next(stream))}
    gate.touch()
    (failed,) = stream

    assert sorted(good) == sorted(s.run_id for s in specs[:2])
    assert failed.run_id == bad and failed.status == "failed"
    assert failed.error.startswith("KilledWorker") and "\n" not in failed.error
    assert len(list(attempts.iterdir())) == 2  # killed two workers: first attempt + one retry
    for run_id, outcome in good.items():
        _assert_same_as_in_process(outcome, expected[run_id])
    # The nannies restart both workers (a fresh process imports this package: allow for a loaded
    # machine); later tests need both.
    executor.client.wait_for_workers(2, timeout=WORKER_RESTART_TIMEOUT)


def test_abandoned_run_cancels_queued_tasks(executor, specs, monkeypatch, tmp_path) -> None:
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    marks.mkdir()
    gated = frozenset(s.run_id for s in specs[1:])
    monkeypatch.setattr(executor, "fn", functools.partial(_gated, str(gate), str(marks), gated))
    stream = executor.run(specs)
    assert next(stream).run_id == specs[0].run_id
    stream.close()  # what happens on Ctrl-C or when the writer raises
    gate.touch()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _scheduler_task_count(executor) > 0:
        time.sleep(0.05)
    assert _scheduler_task_count(executor) == 0
    time.sleep(0.3)  # would be enough for queued runs to start if they had not been cancelled
    # The first run plus at most the one run already executing on each of the 2 workers.
    assert len(list(marks.iterdir())) <= 3 < len(specs)


def test_connects_to_an_existing_scheduler(executor, specs, expected) -> None:
    from sim.dask_executor import DaskExecutor

    with DaskExecutor(address=executor.address) as remote:
        (outcome,) = remote.run(specs[:1])
    _assert_same_as_in_process(outcome, expected[specs[0].run_id])
    # Closing a client does not stop a cluster it did not start.
    assert executor.n_workers == 2
    assert list(executor.run(specs[:1]))[0].status == "ok"


def test_refuses_workers_with_another_version(executor, monkeypatch) -> None:
    import sim.dask_executor as dx

    monkeypatch.setattr(dx, "_installed_version", lambda: "0.0.0-other")
    with pytest.raises(dx.WorkerVersionMismatch, match=r"admission-sim 0\.0\.0-other.*tcp://.* has 0\.1\.0"):
        dx.DaskExecutor(address=executor.address)


def test_empty_sweep_yields_nothing(executor) -> None:
    assert list(executor.run([])) == []


def test_make_executor_builds_a_dask_executor(executor, specs, expected) -> None:
    from sim.dask_executor import DaskExecutor

    with make_executor("dask", address=executor.address) as ex:
        assert isinstance(ex, DaskExecutor)
        (outcome,) = ex.run(specs[:1])
    _assert_same_as_in_process(outcome, expected[specs[0].run_id])


def test_unreachable_or_malformed_scheduler_is_a_usage_error() -> None:
    pytest.importorskip("distributed")
    with pytest.raises(ExecutorUnavailable, match=r"cannot connect to the Dask scheduler at nonsense.*missing port"):
        make_executor("dask", address="nonsense")


def test_missing_extra_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    monkeypatch.delitem(sys.modules, "sim.dask_executor", raising=False)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[distributed\]'"):
        importlib.import_module("sim.dask_executor")
    with pytest.raises(ExecutorUnavailable, match=r"pip install -e '\.\[distributed\]'"):
        make_executor("dask")


# --- helpers ---------------------------------------------------------------------------------


def _scheduler_task_count(executor: Any) -> int:
    return executor.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def test_a_local_cluster_waits_for_slow_worker_restarts_unless_the_user_said_otherwise() -> None:
    """Dask gives up a worker whose restart takes longer than lost-worker-timeout; at its default
    (15 s) a loaded machine could lose every worker and leave a sweep waiting for ever."""
    import dask

    from sim.dask_executor import WORKER_RESTART_TIMEOUT, _keep_restarting_workers

    key = "distributed.deploy.lost-worker-timeout"
    with dask.config.set({key: "15s"}):
        _keep_restarting_workers()
        assert dask.config.get(key) == WORKER_RESTART_TIMEOUT
    with dask.config.set({key: "7s"}):
        _keep_restarting_workers()
        assert dask.config.get(key) == "7s"
