"""What work exists: the column DAG compiled into generators, and the row-group plan.

The scheduler works with **generators**, not columns (docs/model.md, "Columns, generators and
tasks"): a multi-output generator runs a single task, on its first output column in topological
order, and finishing it completes all its output columns. Each generator is compiled once into a
:class:`Generator` record with integer ids, its scheduling metadata (task group, weight, admitted
limit, scheduler resources, request resource key; docs/model.md, "Task admission") and its
upstream/downstream generators, so that nothing on the hot path walks the DAG again.

The row-group plan (docs/model.md, "Row-group plan") is fixed by the scenario, except for random
sizes, which are drawn from the run's seed on a stream of their own, so that the same seed gives
the same plan and the providers' draws do not move.

This module schedules nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .scenario import ColumnConfig, ModelConfig, RowGroupConfig, Scenario

#: Scheduler resource names (docs/model.md, "Task admission").
SUBMISSION = "submission"
LLM_WAIT = "llm_wait"

#: Backlog multiplier for a model group's admitted limit (docs/model.md, "Task admission").
MODEL_GROUP_ADMISSION_BACKLOG_MULTIPLIER = 2


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A request resource: one AIMD controller state per (provider, model, domain)."""

    provider: str
    model_id: str
    domain: str

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model_id}/{self.domain}"

    @property
    def provider_model(self) -> str:
        return f"{self.provider}/{self.model_id}"


@dataclass(eq=False)
class Generator:
    """One generator instance, compiled for scheduling.

    ``resources`` are indices into :attr:`Workload.resource_names`. ``cell_upstream`` are
    generators whose cells must be done for the *same row*; ``full_upstream`` must be complete
    for the whole row group (for a full-column generator every upstream is a barrier).
    """

    index: int
    name: str
    output_columns: tuple[str, ...]
    strategy: str  # "cell_by_cell" | "full_column"
    kind: str  # "local" | "model" | "custom_model"
    model: ModelConfig | None
    duration: float
    weight: int
    admitted_limit: int | None  # None for local tasks (hard check only)
    group_identity: tuple[str, ...]
    resources: tuple[int, ...]
    request_key: RequestKey | None
    upstream: tuple[int, ...] = ()
    cell_upstream: tuple[int, ...] = ()
    full_upstream: tuple[int, ...] = ()
    downstream: tuple[int, ...] = ()
    ancestors: frozenset[int] = field(default_factory=frozenset)
    descendants: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_cell(self) -> bool:
        return self.strategy == "cell_by_cell"

    @property
    def is_root(self) -> bool:
        return not self.upstream

    @property
    def task_type(self) -> str:
        if self.is_cell:
            return "cell"
        return "from_scratch" if self.is_root else "batch"

    @property
    def group_kind(self) -> str:
        return self.kind

    @property
    def group_key(self) -> tuple[str, tuple[str, ...]]:
        return (self.kind, self.group_identity)

    @property
    def localization_keys(self) -> frozenset[str]:
        """Keys that tie a task to a deferred resource or group (docs/model.md, "The localized clause")."""
        if self.request_key is not None:
            return frozenset(
                {
                    f"request_resource:{self.request_key.label}",
                    f"scheduler_resource:request:{self.request_key.provider_model}",
                }
            )
        return frozenset({f"group:{self.kind}:{'/'.join(self.group_identity)}"})

    @property
    def resource_scoped(self) -> bool:
        """Model-backed work counts as exposure even if it feeds blocked work (docs/model.md,
        "The localized clause")."""
        return self.request_key is not None or self.kind != "local"

    @property
    def is_model_task(self) -> bool:
        """Holds ``llm_wait`` (model or custom-model kind)."""
        return self.kind != "local"


@dataclass(eq=False)
class Workload:
    """The compiled DAG plus the row-group plan; immutable after :func:`build_workload`."""

    generators: tuple[Generator, ...]
    topo_order: tuple[int, ...]
    column_to_generator: dict[str, int]
    resource_names: tuple[str, ...]
    resource_limits: tuple[int, ...]
    row_group_sizes: tuple[int, ...]
    request_keys: tuple[RequestKey, ...]

    @cached_property
    def resource_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.resource_names)}

    @cached_property
    def cell_generators(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.generators if g.is_cell)

    @cached_property
    def full_generators(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.generators if not g.is_cell)

    @cached_property
    def root_generators(self) -> tuple[int, ...]:
        return tuple(i for i in self.topo_order if self.generators[i].is_root)

    def tasks_per_row_group(self, size: int) -> int:
        """n x cell generators + full-column generators (docs/model.md, "Columns, generators and tasks")."""
        return size * len(self.cell_generators) + len(self.full_generators)

    @property
    def total_tasks(self) -> int:
        return sum(self.tasks_per_row_group(n) for n in self.row_group_sizes)


#: The spawn key of the random stream that draws row-group sizes. The providers' streams are the
#: children 0, 1, ... of ``SeedSequence(seed)``, one per model (at most a few hundred), so this key
#: never collides with theirs and adding random sizes changes no latency or 429 draw.
ROW_PLAN_STREAM = 0x524F5750


def row_group_plan(rows: RowGroupConfig, seed: int) -> tuple[int, ...]:
    """Row-group sizes in id order. A ``random_sizes`` plan draws each size uniformly from
    ``[min, max]`` until ``num_records`` rows are planned; the last group is cut to fit, as the
    real partition cuts its last window. Other forms draw nothing and ignore ``seed``."""
    if rows.random_sizes is None:
        return tuple(rows.fixed_sizes())
    low, high, total = rows.random_sizes.min, rows.random_sizes.max, rows.num_records
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ROW_PLAN_STREAM,)))
    # Draw the most groups the plan can need at once (validated to be at most MAX_ROW_GROUPS),
    # so the plan does not depend on how the draws are batched.
    drawn = rng.integers(low, high, size=rows.max_groups, endpoint=True)
    ends = np.cumsum(drawn)
    k = int(np.searchsorted(ends, total)) + 1  # groups needed to reach `total` rows
    sizes = [int(n) for n in drawn[:k]]
    sizes[-1] -= int(ends[k - 1]) - total
    return tuple(sizes)


def build_workload(scenario: Scenario, seed: int | None = None) -> Workload:
    """Compile the scenario's columns into generators with resources and dependencies, and plan
    the row groups with ``seed`` (default: the scenario's seed; pass the run's seed)."""
    columns = {c.name: c for c in scenario.columns}
    models = {m.name: m for m in scenario.models}
    col_order = _topological_columns(scenario.columns)

    # Group columns into generator instances; a generator sits at its first column in topo order.
    gen_columns: dict[str, list[str]] = {}
    for name in col_order:
        gen_columns.setdefault(columns[name].generator_name, []).append(name)
    gen_names = list(gen_columns)  # ordered by first output column in topological order
    column_to_generator = {col: gi for gi, g in enumerate(gen_names) for col in gen_columns[g]}

    # request:<provider>/<model> limit = min weight over generators on that provider/model.
    request_limit: dict[str, int] = {}
    for g in gen_names:
        first = columns[gen_columns[g][0]]
        if first.resolved_kind == "model":
            m = models[first.model]
            pm = f"{m.provider}/{m.resolved_model_id}"
            request_limit[pm] = min(request_limit.get(pm, m.max_parallel_requests), m.max_parallel_requests)

    sched = scenario.scheduler
    resource_names = [SUBMISSION, LLM_WAIT] + [f"request:{pm}" for pm in sorted(request_limit)]
    resource_limits = [sched.max_in_flight_tasks, sched.max_model_task_admission] + [
        request_limit[pm] for pm in sorted(request_limit)
    ]
    res_index = {n: i for i, n in enumerate(resource_names)}

    request_keys: dict[RequestKey, None] = {}
    generators: list[Generator] = []
    for gi, gname in enumerate(gen_names):
        outs = tuple(gen_columns[gname])
        first = columns[outs[0]]
        kind = first.resolved_kind
        model = models[first.model] if first.model is not None else None
        # declared up front: compiled code checks each branch's value against the first one's type
        request_key: RequestKey | None = None
        weight: int
        admitted: int | None
        identity: tuple[str, ...]
        resources: tuple[int, ...]
        if kind == "local":
            weight = first.weight or 1
            admitted = None
            identity = ("local", "default", *outs)
            resources = (res_index[SUBMISSION],)
        elif kind == "model":
            assert model is not None
            weight = max(1, model.max_parallel_requests)
            admitted = max(1, min(sched.max_model_task_admission, MODEL_GROUP_ADMISSION_BACKLOG_MULTIPLIER * weight))
            identity = ("model", model.provider, model.resolved_model_id, model.domain, *outs)
            pm = f"{model.provider}/{model.resolved_model_id}"
            resources = (res_index[SUBMISSION], res_index[LLM_WAIT], res_index[f"request:{pm}"])
            request_key = RequestKey(model.provider, model.resolved_model_id, model.domain)
            request_keys[request_key] = None
        else:  # custom_model: weight = number of aliases (one here); no request resource key
            assert model is not None
            weight = first.weight or 1
            admitted = max(1, min(sched.max_model_task_admission, MODEL_GROUP_ADMISSION_BACKLOG_MULTIPLIER * weight))
            identity = ("custom_model", "sim", outs[0], "v1", *outs)
            resources = (res_index[SUBMISSION], res_index[LLM_WAIT])
        generators.append(
            Generator(
                index=gi,
                name=gname,
                output_columns=outs,
                strategy=first.strategy,
                kind=kind,
                model=model,
                duration=first.duration,
                weight=weight,
                admitted_limit=admitted,
                group_identity=identity,
                resources=resources,
                request_key=request_key,
            )
        )

    # Dependencies between generators.
    for gen in generators:
        ups = []
        for col in gen.output_columns:
            for dep in columns[col].depends_on:
                ug = column_to_generator[dep]
                if ug != gen.index and ug not in ups:
                    ups.append(ug)
        gen.upstream = tuple(sorted(ups))
        if gen.is_cell:
            gen.cell_upstream = tuple(u for u in gen.upstream if generators[u].is_cell)
            gen.full_upstream = tuple(u for u in gen.upstream if not generators[u].is_cell)
        else:
            gen.full_upstream = gen.upstream
    for gen in generators:
        gen.downstream = tuple(d.index for d in generators if gen.index in d.upstream)
    topo = _topological_generators(generators)
    for gi in topo:
        gen = generators[gi]
        anc: set[int] = set()
        for u in gen.upstream:
            anc.add(u)
            anc |= generators[u].ancestors
        gen.ancestors = frozenset(anc)
    for gi in reversed(topo):
        gen = generators[gi]
        desc: set[int] = set()
        for d in gen.downstream:
            desc.add(d)
            desc |= generators[d].descendants
        gen.descendants = frozenset(desc)

    return Workload(
        generators=tuple(generators),
        topo_order=tuple(topo),
        column_to_generator=column_to_generator,
        resource_names=tuple(resource_names),
        resource_limits=tuple(resource_limits),
        row_group_sizes=row_group_plan(scenario.row_groups, scenario.seed if seed is None else seed),
        request_keys=tuple(request_keys),
    )


def _topological_columns(columns: tuple[ColumnConfig, ...]) -> list[str]:
    """Kahn's algorithm, ties broken by declaration order so the result is deterministic."""
    order_index = {c.name: i for i, c in enumerate(columns)}
    indeg = {c.name: len(set(c.depends_on)) for c in columns}
    children: dict[str, list[str]] = {c.name: [] for c in columns}
    for c in columns:
        for dep in set(c.depends_on):
            children[dep].append(c.name)
    import heapq

    ready = [(order_index[n], n) for n, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, name = heapq.heappop(ready)
        out.append(name)
        for child in children[name]:
            indeg[child] -= 1
            if indeg[child] == 0:
                heapq.heappush(ready, (order_index[child], child))
    return out


def _topological_generators(generators: list[Generator]) -> list[int]:
    indeg = {g.index: len(g.upstream) for g in generators}
    import heapq

    ready = [g.index for g in generators if not g.upstream]
    heapq.heapify(ready)
    out = []
    while ready:
        gi = heapq.heappop(ready)
        out.append(gi)
        for d in generators[gi].downstream:
            indeg[d] -= 1
            if indeg[d] == 0:
                heapq.heappush(ready, d)
    return out


class Task:
    """One unit of work: generator ``gen`` on row group ``rg`` (a ``RowGroupState``), for
    ``row`` (a cell) or the whole group (``row = -1``: from_scratch or batch).

    Plain slots record, created once per task and reused across deferrals and salvage retries.
    """

    __slots__ = ("gen", "rg", "row", "deferrals", "error")

    def __init__(self, gen: Generator, rg: object, row: int) -> None:
        self.gen = gen
        self.rg = rg
        self.row = row
        self.deferrals = 0
        self.error = ""

    def __repr__(self) -> str:
        rg_id = getattr(self.rg, "id", self.rg)
        where = f"row {self.row}" if self.row >= 0 else self.gen.task_type
        return f"Task({self.gen.name}@rg{rg_id} {where})"
