"""Property-based tests: random valid scenarios run end to end without losing work.

Every generated case goes through ``scenario_from_dict`` and ``sim.simulate``, which itself checks
the accounting invariants at the end of the run (``Scheduler.check_invariants``) and raises
``SimulationError`` if one breaks; on top of that these tests check what a user relies on:

* the run ends by completion or by one of its stop rules, within a bounded number of SimPy
  events (a run that spins at one simulated instant fails here instead of hanging CI);
* in the regimes that used to run away (zero latencies, always-429 with a tiny backoff,
  thousands of row groups, short horizons, no cooldown) the run budget stops every run, says so,
  and the end state still passes every invariant;
* with no stop rule and 429s that stop, every row is completed and every model-backed task
  succeeded exactly once (the model has no non-retryable errors, so nothing may be dropped);
* the same scenario and seed give the same summary and time series;
* the localized policy's ``deferred_tasks`` block agrees with an independent, column-level
  brute-force reading of docs/model.md, "The localized clause", both on random DAGs and deferred sets and at every
  evaluation of real runs.

Example counts follow the profile in ``tests/strategies.py`` (``ADMISSION_SIM_HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from unittest import mock

import pandas as pd
import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st

import sim
from sim.policies import POLICIES, AdmissionView, analyze_deferred, localized_block
from sim.scenario import scenario_from_dict
from sim.workload import build_workload

from .strategies import examples, hostile_scenario_dicts, scenario_dicts, total_rows

#: No generated case needs more than a few thousand SimPy events (measured max ~5k); a run
#: past this budget is taken as one that would never end.
EVENT_BUDGET = 200_000
#: Wall-clock guard for one simulation, for a loop that never yields to SimPy at all.
WALL_LIMIT_SECONDS = 60

STOP_REASONS = {"completed", "max_time", "successful_calls", "completed_rows"}
BUDGET_STOPS = {"max_events", "max_wall_seconds"}


class EventBudgetExceeded(Exception):  # deliberately not a RuntimeError: the scheduler maps those
    pass


class _BoundedEnvironment(simpy.Environment):
    """A SimPy environment that counts processed events and gives up past the budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > EVENT_BUDGET:
            raise EventBudgetExceeded(f"more than {EVENT_BUDGET} events at t={self.now}")
        super().step()


@contextlib.contextmanager
def _wall_limit(seconds: int) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"simulation still running after {seconds} s of wall time")

    if not hasattr(signal, "setitimer"):  # pragma: no cover - non-Unix
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def same_summary(a: Any, b: Any) -> bool:
    """Equal summaries, NaN equal to NaN (a compiled hot path boxes a fresh NaN each time, so
    dict equality, which also accepts the same NaN object, is not enough)."""
    return a.keys() == b.keys() and all(x == y or (x != x and y != y) for x, y in ((a[k], b[k]) for k in a))


def run_bounded(data: dict[str, Any], policy: Any = None) -> tuple[sim.Result, int]:
    """Validate and simulate ``data``; return the result and the number of SimPy events."""
    scenario = scenario_from_dict(data, source="<hypothesis>")
    envs: list[_BoundedEnvironment] = []

    def make_env(*args: Any, **kwargs: Any) -> _BoundedEnvironment:
        env = _BoundedEnvironment(*args, **kwargs)
        envs.append(env)
        return env

    with mock.patch("sim.scheduler.simpy.Environment", make_env), _wall_limit(WALL_LIMIT_SECONDS):
        result = sim.simulate(scenario, policy=policy)
    assert len(envs) == 1
    return result, envs[0].steps


def _groups(data: dict[str, Any]) -> int:
    rg = data["row_groups"]
    return rg["count"] if "count" in rg else -(-rg["num_records"] // rg["buffer_size"])


# ---------------------------------------------------------------------------------------------
# Termination, stop rules and bounds
# ---------------------------------------------------------------------------------------------


@examples(200)
@given(scenario_dicts())
def test_every_run_ends_by_completion_or_a_stop_rule(data: dict[str, Any]) -> None:
    result, events = run_bounded(data)
    s = result.summary
    stop = data.get("stop", {})
    sched = data["scheduler"]
    assert s["stop_reason"] in STOP_REASONS
    assert events <= EVENT_BUDGET
    if s["stop_reason"] == "completed":
        assert s["completed_rows"] == total_rows(data)
        assert s["completed_row_groups"] == _groups(data)
        assert s["deferred_at_end"] == 0
    elif s["stop_reason"] == "max_time":
        assert s["sim_time"] == pytest.approx(stop["max_time"])
    elif s["stop_reason"] == "completed_rows":
        assert s["completed_rows"] >= stop["completed_rows"]
    else:
        wanted = set(stop["successful_calls"]["columns"])
        calls = result.columns[result.columns["column"].isin(wanted)].drop_duplicates("generator")
        assert calls["successful_calls"].sum() >= stop["successful_calls"]["count"]
    if "max_time" in stop:
        assert s["sim_time"] <= stop["max_time"] + 1e-9
    # Limits the scheduler promises to respect.
    cap = sched["max_concurrent_row_groups"]
    assert s["max_row_groups_in_flight"] <= cap
    assert s["observed_max_target"] <= cap
    assert s["max_in_flight_tasks"] <= sched["max_in_flight_tasks"]
    assert s["completed_rows"] <= s["total_rows"]
    ts = result.timeseries
    assert ts["time"].is_monotonic_increasing
    assert ts["completed_rows"].is_monotonic_increasing
    assert (ts["active_row_groups"] <= ts["target"]).all() or sched["policy"] == "fixed"
    assert (ts["in_flight_tasks"] <= sched["max_in_flight_tasks"]).all()
    # Model-kind calls hold a request:<provider>/<model> slot, whose limit is the smallest
    # max_parallel_requests among the aliases of that provider/model used by model columns.
    models = {m["name"]: m for m in data["models"]}
    custom = {c["model"] for c in data["columns"] if c.get("kind") == "custom_model"}
    used = {c["model"] for c in data["columns"] if c.get("model") is not None and c.get("kind") != "custom_model"}
    for row in result.models.itertuples():
        if row.model in custom or row.model not in used:
            continue  # custom-model calls take no request slot (docs/model.md, "Leases and resources")
        m = models[row.model]
        peers = [
            models[p]["max_parallel_requests"]
            for p in used
            if (models[p]["provider"], models[p]["model_id"]) == (m["provider"], m["model_id"])
        ]
        assert row.max_in_flight <= min(peers), row


@examples(25)
@given(hostile_scenario_dicts())
def test_runaway_regimes_stop_within_their_run_budget(data: dict[str, Any]) -> None:
    result, events = run_bounded(data)
    s = result.summary
    budget = data["stop"]["max_events"]
    assert s["max_events"] == budget
    assert s["stop_reason"] in STOP_REASONS | BUDGET_STOPS
    # One pass dispatches at most max_in_flight_tasks before the next check of the budget.
    assert s["scheduler_events"] <= budget + data["scheduler"]["max_in_flight_tasks"] + 1
    # A scheduler event costs a bounded number of SimPy events (measured: under 4).
    assert events <= 6 * s["scheduler_events"] + 10 * _groups(data) + 10
    if s["stop_reason"] in BUDGET_STOPS:
        assert s["budget_exhausted"] is True
        assert f"stop.{s['stop_reason']}" in s["budget_message"]
        assert s["scheduler_events"] > budget or s["stop_reason"] == "max_wall_seconds"
        if "max_time" in data["stop"]:
            assert s["sim_time"] <= data["stop"]["max_time"]
    else:
        assert s["budget_exhausted"] is False and s["budget_message"] == ""
        assert s["scheduler_events"] <= budget


def test_without_the_budget_a_runaway_regime_trips_the_event_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero latencies, always-429 and a 0.1 ms backoff over a 1e9 s horizon, as the hostile strategy
    draws: with no run budget to speak of, the run pauses and retries until the test's own event
    guard gives up (it would take weeks); with one it stops cleanly."""
    data = {
        "name": "spin",
        "row_groups": {"count": 16, "size": 1},
        "models": [
            {
                "name": "cooling",
                "latency": {"distribution": "constant", "mean": 0.0},
                "rate_limit": {"pattern": "always"},
            },
            {"name": "healthy", "latency": {"distribution": "constant", "mean": 0.0}},
        ],
        "columns": [
            {"name": "seed", "strategy": "full_column"},
            {"name": "cooling", "depends_on": ["seed"], "model": "cooling"},
            {"name": "healthy", "depends_on": ["seed"], "model": "healthy"},
        ],
        # the zero-cost loop: its retries take no simulated time (the modelled loop paces them)
        "scheduler": {"resalvage_backoff": 1e-4, "loop": {"model": "none"}},
        "request_admission": {"enabled": False},
        "stop": {"max_time": 1e9, "max_events": 10**12},
    }
    monkeypatch.setattr(sys.modules[__name__], "EVENT_BUDGET", 20_000)
    with pytest.raises(EventBudgetExceeded):
        run_bounded(data)
    data["stop"]["max_events"] = 2_000
    result, events = run_bounded(data)
    assert result.summary["stop_reason"] == "max_events"
    assert result.summary["budget_exhausted"] is True
    assert result.summary["sim_time"] < 1.0
    assert events < 20_000


@examples(200)
@given(scenario_dicts(finite=True, stop_rules=False))
def test_run_to_completion_with_finite_429s_completes_every_row(data: dict[str, Any]) -> None:
    result, _ = run_bounded(data)
    s = result.summary
    rows, groups = total_rows(data), _groups(data)
    assert s["stop_reason"] == "completed"
    assert s["completed_rows"] == rows
    assert s["completed_row_groups"] == groups
    assert s["deferred_at_end"] == 0
    assert len(result.row_groups) == groups
    assert sorted(result.row_groups["row_group"]) == list(range(groups))
    assert result.row_groups["size"].sum() == rows
    assert (result.row_groups["checkpointed_at"] >= result.row_groups["admitted_at"]).all()
    # Each model-backed task succeeded exactly once: n calls per cell generator, one per group
    # for a full-column generator, however many 429s came before.
    by_name = {c["name"]: c for c in data["columns"]}
    for row in result.columns.itertuples():
        col = by_name[row.column]
        if col.get("model") is None:
            assert row.successful_calls == 0
            continue
        expected = rows if col.get("strategy", "cell_by_cell") == "cell_by_cell" else groups
        assert row.successful_calls == expected, row
    assert s["successful_calls"] == result.columns.drop_duplicates("generator")["successful_calls"].sum()
    assert result.timeseries["completed_rows"].iloc[-1] == rows
    assert result.timeseries["in_flight_tasks"].iloc[-1] == 0


@examples(40)
@given(scenario_dicts())
def test_same_seed_gives_the_same_result(data: dict[str, Any]) -> None:
    first, events_first = run_bounded(data)
    second, events_second = run_bounded(data)
    assert events_first == events_second
    assert same_summary(first.summary, second.summary)
    pd.testing.assert_frame_equal(first.timeseries, second.timeseries)
    pd.testing.assert_frame_equal(first.model_timeseries, second.model_timeseries)
    pd.testing.assert_frame_equal(first.row_groups, second.row_groups)
    pd.testing.assert_frame_equal(first.columns, second.columns)
    assert dict(first.blocked_reasons) == dict(second.blocked_reasons)


# ---------------------------------------------------------------------------------------------
# Localized deferred clause against a brute-force reading of docs/model.md, "The localized clause"
# ---------------------------------------------------------------------------------------------


def reference_blocks(data: dict[str, Any], deferred_columns: set[str], pending_size: int | None) -> bool:
    """docs/model.md "The localized clause", column by column, straight from the scenario dict (no
    sim.workload/policies).

    ``deferred_columns`` holds one output column per deferred generator. Returns whether the
    deferred list blocks growth for a pending row group of ``pending_size`` rows.
    """
    models = {m["name"]: m for m in data["models"]}
    cols = {c["name"]: c for c in data["columns"]}

    def gen_of(name: str) -> str:
        return cols[name].get("generator") or name

    def outputs(name: str) -> frozenset[str]:
        return frozenset(c for c in cols if gen_of(c) == gen_of(name))

    def kind(name: str) -> str:
        c = cols[name]
        return c.get("kind") or ("local" if c.get("model") is None else "model")

    def keys(name: str) -> frozenset[Any]:
        if kind(name) == "model":
            m = models[cols[name]["model"]]
            provider, model_id = m.get("provider", "provider"), m.get("model_id") or m["name"]
            domain = m.get("domain", "chat")
            return frozenset(
                {("request_resource", provider, model_id, domain), ("scheduler_request", provider, model_id)}
            )
        return frozenset({("group", kind(name), outputs(name))})

    def closure(start: frozenset[str], step: dict[str, set[str]]) -> set[str]:
        seen: set[str] = set()
        todo = [n for s in start for n in step[s]]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(step[n])
        return seen

    parents = {n: set(c.get("depends_on", ())) for n, c in cols.items()}
    children: dict[str, set[str]] = {n: set() for n in cols}
    for n, ps in parents.items():
        for p in ps:
            children[p].add(n)

    if not deferred_columns:
        return False
    deferred_keys = frozenset().union(*(keys(d) for d in deferred_columns))
    has_rows = pending_size is not None and pending_size > 0
    representatives = {gen_of(n): n for n in reversed(list(cols))}  # one column per generator
    candidates = [
        n for n in representatives.values() if has_rows or cols[n].get("strategy", "cell_by_cell") == "full_column"
    ]
    blocked: set[str] = set()
    for d in deferred_columns:
        blocked |= outputs(d)
    for c in candidates:
        if keys(c) & deferred_keys:
            blocked |= outputs(c)
    for c in candidates:
        if keys(c) & deferred_keys:
            continue
        if closure(outputs(c), parents) & blocked:
            continue
        resource_scoped = kind(c) != "local"
        if resource_scoped or not (closure(outputs(c), children) & blocked):
            return False  # an independent candidate exists
    return True


@st.composite
def dag_and_deferred(draw: st.DrawFn) -> tuple[dict[str, Any], set[str], int | None]:
    data = draw(scenario_dicts())
    deferred = draw(st.sets(st.sampled_from([c["name"] for c in data["columns"]]), max_size=4))
    pending = draw(st.none() | st.sampled_from([0, 1, 1, 2, 5]))
    return data, deferred, pending


@examples(250)
@given(dag_and_deferred())
def test_localized_analysis_matches_brute_force_spec(case: tuple[dict[str, Any], set[str], int | None]) -> None:
    data, deferred_columns, pending = case
    workload = build_workload(scenario_from_dict(data))
    deferred = frozenset(workload.column_to_generator[c] for c in deferred_columns)
    analysis = analyze_deferred(workload, deferred, pending)
    expected = reference_blocks(data, deferred_columns, pending)
    assert analysis.blocks == expected, (analysis, deferred_columns, pending)
    # The diagnostics agree with the verdict: a block never lists an independent candidate.
    assert analysis.blocks == (bool(deferred) and not analysis.independent_columns)


def _oracle_policy(data: dict[str, Any]) -> sim.Policy:
    """``localized`` with every deferred-clause evaluation checked against the brute force."""
    columns_of = {}
    workload = build_workload(scenario_from_dict(data))
    for gen in workload.generators:
        columns_of[gen.index] = gen.output_columns[0]

    def rule(view: AdmissionView) -> bool:
        verdict = localized_block(view)
        deferred_columns = {columns_of[g] for g in view.deferred_generators}
        expected = reference_blocks(data, deferred_columns, view.pending_size)
        assert verdict == expected, (deferred_columns, view.pending_size)
        if verdict:
            assert not analyze_deferred(view.workload, view.deferred_generators, view.pending_size).independent_columns
        return verdict

    return replace(POLICIES["localized"], name="localized", deferred_blocks=rule)


@examples(120)
@given(scenario_dicts(policy="localized"))
def test_localized_blocks_in_runs_only_without_independent_candidates(data: dict[str, Any]) -> None:
    plain, _ = run_bounded(data)
    checked, _ = run_bounded(data, policy=_oracle_policy(data))
    # The oracle only watches: the run is the same as with the registered policy.
    assert same_summary(checked.summary, plain.summary)
    reported = checked.deferred_admission
    if reported:
        assert reported["blocks_next_row_group"] is True
        assert reported["independent_candidate_columns"] == []


# ---------------------------------------------------------------------------------------------
# Fixed examples the strategies must reach (so a narrowed strategy cannot pass silently)
# ---------------------------------------------------------------------------------------------


def test_limits_of_one_everywhere_complete() -> None:
    data = {
        "name": "ones",
        "row_groups": {"num_records": 5, "buffer_size": 2},
        "models": [
            {"name": "a", "provider": "p", "model_id": "m", "domain": "chat", "max_parallel_requests": 1},
            {
                "name": "b",
                "provider": "p",
                "model_id": "m",
                "domain": "embedding",
                "max_parallel_requests": 1,
                "rate_limit": {"pattern": "window", "start": 0.0, "end": 0.3},
            },
        ],
        "columns": [
            {"name": "seed", "strategy": "full_column", "generator": "sampler"},
            {"name": "seed2", "strategy": "full_column", "generator": "sampler"},
            {"name": "x", "depends_on": ["seed"], "model": "a"},
            {"name": "y", "depends_on": ["seed2"], "model": "b"},
            {"name": "z", "depends_on": ["x", "y"], "model": "a", "kind": "custom_model"},
        ],
        "scheduler": {
            "policy": "localized",
            "max_concurrent_row_groups": 1,
            "max_in_flight_tasks": 1,
            "max_model_task_admission": 1,
        },
    }
    for policy in ("fixed", "global", "localized"):
        result, events = run_bounded(data, policy=policy)
        assert result.summary["stop_reason"] == "completed"
        assert result.summary["completed_rows"] == 5
        assert result.summary["max_in_flight_tasks"] == 1
        assert result.summary["calls_ok[b]"] == 5
        assert events < 5_000


def test_reference_reproduces_spec_worked_examples() -> None:
    """The brute force itself against docs/model.md "The localized clause" (so the oracle is not wrong in the same
    way)."""

    def case(columns: list[dict[str, Any]], models: list[str], deferred: set[str], **model_kw: Any) -> bool:
        data = {
            "name": "t",
            "row_groups": {"count": 2, "size": 1},
            "models": [{"name": m, "provider": "provider", "model_id": m, **model_kw.get(m, {})} for m in models],
            "columns": [{"name": "seed", "strategy": "full_column"}, *columns],
        }
        expected = reference_blocks(data, deferred, 1)
        workload = build_workload(scenario_from_dict(data))
        gens = frozenset(workload.column_to_generator[c] for c in deferred)
        assert analyze_deferred(workload, gens, 1).blocks == expected
        return expected

    a_x = {"name": "A", "depends_on": ["seed"], "model": "X"}
    assert not case([a_x, {"name": "B", "depends_on": ["seed"], "model": "Y"}], ["X", "Y"], {"A"})
    assert case([a_x], ["X"], {"A"})
    assert case(
        [
            a_x,
            {"name": "B", "depends_on": ["seed"], "model": "X"},
            {"name": "C", "depends_on": ["B"], "model": "Y"},
        ],
        ["X", "Y"],
        {"A"},
    )
    assert not case([a_x, {"name": "E", "depends_on": ["seed"]}], ["X"], {"A"})
    assert case(
        [a_x, {"name": "B", "depends_on": ["seed"], "model": "X2"}],
        ["X", "X2"],
        {"A"},
        X2={"model_id": "X", "domain": "embedding"},
    )
    # A root local cell column is independent; custom-model columns have their own keys.
    assert not case([{"name": "cooling", "depends_on": ["seed"], "model": "X"}, {"name": "local"}], ["X"], {"cooling"})
    custom = [
        {"name": "cooling", "depends_on": ["seed"], "model": "X", "kind": "custom_model"},
        {"name": "healthy", "depends_on": ["seed"], "model": "X", "kind": "custom_model"},
    ]
    assert not case(custom, ["X"], {"cooling"})


# ---------------------------------------------------------------------------------------------
# Regressions found by the properties (shrunk by hand from the Hypothesis counterexample)
# ---------------------------------------------------------------------------------------------

STALE_BLOCKED_AFTER_SALVAGE = {
    "name": "stale-blocked-after-salvage",
    "row_groups": {"count": 3, "size": 2},
    "models": [
        {
            "name": "model1",
            "max_parallel_requests": 1,
            "rate_limit": {"pattern": "capacity", "requests_per_minute": 30000.0, "burst": 1.0},
        }
    ],
    "columns": [
        {"name": "c0", "model": "model1"},
        {"name": "c3", "duration": 0.01},
        {"name": "c4", "model": "model1", "kind": "custom_model"},
        {"name": "c5", "depends_on": ["c0"], "duration": 0.001},
    ],
    "scheduler": {"max_concurrent_row_groups": 2, "max_in_flight_tasks": 3, "max_model_task_admission": 2},
}


@pytest.mark.parametrize("policy", ["fixed", "localized"])
def test_run_completes_after_a_salvage_that_empties_the_deferred_list(policy: str) -> None:
    result, _ = run_bounded(STALE_BLOCKED_AFTER_SALVAGE, policy=policy)
    assert result.summary["stop_reason"] == "completed"
    assert result.summary["completed_rows"] == 6


def test_global_policy_completes_the_stale_blocked_scenario() -> None:
    result, _ = run_bounded(STALE_BLOCKED_AFTER_SALVAGE, policy="global")
    assert result.summary["completed_rows"] == 6
