"""icall restarted mid-call on a real FreeSWITCH, in each mode: SIGKILLed while its
caller is in the main menu (the caller presses its key meanwhile), then started again."""

from __future__ import annotations

import signal

import pytest

from bench.scenarios import REAL_SWITCH_EXTENSIONS, caller_id, lab_scenarios
from ivr.flow import ENDED_UNWATCHED_CAUSE
from storage.records import ENDED_UNSEEN_CAUSE
from tests.freeswitch.conftest import CALL_TIMEOUT_S

pytestmark = pytest.mark.freeswitch
# Menu 2, a failed ring, the cc menu, 2: voicemail. Every kind of step after the kill.
VOICEMAIL = next(s for s in lab_scenarios(REAL_SWITCH_EXTENSIONS) if s.name == "cc_menu_voicemail")


def kill_in_the_main_menu_and_start_again(lab, one, dest: str):
    """The voicemail caller placed; icall SIGKILLed once its main menu started, then
    started again; the call once it ended."""
    first = one.start()
    call = lab.place(VOICEMAIL, dest, caller_id(VOICEMAIL, 0))
    assert lab.wait(call.in_main_menu, CALL_TIMEOUT_S), f"no main menu: {call.path}\n{first.stderr()}"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    one.start()
    assert call.ended.wait(CALL_TIMEOUT_S), f"never ended: {call.path}"
    return call


def test_inbound_icall_killed_in_the_main_menu_and_started_again_takes_the_caller_on_from_there(
        lab, icall, cdr_sink):
    one = icall(outbound=False)
    # The menu goes on on the switch while no icall runs: the key lands in it.
    call = kill_in_the_main_menu_and_start_again(lab, one, "fsm")

    assert call.went_right(), "\n".join(map(str, call.path)) + "\n" + one.log_of(call.uuid)
    assert call.collapsed_path()[1] == 0, f"a prompt played twice: {call.path}\n{one.log_of(call.uuid)}"
    row = one.wait_recorded(call.uuid, cdr_sink)
    assert row["hangup_cause"] == call.hangup_cause == "NORMAL_CLEARING", row
    assert cdr_sink.accept_counts()[call.uuid] == 1
    assert one.steps(call.uuid).count(("MainMenu", "2")) == 1, one.steps(call.uuid)


def test_outbound_icall_killed_in_the_main_menu_and_started_again_closes_the_call_with_its_cdr(
        lab, icall, cdr_sink):
    # One process, no SO_REUSEPORT: the kill closes the call's socket and the dialplan's
    # second `socket` is tried at once, before any icall listens again (refused), so the
    # caller goes on to the dialplan's safe destination. The new icall owes the call its
    # end: one row closed with the real cause, one CDR. (Resuming a caller across a
    # process's death is the workers' case: test_workers.)
    one = icall(outbound=True)
    first = one.start()
    call = lab.place(VOICEMAIL, "icall_out", caller_id(VOICEMAIL, 0))
    assert lab.wait(call.in_main_menu, CALL_TIMEOUT_S), f"no main menu: {call.path}\n{first.stderr()[-3000:]}"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    one.start()

    assert call.ended.wait(CALL_TIMEOUT_S), f"never ended: {call.path}"
    assert call.path[-1] == ("transfer", "fifo_sales XML new_sales") or call.sockets == 2, call.path
    row = one.wait_recorded(call.uuid, cdr_sink)
    assert call.hangup_cause == "NORMAL_CLEARING"
    # The fallback's tone lasts 1 s: the caller may hang up before the new icall lets
    # the call's events through; then its end is honest about not being seen.
    assert row["hangup_cause"] in ("NORMAL_CLEARING", ENDED_UNWATCHED_CAUSE, ENDED_UNSEEN_CAUSE), row
    assert row["ended_at"] is not None, row
    assert cdr_sink.accept_counts()[call.uuid] == 1
