"""Shared fixtures: build small scenarios and workloads from plain dicts.

Unit tests describe only what matters to them (a few columns and models); everything else takes
the scenario defaults, plus a ``stop.max_time`` so that always-429 models pass validation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from sim.scenario import Scenario, scenario_from_dict
from sim.twin import TESTED_VERSION
from sim.twin import engine as twin_engine
from sim.workload import Workload, build_workload

ScenarioFactory = Callable[..., Scenario]


def pytest_report_header() -> str:
    """Which hot path the suite runs: the compiled one when current, else the sources (sim/native.py)."""
    import sim

    return f"admission-sim: {sim.HOT_PATH.describe()}"

WorkloadFactory = Callable[..., Workload]


def _scenario(
    columns: Iterable[Mapping[str, Any]],
    models: Iterable[Mapping[str, Any]] = (),
    *,
    row_groups: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    request_admission: Mapping[str, Any] | None = None,
    stop: Mapping[str, Any] | None = None,
    name: str = "unit",
) -> Scenario:
    data: dict[str, Any] = {
        "name": name,
        "row_groups": dict(row_groups or {"count": 1, "size": 1}),
        "models": [dict(m) for m in models],
        "columns": [dict(c) for c in columns],
        "stop": dict(stop or {"max_time": 60.0}),
    }
    if scheduler:
        data["scheduler"] = dict(scheduler)
    if request_admission:
        data["request_admission"] = dict(request_admission)
    return scenario_from_dict(data, source="<test>")


@pytest.fixture
def make_scenario() -> ScenarioFactory:
    """``make_scenario(columns, models=(), row_groups=..., scheduler=..., ...) -> Scenario``."""
    return _scenario


@pytest.fixture
def make_workload() -> WorkloadFactory:
    """Same arguments as ``make_scenario``; returns the compiled :class:`Workload`."""

    def build(*args: Any, **kwargs: Any) -> Workload:
        return build_workload(_scenario(*args, **kwargs))

    return build


#: Tests that drive the real DataDesigner engine. Without the ``twin`` extra they skip on a
#: developer's machine; in CI (``CI`` set), where ``make test`` installs it, they must run, so a
#: broken install fails instead of skipping silently.
needs_engine = pytest.mark.skipif(
    not os.environ.get("CI") and any(v != TESTED_VERSION for v in twin_engine.installed_versions().values()),
    reason="the 'twin' extra (data-designer-engine==0.9.7) is not installed",
)
