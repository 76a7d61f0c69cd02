"""Task leases, bounded borrow and the request-pressure advisory (docs/model.md "Task admission"):
sim/task_admission.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from sim.task_admission import TaskAdmission
from sim.workload import LLM_WAIT, SUBMISSION, Generator, Task, Workload


class Bench:
    """A TaskAdmission over a small workload, with helpers to queue, dispatch and release tasks."""

    def __init__(
        self,
        workload: Workload,
        reserve_fraction: float = 0.0,
        request_pressure: Callable[[Generator], str | None] | None = None,
    ) -> None:
        self.wl = workload
        self.ta = TaskAdmission(workload, reserve_fraction, request_pressure)
        self.leased: dict[str, list[Task]] = {}

    def gen(self, column: str) -> Generator:
        return self.wl.generators[self.wl.column_to_generator[column]]

    def res(self, name: str) -> int:
        return self.wl.resource_index[name]

    def push(self, column: str, n: int = 1) -> None:
        for row in range(n):
            self.ta.push(Task(self.gen(column), None, row))

    def step(self) -> str | None:
        """Select and lease one task; return its column, or None if nothing is eligible."""
        picked = self.ta.select()
        if picked is None:
            return None
        task = self.ta.lease(*picked)
        self.leased.setdefault(task.gen.name, []).append(task)
        return task.gen.name

    def drain(self) -> Counter[str]:
        served: Counter[str] = Counter()
        while (name := self.step()) is not None:
            served[name] += 1
        return served

    def release(self, column: str, n: int = 1) -> None:
        for _ in range(n):
            self.ta.release(self.leased[column].pop())

    def held(self, column: str, resource: str) -> int:
        return self.ta.held[self.gen(column).index][self.res(resource)]

    def debt(self, column: str, resource: str) -> int:
        return self.ta.debt[self.gen(column).index][self.res(resource)]

    def check(self, column: str, *heads: str) -> tuple[bool, tuple[int, ...], str]:
        return self.ta.borrow_check(self.gen(column), [self.gen(h) for h in heads])


def custom(name: str, weight: int = 1) -> dict:
    return {"name": name, "model": "m", "kind": "custom_model", "weight": weight}


MODEL = [{"name": "m", "provider": "p", "max_parallel_requests": 4}]


# -- hard check ---------------------------------------------------------------------------------


def test_hard_check_llm_wait_blocks_model_tasks_not_local(make_workload) -> None:
    wl = make_workload(
        [{"name": "a", "model": "ma"}, {"name": "b", "model": "mb"}, {"name": "local"}],
        [{"name": "ma"}, {"name": "mb"}],
        scheduler={"max_model_task_admission": 1},
    )
    bench = Bench(wl)
    bench.push("a", 2)
    bench.push("b", 2)
    bench.push("local", 2)
    assert bench.drain() == {"a": 1, "local": 2}
    assert bench.ta.available(bench.res(LLM_WAIT)) == 0
    bench.release("a")
    assert bench.step() == "b"  # b's WFQ tag (0) is ahead of a's (F_a = 1/4)


def test_hard_check_request_resource(make_workload) -> None:
    wl = make_workload(
        [{"name": "a", "model": "m"}, {"name": "b", "model": "m"}, {"name": "local"}],
        [{"name": "m", "provider": "p", "max_parallel_requests": 2}],
    )
    bench = Bench(wl)
    bench.push("a", 3)
    bench.push("b", 3)
    bench.push("local", 3)
    served = bench.drain()
    assert served["a"] + served["b"] == 2 and served["local"] == 3
    assert bench.ta.leased[bench.res("request:p/m")] == 2
    assert bench.ta.available(bench.res(LLM_WAIT)) == 1022


def test_hard_check_submission(make_workload) -> None:
    wl = make_workload([{"name": "local"}, {"name": "a", "model": "m"}], MODEL, scheduler={"max_in_flight_tasks": 3})
    bench = Bench(wl)
    bench.push("local", 5)
    bench.push("a", 5)
    assert sum(bench.drain().values()) == 3
    assert bench.ta.available(bench.res(SUBMISSION)) == 0
    assert bench.ta.select() is None
    bench.release("local")
    assert bench.step() is not None


def test_queue_counts_and_demand(make_workload) -> None:
    wl = make_workload([{"name": "a", "model": "m"}, custom("c"), {"name": "local"}], MODEL)
    bench = Bench(wl)
    bench.push("a", 2)
    bench.push("c", 1)
    bench.push("local", 3)
    demand = bench.ta.queued_demand
    assert bench.ta.queued_total == 6
    assert (demand[bench.res(SUBMISSION)], demand[bench.res(LLM_WAIT)], demand[bench.res("request:p/m")]) == (6, 3, 2)
    assert [bench.ta.queued_by_group[bench.gen(c).index] for c in ("a", "c", "local")] == [2, 1, 3]
    assert bench.step() == "a"
    assert (demand[bench.res(SUBMISSION)], demand[bench.res(LLM_WAIT)], demand[bench.res("request:p/m")]) == (5, 2, 1)
    assert bench.ta.leased[bench.res("request:p/m")] == 1 and bench.ta.queued_total == 5
    bench.release("a")
    assert bench.ta.leased[bench.res("request:p/m")] == 0 and bench.ta.max_leased[bench.res("request:p/m")] == 1


# -- strict share -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("llm_wait", "weight", "competitors", "share"),
    [
        (1, 3, 0, 1),  # limit 1 -> 1
        (1, 3, 5, 1),
        (10, 3, 0, 5),  # alone: imaginary equal peer, W = 2w: ceil(10*3/6)
        (7, 3, 7, 3),  # ceil(21/10 = 2.1) = 3 (rounds up)
        (10, 3, 1, 6),  # ceil(30/4) = 8, capped at the admitted limit 2w = 6
        (10, 1, 100, 1),  # minimum 1
        (4, 2, 0, 2),
    ],
)
def test_strict_share_formula(make_workload, llm_wait: int, weight: int, competitors: int, share: int) -> None:
    wl = make_workload([custom("c", weight)], MODEL, scheduler={"max_model_task_admission": llm_wait})
    bench = Bench(wl)
    gen = bench.gen("c")
    assert gen.admitted_limit == min(llm_wait, 2 * weight)
    assert bench.ta._strict_share(gen, bench.res(LLM_WAIT), competitors) == share


def test_strict_share_of_request_resource_alone(make_workload) -> None:
    bench = Bench(make_workload([{"name": "a", "model": "m"}], MODEL))
    assert bench.ta._strict_share(bench.gen("a"), bench.res("request:p/m"), 0) == 2  # ceil(4*4/8)


# -- under pressure -----------------------------------------------------------------------------


def test_pressure_caps_each_group_at_its_strict_share(make_workload) -> None:
    wl = make_workload([custom("a", 3), custom("b", 1)], MODEL, scheduler={"max_model_task_admission": 10})
    bench = Bench(wl)
    bench.push("a", 10)
    bench.push("b", 10)
    # a: ceil(10*3/4) = 8 capped at 2*3 = 6; b: ceil(10*1/4) = 3 capped at 2*1 = 2.
    assert bench.drain() == {"a": 6, "b": 2}
    assert bench.ta.available(bench.res(LLM_WAIT)) == 2
    assert bench.check("a", "a", "b") == (False, (), "group_cap")
    assert bench.check("b", "a", "b") == (False, (), "group_cap")
    assert bench.debt("a", LLM_WAIT) == bench.debt("b", LLM_WAIT) == 0


def test_pressure_denies_any_group_in_debt(make_workload) -> None:
    wl = make_workload([custom("a", 8), custom("b", 1)], MODEL, scheduler={"max_model_task_admission": 10})
    bench = Bench(wl)
    bench.push("a", 6)
    assert bench.drain() == {"a": 6}  # solo share ceil(10*8/16) = 5, the 6th is borrowed
    assert (bench.debt("a", LLM_WAIT), bench.debt("a", SUBMISSION)) == (1, 0)
    bench.push("b", 2)
    bench.push("a", 4)
    # With b queued, a's share is ceil(10*8/9) = 9 >= 7 projected, but a owes a borrowed slot.
    assert bench.check("a", "a", "b") == (False, (), "borrow_debt")
    bench.release("a")  # any release repays one unit
    assert bench.debt("a", LLM_WAIT) == 0
    assert bench.check("a", "a", "b") == (True, (), "")


def test_submission_is_not_a_pressure_resource_for_model_tasks(make_workload) -> None:
    wl = make_workload([custom("a", 1), {"name": "local"}], MODEL, scheduler={"max_in_flight_tasks": 10})
    bench = Bench(wl)
    bench.push("a", 2)
    assert bench.drain() == {"a": 2}  # at share 2 (= 2w) on both resources
    bench.push("a", 1)
    bench.push("local", 1)  # competes for submission only
    assert bench.check("a", "a", "local") == (True, (bench.res(SUBMISSION), bench.res(LLM_WAIT)), "")


# -- bounded borrow without pressure -------------------------------------------------------------


@pytest.mark.parametrize(("reserve_fraction", "granted"), [(0.0, 10), (0.125, 8)])
def test_solo_group_borrows_up_to_the_ceiling(make_workload, reserve_fraction: float, granted: int) -> None:
    wl = make_workload([custom("a", 3)], MODEL, scheduler={"max_model_task_admission": 10})
    bench = Bench(wl, reserve_fraction)
    bench.push("a", 12)
    # share ceil(10*3/6) = 5; ceiling = (10 - reserved) - 5 with reserved 0 (HEAD) or max(1, ceil(1.25)) = 2.
    assert bench.drain() == {"a": granted}
    assert bench.debt("a", LLM_WAIT) == granted - 5
    assert bench.debt("a", SUBMISSION) == granted - 6  # submission share min(512, 2w = 6)
    if reserve_fraction:
        assert bench.check("a", "a") == (False, (), "borrow_debt")


def test_reserve_is_capped_at_eight_slots(make_workload) -> None:
    wl = make_workload([custom("a", 3)], MODEL, scheduler={"max_model_task_admission": 200})
    bench = Bench(wl, reserve_fraction=0.125)
    bench.push("a", 200)
    assert bench.drain() == {"a": 6 + (200 - 8 - 6)}  # min(8, ceil(25)) reserved


@pytest.mark.parametrize(("reserve_fraction", "granted"), [(0.0, 4), (0.125, 3)])
def test_spec_example_request_limit_four(make_workload, reserve_fraction: float, granted: int) -> None:
    bench = Bench(make_workload([{"name": "a", "model": "m"}], MODEL), reserve_fraction)
    bench.push("a", 6)
    assert bench.drain() == {"a": granted}
    assert bench.debt("a", "request:p/m") == granted - 2  # share ceil(4*4/8) = 2
    if reserve_fraction:
        assert bench.ta.available(bench.res("request:p/m")) == 1
        assert bench.check("a", "a") == (False, (), "borrow_debt")


def test_debt_drops_by_one_per_release_floored_at_zero(make_workload) -> None:
    wl = make_workload([custom("a", 3)], MODEL, scheduler={"max_model_task_admission": 10})
    bench = Bench(wl)
    bench.push("a", 10)
    assert bench.drain() == {"a": 10}
    trace = []
    for _ in range(6):
        bench.release("a")
        trace.append((bench.debt("a", LLM_WAIT), bench.debt("a", SUBMISSION), bench.held("a", LLM_WAIT)))
    assert trace == [(4, 3, 9), (3, 2, 8), (2, 1, 7), (1, 0, 6), (0, 0, 5), (0, 0, 4)]


def test_local_tasks_are_only_hard_checked(make_workload) -> None:
    wl = make_workload([{"name": "local"}, custom("c", 1)], MODEL, scheduler={"max_in_flight_tasks": 10})
    bench = Bench(wl)
    bench.push("local", 9)
    assert bench.drain() == {"local": 9}
    assert bench.debt("local", SUBMISSION) == 0  # nothing recorded as borrowed past the 5-slot share
    bench.push("local", 1)
    bench.push("c", 1)
    # Bounded borrow would deny (submission is a local task's pressure resource, share 5 < 10).
    assert bench.check("local", "local", "c") == (True, (), "")


# -- request-pressure advisory --------------------------------------------------------------------

ADVISORY_MODELS = [{"name": "ma", "provider": "p"}, {"name": "mb", "provider": "p", "max_parallel_requests": 1}]
ADVISORY_COLUMNS = [{"name": "a", "model": "ma"}, {"name": "b", "model": "mb"}, {"name": "local"}]


def advisory_bench(make_workload, pressured: set[str]) -> Bench:
    def pressure(gen: Generator) -> str | None:
        # Like the scheduler's provider, it only knows request resources: never ask about local tasks.
        assert gen.request_key is not None, gen.name
        return "cooldown" if gen.name in pressured else None

    return Bench(make_workload(ADVISORY_COLUMNS, ADVISORY_MODELS), request_pressure=pressure)


def test_advisory_skips_pressured_head_for_open_peer(make_workload) -> None:
    bench = advisory_bench(make_workload, {"a"})
    bench.push("a")
    bench.push("b")
    assert bench.step() == "b"
    assert bench.ta.advisory_skips == 1
    assert bench.step() == "a"  # no open peer left: dispatched anyway
    assert bench.ta.advisory_skips == 1


def test_advisory_local_head_is_an_open_peer(make_workload) -> None:
    bench = advisory_bench(make_workload, {"a"})
    bench.push("a")
    bench.push("local")
    assert [bench.step(), bench.step()] == ["local", "a"]
    assert bench.ta.advisory_skips == 1


def test_advisory_no_skip_when_every_peer_is_pressured(make_workload) -> None:
    bench = advisory_bench(make_workload, {"a", "b"})
    bench.push("a")
    bench.push("b")
    assert [bench.step(), bench.step()] == ["a", "b"]
    assert bench.ta.advisory_skips == 0


def test_advisory_ineligible_peer_is_not_open(make_workload) -> None:
    bench = advisory_bench(make_workload, {"a"})
    bench.push("b")
    assert bench.step() == "b"  # request:p/mb (limit 1) is now full
    bench.push("a")
    bench.push("b")
    assert bench.step() == "a"
    assert bench.ta.advisory_skips == 0


def test_no_advisory_without_pressure_provider(make_workload) -> None:
    bench = Bench(make_workload(ADVISORY_COLUMNS, ADVISORY_MODELS))
    bench.push("a")
    bench.push("b")
    assert [bench.step(), bench.step()] == ["a", "b"]
    assert bench.ta.advisory_skips == 0


# -- lease_next: select() + lease() in one call ---------------------------------------------------


def leases_by_steps(bench: Bench, use_lease_next: bool) -> list[tuple[str, int, tuple[int, ...]]]:
    """Drain with releases in between; each lease as (column, row, debt on llm_wait after it)."""
    out: list[tuple[str, int, tuple[int, ...]]] = []
    ta = bench.ta
    for _round in range(6):
        while True:
            if use_lease_next:
                task = ta.lease_next()
            else:
                picked = ta.select()
                task = None if picked is None else ta.lease(*picked)
            if task is None:
                break
            bench.leased.setdefault(task.gen.name, []).append(task)
            out.append((task.gen.name, task.row, tuple(ta.debt[task.gen.index])))
        for name in sorted(bench.leased):
            if bench.leased[name]:
                bench.release(name)
    return out


@pytest.mark.parametrize("case", ["solo borrow", "pressure", "advisory"])
def test_lease_next_leases_what_select_then_lease_would(make_workload, case: str) -> None:
    def run(use_lease_next: bool) -> tuple[list, int]:
        if case != "advisory":
            wl = make_workload([custom("a", 3), custom("b", 1)], MODEL, scheduler={"max_model_task_admission": 10})
            bench = Bench(wl)
            bench.push("a", 12)
            if case == "pressure":
                bench.push("b", 12)
        else:
            bench = advisory_bench(make_workload, {"a"})
            for column in ("a", "b", "local"):
                bench.push(column, 5)
        return leases_by_steps(bench, use_lease_next), bench.ta.advisory_skips

    expected, skips = run(False)
    assert len(expected) > 10  # several rounds
    if case == "solo borrow":
        assert any(any(debt) for _, _, debt in expected)
    if case == "advisory":
        assert skips > 0
    assert run(True) == (expected, skips)
