"""Scenario loading under hostile input: every rejection is a clear ``ScenarioError``.

The loader (``load_scenario``, ``scenario_from_dict``, ``parse_override``, ``apply_overrides``)
is fuzzed with arbitrary TOML-able values: wrong types at every key, huge integers, NaN and
infinities, deep nesting, long strings, unknown keys, cyclic and deep DAGs, thousands of columns,
mutated files. Whatever comes in, the result is a validated ``Scenario`` or a ``ScenarioError``
whose message has one line per problem, ``<source>: <dotted key>: <reason>``: never another
exception, a traceback, a hang or a memory blow-up. Size caps are checked up front (fast, with
little memory) and their messages state the limit.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sim
from sim.cli import main as cli_main
from sim.policies import POLICIES
from sim.scenario import (
    MAX_COLUMNS,
    MAX_DESCRIPTION_LENGTH,
    MAX_FILE_BYTES,
    MAX_ROW_GROUPS,
    MAX_SIM_TIME,
    MAX_TASKS_PER_RUN,
    MAX_TOTAL_ROWS,
    MIN_RESALVAGE_BACKOFF,
    Scenario,
    ScenarioError,
    apply_overrides,
    load_scenario,
    parse_override,
    scenario_from_dict,
)
from sim.workload import build_workload

from .strategies import examples, scenario_dicts

SCENARIOS = Path(__file__).resolve().parent.parent / "sim" / "scenarios"
BUNDLED = sorted(SCENARIOS.glob("*.toml"))
#: A message line longer than this is not "clear" any more (hostile keys are clipped).
MAX_LINE = 600

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def assert_clear(err: ScenarioError, source: str | None = None) -> None:
    """One problem per line, each ``<source>: <key>: <reason>``; short; no traceback."""
    text = str(err)
    assert text and "Traceback" not in text
    for line in text.split("\n"):
        assert 0 < len(line) <= MAX_LINE, line[:200]
        assert line.isprintable(), repr(line[:200])
        if source is not None:
            assert line.startswith(f"{source}: "), line
            assert ": " in line[len(source) + 2 :], line  # a key, then a reason


def outcome(call: Callable[[], Any], source: str | None = None) -> Any:
    """Run ``call``: return its value, or ``None`` after checking a ScenarioError is clear.
    Any other exception fails the test (that is the property)."""
    try:
        return call()
    except ScenarioError as err:
        assert_clear(err, source)
        return None


def minimal() -> dict[str, Any]:
    return {"name": "fuzz", "row_groups": {"count": 2, "size": 1}, "columns": [{"name": "a"}]}


def full() -> dict[str, Any]:
    """A scenario that sets every key, so wrong values can be put at each of them."""
    return {
        "name": "full",
        "description": "every key",
        "seed": 3,
        "row_groups": {"count": 2, "size": 2},
        "models": [
            {
                "name": "m",
                "provider": "p",
                "model_id": "id",
                "domain": "chat",
                "max_parallel_requests": 2,
                "latency": {"distribution": "uniform", "mean": 0.1, "low": 0.0, "high": 0.2, "cv": 0.5},
                "rate_limit": {
                    "pattern": "window",
                    "start": 0.0,
                    "end": 1.0,
                    "probability": 0.1,
                    "requests_per_minute": 60.0,
                    "burst": 2.0,
                    "retry_after": 0.5,
                    "latency": 0.01,
                },
            }
        ],
        "columns": [
            {
                "name": "seed",
                "strategy": "full_column",
                "kind": "local",
                "generator": "g",
                "duration": 0.1,
                "weight": 1,
            },
            {"name": "a", "depends_on": ["seed"], "model": "m"},
        ],
        "scheduler": {
            "policy": "localized",
            "max_concurrent_row_groups": 4,
            "initial_target": 1,
            "max_in_flight_tasks": 8,
            "max_model_task_admission": 8,
            "salvage_max_rounds": 2,
            "resalvage_backoff": 0.05,
            "request_pressure_advisory": False,
            "borrow_reserve_fraction": 0.0,
        },
        "request_admission": {
            "enabled": True,
            "cooldown_seconds": 1.0,
            "decrease_factor": 0.75,
            "increase_step": 1,
            "successes_until_increase": 5,
            "startup_ramp_seconds": 0.0,
        },
        "stop": {"max_time": 10.0, "successful_calls": {"columns": ["a"], "count": 3}, "completed_rows": 2},
    }


def leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaf_paths(v, (*prefix, k))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, v in enumerate(node):
            yield from leaf_paths(v, (*prefix, i))
    else:
        yield prefix


def named(data: Any, path: tuple[Any, ...]) -> str:
    """The dotted key a message should show for ``path``: a list item by its name when that name
    is a plain key, not all digits and unique in its list; otherwise by its index."""
    parts = []
    node = data
    for part in path:
        if isinstance(part, int) and isinstance(node, list):
            names = [item.get("name") if isinstance(item, dict) else None for item in node]
            name = names[part]
            plain = isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_\-]+", name) and not name.isdigit()
            parts.append(name if plain and names.count(name) == 1 else str(part))
            node = node[part]
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts)


def set_path(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def assert_fast_and_small(call: Callable[[], Any], seconds: float = 2.0, megabytes: float = 50.0) -> Any:
    """Run ``call`` under tracemalloc; fail if it is slow or allocates a lot."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        value = call()
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert peak < megabytes * 2**20, f"peak {peak / 2**20:.1f} MB"
    return value


# ---------------------------------------------------------------------------------------------
# Hypothesis: arbitrary TOML-able values
# ---------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**18, 10**100, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308, -1e-9]),
    st.text(max_size=30),
    st.sampled_from(["", " ", "x" * 5000, "a\nb", "\x00", "é" * 300, "__import__('os')", "os:system"]),
    st.dates(),
    st.datetimes(),
    st.times(),
)
key_text = st.one_of(
    st.sampled_from(
        ["name", "count", "size", "columns", "models", "model", "depends_on", "pattern", "policy", "max_time"]
    ),
    st.text(max_size=20),
)
toml_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(key_text, children, max_size=6),
    ),
    max_leaves=20,
)


@examples(100)
@given(st.dictionaries(key_text, toml_values, max_size=8))
def test_arbitrary_top_level_tables_are_rejected_cleanly(data: dict[str, Any]) -> None:
    outcome(lambda: scenario_from_dict(data, source="fuzz.toml"), "fuzz.toml")


@examples(120)
@given(st.data())
def test_any_value_at_any_key_of_a_valid_scenario(data: st.DataObject) -> None:
    base = data.draw(scenario_dicts(max_columns=4))
    paths = list(leaf_paths(base))
    path = data.draw(st.sampled_from(paths))
    value = data.draw(toml_values)
    set_path(base, path, value)
    result = outcome(lambda: scenario_from_dict(base, source="s.toml"), "s.toml")
    assert result is None or isinstance(result, Scenario)


@examples(80)
@given(st.data())
def test_unknown_keys_anywhere_are_named(data: st.DataObject) -> None:
    base = full()
    tables = [()] + [p[:-1] for p in leaf_paths(base) if len(p) > 1]
    where = data.draw(st.sampled_from(sorted(set(tables), key=str)))
    key = data.draw(st.text(min_size=1, max_size=40).filter(lambda k: k not in _keys_at(base, where)))
    node: Any = base
    for part in where:
        node = node[part]
    node[key] = data.draw(toml_values)
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(base, source="u.toml")
    assert_clear(info.value, "u.toml")
    assert "unknown key" in str(info.value)


def _keys_at(base: dict[str, Any], where: tuple[Any, ...]) -> set[str]:
    node: Any = base
    for part in where:
        node = node[part]
    return set(node)


@examples(300)
@given(st.text(max_size=200))
def test_parse_override_never_raises_anything_else(text: str) -> None:
    parsed = outcome(lambda: parse_override(text))
    if parsed is not None:
        key, _ = parsed
        assert key and all(key.split("."))


@examples(120)
@given(
    st.one_of(
        st.lists(st.text(max_size=60), max_size=4),
        st.lists(
            st.builds(
                lambda k, v: f"{k}={v}",
                st.sampled_from(
                    ["row_groups.count", "columns.0.depends_on", "models.0.latency.mean", "scheduler", "columns.a.b"]
                ),
                st.sampled_from(["1", "-1", "1e999", "nan", "inf", "true", '"x"', "[1, [2]]", "{a = 1}", "9" * 400]),
            ),
            max_size=4,
        ),
        st.dictionaries(st.one_of(key_text, st.integers()), toml_values, max_size=4),
    )
)
def test_overrides_apply_or_fail_cleanly(overrides: Any) -> None:
    base = full()
    data = outcome(lambda: apply_overrides(base, overrides))
    assert base == full()  # never mutates its input
    if data is not None:
        outcome(lambda: scenario_from_dict(data, source="o.toml"), "o.toml")


def _mutate(text: str, data: st.DataObject) -> str:
    ops = data.draw(st.lists(st.tuples(st.sampled_from("dirt"), st.integers(0, len(text))), min_size=1, max_size=4))
    for op, pos in ops:
        pos = min(pos, len(text))
        if op == "d":
            text = text[:pos] + text[pos + data.draw(st.integers(1, 20)) :]
        elif op == "i":
            text = text[:pos] + data.draw(st.text(max_size=20)) + text[pos:]
        elif op == "r":
            text = (
                text[:pos]
                + data.draw(st.sampled_from(["[", "]", "=", '"', "\n", "[[columns]]\n", "9" * 30]))
                + text[pos:]
            )
        else:
            text = text[:pos]
    return text


@examples(120)
@given(st.data())
def test_mutated_scenario_files_load_or_fail_cleanly(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(BUNDLED))
    text = _mutate(path.read_text(encoding="utf-8"), data)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "mutated.toml"
        target.write_text(text, encoding="utf-8")
        outcome(lambda: load_scenario(target), str(target))


@examples(100)
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_cleanly(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "bytes.toml"
        target.write_bytes(raw)
        assert outcome(lambda: load_scenario(target), str(target)) is None


# ---------------------------------------------------------------------------------------------
# Wrong types at every key (exhaustive, deterministic)
# ---------------------------------------------------------------------------------------------

WRONG_VALUES = [True, "text", 1.5, -1, 0, [], {}, [1, 2], 10**30, math.nan, math.inf, -math.inf, nested_list(50)]


def test_full_scenario_is_valid() -> None:
    assert scenario_from_dict(full()).name == "full"


@pytest.mark.parametrize("path", list(leaf_paths(full())), ids=lambda p: ".".join(map(str, p)))
def test_wrong_value_at_each_key_names_that_key(path: tuple[Any, ...]) -> None:
    rejected = 0
    for value in WRONG_VALUES:
        data = full()
        set_path(data, path, value)
        try:
            scenario_from_dict(data, source="w.toml")
        except ScenarioError as err:
            assert_clear(err, "w.toml")
            rejected += 1
            keys = [line.split(": ", 2)[1] for line in str(err).split("\n")]
            assert any(_related(named(data, path), path, key) for key in keys), (value, str(err))
    assert rejected >= len(WRONG_VALUES) - 3  # a few values (0, -1, 1.5) are valid for some keys


def _related(dotted: str, path: tuple[Any, ...], key: str) -> bool:
    """The message names the key itself (``dotted``, list items by name), a table holding it, or,
    for a value valid on its own that breaks a cross-field rule (a renamed column or model), the
    column or stop rule it breaks."""
    if key == dotted or dotted.startswith(key + ".") or key.startswith(dotted + "."):
        return True
    renames = path[-1] in ("name", "model", "generator", "depends_on") or path[:2] == ("stop", "successful_calls")
    return renames and key.startswith(("columns", "stop"))


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("row_groups", "count"), True, "valid integer"),
        (("row_groups", "count"), "5", "valid integer"),
        (("row_groups", "count"), 2.0, "valid integer"),
        (("scheduler", "request_pressure_advisory"), "yes", "must be true or false (unquoted), got 'yes'"),
        (("scheduler", "request_pressure_advisory"), 1, "must be true or false (unquoted), got 1"),
        (("stop", "max_time"), "10", "valid number"),
        (("stop", "max_time"), True, "valid number"),
        (("stop", "max_time"), math.nan, "finite number"),
        (("stop", "max_time"), math.inf, "finite number"),
        (("columns", 0, "duration"), -1.0, "greater than or equal to 0"),
        (("models", 0, "latency", "mean"), math.nan, "finite number"),
        (("models", 0, "rate_limit", "probability"), 1.5, "less than or equal to 1"),
        (("columns", 1, "depends_on"), "seed", "valid array"),
        (("columns", 0, "name"), "a\nb", "control characters"),
        (("seed",), 2**64, "less than or equal to"),
        (("scheduler", "policy"), "os:system", "scheduler.policy"),
        (("scheduler", "policy"), "__import__('os').system('true')", "scheduler.policy"),
    ],
)
def test_no_silent_coercion(path: tuple[Any, ...], value: Any, reason: str) -> None:
    data = full()
    set_path(data, path, value)
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, source="c.toml")
    assert_clear(info.value, "c.toml")
    assert f"c.toml: {named(data, path)}: " in str(info.value)
    assert reason in str(info.value)


# ---------------------------------------------------------------------------------------------
# Size caps: validated up front, fast, with the limit in the message
# ---------------------------------------------------------------------------------------------


def _with(**row_groups: Any) -> dict[str, Any]:
    return {**minimal(), "row_groups": row_groups}


@pytest.mark.parametrize(
    ("data", "key", "limit"),
    [
        (_with(count=10**9), "row_groups.count", MAX_ROW_GROUPS),
        (_with(count=10**100, size=10**100), "row_groups.count", MAX_ROW_GROUPS),
        (_with(count=2, size=10**9), "row_groups.size", MAX_TOTAL_ROWS),
        (_with(count=MAX_ROW_GROUPS, size=MAX_ROW_GROUPS), "row_groups", MAX_TOTAL_ROWS),
        (_with(num_records=MAX_TOTAL_ROWS, buffer_size=1), "row_groups", MAX_ROW_GROUPS),
        (_with(count=MAX_ROW_GROUPS, size=50), "row_groups", MAX_TASKS_PER_RUN),
        (_with(num_records=10**12, buffer_size=10**6), "row_groups.num_records", MAX_TOTAL_ROWS),
        (
            {**minimal(), "columns": [{"name": f"c{i}"} for i in range(5000)]},
            "columns",
            MAX_COLUMNS,
        ),
        (
            {**minimal(), "models": [{"name": f"m{i}"} for i in range(MAX_COLUMNS + 1)]},
            "models",
            MAX_COLUMNS,
        ),
        ({**minimal(), "description": "x" * 10**7}, "description", MAX_DESCRIPTION_LENGTH),
        ({**minimal(), "stop": {"max_time": 1e300}}, "stop.max_time", MAX_SIM_TIME),
        ({**minimal(), "scheduler": {"resalvage_backoff": 1e-300}}, "scheduler.resalvage_backoff", None),
        (
            {**minimal(), "stop": {"successful_calls": {"columns": ["a"] * 100_000, "count": 1}}},
            "stop.successful_calls.columns",
            MAX_COLUMNS,
        ),
        ({**minimal(), "stop": {"completed_rows": 10**12}}, "stop.completed_rows", MAX_TOTAL_ROWS),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_caps_fail_fast_and_name_the_limit(data: dict[str, Any], key: str, limit: int | None) -> None:
    with pytest.raises(ScenarioError) as info:
        assert_fast_and_small(lambda: scenario_from_dict(data, source="cap.toml"))
    text = str(info.value)
    assert_clear(info.value, "cap.toml")
    assert f"cap.toml: {key}: " in text, text
    if limit is not None:
        assert str(int(limit)) in text, text
    if key == "scheduler.resalvage_backoff":
        assert str(MIN_RESALVAGE_BACKOFF) in text


def test_largest_allowed_plan_still_validates_quickly() -> None:
    data = _with(count=MAX_TASKS_PER_RUN // 2 - 1, size=1)
    data["row_groups"]["count"] = min(MAX_ROW_GROUPS, data["row_groups"]["count"])
    scenario = assert_fast_and_small(lambda: scenario_from_dict(data))
    assert scenario.row_groups.count == MAX_ROW_GROUPS


def test_deep_dag_at_the_column_cap_is_valid_and_one_more_is_not() -> None:
    chain = [{"name": "c0"}] + [{"name": f"c{i}", "depends_on": [f"c{i - 1}"]} for i in range(1, MAX_COLUMNS)]
    scenario = assert_fast_and_small(lambda: scenario_from_dict({**minimal(), "columns": chain}))
    assert len(scenario.columns) == MAX_COLUMNS
    assert build_workload(scenario).topo_order == tuple(range(MAX_COLUMNS))
    longer = chain + [{"name": "extra", "depends_on": [f"c{MAX_COLUMNS - 1}"]}]
    with pytest.raises(ScenarioError, match=f"at most {MAX_COLUMNS} items"):
        scenario_from_dict({**minimal(), "columns": longer})


@pytest.mark.parametrize("length", [2, 3, MAX_COLUMNS])
def test_cycles_of_any_length_are_named(length: int) -> None:
    cols = [{"name": f"c{i}", "depends_on": [f"c{(i + 1) % length}"]} for i in range(length)]
    with pytest.raises(ScenarioError) as info:
        assert_fast_and_small(lambda: scenario_from_dict({**minimal(), "columns": cols}, source="cyc.toml"))
    assert_clear(info.value, "cyc.toml")
    assert "cyc.toml: columns: dependency cycle c0 -> c1" in str(info.value)


def test_dense_dag_at_the_cap_validates_quickly() -> None:
    cols = [{"name": f"c{i}", "depends_on": [f"c{j}" for j in range(max(0, i - 64), i)]} for i in range(MAX_COLUMNS)]
    scenario = assert_fast_and_small(lambda: scenario_from_dict({**minimal(), "columns": cols}), seconds=5.0)
    assert len(scenario.columns) == MAX_COLUMNS


@pytest.mark.parametrize(
    "data",
    [
        {**minimal(), "description": nested_list(100_000)},
        {**minimal(), "scheduler": nested_dict(100_000)},
        {**minimal(), "columns": [{"name": "a", "depends_on": nested_list(10_000)}]},
    ],
    ids=["deep-list", "deep-table", "deep-depends-on"],
)
def test_deeply_nested_values_are_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError) as info:
        assert_fast_and_small(lambda: scenario_from_dict(data, source="deep.toml"), megabytes=200)
    assert_clear(info.value, "deep.toml")


def test_deep_nesting_in_overrides_and_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="nested too deeply"):
        parse_override("description=" + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ScenarioError, match="nested too deeply"):
        apply_overrides({"x": nested_list(100_000)}, ["name=a"])
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ScenarioError, match="nested too deeply") as info:
        load_scenario(path)
    assert_clear(info.value, str(path))
    with pytest.raises(ScenarioError, match="16 levels"):
        apply_overrides(minimal(), ["a." * 5000 + "b=1"])


def test_file_caps_and_unreadable_files(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text('name = "x"\n' + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ScenarioError, match=f"limit of {MAX_FILE_BYTES} bytes"):
        assert_fast_and_small(lambda: load_scenario(big), megabytes=3 * MAX_FILE_BYTES / 2**20)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ScenarioError, match="limit of"):
            assert_fast_and_small(lambda: load_scenario("/dev/zero"), megabytes=3 * MAX_FILE_BYTES / 2**20)
    with pytest.raises(ScenarioError, match="cannot read") as info:
        load_scenario(tmp_path)
    assert_clear(info.value, str(tmp_path))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = \xff\xfe\n")
    with pytest.raises(ScenarioError, match="not UTF-8") as info:
        load_scenario(binary)
    assert_clear(info.value, str(binary))
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.toml")


def test_hostile_keys_are_clipped_and_quoted() -> None:
    data = {**minimal(), "k" * 100_000: 1, 'a: b\n"c"': 2}
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, source="k.toml")
    assert_clear(info.value, "k.toml")
    lines = str(info.value).split("\n")
    assert len(lines) == 2
    assert all(line.endswith(": unknown key") for line in lines)
    assert 'k.toml: "a: b\\n\\"c\\"": unknown key' in lines


def test_many_problems_are_capped_at_fifty_lines() -> None:
    data = {**minimal(), **{f"unknown{i}": i for i in range(500)}}
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, source="many.toml")
    lines = str(info.value).split("\n")
    assert len(lines) == 51
    assert lines[-1] == "many.toml: ... (450 more problems)"


@pytest.mark.parametrize("data", [None, [], "name = 'x'", 42, [("name", "x")]])
def test_non_tables_are_rejected(data: Any) -> None:
    with pytest.raises(ScenarioError, match="a scenario must be a table of keys") as info:
        scenario_from_dict(data, source="t.toml")
    assert_clear(info.value, "t.toml")


def test_override_edge_cases() -> None:
    with pytest.raises(ScenarioError, match="no item named"):
        apply_overrides(full(), ["columns.²=1"])  # a unicode digit is not an index
    with pytest.raises(ScenarioError, match="dotted path"):
        apply_overrides(full(), {1: 2})
    with pytest.raises(ScenarioError, match="dotted path"):
        parse_override("a..b=1")
    with pytest.raises(ScenarioError, match="key=value"):
        parse_override(12)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="not a table"):
        apply_overrides(full(), ["name.x=1"])
    # A single string is one override, not a sequence of one-character overrides.
    assert apply_overrides(full(), "seed=9")["seed"] == 9


# ---------------------------------------------------------------------------------------------
# Semantic limits that keep runs finite
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate_limit",
    [{"pattern": "always"}, {"pattern": "window", "start": 0.0}, {"pattern": "probability", "probability": 1.0}],
    ids=["always", "open-window", "probability-1"],
)
def test_endless_429s_need_a_time_limit(rate_limit: dict[str, Any]) -> None:
    data = {**minimal(), "models": [{"name": "m", "rate_limit": rate_limit}], "columns": [{"name": "a", "model": "m"}]}
    with pytest.raises(ScenarioError, match="s.toml: stop.max_time: models \\['m'\\] answer 429 forever"):
        scenario_from_dict(data, source="s.toml")
    data["stop"] = {"max_time": 1.0}
    assert sim.simulate(scenario_from_dict(data)).summary["stop_reason"] == "max_time"


def test_cross_field_errors_carry_their_key() -> None:
    cases = {
        "columns.b.depends_on": [{"name": "a"}, {"name": "b", "depends_on": ["nope"]}],
        "columns.a.model": [{"name": "a", "model": "nope"}],
        "columns.1.name": [{"name": "a"}, {"name": "a"}],  # a duplicate name cannot name its item
        "columns.c.generator": [
            {"name": "a"},
            {"name": "b", "generator": "g"},
            {"name": "c", "generator": "g", "strategy": "full_column"},
        ],
        "columns.c.depends_on": [
            {"name": "a"},
            {"name": "b", "generator": "g"},
            {"name": "c", "generator": "g", "depends_on": ["a"]},
        ],
    }
    for key, cols in cases.items():
        with pytest.raises(ScenarioError) as info:
            scenario_from_dict({**minimal(), "columns": cols}, source="x.toml")
        assert str(info.value).startswith(f"x.toml: {key}: "), (key, str(info.value))


# ---------------------------------------------------------------------------------------------
# Policies: names are data, looked up in the registry, never evaluated
# ---------------------------------------------------------------------------------------------


def test_unregistered_policy_in_a_scenario_fails_with_the_registered_names(tmp_path: Path) -> None:
    data = {**minimal(), "scheduler": {"policy": "nope"}}
    scenario = scenario_from_dict(data)  # a name only: policies may be registered after loading
    with pytest.raises(ScenarioError) as info:  # the name came from the scenario: the key is named
        sim.simulate(scenario)
    message = str(info.value)
    assert "scheduler.policy: unknown policy 'nope'" in message
    for name in POLICIES:
        assert name in message


def test_cli_unknown_policy_in_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    path.write_text('name = "x"\n[row_groups]\ncount = 1\n[scheduler]\npolicy = "nope"\n[[columns]]\nname = "a"\n')
    assert cli_main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "scheduler.policy: unknown policy 'nope'" in err
    assert all(name in err for name in ("fixed", "global", "localized"))
    assert "Traceback" not in err


def test_scenario_text_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    path = tmp_path / "evil.toml"
    path.write_text(f'name = "evil"\ndescription = "{payload}"\n[row_groups]\ncount = 1\n[[columns]]\nname = "a"\n')
    result = sim.simulate(load_scenario(path))  # the text is kept as text
    assert result.scenario.description == payload
    assert result.summary["completed_rows"] == 1
    with pytest.raises(ScenarioError, match="scheduler.policy"):
        load_scenario(path, [f"scheduler.policy={payload}"])
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# CLI: a bad file exits 2 with the file, the key and the reason, and no traceback
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ('name = "x"\n[row_groups]\ncount = "many"\n[[columns]]\nname = "a"\n', "row_groups.count", "valid integer"),
        ('name = "x"\n[row_groups]\ncount = 1000000000\n[[columns]]\nname = "a"\n', "row_groups.count", "1000000"),
        (
            'name = "x"\n[row_groups]\ncount = 1\n[[columns]]\nname = "a"\nduration = nan\n',
            "columns.a.duration",
            "finite",
        ),
        (
            'name = "x"\n[row_groups]\ncount = 1\n[[columns]]\nname = "a"\ncolour = 1\n',
            "columns.a.colour",
            "unknown key",
        ),
        (
            'name = "x"\n[row_groups]\ncount = 1\n[[columns]]\nname = "a"\ndepends_on = ["a"]\n',
            "columns.a.depends_on",
            "cannot depend on itself",
        ),
        ('name = "x"\n[row_groups\n', None, "invalid TOML"),
    ],
)
def test_cli_bad_file_exits_2_with_file_key_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, key: str | None, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    assert cli_main(["run", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert str(path) in captured.err
    if key is not None:
        assert f"{path}: {key}: " in captured.err
    assert reason in captured.err


def test_cli_bad_override_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    bundled = str(BUNDLED[0])
    assert cli_main(["run", bundled, "--set", "row_groups.count=1e12"]) == 2
    err = capsys.readouterr().err
    assert "row_groups.count" in err and "Traceback" not in err
    assert cli_main(["run", bundled, "--set", "nonsense"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_numpy_scalars_from_a_sweep_grid_are_plain_values() -> None:
    """A grid built with numpy (``numpy.arange``) gives numpy scalars; they are read as the Python
    values they hold, while a numpy float is still not an integer and an array is not a number."""
    import numpy as np

    data = full()
    data["row_groups"]["count"] = np.int64(3)
    data["columns"][0]["duration"] = np.float32(0.5)
    data["scheduler"]["request_pressure_advisory"] = np.bool_(True)
    scenario = scenario_from_dict(data)
    assert (scenario.row_groups.count, scenario.columns[0].duration) == (3, 0.5)
    assert type(scenario.row_groups.count) is int
    assert scenario.scheduler.request_pressure_advisory is True
    for bad in (np.float64(3.0), np.array([1, 2]), np.bool_(True)):
        data["row_groups"]["count"] = bad
        with pytest.raises(ScenarioError, match="row_groups.count: Input should be a valid integer"):
            scenario_from_dict(data)


# ---------------------------------------------------------------------------------------------
# Row-group plans: any mix of the four forms' keys is a clean error or a consistent plan
# ---------------------------------------------------------------------------------------------

_plan_sizes = st.one_of(st.integers(-1, 9), st.just(10**9), st.booleans(), st.floats(0, 3))
_row_group_keys = st.fixed_dictionaries(
    {},
    optional={
        "count": _plan_sizes,
        "size": _plan_sizes,
        "num_records": st.one_of(st.integers(-1, 60), st.just(MAX_TOTAL_ROWS + 1)),
        "buffer_size": _plan_sizes,
        "sizes": st.one_of(st.lists(st.integers(-1, 9), max_size=6), st.just("3")),
        "random_sizes": st.one_of(
            st.fixed_dictionaries({}, optional={"min": _plan_sizes, "max": _plan_sizes}), st.just([1, 2])
        ),
    },
)


@examples(100)
@given(_row_group_keys, st.integers(0, 2**32))
def test_row_group_plans_fail_cleanly_or_add_up(row_groups: dict[str, Any], seed: int) -> None:
    data = {**minimal(), "row_groups": row_groups}
    scenario = outcome(lambda: scenario_from_dict(data, source="rg.toml"), "rg.toml")
    if scenario is None:
        return
    plan = scenario.row_groups
    sizes = build_workload(scenario, seed).row_group_sizes
    assert sum(sizes) == plan.total_rows
    assert 1 <= len(sizes) <= plan.max_groups
    assert all(n >= 1 for n in sizes)
    assert plan.guard_buffer_size >= 1 and plan.guard_num_records >= 1


_set_keys = st.sampled_from(
    [
        "row_groups.count",
        "row_groups.sizes",
        "models.cooling.latency.mean",
        "models.coolin.latency.mean",
        "models.0.rate_limit.pattern",
        "columns.seed.duration",
        "columns.healthy_1.depends_on",
        "scheduler.polcy",
        "schedular.policy",
        "request_admission.enabled",
        "stop.max_time",
        "seed.x",
    ]
)
_set_values = st.sampled_from(["1", "-1", "0.5", "true", "yes", '"x"', "[1, 2]", "{ a = 1 }", "nan", "1e999"])


@examples(120)
@given(st.lists(st.builds(lambda k, v: f"{k}={v}", _set_keys, _set_values), min_size=1, max_size=3))
def test_set_errors_name_the_file_or_one_of_the_overrides(overrides: list[str]) -> None:
    """Every line of a --set error starts with the file (a problem of the file's own) or with one
    of the given overrides, quoted as typed; nothing else, and never a bare list index of a model."""
    path = SCENARIOS / "cooling-2048.toml"
    always_bad = [o for o in overrides if o.split("=")[0] in _ALWAYS_BAD_KEYS]
    try:
        load_scenario(path, overrides)
    except ScenarioError as err:
        assert_clear(err)
        lines = str(err).split("\n")
        for line in lines:
            assert line.startswith((f"{path}: ", *(f"--set '{o}': " for o in overrides))), line
            assert ": models.0." not in line and ": columns.0." not in line, line
        if always_bad:  # a key that cannot exist is blamed on an override that holds one
            assert any(line.startswith(tuple(f"--set '{o}': " for o in always_bad)) for line in lines), lines
    else:
        assert not always_bad, overrides


_ALWAYS_BAD_KEYS = {"models.coolin.latency.mean", "scheduler.polcy", "schedular.policy", "seed.x"}
