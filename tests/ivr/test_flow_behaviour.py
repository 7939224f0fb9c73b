"""The behaviour under the flows: completions matched by Application-UUID, timers with
generations, refused commands, checkpoints. Driven without threads."""

from __future__ import annotations

import json

import pytest

from ivr.effects import CancelTimer, CrmAnswer, Execute, Hangup, StartTimer
from ivr.flow import Completed, Enter, Flow, FlowContext, FlowError, Happening
from ivr.flows import make_flow
from ivr.icall import IcallFlow
from tests.ivr.calls import CallScript, Driver, capture_events, make_config


class TwoPrompts(Flow):
    """Plays two prompts back to back without event-lock and notes which completed."""

    name = "two_prompts"
    states = ("playing", "done")
    initial_state = "playing"
    final_state = "done"

    def __init__(self, uuid: str, ctx: FlowContext):
        super().__init__(uuid, ctx)
        self.completed: list[tuple[str, str]] = []

    def playing(self, happened: Happening) -> None:
        match happened:
            case Enter():
                self.execute("playback", "new_sales/1000.wav", await_as="first")
                self.execute("playback", "new_sales/1001.wav", await_as="second")
            case Completed(label, event):
                self.completed.append((label, event.get("Application-Data")))
                if len(self.completed) == 2:
                    self.goto("done")

    def done(self, happened: Happening) -> None:
        pass


def two_prompts() -> tuple[TwoPrompts, list]:
    ids = iter(f"ours-{n}" for n in range(100))
    ctx = FlowContext(make_config(), now=lambda: None, time_conditions=lambda: (),
                      new_id=lambda: next(ids))
    flow = TwoPrompts("b4fabb8a-53ff-4f48-91a9-33c7b0d9dd67", ctx)
    return flow, flow.start(CallScript(flow.uuid).park())


def test_two_queued_playbacks_completing_out_of_order_each_reach_their_own_waiter():
    flow, effects = two_prompts()
    first, second = [e for e in effects if isinstance(e, Execute)]
    # The real switch, without event-lock, ran the second inside the first and
    # finished it first (captures/inbound_plain_event_lock); re-address those events.
    recorded = {"04345c10-06db-4e4c-a348-54a9977b4d81": first.event_uuid,
                "2d5a9438-ef7c-41df-bdcf-09fef927dc9f": second.event_uuid}
    real = [e for e in capture_events("inbound_plain_event_lock")
            if e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-UUID") in recorded]
    assert [e.get("Application-Data") for e in real][:2] == ["new_sales/1001.wav", "new_sales/1000.wav"]
    for event in real[:2]:
        event.headers["Application-UUID"] = recorded[event.get("Application-UUID")]
        flow.on_event(event)
    assert flow.completed == [("second", "new_sales/1001.wav"), ("first", "new_sales/1000.wav")]
    assert flow.state == "done"


def test_a_completion_is_matched_by_its_id_not_by_the_app_name():
    flow, effects = two_prompts()
    first = [e for e in effects if isinstance(e, Execute)][0]
    foreign = CallScript(flow.uuid).complete(Execute("playback", first.arg, "not-ours"), "FILE PLAYED")
    assert flow.on_event(foreign) == []
    assert flow.completed == []


def test_every_awaited_command_gets_a_guard_carrying_the_settled_state_generation():
    driver = Driver()
    effects = driver.start()
    playback = driver.last("playback")
    guards = [e for e in effects if isinstance(e, StartTimer)]
    assert guards == [StartTimer(f"command:{playback.event_uuid}", 120.0,
                                 driver.flow.checkpoint()["g"])]


def test_a_command_that_never_completes_sends_the_caller_to_the_safe_destination():
    driver = Driver(config=make_config(ivr_safe_destination="operator XML default"))
    driver.to_main_menu()
    guard = driver.timers()[-1]
    effects = driver.fire(guard)
    assert [(e.app, e.arg) for e in effects if isinstance(e, Execute)] == [
        ("transfer", "operator XML default")]
    assert driver.steps()[-1][0] == "CommandTimeout"
    assert "play_and_get_digits" in driver.steps()[-1][1]
    assert driver.flow.state == "final_loop"
    # the prompt's completion, arriving at last, changes nothing
    assert [e for e in driver.complete("play_and_get_digits", menu_number="1",
                                       read_result="success") if isinstance(e, Execute)] == []


def test_a_guard_that_fires_after_a_state_change_is_stale_and_dropped():
    driver = Driver()
    driver.start()
    welcome_guard = driver.timers()[0]
    driver.complete("playback", "FILE PLAYED")
    assert driver.fire(welcome_guard) == []
    assert any("stale timer" in line for line in driver.flow.history)
    assert driver.flow.state == "main_menu_wait_dtmf"


def test_a_command_that_completes_cancels_its_guard():
    # Left to fire, each guard lived command_timeout_s (120 s) past its command.
    driver = Driver()
    driver.start()
    guard = driver.timers()[0]
    effects = driver.complete("playback")
    assert CancelTimer(guard.name) in effects


def test_a_guard_whose_command_completed_is_dropped_even_in_the_same_state():
    driver = Driver()
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="801", read_result="success")
    bridge_guard = driver.timers()[-1]
    driver.complete("bridge", originate_disposition="NO_ANSWER")
    assert driver.flow.state == "call_cc"  # still: the cc menu is playing
    assert driver.fire(bridge_guard) == []


def test_a_refused_awaited_command_sends_the_caller_to_the_safe_destination():
    driver = Driver()
    driver.to_main_menu()
    prompt = driver.last("play_and_get_digits")
    effects = driver.flow.on_command_failed(prompt.event_uuid, "-ERR no reply")
    assert [(e.app, e.arg) for e in effects if isinstance(e, Execute)] == [
        ("transfer", "fifo_sales XML new_sales")]
    assert driver.flow.state == "final_loop"


def test_a_refused_rescue_hangs_the_caller_up_rather_than_leaving_them_parked():
    driver = Driver()
    driver.to_main_menu()
    rescue = driver.flow.on_command_failed(driver.last("play_and_get_digits").event_uuid, "-ERR")
    transfer = [e for e in rescue if isinstance(e, Execute)][0]
    effects = driver.flow.on_command_failed(transfer.event_uuid, "-ERR still no")
    assert effects == [Hangup("NORMAL_TEMPORARY_FAILURE")]


def test_a_refusal_after_hangup_issues_nothing():
    driver = Driver()
    driver.to_main_menu()
    driver.send(driver.script.hangup())
    assert driver.flow.on_command_failed(driver.last("play_and_get_digits").event_uuid, "-ERR") == []


def test_the_recorded_call_driven_without_threads_reaches_the_sales_queue():
    """captures/inbound_plain_ivr replayed: the caller pressed 2, the CRM knew nothing.
    The recorded controller's set and bridge are someone else's commands here, and the
    dialplan's own apps after the transfer are not ours either: all are ignored."""
    driver = Driver()
    driver.start()
    driver.info(CrmAnswer(driver.flow.uuid, None, "not found"))
    leg = driver.flow.uuid
    recorded = iter(["8ab8a470-fb42-4ce5-af52-4c0210062eb4", "ea2f934d-6cfa-44d4-b3e6-4e53bb9f10c6",
                     "9c1390a7-844a-457b-8d79-af3170cc3689"])
    ours: dict[str, str] = {}
    for event in capture_events("inbound_plain_ivr"):
        if event.uuid != leg or event.name == "CHANNEL_PARK":
            continue
        application_uuid = event.get("Application-UUID")
        if application_uuid in ours:
            event.headers["Application-UUID"] = ours[application_uuid]
        driver.send(event)
        sent = [e for e in driver.effects if isinstance(e, Execute)]
        if len(sent) > len(ours):  # the flow issued its next command: map it
            ours[next(recorded)] = sent[len(ours)].event_uuid
    assert driver.executes() == [
        ("playback", "new_sales/1000.wav"),
        ("play_and_get_digits", "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"),
        ("transfer", "fifo_sales XML new_sales"),
    ]
    assert driver.steps() == [("Workday", "09:00-20:30"), ("MainMenu", ""), ("MainMenu", "2"),
                              ("SalesFifo", "")]
    cdr = driver.records("cdr")[0].fields
    assert (cdr["hangup_cause"], cdr["duration_s"], cdr["final_state"]) == ("NORMAL_CLEARING", 4, "final_loop")
    assert driver.flow.finished and len(driver.finished()) == 1
    assert "complete playback: FILE PLAYED" in driver.flow.history


def test_a_flow_told_not_to_keep_its_notes_keeps_none_and_acts_the_same():
    # The service keeps the notes only when someone reads them (service.app): they were
    # two dozen strings a live call.
    def play(driver: Driver) -> None:
        driver.start()
        driver.complete("playback")
        driver.complete("play_and_get_digits", menu_number="1")
        driver.send(driver.script.hangup_complete())

    kept, unkept = Driver(), Driver(keep_history=False)
    play(kept)
    play(unkept)
    assert kept.flow.history and unkept.flow.history == []
    assert unkept.effects == kept.effects and unkept.flow.finished


def test_a_checkpoint_is_json_and_a_resumed_flow_listens_in_final_loop_until_hangup():
    driver = Driver()
    driver.start()
    driver.info(CrmAnswer(driver.flow.uuid, "801"))
    driver.complete("playback", "FILE PLAYED")
    snapshot = json.loads(json.dumps(driver.flow.handler_checkpoint()))
    assert snapshot["s"] == "main_menu_wait_dtmf"
    assert snapshot["d"]["crm_extension"] == "801"
    resumed = Driver()
    resumed.flow.resume_after_failure(snapshot)
    assert resumed.flow.state == "final_loop"
    effects = resumed.send(resumed.script.hangup_complete())
    cdr = [e for e in effects if getattr(e, "kind", "") == "cdr"][0].fields
    assert cdr["caller_id"] == "5551000" and cdr["crm_extension"] == "801"
    assert cdr["path"][-1] == "final_loop" and "main_menu_wait_dtmf" in cdr["path"]
    assert [e for e in effects if isinstance(e, Execute)] == []


def test_a_resumed_flow_survives_a_checkpoint_that_holds_only_the_state():
    driver = Driver()
    driver.flow.resume_after_failure({"s": "call_cc"})
    assert driver.flow.state == "final_loop"
    assert driver.send(driver.script.hangup_complete())[-1].__class__.__name__ == "Finished"


def test_make_flow_knows_icall_and_refuses_an_unknown_flow():
    ctx = Driver().flow.ctx
    assert isinstance(make_flow("icall", "u", ctx), IcallFlow)
    with pytest.raises(FlowError):
        make_flow("nope", "u", ctx)


def test_going_to_an_unknown_state_is_a_flow_error():
    with pytest.raises(FlowError):
        Driver().flow.goto("limbo")


def bridged_to_802(config=None) -> Driver:
    driver = Driver(config=config)
    driver.choose("5")
    driver.complete("play_and_get_digits", extn_number="802", read_result="success")
    return driver


def test_a_bridge_is_guarded_for_its_ring_time_not_for_the_command_timeout():
    driver = bridged_to_802(make_config(ivr_ring_timeout_s="20", ivr_command_timeout_s="10"))
    bridge = driver.last("bridge")
    assert driver.timers()[-1].name == f"command:{bridge.event_uuid}"
    assert driver.timers()[-1].delay_s == 20 + 10  # the ring time, then the usual allowance
    assert ("set", "call_timeout=20") in driver.executes()


def test_an_answered_bridge_talking_past_its_guard_is_left_alone_and_ends_normally():
    driver = bridged_to_802()
    guard = driver.timers()[-1]
    # The ring guard is dropped, and only the hand-off mark, beside the conversation
    # (uuid_setvar), is written.
    effects = driver.send(driver.script.bridge())
    assert [type(e).__name__ for e in effects] == ["CancelTimer", "Checkpoint"]
    assert effects[0] == CancelTimer(guard.name)
    # Should the guard fire anyway, the conversation outlives it: nothing is sent,
    # nothing is recorded.
    assert driver.fire(guard) == []
    assert "CommandTimeout" not in [step for step, _ in driver.steps()]
    assert driver.flow.state == "call_cc"
    driver.complete("bridge", originate_disposition="SUCCESS")
    driver.send(driver.script.hangup())
    driver.send(driver.script.hangup_complete())
    assert driver.executes()[-1] == ("bridge", "user/802")
    cdr = driver.records("cdr")[0].fields
    assert cdr["hangup_cause"] == "NORMAL_CLEARING"
    assert cdr["final_state"] == "final_loop"


def test_a_bridge_that_rings_past_its_guard_without_an_answer_goes_to_safety():
    driver = bridged_to_802(make_config(ivr_safe_destination="operator XML default"))
    effects = driver.fire(driver.timers()[-1])
    assert [(e.app, e.arg) for e in effects if isinstance(e, Execute)] == [
        ("transfer", "operator XML default")]
    assert driver.steps()[-1][0] == "CommandTimeout"


def test_a_bridge_of_another_channel_does_not_end_our_ring_guard():
    driver = bridged_to_802()
    foreign = driver.script.bridge()
    foreign.headers["Unique-ID"] = "someone-else"
    driver.send(foreign)
    effects = driver.fire(driver.timers()[-1])
    assert driver.steps()[-1][0] == "CommandTimeout"
    assert any(isinstance(e, Execute) and e.app == "transfer" for e in effects)


def test_a_set_cannot_be_awaited_because_its_completion_is_filtered_out_at_the_switch():
    driver = Driver()
    driver.start()
    with pytest.raises(FlowError, match="never delivered"):
        driver.flow.execute("set", "x=1", await_as="never")


def test_a_channel_found_gone_ends_its_call_at_the_time_it_was_seen_gone_with_the_cause_given():
    # The best end known for a hangup nobody saw: when icall found the channel gone
    # (an empty ended_at made the CDR useless to billing).
    d = Driver()
    d.start()
    d.to_main_menu()
    d._take(d.flow.on_channel_gone("UNKNOWN (hangup not seen: test)", 1_765_000_000.25))
    (cdr,) = d.records("cdr")
    assert cdr.fields["ended_at"] == 1_765_000_000.25
    assert cdr.fields["hangup_cause"] == "UNKNOWN (hangup not seen: test)"
