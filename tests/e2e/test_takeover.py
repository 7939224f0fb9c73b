"""Taking calls over in process: the dead-man in the dialplan, a call that ended while
no icall ran."""

from __future__ import annotations

from datetime import UTC

from storage.models import Call, utc_now
from storage.records import ENDED_UNSEEN_CAUSE
from tests.e2e.conftest import WAIT_S
from tests.waiting import wait_until

WELCOME = ("playback", "new_sales/1000.wav")
DEADMAN = ("transfer", "fifo_sales XML new_sales")


def test_the_dead_man_sends_a_call_no_controller_takes_to_safety_by_the_switch_alone(switch):
    # No icall runs at all: the dialplan's scheduled transfer fires on its own.
    uuid = switch.place_call(caller_id="5551200", variables={"fake_deadman_s": "2"})
    assert switch.wait_hangup(uuid, timeout=WAIT_S)
    record = switch.call_record(uuid)
    assert record.commands == [], "no controller sent anything"
    assert "CHANNEL_UNPARK" in record.events, "the scheduled transfer took it out of park"
    assert record.hangup_cause == "NORMAL_CLEARING", "fifo_sales played its prompt and hung up"


def test_a_call_icall_takes_has_its_dead_man_cancelled_first_thing(harness):
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    uuid = h.place("5551201", "1", fake_deadman_s="3")
    r = h.finish(uuid)
    assert r.commands[0][0] == "sched_cancel"
    assert r.commands[1:] == [WELCOME, r.commands[2], ("transfer", "fifo_hst XML new_sales")]


def test_a_call_that_ended_while_no_icall_ran_is_closed_at_start_with_its_cdr(harness, cdr_sink):
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    uuid = h.place("5551203", "none")
    assert h.switch.wait_parked(uuid, timeout=WAIT_S)
    assert wait_until(lambda: Call.select().where(Call.uuid == uuid).count(h.db) == 1, WAIT_S)
    h.service.reader.stop()  # icall is gone (its rows stay open)
    h.service.stop()
    h.switch.hangup(uuid, "NORMAL_CLEARING")
    assert h.switch.wait_hangup(uuid, timeout=WAIT_S)
    gone_by = utc_now()
    again = harness()
    def row() -> dict:
        return list(Call.select().where(Call.uuid == uuid).dicts().execute(again.db))[0]

    assert wait_until(lambda: row()["hangup_cause"] is not None, WAIT_S)
    closed = row()
    assert closed["hangup_cause"] == ENDED_UNSEEN_CAUSE
    # The best end known: when the new icall saw the channel gone; the path is not
    # made up (a made-up checkpoint used to write ["final_loop"]).
    assert closed["ended_at"] is not None and gone_by <= closed["ended_at"] <= utc_now()
    assert closed["path"] is None and closed["caller_id"] == "5551203"
    assert again.service.stats()["calls_closed_unseen"] == 1
    assert cdr_sink.wait_for_accepted(1, timeout_s=WAIT_S)
    cdr = cdr_sink.accepted(uuid)
    assert (cdr["hangup_cause"], cdr["path"], cdr["caller_id"]) == (ENDED_UNSEEN_CAUSE, None, "5551203")
    assert cdr["ended_at"] == closed["ended_at"].replace(tzinfo=UTC).timestamp()


MAIN_MENU_APP = "play_and_get_digits"


def test_a_menu_that_ended_without_an_entry_while_no_icall_ran_takes_its_invalid_branch_at_once(harness):
    """No key in any try while icall is down: the menu's result is on the channel and
    its execute loop is over, so the next icall plays the invalid-choice prompt and hangs
    up, instead of waiting out the menu's bound in silence and playing it again."""
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")  # 1 s a try at the stand-in's scale
    uuid = h.place("5551204", "none")

    def variables() -> dict[str, str]:
        return h.switch.call_record(uuid).variables

    assert wait_until(lambda: variables().get("current_application") == MAIN_MENU_APP, WAIT_S)
    h.service.reader.stop()  # icall is gone while the caller is in the menu
    h.service.stop()
    assert variables().get("current_loop"), "the menu was still running when icall went"
    assert wait_until(lambda: "current_loop" not in variables(), WAIT_S), "the menu never ended"
    assert variables().get("read_result") == "failure"
    again = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    r = again.finish(uuid)
    prompts = [c for c in r.commands if c[0] in ("playback", MAIN_MENU_APP)]
    assert prompts == [WELCOME, prompts[1], ("playback", "new_sales/9003.wav")], \
        "the menu once, then the invalid-choice prompt"
    assert r.hangup_cause == "NORMAL_CLEARING"
    assert ("InvalidChoice", "menu_number= read_result=failure") in r.steps
