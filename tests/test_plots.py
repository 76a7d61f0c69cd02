"""Plots: non-empty PNGs with the expected panels and axis labels, built from results or from
a results folder in the shared layout (manifest.json, runs.csv, timeseries/, model_timeseries/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

import sim
from sim.plots import (
    SUMMARY_METRICS,
    binned_mean,
    comparison_figure,
    cooldown_spans,
    plot_comparison,
    plot_results_dir,
    plot_sweep,
    summary_figure,
    sweep_figure,
    sweep_table,
)

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_window(**extra: object) -> sim.Scenario:
    """window-recovery cut down to 12 row groups and a 3 s 429 window (runs in milliseconds)."""
    overrides = ["row_groups.count=12", "models.0.rate_limit.end=3.0", *[f"{k}={v}" for k, v in extra.items()]]
    return sim.load_scenario(ROOT / "sim" / "scenarios" / "window-recovery.toml", overrides)


@pytest.fixture(scope="module")
def results() -> list[sim.Result]:
    scenario = small_window()
    return [sim.simulate(scenario, policy=p, seed=0) for p in ("global", "localized")]


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # not a blank canvas


# -- helpers ------------------------------------------------------------------------------------


def test_binned_mean_of_a_step_function() -> None:
    # 2 on [0, 1), 0 from 1 on; bins [0, .5), [.5, 1.5), [1.5, 2)
    edges = np.array([0.0, 0.5, 1.5, 2.0])
    assert binned_mean([0.0, 1.0], [2, 0], edges) == pytest.approx([2.0, 1.0, 0.0])
    # Defined up to 1.25 only: the middle bin averages [.5, 1.25), the last is NaN.
    out = binned_mean([0.0, 1.0], [2, 0], edges, end=1.25)
    assert out[:2] == pytest.approx([2.0, 2 * 0.5 / 0.75])
    assert np.isnan(out[2])


def test_cooldown_spans_merge_renewed_cooldowns() -> None:
    frame = pd.DataFrame({"time": [0.5, 1.0, 1.2, 4.0, 6.0], "cooldown_until": [1.5, 1.5, 2.2, 5.0, 5.0]})
    assert cooldown_spans(frame) == [(0.5, 2.2), (4.0, 5.0)]


# -- comparison over time -----------------------------------------------------------------------


def test_comparison_figure_panels_and_labels(results: list[sim.Result]) -> None:
    fig = comparison_figure(results)
    axes = fig.axes
    assert len(axes) == 2 + 2 * len(results)
    assert [ax.get_ylabel() for ax in axes] == [
        "row groups",
        "cumulative",
        "calls in flight",
        "AIMD limit",
        "calls in flight",
        "AIMD limit",
    ]
    assert axes[-1].get_xlabel() == "simulated time (s)"
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["global", "localized"]
    # target + active row groups per run; healthy calls + rows per run; one line per model
    assert len(axes[0].lines) == 4 and len(axes[1].lines) == 4
    assert len(axes[2].lines) == 4 and len(axes[3].lines) == 4
    # the flaky model cooled down during its 3 s window: shaded spans in both limit panels
    assert len(axes[3].patches) > 0 and len(axes[5].patches) > 0
    spans = cooldown_spans(results[0].model_timeseries.query("model == 'flaky'"))
    assert spans[0][0] == pytest.approx(0.05)
    assert sum(b - a for a, b in spans) == pytest.approx(results[0].summary["cooldown_time[flaky]"])
    # shared time axis up to the longest run
    assert axes[0].get_xlim()[1] == pytest.approx(max(r.summary["sim_time"] for r in results))


def test_comparison_zoom(results: list[sim.Result]) -> None:
    fig = comparison_figure(results, until=2.0)
    assert fig.axes[-1].get_xlim() == pytest.approx((0.0, 2.0))


def test_plot_comparison_writes_png(results: list[sim.Result], tmp_path: Path) -> None:
    path = plot_comparison(results, tmp_path / "sub" / "comparison.png")
    assert path == tmp_path / "sub" / "comparison.png"
    assert_png(path)


# -- sweeps ------------------------------------------------------------------------------------


def fake_runs() -> pd.DataFrame:
    rows = []
    for policy, slope in (("global", 1.0), ("localized", 2.0)):
        for x in (1, 10, 100):
            for seed, noise in ((0, -1.0), (1, 1.0)):
                rows.append(
                    {
                        "run_id": f"{policy}-{x}-{seed}",
                        "status": "ok",
                        "error": "",
                        "policy": policy,
                        "seed": seed,
                        "param:scheduler.max_concurrent_row_groups": x,
                        "rows_per_second": slope * x + noise,
                    }
                )
    rows.append({**rows[0], "run_id": "broken", "status": "failed", "rows_per_second": 1e9})
    return pd.DataFrame(rows)


def test_sweep_table_means_and_spread_over_seeds() -> None:
    table = sweep_table(fake_runs(), "rows_per_second", "scheduler.max_concurrent_row_groups")
    local = table[table["line"] == "localized"].sort_values("value")
    assert local["mean"].tolist() == pytest.approx([2.0, 20.0, 200.0])
    assert local["std"].tolist() == pytest.approx([np.sqrt(2)] * 3)  # sample std of (m-1, m+1)
    assert local["count"].tolist() == [2, 2, 2]
    # the failed run is not averaged in
    assert table[table["line"] == "global"]["mean"].max() == pytest.approx(100.0)


def test_sweep_table_splits_lines_by_other_swept_parameters() -> None:
    runs = pd.concat([fake_runs().assign(**{"param:stop.max_time": t}) for t in (10, 20)], ignore_index=True)
    table = sweep_table(runs, "rows_per_second", "scheduler.max_concurrent_row_groups")
    assert sorted(set(table["line"])) == [
        "global, stop.max_time=10",
        "global, stop.max_time=20",
        "localized, stop.max_time=10",
        "localized, stop.max_time=20",
    ]


def test_sweep_figure_axes(tmp_path: Path) -> None:
    fig = sweep_figure(fake_runs(), "rows_per_second", "scheduler.max_concurrent_row_groups")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "scheduler.max_concurrent_row_groups"
    assert ax.get_ylabel() == "rows_per_second"
    assert ax.get_xscale() == "log"  # values span 100x
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["global", "localized"]
    ys = sorted(tuple(np.round(c.lines[0].get_ydata(), 6)) for c in ax.containers)
    assert ys == [(1.0, 10.0, 100.0), (2.0, 20.0, 200.0)]
    assert_png(plot_sweep(fake_runs(), "rows_per_second", "scheduler.max_concurrent_row_groups", tmp_path / "s.png"))


def test_sweep_figure_rejects_unknown_columns() -> None:
    with pytest.raises(KeyError, match="param:nope"):
        sweep_figure(fake_runs(), "rows_per_second", "nope")
    with pytest.raises(KeyError, match="no metric"):
        sweep_figure(fake_runs(), "nope", "scheduler.max_concurrent_row_groups")


# -- results folders ---------------------------------------------------------------------------


def write_folder(out: Path, kind: str, grid: dict[str, list], policies: list[str], seeds: list[int]) -> Path:
    """A results folder in the contract's layout, written by hand from simulate() calls."""
    (out / "timeseries").mkdir(parents=True)
    (out / "model_timeseries").mkdir()
    base = small_window()
    points = [{}] if not grid else [{k: v} for k, values in grid.items() for v in values]
    rows, runs = [], []
    for point in points:
        for policy in policies:
            for seed in seeds:
                run_id = f"run{len(rows):03d}"
                result = sim.simulate(base, policy=policy, seed=seed, overrides=[f"{k}={v}" for k, v in point.items()])
                rows.append(
                    {
                        "run_id": run_id,
                        "status": "ok",
                        "error": "",
                        "policy": policy,
                        "seed": seed,
                        **{f"param:{k}": v for k, v in point.items()},
                        **result.summary,
                    }
                )
                runs.append({"run_id": run_id, "policy": policy, "seed": seed, "overrides": point})
                result.timeseries.to_csv(out / "timeseries" / f"{run_id}.csv", index=False)
                result.model_timeseries.to_csv(out / "model_timeseries" / f"{run_id}.csv", index=False)
    pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)
    manifest = {
        "kind": kind,
        "package_version": sim.__version__,
        "command": ["test"],
        "scenario_source": "window-recovery.toml",
        "scenario": base.model_dump(mode="json"),
        "grid": grid,
        "policies": policies,
        "seeds": seeds,
        "runs": runs,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_plot_results_dir_compare(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "cmp", "compare", {}, ["fixed", "localized"], [3, 4])
    written = plot_results_dir(folder)
    names = sorted(p.name for p in written)
    assert names == ["comparison.png", "comparison__seed-4.png", "summary.png"]
    for path in written:
        assert path.parent == folder / "figures"
        assert_png(path)


def test_plot_results_dir_sweep(tmp_path: Path) -> None:
    key = "scheduler.max_concurrent_row_groups"
    folder = write_folder(tmp_path / "swp", "sweep", {key: [2, 8]}, ["global", "localized"], [0, 1])
    written = plot_results_dir(folder)
    assert sorted(p.name for p in written) == sorted(
        f"sweep__{m}__{key}.png"
        for m in ("healthy_calls_per_second", "rows_per_second", "sim_time", "time_to_all_rows", "observed_max_target")
    )
    for path in written:
        assert_png(path)


def test_plot_results_dir_single_run(results: list[sim.Result], tmp_path: Path) -> None:
    folder = sim.write_result(results[0], tmp_path / "one")
    written = plot_results_dir(folder)
    assert [p.name for p in written] == ["timeline.png"]
    assert_png(written[0])


def test_summary_figure_bars_per_policy() -> None:
    runs = fake_runs().assign(sim_time=lambda f: f["seed"] * 2.0 + (f["policy"] == "localized") * 10.0)
    fig = summary_figure(runs, ["sim_time", "rows_per_second", "not_a_column"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in visible] == ["sim_time", "rows_per_second"]
    heights = [patch.get_height() for patch in visible[0].patches]
    assert heights == pytest.approx([1.0, 11.0])  # seeds 0 and 1 give 0 and 2 (+10 for localized)
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["global", "localized"]
    assert "sim_time" in SUMMARY_METRICS
    with pytest.raises(ValueError):
        summary_figure(runs, ["nope"])


def test_auto_time_window_zooms_only_when_one_run_is_far_longer():
    from sim.plots import auto_time_window

    assert auto_time_window([0.026, 60.0, 0.18]) == pytest.approx(0.54)  # cooling-2048: 3 x median
    assert auto_time_window([99.0, 102.0, 100.9]) == 102.0
