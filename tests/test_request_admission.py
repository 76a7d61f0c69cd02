"""Per-endpoint AIMD request admission (docs/model.md, "Request-pressure advisory", 4.7): sim/request_admission.py.

Each test drives a real ``simpy.Environment`` and one :class:`RequestAdmission`; time is advanced
with ``env.run(until=...)`` and leases are released by hand with their outcome.
"""

from __future__ import annotations

import pytest
import simpy

from sim.request_admission import RATE_LIMITED, SUCCESS, RequestAdmission, RequestLease, RequestResource
from sim.scenario import RequestAdmissionConfig
from sim.workload import RequestKey

CHAT = RequestKey("p", "m", "chat")
EMBED = RequestKey("p", "m", "embedding")


class Ticket:
    """A pending or granted acquire: ``lease`` and ``granted_at`` are set by the grant callback."""

    def __init__(self, harness: Harness, name: str) -> None:
        self.harness = harness
        self.name = name
        self.lease: RequestLease | None = None
        self.granted_at: float | None = None

    def __call__(self, lease: RequestLease) -> None:
        self.lease = lease
        self.granted_at = self.harness.env.now
        if self.name:
            self.harness.grants.append(self.name)


class Harness:
    def __init__(
        self, caps: dict[str, int] | None = None, keys: tuple[RequestKey, ...] = (CHAT,), **config: float
    ) -> None:
        self.env = simpy.Environment()
        self.ra = RequestAdmission(self.env, RequestAdmissionConfig(**config), keys, caps or {"p/m": 4})
        self.grants: list[str] = []

    def res(self, key: RequestKey = CHAT) -> RequestResource:
        return self.ra.by_key[key]

    def acquire(self, key: RequestKey = CHAT, name: str = "") -> Ticket:
        ticket = Ticket(self, name)
        lease = self.ra.acquire(self.res(key), ticket)
        if lease is not None:  # granted at once: acquire returns it instead of calling back
            ticket(lease)
        return ticket

    def grab(self, key: RequestKey = CHAT) -> RequestLease:
        """Acquire a lease that must be granted at once."""
        ticket = self.acquire(key)
        assert ticket.lease is not None, self.ra.denial(self.res(key))
        return ticket.lease

    def at(self, t: float) -> Harness:
        """Advance to ``t``; events scheduled exactly at ``t`` are not processed yet."""
        if t > self.env.now:
            self.env.run(until=t)
        return self

    def succeed(self, n: int, key: RequestKey = CHAT) -> None:
        for _ in range(n):
            self.ra.release(self.grab(key), SUCCESS)

    def rate_limit(self, key: RequestKey = CHAT, retry_after: float = 0.0) -> None:
        self.ra.release(self.grab(key), RATE_LIMITED, retry_after)


# -- initial state and admit test --------------------------------------------------------------


def test_limit_starts_at_the_static_cap() -> None:
    h = Harness({"p/m": 6})
    r = h.res()
    assert (r.effective_max, r.current_limit, r.in_flight, r.blocked_until, r.ramp_active) == (6, 6, 0, 0.0, False)
    leases = [h.grab() for _ in range(6)]
    assert [lease.recorded_limit for lease in leases] == [6] * 6
    assert (r.in_flight, h.ra.aggregate["p/m"], h.ra.denial(r)) == (6, 6, "no_capacity")


def test_cooldown_denial_comes_before_capacity() -> None:
    h = Harness({"p/m": 2})
    r = h.res()
    first, second = h.grab(), h.grab()
    h.ra.release(first, RATE_LIMITED)  # limit 2 -> 1, in flight 1: both rules would deny
    assert (r.current_limit, r.in_flight, r.blocked_until) == (1, 1, 2.0)
    assert h.ra.denial(r) == "cooldown"
    h.at(2.0)
    assert h.ra.denial(r) == "no_capacity"
    h.ra.release(second, SUCCESS)
    assert h.ra.denial(r) is None


def test_capacity_uses_the_current_limit() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.rate_limit()  # 4 -> 3
    h.at(2.0)
    leases = [h.grab() for _ in range(3)]
    assert [lease.recorded_limit for lease in leases] == [3, 3, 3]
    assert (r.in_flight, h.ra.aggregate["p/m"], h.ra.denial(r)) == (3, 3, "no_capacity")


def test_aggregate_cap_is_shared_across_domains() -> None:
    other = RequestKey("q", "z", "chat")
    h = Harness({"p/m": 2, "q/z": 1}, keys=(CHAT, EMBED, other))
    chat_leases = [h.grab(CHAT), h.grab(CHAT)]
    embed = h.res(EMBED)
    assert (embed.in_flight, embed.current_limit) == (0, 2)
    assert h.ra.denial(embed) == "no_capacity"  # the provider/model aggregate is full
    assert h.ra.denial(h.res(other)) is None  # another provider/model is unaffected
    ticket = h.acquire(EMBED, "embed")
    assert ticket.lease is None and embed.waiters == 1
    h.ra.release(chat_leases[0], SUCCESS)
    assert ticket.lease is not None and ticket.lease.resource is embed
    assert (h.res(CHAT).in_flight, embed.in_flight, h.ra.aggregate["p/m"], embed.waiters) == (1, 1, 2, 0)


# -- release: rate_limited ----------------------------------------------------------------------


def test_rate_limited_uses_retry_after() -> None:
    h = Harness()
    r = h.res()
    lease = h.grab()
    h.at(1.0)
    h.ra.release(lease, RATE_LIMITED, retry_after=5.0)
    assert (r.blocked_until, r.current_limit, r.rate_limit_ceiling) == (6.0, 3, 4)
    assert (r.consecutive_rate_limits, r.success_streak, r.in_flight, h.ra.aggregate["p/m"]) == (1, 0, 0, 0)
    assert h.ra.cooldown_remaining(r) == 5.0
    assert h.ra.denial(r) == "cooldown"


@pytest.mark.parametrize(("config", "expected_until"), [({}, 3.0), ({"cooldown_seconds": 3.5}, 4.5)])
def test_rate_limited_without_retry_after_uses_cooldown_seconds(config: dict, expected_until: float) -> None:
    h = Harness(**config).at(1.0)
    h.rate_limit(retry_after=0.0)
    assert h.res().blocked_until == expected_until


def test_each_429_overwrites_blocked_until() -> None:
    h = Harness()
    r = h.res()
    first, second = h.grab(), h.grab()
    h.ra.release(first, RATE_LIMITED, retry_after=10.0)
    assert r.blocked_until == 10.0
    h.at(1.0)
    h.ra.release(second, RATE_LIMITED)  # shorter cooldown replaces the longer one
    assert r.blocked_until == 3.0
    assert r.consecutive_rate_limits == 2


def test_burst_of_429s_from_old_limit_decreases_once_but_renews_cooldown() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    leases = [h.grab() for _ in range(4)]  # all recorded at limit 4
    for i, lease in enumerate(leases):
        h.at(0.5 * (i + 1))
        h.ra.release(lease, RATE_LIMITED)
        assert r.blocked_until == 0.5 * (i + 1) + 2.0
    assert (r.current_limit, r.decreases, r.consecutive_rate_limits, r.rate_limit_ceiling) == (3, 1, 4, 4)


def test_decrease_floors_to_minimum_one_and_ceiling_is_set_once() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    limits = []
    for _ in range(4):
        h.at(r.blocked_until)
        h.rate_limit()
        limits.append(r.current_limit)
        assert r.rate_limit_ceiling == 4
    assert limits == [3, 2, 1, 1]  # floor(4*.75), floor(3*.75), floor(2*.75), max(1, floor(.75))
    assert r.consecutive_rate_limits == 4


def test_lease_recorded_below_current_limit_still_decreases() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.rate_limit()  # 4 -> 3
    h.at(r.blocked_until)
    h.rate_limit()  # 3 -> 2
    h.at(r.blocked_until)
    held = h.grab()
    assert held.recorded_limit == 2
    h.succeed(25)  # +1 -> 3 while `held` is out
    assert r.current_limit == 3
    h.ra.release(held, RATE_LIMITED)  # recorded 2 <= 3: decrease
    assert r.current_limit == 2


def test_rate_limit_resets_success_streak() -> None:
    h = Harness()
    r = h.res()
    h.succeed(10)
    assert r.success_streak == 10
    h.rate_limit()
    assert (r.success_streak, r.consecutive_rate_limits) == (0, 1)


# -- release: success ---------------------------------------------------------------------------


def test_additive_increase_per_25_successes_outside_cooldown_capped_at_max() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.rate_limit()  # limit 3, blocked until 2.0
    h.at(2.0)  # now == blocked_until counts as outside cooldown
    h.succeed(1)
    assert (r.consecutive_rate_limits, r.success_streak) == (0, 1)
    h.succeed(23)
    assert (r.current_limit, r.success_streak) == (3, 24)
    h.succeed(1)
    assert (r.current_limit, r.success_streak, r.increases) == (4, 0, 1)
    h.succeed(25)
    assert (r.current_limit, r.success_streak, r.increases) == (4, 0, 1)


def test_success_during_cooldown_does_not_count_and_resets_consecutive_only_when_idle() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.succeed(5)
    leases = [h.grab() for _ in range(3)]
    h.ra.release(leases[0], RATE_LIMITED)  # limit 3, blocked until 2.0
    h.at(0.5)
    h.ra.release(leases[1], SUCCESS)
    assert (r.success_streak, r.consecutive_rate_limits, r.in_flight, r.current_limit) == (0, 1, 1, 3)
    h.at(1.0)
    h.ra.release(leases[2], SUCCESS)
    assert (r.success_streak, r.consecutive_rate_limits, r.in_flight, r.current_limit) == (0, 0, 0, 3)


# -- release: other outcomes --------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["provider_failure", "provider_timeout", "unexpected_exception"])
def test_provider_failures_change_no_limit_and_reset_consecutive_when_idle(outcome: str) -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.succeed(5)
    leases = [h.grab() for _ in range(3)]
    h.ra.release(leases[0], RATE_LIMITED)
    h.at(2.0)
    h.succeed(1)  # outside cooldown: consecutive 0, streak 1
    h.rate_limit()  # consecutive 1, limit 2, blocked until 4.0
    state = (r.current_limit, r.blocked_until, r.success_streak)
    h.ra.release(leases[1], outcome)
    assert (r.consecutive_rate_limits, r.in_flight) == (1, 1)
    h.ra.release(leases[2], outcome)
    assert (r.consecutive_rate_limits, r.in_flight, h.ra.aggregate["p/m"]) == (0, 0, 0)
    assert (r.current_limit, r.blocked_until, r.success_streak) == state


def test_provider_failure_outside_cooldown_keeps_success_streak() -> None:
    h = Harness()
    r = h.res()
    h.succeed(5)
    h.ra.release(h.grab(), "provider_failure")
    assert (r.success_streak, r.current_limit) == (5, 4)


@pytest.mark.parametrize("outcome", ["local_cancelled", "local_timeout"])
def test_local_outcomes_only_release_capacity(outcome: str) -> None:
    h = Harness({"p/m": 1})
    r = h.res()
    h.succeed(3)
    lease = h.grab()
    waiter = h.acquire(name="w")
    h.ra.release(lease, outcome)
    assert waiter.lease is not None and waiter.granted_at == 0.0
    assert (r.current_limit, r.blocked_until, r.success_streak, h.ra.aggregate["p/m"]) == (1, 0.0, 3, 1)


@pytest.mark.parametrize("outcome", ["local_cancelled", "local_timeout"])
def test_local_outcomes_keep_consecutive_rate_limits(outcome: str) -> None:
    h = Harness()
    r = h.res()
    first, second = h.grab(), h.grab()
    h.ra.release(first, RATE_LIMITED)
    h.ra.release(second, outcome)
    assert (r.in_flight, r.consecutive_rate_limits) == (0, 1)


# -- startup ramp -------------------------------------------------------------------------------


def test_startup_ramp_limit_formula() -> None:
    h = Harness({"p/m": 5}, startup_ramp_seconds=10.0)
    r = h.res()
    assert (r.ramp_active, r.current_limit) == (True, 1)
    seen = []
    for t in (0.0, 2.49, 2.5, 5.0, 7.5, 9.99):
        h.at(t)
        seen.append(h.ra.limit(r))
    assert seen == [1, 1, 2, 3, 4, 4]  # 1 + floor(4 * t / 10)
    h.at(10.0)
    assert (h.ra.limit(r), r.ramp_active) == (5, False)


def test_no_ramp_when_the_cap_is_one() -> None:
    r = Harness({"p/m": 1}, startup_ramp_seconds=10.0).res()
    assert (r.ramp_active, r.current_limit) == (False, 1)


def test_success_during_ramp_follows_ramp_without_additive_increase() -> None:
    h = Harness({"p/m": 5}, startup_ramp_seconds=10.0).at(5.0)
    r = h.res()
    h.succeed(30)
    assert (r.current_limit, r.success_streak, r.increases, r.ramp_active) == (3, 0, 0, True)
    h.at(10.0)
    h.succeed(1)  # ramp over at grant time: back to the initial limit, and successes count again
    assert (r.current_limit, r.success_streak, r.ramp_active) == (5, 1, False)


def test_first_429_cancels_ramp() -> None:
    h = Harness({"p/m": 5}, startup_ramp_seconds=10.0).at(5.0)
    r = h.res()
    lease = h.grab()
    assert lease.recorded_limit == 3
    h.ra.release(lease, RATE_LIMITED)
    assert (r.ramp_active, r.current_limit) == (False, 2)
    h.at(20.0)
    assert h.ra.limit(r) == 2


def test_ramp_waiter_granted_when_ramp_allows() -> None:
    h = Harness({"p/m": 5}, startup_ramp_seconds=10.0)
    h.grab()
    waiter = h.acquire(name="w")
    h.at(2.4)
    assert waiter.lease is None
    h.at(3.0)
    assert waiter.granted_at == pytest.approx(2.5, abs=0.051)  # 0.05 s polling during the ramp
    assert waiter.lease.recorded_limit == 2


# -- waiters ------------------------------------------------------------------------------------


def test_waiters_fifo_within_a_resource_granted_at_release() -> None:
    h = Harness({"p/m": 1})
    r = h.res()
    holder = h.grab()
    tickets = [h.acquire(name=f"w{i}") for i in range(3)]
    assert (r.waiters, h.ra.total_waiters, h.ra.max_waiters[r.index]) == (3, 3, 3)
    for i, ticket in enumerate(tickets):
        h.at(float(i + 1))
        h.ra.release(holder, SUCCESS)
        assert h.grants == [f"w{j}" for j in range(i + 1)]
        assert ticket.granted_at == float(i + 1)
        holder = ticket.lease
    assert (r.waiters, h.ra.total_waiters) == (0, 0)


def test_new_acquire_queues_behind_existing_waiters() -> None:
    h = Harness({"p/m": 1})
    holder = h.grab()
    first = h.acquire(name="first")
    h.ra.release(holder, SUCCESS)
    second = h.acquire(name="second")  # capacity is taken by `first` already
    assert (first.lease is not None, second.lease is None) == (True, True)


def test_new_acquire_at_cooldown_end_queues_behind_waiter() -> None:
    h = Harness({"p/m": 1}).at(1.0)
    h.rate_limit(retry_after=2.5)
    first = h.acquire(name="first")
    h.at(3.5)  # cooldown over, but the wake-up at 3.5 has not run yet
    assert h.ra.denial(h.res()) is None and first.lease is None
    late = h.acquire(name="late")
    h.at(4.0)
    assert (first.granted_at, late.lease, h.grants) == (3.5, None, ["first"])


def test_waiters_round_robin_across_resources() -> None:
    h = Harness({"p/m": 1}, keys=(CHAT, EMBED))
    holder = h.grab(CHAT)
    tickets = {f"chat{i}": h.acquire(CHAT, f"chat{i}") for i in range(3)}
    tickets |= {f"embed{i}": h.acquire(EMBED, f"embed{i}") for i in range(2)}
    for _ in range(5):
        h.ra.release(holder, SUCCESS)
        holder = tickets[h.grants[-1]].lease
    assert h.grants == ["chat0", "embed0", "chat1", "embed1", "chat2"]


def test_waiter_granted_exactly_at_blocked_until() -> None:
    h = Harness({"p/m": 1}).at(1.0)
    h.rate_limit(retry_after=2.5)
    waiter = h.acquire(name="w")
    assert waiter.lease is None and h.res().waiters == 1
    h.at(3.5)  # the run stops before events scheduled at 3.5 are processed
    assert waiter.lease is None
    h.at(4.0)
    assert waiter.granted_at == 3.5
    assert h.res().waiters == 0


def test_renewed_cooldown_postpones_the_grant() -> None:
    h = Harness({"p/m": 2})
    first, second = h.grab(), h.grab()
    h.ra.release(first, RATE_LIMITED, retry_after=1.0)  # blocked until 1.0, limit 1
    waiter = h.acquire(name="w")
    h.at(0.5)
    h.ra.release(second, RATE_LIMITED, retry_after=2.0)  # blocked until 2.5
    h.at(2.0)
    assert waiter.lease is None
    h.at(3.0)
    assert waiter.granted_at == 2.5


# -- pressure (advisory) ------------------------------------------------------------------------


def test_pressure_none_when_idle() -> None:
    h = Harness()
    assert h.ra.pressure(h.res()) is None


def test_pressure_aggregate_cap_first() -> None:
    h = Harness({"p/m": 2}, keys=(CHAT, EMBED))
    chat = h.res(CHAT)
    first, _second = h.grab(CHAT), h.grab(CHAT)
    h.ra.release(first, RATE_LIMITED)  # chat cooling, aggregate 1 of 2
    assert h.ra.pressure(chat) == "cooldown"
    h.grab(EMBED)  # aggregate 2 of 2
    assert h.ra.pressure(chat) == "provider_model_aggregate_cap"


def test_pressure_cooldown_before_waiters() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.rate_limit()
    h.acquire(name="w")
    assert (r.waiters, h.ra.pressure(r)) == (1, "cooldown")


def test_pressure_waiters_before_resource_limit() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    for _ in range(2):  # limit 4 -> 3 -> 2
        h.at(r.blocked_until)
        h.rate_limit()
    h.at(r.blocked_until)
    h.grab()
    h.grab()
    h.acquire(name="w")  # in flight 2 = limit 2: waits
    assert (r.in_flight, r.current_limit, r.waiters, h.ra.aggregate["p/m"]) == (2, 2, 1, 2)
    assert h.ra.pressure(r) == "waiters"


def test_pressure_resource_limit_last() -> None:
    h = Harness({"p/m": 4})
    r = h.res()
    h.rate_limit()  # limit 3
    h.at(r.blocked_until)
    for _ in range(3):
        h.grab()
    assert (r.in_flight, r.waiters, h.ra.aggregate["p/m"]) == (3, 0, 3)
    assert h.ra.pressure(r) == "resource_limit"


def test_acquire_returns_an_immediate_lease_and_calls_back_only_after_a_wait() -> None:
    h = Harness({"p/m": 1})
    calls: list[RequestLease] = []
    first = h.ra.acquire(h.res(), calls.append)
    assert first is not None and calls == [] and h.res().waiters == 0
    assert h.ra.acquire(h.res(), calls.append) is None and h.res().waiters == 1
    h.ra.release(first, SUCCESS)
    assert len(calls) == 1 and calls[0].resource is h.res()
