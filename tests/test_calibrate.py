"""Fitting loop costs: a synthetic dataset made with known costs is fitted back, profiles round-trip,
bad measurement files fail with a one-line message and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.calibrate import (
    OPERATIONS,
    CalibrationError,
    FitResult,
    Measurement,
    MicroScenario,
    fit_costs,
    load_measurements,
    main,
    measurement_to_dict,
    profile_toml,
    simulate_micro,
    write_profile,
)
from sim.event_loop import ProfileError, load_profile

REFERENCE = load_profile("reference-2core").costs_us
#: The "true" machine of the synthetic dataset: slower completions and passes, a faster seed.
FACTORS = {"completion": 1.4, "main_loop_pass": 1.25, "local_task": 0.7, "request_send": 1.2}
TRUE_COSTS = {op: REFERENCE[op] * FACTORS.get(op, 1.0) for op in OPERATIONS}
MICROS = (
    MicroScenario(0.02, 4, 16, 48, "fixed"),
    MicroScenario(0.2, 4, 16, 48, "fixed"),
    MicroScenario(0.2, 4, 16, 48, "localized"),
    MicroScenario(0.05, 2, 16, 48, "localized"),
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[Measurement]:
    """Measurements a machine with TRUE_COSTS would make (the simulator stands in for it)."""
    path = tmp_path_factory.mktemp("truth") / "truth.toml"
    path.write_text(profile_toml(TRUE_COSTS, name="truth", measured_on={}))
    out = []
    for i, micro in enumerate(MICROS):
        watch = (8,) if micro.policy != "fixed" else ()
        run = simulate_micro(micro, str(path), watch_targets=watch)
        reached = {t: run.target_reached_s(t) for t in watch}
        out.append(Measurement(f"synthetic-{i}", micro, run.cpu_s, run.wall_s, run.rows_per_s, reached))
    return out


@pytest.fixture(scope="module")
def fitted(synthetic: list[Measurement]) -> FitResult:
    return fit_costs(synthetic, REFERENCE, iterations=4)


def _relative_errors(fit: FitResult) -> list[float]:
    return [abs(sim - meas) / meas for meas, sim in fit.comparison.values()]


def test_the_fit_reproduces_the_synthetic_measurements(synthetic: list[Measurement], fitted: FitResult) -> None:
    before = fit_costs(synthetic, REFERENCE, iterations=0)  # the prior, only simulated
    assert max(_relative_errors(before)) > 0.08  # the prior is visibly off
    assert max(_relative_errors(fitted)) < 0.05
    assert sum(_relative_errors(fitted)) < 0.5 * sum(_relative_errors(before))
    assert len(fitted.comparison) == len(synthetic) + sum(len(m.target_reached_s) for m in synthetic)


def test_the_fit_moves_the_dominant_costs_towards_the_truth(fitted: FitResult) -> None:
    # completion and local_task carry most of the CPU time in these runs: they must move the right way
    for op in ("completion", "local_task"):
        assert abs(fitted.costs_us[op] - TRUE_COSTS[op]) < abs(REFERENCE[op] - TRUE_COSTS[op]), op


def test_operations_no_run_exercises_keep_the_prior(fitted: FitResult) -> None:
    assert set(fitted.unconstrained) == {"salvage_pass", "salvage_task"}
    for op in fitted.unconstrained:
        assert fitted.costs_us[op] == pytest.approx(REFERENCE[op], rel=0.02)


def test_a_written_profile_loads_back_with_its_machine(fitted: FitResult, tmp_path: Path) -> None:
    path = tmp_path / "profiles" / "mine.toml"
    meta = {"machine": "test box", "python": "3.11.7", "engine": "data-designer-engine 0.9.7"}
    profile = write_profile(path, fitted, name="mine", measured_on=meta, description="synthetic")
    assert profile.name == "mine" and profile.measured_on == meta
    assert profile.costs_us == pytest.approx(fitted.costs_us)
    assert [p.name for p in path.parent.iterdir()] == ["mine.toml"]  # no temporary file left


def test_the_shipped_profile_says_where_it_was_measured() -> None:
    profile = load_profile("reference-2core")
    assert set(profile.costs_us) == set(OPERATIONS)
    assert {"machine", "python", "engine"} <= set(profile.measured_on)
    assert "0.9.7" in profile.measured_on["engine"]


def test_a_profile_missing_a_cost_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    costs = {op: 1.0 for op in OPERATIONS if op != "completion"}
    path.write_text("[costs_us]\n" + "".join(f"{k} = {v}\n" for k, v in costs.items()))
    with pytest.raises(ProfileError, match=r"costs_us\.completion: missing"):
        load_profile(str(path))


def test_the_command_writes_a_profile(synthetic: list[Measurement], tmp_path: Path, capsys) -> None:
    data = tmp_path / "m.json"
    data.write_text(json.dumps({"measurements": [measurement_to_dict(m) for m in synthetic[:2]]}))
    out = tmp_path / "fitted.toml"
    assert main(["--measurements", str(data), "--out", str(out), "--iterations", "2"]) == 0
    assert load_profile(str(out)).name == "fitted"
    assert "wrote" in capsys.readouterr().out


def test_bad_measurements_fail_with_one_line_and_write_nothing(tmp_path: Path, capsys) -> None:
    data = tmp_path / "m.json"
    data.write_text(json.dumps({"measurements": [{"name": "x", "micro": {"latency_s": 0.1}}]}))
    out = tmp_path / "fitted.toml"
    assert main(["--measurements", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "measurements.0" in err
    assert not out.exists()
    with pytest.raises(CalibrationError, match="no such measurements file"):
        load_measurements(tmp_path / "missing.json")
