"""The compiled hot path (sim/native.py, sim/native_build.py): used only while current, never
shadowing an edited source, and giving the same results as the Python sources bit for bit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sim
from sim import native, native_build

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "benchmarks" / "scenarios" / "production.toml"
#: Set by .ci/run: a CI run must test the compiled hot path, not silently fall back.
REQUIRE = os.environ.get("ADMISSION_SIM_REQUIRE_NATIVE", "") not in ("", "0")

#: (scenario, overrides): thinned series, salvage, both loop models, AIMD, the three policies.
CASES = [
    (
        str(PRODUCTION),
        ["row_groups.num_records=3000", "scheduler.policy='localized'", "recorder.max_series_rows=400"],
    ),
    (str(PRODUCTION), ["row_groups.num_records=2000", "scheduler.policy='fixed'", "scheduler.loop.model='none'"]),
    ("cooling-2048", ["scheduler.policy='global'"]),
    ("window-recovery", ["scheduler.policy='localized'", "scheduler.loop.model='none'"]),
]

DIGEST_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_native import CASES, digest
import sim
print(json.dumps({{"compiled": sim.native.compiled_in_use(), "digests": [digest(s, o) for s, o in CASES]}}))
"""


def digest(scenario: str, overrides: list[str]) -> dict[str, str]:
    """SHA-256 of a run's summary and of every column of its two time series (floats by repr)."""
    result = sim.simulate(sim.load_scenario(scenario, overrides=overrides))
    summary = json.dumps({k: repr(v) for k, v in result.summary.items()}, sort_keys=True)
    out = {"summary": hashlib.sha256(summary.encode()).hexdigest()}
    for name in ("timeseries", "model_timeseries"):
        frame = getattr(result, name)
        text = frame.to_csv(index=False, float_format=repr) if len(frame) else ",".join(frame.columns)
        out[name] = f"{len(frame)}:{hashlib.sha256(text.encode()).hexdigest()}"
    return out


def test_a_current_build_is_what_runs() -> None:
    status, _files = native.check_build()
    if REQUIRE:
        assert status.active, status.describe()
    if not status.active:
        pytest.skip(status.describe())
    assert sim.HOT_PATH.active
    assert native.compiled_in_use()
    assert Path(sys.modules["sim.scheduler"].__file__).parent == native.NATIVE_DIR


def test_pure_python_and_the_compiled_hot_path_give_identical_results() -> None:
    if not native.compiled_in_use():
        pytest.skip("the compiled hot path is not built here: nothing to compare with the sources")
    env = dict(os.environ, **{native.PURE_ENV: "1"})
    script = DIGEST_SCRIPT.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pure = json.loads(proc.stdout.strip().splitlines()[-1])
    assert pure["compiled"] is False
    compiled = [digest(s, o) for s, o in CASES]
    assert compiled == pure["digests"]


# -- the decision, on fake builds -----------------------------------------------------------------


def _fake_build(tmp_path: Path, **changes: object) -> tuple[Path, Path]:
    """A package copy of the sources the build hashes, and a build folder whose manifest matches it."""
    package = tmp_path / "pkg"
    package.mkdir()
    sources = native_build.build_sources()
    for name in sources:
        shutil.copy2(native.PACKAGE_DIR / name, package / name)
    folder = tmp_path / "_native"
    folder.mkdir()
    files = {}
    for module in [*(f"sim.{m}" for m in native.COMPILED_MODULES), f"{native.GROUP}__mypyc"]:
        name = module.rsplit(".", 1)[-1] + ".cpython-test.so"
        (folder / name).write_bytes(b"")
        files[module] = name
    manifest = {
        "builder": native.BUILDER,
        "modules": list(native.COMPILED_MODULES),
        "files": files,
        "sources": {name: native.source_digest(package / name) for name in sources},
        "cache_tag": sys.implementation.cache_tag,
        "mypy": "test",
        "built_at": "now",
    }
    manifest.update(changes)
    (folder / native.MANIFEST).write_text(json.dumps(manifest))
    return folder, package


def test_a_matching_build_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    folder, package = _fake_build(tmp_path)
    status, files = native.check_build(folder, package)
    assert status.active, status.reason
    assert set(files) == {f"sim.{m}" for m in native.COMPILED_MODULES} | {f"{native.GROUP}__mypyc"}


def test_an_edited_source_falls_back_to_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    folder, package = _fake_build(tmp_path)
    with (package / "scheduler.py").open("a") as f:
        f.write("\n# edited\n")
    status, files = native.check_build(folder, package)
    assert not status.active and files == {}
    assert "sim/scheduler.py changed since the build" in status.reason


def test_a_source_the_compiled_code_imports_counts_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled modules rely on the types of what they import (workload, scenario)."""
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    assert {"workload.py", "scenario.py"} <= set(native_build.build_sources())
    folder, package = _fake_build(tmp_path)
    (package / "workload.py").write_text("# another workload\n")
    assert "sim/workload.py changed" in native.check_build(folder, package)[0].reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"cache_tag": "cpython-99"}, "built for cpython-99"),
        ({"modules": ["scheduler"]}, "another set of modules"),
        ({"builder": "someone else"}, "not built"),
        ({"sources": {}}, "lists no sources"),
    ],
)
def test_a_build_for_something_else_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], reason: str
) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    folder, package = _fake_build(tmp_path, **changes)
    status, _ = native.check_build(folder, package)
    assert not status.active and reason in status.reason


def test_a_missing_compiled_file_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    folder, package = _fake_build(tmp_path)
    (folder / "fair_queue.cpython-test.so").unlink()
    assert "sim.fair_queue: compiled file missing" in native.check_build(folder, package)[0].reason


def test_the_environment_variable_forces_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, package = _fake_build(tmp_path)
    monkeypatch.setenv(native.PURE_ENV, "1")
    assert native.check_build(folder, package)[0].reason == f"{native.PURE_ENV} is set"
    monkeypatch.setenv(native.PURE_ENV, "0")
    assert native.check_build(folder, package)[0].active


def test_a_pure_process_imports_the_sources() -> None:
    env = dict(os.environ, **{native.PURE_ENV: "1"})
    code = "import sim, sim.scheduler; print(sim.scheduler.__file__); print(sim.HOT_PATH.describe())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    path, described = proc.stdout.strip().splitlines()
    assert path.endswith("scheduler.py")
    assert described == f"pure Python hot path: {native.PURE_ENV} is set"


# -- the build's own safety -------------------------------------------------------------------------


def test_the_build_never_replaces_a_folder_it_did_not_make(tmp_path: Path) -> None:
    target = tmp_path / "_native"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(native_build.BuildError, match="is not a build of ours"):
        native_build.install_build(stage, target)
    assert (target / "notes.txt").read_text() == "mine"


def test_the_build_replaces_an_earlier_build(tmp_path: Path) -> None:
    target, _package = _fake_build(tmp_path)
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "new.so").write_bytes(b"1")
    native_build.install_build(stage, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.so"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("_native.old")] == []


def test_status_and_bad_options_on_the_command_line() -> None:
    run = [sys.executable, "-m", "sim.native_build"]
    proc = subprocess.run([*run, "--status"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stdout.startswith(("compiled hot path (mypyc): ", "pure Python hot path: "))
    proc = subprocess.run([*run, "--jobs", "0"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--jobs: must be at least 1" in proc.stderr
