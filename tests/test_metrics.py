"""Each run metric on a tiny scenario whose true value is known by hand (constant latencies, a
known 429 window), plus the interval and step-function helpers they are built on."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import sim
from sim.metrics import Recorder, clip_intervals, overlap_length, time_weighted_mean
from sim.scenario import scenario_from_dict


def scenario(
    *,
    count: int = 1,
    size: int = 1,
    cap: int = 1,
    latency: float = 1.0,
    seed_duration: float = 0.0,
    mpr: int = 1,
    rate_limit: dict | None = None,
    controller: bool = False,
    salvage_max_rounds: int = 5,
) -> sim.Scenario:
    """seed (local, full column) -> one cell column `a` on model `m` with constant latency."""
    model = {"name": "m", "max_parallel_requests": mpr, "latency": {"distribution": "constant", "mean": latency}}
    if rate_limit is not None:
        model["rate_limit"] = rate_limit
    return scenario_from_dict(
        {
            "name": "metrics-case",
            "row_groups": {"count": count, "size": size},
            "scheduler": {
                "policy": "fixed",
                "max_concurrent_row_groups": cap,
                "salvage_max_rounds": salvage_max_rounds,
                "loop": {"model": "none"},  # exact hand-computed times: no scheduler CPU time
            },
            "request_admission": {"enabled": controller, "cooldown_seconds": 7.0},
            "stop": {"max_time": 100.0},
            "models": [model],
            "columns": [
                {"name": "seed", "strategy": "full_column", "duration": seed_duration},
                {"name": "a", "depends_on": ["seed"], "model": "m"},
            ],
        }
    )


def model_row(result: sim.Result) -> dict:
    return result.models.set_index("model").loc["m"].to_dict()


# -- helpers -----------------------------------------------------------------------------------


def test_overlap_and_clip() -> None:
    a = [(0.0, 2.0), (3.0, 5.0)]
    b = [(1.0, 4.0), (4.5, 10.0)]
    assert overlap_length(a, b) == pytest.approx(1.0 + 1.0 + 0.5)
    assert overlap_length(a, []) == 0.0
    assert clip_intervals(b, 5.0) == [(1.0, 4.0), (4.5, 5.0)]
    assert clip_intervals([(0.0, 1.0), (2.0, 3.0)], 2.0) == [(0.0, 1.0)]


def test_time_weighted_mean_of_a_step_function() -> None:
    # 2 on [0, 1), 1 on [1, 2), 0 on [2, 4): mean over [0, 4] = 3 / 4
    assert time_weighted_mean([0.0, 1.0, 2.0], [2, 1, 0], 4.0) == pytest.approx(0.75)
    assert time_weighted_mean([5.0], [3], 5.0) == 3.0
    assert math.isnan(time_weighted_mean([], [], 1.0))


# -- per-run metrics ----------------------------------------------------------------------------


def test_row_progress_times_and_latency_with_sequential_row_groups() -> None:
    # Cap 1, one row per group, 1 s per call: group k is admitted at k and checkpointed at k + 1.
    result = sim.simulate(scenario(count=4, cap=1))
    s = result.summary
    assert s["sim_time"] == pytest.approx(4.0)
    assert s["time_to_first_row"] == pytest.approx(1.0)
    assert s["time_to_50pct_rows"] == pytest.approx(2.0)
    assert s["time_to_all_rows"] == pytest.approx(4.0)
    assert s["row_group_latency_p50"] == pytest.approx(1.0)
    assert s["row_group_latency_p95"] == pytest.approx(1.0)
    assert s["active_row_groups_time_mean"] == pytest.approx(1.0)
    # The model is never idle: each admission sends the next call at the instant the last one ends.
    m = model_row(result)
    assert m["busy_fraction"] == pytest.approx(1.0)
    assert m["idle_with_work_left"] == pytest.approx(0.0)
    assert m["work_done_at"] == pytest.approx(4.0)


def test_row_group_latency_percentiles_when_groups_queue_on_one_model() -> None:
    # Cap 2 but one call at a time: groups finish at 1, 2, 3, 4 after admission at 0, 0, 1, 2,
    # so latencies are 1, 2, 2, 2 s (p50 = 2, p95 = 2, max = 2).
    result = sim.simulate(scenario(count=4, cap=2))
    latencies = sorted(result.row_groups["latency"].tolist())
    assert latencies == pytest.approx([1.0, 2.0, 2.0, 2.0])
    s = result.summary
    assert s["row_group_latency_p50"] == pytest.approx(2.0)
    assert s["row_group_latency_p95"] == pytest.approx(2.0)
    assert s["row_group_latency_max"] == pytest.approx(2.0)
    assert s["active_row_groups_time_mean"] == pytest.approx((2 + 2 + 2 + 1) / 4)


def test_unreached_progress_times_are_nan() -> None:
    # Stop after 2.5 s of a 4 s run: 2 of 4 rows done, so 50% is reached but 100% is not.
    result = sim.simulate(scenario(count=4, cap=1), overrides=["stop.max_time=2.5"])
    s = result.summary
    assert s["stop_reason"] == "max_time"
    assert s["time_to_50pct_rows"] == pytest.approx(2.0)
    assert math.isnan(s["time_to_all_rows"])
    m = model_row(result)
    assert m["unfinished_calls"] == 2
    assert math.isnan(m["work_done_at"])
    # The call in flight at the stop counts as busy up to the stop.
    assert m["busy_fraction"] == pytest.approx(1.0)


def test_ready_queue_time_mean() -> None:
    # One group of 3 rows, one call at a time, 1 s each: 2 cells queued on [0, 1), 1 on [1, 2),
    # none on [2, 3): time-weighted mean 1.0, maximum 2; one task in flight throughout.
    result = sim.simulate(scenario(count=1, size=3))
    s = result.summary
    assert s["sim_time"] == pytest.approx(3.0)
    assert s["queued_tasks_time_mean"] == pytest.approx(1.0)
    assert result.timeseries["queued_tasks"].max() == 2
    # The maximum also sees the instant before the first dispatch pass, when all 3 cells queued.
    assert s["max_queued_tasks"] == 3
    assert s["in_flight_tasks_time_mean"] == pytest.approx(1.0)
    # 50% of 3 rows = 2 rows, only reached when the single group checkpoints.
    assert s["time_to_first_row"] == s["time_to_50pct_rows"] == pytest.approx(3.0)


# -- per-model metrics ------------------------------------------------------------------------


def test_idle_with_work_left_while_upstream_runs() -> None:
    # The seed sampler takes 2 s, then one 1 s call: idle with work left 2 s, busy 1/3.
    result = sim.simulate(scenario(seed_duration=2.0))
    m = model_row(result)
    assert result.summary["sim_time"] == pytest.approx(3.0)
    assert m["planned_calls"] == 1
    assert m["busy_time"] == pytest.approx(1.0)
    assert m["busy_fraction"] == pytest.approx(1 / 3)
    assert m["idle_with_work_left"] == pytest.approx(2.0)
    assert m["idle_in_cooldown"] == 0.0
    assert m["cooldown_time"] == 0.0
    assert result.summary["idle_with_work_left[m]"] == pytest.approx(2.0)


def test_cooldown_with_aimd_controller_and_retry_after() -> None:
    # 429 for calls sent in [0, 2.5), answered after 0.5 s with Retry-After 1 s; AIMD on.
    #   0.0 send -> 0.5 429, cooldown [0.5, 1.5); 1.5 send -> 2.0 429, cooldown [2.0, 3.0);
    #   3.0 send -> 4.0 served. Busy [0, .5) + [1.5, 2) + [3, 4) = 2 s of 4.
    rate_limit = {"pattern": "window", "start": 0.0, "end": 2.5, "retry_after": 1.0, "latency": 0.5}
    result = sim.simulate(scenario(rate_limit=rate_limit, controller=True, mpr=4))
    s = result.summary
    m = model_row(result)
    assert s["sim_time"] == pytest.approx(4.0)
    assert m["rate_limited_calls"] == 2
    assert m["busy_fraction"] == pytest.approx(0.5)
    assert m["cooldown_time"] == pytest.approx(2.0)
    assert m["cooldown_periods"] == 2
    assert m["idle_with_work_left"] == pytest.approx(2.0)
    assert m["idle_in_cooldown"] == pytest.approx(2.0)
    # AIMD: 4 -> floor(4 * 0.75) = 3 -> floor(3 * 0.75) = 2
    assert m["min_limit"] == 2
    assert m["final_limit"] == 2
    assert s["cooldown_time[m]"] == pytest.approx(2.0)
    assert s["time_to_first_row"] == pytest.approx(4.0)
    assert s["row_group_latency_p50"] == pytest.approx(4.0)
    # The model time series carries the same cooldown ends (used to shade plots).
    ends = sorted(set(result.model_timeseries["cooldown_until"]) - {0.0})
    assert ends == pytest.approx([1.5, 3.0])
    # ... and flags the two 429 answers, at 0.5 and 2.0.
    flagged = result.model_timeseries[result.model_timeseries["rate_limited"]]
    assert flagged["time"].tolist() == pytest.approx([0.5, 2.0])
    assert flagged["cooldown_until"].tolist() == pytest.approx([1.5, 3.0])


def test_cooldown_without_controller_uses_retry_after() -> None:
    # No controller: the 429 at 0.5 (Retry-After 1 s) is salvaged at once and served by 1.5.
    # The Retry-After interval [0.5, 1.5) counts as cooldown, but the model was busy during it.
    rate_limit = {"pattern": "window", "start": 0.0, "end": 0.1, "retry_after": 1.0, "latency": 0.5}
    result = sim.simulate(scenario(rate_limit=rate_limit, controller=False))
    m = model_row(result)
    assert result.summary["sim_time"] == pytest.approx(1.5)
    assert m["cooldown_time"] == pytest.approx(1.0)
    assert m["idle_in_cooldown"] == pytest.approx(0.0)
    assert m["busy_fraction"] == pytest.approx(1.0)
    # Without Retry-After there is nothing to measure.
    rate_limit["retry_after"] = 0.0
    m = model_row(sim.simulate(scenario(rate_limit=rate_limit, controller=False)))
    assert m["cooldown_time"] == 0.0
    assert m["rate_limited_calls"] == 1


def test_cooldown_is_clipped_to_the_run() -> None:
    # Cooling forever (always 429, Retry-After 10 s) and the run stops at 3 s: cooldown 3 - 0.5.
    rate_limit = {"pattern": "always", "retry_after": 10.0, "latency": 0.5}
    result = sim.simulate(scenario(rate_limit=rate_limit, controller=True), overrides=["stop.max_time=3.0"])
    m = model_row(result)
    assert result.summary["sim_time"] == pytest.approx(3.0)
    assert m["cooldown_time"] == pytest.approx(2.5)
    assert m["busy_time"] == pytest.approx(0.5)
    assert m["idle_with_work_left"] == pytest.approx(2.5)
    assert m["unfinished_calls"] == 1
    assert math.isnan(result.summary["time_to_first_row"])


def test_planned_calls_count_tasks_per_generator() -> None:
    # A cell column: one call per row; a full-column model column: one call per row group.
    base = scenario(count=3, size=2, cap=3).model_dump(mode="json")
    base["columns"].append({"name": "b", "strategy": "full_column", "depends_on": ["seed"], "model": "m"})
    result = sim.simulate(scenario_from_dict(base))
    m = model_row(result)
    assert m["planned_calls"] == 3 * 2 + 3
    assert m["successful_calls"] == m["planned_calls"]
    assert m["unfinished_calls"] == 0


def test_headline_run_explains_the_global_freeze() -> None:
    """cooling-2048 under global: the target never grows, deferred work blocked growth, and the
    diagnostics name the independent healthy columns that localized would have admitted."""
    result = sim.simulate(sim.load_scenario("cooling-2048"), policy="global", overrides=["stop.max_time=2.0"])
    s = result.summary
    assert s["observed_max_target"] == 2  # the real scheduler's 2-3 (docs/event-loop.md)
    assert s["blocked_deferred_tasks"] > 0
    assert result.deferred_admission["independent_candidate_columns"] == ["healthy_1", "healthy_2", "healthy_3"]
    assert s["deferred_admission_independent_columns"] == "healthy_1,healthy_2,healthy_3"
    assert s["active_row_groups_time_mean"] == pytest.approx(2.0, abs=0.01)  # the second group from t = 0.02 s


# --- healthy calls while another model is rate-limited ----------------------------------------


def two_model_recorder(pattern: str = "window"):
    """A recorder for `h` (healthy) and `c` (rate-limited by `pattern`), driven by hand."""
    from sim.metrics import Recorder
    from sim.workload import build_workload

    sc = scenario_from_dict(
        {
            "name": "while-limited",
            "row_groups": {"count": 1},
            "models": [
                {"name": "h"},
                {
                    "name": "c",
                    "rate_limit": {"pattern": pattern, "end": 10.0} if pattern == "window" else {"pattern": pattern},
                },
            ],
            "columns": [{"name": "hc", "model": "h"}, {"name": "cc", "model": "c"}],
            "stop": {"max_time": 10.0},
        }
    )
    return Recorder(sc, build_workload(sc))


H, C = 0, 1  # model indices; generator indices are the same here


def test_healthy_calls_count_while_another_model_cools_down_or_last_answered_429():
    rec = two_model_recorder()
    rec.model_sent(0.0, H, 4)
    rec.model_sent(0.0, C, 4)
    rec.model_answered(1.0, H, H, False, 4, 0.0, 1.0)  # nothing limited yet: not counted
    rec.model_sent(1.0, H, 4)
    rec.model_answered(2.0, C, C, True, 3, 5.0, 2.0)  # c: 429, cooldown until 5.0
    rec.model_answered(3.0, H, H, False, 4, 0.0, 2.0)  # counted (c cools down)
    rec.model_sent(5.5, C, 3)
    rec.model_sent(5.5, H, 4)
    rec.model_answered(6.0, H, H, False, 4, 0.0, 0.5)  # counted: c's last answer was a 429
    rec.model_answered(6.5, C, C, False, 3, 5.0, 1.0)  # c succeeds
    rec.model_sent(6.5, H, 4)
    rec.model_answered(7.0, H, H, False, 4, 0.0, 0.5)  # nothing limited: not counted
    assert (rec.healthy_calls, rec.healthy_calls_while_limited) == (4, 2)
    lat = rec.latency  # histogram 2 * model (success) and 2 * model + 1 (429)
    assert [lat.count(j) for j in range(4)] == [4, 0, 1, 1]
    assert (lat.mean(2 * H), lat.mins[2 * H], lat.maxs[2 * H]) == (1.0, 0.5, 2.0)
    assert (lat.mean(2 * C), lat.mean(2 * C + 1)) == (1.0, 2.0)


def test_a_429_without_a_controller_limits_until_the_next_success():
    rec = two_model_recorder()
    rec.model_sent(0.0, C, 4)
    rec.model_sent(0.0, H, 4)
    rec.model_answered(1.0, C, C, True, 4, 0.0, 1.0)  # 429, no cooldown (no controller, no Retry-After)
    rec.model_answered(1.5, H, H, False, 4, 0.0, 1.5)  # counted
    rec.model_sent(2.0, C, 4)
    rec.model_sent(2.0, H, 4)
    rec.model_answered(2.5, C, C, False, 4, 0.0, 0.5)  # c recovers
    rec.model_answered(3.0, H, H, False, 4, 0.0, 1.0)  # not counted
    assert rec.healthy_calls_while_limited == 1


def test_healthy_calls_while_limited_on_the_headline_scenario():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "sim" / "scenarios" / "cooling-2048.toml"
    scenario_ = sim.load_scenario(path, ["row_groups.count=64", "stop.max_time=0.5"])
    s = sim.simulate(scenario_, policy="localized").summary
    # The cooling 429 takes no time and healthy calls ~1 ms: every healthy call counts.
    assert s["healthy_calls_while_limited"] == s["healthy_calls"] > 0
    healthy = sim.simulate(scenario_, policy="localized", overrides=["models.cooling.rate_limit.pattern='never'"])
    assert healthy.summary["healthy_calls"] > 0 and healthy.summary["healthy_calls_while_limited"] == 0


# -- bounded recorder --------------------------------------------------------------------------


def run_with_caps(
    scenario: sim.Scenario, series_rows: int, model_rows: int, intervals: int = 10**9, policy: str = "localized"
) -> sim.Result:
    """Run ``scenario`` as sim.simulate does, with a recorder capped at the given row counts."""
    from sim.metrics import Recorder
    from sim.policies import get_policy
    from sim.results import result_from_scheduler
    from sim.scheduler import Scheduler
    from sim.workload import build_workload

    workload = build_workload(scenario)
    sched = Scheduler(scenario, workload, get_policy(policy), seed=0)
    sched.recorder = Recorder(
        scenario, workload, max_series_rows=series_rows, max_model_series_rows=model_rows, max_intervals=intervals
    )
    sched.run()
    return result_from_scheduler(sched)


@pytest.fixture(scope="module")
def window_runs() -> tuple[sim.Result, sim.Result]:

    scenario = sim.load_scenario("window-recovery")
    return run_with_caps(scenario, 10**9, 10**9), run_with_caps(scenario, 50, 300)


def test_capped_series_keep_every_summary_metric(window_runs) -> None:
    full, capped = window_runs
    assert len(full.timeseries) > 50 and len(full.model_timeseries) > 300
    a, b = dict(full.summary), dict(capped.summary)
    changed = {"timeseries_rows_aggregated", "model_timeseries_rows_aggregated", "recorder_note"}
    for key, value in a.items():
        if key in changed:
            continue
        if isinstance(value, float) and not math.isnan(value):
            assert b[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert b[key] == value or (value != value and b[key] != b[key]), key


def _row_set(frame: pd.DataFrame, columns: list[str]) -> set[tuple]:
    values = [frame[c].astype(str).tolist() if c == "model" else frame[c].tolist() for c in columns]
    return set(zip(*values, strict=True))


def test_thinned_scheduler_series_keeps_true_change_points_within_the_cap(window_runs) -> None:
    full, capped = window_runs
    ts, whole = capped.timeseries, full.timeseries
    assert 2 <= len(ts) <= 50 < len(whole)
    # Every kept row is a state the run really had, at the time it began; first and final rows kept.
    assert _row_set(ts, list(ts.columns)) <= _row_set(whole, list(whole.columns))
    assert ts.iloc[0].equals(whole.iloc[0]) and ts.iloc[-1].equals(whole.iloc[-1])
    assert ts["time"].is_monotonic_increasing
    s = capped.summary
    assert s["timeseries_rows_aggregated"] == len(whole) - len(ts)
    assert "scheduler time series thinned past 50 rows" in s["recorder_note"]


def test_thinned_model_series_keeps_exact_call_counts(window_runs) -> None:
    full, capped = window_runs
    mts, whole = capped.model_timeseries, full.model_timeseries
    assert len(mts) <= 300 < len(whole)
    state = ["time", "model", "in_flight", "waiting", "current_limit", "cooldown_until"]
    assert _row_set(mts, state) <= _row_set(whole, state)
    assert mts["time"].is_monotonic_increasing
    counts = ["sent", "answered", "answered_429"]
    pd.testing.assert_frame_equal(
        mts.groupby("model", observed=False)[counts].sum(), whole.groupby("model", observed=False)[counts].sum()
    )
    models = full.models.set_index("model")
    per_model = mts.groupby("model", observed=False)[counts].sum()
    assert (per_model["answered_429"] == models["rate_limited_calls"]).all()
    assert (per_model["answered"] == models["successful_calls"] + models["rate_limited_calls"]).all()
    assert (mts["rate_limited"] == (mts["answered_429"] > 0)).all()
    s = capped.summary
    assert s["model_timeseries_rows_aggregated"] == len(whole) - len(mts)
    assert "model time series thinned past 300 rows" in s["recorder_note"]
    # The per-model call counts do not depend on the stored rows.
    pd.testing.assert_frame_equal(capped.models, full.models)


def test_full_detail_keeps_one_row_per_call_and_sample(window_runs) -> None:
    full, _ = window_runs
    scenario = sim.load_scenario("window-recovery", ["recorder.detail=full", "recorder.max_series_rows=2"])
    detailed = sim.simulate(scenario)
    pd.testing.assert_frame_equal(detailed.timeseries, full.timeseries)
    pd.testing.assert_frame_equal(detailed.model_timeseries, full.model_timeseries)
    whole = full.model_timeseries
    assert (whole["sent"] + whole["answered"] == 1).all()  # one row per call sent or answered
    assert (whole["answered_429"] == whole["rate_limited"].astype(int)).all()


def test_bounded_and_full_detail_give_the_same_summary() -> None:
    base = ["row_groups.count=960", "stop.max_time=1e7"]
    bounded = sim.simulate(
        sim.load_scenario(
            "window-recovery", [*base, "recorder.max_series_rows=100", "recorder.max_model_series_rows=600"]
        )
    )
    full = sim.simulate(sim.load_scenario("window-recovery", [*base, "recorder.detail=full"]))
    assert len(bounded.timeseries) <= 100 and len(bounded.model_timeseries) <= 600
    assert len(full.model_timeseries) > 10 * 600
    changed = {"timeseries_rows_aggregated", "model_timeseries_rows_aggregated", "recorder_note"}
    for key, value in full.summary.items():
        if key in changed:
            continue
        if isinstance(value, float):
            assert bounded.summary[key] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), key
        else:
            assert bounded.summary[key] == value, key


def test_recorder_size_does_not_grow_with_the_run_beyond_its_caps() -> None:
    """Four times the work: the same stored rows (bounded), four times the rows with full detail."""
    sizes = {}
    for factor in (1, 4):
        caps = ["recorder.max_series_rows=200", "recorder.max_model_series_rows=800"]
        scenario = sim.load_scenario(
            "window-recovery", [f"row_groups.count={240 * factor}", "stop.max_time=1e7", *caps]
        )
        from sim.policies import get_policy
        from sim.scheduler import Scheduler
        from sim.workload import build_workload

        sched = Scheduler(scenario, build_workload(scenario), get_policy("localized"), seed=0)
        sched.run()
        rec = sched.recorder
        assert rec.scheduler_series.n <= 200 and rec.call_series.n <= 800
        sizes[factor] = (
            rec.scheduler_series.data.buffer_info()[1] * 8 + rec.call_series.data.buffer_info()[1] * 8,
            sched.recorder.dispatches,
        )
    (bytes1, tasks1), (bytes4, tasks4) = sizes[1], sizes[4]
    assert bytes1 <= (200 * 10 + 800 * 9) * 8 * 1.2
    assert tasks4 > 3.5 * tasks1
    assert bytes4 <= (200 * 10 + 800 * 9) * 8 * 1.2  # within the caps' bytes, whatever the task count


def test_unthinned_runs_have_no_note(window_runs) -> None:
    full, _ = window_runs
    assert full.summary["recorder_note"] == ""
    assert full.summary["timeseries_rows_aggregated"] == full.summary["model_timeseries_rows_aggregated"] == 0


def _assert_same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("window-recovery", []),  # AIMD controller: shared cooldowns, busy periods inside them
        ("cooling-2048", ["models.0.rate_limit.retry_after=0.01"]),  # no controller: Retry-After cooldowns
        ("healthy-bottleneck", []),
    ],
)
@pytest.mark.parametrize("policy", ["fixed", "localized"])
def test_folded_intervals_give_the_same_model_metrics(name: str, overrides: list[str], policy: str) -> None:

    scenario = sim.load_scenario(name, overrides)
    full = run_with_caps(scenario, 10**9, 10**9, policy=policy)
    folded_run = run_with_caps(scenario, 10**9, 10**9, intervals=3, policy=policy)
    _assert_same_numbers(folded_run.models, full.models)
    for key, value in full.summary.items():
        if isinstance(value, float):
            assert folded_run.summary[key] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), key


def test_folding_splits_a_cooldown_that_straddles_the_fold() -> None:
    """A cooldown interval cut in two by a fold is still one cooldown period."""
    scen = scenario(
        count=3, size=2, latency=0.5, mpr=2, controller=True, rate_limit={"pattern": "window", "start": 0.0, "end": 1.0}
    )
    full = run_with_caps(scen, 10**9, 10**9, policy="fixed")
    from sim.metrics import Recorder
    from sim.policies import get_policy
    from sim.results import result_from_scheduler
    from sim.scheduler import Scheduler
    from sim.workload import build_workload

    workload = build_workload(scen)
    sched = Scheduler(scen, workload, get_policy("fixed"), seed=0)
    rec = sched.recorder = Recorder(scen, workload, max_intervals=10**9)
    sched.env.process(_fold_every(sched.env, rec, 0.07))
    sched.run()
    folded = result_from_scheduler(sched)
    assert rec.intervals.folds > 10
    _assert_same_numbers(folded.models, full.models)
    assert model_row(folded)["cooldown_periods"] == model_row(full)["cooldown_periods"] >= 1


def _fold_every(env, rec, step: float):
    while True:
        yield env.timeout(step)
        rec.fold_intervals(env.now)


def test_the_scenarios_default_caps_are_the_recorders() -> None:
    from sim.metrics import MAX_MODEL_SERIES_ROWS, MAX_SERIES_ROWS
    from sim.scenario import RecorderConfig

    assert (RecorderConfig().max_series_rows, RecorderConfig().max_model_series_rows) == (
        MAX_SERIES_ROWS,
        MAX_MODEL_SERIES_ROWS,
    )


def test_mean_call_time_is_the_latency_without_a_per_call_log() -> None:
    """Constant 1 s calls, two at a time: each call's time in flight is exactly its latency."""
    result = sim.simulate(scenario(count=3, size=2, latency=1.0, mpr=2))
    m = model_row(result)
    assert m["successful_calls"] == 6
    assert m["call_seconds"] == pytest.approx(6.0)
    assert m["mean_call_seconds"] == pytest.approx(1.0)
    quick_429s = sim.simulate(
        scenario(count=2, size=1, latency=1.0, rate_limit={"pattern": "window", "end": 0.5, "latency": 0.25})
    )
    q = model_row(quick_429s)  # 429 answers take 0.25 s; their calls count too
    answered = q["successful_calls"] + q["rate_limited_calls"]
    expected = (q["successful_calls"] * 1.0 + q["rate_limited_calls"] * 0.25) / answered
    assert q["rate_limited_calls"] >= 1 and q["mean_call_seconds"] == pytest.approx(expected)


# -- per-call latency histograms (sim/histogram.py; docs/metrics.md, "Call latency") -----------


class _LatencyLog(Recorder):
    """The recorder, plus every answered call's (model, rate_limited, latency): the exact log."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[int, bool, float]] = []

    def model_answered(self, now, model, gen, rate_limited, limit, cooldown_until, latency) -> None:
        self.log.append((model, rate_limited, latency))
        super().model_answered(now, model, gen, rate_limited, limit, cooldown_until, latency)


def _run_logged(name: str, overrides: list[str], policy: str) -> tuple[sim.Result, _LatencyLog]:
    from sim.policies import get_policy
    from sim.results import result_from_scheduler
    from sim.scheduler import Scheduler
    from sim.workload import build_workload

    scenario = sim.load_scenario(name, [*overrides, "recorder.detail=full"])
    workload = build_workload(scenario, scenario.seed)
    sched = Scheduler(scenario, workload, get_policy(policy), scenario.seed)
    sched.recorder = log = _LatencyLog(scenario, workload)
    sched.run()
    return result_from_scheduler(sched), log


@pytest.mark.parametrize(
    ("name", "overrides", "policy"),
    [
        ("window-recovery", [], "localized"),
        ("window-recovery", ["scheduler.loop.model=none"], "global"),
        ("cooling-2048", [], "localized"),  # its 429s take exactly 0 s: the zero slot
        ("cooling-2048", [], "fixed"),
    ],
)
def test_latency_histograms_match_the_full_call_log(name: str, overrides: list[str], policy: str) -> None:
    import numpy as np

    from sim.histogram import RELATIVE_WIDTH

    result, rec = _run_logged(name, overrides, policy)
    mts = result.model_timeseries
    stats = result.call_latency_stats.set_index(["model", "outcome"])
    bins = result.call_latency.groupby(["model", "outcome"])["count"].sum()
    log_model = np.array([m for m, _, _ in rec.log])
    log_429 = np.array([r for _, r, _ in rec.log])
    log_latency = np.array([x for _, _, x in rec.log])
    checked = 0
    for i, model in enumerate(rec.model_names):
        rows = mts[mts["model"] == model]
        counts = {
            "success": int((rows["answered"] - rows["answered_429"]).sum()),
            "rate_limited": int(rows["answered_429"].sum()),
        }
        for outcome, rate_limited in (("success", False), ("rate_limited", True)):
            exact = log_latency[(log_model == i) & (log_429 == rate_limited)]
            st = stats.loc[(model, outcome)]
            # counts: histogram == the full call log == the recorder's counters
            assert st["count"] == counts[outcome] == len(exact) == bins.get((model, outcome), 0)
            if not len(exact):
                assert math.isnan(st["p50"]) and math.isnan(st["mean"])
                continue
            checked += 1
            assert (st["min"], st["max"]) == (exact.min(), exact.max())
            assert st["mean"] == pytest.approx(exact.mean(), rel=1e-12)
            for p in (0, 1, 50, 90, 99, 100):
                truth = float(np.percentile(exact, p, method="inverted_cdf"))
                estimate = rec.latency.percentile(2 * i + (1 if rate_limited else 0), p)
                assert abs(estimate - truth) <= RELATIVE_WIDTH * truth * (1 + 1e-9), (model, outcome, p)
            for p in (50, 90, 99):
                assert st[f"p{p}"] == rec.latency.percentile(2 * i + (1 if rate_limited else 0), p)
        s, ok = result.summary, stats.loc[(model, "success")]
        for key in ("p50", "p90", "p99", "mean"):
            np.testing.assert_equal(s[f"call_latency_{key}[{model}]"], ok[key])  # NaN equals NaN here
    assert checked >= len(rec.model_names)


def test_latency_histogram_of_constant_calls_is_exact() -> None:
    """Constant 1 s calls and 0.25 s 429s: every percentile is the latency itself (min = max clips the bin)."""
    result = sim.simulate(
        scenario(count=4, size=2, latency=1.0, rate_limit={"pattern": "window", "end": 0.5, "latency": 0.25})
    )
    m = model_row(result)
    assert (m["call_latency_p50"], m["call_latency_p99"], m["call_latency_mean"]) == (1.0, 1.0, 1.0)
    bins = result.call_latency.set_index("outcome")
    assert bins.loc["success", "count"] == m["successful_calls"] == 8
    assert bins.loc["rate_limited", "count"] == m["rate_limited_calls"] >= 1
    assert bins.loc["success", "lower"] <= 1.0 < bins.loc["success", "upper"]
    assert bins.loc["rate_limited", "lower"] <= 0.25 < bins.loc["rate_limited", "upper"]


def test_latency_mean_is_the_time_in_flight_on_the_zero_cost_loop() -> None:
    """With no scheduler CPU time a call is in flight exactly its latency: the histograms' mean over
    both outcomes is ``mean_call_seconds``, computed from the in-flight integral."""
    result = sim.simulate(sim.load_scenario("window-recovery", ["scheduler.loop.model=none"]))
    stats = result.call_latency_stats.groupby("model")[["count", "sum"]].sum()
    models = result.models.set_index("model")
    assert (stats["count"] == models["successful_calls"] + models["rate_limited_calls"]).all()
    for model, row in stats.iterrows():
        assert row["sum"] / row["count"] == pytest.approx(models.loc[model, "mean_call_seconds"], rel=1e-9)
