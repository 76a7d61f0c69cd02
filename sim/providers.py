"""How an endpoint answers: latency and HTTP 429 behaviour over time and load.

A :class:`Provider` decides, at the instant a call is sent, whether it is served or rate
limited, and how long the answer takes. It knows nothing about tasks or row groups. Each provider
draws from its own ``numpy.random.Generator`` so that adding a provider does not change the
others' draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import numpy as np

from .scenario import LatencyConfig, ModelConfig, RateLimitConfig

#: Sizes of the blocks of latencies drawn ahead: the first, doubling up to the last.
FIRST_BLOCK = 64
LAST_BLOCK = 4096


class Answer:
    """The provider's answer to one call: served or 429, after ``latency`` seconds.

    Immutable (the 429 answer is one shared value). A plain class with ``Final`` fields rather
    than a frozen dataclass: compiled with mypyc its fields are read-only and it is built
    natively, where a frozen dataclass's ``__init__`` goes through ``object.__setattr__`` once
    per field, once per call.
    """

    __slots__ = ("rate_limited", "latency", "retry_after")

    def __init__(self, rate_limited: bool, latency: float, retry_after: float) -> None:
        self.rate_limited: Final = rate_limited
        self.latency: Final = latency
        self.retry_after: Final = retry_after  # 0.0 = no Retry-After header

    def _fields(self) -> tuple[bool, float, float]:
        return (self.rate_limited, self.latency, self.retry_after)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Answer):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Answer(rate_limited={self.rate_limited!r}, latency={self.latency!r}, retry_after={self.retry_after!r})"


class Provider:
    """One model endpoint's behaviour. ``answer(now)`` is called once per outbound call."""

    __slots__ = (
        "name",
        "_latency",
        "_limit",
        "_rng",
        "_tokens",
        "_token_time",
        "_rate",
        "_burst",
        "_draw",
        "_block",
        "_buffer",
        "_next",
        "_block_size",
        "_rate_limited_answer",
        "_pattern",
        "_start",
        "_end",
        "_probability",
    )

    def __init__(self, model: ModelConfig, rng: np.random.Generator) -> None:
        self.name: str = model.name
        self._latency: LatencyConfig = model.latency
        self._limit: RateLimitConfig = model.rate_limit
        self._rng = rng
        # The 429 pattern, read once into typed fields (``answer`` runs once per call).
        self._pattern: str = self._limit.pattern
        self._start: float = self._limit.start
        self._end: float | None = self._limit.end
        self._probability: float = self._limit.probability
        self._rate: float = self._limit.requests_per_minute / 60.0
        self._burst: float = self._limit.burst if self._limit.burst is not None else max(1.0, self._rate)
        self._tokens: float = self._burst
        self._token_time: float = 0.0
        #: latencies drawn ahead in blocks (see :meth:`_buffered`), when ``_block`` is set
        self._block: Callable[[int], np.ndarray] | None = None
        self._buffer: list[float] = []
        self._next: int = 0
        self._block_size: int = FIRST_BLOCK
        self._draw: Callable[[], float] = self._latency_sampler(model.latency)
        # Every 429 answer of a provider is the same immutable value: build it once.
        self._rate_limited_answer = Answer(True, self._limit.latency, self._limit.retry_after)

    def _latency_sampler(self, cfg: LatencyConfig) -> Callable[[], float]:
        rng = self._rng
        # The latency draws are the only use of the stream unless 429s are random: then draws
        # must interleave with ``rng.random()`` call by call, so they cannot be made ahead.
        batch = self._limit.pattern != "probability"
        if cfg.distribution == "constant":
            mean = cfg.mean
            return lambda: mean
        if cfg.distribution == "exponential":
            mean = cfg.mean
            if mean <= 0:
                return lambda: 0.0
            if batch:
                return self._batched(lambda n: rng.exponential(mean, n))
            return lambda: float(rng.exponential(mean))
        if cfg.distribution == "uniform":
            low, high = cfg.low, cfg.high
            if batch:
                return self._batched(lambda n: rng.uniform(low, high, n))
            return lambda: float(rng.uniform(low, high))
        # lognormal parameterised by mean and coefficient of variation
        if cfg.mean <= 0:
            return lambda: 0.0
        sigma2 = math.log1p(cfg.cv * cfg.cv)
        mu = math.log(cfg.mean) - sigma2 / 2.0
        sigma = math.sqrt(sigma2)
        if batch:
            return self._batched(lambda n: rng.lognormal(mu, sigma, n))
        return lambda: float(rng.lognormal(mu, sigma))

    def is_rate_limited(self, now: float) -> bool:
        """Whether a call sent at ``now`` gets a 429 (consumes a token for ``capacity``)."""
        pattern = self._pattern
        if pattern == "never":
            return False
        if pattern == "always":
            return True
        if pattern == "window":
            end = self._end
            return self._start <= now and (end is None or now < end)
        if pattern == "probability":
            return bool(self._rng.random() < self._probability)
        # capacity: token bucket
        self._tokens = min(self._burst, self._tokens + (now - self._token_time) * self._rate)
        self._token_time = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return False
        return True

    def answer(self, now: float) -> Answer:
        if self.is_rate_limited(now):
            return self._rate_limited_answer
        return Answer(False, self._buffered() if self._block is not None else self._draw(), 0.0)

    def _batched(self, draw_block: Callable[[int], np.ndarray]) -> Callable[[], float]:
        """Serve latencies from blocks drawn ahead by ``draw_block`` (see :meth:`_buffered`)."""
        self._block = draw_block
        return self._buffered

    def _buffered(self) -> float:
        """The next latency from blocks drawn ahead (64 values, doubling up to 4096).

        NumPy's ``Generator`` consumes its bit stream identically for ``size=n`` and for ``n``
        scalar calls, so the values, in order, are exactly those of one call per answer, at a
        fraction of the per-call cost.
        """
        i = self._next
        buffer = self._buffer
        if i == len(buffer):
            assert self._block is not None
            buffer = self._buffer = self._block(self._block_size).tolist()
            self._block_size = min(2 * self._block_size, LAST_BLOCK)
            i = 0
        self._next = i + 1
        return buffer[i]


def build_providers(models: tuple[ModelConfig, ...], seed: int) -> dict[str, Provider]:
    """One provider per model alias, each with a child stream of ``SeedSequence(seed)``.

    Streams are spawned in declaration order, so a provider's draws depend only on the seed and
    its position; appending a model leaves the earlier ones' draws unchanged.
    """
    children = np.random.SeedSequence(seed).spawn(len(models))
    return {m.name: Provider(m, np.random.default_rng(child)) for m, child in zip(models, children, strict=True)}
