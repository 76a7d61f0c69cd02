"""The compiled DAG and the row-group plan (docs/model.md, "Columns, generators and tasks" and "Row-group plan")."""

from __future__ import annotations

import pytest

import sim
from sim.scenario import RowGroupConfig
from sim.workload import LLM_WAIT, SUBMISSION, Generator, RequestKey, Workload, build_workload, row_group_plan


def gen(workload: Workload, column: str) -> Generator:
    return workload.generators[workload.column_to_generator[column]]


def names(workload: Workload, indices) -> set[str]:
    return {workload.generators[i].name for i in indices}


def resource_names(workload: Workload, g: Generator) -> tuple[str, ...]:
    return tuple(workload.resource_names[r] for r in g.resources)


SEED = {"name": "seed", "strategy": "full_column"}


def test_tasks_per_row_group_counts_cells_per_row_plus_full_generators(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "a", "depends_on": ["seed"]},
            {"name": "b", "depends_on": ["a"]},
            {"name": "summary", "strategy": "full_column", "depends_on": ["b"]},
        ],
        row_groups={"num_records": 13, "buffer_size": 5},
    )
    assert wl.row_group_sizes == (5, 5, 3)
    assert (len(wl.cell_generators), len(wl.full_generators)) == (2, 2)
    assert wl.tasks_per_row_group(5) == 5 * 2 + 2
    assert wl.tasks_per_row_group(1) == 4
    assert wl.total_tasks == 12 + 12 + 8


def test_task_types_and_upstream_split(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "root_cell"},
            {"name": "a", "depends_on": ["seed", "root_cell"]},
            {"name": "summary", "strategy": "full_column", "depends_on": ["a", "seed"]},
        ]
    )
    seed, root_cell, a, summary = (gen(wl, c) for c in ("seed", "root_cell", "a", "summary"))
    assert [g.task_type for g in (seed, root_cell, a, summary)] == ["from_scratch", "cell", "cell", "batch"]
    assert seed.is_root and root_cell.is_root and not a.is_root
    assert a.cell_upstream == (root_cell.index,) and a.full_upstream == (seed.index,)
    assert summary.cell_upstream == () and set(summary.full_upstream) == {seed.index, a.index}
    assert names(wl, wl.root_generators) == {"seed", "root_cell"}


def test_multi_output_generator_is_one_task_on_first_topological_column(make_workload) -> None:
    wl = make_workload(
        [
            # Declared before its upstream: topological order puts `other` first, then `sampler`'s columns.
            {"name": "x", "strategy": "full_column", "generator": "sampler", "depends_on": ["other"]},
            {"name": "other", "strategy": "full_column"},
            {"name": "y", "strategy": "full_column", "generator": "sampler", "depends_on": ["other"]},
            {"name": "judge", "depends_on": ["y"]},
        ],
        row_groups={"count": 2, "size": 3},
    )
    sampler = gen(wl, "x")
    assert gen(wl, "y") is sampler
    assert sampler.name == "sampler" and sampler.output_columns == ("x", "y")
    assert len(wl.generators) == 3
    assert [wl.generators[i].name for i in wl.topo_order] == ["other", "sampler", "judge"]
    assert gen(wl, "judge").upstream == (sampler.index,)
    assert sampler.group_identity == ("local", "default", "x", "y")
    assert wl.tasks_per_row_group(3) == 3 * 1 + 2  # judge cells + other + ONE sampler task


def test_group_identity_includes_output_columns(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "a", "depends_on": ["seed"], "model": "m"},
            {"name": "b", "depends_on": ["seed"], "model": "m"},
        ],
        [{"name": "m", "provider": "p", "model_id": "llama"}],
    )
    a, b = gen(wl, "a"), gen(wl, "b")
    assert a.group_key == ("model", ("model", "p", "llama", "chat", "a"))
    assert b.group_key == ("model", ("model", "p", "llama", "chat", "b"))
    assert a.request_key == b.request_key == RequestKey("p", "llama", "chat")
    assert a.resources == b.resources
    assert gen(wl, "seed").group_key == ("local", ("local", "default", "seed"))


def test_weights_and_admitted_limits(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "heavy_local", "depends_on": ["seed"], "weight": 3},
            {"name": "chat", "depends_on": ["seed"], "model": "big"},
            {"name": "small", "depends_on": ["seed"], "model": "small"},
            {"name": "custom", "depends_on": ["seed"], "model": "small", "kind": "custom_model"},
            {"name": "custom4", "depends_on": ["seed"], "model": "small", "kind": "custom_model", "weight": 4},
        ],
        [{"name": "big", "max_parallel_requests": 6}, {"name": "small", "max_parallel_requests": 1}],
        scheduler={"max_model_task_admission": 10},
    )
    got = {c: (gen(wl, c).weight, gen(wl, c).admitted_limit) for c in ("seed", "heavy_local", "chat", "small")}
    got |= {c: (gen(wl, c).weight, gen(wl, c).admitted_limit) for c in ("custom", "custom4")}
    assert got == {
        "seed": (1, None),
        "heavy_local": (3, None),
        "chat": (6, 10),  # min(max_model_task_admission=10, 2*6=12)
        "small": (1, 2),  # min(10, 2*1)
        "custom": (1, 2),
        "custom4": (4, 8),
    }


def test_admitted_limit_defaults_to_twice_the_weight(make_workload) -> None:
    wl = make_workload([{"name": "a", "model": "m"}], [{"name": "m"}])
    assert (gen(wl, "a").weight, gen(wl, "a").admitted_limit) == (4, 8)


def test_resources_by_kind(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "chat", "depends_on": ["seed"], "model": "m"},
            {"name": "custom", "depends_on": ["seed"], "model": "m", "kind": "custom_model"},
        ],
        [{"name": "m", "provider": "nv", "model_id": "llama"}],
        scheduler={"max_in_flight_tasks": 64, "max_model_task_admission": 32},
    )
    assert wl.resource_names == (SUBMISSION, LLM_WAIT, "request:nv/llama")
    assert wl.resource_limits == (64, 32, 4)
    assert resource_names(wl, gen(wl, "seed")) == ("submission",)
    assert resource_names(wl, gen(wl, "chat")) == ("submission", "llm_wait", "request:nv/llama")
    assert resource_names(wl, gen(wl, "custom")) == ("submission", "llm_wait")
    assert gen(wl, "custom").request_key is None and gen(wl, "seed").request_key is None
    assert [g.is_model_task for g in wl.generators] == [False, True, True]
    assert wl.request_keys == (RequestKey("nv", "llama", "chat"),)


def test_request_limit_is_min_over_generators_across_domains(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "emb", "depends_on": ["seed"], "model": "emb3"},
            {"name": "chat", "depends_on": ["seed"], "model": "chat6"},
            {"name": "other", "depends_on": ["seed"], "model": "other5"},
        ],
        [
            {"name": "chat6", "provider": "p", "model_id": "x", "max_parallel_requests": 6},
            {"name": "emb3", "provider": "p", "model_id": "x", "domain": "embedding", "max_parallel_requests": 3},
            {"name": "unused2", "provider": "p", "model_id": "x", "max_parallel_requests": 2},  # no generator
            {"name": "other5", "provider": "q", "max_parallel_requests": 5},
        ],
    )
    assert wl.resource_names == (SUBMISSION, LLM_WAIT, "request:p/x", "request:q/other5")
    assert wl.resource_limits[2:] == (3, 5)
    chat, emb = gen(wl, "chat"), gen(wl, "emb")
    assert chat.resources[2] == emb.resources[2] == wl.resource_index["request:p/x"]
    assert (chat.weight, emb.weight) == (6, 3)  # the group weight stays per alias
    assert set(wl.request_keys) == {
        RequestKey("p", "x", "chat"),
        RequestKey("p", "x", "embedding"),
        RequestKey("q", "other5", "chat"),
    }


def test_ancestor_and_descendant_closures(make_workload) -> None:
    wl = make_workload(
        [
            SEED,
            {"name": "a", "depends_on": ["seed"]},
            {"name": "b", "depends_on": ["a"]},
            {"name": "c", "depends_on": ["b", "side"]},
            {"name": "side", "depends_on": ["seed"]},
            {"name": "lone"},
        ]
    )
    closures = {g.name: (names(wl, g.ancestors), names(wl, g.descendants)) for g in wl.generators}
    assert closures == {
        "seed": (set(), {"a", "b", "c", "side"}),
        "a": ({"seed"}, {"b", "c"}),
        "b": ({"seed", "a"}, {"c"}),
        "c": ({"seed", "a", "b", "side"}, set()),
        "side": ({"seed"}, {"c"}),
        "lone": (set(), set()),
    }
    assert gen(wl, "c").upstream == tuple(sorted((gen(wl, "b").index, gen(wl, "side").index)))
    assert set(gen(wl, "seed").downstream) == {gen(wl, "a").index, gen(wl, "side").index}


def test_localization_keys(make_workload) -> None:
    wl = make_workload(
        [
            {"name": "s1", "strategy": "full_column", "generator": "sampler"},
            {"name": "s2", "strategy": "full_column", "generator": "sampler"},
            {"name": "chat", "depends_on": ["s1"], "model": "m"},
            {"name": "emb", "depends_on": ["s1"], "model": "e"},
            {"name": "custom", "depends_on": ["s1"], "model": "m", "kind": "custom_model"},
        ],
        [
            {"name": "m", "provider": "p", "model_id": "x"},
            {"name": "e", "provider": "p", "model_id": "x", "domain": "embedding"},
        ],
    )
    assert gen(wl, "chat").localization_keys == {"request_resource:p/x/chat", "scheduler_resource:request:p/x"}
    assert gen(wl, "emb").localization_keys == {"request_resource:p/x/embedding", "scheduler_resource:request:p/x"}
    assert gen(wl, "s2").localization_keys == {"group:local:local/default/s1/s2"}
    custom = gen(wl, "custom")
    assert custom.group_identity[0] == "custom_model" and custom.group_identity[3:] == ("v1", "custom")
    assert custom.localization_keys == {"group:custom_model:" + "/".join(custom.group_identity)}
    assert [gen(wl, c).resource_scoped for c in ("s1", "chat", "custom")] == [False, True, True]


@pytest.mark.parametrize(
    ("row_groups", "sizes"),
    [
        ({"num_records": 2500, "buffer_size": 1000}, (1000, 1000, 500)),
        ({"num_records": 3000, "buffer_size": 1000}, (1000, 1000, 1000)),
        ({"num_records": 999, "buffer_size": 1000}, (999,)),
        ({"num_records": 7, "buffer_size": 1}, (1,) * 7),
        ({"count": 4, "size": 2}, (2, 2, 2, 2)),
    ],
)
def test_row_group_plan_sizes(make_workload, row_groups, sizes) -> None:
    assert make_workload([SEED], row_groups=row_groups).row_group_sizes == sizes


# ---------------------------------------------------------------------------------------------
# Row groups of unequal size: explicit lists and seeded random sizes
# ---------------------------------------------------------------------------------------------


def random_plan(num_records: int, low: int, high: int) -> RowGroupConfig:
    return RowGroupConfig(num_records=num_records, random_sizes={"min": low, "max": high})


def test_explicit_sizes_are_planned_in_order(make_workload) -> None:
    wl = make_workload([SEED, {"name": "a", "depends_on": ["seed"]}], row_groups={"sizes": [3, 1, 2]})
    assert wl.row_group_sizes == (3, 1, 2)
    assert wl.total_tasks == (3 + 1) + (1 + 1) + (2 + 1)


@pytest.mark.parametrize(("num_records", "low", "high"), [(40, 1, 4), (1000, 7, 300), (5, 10, 20), (12, 3, 3)])
def test_random_sizes_add_up_and_stay_in_range(num_records, low, high) -> None:
    for seed in range(20):
        sizes = row_group_plan(random_plan(num_records, low, high), seed)
        assert sum(sizes) == num_records
        assert all(low <= n <= high for n in sizes[:-1])
        assert 1 <= sizes[-1] <= high  # only the last group is cut to fit
        assert len(sizes) <= -(-num_records // low)


def test_random_sizes_same_seed_same_plan_other_seed_other_plan() -> None:
    plan = random_plan(200, 1, 8)
    assert row_group_plan(plan, 7) == row_group_plan(plan, 7)
    assert len({row_group_plan(plan, seed) for seed in range(10)}) == 10
    # Pinned: a change of the draw would silently change every result with random sizes.
    assert row_group_plan(random_plan(20, 1, 4), 0) == (1, 1, 2, 3, 2, 3, 4, 3, 1)


def test_build_workload_plans_with_the_run_seed(make_scenario) -> None:
    scenario = make_scenario([SEED], row_groups={"num_records": 100, "random_sizes": {"min": 1, "max": 9}})
    assert build_workload(scenario).row_group_sizes == row_group_plan(scenario.row_groups, scenario.seed)
    assert build_workload(scenario, 3).row_group_sizes == row_group_plan(scenario.row_groups, 3)
    assert build_workload(scenario, 3).row_group_sizes != build_workload(scenario, 4).row_group_sizes


def test_simulate_runs_the_plan_of_its_seed(make_scenario) -> None:
    scenario = make_scenario(
        [SEED, {"name": "a", "depends_on": ["seed"], "duration": 0.5}],
        row_groups={"num_records": 30, "random_sizes": {"min": 1, "max": 6}},
        scheduler={"policy": "fixed", "max_concurrent_row_groups": 2},
    )
    for seed in (0, 1):
        result = sim.simulate(scenario, seed=seed)
        assert result.summary["completed_rows"] == 30
        checkpointed = result.row_groups.sort_values("row_group")["size"].tolist()
        assert tuple(checkpointed) == row_group_plan(scenario.row_groups, seed)
    assert sim.simulate(scenario, seed=1).summary == sim.simulate(scenario, seed=1).summary
