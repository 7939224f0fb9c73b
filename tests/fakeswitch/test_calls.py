"""Calls, apps and scenarios of the stand-in, driven over real sockets."""

from __future__ import annotations

import uuid

import ESL

from .conftest import RawClient

PAGD = "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"


def sendmsg(client: RawClient, chan: str, app: str, arg: str, lock: bool = False) -> str:
    event_uuid = str(uuid.uuid4())
    text = (f"sendmsg {chan}\ncall-command: execute\nexecute-app-name: {app}\n"
            f"execute-app-arg: {arg}\nEvent-UUID: {event_uuid}")
    if lock:
        text += "\nevent-lock: true"
    assert client.command(text).outer["Reply-Text"] == "+OK"
    return event_uuid


def completion(client: RawClient, event_uuid: str):
    return client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                              and f.get("Application-UUID") == event_uuid)[-1]


def parked_call(switch, client: RawClient, **kwargs) -> str:
    client.command("event plain CHANNEL_PARK CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE "
                   "CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE")
    chan = switch.place_call(**kwargs)
    client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_PARK" and f.get("Unique-ID") == chan)
    return chan


def test_a_whole_recorded_ivr_call_runs_through_python_esl(switch):
    """park, playback, play_and_get_digits with a digit, failed bridge, transfer, hangup."""
    con = ESL.ESLconnection("127.0.0.1", str(switch.port), "ClueCon")
    assert con.connected()
    con.events("plain", "CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE")
    body = con.api("originate", "{origination_caller_id_number=5551000,"
                   "origination_caller_id_name=fs-lab}loopback/fsm/default &park").getBody()
    assert body.startswith("+OK ")
    chan = None
    while chan is None:
        event = con.recvEventTimed(5000)
        assert event is not None
        if event.getHeader("Event-Name") == "CHANNEL_PARK" and event.getHeader("variable_ivr_app") == "icall":
            chan = event.getHeader("Unique-ID")
    assert event.getHeader("Channel-Name") == "loopback/fsm-b"

    def run(app: str, arg: str, dtmf: str | None = None):
        event_uuid = str(uuid.uuid4())
        reply = con.sendRecv(f"sendmsg {chan}\ncall-command: execute\nexecute-app-name: {app}\n"
                             f"execute-app-arg: {arg}\nEvent-UUID: {event_uuid}")
        assert reply.getHeader("Reply-Text") == "+OK"
        if dtmf:
            switch.press(chan, dtmf)
        while True:
            event = con.recvEventTimed(5000)
            assert event is not None, f"no completion for {app}"
            if event.getHeader("Application-UUID") == event_uuid:
                return event

    done = run("playback", "new_sales/1000.wav")
    assert done.getHeader("Application-Response") == "FILE PLAYED"
    done = run("play_and_get_digits", PAGD, dtmf="2")
    assert done.getHeader("variable_menu_number") == "2"
    assert done.getHeader("variable_read_result") == "success"
    assert done.getHeader("Application-Response") == "_none_"
    run("set", "continue_on_fail=true")
    done = run("bridge", "user/803")
    for name in ("originate_disposition", "DIALSTATUS", "originate_failed_cause"):
        assert done.getHeader(f"variable_{name}") == "USER_NOT_REGISTERED"
    assert done.getHeader("Answer-State") == "answered"
    run("transfer", "fifo_sales XML new_sales")
    while True:
        event = con.recvEventTimed(5000)
        assert event is not None
        if event.getHeader("Event-Name") == "CHANNEL_HANGUP_COMPLETE" and event.getHeader("Unique-ID") == chan:
            break
    assert event.getHeader("Hangup-Cause") == "NORMAL_CLEARING"
    assert event.getHeader("variable_hangup_cause_q850") == "16"
    assert event.getHeader("Caller-Destination-Number") == "fifo_sales"
    assert int(event.getHeader("variable_billsec")) >= 0
    record = switch.call_record(chan)
    assert [app for app, _ in record.commands] == ["playback", "play_and_get_digits", "set",
                                                   "bridge", "transfer"]
    assert record.transferred_to == "fifo_sales"
    assert record.hangup_cause == "NORMAL_CLEARING"
    con.disconnect()


def test_fake_dtmf_presses_digits_per_prompt_and_none_gives_failure(switch, client):
    chan = parked_call(switch, client, variables={"fake_dtmf": "9|none"})
    done = completion(client, sendmsg(client, chan, "play_and_get_digits", PAGD.replace(" 3 ", " 1 ")))
    assert done.get("variable_menu_number_invalid") == "9"
    assert done.get("variable_read_result") == "failure"
    done = completion(client, sendmsg(client, chan, "play_and_get_digits",
                                      "1 1 1 500 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"))
    assert done.get("variable_read_result") == "failure"
    assert done.get("variable_menu_number") is None


def test_a_lone_terminator_reads_success_without_the_variable(switch, client):
    chan = parked_call(switch, client, variables={"fake_dtmf": "#"})
    done = completion(client, sendmsg(client, chan, "play_and_get_digits",
                                      "1 1 1 3000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"))
    assert done.get("variable_read_result") == "success"
    assert done.get("variable_menu_number") is None


def test_a_failed_bridge_without_continue_on_fail_hangs_up_before_completing(switch, client):
    chan = parked_call(switch, client)
    event_uuid = sendmsg(client, chan, "bridge", "user/801x")
    frames = client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE")
    names = [(f.get("Event-Name"), f.get("Application")) for f in frames if f.get("Unique-ID") == chan]
    assert names == [("CHANNEL_EXECUTE", "bridge"), ("CHANNEL_HANGUP", None),
                     ("CHANNEL_EXECUTE_COMPLETE", "bridge"), ("CHANNEL_EXECUTE_COMPLETE", "park"),
                     ("CHANNEL_HANGUP_COMPLETE", None)]
    assert frames[-1].get("Hangup-Cause") == "USER_NOT_REGISTERED"
    assert any(f.get("Application-UUID") == event_uuid for f in frames)


def test_a_registered_answering_user_bridges_and_hangup_after_bridge_ends_the_call(switch, client):
    chan = parked_call(switch, client)
    sendmsg(client, chan, "set", "hangup_after_bridge=true")
    done = completion(client, sendmsg(client, chan, "bridge", "user/801"))
    assert done.get("variable_originate_disposition") == "SUCCESS"
    assert switch.wait_hangup(chan, timeout=10)
    assert switch.call_record(chan).bridged_to == "801"


def test_a_user_that_does_not_answer_gives_no_answer(switch, client):
    chan = parked_call(switch, client)
    sendmsg(client, chan, "set", "continue_on_fail=true")
    done = completion(client, sendmsg(client, chan, "bridge", "user/802"))
    assert done.get("variable_DIALSTATUS") == "NO_ANSWER"


def test_without_event_lock_a_second_app_nests_inside_the_first(switch, client):
    chan = parked_call(switch, client)
    first = sendmsg(client, chan, "playback", "new_sales/1000.wav")
    second = sendmsg(client, chan, "playback", "new_sales/1001.wav")
    frames = client.event_until(lambda f: f.get("Application-UUID") == first
                                and f.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE")
    order = [(f.get("Event-Name"), f.get("Application-UUID")) for f in frames
             if f.get("Application") == "playback"]
    assert order == [("CHANNEL_EXECUTE", first), ("CHANNEL_EXECUTE", second),
                     ("CHANNEL_EXECUTE_COMPLETE", second), ("CHANNEL_EXECUTE_COMPLETE", first)]


def test_with_event_lock_queued_apps_run_in_order(switch, client):
    chan = parked_call(switch, client)
    first = sendmsg(client, chan, "playback", "new_sales/1000.wav", lock=True)
    second = sendmsg(client, chan, "playback", "new_sales/1001.wav", lock=True)
    frames = client.event_until(lambda f: f.get("Application-UUID") == second
                                and f.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE")
    order = [(f.get("Event-Name"), f.get("Application-UUID")) for f in frames
             if f.get("Application") == "playback"]
    assert order == [("CHANNEL_EXECUTE", first), ("CHANNEL_EXECUTE_COMPLETE", first),
                     ("CHANNEL_EXECUTE", second), ("CHANNEL_EXECUTE_COMPLETE", second)]


def test_an_unknown_app_hangs_the_channel_up_without_execute_events(switch, client):
    chan = parked_call(switch, client)
    sendmsg(client, chan, "no_such_app", "x")
    frames = client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE")
    assert frames[-1].get("Hangup-Cause") == "DESTINATION_OUT_OF_ORDER"
    assert not any(f.get("Application") == "no_such_app" for f in frames)


def test_fake_hangup_after_s_hangs_the_caller_up(switch):
    chan = switch.place_call(variables={"fake_hangup_after_s": "1"})
    assert switch.wait_hangup(chan, timeout=10)
    assert switch.call_record(chan).hangup_cause == "NORMAL_CLEARING"
    assert chan not in switch.live_calls()


def test_parked_calls_survive_dropped_clients_and_are_found_again(switch, client):
    chan = parked_call(switch, client)
    switch.drop_clients()
    again = RawClient(switch.port)
    again.login()
    assert again.command(f"api uuid_exists {chan}").body == b"true"
    listing = again.command("api show channels as json").body.decode()
    assert chan in listing and '"application":"park"' in listing
    dump = again.command(f"api uuid_dump {chan}").body.decode()
    assert "variable_ivr_app: icall" in dump
    assert again.command(f"api uuid_getvar {chan} ivr_app").body == b"icall"
    assert again.command(f"api uuid_kill {chan}").body == b"+OK\n"
    assert switch.wait_hangup(chan, timeout=10)
    assert again.command(f"api uuid_dump {chan}").body == b"-ERR No such channel!\n"
    again.close()


def test_uuid_break_stops_a_playback_early(switch, client):
    chan = parked_call(switch, client)
    switch.switch.time_scale = 1.0  # a long prompt that only a break can end quickly
    event_uuid = sendmsg(client, chan, "playback", "long.wav")
    client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_EXECUTE")
    client.command(f"api uuid_break {chan}")
    done = completion(client, event_uuid)
    assert done.get("variable_playback_seconds") == "0"


def test_uuid_send_dtmf_on_the_far_end_reaches_the_running_prompt(switch, client):
    chan = parked_call(switch, client)
    switch.switch.time_scale = 1.0  # a prompt long enough for the DTMF to land in it
    far_end = client.command(f"api uuid_getvar {chan} other_loopback_leg_uuid").body.decode()
    event_uuid = sendmsg(client, chan, "play_and_get_digits", PAGD)
    client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_EXECUTE")
    assert client.command(f"api uuid_send_dtmf {far_end} 3").body == b"+OK\n"
    done = completion(client, event_uuid)
    assert done.get("variable_menu_number") == "3"
    assert done.get("variable_read_result") == "success"


def test_hupall_hangs_every_call_up_with_the_cause_given(switch, client):
    calls = [parked_call(switch, client, caller_id=n) for n in ("5551001", "5551002")]
    reply = client.command("api hupall MANAGER_REQUEST").body
    assert reply == b"+OK hangup all channels with cause MANAGER_REQUEST\n"
    assert all(switch.wait_hangup(chan) for chan in calls)
    assert [switch.call_record(chan).hangup_cause for chan in calls] == ["MANAGER_REQUEST"] * 2
    assert switch.live_calls() == []
