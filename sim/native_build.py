"""Build the compiled hot path: ``python -m sim.native_build`` (``make native``).

mypyc turns the modules of :data:`sim.native.COMPILED_MODULES` into one C extension group, built
with the machine's C compiler in a temporary folder and installed into ``sim/_native/`` with a
manifest of the hashes of every source it was built from (those modules and the ``sim`` modules
they import, whose types the compiled code relies on). :mod:`sim.native` uses the build only while
all of those sources are unchanged. The build is skipped when the current one is up to date.

The sources are compiled as they are, with mypy's type errors ignored: the annotations that are
precise become native C types, the rest stays generic Python objects, and a value that
contradicts its annotation raises ``TypeError`` at run time (the test suite runs compiled).
Needs mypy (the ``native`` extra) and a C compiler with the Python headers.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .native import (
    BUILDER,
    COMPILED_MODULES,
    GROUP,
    MANIFEST,
    NATIVE_DIR,
    PACKAGE_DIR,
    check_build,
    read_manifest,
    source_digest,
)

#: mypy settings for the build: the sources are not mypy-clean, so errors are reported, not fatal.
MYPY_CONFIG = """\
[mypy]
ignore_missing_imports = True
follow_imports = silent
[mypy-sim.*]
ignore_errors = True
"""

SETUP_PY = """\
import sys
from setuptools import setup
from mypyc.build import mypycify

split = sys.argv.index("--")
config, target, *paths = sys.argv[1:split]
sys.argv = [sys.argv[0], *sys.argv[split + 1:]]
setup(
    name="admission-sim-hotpath",
    ext_modules=mypycify(["--config-file", config, *paths], group_name={group!r}, target_dir=target, opt_level="3"),
)
"""


class BuildError(RuntimeError):
    """The compiler or mypyc failed (the message says which step and how to see why)."""


def sim_imports(module: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The ``sim`` modules ``module`` imports (relative or absolute), as file names."""
    tree = ast.parse((package_dir / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("sim."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sim."))
    return {f"{name}.py" for name in found if (package_dir / f"{name}.py").is_file()}


def build_sources(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every source the build depends on: the compiled modules and the ``sim`` modules they import."""
    names = {f"{m}.py" for m in COMPILED_MODULES}
    for module in COMPILED_MODULES:
        names |= sim_imports(module, package_dir)
    return sorted(names)


def _mypy_version() -> str:
    try:
        from mypy.version import __version__
    except ImportError:
        raise BuildError(
            "mypyc is not installed: pip install -e '.[native]' (or make native), then build again"
        ) from None
    return str(__version__)


def build(jobs: int = 2, verbose: bool = False) -> Path:
    """Compile into a temporary folder, then install it as ``sim/_native`` (replacing only an
    earlier build of ours). Returns the installed folder."""
    mypy_version = _mypy_version()
    root = PACKAGE_DIR.parent
    sources = build_sources()
    digests = {name: source_digest(PACKAGE_DIR / name) for name in sources}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="admission-sim-native-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "mypy.ini").write_text(MYPY_CONFIG, encoding="utf-8")
        (tmp / "setup.py").write_text(SETUP_PY.format(group=GROUP), encoding="utf-8")
        paths = [f"sim/{m}.py" for m in COMPILED_MODULES]
        cmd = [
            sys.executable,
            str(tmp / "setup.py"),
            str(tmp / "mypy.ini"),
            str(tmp / "c"),
            *paths,
            "--",
            "build_ext",
            "--build-lib",
            str(tmp / "lib"),
            "--build-temp",
            str(tmp / "obj"),
            f"--parallel={max(1, jobs)}",
        ]
        env = dict(os.environ, MYPY_CACHE_DIR=str(tmp / "mypy-cache"))
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=not verbose, text=True)
        if proc.returncode != 0:
            log = tmp.parent / f"admission-sim-native-build-{os.getpid()}.log"
            log.write_text((proc.stdout or "") + (proc.stderr or ""), encoding="utf-8")
            raise BuildError(f"mypyc build failed (exit {proc.returncode}); its output is in {log}")
        lib = tmp / "lib"
        files: dict[str, str] = {}
        stage = PACKAGE_DIR / f"_native.partial-{os.getpid()}"
        stage.mkdir()
        try:
            for module in [*(f"sim.{m}" for m in COMPILED_MODULES), f"{GROUP}__mypyc"]:
                rel = Path(*module.split("."))
                found = sorted((lib / rel.parent).glob(f"{rel.name}.*"))
                found = [p for p in found if p.suffix in (".so", ".pyd")]
                if len(found) != 1:
                    raise BuildError(f"mypyc build: expected one compiled file for {module}, found {len(found)}")
                shutil.copy2(found[0], stage / found[0].name)
                files[module] = found[0].name
            manifest = {
                "builder": BUILDER,
                "group": GROUP,
                "modules": list(COMPILED_MODULES),
                "files": files,
                "sources": digests,
                "cache_tag": sys.implementation.cache_tag,
                "python": sys.version.split()[0],
                "mypy": mypy_version,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.perf_counter() - started, 1),
            }
            tmp_manifest = stage / f".{MANIFEST}.tmp"
            tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            tmp_manifest.rename(stage / MANIFEST)
            install_build(stage, NATIVE_DIR)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return NATIVE_DIR


def install_build(stage: Path, target: Path) -> None:
    """Put ``stage`` in place of ``target``; an existing folder is replaced only if it is an
    earlier build (its manifest says so), never a folder somebody else put there."""
    if target.exists() or target.is_symlink():
        if read_manifest(target) is None:
            raise BuildError(f"{target} exists and is not a build of ours: move it away, then build again")
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        target.rename(old)
        stage.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(target)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.native_build",
        description="Compile the simulator's hot path with mypyc into sim/_native (skipped when up to date).",
    )
    parser.add_argument("--force", action="store_true", help="build even when the current build is up to date")
    parser.add_argument("--status", action="store_true", help="only say which hot path runs, and why")
    parser.add_argument("--jobs", type=int, default=2, help="parallel C compiler jobs (default 2)")
    parser.add_argument("--verbose", action="store_true", help="show mypyc's and the compiler's output")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs: must be at least 1")
    current, _files = check_build()
    if args.status:
        print(current.describe())
        return 0
    if current.active and not args.force:
        print(f"compiled hot path up to date ({current.reason})")
        return 0
    print(f"compiling the hot path with mypyc ({len(COMPILED_MODULES)} modules, about a minute)...", flush=True)
    try:
        folder = build(jobs=args.jobs, verbose=args.verbose)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    status, _files = check_build()
    if not status.active:
        print(f"error: the new build in {folder} is not usable: {status.reason}", file=sys.stderr)
        return 1
    manifest = read_manifest(folder) or {}
    print(f"compiled hot path installed in {folder} ({manifest.get('build_seconds', '?')} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
