"""A slow or hanging CRM never holds a caller up, measured from the switch's side.

A separate inbound ESL client (python-ESL, its own connection and thread, as an
operator's monitoring tool would be) subscribes to every event of the stand-in and
keeps the switch's own timestamps (Event-Date-Timestamp, microseconds) of each app the
controlled leg executes. The gaps between them are what the caller heard.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import ESL
import pytest

from fakeswitch import FakeSwitch
from fakeswitch.fake_crm import Reply
from tests.e2e.conftest import USERS, WAIT_S, Harness

WELCOME = ("playback", "new_sales/1000.wav")
MAIN_MENU = ("play_and_get_digits", "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
SALES_QUEUE = ("transfer", "fifo_sales XML new_sales")
KNOWN_CALLER = "5551002"  # the CRM table maps it to 801, a user that answers
CRM_DELAY_S = 5.0


@dataclass(frozen=True)
class SwitchEvent:
    name: str
    application: str
    data: str
    at_s: float  # the switch's Event-Date-Timestamp, in seconds since the epoch


class SwitchWatch:
    """Every event of the stand-in, grouped by Unique-ID, as one ESL client sees them.

    The connection is made, read and closed by one thread only (python-ESL is not safe
    across threads, see DESIGN.md); test threads wait on a Condition with a timeout.
    """

    def __init__(self, port: int):
        self.port = port
        self._events: dict[str, list[SwitchEvent]] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="switch-watch", daemon=True)

    def start(self) -> SwitchWatch:
        self._thread.start()
        assert self._subscribed.wait(WAIT_S), "the watching ESL client never subscribed"
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(WAIT_S)

    def _read(self) -> None:
        """Runs in the switch-watch thread."""
        connection = ESL.ESLconnection("127.0.0.1", str(self.port), "ClueCon")
        if not connection.connected():
            return
        connection.events("plain", "ALL")  # answered once the subscription holds
        self._subscribed.set()
        try:
            while not self._stopping.is_set():
                event = connection.recvEventTimed(100)
                if event is None:
                    continue
                uuid = event.getHeader("Unique-ID")
                stamp = event.getHeader("Event-Date-Timestamp")
                if not uuid or not stamp:
                    continue
                seen = SwitchEvent(event.getHeader("Event-Name") or "",
                                   event.getHeader("Application") or "",
                                   event.getHeader("Application-Data") or "", int(stamp) / 1e6)
                with self._changed:
                    self._events.setdefault(uuid, []).append(seen)
                    self._changed.notify_all()
        finally:
            connection.disconnect()

    def wait_for(self, uuid: str, name: str, application: str = "", data: str = "",
                 timeout_s: float = WAIT_S) -> SwitchEvent:
        """The first `name` event of the call (for `application`, with `data` if given)."""
        def find() -> SwitchEvent | None:
            for event in self._events.get(uuid, []):
                if event.name == name and event.application == application \
                        and (not data or event.data == data):
                    return event
            return None

        with self._changed:
            found = self._changed.wait_for(find, timeout_s)
        assert found, f"call {uuid}: no {name} {application} {data} within {timeout_s} s"
        return found

    def executed(self, uuid: str, app: tuple[str, str]) -> SwitchEvent:
        return self.wait_for(uuid, "CHANNEL_EXECUTE", *app)

    def completed(self, uuid: str, app: tuple[str, str]) -> SwitchEvent:
        return self.wait_for(uuid, "CHANNEL_EXECUTE_COMPLETE", *app)


@pytest.fixture
def watch():
    """Start a SwitchWatch on a switch; every watch is stopped after the test."""
    started: list[SwitchWatch] = []

    def start(switch: FakeSwitch) -> SwitchWatch:
        started.append(SwitchWatch(switch.port).start())
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture
def long_queue_harness(tmp_path, crm, cdr_sink):
    """The service against a stand-in whose sales queue keeps the caller for a while
    (the queue plays new_sales/1002.wav, here 60 s of media time: 3 s at this scale),
    so that a late CRM answer reaches a call that is still up."""
    switch = FakeSwitch(port=0, password="ClueCon", time_scale=0.05, users=USERS,
                        durations={"1002.wav": 60.0}).start()
    harness = Harness(tmp_path, switch, crm, cdr_sink, ICALL_IVR_CRM_GRACE_MS="200").start()
    yield harness
    harness.stop()
    switch.stop()


def welcome_to_menu_s(watch: SwitchWatch, uuid: str) -> float:
    """From the welcome's completion to the main menu's start: icall's reaction."""
    return watch.executed(uuid, MAIN_MENU).at_s - watch.completed(uuid, WELCOME).at_s


def wall_clock(monotonic_s: float) -> float:
    """A time.monotonic() reading (the fake CRM's) on the switch's wall clock."""
    return monotonic_s + (time.time() - time.monotonic())


def test_a_crm_answering_in_5_s_does_not_delay_the_way_from_welcome_to_the_main_menu(
        harness, switch, crm, watch):
    # Long enough timeouts that the 5 s answer is a real answer, not a timeout.
    h = harness(ICALL_CRM_READ_TIMEOUT_S="8", ICALL_CRM_DEADLINE_S="10")
    events = watch(switch)
    crm.table.update({"5551201": "801", "5551202": "801"})

    crm.default = Reply()
    fast = h.finish(h.place("5551201", "2"))
    assert ("bridge", "user/801") in fast.commands, "the prompt CRM's answer must be used"
    fast_gap_s = welcome_to_menu_s(events, fast.uuid)

    crm.default = Reply(delay_s=CRM_DELAY_S)
    slow_uuid = h.place("5551202", "1")
    menu = events.executed(slow_uuid, MAIN_MENU)
    answered = events.wait_for(slow_uuid, "CHANNEL_ANSWER")
    slow_gap_s = welcome_to_menu_s(events, slow_uuid)
    asked = [r for r in crm.requests if r.query.get("caller_id") == ["5551202"]]
    slow = h.finish(slow_uuid)

    assert asked, "the CRM was never asked about the slow call's caller"
    asked_at_s = wall_clock(asked[0].received_at)
    assert asked_at_s < menu.at_s, "the lookup must already be under way when the menu starts"
    assert menu.at_s - asked_at_s < 1.0, "the menu started only after the CRM's delay"
    assert slow_gap_s < 1.0, f"welcome end -> main menu took {slow_gap_s:.3f} s"
    assert slow_gap_s < fast_gap_s + 0.5, f"slow CRM {slow_gap_s:.3f} s vs prompt CRM {fast_gap_s:.3f} s"
    assert menu.at_s - answered.at_s < 2.0, "answer -> main menu is a short prompt, not a CRM wait"
    assert slow.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]
    assert not any(line.startswith("CRM extension") for line in slow.history), \
        "the slow call ended before its CRM answer could exist"


def test_a_hanging_crm_sends_a_sales_caller_to_the_sales_queue_once_the_grace_is_over(
        harness, switch, crm, watch):
    crm.default = Reply(hang=True)
    h = harness(ICALL_IVR_CRM_GRACE_MS="300")
    events = watch(switch)
    uuid = h.place(KNOWN_CALLER, "2")
    menu_done = events.completed(uuid, MAIN_MENU)
    transfer = events.executed(uuid, SALES_QUEUE)
    r = h.finish(uuid)

    assert crm.wait_for_requests(1, timeout_s=WAIT_S), "the CRM was never asked"
    assert r.commands == [WELCOME, MAIN_MENU, SALES_QUEUE]
    assert not any(app == "bridge" for app, _ in r.commands)
    assert ("SalesFifo", "") in r.steps
    assert "the CRM did not answer within the grace" in r.history
    waited_s = transfer.at_s - menu_done.at_s
    # The grace (0.3 s) is waited out, and no more: the CRM's own deadline is 8 s.
    assert 0.25 <= waited_s < 3.0, f"menu choice -> sales queue took {waited_s:.3f} s"


def test_a_crm_answer_arriving_after_the_sales_decision_is_logged_and_never_dialled(
        long_queue_harness, crm, watch, caplog):
    caplog.set_level(logging.DEBUG, logger="ivr.flow")
    h = long_queue_harness
    crm.default = Reply(delay_s=1.0)  # well past the 0.2 s grace, well within the queue's 3 s
    events = watch(h.switch)
    uuid = h.place(KNOWN_CALLER, "2")
    transfer = events.executed(uuid, SALES_QUEUE)
    r = h.finish(uuid)

    assert crm.wait_for_requests(1, timeout_s=WAIT_S)
    crm_answer_at_s = wall_clock(crm.requests[0].received_at) + 1.0
    assert transfer.at_s < crm_answer_at_s, "the sales decision must precede the CRM's answer"
    assert r.commands == [WELCOME, MAIN_MENU, SALES_QUEUE]
    assert not any(app == "bridge" or "801" in arg for app, arg in r.commands)
    assert r.row["crm_extension"] is None
    late = "CRM answer '801' after the sales decision: ignored"
    assert late in r.history, f"the late answer never reached the live call: {r.history}"
    assert any(late in record.getMessage() for record in caplog.records if record.name == "ivr.flow")
