"""Scenario files: validation messages name the file, the key and the reason; overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import main
from sim.scenario import (
    ScenarioError,
    apply_overrides,
    load_scenario,
    parse_override,
    read_scenario_file,
    scenario_from_dict,
    with_overrides,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "case.toml"
    path.write_text(text)
    return path


MINIMAL = """
name = "minimal"
[row_groups]
count = 2
[[columns]]
name = "seed"
strategy = "full_column"
"""


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_bundled_scenarios_load_and_are_described(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert len(scenario.description) > 40


def test_defaults_are_the_spec_defaults(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL))
    assert s.scheduler.max_concurrent_row_groups == 3
    assert s.scheduler.initial_target == 1
    assert s.scheduler.max_in_flight_tasks == s.scheduler.max_model_task_admission == 1024
    assert s.scheduler.salvage_max_rounds == 2
    assert s.scheduler.resalvage_backoff == 0.05
    assert s.scheduler.borrow_reserve_fraction == 0.0
    ra = s.request_admission
    assert (ra.cooldown_seconds, ra.decrease_factor, ra.increase_step, ra.successes_until_increase) == (
        2.0,
        0.75,
        1,
        25,
    )
    assert ra.startup_ramp_seconds == 0.0


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("[scheduler]\nmax_concurent_row_groups = 4\n", "scheduler.max_concurent_row_groups", "unknown key"),
        ("[scheduler]\nmax_concurrent_row_groups = 'many'\n", "scheduler.max_concurrent_row_groups", "integer"),
        (
            "[scheduler]\nmax_concurrent_row_groups = 0\n",
            "scheduler.max_concurrent_row_groups",
            "greater than or equal to 1",
        ),
        ("[request_admission]\ndecrease_factor = 1.5\n", "request_admission.decrease_factor", "less than 1"),
        ("[stop]\nmax_time = nan\n", "stop.max_time", "finite"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path, extra, key, reason):
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert str(path) in message and key in message and reason in message


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ('[[columns]]\nname = "a"\ndepends_on = ["ghost"]\n', "unknown column 'ghost'"),
        ('[[columns]]\nname = "a"\ndepends_on = ["b"]\n[[columns]]\nname = "b"\ndepends_on = ["a"]\n', "cycle"),
        ('[[columns]]\nname = "a"\nmodel = "nope"\n', "model 'nope'"),
        ('[[columns]]\nname = "seed"\n', "duplicate column name 'seed'"),
    ],
)
def test_dag_errors(tmp_path, columns, reason):
    with pytest.raises(ScenarioError, match=reason):
        load_scenario(write(tmp_path, MINIMAL + columns))


def test_endless_429_needs_a_time_limit(tmp_path):
    text = MINIMAL + (
        '[[models]]\nname = "m"\nrate_limit = { pattern = "always" }\n'
        '[[columns]]\nname = "c"\ndepends_on = ["seed"]\nmodel = "m"\n'
    )
    with pytest.raises(ScenarioError, match="stop.max_time"):
        load_scenario(write(tmp_path, text))
    assert load_scenario(write(tmp_path, text + "[stop]\nmax_time = 5.0\n")).stop.max_time == 5.0


def test_multi_output_generators_must_agree(tmp_path):
    text = MINIMAL + (
        '[[columns]]\nname = "a"\ngenerator = "g"\nstrategy = "full_column"\ndepends_on = ["seed"]\n'
        '[[columns]]\nname = "b"\ngenerator = "g"\ndepends_on = ["seed"]\n'
    )
    with pytest.raises(ScenarioError, match="generator 'g' produces columns that disagree on strategy"):
        load_scenario(write(tmp_path, text))


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="invalid TOML"):
        read_scenario_file(write(tmp_path, "name = \n"))
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.toml")


def test_cli_reports_bad_file_without_traceback(tmp_path, capsys):
    path = write(tmp_path, MINIMAL + "[scheduler]\nwhat = 1\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "scheduler.what: unknown key" in err and str(path) in err
    assert "Traceback" not in err


def test_row_group_plan_sizes():
    plan = scenario_from_dict(
        {"name": "p", "row_groups": {"num_records": 2500, "buffer_size": 1000}, "columns": [{"name": "s"}]}
    ).row_groups
    assert plan.fixed_sizes() == [1000, 1000, 500]
    assert plan.guard_num_records == 2500 and plan.guard_buffer_size == 1000


def test_parse_override_reads_toml_values():
    assert parse_override("scheduler.max_concurrent_row_groups=64") == ("scheduler.max_concurrent_row_groups", 64)
    assert parse_override("request_admission.enabled=false") == ("request_admission.enabled", False)
    assert parse_override("scheduler.policy=global") == ("scheduler.policy", "global")
    with pytest.raises(ScenarioError, match="expected key=value"):
        parse_override("scheduler.policy")


def test_overrides_reach_list_items_by_name_or_index():
    base = load_scenario(SCENARIOS / "cooling-2048.toml")
    changed = with_overrides(base, ["models.cooling.latency.mean=0.5", "columns.0.duration=0.25"])
    assert changed.models[0].latency.mean == 0.5
    assert changed.columns[0].duration == 0.25
    assert base.models[0].latency.mean == 0.001  # the original is untouched
    with pytest.raises(ScenarioError, match="no item named 'ghost'"):
        with_overrides(base, ["models.ghost.latency.mean=1"])


def test_override_with_unknown_key_is_rejected():
    base = load_scenario(SCENARIOS / "cooling-2048.toml")
    with pytest.raises(ScenarioError, match="scheduler.nope: unknown key"):
        with_overrides(base, ["scheduler.nope=1"])


def test_apply_overrides_does_not_mutate_input():
    data = {"scheduler": {"policy": "global"}}
    out = apply_overrides(data, {"scheduler.policy": "localized"})
    assert data["scheduler"]["policy"] == "global" and out["scheduler"]["policy"] == "localized"
