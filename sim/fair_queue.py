"""Virtual-time weighted fair queueing with head-only eligibility (docs/model.md, "Fair queue").

One FIFO per group; only each group's head is ever considered. Active groups are ordered by
``(tag, seq)``: ``tag`` is the group's finish tag ``F_g`` if it has dispatched before, else the
global virtual time ``V`` at activation; ``seq`` is a global activation counter that breaks ties.
Selection walks the active groups in that order and returns the first head that the caller's
predicate accepts, so an ineligible head never blocks the others. Committing pops the head and
advances ``V`` and ``F_g`` by ``1 / weight``.

The same structure, with every weight 1, is the request-admission waiter queue (round robin
across resources, FIFO within one; docs/model.md, "Request admission"), so it lives in its own module.
"""

from __future__ import annotations

from bisect import bisect
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class FairQueue(Generic[K, T]):
    """Head-only virtual-time WFQ over groups keyed by ``K`` holding items ``T``."""

    __slots__ = ("_fifo", "_weight", "_finish", "_entry", "_active", "_order", "_virtual_time", "_seq", "_size")

    def __init__(self) -> None:
        self._fifo: dict[K, deque[T]] = {}
        self._weight: dict[K, float] = {}
        self._finish: dict[K, float] = {}
        self._entry: dict[K, tuple[float, int, K]] = {}
        self._active: list[tuple[float, int, K]] = []
        #: the keys of ``_active``, position by position (what selection walks)
        self._order: list[K] = []
        self._virtual_time = 0.0
        self._seq = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    @property
    def virtual_time(self) -> float:
        return self._virtual_time

    def queued(self, key: K) -> int:
        fifo = self._fifo.get(key)
        return len(fifo) if fifo else 0

    def push(self, key: K, item: T, weight: float = 1.0) -> None:
        """Append ``item`` to its group's FIFO, activating the group if it was empty."""
        fifo = self._fifo.get(key)
        if fifo is None:
            fifo = self._fifo[key] = deque()
            self._weight[key] = max(1.0, float(weight))
        fifo.append(item)
        self._size += 1
        if key not in self._entry:
            self._activate(key, self._finish.get(key, self._virtual_time))

    def _activate(self, key: K, tag: float) -> None:
        self._seq += 1
        entry = (tag, self._seq, key)
        self._entry[key] = entry
        i = bisect(self._active, entry)
        self._active.insert(i, entry)
        self._order.insert(i, key)

    def heads(self) -> Iterator[tuple[K, T]]:
        """Active groups' heads in service order. Do not mutate the queue while iterating."""
        fifo = self._fifo
        for key in self._order:
            yield key, fifo[key][0]

    def items(self) -> Iterator[T]:
        """Every queued item, group by group (for end-of-run accounting; do not mutate meanwhile)."""
        for fifo in self._fifo.values():
            yield from fifo

    def active_keys(self) -> list[K]:
        """Active groups' keys in service order (a snapshot, safe to hold while mutating)."""
        return list(self._order)

    @property
    def order(self) -> list[K]:
        """Active groups' keys in service order, live: read it, never mutate it, and do not hold
        it across a push or commit (the selection hot path walks it without a copy)."""
        return self._order

    def select(self, eligible: Callable[[K, T], bool]) -> K | None:
        """The first group (in ``(tag, seq)`` order) whose head is eligible; no state change."""
        fifo = self._fifo
        for key in self._order:
            if eligible(key, fifo[key][0]):
                return key
        return None

    def commit(self, key: K) -> T:
        """Pop the head of ``key`` (after its lease was granted) and advance virtual time."""
        entry = self._entry.pop(key)
        i = self._active.index(entry)
        del self._active[i]
        del self._order[i]
        fifo = self._fifo[key]
        item = fifo.popleft()
        self._size -= 1
        start = self._finish.get(key, self._virtual_time)
        self._virtual_time = max(self._virtual_time, start)
        finish = self._virtual_time + 1.0 / self._weight[key]
        self._finish[key] = finish
        if fifo:
            self._activate(key, finish)
        return item
