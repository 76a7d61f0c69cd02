"""A run tunes the garbage collector and gives every setting back (sim/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import sim
from sim.collector import RUN_GEN0_THRESHOLD, tuned_for_a_run


@pytest.fixture
def collector_state() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*threshold)
    gc.enable() if enabled else gc.disable()
    gc.unfreeze()


def test_during_a_run_the_heap_is_frozen_and_young_collections_are_rarer(collector_state: None) -> None:
    gc.set_threshold(700, 10, 10)
    with tuned_for_a_run():
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_settings_come_back_when_the_run_fails(collector_state: None) -> None:
    gc.set_threshold(500, 7, 9)
    with pytest.raises(RuntimeError), tuned_for_a_run():
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == (500, 7, 9) and gc.get_freeze_count() == 0


def test_a_callers_frozen_objects_and_disabled_collector_are_left_alone(collector_state: None) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with tuned_for_a_run():
        pass
    assert gc.get_freeze_count() == frozen  # not unfrozen behind the caller's back
    gc.unfreeze()
    gc.disable()
    with tuned_for_a_run():
        assert gc.get_freeze_count() == 0  # nothing to protect from a collector that does not run
    assert not gc.isenabled()


def test_simulate_restores_the_collector(collector_state: None) -> None:
    gc.set_threshold(700, 10, 10)
    sim.simulate(sim.load_scenario("cooling-2048"), policy="localized")
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
