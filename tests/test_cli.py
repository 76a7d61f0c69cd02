"""The command line end to end: compare, help texts, plugins, scenarios, and one real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sim.cli import build_command, main
from sim.policies import _LOADED_PLUGINS, POLICIES

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "row_groups.count=8"]
QUIET = ["--no-figures", "--no-progress", "--jobs", "1"]


def test_compare_prints_policies_side_by_side_with_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "cooling-2048",
            "--set",
            "row_groups.count=64",
            "--set",
            "stop.max_time=0.5",
            "--out",
            str(out),
            *QUIET,
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "policies fixed, global, localized" in text and "baseline global" in text  # global when listed
    assert all(len(line) <= 100 for line in text.splitlines())
    runs = pd.read_csv(out / "runs.csv").set_index("policy")
    row = next(line for line in text.splitlines() if line.startswith("observed_max_target"))
    fixed, glob = runs.loc["fixed", "observed_max_target"], runs.loc["global", "observed_max_target"]
    assert row.split()[:3] == ["observed_max_target", "groups", "higher"]
    assert row.split()[3:5] == [str(fixed), str(glob)]
    assert float(row.split()[6]) == pytest.approx(fixed / glob, rel=1e-3)
    rate_limited = next(line for line in text.splitlines() if line.startswith("rate_limited_calls"))
    assert rate_limited.split()[1:3] == ["calls", "lower"]
    for metric in (
        "sim_time",
        "rows_per_second",
        "calls_ok[healthy-a]",
        "calls_429[cooling]",
        "healthy_calls_while_limited",
    ):
        assert any(line.startswith(metric) for line in text.splitlines()), metric
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "compare" and manifest["policies"] == ["fixed", "global", "localized"]
    assert manifest["grid"] == {} and [r["run_id"] for r in manifest["runs"]] == ["r0000", "r0001", "r0002"]


def test_compare_over_seeds_prints_distribution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["compare", "window-recovery", *SMALL, "--policies", "global,localized", "--seeds", "3", "--seed", "4"]
        + ["--out", str(tmp_path / "c"), *QUIET]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "seeds 4, 5, 6; baseline global" in text and "ratios are <policy>/global" in text
    stats_header = next(line for line in text.splitlines() if line.startswith("metric (unit)"))
    assert stats_header.split()[3:] == ["mean", "p50", "p95", "min", "max", "std"]
    runs = pd.read_csv(tmp_path / "c" / "runs.csv")
    assert sorted(set(runs["seed"])) == [4, 5, 6]
    sim_time = runs.loc[runs["policy"] == "localized", "sim_time"]
    line = next(line for line in text.splitlines() if line.startswith("sim_time (s)") and "localized" in line)
    assert float(line.split()[3]) == pytest.approx(sim_time.mean(), rel=1e-3)
    assert float(line.split()[8]) == pytest.approx(sim_time.std(), rel=1e-3)


def test_compare_unknown_policy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "window-recovery", "--policies", "fixed,nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


def test_every_command_help_explains_options_with_an_example() -> None:
    group = build_command()
    assert set(group.commands) == {"run", "compare", "sweep", "check", "plot", "scenarios"}
    for name, command in group.commands.items():
        assert "Examples" in command.epilog, name
        assert f"admission-sim {name}" in command.epilog, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts}"


def test_plugin_registers_a_policy_from_an_explicit_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_test_policies.py").write_text(
        textwrap.dedent(
            """
            from sim import register_policy

            def register():
                @register_policy("never-blocks-test", description="adaptive, deferred work never blocks")
                def never(view):
                    return False
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code = main(
            ["compare", "window-recovery", *SMALL, "--policies", "global,never-blocks-test", "--format", "json"]
            + ["--plugin", "my_test_policies:register", "--out", str(tmp_path / "out"), *QUIET]
        )
        assert code == 0
        data = json.loads(capsys.readouterr().out)
        assert data["baseline"] == "global" and "never-blocks-test/global" in data["metrics"][0]["ratios"]
    finally:
        POLICIES.pop("never-blocks-test", None)
        _LOADED_PLUGINS.discard("my_test_policies:register")
    assert main(["compare", "window-recovery", "--plugin", "my_test_policies"]) == 2
    assert "expected module:function" in capsys.readouterr().err
    assert main(["compare", "window-recovery", "--plugin", "my_test_policies:missing"]) == 2
    assert "has no callable 'missing'" in capsys.readouterr().err


def test_scenarios_lists_the_bundled_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name in ("cooling-2048", "window-recovery", "healthy-bottleneck", "rpm-capacity"):
        assert name in out


def test_sweep_from_a_subprocess_writes_the_folder(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "admission-sim"
    out = tmp_path / "sub"
    proc = subprocess.run(
        [str(exe), "sweep", "window-recovery", *SMALL, "--grid", "scheduler.initial_target=1,2"]
        + ["--policies", "localized", "--out", str(out), "--no-figures", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 runs (2 grid points x 1 policies x 1 seeds), 0 failed" in proc.stdout
    assert len(pd.read_csv(out / "runs.csv")) == 2
    bad = subprocess.run([str(exe), "sweep", "window-recovery", "--grid", "nope=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--grid nope" in bad.stderr


def test_python_dash_m_sim_is_the_same_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sim", "run", "rpm-capacity", "--policy", "fixed", "--set", "row_groups.count=5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "policy fixed" in done.stdout
    assert re.search(r"completed_rows\s+20\b", done.stdout)
    bad = subprocess.run([sys.executable, "-m", "sim", "run", "no-such-scenario"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no bundled scenario" in bad.stderr and "Traceback" not in bad.stderr
