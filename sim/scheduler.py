"""The coordinator: main loop, dispatch passes, workers, outcomes, deferral, salvage, checkpoints.

Two long-lived coroutines mirror the real ones: the **admission** coroutine (docs/model.md, "Row-group
admission") and the **main loop** (docs/model.md, "The main loop"), with salvage drains as a
sub-generator of the main loop. They are generators of SimPy events, driven exactly as SimPy's
``Process`` would drive them (:class:`sim.event_loop.Coroutine`; docs/performance.md). Workers
are callback chains, not processes: a dispatched task asks request admission for a lease (or not,
for local tasks), holds the provider's latency as a timeout, then applies its outcome and wakes
the main loop. Same-instant wakes merge: the loop waits on a wake event and then yields one
zero-delay step, so every completion at that simulated instant is absorbed first (docs/model.md, "The main loop").

With ``scheduler.loop.model = "calibrated"`` the scheduler's own CPU time is modelled too: every
piece of scheduler work runs as a step on one simulated asyncio loop (:mod:`sim.event_loop`), in
FIFO order, with its profiled cost, and same-instant wakes merge only where that loop merges them
(docs/event-loop.md). The ``loop is not None`` branches below are that model; without them the
coordinator is the idealized zero-cost one.

This module holds no policy logic: the deferred clause lives in :mod:`sim.policies` and the
target rule in :mod:`sim.row_group_admission`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Generator as PyGenerator
from heapq import heappop
from typing import Any

import simpy
from mypy_extensions import mypyc_attr

from .event_loop import (
    _EID_SPAN,
    COMPILED,
    Coroutine,
    Entry,
    EventLoop,
    LoopCosts,
    Timeline,
    first_of,
    load_profile,
    new_signal,
    schedule_step,
    timeout_step,
)
from .invariants import SimulationError, check_end_state
from .metrics import Recorder
from .policies import Policy
from .providers import Answer, Provider, build_providers
from .request_admission import RATE_LIMITED, SUCCESS, RequestAdmission, RequestLease
from .row_group_admission import RowGroupAdmission
from .scenario import DEFAULT_EVENTS_PER_TASK, MIN_DEFAULT_MAX_EVENTS, Scenario
from .task_admission import TaskAdmission
from .workload import Generator, Task, Workload

Proc = PyGenerator[simpy.Event, Any, Any]

#: SimPy's own step, which :meth:`Scheduler._step_until_done` inlines (read at import: tests patch simpy)
_PLAIN_STEP = simpy.Environment.step

#: The wall clock (stop.max_wall_seconds) is read once per this many scheduler events.
WALL_CHECK_EVENTS = 4096


class RowGroupState:
    """An admitted row group: readiness counters and its in-flight count."""

    __slots__ = (
        "id",
        "size",
        "remaining_tasks",
        "in_flight",
        "cell_waiting",
        "done_by_gen",
        "full_waiting",
        "admitted_at",
        "deferred",
    )

    def __init__(self, rg_id: int, size: int, workload: Workload, now: float) -> None:
        self.id = rg_id
        self.size = size
        self.remaining_tasks = workload.tasks_per_row_group(size)
        self.in_flight = 0
        gens = workload.generators
        # cell_waiting[g][row]: upstream generators still missing for that row of cell generator g
        self.cell_waiting: list[list[int] | None] = [[len(g.upstream)] * size if g.is_cell else None for g in gens]
        #: done_by_gen[g]: completed tasks of generator g (rows for a cell generator, 0 or 1 otherwise)
        self.done_by_gen = [0] * len(gens)
        # full_waiting[g]: upstream generators not yet complete for the whole group
        self.full_waiting = [len(g.upstream) for g in gens]
        self.admitted_at = now
        #: this group's tasks in the scheduler's deferred list (for the stalled-deferred count)
        self.deferred = 0


@mypyc_attr(allow_interpreted_subclasses=True)  # sim/calibrate.py counts operations in a subclass
class Scheduler:
    """One run of the model: build with a scenario and policy, then :meth:`run`."""

    def __init__(self, scenario: Scenario, workload: Workload, policy: Policy, seed: int) -> None:
        self.env = simpy.Environment()
        self.scenario = scenario
        self.workload = workload
        self.policy = policy
        self.seed = seed
        self.recorder = Recorder(scenario, workload)
        self.providers: dict[str, Provider] = build_providers(scenario.models, seed)
        self.model_index = {m.name: i for i, m in enumerate(scenario.models)}
        self.gen_provider: list[Provider | None] = [
            self.providers[g.model.name] if g.model is not None else None for g in workload.generators
        ]
        self.gen_model_index = [
            self.model_index[g.model.name] if g.model is not None else -1 for g in workload.generators
        ]

        static_caps: dict[str, int] = {}
        for key in workload.request_keys:
            caps = [
                m.max_parallel_requests
                for m in scenario.models
                if f"{m.provider}/{m.resolved_model_id}" == key.provider_model
            ]
            static_caps[key.provider_model] = min(caps)
        self.request_admission: RequestAdmission | None = None
        if scenario.request_admission.enabled and workload.request_keys:
            self.request_admission = RequestAdmission(
                self.env, scenario.request_admission, workload.request_keys, static_caps
            )
        self.gen_request_resource = [
            self.request_admission.by_key[g.request_key]
            if self.request_admission is not None and g.request_key is not None
            else None
            for g in workload.generators
        ]
        advisory = None
        if scenario.scheduler.request_pressure_advisory and self.request_admission is not None:
            ra = self.request_admission
            advisory = lambda gen: ra.pressure(ra.by_key[gen.request_key])  # noqa: E731
        self.tasks = TaskAdmission(workload, scenario.scheduler.borrow_reserve_fraction, advisory)
        self.row_groups = RowGroupAdmission(scenario, workload, policy)

        # Row-group state.
        self.active: dict[int, RowGroupState] = {}
        self.active_rows = 0
        self.pending: tuple[int, int] | None = None
        self.all_admitted = False
        self.completed_rows = 0
        self.completed_row_groups = 0
        self._completable: list[RowGroupState] = []

        # Task state.
        self.in_flight = 0
        self.in_flight_by_gen = [0] * len(workload.generators)
        #: the dispatched tasks themselves, so the end-of-run task conservation need not trust the counts
        self.running: set[Task] = set()
        #: deferred tasks of busy row groups, held aside while a salvage cycle retries the stalled ones
        self.salvage_set_aside: list[Task] = []
        self.deferred: list[Task] = []
        self._deferred_by_gen = [0] * len(workload.generators)
        self._deferred_gens_cache: frozenset[int] | None = frozenset()
        # Deferred tasks whose row group has nothing in flight, kept incrementally so the main
        # loop knows whether salvage has work without scanning the deferred list every iteration.
        self._stalled_deferred = 0
        self.salvage_cycles = 0
        self.iterations = 0
        self.salvage_rounds = 0
        self.drain_time = 0.0
        self.max_deferred = 0

        # Stop rules.
        stop = scenario.stop
        self._call_threshold = None
        if stop.successful_calls is not None:
            wanted = set(stop.successful_calls.columns)
            self._threshold_gens = {g.index for g in workload.generators if wanted & set(g.output_columns)}
            self._call_threshold = stop.successful_calls.count
        self._threshold_calls = 0
        self._row_threshold = stop.completed_rows
        # Run budgets (docs/reliability.md); see scheduler_events for what max_events counts.
        self.planned_tasks = workload.total_tasks
        self.max_events = (
            stop.max_events
            if stop.max_events is not None
            else max(MIN_DEFAULT_MAX_EVENTS, DEFAULT_EVENTS_PER_TASK * self.planned_tasks)
        )
        self.drain_passes = 0
        self.salvage_scanned = 0
        self._wall_deadline = 0.0
        # fixed callbacks of the zero-cost model's worker timeouts (the data rides on the entry)
        self._answered_callbacks: list[Callable[..., Any]] = [self._answered_step]
        self._local_done_callbacks: list[Callable[..., Any]] = [self._local_done_step]
        #: scheduler events at which the budgets are next looked at (the hot path compares only this)
        self._budget_mark = min(self.max_events, WALL_CHECK_EVENTS)
        self.stop_message = ""
        self.stop_reason: str | None = None
        self._done = self.env.event()
        #: ``_done.triggered``, read by every pass without a property call
        self._stopped = False
        # The scheduler's own entries go to a heap of their own that the step loop merges with
        # SimPy's (compiled only, and not under an instrumented environment, whose step must see them).
        self.timeline = Timeline(self.env, own=COMPILED and type(self.env).step is _PLAIN_STEP)
        self._wake_ev = new_signal(self.timeline)
        self._admission_ev = new_signal(self.timeline)

        # The scheduler's own event loop (docs/event-loop.md); None is the zero-cost model.
        self.loop: EventLoop | None = None
        self.costs: LoopCosts | None = None
        loop_cfg = scenario.scheduler.loop
        if loop_cfg.model == "calibrated":
            self.loop = EventLoop(self.env, self.timeline)
            self.costs = load_profile(loop_cfg.profile).costs(loop_cfg.scale)
            # without a request-admission controller the passes and dispatches take no
            # request-pressure snapshots (docs/event-loop.md, "The direct path")
            direct = self.request_admission is None
            self._pass_cost = self.costs.direct_main_loop_pass if direct else self.costs.main_loop_pass
            self._dispatch_cost = self.costs.direct_dispatch if direct else self.costs.dispatch

    # ------------------------------------------------------------------------------------------
    # Views used by row-group admission (AdmissionState)
    # ------------------------------------------------------------------------------------------

    @property
    def pending_size(self) -> int | None:
        return self.pending[1] if self.pending is not None else None

    @property
    def active_count(self) -> int:
        return len(self.active)

    @property
    def deferred_count(self) -> int:
        return len(self.deferred)

    @property
    def deferred_generators(self) -> frozenset[int]:
        if self._deferred_gens_cache is None:
            self._deferred_gens_cache = frozenset(g for g, n in enumerate(self._deferred_by_gen) if n)
        return self._deferred_gens_cache

    @property
    def deferred_by_generator(self) -> tuple[int, ...]:
        return tuple(self._deferred_by_gen)

    @property
    def queued_total(self) -> int:
        return len(self.tasks.queue)

    @property
    def llm_wait_limit(self) -> int:
        return self.tasks.limits[self.tasks.llm_wait]

    @property
    def llm_wait_leased(self) -> int:
        return self.tasks.leased[self.tasks.llm_wait]

    @property
    def queued_llm_demand(self) -> int:
        return self.tasks.queued_demand[self.tasks.llm_wait]

    # ------------------------------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------------------------------

    def run(self) -> None:
        env = self.env
        self._wall_deadline = time.perf_counter() + self.scenario.stop.max_wall_seconds
        Coroutine(self.timeline, self._main_loop())  # first: its first evaluation sees no pending row group
        Coroutine(self.timeline, self._admission())
        if self.scenario.stop.max_time is not None:
            env.timeout(self.scenario.stop.max_time).callbacks.append(lambda _ev: self._finish("max_time"))
        # sim.simulate runs this under sim/collector.py's settings (the long-lived heap frozen)
        self._step_until_done()
        self.recorder.sample(self)
        self.recorder.finish(self.scheduler_events, self.max_events)
        self.check_invariants()

    def _step_until_done(self) -> None:
        """``env.run(until=self._done)`` with SimPy's ``step`` inlined: the same events in the same
        order, minus a method call and an exception frame per event (the run's hottest loop)."""
        env = self.env
        done = self._done
        if type(env).step is not _PLAIN_STEP:  # an instrumented environment (tests) counts its own steps
            try:
                env.run(until=done)
            except RuntimeError as err:
                if "until" in str(err) or "No scheduled events" in str(err):
                    raise SimulationError(f"the model stalled at t={env.now:.3f}s with nothing scheduled") from None
                raise
            return
        queue = env._queue
        timeline = self.timeline
        own: list[Entry] = timeline.heap
        pop = heappop
        event: object  # a SimPy event or one of the scheduler's own entries
        callbacks: Any
        # SimPy's next entry's time and (priority, id) key, re-read only when its head changes
        head: object = None
        head_t = 0.0
        head_key = 0
        while True:
            if own:
                if queue:
                    first = queue[0]
                    if first is not head:
                        head = first
                        head_t = first[0]
                        head_key = first[1] * _EID_SPAN + first[2]
                    top = own[0]
                    mine = top._t < head_t or (top._t == head_t and top._key < head_key)
                else:
                    mine = True
            else:
                mine = False
            if mine:
                entry = pop(own)
                env._now = timeline.now = entry._t
                event = entry
            else:
                try:
                    env._now, _, _, event = pop(queue)
                except IndexError:
                    raise SimulationError(f"the model stalled at t={env.now:.3f}s with nothing scheduled") from None
                timeline.now = env._now
            if isinstance(event, Entry):  # the scheduler's own entries (most of them): native attributes
                entries: list[Callable[..., Any]] = event.callbacks
                event.callbacks = None
                for callback in entries:
                    callback(event)
                if not event._ok:
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
                continue
            ev: Any = event
            callbacks, ev.callbacks = ev.callbacks, None
            for callback in callbacks:
                callback(ev)
            if not ev._ok and not hasattr(ev, "_defused"):
                exc = type(ev._value)(*ev._value.args)
                exc.__cause__ = ev._value
                raise exc
            if ev is done:
                return

    def _finish(self, reason: str) -> None:
        if not self._stopped:
            self._stopped = True
            self.stop_reason = reason
            self._done.succeed(reason)

    @property
    def scheduler_events(self) -> int:
        """What ``stop.max_events`` counts: loop and drain passes, dispatched tasks, deferred tasks scanned."""
        return self.iterations + self.drain_passes + self.recorder.dispatches + self.salvage_scanned

    def _within_budget(self) -> bool:
        """Run budgets, looked at when the scheduler events pass ``_budget_mark``: the event budget
        at every mark, the wall clock every WALL_CHECK_EVENTS events (the passes only compare)."""
        events = self.scheduler_events
        if events > self.max_events:
            self._stop_on_budget("max_events", f"stop.max_events = {self.max_events} scheduler events")
            return False
        if time.perf_counter() > self._wall_deadline:
            self._stop_on_budget(
                "max_wall_seconds", f"stop.max_wall_seconds = {self.scenario.stop.max_wall_seconds:g} s of wall time"
            )
            return False
        self._budget_mark = min(self.max_events, events + WALL_CHECK_EVENTS)
        return True

    def _stop_on_budget(self, reason: str, budget: str) -> None:
        """Stop cleanly on an exhausted run budget, with a message that says what grew."""
        rec = self.recorder
        passes = self.iterations + self.drain_passes
        dispatches = rec.dispatches
        rate_limited = sum(rec.model_429)
        if rate_limited and 2 * rate_limited >= dispatches:
            grew = (
                f"retries grew: {rate_limited} of {dispatches} dispatched tasks answered 429 "
                f"({self.planned_tasks} tasks planned)"
            )
        elif passes + self.salvage_scanned > dispatches:
            grew = (
                f"scheduler passes grew: {passes} loop and drain passes and {self.salvage_scanned} deferred tasks "
                f"scanned for {dispatches} dispatched tasks"
            )
        else:
            grew = f"the work itself: {dispatches} of about {self.planned_tasks} planned tasks dispatched"
        self.stop_message = (
            f"run budget {budget} exhausted at t={self.env.now:.6g}s; {grew}; "
            f"{self.completed_rows} of {sum(self.workload.row_group_sizes)} rows done, "
            f"{len(self.deferred) + len(self.salvage_set_aside)} tasks deferred; raise stop.{reason} if the run is "
            "meant to be this long"
        )
        rec.budget_exhausted(reason, self.stop_message)
        self._finish(reason)

    def _wake(self) -> None:
        wake = self._wake_ev
        if not wake.triggered:
            wake.succeed()

    def _signal_admission(self) -> None:
        admission = self._admission_ev
        if not admission.triggered:
            admission.succeed()

    def _wait_wake(self, timeout: float | None = None) -> Proc:
        """Wait for a wake (or ``timeout``), then one zero-delay step so same-instant wakes merge."""
        if self.loop is not None:
            yield from self._loop_wait_wake(timeout)
            return
        if timeout is None:
            yield self._wake_ev
        else:
            yield first_of(self.timeline, self._wake_ev, timeout_step(self.timeline, timeout))
        yield timeout_step(self.timeline, 0)

    # ------------------------------------------------------------------------------------------
    # Admission coroutine (docs/model.md, "Row-group admission")
    # ------------------------------------------------------------------------------------------

    def _admission(self) -> Proc:
        rga = self.row_groups
        loop = self.loop
        if loop is not None:
            yield loop.turn()
        for rg_id, size in enumerate(self.workload.row_group_sizes):
            if self._stopped:
                return
            self.pending = (rg_id, size)
            while not rga.may_admit(len(self.active), self.active_rows, size):
                if len(self.active) < rga.target:  # blocked by the row guard alone
                    rga.blocked_reasons["max_admitted_rows"] += 1
                self._admission_ev = new_signal(self.timeline)
                if loop is not None:
                    loop.release()
                yield self._admission_ev
                if loop is not None:
                    yield loop.turn()
            self.pending = None
            if loop is not None:
                yield loop.hold(self.costs.row_group_admission)
            self._admit(rg_id, size)
        self.all_admitted = True
        self._wake()
        if loop is not None:
            loop.release()

    def _admit(self, rg_id: int, size: int) -> None:
        now = self.env.now
        rg = RowGroupState(rg_id, size, self.workload, now)
        self.active[rg_id] = rg
        self.active_rows += size
        self.recorder.row_group_admitted(now, len(self.active))
        gens = self.workload.generators
        push = self.tasks.push
        for gi in self.workload.root_generators:
            gen = gens[gi]
            if gen.is_cell:
                for row in range(size):
                    push(Task(gen, rg, row))
            else:
                push(Task(gen, rg, -1))
        self._wake()

    # ------------------------------------------------------------------------------------------
    # Main loop (docs/model.md, "The main loop")
    # ------------------------------------------------------------------------------------------

    def _main_loop(self) -> Proc:
        rga = self.row_groups
        tasks = self.tasks
        loop = self.loop
        if loop is not None:
            yield loop.turn()
        while not self._stopped:
            self.iterations += 1
            if (
                self.iterations + self.drain_passes + self.recorder.dispatches + self.salvage_scanned
                > self._budget_mark
                and not self._within_budget()
            ):
                return
            self._wake_ev = new_signal(self.timeline)
            dispatched, blocked = yield from self._dispatch_pass()
            if loop is not None and (cost := self._checkpoint_cost() + self._evaluation_cost()) > 0:
                yield loop.hold(cost)
            self._checkpoint_pass()
            self._evaluate_target()
            self.recorder.sample(self)
            if self.deferred:
                yield from self._salvage()
                if loop is not None:
                    yield loop.hold(self._evaluation_cost())
                self._evaluate_target()
                if self.deferred and self.in_flight == 0:
                    # The pause waits for a wake raised after it starts: wakes from the salvage
                    # just finished would otherwise end it at once and, with zero-latency mocks,
                    # spin forever at one simulated instant (see README, Fidelity).
                    self._wake_ev = new_signal(self.timeline)
                    yield from self._wait_wake(self._resalvage_delay())
                    continue
            if self.all_admitted and not self.active and self.in_flight == 0:
                self._finish("completed")
                return
            if not tasks.queue and self.in_flight == 0 and self.all_admitted and not self.deferred:
                self._finish("completed")
                return
            if not tasks.queue or blocked:
                # `blocked` is from this iteration's dispatch pass; a salvage since then may have
                # drained the queue, and an empty queue just waits for the next wake (an admission).
                if blocked and not dispatched and self.in_flight == 0 and tasks.queue:
                    raise SimulationError(
                        f"t={self.env.now:.3f}s: the ready queue is blocked with nothing in flight "
                        f"(target {rga.target}, queued {tasks.queued_total})"
                    )
                yield from self._wait_wake()

    def _evaluate_target(self) -> None:
        if self.row_groups.evaluate(self):
            self.recorder.target_changed(self.env.now, self.row_groups.target)
            self._signal_admission()

    def _dispatch_pass(self) -> PyGenerator[simpy.Event, Any, tuple[bool, bool]]:
        """Dispatch greedily at this instant (docs/model.md, "Dispatch pass"); start the workers after one yield."""
        tasks = self.tasks
        started: list[Task] = []
        blocked = False
        while tasks.queue:
            task = tasks.lease_next()  # select() then lease(), in one call
            if task is None:
                blocked = True
                break
            rg: RowGroupState = task.rg
            if rg.in_flight == 0 and rg.deferred:
                self._stalled_deferred -= rg.deferred
            rg.in_flight += 1
            self.in_flight += 1
            self.in_flight_by_gen[task.gen.index] += 1
            started.append(task)
        if started:
            # the leased tasks are dispatched work from here on, so a run that stops while the
            # pass still holds the CPU accounts for them (sim/invariants.py)
            self.running.update(started)
        loop = self.loop
        if loop is not None:  # the pass's CPU time, then the workers start after one yield
            if started:
                yield loop.hold(self._pass_cost + len(started) * self._dispatch_cost)
            else:
                loop.charge(self._pass_cost)
        if started:
            self.recorder.dispatched(self, len(started))
            for task in started:
                self._start(task)
            yield timeout_step(self.timeline, 0) if loop is None else loop.yield_turn()
        return bool(started), blocked

    def _checkpoint_pass(self) -> None:
        """Checkpoint every complete row group with nothing in flight (docs/model.md, "Checkpoints" step 6)."""
        if not self._completable:
            return
        now = self.env.now
        for rg in self._completable:
            del self.active[rg.id]
            self.active_rows -= rg.size
            self.completed_rows += rg.size
            self.completed_row_groups += 1
            self.recorder.row_group_checkpointed(rg.id, rg.size, rg.admitted_at, now)
        self._completable.clear()
        self._signal_admission()
        if self._row_threshold is not None and self.completed_rows >= self._row_threshold:
            self._finish("completed_rows")

    # ------------------------------------------------------------------------------------------
    # Workers (callback chains)
    # ------------------------------------------------------------------------------------------

    def _start(self, task: Task) -> None:
        gen = task.gen
        if self.loop is not None:
            self._loop_start(task)
            return
        if gen.kind == "local":
            schedule_step(self.timeline, gen.duration, self._local_done_callbacks, task)
            return
        res = self.gen_request_resource[gen.index]
        if res is None:
            self._send(task, None)
            return
        lease = self.request_admission.acquire(res, lambda lease: self._granted_after_wait(task, lease))
        if lease is not None:
            self._send(task, lease)
        else:  # the task waits in request admission, holding its task lease (docs/model.md, "Request admission")
            self.recorder.model_waiting(self.gen_model_index[gen.index], +1)

    def _granted_after_wait(self, task: Task, lease: RequestLease) -> None:
        self.recorder.model_waiting(self.gen_model_index[task.gen.index], -1)
        loop = self.loop
        if loop is not None:  # the waiting worker resumes behind what is ready, then sends
            costs: LoopCosts = self.costs
            loop.call_soon(costs.request_send, self._send, task, lease)
            return
        self._send(task, lease)

    def _send(self, task: Task, lease: RequestLease | None) -> None:
        now = self.env._now
        gen = task.gen
        provider: Provider = self.gen_provider[gen.index]
        answer = provider.answer(now)
        model_idx = self.gen_model_index[gen.index]
        self.recorder.model_sent(now, model_idx, self._limit_of(gen))
        loop = self.loop
        if loop is not None:
            costs: LoopCosts = self.costs
            cost = costs.completion if lease is not None else costs.direct_completion
            loop.call_later(answer.latency, cost, self._answered, task, lease, answer)
            return
        schedule_step(self.timeline, answer.latency, self._answered_callbacks, (task, lease, answer))

    def _answered_step(self, step: Any) -> None:
        self._answered(*step.entry)

    def _local_done_step(self, step: Any) -> None:
        self._task_done(step.entry, None)

    def _limit_of(self, gen: Generator) -> int:
        res = self.gen_request_resource[gen.index]
        return res.current_limit if res is not None else gen.weight

    def _answered(self, task: Task, lease: RequestLease | None, answer: Answer) -> None:
        if lease is not None:
            ra: RequestAdmission = self.request_admission
            ra.release(lease, RATE_LIMITED if answer.rate_limited else SUCCESS, answer.retry_after)
        gen = task.gen
        res = self.gen_request_resource[gen.index]
        self.recorder.model_answered(
            self.env._now,
            self.gen_model_index[gen.index],
            gen.index,
            answer.rate_limited,
            res.current_limit if res is not None else gen.weight,
            res.blocked_until if res is not None else 0.0,
            answer.latency,
        )
        self._task_done(task, "rate_limit:http_429" if answer.rate_limited else None)

    def _task_done(self, task: Task, retryable_error: str | None) -> None:
        """Apply a worker's outcome (docs/model.md, "Checkpoints" step 5), release its lease and wake the loop."""
        rg: RowGroupState = task.rg
        gen = task.gen
        if retryable_error is None:
            self._complete(task)
            if self._call_threshold is not None and gen.index in self._threshold_gens and gen.model is not None:
                self._threshold_calls += 1
                if self._threshold_calls >= self._call_threshold:
                    self._finish("successful_calls")
        else:
            task.error = retryable_error
            task.deferrals += 1
            self._add_deferred(task)
        self.tasks.release(task)
        self.running.discard(task)
        rg.in_flight -= 1
        if rg.in_flight == 0 and rg.deferred:
            self._stalled_deferred += rg.deferred
        self.in_flight -= 1
        self.in_flight_by_gen[gen.index] -= 1
        if rg.in_flight < 0 or self.in_flight < 0:
            raise SimulationError(f"negative in-flight count after {task!r}")
        if rg.remaining_tasks == 0 and rg.in_flight == 0:
            self._completable.append(rg)
        self._wake()

    def _complete(self, task: Task) -> None:
        """Mark the task's output complete and make downstream tasks ready (docs/model.md "Columns, generators and
        tasks")."""
        rg: RowGroupState = task.rg
        gen = task.gen
        gens = self.workload.generators
        push = self.tasks.push
        rg.remaining_tasks -= 1
        rg.done_by_gen[gen.index] += 1
        if gen.is_cell:
            row = task.row
            group_complete = rg.done_by_gen[gen.index] == rg.size
            for d in gen.downstream:
                down = gens[d]
                if down.is_cell:
                    waiting = rg.cell_waiting[d]
                    waiting[row] -= 1
                    if waiting[row] == 0:
                        push(Task(down, rg, row))
                elif group_complete:
                    rg.full_waiting[d] -= 1
                    if rg.full_waiting[d] == 0:
                        push(Task(down, rg, -1))
        else:
            for d in gen.downstream:
                down = gens[d]
                if down.is_cell:
                    waiting = rg.cell_waiting[d]
                    for row in range(rg.size):
                        waiting[row] -= 1
                        if waiting[row] == 0:
                            push(Task(down, rg, row))
                else:
                    rg.full_waiting[d] -= 1
                    if rg.full_waiting[d] == 0:
                        push(Task(down, rg, -1))

    # ------------------------------------------------------------------------------------------
    # Deferral and salvage (docs/model.md, "Deferral and salvage", 5.4)
    # ------------------------------------------------------------------------------------------

    def _add_deferred(self, task: Task) -> None:
        self.deferred.append(task)
        rg: RowGroupState = task.rg
        rg.deferred += 1
        if rg.in_flight == 0:
            self._stalled_deferred += 1
        g = task.gen.index
        self._deferred_by_gen[g] += 1
        if self._deferred_by_gen[g] == 1:
            self._deferred_gens_cache = None
        if len(self.deferred) > self.max_deferred:
            self.max_deferred = len(self.deferred)

    def _replace_deferred(self, tasks: list[Task]) -> None:
        for t in self.deferred:
            t.rg.deferred = 0
        self.deferred = tasks
        counts = [0] * len(self._deferred_by_gen)
        stalled = 0
        for t in tasks:
            counts[t.gen.index] += 1
            rg = t.rg
            rg.deferred += 1
            if rg.in_flight == 0:
                stalled += 1
        self._stalled_deferred = stalled
        self._deferred_by_gen = counts
        self._deferred_gens_cache = None

    def _salvage(self) -> Proc:
        """Retry the deferred tasks of stalled row groups in rounds, each drained to quiescence."""
        if not self._stalled_deferred:  # O(1): no deferred task sits in a row group with nothing in flight
            return
        self.salvage_scanned += len(self.deferred)
        stalled = {t.rg.id for t in self.deferred if t.rg.in_flight == 0}
        if not stalled:
            return
        others = [t for t in self.deferred if t.rg.id not in stalled]
        self.salvage_set_aside = others
        self._replace_deferred([t for t in self.deferred if t.rg.id in stalled])
        if self.loop is not None:
            yield self.loop.hold(self.costs.salvage_pass)
        self.salvage_cycles += 1
        started = self.env.now
        for _round in range(self.scenario.scheduler.salvage_max_rounds):
            if not self.deferred:
                break
            if self.loop is not None:  # the round's CPU time first: its tasks stay deferred until it ends
                yield self.loop.hold(len(self.deferred) * self.costs.salvage_task)
            batch = self.deferred
            self._replace_deferred([])
            self.salvage_rounds += 1
            for task in batch:
                self.tasks.push(task)
            yield from self._drain()
            if self.loop is not None:
                yield self.loop.hold(self._checkpoint_cost())
            self._checkpoint_pass()
            if self._stopped:
                return
        # Every modelled retryable error is a 429, which is preserved: exhausted tasks stay.
        leftover = self.deferred
        self.salvage_set_aside = []
        self._replace_deferred(others + leftover)
        self.drain_time += self.env.now - started
        if self.loop is not None:
            yield self.loop.hold(self._checkpoint_cost())
        self._checkpoint_pass()

    def _drain(self) -> Proc:
        """Dispatch and wait until the queue is empty and nothing is in flight (all row groups)."""
        tasks = self.tasks
        while not self._stopped:
            self.drain_passes += 1
            if (
                self.iterations + self.drain_passes + self.recorder.dispatches + self.salvage_scanned
                > self._budget_mark
                and not self._within_budget()
            ):
                return
            self._wake_ev = new_signal(self.timeline)
            dispatched, blocked = yield from self._dispatch_pass()
            if self.loop is not None:  # drains last seconds in real runs: keep the series going
                self.recorder.sample(self)
            if not tasks.queue and self.in_flight == 0:
                return
            if blocked and not dispatched and self.in_flight == 0:
                raise SimulationError(f"t={self.env.now:.3f}s: salvage drain blocked with nothing in flight")
            yield from self._wait_wake()

    def _resalvage_delay(self) -> float:
        backoff = self.scenario.scheduler.resalvage_backoff
        if not self.scenario.scheduler.request_pressure_advisory or self.request_admission is None:
            return backoff
        remaining = [
            self.request_admission.cooldown_remaining(res)
            for t in self.deferred
            if (res := self.gen_request_resource[t.gen.index]) is not None
        ]
        positive = [r for r in remaining if r > 0]
        return max(backoff, min(positive)) if positive else backoff

    # ------------------------------------------------------------------------------------------
    # The scheduler's event loop (docs/event-loop.md): only used when self.loop is not None
    # ------------------------------------------------------------------------------------------

    def _loop_wait_wake(self, timeout: float | None) -> Proc:
        """``await wake.wait()`` on the simulated loop: a wake already raised does not suspend the
        coroutine; otherwise it frees the CPU and, once woken, queues behind what is ready."""
        wake = self._wake_ev
        if wake.triggered:
            return
        loop: EventLoop = self.loop
        loop.release()
        if timeout is None:
            yield wake
        else:
            yield first_of(self.timeline, wake, timeout_step(self.timeline, timeout))
        yield loop.turn()

    def _checkpoint_cost(self) -> float:
        return len(self._completable) * self.costs.checkpoint

    def _evaluation_cost(self) -> float:
        evaluates = self.row_groups.adaptive and not self.all_admitted
        return self.costs.target_evaluation if evaluates else 0.0

    def _loop_start(self, task: Task) -> None:
        """Queue a dispatched worker's first step: a local task runs inline; a model task builds
        its call and acquires a request lease, then sends it in the same step if granted."""
        gen = task.gen
        costs: LoopCosts = self.costs
        loop: EventLoop = self.loop
        if gen.kind == "local":
            if gen.duration > 0:
                loop.call_soon(costs.local_task, loop.call_later, gen.duration, 0.0, self._task_done, task, None)
            else:
                loop.call_soon(costs.local_task, self._task_done, task, None)
            return
        if self.gen_request_resource[gen.index] is None:  # the direct path: no facade, no controller
            loop.call_soon(costs.direct_call_start, self._send, task, None)
            return
        loop.call_soon(costs.worker_start + costs.request_acquire, self._loop_acquire, task)

    def _loop_acquire(self, task: Task) -> None:
        res = self.gen_request_resource[task.gen.index]
        ra: RequestAdmission = self.request_admission
        lease = ra.acquire(res, lambda lease: self._granted_after_wait(task, lease))
        if lease is not None:
            loop: EventLoop = self.loop
            costs: LoopCosts = self.costs
            loop.extend(costs.request_send, self._send, task, lease)
        else:  # the task waits in request admission, holding its task lease (docs/model.md, "Request admission")
            self.recorder.model_waiting(self.gen_model_index[task.gen.index], +1)

    # ------------------------------------------------------------------------------------------
    # Accounting invariants (the checks live in sim/invariants.py)
    # ------------------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise :class:`SimulationError` if the end state does not add up (see :mod:`sim.invariants`)."""
        check_end_state(self)

    def _admitted_count(self) -> int:
        return self.completed_row_groups + len(self.active)
