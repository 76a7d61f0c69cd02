"""May another row group come in? Fixed cap or adaptive target (docs/model.md, "Fixed mode", 2.4).

The adaptive target only grows: +1 per growth, capped at the hard cap, after two consecutive
unblocked evaluations while ready work is queued (one when the queue is empty). A block never
stops admission; it only freezes growth for that evaluation (docs/model.md "Guardrails and block reasons"). Block
reasons are checked
in the real order; the policy supplies the ``deferred_tasks`` clause and its position.

This module dispatches nothing; it reads the scheduler through :class:`AdmissionState`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from mypy_extensions import mypyc_attr

from .errors import RunFailed
from .policies import AdmissionView, DeferredAnalysis, Policy, analyze_deferred
from .scenario import Scenario
from .workload import Workload

#: Queued-task guardrail multiplier: growth stops at 4 x max_in_flight_tasks queued (docs/model.md, "Adaptive target").
QUEUED_TASK_GUARDRAIL_MULTIPLIER = 4
#: Row guard floor: min(num_records, max(3 x buffer_size, 8192)) (docs/model.md, "Adaptive target").
ROW_GUARD_BUFFER_MULTIPLIER = 3
ROW_GUARD_FLOOR = 8192

REASONS = (
    "no_pending_row_groups",
    "max_admitted_rows",
    "deferred_tasks",
    "queued_task_guardrail",
    "no_llm_wait_resource",
    "llm_wait_saturated",
    "queued_llm_demand",
)


@mypyc_attr(native_class=False)  # an interpreted class: mypyc cannot derive a native one from RuntimeError
class PolicyResultError(RunFailed):
    """A policy's ``deferred_blocks`` returned something other than a bool (a run failed: exit 1)."""


class AdmissionState(Protocol):
    """The read-only scheduler facts row-group admission needs."""

    @property
    def pending_size(self) -> int | None: ...
    @property
    def active_count(self) -> int: ...
    @property
    def active_rows(self) -> int: ...
    @property
    def all_admitted(self) -> bool: ...
    @property
    def deferred_count(self) -> int: ...
    @property
    def deferred_generators(self) -> frozenset[int]: ...
    @property
    def deferred_by_generator(self) -> tuple[int, ...]: ...
    @property
    def queued_total(self) -> int: ...
    @property
    def llm_wait_limit(self) -> int: ...
    @property
    def llm_wait_leased(self) -> int: ...
    @property
    def queued_llm_demand(self) -> int: ...


def max_admitted_rows(scenario: Scenario) -> int:
    """The ``max_admitted_rows`` guardrail (docs/model.md, "Adaptive target")."""
    num_records = scenario.row_groups.guard_num_records
    buffer_size = scenario.row_groups.guard_buffer_size
    if num_records > 0 and buffer_size > 0:
        return min(num_records, max(ROW_GUARD_BUFFER_MULTIPLIER * buffer_size, ROW_GUARD_FLOOR))
    return max(1, scenario.row_groups.total_rows)


@dataclass(frozen=True)
class DeferredBlock:
    """Deferred work at the last ``deferred_tasks`` block: the source of the real scheduler's
    ``deferred_admission`` diagnostics (docs/metrics.md)."""

    policy: str
    count: int
    by_generator: tuple[int, ...]  # deferred tasks per generator index
    analysis: DeferredAnalysis  # the localized analysis of that deferred set and pending group


class RowGroupAdmission:
    """Target, guardrails and blocked-reason counters of one run."""

    def __init__(self, scenario: Scenario, workload: Workload, policy: Policy) -> None:
        sched = scenario.scheduler
        self.policy: Policy = policy
        self.workload: Workload = workload
        self._view: AdmissionView | None = None
        self.adaptive: bool = policy.adaptive
        self.hard_cap: int = max(1, sched.max_concurrent_row_groups)
        self.target: int = max(1, min(self.hard_cap, sched.initial_target)) if self.adaptive else self.hard_cap
        self.observed_max_target: int = self.target
        self.max_admitted_rows: int = max_admitted_rows(scenario)
        self.queued_task_guardrail: int = QUEUED_TASK_GUARDRAIL_MULTIPLIER * sched.max_in_flight_tasks
        self.ticks: int = 0
        self.blocked_reasons: Counter[str] = Counter()
        self.evaluations: int = 0
        self.last_block_reason: str | None = None
        self.last_deferred_block: DeferredBlock | None = None

    def row_guard_allows(self, active_rows: int, size: int) -> bool:
        """Adaptive mode only: nothing active, or the group fits under the guardrail."""
        if not self.adaptive:
            return True
        return active_rows == 0 or active_rows + size <= self.max_admitted_rows

    def may_admit(self, active_count: int, active_rows: int, size: int) -> bool:
        return active_count < self.target and self.row_guard_allows(active_rows, size)

    def _deferred_blocks(self, state: AdmissionState) -> bool:
        # Typed as returning object: compiled with mypyc, a call typed "-> bool" would reject a
        # plug-in's non-bool with a TypeError before the check below could name the mistake.
        rule: Callable[[AdmissionView], object] | None = self.policy.deferred_blocks
        if rule is None or state.deferred_count == 0:
            return False
        view = self._view
        count, gens, pending = state.deferred_count, state.deferred_generators, state.pending_size
        if view is None or (view.deferred_count, view.pending_size, view.deferred_generators) != (count, pending, gens):
            # The view is immutable: reuse it while the deferred set and pending group are unchanged
            # (the global policy re-evaluates the same view on every salvage cycle).
            view = self._view = AdmissionView(self.workload, count, gens, pending)
        blocks = rule(view)
        if not isinstance(blocks, bool | np.bool_):  # a plug-in's mistake must not pass as "blocks"
            raise PolicyResultError(
                f"policy {self.policy.name!r} returned {type(blocks).__name__} {blocks!r}; "
                "deferred_blocks must return True or False"
            )
        if blocks:
            self.last_deferred_block = DeferredBlock(
                self.policy.name,
                count,
                state.deferred_by_generator,
                analyze_deferred(self.workload, gens, pending),
            )
        return bool(blocks)  # a NumPy bool is accepted, and returned as a bool

    def block_reason(self, state: AdmissionState) -> str | None:
        """The first block reason in the policy's order, or ``None`` (docs/model.md, "Adaptive target" and 6)."""
        deferred_first = self.policy.deferred_check == "first"
        if deferred_first and self._deferred_blocks(state):
            return "deferred_tasks"
        pending = state.pending_size
        if pending is None:
            return "no_pending_row_groups"
        if not self.row_guard_allows(state.active_rows, pending):
            return "max_admitted_rows"
        if not deferred_first and self._deferred_blocks(state):
            return "deferred_tasks"
        if state.queued_total >= self.queued_task_guardrail:
            return "queued_task_guardrail"
        llm_limit = state.llm_wait_limit
        if llm_limit <= 0:
            return "no_llm_wait_resource"
        leased = state.llm_wait_leased
        available = llm_limit - leased
        if available <= 0:
            return "llm_wait_saturated"
        if leased > 0 and available <= state.queued_llm_demand:
            return "queued_llm_demand"
        return None

    def evaluate(self, state: AdmissionState) -> bool:
        """Run the target-update procedure once; True if the target grew (docs/model.md, "Adaptive target")."""
        if not self.adaptive or state.all_admitted:
            return False
        self.evaluations += 1
        if state.active_count >= self.hard_cap:
            self.ticks = 0
            return False
        reason = self.block_reason(state)
        self.last_block_reason = reason
        if reason is not None:
            self.blocked_reasons[reason] += 1
            self.ticks = 0
            return False
        self.ticks += 1
        if state.queued_total >= 1 and self.ticks < 2:
            return False
        new_target = min(self.hard_cap, self.target + 1)
        self.ticks = 0
        changed = new_target != self.target
        self.target = new_target
        if new_target > self.observed_max_target:
            self.observed_max_target = new_target
        return changed
