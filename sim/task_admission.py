"""May this ready task become a worker? Scheduler resources, task leases and the fair queue.

Every generator is its own task group (its output columns are part of the group identity, spec
4.1). A task may be leased only if each resource it requests has at least one unit available (the
hard check) and the bounded-borrow policy allows it (docs/model.md, "Bounded borrow"). Ready tasks wait in the head-only
virtual-time fair queue (docs/model.md "Fair queue"). The optional request-pressure advisory (docs/model.md
"Request-pressure advisory") skips a
pressured head while an unpressured peer is eligible.

This module does not know providers: request pressure is asked through a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .fair_queue import FairQueue
from .workload import LLM_WAIT, SUBMISSION, Generator, Task, Workload

#: Maximum number of slots the bounded-borrow reserve keeps back (docs/model.md, "Bounded borrow").
BORROW_RESERVE_CAP = 8


class TaskAdmission:
    """Resource ledger, borrow debt and the ready queue of one scheduler."""

    def __init__(
        self,
        workload: Workload,
        reserve_fraction: float = 0.0,
        request_pressure: Callable[[Generator], str | None] | None = None,
    ) -> None:
        self.workload = workload
        self.generators = workload.generators
        self.limits = list(workload.resource_limits)
        self.leased = [0] * len(self.limits)
        self.max_leased = [0] * len(self.limits)
        n_gen = len(self.generators)
        self.held = [[0] * len(self.limits) for _ in range(n_gen)]
        self.debt = [[0] * len(self.limits) for _ in range(n_gen)]
        self.queue: FairQueue[int, Task] = FairQueue()
        self.queued_demand = [0] * len(self.limits)
        self.queued_by_group = [0] * n_gen
        self.reserve_fraction = reserve_fraction
        self.request_pressure = request_pressure
        self.advisory_skips = 0
        self.submission = workload.resource_index[SUBMISSION]
        self.llm_wait = workload.resource_index[LLM_WAIT]
        # Resources that count for borrow pressure: typed ones; submission only if alone.
        self._pressure_resources = [
            tuple(r for r in g.resources if r != self.submission) or g.resources for g in self.generators
        ]
        #: a group's weight as it counts for competitors (at least 1)
        self._weight1 = [max(1, g.weight) for g in self.generators]
        self._borrow_plans: dict[tuple[int, int, int, int, float], tuple[int, bool, int]] = {}

    # -- queue ---------------------------------------------------------------------------------

    def push(self, task: Task) -> None:
        gen = task.gen
        self.queue.push(gen.index, task, gen.weight)
        self.queued_by_group[gen.index] += 1
        for r in gen.resources:
            self.queued_demand[r] += 1

    @property
    def queued_total(self) -> int:
        return len(self.queue)

    def available(self, r: int) -> int:
        return self.limits[r] - self.leased[r]

    # -- eligibility ---------------------------------------------------------------------------

    def _hard_ok(self, gen: Generator) -> bool:
        limits, leased = self.limits, self.leased
        for r in gen.resources:
            if limits[r] - leased[r] < 1:
                return False
        return True

    def _strict_share(self, gen: Generator, r: int, competitors_weight: int) -> int:
        limit = self.limits[r]
        if limit <= 0:
            return 0
        if limit == 1:
            return 1
        w = gen.weight
        total = 2 * w if competitors_weight == 0 else w + competitors_weight
        share = max(1, math.ceil(limit * w / total))
        return min(share, gen.admitted_limit or limit, limit)

    def _reserved(self, limit: int) -> int:
        if self.reserve_fraction <= 0:
            return 0
        return max(1, min(BORROW_RESERVE_CAP, math.ceil(limit * self.reserve_fraction)))

    def borrow_check(self, gen: Generator, hard_heads: list[Generator]) -> tuple[bool, tuple[int, ...], str]:
        """Bounded-borrow decision for one task of ``gen``.

        ``hard_heads`` are the generators whose queued head is hard-eligible now. Returns
        (allowed, resources that would be borrowed, denial reason).
        """
        own = self._weight1[gen.index] if any(h.index == gen.index for h in hard_heads) else 0
        return self._borrow(gen, self._head_weights(hard_heads), own)

    def _head_weights(self, hard_heads: list[Generator]) -> list[int]:
        """Per resource, the summed weight (at least 1 each) of the hard-eligible heads requesting it.

        A head's competitors on ``r`` are this total minus its own weight: one pass per
        selection instead of one scan of all heads per (candidate, resource).
        """
        totals = [0] * len(self.limits)
        weight1 = self._weight1
        for other in hard_heads:
            w = weight1[other.index]
            for r in other.resources:
                totals[r] += w
        return totals

    def _borrow(self, gen: Generator, head_weights: list[int], own: int) -> tuple[bool, tuple[int, ...], str]:
        if gen.admitted_limit is None:
            return True, (), ""
        g = gen.index
        held, debt = self.held[g], self.debt[g]
        limits = self.limits
        plans = self._borrow_plans
        borrowed: list[int] = []
        for r in gen.resources:
            competitors_weight = head_weights[r] - own
            key = (g, r, competitors_weight, limits[r], self.reserve_fraction)
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = self._borrow_plan(gen, r, competitors_weight)
            share, pressured, ceiling = plan
            projected = held[r] + 1
            if pressured:
                if debt[r] > 0:
                    return False, (), "borrow_debt"
                if projected > share:
                    return False, (), "group_cap"
            elif projected > share:
                if debt[r] + 1 > ceiling:
                    return False, (), "borrow_debt"
                borrowed.append(r)
        return True, tuple(borrowed), ""

    def _borrow_plan(self, gen: Generator, r: int, competitors_weight: int) -> tuple[int, bool, int]:
        """(strict share, pressured, borrow ceiling) of ``gen`` on ``r``: pure in its cache key, so
        :meth:`_borrow` computes it once per (group, resource, competitors, limit, reserve)."""
        share = self._strict_share(gen, r, competitors_weight)
        pressured = competitors_weight > 0 and r in self._pressure_resources[gen.index]
        limit = self.limits[r]
        ceiling = max(0, (limit - self._reserved(limit)) - share)
        return share, pressured, ceiling

    def _hard_heads(self) -> list[Generator]:
        gens = self.generators
        limits, leased = self.limits, self.leased
        heads = []
        for g in self.queue.active_keys():
            gen = gens[g]
            for r in gen.resources:
                if limits[r] - leased[r] < 1:
                    break
            else:
                heads.append(gen)
        return heads

    def select(self) -> tuple[int, tuple[int, ...]] | None:
        """The next eligible group head (docs/model.md, "Fair queue" + 4.4 + 4.5) and the resources it borrows."""
        hard_heads = self._hard_heads()
        if not hard_heads:
            return None
        pressure_of = self.request_pressure
        if pressure_of is None:  # the common case: first borrow-eligible head in (tag, seq) order
            head_weights: list[int] | None = None
            weight1 = self._weight1
            for gen in hard_heads:
                if gen.admitted_limit is None:
                    return gen.index, ()
                if head_weights is None:
                    head_weights = self._head_weights(hard_heads)
                ok, borrowed, _ = self._borrow(gen, head_weights, weight1[gen.index])
                if ok:
                    return gen.index, borrowed
            return None

        decisions: dict[int, tuple[bool, tuple[int, ...]]] = {}
        weights = self._head_weights(hard_heads)

        def eligible(gen: Generator) -> tuple[bool, tuple[int, ...]]:
            cached = decisions.get(gen.index)
            if cached is None:
                ok, borrowed, _ = self._borrow(gen, weights, self._weight1[gen.index])
                cached = decisions[gen.index] = (ok, borrowed)
            return cached

        pressure_of = self.request_pressure
        for gen in hard_heads:  # already in (tag, seq) order
            ok, borrowed = eligible(gen)
            if not ok:
                continue
            if pressure_of is not None and gen.request_key is not None and pressure_of(gen) is not None:
                open_peer = any(
                    other.index != gen.index
                    and eligible(other)[0]
                    and (other.request_key is None or pressure_of(other) is None)
                    for other in hard_heads
                )
                if open_peer:
                    self.advisory_skips += 1
                    continue
            return gen.index, borrowed
        return None

    # -- leases --------------------------------------------------------------------------------

    def lease(self, g: int, borrowed: tuple[int, ...]) -> Task:
        """Take the lease for group ``g``'s head and commit the queue selection."""
        gen = self.generators[g]
        held, debt = self.held[g], self.debt[g]
        for r in gen.resources:
            self.leased[r] += 1
            if self.leased[r] > self.max_leased[r]:
                self.max_leased[r] = self.leased[r]
            held[r] += 1
            self.queued_demand[r] -= 1
        for r in borrowed:
            debt[r] += 1
        self.queued_by_group[g] -= 1
        return self.queue.commit(g)

    def release(self, task: Task) -> None:
        gen = task.gen
        held, debt = self.held[gen.index], self.debt[gen.index]
        for r in gen.resources:
            self.leased[r] -= 1
            held[r] -= 1
            if debt[r] > 0:
                debt[r] -= 1

    def leases_outstanding(self) -> int:
        return sum(self.leased)
