"""Run one real twin run in a fresh child process under a wall-clock limit.

A fresh process per run keeps runs independent (no event loop, thread pool or module state is
shared) and lets a run that does not finish in time be killed without a trace in the parent.
The child (:mod:`sim.twin.child`) sends back the plain record of :mod:`sim.twin.harness`; nothing
is written to disk here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

from ..errors import InputError, RunFailed

#: Seconds the scheduler state is sampled at (time series and event-loop lag), as in the
#: calibration runs described in docs/twin.md.
DEFAULT_SAMPLE_INTERVAL = 0.05
#: Wall-clock limit of one real run (child start-up and engine import included), in seconds.
DEFAULT_TIMEOUT = 600.0


class TwinTimeout(RunFailed):
    """A real run did not finish within its wall-clock limit; it was killed and is no result."""


class TwinRunFailed(RunFailed):
    """The real run raised, or its process died before reporting."""


def run_in_child(
    scenario_data: dict[str, Any],
    policy: str,
    seed: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
    adaptive: bool | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Run the harness in a fresh interpreter (``python -m sim.twin.child``); return its record or
    raise :class:`TwinTimeout` / :class:`TwinRunFailed`. The payload goes in as JSON on stdin and
    the record comes back as JSON on stdout, so no module of the caller is re-imported."""
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise InputError(f"--timeout: must be a positive number of seconds, got {timeout}")
    payload = {
        "scenario": scenario_data,
        "policy": policy,
        "seed": seed,
        "sample_interval": sample_interval,
        "adaptive": adaptive,
    }
    what = label or f"policy {policy}, seed {seed}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    with subprocess.Popen(
        [sys.executable, "-m", "sim.twin.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        try:
            out, err = proc.communicate(json.dumps(payload).encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TwinTimeout(
                f"real run ({what}) did not finish within {timeout:g} s of wall clock: timed out"
            ) from None
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
    if proc.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        reason = lines[-1][:400] if lines else f"exit code {proc.returncode}"
        raise TwinRunFailed(f"real run ({what}) failed: {reason}")
    try:
        return json.loads(out)
    except ValueError:
        raise TwinRunFailed(f"real run ({what}): the child process sent no readable record") from None
