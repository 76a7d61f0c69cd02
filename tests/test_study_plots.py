"""Study heat maps: the PNG is written (atomically, small), cells beyond the threshold are hatched
one way per winner, and the ramp line appears only on maps over the window start. Built from a
hand-made cell table, so no simulation runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from sim.study import StudyMap, region
from sim.study_plots import map_figure, plot_map

SMAP = StudyMap("m", "test map", "window_start", (0.0, 0.4), "loop_scale", (1.0, 2.0))
#: (x, y) -> (ratio_window, ratio_throughput)
RATIOS = {(0.0, 1.0): (8.0, 0.8), (0.4, 1.0): (1.0, 1.0), (0.0, 2.0): (math.inf, 1.05), (0.4, 2.0): (1.5, 0.5)}
RAMP = pd.DataFrame({"loop_scale": [1.0, 2.0], "ramp_seconds": [0.2, 0.5], "ramp_target": [64, 64]})


def _cells() -> pd.DataFrame:
    rows = []
    for (x, y), (rw, rt) in RATIOS.items():
        rows.append(
            {
                "map": "m",
                "x": x,
                "y": y,
                "ratio_window": rw,
                "ratio_throughput": rt,
                "region_window": region(rw),
                "region_throughput": region(rt),
            }
        )
    return pd.DataFrame(rows)


def _hatches(ax) -> list[str]:
    return sorted(p.get_hatch() for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch())


def test_cells_beyond_the_threshold_are_hatched_by_winner():
    fig = map_figure(_cells(), SMAP, RAMP)
    window, throughput = fig.axes[:2]
    assert _hatches(window) == ["///"] * 3  # 8x, inf and 1.5x; the tie is not hatched
    assert _hatches(throughput) == ["\\\\\\"] * 2  # 0.8 and 0.5; 1.05 is within 10 %
    texts = {t.get_text() for t in window.texts}
    assert {"8.0x", "inf", "1.00", "1.50"} <= texts
    assert len(window.lines) == 1  # the ramp line, one point per row
    assert list(window.lines[0].get_ydata()) == [0, 1]


def test_no_ramp_line_on_maps_over_other_axes():
    smap = StudyMap("m", "test", "dependent_share", (0.0, 0.4), "loop_scale", (1.0, 2.0))
    fig = map_figure(_cells(), smap, RAMP)
    assert all(len(ax.lines) == 0 for ax in fig.axes[:2])


def test_the_figure_is_written_small_and_under_its_name(tmp_path: Path):
    path = plot_map(_cells(), SMAP, tmp_path / "figs" / "m.png", RAMP)
    assert path == tmp_path / "figs" / "m.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 300_000
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # no temporary file left


def test_a_map_without_cells_is_refused():
    with pytest.raises(ValueError, match="no cells"):
        map_figure(_cells(), StudyMap("other", "t", "window_start", (0.0,), "loop_scale", (1.0,)))
