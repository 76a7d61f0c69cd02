"""Shared fixtures: build small scenarios and workloads from plain dicts.

Unit tests describe only what matters to them (a few columns and models); everything else takes
the scenario defaults, plus a ``stop.max_time`` so that always-429 models pass validation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from sim.scenario import Scenario, scenario_from_dict
from sim.workload import Workload, build_workload

ScenarioFactory = Callable[..., Scenario]
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
