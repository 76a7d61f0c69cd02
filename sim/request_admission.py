"""May this model call go out now? Per-(provider, model, domain) AIMD admission (docs/model.md, "Request admission").

State per request resource: ``current_limit`` (starts at the cap), ``in_flight``,
``blocked_until`` (cooldown), ``success_streak``. A 429 release cuts the limit by the decrease
factor (floor, minimum 1) only if the lease was granted at a limit <= the current one, and always
renews the cooldown (Retry-After or ``cooldown_seconds``). Successes count toward the additive
increase only outside cooldown. An aggregate in-flight cap per provider/model applies across
domains. Waiters queue round robin across resources (the fair queue with weight 1), FIFO within
one, and are granted at every release and when a cooldown ends.

Fidelity: the real waiters poll every 0.05 s; here they are woken exactly at releases and at
``blocked_until`` (docs/model.md "What is left out"). During a startup ramp they are polled every 0.05 s, as in reality.

This module knows nothing about the DAG, tasks or row groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import simpy

from .fair_queue import FairQueue
from .scenario import RequestAdmissionConfig
from .workload import RequestKey

RAMP_POLL_SECONDS = 0.05

SUCCESS = "success"
RATE_LIMITED = "rate_limited"
#: Outcomes that leave the limit alone but end a run of 429s once nothing is in flight (docs/model.md "Request
#: admission").
PROVIDER_FAILURES = frozenset({"provider_failure", "provider_timeout", "unexpected_exception"})


class RequestObserver(Protocol):
    """Receives state changes (the metrics recorder implements it)."""

    def request_state(self, resource: int, in_flight: int, limit: int, blocked_until: float) -> None: ...


class RequestResource:
    """AIMD state of one request resource key."""

    __slots__ = (
        "index",
        "key",
        "provider_model",
        "static_cap",
        "aggregate_index",
        "effective_max",
        "initial_limit",
        "current_limit",
        "in_flight",
        "blocked_until",
        "success_streak",
        "waiters",
        "rate_limit_ceiling",
        "consecutive_rate_limits",
        "last_outcome",
        "ramp_active",
        "rate_limited_total",
        "decreases",
        "increases",
    )

    def __init__(
        self,
        index: int,
        key: RequestKey,
        effective_max: int,
        ramp: bool,
        static_cap: int | None = None,
        aggregate_index: int = 0,
    ) -> None:
        self.index: int = index
        self.key: RequestKey = key
        self.provider_model: str = key.provider_model
        #: the provider/model's aggregate in-flight cap (``RequestAdmission.static_caps``)
        self.static_cap: int = effective_max if static_cap is None else static_cap
        #: where its provider/model's in-flight count sits in ``RequestAdmission._aggregate``
        self.aggregate_index: int = aggregate_index
        self.effective_max: int = effective_max
        self.initial_limit: int = effective_max
        self.current_limit: int = 1 if ramp else effective_max
        self.in_flight: int = 0
        self.blocked_until: float = 0.0
        self.success_streak: int = 0
        self.waiters: int = 0
        self.rate_limit_ceiling: int = 0
        self.consecutive_rate_limits: int = 0
        self.last_outcome: str = ""
        self.ramp_active: bool = ramp
        self.rate_limited_total: int = 0
        self.decreases: int = 0
        self.increases: int = 0


class RequestLease:
    """One granted request slot; remembers the limit in force when it was granted."""

    __slots__ = ("resource", "recorded_limit")

    def __init__(self, resource: RequestResource, recorded_limit: int) -> None:
        self.resource: RequestResource = resource
        self.recorded_limit: int = recorded_limit


GrantCallback = Callable[[RequestLease], None]


class RequestAdmission:
    """The AIMD controller over all request resources of a run."""

    def __init__(
        self,
        env: simpy.Environment,
        config: RequestAdmissionConfig,
        keys: Sequence[RequestKey],
        static_caps: dict[str, int],
        observer: RequestObserver | None = None,
    ) -> None:
        self.env = env
        self.config = config
        self.static_caps: dict[str, int] = dict(static_caps)
        ramp = config.startup_ramp_seconds > 0
        #: in-flight calls per provider/model (across domains), in ``static_caps`` order
        self._aggregate_keys: list[str] = list(static_caps)
        self._aggregate: list[int] = [0] * len(self._aggregate_keys)
        slot = {pm: i for i, pm in enumerate(self._aggregate_keys)}
        self.resources: list[RequestResource] = [
            RequestResource(
                i,
                k,
                max(1, static_caps[k.provider_model]),
                ramp and static_caps[k.provider_model] > 1,
                static_caps[k.provider_model],
                slot[k.provider_model],
            )
            for i, k in enumerate(keys)
        ]
        self.by_key: dict[RequestKey, RequestResource] = {r.key: r for r in self.resources}
        self._waiters: FairQueue[int, GrantCallback] = FairQueue()
        self._observer: RequestObserver | None = observer
        self._ramp_poll_scheduled = False
        self.max_waiters: list[int] = [0] * len(self.resources)
        # The configuration, read once into typed fields (the hot path reads these).
        self._ramp_seconds: float = config.startup_ramp_seconds
        self._cooldown_seconds: float = config.cooldown_seconds
        self._decrease_factor: float = config.decrease_factor
        self._increase_step: int = config.increase_step
        self._successes_until_increase: int = config.successes_until_increase

    # -- queries -------------------------------------------------------------------------------

    def limit(self, res: RequestResource) -> int:
        """The limit in force now, following the startup ramp while it is active."""
        if res.ramp_active:
            ramp = self._ramp_seconds
            elapsed: float = self.env.now
            if elapsed >= ramp:
                res.ramp_active = False
                res.current_limit = res.initial_limit
            else:
                res.current_limit = 1 + math.floor((res.initial_limit - 1) * elapsed / ramp)
        return res.current_limit

    def cooldown_remaining(self, res: RequestResource) -> float:
        return max(0.0, res.blocked_until - self.env.now)

    def denial(self, res: RequestResource) -> str | None:
        """Why a request on ``res`` cannot be granted now (``None`` = admissible)."""
        now: float = self.env._now  # SimPy's clock without its property call (the scheduler reads it too)
        if now < res.blocked_until:
            return "cooldown"
        limit = self.limit(res) if res.ramp_active else res.current_limit
        if res.in_flight >= min(limit, res.effective_max):
            return "no_capacity"
        if self._aggregate[res.aggregate_index] >= res.static_cap:
            return "no_capacity"
        return None

    def pressure(self, res: RequestResource) -> str | None:
        """Request-pressure reason for the advisory (docs/model.md "Request-pressure advisory"), in the documented
        order."""
        pm = res.provider_model
        if self._aggregate[res.aggregate_index] >= self.static_caps[pm]:
            return "provider_model_aggregate_cap"
        if self.cooldown_remaining(res) > 0:
            return "cooldown"
        if res.waiters > 0:
            return "waiters"
        limit = self.limit(res)
        if limit > 0 and res.in_flight >= limit:
            return "resource_limit"
        return None

    @property
    def aggregate(self) -> dict[str, int]:
        """In-flight calls per provider/model across its domains (a snapshot)."""
        return dict(zip(self._aggregate_keys, self._aggregate, strict=True))

    @property
    def total_waiters(self) -> int:
        return len(self._waiters)

    @property
    def total_in_flight(self) -> int:
        return sum(r.in_flight for r in self.resources)

    # -- acquire / release ---------------------------------------------------------------------

    def acquire(self, res: RequestResource, on_grant: GrantCallback) -> RequestLease | None:
        """Grant now if possible and nobody of this resource waits ahead: return the lease (and do
        not call ``on_grant``). Otherwise join the queue, return None, and call ``on_grant(lease)``
        when the lease is granted later."""
        if res.waiters == 0 and self.denial(res) is None:  # res.waiters = its entries in self._waiters
            return self._grant(res)
        res.waiters += 1
        if res.waiters > self.max_waiters[res.index]:
            self.max_waiters[res.index] = res.waiters
        self._waiters.push(res.index, on_grant, 1.0)
        self._schedule_wakeups(res)
        return None

    def _grant(self, res: RequestResource) -> RequestLease:
        res.in_flight += 1
        self._aggregate[res.aggregate_index] += 1
        self._notify(res)
        return RequestLease(res, res.current_limit)

    def release(self, lease: RequestLease, outcome: str, retry_after: float = 0.0) -> None:
        """Release a lease with its outcome, apply the AIMD update, then grant waiters."""
        res = lease.resource
        now: float = self.env._now  # as in denial()
        res.in_flight -= 1
        self._aggregate[res.aggregate_index] -= 1
        res.last_outcome = outcome
        if outcome == RATE_LIMITED:
            res.rate_limited_total += 1
            res.ramp_active = False
            res.consecutive_rate_limits += 1
            cooldown = retry_after if retry_after > 0 else self._cooldown_seconds
            res.blocked_until = now + cooldown
            res.success_streak = 0
            if lease.recorded_limit <= res.current_limit:
                res.current_limit = max(1, math.floor(res.current_limit * self._decrease_factor))
                res.decreases += 1
                if res.rate_limit_ceiling == 0:
                    res.rate_limit_ceiling = max(1, lease.recorded_limit)
            if cooldown > 0:
                self.env.timeout(cooldown).callbacks.append(lambda _ev: self.grant_waiters())
        elif outcome == SUCCESS:
            if res.ramp_active:
                self.limit(res)
                res.success_streak = 0
            elif now >= res.blocked_until:
                res.consecutive_rate_limits = 0
                res.success_streak += 1
                if res.success_streak >= self._successes_until_increase:
                    if res.current_limit < res.effective_max:
                        res.increases += 1
                    res.current_limit = min(res.effective_max, res.current_limit + self._increase_step)
                    res.success_streak = 0
            elif res.in_flight == 0:
                res.consecutive_rate_limits = 0
        elif outcome in PROVIDER_FAILURES:  # no limit change
            if res.in_flight == 0:
                res.consecutive_rate_limits = 0
        # local_cancelled / local_timeout: capacity only
        self._notify(res)
        self.grant_waiters()

    def grant_waiters(self) -> None:
        """Grant the first eligible waiter in queue order until none is eligible."""
        queue = self._waiters
        if not queue:  # the common case at a release: nobody waits
            return
        resources = self.resources
        admissible = self._admissible
        while queue:
            idx = queue.select(admissible)
            if idx is None:
                break
            on_grant = queue.commit(idx)
            res = resources[idx]
            res.waiters -= 1
            on_grant(self._grant(res))

    def _admissible(self, index: int, _on_grant: GrantCallback) -> bool:
        """Waiter predicate for the fair queue (a method, not a lambda built per grant pass)."""
        return self.denial(self.resources[index]) is None

    def _schedule_wakeups(self, res: RequestResource) -> None:
        # Cooldown ends are already scheduled at each 429; only the ramp needs polling.
        if res.ramp_active and not self._ramp_poll_scheduled:
            self._ramp_poll_scheduled = True
            self.env.timeout(RAMP_POLL_SECONDS).callbacks.append(self._ramp_poll)

    def _ramp_poll(self, _ev: simpy.Event) -> None:
        self._ramp_poll_scheduled = False
        self.grant_waiters()
        if self._waiters and any(r.ramp_active and r.waiters for r in self.resources):
            self._ramp_poll_scheduled = True
            self.env.timeout(RAMP_POLL_SECONDS).callbacks.append(self._ramp_poll)

    def _notify(self, res: RequestResource) -> None:
        if self._observer is not None:
            self._observer.request_state(res.index, res.in_flight, res.current_limit, res.blocked_until)
