"""Virtual-time WFQ with head-only eligibility (docs/model.md, "Fair queue"): sim/fair_queue.py."""

from __future__ import annotations

from collections import Counter

from sim.fair_queue import FairQueue


def always(_key: str, _item: object) -> bool:
    return True


def order(q: FairQueue) -> list[str]:
    """Active groups in service order."""
    return [key for key, _ in q.heads()]


def drain(q: FairQueue, n: int | None = None) -> list[str]:
    """Commit the first eligible head ``n`` times (or until empty); return the keys served."""
    served = []
    while q and (n is None or len(served) < n):
        key = q.select(always)
        assert key is not None
        q.commit(key)
        served.append(key)
    return served


def test_empty_queue_selects_nothing() -> None:
    q: FairQueue[str, int] = FairQueue()
    assert len(q) == 0 and not q
    assert q.select(always) is None
    assert q.virtual_time == 0.0


def test_fifo_within_a_group_and_commit_returns_the_head() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(3):
        q.push("a", i)
    assert [q.commit("a") for _ in range(3)] == [0, 1, 2]
    assert len(q) == 0


def test_queued_counts_per_group_and_total() -> None:
    q: FairQueue[str, int] = FairQueue()
    q.push("a", 1)
    q.push("a", 2)
    q.push("b", 3, weight=4)
    assert (q.queued("a"), q.queued("b"), q.queued("unknown"), len(q), bool(q)) == (2, 1, 0, 3, True)
    q.commit("a")
    assert (q.queued("a"), len(q)) == (1, 2)
    q.commit("b")
    assert (q.queued("b"), len(q)) == (0, 1)
    q.commit("a")
    assert (q.queued("a"), len(q), bool(q)) == (0, 0, False)


def test_ties_broken_by_activation_order() -> None:
    q: FairQueue[str, int] = FairQueue()
    for key in ("c", "a", "b"):  # all activated at V = 0
        q.push(key, 0)
    assert order(q) == ["c", "a", "b"]
    assert drain(q) == ["c", "a", "b"]


def test_commit_sets_finish_tag_from_virtual_time_and_weight() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(3):
        q.push("a", i, weight=4)
    drain(q, 3)
    # Starts s = 0, 0.25, 0.5 -> V = 0.5 after the third commit; F_a = 0.75.
    assert q.virtual_time == 0.5
    q.push("b", 0)  # new group: tag V = 0.5
    q.push("a", 3)  # known group: tag F_a = 0.75
    assert order(q) == ["b", "a"]
    assert q.commit("b") == 0  # start 0.5: V stays 0.5, F_b = 1.5
    assert q.virtual_time == 0.5
    assert q.commit("a") == 3  # start 0.75: V = 0.75
    assert q.virtual_time == 0.75


def test_first_activation_uses_current_virtual_time() -> None:
    q: FairQueue[str, int] = FairQueue()
    q.push("a", 0)
    q.push("a", 1)
    q.push("a", 2)
    drain(q, 2)  # V = 1, F_a = 2, a re-activated with tag 2
    assert q.virtual_time == 1.0
    q.push("new", 0)  # tag V = 1 < F_a = 2: served first although activated later
    assert order(q) == ["new", "a"]


def test_reactivation_after_idle_uses_old_finish_tag_not_virtual_time() -> None:
    q: FairQueue[str, int] = FairQueue()
    q.push("a", 0)
    drain(q)  # F_a = 1; a is now empty and inactive
    for i in range(3):
        q.push("b", i)
    drain(q)  # b starts at V = 0: V = 0, 1, 2; F_b = 3
    assert q.virtual_time == 2.0
    q.push("b", 3)  # tag F_b = 3
    q.push("a", 1)  # tag F_a = 1 (< V): ahead of b
    assert order(q) == ["a", "b"]
    q.commit("a")  # s = 1, V = max(2, 1) = 2, F_a = 3
    assert q.virtual_time == 2.0
    q.push("a", 2)  # tag 3, activated after b (tag 3): b wins the tie
    assert order(q) == ["b", "a"]


def test_reactivation_gets_a_new_sequence_number() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(2):
        q.push("a", i)
        q.push("b", i)
    # a re-activates at tag 1 before b does (b is committed second), so a stays ahead on ties.
    assert drain(q) == ["a", "b", "a", "b"]


def test_ineligible_head_does_not_block_other_groups() -> None:
    q: FairQueue[str, str] = FairQueue()
    q.push("a", "a0")
    q.push("b", "b0")
    assert q.select(lambda _k, item: item != "a0") == "b"
    assert q.commit("b") == "b0"
    assert q.select(lambda _k, item: item != "a0") is None
    assert order(q) == ["a"]


def test_only_heads_are_considered() -> None:
    q: FairQueue[str, str] = FairQueue()
    q.push("a", "a0")
    q.push("a", "a1")
    q.push("b", "b0")
    seen: list[str] = []

    def only_a1(_key: str, item: str) -> bool:
        seen.append(item)
        return item == "a1"

    assert q.select(only_a1) is None  # a1 sits behind an ineligible head
    assert seen == ["a0", "b0"]


def test_select_does_not_change_state() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(3):
        q.push("a", i, weight=2)
        q.push("b", i)
    drain(q, 2)
    before = (order(q), q.virtual_time, len(q), q.queued("a"), q.queued("b"))
    for _ in range(5):
        assert q.select(always) == "a"
        assert q.select(lambda key, _item: key == "b") == "b"
    assert (order(q), q.virtual_time, len(q), q.queued("a"), q.queued("b")) == before
    assert drain(q) == ["a", "b", "a", "b"]


def test_dispatch_shares_follow_weights_exactly_8_to_1() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(100):
        q.push("model", i, weight=8)
        q.push("local", i, weight=1)
    served = drain(q, 90)
    assert Counter(served) == {"model": 80, "local": 10}
    # Every window of 9 dispatches holds exactly one weight-1 dispatch.
    assert served[:9] == ["model", "local"] + ["model"] * 7
    assert all(Counter(served[i : i + 9])["local"] == 1 for i in range(0, 90, 9))


def test_dispatch_shares_three_groups() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(100):
        q.push("w4", i, weight=4)
        q.push("w2", i, weight=2)
        q.push("w1", i, weight=1)
    assert Counter(drain(q, 70)) == {"w4": 40, "w2": 20, "w1": 10}


def test_weight_below_one_counts_as_one() -> None:
    q: FairQueue[str, int] = FairQueue()
    for i in range(10):
        q.push("tiny", i, weight=0.25)
        q.push("one", i, weight=1)
    assert Counter(drain(q, 10)) == {"tiny": 5, "one": 5}
