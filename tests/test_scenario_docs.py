"""The scenario reference and JSON Schema: generated from the models, complete, and never stale;
the walkthrough's example is a scenario that loads and runs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import sim
from sim.scenario import Scenario, load_scenario
from sim.scenario_docs import (
    REFERENCE_PATH,
    main,
    render_reference,
    scenario_json_schema,
    undocumented_fields,
)

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted((ROOT / "sim" / "scenarios").glob("*.toml"))
WALKTHROUGH = ROOT / "docs" / "writing-scenarios.md"


def test_reference_page_is_up_to_date() -> None:
    assert REFERENCE_PATH == ROOT / "docs" / "scenario-format.md"
    assert REFERENCE_PATH.read_text(encoding="utf-8") == render_reference(), (
        "docs/scenario-format.md is stale: run python -m sim.scenario_docs --write"
    )


def test_check_fails_on_a_stale_page_and_write_repairs_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "scenario-format.md"
    page.write_text(render_reference().replace("Hard cap on active row groups", "Old text"), encoding="utf-8")
    assert main(["--check", "--path", str(page)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--write", "--path", str(page)]) == 0
    assert main(["--check", "--path", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == render_reference()
    assert [p.name for p in tmp_path.iterdir()] == ["scenario-format.md"]  # no temporary file left


def test_check_of_a_missing_page_fails(tmp_path: Path) -> None:
    assert main(["--check", "--path", str(tmp_path / "missing.md")]) == 1


def _all_fields(model: type[Any] = Scenario, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        inner = _inner_model(field.annotation)
        if inner is not None:
            is_list = "tuple" in str(field.annotation)
            keys += _all_fields(inner, f"{prefix}{name}.<name>." if is_list else f"{prefix}{name}.")
    return keys


def _inner_model(annotation: Any) -> type[Any] | None:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def test_every_field_has_a_row_with_a_meaning() -> None:
    page = render_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines() if line.startswith("| `")}
    fields = _all_fields()
    assert len(fields) > 60
    assert sorted(rows) == sorted(fields)
    assert undocumented_fields() == []
    for key, row in rows.items():
        assert row.rstrip(" |").rsplit(" | ", 1)[-1].strip(), key  # the Meaning column is filled


def test_an_undocumented_field_is_reported() -> None:
    schema = scenario_json_schema()
    del schema["$defs"]["SchedulerConfig"]["properties"]["salvage_max_rounds"]["description"]
    assert undocumented_fields(schema) == ["scheduler.salvage_max_rounds"]


@pytest.mark.parametrize(
    ("key", "default", "limits", "unit", "mirrors"),
    [
        (
            "scheduler.max_concurrent_row_groups",
            "`3`",
            ">= 1, <= 1000000",
            "row groups",
            "RunConfig.max_concurrent_row_groups",
        ),
        ("scheduler.max_in_flight_tasks", "`1024`", ">= 1", "tasks", "`max_in_flight_tasks`"),
        ("scheduler.resalvage_backoff", "`0.05`", ">= 0.0001", "s", "RETRYABLE_RESALVAGE_BACKOFF_S"),
        ("row_groups.buffer_size", "unset", ">= 1", "rows", "RunConfig.buffer_size"),
        ("request_admission.decrease_factor", "`0.75`", "> 0.0, < 1.0", "factor", "multiplicative_decrease_factor"),
        ("models.<name>.max_parallel_requests", "`4`", ">= 1", "requests", "max_parallel_requests"),
        ("stop.max_time", "unset", "> 0.0", "s", ""),
        ("name", "**required**", "1-200 characters", "", ""),
    ],
)
def test_reference_rows_give_default_limits_unit_and_real_setting(
    key: str, default: str, limits: str, unit: str, mirrors: str
) -> None:
    row = next(line for line in render_reference().splitlines() if line.startswith(f"| `{key}` |"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[2] == default
    assert limits in cells[3]
    assert cells[4] == unit
    assert mirrors in cells[5]


def test_reference_links_point_at_model_md_sections() -> None:
    model_md = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9_\- ]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", model_md, flags=re.MULTILINE)
    }
    anchors = re.findall(r"\(model\.md#([^)]+)\)", render_reference())
    assert anchors
    assert set(anchors) <= headings


def test_schema_prints_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == scenario_json_schema()
    assert printed["$schema"].endswith("2020-12/schema")
    assert printed["additionalProperties"] is False


def test_schema_uses_only_standard_bound_keywords() -> None:
    text = json.dumps(scenario_json_schema())
    assert not re.search(r'"(ge|le|gt|lt)":', text)
    count = scenario_json_schema()["$defs"]["RowGroupConfig"]["properties"]["count"]["anyOf"][0]
    assert (count["minimum"], count["maximum"]) == (1, 1_000_000)


def test_schema_accepts_every_bundled_scenario_and_rejects_what_validation_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(scenario_json_schema())  # a valid schema in its dialect
    validator = jsonschema.Draft202012Validator(scenario_json_schema())
    for path in BUNDLED:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        assert list(validator.iter_errors(data)) == [], path.name
    data = tomllib.loads(BUNDLED[0].read_text(encoding="utf-8"))
    for key, value in [("polcy", "global"), ("max_concurrent_row_groups", 0), ("request_pressure_advisory", "yes")]:
        bad = json.loads(json.dumps(data))
        bad["scheduler"][key] = value
        assert list(validator.iter_errors(bad)), key
    bad = json.loads(json.dumps(data))
    bad["row_groups"]["count"] = 0  # an optional integer keeps its bounds
    assert list(validator.iter_errors(bad))


def _walkthrough_example() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", WALKTHROUGH.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, "the walkthrough has no toml example"
    return blocks[0]


def test_walkthrough_example_loads_and_shows_the_contrast_it_describes(tmp_path: Path) -> None:
    path = tmp_path / "my-first.toml"
    path.write_text(_walkthrough_example(), encoding="utf-8")
    scenario = load_scenario(path)
    assert scenario.row_groups.form == "random_sizes"
    by_policy = {p: sim.simulate(scenario, policy=p).summary for p in ("fixed", "global", "localized")}
    for summary in by_policy.values():
        assert summary["stop_reason"] == "completed"
        assert summary["completed_rows"] == 40
        assert 10.0 < summary["sim_time"] < 12.0  # "about 11 simulated seconds"
    limited = {p: s["healthy_calls_while_limited"] for p, s in by_policy.items()}
    assert limited == {"fixed": 38, "global": 3, "localized": 38}  # the numbers the text quotes


def test_module_command_checks_the_shipped_page() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sim.scenario_docs", "--check"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
