"""Command line: a thin typer shell over the public API.

Commands: ``run``, ``compare``, ``sweep``, ``check``, ``plot``, ``scenarios``, ``advise``, ``schema``, and on
the real engine (the ``twin`` extra) ``twin`` and ``validate``. Every command is
registered with :func:`command`, which maps exceptions to exit codes by their base class
(:mod:`sim.errors`), so one bad input is one line on stderr and never a traceback. Every command
validates what it can before anything runs. Tables, JSON and CSV come from :mod:`sim.output`.

Exit codes (:data:`EXIT_CODES`, also in ``--help`` and the README): 0 success; 1 something ran and
failed; 2 bad input, nothing ran; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); an
interrupted sweep prints how to resume it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from . import __version__, simulate
from .advise import AdviceInterrupted, advice_report
from .advise import advise as run_advice
from .catalog import NAME_RULE, bundled_scenarios, resolve_scenario
from .check import DEFAULT_THRESHOLDS, CheckResult, default_thresholds, evaluate, load_thresholds
from .check import plan_checks as plan_threshold_checks
from .comparison import STATISTICS, compare_table, seed_statistics
from .errors import InputError, RunFailed
from .executors import EXECUTORS, Executor, make_executor
from .metric_info import GROUPS, better_mark, metric_info
from .output import Column, OutputFormat, Report, Table, emit, format_value
from .policies import POLICIES, get_policy, load_plugin
from .results import Result, write_result
from .scenario import Scenario, ScenarioError, load_scenario
from .scenario_docs import scenario_json_schema
from .scheduler import SimulationError
from .sweep import (
    SweepInterrupted,
    SweepPlan,
    SweepReport,
    parse_grid,
    plan_from_manifest,
    plan_sweep,
    resume_sweep,
    run_sweep,
    seed_list,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "something ran and failed (a run, a check, writing the results)",
    EXIT_USAGE: "bad input: one line names the file or option, the key and the reason; nothing ran",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT); a sweep prints how to resume it",
    EXIT_TERMINATED: "terminated by SIGTERM; a sweep prints how to resume it",
}

DEFAULT_POLICIES = "fixed,global,localized"
#: Most seeds one command may ask for (the thresholds file has the same limit).
MAX_SEEDS = 1000
PROG = "admission-sim"

__all__ = ["EXIT_CODES", "app", "build_command", "command", "main"]


class CliError(InputError):
    """A usage problem reported as one line on stderr with exit code 2."""


def _exit_code_text() -> str:
    return "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


def _examples(*lines: str) -> str:
    return "[bold]Examples[/bold]\n" + "\n".join(f"  {PROG} {line}" for line in lines)


app = typer.Typer(
    name=PROG,
    help="Simulate DataDesigner's async scheduler admission policies under rate limits (HTTP 429).",
    epilog=_examples(
        "scenarios",
        "run cooling-2048 --policy localized",
        "compare cooling-2048 --policies fixed,global,localized --seeds 5",
        "sweep window-recovery --grid scheduler.initial_target=1,8 --seeds 3",
        "check results/thresholds.toml --junit check.xml",
    )
    + f"\n\n[bold]Scenarios[/bold]\n  {NAME_RULE}.\n\n[bold]Exit codes[/bold]\n"
    + _exit_code_text()
    + f"\n\nShell completion: {PROG} --install-completion (bash, zsh, fish, PowerShell).",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Simulate DataDesigner's async scheduler admission policies under rate limits (HTTP 429)."""


# ---------------------------------------------------------------------------------------------
# Error mapping: one wrapper for every command
# ---------------------------------------------------------------------------------------------

_signal_received: list[int] = []


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _interrupted_code() -> int:
    return EXIT_TERMINATED if signal.SIGTERM in _signal_received else EXIT_INTERRUPTED


def _interrupted_text() -> str:
    return "terminated (SIGTERM)" if signal.SIGTERM in _signal_received else "interrupted"


def run_mapped(body: Callable[[], int]) -> int:
    """Run a command body; map what it raises to a one-line message and an exit code."""
    try:
        return body()
    except SweepInterrupted as err:
        _say(f"terminated (SIGTERM), {err}" if signal.SIGTERM in _signal_received else str(err))
        print(f"resume with: {PROG} sweep --resume {err.partial_dir}", file=sys.stderr)
        return _interrupted_code()
    except KeyboardInterrupt:
        _say(_interrupted_text())
        return _interrupted_code()
    except AdviceInterrupted as err:  # finished evaluations are journaled: an interruption, not a failure
        _say(str(err))
        return _interrupted_code()
    except InputError as err:
        _say(f"error: {err}")
        return EXIT_USAGE
    except (RunFailed, SimulationError) as err:
        _say(f"failed: {err}")
        return EXIT_FAILED
    except SystemExit as err:  # raised by a policy or plug-in inside a run: never a success
        _say(f"failed: user code (a policy or plug-in) called sys.exit({err.code!r}); the command did not finish")
        return EXIT_FAILED
    except BrokenPipeError:  # output piped into `head`: not an error worth a traceback
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown from failing to flush
        return EXIT_OK
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        _say(f"failed: {err.strerror or err}{where}")
        return EXIT_FAILED


def command(name: str, help: str, epilog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register ``fn`` as the command ``name`` of :data:`app`, under :func:`run_mapped`."""

    def decorator(fn: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> int:
            return run_mapped(lambda: fn(*args, **kwargs))

        app.command(name, help=help, epilog=epilog)(wrapper)
        return fn

    return decorator


@contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM is handled like Ctrl-C (a sweep keeps its finished runs and says how to resume)."""
    _signal_received.clear()
    main_pid = os.getpid()
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: object) -> None:
            if os.getpid() != main_pid:  # a forked worker inherited this handler: end as by default
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            _signal_received.append(signum)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_command() -> Any:
    """The click command behind :data:`app` (for tests and documentation tools)."""
    return typer.main.get_command(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    cmd = build_command()
    with _signals_as_interrupts():
        try:
            result = cmd.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
        except typer.Abort:
            _say("interrupted")
            return EXIT_INTERRUPTED
        except typer.TyperException as err:  # click's usage errors (typer ships its own click)
            ctx = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:
                print(ctx.get_help())
                return EXIT_USAGE
            where = ctx.command_path if ctx is not None else PROG
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            print(f"{where}: error: {' '.join(message.split())} (see {where} --help)", file=sys.stderr)
            return int(getattr(err, "exit_code", EXIT_USAGE))
    return result if isinstance(result, int) else EXIT_OK


# ---------------------------------------------------------------------------------------------
# Shared options
# ---------------------------------------------------------------------------------------------

ScenarioArg = Annotated[
    str,
    typer.Argument(
        metavar="SCENARIO",
        help=f"A bundled scenario's name (see `{PROG} scenarios`) or a scenario file: {NAME_RULE}.",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a scenario value by dotted key; repeatable, e.g. --set scheduler.max_concurrent_row_groups=64.",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", min=0, help="Random seed, >= 0 (default: the scenario's seed).", show_default=False),
]
SeedsOpt = Annotated[
    int,
    typer.Option(
        "--seeds",
        min=1,
        max=MAX_SEEDS,
        metavar="N",
        help=f"Run N seeds per policy (and grid point): --seed .. --seed+N-1, at most {MAX_SEEDS}; e.g. --seeds 10.",
    ),
]
PoliciesOpt = Annotated[
    str,
    typer.Option("--policies", metavar="P1,P2,...", help="Comma-separated policies, e.g. --policies global,localized."),
]
PluginOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        metavar="MODULE:FUNCTION",
        help="Import MODULE (or a path/to/file.py; the current directory is searched) and call FUNCTION() to "
        "register custom policies; repeatable, e.g. --plugin mypolicies:register. "
        "Scenario files are never imported or evaluated.",
        show_default=False,
    ),
]
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Parallel worker processes (default: the CPU count; 1 runs in this process), e.g. --jobs 4.",
        show_default=False,
    ),
]
#: The executors as a choice type for ``--executor``.
ExecutorName = StrEnum("ExecutorName", {name: name for name in EXECUTORS})
ExecutorOpt = Annotated[
    ExecutorName,
    typer.Option(
        "--executor",
        help="Where runs execute: serial (this process), local (processes), dask (a Dask cluster; "
        "needs pip install -e '.\\[distributed]').",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="Dask scheduler address for --executor dask (default: start a local cluster).",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="DIR",
        help="Results folder to create; it must not exist (default: results/<scenario>/<kind>-<UTC time>-<hash>), "
        "e.g. --out results/my-sweep.",
        show_default=False,
    ),
]
FiguresOpt = Annotated[
    bool, typer.Option("--figures/--no-figures", help="Write figures/*.png into the results folder.")
]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Progress bar on stderr (default: shown when stderr is a terminal and not --quiet).",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        help="table (for people), json or csv (for programs; notes go to stderr).",
        case_sensitive=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no notes; only the results.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Every metric, all-zero block counts included (run: also per column).")
]


# ---------------------------------------------------------------------------------------------
# Helpers shared by the commands
# ---------------------------------------------------------------------------------------------


def _note(text: str, fmt: OutputFormat = OutputFormat.table, quiet: bool = False) -> None:
    """An informational line: stdout with tables, stderr with json/csv; nothing with --quiet."""
    if quiet:
        return
    print(text, file=sys.stdout if fmt is OutputFormat.table else sys.stderr)


def _load_plugins(plugins: Sequence[str] | None) -> list[str]:
    for plugin in plugins or []:
        load_plugin(plugin)
    return list(plugins or [])


def _load(scenario: str, overrides: Sequence[str] | None) -> tuple[Path, Scenario]:
    source = resolve_scenario(scenario)
    return source, load_scenario(source, list(overrides or []))


def _policy_names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise CliError("--policies needs at least one policy name")
    for name in names:
        get_policy(name)
    if len(set(names)) != len(names):
        raise CliError(f"--policies {text}: a policy is listed twice")
    return names


def _executor(choice: str, jobs: int | None, scheduler: str | None, runs: int) -> Executor:
    """The executor the options ask for; a single run or ``--jobs 1`` runs in this process."""
    name = str(choice)
    if name == "local" and (runs <= 1 or jobs == 1):
        name = "serial"
    return make_executor(name, jobs, scheduler)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_new_folder(option: str, path: Path) -> Path:
    """``path`` can become a new folder: it does not exist, its names fit, its parent is writable."""
    if len(os.fsencode(str(path.absolute()))) >= 4096:
        raise CliError(f"{option} {path.name[:40]}...: the path is longer than 4095 bytes")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    limit = _name_max(ancestor if ancestor.is_dir() else ancestor.parent)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise CliError(f"{option} {part[:40]}...: the name is longer than {limit} bytes")
    if path.exists() or path.is_symlink():
        kind = "folder" if path.is_dir() else "file"
        raise CliError(f"{option} {path}: a {kind} of that name already exists; remove it or choose another name")
    if not ancestor.is_dir():
        raise CliError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"{option} {path}: cannot create it: {ancestor} is not writable")
    return path


def _check_results_root() -> None:
    """The default results root (``results/`` here) can be written, before anything runs."""
    root = Path("results")
    if root.exists() and not root.is_dir():
        raise CliError(f"{root} is a file; give --out DIR for the results folder")
    probe = root if root.exists() else Path.cwd()
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CliError(f"cannot write the results folder: {probe.absolute()} is not writable; give --out DIR")


def _report_out(report: SweepReport, fmt: OutputFormat, quiet: bool) -> None:
    if report.figures_note and not quiet:
        print(report.figures_note, file=sys.stderr)
    _note(f"results: {report.out}", fmt)


def _print_failures(runs: pd.DataFrame) -> None:
    failed = runs[runs["status"] != "ok"]
    for row in failed.itertuples(index=False):
        print(f"FAILED {row.run_id} policy={row.policy} seed={row.seed}: {row.error}", file=sys.stderr)


def _progress(progress: bool | None, quiet: bool) -> bool | None:
    return False if quiet else progress


def _command_line() -> list[str]:
    return list(sys.argv)


def _unit(metric: str) -> str:
    info = metric_info(metric)
    return info.unit if info is not None else ""


def _group(metric: str) -> str:
    info = metric_info(metric)
    return info.group if info is not None else "tasks"


def _grouped(metrics: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Metrics in :data:`GROUPS` order, keeping their order inside each group."""
    return [(g, [m for m in metrics if _group(m) == g]) for g in GROUPS if any(_group(m) == g for m in metrics)]


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

#: Summary keys shown by ``run`` without --verbose (all others with it).
RUN_BRIEF = (
    "stop_reason",
    "sim_time",
    "total_rows",
    "completed_rows",
    "rows_per_second",
    "successful_calls",
    "healthy_calls",
    "healthy_calls_while_limited",
    "rate_limited_calls",
    "time_to_all_rows",
    "mode",
    "hard_cap",
    "observed_max_target",
    "final_target",
    "max_row_groups_in_flight",
    "adaptive_evaluations",
    "deferred_at_end",
    "max_deferred",
    "salvage_cycles",
)

MODEL_COLUMNS = (
    Column("model", numeric=False),
    Column("429s", numeric=False),
    Column("ok", "calls"),
    Column("429", "calls"),
    Column("unfinished", "calls"),
    Column("max in flight", "calls"),
    Column("final limit", "calls"),
    Column("busy", "0-1"),
    Column("idle with work", "s"),
    Column("cooldown", "s"),
)
MODEL_FIELDS = (
    "model",
    "rate_limit_pattern",
    "successful_calls",
    "rate_limited_calls",
    "unfinished_calls",
    "max_in_flight",
    "final_limit",
    "busy_fraction",
    "idle_with_work_left",
    "cooldown_time",
)

LATENCY_COLUMNS = (
    Column("model", numeric=False),
    Column("ok", "calls"),
    Column("p50", "s"),
    Column("p90", "s"),
    Column("p99", "s"),
    Column("mean", "s"),
)
LATENCY_FIELDS = (
    "model",
    "successful_calls",
    "call_latency_p50",
    "call_latency_p90",
    "call_latency_p99",
    "call_latency_mean",
)


def run_report(result: Result, verbose: bool = False, out: Path | None = None) -> Report:
    """One run: grouped summary tables, the per-model table; the whole summary as JSON and CSV."""
    s = dict(result.summary)
    lines = [
        f"run {s['scenario']}: policy {s['policy']}, seed {s['seed']}; stop: {s['stop_reason']} at "
        f"{format_value(s['sim_time'])} s (wall {result.wall_seconds:.2f} s)"
    ]
    shown = [
        k
        for k in s
        if k not in ("scenario", "policy", "seed")
        and _group(k) != "per model"
        and (verbose or (k in RUN_BRIEF or (k.startswith("blocked_") and s[k])))
    ]
    tables = []
    for group, metrics in _grouped(shown):
        table = Table(group, [Column("metric", numeric=False), Column("value"), Column("unit", numeric=False)])
        table.rows = [[m, s[m], _unit(m)] for m in metrics]
        tables.append(table)
    models = Table("per model (429s: the rate-limit pattern)", list(MODEL_COLUMNS), stacked_units=True)
    models.rows = [[row[f] for f in MODEL_FIELDS] for row in result.models.to_dict("records")]
    tables.append(models)
    if "call_latency_p50" in result.models.columns:  # a real-engine twin result has no histograms
        latency = Table("latency of successful calls (percentiles to 2.3 %)", list(LATENCY_COLUMNS))
        latency.rows = [[row[f] for f in LATENCY_FIELDS] for row in result.models.to_dict("records")]
        tables.append(latency)
    if verbose:
        cols = Table(
            "per column",
            [
                Column("column", numeric=False),
                Column("kind", numeric=False),
                Column("model", numeric=False),
                Column("ok", "calls"),
                Column("429", "calls"),
                Column("deferred at end", "tasks"),
            ],
        )
        cols.rows = [
            [r["column"], r["kind"], r["model"], r["successful_calls"], r["rate_limited_calls"], r["deferred_at_end"]]
            for r in result.columns.to_dict("records")
        ]
        tables.append(cols)
    data = {
        "summary": s,
        "models": result.models.to_dict("records"),
        "columns": result.columns.to_dict("records"),
        "blocked_reasons": dict(result.blocked_reasons),
        "wall_seconds": result.wall_seconds,
        "out": str(out) if out is not None else None,
    }
    return Report(data=data, rows=[s], tables=tables, lines=lines)


@command(
    "run",
    help="Run one scenario with one policy and print its summary.",
    epilog=_examples(
        "run cooling-2048 --policy global --seed 3",
        "run my-scenario.toml --set row_groups.count=64 --out results/one-run",
        "run window-recovery --format json | jq .summary.completed_rows",
    ),
)
def run(
    scenario: ScenarioArg,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help=f"Admission policy (default: the scenario's scheduler.policy): {', '.join(sorted(POLICIES))} "
            "or one registered by --plugin.",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Also write the run (manifest, summary, time series) to this new folder; it must not exist.",
            show_default=False,
        ),
    ] = None,
    plugin: PluginOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> int:
    _load_plugins(plugin)
    _, loaded = _load(scenario, set_)
    if policy is not None:
        chosen = get_policy(policy).name
    else:
        try:
            chosen = get_policy(loaded.scheduler.policy).name
        except InputError as err:
            raise ScenarioError(f"scenario {loaded.name}: scheduler.policy: {err}") from None
    if out is not None:
        check_new_folder("--out", out)
    try:
        result = simulate(loaded, policy=chosen, seed=seed)
    except (InputError, RunFailed, SimulationError):
        raise
    except Exception as err:  # noqa: BLE001 - a policy's own bug: one line, exit 1
        text = " ".join(f"{type(err).__name__}: {err}".split())
        raise RunFailed(f"run {loaded.name} with policy {chosen} raised {text}") from None
    written = None
    if out is not None:
        try:
            written = write_result(result, out, {"command": _command_line()})
        except OSError as err:
            raise RunFailed(f"cannot write --out {out}: {err.strerror or err}") from None
    emit(run_report(result, verbose, written), fmt)
    if written is not None:
        _note(f"wrote {written}", fmt, quiet)
    if result.summary.get("budget_exhausted"):  # stopped by a safety net: the run did not finish
        _say(f"failed: {result.summary.get('budget_message') or 'a run budget stopped the run'}")
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def compare_report(
    runs: pd.DataFrame,
    scenario: str,
    policies: Sequence[str],
    seeds: Sequence[int],
    baseline: str,
    verbose: bool = False,
    out: Path | None = None,
) -> Report:
    """Policies side by side (means over seeds) with ratios to ``baseline``, grouped, units and direction."""
    table = compare_table(runs, policies, baseline)
    ratio_cols = [c for c in table.columns if c not in policies]
    keep = [
        m
        for m in table.index
        if m != "stop_reason"
        and (verbose or not m.startswith("blocked_") or any((table.loc[m, p] or 0) != 0 for p in policies))
    ]
    seed_text = ", ".join(str(s) for s in seeds)
    lines = [f"compare {scenario}: policies {', '.join(policies)}; seeds {seed_text}; baseline {baseline}"]
    if "stop_reason" in table.index:
        stops = [f"{p} {format_value(table.loc['stop_reason', p])}" for p in policies]
        lines.append(f"stop: {'; '.join(stops)}")
    lines.append(
        (f"means over {len(seeds)} seeds; " if len(seeds) > 1 else "")
        + f"ratios are <policy>/{baseline}; 'better' says which direction is better"
    )
    header = [Column("metric", numeric=False), Column("unit", numeric=False), Column("better", numeric=False)]
    header += [Column(p) for p in policies]
    # Ratio headers on two lines ("localized" over "/global") keep the table within 100 columns.
    header += [Column(c.replace("/", "\n/", 1)) for c in ratio_cols]
    tables = []
    rows = []
    for group, metrics in _grouped(keep):
        t = Table(group, header)
        for m in metrics:
            values = [table.loc[m, c] for c in [*policies, *ratio_cols]]
            t.rows.append([m, _unit(m), better_mark(metric_info(m)), *values])
            rows.append(
                {"metric": m, "group": group, "unit": _unit(m), "better": better_mark(metric_info(m))}
                | dict(zip([*policies, *ratio_cols], values, strict=True))
            )
        tables.append(t)
    over_seeds: list[dict[str, Any]] = []
    if len(seeds) > 1:
        stats = seed_statistics(runs, policies)
        t = Table(
            f"over seeds ({len(seeds)} runs per policy)",
            [Column("metric (unit)", numeric=False), Column("policy", numeric=False)]
            + [Column(name) for name in STATISTICS],
        )
        for (metric, policy), row in stats.iterrows():
            label = f"{metric} ({_unit(metric)})" if _unit(metric) else metric
            t.rows.append([label, policy, *(row[name] for name in STATISTICS)])
            over_seeds.append({"metric": metric, "policy": policy} | {k: row[k] for k in [*STATISTICS, "runs"]})
        tables.append(t)
    data = {
        "scenario": scenario,
        "policies": list(policies),
        "seeds": list(seeds),
        "baseline": baseline,
        "metrics": [
            {k: r[k] for k in ("metric", "group", "unit", "better")}
            | {"values": {p: r[p] for p in policies}, "ratios": {c: r[c] for c in ratio_cols}}
            for r in rows
        ],
        "over_seeds": over_seeds,
        "failed_runs": int((runs["status"] != "ok").sum()),
        "out": str(out) if out is not None else None,
    }
    return Report(data=data, rows=rows, tables=tables, lines=lines)


@command(
    "compare",
    help="Run several policies on the same scenario and seeds; print their metrics side by side with ratios "
    "against the baseline (and mean, p50, p95, min, max, std over seeds); write a results folder.",
    epilog=_examples(
        "compare cooling-2048",
        "compare window-recovery --policies global,localized --seeds 5 --jobs 2",
        "compare cooling-2048 --set row_groups.count=256 --out results/cmp --no-figures --format csv",
    ),
)
def compare(
    scenario: ScenarioArg,
    policies: PoliciesOpt = DEFAULT_POLICIES,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Policy the ratios divide by (default: global when listed, else the first listed).",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    seeds: SeedsOpt = 1,
    out: OutOpt = None,
    figures: FiguresOpt = True,
    progress: ProgressOpt = None,
    jobs: JobsOpt = None,
    executor: ExecutorOpt = ExecutorName.local,
    scheduler: SchedulerOpt = None,
    plugin: PluginOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> int:
    plugins = _load_plugins(plugin)
    source, loaded = _load(scenario, set_)
    names = _policy_names(policies)
    base = baseline or ("global" if "global" in names else names[0])
    if base not in names:
        raise CliError(f"--baseline {base} is not among --policies {','.join(names)}")
    seed_values = seed_list(loaded.seed if seed is None else seed, seeds)
    if out is not None:
        check_new_folder("--out", out)
    else:
        _check_results_root()
    plan = plan_sweep(
        loaded,
        policies=names,
        seeds=seed_values,
        kind="compare",
        scenario_source=str(source),
        plugins=plugins,
        command=_command_line(),
    )
    ex = _executor(executor, jobs, scheduler, len(plan.runs))
    try:
        report = run_sweep(plan, out, executor=ex, progress=_progress(progress, quiet), figures=figures)
    finally:
        ex.close()
    emit(compare_report(report.runs, loaded.name, names, seed_values, base, verbose, report.out), fmt)
    _print_failures(report.runs)
    budget_stops = _budget_stops(report.runs)
    if budget_stops:
        print(f"{budget_stops} runs stopped by a run budget (stop.max_events / stop.max_wall_seconds)", file=sys.stderr)
    _report_out(report, fmt, quiet)
    return EXIT_FAILED if report.failed or budget_stops else EXIT_OK


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------


@command(
    "sweep",
    help="Run the factorial grid of --grid overrides x --policies x --seeds in parallel and write a results "
    "folder (manifest.json, runs.csv, time series, figures). The folder is built as .partial-<name>-<random> "
    "and renamed when complete. A grid key none of whose values gives a valid scenario is bad input (exit 2, "
    "nothing runs); a grid point that is invalid or a run that raises is a failed row and the sweep goes on "
    "(exit 1). Ctrl-C or SIGTERM keeps finished runs in the partial folder; --resume finishes it.",
    epilog=_examples(
        "sweep window-recovery --grid scheduler.initial_target=1,8,64 --seeds 3",
        "sweep cooling-2048 --grid row_groups.count=256,1024 --grid models.cooling.latency.mean=0.001,0.01 "
        "--policies global,localized --jobs 2",
        "sweep --from-manifest results/cooling-2048/sweep-.../manifest.json --out results/again",
        "sweep --resume results/cooling-2048/.partial-sweep-...-abcd1234",
        "sweep rpm-capacity --grid models.0.rate_limit.requests_per_minute=300,600 --executor dask "
        "--scheduler tcp://10.0.0.5:8786",
    ),
)
def sweep(
    scenario: Annotated[
        str | None,
        typer.Argument(
            metavar="SCENARIO",
            help=f"A bundled scenario's name or a scenario file ({NAME_RULE}); not with --from-manifest/--resume.",
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            metavar="KEY=V1,V2,...",
            help="A dotted scenario key and its values (TOML values, comma-separated); repeatable, the grid is "
            "the product of all keys, e.g. --grid scheduler.initial_target=1,8,64.",
            show_default=False,
        ),
    ] = None,
    policies: PoliciesOpt = DEFAULT_POLICIES,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    seeds: SeedsOpt = 1,
    from_manifest: Annotated[
        Path | None,
        typer.Option(
            "--from-manifest",
            metavar="FILE",
            help="Re-run exactly the runs of an earlier manifest.json (same ids, overrides, seeds) into --out.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="PARTIAL_DIR",
            help="Finish an interrupted sweep: run only the runs missing from PARTIAL_DIR, then rename it.",
            show_default=False,
        ),
    ] = None,
    out: OutOpt = None,
    figures: FiguresOpt = True,
    progress: ProgressOpt = None,
    jobs: JobsOpt = None,
    executor: ExecutorOpt = ExecutorName.local,
    scheduler: SchedulerOpt = None,
    plugin: PluginOpt = None,
    quiet: QuietOpt = False,
) -> int:
    plugins = _load_plugins(plugin)
    show = _progress(progress, quiet)
    if resume is not None:
        if scenario or grid or from_manifest:
            raise CliError(
                "--resume DIR takes the plan from DIR/manifest.json; give no SCENARIO, --grid or --from-manifest"
            )
        if out is not None:
            check_new_folder("--out", out)
        plan = plan_from_manifest(resume / "manifest.json", plugins=plugins)
        ex = _executor(executor, jobs, scheduler, len(plan.runs))
        try:
            report = resume_sweep(resume, out=out, executor=ex, plugins=plugins, progress=show, figures=figures)
        finally:
            ex.close()
        return _sweep_summary(plan, report, quiet)
    if out is not None:
        check_new_folder("--out", out)
    else:
        _check_results_root()
    if from_manifest is not None:
        if scenario or grid or set_:
            raise CliError("--from-manifest re-runs the manifest's plan; give no SCENARIO, --grid or --set")
        plan = plan_from_manifest(from_manifest, plugins=plugins, command=_command_line())
    else:
        if not scenario:
            raise CliError("give a SCENARIO (or --from-manifest FILE, or --resume DIR)")
        source, loaded = _load(scenario, set_)
        parsed = parse_grid(grid or [])
        seed_values = seed_list(loaded.seed if seed is None else seed, seeds)
        plan = plan_sweep(
            loaded,
            grid=parsed,
            policies=_policy_names(policies),
            seeds=seed_values,
            kind="sweep",
            scenario_source=str(source),
            plugins=plugins,
            command=_command_line(),
        )
    ex = _executor(executor, jobs, scheduler, len(plan.runs))
    try:
        report = run_sweep(plan, out, executor=ex, progress=show, figures=figures)
    finally:
        ex.close()
    return _sweep_summary(plan, report, quiet)


def _sweep_summary(plan: SweepPlan, report: SweepReport, quiet: bool) -> int:
    runs = report.runs
    points = len(runs) // (len(plan.policies) * len(plan.seeds))
    print(
        f"{plan.kind} {plan.scenario.name}: {len(runs)} runs ({points} grid points x {len(plan.policies)} "
        f"policies x {len(plan.seeds)} seeds), {report.failed} failed"
    )
    _print_failures(runs)
    budget_stops = _budget_stops(runs)
    if budget_stops:
        print(f"{budget_stops} runs stopped by a run budget (stop.max_events / stop.max_wall_seconds)", file=sys.stderr)
    _report_out(report, OutputFormat.table, quiet)
    return EXIT_FAILED if report.failed or budget_stops else EXIT_OK


def _budget_stops(runs: pd.DataFrame) -> int:
    """Runs that a run budget stopped: they ran, but did not finish."""
    if "budget_exhausted" not in runs:
        return 0
    return int(runs["budget_exhausted"].fillna(False).astype(bool).sum())


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


def check_report(path: Path, results: Sequence[CheckResult]) -> Report:
    failed = sum(not r.passed for r in results)
    rows = [
        {
            "check": r.check.label,
            "scenario": r.check.scenario,
            "metric": r.check.metric,
            "unit": "ratio" if r.check.ratio is not None else _unit(r.check.metric),
            "value": r.value,
            "min": r.check.min,
            "max": r.check.max,
            "bound": r.check.bound_text,
            "result": "PASS" if r.passed else "FAIL",
            "detail": r.detail or ("" if r.passed else f"value is not {r.check.bound_text}"),
        }
        for r in results
    ]
    table = Table(
        f"check {path}",
        [
            Column("check", numeric=False, wrap=True),
            Column("value"),
            Column("unit", numeric=False),
            Column("bound", numeric=False),
            Column("result", numeric=False),
        ],
    )
    table.rows = [[r["check"], r["value"], r["unit"], r["bound"], r["result"]] for r in rows]
    footer = [f"FAIL {r['check']} ({r['metric']} {r['bound']}): {r['detail']}" for r in rows if r["result"] == "FAIL"]
    footer.append(f"{len(results) - failed} passed, {failed} failed")
    data = {"thresholds": str(path), "passed": len(results) - failed, "failed": failed, "checks": rows}
    return Report(data=data, rows=rows, tables=[table], footer=footer)


def check_junit_target(path: Path) -> Path:
    """``--junit FILE`` may be written: a new file, or an earlier JUnit report (replaced)."""
    if path.is_dir():
        raise CliError(f"--junit {path}: is a folder; give a file name, e.g. --junit check.xml")
    if path.exists():
        try:
            with path.open("rb") as handle:
                head = handle.read(4096)
        except OSError as err:
            raise CliError(f"--junit {path}: cannot read the existing file: {err.strerror or err}") from None
        if b"<testsuite" not in head:
            raise CliError(f"--junit {path}: exists and is not a JUnit report; it is left alone, choose another name")
        if not os.access(path, os.W_OK):
            raise CliError(f"--junit {path}: is not writable")
        return path
    return check_new_folder("--junit", path)


def write_junit(path: Path, report: Report) -> Path:
    """The checks as a JUnit XML report (one testcase per check), written atomically."""
    checks = report.data["checks"]
    suite = ET.Element(
        "testsuite",
        name=f"{PROG} check",
        tests=str(len(checks)),
        failures=str(report.data["failed"]),
        errors="0",
        skipped="0",
    )
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{PROG}.{c['scenario']}", name=c["check"])
        props = ET.SubElement(case, "properties")
        for key in ("metric", "value", "bound"):
            ET.SubElement(props, "property", name=key, value="" if c[key] is None else str(c[key]))
        if c["result"] == "FAIL":
            failure = ET.SubElement(case, "failure", message=c["detail"])
            failure.text = f"{c['metric']} = {c['value']}, expected {c['bound']}: {c['detail']}"
    root = ET.Element("testsuites", tests=str(len(checks)), failures=str(report.data["failed"]))
    root.append(suite)
    ET.indent(root)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise RunFailed(f"cannot write --junit {path}: {err.strerror or err}") from None
    return path


@command(
    "check",
    help="Run every \\[\\[check]] of a thresholds file (scenario, policy or ratio of two policies, overrides, "
    "seeds, metric, min/max) and print a pass/fail table. Exit 1 if any check fails, 2 if the file is malformed "
    "(checked, metric names included, before anything runs).",
    epilog=_examples(
        "check",
        "check results/thresholds.toml --jobs 2",
        "check --format json",
        "check my-thresholds.toml --plugin mypolicies:register --junit reports/check.xml",
    ),
)
def check(
    thresholds: Annotated[
        Path | None,
        typer.Argument(
            metavar="THRESHOLDS",
            help=f"Thresholds TOML file (default: {DEFAULT_THRESHOLDS}, or the shipped one if there is none here).",
            show_default=False,
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit",
            metavar="FILE",
            help="Also write a JUnit XML report for CI (a new file, or replaces an earlier JUnit report).",
            show_default=False,
        ),
    ] = None,
    jobs: JobsOpt = None,
    executor: ExecutorOpt = ExecutorName.local,
    scheduler: SchedulerOpt = None,
    plugin: PluginOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
) -> int:
    plugins = _load_plugins(plugin)
    path = thresholds if thresholds is not None else default_thresholds()
    loaded = load_thresholds(path)
    specs, run_ids = plan_threshold_checks(loaded, path, plugins)
    if junit is not None:
        check_junit_target(junit)
    ex = _executor(executor, jobs, scheduler, len(specs))
    try:
        outcomes = {o.run_id: o for o in ex.run(specs)}
    finally:
        ex.close()
    results = evaluate(loaded, run_ids, outcomes, path)
    report = check_report(path, results)
    emit(report, fmt)
    if junit is not None:
        write_junit(junit, report)
        _note(f"wrote {junit}", fmt, quiet)
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------


def is_results_folder(folder: Path) -> bool:
    """A ``compare``/``sweep`` folder (``runs.csv``) or a ``run --out`` folder (its time series)."""
    from .results import find_series

    return (folder / "runs.csv").is_file() or (
        find_series(folder, "timeseries") is not None and find_series(folder, "model_timeseries") is not None
    )


@command(
    "plot",
    help="Write figures/*.png for a results folder written by compare, sweep or run --out.",
    epilog=_examples(
        "plot results/cooling-2048/compare-20260101-120000-0123abcd",
        "plot results/one-run",
        "plot results/cooling-2048   # lists the results folders inside",
    ),
)
def plot(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="A results folder (compare, sweep or run --out).")],
    quiet: QuietOpt = False,
) -> int:
    if not folder.exists():
        raise CliError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise CliError(f"{folder}: is a file, not a results folder")
    if not is_results_folder(folder):
        inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and is_results_folder(p))
        if inside:
            listed = ", ".join(inside[:20]) + (f" and {len(inside) - 20} more" if len(inside) > 20 else "")
            raise CliError(f"{folder}: not a results folder itself; results folders inside: {listed}")
        raise CliError(f"{folder}: not a results folder (no runs.csv, and no time series of a run --out)")
    try:
        from .plots import plot_results_dir
    except ImportError as err:
        raise CliError(f"plotting is not available: {err}") from None
    try:
        written = plot_results_dir(folder)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, KeyError, ValueError) as err:
        raise CliError(f"{folder}: cannot read its tables: {type(err).__name__}: {err}") from None
    for path in written:
        print(path)
    if not written:
        _note(f"{folder}: nothing to plot (no finished runs with time series)", OutputFormat.csv, quiet)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------


@command(
    "scenarios",
    help="List the bundled scenarios (or the scenario files of a folder) with their descriptions.",
    epilog=_examples("scenarios", "scenarios --folder my-scenarios/", "scenarios --format json"),
)
def scenarios(
    folder: Annotated[
        Path | None,
        typer.Option(
            "--folder", help="A folder of scenario files to list (default: the bundled ones).", show_default=False
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> int:
    rows: list[dict[str, Any]] = []
    if folder is None:
        rows = [{"name": s.name, "file": str(s.path), "description": s.description} for s in bundled_scenarios()]
    else:
        if not folder.is_dir():
            raise CliError(f"--folder {folder}: no such folder")
        paths = sorted(folder.glob("*.toml"))
        if not paths:
            raise CliError(f"--folder {folder}: no scenario files (*.toml) in it")
        for path in paths:
            try:
                loaded = load_scenario(path)
                text = " ".join(loaded.description.split())
                rows.append({"name": loaded.name, "file": str(path), "description": text})
            except ScenarioError as err:  # one bad file must not hide the others
                rows.append({"name": path.stem, "file": str(path), "description": f"INVALID: {err}"})
    table = Table(
        "bundled scenarios" if folder is None else f"scenarios in {folder}",
        [Column("name", numeric=False), Column("what it asks", numeric=False, wrap=True)],
    )
    table.rows = [[r["name"], r["description"]] for r in rows]
    footer = [] if folder is not None else [f"use a name wherever a scenario is expected ({NAME_RULE})"]
    emit(Report(data={"scenarios": rows}, rows=rows, tables=[table], footer=footer), fmt)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# advise and schema
# ---------------------------------------------------------------------------------------------


def _advice_folder(scenario: Scenario) -> Path:
    """The default advise folder: one per scenario content, so running again resumes it."""
    digest = hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()[:8]
    return Path("results") / scenario.name / f"advise-{digest}"


@command(
    "advise",
    help="Which row-group settings for this workload? Search a fixed horizon, adaptive admission with a hard "
    "cap (policy localized), rows per group (buffer_size, when the scenario gives num_records) and "
    "max_in_flight_tasks; print the Pareto front of throughput, time to first checkpoint and open rows, the "
    "recommendation with the RunConfig lines that apply it, and what limited it and the shipped default "
    "(fixed, 3). Finished evaluations are journaled in the folder: running again with it resumes.",
    epilog=_examples(
        "advise workload-chain",
        "advise workload-retry --max-open-rows 2000 --seeds 5 --jobs 2",
        "advise workload-mixed --objective first-checkpoint --out results/mixed-advice",
        "advise my-job.toml --objective mix:0.5 --executor dask --scheduler tcp://10.0.0.5:8786",
    ),
)
def advise(
    scenario: ScenarioArg,
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            metavar="throughput|first-checkpoint|mix:W",
            help="What the recommendation maximises: durable throughput, an early first checkpoint, or a mix "
            "(W = weight of throughput, 0..1).",
        ),
    ] = "throughput",
    max_open_rows: Annotated[
        int | None,
        typer.Option(
            "--max-open-rows",
            min=1,
            metavar="N",
            help="Constraint: peak rows open at once (the memory proxy) must stay at or below N.",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option("--seeds", min=1, max=MAX_SEEDS, metavar="K", help="Seeds for the settings that survive."),
    ] = 3,
    set_: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Advice folder (journal, tables, figure); an existing advice folder of the same scenario is "
            "resumed (default: results/<scenario>/advise-<hash of the scenario>).",
            show_default=False,
        ),
    ] = None,
    progress: ProgressOpt = None,
    jobs: JobsOpt = None,
    executor: ExecutorOpt = ExecutorName.local,
    scheduler: SchedulerOpt = None,
    plugin: PluginOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
) -> int:
    _load_plugins(plugin)
    _source, loaded = _load(scenario, set_)
    folder = out if out is not None else _advice_folder(loaded)
    if out is None:
        _check_results_root()
    ex = _executor(executor, jobs, scheduler, runs=2)
    try:
        advice = run_advice(
            loaded,
            objective=objective,
            max_open_rows=max_open_rows,
            seeds=seeds,
            executor=ex,
            out=folder,
            progress=_progress(progress, quiet),
        )
    finally:
        ex.close()
    if fmt is OutputFormat.table:
        emit(advice_report(advice), fmt)  # the same text as advice.txt, fitted to the terminal
    else:
        rows = advice.evaluated.to_dict(orient="records")
        front = advice.front.to_dict(orient="records")
        chosen = {
            name: None if choice is None else {"setting": choice.setting.label, **choice.row}
            for name, choice in (("recommended", advice.recommended), ("default", advice.default))
        }
        data = {**chosen, "simulated_now": advice.runs, "front": front, "evaluated": rows}
        report = Report(data={**data, "run_config": advice.run_config_lines()}, rows=rows, tables=[])
        emit(report, fmt)
    for path in advice.files:
        _note(f"wrote {path}", fmt, quiet)
    return EXIT_OK


@command(
    "schema",
    help="Print the JSON Schema of the scenario format (for editor completion and validation of scenario "
    "files); the same fields are described in docs/scenario-format.md.",
    epilog=_examples("schema > scenario.schema.json"),
)
def schema() -> int:
    print(json.dumps(scenario_json_schema(), indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# twin and validate: the real DataDesigner scheduler (the 'twin' extra, docs/twin.md)
# ---------------------------------------------------------------------------------------------

TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.001,
        metavar="S",
        help="Wall-clock limit of one real run in seconds (engine start-up included); a run past it is killed "
        "and reported as timed out, never as a result.",
    ),
]


def _real_policy_option() -> Any:
    return typer.Option(
        "--policy",
        help="fixed, global or localized (default: the scenario's scheduler.policy); plug-in policies run on the "
        "simulator only.",
        show_default=False,
    )


def twin_report(result: Any, verbose: bool = False, out: Path | None = None) -> Report:
    """A real run: the simulator's run report plus the real run's own measurements."""
    report = run_report(result, verbose, out)
    s = result.summary
    report.lines[0] = report.lines[0].replace(f"run {s['scenario']}:", f"twin {s['scenario']} (real engine):", 1)
    report.lines.append(
        f"engine data-designer-engine {s['engine_version']}; CPU {format_value(s['cpu_seconds'])} s "
        f"({format_value(s['cpu_utilization'])} of a core); event-loop lag p99 {format_value(s['loop_lag_p99_ms'])} ms"
    )
    return report


def _cpu_bound_warning(result: Any) -> str | None:
    s = result.summary
    if not s.get("cpu_bound"):
        return None
    return (
        f"warning: CPU-bound real run (process CPU {s['cpu_utilization']:.2f} of a core over run()): "
        "its timings depend on the machine"
    )


@command(
    "twin",
    help="Run one scenario on the real DataDesigner scheduler (needs pip install 'admission-sim\\[twin]').",
    epilog=_examples(
        "twin cooling-2048 --policy localized",
        "twin window-recovery --set models.flaky.rate_limit.end=5 --out results/real-window",
        "twin my-scenario.toml --timeout 120 --format json",
    ),
)
def twin(
    scenario: ScenarioArg,
    policy: Annotated[str | None, _real_policy_option()] = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Also write the run (the simulator's files plus calls, target changes, admissions, checkpoints) "
            "to this new folder; it must not exist.",
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOpt = 600.0,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> int:
    from .twin import check_supported, require_engine, resolve_policy, run_twin, write_twin_result

    require_engine()
    _, loaded = _load(scenario, set_)
    chosen = resolve_policy(loaded, policy)
    check_supported(loaded)
    if out is not None:
        check_new_folder("--out", out)
    result = run_twin(loaded, policy=chosen, seed=seed, timeout=timeout)
    written = None
    if out is not None:
        try:
            written = write_twin_result(result, out, {"command": _command_line()})
        except OSError as err:
            raise RunFailed(f"cannot write --out {out}: {err.strerror or err}") from None
    emit(twin_report(result, verbose, written), fmt)
    warning = _cpu_bound_warning(result)
    if warning and not quiet:
        print(warning, file=sys.stderr)
    if written is not None:
        _note(f"wrote {written}", fmt, quiet)
    return EXIT_OK


def validate_report(report: Any, out: Path | None) -> Report:
    """The error table (per policy and metric) and the sign check, for people and programs."""
    errors = Table(
        f"validate {report.scenario.name}: real engine ({report.repeats} repeat(s)) vs simulator",
        [
            Column("policy", numeric=False),
            Column("metric", numeric=False),
            Column("real mean"),
            Column("real sd"),
            Column("n"),
            Column("sim"),
            Column("rel. error", numeric=False),
        ],
    )
    errors.rows = [
        [r.policy, r.metric, r.real_mean, r.real_sd, r.real_n, r.sim, _percent_text(r.rel_error)]
        for r in report.errors.itertuples(index=False)
    ]
    signs = Table(
        "sign(localized - global) where the policies differ",
        [Column("metric", numeric=False), Column("real"), Column("sim"), Column("agrees", numeric=False)],
    )
    signs.rows = [[r.metric, r.real_diff, r.sim_diff, "yes" if r.agrees else "NO"] for r in report.signs.itertuples()]
    data = {
        "scenario": report.scenario.name,
        "errors": report.errors.to_dict("records"),
        "signs": report.signs.to_dict("records"),
        "runs": report.runs_frame().to_dict("records"),
        "warnings": list(report.warnings),
        "out": str(out) if out is not None else None,
    }
    tables = [errors] + ([signs] if signs.rows else [])
    return Report(data=data, rows=report.errors.to_dict("records"), tables=tables)


def _percent_text(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if x in (float("inf"), float("-inf")):
        return "inf"
    return f"{100 * x:+.1f}%"


@command(
    "validate",
    help="Run a scenario on the real scheduler and on the simulator, per policy, and report the error.",
    epilog=_examples(
        "validate healthy-bottleneck --repeats 3",
        "validate window-recovery --set models.flaky.rate_limit.end=5 --policies global,localized",
        "validate my-scenario.toml --repeats 5 --out results/validation --format csv",
    ),
)
def validate(
    scenario: ScenarioArg,
    policies: PoliciesOpt = DEFAULT_POLICIES,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, max=MAX_SEEDS, metavar="N", help="Real runs per policy (seeds +0..N-1).")
    ] = 3,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    timeout: TimeoutOpt = 600.0,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, help="Real runs side by side (they share the cores: keep 1 to measure timings)."
        ),
    ] = 1,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
) -> int:
    import time as _time

    from .twin import check_supported, require_engine, resolve_policy
    from .validate import validate as run_validation
    from .validate import write_validation

    require_engine()
    _, loaded = _load(scenario, set_)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        raise CliError("--policies needs at least one policy name")
    if len(set(names)) != len(names):
        raise CliError(f"--policies {policies}: a policy is listed twice")
    for name in names:
        resolve_policy(loaded, name)
    check_supported(loaded)
    if out is not None:
        check_new_folder("--out", out)
    else:
        _check_results_root()
        out = Path("results") / loaded.name / f"validate-{_time.strftime('%Y%m%d-%H%M%S', _time.gmtime())}"
        check_new_folder("--out", out)

    def progress(run: Any) -> None:
        if not quiet and run.engine == "real":
            print(f"real {run.policy} r{run.repeat}: {run.status}", file=sys.stderr)

    report = run_validation(loaded, names, repeats, seed=seed, timeout=timeout, jobs=jobs, progress=progress)
    try:
        written = write_validation(report, out)
    except OSError as err:
        raise RunFailed(f"cannot write --out {out}: {err.strerror or err}") from None
    emit(validate_report(report, written), fmt)
    if not quiet:
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    _note(f"results: {written}", fmt)
    unfinished = [r for r in report.runs if r.status != "ok"]
    if unfinished:
        _say(f"failed: {len(unfinished)} real run(s) did not finish (see runs.csv); they are left out of the means")
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# calibrate
# ---------------------------------------------------------------------------------------------


@command(
    "calibrate",
    help="Fit the event-loop model's per-operation CPU costs (scheduler.loop.model = calibrated) and write a cost "
    "profile (TOML, microseconds per operation, docs/event-loop.md). Without --measurements, first runs a fixed set "
    "of micro-scenarios on the real scheduler on this machine (needs the twin extra) and stores them next to the "
    "profile as <profile stem>.measurements.json.",
    epilog=_examples(
        "calibrate --out my-machine.toml",
        "calibrate --out quick.toml --quick --repeats 1",
        "calibrate --measurements sim/profiles/reference-2core.measurements.json --out refit.toml",
        "run window-recovery --set scheduler.loop.model=calibrated --set scheduler.loop.profile=my-machine.toml",
    ),
)
def calibrate_command(
    out: Annotated[
        Path,
        typer.Option("--out", metavar="PROFILE", help="Profile TOML to create; must not exist unless --force."),
    ],
    measurements: Annotated[
        list[Path] | None,
        typer.Option(
            "--measurements",
            metavar="FILE",
            help="Fit stored runs (measurements JSON, see sim/profiles/) instead of running; repeat to merge files.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing --out (and, when running, its measurements file)."),
    ] = False,
    repeats: Annotated[
        int | None,
        typer.Option("--repeats", min=1, max=100, metavar="N", help="Real runs per micro-scenario (default 3)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Three small micro-scenarios instead of the full set (a smoke test).")
    ] = False,
    kinds: Annotated[
        str, typer.Option("--kinds", help="Which runs to run and fit: healthy, burst (429 bursts), or both.")
    ] = "healthy,burst",
    prior: Annotated[
        str, typer.Option("--prior", help="Profile to start from and to keep for operations nothing measures.")
    ] = "reference-2core",
    name: Annotated[
        str | None, typer.Option("--name", help="Profile name (default: the file name).", show_default=False)
    ] = None,
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, max=50, help="Most simulate-and-solve rounds of the fit.")
    ] = 4,
    clean_share: Annotated[
        float,
        typer.Option(
            "--clean-share",
            min=0.0,
            max=1.0,
            help="Fit only runs whose core share (a busy loop timed before and after each run) is at least this; "
            "0 fits every run.",
        ),
    ] = 0.9,
    timeout: TimeoutOpt = 600.0,
    progress: ProgressOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    quiet: QuietOpt = False,
) -> int:
    from . import calibrate as cal
    from .event_loop import load_profile

    if out.suffix != ".toml":
        raise CliError(f"--out {out}: a profile file must end in .toml (scheduler.loop.profile reads it by that)")
    if os.path.lexists(out) and not force:
        raise CliError(f"--out {out}: a file of that name already exists; remove it, choose another name or --force")
    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in wanted if k not in ("healthy", "burst")]
    if bad or not wanted:
        raise CliError(f"--kinds {kinds}: must list healthy and/or burst")
    start = load_profile(prior)
    store: Path | None = None
    if measurements:
        if quick or repeats is not None:
            option = "--quick" if quick else "--repeats"
            raise CliError(f"{option}: only for a calibration run on this machine (without --measurements)")
        runs, measured_on = cal.read_measurements(measurements, wanted)
        sources = ", ".join(p.name for p in measurements)
    else:
        from .twin import require_engine

        store = cal.measurements_path_for(out)
        if os.path.lexists(store) and not force:
            raise CliError(
                f"--out {out}: its measurements file {store} already exists; remove it, choose another name or --force"
            )
        require_engine()
        micros = [m for m in cal.micro_set(quick) if ("healthy" if m.rate_limit == "never" else "burst") in wanted]
        before = _load_average()
        runs = _calibration_runs(cal, micros, repeats or 3, timeout, _progress(progress, quiet))
        measured_on = cal.machine_description()
        clean = sum(1 for m in runs if m.cpu_share is not None and m.cpu_share >= clean_share)
        description = (
            f"The real DataDesigner scheduler on this machine, {len(runs)} runs of the calibrate micro-scenarios "
            f"(admission-sim {__version__}), {clean} on an uncontended core; load average before {before}, "
            f"after {_load_average()}"
        )
        cal.write_measurements(store, runs, measured_on, description)
        sources = store.name
    usable = [m for m in runs if m.micro.request_admission]
    if usable and not any(m.cpu_share is None or m.cpu_share >= clean_share for m in usable):
        # Every run shared its core: fit them anyway (the user asked for this machine), and say so.
        _say(
            f"warning: no run had an uncontended core (cpu share >= {clean_share:g}); fitting the contended runs, "
            "whose CPU and wall times are inflated; calibrate again on a quieter machine"
        )
        clean_share = 0.0
    fit = cal.fit_costs(runs, start.costs_us, iterations=iterations, clean_share=clean_share)
    cal.write_profile(
        out, fit, name=name or out.stem, measured_on=measured_on, description=f"fitted by sim.calibrate to {sources}"
    )
    emit(_calibration_report(fit, out, store), fmt)
    return EXIT_OK


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _calibration_runs(cal: Any, micros: list[Any], repeats: int, timeout: float, progress: bool | None) -> list[Any]:
    """Run the micro-scenarios on the real scheduler under a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    stderr = Console(stderr=True)
    show = stderr.is_terminal if progress is None else progress
    with Progress(
        TextColumn("calibrate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        disable=not show,
    ) as bar:
        task = bar.add_task("", total=len(micros) * repeats)
        return cal.run_micro_set(
            micros, repeats, timeout=timeout, on_run=lambda run: bar.update(task, advance=1, description=run)
        )


def _calibration_report(fit: Any, out: Path, store: Path | None) -> Report:
    """Costs (prior, fitted, how well the data pins each one) and every quantity, measured vs simulated."""

    def status(op: str) -> str:
        if op in fit.unconstrained:
            return "unconstrained (prior kept)"
        if op in fit.weak:
            return f"weak ({100 * fit.weak[op]:.2g} % of any quantity)"
        return "fitted"

    costs = Table(
        "Costs",
        [
            Column("operation", numeric=False),
            Column("prior", "us"),
            Column("fitted", "us"),
            Column("change", "%"),
            Column("constrained", numeric=False),
        ],
        [
            [
                op,
                fit.prior_us[op],
                us,
                100 * (us / fit.prior_us[op] - 1) if fit.prior_us[op] else float("nan"),
                status(op),
            ]
            for op, us in fit.costs_us.items()
        ],
    )
    before = {q.name: q.simulated for q in fit.prior_quantities}
    quantities = Table(
        "Measured vs simulated with the fitted costs",
        [
            Column("run", numeric=False, wrap=True),
            Column("quantity", numeric=False),
            Column("measured"),
            Column("simulated"),
            Column("error", "%"),
            Column("fitted", numeric=False),
        ],
        [
            [*q.name.rsplit(": ", 1), q.measured, q.simulated, 100 * q.relative_error, "yes" if q.fitted else q.why_not]
            for q in fit.quantities
        ],
    )
    mean_before = fit.mean_abs_error(fit.prior_quantities)
    mean_after = fit.mean_abs_error(fit.quantities)
    lines = [
        f"mean |error| of the fitted quantities: prior {100 * mean_before:.1f} %, fitted {100 * mean_after:.1f} % "
        f"({fit.iterations} iterations)"
    ]
    if fit.unconstrained:
        lines.append(f"not exercised by the measurements (prior kept): {', '.join(fit.unconstrained)}")
    if fit.uncounted_share > 0.001:
        lines.append(
            f"warning: up to {100 * fit.uncounted_share:.1f} % of a run's simulated CPU is work the fit does not "
            "count (held fixed): a loop cost sim/calibrate.py does not count yet"
        )
    footer = ([f"measurements: {store}"] if store is not None else []) + [f"wrote {out}"]
    data = {
        "costs_us": fit.costs_us,
        "prior_us": fit.prior_us,
        "unconstrained": fit.unconstrained,
        "weak": fit.weak,
        "uncounted_share": fit.uncounted_share,
        "iterations": fit.iterations,
        "mean_abs_error": {"prior": mean_before, "fitted": mean_after},
        "quantities": [
            {
                "quantity": q.name,
                "measured": q.measured,
                "prior": before.get(q.name),
                "simulated": q.simulated,
                "fitted": q.fitted,
                "why_not": q.why_not,
            }
            for q in fit.quantities
        ],
        "profile": str(out),
        "measurements": str(store) if store is not None else None,
    }
    return Report(data=data, rows=data["quantities"], tables=[costs, quantities], lines=lines, footer=footer)
