"""The service tunes the garbage collector once started: what exists then is frozen,
young collections run less often."""

from __future__ import annotations

import gc

from service.runner import GC_YOUNG_THRESHOLD, tune_garbage_collector


def test_once_started_the_long_lived_objects_are_frozen_and_young_collections_are_rarer():
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
