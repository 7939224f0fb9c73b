"""The stand-in's inbound ESL protocol, over a real socket."""

from __future__ import annotations

import uuid

from fakeswitch import FakeSwitch
from fakeswitch.wire import CommandParser, url_encode

from .conftest import RawClient


def test_values_are_url_encoded_like_freeswitch_keeping_existing_escapes():
    assert url_encode("fd00::2") == "fd00%3A%3A2"
    assert url_encode("1 1 3 5000 # a/b.wav m [1-5]") == "1%201%203%205000%20%23%20a/b.wav%20m%20%5B1-5%5D"
    assert url_encode("tone_stream://%(1000,4000,440)") == "tone_stream%3A//%25(1000,4000,440)"
    assert url_encode("already%20encoded") == "already%20encoded"


def test_commands_split_at_any_byte_offset_parse_the_same():
    text = b"auth ClueCon\n\nsendmsg x\ncall-command: execute\nexecute-app-name: set\n\n"
    for cut in range(1, len(text)):
        parser = CommandParser()
        commands = parser.feed(text[:cut]) + parser.feed(text[cut:])
        assert [c.line for c in commands] == ["auth ClueCon", "sendmsg x"]
        assert commands[1].headers["execute-app-name"] == "set"


def test_a_wrong_password_gets_err_invalid_a_notice_and_a_close(switch):
    raw = RawClient(switch.port)
    reply = raw.login("WrongPassword")
    assert reply.outer["Reply-Text"] == "-ERR invalid"
    assert raw.frame().content_type == "text/disconnect-notice"
    assert raw.closed()


def test_junk_a_bare_api_and_a_bare_myevents_get_command_not_found(client):
    for text in ("foobar", "api", "myevents"):
        assert client.command(text).outer["Reply-Text"] == "-ERR command not found"


def test_sendmsg_to_an_unknown_uuid_gets_the_recorded_error(client):
    zero = "00000000-0000-0000-0000-000000000000"
    reply = client.command(f"sendmsg {zero}\ncall-command: execute\nexecute-app-name: playback")
    assert reply.outer["Reply-Text"] == f"-ERR invalid session id [{zero}]"


def test_an_unknown_api_gets_the_recorded_error_text(client):
    reply = client.command("api no_such_api_command")
    assert reply.content_type == "api/response"
    assert reply.body == b"-ERR no_such_api_command Command not found!\n"


def test_exit_says_bye_then_the_disconnect_notice(client):
    assert client.command("exit").outer["Reply-Text"] == "+OK bye"
    assert client.frame().content_type == "text/disconnect-notice"
    assert client.closed()


def test_a_peer_outside_the_allow_list_gets_a_rude_rejection():
    with FakeSwitch(allow=["192.0.2.99"]) as sw:
        raw = RawClient(sw.port)
        assert raw.frame().content_type == "text/rude-rejection"
        assert raw.closed()


def test_bgapi_reuses_the_client_job_uuid_in_reply_and_background_job(client):
    job = str(uuid.uuid4())
    client.command("event plain BACKGROUND_JOB")
    reply = client.command(f"bgapi status\nJob-UUID: {job}")
    assert reply.outer["Reply-Text"] == f"+OK Job-UUID: {job}"
    frames = client.event_until(lambda f: f.get("Event-Name") == "BACKGROUND_JOB")
    assert frames[-1].get("Job-UUID") == job
    assert b"\n\nUP " in frames[-1].body


def test_bgapi_originate_of_an_unregistered_user_reports_the_cause(client):
    client.command("event plain BACKGROUND_JOB")
    client.command("bgapi originate user/803 &park")
    frames = client.event_until(lambda f: f.get("Event-Name") == "BACKGROUND_JOB")
    assert frames[-1].body.endswith(b"-ERR USER_NOT_REGISTERED\n")


def test_words_after_custom_are_subclasses_so_channel_events_are_not_subscribed(switch, client):
    client.command("event plain CUSTOM fifo::info CHANNEL_PARK")
    other = RawClient(switch.port)
    other.login()
    other.command("event plain CHANNEL_PARK")
    switch.place_call(caller_id="5551000")
    other.event_until(lambda f: f.get("Event-Name") == "CHANNEL_PARK")
    assert client.nothing_arrives(0.5)
    other.close()


def test_filters_or_together_and_a_minus_value_vetoes(switch, client):
    client.command("event plain CHANNEL_PARK")
    reply = client.command("filter Caller-Caller-ID-Number 222")
    assert reply.outer["Reply-Text"] == "+OK filter added. [Caller-Caller-ID-Number]=[222]"
    client.command("filter Caller-Caller-ID-Number 333")
    client.command("filter Caller-Caller-ID-Number -333")
    for number in ("111", "333", "222"):
        switch.place_call(caller_id=number)
    seen = client.event_until(lambda f: f.get("Caller-Caller-ID-Number") == "222")
    numbers = [f.get("Caller-Caller-ID-Number") for f in seen if f.event]
    assert numbers == ["222"]


def test_a_regex_filter_matches_header_values(switch, client):
    client.command("event plain CHANNEL_PARK")
    client.command("filter Caller-Caller-ID-Number /^55/")
    switch.place_call(caller_id="4400")
    switch.place_call(caller_id="5500")
    seen = client.event_until(lambda f: f.get("Event-Name") == "CHANNEL_PARK")
    assert [f.get("Caller-Caller-ID-Number") for f in seen if f.event] == ["5500"]


def test_the_set_veto_leaves_set_completions_at_the_switch_and_passes_the_rest():
    """icall's subscription vetoes `Application: set`: the stand-in must drop exactly
    those events, as mod_event_socket's filters do."""
    from actors.esl import subscription_commands
    from fakeswitch.events import Event, Subscription

    sub = Subscription()
    for line in subscription_commands("ivr_app", "icall")[1:]:
        _, header, value = line.split(" ", 2)
        sub.filters.append((header, value))
    ours = [("variable_ivr_app", "icall"), ("Event-Name", "CHANNEL_EXECUTE_COMPLETE")]
    assert not sub.passes_filters(Event("CHANNEL_EXECUTE_COMPLETE", ours + [("Application", "set")]))
    assert sub.passes_filters(Event("CHANNEL_EXECUTE_COMPLETE", ours + [("Application", "playback")]))
    assert sub.passes_filters(Event("HEARTBEAT", [("Event-Name", "HEARTBEAT")]))
    # icall sends no bgapi: other clients' answers stay at the switch.
    assert not sub.passes_filters(Event("BACKGROUND_JOB", [("Event-Name", "BACKGROUND_JOB")]))
    assert not sub.passes_filters(Event("CHANNEL_PARK", [("variable_ivr_app", "other")]))


def test_a_sendmsg_body_is_read_by_a_content_length_in_any_case_and_a_blank_line_after_it_is_skipped():
    """As mod_event_socket.c's read_packet does: the header name is matched in any case,
    and newlines before a command are dropped (a client may end a body with one)."""
    arg = "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"
    data = (f"sendmsg\ncall-command: execute\nexecute-app-name: play_and_get_digits\n"
            f"content-type: text/plain\ncontent-length: {len(arg)}\n\n{arg}\n\napi status\n\n").encode()
    first, second = CommandParser().feed(data)
    assert first.body == arg and second.line == "api status"
