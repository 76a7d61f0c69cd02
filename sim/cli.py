"""Command line: a thin shell over the public API.

Every command validates its inputs first; a bad scenario or option prints one clear message
(no traceback) and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import __version__, simulate
from .policies import POLICIES, UnknownPolicyError, get_policy
from .results import Result, write_result
from .scenario import ScenarioError, load_scenario
from .scheduler import SimulationError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Headline metrics shown first in tables, in this order.
HEADLINE_METRICS = (
    "stop_reason",
    "sim_time",
    "completed_rows",
    "rows_per_second",
    "successful_calls",
    "healthy_calls",
    "rate_limited_calls",
    "observed_max_target",
    "max_row_groups_in_flight",
    "adaptive_evaluations",
    "deferred_at_end",
    "salvage_cycles",
)

BUNDLED_SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


class CliError(Exception):
    """A usage problem reported as one line on stderr with exit code 2."""


def _policy_names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise CliError("--policies needs at least one policy name")
    for name in names:
        get_policy(name)
    return names


def resolve_scenario_path(text: str) -> Path:
    """A path, or the name of a bundled scenario (``cooling-2048``)."""
    path = Path(text)
    if path.exists() or path.suffix == ".toml":
        return path
    bundled = BUNDLED_SCENARIOS / f"{text}.toml"
    return bundled if bundled.exists() else path


def format_summary(result: Result) -> str:
    """A readable two-column table of one run's summary, then calls per column and model."""
    s = dict(result.summary)
    lines = [f"scenario {s['scenario']}  policy {s['policy']}  seed {s['seed']}  (wall {result.wall_seconds:.2f}s)"]
    keys = list(HEADLINE_METRICS) + [
        k for k in s if k not in HEADLINE_METRICS and k not in ("scenario", "policy", "seed")
    ]
    width = max(len(k) for k in keys)
    for key in keys:
        lines.append(f"  {key:<{width}}  {_fmt(s[key])}")
    lines.append("")
    lines.append(result.columns.to_string(index=False))
    lines.append("")
    lines.append(result.models.to_string(index=False))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    return str(value)


def comparison_table(results: Sequence[Result], metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """Metrics (rows) by policy (columns), for runs of one scenario."""
    data = {r.policy: [r.summary.get(m) for m in metrics] for r in results}
    return pd.DataFrame(data, index=list(metrics))


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
    scenario = load_scenario(resolve_scenario_path(args.scenario), args.set)
    policies = _policy_names(args.policies)
    results = []
    for name in policies:
        print(f"running {scenario.name} with policy {name} ...", file=sys.stderr, flush=True)
        results.append(simulate(scenario, policy=name, seed=args.seed))
    table = comparison_table(results)
    print(f"scenario {scenario.name} (seed {results[0].seed})")
    print(table.to_string())
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="admission-sim",
        description="Simulate DataDesigner's async scheduler admission policies under rate limits.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  admission-sim run scenarios/cooling-2048.toml --policy localized\n"
        "  admission-sim compare cooling-2048 --policies global,localized\n"
        "  admission-sim scenarios",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scenario_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("scenario", help="scenario TOML file, or the name of a bundled scenario (e.g. cooling-2048)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a scenario value by dotted key; repeatable "
            "(e.g. --set scheduler.max_concurrent_row_groups=64 --set models.cooling.latency.mean=0.2)",
        )
        p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's seed)")

    run = sub.add_parser(
        "run",
        help="run one scenario with one policy and print its summary",
        description="Run one scenario with one policy and print its summary.",
        epilog="example: admission-sim run scenarios/cooling-2048.toml --policy global --seed 3",
    )
    scenario_args(run)
    run.add_argument(
        "--policy",
        default=None,
        help=f"admission policy (default: the scenario's scheduler.policy); one of {', '.join(sorted(POLICIES))}",
    )
    run.add_argument("--out", default=None, help="also write the run (manifest, summary, time series) to this folder")
    run.set_defaults(func=cmd_run)

    compare = sub.add_parser(
        "compare",
        help="run several policies on the same scenario and seed, side by side",
        description="Run several policies on the same scenario and seed and print their metrics side by side.",
        epilog="example: admission-sim compare cooling-2048 --policies fixed,global,localized",
    )
    scenario_args(compare)
    compare.add_argument(
        "--policies",
        default="fixed,global,localized",
        help="comma-separated policies (default: fixed,global,localized)",
    )
    compare.set_defaults(func=cmd_compare)

    scenarios = sub.add_parser(
        "scenarios",
        help="list bundled scenarios with their descriptions",
        description="List scenario files with their descriptions.",
        epilog="example: admission-sim scenarios",
    )
    scenarios.add_argument("--folder", default=None, help="folder to list (default: the bundled scenarios/)")
    scenarios.set_defaults(func=cmd_scenarios)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ScenarioError, CliError, UnknownPolicyError) as err:
        print(f"admission-sim: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SimulationError as err:
        print(f"admission-sim: simulation failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("admission-sim: interrupted", file=sys.stderr)
        return 130
