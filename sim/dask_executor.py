"""Run sweep runs as independent tasks on a ``dask.distributed`` cluster.

Each :class:`~sim.sweep.RunSpec` carries its fully resolved scenario, policy and seed, so a worker
needs nothing but this package (same version) to execute it: no shared files, no state between
runs. Outcomes stream back in completion order, which keeps the sweep's progress bar live; the
sweep writer sorts by ``run_id``, so the folder does not depend on which worker finished first.

Failures: :func:`sim.sweep.execute_run` turns a failing *simulation* into a failed outcome
itself, so a task only raises for infrastructure reasons (an unpicklable result, a broken
worker environment, a custom ``fn``). Such a task is retried ``retries`` times by the scheduler
and then recorded as a failed run. A task whose worker *dies* is rescheduled by the scheduler
until it has been on ``distributed.scheduler.allowed-failures`` + 1 dying workers, then fails
with ``KilledWorker`` and is recorded as failed. That setting belongs to the scheduler: the
LocalCluster started here uses ``retries``; an existing cluster keeps its own (Dask default 3,
see docs/cluster.md). Either way the other runs go on.

Dask is an optional extra; importing this module without it raises :class:`ImportError` with the
install command, which :func:`sim.executors.make_executor` turns into a clear CLI error.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    import dask
    import distributed
    from distributed.comm import get_address_host_port
except ImportError as exc:  # pragma: no cover - exercised by simulating the missing module
    raise ImportError(
        "the Dask executor needs the optional 'distributed' extra (dask[distributed]); "
        "install it with: pip install -e '.[distributed]'"
    ) from exc

from .executors import ExecutorUnavailable

if TYPE_CHECKING:
    from .sweep import RunOutcome, RunSpec

__all__ = ["DISTRIBUTION", "DaskExecutor", "SchedulerUnreachable", "WorkerVersionMismatch"]

#: How often a run whose finished result was lost with a dying worker is awaited again before it
#: is recorded as failed (Dask recomputes lost results while the client holds the future).
LOST_RESULT_REWAITS = 3

#: Name of this package's distribution, as workers report it (``pip install -e .``).
DISTRIBUTION = "admission-sim"
#: How long to try reaching a scheduler before giving up (Dask's default is 30 s).
CONNECT_TIMEOUT = "10s"


class WorkerVersionMismatch(ExecutorUnavailable):
    """A cluster worker runs a different admission-sim version (or none) than the client.

    Results from such a cluster would silently mix two models, so the executor refuses it.
    """


class SchedulerUnreachable(ExecutorUnavailable):
    """No Dask scheduler answered at the given address (CLI: a usage error, nothing was run)."""


def dask_setup(worker: Any) -> None:
    """Worker preload of the LocalCluster started here: leave Ctrl-C to the sweep process.

    A terminal's Ctrl-C reaches every process of the foreground group, LocalCluster workers
    included; the sweep process cancels the runs and closes the cluster, so workers need not (and
    would otherwise each print a traceback), as in the local executor.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _installed_version() -> str:
    """Version of admission-sim installed in *this* process; sent to workers by reference."""
    return metadata.version(DISTRIBUTION)


#: How long a LocalCluster nanny may take to restart a dead worker before the cluster gives the
#: worker up for good. Dask's default (15 s) is too short on a loaded machine: a sweep whose
#: workers were all given up would wait for ever. Read when a worker is removed, so it is set for
#: the process rather than only while the cluster starts.
WORKER_RESTART_TIMEOUT = "120s"


def _keep_restarting_workers() -> None:
    """Raise Dask's lost-worker timeout to :data:`WORKER_RESTART_TIMEOUT` unless the user set it."""
    if dask.config.get("distributed.deploy.lost-worker-timeout", "15s") == "15s":
        dask.config.set({"distributed.deploy.lost-worker-timeout": WORKER_RESTART_TIMEOUT})


class DaskExecutor:
    """Executor (see :mod:`sim.executors`) that runs each spec as one Dask task.

    ``address`` connects to an existing scheduler (``tcp://HOST:8786``); without it a
    :class:`distributed.LocalCluster` of ``n_workers`` processes is started here and shut down by
    :meth:`close` (``n_workers=None``: one per CPU, like the local executor). ``jobs`` is the sweep's
    ``--jobs`` as passed by :func:`sim.executors.make_executor`: when given, it is the LocalCluster's
    worker count; an existing cluster's size is set by its workers, so there it is ignored.
    ``fn`` is the per-run function; it must be picklable and defaults to
    :func:`sim.sweep.execute_run` (tests inject a failing one).
    """

    def __init__(
        self,
        address: str | None = None,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        processes: bool = True,
        retries: int = 1,
        fn: Callable[[RunSpec], RunOutcome] | None = None,
        check_versions: bool = True,
        jobs: int | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if fn is None:
            from .sweep import execute_run

            fn = execute_run
        self.fn = fn
        self.retries = retries
        self._cluster: distributed.LocalCluster | None = None
        if address is None:
            workers = jobs if jobs is not None else n_workers
            workers = workers if workers is not None else (os.cpu_count() or 1)
            if workers < 1:
                raise ValueError(f"n_workers must be >= 1, got {workers}")
            # Port 0 and no dashboard: a quick try must not collide with a running cluster or a
            # second sweep on the same machine. Our own scheduler also gets the "retry once" rule
            # for dying workers; saturation 1.0 keeps most queued runs on the scheduler, but with
            # fewer than twice as many runs as threads some do queue on a worker, and a worker's
            # death then counts against them too (at worst a good run uses up its retry).
            _keep_restarting_workers()
            with dask.config.set(
                {
                    "distributed.scheduler.allowed-failures": retries,
                    "distributed.scheduler.worker-saturation": 1.0,
                }
            ):
                self._cluster = distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads_per_worker,
                    processes=processes,
                    scheduler_port=0,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                    preload=[__name__] if processes else [],
                )
            address = self._cluster.scheduler_address
        try:
            try:
                # Validate first: a Client that fails on a malformed address hangs in __del__.
                get_address_host_port(address)
                self.client = distributed.Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as err:
                raise SchedulerUnreachable(
                    f"cannot connect to the Dask scheduler at {address}: {_describe(err)} "
                    "(expected tcp://HOST:PORT of a running `dask scheduler`)"
                ) from err
            if check_versions and self._cluster is None:
                self._check_worker_versions()
        except BaseException:
            self.close()
            raise
        self.address = address

    def _check_worker_versions(self) -> None:
        """Refuse a cluster whose workers run another admission-sim version (or lack it).

        Only workers connected now are checked; a worker that joins later and lacks the package
        makes its tasks fail, which shows up as failed runs with the import error.
        """
        expected = _installed_version()
        found = self.client.run(metadata.version, DISTRIBUTION, on_error="return")
        wrong = {
            worker: (f"{type(v).__name__}: {v}" if isinstance(v, BaseException) else v)
            for worker, v in found.items()
            if v != expected
        }
        if wrong:
            listing = ", ".join(f"{w} has {v}" for w, v in sorted(wrong.items()))
            raise WorkerVersionMismatch(
                f"every Dask worker needs admission-sim {expected} installed (pip install -e '.[distributed]'); "
                f"{listing}"
            )

    @property
    def n_workers(self) -> int:
        """Workers currently connected to the scheduler."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Submit every spec now, then yield outcomes as runs finish (any order).

        Submitting before the first ``next()`` lets the cluster start while the caller sets up its
        progress bar. If the caller stops iterating (Ctrl-C, an exception in the writer), the runs
        not yet collected are cancelled so the cluster does not keep computing an abandoned sweep.
        """
        # Readable keys for the dashboard, unique per call so a repeated sweep on a long-lived
        # cluster never picks up a result cached under the same run_id.
        token = uuid.uuid4().hex[:8]
        futures = {
            self.client.submit(
                self.fn, spec, key=f"admission-sim-{spec.run_id}-{token}", pure=False, retries=self.retries
            ): spec
            for spec in specs
        }
        return self._collect(futures)

    def _collect(self, futures: dict[distributed.Future, RunSpec]) -> Iterator[RunOutcome]:
        rewaits: dict[str, int] = {}
        try:
            if not futures:
                return
            pending = distributed.as_completed(list(futures), loop=self.client.loop)
            for future in pending:
                spec = futures[future]
                outcome = self._outcome(future, spec)
                if outcome is None:
                    # The result was lost with a dying worker after it finished; the client still
                    # holds the future, so Dask computes the key again: wait for it once more.
                    seen = rewaits.get(future.key, 0)
                    if seen < LOST_RESULT_REWAITS:
                        rewaits[future.key] = seen + 1
                        pending.add(future)
                        continue
                    outcome = self._failed(spec, f"Dask lost the result {seen + 1} times (workers died)")
                futures.pop(future)
                future.release()
                yield outcome
        finally:
            if futures:
                self.client.cancel(list(futures))
                futures.clear()

    def _outcome(self, future: distributed.Future, spec: RunSpec) -> RunOutcome | None:
        """The task's RunOutcome, a failed one built from the task's error, or None if the result
        was lost (its worker died after it finished) and Dask will compute it again."""
        if future.status == "finished":
            try:
                return future.result()
            except Exception:  # noqa: BLE001 - lost between completion and fetch (worker died)
                return None
        if future.status == "error":
            error = _describe(future.exception())
            if not isinstance(future.exception(), distributed.KilledWorker):
                error = f"{error} (failed {self.retries + 1} attempt(s) on the Dask cluster)"
            return self._failed(spec, error)
        if future.status == "cancelled":
            return self._failed(spec, "Dask task cancelled (scheduler connection lost or task cancelled)")
        return None  # "lost" or "pending" again: Dask is recomputing it

    @staticmethod
    def _failed(spec: RunSpec, error: str) -> RunOutcome:
        from .sweep import RunOutcome

        return RunOutcome(
            run_id=spec.run_id,
            status="failed",
            error=error,
            summary={},
            timeseries=None,
            model_timeseries=None,
            wall_seconds=0.0,
        )

    def close(self) -> None:
        """Disconnect; shut down the LocalCluster if this executor started it. Idempotent."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "LocalCluster" if self._cluster is not None else "cluster"
        return f"DaskExecutor({where} at {getattr(self, 'address', '?')}, retries={self.retries})"


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split())  # one line: it becomes a cell of runs.csv
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
