"""Where the scenario format is described: the reference page and the JSON Schema, both generated
from the pydantic models in :mod:`sim.scenario`, so that neither can drift from what is validated.

``docs/scenario-format.md`` is written by ``python -m sim.scenario_docs --write`` and checked by
``--check`` (and by the test suite); ``--schema`` prints the JSON Schema that editors use for
completion. Every field's description, unit and mirrored DataDesigner setting come from its
``Field`` in :mod:`sim.scenario`; nothing here knows a field by name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .scenario import MIRRORS_KEY, UNIT_KEY, Scenario

#: The reference page, relative to the repository root.
REFERENCE_PATH = Path(__file__).resolve().parent.parent / "docs" / "scenario-format.md"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_HEADER = """\
# Scenario format reference

<!-- Generated from the models in sim/scenario.py by `python -m sim.scenario_docs --write`.
     Do not edit by hand: the test suite fails when this page is stale. -->

A scenario is a TOML file. Only `name`, `row_groups` and `columns` are required; every other key
has the real scheduler's default, so a scenario states only what differs. How to write one, step
by step: [writing-scenarios.md](writing-scenarios.md). What each setting does inside the model:
[model.md](model.md).

Keys are written here as `--set` takes them: tables are dotted (`scheduler.initial_target`), and an
item of `models` or `columns` is named by its `name` (`models.cooling.latency.mean`; an index such
as `columns.0.duration` works too). Unknown keys are errors. Integers must be TOML integers
(`count = 5`, not `5.0` or `"5"`); numbers may be written as integers; booleans are `true` or
`false`, unquoted. Times are simulated seconds (`s`). The column *DataDesigner* names the real
setting a key mirrors, where there is one.

The same reference as a JSON Schema, for editor completion: `admission-sim schema` (or
`python -m sim.scenario_docs --schema`). Editors that read JSON Schema for TOML (for example the
Even Better TOML extension) pick it up from a `#:schema ./scenario.schema.json` comment on a
scenario's first line.
"""


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (draft 2020-12), with each key's description, unit
    (``x-unit``) and mirrored DataDesigner setting (``x-datadesigner``)."""
    schema = Scenario.model_json_schema(mode="validation")
    _standard_bounds(schema)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema, "title": "admission-sim scenario"}


_BOUND_KEYWORDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _standard_bounds(node: Any) -> None:
    """Rename pydantic's ``ge``/``le``/... to JSON Schema's ``minimum``/``maximum``/... in place.

    pydantic writes its own names for the bounds of a strict number inside a union (``Int | None``),
    which editors do not understand; the bounds of every other number are already standard."""
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for ours, standard in _BOUND_KEYWORDS.items():
                if ours in node:
                    node[standard] = node.pop(ours)
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _standard_bounds(value)


# ---------------------------------------------------------------------------------------------
# The reference page
# ---------------------------------------------------------------------------------------------


class _Schema:
    """Read access to one generated schema: ``$ref`` resolution and the tables it describes."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return self.defs[ref.rsplit("/", 1)[-1]] if ref else node

    def table_of(self, prop: dict[str, Any]) -> tuple[dict[str, Any], bool] | None:
        """The table a property holds, and whether it is an array of such tables."""
        for option in [prop, *prop.get("anyOf", [])]:
            if "$ref" in option:
                return self.resolve(option), False
            items = option.get("items")
            if option.get("type") == "array" and isinstance(items, dict) and "$ref" in items:
                return self.resolve(items), True
        return None

    def sections(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(dotted prefix, table schema) for every table, depth first in declaration order."""
        stack: list[tuple[str, dict[str, Any]]] = [("", self.root)]
        while stack:
            prefix, table = stack.pop()
            yield prefix, table
            children = []
            for key, prop in table.get("properties", {}).items():
                found = self.table_of(prop)
                if found is not None:
                    child, is_array = found
                    children.append((f"{prefix}{key}.<name>." if is_array else f"{prefix}{key}.", child))
            stack.extend(reversed(children))


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}" if abs(value) < 1e6 else f"{value:g}"
    return str(value)


def _type_name(schema: _Schema, prop: dict[str, Any]) -> str:
    options = prop.get("anyOf", [prop])
    names = [_one_type(schema, o) for o in options if o.get("type") != "null"]
    return " or ".join(names)


def _one_type(schema: _Schema, prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return "table"
    if "enum" in prop or "const" in prop:
        values = prop.get("enum", [prop.get("const")])
        return " | ".join(f'`"{v}"`' if isinstance(v, str) else f"`{_number(v)}`" for v in values)
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items", {})
        inner = (
            "tables"
            if "$ref" in items
            else {"integer": "integers", "string": "strings", "number": "numbers"}.get(items.get("type"), "values")
        )
        return f"array of {inner}"
    return {"integer": "integer", "number": "number", "boolean": "boolean", "string": "string"}.get(kind, str(kind))


def _limits(prop: dict[str, Any]) -> str:
    """Bounds of a value (and of an array's items), e.g. ``>= 1, <= 1024``."""
    parts: list[str] = []
    for option in prop.get("anyOf", [prop]):
        parts += _bounds(option)
        items = option.get("items")
        if isinstance(items, dict) and "$ref" not in items:
            parts += [f"each {b}" for b in _bounds(items)]
    return ", ".join(parts)


def _bounds(node: dict[str, Any]) -> list[str]:
    signs = (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    )
    out = [f"{sign} {_number(node[key])}" for key, sign in signs if key in node]
    if "minLength" in node or "maxLength" in node:
        out.append(f"{node.get('minLength', 0)}-{node.get('maxLength', '...')} characters")
    if "minItems" in node or "maxItems" in node:
        out.append(f"{node.get('minItems', 0)}-{node.get('maxItems', '...')} items")
    if "pattern" in node:
        out.append(f"matches `{node['pattern']}`")
    return out


def _default(prop: dict[str, Any], required: bool, is_table: bool) -> str:
    if required:
        return "**required**"
    if is_table:
        return "see below"
    value = prop.get("default")
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, list):
        return "`[]`" if not value else f"`{json.dumps(value)}`"
    return f"`{_number(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_reference() -> str:
    """The whole reference page, as ``--write`` writes it."""
    schema = _Schema(scenario_json_schema())
    sections = list(schema.sections())
    lines = [_HEADER, "## Contents", ""]
    for prefix, _table in sections:
        title = prefix.rstrip(".") or "top level"
        lines.append(f"- [`{title}`](#{_anchor(title)})" if prefix else "- [Top level](#top-level)")
    lines.append("")
    for prefix, table in sections:
        title = prefix.rstrip(".")
        lines += [f"## `{title}`" if title else "## Top level", ""]
        description = table.get("description", "")
        if description:
            lines += [_link_model_sections(description.strip()), ""]
        lines += [
            "| Key | Type | Default | Allowed | Unit | DataDesigner | Meaning |",
            "|---|---|---|---|---|---|---|",
        ]
        required = set(table.get("required", []))
        for key, prop in table.get("properties", {}).items():
            is_table = isinstance(prop.get("default"), dict)
            row = [
                f"`{prefix}{key}`",
                _type_name(schema, prop),
                _default(prop, key in required, is_table),
                _limits(prop),
                prop.get(UNIT_KEY, ""),
                prop.get(MIRRORS_KEY, ""),
                prop.get("description", ""),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


_MODEL_SECTION = re.compile(r'docs/model\.md,\s+((?:"[^"]+"(?:,\s+|\s+and\s+)?)+)')


def _link_model_sections(text: str) -> str:
    """``docs/model.md, "Stop rules"`` in a docstring becomes a link to that section of the page."""

    def link(match: re.Match[str]) -> str:
        titles = re.findall(r'"([^"]+)"', match.group(1))
        return "see " + ", ".join(f"[{t}](model.md#{_anchor(t)})" for t in titles)

    return _MODEL_SECTION.sub(link, text)


def _anchor(title: str) -> str:
    """GitHub's heading anchor for a heading that is one code span."""
    return "".join(ch for ch in title.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def undocumented_fields(json_schema: dict[str, Any] | None = None) -> list[str]:
    """Dotted keys whose field has no description: the reference would have a blank meaning."""
    schema = _Schema(scenario_json_schema() if json_schema is None else json_schema)
    return [
        f"{prefix}{key}"
        for prefix, table in schema.sections()
        for key, prop in table.get("properties", {}).items()
        if not prop.get("description", "").strip()
    ]


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a failed write never leaves half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``--check`` (exit 1 if the page is stale), ``--write`` (regenerate it) or ``--schema``."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.scenario_docs", description="Generate or check the scenario format reference."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 if the reference page is out of date")
    action.add_argument("--write", action="store_true", help="regenerate the reference page")
    action.add_argument("--schema", action="store_true", help="print the JSON Schema of a scenario file")
    parser.add_argument("--path", type=Path, default=REFERENCE_PATH, help="the page (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(scenario_json_schema(), indent=2))
        return 0
    expected = render_reference()
    if args.write:
        _write_atomically(args.path, expected)
        print(f"wrote {args.path}")
        return 0
    try:
        current = args.path.read_text(encoding="utf-8")
    except OSError as err:
        print(f"{args.path}: cannot read: {err.strerror or err}", file=sys.stderr)
        return 1
    if current != expected:
        print(
            f"{args.path}: out of date with sim/scenario.py; run: python -m sim.scenario_docs --write",
            file=sys.stderr,
        )
        return 1
    print(f"{args.path}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
