"""The policy tables of docs/model.md, "The localized clause" and 6.4, for both adaptive policies.

Each case builds a small DAG, defers one task of RG 0, leaves RG 1 (one row) pending, and asks
row-group admission for its block reason: exactly the set-up of the #743 regression tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sim.errors import InputError
from sim.policies import (
    POLICIES,
    AdmissionView,
    PluginError,
    analyze_deferred,
    get_policy,
    load_plugin,
    register_policy,
)
from sim.row_group_admission import RowGroupAdmission
from sim.scenario import scenario_from_dict
from sim.workload import build_workload


def model(name: str, model_id: str | None = None, domain: str = "chat", mpr: int = 1) -> dict:
    return {"name": name, "model_id": model_id or name, "domain": domain, "max_parallel_requests": mpr}


SEED = {"name": "seed", "strategy": "full_column"}


def cell(name: str, model_name: str | None = None, depends_on=("seed",), **extra) -> dict:
    col = {"name": name, "depends_on": list(depends_on), **extra}
    if model_name is not None:
        col["model"] = model_name
    return col


def make(columns: list[dict], models: list[dict], sizes=(1, 1), **scheduler):
    sched = {
        "max_concurrent_row_groups": 2,
        "initial_target": 1,
        "max_in_flight_tasks": 16,
        "max_model_task_admission": 16,
        **scheduler,
    }
    scenario = scenario_from_dict(
        {
            "name": "policy-case",
            "row_groups": {"count": len(sizes), "size": sizes[0]},
            "models": models,
            "columns": columns,
            "scheduler": sched,
        }
    )
    return scenario, build_workload(scenario)


@dataclass
class StubState:
    """The scheduler facts the block-reason function reads (AdmissionState)."""

    deferred_generators: frozenset[int]
    pending_size: int | None = 1
    active_count: int = 1
    active_rows: int = 1
    all_admitted: bool = False
    queued_total: int = 0
    llm_wait_limit: int = 16
    llm_wait_leased: int = 0
    queued_llm_demand: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def deferred_count(self) -> int:
        return len(self.deferred_generators)

    @property
    def deferred_by_generator(self) -> tuple[int, ...]:
        size = max(self.deferred_generators, default=-1) + 1
        return tuple(int(g in self.deferred_generators) for g in range(size))


def reason(policy: str, columns, models, deferred_columns, **state):
    scenario, workload = make(columns, models)
    gens = frozenset(workload.column_to_generator[c] for c in deferred_columns)
    rga = RowGroupAdmission(scenario, workload, get_policy(policy))
    return rga.block_reason(StubState(gens, **state)), workload, gens


TWO_RESOURCES = ([SEED, cell("A", "X"), cell("B", "Y")], [model("X"), model("Y")])
ONE_RESOURCE = ([SEED, cell("A", "X")], [model("X")])
SHARED_THEN_DOWNSTREAM = (
    [SEED, cell("A", "X"), cell("B", "X"), cell("C", "Y", depends_on=("B",))],
    [model("X"), model("Y")],
)
LOCAL_SIDE_BRANCH = ([SEED, cell("E"), cell("A", "X")], [model("X")])
SAME_MODEL_TWO_DOMAINS = (
    [SEED, cell("A", "Xchat"), cell("B", "Xemb")],
    [model("Xchat", model_id="X"), model("Xemb", model_id="X", domain="embedding")],
)


@pytest.mark.parametrize(
    ("case", "localized"),
    [
        (TWO_RESOURCES, None),
        (ONE_RESOURCE, "deferred_tasks"),
        (SHARED_THEN_DOWNSTREAM, "deferred_tasks"),
        (LOCAL_SIDE_BRANCH, None),
        (SAME_MODEL_TWO_DOMAINS, "deferred_tasks"),
    ],
    ids=["unrelated-resource", "same-resource", "shared-then-downstream", "local-side-branch", "two-domains"],
)
def test_spec_6_3_micro_examples(case, localized):
    columns, models = case
    assert reason("global", columns, models, ["A"])[0] == "deferred_tasks"
    assert reason("localized", columns, models, ["A"])[0] == localized


# --- docs/model.md "The PR #743 experiment": the #743 regression tests
# ------------------------------------------------------

COOL_HEALTHY = ([SEED, cell("cooling", "cooling"), cell("healthy", "healthy")], [model("cooling"), model("healthy")])


def analysis(columns, models, deferred_columns, pending_size=1):
    _, workload = make(columns, models)
    gens = frozenset(workload.column_to_generator[c] for c in deferred_columns)
    return analyze_deferred(workload, gens, pending_size)


def test_ignores_unrelated_deferred_retry_resource():
    columns, models = COOL_HEALTHY
    assert reason("localized", columns, models, ["cooling"])[0] is None
    assert reason("global", columns, models, ["cooling"])[0] == "deferred_tasks"
    a = analysis(columns, models, ["cooling"])
    assert "healthy" in a.independent_columns
    assert "request_resource:provider/cooling/chat" in a.deferred_keys


def test_blocks_same_deferred_retry_resource():
    columns, models = [SEED, cell("cooling", "cooling")], [model("cooling")]
    assert reason("localized", columns, models, ["cooling"])[0] == "deferred_tasks"
    a = analysis(columns, models, ["cooling"])
    assert set(a.candidate_columns) == {"seed", "cooling"}
    assert a.independent_columns == ()


DOWNSTREAM = [
    SEED,
    cell("cooling_a", "cooling"),
    cell("cooling_b", "cooling"),
    cell("healthy", "healthy", depends_on=("cooling_b",)),
]


def test_blocks_downstream_candidate_behind_deferred_resource():
    models = [model("cooling"), model("healthy")]
    assert reason("localized", DOWNSTREAM, models, ["cooling_a"])[0] == "deferred_tasks"
    a = analysis(DOWNSTREAM, models, ["cooling_a"])
    assert set(a.candidate_columns) == {"seed", "cooling_a", "cooling_b", "healthy"}
    assert a.independent_columns == ()


def test_blocks_multi_output_sibling_dependency():
    columns = [
        SEED,
        cell("cooling_a", "cooling", generator="cooler"),
        cell("cooling_b", "cooling", generator="cooler"),
        cell("healthy", "healthy", depends_on=("cooling_b",)),
    ]
    models = [model("cooling", mpr=4), model("healthy")]
    assert reason("localized", columns, models, ["cooling_a"])[0] == "deferred_tasks"
    a = analysis(columns, models, ["cooling_a"])
    assert "healthy" not in a.independent_columns
    assert {"cooling_a", "cooling_b"} <= set(a.blocked_columns)


def test_multi_output_sibling_blocks_only_through_the_shared_generator():
    """Control for the test above: with two separate generators on different models,
    deferring cooling_a leaves healthy (behind cooling_b) independent."""
    columns = [
        SEED,
        cell("cooling_a", "cooling"),
        cell("cooling_b", "other"),
        cell("healthy", "healthy", depends_on=("cooling_b",)),
    ]
    models = [model("cooling"), model("other"), model("healthy")]
    assert reason("localized", columns, models, ["cooling_a"])[0] is None
    assert "healthy" in analysis(columns, models, ["cooling_a"]).independent_columns


def test_blocks_shared_scheduler_resource_across_domains():
    columns = [SEED, cell("chat_col", "m-chat"), cell("embedding_col", "m-emb")]
    models = [model("m-chat", model_id="model"), model("m-emb", model_id="model", domain="embedding")]
    assert reason("localized", columns, models, ["chat_col"])[0] == "deferred_tasks"
    a = analysis(columns, models, ["chat_col"])
    assert a.deferred_keys == frozenset(
        {"request_resource:provider/model/chat", "scheduler_resource:request:provider/model"}
    )
    assert a.independent_columns == ()


def test_counts_independent_local_branch():
    columns = [SEED, cell("cooling", "cooling"), cell("local_branch", depends_on=())]
    models = [model("cooling")]
    assert reason("localized", columns, models, ["cooling"])[0] is None
    assert reason("global", columns, models, ["cooling"])[0] == "deferred_tasks"
    a = analysis(columns, models, ["cooling"])
    assert "local_branch" in a.independent_columns
    assert "seed" not in a.independent_columns


def test_local_column_feeding_blocked_work_is_not_exposure():
    """docs/model.md, "The localized clause" step 5: a local column whose descendants are blocked does not count."""
    columns = [SEED, cell("prep"), cell("cooling", "cooling", depends_on=("prep",))]
    assert analysis(columns, [model("cooling")], ["cooling"]).blocks


def test_localizes_custom_model_deferred_retry():
    columns = [
        SEED,
        cell("cooling", "cooling", kind="custom_model"),
        cell("healthy", "healthy", kind="custom_model"),
    ]
    models = [model("cooling"), model("healthy")]
    assert reason("localized", columns, models, ["cooling"])[0] is None
    assert reason("global", columns, models, ["cooling"])[0] == "deferred_tasks"
    a = analysis(columns, models, ["cooling"])
    assert not any(k.startswith("request_resource") for k in a.deferred_keys)
    assert "healthy" in a.independent_columns


def test_row_guard_precedes_unrelated_deferred_retry():
    """RG0 (5000 rows) active, RG1 (5000) pending, guardrail 8192: row guard first for localized,
    deferred first for global."""
    columns, models = COOL_HEALTHY
    state = {"pending_size": 5000, "active_rows": 5000}
    scenario, workload = make(columns, models, sizes=(5000, 5000))
    gens = frozenset({workload.column_to_generator["cooling"]})
    results = {}
    for name in ("localized", "global"):
        rga = RowGroupAdmission(scenario, workload, get_policy(name))
        rga.max_admitted_rows = 8192  # what num_records=10000, buffer_size=1 give (see test_row_group_admission)
        results[name] = rga.block_reason(StubState(gens, **state))
    assert results == {"localized": "max_admitted_rows", "global": "deferred_tasks"}


def test_no_pending_row_group_reason_order():
    """Global checks deferred before no_pending; localized the other way round."""
    columns, models = COOL_HEALTHY
    assert reason("localized", columns, models, ["cooling"], pending_size=None)[0] == "no_pending_row_groups"
    assert reason("global", columns, models, ["cooling"], pending_size=None)[0] == "deferred_tasks"


def test_pending_group_without_rows_has_no_cell_candidates():
    columns, models = COOL_HEALTHY
    a = analysis(columns, models, ["cooling"], pending_size=0)
    assert a.candidate_columns == ("seed",)
    assert a.blocks


# --- the registry ----------------------------------------------------------------------------


def test_registry_holds_the_three_policies():
    assert {"fixed", "global", "localized"} <= set(POLICIES)
    assert not POLICIES["fixed"].adaptive
    assert POLICIES["global"].deferred_check == "first"
    assert POLICIES["localized"].deferred_check == "after_row_guard"


def test_register_policy_in_a_few_lines():
    @register_policy("test-never-blocks", description="never blocks", replace=True)
    def never(view: AdmissionView) -> bool:
        return False

    columns, models = [SEED, cell("cooling", "cooling")], [model("cooling")]
    assert reason("test-never-blocks", columns, models, ["cooling"])[0] is None
    with pytest.raises(ValueError, match="already registered"):
        register_policy("test-never-blocks")(never)
    del POLICIES["test-never-blocks"]


def test_unknown_policy_message_lists_registered():
    with pytest.raises(KeyError, match="registered: .*localized") as info:
        get_policy("nope")
    assert isinstance(info.value, InputError)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # raised "from None"


def test_plugin_import_failure_keeps_its_cause(tmp_path, monkeypatch):
    """The current-directory fallback of load_plugin reads the cause (kept when compiled too)."""
    (tmp_path / "needs_missing.py").write_text("import no_such_module_for_sim_tests\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="cannot import module 'no_such_module_for_sim_tests'") as info:
        load_plugin("needs_missing:register")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert info.value.__cause__.name == "no_such_module_for_sim_tests"


@pytest.mark.parametrize("name", ["has space", "mod:func", "", "9lives", "x" * 65])
def test_register_policy_rejects_names_a_scenario_cannot_use(name):
    with pytest.raises(ValueError, match="not usable from a scenario"):
        register_policy(name)
