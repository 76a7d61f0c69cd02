"""The mocked side of a twin run: endpoints that follow the scenario's provider model, and the
column generators the real scheduler drives.

Imported only inside the twin's child process, where the real engine is installed. What is real
and what is mocked is listed in docs/twin.md. The endpoints reuse the simulator's
:class:`sim.providers.Provider`, so a twin run draws the same latencies and 429 decisions, from the
same seeded streams, as the simulator; only the scheduler in front of them differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from data_designer.config.base import SingleColumnConfig
from data_designer.config.column_configs import GenerationStrategy
from data_designer.config.scheduling import SchedulingMetadata
from data_designer.engine.column_generators.generators.base import ColumnGenerator, FromScratchColumnGenerator
from data_designer.engine.models.clients.errors import ProviderError, ProviderErrorKind
from data_designer.engine.models.clients.types import AssistantMessage, ChatCompletionResponse, Usage
from data_designer.engine.models.errors import ModelRateLimitError
from data_designer.engine.observability import runtime_correlation_provider

from ..providers import Provider

#: One provider call: model index, column, send time, answer time, rate limited.
CallRecord = tuple[int, str, float, float, bool]


@dataclass
class CallLog:
    """Every provider call of the run, counted at the mock, and the stop-rule hook."""

    clock: Callable[[], float]
    calls: list[CallRecord] = field(default_factory=list)
    ok_by_column: dict[str, int] = field(default_factory=dict)
    in_flight_by_model: dict[int, int] = field(default_factory=dict)
    on_answer: Callable[[str, bool], None] | None = None

    def answered(self, model: int, column: str, sent: float, rate_limited: bool) -> None:
        self.calls.append((model, column, sent, self.clock(), rate_limited))
        self.in_flight_by_model[model] -= 1
        if not rate_limited:
            self.ok_by_column[column] = self.ok_by_column.get(column, 0) + 1
        if self.on_answer is not None:
            self.on_answer(column, rate_limited)


class MockEndpoint:
    """One model alias's endpoint: decides at send time (429 or served), then sleeps the latency."""

    def __init__(self, index: int, provider: Provider, log: CallLog) -> None:
        self.index = index
        self.provider = provider
        self.log = log
        log.in_flight_by_model[index] = 0

    async def call(self, column: str) -> tuple[bool, float]:
        """Serve one call; returns (rate_limited, retry_after seconds)."""
        sent = self.log.clock()
        answer = self.provider.answer(sent)
        self.log.in_flight_by_model[self.index] += 1
        try:
            await asyncio.sleep(answer.latency)
        except BaseException:
            self.log.in_flight_by_model[self.index] -= 1
            raise
        self.log.answered(self.index, column, sent, answer.rate_limited)
        return answer.rate_limited, answer.retry_after


def _current_column() -> str:
    correlation = runtime_correlation_provider.current()
    column = getattr(correlation, "task_column", None) if correlation is not None else None
    return column or "?"


class MockModelClient:
    """A chat-completion model client (the engine's ``ModelClient`` protocol) backed by a
    :class:`MockEndpoint`. A 429 is raised as the provider error the real HTTP adapters raise, with
    the Retry-After header when the scenario sets one, so the real executor and controller see it."""

    def __init__(self, endpoint: MockEndpoint, provider_name: str, model_id: str) -> None:
        self.endpoint = endpoint
        self.provider_name = provider_name
        self.model_id = model_id

    def supports_chat_completion(self) -> bool:
        return True

    def supports_embeddings(self) -> bool:
        return False

    def supports_image_generation(self) -> bool:
        return False

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def acompletion(self, request: Any) -> ChatCompletionResponse:
        rate_limited, retry_after = await self.endpoint.call(_current_column())
        if rate_limited:
            raise ProviderError(
                kind=ProviderErrorKind.RATE_LIMIT,
                message="429 Too Many Requests (mock)",
                status_code=429,
                provider_name=self.provider_name,
                model_name=self.model_id,
                retry_after=retry_after if retry_after > 0 else None,
            )
        return ChatCompletionResponse(
            message=AssistantMessage(content="ok"), usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2)
        )

    def _sync_unsupported(self, *_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the twin's mock client is async only")

    completion = embeddings = generate_image = _sync_unsupported

    async def aembeddings(self, request: Any) -> Any:
        raise RuntimeError("the twin's mock client serves chat completions only")

    agenerate_image = aembeddings


class TwinColumnConfig(SingleColumnConfig):
    """A scenario column that is not an LLM-text column: a local column (it sleeps ``duration``)
    or a model/custom-model column on the direct path (it calls its endpoint itself)."""

    column_type: Literal["admission-sim-twin"] = "admission-sim-twin"
    depends_on: list[str] = []
    strategy: Literal["cell_by_cell", "full_column"] = "cell_by_cell"
    duration: float = 0.0
    scheduling_kind: Literal["local", "model", "custom_model"] = "local"
    provider_name: str = ""
    model_id: str = ""
    domain: str = "chat"
    weight: int = 1

    @property
    def required_columns(self) -> list[str]:
        return list(self.depends_on)

    @property
    def side_effect_columns(self) -> list[str]:
        return []

    @staticmethod
    def get_column_emoji() -> str:
        return "~"


class TwinColumnGenerator(ColumnGenerator[TwinColumnConfig]):
    """Generator of a :class:`TwinColumnConfig`. On the direct path a 429 is raised by the
    generator itself as the engine's ``ModelRateLimitError``, with no request admission in the loop
    (as in the PR #743 tests)."""

    endpoint: MockEndpoint | None = None

    def get_generation_strategy(self) -> GenerationStrategy:  # type: ignore[override]
        return GenerationStrategy(self.config.strategy)

    def get_scheduling_metadata(self) -> SchedulingMetadata:
        cfg = self.config
        if cfg.scheduling_kind == "model":
            return SchedulingMetadata.model(cfg.provider_name, cfg.model_id, cfg.domain, weight=cfg.weight)
        if cfg.scheduling_kind == "custom_model":
            return SchedulingMetadata.custom_model("admission-sim", cfg.name, "v1", weight=cfg.weight)
        return SchedulingMetadata.local(weight=cfg.weight)

    async def _work(self) -> None:
        if self.endpoint is None:
            if self.config.duration > 0:  # a zero-time local column runs inline, without yielding
                await asyncio.sleep(self.config.duration)
            return
        rate_limited, _retry_after = await self.endpoint.call(self.config.name)
        if rate_limited:
            raise ModelRateLimitError(f"429 from the mock endpoint of column {self.config.name!r}")

    def generate(self, data: Any) -> Any:
        raise RuntimeError("the twin's generators are async only")

    async def agenerate(self, data: Any) -> Any:
        if isinstance(data, dict):
            await self._work()
            return {**data, self.config.name: "ok"}
        # full column: one call (or one sleep) for the whole row group, as the simulator models it
        await self._work()
        out = data.copy()
        out[self.config.name] = "ok"
        return out


class TwinSeedGenerator(FromScratchColumnGenerator[TwinColumnConfig]):
    """The seed sampler: a root full-column local column, run from scratch and inline (no thread
    hop, no sampling library), so that it takes no time unless the scenario gives it a duration."""

    @staticmethod
    def get_generation_strategy() -> GenerationStrategy:
        return GenerationStrategy.FULL_COLUMN

    def get_scheduling_metadata(self) -> SchedulingMetadata:
        return SchedulingMetadata.local(weight=self.config.weight)

    def generate_from_scratch(self, num_records: int) -> Any:
        raise RuntimeError("the twin's generators are async only")

    def generate(self, data: Any) -> Any:
        raise RuntimeError("the twin's generators are async only")

    async def agenerate_from_scratch(self, num_records: int) -> Any:
        import pandas as pd

        if self.config.duration > 0:
            await asyncio.sleep(self.config.duration)
        return pd.DataFrame({self.config.name: range(num_records)})
