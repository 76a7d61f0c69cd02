"""The notebooks run top to bottom without error and print their headline numbers.

Each notebook asserts its own headline relationships (so the markdown's numbers stay true); here we
execute it with nbclient in ``notebooks/`` and check its printed ``HEADLINE`` lines. The committed
notebooks carry no outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 120


def execute(name: str) -> str:
    """Run the notebook in a fresh ``python3`` kernel; return all its stream output."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )


def headline(text: str, label: str) -> str:
    match = re.search(rf"^HEADLINE {re.escape(label)}: (.*)$", text, re.MULTILINE)
    assert match, f"no 'HEADLINE {label}' line in the notebook's output"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: clear outputs before committing"


def test_01_policy_comparison() -> None:
    out = execute("01_policy_comparison.ipynb")
    line = headline(out, "cooling-2048")
    assert "localized 300 healthy calls" in line and "global 3 in 60 s at target 1" in line
    assert "with 2048 row groups active" in line
    line = headline(out, "window-recovery")
    assert "first row fixed 96.0 s, global 62.5 s, localized 62.5 s" in line


def test_02_sweep_explorer() -> None:
    out = execute("02_sweep_explorer.ipynb")
    line = headline(out, "sweep")
    assert "no gain at caps [2, 4]" in line
    assert re.search(r"cap 16: ([5-9]|1\d)\.\d%", line), line  # localized 5-20% faster than global at cap 16
    assert "localized target at t=20 s:" in headline(out, "idle at cap 64")


def test_03_custom_policy() -> None:
    out = execute("03_custom_policy.ipynb")
    line = headline(out, "custom policy on cooling-2048")
    assert "healthy calls global 3, localized-budget 96 (at most 32 deferred), localized 300 (100 deferred)" in line
    assert "= localized" in headline(out, "custom policy on healthy-bottleneck")
