"""How a command prints what it found: rich tables for people, JSON or CSV for programs.

A command builds one :class:`Report` (tables for the terminal, a JSON-ready mapping, CSV rows)
and :func:`emit` prints the one the user asked for with ``--format``. Every number in a table goes
through :func:`format_value`, so all tables share one number format (4 significant digits,
integers in full, ``n/a`` for a value that does not exist). In JSON a missing value is ``null``
and an infinite ratio the string ``"inf"``; in CSV a missing value is an empty cell.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

#: Tables are laid out for a terminal this wide (or the terminal's width, if narrower).
MAX_WIDTH = 100
MISSING = "n/a"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def console(file: TextIO | None = None) -> Console:
    """A console on ``file`` (default: the current ``sys.stdout``) at most :data:`MAX_WIDTH` wide."""
    file = file if file is not None else sys.stdout
    terminal = hasattr(file, "isatty") and file.isatty()
    if terminal:
        con = Console(file=file, highlight=False)
        con.width = min(con.width, MAX_WIDTH)
        return con
    return Console(file=file, width=MAX_WIDTH, highlight=False, color_system=None, soft_wrap=False)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and math.isnan(value))
    except TypeError:
        return False


def format_value(value: Any) -> str:
    """One number format for every table: ints in full, floats to 4 significant digits."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def plain(value: Any) -> Any:
    """A JSON-ready copy of ``value``: numpy scalars to Python, NaN to None, inf to "inf"."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


@dataclass(frozen=True)
class Column:
    """A table column; ``unit`` is shown in the header, as ``name (unit)``."""

    name: str
    unit: str = ""
    numeric: bool = True
    #: Long text (a description) wraps; every other column keeps its cells on one line.
    wrap: bool = False

    @property
    def header(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name


@dataclass
class Table:
    """A titled table of rows (one value per column), printed with rich."""

    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    #: Put units on a second header line (for wide tables of short numbers).
    stacked_units: bool = False

    def render(self) -> RichTable:
        table = RichTable(
            title=self.title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        for col in self.columns:
            table.add_column(
                Text(f"{col.name}\n({col.unit})" if self.stacked_units and col.unit else col.header),
                justify="right" if col.numeric else "left",
                no_wrap=not col.wrap,
                overflow="fold" if col.wrap else "ellipsis",
            )
        for row in self.rows:
            table.add_row(*(Text(format_value(v)) for v in row))
        return table


@dataclass
class Report:
    """What one command found: ``lines`` and ``tables`` for people, ``data`` (JSON), ``rows`` (CSV)."""

    data: dict[str, Any]
    rows: list[dict[str, Any]]
    tables: list[Table] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)


def emit(report: Report, fmt: OutputFormat = OutputFormat.table, file: TextIO | None = None) -> None:
    """Print ``report`` in ``fmt`` on ``file`` (default: stdout)."""
    file = file if file is not None else sys.stdout
    if fmt is OutputFormat.json:
        file.write(json.dumps(plain(report.data), indent=2) + "\n")
    elif fmt is OutputFormat.csv:
        write_csv(report.rows, file)
    else:
        con = console(file)
        plain_text = not (hasattr(file, "isatty") and file.isatty())
        with con.capture() as captured:
            for line in report.lines:
                con.print(line, markup=False, highlight=False)
            for table in report.tables:
                if table.rows:
                    con.print()
                    con.print(table.render())
            for line in report.footer:
                con.print(line, markup=False, highlight=False)
        text = captured.get()
        if plain_text:  # no padding at line ends in files and pipes (grep- and diff-friendly)
            text = "\n".join(line.rstrip() for line in text.split("\n"))
        file.write(text)


def write_csv(rows: Sequence[Mapping[str, Any]], file: TextIO) -> None:
    """Rows as CSV with the union of their keys as the header (in first-seen order)."""
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    writer = csv.DictWriter(file, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})


def _csv_cell(value: Any) -> Any:
    value = plain(value)
    return "" if value is None else value
