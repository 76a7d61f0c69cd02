"""End-to-end behaviour of the coordinator: headline experiment, cadence, salvage, invariants."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from sim import SimulationError, load_scenario, simulate
from sim.policies import get_policy
from sim.scenario import DEFAULT_EVENTS_PER_TASK, MIN_DEFAULT_MAX_EVENTS, scenario_from_dict, with_overrides
from sim.scheduler import WALL_CHECK_EVENTS, Scheduler
from sim.workload import Task, build_workload

SCENARIOS = Path(__file__).resolve().parent.parent / "sim" / "scenarios"


@pytest.fixture(scope="module")
def cooling():
    return load_scenario(SCENARIOS / "cooling-2048.toml")


@pytest.fixture(scope="module")
def headline(cooling):
    return {p: simulate(cooling, policy=p) for p in ("global", "localized")}


def test_headline_localized_reaches_300_healthy_calls_at_target_about_100(headline):
    s = headline["localized"].summary
    assert s["stop_reason"] == "successful_calls"
    assert s["healthy_calls"] == 300
    assert 98 <= s["observed_max_target"] <= 102  # the real scheduler reports 100-101
    assert s["blocked_deferred_tasks"] == 0
    assert s["blocked_no_pending_row_groups"] == 1  # the start-up evaluation only
    assert s["completed_rows"] == 0  # cooling never succeeds, so no row group can complete


def test_headline_global_freezes_target(headline):
    s = headline["global"].summary
    assert s["stop_reason"] == "max_time"
    assert s["observed_max_target"] <= 3
    assert s["healthy_calls"] <= 3 * s["observed_max_target"]
    assert s["blocked_deferred_tasks"] > 1000


def test_deferred_admission_diagnostics_at_the_last_block(headline):
    """docs/metrics.md: what was deferred, on which resources, and what the pending group would expose."""
    d = dict(headline["global"].deferred_admission)
    assert d["scope"] == "global" and d["blocks_next_row_group"] is True
    n = d["count"]
    assert n >= 1
    assert d["columns"] == {"cooling": n}
    assert d["request_resources"] == {"provider/cooling/chat": n}
    assert d["scheduler_resources"] == {"request:provider/cooling": n}
    # The localized analysis of the same state would not have blocked: healthy columns are independent.
    assert d["localized_analysis_blocks"] is False
    assert set(d["independent_candidate_columns"]) == {"healthy_1", "healthy_2", "healthy_3"}
    assert dict(headline["localized"].deferred_admission) == {}  # localized never blocked on deferred work


def test_headline_global_makes_far_fewer_calls_in_the_same_simulated_time(cooling, headline):
    localized = headline["localized"].summary
    same_time = simulate(cooling, policy="global", overrides=[f"stop.max_time={localized['sim_time']}"])
    assert same_time.summary["sim_time"] == pytest.approx(localized["sim_time"])
    assert same_time.summary["healthy_calls"] * 10 < localized["healthy_calls"]


def pr743_e2e(policy: str) -> dict:
    """docs/model.md "The PR #743 experiment": 64 one-row groups, always-429 cooling (weight 1), immediate healthy
    (weight 8)."""
    scenario = scenario_from_dict(
        {
            "name": "pr743-e2e",
            "row_groups": {"count": 64, "size": 1},
            "models": [
                {
                    "name": "cooling",
                    "max_parallel_requests": 1,
                    "latency": {"mean": 0.0},
                    "rate_limit": {"pattern": "always"},
                },
                {"name": "healthy", "max_parallel_requests": 8, "latency": {"mean": 0.0}},
            ],
            "columns": [
                {"name": "seed", "strategy": "full_column"},
                {"name": "cooling", "depends_on": ["seed"], "model": "cooling"},
                {"name": "healthy", "depends_on": ["seed"], "model": "healthy"},
            ],
            "scheduler": {
                "max_concurrent_row_groups": 32,
                "max_in_flight_tasks": 32,
                "max_model_task_admission": 32,
                "initial_target": 1,
                "salvage_max_rounds": 1,
                "resalvage_backoff": 0.001,
                # the zero-cost loop: everything happens at t = 0, as the PR's test assumes
                "loop": {"model": "none"},
            },
            "request_admission": {"enabled": False},
            # The real test allows 5 s of wall time; here everything happens by t=0, so 0.5 simulated
            # seconds (500 resalvage cycles of 1 ms) is ample and keeps the test fast.
            "stop": {"max_time": 0.5},
        }
    )
    return dict(simulate(scenario, policy=policy).summary)


def test_pr743_end_to_end_localized_reaches_hard_cap():
    s = pr743_e2e("localized")
    assert s["healthy_calls"] >= 16
    assert s["calls_429[cooling]"] >= 1
    assert s["observed_max_target"] == 32 == s["max_row_groups_in_flight"]
    assert s["healthy_calls"] == 32  # what the real scheduler measured


def test_pr743_end_to_end_fails_under_global():
    s = pr743_e2e("global")
    assert s["healthy_calls"] < 16
    assert s["observed_max_target"] < 4


def test_same_seed_same_result_bit_for_bit():
    scenario = load_scenario(SCENARIOS / "window-recovery.toml", ["row_groups.count=40"])
    a, b = simulate(scenario, seed=7), simulate(scenario, seed=7)
    assert dict(a.summary) == dict(b.summary)
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries)
    pd.testing.assert_frame_equal(a.model_timeseries, b.model_timeseries)
    c = simulate(scenario, seed=8)
    assert c.summary["sim_time"] != a.summary["sim_time"]


def base_scenario(**over) -> dict:
    data = {
        "name": "unit",
        "row_groups": {"count": 1, "size": 1},
        "models": [
            {"name": "a", "latency": {"mean": 1.0}},
            {"name": "b", "latency": {"mean": 1.0}},
        ],
        "columns": [
            {"name": "seed", "strategy": "full_column"},
            {"name": "ca", "depends_on": ["seed"], "model": "a"},
            {"name": "cb", "depends_on": ["seed"], "model": "b"},
        ],
        "scheduler": {"policy": "fixed"},
    }
    for key, value in over.items():
        data[key] = value
    return data


def test_same_instant_completions_merge_into_one_iteration():
    """The zero-cost loop's rule (with the loop modelled, docs/event-loop.md decides what merges)."""
    zero_cost = {"scheduler": {"policy": "fixed", "loop": {"model": "none"}}}
    together = simulate(scenario_from_dict(base_scenario(**zero_cost))).summary
    apart_data = base_scenario(**zero_cost)
    apart_data["models"][1]["latency"] = {"mean": 1.5}
    apart = simulate(scenario_from_dict(apart_data)).summary
    assert together["sim_time"] == 1.0 and apart["sim_time"] == 1.5
    assert apart["main_loop_iterations"] == together["main_loop_iterations"] + 1


def test_run_to_completion_durations_are_exact():
    data = base_scenario(scheduler={"policy": "fixed", "loop": {"model": "none"}})  # no scheduler CPU time
    data["row_groups"] = {"count": 3, "size": 2}
    data["columns"][0]["duration"] = 0.25
    data["columns"].append({"name": "judge", "depends_on": ["ca", "cb"], "model": "a"})
    result = simulate(scenario_from_dict(data))
    s = result.summary
    # fixed cap 3: all groups at once; seed 0.25 s, then ca/cb cells (4 parallel per model, 6 cells
    # per model -> two waves of 1 s), then judge cells behind both, sharing model a's 4 slots.
    assert s["stop_reason"] == "completed"
    assert s["completed_rows"] == 6 and s["total_rows"] == 6
    assert s["successful_calls"] == 18
    assert s["sim_time"] == pytest.approx(result.row_groups["checkpointed_at"].max())
    assert result.row_groups["admitted_at"].tolist() == [0.0, 0.0, 0.0]
    assert s["rows_per_second"] == pytest.approx(6 / s["sim_time"])


def test_row_groups_are_admitted_in_id_order_up_to_the_fixed_cap():
    scenario = load_scenario(
        SCENARIOS / "window-recovery.toml",
        ["row_groups.count=30", "scheduler.policy='fixed'", "scheduler.max_concurrent_row_groups=3"],
    )
    result = simulate(scenario)
    rgs = result.row_groups.sort_values("row_group")
    assert rgs["admitted_at"].is_monotonic_increasing
    assert result.summary["max_row_groups_in_flight"] == 3
    assert result.summary["completed_rows"] == 120


def test_window_scenario_completes_and_salvages():
    scenario = load_scenario(SCENARIOS / "window-recovery.toml", ["row_groups.count=60"])
    s = simulate(scenario, policy="localized").summary
    assert s["stop_reason"] == "completed"
    assert s["completed_rows"] == s["total_rows"] == 240
    assert s["deferred_at_end"] == 0
    assert s["salvage_cycles"] >= 1 and s["rate_limited_calls"] >= 1


def test_resalvage_pause_paces_the_retry_loop(headline):
    """Global with an always-429 model, zero-cost loop: one salvage cycle per resalvage backoff
    (0.05 s); with the loop modelled each cycle also costs its CPU time, so there are fewer."""
    zero = simulate(with_overrides(headline["global"].scenario, {"scheduler.loop.model": "none"}), policy="global")
    s = zero.summary
    assert 60.0 / 0.05 - 5 <= s["salvage_cycles"] <= 60.0 / 0.05 + 1


def test_parked_tasks_are_capped_by_the_request_resource():
    """docs/model.md "Request admission": at most max_parallel_requests tasks wait in request admission during
    cooldown."""
    scenario = load_scenario(SCENARIOS / "window-recovery.toml", ["row_groups.count=60"])
    models = simulate(scenario).models.set_index("model")
    assert models.loc["flaky", "rate_limited_calls"] > 0
    assert 0 < models.loc["flaky", "max_waiting"] <= 8
    # A request granted at once never counts as waiting: the healthy models never wait.
    assert (models.drop(index="flaky")["max_waiting"] == 0).all()
    assert (models["max_in_flight"] <= models["max_parallel_requests"]).all()
    assert models.loc["flaky", "limit_decreases"] >= 1


def advisory_scenario(advisory: bool):
    """One 64-row group; `flaky` rate-limits for 3 s while `healthy` work is queued behind its cap."""
    return scenario_from_dict(
        {
            "name": "advisory",
            "row_groups": {"count": 1, "size": 64},
            "models": [
                {
                    "name": "flaky",
                    "max_parallel_requests": 4,
                    "latency": {"mean": 0.1},
                    "rate_limit": {"pattern": "window", "start": 0, "end": 3, "retry_after": 1.0},
                },
                {"name": "healthy", "max_parallel_requests": 8, "latency": {"mean": 0.5}},
            ],
            "columns": [
                {"name": "seed", "strategy": "full_column"},
                {"name": "flaky", "depends_on": ["seed"], "model": "flaky"},
                {"name": "healthy", "depends_on": ["seed"], "model": "healthy"},
            ],
            # zero-cost loop: with scheduler CPU time the dispatch passes no longer meet a pressured
            # head with an open peer behind it in this small scenario
            "scheduler": {"policy": "fixed", "request_pressure_advisory": advisory, "loop": {"model": "none"}},
        }
    )


def test_request_pressure_advisory_skips_pressured_heads_only_with_an_open_peer():
    plain = simulate(advisory_scenario(False)).summary
    advised = simulate(advisory_scenario(True)).summary
    assert plain["request_pressure_advisory_skips"] == 0
    assert advised["request_pressure_advisory_skips"] > 0
    assert advised["completed_rows"] == plain["completed_rows"] == 64
    # In window-recovery the pressured `flaky` head is always the only eligible one: no open
    # peer, so it is dispatched anyway and nothing is skipped (docs/model.md, "Request-pressure advisory")
    # in the zero-cost loop (with scheduler CPU time, completions spread out and a few skips happen).
    window = load_scenario(SCENARIOS / "window-recovery.toml", ["row_groups.count=20", "scheduler.loop.model=none"])
    assert (
        simulate(window, overrides=["scheduler.request_pressure_advisory=true"]).summary[
            "request_pressure_advisory_skips"
        ]
        == 0
    )


@pytest.mark.parametrize("advisory", [False, True])
def test_resalvage_delay_is_the_cooldown_remaining_only_with_a_pressure_provider(cooling, advisory):
    """docs/model.md "Deferral and salvage": 0.05 s by default; with the advisory's pressure provider, max(0.05,
    min cooldown left)."""
    from sim.scenario import with_overrides

    scenario = with_overrides(
        cooling,
        [
            "request_admission.enabled=true",
            f"scheduler.request_pressure_advisory={str(advisory).lower()}",
            "row_groups.count=4",
        ],
    )
    sched = Scheduler(scenario, build_workload(scenario), get_policy("global"), seed=0)
    cooling_gen = sched.workload.generators[sched.workload.column_to_generator["cooling"]]
    sched.deferred.append(Task(cooling_gen, None, 0))
    sched.request_admission.by_key[cooling_gen.request_key].blocked_until = 1.5  # 429 just seen, now = 0
    assert sched._resalvage_delay() == (1.5 if advisory else 0.05)
    sched.request_admission.by_key[cooling_gen.request_key].blocked_until = 0.01
    assert sched._resalvage_delay() == 0.05  # never shorter than the backoff


def test_invariant_violation_fails_loudly():
    scenario = scenario_from_dict(base_scenario())
    sched = Scheduler(scenario, build_workload(scenario), get_policy("fixed"), seed=0)
    sched.run()
    sched.tasks.leased[0] += 1
    with pytest.raises(SimulationError, match="task leases on submission"):
        sched.check_invariants()


def test_stop_on_completed_rows():
    scenario = load_scenario(SCENARIOS / "window-recovery.toml", ["stop.completed_rows=40"])
    s = simulate(scenario).summary
    assert s["stop_reason"] == "completed_rows"
    assert 40 <= s["completed_rows"] < s["total_rows"]


# ---------------------------------------------------------------------------------------------
# Run budgets (stop.max_events, stop.max_wall_seconds)
# ---------------------------------------------------------------------------------------------


def spinning_headline(**stop) -> dict:
    """The headline scenario with zero latencies and no call stop: without a budget it retries
    the always-429 column at t = 0 for minutes while memory grows."""
    data = tomllib.loads((SCENARIOS / "cooling-2048.toml").read_text())
    for model in data["models"]:
        model["latency"] = {"distribution": "constant", "mean": 0.0}
    data["stop"] = {"max_time": 60.0, **stop}
    data["scheduler"]["loop"] = {"model": "none"}  # the zero-cost loop spins; the modelled one does not
    return data


def test_zero_latency_spin_stops_on_the_event_budget_and_says_what_grew():
    result = simulate(scenario_from_dict(spinning_headline(max_events=20_000)))
    s = result.summary
    assert s["stop_reason"] == "max_events"
    assert s["budget_exhausted"] is True
    assert s["sim_time"] == 0.0  # the spin: no simulated time passes
    assert s["rate_limited_calls"] > 5_000
    message = s["budget_message"]
    assert "stop.max_events = 20000 scheduler events" in message
    assert "retries grew" in message and "answered 429" in message
    assert "raise stop.max_events" in message
    # Past the budget by at most one pass's dispatches (max_in_flight_tasks = 1024).
    assert s["max_events"] == 20_000
    assert 20_000 < s["scheduler_events"] <= 20_000 + 1024 + 1
    assert s["scheduler_events"] >= s["main_loop_iterations"] + s["dispatches"]


def test_budget_stop_can_be_raised_with_an_override():
    scenario = scenario_from_dict(spinning_headline(max_events=5_000))
    small = simulate(scenario).summary
    large = simulate(scenario, overrides=["stop.max_events=15000"]).summary
    assert small["stop_reason"] == large["stop_reason"] == "max_events"
    assert large["dispatches"] > 2 * small["dispatches"]


def test_outage_over_a_huge_horizon_stops_on_the_budget_not_after_weeks():
    data = tomllib.loads((SCENARIOS / "cooling-2048.toml").read_text())
    data["row_groups"]["count"] = 16
    data["scheduler"]["resalvage_backoff"] = 1e-4
    data["stop"] = {"max_time": 1e9, "max_events": 30_000}
    s = simulate(scenario_from_dict(data)).summary
    assert s["stop_reason"] == "max_events" and s["budget_exhausted"] is True
    assert 0.0 < s["sim_time"] < 1e9


def test_wall_clock_budget_is_checked_every_4096_scheduler_events():
    result = simulate(scenario_from_dict(spinning_headline(max_wall_seconds=1e-9)))
    s = result.summary
    assert s["stop_reason"] == "max_wall_seconds"
    assert s["budget_exhausted"] is True
    assert "stop.max_wall_seconds = 1e-09 s of wall time" in s["budget_message"]
    assert WALL_CHECK_EVENTS < s["scheduler_events"] <= WALL_CHECK_EVENTS + 1025


def test_default_event_budget_scales_with_the_plan(cooling):
    small = Scheduler(cooling, build_workload(cooling), get_policy("global"), seed=0)
    assert small.planned_tasks == 2048 * 4 + 2048
    assert small.max_events == MIN_DEFAULT_MAX_EVENTS  # 20 x 10240 is below the floor
    big = cooling.model_copy(update={"row_groups": cooling.row_groups.model_copy(update={"count": 40_000})})
    sched = Scheduler(big, build_workload(big), get_policy("global"), seed=0)
    assert sched.max_events == DEFAULT_EVENTS_PER_TASK * 40_000 * 5


def test_bundled_runs_never_touch_their_budgets(headline):
    for result in headline.values():
        assert result.summary["budget_exhausted"] is False
        assert result.summary["budget_message"] == ""
        assert result.summary["recorder_note"] == ""


def test_a_budget_too_small_for_healthy_work_says_the_work_itself_grew():
    scenario = load_scenario(SCENARIOS / "healthy-bottleneck.toml", ["stop.max_events=500"])
    s = simulate(scenario, policy="fixed").summary
    assert s["stop_reason"] == "max_events"
    assert s["rate_limited_calls"] == 0
    assert "the work itself:" in s["budget_message"] and "planned tasks dispatched" in s["budget_message"]
    assert s["completed_rows"] < s["total_rows"]


@pytest.mark.parametrize("loop", ["none", "calibrated"])
def test_the_schedulers_own_heap_runs_the_same_events_as_simpys_queue(loop: str, monkeypatch) -> None:
    """Compiled runs keep the scheduler's entries in a heap of their own merged with SimPy's queue
    (request-admission cooldowns, the max_time stop); forcing it on here must not move an event."""
    import sim.scheduler as scheduler_module

    scenario = with_overrides(
        load_scenario(SCENARIOS / "window-recovery.toml"), {"scheduler.loop.model": loop, "stop.max_time": 30.0}
    )
    runs = []
    for own in (False, True):
        monkeypatch.setattr(scheduler_module, "COMPILED", own)
        sched = Scheduler(scenario, build_workload(scenario), get_policy("localized"), scenario.seed)
        assert sched.timeline.own is own
        sched.run()
        assert sched.request_admission is not None and sum(sched.recorder.model_429) > 0
        runs.append((sched.env.now, sched.stop_reason, sched.recorder.dispatches, list(sched.recorder.series)))
    assert runs[0] == runs[1]
