"""Checkpoints on the channel and resuming from them, driven without threads: a flow
taken over in each state does what the channel's fields say, never starts a command
while one of ours runs, and repeats a prompt at most once."""

from __future__ import annotations

import json

import pytest

from ivr import resume
from ivr.commands import bridge_settings
from ivr.effects import (
    Checkpoint,
    CrmAnswer,
    Execute,
    LookupCaller,
    ReadChannel,
    StartTimer,
    with_records,
)
from ivr.event import Event
from tests.ivr.calls import Driver, make_config

WELCOME = ("playback", "new_sales/1000.wav")
MAIN_MENU = ("play_and_get_digits", "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
EXTENSION = ("play_and_get_digits", "3 3 3 5000 # new_sales/2002.wav new_sales/9004.wav extn_number [68]\\d\\d")


# Apps icall sends that run for a while: while one runs, the switch keeps its
# `current_loop` counter set (cleared when it returns).
LOOPED_APPS = ("playback", "play_and_get_digits", "bridge")


def channel(driver: Driver, ended: bool = False, **variables: str) -> Event:
    """The call's `uuid_dump`: its park event's headers with the variables now set. A
    named app of ours is still running unless `ended` (its loop counter is then gone)."""
    headers = dict(driver.script.park().headers)
    headers["Event-Name"] = "CHANNEL_DATA"
    checkpoint = driver.checkpoints()[-1] if driver.checkpoints() else None
    if checkpoint is not None:
        headers["variable_icall_ckpt"] = json.dumps(checkpoint)
    if variables.get("current_application") in LOOPED_APPS and not ended:
        variables = {"current_loop": "1", "total_loops": "1", **variables}
    headers.update({f"variable_{k}": v for k, v in variables.items()})
    return Event(headers)


def successor(driver: Driver, ended: bool = False, **variables: str) -> tuple[Driver, list]:
    """A fresh flow taking the call over from the channel (what a new process does)."""
    dump = channel(driver, ended, **variables)
    verdict = resume.look(dump, "ivr_app", "icall", "final_loop")
    assert verdict.action == resume.RESUME, verdict
    fresh = Driver()
    fresh.script.variables.update(driver.script.variables)
    assert verdict.checkpoint is not None
    return fresh, fresh._take(fresh.flow.resume(verdict.checkpoint, dump))


def commands(effects: list) -> list[tuple[str, str]]:
    return [(e.app, e.arg) for e in effects if isinstance(e, Execute)]


def test_each_state_change_writes_one_compact_checkpoint_just_before_its_commands():
    driver = Driver()
    driver.choose("1")
    kinds = [type(e).__name__ for e in driver.effects if isinstance(e, (Checkpoint, Execute))]
    assert kinds == ["Checkpoint", "Execute", "Checkpoint", "Execute", "Checkpoint", "Execute"]
    states = [c["s"] for c in driver.checkpoints()]
    assert states == ["welcome_wait_playback", "main_menu_wait_dtmf", "final_loop"]
    texts = [e.text for e in driver.effects if isinstance(e, Checkpoint)]
    # Compact, with the last records riding along (see the next test): under 1 KiB.
    assert all(", " not in t and ": " not in t and len(t) < 1024 for t in texts), texts


def test_a_flows_checkpoint_leaves_its_records_to_the_actor_and_only_the_hand_off_is_a_set():
    """Every later event of the call carries the checkpoint: the records ride in it only
    while uncommitted, which the CallActor knows (its acks), not the flow. Only the
    hand-off is an application (a successor must see whether it ran); the rest are
    written by uuid_setvar, marked "a"."""
    driver = Driver()
    driver.choose("1")
    checkpoints = [e for e in driver.effects if isinstance(e, Checkpoint)]
    assert [c.handoff for c in checkpoints] == [False, False, True]
    assert all("r" not in json.loads(c.text) for c in checkpoints)
    assert [json.loads(c.text).get("a") for c in checkpoints] == [1, 1, None]


def test_records_ride_in_a_checkpoint_without_the_calls_uuid():
    text = with_records('{"v":1,"s":"x"}', [[3, "step", {"step": "MainMenu", "value": ""}]])
    assert json.loads(text) == {"v": 1, "s": "x", "r": [[3, "step", {"step": "MainMenu", "value": ""}]]}
    assert with_records('{"v":1}', []) == '{"v":1}'


def test_the_checkpoint_before_a_transfer_marks_the_call_handed_off_and_names_the_transfer():
    driver = Driver()
    driver.choose("1")
    last = driver.checkpoints()[-1]
    assert last["h"] == 1 and last["x"] == ["transfer", "fifo_hst XML new_sales"]


def test_no_checkpoint_is_written_for_a_hangup_or_after_it():
    driver = Driver()
    driver.to_main_menu()
    driver.complete("play_and_get_digits", read_result="failure")
    before = len(driver.checkpoints())
    driver.complete("playback", "FILE PLAYED")  # the goodbye: hang up
    assert driver.hangups() and len(driver.checkpoints()) == before


def test_a_handed_off_call_is_never_touched_nor_one_running_someone_elses_app():
    driver = Driver()
    driver.choose("2")  # no CRM extension: the sales queue
    dump = channel(driver, current_application="fifo", current_application_data="sales@x in")
    assert resume.look(dump, "ivr_app", "icall", "final_loop").action == resume.SKIP
    untouched = Driver()
    dump = channel(untouched, current_application="fifo")
    assert resume.look(dump, "ivr_app", "icall", "final_loop").action == resume.SKIP
    assert resume.look(channel(untouched, current_application="park"), "ivr_app", "icall",
                       "final_loop").action == resume.START
    other = channel(untouched, ivr_app="other", current_application="park")
    assert resume.look(other, "ivr_app", "icall", "final_loop").action == resume.SKIP


def test_a_hand_off_written_but_never_sent_is_sent_by_the_successor():
    driver = Driver()
    driver.choose("1")
    text = "icall_ckpt=" + json.dumps(driver.checkpoints()[-1])
    fresh, effects = successor(driver, current_application="set", current_application_data=text)
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]


def test_mid_welcome_the_successor_waits_for_the_running_welcome_and_goes_on():
    driver = Driver()
    driver.start()
    fresh, effects = successor(driver, current_application="playback",
                               current_application_data=WELCOME[1])
    assert commands(effects) == []
    assert LookupCaller("5551000") in effects, "the dead handler's lookup is asked again"
    welcome = driver.last("playback")
    effects = fresh.send(fresh.script.complete(welcome, "FILE PLAYED"))
    assert commands(effects) == [MAIN_MENU]


def test_a_welcome_that_ended_unseen_is_taken_as_ended_from_the_channel():
    driver = Driver()
    driver.start()
    fresh, effects = successor(driver, current_application="playback",
                               current_application_data=WELCOME[1],
                               current_application_response="FILE PLAYED")
    assert commands(effects) == [MAIN_MENU]
    assert fresh.flow.state == "main_menu_wait_dtmf"


def _menu_queued_behind_its_checkpoint() -> tuple[Driver, Driver, list]:
    driver = Driver()
    driver.to_main_menu()
    text = "icall_ckpt=" + json.dumps(driver.checkpoints()[-1])
    fresh, effects = successor(driver, current_application="set", current_application_data=text)
    return driver, fresh, effects


def test_a_prompt_found_behind_its_checkpoint_is_not_sent_again_before_a_second_look():
    """The checkpoint ran, the menu queued right behind it has not started yet: sending
    it now would play it twice. The channel is read again after a grace."""
    _, fresh, effects = _menu_queued_behind_its_checkpoint()
    assert commands(effects) == []
    grace = [e for e in effects if isinstance(e, StartTimer)]
    assert [(t.name.split(":")[0], t.delay_s) for t in grace] == [("queued", 2.0)]
    assert fresh.fire(grace[0]) == [ReadChannel()]


def test_a_prompt_still_not_started_at_the_second_look_is_sent_with_event_lock():
    driver, fresh, effects = _menu_queued_behind_its_checkpoint()
    fresh.fire([e for e in effects if isinstance(e, StartTimer)][0])
    text = "icall_ckpt=" + json.dumps(driver.checkpoints()[-1])
    effects = fresh._take(fresh.flow.on_channel(
        channel(driver, current_application="set", current_application_data=text)))
    sent = [e for e in effects if isinstance(e, Execute)]
    assert [(e.app, e.arg) for e in sent] == [MAIN_MENU] and sent[0].lock


def test_a_prompt_running_at_the_second_look_is_waited_for_and_its_digits_count():
    driver, fresh, effects = _menu_queued_behind_its_checkpoint()
    fresh.fire([e for e in effects if isinstance(e, StartTimer)][0])
    effects = fresh._take(fresh.flow.on_channel(
        channel(driver, current_application=MAIN_MENU[0], current_application_data=MAIN_MENU[1])))
    assert commands(effects) == []
    menu = driver.last("play_and_get_digits")
    effects = fresh.send(fresh.script.complete(menu, menu_number="1", read_result="success"))
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]


def test_a_prompt_completed_before_the_grace_ends_needs_no_second_look():
    driver, fresh, effects = _menu_queued_behind_its_checkpoint()
    menu = driver.last("play_and_get_digits")
    effects = fresh.send(fresh.script.complete(menu, menu_number="1", read_result="success"))
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]
    assert fresh.fire([e for e in fresh.timers() if e.name.startswith("queued:")][0]) == []


def test_a_dead_handlers_sent_prompt_is_waited_for_though_the_channel_has_not_started_it():
    """In-process, the Commander still sends what the dead handler gave it: found not
    started on the channel, it is queued, never sent a second time."""
    driver = Driver()
    driver.to_main_menu()
    snapshot = json.loads(json.dumps(driver.flow.handler_checkpoint()))
    assert snapshot["q"] == 1
    dump = channel(driver, current_application="playback", current_application_data=WELCOME[1],
                   current_application_response="FILE PLAYED")
    fresh = Driver()
    effects = fresh._take(fresh.flow.resume(snapshot, dump))
    assert commands(effects) == []
    menu = driver.last("play_and_get_digits")
    effects = fresh.send(fresh.script.complete(menu, menu_number="1", read_result="success"))
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]


def test_mid_menu_the_running_menu_is_waited_for_and_its_digits_count():
    driver = Driver()
    driver.to_main_menu()
    fresh, effects = successor(driver, current_application=MAIN_MENU[0],
                               current_application_data=MAIN_MENU[1])
    assert commands(effects) == []
    menu = driver.last("play_and_get_digits")
    effects = fresh.send(fresh.script.complete(menu, menu_number="1", read_result="success"))
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]


def test_a_menu_answered_unseen_is_acted_on_from_the_channel_without_a_repeat():
    driver = Driver()
    driver.to_main_menu()
    fresh, effects = successor(driver, current_application=MAIN_MENU[0],
                               current_application_data=MAIN_MENU[1],
                               read_result="success", menu_number="5")
    assert commands(effects) == [EXTENSION]


def test_a_menu_that_ended_unseen_is_played_again_once_then_the_usual_guard_applies():
    driver = Driver()
    driver.to_main_menu()
    fresh, effects = successor(driver, current_application=MAIN_MENU[0],
                               current_application_data=MAIN_MENU[1], read_result="failure")
    guard = [e for e in effects if isinstance(e, StartTimer)][0]
    assert guard.delay_s == 30.0, "three tries of the 5 s timeout and 5 s of prompts each"
    effects = fresh.fire(guard)
    assert commands(effects) == [MAIN_MENU]
    effects = fresh.fire([e for e in effects if isinstance(e, StartTimer)][0])
    assert commands(effects) == [("transfer", "fifo_sales XML new_sales")], "then the safe destination"


@pytest.mark.parametrize(("entered", "expected"), [
    ({"read_result": "failure", "menu_number_invalid": "9"}, ("playback", "new_sales/9003.wav")),
    ({"read_result": "success", "menu_number": "1"}, ("transfer", "fifo_hst XML new_sales")),
])
def test_a_menu_that_ended_while_no_one_listened_is_acted_on_at_once_whatever_its_result(entered, expected):
    """Three wrong keys while icall was down: the menu's loop counter is gone, so it
    ended (its read_result alone looks like a try in progress): the caller hears the
    invalid-choice prompt now, not a silence until the guard; a valid entry routes."""
    driver = Driver()
    driver.to_main_menu()
    fresh, effects = successor(driver, ended=True, current_application=MAIN_MENU[0],
                               current_application_data=MAIN_MENU[1], **entered)
    assert commands(effects) == [expected]


def test_a_cc_menu_left_unanswered_while_no_one_listened_sends_the_caller_where_no_answer_leads():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="802", read_result="success")
    driver.complete("bridge", originate_disposition="NO_ANSWER")
    cc_menu = driver.last("play_and_get_digits")
    fresh, effects = successor(driver, ended=True, current_application=cc_menu.app,
                               current_application_data=cc_menu.arg, read_result="failure")
    assert commands(effects) == [("transfer", "Quit XML new_sales")]


def test_a_ringing_bridge_is_waited_for_and_a_failed_one_found_ended_offers_the_cc_menu():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="802", read_result="success")
    bridge = driver.last("bridge")
    fresh, effects = successor(driver, current_application="bridge",
                               current_application_data=bridge.arg)
    assert commands(effects) == []
    fresh, effects = successor(driver, current_application="bridge",
                               current_application_data=bridge.arg,
                               originate_disposition="NO_ANSWER")
    assert commands(effects)[0][0] == "play_and_get_digits" and "8802.wav" in commands(effects)[0][1]


def test_a_bridge_that_never_started_is_sent_again_with_its_settings():
    """Killed between the checkpoint and the bridge's settings: the bridge alone would
    ring without call_timeout or hangup_after_bridge (the caller left parked after the
    conversation), so its settings go first again, once a second look finds it still
    not started (it may have been queued behind the settings)."""
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="801", read_result="success")
    settings = {"current_application": "set", "current_application_data": "ringback=%(2000,4000,440,480)"}
    fresh, effects = successor(driver, **settings)
    assert commands(effects) == []
    assert fresh.fire([e for e in effects if isinstance(e, StartTimer)][0]) == [ReadChannel()]
    effects = fresh._take(fresh.flow.on_channel(channel(driver, **settings)))
    assert commands(effects) == [*(("set", s) for s in bridge_settings(driver.config.ivr)),
                                 ("bridge", "user/801")]
    assert all(e.lock for e in effects if isinstance(e, Execute))


def test_a_prompt_not_started_behind_a_checkpoint_written_by_api_is_looked_at_again():
    """uuid_setvar leaves no trace among the channel's applications: the menu behind the
    checkpoint may be queued (the welcome is the last app seen), so it is not sent at
    once; a call offered again on a fresh socket (outbound) runs nothing queued before,
    and gets its menu at once."""
    driver = Driver()
    driver.to_main_menu()
    assert driver.checkpoints()[-1]["a"] == 1
    fresh, effects = successor(driver, current_application=WELCOME[0], current_application_data=WELCOME[1],
                               current_application_response="FILE PLAYED")
    assert commands(effects) == []
    assert [t.name.split(":")[0] for t in effects if isinstance(t, StartTimer)] == ["queued"]
    dump = channel(driver, current_application="socket", current_application_data="127.0.0.1:8084 async full")
    verdict = resume.look(dump, "ivr_app", "icall", "final_loop", offered=True)
    assert verdict.action == resume.RESUME and verdict.checkpoint is not None
    fresh = Driver()
    assert commands(fresh._take(fresh.flow.resume(verdict.checkpoint, dump))) == [MAIN_MENU]


def test_an_answered_bridge_marks_the_call_handed_off_beside_the_conversation_and_a_successor_skips_it():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="801", read_result="success")
    effects = driver.send(driver.script.bridge())
    marks = [e for e in effects if isinstance(e, Checkpoint)]
    assert len(marks) == 1 and not marks[0].handoff, "uuid_setvar: no app queued into a bridge"
    assert commands(effects) == []
    mark = json.loads(marks[0].text)
    assert (mark["h"], mark["s"]) == (1, "call_cc")
    dump = channel(driver, current_application="bridge", current_application_data="user/801")
    assert resume.look(dump, "ivr_app", "icall", "final_loop").action == resume.SKIP


def test_an_answered_bridge_is_left_to_talk_unguarded():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="801", read_result="success")
    bridge = driver.last("bridge")
    fresh, effects = successor(driver, current_application="bridge",
                               current_application_data=bridge.arg, originate_disposition="SUCCESS")
    assert commands(effects) == []
    guard = [e for e in effects if isinstance(e, StartTimer)][0]
    assert commands(fresh.fire(guard)) == [], "talk time is never guarded"


def test_a_call_waiting_for_the_crm_grace_asks_again_and_waits_again():
    driver = Driver(config=make_config(ivr_crm_grace_ms="800"))
    driver.choose("2")
    assert driver.flow.state == "call_sales"
    fresh = Driver(config=make_config(ivr_crm_grace_ms="800"))
    dump = channel(driver, current_application="play_and_get_digits",
                   current_application_data=MAIN_MENU[1], read_result="success", menu_number="2")
    verdict = resume.look(dump, "ivr_app", "icall", "final_loop")
    effects = fresh._take(fresh.flow.resume(verdict.checkpoint or {}, dump))
    assert LookupCaller("5551000") in effects
    assert [e.name for e in effects if isinstance(e, StartTimer)] == ["crm_grace"]
    effects = fresh.info(CrmAnswer(fresh.flow.uuid, "801"))
    assert commands(effects) == [("playback", "new_sales/1002.wav")]


def test_the_successor_numbers_its_writes_after_the_dead_handlers():
    driver = Driver()
    driver.to_main_menu()
    written = len([e for e in driver.effects if type(e).__name__ == "Record"])
    assert driver.checkpoints()[-1]["n"] == written


def test_a_call_parked_again_in_its_final_state_starts_the_flow_again_as_a_re_entry():
    driver = Driver()
    driver.choose("1")
    transferred_back = Event({**driver.script.park().headers, resume.PROFILE_INDEX: "3"})
    assert driver.send(driver.script.park()) == [], "its own park again: no re-entry"
    effects = driver.send(transferred_back)
    assert commands(effects) == [WELCOME]
    assert ("ReEntry", "2") in driver.steps()
    assert len(driver.records("call")) == 1, "the call keeps its first row"
    assert driver.flow.state == "welcome_wait_playback"


def test_a_dead_man_transfer_set_by_the_dialplan_is_cancelled_by_its_id_first_thing():
    driver = Driver()
    driver.script.variables["variable_icall_deadman_id"] = "42"
    effects = driver.start()
    assert commands(effects)[0] == ("sched_cancel", "42")


def offered_again(driver: Driver, profile_index: str) -> Event:
    """The connect data of a call the dialplan's next `socket` offers: the session runs
    `socket`, with the caller profile `profile_index`."""
    dump = channel(driver, current_application="socket",
                   current_application_data="127.0.0.1:8084 async full")
    return Event({**dump.headers, resume.PROFILE_INDEX: profile_index})


def test_one_look_for_both_modes_sends_a_hand_off_that_never_ran_on_a_call_offered_again():
    """Outbound: the transfer went out on a socket that closed before it ran, and the
    dialplan's second `socket` offered the call again, in the same extension (the same
    caller profile): the caller is transferred, not welcomed again."""
    driver = Driver()
    driver.choose("1")
    assert driver.checkpoints()[-1]["i"] == "1"
    dump = offered_again(driver, "1")
    verdict = resume.look(dump, "", "", "final_loop", offered=True)
    assert verdict.action == resume.RESUME, verdict
    fresh = Driver()
    assert verdict.checkpoint is not None
    effects = fresh._take(fresh.flow.resume(verdict.checkpoint, dump))
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]


def test_a_handed_off_call_transferred_back_to_the_socket_re_enters():
    driver = Driver()
    driver.choose("1")
    verdict = resume.look(offered_again(driver, "3"), "", "", "final_loop", offered=True)  # via a queue
    assert verdict.action == resume.REENTER, verdict


def test_a_hand_off_whose_mark_never_reached_the_switch_is_sent_by_the_actor_that_wrote_it():
    """The socket closed with the mark and the transfer unread: the channel still shows
    the menu's checkpoint, the actor its newer hand-off, which nothing on the switch ran."""
    driver = Driver()
    driver.to_main_menu()
    dump = offered_again(driver, "1")  # the main menu's checkpoint
    driver.complete("play_and_get_digits", menu_number="1", read_result="success")
    written = driver.flow.handler_checkpoint()
    del written["q"]  # as the actor does: what the closed socket carried may be lost
    verdict = resume.look(dump, "", "", "final_loop", offered=True, written=written)
    assert verdict.action == resume.RESUME and verdict.checkpoint == written, verdict
    fresh = Driver()
    effects = fresh._take(fresh.flow.resume(written, dump))
    assert commands(effects) == [("transfer", "fifo_hst XML new_sales")]
    older = resume.look(dump, "", "", "final_loop", offered=True, written=driver.checkpoints()[0])
    assert older.checkpoint is not None and older.checkpoint["s"] == "main_menu_wait_dtmf", \
        "a checkpoint older than the channel's says nothing"


def socket_runs_with(driver: Driver, before: dict[str, str], after: dict[str, str]) -> Event:
    """The connect data of a call offered again, its variables in the switch's order:
    `before` set before the last checkpoint ran, `after` since (the switch appends a
    variable set again at the end of the list)."""
    headers = {**driver.script.park().headers, "Event-Name": "CHANNEL_DATA"}
    headers.update({f"variable_{k}": v for k, v in before.items()})
    headers["variable_icall_ckpt"] = json.dumps(driver.checkpoints()[-1])
    headers.update({f"variable_{k}": v for k, v in after.items()})
    headers.update(variable_current_application="socket",
                   variable_current_application_data="127.0.0.1:8084 async full")
    return Event(headers)


def resumed_on(dump: Event) -> list:
    verdict = resume.look(dump, "", "", "final_loop", offered=True)
    assert verdict.action == resume.RESUME and verdict.checkpoint is not None, verdict
    fresh = Driver()
    return fresh._take(fresh.flow.resume(verdict.checkpoint, dump))


def test_a_valid_entry_a_menu_took_as_its_socket_closed_counts_when_the_call_is_offered_again():
    """The caller's entry ended the menu as its socket closed (before the switch's reset
    could cut it short): that choice is acted on, the menu is not played again."""
    driver = Driver()
    driver.to_main_menu()
    dump = socket_runs_with(driver, {}, {"read_result": "success", "menu_number": "1"})
    assert commands(resumed_on(dump)) == [("transfer", "fifo_hst XML new_sales")]


def test_a_ring_that_failed_after_its_socket_closed_offers_the_cc_menu_when_offered_again():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="802", read_result="success")
    dump = socket_runs_with(driver, {}, {"originate_disposition": "NO_ANSWER"})
    sent = commands(resumed_on(dump))
    assert len(sent) == 1 and sent[0][0] == "play_and_get_digits" and "8802.wav" in sent[0][1]


@pytest.mark.parametrize(("before", "after"), [
    ({"read_result": "success", "menu_number": "5"}, {}),  # the main menu's, before this state
    ({}, {"read_result": "failure"}),  # no valid entry, or cut short by the socket's close
])
def test_a_menu_offered_again_without_a_clear_answer_of_its_own_is_played_again(before, after):
    driver = Driver()
    driver.choose("5")
    assert commands(resumed_on(socket_runs_with(driver, before, after))) == [EXTENSION]


def test_a_dead_handlers_hand_off_still_on_its_way_is_not_sent_a_second_time():
    """In-process, the Commander still sends what the dead handler gave it (the mark and
    the transfer): the successor only listens, the caller is transferred once."""
    driver = Driver()
    driver.to_main_menu()
    dump = channel(driver, current_application="set",
                   current_application_data="icall_ckpt=" + json.dumps(driver.checkpoints()[-1]))
    driver.complete("play_and_get_digits", menu_number="1", read_result="success")
    on_its_way = json.loads(json.dumps(driver.flow.handler_checkpoint()))
    assert on_its_way["q"] == 1 and on_its_way["x"]
    verdict = resume.look(dump, "ivr_app", "icall", "final_loop", written=on_its_way)
    assert verdict.action == resume.SKIP, verdict
