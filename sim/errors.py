"""The two kinds of failure the command line tells apart, so every module can say which it raises.

``InputError``: the input is bad and nothing was run (exit code 2). ``RunFailed``: something ran
and then failed, or its record could not be completed (exit code 1). Each module's own errors
subclass one of them; the CLI maps the base class to the exit code and prints the message as one
line.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a file, an option, a key): reported before anything runs. CLI exit 2."""


class RunFailed(RuntimeError):
    """A run, a check or the record of a run failed after work had started. CLI exit 1."""
