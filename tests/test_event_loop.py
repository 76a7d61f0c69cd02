"""The simulated event loop: FIFO order, CPU cost accounting, one turn per zero-delay await."""

from __future__ import annotations

import pytest
import simpy

from sim.event_loop import EventLoop, load_profile


def _loop() -> tuple[simpy.Environment, EventLoop, list[tuple[str, float]]]:
    env = simpy.Environment()
    return env, EventLoop(env), []


def test_callbacks_run_in_fifo_order_one_at_a_time() -> None:
    env, loop, log = _loop()
    for name in "abcd":
        loop.call_soon(0.001, lambda n=name: log.append((n, env.now)))
    env.run()
    assert [n for n, _ in log] == ["a", "b", "c", "d"]
    # one at a time: each starts when the previous one's CPU time ends
    assert [t for _, t in log] == pytest.approx([0.001, 0.002, 0.003, 0.004])


def test_a_callback_queued_by_a_running_callback_goes_behind_those_already_ready() -> None:
    env, loop, log = _loop()

    def first() -> None:
        log.append(("first", env.now))
        loop.call_soon(0.0, lambda: log.append(("child", env.now)))

    loop.call_soon(0.002, first)
    loop.call_soon(0.003, lambda: log.append(("second", env.now)))
    env.run()
    assert [n for n, _ in log] == ["first", "second", "child"]


def test_busy_time_is_the_sum_of_costs_and_effects_happen_at_start_plus_cost() -> None:
    env, loop, log = _loop()
    costs = [0.0005, 0.002, 0.0, 0.0013]
    # the loop is idle until t = 1: the first callback starts then, not at 0
    env.timeout(1.0).callbacks.append(
        lambda _ev: [loop.call_soon(c, lambda i=i: log.append((str(i), env.now))) for i, c in enumerate(costs)]
    )
    env.run()
    assert loop.busy_time == pytest.approx(sum(costs))
    ends = [1.0 + sum(costs[: i + 1]) for i in range(len(costs))]
    assert [t for _, t in log] == pytest.approx(ends)
    assert loop.callbacks_run == len(costs)


def test_a_coroutine_holds_the_cpu_until_it_releases_it() -> None:
    env, loop, log = _loop()

    def coroutine():  # noqa: ANN202 - a SimPy process
        yield loop.turn()
        log.append(("owner starts", env.now))
        loop.call_soon(0.001, lambda: log.append(("callback", env.now)))
        yield loop.hold(0.004)
        log.append(("owner ends", env.now))
        loop.release()

    env.process(coroutine())
    env.run()
    assert log == [("owner starts", 0.0), ("owner ends", pytest.approx(0.004)), ("callback", pytest.approx(0.005))]
    assert loop.busy_time == pytest.approx(0.005)


def test_a_zero_delay_await_yields_exactly_one_turn() -> None:
    """``await asyncio.sleep(0)``: everything queued before the yield runs first, nothing queued
    after it does, and a zero-latency answer sent just before the yield lands after it."""
    env, loop, log = _loop()

    def worker(name: str) -> None:
        log.append((name, env.now))
        # a zero-latency mock: the answer is a bare yield, so it joins the back of the queue
        loop.call_later(0.0, 0.001, lambda: log.append((name + " answered", env.now)))

    def main():  # noqa: ANN202 - a SimPy process
        yield loop.turn()
        loop.call_soon(0.001, worker, "w1")
        loop.call_soon(0.001, worker, "w2")
        yield loop.hold(0.002)
        yield loop.yield_turn()
        log.append(("main resumes", env.now))
        yield loop.hold(0.001)
        loop.release()

    env.process(main())
    env.run()
    assert [n for n, _ in log] == ["w1", "w2", "main resumes", "w1 answered", "w2 answered"]
    assert loop.turns == 2


def test_a_timer_expiring_during_a_batch_waits_for_the_callbacks_that_batch_queued() -> None:
    env, loop, log = _loop()

    def long_callback() -> None:
        log.append(("long", env.now))
        loop.call_soon(0.001, lambda: log.append(("queued by long", env.now)))

    loop.call_later(0.001, 0.001, lambda: log.append(("timer", env.now)))  # expires mid-callback
    loop.call_soon(0.005, long_callback)
    env.run()
    assert [n for n, _ in log] == ["long", "queued by long", "timer"]
    assert log[-1][1] == pytest.approx(0.007)


def test_a_timer_on_an_idle_loop_runs_when_it_expires() -> None:
    env, loop, log = _loop()
    loop.call_later(0.25, 0.001, lambda: log.append(("timer", env.now)))
    env.run()
    assert log == [("timer", pytest.approx(0.251))]
    assert not loop.running and loop.ready == 0


def test_charged_time_is_waited_out_before_the_next_step_runs() -> None:
    """``charge`` (a pass that dispatched nothing) costs CPU like ``hold``: the busy time counts it
    and nothing queued runs until it has passed, though no SimPy event marks it."""
    env, loop, log = _loop()

    def coroutine():  # noqa: ANN202 - a SimPy process
        yield loop.turn()
        loop.call_soon(0.001, lambda: log.append(("callback", env.now)))
        loop.charge(0.003)
        loop.release()

    env.process(coroutine())
    env.run()
    assert log == [("callback", pytest.approx(0.004))]
    assert loop.busy_time == pytest.approx(0.004)


def test_a_charge_is_added_to_the_next_hold() -> None:
    env, loop, log = _loop()

    def coroutine():  # noqa: ANN202 - a SimPy process
        yield loop.turn()
        loop.charge(0.002)
        yield loop.hold(0.001)
        log.append(("after hold", env.now))
        loop.release()

    env.process(coroutine())
    env.run()
    assert log == [("after hold", pytest.approx(0.003))]
    assert loop.busy_time == pytest.approx(0.003)


def test_an_extended_step_keeps_the_cpu_until_its_second_part_ends() -> None:
    """A worker whose acquire succeeds sends in the same step: nothing queued meanwhile runs
    between the two parts, and both costs count."""
    env, loop, log = _loop()

    def acquire() -> None:
        log.append(("acquired", env.now))
        loop.extend(0.002, lambda: log.append(("sent", env.now)))

    loop.call_soon(0.001, acquire)
    loop.call_soon(0.0005, lambda: log.append(("other", env.now)))
    env.run()
    assert [n for n, _ in log] == ["acquired", "sent", "other"]
    assert [t for _, t in log] == pytest.approx([0.001, 0.003, 0.0035])
    assert loop.busy_time == pytest.approx(0.0035)
    assert loop.callbacks_run == 2  # the extension is part of the same step


@pytest.mark.parametrize("seed", range(5))
def test_steps_never_overlap_and_the_busy_time_is_their_sum(seed: int) -> None:
    """Random callbacks and timers: one step at a time (each starts at or after the previous
    one's end), so the loop's busy time is exactly the sum of the costs that ran."""
    import random

    rng = random.Random(seed)
    env, loop, _log = _loop()
    spans: list[tuple[float, float]] = []

    def step(cost: float, depth: int) -> None:
        spans.append((env.now - cost, env.now))
        if depth < 3 and rng.random() < 0.5:
            c = rng.choice([0.0, 0.0003, 0.001])
            if rng.random() < 0.5:
                loop.call_soon(c, step, c, depth + 1)
            else:
                loop.call_later(rng.choice([0.0, 0.0005, 0.002]), c, step, c, depth + 1)

    for _ in range(40):
        cost = rng.choice([0.0, 0.0002, 0.0007, 0.0015])
        at = rng.choice([0.0, 0.001, 0.003, 0.01])
        env.timeout(at).callbacks.append(lambda _ev, c=cost: loop.call_soon(c, step, c, 0))
    env.run()
    # in the order they ran, each step starts when (or after) the previous one ended
    assert all(b[0] >= a[1] - 1e-12 for a, b in zip(spans, spans[1:], strict=False))
    assert loop.busy_time == pytest.approx(sum(end - start for start, end in spans))
    assert not loop.running and loop.ready == 0


def test_a_profile_without_direct_path_costs_uses_the_facade_path_ones(tmp_path) -> None:
    """Profiles written before the direct path had its own costs keep their behaviour."""
    from sim.event_loop import DIRECT_DEFAULTS

    shipped = load_profile("reference-2core").costs_us
    facade = {op: v for op, v in shipped.items() if op not in DIRECT_DEFAULTS}
    lines = "\n".join(f"{op} = {v}" for op, v in facade.items())
    path = tmp_path / "old.toml"
    path.write_text(f"[costs_us]\n{lines}\n")
    costs = load_profile(str(path)).costs()
    assert costs.direct_main_loop_pass == costs.main_loop_pass
    assert costs.direct_dispatch == costs.dispatch
    assert costs.direct_call_start == pytest.approx(costs.worker_start + costs.request_send)
    assert costs.direct_completion == costs.completion
    assert load_profile("reference-2core").costs().direct_call_start < costs.direct_call_start  # shipped: its own
