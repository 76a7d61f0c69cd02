"""When does each piece of scheduler work run, and how much CPU does it take?

The real scheduler is one asyncio event loop on one thread. This module models that loop on top
of SimPy time: ready callbacks run one at a time, in FIFO order, and each holds the CPU for its
cost, so its effect happens when its CPU time ends. Two kinds of work share the one queue:

* **callbacks** (:meth:`EventLoop.call_soon`): a worker's step, a completion; ``fn`` runs at
  start + cost;
* **coroutine turns** (:meth:`EventLoop.turn`): a SimPy process (the main loop, the admission
  coroutine) waits for the CPU, then owns it, advances time with :meth:`EventLoop.hold` and gives
  it back with :meth:`EventLoop.release` or by asking for its next turn. Asking for a turn while
  owning the CPU is ``await asyncio.sleep(0)``: the coroutine goes to the back of the queue and
  every callback already queued runs first.

Timers (a provider's latency, see :meth:`EventLoop.call_later`) do not jump the queue: as in
asyncio, a timer that expires while callbacks are queued joins the queue at the start of the next
*batch* (the callbacks queued when the current batch began run first, then the ones they queued,
then expired timers). See ``docs/event-loop.md``.
"""

from __future__ import annotations

import tomllib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from heapq import heappush
from importlib import resources
from pathlib import Path
from typing import Any, Final

import simpy
from simpy.events import NORMAL, URGENT

from .errors import InputError

Callback = Callable[..., Any]


class ProfileError(InputError):
    """A loop cost profile cannot be read or is invalid (names the file, the key and the reason)."""


@dataclass(frozen=True, slots=True)
class LoopCosts:
    """CPU cost of each piece of scheduler work, in simulated seconds (profiles store microseconds).

    Each cost is one step of a coroutine between two awaits, as the real scheduler runs it.
    """

    #: one main-loop or drain iteration: wake handling, the dispatch-pass frame, the checkpoint scan
    main_loop_pass: float
    #: one task taken from the fair queue, leased and spawned as a worker
    dispatch: float
    #: a worker's first step for a model task (generator, facade and executor set-up)
    worker_start: float
    #: the request-admission acquire of a model call
    request_acquire: float
    #: sending the call to the client (the step ends at the client's await)
    request_send: float
    #: a model call's answer: lease release, AIMD update, outcome, completion tracker, wake
    completion: float
    #: a local (non-model) task: run the generator inline, outcome, tracker, wake
    local_task: float
    #: one row group admitted: its state, root tasks made ready, wake
    row_group_admission: float
    #: one adaptive target evaluation (the block-reason chain)
    target_evaluation: float
    #: one row group checkpointed
    checkpoint: float
    #: one salvage pass over the deferred list (split, bookkeeping)
    salvage_pass: float
    #: one deferred task put back into the ready queue by salvage
    salvage_task: float
    # The direct path (docs/event-loop.md, "The direct path"): with request admission off the
    # scheduler has no request-pressure provider, so its passes and dispatches skip the pressure
    # snapshots, and a model call runs its generator against the client without the facade, the
    # request executor and the controller. A profile without these keys uses the facade-path costs.
    #: ``main_loop_pass`` when the scheduler has no request-admission controller
    direct_main_loop_pass: float
    #: ``dispatch`` when the scheduler has no request-admission controller
    direct_dispatch: float
    #: a worker's first step for a model call without a controller: build the call and send it
    direct_call_start: float
    #: such a call's answer: outcome, completion tracker, wake (no lease, no AIMD, no parsing)
    direct_completion: float

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_microseconds(cls, costs_us: Mapping[str, float], scale: float = 1.0) -> LoopCosts:
        costs_us = with_direct_defaults(costs_us)
        return cls(**{name: float(costs_us[name]) * 1e-6 * scale for name in cls.names()})

    def microseconds(self) -> dict[str, float]:
        return {name: getattr(self, name) * 1e6 for name in self.names()}


#: each direct-path cost -> the facade-path costs it stands for when a profile does not set it
DIRECT_DEFAULTS: dict[str, tuple[str, ...]] = {
    "direct_main_loop_pass": ("main_loop_pass",),
    "direct_dispatch": ("dispatch",),
    "direct_call_start": ("worker_start", "request_send"),
    "direct_completion": ("completion",),
}


def with_direct_defaults(costs_us: Mapping[str, float]) -> dict[str, float]:
    """``costs_us`` with every missing direct-path cost set to its facade-path sum (profiles written
    before the direct path had its own costs keep their behaviour)."""
    out = dict(costs_us)
    for name, facade in DIRECT_DEFAULTS.items():
        if name not in out and all(f in out for f in facade):
            out[name] = sum(float(out[f]) for f in facade)
    return out


@dataclass(frozen=True)
class LoopProfile:
    """A measured set of costs and the machine they were measured on."""

    name: str
    costs_us: dict[str, float]
    measured_on: dict[str, str]
    description: str = ""

    def costs(self, scale: float = 1.0) -> LoopCosts:
        return LoopCosts.from_microseconds(self.costs_us, scale)


def profile_from_dict(data: Mapping[str, Any], source: str) -> LoopProfile:
    """Validate a parsed profile: every cost present, finite and >= 0, no unknown cost names."""
    costs = data.get("costs_us")
    if not isinstance(costs, Mapping):
        raise ProfileError(f"{source}: costs_us: missing table of costs in microseconds")
    names = LoopCosts.names()
    unknown = sorted(set(costs) - set(names))
    if unknown:
        raise ProfileError(f"{source}: costs_us.{unknown[0]}: unknown cost (known: {', '.join(names)})")
    values: dict[str, float] = {}
    for name in names:
        value = costs.get(name)
        if value is None and name in DIRECT_DEFAULTS:
            continue  # filled from the facade-path costs below
        if value is None:
            raise ProfileError(f"{source}: costs_us.{name}: missing")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1e7:
            raise ProfileError(f"{source}: costs_us.{name}: must be a number of microseconds in [0, 1e7]")
        values[name] = float(value)
    values = with_direct_defaults(values)
    measured = data.get("measured_on", {})
    if not isinstance(measured, Mapping):
        raise ProfileError(f"{source}: measured_on: must be a table")
    meta = data.get("profile", {})
    name = str(meta.get("name", Path(source).stem)) if isinstance(meta, Mapping) else Path(source).stem
    desc = str(meta.get("description", "")) if isinstance(meta, Mapping) else ""
    return LoopProfile(name, values, {str(k): str(v) for k, v in measured.items()}, desc)


def load_profile(name_or_path: str) -> LoopProfile:
    """A shipped profile by name (``sim/profiles/<name>.toml``) or a profile TOML by path."""
    is_path = name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path
    if is_path:
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProfileError(f"scheduler.loop.profile: {path}: no such profile file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ProfileError(f"scheduler.loop.profile: {path}: cannot read: {err}") from None
        source = str(path)
    else:
        resource = resources.files("sim") / "profiles" / f"{name_or_path}.toml"
        try:
            text = resource.read_text(encoding="utf-8")
        except (FileNotFoundError, OSError):
            raise ProfileError(f"scheduler.loop.profile: '{name_or_path}' is not a shipped profile") from None
        source = f"profile {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{source}: invalid TOML: {err}") from None
    return profile_from_dict(data, source)


#: Marks a queue entry as a coroutine turn (its payload is the SimPy event to trigger).
_TURN = None


#: SimPy's priorities (simpy.events.URGENT, NORMAL) as compile-time constants
_URGENT: Final = 0
_NORMAL: Final = 1
assert (_URGENT, _NORMAL) == (URGENT, NORMAL)

#: Event ids below this fit under a priority in one integer key (SimPy ids count events, ~10 per task).
_EID_SPAN: Final = 1 << 48


def _compiled() -> bool:
    """True when this module runs compiled (mypyc): its functions have no Python code object."""
    return not hasattr(_compiled, "__code__")


#: The own heap pays off only compiled: interpreted, ``Entry.__lt__`` is a Python call per compare.
COMPILED = _compiled()


class Entry:
    """A SimPy queue entry of the scheduler's own, with no :class:`simpy.Event` behind it: what
    SimPy's ``step`` and a process read (``callbacks``, ``_ok``, ``_value``) as native attributes.

    One class for every kind (a step, a signal, a first-of, a failure; see the functions below)
    so compiled code checks an entry's type exactly instead of walking a class hierarchy.
    A step carries its data in ``entry`` for its fixed callbacks; the loop's hot path schedules
    steps directly (same time, priority and event id a Timeout would get, so the order of events
    is unchanged) and skips a Timeout, its callback list and a closure per callback.
    """

    __slots__ = ("callbacks", "_ok", "_value", "entry", "triggered", "_tl", "_t", "_key")

    def __init__(self, callbacks: list[Callback] | None, entry: Any = None) -> None:
        self.callbacks = callbacks
        self._ok = True
        self._value: Any = None
        self.entry = entry
        #: a signal or first-of: already scheduled
        self.triggered = False
        self._tl: Timeline | None = None

    # Set by Timeline.push when the entry goes to the scheduler's own heap: the time and
    # (priority, event id) SimPy's queue would order it by.
    _t: float
    _key: int

    def __lt__(self, other: Entry) -> bool:
        if self._t != other._t:
            return self._t < other._t
        return self._key < other._key

    def succeed(self) -> None:
        """A signal: schedule it as ``Event.succeed()`` does (now, normal priority, next id)."""
        self.triggered = True
        tl: Timeline = self._tl
        tl.push(0.0, _NORMAL, self)

    def _check(self, _ev: Any) -> None:
        """A first-of: the first of its events was processed."""
        if not self.triggered:
            self.succeed()


class Timeline:
    """Where the scheduler's own entries are scheduled: SimPy's queue, as ``(time, priority, id,
    entry)`` tuples, or (``own``) a heap of the entries themselves, ordered by the same time,
    priority and event id from SimPy's counter, that the scheduler's step loop merges with SimPy's
    queue, so the order of events is the same either way (docs/performance.md)."""

    __slots__ = ("env", "queue", "eid", "own", "heap", "now")

    def __init__(self, env: simpy.Environment, own: bool = False) -> None:
        self.env = env
        self.queue: list[Any] = env._queue
        self.eid = env._eid
        self.own = own
        self.heap: list[Entry] = []
        #: ``env.now``, kept by the scheduler's step loop when ``own`` (read natively by push)
        self.now: float = env._now

    def push(self, delay: float, priority: int, entry: Entry) -> None:
        """Schedule ``entry`` at now + ``delay`` (what ``env.schedule`` does)."""
        if self.own:
            entry._t = self.now + delay
            key = next(self.eid)
            if priority:  # compiled code multiplies ids this large through Python ints: add instead
                key += _EID_SPAN if priority == _NORMAL else priority * _EID_SPAN
            entry._key = key
            heappush(self.heap, entry)
        else:
            heappush(self.queue, (self.env._now + delay, priority, next(self.eid), entry))


def timeout_step(tl: Timeline, delay: float) -> Entry:
    """What ``env.timeout(delay)`` schedules, for a process to yield, without the Timeout object:
    the same time, priority and event id, so the run is unchanged."""
    step = Entry([])
    tl.push(delay, _NORMAL, step)
    return step


def schedule_step(tl: Timeline, delay: float, callbacks: list[Callback], entry: Any) -> None:
    """``env.timeout(delay).callbacks.append(...)`` for fixed ``callbacks`` that read their data
    from ``step.entry``: no Timeout, callback list or closure per call, same event order."""
    tl.push(delay, _NORMAL, Entry(callbacks, entry))


def new_signal(tl: Timeline) -> Entry:
    """``env.event()`` that is only ever succeeded with no value (:meth:`Entry.succeed`);
    ``triggered`` is a plain attribute."""
    sig = Entry([])
    sig._tl = tl
    return sig


def first_of(tl: Timeline, a: Any, b: Any) -> Entry:
    """``a | b`` (SimPy's any-of Condition) for two events that cannot fail: it is scheduled
    (now, normal, next event id) when the first of them is processed, as the Condition is."""
    first = Entry([])
    first._tl = tl
    check = first._check
    for ev in (a, b):
        if ev.callbacks is None:
            check(ev)
        else:
            ev.callbacks.append(check)
    return first


def _failed(err: BaseException) -> Entry:
    """A coroutine that raised: the step loop re-raises ``_value`` when it processes this entry."""
    failed = Entry([])
    failed._ok = False
    failed._value = err
    return failed


class Coroutine:
    """Drives a generator of SimPy events as :class:`simpy.Process` does, without its pure-Python
    resume: the same Initialize entry (urgent, now, one event id), the same callback appended to
    each yielded event, the event's value sent in, an already processed event resumed at once,
    and the same end entry, so the order of events is unchanged (docs/performance.md). Nothing
    waits on it, so it is not an event itself; a failure is scheduled as a failed event, which
    the step loop raises as SimPy's would."""

    __slots__ = ("_tl", "_gen", "_cb")

    def __init__(self, tl: Timeline, gen: Any) -> None:
        self._tl = tl
        self._gen = gen
        # one bound method for every resume (SimPy's Process builds a new one per yield)
        self._cb: Callback = self._resume
        tl.push(0.0, _URGENT, Entry([self._cb]))

    def _resume(self, event: Any) -> None:
        gen = self._gen
        while True:
            try:
                if event._ok:
                    event = gen.send(event._value)
                else:
                    event._defused = True
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    event = gen.throw(exc)
            except StopIteration:
                # SimPy schedules the ended process (nothing waits on it here)
                self._tl.push(0.0, _NORMAL, Entry([]))
                return
            except BaseException as err:
                self._tl.push(0.0, _NORMAL, _failed(err))
                return
            callbacks = event.callbacks
            if callbacks is not None:
                callbacks.append(self._cb)
                return


class EventLoop:
    """One simulated single-threaded event loop: a FIFO ready queue and a CPU clock."""

    __slots__ = (
        "env",
        "_ready",
        "_append",
        "_due",
        "_running",
        "_owned",
        "_extension",
        "_debt",
        "_batch_left",
        "busy_time",
        "callbacks_run",
        "turns",
        "_tl",
        "_cpu",
        "_cpu_callbacks",
        "_timer_callbacks",
        "_fn",
        "_args",
    )

    def __init__(self, env: simpy.Environment, timeline: Timeline | None = None) -> None:
        self.env = env
        self._ready: deque[tuple[float | None, Any, tuple[Any, ...]]] = deque()
        #: ``_ready.append``, bound once (compiled code looks a deque's methods up on every call)
        self._append: Callable[[tuple[float | None, Any, tuple[Any, ...]]], None] = self._ready.append
        self._due: list[tuple[float, Callback, tuple[Any, ...]]] = []
        self._running = False
        #: True while a coroutine turn (not a callback) holds the CPU
        self._owned = False
        self._extension: tuple[float, Callback, tuple[Any, ...]] | None = None
        #: CPU time the owning coroutine has used but not yet waited out (see :meth:`charge`)
        self._debt = 0.0
        self._batch_left = 0
        #: simulated seconds of CPU spent (sum of every cost and hold)
        self.busy_time = 0.0
        #: callbacks and coroutine turns run so far
        self.callbacks_run = 0
        self.turns = 0
        # where the loop's entries are scheduled (SimPy's queue unless the scheduler owns a heap)
        self._tl: Timeline = timeline if timeline is not None else Timeline(env)
        # At most one callback holds the CPU at a time, so one reusable queue entry serves them all.
        self._cpu_callbacks = [self._cpu_done]
        self._cpu = Entry(None)
        self._timer_callbacks = [self._timer_done]
        self._fn: Callback | None = None
        self._args: tuple[Any, ...] = ()

    # -- queueing --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a callback or a coroutine turn holds the CPU."""
        return self._running

    @property
    def ready(self) -> int:
        """Entries waiting for the CPU (timers that expired but have not joined the queue count)."""
        return len(self._ready) + len(self._due)

    def call_soon(self, cost: float, fn: Callback, *args: Any) -> None:
        """Queue ``fn(*args)`` behind everything already ready; it runs after ``cost`` of CPU."""
        self._append((cost, fn, args))
        if not self._running:
            self._run_next()

    def call_later(self, delay: float, cost: float, fn: Callback, *args: Any) -> None:
        """After ``delay`` simulated seconds, queue ``fn`` as an expired timer (``asyncio.sleep``).

        A zero delay is a bare yield: ``fn`` joins the back of the ready queue now, as
        ``asyncio.sleep(0)`` does, rather than waiting for the next batch.
        """
        if delay <= 0.0:
            self.call_soon(cost, fn, *args)
            return
        timer = Entry(self._timer_callbacks, (cost, fn, args))
        self._tl.push(delay, _NORMAL, timer)

    def turn(self) -> Entry:
        """An event that fires when the calling coroutine (which does not own the CPU) gets it:
        a woken coroutine's continuation joins the back of the ready queue."""
        ev = Entry([])
        self._append((_TURN, ev, ()))
        if not self._running:
            self._run_next()
        return ev

    def yield_turn(self) -> Entry:
        """``await asyncio.sleep(0)`` by the coroutine that owns the CPU: it goes to the back of the
        ready queue and gets the CPU again after everything queued before it has run."""
        ev = Entry([])
        self._append((_TURN, ev, ()))
        self.release()
        return ev

    def hold(self, cost: float) -> Entry:
        """The owning coroutine keeps the CPU for ``cost`` seconds (yield the returned timeout),
        plus any time it :meth:`charge`-d since its last hold."""
        self.busy_time += cost
        total = cost + self._debt
        self._debt = 0.0
        step = Entry([])
        self._tl.push(total, _NORMAL, step)
        return step

    def charge(self, cost: float) -> None:
        """The owning coroutine used ``cost`` of CPU whose effect nobody can observe before its
        next hold or release (a dispatch pass that dispatched nothing): it is waited out then,
        saving a SimPy event."""
        self.busy_time += cost
        self._debt += cost

    def extend(self, cost: float, fn: Callback, *args: Any) -> None:
        """From inside a running callback: keep the CPU ``cost`` longer, then run ``fn`` (the same
        coroutine step goes on, e.g. a worker whose acquire succeeded goes straight to its send)."""
        self._extension = (cost, fn, args)

    def release(self) -> None:
        """The owning coroutine suspends on something that is not a loop turn: free the CPU."""
        if self._owned:
            self._owned = False
            debt = self._debt
            if debt > 0.0:  # the CPU stays busy until the charged time has passed
                self._debt = 0.0
                self._tl.push(debt, _NORMAL, Entry([self._after_debt]))
                return
            self._running = False
            self._run_next()

    def _after_debt(self, _ev: simpy.Event) -> None:
        self._running = False
        self._run_next()

    # -- running ---------------------------------------------------------------------------------

    def _timer_done(self, timer: Entry) -> None:
        self._due.append(timer.entry)
        if not self._running:
            self._run_next()

    def _run_next(self) -> None:
        ready = self._ready
        if self._batch_left <= 0:
            # A new asyncio batch: expired timers join behind what is already ready.
            if self._due:
                ready.extend(self._due)
                self._due.clear()
            self._batch_left = len(ready)
        if not ready:
            self._running = False
            return
        self._running = True
        self._batch_left -= 1
        cost, fn, args = ready.popleft()
        if cost is _TURN:
            self.turns += 1
            self._owned = True
            # what Event.succeed() does for the turn's entry: due now, after what is already due
            self._tl.push(0.0, _NORMAL, fn)
            return
        self.callbacks_run += 1
        # _occupy, inlined: this is the path of every callback
        self.busy_time += cost
        self._fn = fn
        self._args = args
        cpu = self._cpu
        cpu.callbacks = self._cpu_callbacks
        self._tl.push(cost, _NORMAL, cpu)

    def _occupy(self, cost: float, fn: Callback, args: tuple[Any, ...]) -> None:
        """The running callback holds the CPU for ``cost``, then ``fn(*args)`` runs (as a Timeout
        of ``cost`` would, scheduled through the one reusable entry)."""
        self.busy_time += cost
        self._fn = fn
        self._args = args
        cpu = self._cpu
        cpu.callbacks = self._cpu_callbacks
        self._tl.push(cost, _NORMAL, cpu)

    def _cpu_done(self, _ev: Entry) -> None:
        self._fn(*self._args)
        extension = self._extension
        if extension is not None:
            self._extension = None
            self._occupy(*extension)
            return
        self._run_next()
