"""What was asked: the typed, validated scenario.

A scenario is a TOML file validated by pydantic v2. Every tunable that the specification
(`shared/reference/scheduler-model.md`) names is a field here with the spec's default, so that a
scenario file only states what differs from the real scheduler. Errors are raised as
:class:`ScenarioError`, whose message names the file, the dotted key and the reason; the CLI prints
it without a traceback.

This module knows nothing about SimPy.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

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

#: Upper bounds that keep a single run within memory; they are validated up front so a typo
#: such as ``count = 1e12`` fails with a clear message instead of exhausting the machine.
MAX_ROW_GROUPS = 1_000_000
MAX_TOTAL_ROWS = 50_000_000
MAX_COLUMNS = 256
#: A run keeps about 0.1 KB per live task and about 0.5 KB per model call (time series and
#: tables), so 5 million tasks stay within a few GB.
MAX_TASKS_PER_RUN = 5_000_000
#: Simulated seconds: beyond this, float time steps of a millisecond are lost to rounding.
MAX_SIM_TIME = 1.0e9
#: The smallest resalvage backoff: a smaller pause can round to zero and spin at one instant.
MIN_RESALVAGE_BACKOFF = 1.0e-4
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


class LatencyConfig(_Strict):
    """Service time of one successful provider call, in simulated seconds.

    ``constant`` uses ``mean``; ``exponential`` has mean ``mean``; ``uniform`` draws from
    ``[low, high]``; ``lognormal`` has the given ``mean`` and coefficient of variation ``cv``.
    """

    distribution: Literal["constant", "exponential", "uniform", "lognormal"] = "constant"
    mean: Float = Field(default=0.5, ge=0.0, le=86_400.0)
    low: Float = Field(default=0.0, ge=0.0, le=86_400.0)
    high: Float = Field(default=1.0, ge=0.0, le=86_400.0)
    cv: Float = Field(default=0.5, gt=0.0, le=100.0)

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
    start: Float = Field(default=0.0, ge=0.0, le=MAX_SIM_TIME)
    end: Float | None = Field(default=None, ge=0.0, le=MAX_SIM_TIME)
    probability: Float = Field(default=0.0, ge=0.0, le=1.0)
    requests_per_minute: Float = Field(default=60.0, ge=1e-6, le=1e9)
    burst: Float | None = Field(default=None, ge=1.0, le=1e9)
    retry_after: Float = Field(default=0.0, ge=0.0, le=86_400.0)
    latency: Float = Field(default=0.0, ge=0.0, le=86_400.0)

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
    """One model alias: a (provider, model id, domain) endpoint and how it behaves."""

    name: _Name
    provider: _Name = "provider"
    model_id: _Name | None = None
    domain: Literal["chat", "embedding", "image", "healthcheck"] = "chat"
    max_parallel_requests: Int = Field(default=4, ge=1, le=100_000)
    latency: LatencyConfig = LatencyConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()

    _check_names = field_validator("name", "provider", "model_id")(_printable)

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

    name: _Name
    strategy: Literal["cell_by_cell", "full_column"] = "cell_by_cell"
    depends_on: tuple[_Name, ...] = Field(default=(), max_length=MAX_COLUMNS)
    model: _Name | None = None
    kind: Literal["local", "model", "custom_model"] | None = None
    generator: _Name | None = None
    duration: Float = Field(default=0.0, ge=0.0, le=86_400.0)
    weight: Int | None = Field(default=None, ge=1, le=100_000)

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


class RowGroupConfig(_Strict):
    """The row-group plan: either ``count`` groups of ``size`` rows, or ``num_records`` split
    into groups of ``buffer_size`` (only the last may be partial, spec 2.1).

    ``num_records``/``buffer_size`` are also what the scheduler uses for the
    ``max_admitted_rows`` guardrail (spec 2.4); with ``count``/``size`` they default to the
    plan's total rows and ``size``.
    """

    count: Int | None = Field(default=None, ge=1, le=MAX_ROW_GROUPS)
    size: Int = Field(default=1, ge=1, le=MAX_TOTAL_ROWS)
    num_records: Int | None = Field(default=None, ge=1, le=MAX_TOTAL_ROWS)
    buffer_size: Int | None = Field(default=None, ge=1, le=MAX_TOTAL_ROWS)

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
        if self.count is None and -(-self.num_records // self.buffer_size) > MAX_ROW_GROUPS:
            raise ValueError(f"num_records / buffer_size gives more than the limit of {MAX_ROW_GROUPS} row groups")
        return self

    def sizes(self) -> list[int]:
        """Row-group sizes in id order (spec 2.1)."""
        if self.count is not None:
            return [self.size] * self.count
        k = -(-self.num_records // self.buffer_size)
        return [min(self.buffer_size, self.num_records - i * self.buffer_size) for i in range(k)]

    @property
    def guard_num_records(self) -> int:
        return self.num_records if self.num_records is not None else sum(self.sizes())

    @property
    def guard_buffer_size(self) -> int:
        return self.buffer_size if self.buffer_size is not None else self.size


#: Names of the event-loop cost profiles shipped in ``sim/profiles`` (``<name>.toml``).
SHIPPED_LOOP_PROFILES = ("reference-2core",)


class LoopConfig(_Strict):
    """The scheduler's own event loop (``docs/event-loop.md``).

    ``none`` is the idealized model: scheduler work takes no time and same-instant wakes merge
    into one main-loop iteration. ``calibrated`` runs every piece of scheduler work as a callback
    on one simulated asyncio loop, with the CPU cost of ``profile`` (a shipped profile name or a
    path to a profile TOML, relative to the working directory) multiplied by ``scale`` (for a
    faster or slower machine).
    """

    model: Literal["calibrated", "none"] = "none"
    profile: str = Field(default="reference-2core", min_length=1, max_length=1000)
    scale: Float = Field(default=1.0, gt=0.0, le=1000.0)

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
    """Scheduler constructor knobs (spec 2.3, 2.4, 4.4, 5.4). Defaults are the spec's."""

    #: A registered policy name. It is only looked up in the registry when the run starts (policies
    #: can be registered after the scenario is loaded); a scenario cannot name code to import.
    policy: str = Field(default="localized", min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    max_concurrent_row_groups: Int = Field(default=3, ge=1, le=MAX_ROW_GROUPS)
    initial_target: Int = Field(default=1, ge=1, le=MAX_ROW_GROUPS)
    max_in_flight_tasks: Int = Field(default=1024, ge=1, le=10_000_000)
    max_model_task_admission: Int = Field(default=1024, ge=1, le=10_000_000)
    salvage_max_rounds: Int = Field(default=2, ge=1, le=1000)
    resalvage_backoff: Float = Field(default=0.05, ge=MIN_RESALVAGE_BACKOFF, le=3600.0)
    request_pressure_advisory: Bool = False
    borrow_reserve_fraction: Float = Field(default=0.0, ge=0.0, le=1.0)
    loop: LoopConfig = LoopConfig()


class RequestAdmissionConfig(_Strict):
    """AIMD request admission (spec 4.7). ``enabled = false`` removes the controller from the
    loop, as in the #743 headline, where the mock generator raised the 429 itself."""

    enabled: Bool = True
    cooldown_seconds: Float = Field(default=2.0, ge=0.0, le=86_400.0)
    decrease_factor: Float = Field(default=0.75, gt=0.0, lt=1.0)
    increase_step: Int = Field(default=1, ge=1, le=100_000)
    successes_until_increase: Int = Field(default=25, ge=1, le=1_000_000)
    startup_ramp_seconds: Float = Field(default=0.0, ge=0.0, le=86_400.0)


class CallThreshold(_Strict):
    """Stop once the listed columns have made ``count`` successful calls between them."""

    columns: tuple[_Name, ...] = Field(min_length=1, max_length=MAX_COLUMNS)
    count: Int = Field(ge=1, le=MAX_TASKS_PER_RUN)


class StopConfig(_Strict):
    """Stop rules; the run ends at completion or at the first rule that fires."""

    max_time: Float | None = Field(default=None, gt=0.0, le=MAX_SIM_TIME)
    successful_calls: CallThreshold | None = None
    completed_rows: Int | None = Field(default=None, ge=1, le=MAX_TOTAL_ROWS)


class Scenario(_Strict):
    """A whole simulation case, resolved and validated."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    seed: Int = Field(default=0, ge=0, le=2**63 - 1)
    row_groups: RowGroupConfig
    models: tuple[ModelConfig, ...] = Field(default=(), max_length=MAX_COLUMNS)
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
        rg = self.row_groups
        total_rows = rg.count * rg.size if rg.count is not None else rg.num_records
        groups = rg.count if rg.count is not None else -(-rg.num_records // rg.buffer_size)
        tasks = (total_rows + groups) * len(self.columns)
        if tasks > MAX_TASKS_PER_RUN:
            raise _KeyedError(
                "row_groups",
                f"the plan makes about {tasks} tasks ({len(self.columns)} columns), above the limit of "
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


def _key_part(part: object) -> str:
    """A dotted-key part as TOML writes it: bare if it can be, else quoted (hostile keys may hold
    dots, colons or newlines, which would make the message ambiguous)."""
    text = str(part)
    if _BARE_KEY.match(text):
        return _clip(text)
    return '"' + _clip(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``<source>: <dotted key>: <reason>``."""
    items = err.errors(include_url=False, include_input=False)
    locs = [tuple(item.get("loc", ())) for item in items]
    lines: list[str] = []
    for item, loc in zip(items, locs, strict=True):
        # pydantic adds "should have at least 1 item after validation" to a list whose items all
        # failed; the items' own errors already say what is wrong.
        if item.get("type") == "too_short" and any(o[: len(loc)] == loc and len(o) > len(loc) for o in locs):
            continue
        cause = (item.get("ctx") or {}).get("error")
        key = ".".join(_key_part(p) for p in loc)
        if isinstance(cause, _KeyedError):
            key = ".".join(k for k in (key, cause.key) if k)
        msg = str(item.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if item.get("type") == "extra_forbidden":
            msg = "unknown key"
        msg = msg.replace("valid tuple", "valid array").replace("Tuple should", "Array should")
        lines.append(f"{source}: {key or '(top level)'}: {_clip(msg, 400)}")
        if len(lines) >= 50:
            lines.append(f"{source}: ... ({len(items) - 50} more problems)")
            break
    return "\n".join(lines)


def scenario_from_dict(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a mapping into a :class:`Scenario`, raising :class:`ScenarioError`."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: (top level): a scenario must be a table of keys, got {type(data).__name__}")
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as err:
        raise ScenarioError(_format_validation_error(err, source)) from None
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError) as err:
        reason = "values are nested too deeply" if isinstance(err, RecursionError) else _clip(str(err), 400)
        raise ScenarioError(f"{source}: (top level): {reason}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``dotted.key=value``; the value is read as a TOML value, else as a plain string."""
    if not isinstance(text, str):
        raise ScenarioError(f"override {_clip(repr(text))}: expected a 'key=value' string")
    shown = _clip(text)
    if "=" not in text:
        raise ScenarioError(f"override '{shown}': expected key=value, e.g. scheduler.max_concurrent_row_groups=64")
    key, raw = text.split("=", 1)
    key = key.strip()
    _check_key(key, shown)
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise ScenarioError(f"override '{shown}': the value is nested too deeply") from None
    return key, value


def _check_key(key: Any, shown: str) -> None:
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ScenarioError(f"override '{shown}': the key must be a dotted path such as scheduler.policy")
    if key.count(".") > 16:
        raise ScenarioError(f"override '{shown}': the key is deeper than any scenario value (16 levels)")


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted-key overrides applied.

    A path through a list of tables uses the item's ``name`` (``models.cooling.latency.mean=1``)
    or its index (``columns.0.duration=2``). Unknown top-level paths are rejected by validation.
    """
    import copy

    if isinstance(overrides, str):  # a single "k=v" string is an easy mistake for a list of them
        overrides = [overrides]
    try:
        result = copy.deepcopy(data)
    except RecursionError:
        raise ScenarioError("scenario: values are nested too deeply") from None
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in items:
        _check_key(key, _clip(str(key)))
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
        raise ScenarioError(f"override '{_clip(key)}': '{_clip('.'.join(parts[:-1]))}' is not a table")


def _step(node: Any, part: str, key: str, create: bool) -> Any:
    if isinstance(node, dict):
        if part not in node:
            node[part] = {}
        return node[part]
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    raise ScenarioError(f"override '{_clip(key)}': '{_clip(part)}' is inside a value that is not a table")


def _list_index(items: list[Any], part: str, key: str) -> int:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    if part.isascii() and part.isdigit() and int(part) < len(items):
        return int(part)
    names = [item.get("name") for item in items if isinstance(item, dict)]
    raise ScenarioError(f"override '{_clip(key)}': no item named '{_clip(part)}' (known: {_short_list(names)})")


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """Read the raw TOML of a scenario file, raising :class:`ScenarioError` on I/O or syntax.

    At most :data:`MAX_FILE_BYTES` are read, so a wrong path such as ``/dev/zero`` fails at once.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"{path}: the file is larger than the limit of {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{path}: cannot read: not UTF-8 text ({err.reason} at byte {err.start})") from None
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
