"""Plots: non-empty PNGs with the expected panels and axis labels, built from results or from
a results folder in the shared layout (manifest.json, runs.csv, timeseries/, model_timeseries/)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

import sim
from sim.plots import (
    EXTRA_POLICY_COLORS,
    MODEL_COLORS,
    POLICY_COLORS,
    SUMMARY_METRICS,
    RunSeries,
    binned_mean,
    call_latency_figure,
    comparison_figure,
    cooldown_spans,
    human_number,
    informative_sweep_metrics,
    plot_comparison,
    plot_results_dir,
    plot_sweep,
    policy_color,
    policy_colors,
    summary_figure,
    sweep_figure,
    sweep_table,
)

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_window(**extra: object) -> sim.Scenario:
    """window-recovery cut down to 12 row groups and a 3 s 429 window (runs in milliseconds), on the
    zero-cost loop so that the times the figures are checked against are exact."""
    overrides = [
        "row_groups.count=12",
        "models.flaky.rate_limit.end=3.0",
        "scheduler.loop.model=none",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return sim.load_scenario(ROOT / "sim" / "scenarios" / "window-recovery.toml", overrides)


@pytest.fixture(scope="module")
def results() -> list[sim.Result]:
    # Different seeds: on this small scenario both policies admit every group at once and would draw identical runs.
    scenario = small_window()
    return [sim.simulate(scenario, policy="global", seed=0), sim.simulate(scenario, policy="localized", seed=1)]


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
    # row groups, cumulative, deferred/queued; per run calls in flight + AIMD limit; blocked reasons
    assert [ax.get_ylabel() for ax in axes[:-1]] == [
        "row groups",
        "calls / rows",
        "tasks",
        "calls in flight",
        "AIMD limit (calls)",
        "calls in flight",
        "AIMD limit (calls)",
    ]
    assert axes[-2].get_xlabel() == "simulated time (s)"  # no zoom: the runs end together
    assert "blocked evaluations" in axes[-1].get_xlabel()
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["global", "localized"]
    assert fig.get_suptitle() == "window-recovery: global, localized (seeds 0, 1)"
    # target + active row groups per run; healthy calls + rows per run; deferred + queued per run; one line per model
    assert len(axes[0].lines) == 4 and len(axes[1].lines) == 4 and len(axes[2].lines) == 4
    assert len(axes[3].lines) == 4 and len(axes[4].lines) == 4
    # the flaky model cooled down during its 3 s window: shaded spans in both limit panels
    assert len(axes[4].patches) > 0 and len(axes[6].patches) > 0
    spans = cooldown_spans(results[0].model_timeseries.query("model == 'flaky'"))
    assert spans[0][0] == pytest.approx(0.05)
    assert sum(b - a for a, b in spans) == pytest.approx(results[0].summary["cooldown_time[flaky]"])
    # shared time axis up to the longest run
    assert axes[0].get_xlim()[1] == pytest.approx(max(r.summary["sim_time"] for r in results))
    # the deferred panel plots the recorded deferred_tasks series
    deferred = axes[2].lines[0].get_ydata()
    assert max(deferred) == results[0].timeseries["deferred_tasks"].max() > 0


def test_comparison_colours_one_per_policy_models_apart(results: list[sim.Result]) -> None:
    fig = comparison_figure(results)
    ax_rg, ax_in = fig.axes[0], fig.axes[3]
    assert {line.get_color() for line in ax_rg.lines[:2]} == {POLICY_COLORS["global"]}
    assert {line.get_color() for line in ax_rg.lines[2:]} == {POLICY_COLORS["localized"]}
    model_colors = {line.get_color() for line in ax_in.lines}
    assert model_colors == set(MODEL_COLORS[:4])
    assert not model_colors & set(POLICY_COLORS.values()) and not model_colors & set(EXTRA_POLICY_COLORS)
    # the same policy keeps its colour whatever else is drawn with it, and in which order
    reversed_fig = comparison_figure(results[::-1])
    assert reversed_fig.axes[0].lines[0].get_color() == POLICY_COLORS["localized"]


def test_plug_in_policy_colours_are_stable_and_distinct() -> None:
    assert policy_color("fixed") == POLICY_COLORS["fixed"]
    assert policy_color("my-policy") == policy_color("my-policy") in EXTRA_POLICY_COLORS
    names = [f"plugin-{i}" for i in range(len(EXTRA_POLICY_COLORS))]
    colors = policy_colors(["global", *names])
    assert colors["global"] == POLICY_COLORS["global"]
    assert len(set(colors.values())) == len(colors)  # hash collisions are told apart
    assert policy_colors(["global", *names[::-1]]) == colors  # independent of the order given


def test_comparison_zoom_is_said_in_the_figure(results: list[sim.Result]) -> None:
    fig = comparison_figure(results, until=2.0)
    assert fig.axes[-2].get_xlim() == pytest.approx((0.0, 2.0))
    assert fig.axes[-2].get_xlabel() == "simulated time (s), zoomed to the first 2 s of 11.6 s"
    notes = [t.get_text() for t in fig.texts if t is not fig._suptitle]
    assert notes == ["time axis zoomed to 0-2 s: cut off global (11.4 s), localized (11.6 s)"]
    arrows = [t.get_text() for t in fig.axes[0].texts]
    assert arrows == ["global runs on to 11.4 s →", "localized runs on to 11.6 s →"]
    # no row completes in the first 2 s (the first at 8.4 s): the cumulative panel draws no all-zero row line
    assert results[0].summary["time_to_first_row"] > 2.0
    assert len(fig.axes[1].lines) == 2 and fig.axes[1].get_ylabel() == "calls"
    assert "no run completed a row" in fig.axes[1].get_title(loc="left")
    # the same runs unzoomed say nothing of the kind
    unzoomed = comparison_figure(results)
    assert [t for t in unzoomed.texts if t is not unzoomed._suptitle] == []


def test_comparison_drops_the_static_cap_panel() -> None:
    scenario = small_window(**{"request_admission.enabled": "false", "models.flaky.rate_limit.retry_after": 0})
    runs = [sim.simulate(scenario, policy="global", seed=0), sim.simulate(scenario, policy="localized", seed=1)]
    fig = comparison_figure(runs)
    labels = [ax.get_ylabel() for ax in fig.axes[:-1]]
    assert labels == ["row groups", "calls / rows", "tasks", "calls in flight", "calls in flight"]
    note = fig.axes[3].texts[0].get_text()
    assert note.startswith("no request-admission controller: per-model cap 8 calls throughout")


def synthetic(label: str, target: int, active: int, deferred: int, end: float, **kw: object) -> RunSeries:
    ts = pd.DataFrame(
        {
            "time": [0.0, end / 2],
            "target": [target, target],
            "active_row_groups": [active, active],
            "queued_tasks": [0, 0],
            "deferred_tasks": [0, deferred],
            "completed_rows": [0, 0],
            "healthy_calls": [0, 3],
        }
    )
    mts = pd.DataFrame({"time": [0.0], "model": ["m"], "in_flight": [1], "current_limit": [4], "cooldown_until": [0.0]})
    return RunSeries(label, ts, mts, end, False, **kw)


def test_comparison_log_scale_when_values_span_decades() -> None:
    wide = comparison_figure([synthetic("fixed", 4096, 2048, 2044, 1.0), synthetic("global", 1, 1, 1, 1.0)])
    assert wide.axes[0].get_yscale() == "symlog" and wide.axes[2].get_yscale() == "symlog"
    narrow = comparison_figure([synthetic("fixed", 8, 8, 2, 1.0), synthetic("global", 4, 4, 1, 1.0)])
    assert narrow.axes[0].get_yscale() == "linear" and narrow.axes[2].get_yscale() == "linear"


def test_blocked_reasons_panel_shows_the_run_totals() -> None:
    runs = [
        synthetic(
            "global", 1, 1, 1, 1.0, blocked={"deferred_tasks": 2408, "no_pending_row_groups": 1}, evaluations=2410
        ),
        synthetic("localized", 9, 9, 9, 1.0, blocked={"no_pending_row_groups": 1}, evaluations=199),
    ]
    fig = comparison_figure(runs)
    ax = fig.axes[-1]
    assert [t.get_text() for t in ax.texts if not t.get_text().startswith(" ")] == [
        "no_pending_row_groups",
        "deferred_tasks",
    ]
    bars = {(p.get_facecolor(), round(p.get_width())) for p in ax.patches}
    red, blue = (POLICY_COLORS["global"], POLICY_COLORS["localized"])
    from matplotlib.colors import to_rgba

    assert bars == {(to_rgba(red), 1), (to_rgba(red), 2408), (to_rgba(blue), 1), (to_rgba(blue), 0)}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "global: 2410 evaluations",
        "localized: 199 evaluations",
    ]
    # without a blocked evaluation anywhere there is no such panel
    plain = comparison_figure([synthetic("fixed", 8, 8, 0, 1.0)])
    assert all("blocked" not in ax.get_xlabel() for ax in plain.axes)


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


def tick_labels_collide(fig, axis) -> bool:
    """True if two visible tick labels of ``axis`` overlap on the rendered canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_sweep_figure_axes(tmp_path: Path) -> None:
    fig = sweep_figure(fake_runs(), "rows_per_second", "scheduler.max_concurrent_row_groups")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "scheduler.max_concurrent_row_groups"
    assert ax.get_ylabel() == "rows per second (rows/s)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # both span 100x
    # global's mean over its seeds is x itself, so the y = x guide is drawn and named
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["= scheduler.max_concurrent_row_groups", "global", "localized"]
    colors = [c.lines[0].get_color() for c in ax.containers]
    assert colors == [POLICY_COLORS["global"], POLICY_COLORS["localized"]]
    ys = sorted(tuple(np.round(c.lines[0].get_ydata(), 6)) for c in ax.containers)
    assert ys == [(1.0, 10.0, 100.0), (2.0, 20.0, 200.0)]
    assert "mean ± std over 2 seeds (0, 1)" in ax.get_title()
    assert_png(plot_sweep(fake_runs(), "rows_per_second", "scheduler.max_concurrent_row_groups", tmp_path / "s.png"))


@pytest.mark.parametrize(
    "caps", [(1, 10, 100), (2, 4, 8, 16, 64), (16, 32, 64, 128, 256), (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)]
)
def test_sweep_log_axes_labels_do_not_collide(caps: tuple[int, ...]) -> None:
    runs = pd.DataFrame(
        [{"status": "ok", "policy": "fixed", "seed": 0, "param:cap": c, "sim_time": 100.0 / c} for c in caps]
    )
    fig = sweep_figure(runs, "sim_time", "cap")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in caps]
    assert not tick_labels_collide(fig, ax.xaxis)
    assert not tick_labels_collide(fig, ax.yaxis)


def test_the_tick_label_collision_check_can_fail() -> None:
    runs = pd.DataFrame(
        [{"status": "ok", "policy": "fixed", "seed": 0, "param:cap": c, "sim_time": 1.0} for c in (1, 100)]
    )
    fig = sweep_figure(runs, "sim_time", "cap")
    ax = fig.axes[0]
    ax.set_xticks([1.0, 1.01], labels=["one hundred", "one hundred"])
    assert tick_labels_collide(fig, ax.xaxis)


def test_informative_sweep_metrics_skip_what_does_not_vary() -> None:
    caps = [2, 8, 32]
    rows = []
    for policy in ("fixed", "localized"):
        for cap in caps:
            sim_time = 100.0 / cap + (policy == "localized")
            rows.append(
                {
                    "status": "ok",
                    "policy": policy,
                    "seed": 0,
                    "param:cap": cap,
                    "sim_time": sim_time,
                    "time_to_all_rows": sim_time,  # every run completed: the same plot twice
                    "rows_per_second": 960 / sim_time,  # the reciprocal of sim_time, scaled
                    "time_to_50pct_rows": sim_time / 2 + cap / 100,  # differs
                    "observed_max_target": cap,  # y = x
                    "rate_limited_calls": 33,  # constant
                    "max_deferred": cap if policy == "fixed" else cap // 2,  # on y = x for fixed only
                }
            )
    runs = pd.DataFrame(rows)
    assert informative_sweep_metrics(runs, "cap") == ["sim_time", "time_to_50pct_rows", "max_deferred"]
    # one run that stopped early makes time_to_all_rows differ from sim_time, so it is kept
    runs.loc[0, "time_to_all_rows"] = np.nan
    assert "time_to_all_rows" in informative_sweep_metrics(runs, "cap")
    fig = sweep_figure(runs, "max_deferred", "cap")
    assert "= cap" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]  # the y = x guide


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
    runs = pd.read_csv(folder / "runs.csv")
    expected = informative_sweep_metrics(runs, key)
    assert "sim_time" in expected and "time_to_all_rows" not in expected  # every run completed: the same plot
    assert sorted(p.name for p in written) == sorted(f"sweep__{m}__{key}.png" for m in expected)
    for path in written:
        assert_png(path)


def test_plot_results_dir_single_run(results: list[sim.Result], tmp_path: Path) -> None:
    folder = sim.write_result(results[0], tmp_path / "one")
    written = plot_results_dir(folder)
    assert [p.name for p in written] == ["timeline.png", "call_latency.png"]
    for path in written:
        assert_png(path)
    (folder / "call_latency.parquet").unlink()  # a folder written before the latency histograms
    assert [p.name for p in plot_results_dir(folder)] == ["timeline.png"]


def test_call_latency_figure_has_one_cumulative_line_per_model_and_outcome(results: list[sim.Result]) -> None:
    bins = results[0].call_latency
    fig = call_latency_figure(bins)
    lines = fig.axes[0].get_lines()
    groups = bins.groupby(["model", "outcome"]).ngroups
    assert len(lines) == groups >= 2
    assert all(line.get_ydata()[-1] == pytest.approx(1.0) for line in lines)
    assert fig.axes[0].get_xscale() == "log"


def test_summary_figure_bars_per_policy() -> None:
    runs = fake_runs().assign(sim_time=lambda f: f["seed"] * 2.0 + (f["policy"] == "localized") * 10.0)
    fig = summary_figure(runs, ["sim_time", "rows_per_second", "not_a_column"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["simulated run time (s)", "rows per second (rows/s)"]
    assert [p.get_facecolor()[:3] for p in visible[0].patches] == [
        pytest.approx(matplotlib.colors.to_rgb(POLICY_COLORS[p])) for p in ("global", "localized")
    ]
    heights = [patch.get_height() for patch in visible[0].patches]
    assert heights == pytest.approx([1.0, 11.0])  # seeds 0 and 1 give 0 and 2 (+10 for localized)
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["global", "localized"]
    assert "sim_time" in SUMMARY_METRICS
    with pytest.raises(ValueError):
        summary_figure(runs, ["nope"])


def test_summary_figure_leaves_out_empty_metrics_and_logs_decades() -> None:
    runs = fake_runs().assign(
        sim_time=lambda f: np.where(f["policy"] == "global", 60.0, 0.18),
        completed_rows=0,
        time_to_50pct_rows=np.nan,
    )
    fig = summary_figure(runs, ["sim_time", "completed_rows", "time_to_50pct_rows"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["simulated run time (s)"]
    assert visible[0].get_yscale() == "log"  # 60 s vs 0.18 s
    assert [t.get_text() for t in visible[0].texts] == ["60", "0.18"]
    assert "left out, 0 or not reached under every policy: completed_rows, time_to_50pct_rows" in fig.get_suptitle()


def test_human_number() -> None:
    values = [11620.3, 2048, 60.0, 98.985, 2.414, 0.183, 0.0258, 1.3e-05, 0.0, float("nan"), "max_time"]
    assert [human_number(v) for v in values] == [
        "11,620",
        "2,048",
        "60",
        "99.0",
        "2.41",
        "0.183",
        "0.0258",
        "<0.001",
        "0",
        "-",
        "max_time",
    ]


def test_auto_time_window_zooms_only_when_one_run_is_far_longer():
    from sim.plots import auto_time_window

    assert auto_time_window([0.026, 60.0, 0.18]) == pytest.approx(0.54)  # cooling-2048: 3 x median
    assert auto_time_window([99.0, 102.0, 100.9]) == 102.0


def test_identical_runs_share_their_model_panels() -> None:
    one = synthetic("fixed", 8, 8, 2, 1.0)
    twin = RunSeries("global", one.timeseries.assign(target=1), one.model_timeseries, 1.0, False)
    base = synthetic("localized", 4, 4, 1, 1.0)
    other = RunSeries("localized", base.timeseries, base.model_timeseries.assign(in_flight=2), 1.0, False)
    fig = comparison_figure([one, twin, other])
    titles = [ax.get_title(loc="left") for ax in fig.axes if "calls in flight" in ax.get_title(loc="left")]
    assert titles == [
        "fixed, global (identical): calls in flight per model (mean per bin)",
        "localized: calls in flight per model (mean per bin)",
    ]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["fixed", "global (= fixed)", "localized"]  # drawn under fixed's lines: the legend says so
