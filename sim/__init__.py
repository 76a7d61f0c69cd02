"""admission-sim: a discrete-event model of DataDesigner's async scheduler admission layers.

Public API::

    from sim import load_scenario, simulate
    scenario = load_scenario("cooling-2048")
    result = simulate(scenario, policy="localized", seed=0)
    result.summary["healthy_calls"], result.timeseries
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

# First: decides whether the hot-path modules imported below are the compiled ones (sim/native.py).
from .native import HOT_PATH

# isort: split
from .policies import POLICIES, AdmissionView, Policy, UnknownPolicyError, get_policy, load_plugin, register_policy
from .results import Result, write_result
from .scenario import Scenario, ScenarioError, load_scenario, with_overrides
from .scheduler import SimulationError
from .sweep import compare, plan_sweep, run_plan, run_sweep

__version__ = "0.1.0"

__all__ = [
    "HOT_PATH",
    "POLICIES",
    "AdmissionView",
    "Policy",
    "Result",
    "Scenario",
    "ScenarioError",
    "SimulationError",
    "compare",
    "get_policy",
    "load_plugin",
    "load_scenario",
    "plan_sweep",
    "register_policy",
    "run_plan",
    "run_sweep",
    "simulate",
    "with_overrides",
    "write_result",
    "__version__",
]


def simulate(
    scenario: Scenario,
    policy: str | Policy | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> Result:
    """Build the model for ``scenario`` and run it once.

    ``policy`` defaults to ``scenario.scheduler.policy`` and ``seed`` to ``scenario.seed``.
    Same scenario, policy and seed give an identical result (wall time aside).
    """
    from .collector import tuned_for_a_run
    from .results import result_from_scheduler
    from .scheduler import Scheduler
    from .workload import build_workload

    if overrides:
        scenario = with_overrides(scenario, overrides)
    if policy is None:
        try:
            chosen = get_policy(scenario.scheduler.policy)
        except UnknownPolicyError as err:  # the name came from the scenario: say where
            raise ScenarioError(f"scenario {scenario.name}: scheduler.policy: {err}") from None
    else:
        chosen = get_policy(policy)
    run_seed = scenario.seed if seed is None else int(seed)
    started = time.perf_counter()
    sched = Scheduler(scenario, build_workload(scenario, run_seed), chosen, run_seed)
    with tuned_for_a_run():
        sched.run()
    return result_from_scheduler(sched, wall_seconds=time.perf_counter() - started)
