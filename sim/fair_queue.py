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


class _Group(Generic[T]):
    """One group: its FIFO, weight and finish tag ``F_g`` (one lookup on the hot path)."""

    __slots__ = ("fifo", "weight", "finish", "served")

    def __init__(self, weight: float) -> None:
        self.fifo: deque[T] = deque()
        self.weight: float = weight
        self.finish: float = 0.0
        self.served: bool = False  # whether ``finish`` is set (the group has dispatched before)


class FairQueue(Generic[K, T]):
    """Head-only virtual-time WFQ over groups keyed by ``K`` holding items ``T``.

    A group is active exactly while its FIFO is not empty. The active groups are kept in two
    parallel lists sorted by ``(tag, seq)``; a group activates with a ``seq`` above every other,
    so its place is simply after every active tag not above its own (``bisect_right`` on tags).
    """

    __slots__ = ("_groups", "_fifo", "_order", "_tags", "_virtual_time", "_size")

    def __init__(self) -> None:
        self._groups: dict[K, _Group[T]] = {}
        #: each group's FIFO by key (the same deques as in ``_groups``)
        self._fifo: dict[K, deque[T]] = {}
        #: the active groups' keys in service order (what selection walks) and their tags
        self._order: list[K] = []
        self._tags: list[float] = []
        self._virtual_time: float = 0.0
        self._size: int = 0

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
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(max(1.0, float(weight)))
            self._fifo[key] = group.fifo
        fifo = group.fifo
        fifo.append(item)
        self._size += 1
        if len(fifo) == 1:  # it was empty: activate
            self._activate(key, group.finish if group.served else self._virtual_time, 0)

    def _activate(self, key: K, tag: float, lo: int) -> None:
        i = bisect(self._tags, tag, lo)
        self._tags.insert(i, tag)
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
        order, tags = self._order, self._tags
        i = order.index(key)  # raises ValueError if ``key`` has nothing queued
        group = self._groups[key]
        fifo = group.fifo
        item = fifo.popleft()
        self._size -= 1
        start = group.finish if group.served else self._virtual_time
        self._virtual_time = max(self._virtual_time, start)
        finish = self._virtual_time + 1.0 / group.weight
        group.finish = finish
        group.served = True
        if fifo:
            # Still active: move it from i to its new place, which is never before i (the new tag
            # is above the old one), shifting the groups in between forward by one.
            j = bisect(tags, finish, i + 1) - 1
            for k in range(i, j):
                order[k] = order[k + 1]
                tags[k] = tags[k + 1]
            order[j] = key
            tags[j] = finish
        else:
            del order[i]
            del tags[i]
        return item
