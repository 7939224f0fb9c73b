"""Every branch of the icall flow, end to end: the service drives the stand-in over
the real Event Socket; each test checks what the switch executed, the rows written
and how the call ended."""

from __future__ import annotations

from datetime import date

import pytest

from storage.models import TimeConditionRow
from tests.e2e.conftest import CHRISTMAS_11, THURSDAY_02, WEDNESDAY_21

WELCOME = ("playback", "new_sales/1000.wav")
MAIN_MENU = ("play_and_get_digits", "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
EXTN_MENU = ("play_and_get_digits", "3 3 3 5000 # new_sales/2002.wav new_sales/9004.wav extn_number [68]\\d\\d")
GOODBYE = ("playback", "new_sales/9003.wav")
TRANSFERRING = ("playback", "new_sales/1002.wav")


def cc_menu(extn: str) -> tuple[str, str]:
    return ("play_and_get_digits",
            f"1 1 2 5000 # new_sales/8{extn}.wav new_sales/9004.wav cc_menu_number [12]")


def bridge_commands(extn: str) -> list[tuple[str, str]]:
    return [("set", "ringback=${us-ring}"), ("set", "call_timeout=30"), ("set", "continue_on_fail=true"),
            ("set", "hangup_after_bridge=true"), ("bridge", f"user/{extn}")]


def test_menu_1_sends_the_caller_to_the_evening_team_queue(harness):
    h = harness()
    r = h.finish(h.place("5551001", "1"))
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]
    assert ("MainMenu", "1") in r.steps
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
    assert "call_hst" in h.path(r)


def test_a_calls_events_after_its_park_go_straight_from_the_reader_to_its_actor(harness):
    # The reader and the supervisor must share one route table: with two, no route
    # ever opened and every event paid a hop through the supervisor.
    h = harness()
    h.finish(h.place("5551001", "1"))
    assert h.service.supervisor.proxy().routes.get(timeout=5) is h.service.routes
    assert h.service.routes.sent_straight > 0


def test_menu_2_with_a_crm_extension_bridges_to_the_account_manager(harness):
    h = harness()
    r = h.finish(h.place("5551002", "2"))
    assert r.commands == [WELCOME, MAIN_MENU, TRANSFERRING, *bridge_commands("801")]
    assert ("CallCC", "801") in r.steps
    assert not any(step == "CCFailure" for step, _ in r.steps)
    assert r.row["crm_extension"] == "801"
    assert r.row["billsec_s"] is not None


def test_menu_2_without_a_crm_extension_goes_to_the_sales_queue(harness, crm):
    h = harness()
    r = h.finish(h.place("5551003", "2"))
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_sales XML new_sales")]
    assert ("SalesFifo", "") in r.steps
    assert any(req.query.get("caller_id") == ["5551003"] for req in crm.requests)


@pytest.mark.parametrize(("caller", "keys", "destination"), [
    ("5551004", "3|1", "Playcell_802 XML new_sales"),
    ("5551005", "4|2", "VM_802 XML new_sales"),
    ("5551006", "2|none", "Quit XML new_sales"),
])
def test_a_failed_bridge_offers_the_cc_menu_and_follows_its_answer(harness, caller, keys, destination):
    h = harness()
    r = h.finish(h.place(caller, keys))
    assert r.commands == [WELCOME, MAIN_MENU, TRANSFERRING, *bridge_commands("802"), cc_menu("802"),
                          ("transfer", destination)]
    failure = [value for step, value in r.steps if step == "CCFailure"]
    assert failure and failure[0] in ("NO_ANSWER", "USER_NOT_REGISTERED")


def test_menu_5_dials_the_extension_the_caller_enters(harness):
    h = harness()
    r = h.finish(h.place("5551007", "5|801"))
    assert r.commands == [WELCOME, MAIN_MENU, EXTN_MENU, *bridge_commands("801")]
    assert ("CallExtn", "801") in r.steps


def test_menu_5_without_an_extension_says_goodbye_and_hangs_up(harness):
    h = harness()
    r = h.finish(h.place("5551008", "5|none"))
    assert r.commands == [WELCOME, MAIN_MENU, EXTN_MENU, GOODBYE]
    assert not any(app == "bridge" for app, _ in r.commands)
    assert r.row["hangup_cause"] is not None


@pytest.mark.parametrize("keys", ["9|9|9", "none"])
def test_an_invalid_or_missing_choice_says_goodbye_and_hangs_up(harness, keys):
    h = harness()
    r = h.finish(h.place("5551009", keys))
    assert r.commands == [WELCOME, MAIN_MENU, GOODBYE]
    assert "final_loop" in h.path(r)


def test_after_hours_in_the_evening_the_call_goes_to_the_evening_team(harness):
    h = harness()
    r = h.finish(h.place("5551011", at=WEDNESDAY_21))
    assert r.commands == [WELCOME, ("transfer", "fifo_hst XML new_sales")]


def test_at_night_the_call_goes_to_the_cellphone_queue(harness):
    h = harness()
    r = h.finish(h.place("5551012", at=THURSDAY_02))
    assert r.commands == [WELCOME, ("transfer", "fifo_cellphone XML new_sales")]


def test_a_holiday_in_the_database_overrides_the_schedule(harness):
    h = harness()
    TimeConditionRow.insert(name="sales_icall", action="transfer", args="VM_801 XML new_sales",
                            enabled=True, start_date=date(2026, 12, 25), end_date=date(2026, 12, 25),
                            priority=10, note="Christmas").execute(h.db)
    h.service.time_conditions.refresh()
    r = h.finish(h.place("5551013", at=CHRISTMAS_11))
    assert r.commands == [WELCOME, ("transfer", "VM_801 XML new_sales")]
    assert any(step == "TimeCondition" for step, _ in r.steps)


def test_a_hostile_crm_answer_is_never_dialled(harness):
    h = harness()
    r = h.finish(h.place("5551020", "2"))
    assert not any(app == "bridge" for app, _ in r.commands)
    assert r.commands[-1] == ("transfer", "fifo_sales XML new_sales")


def test_every_finished_call_has_its_cdr_delivered_once(harness, cdr_sink):
    h = harness()
    uuids = [h.place(f"55510{n:02d}", "1") for n in range(30, 34)]
    for uuid in uuids:
        h.finish(uuid)
    assert cdr_sink.wait_for_accepted(len(uuids), timeout_s=30)
    assert set(uuids) <= cdr_sink.unique_keys()


def test_a_bridged_conversation_outlives_every_guard_and_ends_as_a_normal_call(harness):
    # Guards of 1 s (commands) and 1 + 1 s (the bridge's ringing); the callee talks 4 s.
    h = harness(ICALL_IVR_COMMAND_TIMEOUT_S="1", ICALL_IVR_RING_TIMEOUT_S="1")
    r = h.finish(h.place("5551040", "5|803"))
    assert r.commands[-1] == ("bridge", "user/803"), "nothing may follow the bridge"
    assert not r.transfers()
    assert not any(step == "CommandTimeout" for step, _ in r.steps)
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
    assert r.row["billsec_s"] is not None and r.row["billsec_s"] >= 3
    assert not r.failures


def test_an_extension_that_rings_past_ring_timeout_gives_the_caller_the_cc_menu(harness):
    h = harness(ICALL_IVR_RING_TIMEOUT_S="2")
    r = h.finish(h.place("5551041", "5|804|2"))
    assert r.commands[-2:] == [cc_menu("804"), ("transfer", "VM_804 XML new_sales")]
    assert ("CCFailure", "NO_ANSWER") in r.steps
    assert not any(step == "CommandTimeout" for step, _ in r.steps)


def test_the_dialplans_answer_before_the_park_never_reaches_icall(harness):
    # The dialplan answers, then parks the call into the flow: that completion belonged
    # to no call yet and cost the supervisor a wake-up a call. The subscription's
    # filters leave it at the switch.
    h = harness()
    h.finish(h.place("5551001", "1"))
    stats = h.service.supervisor.proxy().stats().get(timeout=5)
    assert stats["events_unowned"] == 0
    assert stats["calls_started"] == 1
