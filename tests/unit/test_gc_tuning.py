"""The collector settings a serving process takes once started."""

from __future__ import annotations

import gc

from presence_server.gc_tuning import GEN0_THRESHOLD, settle_after_start


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_after_start()
        assert gc.get_freeze_count() > 1000  # the modules, config, ... of this process
        assert gc.get_threshold() == (GEN0_THRESHOLD, thresholds[1], thresholds[2])
        # Frozen is alive and untouched, not lost: a new cycle is still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
