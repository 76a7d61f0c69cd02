"""Run sweep runs as independent tasks on a ``dask.distributed`` cluster.

Each :class:`~sim.sweep.RunSpec` carries its fully resolved scenario, policy and seed, so a worker
needs nothing but this package (same version) to execute it: no shared files, no state between
runs. Outcomes stream back in completion order, which keeps the sweep's progress bar live; the
sweep writer sorts by ``run_id``, so the folder does not depend on which worker finished first.

Failures: :func:`sim.sweep.execute_run` turns a failing *simulation* into a failed outcome
itself, so a task only raises for infrastructure reasons (an unpicklable result, a broken
worker environment, a custom ``fn``). Such a task is retried ``retries`` times by the scheduler
and then recorded as a failed run. A task whose worker *dies* is rescheduled by the scheduler
until it has killed ``distributed.scheduler.allowed-failures`` + 1 workers (Dask default 3),
then it fails with ``KilledWorker`` and is recorded as failed. Either way the other runs go on.

Dask is an optional extra; importing this module without it raises :class:`ImportError` with the
install command, which :func:`sim.executors.make_executor` turns into a clear CLI error.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    import dask  # noqa: F401  (imported to fail early when only half of the extra is present)
    import distributed
except ImportError as exc:  # pragma: no cover - exercised by simulating the missing module
    raise ImportError(
        "the Dask executor needs the optional 'distributed' extra (dask[distributed]); "
        "install it with: pip install -e '.[distributed]'"
    ) from exc

if TYPE_CHECKING:
    from .sweep import RunOutcome, RunSpec

__all__ = ["DISTRIBUTION", "DaskExecutor", "WorkerVersionMismatch"]

#: Name of this package's distribution, as workers report it (``pip install -e .``).
DISTRIBUTION = "admission-sim"


class WorkerVersionMismatch(RuntimeError):
    """A cluster worker runs a different admission-sim version (or none) than the client.

    Results from such a cluster would silently mix two models, so the executor refuses it.
    """


def _installed_version() -> str:
    """Version of admission-sim installed in *this* process; sent to workers by reference."""
    return metadata.version(DISTRIBUTION)


class DaskExecutor:
    """Executor (see :mod:`sim.executors`) that runs each spec as one Dask task.

    ``address`` connects to an existing scheduler (``tcp://HOST:8786``); without it a
    :class:`distributed.LocalCluster` of ``n_workers`` processes is started here and shut down by
    :meth:`close` (``n_workers=None`` means one per CPU). ``fn`` is the per-run function; it must
    be picklable and defaults to :func:`sim.sweep.execute_run` (tests inject a failing one).
    """

    def __init__(
        self,
        address: str | None = None,
        n_workers: int | None = 2,
        threads_per_worker: int = 1,
        processes: bool = True,
        retries: int = 1,
        fn: Callable[[RunSpec], RunOutcome] | None = None,
        check_versions: bool = True,
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
            workers = n_workers if n_workers is not None else (os.cpu_count() or 1)
            if workers < 1:
                raise ValueError(f"n_workers must be >= 1, got {workers}")
            # Port 0 and no dashboard: a quick try must not collide with a running cluster or a
            # second sweep on the same machine.
            self._cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                scheduler_port=0,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            address = self._cluster.scheduler_address
        try:
            self.client = distributed.Client(address, set_as_default=False)
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
        """Submit every spec, then yield outcomes as runs finish (any order).

        If the caller stops iterating (Ctrl-C, an exception in the writer), the remaining tasks are
        cancelled so the cluster does not keep computing an abandoned sweep.
        """
        specs = list(specs)
        if not specs:
            return
        # Readable keys for the dashboard, unique per call so a repeated sweep on a long-lived
        # cluster never picks up a result cached under the same run_id.
        token = uuid.uuid4().hex[:8]
        spec_of: dict[str, RunSpec] = {}
        futures = []
        for spec in specs:
            key = f"admission-sim-{spec.run_id}-{token}"
            spec_of[key] = spec
            futures.append(self.client.submit(self.fn, spec, key=key, pure=False, retries=self.retries))
        pending = {f.key for f in futures}
        try:
            for future in distributed.as_completed(futures, loop=self.client.loop):
                spec = spec_of[future.key]
                pending.discard(future.key)
                outcome = self._outcome(future, spec)
                future.release()
                yield outcome
        finally:
            leftover = [f for f in futures if f.key in pending]
            if leftover:
                self.client.cancel(leftover)

    def _outcome(self, future: distributed.Future, spec: RunSpec) -> RunOutcome:
        """The task's RunOutcome, or a failed one built from the task's error."""
        if future.status == "finished":
            try:
                return future.result()
            except Exception as exc:  # lost between completion and fetch (worker died)
                error = _describe(exc)
        elif future.status == "error":
            error = _describe(future.exception())
            if not isinstance(future.exception(), distributed.KilledWorker):
                error = f"{error} (failed {self.retries + 1} attempt(s) on the Dask cluster)"
        else:
            error = f"Dask task {future.status} (scheduler connection lost or task cancelled)"
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
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
