"""Golden summaries: every bundled scenario under every built-in policy, seed 0, must reproduce the
stored summary and time-series hashes exactly.

This pins the model's behaviour bit for bit while the hot paths are optimised. Only the summary
keys present in the golden file are compared (new metrics may be added freely), and only the
time-series columns that existed when the goldens were written are hashed.

Both event-loop models have goldens: ``tests/golden`` (``none``, the zero-cost loop) and
``tests/golden/calibrated`` (the default). Each snapshot names its model explicitly, so changing
the default changes no golden.
Regenerate after an *intended* behaviour change with::

    ADMISSION_SIM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py -q
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sim

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SCENARIOS = sorted((ROOT / "sim" / "scenarios").glob("*.toml"))
POLICIES = ("fixed", "global", "localized")
UPDATE = os.environ.get("ADMISSION_SIM_UPDATE_GOLDEN", "") not in ("", "0")

#: Columns hashed; frozen so that columns added later do not invalidate the goldens.
TIMESERIES_COLUMNS = (
    "time",
    "target",
    "active_row_groups",
    "active_rows",
    "queued_tasks",
    "in_flight_tasks",
    "deferred_tasks",
    "completed_rows",
    "successful_calls",
    "healthy_calls",
)
MODEL_TIMESERIES_COLUMNS = ("time", "model", "in_flight", "waiting", "current_limit", "cooldown_until")


def _table_digest(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, Any]:
    """SHA-256 of the CSV text of ``columns`` (floats written with ``repr``, so exact)."""
    missing = [c for c in columns if c not in frame.columns]
    assert not missing, f"time-series columns disappeared: {missing}"
    lines = [",".join(columns)]
    values = [frame[c].astype(str).tolist() if c == "model" else frame[c].tolist() for c in columns]
    for row in zip(*values, strict=True):
        lines.append(",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in row))
    text = "\n".join(lines) + "\n"
    return {"rows": len(frame), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _plain(value: Any) -> Any:
    """Summary values as JSON-comparable plain values (numpy scalars unwrapped)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


#: Golden folder of each event-loop model: the zero-cost loop and the calibrated default (docs/event-loop.md).
LOOP_GOLDEN_DIRS = {"none": GOLDEN_DIR, "calibrated": GOLDEN_DIR / "calibrated"}


def _snapshot(scenario_path: Path, policy: str, loop_model: str = "none") -> dict[str, Any]:
    scenario = sim.load_scenario(scenario_path, overrides=[f"scheduler.loop.model={loop_model}"])
    result = sim.simulate(scenario, policy=policy, seed=0)
    return {
        "summary": {k: _plain(v) for k, v in result.summary.items()},
        "timeseries": _table_digest(result.timeseries, TIMESERIES_COLUMNS),
        "model_timeseries": _table_digest(result.model_timeseries, MODEL_TIMESERIES_COLUMNS),
    }


def _same(expected: Any, actual: Any) -> bool:
    """Exact equality (JSON keeps floats' repr, so it round-trips), and a bool stays a bool."""
    if isinstance(expected, bool) != isinstance(actual, bool):
        return False
    if isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected):
        return math.isnan(actual)
    return expected == actual


@pytest.mark.parametrize("loop_model", LOOP_GOLDEN_DIRS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scenario_path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_golden_summary(scenario_path: Path, policy: str, loop_model: str) -> None:
    folder = LOOP_GOLDEN_DIRS[loop_model]
    golden_file = folder / f"{scenario_path.stem}__{policy}.json"
    name = golden_file.relative_to(GOLDEN_DIR)
    snap = _snapshot(scenario_path, policy, loop_model)
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        golden_file.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
        return
    assert golden_file.exists(), f"no golden {name}; run with ADMISSION_SIM_UPDATE_GOLDEN=1"
    golden = json.loads(golden_file.read_text())

    summary = snap["summary"]
    diffs = {
        key: (want, summary.get(key, "<missing>"))
        for key, want in golden["summary"].items()
        if key not in summary or not _same(want, summary[key])
    }
    assert not diffs, f"{name}: summary differs (golden, now): {diffs}"
    for table in ("timeseries", "model_timeseries"):
        assert snap[table] == golden[table], f"{name}: {table} differs"


@pytest.mark.parametrize("loop_model", LOOP_GOLDEN_DIRS)
def test_golden_files_match_bundled_scenarios(loop_model: str) -> None:
    """Every bundled run has a golden and no golden is left over from a removed scenario."""
    expected = {f"{p.stem}__{pol}.json" for p in SCENARIOS for pol in POLICIES}
    present = {p.name for p in LOOP_GOLDEN_DIRS[loop_model].glob("*.json")}
    assert SCENARIOS, "no bundled scenarios found"
    assert present == expected, f"missing: {sorted(expected - present)}, stale: {sorted(present - expected)}"
