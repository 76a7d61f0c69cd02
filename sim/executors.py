"""Where the runs of a sweep execute: in this process, in local processes, or on a Dask cluster.

An executor takes :class:`~sim.sweep.RunSpec` objects and yields :class:`~sim.sweep.RunOutcome`
objects as runs finish (any order; the sweep sorts by run id). Runs are independent and
deterministic, so the executor never changes a number, only how long it takes.

``close()`` after an interrupted ``run()`` stops the workers instead of waiting for them: a run
that did not finish is simply run again on resume.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol

from .errors import InputError

if TYPE_CHECKING:
    from .sweep import RunOutcome, RunSpec

EXECUTORS = ("serial", "local", "dask")


class ExecutorUnavailable(InputError):
    """The requested executor cannot be used here (unknown name, optional dependency missing)."""


class Executor(Protocol):
    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """One run after another in this process: simplest, and what tests and debuggers want."""

    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        for spec in specs:
            from .sweep import execute_run  # looked up per run, so tests can patch it

            yield execute_run(spec)

    def close(self) -> None:
        pass

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them; no traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """Runs in ``jobs`` local processes (``concurrent.futures.ProcessPoolExecutor``).

    Workers are forked where the platform does so (Linux), so policies registered in this process
    are known to them; plugins named in a spec are loaded in the worker either way.
    """

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(1, int(jobs) if jobs else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._pending: set[Future[RunOutcome]] = set()

    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        from .sweep import execute_run

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=min(self.jobs, max(1, len(specs))), initializer=_ignore_sigint)
        # Submit everything now (not lazily in the generator) so workers start before a progress bar.
        futures = {self._pool.submit(execute_run, spec) for spec in specs}
        self._pending |= futures
        return self._collect(futures)

    def _collect(self, futures: set[Future[RunOutcome]]) -> Iterator[RunOutcome]:
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in finished:
                self._pending.discard(future)
                yield future.result()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if any(not f.done() for f in self._pending):
            # Interrupted: cancel queued runs and stop the running ones now.
            for future in self._pending:
                future.cancel()
            processes = list(getattr(pool, "_processes", {}).values())
            for proc in processes:
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                proc.join(timeout=5)
        else:
            pool.shutdown(wait=True)
        self._pending.clear()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(name: str = "local", jobs: int | None = None, address: str | None = None) -> Executor:
    """``serial``, ``local`` (processes; ``jobs`` defaults to the CPU count) or ``dask``.

    ``dask`` imports :mod:`sim.dask_executor` only when asked for, so dask stays optional;
    ``address`` is the scheduler (``tcp://host:8786``), none starts a local cluster.
    """
    if jobs is not None and jobs < 1:
        raise ExecutorUnavailable(f"--jobs must be >= 1, got {jobs}")
    if name == "serial":
        return SerialExecutor()
    if name == "local":
        return LocalExecutor(jobs)
    if name == "dask":
        try:
            from .dask_executor import DaskExecutor
        except ImportError as err:
            # sim.dask_executor raises an ImportError that already says how to install the extra.
            hint = "" if "pip install" in str(err) else "; install it with: pip install -e '.[distributed]'"
            raise ExecutorUnavailable(f"the dask executor is not available: {err}{hint}") from None
        return DaskExecutor(address=address, jobs=jobs)
    raise ExecutorUnavailable(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")
