"""Where the runs of a sweep execute: in this process, in local processes, or on a Dask cluster.

An executor takes :class:`~sim.sweep.RunSpec` objects and yields :class:`~sim.sweep.RunOutcome`
objects as runs finish (any order; the sweep sorts by run id). Runs are independent and
deterministic, so the executor never changes a number, only how long it takes.

``close()`` after an interrupted ``run()`` stops the workers instead of waiting for them: a run
that did not finish is simply run again on resume.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
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

    #: runs can write into the sweep folder themselves (same machine)
    writes_local_files = True

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


#: How often a run whose worker process died is started again before it is recorded as failed
#: (the Dask executor's rule: retry once). A run that *raises* is not retried: it is deterministic.
WORKER_DEATH_RETRIES = 1
#: How often a worker checks that its parent is still alive (the fallback where the kernel does
#: not kill it with its parent).
PARENT_WATCH_SECONDS = 0.5
#: ``prctl`` option that asks Linux to signal a process when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Tests switch this off to prove the parent watchdog works on its own.
_USE_PDEATHSIG = True


def _die_with_parent(parent_pid: int, use_pdeathsig: bool) -> None:
    """Make this worker exit when the process that started it dies, even by ``kill -9``.

    On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. It fires when the *thread*
    that forked the worker ends, so the parent asks for it only when it starts workers from its
    main thread. Everywhere, a daemon thread also polls ``getppid()``: an orphan is re-parented,
    so a changed parent pid means the parent is gone. A worker holds no files, so being killed
    loses nothing: the run is simply run again on resume.
    """
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog below still applies
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_WATCH_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)


def _failed(spec: RunSpec, error: str) -> RunOutcome:
    from .sweep import RunOutcome

    return RunOutcome(spec.run_id, "failed", " ".join(error.split()), {}, None, None, 0.0)


def _worker_main(conn: Connection, parent_pid: int, use_pdeathsig: bool, fn: Callable[[RunSpec], RunOutcome]) -> None:
    """A local worker: receive a spec, send back its outcome, until told to stop (``None``).

    Ctrl-C is left to the parent, which stops the workers (no traceback from every worker).
    ``SystemExit`` or ``KeyboardInterrupt`` raised by user code in a run (a plugin calling
    ``sys.exit``) fails that run instead of ending the worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid, use_pdeathsig)
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed its end
        if spec is None:
            return
        try:
            outcome = fn(spec)
        except BaseException as err:  # noqa: BLE001 - any failure of one run is that run's outcome
            outcome = _failed(spec, f"{type(err).__name__}: {err}")
        try:
            conn.send(outcome)
        except (BrokenPipeError, EOFError):
            return
        except Exception as err:  # noqa: BLE001 - e.g. an outcome that does not pickle
            conn.send(_failed(spec, f"the outcome could not be sent back: {type(err).__name__}: {err}"))


def _death(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (an out-of-memory kill looks like this)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    spec: RunSpec | None = None  # the run it is executing


class LocalExecutor:
    """Runs in ``jobs`` local worker processes, one run at a time each.

    Each worker is a process with its own pipe, so the executor always knows which run a worker
    holds: a worker that dies (``os._exit``, an out-of-memory kill) costs exactly that run, which
    is started again once (:data:`WORKER_DEATH_RETRIES`) in a fresh worker and then recorded as
    failed; every other run goes on, and each outcome is yielded (and journaled by the sweep) as
    soon as it arrives. (``concurrent.futures.ProcessPoolExecutor`` cannot do this: one dead
    worker breaks the whole pool and every pending run with it.) Workers die with this process
    (:func:`_die_with_parent`), so ``kill -9`` of a sweep leaves no workers running.

    Workers are forked where the platform does so (Linux), so policies registered in this process
    are known to them; plugins named in a spec are loaded in the worker either way. ``fn`` is the
    per-run function (default :func:`sim.sweep.execute_run`, looked up when :meth:`run` is called);
    it must be picklable where workers are spawned rather than forked.

    Workers share this machine's file system, so each writes its run's time series into the
    sweep folder itself (:attr:`writes_local_files`); only summaries cross the pipe.
    """

    writes_local_files = True

    def __init__(
        self,
        jobs: int | None = None,
        *,
        fn: Callable[[RunSpec], RunOutcome] | None = None,
        retries: int = WORKER_DEATH_RETRIES,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.jobs = max(1, int(jobs) if jobs else (os.cpu_count() or 1))
        self.fn = fn
        self.retries = retries
        self._workers: list[_Worker] = []
        self._context = multiprocessing.get_context()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring, and to prove they die with us)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None and w.process.is_alive()]

    def run(self, specs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Start the workers and their first runs now (before the caller's progress bar), then
        yield outcomes as runs finish, in any order."""
        from . import sweep

        fn = self.fn if self.fn is not None else sweep.execute_run
        queue = deque(specs)
        while len(self._workers) < min(self.jobs, len(queue)):
            self._workers.append(self._start(fn))
        self._assign(queue, fn)
        return self._collect(queue, fn)

    def _start(self, fn: Callable[[RunSpec], RunOutcome]) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        use_pdeathsig = _USE_PDEATHSIG and threading.current_thread() is threading.main_thread()
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, os.getpid(), use_pdeathsig, fn),
            name="admission-sim-worker",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def _assign(self, queue: deque[RunSpec], fn: Callable[[RunSpec], RunOutcome]) -> None:
        for i, worker in enumerate(self._workers):
            if not queue:
                return
            if worker.spec is not None:
                continue
            if not worker.process.is_alive():
                self._retire(worker)
                worker = self._workers[i] = self._start(fn)
            spec = queue.popleft()
            try:
                worker.conn.send(spec)
            except (BrokenPipeError, EOFError, OSError):
                queue.appendleft(spec)  # it died while idle: replace it and try again
                self._retire(worker)
                self._workers[i] = self._start(fn)
                continue
            worker.spec = spec

    def _collect(self, queue: deque[RunSpec], fn: Callable[[RunSpec], RunOutcome]) -> Iterator[RunOutcome]:
        attempts: dict[str, int] = {}
        while True:
            busy = [w for w in self._workers if w.spec is not None]
            if not busy:
                if not queue:
                    return
                self._assign(queue, fn)
                continue
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            finished: list[RunOutcome] = []
            for worker in busy:
                spec = worker.spec
                if worker.conn in ready or worker.process.sentinel in ready:
                    try:
                        outcome = worker.conn.recv() if worker.conn.poll() else None
                    except (EOFError, OSError):
                        outcome = None
                    if outcome is None and worker.process.sentinel not in ready and worker.process.is_alive():
                        continue  # woken by the other worker's event; nothing from this one yet
                    worker.spec = None
                    if outcome is not None:
                        finished.append(outcome)
                        continue
                    worker.process.join(timeout=5)
                    why = _death(worker.process.exitcode)
                    self._retire(worker)
                    n = attempts[spec.run_id] = attempts.get(spec.run_id, 0) + 1
                    if n <= self.retries:
                        queue.appendleft(spec)
                    else:
                        finished.append(_failed(spec, f"the worker process died in each of {n} attempts ({why})"))
            self._assign(queue, fn)  # keep the workers busy while the caller journals
            yield from finished

    @staticmethod
    def _retire(worker: _Worker) -> None:
        worker.spec = None
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)

    def close(self) -> None:
        """Stop the workers: at once if runs are still going (interrupted), else politely."""
        workers, self._workers = self._workers, []
        interrupted = any(w.spec is not None for w in workers)
        for worker in workers:
            if interrupted or not worker.process.is_alive():
                worker.process.terminate()
            else:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            with contextlib.suppress(OSError):
                worker.conn.close()

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
