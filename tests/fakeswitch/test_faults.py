"""Fault knobs of the stand-in, each injected and observed over a real socket."""

from __future__ import annotations

import socket
import time

import pytest

from fakeswitch import listener as listener_module

from .conftest import RawClient


def test_a_connection_is_dropped_after_n_frames(switch):
    switch.faults.drop_after_frames = 2
    raw = RawClient(switch.port)
    raw.login()
    assert raw.closed()


def test_a_named_command_is_answered_with_err(switch, client):
    switch.faults.error_commands = {"event"}
    assert client.command("event plain ALL").outer["Reply-Text"].startswith("-ERR")
    assert client.command("api uuid_exists x").body == b"false"


def test_dropping_at_a_named_point_closes_before_the_reply(switch, client):
    switch.faults.drop_at = "sendmsg"
    client.send("sendmsg 00000000-0000-0000-0000-000000000000\ncall-command: hangup")
    with pytest.raises(EOFError):
        client.frame()


def test_a_truncated_frame_is_followed_by_a_close(switch, client):
    switch.faults.malformed = "truncated"
    client.send("api status")
    with pytest.raises(EOFError):
        client.frame()


def test_frames_split_into_single_bytes_still_arrive_whole(switch, client):
    switch.faults.split_at = 1
    assert client.command("api uuid_exists x").body == b"false"


def test_garbage_header_lines_precede_the_next_frame(switch, client):
    switch.faults.malformed = "garbage"
    client.send("api uuid_exists x")
    first = client.frame()
    assert first.content_type == ""  # the garbage block
    assert client.frame().body == b"false"


def test_a_bad_content_length_leaves_the_reader_waiting_for_bytes_that_never_come(switch, client):
    switch.faults.malformed = "bad_length"
    client.send("api uuid_exists x")
    with pytest.raises(EOFError):
        client.frame()
    announced = int(client.buf.split(b"\n", 1)[0].split(b": ")[1])
    body = client.buf.split(b"\n\n", 1)[1]
    assert client.buf.startswith(b"Content-Length: ") and announced == len(body) + 100


def test_replies_are_delayed_by_reply_delay_s(switch, client):
    switch.faults.reply_delay_s = 0.3
    started = time.monotonic()
    assert client.command("api uuid_exists x").body == b"false"
    assert time.monotonic() - started >= 0.3


def test_while_the_switch_stops_reading_commands_get_no_reply_until_it_resumes(switch, client):
    switch.faults.stop_reading = True
    client.send("api uuid_exists x")
    assert client.nothing_arrives(0.5)
    switch.faults.stop_reading = False
    assert client.frame().body == b"false"


def test_a_client_that_stops_reading_loses_events_and_is_killed(switch, monkeypatch):
    monkeypatch.setattr(listener_module, "MAX_QUEUED_EVENTS", 20)
    monkeypatch.setattr(listener_module, "MAX_LOST_EVENTS", 10)
    monkeypatch.setattr(listener_module, "HIGH_WATER_BYTES", 16 * 1024)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", switch.port))
    sock.sendall(b"auth ClueCon\n\nevent plain ALL\n\n")
    healthy = RawClient(switch.port)
    healthy.login()
    # The slow client reads nothing while a few thousand events are fired.
    fired_before = switch.switch.events_fired
    calls = [switch.place_call(caller_id=str(5550000 + i)) for i in range(60)]
    for chan in calls:
        switch.hangup(chan)
    assert all(switch.wait_hangup(chan) for chan in calls)
    received = b""
    while chunk := sock.recv(65536):  # until the switch closes it (timeout fails the test)
        received += chunk
    sock.close()
    fired = switch.switch.events_fired - fired_before
    assert received.count(b"Content-Type: text/event-plain") < fired  # some were lost
    assert switch.client_count() == 1  # only the healthy client is left
    assert healthy.command("api uuid_exists x").body == b"false"
    healthy.close()
