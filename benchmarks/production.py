"""Production-sized benchmarks: a million-row job in bounded memory, and a 100-run sweep.

``python -m benchmarks production`` runs ``benchmarks/scenarios/production.toml`` (1,000,000 rows
in groups of 1,000, a seed and four model columns, lognormal latencies of seconds, a 60 s 429
window on one model) with a fixed cap of 3 row groups and with adaptive localized admission up
to 64, under both event-loop models. Each run is one spawned interpreter doing what ``admission-sim
run --out`` does (build, run, result tables, results folder written), so its peak RSS
(``ru_maxrss``) is that run's alone. ``--rows 100000`` is the quick variant.

``python -m benchmarks sweep`` runs a 100-run sweep of a bundled scenario (``window-recovery``,
100 seeds, localized) on the local executor with two workers into a results folder, and reports
the wall time and the parent's own CPU time per run (workers write their own time series).

Both print each target as met or missed and write a JSON report. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PRODUCTION = ROOT / "scenarios" / "production.toml"
DEFAULT_OUT = ROOT / "out"

#: Targets (2-core machine, one core per run).
TARGET_RUN_SECONDS = 60.0
TARGET_RUN_PEAK_MB = 500.0
TARGET_SWEEP_SECONDS = 15.0
SWEEP_RUNS = 100
SWEEP_SCENARIO = "window-recovery"

#: (label, overrides) of the two admission settings the target names.
ADMISSION = {
    "fixed cap 3": ["scheduler.policy='fixed'", "scheduler.max_concurrent_row_groups=3"],
    "localized cap 64": ["scheduler.policy='localized'", "scheduler.max_concurrent_row_groups=64"],
}
LOOP_MODELS = ("none", "calibrated")


def _rss_mb() -> float:
    """Current resident set size (MB) from /proc, or the peak where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_mb()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def one_run(overrides: list[str]) -> dict[str, Any]:
    """In a fresh interpreter: load, simulate, build the result and write its folder; time and memory."""
    import sim
    from sim.results import write_result

    baseline = _rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    scenario = sim.load_scenario(PRODUCTION, overrides=overrides)
    result = sim.simulate(scenario)
    simulated = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-production-") as tmp:
        write_result(result, Path(tmp) / "run")
        written = time.perf_counter()
        sizes = {p.name: p.stat().st_size for p in (Path(tmp) / "run").iterdir()}
    s = result.summary
    return {
        "overrides": overrides,
        "hot_path": sim.HOT_PATH.describe(),
        "compiled": sim.native.compiled_in_use(),
        "wall_seconds": written - wall0,
        "simulate_seconds": simulated - wall0,
        "write_seconds": written - simulated,
        "cpu_seconds": time.process_time() - cpu0,
        "peak_rss_mb": _peak_mb(),
        "baseline_rss_mb": baseline,
        "tasks": int(s["dispatches"]),
        "completed_rows": int(s["completed_rows"]),
        "sim_time": float(s["sim_time"]),
        "stop_reason": str(s["stop_reason"]),
        "timeseries_rows": len(result.timeseries),
        "model_timeseries_rows": len(result.model_timeseries),
        "timeseries_rows_aggregated": int(s["timeseries_rows_aggregated"]),
        "model_timeseries_rows_aggregated": int(s["model_timeseries_rows_aggregated"]),
        "file_bytes": sizes,
    }


def run_production(rows: int, loops: Sequence[str], admissions: Sequence[str]) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    load_before = os.getloadavg()
    cases = []
    for loop in loops:
        for name in admissions:
            overrides = [f"row_groups.num_records={rows}", f"scheduler.loop.model={loop}", *ADMISSION[name]]
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                m = pool.submit(one_run, overrides).result()
            m.update(label=f"{rows:,} rows / {name} / loop {loop}", loop=loop, admission=name, rows=rows)
            m["us_per_task_cpu"] = 1e6 * m["cpu_seconds"] / m["tasks"] if m["tasks"] else 0.0
            # The target is for 1,000,000 rows; a smaller job gets its share of it (cost is linear).
            m["wall_target_seconds"] = TARGET_RUN_SECONDS * rows / 1_000_000
            m["wall_ok"] = m["wall_seconds"] < m["wall_target_seconds"]
            m["cpu_ok"] = m["cpu_seconds"] < m["wall_target_seconds"]
            m["memory_ok"] = m["peak_rss_mb"] < TARGET_RUN_PEAK_MB
            print(_case_line(m), file=sys.stderr, flush=True)
            cases.append(m)
    load = [load_before, os.getloadavg()]
    return {"kind": "production", "rows": rows, "load_average_before_after": load, "cases": cases}


def _case_line(m: dict[str, Any]) -> str:
    return (
        f"  {m['label']}: {m['wall_seconds']:.1f} s wall, {m['cpu_seconds']:.1f} s CPU "
        f"({m['us_per_task_cpu']:.1f} us/task, {m['tasks']:,} tasks), peak RSS {m['peak_rss_mb']:.0f} MB "
        f"(after imports {m['baseline_rss_mb']:.0f} MB)"
    )


def run_sweep_case(runs: int = SWEEP_RUNS, jobs: int = 2, loop: str = "none", figures: bool = False) -> dict[str, Any]:
    """A ``runs``-run sweep (seeds) of the bundled scenario into a results folder, ``jobs`` workers."""
    import sim
    from sim.executors import LocalExecutor

    load_before = os.getloadavg()
    scenario = sim.load_scenario(SWEEP_SCENARIO, overrides=[f"scheduler.loop.model={loop}"])
    plan = sim.plan_sweep(scenario, policies=["localized"], seeds=list(range(runs)))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with LocalExecutor(jobs=jobs) as ex:
            report = sim.run_sweep(plan, Path(tmp) / "sweep", executor=ex, progress=False, figures=figures)
        wall = time.perf_counter() - wall0
        parent_cpu = time.process_time() - cpu0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined by close()
        workers_cpu = (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)
        timing = __import__("pandas").read_csv(report.out / "timing.csv")
    run_seconds = float(timing["wall_seconds"].sum())
    out = {
        "kind": "sweep",
        "scenario": SWEEP_SCENARIO,
        "loop": loop,
        "runs": runs,
        "jobs": jobs,
        "figures": figures,
        "failed": report.failed,
        "wall_seconds": wall,
        "parent_cpu_seconds": parent_cpu,
        "parent_cpu_ms_per_run": 1e3 * parent_cpu / runs,
        "sum_of_run_seconds": run_seconds,
        "workers_cpu_seconds": workers_cpu,
        #: what the sweep would take with the cores to itself: all CPU spent, over the cores used
        "cpu_bound_seconds": (workers_cpu + parent_cpu) / jobs,
        "load_average_before_after": [load_before, os.getloadavg()],
    }
    out["wall_ok"] = wall < TARGET_SWEEP_SECONDS
    out["cpu_bound_ok"] = out["cpu_bound_seconds"] < TARGET_SWEEP_SECONDS
    print(
        f"  sweep {runs} runs x {SWEEP_SCENARIO} (loop {loop}), {jobs} workers: {wall:.1f} s wall, "
        f"workers' CPU {workers_cpu:.1f} s; parent CPU {parent_cpu:.2f} s "
        f"({out['parent_cpu_ms_per_run']:.1f} ms/run)",
        file=sys.stderr,
        flush=True,
    )
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = []
    if report.get("production"):
        p = report["production"]
        lines.append(f"production job, {p['rows']:,} rows (one spawned interpreter per run)")
        lines.append(f"hot path: {p['cases'][0]['hot_path'] if p['cases'] else '?'}")
        head = (
            f"{'case':50s} {'wall s':>7s} {'CPU s':>7s} {'us/task':>8s} {'tasks':>10s} {'peak MB':>8s} "
            f"{'ts rows':>8s} {'call rows':>9s}"
        )
        lines += [head, "-" * len(head)]
        for c in p["cases"]:
            lines.append(
                f"{c['label']:50s} {c['wall_seconds']:7.1f} {c['cpu_seconds']:7.1f} {c['us_per_task_cpu']:8.1f} "
                f"{c['tasks']:10,d} {c['peak_rss_mb']:8.0f} {c['timeseries_rows']:8d} {c['model_timeseries_rows']:9d}"
            )
        lines.append("")
        for c in p["cases"]:
            target = c["wall_target_seconds"]
            lines.append(
                f"{c['label']:50s} wall < {target:.0f} s: {'OK' if c['wall_ok'] else 'MISSED'} "
                f"(CPU: {'OK' if c['cpu_ok'] else 'MISSED'}); "
                f"peak RSS < {TARGET_RUN_PEAK_MB:.0f} MB: {'OK' if c['memory_ok'] else 'MISSED'}"
            )
        la = p["load_average_before_after"]
        lines.append(f"load average before {la[0][0]:.2f}, after {la[1][0]:.2f} (1 min)")
    for s in report.get("sweeps", []):
        lines.append("")
        target = f"target < {TARGET_SWEEP_SECONDS:.0f} s"
        lines.append(
            f"sweep: {s['runs']} runs of {s['scenario']} (loop {s['loop']}), {s['jobs']} workers, figures "
            f"{'on' if s['figures'] else 'off'}: {s['wall_seconds']:.1f} s wall ({target}: "
            f"{'OK' if s['wall_ok'] else 'MISSED'}); CPU-bound {s['cpu_bound_seconds']:.1f} s ({target}: "
            f"{'OK' if s['cpu_bound_ok'] else 'MISSED'}); parent CPU {s['parent_cpu_ms_per_run']:.1f} ms per run; "
            f"load average before {s['load_average_before_after'][0][0]:.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("production", "sweep", "all"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the production job (default 1,000,000)")
    parser.add_argument("--loop", default=",".join(LOOP_MODELS), help="event-loop models, comma-separated")
    parser.add_argument("--admission", default=",".join(ADMISSION), help="admission settings, comma-separated")
    parser.add_argument("--runs", type=int, default=SWEEP_RUNS, help="runs of the sweep case")
    parser.add_argument("--jobs", type=int, default=2, help="workers of the sweep case")
    parser.add_argument("--figures", action="store_true", help="the sweep case also draws its figures")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default benchmarks/out/<case>.json)")
    parser.add_argument(
        "--pure", action="store_true", help="run the Python sources even where the compiled hot path is built"
    )
    args = parser.parse_args(argv)
    if args.pure:  # inherited by the spawned runs and the sweep's workers (sim/native.py)
        os.environ["ADMISSION_SIM_PURE_PYTHON"] = "1"
    loops = [x for x in args.loop.split(",") if x]
    admissions = [x for x in args.admission.split(",") if x]
    unknown = [a for a in admissions if a not in ADMISSION] + [x for x in loops if x not in LOOP_MODELS]
    if unknown:
        parser.error(f"unknown --admission/--loop value(s): {unknown}")
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    if args.case in ("production", "all"):
        report["production"] = run_production(args.rows, loops, admissions)
    if args.case in ("sweep", "all"):
        report["sweeps"] = [run_sweep_case(args.runs, args.jobs, loop, args.figures) for loop in loops]
    out = args.out or DEFAULT_OUT / f"{args.case}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\nwrote {out}")
    return 0
