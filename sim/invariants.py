"""Is the end state of a run consistent? The accounting checks run after every run, whatever stopped it.

Each check compares two records kept apart on purpose, so that a lost task or row group cannot
satisfy it by the same bookkeeping that lost it:

* the scheduler's **counters** (leases held, in-flight counts, remaining tasks, active rows),
  updated on the hot path;
* the **containers** that hold the work itself: the ready queue, the set of dispatched tasks, the
  deferred list (and the tasks a salvage cycle held aside), each row group's readiness state and
  per-generator completions, and the recorder's admission count and checkpoint log.

Task conservation is the main check: every task of every admitted row group is exactly one of
done, queued, in flight, deferred or waiting on its upstream. The guarantees and the tests that
prove each check can fail are listed in docs/reliability.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from .errors import RunFailed

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .workload import Task

#: Problems listed in one error message; the rest are counted.
MAX_LISTED_PROBLEMS = 20


@mypyc_attr(native_class=False)  # compiled code cannot subclass an exception natively
class SimulationError(RunFailed):
    """The model reached a state the real scheduler treats as fatal, or an invariant broke."""


def check_end_state(sched: Scheduler) -> None:
    """Raise :class:`SimulationError` listing every broken check of ``sched``'s end state."""
    problems = [
        *lease_and_count_problems(sched),
        *row_group_problems(sched),
        *task_conservation_problems(sched),
        *completion_problems(sched),
    ]
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        if len(problems) > len(listed):
            listed.append(f"and {len(problems) - len(listed)} more")
        raise SimulationError("accounting invariants broken: " + "; ".join(listed))


def lease_and_count_problems(sched: Scheduler) -> list[str]:
    """Leases and in-flight counts against the dispatched tasks themselves."""
    problems: list[str] = []
    gens = sched.workload.generators
    tasks = sched.tasks
    running_by_gen = Counter(t.gen.index for t in sched.running)
    for r, name in enumerate(sched.workload.resource_names):
        expected = sum(running_by_gen[g.index] for g in gens if r in g.resources)
        if tasks.leased[r] != expected:
            problems.append(f"task leases on {name}: {tasks.leased[r]} held, {expected} tasks in flight")
        if tasks.queued_demand[r] < 0:
            problems.append(f"negative queued demand on {name}")
    if any(n < 0 for n in sched.in_flight_by_gen) or sched.in_flight != sum(sched.in_flight_by_gen):
        problems.append("in-flight counts disagree")
    if sched.in_flight != len(sched.running):
        problems.append(f"{sched.in_flight} tasks counted in flight, {len(sched.running)} dispatched and unanswered")
    if sum(rg.in_flight for rg in sched.active.values()) != sched.in_flight:
        problems.append("row-group in-flight counts do not add up to the scheduler's")
    ra = sched.request_admission
    if ra is not None:
        waiting = sched.recorder.model_waiting_total
        if ra.total_waiters != waiting:
            problems.append(f"request waiters {ra.total_waiters} != tasks waiting {waiting}")
        if ra.total_in_flight > len(sched.running):
            problems.append("more request leases than tasks in flight")
        if any(r.in_flight < 0 or r.waiters < 0 for r in ra.resources):
            problems.append("negative request in-flight or waiter count")
    return problems


def row_group_problems(sched: Scheduler) -> list[str]:
    """Every admitted row group is either active or checkpointed once, and the row counts agree."""
    problems: list[str] = []
    sizes = sched.workload.row_group_sizes
    admitted = sched.recorder.row_groups_admitted
    checkpointed = [rg_id for rg_id, _size, _admitted, _at in sched.recorder.row_groups]
    # Admission is in id order, so the admitted groups are exactly ids 0 .. admitted-1.
    seen = Counter(checkpointed) + Counter(list(sched.active))
    if admitted > len(sizes):
        problems.append(f"{admitted} row groups admitted, the plan has {len(sizes)}")
    missing = [rg_id for rg_id in range(min(admitted, len(sizes))) if seen[rg_id] == 0]
    twice = sorted(rg_id for rg_id, n in seen.items() if n > 1)
    foreign = sorted(rg_id for rg_id in seen if not 0 <= rg_id < admitted)
    if missing:
        problems.append(f"admitted row groups neither active nor checkpointed: {_ids(missing)}")
    if twice:
        problems.append(f"row groups both active and checkpointed, or checkpointed twice: {_ids(twice)}")
    if foreign:
        problems.append(f"row groups active or checkpointed but never admitted: {_ids(foreign)}")
    for rg_id, rg in sched.active.items():
        if rg.id != rg_id or not 0 <= rg_id < len(sizes) or rg.size != sizes[rg_id]:
            problems.append(f"active row group {rg_id} does not match the plan")
    checkpointed_rows = sum(size for _id, size, _admitted, _at in sched.recorder.row_groups)
    active_rows = sum(rg.size for rg in sched.active.values())
    if sched.completed_rows != checkpointed_rows or sched.completed_row_groups != len(checkpointed):
        problems.append(
            f"{sched.completed_rows} rows in {sched.completed_row_groups} groups counted complete, "
            f"{checkpointed_rows} rows in {len(checkpointed)} groups checkpointed"
        )
    if sched.active_rows != active_rows:
        problems.append(f"{sched.active_rows} rows counted active, {active_rows} in the active row groups")
    return problems


def task_conservation_problems(sched: Scheduler) -> list[str]:
    """Every task of every active row group is exactly one of: done, queued, in flight, deferred or
    waiting on its upstream; no task of any other row group is anywhere.

    Linear in the tasks held and the active row groups' generators (a few ms for thousands).
    """
    problems: list[str] = []
    active = sched.active
    places: dict[str, Iterable[Task]] = {
        "queued": sched.tasks.queue.items(),
        "in flight": sched.running,
        "deferred": [*sched.deferred, *sched.salvage_set_aside],
    }
    located: dict[tuple[int, int, int], str] = {}
    for place, tasks in places.items():
        for task in tasks:
            rg = task.rg
            key = (rg.id, task.gen.index, task.row)
            if active.get(rg.id) is not rg:
                problems.append(f"{task!r} is {place} but its row group is not active")
            elif key in located:
                problems.append(f"{task!r} is both {located[key]} and {place}")
            else:
                located[key] = place
    generators = sched.workload.generators
    zeros = [0] * len(generators)
    held: dict[int, list[int]] = {}  # row group id -> tasks held per generator
    for (rg_id, g, row), place in located.items():
        per_gen = held.get(rg_id)
        if per_gen is None:
            per_gen = held[rg_id] = [0] * len(generators)
        per_gen[g] += 1
        rg = active[rg_id]
        if rg.cell_waiting[g][row] > 0 if row >= 0 else rg.full_waiting[g] > 0:
            where = f" row {row}" if row >= 0 else ""
            problems.append(f"{generators[g].name}@rg{rg_id}{where} waits on its upstream but is {place}")
    cell_gens = [g.index for g in generators if g.is_cell]
    full_gens = [g.index for g in generators if not g.is_cell]
    tasks_per_group = sched.workload.tasks_per_row_group
    for rg in active.values():
        done, per_gen = rg.done_by_gen, held.get(rg.id, zeros)
        # A cell task is done, held or waiting: the rows not waiting are the done and held ones.
        bad = [g for g in cell_gens if done[g] + per_gen[g] != rg.cell_waiting[g].count(0)]
        bad += [g for g in full_gens if done[g] + per_gen[g] + (rg.full_waiting[g] > 0) != 1]
        for g in bad:
            planned = rg.size if generators[g].is_cell else 1
            waiting = planned - rg.cell_waiting[g].count(0) if generators[g].is_cell else int(rg.full_waiting[g] > 0)
            accounted = done[g] + per_gen[g] + waiting
            problems.append(
                f"row group {rg.id}, {generators[g].name}: {planned} tasks planned, {accounted} accounted for "
                f"({done[g]} done, {per_gen[g]} queued, in flight or deferred, {waiting} waiting on upstream)"
            )
        expected_remaining = tasks_per_group(rg.size) - sum(done)
        if rg.remaining_tasks != expected_remaining:
            problems.append(
                f"row group {rg.id}: {rg.remaining_tasks} tasks counted remaining, {expected_remaining} not done"
            )
    return problems


def completion_problems(sched: Scheduler) -> list[str]:
    """A run that reports completion left nothing behind."""
    if sched.stop_reason != "completed":
        return []
    problems: list[str] = []
    tasks = sched.tasks
    if sched.running or any(tasks.leased) or len(tasks.queue) or sched.deferred or sched.salvage_set_aside:
        problems.append("run completed with work, leases or deferred tasks left")
    ra = sched.request_admission
    if ra is not None and (ra.total_in_flight or ra.total_waiters):
        problems.append("run completed with request leases or waiters left")
    total_rows = sum(sched.workload.row_group_sizes)
    if sched.completed_rows != total_rows or sched.active:
        problems.append(f"run completed with {sched.completed_rows} of {total_rows} rows")
    if sched.recorder.row_groups_admitted != len(sched.workload.row_group_sizes):
        problems.append("run completed before every row group was admitted")
    return problems


def _ids(ids: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
