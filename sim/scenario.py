"""What was asked: the typed, validated scenario.

A scenario is a TOML file validated by pydantic v2. Every tunable of the modelled scheduler is a
field here with the real scheduler's default, so that a scenario file only states what differs.
Each field carries its meaning, unit and the DataDesigner setting it mirrors; the reference
``docs/scenario-format.md`` and the JSON Schema are generated from them (:mod:`sim.scenario_docs`).
Errors are raised as :class:`ScenarioError`, whose message names the file or the ``--set``
override, the dotted key (list items by name) and the reason; the CLI prints it without a
traceback.

This module knows nothing about SimPy.
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InputError
from .files import read_user_text

#: Upper bounds that keep a single run within memory; they are validated up front so a typo
#: such as ``count = 1e12`` fails with a clear message instead of exhausting the machine.
MAX_ROW_GROUPS = 1_000_000
MAX_TOTAL_ROWS = 50_000_000
MAX_COLUMNS = 256
#: Tasks the plan makes (cell-by-cell generators once per row, the others once per row group).
#: Memory no longer grows with it (the recorder is bounded; MAX_RUN_BYTES is the memory cap); it
#: bounds run time: at about 40 us of CPU per task, 20 million tasks take about 15 minutes, within
#: the default wall-clock budget.
MAX_TASKS_PER_RUN = 20_000_000
#: Estimated peak memory of one run's own state, checked before anything is built (docs/reliability.md):
#: live tasks (task objects, their rows' dependency counters, queue entries: about 115 bytes each
#: measured on CPython 3.11), one log and table row per row group, and the stored time-series rows
#: (8 bytes a value, about three copies while the result tables and files are built).
BYTES_PER_LIVE_TASK = 150
BYTES_PER_ROW_GROUP = 100
BYTES_PER_SERIES_ROW = 250
MAX_RUN_BYTES = 4 * 1024**3
#: Simulated seconds: beyond this, float time steps of a millisecond are lost to rounding.
MAX_SIM_TIME = 1.0e9
#: The smallest resalvage backoff: a smaller pause can round to zero and spin at one instant.
MIN_RESALVAGE_BACKOFF = 1.0e-4
#: Run budgets (``stop.max_events``, ``stop.max_wall_seconds``): bundled scenarios need at most
#: about 4 scheduler events per planned task, so the default of 20 per task (at least 500,000)
#: stops only runs that retry or pause without end.
DEFAULT_EVENTS_PER_TASK = 20
MIN_DEFAULT_MAX_EVENTS = 500_000
MAX_EVENTS = 10**12
DEFAULT_MAX_WALL_SECONDS = 1800.0
MAX_WALL_SECONDS = 30 * 86400.0
#: Size of a scenario file, length of a name and of a description.
MAX_FILE_BYTES = 4_000_000
MAX_NAME_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 20_000
#: Key parts and lines of an error message are cut to this length, so hostile input stays readable.
MAX_MESSAGE_PART = 80


class ScenarioError(InputError):
    """A scenario (file, override or object) is invalid. The message is meant for humans."""


class _KeyedError(ValueError):
    """A cross-field problem found after the fields validated, with the dotted key it is about
    (pydantic reports a model validator's errors at the model itself, without a key)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


class _Strict(BaseModel):
    """Base: unknown keys are errors, NaN and infinities are rejected, and numbers and booleans
    are not coerced from other types (``count = true`` or ``count = "5"`` is an error, not 1 or 5).
    Lists are accepted where tuples are declared, because TOML has only arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True, allow_inf_nan=False)


def _python_scalar(value: Any) -> Any:
    """A numpy scalar (say, a sweep grid built with ``numpy.arange``) as the Python value it holds;
    duck-typed, so this module does not import numpy."""
    if getattr(value, "shape", None) == () and hasattr(value, "dtype") and hasattr(value, "item"):
        return value.item()
    return value


#: An integer that must be a TOML integer (not a bool, float or string).
Int = Annotated[int, BeforeValidator(_python_scalar), Strict()]
#: A float that may be given as a TOML integer or float (not a bool or string).
Float = Annotated[float, BeforeValidator(_python_scalar), Strict()]
#: A boolean that must be a TOML boolean.
Bool = Annotated[bool, BeforeValidator(_python_scalar), Strict()]


def _printable(value: str | None) -> str | None:
    """Names end up in one-line messages, CSV headers and file names: no control characters."""
    if value is not None and any(not ch.isprintable() for ch in value):
        raise ValueError("must not contain control characters (newlines, tabs, ...)")
    return value


_Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]

#: JSON Schema keywords (extensions) that carry a field's unit and the real setting it mirrors.
UNIT_KEY = "x-unit"
MIRRORS_KEY = "x-datadesigner"


def _doc(text: str, *, unit: str | None = None, mirrors: str | None = None) -> dict[str, Any]:
    """``Field`` keywords documenting a key: its meaning, its unit and the DataDesigner setting it
    mirrors. They feed ``docs/scenario-format.md`` and the JSON Schema, so they are the reference."""
    extra = {k: v for k, v in ((UNIT_KEY, unit), (MIRRORS_KEY, mirrors)) if v is not None}
    return {"description": text, "json_schema_extra": extra or None}


class LatencyConfig(_Strict):
    """Service time of one successful provider call, in simulated seconds.

    ``constant`` uses ``mean``; ``exponential`` has mean ``mean``; ``uniform`` draws from
    ``[low, high]``; ``lognormal`` has the given ``mean`` and coefficient of variation ``cv``.
    Draws come from the model's own random stream, seeded by the run's seed.
    """

    distribution: Literal["constant", "exponential", "uniform", "lognormal"] = Field(
        default="constant", **_doc("Shape of the service-time distribution of a successful call.")
    )
    mean: Float = Field(
        default=0.5,
        ge=0.0,
        le=86_400.0,
        **_doc("Mean service time (the value itself for `constant`); unused by `uniform`.", unit="s"),
    )
    low: Float = Field(default=0.0, ge=0.0, le=86_400.0, **_doc("Lower end of a `uniform` latency.", unit="s"))
    high: Float = Field(
        default=1.0, ge=0.0, le=86_400.0, **_doc("Upper end of a `uniform` latency; must be >= `low`.", unit="s")
    )
    cv: Float = Field(
        default=0.5,
        gt=0.0,
        le=100.0,
        **_doc("Coefficient of variation (standard deviation / mean) of a `lognormal` latency.", unit="ratio"),
    )

    @model_validator(mode="after")
    def _bounds(self) -> LatencyConfig:
        if self.distribution == "uniform" and self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low}) for a uniform latency")
        return self


class RateLimitConfig(_Strict):
    """When the endpoint answers HTTP 429 instead of serving the call.

    * ``never``: always serves;
    * ``always``: every call is a 429 (the cooling mock of the PR #743 headline);
    * ``window``: 429 for calls sent in ``[start, end)`` simulated seconds, served otherwise;
    * ``probability``: each call is a 429 with probability ``probability``;
    * ``capacity``: a token bucket refilled at ``requests_per_minute / 60`` per second holding at
      most ``burst`` tokens (default: one second's worth); a call finding less than one token is a
      429. This makes the provider's real capacity, not a script, drive the 429s.

    ``retry_after`` is the Retry-After header in seconds (0 = absent, the client then cools down
    for ``request_admission.cooldown_seconds``). ``latency`` is how long the 429 answer takes.
    """

    pattern: Literal["never", "always", "window", "probability", "capacity"] = Field(
        default="never", **_doc("Which calls the endpoint answers with HTTP 429 (see the list above).")
    )
    start: Float = Field(
        default=0.0, ge=0.0, le=MAX_SIM_TIME, **_doc("Start of the 429 window (`window` pattern).", unit="s")
    )
    end: Float | None = Field(
        default=None,
        ge=0.0,
        le=MAX_SIM_TIME,
        **_doc(
            "End of the 429 window, exclusive (`window` pattern); must be > `start`. Unset: the window never "
            "ends, so the scenario needs `stop.max_time`.",
            unit="s",
        ),
    )
    probability: Float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        **_doc("Chance that a call is a 429 (`probability` pattern).", unit="probability"),
    )
    requests_per_minute: Float = Field(
        default=60.0,
        ge=1e-6,
        le=1e9,
        **_doc("Refill rate of the token bucket (`capacity` pattern): the provider's real capacity.", unit="req/min"),
    )
    burst: Float | None = Field(
        default=None,
        ge=1.0,
        le=1e9,
        **_doc("Token-bucket size (`capacity` pattern). Unset: one second's worth of requests.", unit="requests"),
    )
    retry_after: Float = Field(
        default=0.0,
        ge=0.0,
        le=86_400.0,
        **_doc(
            "Retry-After sent with each 429; 0 means no header, so the client cools down for "
            "`request_admission.cooldown_seconds`.",
            unit="s",
            mirrors="HTTP `Retry-After` header",
        ),
    )
    latency: Float = Field(
        default=0.0, ge=0.0, le=86_400.0, **_doc("How long the endpoint takes to answer a 429.", unit="s")
    )

    @model_validator(mode="after")
    def _window(self) -> RateLimitConfig:
        if self.pattern == "window" and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be > start ({self.start}) for a window pattern")
        return self

    @property
    def never_ends(self) -> bool:
        """True when 429s can continue forever, so a run needs a time limit to stop."""
        return (
            self.pattern == "always"
            or (self.pattern == "window" and self.end is None)
            or (self.pattern == "probability" and self.probability >= 1.0)
        )


class ModelConfig(_Strict):
    """One model alias: a (provider, model id, domain) endpoint and how it behaves. Columns refer
    to it by ``name``; aliases that share provider and model id share one request resource
    (docs/model.md, "Request admission")."""

    name: _Name = Field(
        **_doc("The model alias that columns name in `model`; unique among models.", mirrors="`ModelConfig.alias`")
    )
    provider: _Name = Field(
        default="provider", **_doc("Provider name; part of the request resource key.", mirrors="`ModelConfig.provider`")
    )
    model_id: _Name | None = Field(
        default=None,
        **_doc(
            "Model identifier at the provider. Unset: the alias `name`. Aliases with the same provider and model id "
            "share the `request:<provider>/<model_id>` resource and the provider/model request cap.",
            mirrors="`ModelConfig.model`",
        ),
    )
    domain: Literal["chat", "embedding", "image", "healthcheck"] = Field(
        default="chat",
        **_doc(
            "Generation kind; one AIMD controller per (provider, model id, domain).",
            mirrors="the generation type implied by `ModelConfig.inference_parameters`",
        ),
    )
    max_parallel_requests: Int = Field(
        default=4,
        ge=1,
        le=100_000,
        **_doc(
            "Concurrent requests allowed to this model: the weight of its columns in the fair queue, the limit of its "
            "`request:` resource and the start and ceiling of its AIMD limit.",
            unit="requests",
            mirrors="`inference_parameters.max_parallel_requests`",
        ),
    )
    latency: LatencyConfig = Field(default=LatencyConfig(), **_doc("Service time of a successful call."))
    rate_limit: RateLimitConfig = Field(default=RateLimitConfig(), **_doc("When calls are answered with HTTP 429."))

    _check_names = field_validator("name", "provider", "model_id")(_printable)

    @property
    def resolved_model_id(self) -> str:
        return self.model_id or self.name


class ColumnConfig(_Strict):
    """One column of the DAG.

    ``model`` binds a cell to a model alias (a ``model`` kind task that takes a ``request:`` slot);
    ``kind = "custom_model"`` makes it a custom-model column (no request resource key;
    docs/model.md, "Task admission"). ``generator`` groups columns produced by one multi-output
    generator (default: the column's own name). ``duration`` is the service time of a local
    (non-model) task.
    """

    name: _Name = Field(**_doc("Column name; unique among columns.", mirrors="the column config's `name`"))
    strategy: Literal["cell_by_cell", "full_column"] = Field(
        default="cell_by_cell",
        **_doc(
            "`cell_by_cell`: one task per row; `full_column`: one task for the whole row group (a from-scratch "
            "task for a root column, a batch task otherwise).",
            mirrors="the generator's generation strategy",
        ),
    )
    depends_on: tuple[_Name, ...] = Field(
        default=(),
        max_length=MAX_COLUMNS,
        **_doc(
            "Columns this one reads. A cell waits for the same row of cell-by-cell upstreams and for full-column "
            "upstreams to finish the whole row group.",
            mirrors="required columns and template references",
        ),
    )
    model: _Name | None = Field(
        default=None,
        **_doc(
            "Model alias (a `models.name`) this column calls once per task. Unset: a local column.",
            mirrors="`model_alias` of an LLM column",
        ),
    )
    kind: Literal["local", "model", "custom_model"] | None = Field(
        default=None,
        **_doc(
            "Scheduling kind. Unset: `model` when `model` is set, else `local`. `custom_model` calls the model "
            "without a request resource key (no `request:` slot, no AIMD controller).",
            mirrors="the generator's scheduling metadata (group kind)",
        ),
    )
    generator: _Name | None = Field(
        default=None,
        **_doc(
            "Name of the generator producing this column. Columns that share it are one multi-output generator: "
            "one task, on the first of them in topological order. Unset: the column's own name.",
            mirrors="a multi-output generator instance (e.g. samplers sharing one generator)",
        ),
    )
    duration: Float = Field(
        default=0.0, ge=0.0, le=86_400.0, **_doc("Service time of one task of a local column.", unit="s")
    )
    weight: Int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        **_doc(
            "Fair-queue weight of a local or custom-model column (a model column's weight is its model's "
            "`max_parallel_requests`). Unset: 1.",
            mirrors="the declared scheduling weight",
        ),
    )

    _check_names = field_validator("name", "model", "generator")(_printable)

    @model_validator(mode="after")
    def _kind_matches_model(self) -> ColumnConfig:
        if self.kind in ("model", "custom_model") and self.model is None:
            raise ValueError(f"a {self.kind} column needs a 'model'")
        if self.kind == "local" and self.model is not None:
            raise ValueError("a local column cannot name a 'model'")
        return self

    @property
    def resolved_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        return "local" if self.model is None else "model"

    @property
    def generator_name(self) -> str:
        return self.generator or self.name


class RandomSizesConfig(_Strict):
    """Row-group sizes drawn uniformly from ``[min, max]`` (both included) with the run's seed."""

    min: Int = Field(ge=1, le=MAX_TOTAL_ROWS, **_doc("Smallest row group drawn.", unit="rows"))
    max: Int = Field(ge=1, le=MAX_TOTAL_ROWS, **_doc("Largest row group drawn; must be >= `min`.", unit="rows"))

    @model_validator(mode="after")
    def _ordered(self) -> RandomSizesConfig:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class RowGroupConfig(_Strict):
    """The row-group plan, in one of four forms (docs/model.md, "Row-group plan"):

    * ``count`` groups of ``size`` rows;
    * ``num_records`` rows split into groups of ``buffer_size``; only the last may be partial;
    * ``sizes``: an explicit list, one size per group, in id order;
    * ``num_records`` rows split into groups of random size (``random_sizes = {min, max}``), drawn
      from the run's seed (same seed, same plan); the last group is cut to fit.

    ``num_records``/``buffer_size`` are also what the ``max_admitted_rows`` guardrail is computed
    from. In the other forms they are the plan's total rows and its largest group; with
    ``count``/``size``, either may be given to set the guardrail's input explicitly.
    """

    count: Int | None = Field(
        default=None, ge=1, le=MAX_ROW_GROUPS, **_doc("Number of equal row groups (with `size`).", unit="row groups")
    )
    size: Int = Field(default=1, ge=1, le=MAX_TOTAL_ROWS, **_doc("Rows per group with `count`.", unit="rows"))
    num_records: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOTAL_ROWS,
        **_doc(
            "Total rows to generate, split by `buffer_size` or `random_sizes`; also the guardrail's record count.",
            unit="rows",
            mirrors="`num_records`",
        ),
    )
    buffer_size: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOTAL_ROWS,
        **_doc(
            "Rows per group with `num_records` (the last group may be partial); also the guardrail's buffer size.",
            unit="rows",
            mirrors="`RunConfig.buffer_size`",
        ),
    )
    sizes: tuple[Annotated[Int, Field(ge=1, le=MAX_TOTAL_ROWS)], ...] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ROW_GROUPS,
        **_doc(
            "Explicit plan: the size of each row group, in id order (ids 0, 1, ...). Give it alone.",
            unit="rows",
            mirrors="an explicit `(id, size)` row-group list",
        ),
    )
    random_sizes: RandomSizesConfig | None = Field(
        default=None,
        **_doc("With `num_records`: draw each group's size uniformly from `{min, max}` with the run's seed."),
    )

    @field_validator("sizes")
    @classmethod
    def _total_of_sizes(cls, sizes: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if sizes is not None:
            if sum(sizes) > MAX_TOTAL_ROWS:
                raise ValueError(f"the sizes add up to {sum(sizes)} rows, above the limit of {MAX_TOTAL_ROWS}")
        return sizes

    @model_validator(mode="after")
    def _one_form(self) -> RowGroupConfig:
        # Judged by value, not by which keys were given: a dumped scenario (a sweep's run spec)
        # holds every key, with the defaults (unset, and size 1) for the unused ones.
        if self.sizes is not None:
            extra = self._set_keys("count", "size", "num_records", "buffer_size", "random_sizes")
            if extra:
                raise ValueError(f"'sizes' lists every group; give it without {', '.join(repr(k) for k in extra)}")
            return self
        if self.random_sizes is not None:
            if self.num_records is None:
                raise ValueError("'random_sizes' needs 'num_records' (the total rows to split)")
            extra = self._set_keys("count", "size", "buffer_size")
            if extra:
                raise ValueError(f"'random_sizes' sets the sizes; give it without {', '.join(repr(k) for k in extra)}")
            if self.max_groups > MAX_ROW_GROUPS:
                raise ValueError(
                    f"num_records / random_sizes.min can give more than the limit of {MAX_ROW_GROUPS} row groups"
                )
            return self
        if self.count is None and self.num_records is None:
            raise ValueError(
                "give 'count' (with 'size'), 'num_records' (with 'buffer_size' or 'random_sizes'), or 'sizes'"
            )
        if self.count is not None and self.num_records is not None and self.buffer_size is not None:
            raise ValueError("give 'count'/'size' or 'num_records'/'buffer_size', not both")
        if self.num_records is not None and self.count is None and self.buffer_size is None:
            raise ValueError("'num_records' needs 'buffer_size' (or 'random_sizes')")
        if self.count is not None and self.count * self.size > MAX_TOTAL_ROWS:
            raise ValueError(f"count x size = {self.count * self.size} rows exceeds the limit of {MAX_TOTAL_ROWS}")
        if self.count is None and self.max_groups > MAX_ROW_GROUPS:
            raise ValueError(f"num_records / buffer_size gives more than the limit of {MAX_ROW_GROUPS} row groups")
        return self

    def _set_keys(self, *keys: str) -> list[str]:
        """Those of ``keys`` that differ from their default (``size`` defaults to 1)."""
        return [k for k in keys if getattr(self, k) != type(self).model_fields[k].default]

    @property
    def form(self) -> Literal["count", "num_records", "sizes", "random_sizes"]:
        """Which of the four plan forms this is."""
        if self.sizes is not None:
            return "sizes"
        if self.random_sizes is not None:
            return "random_sizes"
        return "count" if self.count is not None else "num_records"

    @property
    def total_rows(self) -> int:
        """Rows of the whole plan; known without drawing, in every form."""
        if self.sizes is not None:
            return sum(self.sizes)
        if self.count is not None and self.random_sizes is None:
            return self.count * self.size
        return self.num_records

    @property
    def max_groups(self) -> int:
        """Number of row groups, or for random sizes the most the draw can give."""
        if self.sizes is not None:
            return len(self.sizes)
        if self.random_sizes is not None:
            return -(-self.num_records // self.random_sizes.min)
        if self.count is not None:
            return self.count
        return -(-self.num_records // self.buffer_size)

    def fixed_sizes(self) -> list[int]:
        """Row-group sizes in id order for the forms that draw nothing (docs/model.md, "Row-group
        plan"); a ``random_sizes`` plan is drawn per run by :func:`sim.workload.row_group_plan`."""
        if self.sizes is not None:
            return list(self.sizes)
        if self.random_sizes is not None:
            raise ValueError("a random_sizes plan is drawn per run: use sim.workload.row_group_plan(config, seed)")
        if self.count is not None:
            return [self.size] * self.count
        k = -(-self.num_records // self.buffer_size)
        return [min(self.buffer_size, self.num_records - i * self.buffer_size) for i in range(k)]

    @property
    def guard_num_records(self) -> int:
        return self.num_records if self.num_records is not None else self.total_rows

    @property
    def guard_buffer_size(self) -> int:
        if self.buffer_size is not None:
            return self.buffer_size
        if self.sizes is not None:
            return max(self.sizes)
        if self.random_sizes is not None:
            return self.random_sizes.max
        return self.size


#: Names of the event-loop cost profiles shipped in ``sim/profiles`` (``<name>.toml``).
SHIPPED_LOOP_PROFILES = ("reference-2core",)


class LoopConfig(_Strict):
    """The scheduler's own event loop (`docs/event-loop.md`).

    `none` is the idealized model: scheduler work takes no time and same-instant wakes merge
    into one main-loop iteration. `calibrated` runs every piece of scheduler work as a callback
    on one simulated asyncio loop, with the CPU cost of `profile` (a shipped profile name or a
    path to a profile TOML, relative to the working directory) multiplied by `scale` (for a
    faster or slower machine).
    """

    model: Literal["calibrated", "none"] = Field(
        default="calibrated",
        **_doc(
            "`calibrated` (the default): scheduler work costs CPU on one simulated loop; `none`: the idealized "
            "zero-cost loop (results as before the loop model existed)."
        ),
    )
    profile: str = Field(
        default="reference-2core",
        min_length=1,
        max_length=1000,
        **_doc(
            "A shipped cost profile (`reference-2core`) or the path of a profile TOML (relative to the working "
            "directory)."
        ),
    )
    scale: Float = Field(
        default=1.0,
        gt=0.0,
        le=1000.0,
        **_doc("Multiplies every cost of the profile (a faster or slower machine than the profile's).", unit="factor"),
    )

    _check_profile = field_validator("profile")(_printable)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        is_path = value.endswith(".toml") or "/" in value or "\\" in value
        if not is_path and value not in SHIPPED_LOOP_PROFILES:
            raise ValueError(
                f"'{value}' is not a shipped profile {_short_list(list(SHIPPED_LOOP_PROFILES))} "
                "nor a path to a .toml profile"
            )
        return value


class SchedulerConfig(_Strict):
    """Scheduler constructor settings (docs/model.md, "Row-group admission", "Task admission" and
    "Deferral and salvage"). Defaults are the real scheduler's."""

    #: A registered policy name. It is only looked up in the registry when the run starts (policies
    #: can be registered after the scenario is loaded); a scenario cannot name code to import.
    policy: str = Field(
        default="localized",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$",
        **_doc(
            "Row-group admission policy: `fixed` (target pinned at the hard cap, as the dataset builder ships), "
            "`global` (any deferred task freezes the adaptive target; before PR #743), `localized` (deferred work "
            "blocks growth only if the next row group exposes no independent work; PR #743), or a policy "
            "registered by a plug-in.",
            mirrors="fixed vs adaptive admission; the deferred clause before / after PR #743",
        ),
    )
    max_concurrent_row_groups: Int = Field(
        default=3,
        ge=1,
        le=MAX_ROW_GROUPS,
        **_doc(
            "Hard cap on active row groups: the fixed target, and the ceiling of the adaptive one.",
            unit="row groups",
            mirrors="`RunConfig.max_concurrent_row_groups` / scheduler `max_concurrent_row_groups`",
        ),
    )
    initial_target: Int = Field(
        default=1,
        ge=1,
        le=MAX_ROW_GROUPS,
        **_doc(
            "Starting adaptive target (clamped to the hard cap); unused by `fixed`.",
            unit="row groups",
            mirrors="`adaptive_row_group_initial_target`",
        ),
    )
    max_in_flight_tasks: Int = Field(
        default=1024,
        ge=1,
        le=10_000_000,
        **_doc(
            "Limit of the `submission` resource that every task holds; 4x this is the queued-task guardrail.",
            unit="tasks",
            mirrors="`max_in_flight_tasks`",
        ),
    )
    max_model_task_admission: Int = Field(
        default=1024,
        ge=1,
        le=10_000_000,
        **_doc(
            "Limit of the `llm_wait` resource that model and custom-model tasks hold; also caps a model group's "
            "admitted limit.",
            unit="tasks",
            mirrors="`max_model_task_admission`",
        ),
    )
    salvage_max_rounds: Int = Field(
        default=2,
        ge=1,
        le=1000,
        **_doc(
            "Retry rounds per salvage of stalled row groups, each drained to quiescence.",
            unit="rounds",
            mirrors="`salvage_max_rounds`",
        ),
    )
    resalvage_backoff: Float = Field(
        default=0.05,
        ge=MIN_RESALVAGE_BACKOFF,
        le=3600.0,
        **_doc(
            "Pause before salvaging again when deferred work remains and nothing is in flight.",
            unit="s",
            mirrors="`RETRYABLE_RESALVAGE_BACKOFF_S`",
        ),
    )
    request_pressure_advisory: Bool = Field(
        default=False,
        **_doc(
            "Skip dispatching a task whose request resource is under pressure while another group's head is open; "
            "the resalvage pause then waits out the shortest cooldown. On in the dataset builder's wiring.",
            mirrors="the request-pressure advisory (a pressure provider passed to the scheduler)",
        ),
    )
    borrow_reserve_fraction: Float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        **_doc(
            "Share of each resource a group may not borrow beyond its fair share (at most 8 slots). 0.0 is the "
            "current default; 0.125 (at least 1 slot) the value at the time of PR #743.",
            unit="fraction",
            mirrors="the bounded-borrow reserve of the task-admission policy",
        ),
    )
    loop: LoopConfig = Field(
        default=LoopConfig(),
        **_doc(
            "The scheduler's own event loop: `none` (scheduler work takes no time) or `calibrated` (every step costs "
            "CPU on one simulated asyncio loop; docs/event-loop.md).",
            mirrors="the scheduler's single asyncio event loop",
        ),
    )


class RequestAdmissionConfig(_Strict):
    """AIMD request admission (docs/model.md, "Request admission"). ``enabled = false`` removes
    the controller from the loop, as in the PR #743 headline, where the mock generator raised the
    429 itself."""

    enabled: Bool = Field(
        default=True,
        **_doc(
            "Put the AIMD request-admission controller in front of every model call.",
            mirrors="a request-admission controller in the model registry",
        ),
    )
    cooldown_seconds: Float = Field(
        default=2.0,
        ge=0.0,
        le=86_400.0,
        **_doc(
            "Cooldown after a 429 without Retry-After; every 429 restarts it.",
            unit="s",
            mirrors="`RequestAdmissionConfig.cooldown_seconds`",
        ),
    )
    decrease_factor: Float = Field(
        default=0.75,
        gt=0.0,
        lt=1.0,
        **_doc(
            "Multiplicative decrease of the request limit on a 429 (floored, at least 1).",
            unit="factor",
            mirrors="`multiplicative_decrease_factor`",
        ),
    )
    increase_step: Int = Field(
        default=1,
        ge=1,
        le=100_000,
        **_doc("Additive increase of the request limit.", unit="requests", mirrors="`additive_increase_step`"),
    )
    successes_until_increase: Int = Field(
        default=25,
        ge=1,
        le=1_000_000,
        **_doc(
            "Successes outside cooldown needed for one additive increase.",
            unit="calls",
            mirrors="`successes_until_increase`",
        ),
    )
    startup_ramp_seconds: Float = Field(
        default=0.0,
        ge=0.0,
        le=86_400.0,
        **_doc(
            "Linear ramp of the limit from 1 to the cap at start-up; 0 = off; the first 429 ends it.",
            unit="s",
            mirrors="`startup_ramp_seconds`",
        ),
    )


class CallThreshold(_Strict):
    """Stop once the listed columns have made ``count`` successful calls between them."""

    columns: tuple[_Name, ...] = Field(
        min_length=1, max_length=MAX_COLUMNS, **_doc("Model columns whose successful calls are counted.")
    )
    count: Int = Field(
        ge=1,
        le=MAX_TASKS_PER_RUN,
        **_doc(
            "Successful calls, summed over `columns`, that stop the run (PR #743's headline: 300 healthy calls).",
            unit="calls",
        ),
    )


class StopConfig(_Strict):
    """Stop rules; the run ends at completion or at the first rule that fires (docs/model.md,
    "Stop rules")."""

    max_time: Float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_SIM_TIME,
        **_doc(
            "Stop at this simulated time. Required when a used model answers 429 forever.",
            unit="s",
        ),
    )
    successful_calls: CallThreshold | None = Field(
        default=None, **_doc("Stop once some columns have made this many successful calls.")
    )
    completed_rows: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOTAL_ROWS,
        **_doc("Stop once this many rows have been checkpointed.", unit="rows"),
    )
    max_events: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_EVENTS,
        **_doc(
            "Run budget: stop (reason `max_events`) after this many scheduler events (main-loop and "
            "salvage-drain passes, dispatched tasks, deferred tasks scanned by salvage); unset means "
            "DEFAULT_EVENTS_PER_TASK per planned task, at least MIN_DEFAULT_MAX_EVENTS. A safety net "
            "for runs that would never end in practice (docs/reliability.md).",
            unit="events",
        ),
    )
    max_wall_seconds: Float = Field(
        default=DEFAULT_MAX_WALL_SECONDS,
        gt=0.0,
        le=MAX_WALL_SECONDS,
        **_doc(
            "Run budget: stop (reason `max_wall_seconds`) after this much wall-clock time; such a stop "
            "is not reproducible, the event budget is.",
            unit="s",
        ),
    )


#: Bounds of the recorder's series caps (rows); the defaults are sim.metrics.MAX_SERIES_ROWS and
#: MAX_MODEL_SERIES_ROWS (a test keeps them equal).
DEFAULT_SERIES_ROWS = 200_000
DEFAULT_CALL_ROWS = 500_000
MAX_SERIES_CAP = 50_000_000


class RecorderConfig(_Strict):
    """What a run keeps row by row (docs/reliability.md, "Bounded recorder"). The summary is the
    same either way; only the stored time series differ."""

    detail: Literal["bounded", "full"] = Field(
        default="bounded",
        **_doc(
            "`bounded`: every change is kept up to the caps below, then the series are thinned to at most "
            "that many rows (the last change per time cell; call counts and time means stay exact). `full`: "
            "every scheduler sample and every call sent or answered is kept (the full per-call log; memory "
            "grows with the run)."
        ),
    )
    max_series_rows: Int = Field(
        default=DEFAULT_SERIES_ROWS,
        ge=2,
        le=MAX_SERIES_CAP,
        **_doc("Scheduler time-series rows kept before thinning, and at most after it.", unit="rows"),
    )
    max_model_series_rows: Int = Field(
        default=DEFAULT_CALL_ROWS,
        ge=512,
        le=MAX_SERIES_CAP,
        **_doc("Per-call (model) time-series rows kept before thinning, and at most after it.", unit="rows"),
    )


@dataclass(frozen=True)
class PlanSize:
    """How much work a scenario plans and how much memory its run holds at most (estimated)."""

    rows: int
    groups: int  # for random sizes, the most the draw can give
    cell_generators: int
    full_generators: int
    live_tasks: int  # tasks alive at once at most: admitted rows x cell generators + groups x full ones
    hard_cap: int
    largest_group: int
    series_rows: int
    detail: str

    @property
    def tasks(self) -> int:
        return self.rows * self.cell_generators + self.groups * self.full_generators

    @property
    def live_bytes(self) -> int:
        return self.live_tasks * BYTES_PER_LIVE_TASK + self.groups * BYTES_PER_ROW_GROUP

    @property
    def series_bytes(self) -> int:
        return self.series_rows * BYTES_PER_SERIES_ROW

    @property
    def peak_bytes(self) -> int:
        return self.live_bytes + self.series_bytes

    def describe_tasks(self) -> str:
        return (
            f"{self.rows} rows x {self.cell_generators} cell-by-cell generators + "
            f"{self.groups} row groups x {self.full_generators} full-column generators"
        )

    def too_big(self) -> str:
        gb = 1024**3
        return (
            f"the run would hold about {self.peak_bytes / gb:.1f} GB, above the limit of "
            f"{MAX_RUN_BYTES / gb:.1f} GB per run: {self.live_tasks} live tasks at most (hard cap "
            f"{self.hard_cap} x {self.largest_group}-row groups; about {BYTES_PER_LIVE_TASK} bytes each), "
            f"{self.groups} row groups and {self.series_rows} time-series rows ({self.detail} detail); "
            "lower scheduler.max_concurrent_row_groups or the group size, or keep recorder.detail = 'bounded'"
        )


def plan_size(scenario: Scenario) -> PlanSize:
    """The plan's real task count and its run's peak memory estimate, in constant time (no plan drawn)."""
    rg = scenario.row_groups
    strategy: dict[str, str] = {}
    model_generators = set()
    for col in scenario.columns:
        strategy.setdefault(col.generator_name, col.strategy)
        if col.model is not None:
            model_generators.add(col.generator_name)
    cell = sum(1 for v in strategy.values() if v == "cell_by_cell")
    full = len(strategy) - cell
    rows, groups = rg.total_rows, rg.max_groups
    hard_cap = scenario.scheduler.max_concurrent_row_groups
    largest = rg.guard_buffer_size
    live_rows = min(rows, hard_cap * largest)
    live_tasks = live_rows * cell + min(groups, hard_cap) * full
    rec = scenario.recorder
    if rec.detail == "full":  # one sample per task or so, two call rows per model task
        model_cell = sum(1 for g in model_generators if strategy[g] == "cell_by_cell")
        series_rows = (
            rows * cell + groups * full + 2 * (rows * model_cell + groups * (len(model_generators) - model_cell))
        )
    else:
        series_rows = rec.max_series_rows + rec.max_model_series_rows
    return PlanSize(rows, groups, cell, full, live_tasks, hard_cap, largest, series_rows, rec.detail)


class Scenario(_Strict):
    """A whole simulation case, resolved and validated."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        **_doc("Scenario name, used in result folders and tables: letters, digits, `_`, `.`, `-`."),
    )
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION_LENGTH, **_doc("What the scenario shows, for people.")
    )
    seed: Int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        **_doc("Default seed of a run: latencies, random 429s and random row-group sizes are drawn from it."),
    )
    row_groups: RowGroupConfig = Field(**_doc("The row-group plan (required)."))
    models: tuple[ModelConfig, ...] = Field(
        default=(), max_length=MAX_COLUMNS, **_doc("Model aliases (`[[models]]` tables).")
    )
    columns: tuple[ColumnConfig, ...] = Field(
        min_length=1, max_length=MAX_COLUMNS, **_doc("The columns of the DAG (`[[columns]]` tables; at least one).")
    )
    scheduler: SchedulerConfig = Field(default=SchedulerConfig(), **_doc("Scheduler settings."))
    request_admission: RequestAdmissionConfig = Field(
        default=RequestAdmissionConfig(), **_doc("AIMD request admission.")
    )
    stop: StopConfig = Field(default=StopConfig(), **_doc("Stop rules."))
    recorder: RecorderConfig = Field(
        default=RecorderConfig(), **_doc("What the run keeps row by row (bounded by default).")
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        model_names = [m.name for m in self.models]
        _no_duplicates(model_names, "models", "model name")
        col_names = [c.name for c in self.columns]
        _no_duplicates(col_names, "columns", "column name")
        known_cols = set(col_names)
        known_models = set(model_names)
        for i, col in enumerate(self.columns):
            for dep in col.depends_on:
                if dep not in known_cols:
                    raise _KeyedError(f"columns.{i}.depends_on", f"{col.name} depends on unknown column '{dep}'")
                if dep == col.name:
                    raise _KeyedError(f"columns.{i}.depends_on", f"column {col.name} cannot depend on itself")
            if col.model is not None and col.model not in known_models:
                raise _KeyedError(
                    f"columns.{i}.model", f"model '{col.model}' is not among models {_short_list(sorted(known_models))}"
                )
        cycle = _find_cycle({c.name: c.depends_on for c in self.columns})
        if cycle:
            raise _KeyedError("columns", f"dependency cycle {' -> '.join(cycle)}")
        self._check_generators()
        if self.stop.successful_calls is not None:
            for name in self.stop.successful_calls.columns:
                if name not in known_cols:
                    raise _KeyedError("stop.successful_calls.columns", f"unknown column '{name}'")
        size = plan_size(self)
        if size.peak_bytes > MAX_RUN_BYTES:  # first: the more useful message when both apply
            raise _KeyedError("row_groups" if size.live_bytes >= size.series_bytes else "recorder", size.too_big())
        if size.tasks > MAX_TASKS_PER_RUN:
            raise _KeyedError(
                "row_groups",
                f"the plan makes {size.tasks} tasks ({size.describe_tasks()}), above the limit of "
                f"{MAX_TASKS_PER_RUN} tasks per run",
            )
        endless = [m.name for m in self.models if m.rate_limit.never_ends and self._model_used(m.name)]
        if endless and self.stop.max_time is None:
            raise _KeyedError(
                "stop.max_time",
                f"models {_short_list(endless)} answer 429 forever, so the run can never complete; set stop.max_time",
            )
        return self

    def _model_used(self, name: str) -> bool:
        return any(c.model == name for c in self.columns)

    def _check_generators(self) -> None:
        """Columns sharing a generator must agree on strategy, kind, model and dependencies."""
        by_gen: dict[str, list[int]] = {}
        for i, col in enumerate(self.columns):
            by_gen.setdefault(col.generator_name, []).append(i)
        for gen, indices in by_gen.items():
            cols = [self.columns[i] for i in indices]
            names_in_gen = {c.name for c in cols}
            first = cols[0]
            for i, other in zip(indices[1:], cols[1:], strict=True):
                for attr in ("strategy", "model", "resolved_kind"):
                    if getattr(other, attr) != getattr(first, attr):
                        raise _KeyedError(
                            f"columns.{i}.generator",
                            f"generator '{gen}' produces columns that disagree on {attr.removeprefix('resolved_')}",
                        )
                if set(first.depends_on) - names_in_gen != set(other.depends_on) - names_in_gen:
                    raise _KeyedError(
                        f"columns.{i}.depends_on", f"columns of generator '{gen}' must share the same depends_on"
                    )
            for i, col in zip(indices, cols, strict=True):
                if any(d in names_in_gen for d in col.depends_on):
                    raise _KeyedError(
                        f"columns.{i}.depends_on", f"generator '{gen}' cannot depend on its own output columns"
                    )


def _short_list(names: list[str], limit: int = 8) -> str:
    """``[a, b, ...]`` cut after ``limit`` names, so that a message stays one readable line."""
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _no_duplicates(names: list[str], key: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _KeyedError(f"{key}.{i}.name", f"duplicate {what} '{name}'")
        seen.add(name)


def _find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one dependency cycle as a list of names, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for start in deps:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(deps[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(deps.get(nxt, ()))))
    return None


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error messages
# ---------------------------------------------------------------------------------------------


def _clip(text: str, limit: int = MAX_MESSAGE_PART) -> str:
    """One printable line of at most about ``limit`` characters (hostile keys can be huge)."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")

#: A key as a path: table keys as strings, list items as indices.
Loc = tuple[str | int, ...]


def _key_part(part: object) -> str:
    """A dotted-key part as TOML writes it: bare if it can be, else quoted (hostile keys may hold
    dots, colons or newlines, which would make the message ambiguous)."""
    text = str(part)
    if _BARE_KEY.match(text):
        return _clip(text)
    return '"' + _clip(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _item_name(items: list[Any], index: int) -> str | None:
    """The name that stands for ``items[index]`` in a key (``models.cooling``), or None when the
    name would be ambiguous or unusable in ``--set``: missing, duplicated, all digits (it would read
    as an index) or not a bare key."""
    item = items[index]
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or name.isdigit() or not _BARE_KEY.match(name):
        return None
    if sum(1 for other in items if isinstance(other, dict) and other.get("name") == name) != 1:
        return None
    return name


def _display_key(loc: Loc, data: Any) -> str:
    """The dotted key of ``loc`` as a user writes it: list items by name where they have one."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            parts.append(_item_name(node, part) or str(part))
            node = node[part]
        else:
            parts.append(_key_part(part))
            node = node.get(part) if isinstance(node, dict) and isinstance(part, str) else None
    return ".".join(parts)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``tuple[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the table at ``loc`` (list indices step into the item)."""
    cls: type[BaseModel] | None = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if cls is not None else None
        if field is None:
            return None
        cls = _model_in(field.annotation)
    return cls


#: Longer than any key of the format: an unknown key past this length gets no suggestion.
_LONGEST_KEY_PART = 64


@functools.cache
def _all_keys(cls: type[BaseModel] = Scenario, prefix: str = "") -> tuple[str, ...]:
    """Every dotted key of the format; list items appear as ``<name>`` (``models.<name>.latency``)."""
    keys: list[str] = []
    for name, field in cls.model_fields.items():
        key = prefix + name
        keys.append(key)
        inner = _model_in(field.annotation)
        if inner is not None:
            is_list = any(a is Ellipsis for a in get_args(_strip_optional(field.annotation)))
            keys.extend(_all_keys(inner, key + (".<name>." if is_list else ".")))
    return tuple(keys)


def _strip_optional(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in get_args(annotation) else annotation


def _suggest_key(loc: Loc, data: Any) -> str | None:
    """The valid key closest to the unknown key at ``loc``: a sibling with a similar name, else the
    same name elsewhere in the format (``max_concurrent_row_groups`` -> ``scheduler.max_...``)."""
    if not loc or not isinstance(loc[-1], str) or len(loc[-1]) > _LONGEST_KEY_PART:
        return None  # no key is that long, and fuzzy matching a hostile key would take seconds
    parent, wrong = loc[:-1], loc[-1]
    cls = _model_at(parent)
    if cls is not None:
        close = difflib.get_close_matches(wrong, list(cls.model_fields), n=1, cutoff=0.6)
        if close:
            return _display_key((*parent, close[0]), data)
    leaves = {k.rsplit(".", 1)[-1]: k for k in reversed(_all_keys())}  # the first key of each leaf name
    close = difflib.get_close_matches(wrong, list(leaves), n=1, cutoff=0.8)
    return leaves[close[0]] if close else None


@dataclass(frozen=True)
class _Applied:
    """One override as applied: how to name it in a message, the path it set (list items as
    indices) and the tables it created. An error inside that path, or at a key the override
    created (a typo creates one), is the override's fault, not the file's."""

    label: str
    path: Loc
    created: frozenset[Loc]

    def owns(self, loc: Loc) -> bool:
        return loc[: len(self.path)] == self.path or loc in self.created

    def encloses(self, loc: Loc) -> bool:
        return self.path[: len(loc)] == loc


def _full_loc(item: Mapping[str, Any]) -> Loc:
    """An error's location, extended by the key a cross-field check named (``columns.2.model``)."""
    loc: Loc = tuple(item.get("loc", ()))
    cause = (item.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyedError) and cause.key:
        loc += tuple(int(p) if p.isdigit() else p for p in cause.key.split("."))
    return loc


def _reason(item: Mapping[str, Any], loc: Loc, data: Any, owner: _Applied | None) -> str:
    kind = item.get("type")
    msg = str(item.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "extra_forbidden":
        suggestion = _suggest_key(loc, data)
        if suggestion is not None and owner is not None and len(owner.path) > len(loc):
            suggestion += "." + ".".join(_key_part(p) for p in owner.path[len(loc) :])
        return "unknown key" + (f"; did you mean '{suggestion}'?" if suggestion else "")
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false (unquoted), got {_clip(repr(item.get('input')), 40)}"
    return msg.replace("valid tuple", "valid array").replace("Tuple should", "Array should")


def _format_validation_error(
    err: ValidationError, source: str, data: Any = None, applied: Iterable[_Applied] = ()
) -> str:
    """One line per problem: ``<source or override>: <dotted key>: <reason>``."""
    applied = list(applied)[::-1]  # the last override of a key is the one that counts
    items = err.errors(include_url=False)
    raw_locs = [tuple(item.get("loc", ())) for item in items]
    lines: list[str] = []
    for item, raw in zip(items, raw_locs, strict=True):
        # pydantic adds "should have at least 1 item after validation" to a list whose items all
        # failed; the items' own errors already say what is wrong.
        if item.get("type") == "too_short" and any(o[: len(raw)] == raw and len(o) > len(raw) for o in raw_locs):
            continue
        loc = _full_loc(item)
        owner = next((a for a in applied if a.owns(loc)), None)
        reason = _reason(item, loc, data, owner)
        if owner is None:
            context = next((a for a in applied if a.encloses(loc)), None)
            if context is not None:
                reason += f" (with {context.label})"
        key = _display_key(loc, data)
        lines.append(f"{owner.label if owner else source}: {key or '(top level)'}: {_clip(reason, 400)}")
        if len(lines) >= 50:
            lines.append(f"{source}: ... ({len(items) - 50} more problems)")
            break
    return "\n".join(lines)


def scenario_from_dict(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a mapping into a :class:`Scenario`, raising :class:`ScenarioError`."""
    return _validate(data, source, ())


def _validate(data: Mapping[str, Any], source: str, applied: Iterable[_Applied]) -> Scenario:
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: (top level): a scenario must be a table of keys, got {type(data).__name__}")
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as err:
        raise ScenarioError(_format_validation_error(err, source, data, applied)) from None
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError) as err:
        reason = "values are nested too deeply" if isinstance(err, RecursionError) else _clip(str(err), 400)
        raise ScenarioError(f"{source}: (top level): {reason}") from None


def parse_override(text: str, option: str = "--set") -> tuple[str, Any]:
    """Parse ``dotted.key=value``; the value is read as a TOML value, else as a plain string.

    ``option`` names the override in messages (``--set 'key=value': ...``)."""
    if not isinstance(text, str):
        raise ScenarioError(f"{option} {_clip(repr(text))}: expected a 'key=value' string")
    shown = _clip(text)
    if any(not ch.isprintable() for ch in text):
        raise ScenarioError(
            f"{option} '{shown}': holds a line break or another control character; an override is one line"
        )
    if "=" not in text:
        raise ScenarioError(f"{option} '{shown}': expected key=value, e.g. scheduler.max_concurrent_row_groups=64")
    key, raw = text.split("=", 1)
    key = key.strip()
    _check_key(key, f"{option} '{shown}'")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise ScenarioError(f"{option} '{shown}': the value is nested too deeply") from None
    return key, value


def _check_key(key: Any, label: str) -> None:
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ScenarioError(f"{label}: the key must be a dotted path such as scheduler.policy")
    if key.count(".") > 16:
        raise ScenarioError(f"{label}: the key is deeper than any scenario value (16 levels)")
    if any(not ch.isprintable() for ch in key):
        raise ScenarioError(f"{label}: the key holds a line break or another control character")


def _show_value(value: Any) -> str:
    """A value as it would be written after ``=`` in ``--set``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted-key overrides applied.

    A path through a list of tables uses the item's ``name`` (``models.cooling.latency.mean=1``)
    or its index (``columns.0.duration=2``). Unknown top-level paths are rejected by validation.
    """
    return _apply_overrides(data, overrides)[0]


def _apply_overrides(
    data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str]
) -> tuple[dict[str, Any], list[_Applied]]:
    """:func:`apply_overrides`, also returning what each override set, so that validation errors
    can be blamed on the override (``--set 'k=v'`` for strings, ``override 'k=v'`` for a mapping)."""
    import copy

    if isinstance(overrides, str):  # a single "k=v" string is an easy mistake for a list of them
        overrides = [overrides]
    try:
        result = copy.deepcopy(data)
    except RecursionError:
        raise ScenarioError("scenario: values are nested too deeply") from None
    if isinstance(overrides, Mapping):
        items = [(k, v, f"override '{_clip(str(k))}={_clip(_show_value(v))}'") for k, v in overrides.items()]
    else:
        items = [(*parse_override(o), f"--set '{_clip(o)}'") for o in overrides]
    applied = []
    for key, value, label in items:
        _check_key(key, label)
        applied.append(_set_dotted(result, key, value, label))
    return result, applied


def _set_dotted(data: dict[str, Any], key: str, value: Any, label: str) -> _Applied:
    parts = key.split(".")
    node: Any = data
    path: list[str | int] = []
    created: set[Loc] = set()
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, label, tuple(path), data)
            path.append(index)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            path.append(part)
            if part not in node:
                created.add(tuple(path))
                node[part] = {}
            if last:
                node[part] = value
            else:
                node = node[part]
        else:
            where = _display_key(tuple(path), data)
            raise ScenarioError(f"{label}: {where}: holds a value, not a table, so '{_clip(part)}' cannot be set in it")
    return _Applied(label, tuple(path), frozenset(created))


def _list_index(items: list[Any], part: str, label: str, path: Loc, data: Any) -> int:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    if part.isascii() and part.isdigit() and int(part) < len(items):
        return int(part)
    names = [str(item.get("name")) for item in items if isinstance(item, dict)]
    close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ScenarioError(
        f"{label}: {_display_key(path, data)}: no item named '{_clip(part)}' ({hint}known: {_short_list(names)})"
    )


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """Read the raw TOML of a scenario file, raising :class:`ScenarioError` on I/O or syntax.

    At most :data:`MAX_FILE_BYTES` are read, so a wrong path such as ``/dev/zero`` fails at once.
    """
    text = read_user_text(path, "scenario file", MAX_FILE_BYTES, ScenarioError)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: invalid TOML: {err}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: invalid TOML: values are nested too deeply") from None


def load_scenario(
    path: str | Path,
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> Scenario:
    """Load, override and validate a scenario: a file, or a bundled scenario's name (``"cooling-2048"``).

    Names follow the command line's rule (:mod:`sim.catalog`): text ending in ``.toml`` or
    containing a path separator, and any :class:`~pathlib.Path`, is a file; other text names a
    bundled scenario. A directory is never a scenario.
    """
    from .catalog import resolve_scenario  # the catalog reads scenario files: imported here, not at the top

    path = resolve_scenario(path)
    data = read_scenario_file(path)
    data, applied = _apply_overrides(data, overrides)
    return _validate(data, str(path), applied)


def with_overrides(scenario: Scenario, overrides: Mapping[str, Any] | Iterable[str]) -> Scenario:
    """Return a new validated scenario with dotted-key overrides applied to ``scenario``."""
    data = scenario.model_dump(mode="python", exclude_defaults=False)
    _tuples_to_lists(data)
    data, applied = _apply_overrides(data, overrides)
    return _validate(data, f"scenario {scenario.name}", applied)


def _tuples_to_lists(node: Any) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = _tuples_to_lists(v)
        return node
    if isinstance(node, (list, tuple)):
        return [_tuples_to_lists(v) for v in node]
    return node
