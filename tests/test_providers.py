"""Endpoint behaviour: 429 patterns, latency, Retry-After, per-provider streams (sim/providers.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.providers import Answer, Provider, build_providers
from sim.scenario import ModelConfig


def provider(rate_limit: dict | None = None, latency: dict | None = None, seed: int = 0, name: str = "m") -> Provider:
    model = ModelConfig(name=name, rate_limit=rate_limit or {}, latency=latency or {"distribution": "constant"})
    return Provider(model, np.random.default_rng(seed))


def limited_at(p: Provider, times) -> list[bool]:
    return [p.is_rate_limited(t) for t in times]


def test_never_and_always() -> None:
    never, always = provider({"pattern": "never"}), provider({"pattern": "always"})
    times = [0.0, 1.0, 1e6]
    assert limited_at(never, times) == [False] * 3
    assert limited_at(always, times) == [True] * 3


def test_window_is_half_open() -> None:
    p = provider({"pattern": "window", "start": 2.0, "end": 5.0})
    assert limited_at(p, [0.0, 1.999, 2.0, 3.0, 4.999, 5.0, 100.0]) == [False, False, True, True, True, False, False]


def test_window_without_end_never_recovers() -> None:
    p = provider({"pattern": "window", "start": 1.0})
    assert limited_at(p, [0.5, 1.0, 1e6]) == [False, True, True]


def test_probability_rate_and_determinism() -> None:
    n = 20_000
    draws = limited_at(provider({"pattern": "probability", "probability": 0.3}, seed=123), [0.0] * n)
    assert abs(sum(draws) / n - 0.3) < 0.015  # ~4.6 standard errors
    again = limited_at(provider({"pattern": "probability", "probability": 0.3}, seed=123), [0.0] * n)
    assert draws == again
    other = limited_at(provider({"pattern": "probability", "probability": 0.3}, seed=124), [0.0] * n)
    assert draws != other
    assert not any(limited_at(provider({"pattern": "probability", "probability": 0.0}), [0.0] * 100))
    assert all(limited_at(provider({"pattern": "probability", "probability": 1.0}), [0.0] * 100))


def test_capacity_burst_then_refill() -> None:
    # 120 rpm = 2 tokens/s, bucket of 4.
    p = provider({"pattern": "capacity", "requests_per_minute": 120, "burst": 4})
    assert limited_at(p, [0.0] * 5) == [False] * 4 + [True]  # the burst, then empty
    assert limited_at(p, [0.25, 0.25]) == [True, True]  # 0.5 token: not enough
    assert limited_at(p, [0.5, 0.5]) == [False, True]  # 1.0 token
    assert limited_at(p, [10.0] * 5) == [False] * 4 + [True]  # refill is capped at the burst


def test_capacity_default_burst_is_one_second_of_tokens() -> None:
    fast = provider({"pattern": "capacity", "requests_per_minute": 240})  # 4/s -> burst 4
    assert limited_at(fast, [0.0] * 5) == [False] * 4 + [True]
    slow = provider({"pattern": "capacity", "requests_per_minute": 30})  # 0.5/s -> burst max(1, 0.5) = 1
    assert limited_at(slow, [0.0, 0.0, 1.0, 2.0]) == [False, True, True, False]


def test_capacity_exact_counts_over_a_timeline() -> None:
    # Calls every 0.25 s for 10 s at 2 tokens/s with a 1-token bucket: every other call is served.
    p = provider({"pattern": "capacity", "requests_per_minute": 120, "burst": 1})
    times = [i * 0.25 for i in range(40)]
    served = [t for t, limited in zip(times, limited_at(p, times), strict=True) if not limited]
    assert served == [i * 0.5 for i in range(20)]
    # 429s do not consume tokens: 10 calls per second at 3 tokens/s, burst 3.
    p = provider({"pattern": "capacity", "requests_per_minute": 180, "burst": 3})
    times = [i * 0.125 for i in range(80)]  # [0, 10)
    n_served = sum(not x for x in limited_at(p, times))
    assert n_served == 3 + 29  # the burst plus 3/s refill over 9.875 s (floor of 29.6)


def test_constant_latency_is_exact() -> None:
    p = provider(latency={"distribution": "constant", "mean": 0.7})
    assert {p.answer(t).latency for t in range(50)} == {0.7}


@pytest.mark.parametrize(
    ("latency", "mean", "tolerance", "std"),
    [
        ({"distribution": "exponential", "mean": 2.0}, 2.0, 0.06, 2.0),
        ({"distribution": "uniform", "low": 1.0, "high": 3.0}, 2.0, 0.02, 2.0 / math.sqrt(12)),
        ({"distribution": "lognormal", "mean": 1.5, "cv": 0.5}, 1.5, 0.03, 0.75),
    ],
)
def test_latency_distribution_moments(latency: dict, mean: float, tolerance: float, std: float) -> None:
    p = provider(latency=latency, seed=7)
    samples = np.array([p.answer(0.0).latency for _ in range(20_000)])
    assert abs(samples.mean() - mean) < tolerance
    assert abs(samples.std() - std) < 0.05 * std + 0.01
    assert samples.min() >= 0.0
    if latency["distribution"] == "uniform":
        assert samples.min() >= 1.0 and samples.max() <= 3.0


@pytest.mark.parametrize(
    ("latency", "scalar"),
    [
        ({"distribution": "exponential", "mean": 2.0}, lambda rng: rng.exponential(2.0)),
        ({"distribution": "uniform", "low": 1.0, "high": 3.0}, lambda rng: rng.uniform(1.0, 3.0)),
        (
            {"distribution": "lognormal", "mean": 1.5, "cv": 0.5},
            lambda rng: rng.lognormal(math.log(1.5) - math.log1p(0.25) / 2.0, math.sqrt(math.log1p(0.25))),
        ),
    ],
)
def test_latencies_drawn_ahead_equal_one_draw_per_call(latency: dict, scalar) -> None:
    """Blocks of 64, 128, ... values: across block boundaries, exactly the scalar stream."""
    p = provider(latency=latency, seed=5)
    rng = np.random.default_rng(5)
    n = 64 + 128 + 256 + 3
    assert [p.answer(0.0).latency for _ in range(n)] == [float(scalar(rng)) for _ in range(n)]


def test_zero_mean_random_latency_is_zero() -> None:
    for dist in ("exponential", "lognormal"):
        assert provider(latency={"distribution": dist, "mean": 0.0}).answer(0.0).latency == 0.0


def test_answer_carries_429_latency_and_retry_after() -> None:
    p = provider(
        {"pattern": "window", "start": 1.0, "end": 2.0, "retry_after": 3.0, "latency": 0.25},
        latency={"distribution": "constant", "mean": 0.5},
    )
    assert p.answer(1.5) == Answer(rate_limited=True, latency=0.25, retry_after=3.0)
    assert p.answer(2.0) == Answer(rate_limited=False, latency=0.5, retry_after=0.0)
    assert provider({"pattern": "always"}).answer(0.0) == Answer(True, 0.0, 0.0)  # no Retry-After header


def _models(*names: str) -> tuple[ModelConfig, ...]:
    return tuple(
        ModelConfig(
            name=n,
            latency={"distribution": "exponential", "mean": 1.0},
            rate_limit={"pattern": "probability", "probability": 0.5},
        )
        for n in names
    )


def _answers(p: Provider, n: int = 200) -> list[Answer]:
    return [p.answer(float(i)) for i in range(n)]


def test_adding_a_provider_leaves_the_others_draws_unchanged() -> None:
    two = build_providers(_models("a", "b"), seed=11)
    three = build_providers(_models("a", "b", "c"), seed=11)
    assert _answers(two["a"]) == _answers(three["a"])
    assert _answers(two["b"]) == _answers(three["b"])


def test_provider_streams_are_independent_and_seeded() -> None:
    ps = build_providers(_models("a", "b"), seed=11)
    solo = build_providers(_models("a", "b"), seed=11)["a"]
    interleaved = []
    for i in range(200):  # calls on b in between must not shift a's draws
        interleaved.append(ps["a"].answer(float(i)))
        ps["b"].answer(float(i))
    assert interleaved == _answers(solo)
    fresh = build_providers(_models("a", "b"), seed=11)
    assert _answers(fresh["a"]) != _answers(fresh["b"])  # same config, distinct streams
    assert _answers(build_providers(_models("a"), seed=12)["a"]) != _answers(
        build_providers(_models("a"), seed=11)["a"]
    )
