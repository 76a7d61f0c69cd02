"""The command line end to end: compare, help texts, plugins, scenarios, and one real subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import EXIT_CODES, build_command, main
from sim.policies import _LOADED_PLUGINS, POLICIES
from sim.sweep import SweepInterrupted

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
    assert set(group.commands) == {
        "run",
        "compare",
        "sweep",
        "check",
        "plot",
        "scenarios",
        "twin",
        "validate",
        "advise",
        "schema",
        "calibrate",
    }
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
    assert (
        bad.returncode == 2
        and "no such scenario file or bundled scenario" in bad.stderr
        and "Traceback" not in bad.stderr
    )


# ---------------------------------------------------------------------------------------------
# The README's commands, in the README's order, on a fresh copy
# ---------------------------------------------------------------------------------------------


def _demo_command() -> list[str]:
    """The Makefile's ``demo`` recipe as CLI arguments (so this test follows the Makefile)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    recipe = lines[lines.index(next(line for line in lines if line.startswith("demo:"))) + 1]
    words = recipe.split()
    assert words[0].endswith("admission-sim"), recipe
    return words[1:]


def test_readme_order_demo_then_check_works_in_a_fresh_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make demo") < readme.index("admission-sim check results/thresholds.toml")
    copy = tmp_path / "clone"
    skip = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".*cache", "_native*")
    shutil.copytree(ROOT, copy, ignore=skip)
    shutil.rmtree(copy / "results" / "cooling-2048", ignore_errors=True)
    monkeypatch.chdir(copy)
    assert main([*_demo_command(), "--no-progress"]) == 0
    assert "baseline global" in capsys.readouterr().out
    assert (copy / "results" / "cooling-2048").is_dir()  # the folder that used to shadow the scenario
    (copy / "cooling-2048").mkdir()  # and a folder named like it in the working directory
    assert main(["check", "results/thresholds.toml", "--jobs", "2"]) == 0
    assert " 0 failed" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Plug-ins
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory for plug-in files; forgets what they registered and imported."""
    monkeypatch.chdir(tmp_path)
    before_policies, before_modules = set(POLICIES), set(sys.modules)
    yield tmp_path
    for name in set(POLICIES) - before_policies:
        POLICIES.pop(name)
    for name in set(sys.modules) - before_modules:
        sys.modules.pop(name)
    _LOADED_PLUGINS.clear()


def _readme_policy_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "register_policy" in block)
    assert "def register()" in snippet
    return snippet


def test_readme_plugin_snippet_works_from_the_current_directory(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (plugin_dir / "mypolicies.py").write_text(_readme_policy_snippet())
    name = re.search(r'register_policy\("([^"]+)"', _readme_policy_snippet())[1]
    code = main(["run", "window-recovery", *SMALL, "--plugin", "mypolicies:register", "--policy", name])
    assert code == 0, capsys.readouterr().err
    assert f"policy {name}" in capsys.readouterr().out


def test_plugin_from_a_file_path(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (plugin_dir / "sub").mkdir()
    (plugin_dir / "sub" / "filepol.py").write_text(
        "from sim import register_policy\n\ndef register():\n"
        "    register_policy('from-file-test')(lambda view: False)\n"
    )
    assert (
        main(["run", "window-recovery", *SMALL, "--plugin", "sub/filepol.py:register", "--policy", "from-file-test"])
        == 0
    )
    assert "policy from-file-test" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("def register(:\n", "register", "raised SyntaxError: invalid syntax (badpol.py, line 1)"),
        ("raise RuntimeError('boom at import')\n", "register", "raised RuntimeError: boom at import"),
        ("import sys\nsys.exit(0)\n", "register", "called sys.exit(0)"),
        ("def register():\n    raise ValueError('no luck')\n", "register", "register() raised ValueError: no luck"),
        ("def register():\n    import sys; sys.exit(0)\n", "register", "register() called sys.exit(0)"),
        ("def register():\n    pass\n", "register", "registered no policy"),
        ("def policy(view):\n    return False\n", "policy", "'policy' takes arguments (view)"),
        ("X = 1\n", "X", "has no callable 'X'"),
        ("", "not-an-identifier", "expected module:function"),
    ],
)
def test_a_bad_plugin_is_one_line_and_exit_2(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str], source: str, target: str, expected: str
) -> None:
    (plugin_dir / "badpol.py").write_text(source)
    assert main(["run", "window-recovery", *SMALL, "--plugin", f"badpol:{target}"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def _policy_plugin(folder: Path, body: str) -> str:
    (folder / "runpol.py").write_text(
        f"from sim import register_policy\n\ndef register():\n    @register_policy('odd-test')\n"
        f"    def odd(view):\n        {body}\n"
    )
    return "runpol:register"


@pytest.mark.parametrize(
    ("body", "code", "expected"),
    [
        ("raise ValueError('policy bug')", 1, "raised ValueError: policy bug"),
        ("import sys; sys.exit(0)", 1, "called sys.exit(0)"),
        ("raise KeyboardInterrupt", 130, "interrupted"),
        ("return 'yes'", 1, "deferred_blocks must return True or False"),
    ],
)
def test_a_policy_failing_inside_run_never_passes_as_success(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str], body: str, code: int, expected: str
) -> None:
    spec = _policy_plugin(plugin_dir, body)
    # cooling-2048 always has deferred work, so the policy is consulted
    assert main(["run", "cooling-2048", *SMALL, "--plugin", spec, "--policy", "odd-test"]) == code
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------
# Bad input is caught before anything runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "compare", "sweep"])
def test_negative_seed_is_one_line_exit_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "window-recovery", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_scenario_name_typo_says_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "window-recovry"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'window-recovery'?" in err and "bundled: cooling-2048" in err


def test_run_out_on_an_existing_folder_is_exit_2_and_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "results" / "thresholds.toml"
    keep.parent.mkdir()
    keep.write_text("precious")
    monkeypatch.setattr("sim.cli.simulate", lambda *a, **k: pytest.fail("ran although --out exists"))
    for out in (keep.parent, keep, tmp_path / ("x" * 300), tmp_path / "results" / "thresholds.toml" / "sub"):
        assert main(["run", "window-recovery", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and len(err.strip().splitlines()) == 1, err
    assert keep.read_text() == "precious" and sorted(p.name for p in tmp_path.rglob("*")) == [
        "results",
        "thresholds.toml",
    ]


def test_compare_and_sweep_out_that_exists_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").mkdir()
    for command in ("compare", "sweep"):
        assert main([command, "window-recovery", "--out", str(tmp_path / "taken")]) == 2
        assert "already exists" in capsys.readouterr().err


def test_oserror_while_writing_results_is_one_line_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sim.cli.write_result", full_disk)
    assert main(["run", "window-recovery", *SMALL, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr("sim.cli.run_sweep", full_disk)
    assert main(["compare", "window-recovery", *SMALL, "--out", str(tmp_path / "c"), *QUIET]) == 1
    assert "No space left on device" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Output formats, compare's baseline, check's metric names and JUnit report
# ---------------------------------------------------------------------------------------------


def test_run_table_is_grouped_with_units_in_100_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "cooling-2048", "--policy", "localized"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines) and len(lines) < 60
    for title in ("throughput", "target", "blocking", "per model"):
        assert any(line.startswith(title) for line in lines), title
    assert re.search(r"^healthy_calls\s+300\s+calls$", text, re.M)
    assert re.search(r"^time_to_all_rows\s+n/a\s+s$", text, re.M)
    assert "NaN" not in text and "0.000000" not in text and " - " not in text


def test_run_shows_the_call_latency_percentiles_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "window-recovery"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^latency of successful calls \(percentiles to 2\.3 %\)$", text, re.M)
    assert re.search(r"^model\s+ok \(calls\)\s+p50 \(s\)\s+p90 \(s\)\s+p99 \(s\)\s+mean \(s\)$", text, re.M)
    # window-recovery, seed 0, default loop: 960 successful calls per model
    assert re.search(r"^flaky\s+960\s+0\.2764\s+0\.9001\s+1\.726\s+0\.3908$", text, re.M)


def test_run_json_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "rpm-capacity", "--set", "row_groups.count=5", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["completed_rows"] == 20 and data["summary"]["time_to_first_row"] is not None
    assert {m["model"] for m in data["models"]} and data["out"] is None
    assert main(["run", "rpm-capacity", "--set", "row_groups.count=5", "-f", "csv", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    rows = pd.read_csv(io.StringIO(captured.out))
    assert len(rows) == 1 and rows.loc[0, "completed_rows"] == 20
    assert "wrote" in captured.err  # notes go to stderr, so stdout stays CSV


def test_compare_json_says_baseline_and_direction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "c1"), *QUIET]
    assert main(["compare", "window-recovery", *SMALL, "--policies", "localized,fixed", "-f", "json", *out]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == "localized"  # no global among the policies: the first listed
    metrics = {m["metric"]: m for m in data["metrics"]}
    assert metrics["rows_per_second"]["better"] == "higher" and metrics["rows_per_second"]["unit"] == "rows/s"
    assert metrics["rate_limited_calls"]["better"] == "lower"
    rps = metrics["rows_per_second"]
    assert rps["ratios"]["fixed/localized"] == pytest.approx(rps["values"]["fixed"] / rps["values"]["localized"])
    out = ["--out", str(tmp_path / "c2"), *QUIET]
    assert main(["compare", "window-recovery", *SMALL, "--policies", "localized,fixed", "-f", "csv", *out]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("metric")
    assert table.loc["rows_per_second", "fixed"] == pytest.approx(rps["values"]["fixed"])


def _thresholds(tmp_path: Path, metric: str, bound: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(
        f'[[check]]\nname = "rows"\nscenario = "window-recovery"\noverrides = {{ "row_groups.count" = 4 }}\n'
        f'policy = "fixed"\nmetric = "{metric}"\n{bound}\n'
    )
    return path


def test_check_unknown_metric_is_exit_2_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sim.cli.make_executor", lambda *a, **k: pytest.fail("ran although a metric is unknown"))
    assert main(["check", str(_thresholds(tmp_path, "completed_rowz", "min = 1"))]) == 2
    err = capsys.readouterr().err
    assert "check.0 (rows): metric: unknown metric 'completed_rowz'" in err and len(err.strip().splitlines()) == 1
    assert main(["check", str(_thresholds(tmp_path, "stop_reason", "min = 1"))]) == 2
    assert "'stop_reason' is not numeric" in capsys.readouterr().err


def test_check_formats_and_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _thresholds(tmp_path, "completed_rows", "min = 1000")
    junit = tmp_path / "reports" / "report.xml"  # its folder is created
    assert main(["check", str(path), "--jobs", "1", "-f", "json", "--junit", str(junit)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] == 1 and data["checks"][0]["value"] == 16 and data["checks"][0]["result"] == "FAIL"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    assert suite.find("testcase").get("name") == "rows" and suite.find("testcase/failure") is not None
    assert main(["check", str(path), "--jobs", "1", "-f", "csv", "--junit", str(junit)]) == 1  # replaces a report
    assert pd.read_csv(io.StringIO(capsys.readouterr().out)).loc[0, "result"] == "FAIL"
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    assert main(["check", str(path), "--junit", str(other)]) == 2
    assert "not a JUnit report" in capsys.readouterr().err and other.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# plot and scenarios messages
# ---------------------------------------------------------------------------------------------


def test_plot_missing_parent_and_run_out_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    run_dir = tmp_path / "results" / "one-run"
    assert main(["run", "window-recovery", *SMALL, "--out", str(run_dir), "-q"]) == 0
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "results")]) == 2
    assert "results folders inside: one-run" in capsys.readouterr().err
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "figures" / "timeline.png").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for content in ("", "a,b\n1,2\n"):
        (foreign / "runs.csv").write_text(content)
        assert main(["plot", str(foreign)]) == 2
        err = capsys.readouterr().err
        assert "cannot read its tables" in err and len(err.strip().splitlines()) == 1, err


def test_scenarios_folder_with_one_bad_file_lists_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(ROOT / "sim" / "scenarios" / "rpm-capacity.toml", tmp_path / "good.toml")
    (tmp_path / "bad.toml").write_text("name = [")
    assert main(["scenarios", "--folder", str(tmp_path), "-f", "json"]) == 0
    rows = {r["file"]: r for r in json.loads(capsys.readouterr().out)["scenarios"]}
    assert rows[str(tmp_path / "good.toml")]["name"] == "rpm-capacity"
    assert rows[str(tmp_path / "bad.toml")]["description"].startswith("INVALID:")


# ---------------------------------------------------------------------------------------------
# Signals, version, help
# ---------------------------------------------------------------------------------------------


def test_sigterm_is_handled_like_ctrl_c_with_the_resume_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / ".partial-sweep-x"

    def terminated_sweep(*args: object, **kwargs: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
        except KeyboardInterrupt:
            raise SweepInterrupted(partial, 1, 2) from None
        pytest.fail("SIGTERM was not turned into an interrupt")

    monkeypatch.setattr("sim.cli.run_sweep", terminated_sweep)
    assert main(["sweep", "window-recovery", *SMALL, "--out", str(tmp_path / "s"), *QUIET]) == 143
    err = capsys.readouterr().err
    assert "terminated (SIGTERM)" in err and f"resume with: admission-sim sweep --resume {partial}" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after main()


def test_version_help_epilog_and_readme_list_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"admission-sim {sim.__version__}"
    group = build_command()
    readme = (ROOT / "README.md").read_text()
    for code in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s", group.epilog, re.M), code
        assert f"| {code} |" in readme, code
    assert {"--install-completion", "--show-completion"} <= {o for p in group.params for o in p.opts}
    assert main(["run", "window-recovery", "--polcy", "x"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --polcy" in err and len(err.strip().splitlines()) == 1


def test_readme_cites_only_files_in_the_repo() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "no local links found"
    assert [link for link in local if not (ROOT / link).exists()] == []
    assert not re.search(r"\bspec\b|\bissue \d|shared/", readme)
    assert "scenarios/" not in readme.replace("sim/scenarios/", "")


ADVISE_SCENARIO = """
name = "advise-cli"
[row_groups]
num_records = 32
buffer_size = 4
[scheduler]
policy = "fixed"
[[models]]
name = "m"
max_parallel_requests = 8
latency = { distribution = "constant", mean = 1.0 }
[[columns]]
name = "seed"
strategy = "full_column"
[[columns]]
name = "c0"
depends_on = ["seed"]
model = "m"
"""


def test_advise_recommends_prints_run_config_and_resumes_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "advise-cli.toml"
    path.write_text(ADVISE_SCENARIO)
    out = tmp_path / "advice"
    args = ["advise", str(path), "--seeds", "1", "--jobs", "1", "--out", str(out), "-q"]
    assert main([*args, "--max-open-rows", "8"]) == 0
    text = capsys.readouterr().out
    assert "Recommended:" in text and "dd.RunConfig(" in text and "Shipped default (fixed 3)" in text
    assert (out / "evaluations.jsonl").is_file()
    # The same folder again: every evaluation comes from the journal, nothing is simulated.
    assert main([*args, "--max-open-rows", "8", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_config"][-1].startswith("data_designer.set_run_config(dd.RunConfig(")
    assert data["simulated_now"] == 0
    assert data["recommended"]["peak_open_rows_max"] <= 8 < data["default"]["peak_open_rows_max"]
    assert main(["advise", str(path), "--objective", "fastest", "--out", str(tmp_path / "x")]) == 2
    assert "objective" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_schema_prints_the_scenario_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) >= {"name", "columns"}
    assert "max_concurrent_row_groups" in schema["$defs"]["SchedulerConfig"]["properties"]


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_run_stopped_by_its_event_budget_is_not_a_success(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, "cooling-2048", "--set", "stop.max_events=2000", "--set", "row_groups.count=64"]
    extra = ["--policy", "localized"] if command == "run" else ["--policies", "localized", "--no-figures"]
    assert main([*args, *extra, "--out", str(tmp_path / "out")]) == 1
    assert "run budget" in capsys.readouterr().err
    assert (tmp_path / "out").is_dir()  # what ran is kept


def test_calibrate_writes_a_profile_and_never_replaces_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    measurements = Path(sim.__file__).parent / "profiles" / "reference-2core.measurements.json"
    out = tmp_path / "mine.toml"
    assert main(["calibrate", "--measurements", str(measurements), "--out", str(out)]) == 0
    assert "measured" in capsys.readouterr().out and "[costs" in out.read_text()
    before = out.read_bytes()
    assert main(["calibrate", "--measurements", str(measurements), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
