"""Which scenario does a name mean? The bundled scenarios and the one rule that resolves a name.

The rule, the same for the command line, thresholds files and :func:`sim.load_scenario`:

* text that ends in ``.toml`` or contains a path separator (``/``, or ``\\`` on Windows) is a file
  path (in a thresholds file, relative to that file's folder first);
* any other text is the name of a bundled scenario (``cooling-2048``), shipped inside the package
  (``sim/scenarios/``), so names work from any directory and from an installed wheel.

So a bare name never picks up whatever happens to exist in the working directory: a folder named
``cooling-2048`` (a results folder, say) cannot shadow the bundled scenario, and a directory is
never taken for a scenario file. An unknown name lists the bundled names with the closest match.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from .scenario import ScenarioError, read_scenario_file

#: Where the bundled scenario files live (package data).
BUNDLED_DIR = Path(__file__).resolve().parent / "scenarios"

#: The rule in one sentence, for ``--help`` texts and error messages.
NAME_RULE = "a path ending in .toml or containing '/' is a file; any other text names a bundled scenario"


class UnknownScenarioError(ScenarioError):
    """A bare name that is not a bundled scenario, or a path that is a directory. CLI exit 2."""


@dataclass(frozen=True)
class BundledScenario:
    """One bundled scenario: its name (the file stem), file and the first line of its description."""

    name: str
    path: Path
    description: str


def bundled_names() -> list[str]:
    """The names of the bundled scenarios, sorted."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.toml"))


def bundled_scenarios() -> list[BundledScenario]:
    """Every bundled scenario with its description (read from the file, not validated)."""
    found = []
    for name in bundled_names():
        path = BUNDLED_DIR / f"{name}.toml"
        description = read_scenario_file(path).get("description", "")
        found.append(BundledScenario(name, path, " ".join(str(description).split())))
    return found


def is_file_reference(text: str | Path) -> bool:
    """True if ``text`` is to be read as a file path rather than a bundled name."""
    if isinstance(text, Path):
        return True
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return text.endswith(".toml") or any(sep in text for sep in separators)


def did_you_mean(name: str, choices: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def resolve_scenario(text: str | Path, base_dir: str | Path | None = None) -> Path:
    """The scenario file ``text`` means under the rule above.

    A file path is returned as given (or under ``base_dir`` when it is relative and exists there);
    whether it exists is left to the loader, whose message names the file. Raises
    :class:`UnknownScenarioError` for an unknown bundled name or a path that is a directory.
    """
    if is_file_reference(text):
        path = Path(text)
        if base_dir is not None and not path.is_absolute() and (Path(base_dir) / path).exists():
            path = Path(base_dir) / path
        if path.is_dir():
            raise UnknownScenarioError(f"{path}: cannot read: it is a directory, not a scenario file")
        return path
    name = str(text)
    path = BUNDLED_DIR / f"{name}.toml"
    if name and path.is_file():
        return path
    names = bundled_names()
    raise UnknownScenarioError(
        f"{name}: no such scenario file or bundled scenario{did_you_mean(name, names)}; bundled: {', '.join(names)}"
        f" ({NAME_RULE})"
    )
