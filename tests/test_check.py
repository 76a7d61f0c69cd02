"""`admission-sim check`: the shipped thresholds pass, failing bounds exit 1, malformed files exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.check import ThresholdsError, load_thresholds, run_checks
from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = '{ "row_groups.count" = 8 }'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    return path


def test_shipped_thresholds_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "results" / "thresholds.toml"), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "cooling-2048: localized target grows to ~100" in out and "in [95, 110]" in out
    assert f"{len(load_thresholds(ROOT / 'results' / 'thresholds.toml').check)} passed, 0 failed" in out


def test_failing_bound_exits_1_and_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        f"""
[[check]]
name = "fixed completes every row"
scenario = "window-recovery"
overrides = {SMALL}
policy = "fixed"
metric = "completed_rows"
min = 32
max = 32

[[check]]
name = "impossible throughput"
scenario = "window-recovery"
overrides = {SMALL}
policy = "fixed"
metric = "rows_per_second"
min = 1000
""",
    )
    assert main(["check", str(path), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "1 passed, 1 failed" in out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert lines["fixed completes every row"].endswith("PASS")
    assert lines["impossible throughput"].endswith("FAIL") and ">= 1000" in lines["impossible throughput"]
    assert "FAIL impossible throughput (rows_per_second >= 1000): value" in out


def test_ratio_check_divides_the_two_policies_aggregates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[[check]]
scenario = "window-recovery"
overrides = {SMALL}
seeds = 2
metric = "sim_time"
ratio = {{ numerator = "localized", denominator = "localized" }}
min = 1.0
max = 1.0

[[check]]
scenario = "window-recovery"
overrides = {SMALL}
seeds = 2
metric = "sim_time"
aggregate = "max"
policy = "global"
max = 1e9
""",
    )
    results = run_checks(path)
    assert [r.passed for r in results] == [True, True]
    assert results[0].value == 1.0
    assert results[0].check.label == "window-recovery localized/localized sim_time"
    assert results[1].value > 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[[check]]\nscenario = "window-recovery"\npolicy = "fixed"\nmin = 1\n', "check.0.metric: Field required"),
        (
            '[[check]]\nscenario = "window-recovery"\npolicy = "fixed"\nmetric = "sim_time"\nmin = 2\nmax = 1\n',
            "check.0: min (2.0) is above max (1.0)",
        ),
        (
            '[[check]]\nscenario = "window-recovery"\nmetric = "sim_time"\nmax = 1\n',
            "give exactly one of 'policy' or 'ratio'",
        ),
        (
            '[[check]]\nscenario = "window-recovery"\npolicy = "fixed"\nmetric = "sim_time"\nmax = 1\nmaxx = 2\n',
            "check.0.maxx: unknown key",
        ),
        ("[[check]\n", "invalid TOML"),
        (
            '[[check]]\nscenario = "no-such-scenario"\npolicy = "fixed"\nmetric = "sim_time"\nmax = 1\n',
            "check.0 (no-such-scenario fixed sim_time): scenario: no-such-scenario: no such scenario file",
        ),
        (
            '[[check]]\nscenario = "window-recovery"\npolicy = "nope"\nmetric = "sim_time"\nmax = 1\n',
            "unknown policy 'nope'",
        ),
        (
            f'[[check]]\nscenario = "window-recovery"\noverrides = {SMALL}\npolicy = "fixed"\n'
            'metric = "no_such_metric"\nmax = 1\n',
            "metric: unknown metric 'no_such_metric'",
        ),
    ],
)
def test_malformed_thresholds_exit_2_naming_file_key_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    path = write(tmp_path, body)
    assert main(["check", str(path), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.startswith(f"admission-sim: error: {path}")


def test_missing_thresholds_file() -> None:
    with pytest.raises(ThresholdsError, match="no such thresholds file"):
        load_thresholds("/nonexistent/thresholds.toml")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('min = "5"', "check.0.min: Input should be a valid number"),
        ("min = 1\nseeds = true", "check.0.seeds: Input should be a valid integer"),
        ("min = true", "check.0.min: Input should be a valid number"),
        ('min = 1\nseed = "3"', "check.0.seed: Input should be a valid integer"),
        ("min = 1\npolicy = 3", "check.0.policy: Input should be a valid string"),
    ],
)
def test_thresholds_types_are_strict(tmp_path: Path, line: str, key: str) -> None:
    policy = "" if "policy" in line else 'policy = "fixed"\n'
    path = write(tmp_path, f'[[check]]\nscenario = "window-recovery"\n{policy}metric = "sim_time"\n{line}\n')
    with pytest.raises(ThresholdsError) as info:
        load_thresholds(path)
    assert f"{path}: {key}" in str(info.value)


class NeverRun:
    """An executor that fails the test if asked to run anything."""

    def run(self, specs):
        raise AssertionError(f"ran {len(specs)} runs before the thresholds were validated")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("healthy_callz", "check.1 (window-recovery fixed healthy_callz): metric: unknown metric 'healthy_callz'"),
        ("calls_ok[nope]", "metric: unknown metric 'calls_ok[nope]'"),
        ("stop_reason", "check.1 (window-recovery fixed stop_reason): metric: 'stop_reason' is not numeric"),
    ],
)
def test_metric_names_are_validated_before_anything_runs(tmp_path: Path, metric: str, expected: str) -> None:
    body = f'[[check]]\nscenario = "window-recovery"\noverrides = {SMALL}\npolicy = "fixed"\nmetric = "%s"\nmax = 1\n'
    path = write(tmp_path, body % "completed_rows" + "\n" + body % metric)
    with pytest.raises(ThresholdsError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        run_checks(path, executor=NeverRun())


def test_per_model_metrics_are_known_before_running(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[[check]]\nscenario = "window-recovery"\noverrides = {SMALL}\npolicy = "fixed"\n'
        'metric = "calls_ok[flaky]"\nmin = 1\n',
    )
    from sim.check import plan_checks

    specs, _ = plan_checks(load_thresholds(path), path)
    assert len(specs) == 1


def test_deeply_nested_thresholds_are_one_line(tmp_path: Path) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    path = write(tmp_path, f'[[check]]\nscenario = "window-recovery"\noverrides = {{ x = {deep} }}\n')
    with pytest.raises(ThresholdsError, match="nested too deeply") as info:
        load_thresholds(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_a_named_pipe_or_device_as_thresholds_file_fails_at_once(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "thresholds.toml"
    os.mkfifo(fifo)
    with pytest.raises(ThresholdsError, match="cannot read: a named pipe"):
        load_thresholds(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ThresholdsError, match="cannot read: a character device"):
            load_thresholds("/dev/zero")
