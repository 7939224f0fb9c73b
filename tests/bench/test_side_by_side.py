"""The side-by-side harness, run small: the lean baseline controller under the callers
judges every scenario's path right. Keeps the harness (callers, judge, baseline) from
rotting silently; it measures nothing."""

from __future__ import annotations

import argparse

from bench.scenarios import SCENARIOS
from bench.side_by_side import run_one


def test_every_scenario_is_judged_right_against_the_baseline_controller():
    args = argparse.Namespace(time_scale=0.05, talk_s=5.0, ring_s=3.0, drain_s=30.0,
                              set=[], keep=False)
    calls = 2 * len(SCENARIOS)

    result = run_one("baseline", calls=calls, cps=20.0, duration_s=(calls - 0.5) / 20.0, args=args)

    assert result["not_right"] == []
    assert result["placed"] >= len(SCENARIOS) and result["right"] == result["placed"]
    assert set(result["by_scenario"]) == {s.name for s in SCENARIOS}
    assert result["reaction_ms"] and result["takeover_ms"]
    assert result["controller_alive"]
