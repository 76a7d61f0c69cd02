"""Scenario files: validation messages name the file, the key and the reason; overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

SCENARIOS = Path(__file__).resolve().parent.parent / "sim" / "scenarios"


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


# ---------------------------------------------------------------------------------------------
# Row groups of unequal size: the four plan forms
# ---------------------------------------------------------------------------------------------


def plan_of(row_groups):
    return scenario_from_dict({"name": "p", "row_groups": row_groups, "columns": [{"name": "s"}]}).row_groups


def test_explicit_sizes_are_the_plan_and_feed_the_row_guard():
    plan = plan_of({"sizes": [1000, 1000, 500, 20]})
    assert plan.form == "sizes"
    assert plan.fixed_sizes() == [1000, 1000, 500, 20]
    assert (plan.total_rows, plan.max_groups) == (2520, 4)
    assert (plan.guard_num_records, plan.guard_buffer_size) == (2520, 1000)  # total rows, largest group


def test_random_sizes_plan_has_a_known_total_and_a_bound_on_groups():
    plan = plan_of({"num_records": 40, "random_sizes": {"min": 3, "max": 8}})
    assert plan.form == "random_sizes"
    assert (plan.total_rows, plan.max_groups) == (40, 14)  # ceil(40 / 3)
    assert (plan.guard_num_records, plan.guard_buffer_size) == (40, 8)
    with pytest.raises(ValueError, match="drawn per run"):
        plan.fixed_sizes()


@pytest.mark.parametrize(
    ("row_groups", "key", "reason"),
    [
        ({"sizes": [2, 0, 3]}, "row_groups.sizes.1", "greater than or equal to 1"),
        ({"sizes": []}, "row_groups.sizes", "at least 1 item"),
        ({"sizes": [2, 3], "count": 2}, "row_groups", "give it without 'count'"),
        ({"sizes": [2, 3], "size": 4}, "row_groups", "give it without 'size'"),
        ({"sizes": [2, 3], "num_records": 5, "buffer_size": 1}, "row_groups", "'num_records', 'buffer_size'"),
        ({"sizes": [30_000_000, 30_000_000]}, "row_groups.sizes", "above the limit of 50000000"),
        ({"random_sizes": {"min": 1, "max": 2}}, "row_groups", "'random_sizes' needs 'num_records'"),
        ({"num_records": 9, "random_sizes": {"min": 1, "max": 2}, "buffer_size": 3}, "row_groups", "'buffer_size'"),
        ({"num_records": 9, "random_sizes": {"min": 1, "max": 2}, "count": 3}, "row_groups", "'count'"),
        ({"num_records": 9, "random_sizes": {"min": 5, "max": 2}}, "row_groups.random_sizes", "max (2) must be >= min"),
        ({"num_records": 9, "random_sizes": {"min": 1}}, "row_groups.random_sizes.max", "Field required"),
        ({"num_records": 5_000_000, "random_sizes": {"min": 1, "max": 9}}, "row_groups", "limit of 1000000 row groups"),
        ({"num_records": 5}, "row_groups", "'num_records' needs 'buffer_size' (or 'random_sizes')"),
        ({}, "row_groups", "or 'sizes'"),
    ],
)
def test_row_group_forms_are_exclusive_and_bounded(row_groups, key, reason):
    with pytest.raises(ScenarioError) as err:
        plan_of(row_groups)
    assert f"<scenario>: {key}: " in str(err.value) and reason in str(err.value), str(err.value)


def test_every_plan_form_survives_a_dump_and_reload():
    """A sweep stores each run's scenario dumped with every key; reloading it must accept it."""
    for row_groups in (
        {"count": 3, "size": 2},
        {"num_records": 7, "buffer_size": 3},
        {"sizes": [3, 1, 2]},
        {"num_records": 7, "random_sizes": {"min": 1, "max": 3}},
    ):
        scenario = scenario_from_dict({"name": "p", "row_groups": row_groups, "columns": [{"name": "s"}]})
        again = scenario_from_dict(scenario.model_dump(mode="json"))
        assert again == scenario
        assert with_overrides(scenario, {"seed": 5}).row_groups == scenario.row_groups


# ---------------------------------------------------------------------------------------------
# Messages: the override is blamed, items are named, suggestions, booleans, one-line values
# ---------------------------------------------------------------------------------------------


def error_of(call) -> str:
    with pytest.raises(ScenarioError) as err:
        call()
    return str(err.value)


COOLING = SCENARIOS / "cooling-2048.toml"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "scheduler.polcy=global",
            "--set 'scheduler.polcy=global': scheduler.polcy: unknown key; did you mean 'scheduler.policy'?",
        ),
        (
            "schedular.policy=global",
            "--set 'schedular.policy=global': schedular: unknown key; did you mean 'scheduler.policy'?",
        ),
        (
            "max_concurrent_row_groups=64",
            "--set 'max_concurrent_row_groups=64': max_concurrent_row_groups: unknown key; "
            "did you mean 'scheduler.max_concurrent_row_groups'?",
        ),
        (
            "models.cooling.latncy.mean=0.1",
            "--set 'models.cooling.latncy.mean=0.1': models.cooling.latncy: unknown key; "
            "did you mean 'models.cooling.latency.mean'?",
        ),
        ("scheduler.zzzzzz=1", "--set 'scheduler.zzzzzz=1': scheduler.zzzzzz: unknown key"),
    ],
)
def test_unknown_set_key_is_blamed_on_the_override_with_the_closest_key(override, expected):
    message = error_of(lambda: load_scenario(COOLING, [override]))
    assert message == expected
    assert str(COOLING) not in message


def test_bad_set_value_is_blamed_on_the_override_and_names_the_model():
    message = error_of(lambda: load_scenario(COOLING, ["models.cooling.latency.mean=-1"]))
    assert message == (
        "--set 'models.cooling.latency.mean=-1': models.cooling.latency.mean: "
        "Input should be greater than or equal to 0"
    )
    message = error_of(lambda: load_scenario(COOLING, ["models.1.latency.mean=-1"]))  # an index works too
    assert message.startswith("--set 'models.1.latency.mean=-1': models.healthy-a.latency.mean: ")


def test_a_file_error_stays_the_files_even_with_overrides(tmp_path):
    path = write(tmp_path, MINIMAL + "[scheduler]\nwhat = 1\n")
    for overrides in (["scheduler.policy=global"], ["seed=1"]):
        message = error_of(lambda o=overrides: load_scenario(path, o))
        assert message == f"{path}: scheduler.what: unknown key"


def test_an_override_that_clashes_with_the_file_names_both():
    message = error_of(lambda: load_scenario(COOLING, ["row_groups.sizes=[1, 2]"]))
    assert message == (
        f"{COOLING}: row_groups: 'sizes' lists every group; give it without 'count' "
        "(with --set 'row_groups.sizes=[1, 2]')"
    )
    assert load_scenario(COOLING, ["row_groups={ sizes = [1, 2] }"]).row_groups.sizes == (1, 2)


def test_unknown_list_item_in_set_suggests_the_closest_name():
    message = error_of(lambda: load_scenario(COOLING, ["models.colling.latency.mean=0.1"]))
    assert message.startswith("--set 'models.colling.latency.mean=0.1': models: no item named 'colling' ")
    assert "did you mean 'cooling'?" in message


def test_file_errors_name_models_and_columns_by_name(tmp_path):
    text = MINIMAL + (
        '[[models]]\nname = "cooling"\nlatency = { mean = -1 }\n[[columns]]\nname = "draft"\ndepends_on = ["ghost"]\n'
    )
    message = error_of(lambda: load_scenario(write(tmp_path, text)))
    assert message.split(": ", 2)[1] == "models.cooling.latency.mean"
    message = error_of(lambda: load_scenario(write(tmp_path, text.replace("mean = -1", "mean = 1"))))
    assert message.split(": ", 2)[1] == "columns.draft.depends_on"


def test_items_whose_name_cannot_name_them_keep_their_index():
    for names in (["a", "a"], ["7", "b"], ["x.y", "b"]):
        columns = [{"name": names[0], "duration": -1.0}, {"name": names[1]}]
        message = error_of(
            lambda c=columns: scenario_from_dict({"name": "p", "row_groups": {"count": 1}, "columns": c})
        )
        assert message.startswith("<scenario>: columns.0.duration: "), (names, message)


@pytest.mark.parametrize("value", ["yes", "True", "1", '"true"'])
def test_a_boolean_error_says_true_or_false(value):
    message = error_of(lambda: load_scenario(COOLING, [f"request_admission.enabled={value}"]))
    assert message.startswith(f"--set 'request_admission.enabled={value}': request_admission.enabled: ")
    assert "must be true or false (unquoted)" in message


@pytest.mark.parametrize("text", ["scheduler.policy=glo\nbal", "scheduler.policy=global\r", "sched\nuler.policy=x"])
def test_a_line_break_in_a_set_is_an_error_naming_it(text):
    message = error_of(lambda: parse_override(text))
    assert message.startswith("--set 'sched") and "line break" in message and "\n" not in message
    assert "line break" in error_of(lambda: load_scenario(COOLING, [text]))


def test_set_syntax_errors_name_the_override():
    assert error_of(lambda: parse_override("scheduler.policy")).startswith(
        "--set 'scheduler.policy': expected key=value"
    )
    assert error_of(lambda: parse_override("a..b=1")).startswith("--set 'a..b=1': the key must be a dotted path")
    assert error_of(lambda: parse_override("x", option="--grid")).startswith("--grid 'x': expected key=value")
    message = error_of(lambda: load_scenario(COOLING, ["seed.deeper=1"]))
    assert message == "--set 'seed.deeper=1': seed: holds a value, not a table, so 'deeper' cannot be set in it"


def test_mapping_overrides_are_named_as_overrides():
    base = load_scenario(COOLING)
    message = error_of(lambda: with_overrides(base, {"scheduler.polcy": "global"}))
    assert message.startswith("override 'scheduler.polcy=\"global\"': scheduler.polcy: unknown key; did you mean")
    message = error_of(lambda: with_overrides(base, {"request_admission.enabled": 1}))
    assert message.startswith("override 'request_admission.enabled=1': request_admission.enabled: must be true")


def test_cli_blames_set_not_the_file(capsys):
    assert main(["run", str(COOLING), "--set", "scheduler.polcy=global"]) == 2
    err = capsys.readouterr().err
    assert "--set 'scheduler.polcy=global': scheduler.polcy: unknown key; did you mean 'scheduler.policy'?" in err
    assert str(COOLING) not in err and "Traceback" not in err


# -- plan size: the real task count and the memory estimate ------------------------------------


def _production(**changes: Any) -> dict[str, Any]:
    """1,000,000 rows in groups of 1,000; a full-column seed and four cell-by-cell model columns."""
    data: dict[str, Any] = {
        "name": "production",
        "row_groups": {"num_records": 1_000_000, "buffer_size": 1000},
        "scheduler": {"policy": "localized", "max_concurrent_row_groups": 64},
        "models": [{"name": f"m{i}"} for i in range(4)],
        "columns": [{"name": "seed", "strategy": "full_column"}]
        + [{"name": f"c{i}", "depends_on": ["seed"], "model": f"m{i}"} for i in range(4)],
    }
    data.update(changes)
    return data


def test_a_million_rows_with_a_seed_and_four_model_columns_is_accepted() -> None:
    from sim.scenario import plan_size

    scenario = scenario_from_dict(_production())
    size = plan_size(scenario)
    # 4 cell-by-cell generators x 1,000,000 rows + 1 full-column generator x 1,000 groups
    assert size.tasks == 4_001_000
    assert size.live_tasks == 64 * 1000 * 4 + 64
    assert size.peak_bytes < 512 * 1024**2


def test_the_task_cap_counts_the_plans_real_tasks() -> None:
    from sim.scenario import MAX_TASKS_PER_RUN, plan_size

    # Five cell-by-cell columns over four million rows: exactly the cap, so still accepted ...
    cells = _production(
        row_groups={"num_records": 4_000_000, "buffer_size": 1000},
        columns=[{"name": f"c{i}", "model": f"m{i % 4}"} for i in range(5)],
    )
    assert plan_size(scenario_from_dict(cells)).tasks == MAX_TASKS_PER_RUN == 20_000_000
    # ... one more row is over it, and the message gives the count and how it is made.
    cells["row_groups"] = {"num_records": 4_000_001, "buffer_size": 1000}
    with pytest.raises(ScenarioError, match=r"row_groups: the plan makes 20000005 tasks \(4000001 rows x 5 cell-by"):
        scenario_from_dict(cells, source="big.toml")


def test_a_run_whose_live_state_would_not_fit_is_refused_in_memory_terms() -> None:
    huge = _production(
        row_groups={"count": 10, "size": 4_000_000},
        scheduler={"policy": "fixed", "max_concurrent_row_groups": 10},
        columns=[{"name": "c0", "model": "m0"}],
    )
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(huge, source="huge.toml")
    text = str(info.value)
    assert "huge.toml: row_groups: the run would hold about 5.8 GB, above the limit of 4.0 GB per run" in text
    assert "40000000 live tasks at most (hard cap 10 x 4000000-row groups" in text
    huge["scheduler"]["max_concurrent_row_groups"] = 5  # half the live state fits in memory ...
    with pytest.raises(ScenarioError, match="the plan makes 40000000 tasks"):  # ... the run time does not
        scenario_from_dict(huge, source="huge.toml")


def test_full_detail_counts_its_series_rows_against_the_memory_limit() -> None:
    from sim.scenario import plan_size

    bounded = plan_size(scenario_from_dict(_production()))
    full = plan_size(scenario_from_dict(_production(recorder={"detail": "full"})))
    assert bounded.series_rows == 700_000
    assert full.series_rows == 4_001_000 + 2 * 4_000_000
    assert full.peak_bytes > bounded.peak_bytes
    # Ten million tasks: bounded, the run's estimate does not grow with them; with every row kept it does.
    cells = _production(
        row_groups={"num_records": 2_000_000, "buffer_size": 1000},
        columns=[{"name": f"c{i}", "model": f"m{i % 4}"} for i in range(5)],
    )
    assert plan_size(scenario_from_dict(cells)).series_bytes == bounded.series_bytes
    cells["recorder"] = {"detail": "full"}
    with pytest.raises(ScenarioError, match=r"full.toml: recorder: the run would hold about 7\.\d GB.*\(full detail\)"):
        scenario_from_dict(cells, source="full.toml")
