"""The policy study: points become the right overrides, a tiny grid gives the sign it must give
(localized ahead when healthy work is independent of the cooling column and the 429s start before
the ramp; an exact tie when every healthy column depends on it), the folder is written atomically
and reproducibly, and bad input exits 2 with nothing written. Each grid is a few one-seed runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from sim.study import (
    CHECK_POINTS,
    POLICIES,
    Point,
    StudyError,
    StudyMap,
    base_scenario,
    main,
    plan_study,
    ratio,
    region,
    run_study,
    twin_table,
    write_study,
)

#: One row: the 429s start at once (before the ramp); no healthy column or all of them depend on
#: `cooling`. 2 cells x 2 policies x 1 seed.
TINY = StudyMap("tiny", "test", "dependent_share", (0.0, 1.0), "window_start", (0.0,))


@pytest.fixture(scope="module")
def tiny():
    return run_study([TINY], seeds=(0,))


def _cell(result, share: float) -> pd.Series:
    cells = result.cells
    return cells[(cells["map"] == "tiny") & (cells["x"] == share)].iloc[0]


def test_point_overrides_change_the_base_as_named():
    sc = Point(window_start=0.3, window_length=2.0, dependent_share=0.5, llm_wait=8, loop_scale=2.0).scenario()
    cooling = next(m for m in sc.models if m.name == "cooling")
    assert (cooling.rate_limit.start, cooling.rate_limit.end) == (0.3, 2.3)
    deps = {c.name: list(c.depends_on) for c in sc.columns}
    assert deps["h1"] == deps["h2"] == ["cooling"] and deps["h3"] == deps["h4"] == ["seed"]
    assert sc.scheduler.max_model_task_admission == 8 and sc.scheduler.loop.scale == 2.0
    assert sc.scheduler.loop.model == "calibrated"  # explicit, whatever the default becomes
    # The default point is the base itself.
    assert Point().scenario().model_dump() == base_scenario().model_dump()


@pytest.mark.parametrize(
    "kwargs", [{"dependent_share": 0.3}, {"window_length": 0.0}, {"llm_wait": 0}, {"loop_scale": -1.0}]
)
def test_a_point_out_of_range_is_refused(kwargs):
    with pytest.raises(StudyError):
        Point(**kwargs)


def test_localized_wins_inside_the_window_when_healthy_work_is_independent(tiny):
    cell = _cell(tiny, 0.0)
    # global freezes the target at the first deferred 429 (t ~0.02 s); localized ramps to the cap.
    assert cell["observed_max_target[localized]"] == 64
    assert cell["healthy_calls_in_window[localized]"] > 4 * cell["healthy_calls_in_window[global]"] > 0
    assert cell["ratio_window"] > 4 and cell["region_window"] == "localized"


def test_the_policies_tie_exactly_when_every_healthy_column_depends_on_cooling(tiny):
    cell = _cell(tiny, 1.0)
    assert cell["healthy_calls_in_window[global]"] == cell["healthy_calls_in_window[localized]"] == 0
    assert cell["ratio_window"] == 1.0 and cell["ratio_throughput"] == 1.0
    assert cell["region_window"] == cell["region_throughput"] == "tie"
    runs = tiny.runs[tiny.runs["dependent_share"] == 1.0].set_index("policy")
    assert runs.loc["global", "sim_time"] == runs.loc["localized", "sim_time"]


def test_a_point_shared_by_two_maps_runs_once():
    other = StudyMap("other", "test", "dependent_share", (0.0, 0.25), "window_start", (0.0,))
    cells, specs, _points = plan_study([TINY, other], seeds=(0, 1))
    assert len(cells) == (2 + 2) * len(POLICIES) * 2
    assert len(specs) == 3 * len(POLICIES) * 2  # (share 0, start 0) is in both maps
    assert len({s.run_id for s in specs}) == len(specs)
    assert {c.run_id for c in cells} == {s.run_id for s in specs}


def test_ratio_and_region():
    assert ratio(0.0, 0.0) == 1.0 and math.isinf(ratio(3.0, 0.0)) and ratio(2.0, 4.0) == 0.5
    assert math.isnan(ratio(math.nan, 1.0))
    assert [region(r) for r in (1.11, 1.1, 0.9, 0.89, math.inf)] == ["localized", "tie", "tie", "global", "localized"]


def test_the_folder_is_complete_reproducible_and_never_replaces_anything(tiny, tmp_path: Path):
    out = write_study(tiny, tmp_path / "study", maps=[TINY], seeds=(0,), figures=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "base.toml",
        "cells.csv",
        "manifest.json",
        "ramp.csv",
        "runs.csv",
    ]
    assert not list(tmp_path.glob(".partial-*"))
    again = run_study([TINY], seeds=(0,))
    pd.testing.assert_frame_equal(again.runs, tiny.runs)
    assert (out / "runs.csv").read_text() == again.runs.to_csv(index=False)
    with pytest.raises(StudyError.__mro__[1]):  # an InputError: the folder exists
        write_study(again, out, maps=[TINY], seeds=(0,), figures=False)
    assert (out / "runs.csv").read_text() == again.runs.to_csv(index=False)


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["run", "--maps", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "--maps" in capsys.readouterr().err
    assert main(["run", "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    (tmp_path / "taken").mkdir()
    assert main(["run", "--out", str(tmp_path / "taken")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert main(["twin", "bogus=/nowhere"]) == 2


def test_twin_commands_name_every_checked_point(capsys: pytest.CaptureFixture[str]):
    assert main(["twin"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CHECK_POINTS)
    assert all("validate base.toml --policies global,localized" in line for line in lines)
    assert "'columns.h4.depends_on=[\"cooling\"]'" in lines[list(CHECK_POINTS).index("all-dependent")]


def test_twin_table_reads_validate_folders(tmp_path: Path):
    folder = tmp_path / "v"
    folder.mkdir()
    rows = []
    for engine, scale in (("sim", 1.0), ("real", 2.0)):
        for policy, window in (("global", 10.0), ("localized", 40.0)):
            for repeat in (0, 1) if engine == "real" else (0,):
                rows.append(
                    {
                        "engine": engine,
                        "policy": policy,
                        "repeat": repeat,
                        "status": "ok",
                        "healthy_calls_in_window": window * scale + repeat,
                        "completed_rows": 100,
                        "sim_time": 10.0 * scale,
                    }
                )
    rows.append({**rows[-1], "status": "timed_out", "healthy_calls_in_window": 1e9})
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    table = twin_table({"base": folder}).set_index("engine")
    assert table.loc["sim", "ratio_window"] == 4.0
    assert table.loc["real", "healthy_calls_in_window[localized]"] == 80.5  # the timed-out run is left out
    assert table.loc["real", "ratio_throughput"] == 1.0 and table.loc["real", "runs"] == 4
