"""What happened: an append-only recorder of counters, maxima and time series.

The scheduler calls the recorder at the moments the real scheduler samples its metrics (spec 8):
after each main-loop iteration, at dispatch, and when a call is sent or answered. Values are
plain Python numbers in lists; pandas tables are built once, at the end, by :mod:`sim.results`.
The recorder decides nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .scenario import Scenario
from .workload import Workload

if TYPE_CHECKING:
    from .scheduler import Scheduler

SCHEDULER_SERIES_COLUMNS = (
    "time",
    "target",
    "active_row_groups",
    "active_rows",
    "queued_tasks",
    "in_flight_tasks",
    "deferred_tasks",
    "completed_rows",
    "successful_calls",
    "healthy_calls",
)
MODEL_SERIES_COLUMNS = ("time", "model", "in_flight", "waiting", "current_limit", "cooldown_until")


class Recorder:
    """Counters and time series of one run."""

    def __init__(self, scenario: Scenario, workload: Workload) -> None:
        self.model_names = [m.name for m in scenario.models]
        n_models = len(self.model_names)
        n_gen = len(workload.generators)
        #: models that never answer 429: their calls are the "healthy" ones (the #743 headline)
        self.healthy_models = {i for i, m in enumerate(scenario.models) if m.rate_limit.pattern == "never"}
        self.calls_ok = [0] * n_gen
        self.calls_429 = [0] * n_gen
        self.model_ok = [0] * n_models
        self.model_429 = [0] * n_models
        self.model_in_flight = [0] * n_models
        self.model_waiting_count = [0] * n_models
        self.model_max_in_flight = [0] * n_models
        self.model_max_waiting = [0] * n_models
        self.model_limit = [m.max_parallel_requests for m in scenario.models]
        self.model_cooldown_until = [0.0] * n_models
        self.successful_calls = 0
        self.healthy_calls = 0
        self.max_row_groups_in_flight = 0
        self.max_queued_tasks = 0
        self.max_in_flight_tasks = 0
        self.dispatches = 0
        self.first_target_change: float | None = None
        self.target_changes = 0
        self.series: list[tuple[Any, ...]] = []
        self.model_series: list[tuple[Any, ...]] = []
        self.row_groups: list[tuple[int, int, float, float]] = []  # id, size, admitted_at, checkpointed_at

    # -- scheduler-level samples ---------------------------------------------------------------

    def sample(self, sched: Scheduler) -> None:
        queued = sched.tasks.queued_total
        if queued > self.max_queued_tasks:
            self.max_queued_tasks = queued
        row = (
            sched.env.now,
            sched.row_groups.target,
            len(sched.active),
            sched.active_rows,
            queued,
            sched.in_flight,
            len(sched.deferred),
            sched.completed_rows,
            self.successful_calls,
            self.healthy_calls,
        )
        series = self.series
        if series:
            last = series[-1]
            if last[1:] == row[1:]:
                return
            if last[0] == row[0]:
                series[-1] = row
                return
        series.append(row)

    def dispatched(self, sched: Scheduler, count: int) -> None:
        self.dispatches += count
        if sched.in_flight > self.max_in_flight_tasks:
            self.max_in_flight_tasks = sched.in_flight
        queued = sched.tasks.queued_total + count
        if queued > self.max_queued_tasks:
            self.max_queued_tasks = queued

    def row_group_admitted(self, now: float, active: int) -> None:
        if active > self.max_row_groups_in_flight:
            self.max_row_groups_in_flight = active

    def row_group_checkpointed(self, rg_id: int, size: int, admitted_at: float, now: float) -> None:
        self.row_groups.append((rg_id, size, admitted_at, now))

    def target_changed(self, now: float, target: int) -> None:
        self.target_changes += 1
        if self.first_target_change is None:
            self.first_target_change = now

    # -- model calls ---------------------------------------------------------------------------

    def model_waiting(self, model: int, delta: int) -> None:
        n = self.model_waiting_count[model] + delta
        self.model_waiting_count[model] = n
        if n > self.model_max_waiting[model]:
            self.model_max_waiting[model] = n

    @property
    def model_waiting_total(self) -> int:
        return sum(self.model_waiting_count)

    def model_sent(self, now: float, model: int, limit: int) -> None:
        n = self.model_in_flight[model] + 1
        self.model_in_flight[model] = n
        if n > self.model_max_in_flight[model]:
            self.model_max_in_flight[model] = n
        self.model_limit[model] = limit
        self._model_row(now, model)

    def model_answered(
        self, now: float, model: int, gen: int, rate_limited: bool, limit: int, cooldown_until: float
    ) -> None:
        self.model_in_flight[model] -= 1
        self.model_limit[model] = limit
        self.model_cooldown_until[model] = cooldown_until
        if rate_limited:
            self.calls_429[gen] += 1
            self.model_429[model] += 1
        else:
            self.calls_ok[gen] += 1
            self.model_ok[model] += 1
            self.successful_calls += 1
            if model in self.healthy_models:
                self.healthy_calls += 1
        self._model_row(now, model)

    def _model_row(self, now: float, model: int) -> None:
        self.model_series.append(
            (
                now,
                model,
                self.model_in_flight[model],
                self.model_waiting_count[model],
                self.model_limit[model],
                self.model_cooldown_until[model],
            )
        )
