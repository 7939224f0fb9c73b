"""The standalone command line, and outbound mode's failure paths."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid

from fakeswitch import FakeSwitch
from fakeswitch.__main__ import parse_users

from .conftest import TIMEOUT_S, RawClient


def test_users_are_parsed_with_answer_as_the_default_behaviour():
    assert parse_users("801=answer:1, 802=noanswer,803") == {
        "801": "answer:1", "802": "noanswer", "803": "answer:2"}


def test_the_command_line_serves_the_users_it_was_given():
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeswitch", "--listen", "127.0.0.1:0", "--time-scale", "0.02",
         "--users", "801=answer:1,802=noanswer:1"],
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # "... listening on 127.0.0.1:<port>"
        port = int(re.search(r"listening on [\d.]+:(\d+)", line).group(1))
        client = RawClient(port)
        client.login()
        client.command("event plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE")
        client.command("bgapi originate {origination_caller_id_number=5551000}loopback/fsm/default &park")
        chan = client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_PARK"
                                  and f.get("variable_ivr_app") == "icall")[-1].get("Unique-ID")
        results = {}
        for user in ("801", "802", "803"):
            event_uuid = str(uuid.uuid4())
            client.command(f"sendmsg {chan}\ncall-command: execute\nexecute-app-name: set\n"
                           f"execute-app-arg: continue_on_fail=true")
            client.command(f"sendmsg {chan}\ncall-command: execute\nexecute-app-name: bridge\n"
                           f"execute-app-arg: user/{user}\nEvent-UUID: {event_uuid}")
            done = client.event_until(lambda f, e=event_uuid: f.get("Application-UUID") == e
                                      and f.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE")[-1]
            results[user] = done.get("variable_originate_disposition")
        assert results == {"801": "SUCCESS", "802": "NO_ANSWER", "803": "USER_NOT_REGISTERED"}
        client.close()
    finally:
        proc.terminate()
        assert proc.wait(TIMEOUT_S) == 0


def test_an_unreachable_outbound_target_lets_the_dialplan_go_on_and_end_the_call():
    # mod_event_socket's socket app returns when it cannot connect; fsm_out has nothing
    # after it, so the channel "executed the last dialplan instruction" and hangs up.
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with FakeSwitch(time_scale=0.02, outbound_target=("127.0.0.1", port)) as switch:
        chan = switch.place_call(dest="fsm_out")
        assert switch.wait_hangup(chan)
        assert switch.call_record(chan).hangup_cause == "NORMAL_CLEARING"


def test_an_unreachable_outbound_target_sends_icall_out_to_its_safe_destination():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with FakeSwitch(time_scale=0.02, outbound_target=("127.0.0.1", port)) as switch:
        chan = switch.place_call(dest="icall_out")
        assert switch.wait_hangup(chan)
        assert switch.call_record(chan).transferred_to == "fifo_sales"


def test_a_controller_that_closes_its_outbound_socket_ends_the_call():
    with socket.create_server(("127.0.0.1", 0)) as target:
        target.settimeout(TIMEOUT_S)
        with FakeSwitch(time_scale=0.02, outbound_target=target.getsockname()[:2]) as switch:
            chan = switch.place_call(dest="fsm_out")
            conn, _ = target.accept()
            session = RawClient(None, conn)
            assert session.command("connect").outer["Socket-Mode"] == "async"
            assert session.command("getvar uuid").outer["Reply-Text"] == chan
            session.close()
            assert switch.wait_hangup(chan)
            assert switch.call_record(chan).hangup_cause == "NORMAL_CLEARING"


def test_a_sync_socket_runs_the_app_before_replying_and_ignores_async_messages():
    with socket.create_server(("127.0.0.1", 0)) as target:
        target.settimeout(TIMEOUT_S)
        with FakeSwitch(time_scale=0.02, outbound_target=target.getsockname()[:2]) as switch:
            chan = switch.place_call(dest="fsm_out_sync")
            conn, _ = target.accept()
            session = RawClient(None, conn)
            session.command("connect")
            session.command("myevents")
            first = str(uuid.uuid4())
            reply = session.command(f"sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
                                    f"execute-app-arg: new_sales/1000.wav\nEvent-UUID: {first}")
            assert reply.outer["Reply-Text"] == "+OK"
            assert not session.backlog  # the app's events follow the reply
            after = [session.frame() for _ in range(2)]
            assert [f.get("Event-Name") for f in after] == ["CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"]
            session.command("sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
                            "execute-app-arg: new_sales/1000.wav\nasync: true")
            assert session.nothing_arrives(0.5)
            assert switch.call_record(chan).commands == [("playback", "new_sales/1000.wav")]
            session.close()
