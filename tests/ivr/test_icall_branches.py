"""The icall flow driven without threads through every branch of DESIGN.md's table:
the exact commands, the records and the final state."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from ivr.effects import Checkpoint, CrmAnswer, Execute, Hangup, LookupCaller, Record
from ivr.timecond import TimeCondition
from tests.ivr.calls import ZONE, Driver

WELCOME = ("playback", "new_sales/1000.wav")
MAIN_MENU = ("play_and_get_digits",
             "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
EXTENSION_ENTRY = ("play_and_get_digits",
                   r"3 3 3 5000 # new_sales/2002.wav new_sales/9004.wav extn_number [68]\d\d")
BRIDGE_SETTINGS = [("set", "ringback=${us-ring}"), ("set", "call_timeout=30"),
                   ("set", "continue_on_fail=true"),
                   ("set", "hangup_after_bridge=true")]


def test_welcome_records_the_call_asks_the_crm_and_plays_the_welcome():
    driver = Driver()
    effects = driver.start()
    assert isinstance(effects[0], Record) and effects[0].kind == "call"
    assert effects[0].fields == {"uuid": driver.flow.uuid, "caller_id": "5551000",
                                 "caller_name": "fs-lab", "destination": "fsm",
                                 "started_at": 1795670434.808353, "flow": "icall"}
    assert effects[1] == LookupCaller("5551000")
    # The checkpoint rides just before the welcome, naming it as what the state waits on.
    assert isinstance(effects[2], Checkpoint)
    assert isinstance(effects[3], Execute) and (effects[3].app, effects[3].arg) == WELCOME
    assert json.loads(effects[2].text)["w"] == [[effects[3].event_uuid, *WELCOME, "welcome"]]
    assert driver.flow.state == "welcome_wait_playback"


def test_menu_1_sends_the_caller_to_the_evening_queue():
    driver = Driver()
    driver.choose("1")
    assert driver.executes() == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]
    assert driver.steps() == [("Workday", "09:00-20:30"), ("MainMenu", ""), ("MainMenu", "1")]
    assert driver.flow.state == "final_loop"
    assert driver.flow.path == ["welcome", "welcome_wait_playback", "main_menu",
                                "main_menu_wait_dtmf", "call_hst", "final_loop"]


@pytest.mark.parametrize("digit", ["2", "3", "4"])
def test_sales_without_a_crm_extension_goes_to_the_sales_queue(digit):
    driver = Driver()
    driver.start()
    driver.info(CrmAnswer(driver.flow.uuid, None, "not found"))
    driver.complete("playback", "FILE PLAYED")
    driver.complete("play_and_get_digits", menu_number=digit, read_result="success")
    assert driver.executes() == [WELCOME, MAIN_MENU, ("transfer", "fifo_sales XML new_sales")]
    assert driver.steps()[-1] == ("SalesFifo", "")
    assert driver.flow.state == "final_loop"


def test_sales_with_a_crm_extension_waits_for_the_transferring_prompt_then_bridges_in_order():
    driver = Driver()
    driver.start()
    driver.info(CrmAnswer(driver.flow.uuid, "801"))
    driver.complete("playback", "FILE PLAYED")
    driver.complete("play_and_get_digits", menu_number="2", read_result="success")
    assert driver.executes()[-1] == ("playback", "new_sales/1002.wav")
    assert driver.flow.state == "call_sales"  # nothing more until the prompt has played
    driver.complete("playback", "FILE PLAYED")
    assert driver.executes()[3:] == BRIDGE_SETTINGS + [("bridge", "user/801")]
    bridge_and_sets = [e for e in driver.effects if isinstance(e, Execute)][3:]
    assert all(e.lock for e in bridge_and_sets)
    assert driver.steps()[-1] == ("CallCC", "801")
    assert driver.flow.state == "call_cc"


@pytest.mark.parametrize(("answer", "destination"), [
    ("1", "Playcell_801 XML new_sales"),
    ("2", "VM_801 XML new_sales"),
    (None, "Quit XML new_sales"),
])
def test_a_failed_bridge_offers_the_cc_menu_and_each_answer_has_its_destination(answer, destination):
    driver = Driver()
    driver.start()
    driver.info(CrmAnswer(driver.flow.uuid, "801"))
    driver.complete("playback", "FILE PLAYED")
    driver.complete("play_and_get_digits", menu_number="3", read_result="success")
    driver.complete("playback", "FILE PLAYED")
    driver.complete("bridge", originate_disposition="USER_NOT_REGISTERED")
    assert driver.steps()[-1] == ("CCFailure", "USER_NOT_REGISTERED")
    assert driver.executes()[-1] == (
        "play_and_get_digits",
        "1 1 2 5000 # new_sales/8801.wav new_sales/9004.wav cc_menu_number [12]")
    if answer is None:
        driver.complete("play_and_get_digits", read_result="failure")
    else:
        driver.complete("play_and_get_digits", cc_menu_number=answer, read_result="success")
    assert driver.executes()[-1] == ("transfer", destination)
    assert driver.flow.state == "final_loop"


def test_an_answered_bridge_gets_no_cc_menu_and_ends_with_the_callee():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="802", read_result="success")
    driver.complete("bridge", originate_disposition="SUCCESS")
    assert driver.executes()[-1] == ("bridge", "user/802")
    assert "CCFailure" not in [step for step, _ in driver.steps()]
    assert driver.flow.state == "final_loop"


def test_menu_5_dials_the_extension_the_caller_typed():
    driver = Driver()
    driver.choose("5")
    assert driver.executes()[-1] == EXTENSION_ENTRY
    driver.complete("play_and_get_digits", extn_number="802", read_result="success")
    assert driver.executes()[3:] == BRIDGE_SETTINGS + [("bridge", "user/802")]
    assert driver.steps()[-1] == ("CallExtn", "802")
    assert driver.flow.state == "call_cc"


@pytest.mark.parametrize("variables", [
    {"read_result": "failure"},  # no input, tries exhausted
    {"read_result": "success"},  # a lone '#': success but no variable (captures)
    {"read_result": "success", "extn_number": "80"},  # not wholly an extension
    {"read_result": "success", "extn_number": "8\u0660\u0661"},  # Unicode digits: \\d matches them
])
def test_an_extension_entry_without_valid_digits_plays_the_invalid_prompt_then_hangs_up(variables):
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", **variables)
    assert driver.executes()[-1] == ("playback", "new_sales/9003.wav")
    assert driver.hangups() == []  # not before the prompt has played
    assert "bridge" not in [app for app, _ in driver.executes()]
    driver.complete("playback", "FILE PLAYED")
    assert driver.hangups() == [Hangup("NORMAL_CLEARING")]
    assert driver.flow.state == "final_loop"


@pytest.mark.parametrize("variables", [
    {"read_result": "failure"},
    {"read_result": "success"},
    {"read_result": "success", "menu_number": "9"},
])
def test_an_invalid_main_menu_choice_plays_the_invalid_prompt_then_hangs_up(variables):
    driver = Driver()
    driver.to_main_menu()
    driver.complete("play_and_get_digits", **variables)
    assert driver.executes()[-1] == ("playback", "new_sales/9003.wav")
    assert driver.hangups() == []
    driver.complete("playback", "FILE PLAYED")
    assert driver.hangups() == [Hangup("NORMAL_CLEARING")]
    assert [s for s, _ in driver.steps()][-1] == "InvalidChoice"
    assert driver.flow.state == "final_loop"


@pytest.mark.parametrize(("hour", "minute", "destination", "step"), [
    (21, 0, "fifo_hst XML new_sales", ("Time", "20:30-23:00")),
    (23, 30, "fifo_cellphone XML new_sales", ("NonWorktime", "Cellphone")),
    (8, 59, "fifo_cellphone XML new_sales", ("NonWorktime", "Cellphone")),
])
def test_after_hours_the_schedule_picks_the_queue(hour, minute, destination, step):
    driver = Driver(now=datetime(2026, 11, 25, hour, minute, tzinfo=ZONE))
    driver.start()
    driver.complete("playback", "FILE PLAYED")
    assert driver.executes() == [WELCOME, ("transfer", destination)]
    assert driver.steps() == [step]
    assert driver.flow.state == "final_loop"


def test_a_time_condition_row_valid_now_is_executed_as_is_instead_of_the_schedule():
    holiday = TimeCondition("sales_icall", "transfer", "closed XML new_sales",
                            start_date=date(2026, 11, 25), end_date=date(2026, 11, 25))
    elsewhere = TimeCondition("other_line", "hangup", "", priority=99)
    driver = Driver(conditions=(holiday, elsewhere))
    driver.start()
    driver.complete("playback", "FILE PLAYED")
    assert driver.executes() == [WELCOME, ("transfer", "closed XML new_sales")]
    assert driver.steps() == [("TimeCondition", "transfer closed XML new_sales")]
    assert driver.flow.state == "final_loop"


def test_a_time_condition_row_not_valid_now_leaves_the_schedule_in_charge():
    yesterday = TimeCondition("sales_icall", "transfer", "closed XML new_sales",
                              start_date=date(2026, 11, 24), end_date=date(2026, 11, 24))
    driver = Driver(conditions=(yesterday,))
    driver.to_main_menu()
    assert driver.executes()[-1] == MAIN_MENU


def test_hangup_writes_the_cdr_from_the_event_and_finishes():
    driver = Driver()
    driver.choose("1")
    driver.send(driver.script.hangup())
    effects = driver.send(driver.script.hangup_complete())
    cdr = [e for e in effects if isinstance(e, Record)][0]
    assert cdr.kind == "cdr"
    assert cdr.fields == {
        "uuid": driver.flow.uuid, "caller_id": "5551000", "caller_name": "fs-lab",
        "destination": "fsm", "started_at": 1795670434.808353,
        "answered_at": 1795670434.808353, "ended_at": 1795670438.648399,
        "duration_s": 4, "billsec_s": 4, "hangup_cause": "NORMAL_CLEARING",
        "final_state": "final_loop", "crm_extension": None,
        "path": ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf",
                 "call_hst", "final_loop"],
    }
    assert len(driver.finished()) == 1 and driver.flow.finished
    json.dumps(cdr.fields)


def test_a_caller_hanging_up_mid_menu_gets_no_further_command():
    driver = Driver()
    driver.to_main_menu()
    driver.send(driver.script.hangup("ORIGINATOR_CANCEL"))
    late = driver.complete("play_and_get_digits", menu_number="2", read_result="success")
    assert late == []
    assert driver.executes() == [WELCOME, MAIN_MENU]
    driver.send(driver.script.hangup_complete("ORIGINATOR_CANCEL"))
    assert driver.records("cdr")[0].fields["hangup_cause"] == "ORIGINATOR_CANCEL"
    assert driver.records("cdr")[0].fields["final_state"] == "main_menu_wait_dtmf"


def test_fifo_events_of_the_caller_are_recorded_even_after_the_call_finished():
    driver = Driver()
    driver.choose("2")
    driver.send(driver.script.fifo("push"))
    driver.send(driver.script.fifo("bridge-caller-start"))
    driver.send(driver.script.hangup_complete())
    # mod_fifo sends bridge-caller-stop after the caller's HANGUP_COMPLETE (captures)
    driver.send(driver.script.fifo("bridge-caller-stop"))
    fifo = driver.records("fifo")
    assert [r.fields["action"] for r in fifo] == ["push", "bridge-caller-start", "bridge-caller-stop"]
    assert fifo[-1].fields["fifo_name"] == "sales@127.0.0.1"
    assert fifo[-1].fields["headers"]["FIFO-Caller-Talk-Time-ms"] == "2040"
    assert fifo[-1].fields["at"] > 1.7e9
    json.dumps([r.fields for r in fifo])


def test_events_of_another_channel_are_ignored():
    driver = Driver()
    driver.start()
    stranger = driver.script.complete(driver.last("playback"), "FILE PLAYED")
    stranger.headers["Unique-ID"] = "someone-else"
    assert driver.send(stranger) == []
    assert driver.flow.state == "welcome_wait_playback"


def test_no_crm_lookup_when_the_crm_is_disabled():
    from tests.ivr.calls import make_config

    driver = Driver(config=make_config(crm_enabled="false"))
    driver.start()
    assert driver.lookups() == []
    assert driver.executes() == [WELCOME]
