"""The notebooks run top to bottom, and the numbers their text quotes are the numbers they compute.

The story cells hold no assertions. Each notebook ends with one hidden cell tagged ``facts`` that
prints, as JSON, the values its text quotes; here we execute the notebook with nbclient in
``notebooks/`` (once per notebook) and check those values. The committed notebooks carry no
outputs and are what ``notebooks/make_notebooks.py`` writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 120
HEALTHY = ("healthy-a", "healthy-b", "healthy-c")


#: Executions started by the module fixture (each notebook runs in its own kernel process).
_STARTED: dict[str, Future[nbformat.NotebookNode]] = {}


@pytest.fixture(scope="module", autouse=True)
def _execute_side_by_side() -> Iterator[None]:
    """Start every notebook at once, so that their kernels run side by side; :func:`execute` waits
    for its own (a failing notebook fails only the tests that read it)."""
    with ThreadPoolExecutor(max_workers=len(NAMES)) as pool:
        _STARTED.update({name: pool.submit(_run, name) for name in NAMES})
        try:
            yield
        finally:
            _STARTED.clear()


def execute(name: str) -> nbformat.NotebookNode:
    """The notebook with its outputs (run once per module)."""
    started = _STARTED.get(name)
    return started.result() if started is not None else _run(name)


def _run(name: str) -> nbformat.NotebookNode:
    """Run the notebook in a fresh ``python3`` kernel; return it with its outputs."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    # The kernel starts in notebooks/, so without this it would import the installed `sim` (which
    # may be another checkout's), not the one under test.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    return nb


def facts(name: str) -> dict[str, Any]:
    """The JSON the notebook's ``facts`` cell printed."""
    (cell,) = [c for c in execute(name).cells if "facts" in c.metadata.get("tags", [])]
    text = "".join(out.get("text", "") for out in cell.outputs)
    match = re.search(r"^FACTS (.*)$", text, re.MULTILINE)
    assert match, f"{name}: the facts cell printed no FACTS line"
    return json.loads(match.group(1))


def markdown(name: str) -> str:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


# -- the committed files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: clear outputs before committing"


@pytest.mark.parametrize("name", NAMES)
def test_story_cells_hold_no_assertions_and_facts_come_last(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "facts" in code[-1].metadata.get("tags", []) and code[-1].metadata["jupyter"]["source_hidden"]
    for cell in code[:-1]:
        assert not re.search(r"^\s*assert\b", cell.source, re.MULTILINE), f"{name}: an assertion in a story cell"
        assert "facts" not in cell.metadata.get("tags", [])


def test_committed_notebooks_are_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.NOTEBOOKS) == NAMES
    for name, cells in module.NOTEBOOKS.items():
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        built = module.notebook(cells)
        assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], (
            f"{name} is stale: run notebooks/make_notebooks.py"
        )


# -- executed: tables for people, and the numbers of the text ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tables_are_formatted_for_people(name: str) -> None:
    nb = execute(name)
    tables = [
        out["data"]["text/plain"]
        for cell in nb.cells
        if cell.cell_type == "code" and "facts" not in cell.metadata.get("tags", [])
        for out in cell.outputs
        if "data" in out and "text/html" in out["data"]
    ]
    assert tables, f"{name} shows no table"
    for table in tables:
        assert not re.search(r"\d[eE][+-]\d\d", table), f"{name}: scientific notation in a table:\n{table}"
        assert "NaN" not in table, f"{name}: a raw NaN in a table:\n{table}"


def test_01_cooling_numbers() -> None:
    all_facts = facts("01_policy_comparison.ipynb")
    f = all_facts["cooling-2048"]
    s = {p: f[p]["summary"] for p in f}
    text = markdown("01_policy_comparison.ipynb")
    # the default loop model: scheduler work costs simulated CPU
    assert "default event-loop model, `calibrated`" in text
    # global: a second group before the first deferral, then frozen at 2 for 60 s with 6 healthy calls
    first = all_facts["first_deferral"]["cooling-2048"]
    assert first["global"]["target"] == 2 and round(first["global"]["time"], 3) == 0.007 and "(at ~0.007 s)" in text
    assert s["global"]["stop_reason"] == "max_time" and s["global"]["sim_time"] == 60.0
    assert s["global"]["observed_max_target"] == 2 and s["global"]["max_row_groups_in_flight"] == 2
    assert s["global"]["healthy_calls"] == 6 and "**2** for the whole 60 s" in text and "(**6** healthy calls)" in text
    blocked, evaluations = s["global"]["blocked_deferred_tasks"], s["global"]["adaptive_evaluations"]
    assert f"({blocked} of {evaluations})" in text and (blocked, evaluations) == (2250, 2253)
    assert max(f["global"]["models"][m]["busy_fraction"] for m in HEALTHY) < 0.001
    independent = f["global"]["deferred_admission"]["independent_candidate_columns"]
    assert independent == ["healthy_1", "healthy_2", "healthy_3"]
    # localized: 300 healthy calls at target 100 in 2.70 s, paced by salvage retries on the loop
    assert s["localized"]["stop_reason"] == "successful_calls" and s["localized"]["healthy_calls"] == 300
    assert s["localized"]["observed_max_target"] == 100 and s["localized"]["blocked_deferred_tasks"] == 0
    assert s["localized"]["adaptive_evaluations"] == 200  # +1 every other evaluation
    assert round(s["localized"]["sim_time"], 2) == 2.70 and "**2.70 s**" in text
    assert s["localized"]["rate_limited_calls"] == 9892 and "(9892 429s;" in text
    assert f"{s['localized']['salvage_drain_time']:.1f}" == "2.3" and "2.3 s inside salvage drains" in text
    assert s["localized"]["max_deferred"] == 99 and "up to 99" in text
    busy = [f["localized"]["models"][m]["busy_fraction"] for m in HEALTHY]
    assert 0.05 <= min(busy) and max(busy) < 0.06 and "~5% of the time" in text
    # fixed: 2048 groups in one 2.62 s admission step, 300 calls by 4.60 s (after localized), ~2264 queued, 204 deferred
    assert s["fixed"]["max_row_groups_in_flight"] == 2048
    assert f"{all_facts['cooling_fixed_all_admitted_at']:.2f}" == "2.62" and "for 2.62 s" in text
    assert round(s["fixed"]["sim_time"], 2) == 4.60 and "(4.60 s)" in text
    assert s["fixed"]["sim_time"] > s["localized"]["sim_time"]  # "after localized"
    assert round(s["fixed"]["queued_tasks_time_mean"]) == 2264 and "~2264 tasks queued" in text
    assert s["fixed"]["deferred_at_end"] == 204 and "204 deferred cooling cells" in text
    assert f["fixed"]["models"]["cooling"]["rate_limited_calls"] == 208 and "only 208 `cooling` calls" in text


def test_01_window_recovery_numbers() -> None:
    all_facts = facts("01_policy_comparison.ipynb")
    f = all_facts["window-recovery"]
    s = {p: f[p]["summary"] for p in f}
    flaky = {p: f[p]["models"]["flaky"] for p in f}
    text = markdown("01_policy_comparison.ipynb")
    assert all(s[p]["completed_rows"] == 960 for p in s)
    # flaky cools down for the whole 30 s window (33 calls get a 429); its AIMD limit falls to 1
    assert all(30.0 <= flaky[p]["cooldown_time"] < 30.05 and flaky[p]["min_limit"] == 1 for p in s)
    assert all(flaky[p]["rate_limited_calls"] == 33 for p in s)
    assert min(s[p]["time_to_first_row"] for p in s) > 41.5  # "no row completes before ~42 s"
    # fixed: first row at 97.0 s, median latency 97 s, run ends at 100.0 s; healthy models never idle with work left
    assert f"{s['fixed']['time_to_first_row']:.1f}" == "97.0" and round(s["fixed"]["row_group_latency_p50"]) == 97
    assert f"{s['fixed']['sim_time']:.1f}" == "100.0" and "**100.0 s**" in text
    assert max(f["fixed"]["models"][m]["idle_with_work_left"] for m in HEALTHY) < 1
    assert 51 < max(f["fixed"]["models"][m]["work_done_at"] for m in HEALTHY) < 52  # "by ~51 s"
    # the first deferral at 0.068 s, target 7 in both; global stays at 7 until 48.2 s, localized 68 by 1 s
    first = all_facts["first_deferral"]["window-recovery"]
    assert all(first[p]["target"] == 7 and f"{first[p]['time']:.3f}" == "0.068" for p in ("global", "localized"))
    assert "(0.068 s), when the target of both is still 7" in text
    assert f"{all_facts['window_global_grows_past_7_at']:.1f}" == "48.2" and "until 48.2 s" in text
    assert all_facts["window_localized_target_at_1s"] == 68 and "holds 68 groups" in text
    assert s["localized"]["blocked_queued_llm_demand"] == 69 and s["localized"]["blocked_deferred_tasks"] == 0
    assert "(69 times;" in text
    # first rows: global 41.9 s, localized 62.6 s; half by 73.7 / 76.4 s; median latency 17.0 / 14.8 s
    assert f"{s['global']['time_to_first_row']:.1f}" == "41.9" and "**41.9 s**" in text
    assert f"{s['localized']['time_to_first_row']:.1f}" == "62.6" and "**62.6 s**" in text
    assert (
        f"{s['global']['time_to_50pct_rows']:.1f}" == "73.7" and f"{s['localized']['time_to_50pct_rows']:.1f}" == "76.4"
    )
    assert "73.7 s (global) and 76.4 s (localized)" in text
    p50 = f"{s['global']['row_group_latency_p50']:.1f} s and {s['localized']['row_group_latency_p50']:.1f} s"
    assert p50 == "17.0 s and 14.8 s" and f"latency {p50}" in text
    # global blocked by deferred_tasks 101 times and queued_llm_demand 2553 times; peaks 90 vs 70
    assert s["global"]["blocked_deferred_tasks"] == 101 and s["global"]["blocked_queued_llm_demand"] == 2553
    assert "`deferred_tasks` 101 times, by `queued_llm_demand` 2553" in text
    assert (s["global"]["observed_max_target"], s["localized"]["observed_max_target"]) == (90, 70)
    assert "(90 vs 70)" in text and "at a peak of 70" in text
    # end to end: global 98.7 s < fixed 100.0 s < localized 101.8 s
    assert f"{s['global']['sim_time']:.1f}" == "98.7" and f"{s['localized']['sim_time']:.1f}" == "101.8"
    assert "**98.7 s** (global) and **101.8 s** (localized), against 100.0 s" in text
    assert s["global"]["sim_time"] < s["fixed"]["sim_time"] < s["localized"]["sim_time"]
    # healthy idle with work left: ~44 s global, ~50 s localized
    for p, idle in (("global", 44), ("localized", 50)):
        assert all(abs(f[p]["models"][m]["idle_with_work_left"] - idle) < 1.5 for m in HEALTHY)
    assert "~44 s (global) and ~50 s (localized)" in text


def test_02_sweep_numbers() -> None:
    f = facts("02_sweep_explorer.ipynb")
    t = f["sim_time"]
    text = markdown("02_sweep_explorer.ipynb")
    assert f["runs"] == 30 and f["failed"] == 0
    # caps 2-4: under 2% apart (0.0% and 1.1%); from 8 on, localized 5-8% faster (7.6% at 8, 5.4% from 16)
    assert f["no_gain_caps"] == [2, 4] and f["helping_caps"] == [8, 16, 64]
    gains = {cap: f"{row['localized_gain_vs_global']:.1%}" for cap, row in t.items()}
    assert (gains["2"], gains["4"]) == ("0.0%", "1.1%") and "(0.0% and 1.1%)" in text
    assert (gains["8"], gains["16"], gains["64"]) == (
        "7.6%",
        "5.4%",
        "5.4%",
    ) and "(7.6% at cap 8, 5.4% from 16 on)" in text
    assert all(row["localized"] <= row["global"] + 1e-9 for row in t.values())
    # 57.4 s vs 54.3 s at cap 16; localized 54.3 s at both 16 and 64; fixed 41.0 s at cap 64
    assert f"{t['16']['global']:.1f}" == "57.4" and f"{t['16']['localized']:.1f}" == "54.3"
    assert "(57.4 s vs 54.3 s at cap 16)" in text
    assert f"{t['64']['localized']:.1f}" == "54.3" and "54.3 s at both 16 and 64" in text
    assert f"{t['64']['fixed']:.1f}" == "41.0" and "(41.0 s at" in text
    assert f"{t['64']['fixed'] / t['64']['localized']:.2f}" == "0.75" and "0.75x localized" in text
    # localized never blocked by deferred_tasks; target 14 at t = 20 s (cap 64, seed 0), 50.5 at the end (cap 64)
    assert f["localized_deferred_blocks"] == 0 and f["localized_target_at_20s"] == 14 and "(14 in seed 0)" in text
    assert f["target"]["64"]["localized"] == 50.5 and "(to 50.5 on average at cap 64)" in text
    assert all(f["target"][c]["global"] == int(c) for c in ("2", "4", "8", "16"))
    # healthy models idle with work left at cap 64: ~11 s localized, ~20 s global, ~0.1 s fixed
    idle = f["healthy_idle"]["64"]
    assert round(idle["localized"]) == 11 and round(idle["global"]) == 20 and round(idle["fixed"], 1) == 0.1
    assert "~11 s on average" in text and "global ~20 s, fixed ~0.1 s" in text


def test_03_custom_policy_numbers() -> None:
    f = facts("03_custom_policy.ipynb")
    c, b = f["cooling-2048"], f["healthy-bottleneck"]
    text = markdown("03_custom_policy.ipynb")
    budget = f["budget"]
    assert budget == 32
    # cooling-2048 (5 s): growth stops at 32 groups with 32 deferred; 96 healthy calls
    assert all(c[p]["sim_time"] == 5.0 and c[p]["stop_reason"] == "max_time" for p in ("global", "localized-budget"))
    assert c["localized-budget"]["observed_max_target"] == budget and c["localized-budget"]["max_deferred"] == budget
    assert c["localized-budget"]["healthy_calls"] == 3 * budget == 96
    # global: 6 calls, frozen at 2; localized: its 300 calls at 2.7 s, target 100, up to 99 deferred
    assert c["global"]["healthy_calls"] == 6 and c["global"]["observed_max_target"] == 2
    assert "(global: 6, frozen at 2 groups;" in text
    assert (c["localized"]["healthy_calls"], c["localized"]["observed_max_target"]) == (300, 100)
    assert c["localized"]["stop_reason"] == "successful_calls" and f"{c['localized']['sim_time']:.1f}" == "2.7"
    assert c["localized"]["max_deferred"] == 99 and "localized: 300,\nits stop rule, reached at 2.7 s" in text
    assert "target of 100 with up to 99 deferred" in text
    # healthy-bottleneck: at most 14 deferred, so localized-budget = localized (55.5 s), ahead of global (56.6 s)
    assert b["localized-budget"]["max_deferred"] == b["localized"]["max_deferred"] == 14 and "at most 14 tasks" in text
    assert b["localized-budget"]["sim_time"] == b["localized"]["sim_time"] < b["global"]["sim_time"]
    assert f"{b['localized']['sim_time']:.1f}" == "55.5" and f"{b['global']['sim_time']:.1f}" == "56.6"
    assert "(55.5 s), ahead of global (56.6 s)" in text


def test_04_when_policies_differ_numbers() -> None:
    f = facts("04_when_policies_differ.ipynb")
    text = markdown("04_when_policies_differ.ipynb")
    # The ramp without 429s: 0.35 s at the reference loop cost, 2.1 s with every cost x4.
    assert f"{f['ramp']['1.0']:.2f}" == "0.35" and "**0.35 s**" in text
    assert f"{f['ramp']['4.0']:.1f}" == "2.1" and "**2.1 s**" in text
    # Inside the window localized is never behind, up to 14.6x; end to end 104 of 107 cells tie.
    assert f["window_min"] >= 1.0 and f"{f['window_max']:.1f}" == "14.6" and "**14.6x**" in text
    assert round(f["tie_share"] * 107) == 104 and "**104 of 107** cells" in text
    # Live: 16 against 224 healthy calls in the window; a tie when all depend on cooling or after the ramp.
    independent = f["live_independent"]
    assert independent["healthy_calls_in_window[global]"] == 16 and "**16**" in text
    assert independent["healthy_calls_in_window[localized]"] == 224 and "**224**" in text
    for key in ("live_dependent", "live_after_ramp"):
        assert f[key]["ratio_window"] == 1.0 and f[key]["region_throughput"] == "tie"
