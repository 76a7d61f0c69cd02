"""The front figure: one marker per usable setting, areas growing with open rows, the PNG written
under its final name only when complete."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.advise import SearchBudget, advise
from sim.advise_plots import MAX_AREA, MIN_AREA, front_figure, marker_areas, plot_front, short_label
from sim.scenario import scenario_from_dict


@pytest.fixture(scope="module")
def small_advice():
    sc = scenario_from_dict(
        {
            "name": "plot-unit",
            "row_groups": {"num_records": 64, "buffer_size": 8},
            "models": [{"name": "m", "max_parallel_requests": 32, "latency": {"distribution": "constant", "mean": 1}}],
            "columns": [
                {"name": "seed", "strategy": "full_column"},
                {"name": "c", "depends_on": ["seed"], "model": "m"},
            ],
        }
    )
    return advise(sc, seeds=1, budget=SearchBudget(buffer_sizes=False, in_flight_tasks=False), progress=False)


def test_marker_areas_grow_with_open_rows_and_stay_visible():
    areas = marker_areas(pd.Series([0.0, 50.0, 100.0, np.nan]), 100.0)
    assert areas.tolist() == [MIN_AREA, MAX_AREA / 2, MAX_AREA, MIN_AREA]


def test_figure_has_one_marker_per_usable_setting(small_advice):
    fig = front_figure(small_advice)
    ax = fig.axes[0]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    usable = int(small_advice.evaluated["score"].notna().sum())
    assert points == usable + 2  # plus the rings of the recommendation and the default
    assert "marker area = peak open rows" in ax.get_title()


def test_plot_front_writes_a_png_and_no_temporary_file(small_advice, tmp_path):
    path = plot_front(small_advice, tmp_path / "front.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["front.png"]


def test_short_label_names_horizon_and_rows_per_group():
    assert short_label(pd.Series({"setting": "fixed 8, buffer 125, tasks 1024", "buffer_size": 125})) == "fixed 8 x125"
    assert short_label(pd.Series({"setting": "adaptive<= 4, tasks 64", "buffer_size": np.nan})) == "adaptive<= 4"
