"""Which scenario a name means: bundled names, the file-path rule, directories, did-you-mean."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import sim
from sim.catalog import (
    BUNDLED_DIR,
    UnknownScenarioError,
    bundled_names,
    bundled_scenarios,
    is_file_reference,
    resolve_scenario,
)
from sim.scenario import ScenarioError

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = [
    "cooling-2048",
    "healthy-bottleneck",
    "rpm-capacity",
    "window-recovery",
    "workload-chain",
    "workload-fanout",
    "workload-mixed",
    "workload-retry",
]


def test_bundled_scenarios_live_in_the_package_with_descriptions() -> None:
    assert BUNDLED_DIR == ROOT / "sim" / "scenarios"
    assert bundled_names() == BUNDLED
    described = bundled_scenarios()
    assert [s.name for s in described] == BUNDLED
    assert all(s.description and "\n" not in s.description for s in described)


def test_pyproject_ships_the_scenarios_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["sim"]
    shipped = {p.name for pattern in patterns for p in (ROOT / "sim").glob(pattern)}
    assert shipped == {f"{name}.toml" for name in BUNDLED}
    assert not (ROOT / "scenarios").exists(), "a stale top-level scenarios/ folder"


def test_a_bare_name_is_bundled_even_when_a_folder_or_file_of_that_name_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cooling-2048").mkdir()
    (tmp_path / "results" / "cooling-2048").mkdir(parents=True)
    (tmp_path / "window-recovery").write_text("not a scenario")
    assert resolve_scenario("cooling-2048") == BUNDLED_DIR / "cooling-2048.toml"
    assert resolve_scenario("window-recovery") == BUNDLED_DIR / "window-recovery.toml"
    assert sim.load_scenario("cooling-2048").name == "cooling-2048"


def test_a_path_is_a_file_and_a_directory_is_never_a_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "cooling-2048").mkdir(parents=True)
    (tmp_path / "folder.toml").mkdir()
    assert resolve_scenario("mine.toml") == Path("mine.toml")  # existence is the loader's question
    assert resolve_scenario("sub/mine") == Path("sub/mine")
    for directory in ("results/cooling-2048", "folder.toml", Path("results")):
        with pytest.raises(UnknownScenarioError, match="is a directory, not a scenario file"):
            resolve_scenario(directory)
    with pytest.raises(ScenarioError, match="is a directory"):
        sim.load_scenario("results/cooling-2048")
    with pytest.raises(ScenarioError, match="no such scenario file"):
        sim.load_scenario("missing.toml")


def test_a_relative_path_is_looked_up_next_to_the_base_dir_first(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text("")
    assert resolve_scenario("mine.toml", base_dir=tmp_path) == tmp_path / "mine.toml"
    assert resolve_scenario("other.toml", base_dir=tmp_path) == Path("other.toml")


def test_an_unknown_name_lists_the_bundled_names_with_did_you_mean() -> None:
    with pytest.raises(UnknownScenarioError) as info:
        resolve_scenario("coolng-2048")
    text = str(info.value)
    assert "did you mean 'cooling-2048'?" in text and "\n" not in text
    assert all(name in text for name in BUNDLED)
    with pytest.raises(UnknownScenarioError) as info:
        sim.load_scenario("zzz")
    assert "did you mean" not in str(info.value) and "bundled: cooling-2048" in str(info.value)


@pytest.mark.parametrize(
    ("text", "is_file"),
    [("cooling-2048", False), ("a.toml", True), ("dir/name", True), ("./cooling-2048", True), (Path("x"), True)],
)
def test_the_file_reference_rule(text: str | Path, is_file: bool) -> None:
    assert is_file_reference(text) is is_file
