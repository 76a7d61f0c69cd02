"""The end-of-run checks of sim.invariants: each one passes on real end states and fails on a
corruption of exactly the state it guards (the counters are kept consistent where the old checks
would otherwise notice, so only the check under test can catch it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sim import SimulationError
from sim.invariants import check_end_state
from sim.policies import get_policy
from sim.scenario import scenario_from_dict
from sim.scheduler import RowGroupState, Scheduler
from sim.workload import Task, build_workload

#: At t = 1.05 s three row groups are active with tasks queued, in flight, deferred (always-429
#: cooling) and waiting on their upstream (c waits on the slow model's a).
MID_RUN = {
    "name": "mid-run",
    "row_groups": {"count": 4, "size": 2},
    "models": [
        {"name": "slow", "max_parallel_requests": 4, "latency": {"distribution": "constant", "mean": 1.0}},
        {
            "name": "cooling",
            "max_parallel_requests": 4,
            "latency": {"distribution": "constant", "mean": 0.01},
            "rate_limit": {"pattern": "always"},
        },
    ],
    "columns": [
        {"name": "seed", "strategy": "full_column"},
        {"name": "a", "depends_on": ["seed"], "model": "slow"},
        {"name": "b", "depends_on": ["seed"], "model": "cooling"},
        {"name": "c", "depends_on": ["a"], "duration": 0.1},
    ],
    "scheduler": {"policy": "fixed", "max_concurrent_row_groups": 3, "max_in_flight_tasks": 3},
    "request_admission": {"enabled": False},
    "stop": {"max_time": 1.05},
}

#: Request admission on: after the first 429s the slots cool down and tasks wait for one,
#: holding their task lease.
WAITING_FOR_REQUESTS = {
    "name": "request-waiters",
    "row_groups": {"count": 1, "size": 16},
    "models": [
        {
            "name": "flaky",
            "max_parallel_requests": 4,
            "latency": {"distribution": "constant", "mean": 0.1},
            "rate_limit": {"pattern": "window", "start": 0.0, "end": 3.0, "retry_after": 1.0},
        }
    ],
    "columns": [{"name": "a", "model": "flaky"}],
    "stop": {"max_time": 0.5},
}

#: Runs to completion with a checkpointed row group and a salvage (window of 429s).
COMPLETES = {
    "name": "completes",
    "row_groups": {"count": 3, "size": 2},
    "models": [
        {
            "name": "m",
            "max_parallel_requests": 2,
            "latency": {"distribution": "constant", "mean": 0.01},
            "rate_limit": {"pattern": "window", "start": 0.0, "end": 0.2},
        }
    ],
    "columns": [{"name": "seed", "strategy": "full_column"}, {"name": "a", "depends_on": ["seed"], "model": "m"}],
}


def stopped(data: dict[str, Any]) -> Scheduler:
    scenario = scenario_from_dict(data, source="<test>")
    sched = Scheduler(scenario, build_workload(scenario), get_policy(scenario.scheduler.policy), seed=0)
    sched.run()  # checks the end state once: it is consistent
    return sched


def test_the_mid_run_end_state_holds_every_kind_of_task() -> None:
    sched = stopped(MID_RUN)
    assert sched.stop_reason == "max_time"
    assert len(sched.tasks.queue) and sched.running and sched.deferred
    waiting = [
        row
        for rg in sched.active.values()
        for g in sched.workload.generators
        if g.is_cell
        for row in rg.cell_waiting[g.index]
        if row
    ]
    assert waiting, "some task waits on its upstream"
    assert sched.recorder.row_groups_admitted == 3


def test_request_waiters_scenario_has_waiters() -> None:
    sched = stopped(WAITING_FOR_REQUESTS)
    assert sched.request_admission.total_waiters > 0


def test_completed_run_passes_and_has_checkpoints() -> None:
    sched = stopped(COMPLETES)
    assert sched.stop_reason == "completed"
    assert sched.salvage_cycles > 0
    check_end_state(sched)


# ---------------------------------------------------------------------------------------------
# Corruptions: the four the old checks missed (counters kept consistent), then one per check
# ---------------------------------------------------------------------------------------------


def drop_row_group(s: Scheduler) -> None:
    rg_id = max(s.active)
    rg = s.active.pop(rg_id)
    s.active_rows -= rg.size
    for t in list(s.running):  # its in-flight tasks go with it, as do their counts and leases
        if t.rg is rg:
            lose_in_flight(s, t)


def lose_queued(s: Scheduler) -> None:
    queue = s.tasks.queue
    fifo = next(f for f in queue._fifo.values() if f)
    task = fifo.pop()
    queue._size -= 1
    s.tasks.queued_by_group[task.gen.index] -= 1
    for r in task.gen.resources:
        s.tasks.queued_demand[r] -= 1


def lose_deferred(s: Scheduler) -> None:
    task = s.deferred.pop()
    task.rg.deferred -= 1
    s._deferred_by_gen[task.gen.index] -= 1


def lose_in_flight(s: Scheduler, task: Task | None = None) -> None:
    task = task if task is not None else next(iter(s.running))
    s.running.discard(task)
    s.tasks.release(task)
    task.rg.in_flight -= 1
    s.in_flight -= 1
    s.in_flight_by_gen[task.gen.index] -= 1


Corruption = Callable[[Scheduler], None]

MISSED_BEFORE: list[tuple[str, Corruption, str]] = [
    ("dropped row group", drop_row_group, r"admitted row groups neither active nor checkpointed: 2"),
    ("lost queued task", lose_queued, r"row group \d, \w+: \d tasks planned, \d accounted for"),
    ("lost deferred task", lose_deferred, r"row group \d, b: 2 tasks planned, 1 accounted for"),
    ("lost in-flight task and its lease", lose_in_flight, r"row group \d, \w+: \d tasks planned, \d accounted for"),
]


@pytest.mark.parametrize(("what", "corrupt", "message"), MISSED_BEFORE, ids=[m[0] for m in MISSED_BEFORE])
def test_task_and_row_group_conservation_catch_what_the_counters_miss(
    what: str, corrupt: Corruption, message: str
) -> None:
    sched = stopped(MID_RUN)
    corrupt(sched)
    with pytest.raises(SimulationError, match=message):
        check_end_state(sched)


def _first_active(s: Scheduler) -> Any:
    return s.active[min(s.active)]


def _queued_task(s: Scheduler) -> Task:
    return next(iter(s.tasks.queue.items()))


def _wait_on_upstream(s: Scheduler) -> None:
    task = _queued_task(s)
    if task.row >= 0:
        s.active[task.rg.id].cell_waiting[task.gen.index][task.row] = 1
    else:
        s.active[task.rg.id].full_waiting[task.gen.index] = 1


MID_RUN_CHECKS: list[tuple[str, Corruption, str]] = [
    ("lease leaked", lambda s: s.tasks.leased.__setitem__(0, s.tasks.leased[0] + 1), r"task leases on submission"),
    ("queued demand negative", lambda s: s.tasks.queued_demand.__setitem__(0, -1), r"negative queued demand"),
    ("generator count off", lambda s: s.in_flight_by_gen.__setitem__(0, -1), r"in-flight counts disagree"),
    (
        "counted but not dispatched",
        lambda s: (
            s.in_flight_by_gen.__setitem__(1, s.in_flight_by_gen[1] + 1),
            setattr(s, "in_flight", s.in_flight + 1),
        ),
        r"tasks counted in flight, \d+ dispatched and unanswered",
    ),
    ("row group in flight off", lambda s: setattr(_first_active(s), "in_flight", 99), r"row-group in-flight counts"),
    ("admitted beyond the plan", lambda s: setattr(s.recorder, "row_groups_admitted", 9), r"9 row groups admitted"),
    ("admission count lost", lambda s: setattr(s.recorder, "row_groups_admitted", 2), r"never admitted: 2"),
    (
        "checkpointed and active",
        lambda s: s.recorder.row_groups.append((0, 2, 0.0, 1.0)),
        r"both active and checkpointed",
    ),
    ("row group resized", lambda s: setattr(_first_active(s), "size", 5), r"active row group 0 does not match"),
    ("completed rows miscounted", lambda s: setattr(s, "completed_rows", 2), r"2 rows in 0 groups counted complete"),
    ("active rows miscounted", lambda s: setattr(s, "active_rows", 1), r"1 rows counted active, 6 in the active"),
    ("task in two places", lambda s: s.deferred.append(next(iter(s.running))), r"is both in flight and deferred"),
    ("waiting task also queued", _wait_on_upstream, r"waits on its upstream but is queued"),
    (
        "remaining tasks miscounted",
        lambda s: setattr(_first_active(s), "remaining_tasks", 0),
        r"0 tasks counted remaining",
    ),
    (
        "task of an unknown row group",
        lambda s: (
            s.deferred.append(Task(s.workload.generators[1], RowGroupState(7, 1, s.workload, 0.0), 0))
        ),
        r"is deferred but its row group is not active",
    ),
]


@pytest.mark.parametrize(("what", "corrupt", "message"), MID_RUN_CHECKS, ids=[m[0] for m in MID_RUN_CHECKS])
def test_every_mid_run_check_can_fail(what: str, corrupt: Corruption, message: str) -> None:
    sched = stopped(MID_RUN)
    corrupt(sched)
    with pytest.raises(SimulationError, match=message):
        check_end_state(sched)


def _request_resource(s: Scheduler) -> Any:
    return s.request_admission.resources[0]


REQUEST_CHECKS: list[tuple[str, Corruption, str]] = [
    ("waiter lost", lambda s: s.recorder.model_waiting(0, +1), r"request waiters \d+ != tasks waiting \d+"),
    ("request lease leaked", lambda s: setattr(_request_resource(s), "in_flight", 99), r"more request leases"),
    ("negative waiters", lambda s: setattr(_request_resource(s), "waiters", -1), r"negative request in-flight"),
]


@pytest.mark.parametrize(("what", "corrupt", "message"), REQUEST_CHECKS, ids=[m[0] for m in REQUEST_CHECKS])
def test_every_request_admission_check_can_fail(what: str, corrupt: Corruption, message: str) -> None:
    sched = stopped(WAITING_FOR_REQUESTS)
    corrupt(sched)
    with pytest.raises(SimulationError, match=message):
        check_end_state(sched)


COMPLETION_CHECKS: list[tuple[str, Corruption, str]] = [
    (
        "deferred left",
        lambda s: s.deferred.append(Task(s.workload.generators[1], RowGroupState(0, 2, s.workload, 0.0), 0)),
        r"work, leases or deferred",
    ),
    ("request lease left", lambda s: setattr(_request_resource(s), "in_flight", 1), r"request leases or waiters left"),
    ("rows short", lambda s: (setattr(s, "completed_rows", 4), s.recorder.row_groups.pop()), r"with 4 of 6 rows"),
    ("group never admitted", lambda s: setattr(s.recorder, "row_groups_admitted", 2), r"before every row group"),
]


@pytest.mark.parametrize(("what", "corrupt", "message"), COMPLETION_CHECKS, ids=[m[0] for m in COMPLETION_CHECKS])
def test_every_completion_check_can_fail(what: str, corrupt: Corruption, message: str) -> None:
    sched = stopped(COMPLETES)
    corrupt(sched)
    with pytest.raises(SimulationError, match=message):
        check_end_state(sched)


def test_a_long_list_of_problems_is_cut() -> None:
    sched = stopped(MID_RUN)
    for rg in sched.active.values():
        rg.remaining_tasks = -1
        rg.in_flight = 50
    sched.tasks.queued_demand[:] = [-1] * len(sched.tasks.queued_demand)
    with pytest.raises(SimulationError) as err:
        check_end_state(sched)
    assert str(err.value).count(";") <= 20


def test_conservation_holds_at_a_budget_stop_inside_a_salvage_cycle() -> None:
    """Stopped by stop.max_events while a salvage drain is under way: the deferred tasks of busy
    row groups are held aside, not lost, and the check counts them."""
    data = {**MID_RUN, "stop": {"max_time": 60.0, "max_events": 34}}
    sched = stopped(data)
    assert sched.stop_reason == "max_events"
    assert sched.salvage_set_aside
    check_end_state(sched)
    sched.salvage_set_aside.pop()
    with pytest.raises(SimulationError, match=r"row group \d, \w+: \d tasks planned, \d accounted for"):
        check_end_state(sched)
