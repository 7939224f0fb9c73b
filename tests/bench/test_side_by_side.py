"""The side-by-side harness, run small: the lean baseline controller under the callers
judges every scenario's path right. Keeps the harness (callers, judge, baseline) from
rotting silently; it measures nothing."""

from __future__ import annotations

import argparse

import pytest

from bench.report import print_table
from bench.scenarios import SCENARIOS
from bench.side_by_side import run_one


@pytest.mark.parametrize("controller", ["baseline", "baseline-out"])
def test_every_scenario_is_judged_right_against_the_lean_controller_of_each_mode(controller):
    args = argparse.Namespace(time_scale=0.05, talk_s=5.0, ring_s=3.0, drain_s=30.0,
                              set=[], keep=False)
    calls = 2 * len(SCENARIOS)

    result = run_one(controller, calls=calls, cps=20.0, duration_s=(calls - 0.5) / 20.0, args=args)

    assert result["not_right"] == []
    assert result["placed"] >= len(SCENARIOS) and result["right"] == result["placed"]
    assert set(result["by_scenario"]) == {s.name for s in SCENARIOS}
    assert result["reaction_ms"] and result["takeover_ms"]
    assert result["controller_alive"]


def _result(controller: str, round_number: int, cpu_ms: float) -> dict:
    return {"controller": controller, "round": round_number, "calls": 200, "cps": 20.0, "placed": 10,
            "skipped": 0, "right": 10, "wrong": 0, "unfinished": 0, "peak_live": 10,
            "reaction_ms": [1.0, 2.0], "takeover_ms": [1.0], "cpu_ms_per_call": cpu_ms,
            "cpu": {name: {"percent": 1.0} for name in ("controller", "switch", "callers")},
            "rss_idle_mb": 10.0, "rss_peak_mb": 11.0, "rss_kib_per_call": 50.0, "others_percent": 0.0,
            "not_right": [], "controller_alive": True, "dtmf_refused": 0, "refused": 0}


def test_rounds_print_each_ratio_of_neighbours_and_their_spread(capsys):
    args = argparse.Namespace(time_scale=1.0, talk_s=5.0, ring_s=3.0, duration=30.0)
    results = [_result("icall", 0, 6.0), _result("baseline", 0, 2.0),
               _result("icall", 1, 8.0), _result("baseline", 1, 2.0),
               _result("icall", 2, 5.0), _result("baseline", 2, 2.5)]

    print_table(results, args)

    out = capsys.readouterr().out
    assert "icall/baseline at 200/20 (round 1): CPU per call 3.0x, the switch's CPU 1.0x" in out
    assert "icall/baseline at 200/20 (round 2): CPU per call 4.0x" in out
    assert "icall/baseline at 200/20 (round 3): CPU per call 2.0x" in out
    assert "CPU per call over 3 rounds 2.0x-4.0x, median 3.0x" in out


def test_the_worker_kill_bench_counts_a_prompt_heard_twice_and_judges_the_end_where_the_keys_lead():
    from bench.scenarios import REAL_SWITCH_EXTENSIONS, lab_scenarios
    from bench.worker_kill import judge_call, longest_gap

    voicemail = next(s for s in lab_scenarios(REAL_SWITCH_EXTENSIONS) if s.name == "cc_menu_voicemail")
    menu = list(voicemail.path[1])
    resumed = {"path": [list(voicemail.path[0]), menu, menu, *map(list, voicemail.path[2:])],
               "max_wait_ms": 40.0}
    to_safety = {"path": [list(voicemail.path[0]), menu, ["transfer", "fifo_sales XML new_sales"]],
                 "max_wait_ms": 6000.0}

    assert judge_call(resumed, voicemail.path) == {"repeats": 1, "wrong_end": False, "waited_long": False}
    assert judge_call(to_safety, voicemail.path) == {"repeats": 0, "wrong_end": True, "waited_long": True}
    assert longest_gap([1.0, 2.0, 9.0], start=0.0, end=10.0) == 7.0
