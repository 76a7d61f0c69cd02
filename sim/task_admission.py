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


#: A bounded-borrow plan of one group: per resource it requests, (resource, strict share,
#: pressured, borrow ceiling); pure in the group and the set of hard-eligible heads.
Plan = tuple[tuple[int, int, bool, int], ...]

#: What :meth:`TaskAdmission._check` finds (the denial reasons of :meth:`TaskAdmission.borrow_check`)
_OK, _BORROW_DEBT, _GROUP_CAP = 0, 1, 2
_DENIALS = ("", "borrow_debt", "group_cap")


class TaskAdmission:
    """Resource ledger, borrow debt and the ready queue of one scheduler.

    The limits and the reserve fraction are fixed for the object's life: borrow plans are
    memoised on that.
    """

    def __init__(
        self,
        workload: Workload,
        reserve_fraction: float = 0.0,
        request_pressure: Callable[[Generator], str | None] | None = None,
    ) -> None:
        self.workload = workload
        self.generators: tuple[Generator, ...] = workload.generators
        self.limits: list[int] = list(workload.resource_limits)
        self.leased: list[int] = [0] * len(self.limits)
        self.max_leased: list[int] = [0] * len(self.limits)
        n_gen = len(self.generators)
        self.held: list[list[int]] = [[0] * len(self.limits) for _ in range(n_gen)]
        self.debt: list[list[int]] = [[0] * len(self.limits) for _ in range(n_gen)]
        self.queue: FairQueue[int, Task] = FairQueue()
        self.queued_demand: list[int] = [0] * len(self.limits)
        self.queued_by_group: list[int] = [0] * n_gen
        self.reserve_fraction: float = reserve_fraction
        self.request_pressure = request_pressure
        self.advisory_skips = 0
        self.submission: int = workload.resource_index[SUBMISSION]
        self.llm_wait: int = workload.resource_index[LLM_WAIT]
        # Resources that count for borrow pressure: typed ones; submission only if alone.
        self._pressure_resources: list[tuple[int, ...]] = [
            tuple(r for r in g.resources if r != self.submission) or g.resources for g in self.generators
        ]
        #: a group's weight as it counts for competitors (at least 1)
        self._weight1: list[int] = [max(1, g.weight) for g in self.generators]
        # Per group, plain lists of what the hot path reads, so that it touches no Generator.
        self._resources: list[tuple[int, ...]] = [g.resources for g in self.generators]
        self._bounded: list[bool] = [g.admitted_limit is not None for g in self.generators]
        self._queue_weight: list[float] = [float(g.weight) for g in self.generators]
        #: per group, its borrow plan by the bit mask of the hard-eligible heads' groups
        self._plans: list[dict[int, Plan]] = [{} for _ in range(n_gen)]
        #: the resources the last :meth:`_check` or :meth:`_pick` found borrowed
        self._borrowed: tuple[int, ...] = ()

    # -- queue ---------------------------------------------------------------------------------

    def push(self, task: Task) -> None:
        g: int = task.gen.index
        self.queue.push(g, task, self._queue_weight[g])
        self.queued_by_group[g] += 1
        demand = self.queued_demand
        for r in self._resources[g]:
            demand[r] += 1

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
        if gen.admitted_limit is None:
            return True, (), ""
        heads = [h.index for h in hard_heads]
        own = self._weight1[gen.index] if gen.index in heads else 0
        code = self._check(gen.index, self._plan(gen.index, heads, own))
        return code == _OK, self._borrowed if code == _OK else (), _DENIALS[code]

    def _head_weights(self, heads: list[int]) -> list[int]:
        """Per resource, the summed weight (at least 1 each) of the hard-eligible heads requesting it.

        A head's competitors on ``r`` are this total minus its own weight.
        """
        totals = [0] * len(self.limits)
        weight1 = self._weight1
        resources = self._resources
        for h in heads:
            w = weight1[h]
            for r in resources[h]:
                totals[r] += w
        return totals

    def _plan(self, g: int, heads: list[int], own: int) -> Plan:
        """Group ``g``'s (resource, strict share, pressured, borrow ceiling) on each resource it
        requests, against the hard-eligible ``heads`` (``own`` = g's weight if it is one of them)."""
        gen = self.generators[g]
        weights = self._head_weights(heads)
        plan: list[tuple[int, int, bool, int]] = []
        for r in gen.resources:
            competitors_weight = weights[r] - own
            share = self._strict_share(gen, r, competitors_weight)
            pressured = competitors_weight > 0 and r in self._pressure_resources[g]
            limit = self.limits[r]
            ceiling = max(0, (limit - self._reserved(limit)) - share)
            plan.append((r, share, pressured, ceiling))
        return tuple(plan)

    def _check(self, g: int, plan: Plan) -> int:
        """Bounded borrow for one more task of bounded group ``g`` (docs/model.md, "Bounded
        borrow"): ``_OK`` (the resources borrowed left in ``_borrowed``) or the denial."""
        held, debt = self.held[g], self.debt[g]
        borrowed: tuple[int, ...] = ()
        for r, share, pressured, ceiling in plan:
            projected = held[r] + 1
            if pressured:
                if debt[r] > 0:
                    return _BORROW_DEBT
                if projected > share:
                    return _GROUP_CAP
            elif projected > share:
                if debt[r] + 1 > ceiling:
                    return _BORROW_DEBT
                borrowed += (r,)
        self._borrowed = borrowed
        return _OK

    def _hard_heads(self) -> list[Generator]:
        """The generators whose queued head is hard-eligible now, in service order."""
        gens = self.generators
        return [gens[g] for g in self._hard_head_indices()[0]]

    def _hard_head_indices(self) -> tuple[list[int], int]:
        """The groups whose queued head is hard-eligible now, in service order, and their bit mask."""
        limits, leased = self.limits, self.leased
        resources = self._resources
        heads: list[int] = []
        mask = 0
        for g in self.queue.order:
            for r in resources[g]:
                if leased[r] >= limits[r]:
                    break
            else:
                heads.append(g)
                mask |= 1 << g
        return heads, mask

    def _pick(self) -> int:
        """Without the advisory: the first hard-eligible head that bounded borrow allows, in
        ``(tag, seq)`` order (the resources it borrows left in ``_borrowed``), or -1."""
        heads, mask = self._hard_head_indices()
        bounded = self._bounded
        plans = self._plans
        weight1 = self._weight1
        for g in heads:
            if not bounded[g]:
                self._borrowed = ()
                return g
            by_mask = plans[g]
            plan = by_mask.get(mask)
            if plan is None:
                plan = by_mask[mask] = self._plan(g, heads, weight1[g])
            if self._check(g, plan) == _OK:
                return g
        return -1

    def select(self) -> tuple[int, tuple[int, ...]] | None:
        """The next eligible group head (docs/model.md, "Fair queue" + 4.4 + 4.5) and the resources it borrows."""
        if self.request_pressure is None:  # the common case: first borrow-eligible head in (tag, seq) order
            g = self._pick()
            return None if g < 0 else (g, self._borrowed)
        return self._select_advised()

    def lease_next(self) -> Task | None:
        """``select()`` and, if it found a head, ``lease()`` it: the same task, in one call."""
        if self.request_pressure is None:
            g = self._pick()
            return None if g < 0 else self.lease(g, self._borrowed)
        selection = self._select_advised()
        return None if selection is None else self.lease(selection[0], selection[1])

    def _select_advised(self) -> tuple[int, tuple[int, ...]] | None:
        """:meth:`select` with the request-pressure advisory (docs/model.md "Request-pressure advisory")."""
        pressure_of = self.request_pressure
        assert pressure_of is not None
        heads, mask = self._hard_head_indices()
        if not heads:
            return None
        gens = self.generators
        decisions: dict[int, tuple[bool, tuple[int, ...]]] = {}

        def eligible(g: int) -> tuple[bool, tuple[int, ...]]:
            cached = decisions.get(g)
            if cached is None:
                if not self._bounded[g]:
                    cached = (True, ())
                else:
                    by_mask = self._plans[g]
                    plan = by_mask.get(mask)
                    if plan is None:
                        plan = by_mask[mask] = self._plan(g, heads, self._weight1[g])
                    ok = self._check(g, plan) == _OK
                    cached = (ok, self._borrowed if ok else ())
                decisions[g] = cached
            return cached

        for g in heads:  # already in (tag, seq) order
            ok, borrowed = eligible(g)
            if not ok:
                continue
            gen = gens[g]
            if gen.request_key is not None and pressure_of(gen) is not None:
                open_peer = any(
                    other != g
                    and eligible(other)[0]
                    and (gens[other].request_key is None or pressure_of(gens[other]) is None)
                    for other in heads
                )
                if open_peer:
                    self.advisory_skips += 1
                    continue
            return g, borrowed
        return None

    # -- leases --------------------------------------------------------------------------------

    def lease(self, g: int, borrowed: tuple[int, ...]) -> Task:
        """Take the lease for group ``g``'s head and commit the queue selection."""
        leased, max_leased, demand = self.leased, self.max_leased, self.queued_demand
        held = self.held[g]
        for r in self._resources[g]:
            n = leased[r] + 1
            leased[r] = n
            if n > max_leased[r]:
                max_leased[r] = n
            held[r] += 1
            demand[r] -= 1
        if borrowed:
            debt = self.debt[g]
            for r in borrowed:
                debt[r] += 1
        self.queued_by_group[g] -= 1
        return self.queue.commit(g)

    def release(self, task: Task) -> None:
        g: int = task.gen.index
        held, debt = self.held[g], self.debt[g]
        leased = self.leased
        for r in self._resources[g]:
            leased[r] -= 1
            held[r] -= 1
            if debt[r] > 0:
                debt[r] -= 1

    def leases_outstanding(self) -> int:
        return sum(self.leased)
