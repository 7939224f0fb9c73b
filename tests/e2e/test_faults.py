"""Fault injection, end to end: actors killed or failing mid-call, the event link
dropped, too many calls. In every case the caller keeps moving and the records stay
whole."""

from __future__ import annotations

import json
import threading

import pytest

from actors.esl_reader import EventReader
from ivr.flow import LOST_HANGUP_CAUSE, Enter
from ivr.icall import IcallFlow
from storage.models import CallStep, utc_now
from tests.e2e.conftest import WAIT_S
from tests.e2e.test_branches import EXTN_MENU, TRANSFERRING, bridge_commands, cc_menu
from tests.ivr.calls import make_config
from tests.waiting import wait_until

SAFE = ("transfer", "fifo_sales XML new_sales")
WELCOME = ("playback", "new_sales/1000.wav")
MAIN_MENU = ("play_and_get_digits", "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
GOODBYE = ("playback", "new_sales/9003.wav")


@pytest.fixture
def in_main_menu(monkeypatch):
    """An Event per caller id, set when that call's flow enters the main menu."""
    reached: dict[str, threading.Event] = {}
    original = IcallFlow.main_menu

    def main_menu(self, *args, **kwargs):
        effects = original(self, *args, **kwargs)
        reached.setdefault(self.call.caller_id, threading.Event()).set()
        return effects

    monkeypatch.setattr(IcallFlow, "main_menu", main_menu)

    def wait(caller: str) -> None:
        event = reached.setdefault(caller, threading.Event())
        assert event.wait(WAIT_S), f"call from {caller} never reached the main menu"

    return wait


def test_a_call_actor_that_keeps_raising_ends_its_crash_loop_at_the_safe_destination(harness, monkeypatch):
    original = IcallFlow.main_menu_wait_dtmf

    def broken(self, happened):
        if self.call.caller_id == "5551100":
            raise RuntimeError("injected failure in main_menu_wait_dtmf")
        return original(self, happened)

    monkeypatch.setattr(IcallFlow, "main_menu_wait_dtmf", broken)
    h = harness()
    victim = h.place("5551100", "1")
    bystander = h.place("5551101", "1")
    r = h.finish(victim)
    assert r.commands[-1] == SAFE
    assert r.commands.count(SAFE) == 1
    # The first death and three resumes, each dying again on the menu's answer.
    assert len(r.failures) == 4 and all("injected failure" in f["error"] for f in r.failures)
    assert r.row["ended_at"] is not None, "the last actor must still write the CDR"
    other = h.finish(bystander)
    assert other.commands[-1] == ("transfer", "fifo_hst XML new_sales")
    stats = h.service.stats()
    assert (stats["calls_failed"], stats["calls_resumed"], stats["calls_given_up"]) == (4, 3, 1)


def test_a_call_actor_that_dies_once_is_resumed_where_it_was_and_the_caller_goes_on(harness, monkeypatch):
    original = IcallFlow.main_menu_wait_dtmf
    died = []

    def broken_once(self, happened):
        if self.call.caller_id == "5551102" and not died:
            died.append(self.state)
            raise RuntimeError("injected failure in main_menu_wait_dtmf")
        return original(self, happened)

    monkeypatch.setattr(IcallFlow, "main_menu_wait_dtmf", broken_once)
    h = harness()
    r = h.finish(h.place("5551102", "1"))
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")], \
        "the menu's answer, read from the channel, leads where the caller's key does"
    assert len(r.failures) == 1
    assert ("MainMenu", "1") in r.steps and r.steps.count(("MainMenu", "")) == 1
    assert r.row["ended_at"] is not None


@pytest.mark.parametrize(("state", "nth", "caller", "keys", "expected"), [
    ("welcome_wait_playback", 1, "5551160", "1", [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]),
    ("main_menu_wait_dtmf", 1, "5551161", "1", [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]),
    ("call_extn", 1, "5551162", "5|801", [WELCOME, MAIN_MENU, EXTN_MENU, *bridge_commands("801")]),
    ("call_cc", 1, "5551004", "3|1",  # the failed ring's completion (the CRM names 802)
     [WELCOME, MAIN_MENU, TRANSFERRING, *bridge_commands("802"), cc_menu("802"),
      ("transfer", "Playcell_802 XML new_sales")]),
    ("call_cc", 2, "5551004", "3|1",  # the cc menu's answer
     [WELCOME, MAIN_MENU, TRANSFERRING, *bridge_commands("802"), cc_menu("802"),
      ("transfer", "Playcell_802 XML new_sales")]),
])
def test_a_call_actor_dying_in_each_state_is_resumed_there_without_a_repeat(harness, monkeypatch, state, nth,
                                                                            caller, keys, expected):
    """The handler dies on the nth event its state handles; a fresh actor reads the
    channel, takes the answer from it and goes on: the caller hears nothing twice."""
    original = getattr(IcallFlow, state)
    handled = []

    def dies_once(self, happened):
        if self.call.caller_id == caller and not isinstance(happened, Enter):
            handled.append(happened)
            if len(handled) == nth:
                raise RuntimeError(f"injected failure in {state}")
        return original(self, happened)

    monkeypatch.setattr(IcallFlow, state, dies_once)
    h = harness()
    r = h.finish(h.place(caller, keys))
    assert r.commands == expected
    assert [f["state"] for f in r.failures] == [state]
    assert r.row["ended_at"] is not None


def test_a_call_actor_stopped_from_outside_is_noticed_and_the_call_resumed(harness, in_main_menu):
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    uuid = h.place("5551110", "none")
    in_main_menu("5551110")
    ref = h.service.supervisor.proxy().call_ref(uuid).get(timeout=5)
    ref.stop(block=True, timeout=5)
    r = h.finish(uuid)
    assert SAFE not in r.commands
    assert [app for app, _ in r.commands] == ["playback", "play_and_get_digits", "playback"], \
        "the running menu was waited for, not repeated"
    assert r.commands[-1] == GOODBYE
    assert r.failures and r.failures[0]["error"] == "stopped from outside"
    assert r.row["hangup_cause"] is not None


def test_a_hung_call_actor_is_replaced_and_the_caller_goes_where_the_key_leads(harness, monkeypatch, caplog):
    """A handler stuck in one event (a deadlock, an endless loop) answers nothing: the
    supervisor sees it busy past `[ivr] hung_actor_s`, marks it abandoned and resumes
    the call in a fresh actor from the channel. Woken up later, the hung one sends
    nothing."""
    original = IcallFlow.main_menu_wait_dtmf
    stuck, release = threading.Event(), threading.Event()

    def hangs_once(self, happened):
        if self.call.caller_id == "5551105" and not stuck.is_set():
            stuck.set()
            release.wait(WAIT_S)
        return original(self, happened)  # woken: its transfer must go nowhere

    monkeypatch.setattr(IcallFlow, "main_menu_wait_dtmf", hangs_once)
    h = harness(ICALL_IVR_HUNG_ACTOR_S="1")
    try:
        uuid = h.place("5551105", "1")
        bystander = h.place("5551106", "1")
        r = h.finish(uuid)
    finally:
        record_before = h.switch.call_record(uuid).commands
        release.set()
    assert stuck.is_set()
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")], \
        "the menu's answer, read from the channel, leads where the caller's key does"
    assert [f["error"].split(":")[0] for f in r.failures] == ["hung"]
    assert ("MainMenu", "1") in r.steps and r.row["ended_at"] is not None
    assert h.finish(bystander).commands[-1] == ("transfer", "fifo_hst XML new_sales")
    stats = h.service.stats()
    assert (stats["calls_hung"], stats["calls_resumed"], stats["calls_given_up"]) == (1, 1, 0)
    assert wait_until(lambda: "replaced while hung" in caplog.text, WAIT_S)
    assert h.switch.call_record(uuid).commands == record_before, "the woken actor sent nothing"


def test_killing_the_db_writer_mid_call_loses_and_duplicates_nothing(harness, in_main_menu):
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    uuid = h.place("5551120", "1")
    in_main_menu("5551120")
    old_writer = h.service.services.db_writer
    old_writer.stop(block=True, timeout=5)
    r = h.finish(uuid)
    assert h.service.services.db_writer is not old_writer
    assert h.service.services.db_writer.is_alive()
    assert ("MainMenu", "1") in r.steps
    assert r.row["ended_at"] is not None
    seqs = [s.seq for s in CallStep.select().where(CallStep.call_uuid == uuid).execute(h.db)]
    assert len(seqs) == len(set(seqs))


def test_calls_above_the_limit_go_to_the_overflow_destination(harness, in_main_menu):
    h = harness(ICALL_IVR_MAX_CONCURRENT_CALLS="1", ICALL_IVR_OVERFLOW_DESTINATION="Quit XML new_sales",
                ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    first = h.place("5551130", "1")
    in_main_menu("5551130")
    second = h.place("5551131", "1")
    assert h.switch.wait_hangup(second, timeout=WAIT_S)
    assert h.switch.call_record(second).commands == [("transfer", "Quit XML new_sales")]
    assert h.finish(first).commands[-1] == ("transfer", "fifo_hst XML new_sales")
    assert h.service.stats()["calls_overflowed"] == 1


def test_a_dropped_event_link_reconnects_and_the_call_carries_on(harness, in_main_menu):
    # No key is pressed, so the menu's completion comes seconds after the drop: the
    # link must be back and subscribed to see it.
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    uuid = h.place("5551140", "none")
    in_main_menu("5551140")
    h.service.link_up.clear()
    h.switch.drop_clients()
    assert h.service.link_up.wait(WAIT_S), "the link never came back"
    r = h.finish(uuid)
    assert r.commands[-1] == GOODBYE


def restart_reader(h) -> None:
    h.service.reader = EventReader(h.config, on_event=h.service._deliver_event,
                                   on_link=h.service._link_changed)
    h.service.reader.start()
    # Stopped with the service even if the test fails first: a reader left running
    # would keep reconnecting through the tests that follow.
    h.service._on_stop("restarted event reader", h.service.reader.stop)


def test_a_call_parked_while_the_link_was_down_is_adopted(harness):
    h = harness()
    h.service.reader.stop()
    h.service.link_up.clear()
    uuid = h.place("5551150", "1")
    assert h.switch.wait_parked(uuid, timeout=WAIT_S)
    restart_reader(h)
    r = h.finish(uuid)
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]
    assert r.row["caller_id"] == "5551150", "the adopted call starts from the channel's own data"
    assert h.service.stats()["calls_adopted"] == 1
    h.service.reader.stop()


def test_a_call_parked_just_before_the_link_came_up_and_missing_from_its_listing_is_adopted(harness):
    """The switch lists channels from its core database, filled a little after the
    fact: a call parked just before the event link came up (its CHANNEL_PARK never
    seen) can be missing from the resync's listing. A second listing finds it; with
    one listing only, the caller waited in silence for ever (seen on the lab switch)."""
    h = harness()
    h.service.reader.stop()
    h.service.link_up.clear()
    h.switch.faults.listing_lag_s = 30.0  # the first listing leaves the call out
    uuid = h.place("5551151", "1")
    assert h.switch.wait_parked(uuid, timeout=WAIT_S)
    resyncs = h.service.stats()["resyncs"]
    restart_reader(h)
    assert wait_until(lambda: h.service.stats()["resyncs"] == resyncs + 1, WAIT_S)
    assert h.service.stats()["calls_adopted"] == 0, "the lagging listing left the call out"
    h.switch.faults.listing_lag_s = 0.0  # the core database has caught up
    r = h.finish(uuid)
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]
    assert h.service.stats()["calls_adopted"] == 1
    h.service.reader.stop()


def test_a_listing_that_fails_is_asked_again_until_it_comes_while_new_calls_flow(harness, in_main_menu,
                                                                                 caplog):
    """A switch too busy to list its channels after a reconnect: the supervisor asks
    again (backing off) until the listing comes, and meanwhile routes the events of
    calls parked after the reconnect, which go on at once."""
    h = harness()
    h.service.reader.stop()
    h.service.link_up.clear()
    parked = h.place("5551155", "1")
    assert h.switch.wait_parked(parked, timeout=WAIT_S)
    resyncs = h.service.stats()["resyncs"]
    h.switch.faults.api_errors["show"] = 4  # asked again after 0.5, 1, 1.5 and 2 s
    restart_reader(h)
    assert wait_until(lambda: "could not list live channels (attempt 1)" in caplog.text, WAIT_S)
    fresh = h.place("5551156", "1")
    in_main_menu("5551156")
    assert h.service.stats()["resyncs"] == resyncs, "the listing is still failing"
    assert h.finish(fresh).commands[-1] == ("transfer", "fifo_hst XML new_sales")
    r = h.finish(parked)
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")]
    assert "could not list live channels (attempt 4)" in caplog.text
    stats = h.service.stats()
    assert (stats["resyncs"], stats["calls_adopted"]) == (resyncs + 1, 1)
    h.service.reader.stop()


def test_an_adopted_call_whose_channel_cannot_be_read_is_looked_at_again_never_acted_on_blind(harness,
                                                                                          caplog):
    h = harness(ICALL_FREESWITCH_COMMAND_TIMEOUT_S="0.3")
    h.service.reader.stop()
    h.service.link_up.clear()
    uuid = h.place("5551157", "1")
    assert h.switch.wait_parked(uuid, timeout=WAIT_S)
    # Every read of the channel goes unanswered for a while (a stuck switch thread).
    h.switch.faults.api_unanswered["uuid_dump"] = 6
    restart_reader(h)
    r = h.finish(uuid)
    assert "taking over: could not read the channel" in caplog.text
    assert h.switch.faults.api_unanswered["uuid_dump"] == 0
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")], \
        "nothing was sent before the channel was read"
    h.service.reader.stop()


def test_a_prompt_queued_behind_its_checkpoint_and_never_started_is_sent_after_a_second_look(harness):
    """After a restart, the channel's last application is the checkpoint naming the main
    menu, but the menu never started (the killed process had not sent it): the new
    icall waits, reads the channel again, and only then sends the menu, once."""
    h = harness()
    h.service.reader.stop()
    h.service.link_up.clear()
    uuid = h.place("5551158", "1")
    assert h.switch.wait_parked(uuid, timeout=WAIT_S)
    checkpoint = json.dumps({"v": 1, "s": "main_menu_wait_dtmf", "g": 4, "n": 2, "e": 1,
                             "p": ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf"],
                             "w": [["menu-1", MAIN_MENU[0], MAIN_MENU[1], "main_menu"]], "d": {}},
                            separators=(",", ":"))
    api = h.service.services.commander_proxy().api
    for name, value in (("icall_ckpt", checkpoint), ("current_application", "set"),
                        ("current_application_data", f"icall_ckpt={checkpoint}")):
        assert api(f"uuid_setvar {uuid} {name} {value}").get(timeout=WAIT_S).startswith("+OK")
    restart_reader(h)
    r = h.finish(uuid)
    looks = [note for note in r.history if "resume:" in note or "read again:" in note]
    assert [note.split()[-1] for note in looks] == ["not_started", "not_started"], r.history
    assert r.commands == [MAIN_MENU, ("transfer", "fifo_hst XML new_sales")], "the menu once, then the key's way"
    h.service.reader.stop()


def test_a_call_that_hung_up_while_the_link_was_down_still_gets_its_cdr(harness, in_main_menu):
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000")
    uuid = h.place("5551160", "none")
    in_main_menu("5551160")
    # The flow has chosen the menu; wait until the switch has its prompt, or the hangup
    # below would meet the command on its way (refused: a different test).
    assert wait_until(lambda: any(app == "play_and_get_digits" for app, _ in h.switch.call_record(uuid).commands),
                      WAIT_S)
    h.service.reader.stop()
    h.switch.hangup(uuid, "NORMAL_CLEARING")
    assert h.switch.wait_hangup(uuid, timeout=WAIT_S)
    hung_up_at = utc_now()
    restart_reader(h)
    r = h.finish(uuid)
    assert r.row["hangup_cause"] == LOST_HANGUP_CAUSE
    assert r.row["final_state"] == "main_menu_wait_dtmf"
    # The best end known: when icall found the channel gone (it used to stay empty).
    assert hung_up_at <= r.row["ended_at"] <= utc_now()
    h.service.reader.stop()


def test_a_call_commander_that_dies_mid_call_is_replaced_and_the_call_goes_on(harness, in_main_menu):
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="20000", ICALL_FREESWITCH_COMMAND_CONNECTIONS="3")
    uuid = h.place("5551125", "1")
    in_main_menu("5551125")
    services = h.service.services
    assert len(services.call_commanders) == 3
    old = services.commander_for(uuid)
    index = services.call_commanders.index(old)
    old.stop(block=True, timeout=5)
    assert wait_until(lambda: services.call_commanders[index] is not old
                      and services.call_commanders[index].is_alive(), WAIT_S)
    r = h.finish(uuid)  # the menu's answer is carried out on the replacement
    assert r.commands[-1] == ("transfer", "fifo_hst XML new_sales")
    assert services.commander_for(uuid) is services.call_commanders[index]


def test_the_calls_commands_are_spread_over_the_connections_each_call_on_one():
    from actors.call_actor import CallServices

    config = make_config()
    services = CallServices(config=config, supervisor=None, commander="c0", db_writer=None,
                            crm=None, timers=None, call_commanders=["c0", "c1", "c2", "c3"])  # type: ignore[arg-type]
    uuids = [f"{n:08x}-1111-2222-3333-444455556666" for n in range(400)]
    chosen = [services.commander_for(u) for u in uuids]
    assert chosen == [services.commander_for(u) for u in uuids]  # always the same one
    assert {c: chosen.count(c) for c in set(chosen)}.keys() == {"c0", "c1", "c2", "c3"}
    assert min(chosen.count(c) for c in set(chosen)) > 60  # none left idle
    assert CallServices(config=config, supervisor=None, commander="only", db_writer=None,
                        crm=None, timers=None).commander_for(uuids[0]) == "only"  # type: ignore[arg-type]
