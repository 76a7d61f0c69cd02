"""sim/validate.py: both engines side by side, the error table and the sign check."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from types import MappingProxyType

import pandas as pd
import pytest

import sim
from sim.errors import InputError
from sim.scenario import Scenario, scenario_from_dict
from sim.validate import (
    RunRecord,
    ValidationError,
    ValidationReport,
    error_table,
    format_report,
    healthy_calls_in_window,
    relative_error,
    sign_table,
    validate,
    write_validation,
)
from tests.conftest import needs_engine

#: A 429 window in the first 2 s on `flaky`, two healthy models, 150 ms calls, budgets of 12 tasks:
#: the global rule freezes the target while `flaky` is deferred, the localized one does not.
WINDOW_TOML = """
name = "window-case"
[row_groups]
count = 40
size = 1
[scheduler]
max_concurrent_row_groups = 40
max_in_flight_tasks = 12
max_model_task_admission = 12
[request_admission]
enabled = false
[stop]
max_time = 30.0
[[models]]
name = "flaky"
latency = { distribution = "constant", mean = 0.15 }
rate_limit = { pattern = "window", start = 0.0, end = 2.0 }
[[models]]
name = "healthy-a"
latency = { distribution = "constant", mean = 0.15 }
[[models]]
name = "healthy-b"
latency = { distribution = "constant", mean = 0.15 }
[[columns]]
name = "seed"
strategy = "full_column"
[[columns]]
name = "flaky"
depends_on = ["seed"]
model = "flaky"
[[columns]]
name = "healthy_1"
depends_on = ["seed"]
model = "healthy-a"
[[columns]]
name = "healthy_2"
depends_on = ["seed"]
model = "healthy-b"
"""


def window_case() -> Scenario:
    return scenario_from_dict(tomllib.loads(WINDOW_TOML), source="window-case")


@pytest.fixture(scope="module")
def window_report():
    return validate(window_case(), policies=["localized", "global"], repeats=1, jobs=2, timeout=120)


@needs_engine
def test_validate_reports_healthy_calls_in_the_window_and_the_sign_agrees(window_report):
    errors = window_report.errors.set_index(["policy", "metric"])
    for policy in ("localized", "global"):
        row = errors.loc[(policy, "healthy_calls_in_window")]
        assert row["real_n"] == 1 and not math.isnan(row["real_mean"]) and not math.isnan(row["sim"])
        assert errors.loc[(policy, "completed_rows"), "real_mean"] == errors.loc[(policy, "completed_rows"), "sim"]
    window = errors.loc[("localized", "healthy_calls_in_window")]
    assert window["real_mean"] > errors.loc[("global", "healthy_calls_in_window"), "real_mean"]
    signs = window_report.signs.set_index("metric")
    assert bool(signs.loc["healthy_calls_in_window", "agrees"])
    assert bool(signs.loc["observed_max_target", "agrees"])
    assert {r.engine for r in window_report.runs} == {"sim", "real"}
    assert all(r.status == "ok" for r in window_report.runs)


@needs_engine
def test_write_validation_writes_a_complete_folder_with_overlays(window_report, tmp_path):
    out = write_validation(window_report, tmp_path / "val")
    for name in ("manifest.json", "errors.csv", "signs.csv", "runs.csv", "report.txt"):
        assert (out / name).is_file()
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["engine"]) == ["real", "real", "sim", "sim"]
    assert (out / "runs" / "real__localized__r0" / "calls.csv").is_file()
    assert (out / "runs" / "sim__global__r0" / "timeseries.parquet").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["figures"] == ["figures/overlay__localized.png", "figures/overlay__global.png"]
    assert all((out / f).stat().st_size > 0 for f in manifest["figures"])
    assert [p.name for p in tmp_path.iterdir()] == ["val"]


@needs_engine
def test_a_timed_out_real_run_is_recorded_as_such_and_left_out_of_the_means():
    report = validate(window_case(), policies=["localized"], repeats=1, timeout=0.2)
    real = [r for r in report.runs if r.engine == "real"]
    assert [r.status for r in real] == ["timed_out"] and real[0].result is None
    row = report.errors.set_index(["policy", "metric"]).loc[("localized", "healthy_calls")]
    assert row["real_n"] == 0 and math.isnan(row["real_mean"])
    assert any("timed_out" in w for w in report.warnings)
    assert report.runs_frame().set_index("engine").loc["real", "status"] == "timed_out"


def test_relative_error():
    assert relative_error(11.0, 10.0) == pytest.approx(0.1)
    assert relative_error(9.0, -10.0) == pytest.approx(1.9)
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 0.0) == math.inf
    assert math.isnan(relative_error(math.nan, 1.0))


def _errors(real_local: float, real_global: float, sim_local: float, sim_global: float) -> pd.DataFrame:
    rows = [
        ("localized", "healthy_calls", real_local, sim_local),
        ("global", "healthy_calls", real_global, sim_global),
    ]
    return pd.DataFrame(
        [
            {"policy": p, "metric": m, "real_mean": r, "real_sd": 0.0, "real_n": 1, "sim": s, "rel_error": 0.0}
            for p, m, r, s in rows
        ]
    )


def test_sign_table_agrees_and_can_disagree():
    assert bool(sign_table(_errors(10, 2, 12, 3)).loc[0, "agrees"])
    assert not bool(sign_table(_errors(10, 2, 3, 12)).loc[0, "agrees"])
    assert sign_table(_errors(5, 5, 7, 7)).empty  # the policies do not differ on either engine


def _stand_in(result, **summary) -> sim.Result:
    return dataclasses.replace(result, summary=MappingProxyType({**result.summary, **summary}))


def test_error_table_mean_sd_and_relative_error_from_repeats():
    base = sim.simulate(window_case(), policy="localized")
    n = base.summary["healthy_calls"]
    runs = [
        RunRecord("sim", "localized", 0, 0, "ok", base),
        RunRecord("real", "localized", 0, 0, "ok", _stand_in(base, healthy_calls=n - 10)),
        RunRecord("real", "localized", 1, 1, "ok", _stand_in(base, healthy_calls=n + 10)),
        RunRecord("real", "localized", 2, 2, "timed_out", None, "timed out"),
    ]
    row = error_table(runs, ["localized"]).set_index("metric").loc["healthy_calls"]
    assert row["real_n"] == 2 and row["real_mean"] == n and row["real_sd"] == pytest.approx(math.sqrt(200))
    assert row["rel_error"] == 0.0


def test_healthy_calls_in_window_from_the_simulator_series():
    result = sim.simulate(window_case(), policy="localized")
    inside = healthy_calls_in_window(result)
    assert 0 < inside < result.summary["healthy_calls"]
    no_window = sim.simulate(sim.with_overrides(window_case(), ["models.flaky.rate_limit.pattern=never"]))
    assert math.isnan(healthy_calls_in_window(no_window))


def test_cpu_bound_real_runs_are_warned_about():
    from sim.validate import _warnings

    base = sim.simulate(window_case(), policy="localized")
    busy = _stand_in(base, cpu_bound=True, cpu_utilization=0.93)
    idle = _stand_in(base, cpu_bound=False, cpu_utilization=0.2)
    warnings = _warnings(
        [RunRecord("real", "localized", 0, 0, "ok", busy), RunRecord("real", "global", 0, 0, "ok", idle)]
    )
    assert len(warnings) == 1 and "CPU-bound" in warnings[0] and "0.93" in warnings[0]


def test_format_report_shows_every_row_and_flags_a_disagreeing_sign():
    base = sim.simulate(window_case(), policy="localized")
    report = ValidationReport(
        scenario=window_case(),
        policies=("localized", "global"),
        repeats=1,
        runs=(RunRecord("sim", "localized", 0, 0, "ok", base),),
        errors=_errors(10, 2, 3, 12),
        signs=sign_table(_errors(10, 2, 3, 12)),
    )
    text = format_report(report)
    assert "DISAGREES" in text and text.count("healthy_calls") == 3


@needs_engine
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policies": []}, "at least one policy"),
        ({"repeats": 0}, "--repeats"),
        ({"jobs": 0}, "--jobs"),
        ({"policies": ["nope"]}, "unknown policy 'nope'"),
    ],
)
def test_bad_validate_input_is_an_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        validate(window_case(), **kwargs)


def test_validation_error_is_an_input_error():
    assert issubclass(ValidationError, InputError)


@needs_engine
def test_cli_validate_with_a_timed_out_run_writes_the_folder_and_exits_1(tmp_path, capsys):
    from sim.cli import main

    path = tmp_path / "window.toml"
    path.write_text(WINDOW_TOML)
    out = tmp_path / "val"
    code = main(
        ["validate", str(path), "--policies", "localized", "--repeats", "1", "--timeout", "0.2", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 1 and "did not finish" in captured.err
    runs = pd.read_csv(out / "runs.csv")
    assert runs.set_index("engine").loc["real", "status"] == "timed_out"
    assert "healthy_calls" in captured.out


@needs_engine
def test_cli_validate_rejects_a_repeated_policy(tmp_path, capsys):
    from sim.cli import main

    assert main(["validate", "healthy-bottleneck", "--policies", "global,global"]) == 2
    assert "listed twice" in capsys.readouterr().err
