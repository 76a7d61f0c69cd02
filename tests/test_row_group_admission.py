"""Row-group admission: block reasons, the two-evaluation growth rule, guardrails (docs/model.md "Adaptive target")."""

from __future__ import annotations

import numpy as np
import pytest

from sim.policies import Policy, get_policy
from sim.row_group_admission import PolicyResultError, RowGroupAdmission, max_admitted_rows
from sim.scenario import scenario_from_dict
from sim.workload import build_workload
from tests.test_policies import StubState


def admission(policy="localized", hard_cap=2, max_in_flight=16, llm=16, rows=None) -> RowGroupAdmission:
    row_groups = rows or {"count": 2, "size": 1}
    scenario = scenario_from_dict(
        {
            "name": "rga",
            "row_groups": row_groups,
            "models": [{"name": "m"}],
            "columns": [
                {"name": "seed", "strategy": "full_column"},
                {"name": "c", "depends_on": ["seed"], "model": "m"},
            ],
            "scheduler": {
                "max_concurrent_row_groups": hard_cap,
                "max_in_flight_tasks": max_in_flight,
                "max_model_task_admission": llm,
            },
        }
    )
    return RowGroupAdmission(scenario, build_workload(scenario), get_policy(policy))


def state(**kw) -> StubState:
    return StubState(frozenset(), **kw)


@pytest.mark.parametrize("policy", ["global", "localized"])
def test_block_reason_prefers_llm_saturation(policy):
    rga = admission(policy)
    s = state(queued_total=1, llm_wait_limit=1, llm_wait_leased=1, queued_llm_demand=1)
    assert rga.block_reason(s) == "llm_wait_saturated"


@pytest.mark.parametrize("policy", ["global", "localized"])
def test_allows_zero_llm_lease_bootstrap(policy):
    rga = admission(policy)
    s = state(queued_total=3, llm_wait_limit=3, llm_wait_leased=0, queued_llm_demand=3)
    assert rga.block_reason(s) is None


@pytest.mark.parametrize("policy", ["global", "localized"])
def test_blocks_queued_llm_demand_after_bootstrap(policy):
    rga = admission(policy)
    s = state(queued_total=3, llm_wait_limit=4, llm_wait_leased=1, queued_llm_demand=3)
    assert rga.block_reason(s) == "queued_llm_demand"


def test_target_grows_for_zero_llm_lease_bootstrap():
    rga = admission(hard_cap=2)
    s = state(queued_total=3, llm_wait_limit=3, llm_wait_leased=0, queued_llm_demand=3, active_count=1)
    assert rga.evaluate(s) is False
    assert (rga.target, rga.ticks) == (1, 1)
    assert rga.evaluate(s) is True
    assert (rga.target, rga.ticks, rga.observed_max_target) == (2, 0, 2)


def test_target_stays_blocked_after_llm_lease_bootstrap():
    rga = admission(hard_cap=2)
    s = state(queued_total=3, llm_wait_limit=4, llm_wait_leased=1, queued_llm_demand=3, active_count=1)
    assert not rga.evaluate(s)
    assert not rga.evaluate(s)
    assert rga.target == 1
    assert rga.blocked_reasons["queued_llm_demand"] == 2
    assert rga.evaluations == 2


def test_growth_needs_one_evaluation_when_queue_is_empty():
    rga = admission(hard_cap=4)
    assert rga.evaluate(state(queued_total=0))
    assert rga.evaluate(state(queued_total=0))
    assert rga.target == 3


def test_a_block_resets_the_ticks():
    rga = admission(hard_cap=4)
    assert not rga.evaluate(state(queued_total=1))  # tick 1
    assert not rga.evaluate(state(queued_total=1, pending_size=None))  # blocked: ticks reset
    assert not rga.evaluate(state(queued_total=1))  # tick 1 again
    assert rga.evaluate(state(queued_total=1))  # tick 2: grows
    assert rga.target == 2


def test_no_growth_and_tick_reset_at_hard_cap():
    rga = admission(hard_cap=2)
    rga.evaluate(state(queued_total=1))
    assert rga.ticks == 1
    assert not rga.evaluate(state(queued_total=0, active_count=2))
    assert (rga.target, rga.ticks) == (1, 0)
    assert sum(rga.blocked_reasons.values()) == 0


def test_target_is_capped_and_never_decreases():
    rga = admission(hard_cap=2)
    for _ in range(5):
        rga.evaluate(state(queued_total=0, active_count=1))
    assert rga.target == 2 == rga.observed_max_target
    rga.evaluate(state(queued_total=0, pending_size=None))
    assert rga.target == 2


def test_all_admitted_stops_evaluation():
    rga = admission()
    assert not rga.evaluate(state(all_admitted=True))
    assert rga.evaluations == 0


def test_queue_guard_uses_in_flight_task_cap():
    rga = admission(max_in_flight=2)
    assert rga.queued_task_guardrail == 8
    assert rga.block_reason(state(queued_total=8)) == "queued_task_guardrail"
    assert rga.block_reason(state(queued_total=7)) is None


def test_no_llm_wait_resource():
    assert admission().block_reason(state(llm_wait_limit=0)) == "no_llm_wait_resource"


def test_row_guard_blocks_extra_large_groups():
    rga = admission()
    rga.max_admitted_rows = 8192
    assert not rga.row_guard_allows(5000, 5000)
    assert rga.row_guard_allows(5000, 1000)
    assert rga.row_guard_allows(0, 9000)


def test_row_guard_applies_in_adaptive_mode_only():
    rga = admission(policy="fixed")
    rga.max_admitted_rows = 10
    assert rga.row_guard_allows(5000, 5000)
    assert rga.target == rga.hard_cap == 2
    assert not rga.evaluate(state())


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ({"num_records": 10000, "buffer_size": 1}, 8192),  # min(10000, max(3, 8192))
        ({"num_records": 100000, "buffer_size": 4000}, 12000),  # 3 x buffer_size above the floor
        ({"num_records": 500, "buffer_size": 100}, 500),  # capped by num_records
        ({"count": 2048, "size": 1}, 2048),  # explicit plan: num_records = total rows
    ],
)
def test_max_admitted_rows_guardrail(rows, expected):
    scenario = scenario_from_dict(
        {"name": "g", "row_groups": rows, "columns": [{"name": "seed", "strategy": "full_column"}]}
    )
    assert max_admitted_rows(scenario) == expected


def test_initial_target_is_clamped_to_hard_cap():
    scenario = scenario_from_dict(
        {
            "name": "t",
            "row_groups": {"count": 4},
            "columns": [{"name": "seed", "strategy": "full_column"}],
            "scheduler": {"max_concurrent_row_groups": 3, "initial_target": 10},
        }
    )
    rga = RowGroupAdmission(scenario, build_workload(scenario), get_policy("localized"))
    assert rga.target == 3 == rga.observed_max_target


@pytest.mark.parametrize(("result", "reason"), [(np.bool_(True), "deferred_tasks"), (np.bool_(False), None)])
def test_a_policy_may_answer_with_a_numpy_bool(result, reason):
    rga = admission()
    rga.policy = Policy("numpy-answer", adaptive=True, deferred_blocks=lambda _view: result)
    assert rga.block_reason(StubState(frozenset({1}))) == reason


@pytest.mark.parametrize("result", ["yes", 1, None])
def test_a_policy_answer_that_is_not_a_bool_fails_the_run(result):
    rga = admission()
    rga.policy = Policy("bad-answer", adaptive=True, deferred_blocks=lambda _view: result)
    with pytest.raises(PolicyResultError, match="deferred_blocks must return True or False"):
        rga.block_reason(StubState(frozenset({1})))
