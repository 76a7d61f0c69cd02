"""Does deferred work block growth of the adaptive row-group target?

A policy is a named rule registered in :data:`POLICIES`. It decides two things:

* whether row-group admission is adaptive at all (``fixed`` is what DataDesigner's dataset
  builder ships, docs/model.md, "Fixed mode": the target is pinned at the hard cap);
* when adaptive, whether deferred work blocks growth, and where that check sits in the
  block-reason order (``global`` checks it first, docs/model.md "The deferred clause of each policy"; ``localized``
  third, docs/model.md "The localized clause").

Policies are pure functions over a read-only :class:`AdmissionView`; they never mutate state.
Adding one takes a few lines::

    from sim.policies import register_policy

    @register_policy("half", description="block while more than half the deferred work ...")
    def half(view):
        return view.deferred_count > 10
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from mypy_extensions import mypyc_attr

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


# The exceptions stay interpreted classes when this module is compiled with mypyc, which cannot
# derive a native class from KeyError or ValueError.
@mypyc_attr(native_class=False)
class UnknownPolicyError(KeyError, InputError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0])


E = TypeVar("E", bound=BaseException)


def _chained(exc: E, cause: BaseException | None) -> E:
    """The cause of ``raise exc from cause``, set by hand as well: compiled with mypyc, a raise
    drops its ``from`` clause, and :func:`load_plugin` reads ``__cause__`` to tell a missing
    plug-in module apart."""
    exc.__cause__ = cause  # also sets __suppress_context__, as ``from`` does
    return exc


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
        raise _chained(
            UnknownPolicyError(f"unknown policy '{name}'; registered: {', '.join(sorted(POLICIES))}"), None
        ) from None


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


@mypyc_attr(native_class=False)
class PluginError(InputError):
    """A ``module:function`` plugin could not be loaded. CLI exit 2."""


_LOADED_PLUGINS: set[str] = set()


def load_plugin(spec: str) -> None:
    """Import a plug-in and call its register function once: ``module:function`` or ``file.py:function``.

    ``module`` is imported normally, or from the current directory if it is not importable
    (``--plugin mypolicies:register`` finds ``./mypolicies.py``); a target ending in ``.py`` or
    containing a path separator is loaded from that file. The function takes no arguments and
    registers policies with :func:`sim.register_policy`. Loading the same spec again is a no-op,
    so worker processes can call it for every run. Anything that goes wrong (the import raises,
    even ``SyntaxError`` or ``SystemExit``; the target is missing, takes arguments, raises, or
    registers nothing) is a :class:`PluginError` with one line. Nothing from a scenario file or
    manifest is ever imported: plug-ins come from the command line or the API.
    """
    if spec in _LOADED_PLUGINS:
        return
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name or not func_name.isidentifier():
        raise PluginError(
            f"plugin '{spec}': expected module:function or path/to/file.py:function, e.g. mypolicies:register"
        )
    before = set(POLICIES)
    module = _import_plugin(spec, target)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise PluginError(f"plugin '{spec}': '{target}' has no callable '{func_name}'")
    required = _required_parameters(func)
    if required:
        raise PluginError(
            f"plugin '{spec}': '{func_name}' takes arguments ({', '.join(required)}); --plugin needs a function "
            "called with none that registers policies, e.g. def register(): ..."
        )
    _guarded(spec, f"{func_name}()", func)
    if set(POLICIES) == before:
        raise PluginError(f"plugin '{spec}': importing '{target}' and calling {func_name}() registered no policy")
    _LOADED_PLUGINS.add(spec)


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_plugin(spec: str, target: str) -> types.ModuleType:
    if _is_file_target(target):
        path = Path(target)
        if not path.is_file():
            raise PluginError(f"plugin '{spec}': no such file {path}")
        name = path.stem
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        if module_spec is None or module_spec.loader is None:
            raise PluginError(f"plugin '{spec}': cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            _guarded(spec, f"importing {path}", lambda: module_spec.loader.exec_module(module))
        except PluginError:
            sys.modules.pop(name, None)
            raise
        return module
    top = target.split(".")[0]
    try:
        return _guarded(spec, f"importing '{target}'", lambda: importlib.import_module(target))
    except PluginError as err:
        missing = isinstance(err.__cause__, ModuleNotFoundError) and err.__cause__.name == top
        here = Path.cwd()
        if not missing or not ((here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file()):
            raise
    sys.path.insert(0, str(here))  # the documented path: a plug-in file in the current directory
    try:
        return _guarded(spec, f"importing '{target}' from {here}", lambda: importlib.import_module(target))
    finally:
        sys.path.remove(str(here))


def _guarded(spec: str, what: str, action: Callable[[], Any]) -> Any:
    """Run plug-in code; turn any failure, including ``sys.exit()``, into a one-line PluginError."""
    try:
        return action()
    except KeyboardInterrupt:
        raise
    except SystemExit as err:
        raise _chained(PluginError(f"plugin '{spec}': {what} called sys.exit({err.code!r})"), None) from None
    except ModuleNotFoundError as err:
        raise _chained(PluginError(f"plugin '{spec}': cannot import module '{err.name}' ({what}): {err}"), err) from err
    except Exception as err:  # noqa: BLE001 - user code: report it, whatever it raised
        text = " ".join(str(err).split())
        raise _chained(PluginError(f"plugin '{spec}': {what} raised {type(err).__name__}: {text}"), None) from None


def _required_parameters(func: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


# ---------------------------------------------------------------------------------------------
# The localized analysis (docs/model.md, "The localized clause")
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
    """docs/model.md, "The localized clause" for a deferred set and a pending row group of ``pending_size`` rows."""
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
