"""Fault knobs of the stand-in, each injected and observed over a real socket."""

from __future__ import annotations

import pytest

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
