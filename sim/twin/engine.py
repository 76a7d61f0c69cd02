"""Is the real engine installed, and is it the version the twin was written against?

The twin drives internal parts of the DataDesigner engine (the scheduler's constructor, private
state it samples, the request-admission controller), so it runs only against the exact version it
was tested with. This module only reads package metadata: it never imports the engine, so the core
package works without the ``twin`` extra.
"""

from __future__ import annotations

from importlib import metadata

from ..errors import InputError

#: The engine version the twin was written and tested against (docs/twin.md).
TESTED_VERSION = "0.9.7"
ENGINE_PACKAGES = ("data-designer-engine", "data-designer-config")
INSTALL_HINT = "pip install 'admission-sim[twin]'"


class TwinUnavailable(InputError):
    """The real engine is missing or is not the tested version: nothing can run."""


def installed_versions() -> dict[str, str | None]:
    """The installed version of each engine package (None when missing)."""
    found: dict[str, str | None] = {}
    for name in ENGINE_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def require_engine(versions: dict[str, str | None] | None = None) -> str:
    """Return the engine version, or raise :class:`TwinUnavailable` with a one-line reason."""
    versions = installed_versions() if versions is None else versions
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        raise TwinUnavailable(
            f"the real twin needs {', '.join(missing)} (the 'twin' extra): install it with {INSTALL_HINT}"
        )
    wrong = {name: version for name, version in versions.items() if version != TESTED_VERSION}
    if wrong:
        found = ", ".join(f"{name}=={version}" for name, version in wrong.items())
        raise TwinUnavailable(
            f"the real twin is tested with data-designer-engine=={TESTED_VERSION} only, found {found}; "
            f"install the tested version with {INSTALL_HINT}"
        )
    return TESTED_VERSION
