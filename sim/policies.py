"""Does deferred work block growth of the adaptive row-group target?

A policy is a named rule registered in :data:`POLICIES`. It decides two things:

* whether row-group admission is adaptive at all (``fixed`` is what DataDesigner's dataset
  builder ships, spec S1/2.3: the target is pinned at the hard cap);
* when adaptive, whether deferred work blocks growth, and where that check sits in the
  block-reason order (``global`` checks it first, spec 6.1; ``localized`` third, spec 6.2).

Policies are pure functions over a read-only :class:`AdmissionView`; they never mutate state.
Adding one takes a few lines::

    from sim.policies import register_policy

    @register_policy("half", description="block while more than half the deferred work ...")
    def half(view):
        return view.deferred_count > 10
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from .errors import InputError
from .workload import Workload

DeferredRule = Callable[["AdmissionView"], bool]


@dataclass(frozen=True, slots=True)
class AdmissionView:
    """What a policy may look at when the adaptive target is evaluated."""

    workload: Workload
    deferred_count: int
    deferred_generators: frozenset[int]
    pending_size: int | None  # size of the pending row group, None if there is none


@dataclass(frozen=True)
class Policy:
    """A registered admission policy."""

    name: str
    adaptive: bool
    deferred_blocks: DeferredRule | None = None
    deferred_check: Literal["first", "after_row_guard"] = "after_row_guard"
    description: str = ""


POLICIES: dict[str, Policy] = {}

#: What ``scheduler.policy`` accepts in a scenario file (see :class:`sim.scenario.SchedulerConfig`).
POLICY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


class UnknownPolicyError(KeyError, InputError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0])


def register_policy(
    name: str,
    *,
    adaptive: bool = True,
    deferred_check: Literal["first", "after_row_guard"] = "after_row_guard",
    description: str = "",
    replace: bool = False,
) -> Callable[[DeferredRule], DeferredRule]:
    """Decorator registering ``rule`` as the deferred clause of policy ``name``.

    The name must be usable from a scenario file (``scheduler.policy``) and the command line:
    letters, digits, ``_``, ``.`` and ``-``, starting with a letter or ``_``, at most 64 characters.
    """
    if not POLICY_NAME.fullmatch(name):
        raise ValueError(
            f"policy name {name!r} is not usable from a scenario: use letters, digits, '_', '.', '-' "
            "(starting with a letter or '_', at most 64 characters)"
        )

    def decorator(rule: DeferredRule) -> DeferredRule:
        if name in POLICIES and not replace:
            raise ValueError(f"policy '{name}' is already registered (pass replace=True to override)")
        POLICIES[name] = Policy(name, adaptive, rule, deferred_check, description or (rule.__doc__ or "").strip())
        return rule

    return decorator


def get_policy(name: str | Policy) -> Policy:
    if isinstance(name, Policy):
        return name
    try:
        return POLICIES[name]
    except KeyError:
        raise UnknownPolicyError(f"unknown policy '{name}'; registered: {', '.join(sorted(POLICIES))}") from None


POLICIES["fixed"] = Policy(
    "fixed",
    adaptive=False,
    description="Fixed row-group cap (max_concurrent_row_groups), as DataDesigner's dataset builder ships.",
)


@register_policy("global", deferred_check="first")
def global_block(view: AdmissionView) -> bool:
    """Adaptive; any deferred task freezes the target, checked before every other reason (pre-#743)."""
    return view.deferred_count > 0


@register_policy("localized")
def localized_block(view: AdmissionView) -> bool:
    """Adaptive; deferred work blocks only if the pending row group exposes no independent work (#743)."""
    if view.deferred_count == 0:
        return False
    return analyze_deferred(view.workload, view.deferred_generators, view.pending_size).blocks


# ---------------------------------------------------------------------------------------------
# Plugins: custom policies come only from an explicit module:function, never from a file
# ---------------------------------------------------------------------------------------------


class PluginError(InputError):
    """A ``module:function`` plugin could not be loaded. CLI exit 2."""


_LOADED_PLUGINS: set[str] = set()


def load_plugin(spec: str) -> None:
    """Import ``module`` and call ``function()`` once, e.g. ``"mypkg.policies:register"``.

    The function is expected to register policies with :func:`sim.register_policy`. Loading the
    same spec again is a no-op, so worker processes can call it for every run. Nothing from a
    scenario file or manifest is ever imported: plugins come from the command line or the API.
    """
    if spec in _LOADED_PLUGINS:
        return
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise PluginError(f"plugin '{spec}': expected module:function, e.g. mypkg.policies:register")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PluginError(f"plugin '{spec}': cannot import module '{module_name}': {err}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise PluginError(f"plugin '{spec}': module '{module_name}' has no callable '{func_name}'")
    func()
    _LOADED_PLUGINS.add(spec)


# ---------------------------------------------------------------------------------------------
# The localized analysis (spec 6.2)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeferredAnalysis:
    """Result of the localized analysis, also reported as ``deferred_admission`` diagnostics."""

    blocks: bool
    deferred_keys: frozenset[str]
    candidate_columns: tuple[str, ...]
    blocked_columns: tuple[str, ...]
    independent_columns: tuple[str, ...] = field(default=())


def analyze_deferred(
    workload: Workload, deferred_generators: frozenset[int], pending_size: int | None
) -> DeferredAnalysis:
    """Spec 6.2 for a deferred set and a pending row group of ``pending_size`` rows."""
    return _analyze(workload, deferred_generators, pending_size is not None and pending_size > 0)


@lru_cache(maxsize=4096)
def _analyze(workload: Workload, deferred: frozenset[int], has_rows: bool) -> DeferredAnalysis:
    gens = workload.generators
    deferred_keys: frozenset[str] = frozenset().union(*(gens[g].localization_keys for g in deferred))
    # Candidates: one probe per generator instance in topological order; a cell probe needs a row.
    candidates = [gens[g] for g in workload.topo_order if has_rows or not gens[g].is_cell]
    blocked = set(deferred)
    blocked.update(c.index for c in candidates if c.localization_keys & deferred_keys)
    independent = [
        c
        for c in candidates
        if not (c.localization_keys & deferred_keys)
        and not (c.ancestors & blocked)
        and (c.resource_scoped or not (c.descendants & blocked))
    ]
    return DeferredAnalysis(
        blocks=bool(deferred) and not independent,
        deferred_keys=deferred_keys,
        candidate_columns=tuple(col for c in candidates for col in c.output_columns),
        blocked_columns=tuple(col for g in sorted(blocked) for col in gens[g].output_columns),
        independent_columns=tuple(col for c in independent for col in c.output_columns),
    )
