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
