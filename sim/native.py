"""Which implementation of the hot path runs: the compiled one, or the Python sources.

The simulator's inner loop (the scheduler, the event loop, the admission layers and the recorder)
can be compiled with mypyc (``make native`` or ``python -m sim.native_build``; docs/performance.md,
"Compiled hot path"). The compiled modules are the same source files, turned into C: same
arithmetic, same order of operations, same results bit for bit (``tests/test_native.py`` checks
it against the Python sources). They never sit next to the sources, so they cannot shadow an
edited ``.py`` file: they live in ``sim/_native/`` with a manifest of the source hashes they were
built from, and :func:`install` (called first thing by ``import sim``) routes the imports of those
modules to them only while every one of those sources is unchanged, for this interpreter.
Otherwise, or with ``ADMISSION_SIM_PURE_PYTHON=1``, the Python sources run, exactly as before.

This module imports nothing of the simulator and nothing outside the standard library.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

#: The modules compiled together, in one mypyc group: the simulator's hot path.
COMPILED_MODULES: tuple[str, ...] = (
    "event_loop",
    "scheduler",
    "task_admission",
    "fair_queue",
    "request_admission",
    "metrics",
    "series",
    "providers",
    "histogram",
    "row_group_admission",
    "policies",
    "workload",
    "invariants",
)
#: The mypyc group's name: its shared library is ``<GROUP>__mypyc`` (a top-level module name).
GROUP = "admission_sim_hotpath"
#: Set to 1 (or any non-empty value but 0) to run the Python sources even when a build is current.
PURE_ENV = "ADMISSION_SIM_PURE_PYTHON"

PACKAGE_DIR = Path(__file__).resolve().parent
NATIVE_DIR = PACKAGE_DIR / "_native"
MANIFEST = "manifest.json"
#: Written into every manifest, so a build folder is recognisably ours before anything replaces it.
BUILDER = "sim.native_build"


@dataclass(frozen=True)
class NativeStatus:
    """Whether the compiled hot path is in use, and why (or why not)."""

    active: bool
    reason: str

    def describe(self) -> str:
        return ("compiled hot path (mypyc): " if self.active else "pure Python hot path: ") + self.reason


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pure_requested() -> bool:
    value = os.environ.get(PURE_ENV, "").strip()
    return value not in ("", "0")


def read_manifest(folder: Path = NATIVE_DIR) -> dict[str, object] | None:
    """The build manifest, or None where there is no readable one (never raises)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("builder") == BUILDER else None


def check_build(folder: Path = NATIVE_DIR, package_dir: Path = PACKAGE_DIR) -> tuple[NativeStatus, dict[str, Path]]:
    """Decide from the manifest whether the build in ``folder`` may run; the module files if so."""
    if _pure_requested():
        return NativeStatus(False, f"{PURE_ENV} is set"), {}
    manifest = read_manifest(folder)
    if manifest is None:
        return NativeStatus(False, "not built (make native)"), {}
    if manifest.get("cache_tag") != sys.implementation.cache_tag:
        return NativeStatus(False, f"built for {manifest.get('cache_tag')}, this is {sys.implementation.cache_tag}"), {}
    if manifest.get("modules") != list(COMPILED_MODULES):
        return NativeStatus(False, "built for another set of modules (make native)"), {}
    sources = manifest.get("sources")
    if not isinstance(sources, dict) or not sources:
        return NativeStatus(False, "manifest lists no sources (make native)"), {}
    for name, digest in sorted(sources.items()):
        try:
            current = source_digest(package_dir / name)
        except OSError:
            current = None
        if current != digest:
            return NativeStatus(False, f"sim/{name} changed since the build (make native)"), {}
    files: dict[str, Path] = {}
    wanted = {f"sim.{m}": m for m in COMPILED_MODULES}
    wanted[f"{GROUP}__mypyc"] = f"{GROUP}__mypyc"
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        return NativeStatus(False, "manifest lists no files (make native)"), {}
    for module in wanted:
        name = listed.get(module)
        path = folder / str(name) if isinstance(name, str) else None
        if path is None or not path.is_file():
            return NativeStatus(False, f"{module}: compiled file missing (make native)"), {}
        files[module] = path
    built = f"built {manifest.get('built_at', '?')} by mypyc {manifest.get('mypy', '?')}"
    return NativeStatus(True, built), files


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Imports the compiled modules (and their group's shared library) from ``sim/_native``."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


_status: NativeStatus | None = None


def install() -> NativeStatus:
    """Route the hot-path imports to a current build, once per process (see the module docstring)."""
    global _status
    if _status is not None:
        return _status
    status, files = check_build()
    already = [m for m in COMPILED_MODULES if f"sim.{m}" in sys.modules]
    if status.active and already:  # too late to switch: mixing the two in one process is unsafe
        status, files = NativeStatus(False, f"sim.{already[0]} was imported before sim"), {}
    if status.active:
        sys.meta_path.insert(0, _CompiledFinder(files))
    _status = status
    return status


def compiled_in_use() -> bool:
    """True when the hot-path modules of this process really are the compiled ones."""
    module = sys.modules.get("sim.scheduler")
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return bool(module is not None and str(getattr(module, "__file__", "")).endswith(suffixes))


#: This process's hot path, decided once, when ``sim`` is first imported.
HOT_PATH = install()
