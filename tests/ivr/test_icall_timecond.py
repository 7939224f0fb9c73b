"""A time-condition row in force: whatever its action, the IVR's part of the call ends
and no caller is left parked in silence (issue 13, item 2)."""

from __future__ import annotations

from datetime import date

import pytest

from ivr import timecond
from ivr.effects import Hangup
from ivr.timecond import TimeCondition
from tests.ivr.calls import Driver

WELCOME = ("playback", "new_sales/1000.wav")
TODAY = date(2026, 11, 25)  # the Driver's office-hours Wednesday
SAFE = ("transfer", "fifo_sales XML new_sales")


def call_under(action: str, args: str = "") -> Driver:
    row = TimeCondition("sales_icall", action, args, start_date=TODAY, end_date=TODAY, id=7)
    driver = Driver(conditions=(row,))
    driver.start()
    driver.complete("playback", "FILE PLAYED")
    return driver


def test_a_playback_row_plays_its_file_then_hangs_up_once_it_has_played():
    driver = call_under("playback", "new_sales/closed.wav")
    assert driver.executes() == [WELCOME, ("playback", "new_sales/closed.wav")]
    assert driver.hangups() == []  # not before the announcement has played
    assert driver.flow.state == "time_condition"
    driver.complete("playback", "FILE PLAYED")
    assert driver.hangups() == [Hangup("NORMAL_CLEARING")]
    assert driver.flow.state == "final_loop"


def test_a_playback_row_whose_file_never_completes_is_guarded_and_sends_the_caller_to_safety():
    driver = call_under("playback", "new_sales/closed.wav")
    guard = driver.timers()[-1]
    assert guard.name.startswith("command:")
    driver.fire(guard)
    assert driver.executes()[-1] == SAFE
    assert driver.flow.state == "final_loop"


def test_a_bridge_row_that_is_not_answered_sends_the_caller_to_the_safe_destination():
    driver = call_under("bridge", "user/801")
    assert driver.executes()[-1] == ("bridge", "user/801")
    assert ("set", "continue_on_fail=true") in driver.executes()  # else the switch hangs up
    driver.complete("bridge", originate_disposition="USER_NOT_REGISTERED")
    assert driver.executes()[-1] == SAFE
    assert ("TimeConditionBridgeFailed", "USER_NOT_REGISTERED") in driver.steps()
    assert driver.flow.state == "final_loop"


def test_a_bridge_row_that_is_answered_ends_with_the_callee_and_sends_nothing_more():
    driver = call_under("bridge", "user/801")
    sent = len(driver.executes())
    driver.complete("bridge", originate_disposition="SUCCESS")
    assert len(driver.executes()) == sent
    assert driver.hangups() == []
    assert driver.flow.state == "final_loop"


def test_a_respond_row_sends_its_code_then_hangs_up():
    driver = call_under("respond", "503")
    assert driver.executes()[-1] == ("respond", "503")
    driver.complete("respond")
    assert driver.hangups() == [Hangup("NORMAL_CLEARING")]
    assert driver.flow.state == "final_loop"


def test_a_hangup_row_hangs_up_with_its_cause():
    driver = call_under("hangup", "USER_BUSY")
    assert driver.hangups() == [Hangup("USER_BUSY")]
    assert driver.executes() == [WELCOME]
    assert driver.flow.state == "final_loop"


def test_a_transfer_row_without_a_context_gets_the_configured_one():
    driver = call_under("transfer", "closed")
    assert driver.executes()[-1] == ("transfer", "closed XML new_sales")
    assert driver.flow.state == "final_loop"


@pytest.mark.parametrize(("action", "args"), [
    ("exec", "rm -rf"),  # written by hand into the table, past `icall timecond add`
    ("respond", "5\u0660\u0663"),  # Unicode digits are not a SIP code
    ("playback", ""),
    ("hangup", "normal clearing"),
    ("transfer", "a b c d"),
])
def test_a_row_that_cannot_be_carried_out_sends_the_caller_to_the_safe_destination(action, args):
    driver = call_under(action, args)
    assert driver.executes() == [WELCOME, SAFE]
    step, why = driver.steps()[-1]
    assert step == "TimeConditionInvalid" and why.startswith("#7: ")
    assert driver.flow.state == "final_loop"


def test_every_allowed_action_is_described_with_what_follows_it():
    assert set(timecond.ACTIONS) == set(timecond.ALLOWED_ACTIONS)
    for action, text in timecond.ACTIONS.items():
        assert text.startswith(action + " ")
    assert "hangs up" in timecond.ACTIONS["playback"]
    assert "safe_destination" in timecond.ACTIONS["bridge"]
