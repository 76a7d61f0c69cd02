"""What was asked: the typed, validated scenario.

A scenario is a TOML file validated by pydantic v2. Every tunable that the specification
(`shared/reference/scheduler-model.md`) names is a field here with the spec's default, so that a
scenario file only states what differs from the real scheduler. Errors are raised as
:class:`ScenarioError`, whose message names the file, the dotted key and the reason; the CLI prints
it without a traceback.

This module knows nothing about SimPy.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

#: Upper bounds that keep a single run within memory; they are validated up front so a typo
#: such as ``count = 1e12`` fails with a clear message instead of exhausting the machine.
MAX_ROW_GROUPS = 1_000_000
MAX_TOTAL_ROWS = 50_000_000
MAX_COLUMNS = 256
MAX_TASKS_PER_RUN = 20_000_000


class ScenarioError(ValueError):
    """A scenario (file, override or object) is invalid. The message is meant for humans."""


class _Strict(BaseModel):
    """Base: unknown keys are errors, values are not silently coerced across types."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


PositiveFloat = float
NonNegFloat = float


def _finite(value: float, what: str = "value") -> float:
    if value is None:
        return value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ValueError(f"{what} must be a finite number, got {value}")
    return value


class LatencyConfig(_Strict):
    """Service time of one successful provider call, in simulated seconds.

    ``constant`` uses ``mean``; ``exponential`` has mean ``mean``; ``uniform`` draws from
    ``[low, high]``; ``lognormal`` has the given ``mean`` and coefficient of variation ``cv``.
    """

    distribution: Literal["constant", "exponential", "uniform", "lognormal"] = "constant"
    mean: float = Field(default=0.5, ge=0.0, le=86_400.0)
    low: float = Field(default=0.0, ge=0.0, le=86_400.0)
    high: float = Field(default=1.0, ge=0.0, le=86_400.0)
    cv: float = Field(default=0.5, gt=0.0, le=100.0)

    _check_finite = field_validator("mean", "low", "high", "cv")(lambda v: _finite(v))

    @model_validator(mode="after")
    def _bounds(self) -> LatencyConfig:
        if self.distribution == "uniform" and self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low}) for a uniform latency")
        return self


class RateLimitConfig(_Strict):
    """When the endpoint answers HTTP 429 instead of serving the call.

    * ``never``: always serves;
    * ``always``: every call is a 429 (the #743 headline's cooling mock);
    * ``window``: 429 for calls sent in ``[start, end)`` simulated seconds, served otherwise;
    * ``probability``: each call is a 429 with probability ``probability``;
    * ``capacity``: a token bucket refilled at ``requests_per_minute / 60`` per second holding at
      most ``burst`` tokens (default: one second's worth); a call finding less than one token is a
      429. This makes the provider's real capacity, not a script, drive the 429s.

    ``retry_after`` is the Retry-After header in seconds (0 = absent, the client then cools down
    for ``request_admission.cooldown_seconds``). ``latency`` is how long the 429 answer takes.
    """

    pattern: Literal["never", "always", "window", "probability", "capacity"] = "never"
    start: float = Field(default=0.0, ge=0.0)
    end: float | None = Field(default=None, ge=0.0)
    probability: float = Field(default=0.0, ge=0.0, le=1.0)
    requests_per_minute: float = Field(default=60.0, gt=0.0, le=1e9)
    burst: float | None = Field(default=None, ge=1.0, le=1e9)
    retry_after: float = Field(default=0.0, ge=0.0, le=86_400.0)
    latency: float = Field(default=0.0, ge=0.0, le=86_400.0)

    _check_finite = field_validator("start", "probability", "requests_per_minute", "retry_after", "latency")(
        lambda v: _finite(v)
    )

    @field_validator("end")
    @classmethod
    def _end_finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("end must be a finite number of seconds (omit it for 'no end')")
        return v

    @model_validator(mode="after")
    def _window(self) -> RateLimitConfig:
        if self.pattern == "window" and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be > start ({self.start}) for a window pattern")
        return self

    @property
    def never_ends(self) -> bool:
        """True when 429s can continue forever, so a run needs a time limit to stop."""
        return self.pattern == "always" or (self.pattern == "window" and self.end is None)


class ModelConfig(_Strict):
    """One model alias: a (provider, model id, domain) endpoint and how it behaves."""

    name: str = Field(min_length=1, max_length=128)
    provider: str = Field(default="provider", min_length=1, max_length=128)
    model_id: str | None = Field(default=None, min_length=1, max_length=128)
    domain: Literal["chat", "embedding", "image", "healthcheck"] = "chat"
    max_parallel_requests: int = Field(default=4, ge=1, le=100_000)
    latency: LatencyConfig = LatencyConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()

    @property
    def resolved_model_id(self) -> str:
        return self.model_id or self.name


class ColumnConfig(_Strict):
    """One column of the DAG.

    ``model`` binds a cell to a model alias (a ``model`` kind task that takes a ``request:`` slot);
    ``kind = "custom_model"`` makes it a custom-model column (no request resource key, spec 4.1).
    ``generator`` groups columns produced by one multi-output generator (default: the column's
    own name). ``duration`` is the service time of a local (non-model) task.
    """

    name: str = Field(min_length=1, max_length=128)
    strategy: Literal["cell_by_cell", "full_column"] = "cell_by_cell"
    depends_on: tuple[str, ...] = ()
    model: str | None = None
    kind: Literal["local", "model", "custom_model"] | None = None
    generator: str | None = Field(default=None, min_length=1, max_length=128)
    duration: float = Field(default=0.0, ge=0.0, le=86_400.0)
    weight: int | None = Field(default=None, ge=1, le=100_000)

    _check_finite = field_validator("duration")(lambda v: _finite(v))

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


class RowGroupConfig(_Strict):
    """The row-group plan: either ``count`` groups of ``size`` rows, or ``num_records`` split
    into groups of ``buffer_size`` (only the last may be partial, spec 2.1).

    ``num_records``/``buffer_size`` are also what the scheduler uses for the
    ``max_admitted_rows`` guardrail (spec 2.4); with ``count``/``size`` they default to the
    plan's total rows and ``size``.
    """

    count: int | None = Field(default=None, ge=1, le=MAX_ROW_GROUPS)
    size: int = Field(default=1, ge=1, le=MAX_TOTAL_ROWS)
    num_records: int | None = Field(default=None, ge=1, le=MAX_TOTAL_ROWS)
    buffer_size: int | None = Field(default=None, ge=1, le=MAX_TOTAL_ROWS)

    @model_validator(mode="after")
    def _one_form(self) -> RowGroupConfig:
        if self.count is None and self.num_records is None:
            raise ValueError("give either 'count' (with 'size') or 'num_records' (with 'buffer_size')")
        if self.count is not None and self.num_records is not None and self.buffer_size is not None:
            raise ValueError("give 'count'/'size' or 'num_records'/'buffer_size', not both")
        if self.num_records is not None and self.count is None and self.buffer_size is None:
            raise ValueError("'num_records' needs 'buffer_size'")
        if self.count is not None and self.count * self.size > MAX_TOTAL_ROWS:
            raise ValueError(f"count x size = {self.count * self.size} rows exceeds the limit of {MAX_TOTAL_ROWS}")
        if self.count is None and math.ceil(self.num_records / self.buffer_size) > MAX_ROW_GROUPS:
            raise ValueError(f"num_records / buffer_size gives more than {MAX_ROW_GROUPS} row groups")
        return self

    def sizes(self) -> list[int]:
        """Row-group sizes in id order (spec 2.1)."""
        if self.count is not None:
            return [self.size] * self.count
        k = math.ceil(self.num_records / self.buffer_size)
        return [min(self.buffer_size, self.num_records - i * self.buffer_size) for i in range(k)]

    @property
    def guard_num_records(self) -> int:
        return self.num_records if self.num_records is not None else sum(self.sizes())

    @property
    def guard_buffer_size(self) -> int:
        return self.buffer_size if self.buffer_size is not None else self.size


class SchedulerConfig(_Strict):
    """Scheduler constructor knobs (spec 2.3, 2.4, 4.4, 5.4). Defaults are the spec's."""

    policy: str = "localized"
    max_concurrent_row_groups: int = Field(default=3, ge=1, le=MAX_ROW_GROUPS)
    initial_target: int = Field(default=1, ge=1, le=MAX_ROW_GROUPS)
    max_in_flight_tasks: int = Field(default=1024, ge=1, le=10_000_000)
    max_model_task_admission: int = Field(default=1024, ge=1, le=10_000_000)
    salvage_max_rounds: int = Field(default=2, ge=1, le=1000)
    resalvage_backoff: float = Field(default=0.05, gt=0.0, le=3600.0)
    request_pressure_advisory: bool = False
    borrow_reserve_fraction: float = Field(default=0.0, ge=0.0, le=1.0)

    _check_finite = field_validator("resalvage_backoff", "borrow_reserve_fraction")(lambda v: _finite(v))


class RequestAdmissionConfig(_Strict):
    """AIMD request admission (spec 4.7). ``enabled = false`` removes the controller from the
    loop, as in the #743 headline, where the mock generator raised the 429 itself."""

    enabled: bool = True
    cooldown_seconds: float = Field(default=2.0, ge=0.0, le=86_400.0)
    decrease_factor: float = Field(default=0.75, gt=0.0, lt=1.0)
    increase_step: int = Field(default=1, ge=1, le=100_000)
    successes_until_increase: int = Field(default=25, ge=1, le=1_000_000)
    startup_ramp_seconds: float = Field(default=0.0, ge=0.0, le=86_400.0)

    _check_finite = field_validator("cooldown_seconds", "decrease_factor", "startup_ramp_seconds")(lambda v: _finite(v))


class CallThreshold(_Strict):
    """Stop once the listed columns have made ``count`` successful calls between them."""

    columns: tuple[str, ...] = Field(min_length=1)
    count: int = Field(ge=1, le=MAX_TASKS_PER_RUN)


class StopConfig(_Strict):
    """Stop rules; the run ends at completion or at the first rule that fires."""

    max_time: float | None = Field(default=None, gt=0.0)
    successful_calls: CallThreshold | None = None
    completed_rows: int | None = Field(default=None, ge=1, le=MAX_TOTAL_ROWS)

    @field_validator("max_time")
    @classmethod
    def _finite_time(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("max_time must be a finite number of seconds (omit it to run to completion)")
        return v


class Scenario(_Strict):
    """A whole simulation case, resolved and validated."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    row_groups: RowGroupConfig
    models: tuple[ModelConfig, ...] = ()
    columns: tuple[ColumnConfig, ...] = Field(min_length=1, max_length=MAX_COLUMNS)
    scheduler: SchedulerConfig = SchedulerConfig()
    request_admission: RequestAdmissionConfig = RequestAdmissionConfig()
    stop: StopConfig = StopConfig()

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
                    raise ValueError(f"columns[{i}] ({col.name}): depends_on names unknown column '{dep}'")
                if dep == col.name:
                    raise ValueError(f"columns[{i}] ({col.name}): a column cannot depend on itself")
            if col.model is not None and col.model not in known_models:
                raise ValueError(
                    f"columns[{i}] ({col.name}): model '{col.model}' is not among models {sorted(known_models)}"
                )
        cycle = _find_cycle({c.name: c.depends_on for c in self.columns})
        if cycle:
            raise ValueError(f"columns: dependency cycle {' -> '.join(cycle)}")
        self._check_generators()
        if self.stop.successful_calls is not None:
            for name in self.stop.successful_calls.columns:
                if name not in known_cols:
                    raise ValueError(f"stop.successful_calls.columns names unknown column '{name}'")
        total_rows = sum(self.row_groups.sizes())
        tasks = total_rows * len(self.columns) + len(self.row_groups.sizes()) * len(self.columns)
        if tasks > MAX_TASKS_PER_RUN:
            raise ValueError(f"row_groups: the plan makes about {tasks} tasks, above the limit of {MAX_TASKS_PER_RUN}")
        endless = [m.name for m in self.models if m.rate_limit.never_ends and self._model_used(m.name)]
        if endless and self.stop.max_time is None:
            raise ValueError(
                f"stop.max_time: models {endless} answer 429 forever, so the run can never complete; set stop.max_time"
            )
        return self

    def _model_used(self, name: str) -> bool:
        return any(c.model == name for c in self.columns)

    def _check_generators(self) -> None:
        """Columns sharing a generator must agree on strategy, kind, model and dependencies."""
        by_gen: dict[str, list[ColumnConfig]] = {}
        for col in self.columns:
            by_gen.setdefault(col.generator_name, []).append(col)
        names_in_gen = {g: {c.name for c in cols} for g, cols in by_gen.items()}
        for gen, cols in by_gen.items():
            first = cols[0]
            for other in cols[1:]:
                for attr in ("strategy", "model", "resolved_kind"):
                    if getattr(other, attr) != getattr(first, attr):
                        raise ValueError(
                            f"columns ({other.name}): generator '{gen}' produces columns that disagree on {attr}"
                        )
                external_first = set(first.depends_on) - names_in_gen[gen]
                external_other = set(other.depends_on) - names_in_gen[gen]
                if external_first != external_other:
                    raise ValueError(
                        f"columns ({other.name}): columns of generator '{gen}' must share the same depends_on"
                    )
            if any(d in names_in_gen[gen] for c in cols for d in c.depends_on):
                raise ValueError(f"columns: generator '{gen}' cannot depend on its own output columns")


def _no_duplicates(names: list[str], key: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{key}: duplicate {what} '{name}'")
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


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item.get("loc", ())) or "(top level)"
        msg = item.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if item.get("type") == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def scenario_from_dict(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a mapping into a :class:`Scenario`, raising :class:`ScenarioError`."""
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as err:
        raise ScenarioError(_format_validation_error(err, source)) from None
    except (TypeError, ValueError, OverflowError, RecursionError) as err:
        raise ScenarioError(f"{source}: {err}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``dotted.key=value``; the value is read as a TOML value, else as a plain string."""
    if "=" not in text:
        raise ScenarioError(f"override '{text}': expected key=value, e.g. scheduler.max_concurrent_row_groups=64")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ScenarioError(f"override '{text}': the key must be a dotted path such as scheduler.policy")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted-key overrides applied.

    A path through a list of tables uses the item's ``name`` (``models.cooling.latency.mean=1``)
    or its index (``columns.0.duration=2``). Unknown top-level paths are rejected by validation.
    """
    import copy

    result = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set_dotted(result, key, value)
    return result


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = _step(node, part, key, create=True)
    last = parts[-1]
    if isinstance(node, list):
        idx = _list_index(node, last, key)
        node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(f"override '{key}': '{'.'.join(parts[:-1])}' is not a table")


def _step(node: Any, part: str, key: str, create: bool) -> Any:
    if isinstance(node, dict):
        if part not in node:
            node[part] = {}
        return node[part]
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    raise ScenarioError(f"override '{key}': '{part}' is inside a value that is not a table")


def _list_index(items: list[Any], part: str, key: str) -> int:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    if part.isdigit() and int(part) < len(items):
        return int(part)
    names = [item.get("name") for item in items if isinstance(item, dict)]
    raise ScenarioError(f"override '{key}': no item named '{part}' (known: {names})")


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """Read the raw TOML of a scenario file, raising :class:`ScenarioError` on I/O or syntax."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read: {err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: invalid TOML: {err}") from None


def load_scenario(
    path: str | Path,
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> Scenario:
    """Load, override and validate a scenario file."""
    data = read_scenario_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return scenario_from_dict(data, source=str(path))


def with_overrides(scenario: Scenario, overrides: Mapping[str, Any] | Iterable[str]) -> Scenario:
    """Return a new validated scenario with dotted-key overrides applied to ``scenario``."""
    data = scenario.model_dump(mode="python", exclude_defaults=False)
    _tuples_to_lists(data)
    return scenario_from_dict(apply_overrides(data, overrides), source=f"scenario {scenario.name}")


def _tuples_to_lists(node: Any) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = _tuples_to_lists(v)
        return node
    if isinstance(node, (list, tuple)):
        return [_tuples_to_lists(v) for v in node]
    return node
