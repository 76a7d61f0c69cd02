"""Command line: a thin shell over the public API.

Commands: ``run``, ``compare``, ``sweep``, ``check``, ``plot``, ``scenarios``. Every command
validates its inputs first; a bad scenario or option prints one clear message (no traceback).

Exit codes: 0 success; 1 something ran and failed (a failed run in a sweep, a failed check, a
simulation error); 2 usage error, nothing was run (bad scenario, option, grid key, thresholds
file, plugin, executor); 130 interrupted (a sweep prints how to resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import __version__, simulate
from .check import DEFAULT_THRESHOLDS, ThresholdsError, default_thresholds, format_results, run_checks
from .comparison import COMPARE_METRICS, compare_table, format_number, format_table, seed_statistics
from .executors import EXECUTORS, Executor, ExecutorUnavailable, make_executor
from .policies import POLICIES, PluginError, UnknownPolicyError, get_policy, load_plugin
from .results import Result, write_result
from .scenario import ScenarioError, load_scenario
from .scheduler import SimulationError
from .sweep import (
    BUNDLED_SCENARIOS,
    SweepError,
    SweepInterrupted,
    SweepPlan,
    SweepReport,
    parse_grid,
    plan_from_manifest,
    plan_sweep,
    resolve_scenario_path,
    resume_sweep,
    run_sweep,
    seed_list,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_POLICIES = "fixed,global,localized"

__all__ = ["BUNDLED_SCENARIOS", "build_parser", "main", "resolve_scenario_path"]


class CliError(Exception):
    """A usage problem reported as one line on stderr with exit code 2."""


def _policy_names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise CliError("--policies needs at least one policy name")
    for name in names:
        get_policy(name)
    return names


def format_summary(result: Result) -> str:
    """A readable two-column table of one run's summary (headline metrics first), then calls per
    column and model."""
    s = dict(result.summary)
    lines = [f"scenario {s['scenario']}  policy {s['policy']}  seed {s['seed']}  (wall {result.wall_seconds:.2f}s)"]
    headline = [k for k in COMPARE_METRICS if k in s]
    keys = headline + [k for k in s if k not in headline and k not in ("scenario", "policy", "seed")]
    width = max(len(k) for k in keys)
    for key in keys:
        lines.append(f"  {key:<{width}}  {format_number(s[key])}")
    lines.append("")
    lines.append(result.columns.to_string(index=False))
    lines.append("")
    lines.append(result.models.to_string(index=False))
    return "\n".join(lines)


def _executor(args: argparse.Namespace, runs: int) -> Executor:
    """The executor the options ask for; a single run or ``--jobs 1`` runs in this process."""
    name = getattr(args, "executor", "local")
    if name == "local" and (runs <= 1 or args.jobs == 1):
        name = "serial"
    return make_executor(name, args.jobs, getattr(args, "scheduler", None))


def _report_out(report: SweepReport) -> None:
    if report.figures_note:
        print(report.figures_note, file=sys.stderr)
    print(f"results: {report.out}")


def _check_out(args: argparse.Namespace) -> None:
    if args.out and Path(args.out).exists():
        raise CliError(f"--out {args.out} already exists; remove it or choose another folder")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(resolve_scenario_path(args.scenario), args.set)
    result = simulate(scenario, policy=args.policy, seed=args.seed)
    print(format_summary(result))
    if args.out:
        path = write_result(result, args.out, {"command": sys.argv})
        print(f"\nwrote {path}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    source = resolve_scenario_path(args.scenario)
    scenario = load_scenario(source, args.set)
    policies = _policy_names(args.policies)
    baseline = args.baseline or ("fixed" if "fixed" in policies else policies[0])
    if baseline not in policies:
        raise CliError(f"--baseline {baseline} is not among --policies {','.join(policies)}")
    seeds = seed_list(scenario.seed if args.seed is None else args.seed, args.seeds)
    _check_out(args)
    plan = plan_sweep(
        scenario,
        policies=policies,
        seeds=seeds,
        kind="compare",
        scenario_source=str(source),
        plugins=args.plugin,
        command=_command(),
    )
    executor = _executor(args, len(plan.runs))
    try:
        report = run_sweep(plan, args.out, executor=executor, progress=args.progress, figures=args.figures)
    finally:
        executor.close()
    runs = report.runs
    seed_text = ", ".join(str(s) for s in seeds)
    print(f"compare {scenario.name}: policies {', '.join(policies)}; seeds {seed_text}; baseline {baseline}")
    if len(seeds) > 1:
        print(f"mean over {len(seeds)} seeds; ratios are <policy mean>/<baseline mean>")
    print(format_table(compare_table(runs, policies, baseline)))
    if len(seeds) > 1:
        print()
        print(f"over seeds ({len(seeds)} runs per policy)")
        print(format_table(seed_statistics(runs, policies)))
    _print_failures(runs)
    _report_out(report)
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.resume:
        if args.scenario or args.grid or args.from_manifest:
            raise CliError(
                "--resume DIR takes the plan from DIR/manifest.json; give no SCENARIO, --grid or --from-manifest"
            )
        plan = plan_from_manifest(Path(args.resume) / "manifest.json", plugins=args.plugin)
        executor = _executor(args, len(plan.runs))
        try:
            report = resume_sweep(
                args.resume,
                out=args.out,
                executor=executor,
                plugins=args.plugin,
                progress=args.progress,
                figures=args.figures,
            )
        finally:
            executor.close()
        return _sweep_summary(plan, report)
    _check_out(args)
    if args.from_manifest:
        if args.scenario or args.grid or args.set:
            raise CliError("--from-manifest re-runs the manifest's plan; give no SCENARIO, --grid or --set")
        plan = plan_from_manifest(args.from_manifest, plugins=args.plugin, command=_command())
    else:
        if not args.scenario:
            raise CliError("give a SCENARIO (or --from-manifest FILE, or --resume DIR)")
        source = resolve_scenario_path(args.scenario)
        scenario = load_scenario(source, args.set)
        grid = parse_grid(args.grid)
        seeds = seed_list(scenario.seed if args.seed is None else args.seed, args.seeds)
        plan = plan_sweep(
            scenario,
            grid=grid,
            policies=_policy_names(args.policies),
            seeds=seeds,
            kind="sweep",
            scenario_source=str(source),
            plugins=args.plugin,
            command=_command(),
        )
    executor = _executor(args, len(plan.runs))
    try:
        report = run_sweep(plan, args.out, executor=executor, progress=args.progress, figures=args.figures)
    finally:
        executor.close()
    return _sweep_summary(plan, report)


def _sweep_summary(plan: SweepPlan, report: SweepReport) -> int:
    runs = report.runs
    points = len(runs) // (len(plan.policies) * len(plan.seeds))
    print(
        f"{plan.kind} {plan.scenario.name}: {len(runs)} runs ({points} grid points x {len(plan.policies)} "
        f"policies x {len(plan.seeds)} seeds), {report.failed} failed"
    )
    _print_failures(runs)
    _report_out(report)
    return EXIT_FAILED if report.failed else EXIT_OK


def _print_failures(runs: pd.DataFrame) -> None:
    failed = runs[runs["status"] != "ok"]
    for row in failed.itertuples(index=False):
        print(f"FAILED {row.run_id} policy={row.policy} seed={row.seed}: {row.error}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.thresholds) if args.thresholds else default_thresholds()
    executor = _executor(args, 2)
    try:
        results = run_checks(path, executor=executor, plugins=args.plugin)
    finally:
        executor.close()
    print(f"check {path}")
    print(format_results(results))
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILED


def cmd_plot(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not (folder / "runs.csv").is_file():
        raise CliError(f"{folder}: not a results folder (no runs.csv)")
    try:
        from .plots import plot_results_dir
    except ImportError as err:
        raise CliError(f"plotting is not available: {err}") from None
    for path in plot_results_dir(folder):
        print(path)
    return EXIT_OK


def cmd_scenarios(args: argparse.Namespace) -> int:
    folder = Path(args.folder) if args.folder else BUNDLED_SCENARIOS
    paths = sorted(folder.glob("*.toml"))
    if not paths:
        raise CliError(f"no scenario files in {folder}")
    for path in paths:
        scenario = load_scenario(path)
        first_line = " ".join(scenario.description.split())
        print(f"{scenario.name:<28} {path}")
        if first_line:
            print(f"    {first_line}")
    return EXIT_OK


def _command() -> list[str]:
    return list(sys.argv)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="admission-sim",
        description="Simulate DataDesigner's async scheduler admission policies under rate limits.",
        formatter_class=raw,
        epilog="examples:\n"
        "  admission-sim run scenarios/cooling-2048.toml --policy localized\n"
        "  admission-sim compare cooling-2048 --policies fixed,global,localized --seeds 5\n"
        "  admission-sim sweep window-recovery --grid scheduler.initial_target=1,8 --seeds 3\n"
        "  admission-sim check results/thresholds.toml\n"
        "  admission-sim scenarios\n"
        "exit codes: 0 ok, 1 a run or check failed, 2 usage error (nothing ran), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scenario_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument(
            "scenario",
            nargs=None if required else "?",
            help="scenario TOML file, or the name of a bundled scenario (e.g. cooling-2048)",
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a scenario value by dotted key; repeatable "
            "(e.g. --set scheduler.max_concurrent_row_groups=64 --set models.cooling.latency.mean=0.2)",
        )
        p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's seed)")

    def policy_seed_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--policies",
            default=DEFAULT_POLICIES,
            help=f"comma-separated policies (default: {DEFAULT_POLICIES}), e.g. --policies global,localized",
        )
        p.add_argument(
            "--seeds",
            type=int,
            default=1,
            metavar="N",
            help="run N seeds (per grid point and policy): --seed (or the scenario's seed) .. +N-1 (default 1), "
            "e.g. --seeds 10",
        )

    def plugin_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="MODULE:FUNCTION",
            help="import MODULE and call FUNCTION() to register custom policies; repeatable "
            "(e.g. --plugin mypolicies:register). Scenario files are never imported or evaluated.",
        )

    def exec_args(p: argparse.ArgumentParser, executors: bool = True) -> None:
        p.add_argument(
            "--jobs",
            "-j",
            type=int,
            default=None,
            help="parallel worker processes (default: the CPU count; 1 runs in this process), e.g. --jobs 4",
        )
        if executors:
            p.add_argument(
                "--executor",
                choices=EXECUTORS,
                default="local",
                help="where runs execute: serial (this process), local (processes, default), "
                "dask (a Dask cluster; needs pip install -e '.[distributed]')",
            )
            p.add_argument(
                "--scheduler",
                default=None,
                metavar="tcp://HOST:PORT",
                help="Dask scheduler address for --executor dask (default: start a local cluster)",
            )

    def output_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--out",
            default=None,
            metavar="DIR",
            help="results folder to create (must not exist; default: "
            "results/<scenario>/<kind>-<UTC time>-<hash>), e.g. --out results/my-sweep",
        )
        p.add_argument(
            "--no-figures", dest="figures", action="store_false", help="do not write figures/*.png into the folder"
        )
        p.add_argument(
            "--no-progress",
            dest="progress",
            action="store_const",
            const=False,
            default=None,
            help="no progress bar on stderr (default: shown when stderr is a terminal)",
        )

    run = sub.add_parser(
        "run",
        help="run one scenario with one policy and print its summary",
        description="Run one scenario with one policy and print its summary.",
        formatter_class=raw,
        epilog="examples:\n"
        "  admission-sim run scenarios/cooling-2048.toml --policy global --seed 3\n"
        "  admission-sim run cooling-2048 --set row_groups.count=64 --out /tmp/one-run",
    )
    scenario_args(run)
    run.add_argument(
        "--policy",
        default=None,
        help=f"admission policy (default: the scenario's scheduler.policy); one of {', '.join(sorted(POLICIES))}",
    )
    run.add_argument("--out", default=None, help="also write the run (manifest, summary, time series) to this folder")
    plugin_arg(run)
    run.set_defaults(func=cmd_run)

    compare = sub.add_parser(
        "compare",
        help="run several policies on the same scenario and seeds, side by side",
        description=_wrap(
            "Run several policies on the same scenario and seeds; print their metrics side by side with "
            "ratios against the baseline (and mean, p50, p95, min, max, std over seeds); write a results folder."
        ),
        formatter_class=raw,
        epilog="examples:\n"
        "  admission-sim compare cooling-2048\n"
        "  admission-sim compare window-recovery --policies global,localized --seeds 5 --jobs 2\n"
        "  admission-sim compare cooling-2048 --set row_groups.count=256 --out results/cmp --no-figures",
    )
    scenario_args(compare)
    policy_seed_args(compare)
    compare.add_argument(
        "--baseline",
        default=None,
        help="policy the ratios divide by (default: fixed when listed, else the first listed)",
    )
    output_args(compare)
    exec_args(compare)
    plugin_arg(compare)
    compare.set_defaults(func=cmd_compare)

    sweep = sub.add_parser(
        "sweep",
        help="run a factorial grid of overrides x policies x seeds into a results folder",
        description=_wrap(
            "Run the factorial grid of --grid overrides x --policies x --seeds in parallel and write a "
            "results folder (manifest.json, runs.csv, time series, figures). The folder is built as "
            ".partial-<name>-<random> and renamed when complete. A grid key none of whose values gives a "
            "valid scenario is a usage error (exit 2, nothing runs); a grid point that is invalid or a run "
            "that raises is recorded as a failed row and the sweep goes on (exit 1). Ctrl-C keeps finished "
            "runs in the partial folder; --resume finishes it."
        ),
        formatter_class=raw,
        epilog="examples:\n"
        "  admission-sim sweep window-recovery --grid scheduler.initial_target=1,8,64 --seeds 3\n"
        "  admission-sim sweep cooling-2048 --grid row_groups.count=256,1024 "
        "--grid models.cooling.latency.mean=0.001,0.01 --policies global,localized --jobs 2\n"
        "  admission-sim sweep --from-manifest results/cooling-2048/sweep-.../manifest.json --out results/again\n"
        "  admission-sim sweep --resume results/cooling-2048/.partial-sweep-...-abcd1234\n"
        "  admission-sim sweep rpm-capacity --grid models.0.rate_limit.requests_per_minute=300,600 "
        "--executor dask --scheduler tcp://10.0.0.5:8786",
    )
    scenario_args(sweep, required=False)
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a dotted scenario key and its values (TOML values, comma-separated); repeatable, the grid is "
        "the product of all keys, e.g. --grid scheduler.initial_target=1,8,64",
    )
    policy_seed_args(sweep)
    sweep.add_argument(
        "--from-manifest",
        default=None,
        metavar="FILE",
        help="re-run exactly the runs of an earlier manifest.json (same ids, overrides, seeds) into --out",
    )
    sweep.add_argument(
        "--resume",
        default=None,
        metavar="PARTIAL_DIR",
        help="finish an interrupted sweep: run only the runs missing from PARTIAL_DIR, then rename it",
    )
    output_args(sweep)
    exec_args(sweep)
    plugin_arg(sweep)
    sweep.set_defaults(func=cmd_sweep)

    check = sub.add_parser(
        "check",
        help="run the regression checks of a thresholds file; exit 1 if a bound fails",
        description=_wrap(
            "Run every [[check]] of a thresholds file (scenario, policy or ratio of two policies, "
            "overrides, seeds, metric, min/max) and print a pass/fail table. Exit 1 if any check fails, "
            "2 if the file is malformed."
        ),
        formatter_class=raw,
        epilog="examples:\n"
        "  admission-sim check\n"
        "  admission-sim check results/thresholds.toml --jobs 2\n"
        "  admission-sim check my-thresholds.toml --plugin mypolicies:register",
    )
    check.add_argument(
        "thresholds",
        nargs="?",
        default=None,
        help=f"thresholds TOML file (default: {DEFAULT_THRESHOLDS}, or the shipped one if there is none here)",
    )
    exec_args(check)
    plugin_arg(check)
    check.set_defaults(func=cmd_check)

    plot = sub.add_parser(
        "plot",
        help="(re)draw the figures of a results folder",
        description="Write figures/*.png for a results folder written by compare or sweep.",
        formatter_class=raw,
        epilog="example: admission-sim plot results/cooling-2048/compare-20260101-120000-0123abcd",
    )
    plot.add_argument("folder", help="a results folder (with manifest.json and runs.csv)")
    plot.set_defaults(func=cmd_plot)

    scenarios = sub.add_parser(
        "scenarios",
        help="list bundled scenarios with their descriptions",
        description="List scenario files with their descriptions.",
        formatter_class=raw,
        epilog="examples:\n  admission-sim scenarios\n  admission-sim scenarios --folder my-scenarios/",
    )
    scenarios.add_argument("--folder", default=None, help="folder to list (default: the bundled scenarios/)")
    scenarios.set_defaults(func=cmd_scenarios)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for plugin in getattr(args, "plugin", []):
            load_plugin(plugin)
        return args.func(args)
    except (
        ScenarioError,
        CliError,
        UnknownPolicyError,
        SweepError,
        PluginError,
        ThresholdsError,
        ExecutorUnavailable,
    ) as err:
        print(f"admission-sim: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SimulationError as err:
        print(f"admission-sim: simulation failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except SweepInterrupted as err:
        print(f"admission-sim: {err}", file=sys.stderr)
        print(f"resume with: admission-sim sweep --resume {err.partial_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("admission-sim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head`: not an error worth a traceback
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown from failing to flush
        return EXIT_OK
