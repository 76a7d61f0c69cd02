"""The real twin: the real DataDesigner scheduler driven from a scenario (sim/twin).

Each real run takes a few seconds, most of it the child process importing the engine; runs whose
assertions do not depend on timing share one module fixture and run side by side.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import sim
from sim.errors import InputError, RunFailed
from sim.policies import POLICIES, register_policy
from sim.scenario import Scenario, scenario_from_dict
from sim.twin import (
    TESTED_VERSION,
    TwinResult,
    TwinTimeout,
    TwinUnavailable,
    TwinUnsupported,
    require_engine,
    run_twin,
    write_twin_result,
)
from sim.twin import engine as twin_engine
from tests.conftest import needs_engine

pytestmark = needs_engine


def _scenario(**parts) -> Scenario:
    data = {
        "name": parts.pop("name", "twin-unit"),
        "row_groups": parts.pop("row_groups", {"count": 8, "size": 1}),
        "columns": parts.pop("columns"),
        "models": parts.pop("models", []),
        "stop": parts.pop("stop", {"max_time": 30.0}),
        **parts,
    }
    return scenario_from_dict(data)


#: Above this load average per core other processes starve the real run's event loop (a loaded
#: 2-core machine stretches each call's few ms of scheduler CPU into tens of ms of wall time), so
#: its wall time says nothing about the scheduler.
OVERLOADED = 1.5
#: Latency of the latency-bound case (seconds).
LATENCY = 0.4


def latency_bound() -> Scenario:
    """64 one-row groups, one model at 400 ms and 4 parallel requests, no 429: the wall time is
    ceil(64 / 4) x 0.4 s = 6.4 s if the scheduler keeps the model busy. (At 200 ms the scheduler's
    few ms of CPU per call, stretched by a loaded 2-core machine, already cost 10 %.)"""
    return _scenario(
        name="latency-bound",
        row_groups={"count": 64, "size": 1},
        scheduler={"max_concurrent_row_groups": 64, "initial_target": 1},
        models=[{"name": "m", "max_parallel_requests": 4, "latency": {"distribution": "constant", "mean": LATENCY}}],
        columns=[{"name": "seed", "strategy": "full_column"}, {"name": "answer", "depends_on": ["seed"], "model": "m"}],
    )


def window_control() -> Scenario:
    """A 429 window in the first second on one of two models; runs to completion."""
    return _scenario(
        name="window-control",
        row_groups={"count": 16, "size": 1},
        scheduler={"max_concurrent_row_groups": 16, "max_in_flight_tasks": 12, "max_model_task_admission": 12},
        request_admission={"enabled": False},
        models=[
            {
                "name": "flaky",
                "latency": {"distribution": "constant", "mean": 0.05},
                "rate_limit": {"pattern": "window", "start": 0.0, "end": 1.0},
            },
            {"name": "ok", "latency": {"distribution": "constant", "mean": 0.05}},
        ],
        columns=[
            {"name": "seed", "strategy": "full_column"},
            {"name": "flaky", "depends_on": ["seed"], "model": "flaky"},
            {"name": "healthy", "depends_on": ["seed"], "model": "ok"},
        ],
    )


def cooling_stop() -> Scenario:
    """The PR #743 headline in small: an always-429 column, a healthy one, stop at 30 healthy calls."""
    return _scenario(
        name="cooling-stop",
        row_groups={"count": 256, "size": 1},
        scheduler={"max_concurrent_row_groups": 256},
        request_admission={"enabled": False},
        stop={"max_time": 20.0, "successful_calls": {"columns": ["healthy"], "count": 30}},
        models=[
            {"name": "cooling", "latency": {"mean": 0.0}, "rate_limit": {"pattern": "always"}},
            {"name": "ok", "latency": {"distribution": "constant", "mean": 0.01}},
        ],
        columns=[
            {"name": "seed", "strategy": "full_column"},
            {"name": "cooling", "depends_on": ["seed"], "model": "cooling"},
            {"name": "healthy", "depends_on": ["seed"], "model": "ok"},
        ],
    )


@pytest.fixture(scope="module")
def side_by_side() -> dict[str, TwinResult]:
    """Runs whose checks do not depend on timing, three at once."""
    jobs = {
        "control-global": lambda: run_twin(window_control(), policy="global", adaptive=False, timeout=120),
        "control-localized": lambda: run_twin(window_control(), policy="localized", adaptive=False, timeout=120),
        "stop": lambda: run_twin(cooling_stop(), policy="localized", timeout=120),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_latency_bound_run_takes_the_ideal_wall_time_and_the_simulator_agrees():
    scenario = latency_bound()
    ideal = math.ceil(64 / 4) * LATENCY
    real = run_twin(scenario, timeout=120)
    simulated = sim.simulate(scenario)
    assert real.summary["engine"] == "real" and simulated.summary["engine"] == "sim"
    assert real.summary["stop_reason"] == "completed"
    assert real.summary["completed_rows"] == 64
    assert real.summary["calls_ok[m]"] == 64 and real.summary["calls_429[m]"] == 0
    assert simulated.summary["sim_time"] == pytest.approx(ideal, rel=0.10)
    # the mock never serves more than max_parallel_requests at once through the real request path
    assert int(real.models.loc[0, "max_in_flight"]) == 4
    assert real.summary["cpu_seconds"] > 0 and real.summary["loop_lag_max_ms"] >= 0
    load = os.getloadavg()[0]
    if load > OVERLOADED * (os.cpu_count() or 1):
        pytest.skip(f"wall-time check skipped: load average {load:.1f} on {os.cpu_count()} cores starves the loop")
    assert real.summary["duration"] == pytest.approx(ideal, rel=0.10)


def test_fixed_mode_gives_the_same_counts_under_both_rules(side_by_side):
    """Control: with adaptive admission off the deferred rule is never consulted, so the emulated
    pre-#743 rule and the engine's own give the same counts."""
    a, b = side_by_side["control-global"], side_by_side["control-localized"]
    for result in (a, b):
        s = result.summary
        assert s["mode"] == "fixed" and s["stop_reason"] == "completed"
        assert s["completed_rows"] == 16 and s["successful_calls"] == 32
        assert s["rate_limited_calls"] > 0  # the window did bite
        assert s["observed_max_target"] == s["hard_cap"] == 16
        assert all(s[f"blocked_{r}"] == 0 for r in ("deferred_tasks", "queued_llm_demand", "llm_wait_saturated"))
    keys = ("completed_rows", "successful_calls", "healthy_calls", "observed_max_target", "blocked_deferred_tasks")
    assert {k: a.summary[k] for k in keys} == {k: b.summary[k] for k in keys}


def test_successful_calls_stop_rule_cancels_the_run_cleanly(side_by_side):
    result = side_by_side["stop"]
    s = result.summary
    assert s["stop_reason"] == "successful_calls"
    assert s["calls_ok[ok]"] >= 30 and s["duration"] < 20.0
    assert s["completed_rows"] == 0  # an always-429 column: no row group can ever complete
    assert s["calls_429[cooling]"] >= 1 and s["deferred_at_end"] >= 1
    assert s["observed_max_target"] > 1  # localized: the healthy column keeps the target growing
    assert s["blocked_deferred_tasks"] == 0


def test_a_real_run_records_every_call_and_every_lifecycle_time(side_by_side):
    result = side_by_side["stop"]
    calls = result.calls
    assert len(calls) == result.summary["successful_calls"] + result.summary["rate_limited_calls"]
    assert set(calls["column"]) == {"cooling", "healthy"}
    assert (calls["answered_at"] >= calls["sent_at"]).all()
    changes = result.target_changes
    assert len(changes) == result.summary["target_changes"] > 0
    assert changes["time"].is_monotonic_increasing and changes["target"].is_monotonic_increasing
    assert changes["target"].iloc[-1] == result.summary["observed_max_target"]
    assert len(result.admissions) == result.summary["max_row_groups_in_flight"]  # nothing checkpointed
    assert result.checkpoints.empty
    ts = result.timeseries
    assert ts["time"].is_monotonic_increasing and ts["healthy_calls"].iloc[-1] == result.summary["healthy_calls"]


def test_write_twin_result_writes_every_table_under_the_final_name_only(side_by_side, tmp_path):
    out = write_twin_result(side_by_side["stop"], tmp_path / "run")
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "summary.csv", "calls.csv", "target_changes.csv", "admissions.csv"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == "real" and manifest["engine_version"] == TESTED_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no .partial- folder left behind


def test_a_timed_out_run_is_an_error_not_a_result():
    with pytest.raises(TwinTimeout, match="timed out") as info:
        run_twin(latency_bound(), timeout=0.2)
    assert isinstance(info.value, RunFailed)


def test_missing_extra_is_an_input_error_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(
        twin_engine, "installed_versions", lambda: {"data-designer-engine": None, "data-designer-config": None}
    )
    with pytest.raises(TwinUnavailable, match=r"pip install 'admission-sim\[twin\]'") as info:
        run_twin(latency_bound())
    assert isinstance(info.value, InputError) and "\n" not in str(info.value)


def test_another_engine_version_names_the_tested_one():
    with pytest.raises(TwinUnavailable, match="tested with data-designer-engine==0.9.7"):
        require_engine({"data-designer-engine": "0.9.8", "data-designer-config": "0.9.7"})
    assert require_engine({"data-designer-engine": "0.9.7", "data-designer-config": "0.9.7"}) == "0.9.7"


def test_a_plug_in_policy_cannot_run_on_the_real_engine():
    @register_policy("twin-test-plugin", replace=True)
    def never(view):
        return False

    try:
        with pytest.raises(TwinUnsupported, match="plug-in policy") as info:
            run_twin(latency_bound(), policy="twin-test-plugin")
        assert isinstance(info.value, InputError)
    finally:
        del POLICIES["twin-test-plugin"]
    with pytest.raises(InputError, match="unknown policy 'nope'"):
        run_twin(latency_bound(), policy="nope")


def test_multi_output_generators_are_rejected_before_anything_runs():
    scenario = _scenario(
        models=[{"name": "m"}],
        columns=[
            {"name": "seed", "strategy": "full_column"},
            {"name": "a", "depends_on": ["seed"], "model": "m", "generator": "g"},
            {"name": "b", "depends_on": ["seed"], "model": "m", "generator": "g"},
        ],
    )
    with pytest.raises(TwinUnsupported, match="multi-output"):
        run_twin(scenario)


# ---------------------------------------------------------------------------------------------
# The command line: admission-sim twin
# ---------------------------------------------------------------------------------------------

TINY = """
name = "tiny"
[row_groups]
count = 8
size = 1
[[models]]
name = "m"
latency = { distribution = "constant", mean = 0.01 }
[[columns]]
name = "seed"
strategy = "full_column"
[[columns]]
name = "answer"
depends_on = ["seed"]
model = "m"
"""


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_cli_twin_runs_the_real_engine_and_writes_its_folder(tiny_file, tmp_path, capsys):
    from sim.cli import main

    out = tmp_path / "real-run"
    assert main(["twin", str(tiny_file), "--out", str(out), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["engine"] == "real" and data["summary"]["completed_rows"] == 8
    assert (out / "calls.csv").is_file() and json.loads((out / "manifest.json").read_text())["engine"] == "real"


@pytest.mark.parametrize(
    ("versions", "match"),
    [
        ({"data-designer-engine": None, "data-designer-config": None}, "pip install 'admission-sim[twin]'"),
        (
            {"data-designer-engine": "0.10.0", "data-designer-config": "0.10.0"},
            "tested with data-designer-engine==0.9.7",
        ),
    ],
)
@pytest.mark.parametrize("command", ["twin", "validate"])
def test_cli_without_the_tested_engine_exits_2_with_one_line(monkeypatch, tiny_file, capsys, versions, match, command):
    from sim.cli import main

    monkeypatch.setattr(twin_engine, "installed_versions", lambda: versions)
    assert main([command, str(tiny_file)]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_twin_plug_in_policy_exits_2(tiny_file, capsys):
    from sim.cli import main

    @register_policy("twin-cli-plugin", replace=True)
    def never(view):
        return False

    try:
        assert main(["twin", str(tiny_file), "--policy", "twin-cli-plugin"]) == 2
    finally:
        del POLICIES["twin-cli-plugin"]
    assert "plug-in policy" in capsys.readouterr().err


def test_cli_twin_timeout_exits_1_and_writes_nothing(tiny_file, tmp_path, capsys):
    from sim.cli import main

    out = tmp_path / "never"
    assert main(["twin", str(tiny_file), "--timeout", "0.2", "--out", str(out)]) == 1
    assert "timed out" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["tiny.toml"]


# ---------------------------------------------------------------------------------------------
# From the child's record to a Result (no engine needed)
# ---------------------------------------------------------------------------------------------


def _raw(calls, checkpoints=(), admissions=(), series=None, cpu=0.5, duration=2.0):
    return {
        "policy": "localized",
        "seed": 0,
        "adaptive": True,
        "stop_reason": "completed",
        "duration": duration,
        "cpu_seconds": cpu,
        "user_seconds": cpu,
        "system_seconds": 0.0,
        "voluntary_switches": 0,
        "involuntary_switches": 0,
        "loop_lag": {"mean_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0},
        "series": series or [(0.0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0), (duration, 2, 0, 0, 0, 0, 0, 2, 2, 1, 0)],
        "calls": list(calls),
        "target_changes": [(0.1, 2)],
        "admissions": list(admissions),
        "checkpoints": list(checkpoints),
        "scheduler": {
            "hard_cap": 4,
            "final_target": 2,
            "observed_max_target": 2,
            "max_row_groups_in_flight": 2,
            "max_admitted_rows": 2,
            "blocked_reasons": {"deferred_tasks": 3},
            "deferred_at_end": 0,
            "salvage_cycles": 1,
            "salvage_rounds": 1,
            "adaptive_evaluations": 9,
            "request_pressure_advisory_skips": 0,
        },
        "models": [{"model": "flaky", "final_limit": 3}, {"model": "ok", "final_limit": 4}],
        "deferred_by_column": {},
    }


def test_result_from_raw_counts_calls_rows_and_cpu():
    from sim.twin.result import result_from_raw

    scenario = window_control()
    calls = [
        (0, "flaky", 0.0, 0.1, True),  # 429 at 0.1: no cooldown without a controller or Retry-After
        (1, "healthy", 0.0, 0.1, False),  # answered with flaky's last answer a 429: while limited
        (0, "flaky", 1.0, 1.1, False),
        (1, "healthy", 1.2, 1.3, False),  # flaky recovered: not while limited
    ]
    raw = _raw(calls, checkpoints=[(1.5, 0, 1, 1)], admissions=[(0.0, 0, 1), (0.2, 1, 1)], cpu=1.6)
    result = result_from_raw(scenario, raw, TESTED_VERSION)
    s = result.summary
    assert (s["engine"], s["engine_version"], s["sim_time"]) == ("real", TESTED_VERSION, 2.0)
    assert (s["successful_calls"], s["rate_limited_calls"], s["healthy_calls"]) == (3, 1, 2)
    assert (s["calls_ok[flaky]"], s["calls_429[flaky]"], s["calls_ok[ok]"]) == (1, 1, 2)
    assert s["healthy_calls_while_limited"] == 1
    assert s["completed_rows"] == 1 and s["time_to_first_row"] == 1.5
    assert s["blocked_deferred_tasks"] == 3 and s["blocked_queued_llm_demand"] == 0
    assert s["cpu_utilization"] == pytest.approx(0.8) and s["cpu_bound"] is True
    assert result.row_groups.loc[0, "latency"] == pytest.approx(1.5)
    assert result.models.set_index("model").loc["flaky", "final_limit"] == 3
    assert list(result.calls["model"]) == ["flaky", "ok", "flaky", "ok"]
    idle = result_from_raw(scenario, _raw(calls, cpu=0.2), TESTED_VERSION)
    assert idle.summary["cpu_bound"] is False
