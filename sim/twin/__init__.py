"""The real twin: run a scenario on the real DataDesigner ``AsyncTaskScheduler``.

::

    from sim.twin import run_twin
    result = run_twin(scenario, policy="localized", seed=0, timeout=60)
    result.summary["healthy_calls"], result.calls, result.target_changes

Needs the ``twin`` extra (``pip install 'admission-sim[twin]'``, the exact engine version in
:data:`TESTED_VERSION`). The engine is imported only inside the child process that runs it, so
importing this package never needs it. What is real and what is mocked: docs/twin.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError
from ..policies import get_policy
from ..scenario import Scenario, ScenarioError, with_overrides
from .engine import INSTALL_HINT, TESTED_VERSION, TwinUnavailable, installed_versions, require_engine
from .result import CPU_BOUND_UTILIZATION, TwinResult, result_from_raw, write_twin_result
from .runner import DEFAULT_SAMPLE_INTERVAL, DEFAULT_TIMEOUT, TwinRunFailed, TwinTimeout, run_in_child

#: The policies the real engine can run: adaptive off, the engine's own rule, and the pre-#743 rule.
REAL_POLICIES = ("fixed", "global", "localized")

__all__ = [
    "CPU_BOUND_UTILIZATION",
    "DEFAULT_SAMPLE_INTERVAL",
    "DEFAULT_TIMEOUT",
    "INSTALL_HINT",
    "REAL_POLICIES",
    "TESTED_VERSION",
    "TwinResult",
    "TwinRunFailed",
    "TwinTimeout",
    "TwinUnavailable",
    "TwinUnsupported",
    "check_supported",
    "installed_versions",
    "require_engine",
    "resolve_policy",
    "run_twin",
    "write_twin_result",
]


class TwinUnsupported(InputError):
    """The scenario or policy cannot be expressed on the real engine (nothing ran)."""


def resolve_policy(scenario: Scenario, policy: str | None) -> str:
    """The policy name to run on the real engine; a plug-in policy is a :class:`TwinUnsupported`."""
    name = scenario.scheduler.policy if policy is None else str(policy)
    if name in REAL_POLICIES:
        return name
    try:
        get_policy(name)
    except InputError as err:
        if policy is None:  # the name came from the scenario: say where
            raise ScenarioError(f"scenario {scenario.name}: scheduler.policy: {err}") from None
        raise
    raise TwinUnsupported(
        f"policy '{name}' is a plug-in policy: it runs on the simulator only; "
        f"the real engine runs {', '.join(REAL_POLICIES)}"
    )


def check_supported(scenario: Scenario) -> None:
    """Reject, before anything runs, what the twin cannot build on the real engine."""
    seen: dict[str, str] = {}
    for i, col in enumerate(scenario.columns):
        gen = col.generator_name
        if gen in seen:
            raise TwinUnsupported(
                f"scenario {scenario.name}: columns.{i}.generator: '{gen}' makes more than one column "
                f"({seen[gen]}, {col.name}); multi-output generators are not supported by the real twin"
            )
        seen[gen] = col.name
    if scenario.request_admission.enabled:
        models = {m.name: m for m in scenario.models}
        for i, col in enumerate(scenario.columns):
            if col.resolved_kind == "model" and models[col.model].domain != "chat":
                raise TwinUnsupported(
                    f"scenario {scenario.name}: columns.{i}.model: model '{col.model}' has domain "
                    f"'{models[col.model].domain}'; with request admission on, the real twin runs chat models only"
                )


def run_twin(
    scenario: Scenario,
    policy: str | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
    adaptive: bool | None = None,
) -> TwinResult:
    """Run ``scenario`` once on the real scheduler in a fresh child process.

    Raises :class:`TwinUnavailable` (engine missing or another version), :class:`TwinUnsupported`
    or :class:`~sim.scenario.ScenarioError` before anything runs, :class:`TwinTimeout` when the run
    exceeds ``timeout`` wall seconds (it is killed; no result), :class:`TwinRunFailed` if it crashes.
    ``adaptive`` forces adaptive row-group admission on or off under the policy's deferred rule
    (default: off for ``fixed`` only); with it off, ``global`` and ``localized`` must agree (the
    control experiment of docs/twin.md).
    """
    version = require_engine()
    if overrides:
        scenario = with_overrides(scenario, overrides)
    name = resolve_policy(scenario, policy)
    check_supported(scenario)
    run_seed = scenario.seed if seed is None else int(seed)
    raw = run_in_child(
        scenario.model_dump(mode="json"),
        name,
        run_seed,
        timeout=timeout,
        sample_interval=sample_interval,
        adaptive=adaptive,
        label=f"scenario {scenario.name}, policy {name}, seed {run_seed}",
    )
    return result_from_raw(scenario, raw, version)
