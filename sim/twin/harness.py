"""Inside the child process: build the real DataDesigner objects from a scenario, run the real
``AsyncTaskScheduler`` once and return what was measured as plain data.

This module imports the engine and is imported only in the twin's child process
(:mod:`sim.twin.runner`). How the scenario maps onto the engine, what is real and what is mocked,
is described in docs/twin.md; the layout of the returned record is :class:`RawRun`'s.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..providers import build_providers
from ..scenario import ColumnConfig, ModelConfig, Scenario
from ..workload import row_group_plan
from .mock import CallLog, MockEndpoint, MockModelClient, TwinColumnConfig, TwinColumnGenerator, TwinSeedGenerator

#: Modules the engine imports lazily on a run's first model call (response parsing, prompt
#: templates, the parquet bridge). Imported before ``run()`` starts, so that the first calls of a
#: measured run do not pay for loading code.
WARM_MODULES = (
    "data_designer.engine.models.parsers.parser",
    "data_designer.engine.models.recipes.response_recipes",
    "data_designer.engine.processing.ginja.environment",
    "data_designer.engine.processing.gsonschema.validators",
    "json_repair",
    "jsonpath_rust_bindings",
    "lxml.etree",
    "marko",
    "pyarrow.pandas_compat",
)


def _warm_up() -> None:
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a missing optional module is loaded (or not) by the engine itself
            continue


@dataclass
class RawRun:
    """Everything one real run measured; plain values so that it crosses the process boundary."""

    policy: str
    seed: int
    adaptive: bool
    stop_reason: str
    duration: float
    cpu_seconds: float
    user_seconds: float
    system_seconds: float
    voluntary_switches: int
    involuntary_switches: int
    loop_lag: dict[str, float]
    series: list[tuple[float, ...]] = field(default_factory=list)
    calls: list[tuple[int, str, float, float, bool]] = field(default_factory=list)
    target_changes: list[tuple[float, int]] = field(default_factory=list)
    admissions: list[tuple[float, int, int]] = field(default_factory=list)
    checkpoints: list[tuple[float, int, int, int]] = field(default_factory=list)
    scheduler: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    deferred_by_column: dict[str, int] = field(default_factory=dict)


class _Stopper:
    """Applies the scenario's stop rules to the real run by cancelling it cleanly."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.reason: str | None = None
        self.stopped_at: float | None = None
        self.scheduler: Any = None
        rule = scenario.stop.successful_calls
        self.call_columns = frozenset(rule.columns) if rule is not None else frozenset()
        self.call_limit = rule.count if rule is not None else None
        self.calls = 0
        self.row_limit = scenario.stop.completed_rows
        self.rows = 0

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.stopped_at = self.clock()
            self.scheduler.request_cancel()

    def on_answer(self, column: str, rate_limited: bool) -> None:
        if self.call_limit is not None and not rate_limited and column in self.call_columns:
            self.calls += 1
            if self.calls >= self.call_limit:
                self.stop("successful_calls")

    def on_checkpoint(self, _row_group: int, surviving_rows: int) -> None:
        self.rows += surviving_rows
        if self.row_limit is not None and self.rows >= self.row_limit:
            self.stop("completed_rows")


def run_scenario(
    scenario_data: dict[str, Any], policy: str, seed: int, sample_interval: float, adaptive: bool | None = None
) -> dict[str, Any]:
    """Child-process entry point: one real run; returns :class:`RawRun` as a dict. ``adaptive``
    forces adaptive admission on or off under the policy's deferred rule (default: off for
    ``fixed`` only)."""
    for name in ("data_designer", "data_designer.engine"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    scenario = Scenario.model_validate(scenario_data)
    with tempfile.TemporaryDirectory(prefix="admission-sim-twin-") as workdir:
        adaptive = policy != "fixed" if adaptive is None else adaptive
        raw = asyncio.run(_run(scenario, policy, seed, sample_interval, workdir, adaptive))
    return asdict(raw)


def _column_groups(scenario: Scenario) -> list[list[ColumnConfig]]:
    groups: dict[str, list[ColumnConfig]] = {}
    for col in scenario.columns:
        groups.setdefault(col.generator_name, []).append(col)
    return list(groups.values())


def _is_seed(col: ColumnConfig) -> bool:
    return col.resolved_kind == "local" and col.strategy == "full_column" and not col.depends_on


async def _run(scenario: Scenario, policy: str, seed: int, interval: float, workdir: str, adaptive: bool) -> RawRun:
    from data_designer.config.column_configs import LLMTextColumnConfig
    from data_designer.config.models import ChatCompletionInferenceParams, ModelProvider
    from data_designer.config.models import ModelConfig as DDModelConfig
    from data_designer.engine.column_generators.generators.llm_completion import LLMTextCellGenerator
    from data_designer.engine.dataset_builders import async_scheduler as scheduler_module
    from data_designer.engine.dataset_builders.scheduling.completion import CompletionTracker
    from data_designer.engine.dataset_builders.scheduling.resolver import TaskSchedulingResolver
    from data_designer.engine.dataset_builders.scheduling.task_admission import TaskAdmissionConfig
    from data_designer.engine.dataset_builders.scheduling.task_policies import (
        DEFAULT_DYNAMIC_BORROW_RESERVE_FRACTION,
        BoundedBorrowTaskAdmissionPolicyConfig,
    )
    from data_designer.engine.dataset_builders.utils.execution_graph import ExecutionGraph
    from data_designer.engine.dataset_builders.utils.row_group_buffer import RowGroupBufferManager
    from data_designer.engine.model_provider import ModelProviderRegistry
    from data_designer.engine.models.clients.model_request_executor import ModelRequestExecutor
    from data_designer.engine.models.clients.retry import RetryConfig
    from data_designer.engine.models.facade import ModelFacade
    from data_designer.engine.models.registry import ModelRegistry
    from data_designer.engine.models.request_admission.config import RequestAdmissionConfig
    from data_designer.engine.models.request_admission.controller import AdaptiveRequestAdmissionController
    from data_designer.engine.resources.resource_provider import ResourceProvider
    from data_designer.engine.secret_resolver import PlaintextResolver
    from data_designer.engine.storage.artifact_storage import ArtifactStorage

    loop = asyncio.get_running_loop()
    origin = [loop.time()]  # reset when run() starts: every recorded time is relative to that

    def clock() -> float:
        return loop.time() - origin[0]

    sched_cfg = scenario.scheduler
    admission_cfg = scenario.request_admission
    models_by_name: dict[str, ModelConfig] = {m.name: m for m in scenario.models}
    model_index = {m.name: i for i, m in enumerate(scenario.models)}
    providers = build_providers(scenario.models, seed)
    stopper = _Stopper(scenario, clock)
    log = CallLog(clock=clock, on_answer=stopper.on_answer)
    endpoints = {m.name: MockEndpoint(i, providers[m.name], log) for i, m in enumerate(scenario.models)}

    # The real request path: ModelFacade -> ModelRequestExecutor -> AdaptiveRequestAdmissionController.
    controller = None
    registry = None
    if admission_cfg.enabled:
        controller = AdaptiveRequestAdmissionController(
            RequestAdmissionConfig(
                cooldown_seconds=admission_cfg.cooldown_seconds,
                multiplicative_decrease_factor=admission_cfg.decrease_factor,
                additive_increase_step=admission_cfg.increase_step,
                successes_until_increase=admission_cfg.successes_until_increase,
                startup_ramp_seconds=admission_cfg.startup_ramp_seconds,
            )
        )
        provider_registry = ModelProviderRegistry(
            providers=[
                ModelProvider(name=name, endpoint="http://mock.invalid/v1", provider_type="openai")
                for name in dict.fromkeys(m.provider for m in scenario.models)
            ]
        )

        def facade_factory(model_config: Any, _secrets: Any, provider_reg: Any, retry_config: Any) -> Any:
            model = models_by_name[model_config.alias]
            client = MockModelClient(endpoints[model.name], model.provider, model.resolved_model_id)
            executor = ModelRequestExecutor(
                inner=client,
                request_admission=controller,
                provider_name=model.provider,
                model_id=model.resolved_model_id,
                retry_config=retry_config,
            )
            return ModelFacade(model_config, provider_reg, client=executor)

        registry = ModelRegistry(
            secret_resolver=PlaintextResolver(),
            model_provider_registry=provider_registry,
            model_configs=[
                DDModelConfig(
                    alias=m.name,
                    model=m.resolved_model_id,
                    provider=m.provider,
                    inference_parameters=ChatCompletionInferenceParams(max_parallel_requests=m.max_parallel_requests),
                    skip_health_check=True,
                )
                for m in scenario.models
            ],
            model_facade_factory=facade_factory,
            request_admission=controller,
            retry_config=RetryConfig(),
        )
    storage = ArtifactStorage(artifact_path=workdir)
    resources = ResourceProvider(artifact_storage=storage, model_registry=registry)

    column_configs: list[Any] = []
    generators: dict[str, Any] = {}
    strategies: dict[str, Any] = {}
    for group in _column_groups(scenario):
        first = group[0]
        if len(group) > 1:
            raise ValueError(f"column {first.name!r}: multi-output generators are not supported by the twin")
        if _is_seed(first):
            config = TwinColumnConfig(name=first.name, strategy="full_column", duration=first.duration)
            generator = TwinSeedGenerator(config=config, resource_provider=resources)
        elif first.resolved_kind == "model" and admission_cfg.enabled:
            prompt = " ".join(f"{{{{ {dep} }}}}" for dep in first.depends_on) or "Say ok."
            config = LLMTextColumnConfig(name=first.name, prompt=prompt, model_alias=first.model)
            generator = LLMTextCellGenerator(config=config, resource_provider=resources)
        else:
            model = models_by_name.get(first.model or "")
            kind = first.resolved_kind
            weight = model.max_parallel_requests if kind == "model" else (first.weight or 1)
            config = TwinColumnConfig(
                name=first.name,
                depends_on=list(first.depends_on),
                strategy=first.strategy,
                duration=first.duration,
                scheduling_kind=kind,
                provider_name=model.provider if model else "",
                model_id=model.resolved_model_id if model else "",
                domain=model.domain if model else "chat",
                weight=weight,
            )
            generator = TwinColumnGenerator(config=config, resource_provider=resources)
            if model is not None:
                generator.endpoint = endpoints[model.name]
        column_configs.append(config)
        for col in group:
            generators[col.name] = generator
            strategies[col.name] = generator.get_generation_strategy()

    graph = ExecutionGraph.create(column_configs, strategies)
    plan = list(enumerate(row_group_plan(scenario.row_groups, seed)))  # the simulator's plan for this seed
    tracker = CompletionTracker.with_graph(graph, plan)
    buffers = RowGroupBufferManager(storage)

    scheduler_module.RETRYABLE_RESALVAGE_BACKOFF_S = sched_cfg.resalvage_backoff
    task_admission_config = None
    if sched_cfg.borrow_reserve_fraction != DEFAULT_DYNAMIC_BORROW_RESERVE_FRACTION:
        resolver = TaskSchedulingResolver(
            generators,
            model_group_limit_multiplier=scheduler_module.MODEL_GROUP_ADMISSION_BACKLOG_MULTIPLIER,
            model_group_limit_cap=sched_cfg.max_model_task_admission,
        )
        task_admission_config = TaskAdmissionConfig(
            submission_capacity=sched_cfg.max_in_flight_tasks,
            resource_limits={"llm_wait": sched_cfg.max_model_task_admission, **resolver.request_resource_limits},
            bounded_borrow=BoundedBorrowTaskAdmissionPolicyConfig(
                dynamic_borrow_reserve_fraction=sched_cfg.borrow_reserve_fraction
            ),
        )

    scheduler = scheduler_module.AsyncTaskScheduler(
        generators,
        graph,
        tracker,
        plan,
        buffers,
        max_concurrent_row_groups=sched_cfg.max_concurrent_row_groups,
        max_in_flight_tasks=sched_cfg.max_in_flight_tasks,
        max_model_task_admission=sched_cfg.max_model_task_admission,
        task_admission_config=task_admission_config,
        salvage_max_rounds=sched_cfg.salvage_max_rounds,
        on_finalize_row_group=buffers.free_row_group,
        num_records=scenario.row_groups.guard_num_records,
        buffer_size=scenario.row_groups.guard_buffer_size,
        adaptive_row_group_admission=adaptive,
        adaptive_row_group_initial_target=sched_cfg.initial_target,
        request_pressure_provider=controller,
        request_pressure_advisory=sched_cfg.request_pressure_advisory,
    )
    stopper.scheduler = scheduler
    lifecycle = _instrument(scheduler, tracker, policy, clock, stopper.on_checkpoint)

    _warm_up()
    origin[0] = loop.time()  # time 0 of the scenario (429 windows, token buckets, stop.max_time)
    sampler = _Sampler(scheduler, log, stopper, scenario, clock, interval)
    if scenario.stop.max_time is not None:
        loop.call_later(scenario.stop.max_time, stopper.stop, "max_time")
    sampling = asyncio.create_task(sampler.run())
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = time.process_time()
    started = clock()
    try:
        await scheduler.run()
    except asyncio.CancelledError:
        if stopper.reason is None:
            raise
    duration = clock() - started
    cpu = time.process_time() - cpu_before
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    sampling.cancel()
    sampler.sample()

    deferred_by_column: dict[str, int] = {}
    for task in scheduler._deferred:
        deferred_by_column[task.column] = deferred_by_column.get(task.column, 0) + 1
    model_rows = []
    snapshots = controller.snapshots() if controller is not None else {}
    for m in scenario.models:
        limit = m.max_parallel_requests
        for key, snap in snapshots.items():
            if key.provider_name == m.provider and key.model_id == m.resolved_model_id:
                limit = snap.current_limit
        model_rows.append({"model": m.name, "final_limit": limit, "index": model_index[m.name]})
    return RawRun(
        policy=policy,
        seed=seed,
        adaptive=adaptive,
        stop_reason=stopper.reason or "completed",
        duration=duration,
        cpu_seconds=cpu,
        user_seconds=usage_after.ru_utime - usage_before.ru_utime,
        system_seconds=usage_after.ru_stime - usage_before.ru_stime,
        voluntary_switches=usage_after.ru_nvcsw - usage_before.ru_nvcsw,
        involuntary_switches=usage_after.ru_nivcsw - usage_before.ru_nivcsw,
        loop_lag=sampler.lag_summary(),
        series=sampler.rows,
        calls=log.calls,
        target_changes=lifecycle.target_changes,
        admissions=lifecycle.admissions,
        checkpoints=lifecycle.checkpoints,
        scheduler={
            "hard_cap": scheduler._row_group_admission_hard_cap,
            "final_target": scheduler._row_group_admission_target,
            "observed_max_target": scheduler._observed_max_row_group_admission_target,
            "max_row_groups_in_flight": scheduler._observed_max_row_groups_in_flight,
            "max_admitted_rows": scheduler._adaptive_max_admitted_rows,
            "blocked_reasons": dict(scheduler._row_group_admission_blocked_reasons),
            "deferred_at_end": len(scheduler._deferred),
            "salvage_cycles": lifecycle.salvage_cycles,
            "salvage_rounds": lifecycle.salvage_rounds,
            "adaptive_evaluations": lifecycle.evaluations,
            "request_pressure_advisory_skips": scheduler._request_pressure_advisory_skips,
            "early_shutdown": scheduler.early_shutdown,
            "stopped_at": stopper.stopped_at,
        },
        models=model_rows,
        deferred_by_column=deferred_by_column,
    )


@dataclass
class _Lifecycle:
    """Exact times of target changes, admissions and checkpoints, and salvage counters."""

    target_changes: list[tuple[float, int]] = field(default_factory=list)
    admissions: list[tuple[float, int, int]] = field(default_factory=list)
    checkpoints: list[tuple[float, int, int, int]] = field(default_factory=list)
    salvage_cycles: int = 0
    salvage_rounds: int = 0
    evaluations: int = 0


def _instrument(
    scheduler: Any, tracker: Any, policy: str, clock: Callable[[], float], on_checkpoint: Callable[[int, int], None]
) -> _Lifecycle:
    """Wrap a few of the instance's own steps to time them (no event sink: building the engine's
    events costs a third of a small run's CPU). Under ``global``, put the pre-#743 rule in front of
    the scheduler's block reasons: any deferred task blocks growth, checked before every other
    reason (docs/twin.md)."""
    life = _Lifecycle()
    salvage_rounds = scheduler._salvage_rounds
    drain = scheduler._drain_frontier
    update_target = scheduler._maybe_update_adaptive_row_group_target
    dispatch_seeds = scheduler._dispatch_seeds
    compact = tracker.compact_row_group
    localized_reason = scheduler._adaptive_row_group_block_reason
    sizes = dict(scheduler._row_groups)
    in_salvage = [False]

    async def timed_salvage_rounds(*args: Any) -> None:
        life.salvage_cycles += 1
        in_salvage[0] = True
        try:
            await salvage_rounds(*args)
        finally:
            in_salvage[0] = False

    async def timed_drain(*args: Any) -> None:
        if in_salvage[0]:
            life.salvage_rounds += 1
        await drain(*args)

    def timed_update() -> None:
        life.evaluations += 1
        before = scheduler._row_group_admission_target
        update_target()
        after = scheduler._row_group_admission_target
        if after != before:
            life.target_changes.append((clock(), after))

    async def timed_dispatch_seeds(rg_id: int, rg_size: int) -> None:  # runs at each admission
        life.admissions.append((clock(), rg_id, rg_size))
        await dispatch_seeds(rg_id, rg_size)

    def timed_compact(rg_id: int) -> None:  # runs once per checkpointed row group
        size = sizes[rg_id]
        alive = sum(1 for ri in range(size) if not tracker.is_dropped(rg_id, ri))
        life.checkpoints.append((clock(), rg_id, size, alive))
        compact(rg_id)
        on_checkpoint(rg_id, alive)

    def global_reason() -> str | None:
        if scheduler._deferred:
            return "deferred_tasks"
        return localized_reason()

    scheduler._salvage_rounds = timed_salvage_rounds
    scheduler._drain_frontier = timed_drain
    scheduler._maybe_update_adaptive_row_group_target = timed_update
    scheduler._dispatch_seeds = timed_dispatch_seeds
    tracker.compact_row_group = timed_compact
    if policy == "global":
        scheduler._adaptive_row_group_block_reason = global_reason
    return life


class _Sampler:
    """Samples the scheduler's state at a fixed interval; its lateness is the event-loop lag."""

    def __init__(
        self, scheduler: Any, log: CallLog, stopper: _Stopper, scenario: Scenario, clock: Callable[[], float], dt: float
    ) -> None:
        self.scheduler = scheduler
        self.log = log
        self.stopper = stopper
        self.clock = clock
        self.dt = dt
        self.healthy_columns = frozenset(
            c.name for c in scenario.columns if c.model is not None and _healthy(scenario, c.model)
        )
        self.rows: list[tuple[float, ...]] = []
        self.lags: list[float] = []

    def sample(self) -> None:
        s = self.scheduler
        ok = self.log.ok_by_column
        self.rows.append(
            (
                self.clock(),
                s._row_group_admission_target,
                len(s._rg_states),
                s._active_admitted_row_count(),
                s._fair_queue.view().queued_total,
                len(s._in_flight),
                len(s._deferred),
                self.stopper.rows,
                sum(ok.values()),
                sum(n for col, n in ok.items() if col in self.healthy_columns),
                sum(self.log.in_flight_by_model.values()),
            )
        )

    async def run(self) -> None:
        due = self.clock()
        while True:
            self.sample()
            due += self.dt
            await asyncio.sleep(max(0.0, due - self.clock()))
            late = self.clock() - due
            self.lags.append(late)
            if late > self.dt:  # a long stall: resynchronise instead of sampling a burst
                due = self.clock()

    def lag_summary(self) -> dict[str, float]:
        if not self.lags:
            return {"mean_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        lags = np.array(self.lags) * 1000.0
        return {
            "mean_ms": float(lags.mean()),
            "p99_ms": float(np.percentile(lags, 99)),
            "max_ms": float(lags.max()),
        }


def _healthy(scenario: Scenario, model_name: str) -> bool:
    return any(m.name == model_name and m.rate_limit.pattern == "never" for m in scenario.models)
