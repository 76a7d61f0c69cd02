"""One number format, JSON and CSV that programs can read, tables within 100 columns."""

from __future__ import annotations

import io
import json
import math

import numpy as np

from sim.output import Column, OutputFormat, Report, Table, emit, format_value, plain


def test_one_number_format() -> None:
    assert [format_value(v) for v in (3, 3.0, np.int64(7), 0.0, 0.1828123, 1234567.0, 1.5e-7)] == [
        "3",
        "3",
        "7",
        "0",
        "0.1828",
        "1234567",
        "1.5e-07",
    ]
    assert [format_value(v) for v in (None, math.nan, np.float64("nan"), math.inf, -math.inf, True)] == [
        "n/a",
        "n/a",
        "n/a",
        "inf",
        "-inf",
        "true",
    ]
    assert format_value("successful_calls") == "successful_calls"


def test_plain_makes_json_ready_values() -> None:
    assert plain({"a": np.float64(1.5), "b": [math.nan, math.inf], 3: np.int32(2)}) == {
        "a": 1.5,
        "b": [None, "inf"],
        "3": 2,
    }


def _report() -> Report:
    table = Table("group", [Column("metric", numeric=False), Column("value", "s")], [["calls_ok[cooling]", math.nan]])
    rows = [{"metric": "x", "value": math.nan}, {"metric": "y", "value": 2.5, "extra": 1}]
    return Report(data={"value": math.nan, "n": np.int64(2)}, rows=rows, tables=[table], lines=["title"])


def test_emit_json_csv_and_table() -> None:
    out = io.StringIO()
    emit(_report(), OutputFormat.json, out)
    assert json.loads(out.getvalue()) == {"value": None, "n": 2}
    out = io.StringIO()
    emit(_report(), OutputFormat.csv, out)
    assert out.getvalue().splitlines() == ["metric,value,extra", "x,,", "y,2.5,1"]
    out = io.StringIO()
    emit(_report(), OutputFormat.table, out)
    text = out.getvalue()
    assert "calls_ok[cooling]" in text  # brackets are text, not rich markup
    assert "value (s)" in text and "n/a" in text and "NaN" not in text
    assert all(line == line.rstrip() and len(line) <= 100 for line in text.splitlines())


def test_wide_tables_are_kept_within_100_columns() -> None:
    columns = [Column("label", numeric=False, wrap=True)] + [Column(f"c{i}", "calls") for i in range(8)]
    table = Table("wide", columns, [["a long label " * 6] + [123456.789] * 8])
    out = io.StringIO()
    emit(Report(data={}, rows=[], tables=[table]), OutputFormat.table, out)
    assert all(len(line) <= 100 for line in out.getvalue().splitlines())
