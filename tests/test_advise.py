"""advise: the front is non-dominated, the recommendation meets the constraint and the objective,
the RunConfig lines are valid Python with RunConfig's field names, and the advice is reproducible
and resumable. Scenarios are small (a few hundred model calls per run)."""

from __future__ import annotations

import ast
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from sim.advise import (
    JOURNAL,
    RUN_CONFIG_FIELDS,
    AdviceError,
    AdviceInterrupted,
    Evaluation,
    Objective,
    SearchBudget,
    Setting,
    advise,
    cap_ladder,
    format_advice,
    limits_of,
    pareto_mask,
    rank,
    run_config_lines,
    slot_utilization,
)
from sim.errors import InputError
from sim.output import format_value
from sim.row_group_admission import REASONS
from sim.scenario import Scenario, scenario_from_dict

HORIZON_ONLY = SearchBudget(buffer_sizes=False, in_flight_tasks=False)


def _scenario(
    *,
    latency: dict,
    parallel: int,
    groups: int,
    size: int,
    tasks: int = 1024,
    chain: int = 1,
    name: str = "advise-unit",
) -> Scenario:
    """seed -> ``chain`` model columns in a dependency chain, all on one model."""
    columns = [{"name": "seed", "strategy": "full_column"}]
    for i in range(chain):
        columns.append({"name": f"c{i}", "depends_on": ["seed" if i == 0 else f"c{i - 1}"], "model": "m"})
    return scenario_from_dict(
        {
            "name": name,
            "row_groups": {"num_records": groups * size, "buffer_size": size},
            "scheduler": {
                "policy": "fixed",
                "max_in_flight_tasks": tasks,
                "max_model_task_admission": tasks,
                "loop": {"model": "none"},  # the zero-cost loop: the hand-derived optima are exact
            },
            "models": [{"name": "m", "max_parallel_requests": parallel, "latency": latency}],
            "columns": columns,
        }
    )


@pytest.fixture(scope="module")
def saturating() -> Scenario:
    """16 groups of 8 rows, 64 request slots, every call takes exactly 1 s: 8 groups fill the
    endpoint, more only hold rows open. Nothing blocks adaptive growth, so adaptive equals fixed."""
    return _scenario(latency={"distribution": "constant", "mean": 1.0}, parallel=64, groups=16, size=8)


@pytest.fixture(scope="module")
def saturating_advice(saturating: Scenario):
    return advise(saturating, "throughput", seeds=2, budget=HORIZON_ONLY, progress=False)


def _dominated(table: pd.DataFrame, i: int) -> bool:
    row = table.loc[i]
    others = table.drop(index=i)
    others = others[others["score"].notna()]
    ttfc = others["time_to_first_checkpoint_mean"].fillna(np.inf)
    mine = row["time_to_first_checkpoint_mean"] if not pd.isna(row["time_to_first_checkpoint_mean"]) else np.inf
    ge = (others["throughput_mean"] >= row["throughput_mean"]) & (ttfc <= mine)
    ge &= others["peak_open_rows_mean"] <= row["peak_open_rows_mean"]
    gt = (others["throughput_mean"] > row["throughput_mean"]) | (ttfc < mine)
    gt |= others["peak_open_rows_mean"] < row["peak_open_rows_mean"]
    return bool((ge & gt).any())


def test_front_points_are_not_dominated_by_any_evaluated_point(saturating_advice):
    evaluated = saturating_advice.evaluated
    front = evaluated.index[evaluated["on_front"]]
    assert len(front) >= 2
    assert not any(_dominated(evaluated, i) for i in front)
    # and every dominated setting really is dominated
    assert all(_dominated(evaluated, i) for i in evaluated.index[~evaluated["on_front"] & evaluated["score"].notna()])
    # the front table lists one setting per distinct outcome, naming the identical ones
    distinct = evaluated[evaluated["on_front"] & (evaluated["same_as"] == "")]
    assert sorted(saturating_advice.front["setting"]) == sorted(distinct["setting"])
    assert (
        "adaptive<= 8, buffer 8, tasks 1024"
        in saturating_advice.front.set_index("setting").loc["fixed 8, buffer 8, tasks 1024", "also"]
    )


def test_pareto_mask_drops_a_dominated_row():
    table = pd.DataFrame(
        {
            "throughput_mean": [10.0, 9.0, 10.0, 12.0],
            "time_to_first_checkpoint_mean": [5.0, 6.0, 4.0, np.nan],
            "peak_open_rows_mean": [100.0, 100.0, 100.0, 50.0],
            "score": [1.0, 1.0, 1.0, np.nan],  # the last one failed: never on the front, dominates nothing
        }
    )
    assert pareto_mask(table).tolist() == [False, False, True, False]


def test_every_front_member_and_the_recommendation_have_every_seed(saturating_advice):
    assert (saturating_advice.front["seeds"] == 2).all()
    assert saturating_advice.recommended.row["seeds"] == 2
    assert saturating_advice.default.row["seeds"] == 2
    # successive halving: some settings were dropped after one seed
    assert (saturating_advice.evaluated["seeds"] == 1).any()


def test_fixed_horizon_wins_where_it_fills_the_endpoint(saturating_advice):
    """8 groups x 8 rows = the 64 slots: fixed 8 reaches the top throughput with the fewest rows
    open; adaptive <= 8 is identical here, and a tie goes to the fixed mode RunConfig can set."""
    rec = saturating_advice.recommended
    assert rec.setting == Setting("fixed", 8, 8, 1024)
    assert rec.row["throughput_mean"] == pytest.approx(64.0)
    assert rec.row["peak_open_rows_max"] == 64
    default = saturating_advice.default
    assert default.setting == Setting("fixed", 3, 8, 1024)
    assert default.row["throughput_mean"] == pytest.approx(128 / 6)  # 16 groups in 6 rounds of 1 s
    assert "fixed horizon 3" in default.limits.admission
    assert "no endpoint saturated" in default.limits.bottleneck  # 24 of 64 slots in use


def test_recommendation_satisfies_the_open_rows_constraint(saturating: Scenario):
    adv = advise(saturating, "throughput", max_open_rows=24, seeds=2, budget=HORIZON_ONLY, progress=False)
    assert adv.recommended.row["peak_open_rows_max"] <= 24
    assert adv.recommended.setting.max_concurrent_row_groups == 3  # 3 x 8 rows is the most allowed
    assert adv.evaluated.loc[~adv.evaluated["feasible"], "peak_open_rows_max"].min() > 24


def test_no_recommendation_when_no_setting_meets_the_constraint(saturating: Scenario):
    adv = advise(saturating, "throughput", max_open_rows=4, seeds=1, budget=HORIZON_ONLY, progress=False)
    assert adv.recommended is None
    assert adv.run_config_lines() == []
    assert "No setting tried keeps open rows at or below 4" in format_advice(adv)


def test_first_checkpoint_objective_prefers_the_smallest_horizon():
    """Exponential latencies: with more groups open the first group's cells share the endpoint."""
    sc = _scenario(latency={"distribution": "exponential", "mean": 1.0}, parallel=16, groups=12, size=16, chain=2)
    adv = advise(sc, "first-checkpoint", seeds=2, budget=HORIZON_ONLY, progress=False)
    best = adv.evaluated["time_to_first_checkpoint_mean"].min()
    assert adv.recommended.row["time_to_first_checkpoint_mean"] <= best * (1 + adv.objective.tolerance)


def test_adaptive_wins_where_it_stops_growing_at_the_right_horizon():
    """A chain of three columns on one model, request slots = task slots, long tails: fixed 3
    leaves the endpoint idle in the tails and fixed 4 or more hold rows that do not add
    throughput, while adaptive admission stops growing when the task slots are full
    (llm_wait_saturated) and reaches fixed 4's throughput with fixed 3's open rows."""
    sc = _scenario(
        latency={"distribution": "lognormal", "mean": 1.0, "cv": 1.5},
        parallel=16,
        groups=16,
        size=32,
        tasks=16,
        chain=3,
    )
    adv = advise(sc, "throughput", seeds=2, budget=HORIZON_ONLY, progress=False)
    rec = adv.recommended
    assert rec.setting.adaptive and rec.setting.policy == "localized"
    fixed = adv.evaluated[(adv.evaluated["mode"] == "fixed") & (adv.evaluated["seeds"] == 2)]
    same_rows = fixed[fixed["peak_open_rows_max"] <= rec.row["peak_open_rows_max"]]
    assert (same_rows["throughput_mean"] < rec.row["throughput_mean"]).all()
    assert "llm_wait_saturated" in rec.limits.admission
    lines = adv.run_config_lines()
    assert any("adaptive_row_group_admission=True" in line for line in lines)


def test_run_config_lines_parse_and_use_run_config_field_names(saturating_advice):
    for setting in (saturating_advice.recommended.setting, Setting("localized", 12, 500, 256)):
        lines = run_config_lines(setting)
        tree = ast.parse("\n".join(lines))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "RunConfig"]
        assert len(calls) == 1
        kwargs = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords}
        assert set(kwargs) <= set(RUN_CONFIG_FIELDS)
        assert kwargs["max_concurrent_row_groups"] == setting.max_concurrent_row_groups
        assert kwargs["max_in_flight_tasks"] == setting.max_in_flight_tasks
        assert kwargs["buffer_size"] == setting.buffer_size


def test_run_config_field_names_exist_in_data_designer():
    config = pytest.importorskip("data_designer.config")
    assert set(RUN_CONFIG_FIELDS) <= set(config.RunConfig.model_fields)
    assert config.RunConfig().max_concurrent_row_groups == 3


def test_same_seeds_same_advice(saturating: Scenario, saturating_advice):
    again = advise(saturating, "throughput", seeds=2, budget=HORIZON_ONLY, progress=False)
    pd.testing.assert_frame_equal(again.evaluated, saturating_advice.evaluated)
    assert again.recommended.setting == saturating_advice.recommended.setting
    assert format_advice(again) == format_advice(saturating_advice)


def test_resume_from_the_journal_runs_only_what_is_missing(saturating: Scenario, tmp_path):
    out = tmp_path / "advice"
    first = advise(saturating, "throughput", seeds=2, budget=HORIZON_ONLY, out=out, progress=False)
    assert first.runs == first.evaluations
    assert {p.name for p in first.files} == {"evaluated.csv", "front.csv", "advice.txt", "front.png"}
    # an interrupted search: drop the last half of the journal and tear the last line
    lines = (out / JOURNAL).read_text().splitlines()
    kept = lines[: len(lines) // 2]
    (out / JOURNAL).write_text("\n".join(kept) + "\n" + lines[len(lines) // 2][:20])
    resumed = advise(saturating, "throughput", seeds=2, budget=HORIZON_ONLY, out=out, progress=False)
    assert resumed.runs == first.runs - len(kept)
    pd.testing.assert_frame_equal(resumed.evaluated, first.evaluated)
    finished = advise(saturating, "throughput", seeds=2, budget=HORIZON_ONLY, out=out, progress=False)
    assert finished.runs == 0
    assert (out / "advice.txt").read_text() == format_advice(finished)


def test_an_advice_folder_of_another_scenario_is_refused(saturating: Scenario, tmp_path):
    out = tmp_path / "advice"
    advise(saturating, "throughput", seeds=1, budget=HORIZON_ONLY, out=out, progress=False)
    other = _scenario(latency={"distribution": "constant", "mean": 2.0}, parallel=64, groups=16, size=8)
    with pytest.raises(AdviceError, match="another scenario"):
        advise(other, "throughput", seeds=1, out=out, progress=False)
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(AdviceError, match="not an advice folder"):
        advise(saturating, seeds=1, out=tmp_path / "stranger", progress=False)
    assert (tmp_path / "stranger" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("text", ["speed", "mix:2", "mix:x", ""])
def test_bad_objective_is_an_input_error(saturating: Scenario, text: str):
    with pytest.raises(InputError, match="objective"):
        advise(saturating, text, seeds=1, progress=False)


@pytest.mark.parametrize(("kwargs", "match"), [({"max_open_rows": 0}, "max_open_rows"), ({"seeds": 0}, "seeds")])
def test_bad_constraint_or_seeds_is_an_input_error(saturating: Scenario, kwargs, match):
    with pytest.raises(AdviceError, match=match):
        advise(saturating, **kwargs, progress=False)


def test_objective_scores_and_ties():
    table = pd.DataFrame(
        {
            "throughput_mean": [10.0, 9.9, 5.0],
            "time_to_first_checkpoint_mean": [10.0, 5.0, 5.0],
            "peak_open_rows_mean": [300.0, 200.0, 100.0],
            "peak_open_rows_max": [300.0, 200.0, 100.0],
            "mode": ["fixed", "fixed", "fixed"],
            "max_concurrent_row_groups": [3, 2, 1],
        }
    )
    thr = Objective.parse("throughput")
    table["score"] = thr.scores(table)
    assert rank(table, thr, None) == [1, 0, 2]  # 9.9 is within 2 % of 10 and holds fewer rows
    assert rank(table, thr, 150) == [2]
    mix = Objective.parse("mix:0.5")
    table["score"] = mix.scores(table)
    assert table["score"].tolist() == pytest.approx([0.75, 0.995, 0.75])


def test_slot_utilization_is_time_weighted_in_flight_over_the_limit():
    series = pd.DataFrame({"time": [0.0, 1.0, 3.0], "model": ["m", "m", "m"], "in_flight": [2, 4, 0]})
    assert slot_utilization(series, {"m": 4}, 4.0) == {"m": pytest.approx((2 * 1 + 4 * 2) / 4 / 4)}


def test_cap_ladder():
    assert cap_ladder(1) == [1]
    assert cap_ladder(12) == [1, 2, 4, 8, 12]
    assert cap_ladder(16) == [1, 2, 4, 8, 16]


def test_journal_lines_are_plain_json(saturating: Scenario, tmp_path):
    advise(saturating, seeds=1, budget=HORIZON_ONLY, out=tmp_path / "a", progress=False)
    for line in (tmp_path / "a" / JOURNAL).read_text().splitlines():
        rec = json.loads(line)
        assert rec["status"] == "ok" and "throughput" in rec["metrics"]


def test_interrupted_search_keeps_its_evaluations_and_resumes(saturating: Scenario, tmp_path):
    out = tmp_path / "advice"
    seen = []

    def stop_after_five(ev):
        seen.append(ev)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(AdviceInterrupted, match="run again with it to resume"):
        advise(saturating, seeds=1, budget=HORIZON_ONLY, out=out, progress=False, on_evaluation=stop_after_five)
    assert len((out / JOURNAL).read_text().splitlines()) == 5
    assert not (out / "advice.txt").exists()
    resumed = advise(saturating, seeds=1, budget=HORIZON_ONLY, out=out, progress=False)
    assert resumed.runs == resumed.evaluations - 5


def _metrics(**extra) -> dict:
    base = {f"blocked_{r}": 0 for r in REASONS}
    base.update(
        {
            "open_row_groups_time_mean": 2.5,
            "adaptive_evaluations": 0,
            "observed_max_target": 3,
            "busy[m]": 0.9,
            "slots[m]": 0.3,
            "calls_429[m]": 0,
            "cooldown[m]": 0.0,
        }
    )
    base.update(extra)
    return base


@pytest.mark.parametrize(
    ("setting", "extra", "admission", "bottleneck"),
    [
        (Setting("fixed", 3, 8, 1024), {"slots[m]": 0.9}, "fixed horizon 3: 2.5 of 3", "endpoint 'm' (90% of its"),
        (Setting("fixed", 3, 8, 1024), {"calls_429[m]": 12, "cooldown[m]": 0.25}, "fixed", "provider capacity of 'm'"),
        (Setting("fixed", 3, 8, 1024), {}, "fixed", "no endpoint saturated"),
        (
            Setting("localized", 8, 8, 1024),
            {"adaptive_evaluations": 40, "blocked_queued_llm_demand": 30, "blocked_no_pending_row_groups": 1},
            "blocked by queued_llm_demand in 75% of 40 evaluations per run; target reached 3 of cap 8",
            "no endpoint saturated",
        ),
    ],
)
def test_limits_name_the_dominant_block_reason_and_the_bottleneck(setting, extra, admission, bottleneck):
    ev = Evaluation(setting, 0, "ok", None, _metrics(**extra))
    limits = limits_of([ev], setting, ["m"], groups=16)
    assert admission in limits.admission
    assert bottleneck in limits.bottleneck


def test_the_printed_advice_fits_100_columns_with_many_long_model_names():
    """The front is a sim.output table: one row per front setting, busy shares in their own table,
    every line at most 100 columns (pandas' to_string printed 200+), the RunConfig call still
    valid Python when it is laid out over three lines."""
    names = [f"endpoint-with-a-long-name-{i}" for i in range(6)]
    sc = scenario_from_dict(
        {
            "name": "advise-wide",
            "row_groups": {"num_records": 64, "buffer_size": 8},
            "scheduler": {"policy": "fixed"},
            "models": [
                {"name": n, "max_parallel_requests": 16, "latency": {"distribution": "constant", "mean": 1.0}}
                for n in names
            ],
            "columns": [{"name": "seed", "strategy": "full_column"}]
            + [{"name": f"c{i}", "depends_on": ["seed"], "model": n} for i, n in enumerate(names)],
        }
    )
    adv = advise(sc, "throughput", seeds=1, budget=SearchBudget(), progress=False)
    text = format_advice(adv)
    widths = [len(line) for line in text.splitlines()]
    assert max(widths) <= 100, text
    assert "…" not in text  # no header or cell cut short
    front_block = text[text.index("Pareto front\n") : text.index("Endpoint busy share")]
    for setting in adv.front["setting"]:
        assert f"\n{setting} " in front_block
    assert all(name in text for name in names)
    code = text[text.index("Apply it in DataDesigner:") : text.index("Shipped default")].splitlines()[1:]
    tree = ast.parse("\n".join(line[4:] for line in code))
    assert any(isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "RunConfig" for n in ast.walk(tree))


def test_a_long_setting_label_wraps_instead_of_cutting_the_numbers_short():
    """Real labels ("adaptive<= 8, buffer 125, tasks 1024") left too little room at 100 columns
    and rich cut the total time and open rows to "158…": the label column wraps instead."""
    sc = scenario_from_dict(
        {
            "name": "advise-long-label",
            "row_groups": {"num_records": 32, "buffer_size": 8},
            "scheduler": {"policy": "fixed"},
            "models": [{"name": "m", "max_parallel_requests": 4, "latency": {"distribution": "constant", "mean": 1.0}}],
            "columns": [
                {"name": "seed", "strategy": "full_column"},
                {"name": "c", "depends_on": ["seed"], "model": "m"},
            ],
        }
    )
    adv = advise(sc, "throughput", seeds=1, budget=SearchBudget(), progress=False)
    label = "adaptive<= 64, buffer 1000, tasks 1024, a label that is long"
    long = dataclasses.replace(adv, front=adv.front.assign(setting=label))
    text = format_advice(long)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "…" not in text, text
    front_block = text[text.index("Pareto front\n") : text.index("Endpoint busy share")]
    for value in long.front["total_time_mean"]:
        assert f" {format_value(round(value, 2))} " in front_block, front_block
