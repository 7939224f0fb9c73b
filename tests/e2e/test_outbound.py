"""Outbound mode beside inbound mode, and the faults of a call's own socket: the switch
closing it mid-prompt (the call comes back on the dialplan's second `socket`, or not at
all) and icall going away mid-call (the caller goes on to the safe destination)."""

from __future__ import annotations

import pytest

from fakeswitch import FakeSwitch
from ivr.socket_calls import SOCKET_LOST_CAUSE
from storage.models import CdrOutbox
from tests.e2e.conftest import USERS, WAIT_S
from tests.e2e.outbound_harness import OutboundHarness
from tests.e2e.test_branches import MAIN_MENU, WELCOME
from tests.waiting import wait_until


@pytest.fixture
def outbound(tmp_path, switch, crm, cdr_sink):
    made: list[OutboundHarness] = []

    def make(on=None, **overrides: str) -> OutboundHarness:
        h = OutboundHarness(tmp_path, on or switch, crm, cdr_sink, **overrides).start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def real_time_switch():
    """Prompts at their recorded length (1001.wav: 2 s), so that a test can act while
    one plays."""
    sw = FakeSwitch(port=0, password="ClueCon", time_scale=1.0, users=USERS)
    sw.start()
    yield sw
    sw.stop()


def prompting(h: OutboundHarness, uuid: str, app: str = "play_and_get_digits") -> bool:
    return wait_until(lambda: app in [a for a, _ in h.switch.call_record(uuid).commands], WAIT_S)


def test_both_modes_run_at_once_and_each_call_is_driven_by_one_of_them(outbound):
    h = outbound()
    parked = h.place_inbound("5551001", "1")
    socketed = h.place("5551001", "1")
    for uuid in (parked, socketed):
        r = h.finish(uuid)
        assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")], uuid
        assert r.row["hangup_cause"] == "NORMAL_CLEARING"
    assert h.service.outbound is not None and h.service.outbound.accepted == 1
    assert h.service.stats()["calls_started"] == 2


def test_the_switch_closing_a_socket_mid_prompt_loses_nothing_when_the_call_comes_back(
        outbound, real_time_switch, cdr_sink):
    h = outbound(on=real_time_switch)
    uuid = h.place("5551003", "2|2")
    assert prompting(h, uuid), "the main menu never started"
    assert real_time_switch.close_outbound(uuid)
    r = h.finish(uuid)
    # The switch's reset (socket_resume) cut the prompt short, with no answer; the
    # dialplan's second `socket` brought the call back, and icall asked again.
    assert r.commands == [WELCOME, MAIN_MENU, MAIN_MENU, ("transfer", "fifo_sales XML new_sales")]
    assert r.steps.count(("MainMenu", "2")) == 1
    assert ("SalesFifo", "") in r.steps
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
    assert h.service.outbound is not None and h.service.outbound.accepted == 2
    assert cdr_sink.wait_for_accepted(1, timeout_s=WAIT_S)
    assert CdrOutbox.select().where(CdrOutbox.call_uuid == uuid).count(h.db) == 1


def test_a_call_whose_socket_closes_for_good_ends_with_its_cdr_after_the_grace(
        outbound, real_time_switch):
    h = outbound(on=real_time_switch)
    uuid = h.place("5551003", "2", dest="fsm_out")  # one `socket`, nothing after it
    assert prompting(h, uuid), "the main menu never started"
    assert real_time_switch.close_outbound(uuid)
    r = h.finish(uuid)
    assert r.row["hangup_cause"] == SOCKET_LOST_CAUSE
    assert r.commands == [WELCOME, MAIN_MENU]


def test_when_icall_stops_mid_call_the_caller_goes_on_to_the_safe_destination(
        outbound, real_time_switch):
    h = outbound(on=real_time_switch)
    uuid = h.place("5551003", "2")
    assert prompting(h, uuid), "the main menu never started"
    h.service.stop()
    assert real_time_switch.wait_hangup(uuid, timeout=WAIT_S)
    record = real_time_switch.call_record(uuid)
    assert record.transferred_to == "fifo_sales"
    assert ("transfer", "fifo_sales XML new_sales") not in record.commands, "icall sent no transfer"


def test_a_finished_call_lets_its_socket_go_without_waiting_out_the_linger(outbound, switch):
    h = outbound()
    h.finish(h.place("5551001", "1"))
    assert wait_until(lambda: not any(getattr(listener, "session_uuid", None)
                                      for listener in list(switch.switch.listeners)), 5), \
        "the switch still holds the call's socket"


def test_an_outbound_call_over_the_limit_goes_to_the_overflow_destination(outbound, real_time_switch):
    h = outbound(on=real_time_switch, ICALL_IVR_MAX_CONCURRENT_CALLS="1",
                 ICALL_IVR_OVERFLOW_DESTINATION="fifo_cellphone XML new_sales")
    first = h.place("5551001", "2")
    assert prompting(h, first, "playback"), "the first call never started"
    second = h.place("5551002", "2")
    assert real_time_switch.wait_hangup(second, timeout=WAIT_S)
    record = real_time_switch.call_record(second)
    assert record.transferred_to == "fifo_cellphone"
    assert record.commands == [("transfer", "fifo_cellphone XML new_sales")]
    assert h.service.stats()["calls_overflowed"] == 1


def test_once_handed_off_a_calls_socket_no_longer_takes_completions(outbound, real_time_switch):
    """The destination's own apps (in the lab: answer, a tone, hangup) would each cost
    the switch a serialised event for a flow that reads none of them."""
    h = outbound(on=real_time_switch)
    uuid = h.place("5551001", "1")

    def socket_of_call():
        return next((listener for listener in list(real_time_switch.switch.listeners)
                     if getattr(listener, "session_uuid", None) == uuid), None)
    assert wait_until(lambda: ("transfer", "fifo_hst XML new_sales") in h.switch.call_record(uuid).commands,
                      WAIT_S)
    assert wait_until(lambda: (listener := socket_of_call()) is not None
                      and not listener.sub.wants_name("CHANNEL_EXECUTE_COMPLETE", None), WAIT_S)
    assert socket_of_call().sub.wants_name("CHANNEL_HANGUP_COMPLETE", None), "the CDR's event still comes"
    r = h.finish(uuid)
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"


def test_a_new_call_on_its_own_socket_lets_it_go_once_its_cdr_is_in_not_after_the_linger(outbound, switch):
    """A lingering socket holds the switch's session and its listener thread: only a
    call that was queued (mod_fifo's late events) or taken over waits hangup_linger_s."""
    h = outbound(ICALL_IVR_HANGUP_LINGER_S="30")
    h.finish(h.place("5551001", "1"))
    assert wait_until(lambda: not any(getattr(listener, "session_uuid", None)
                                      for listener in list(switch.switch.listeners)), 5), \
        "the switch still holds the call's socket"
