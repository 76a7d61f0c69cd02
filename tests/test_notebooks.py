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
    f = facts("01_policy_comparison.ipynb")["cooling-2048"]
    s = {p: f[p]["summary"] for p in f}
    text = markdown("01_policy_comparison.ipynb")
    # localized: 300 healthy calls in 0.18 s, target climbs to 100, 100 deferred cooling cells
    assert s["localized"]["stop_reason"] == "successful_calls" and s["localized"]["healthy_calls"] == 300
    assert round(s["localized"]["sim_time"], 2) == 0.18 and "**0.18 s**" in text
    assert s["localized"]["observed_max_target"] == 100 and s["localized"]["max_deferred"] == 100
    busy = [f["localized"]["models"][m]["busy_fraction"] for m in HEALTHY]
    assert 0.51 <= min(busy) and max(busy) <= 0.56 and "~51-56%" in text
    # global: frozen at target 1 for the full 60 s, 3 healthy calls, blocked in 2408 of 2410 evaluations
    assert s["global"]["stop_reason"] == "max_time" and s["global"]["sim_time"] == 60.0
    assert s["global"]["observed_max_target"] == 1 and s["global"]["healthy_calls"] == 3
    blocked, evaluations = s["global"]["blocked_deferred_tasks"], s["global"]["adaptive_evaluations"]
    assert f"({blocked} of {evaluations})" in text and (blocked, evaluations) == (2408, 2410)
    assert max(f["global"]["models"][m]["busy_fraction"] for m in HEALTHY) < 0.001
    independent = f["global"]["deferred_admission"]["independent_candidate_columns"]
    assert independent == ["healthy_1", "healthy_2", "healthy_3"]
    # fixed: all 2048 groups at t = 0, 300 calls in 0.026 s, ~8172 queued on average, 2048 deferred
    assert s["fixed"]["max_row_groups_in_flight"] == 2048 and round(s["fixed"]["sim_time"], 3) == 0.026
    assert round(s["fixed"]["queued_tasks_time_mean"]) == 8172 and "~8172 tasks queued" in text
    assert s["fixed"]["deferred_at_end"] == 2048 and "2048 deferred" in text


def test_01_window_recovery_numbers() -> None:
    f = facts("01_policy_comparison.ipynb")["window-recovery"]
    s = {p: f[p]["summary"] for p in f}
    flaky = {p: f[p]["models"]["flaky"] for p in f}
    text = markdown("01_policy_comparison.ipynb")
    assert all(s[p]["completed_rows"] == 960 for p in s)
    # flaky cools down for the whole 30 s window (33 calls get a 429); its AIMD limit falls to 1
    assert all(abs(flaky[p]["cooldown_time"] - 30.0) < 1e-6 and flaky[p]["min_limit"] == 1 for p in s)
    assert all(flaky[p]["rate_limited_calls"] == 33 for p in s)
    # fixed: first row at 96.0 s, median latency 96 s, run ends at 99.0 s; healthy models never idle with work left
    assert f"{s['fixed']['time_to_first_row']:.1f}" == "96.0" and round(s["fixed"]["row_group_latency_p50"]) == 96
    assert f"{s['fixed']['sim_time']:.1f}" == "99.0"
    assert f["fixed"]["models"]["healthy-a"]["idle_with_work_left"] < 1
    assert max(f["fixed"]["models"][m]["work_done_at"] for m in HEALTHY) < 51  # "by ~50 s"
    # global and localized: first row at 62.5 s, half by ~75-76 s, median latency ~14 s
    for p in ("global", "localized"):
        assert f"{s[p]['time_to_first_row']:.1f}" == "62.5" and 75 <= s[p]["time_to_50pct_rows"] < 77
        assert round(s[p]["row_group_latency_p50"]) in (14, 15) and 65 <= s[p]["max_row_groups_in_flight"] <= 70
        assert 48 < f[p]["models"]["healthy-a"]["idle_with_work_left"] < 52  # "~50 s"
    assert f"{s['global']['sim_time']:.1f}" == "102.0" and f"{s['localized']['sim_time']:.1f}" == "100.9"
    assert "**102.0 s** (global) and **100.9 s** (localized)" in text
    # global blocked by deferred_tasks 93 times, localized never; localized by queued_llm_demand 102 times
    assert s["global"]["blocked_deferred_tasks"] == 93 and s["localized"]["blocked_deferred_tasks"] == 0
    assert s["localized"]["blocked_queued_llm_demand"] == 102
    assert (s["localized"]["observed_max_target"], s["global"]["observed_max_target"]) == (70, 66)
    assert "(70 vs 66)" in text


def test_02_sweep_numbers() -> None:
    f = facts("02_sweep_explorer.ipynb")
    t = f["sim_time"]
    assert f["runs"] == 30 and f["failed"] == 0
    # caps 2-4: under 2% apart (0.7% and 1.5%); from 8 on, localized ~8% faster
    assert f["no_gain_caps"] == [2, 4] and f["helping_caps"] == [8, 16, 64]
    gains = {cap: f"{row['localized_gain_vs_global']:.1%}" for cap, row in t.items()}
    assert gains["2"] == "0.7%" and gains["4"] == "1.5%"
    assert all(7.5 <= float(gains[c][:-1]) <= 8.5 for c in ("8", "16", "64"))
    assert all(row["localized"] <= row["global"] + 1e-9 for row in t.values())
    # 57.4 s vs 52.9 s at cap 16; localized 52.9 s at both 16 and 64; fixed 40.8 s at cap 64
    assert f"{t['16']['global']:.1f}" == "57.4" and f"{t['16']['localized']:.1f}" == "52.9"
    assert f"{t['64']['localized']:.1f}" == "52.9" and f"{t['64']['fixed']:.1f}" == "40.8"
    # localized never blocked by deferred_tasks; target 11 at t = 20 s, 53 at the end (cap 64)
    assert f["localized_deferred_blocks"] == 0 and f["localized_target_at_20s"] == 11
    assert f["target"]["64"]["localized"] == 53 and all(f["target"][c]["global"] == int(c) for c in ("2", "4", "8"))
    # healthy models idle with work left at cap 64: ~10 s localized, ~20 s global, 0 s fixed
    idle = f["healthy_idle"]["64"]
    assert round(idle["localized"]) == 10 and round(idle["global"]) == 20 and idle["fixed"] < 0.05


def test_03_custom_policy_numbers() -> None:
    f = facts("03_custom_policy.ipynb")
    c, b = f["cooling-2048"], f["healthy-bottleneck"]
    budget = f["budget"]
    assert budget == 32
    # cooling-2048: growth stops at 32 groups with 32 deferred; 96 healthy calls (global 3, localized 300, 100 deferred)
    assert c["localized-budget"]["observed_max_target"] == budget and c["localized-budget"]["max_deferred"] == budget
    assert c["localized-budget"]["healthy_calls"] == 3 * budget == 96
    assert c["global"]["healthy_calls"] == 3 and c["localized"]["healthy_calls"] == 300
    assert c["localized"]["max_deferred"] == 100
    # healthy-bottleneck: at most 11 deferred, so localized-budget = localized (54.4 s), ahead of global (56.6 s)
    assert b["localized-budget"]["max_deferred"] == b["localized"]["max_deferred"] == 11
    assert b["localized-budget"]["sim_time"] == b["localized"]["sim_time"] < b["global"]["sim_time"]
    assert f"{b['localized']['sim_time']:.1f}" == "54.4" and f"{b['global']['sim_time']:.1f}" == "56.6"
