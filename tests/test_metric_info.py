"""Every summary key has a group, a unit and a direction, and the metric list matches a real run."""

from __future__ import annotations

import sim
from sim.metric_info import GROUPS, METRICS, metric_info


def test_every_summary_key_of_a_real_run_is_described() -> None:
    scenario = sim.load_scenario("window-recovery", ["row_groups.count=4"])
    summary = sim.simulate(scenario, policy="localized").summary
    assert all(metric_info(key) is not None for key in summary), [k for k in summary if metric_info(k) is None]


def test_unknown_keys_are_not_described() -> None:
    assert metric_info("healthy_cals") is None
    assert metric_info("calls_ok") is None and metric_info("nope[cooling]") is None
    assert metric_info("calls_ok[cooling]").unit == "calls"
    assert metric_info("call_latency[cooling]") is None and metric_info("call_latency_p95[cooling]") is None


def test_call_latency_metrics_are_seconds_lower_is_better() -> None:
    for key in ("p50", "p90", "p99", "mean"):
        info = metric_info(f"call_latency_{key}[healthy-a]")
        assert info is not None and (info.group, info.unit, info.better) == ("per model", "s", "lower")


def test_directions_and_groups_are_consistent() -> None:
    assert metric_info("healthy_calls").better == "higher"
    assert metric_info("rate_limited_calls").better == "lower"
    assert metric_info("blocked_deferred_tasks").group == "blocking"
    assert all(info.group in GROUPS for info in METRICS.values())
    assert all(info.better == "" for info in METRICS.values() if not info.numeric)
