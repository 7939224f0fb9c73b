"""EslSession (the command connection) against a real socket server: login outcomes,
bounded waits, framing, commands written together."""

from __future__ import annotations

import socket
import time

import pytest

from actors.esl import (
    AuthFailed,
    ConnectFailed,
    Disconnected,
    EslSession,
    Rejected,
    RepliesLost,
    sendmsg_text,
    subscription_commands,
)
from tests.esl.replay import Capture, Knobs, api_response


def sendmsgs(session: EslSession, messages) -> list[str]:
    """`sendmsg`s (uuid, headers, body) written together, as the Commander writes them;
    their Reply-Texts."""
    texts = [sendmsg_text(uuid, headers, body) for uuid, headers, body in messages]
    return [reply.headers.get("Reply-Text", "") for reply in session.exchange(texts)]


def test_the_subscription_lines_put_custom_last_and_filter_on_the_flow_variable():
    assert subscription_commands("ivr_app", "icall") == [
        "event plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE CHANNEL_BRIDGE CHANNEL_HANGUP "
        "CHANNEL_HANGUP_COMPLETE HEARTBEAT CUSTOM fifo::info",
        "filter variable_ivr_app icall",
        "filter Event-Name HEARTBEAT",
        "filter Application -set",
        "filter Application -answer",
    ]


def test_a_good_password_logs_in_and_the_next_command_is_ours(replay):
    server = replay()
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0)
    try:
        assert session.command("filter Event-Name HEARTBEAT").startswith("+OK filter added")
    finally:
        session.close()
    lines = [c.first_line for c in server.commands()]
    assert lines == ["auth ClueCon", "filter Event-Name HEARTBEAT"]


def test_a_wrong_password_raises_auth_failed_as_the_switch_answers_it(replay):
    server = replay(Knobs(password="secret"))
    with pytest.raises(AuthFailed, match=r"authentication refused \(wrong password\?\)"):
        EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0)
    assert server.wait_for(lambda: server.logins == 1)


def test_a_refused_port_raises_connect_failed_saying_refused(refused_port):
    with pytest.raises(ConnectFailed, match="connection refused"):
        EslSession.connect("127.0.0.1", refused_port, "ClueCon", 5.0)


def test_a_rude_rejection_raises_rejected_with_the_switch_text(replay):
    server = replay(Knobs(rude=True))
    with pytest.raises(Rejected, match="Access Denied, go away"):
        EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0)


def test_a_server_that_never_greets_times_out_within_the_connect_timeout(replay):
    server = replay(Knobs(silent=True))
    started = time.monotonic()
    with pytest.raises(ConnectFailed, match="no login answer within 0.3 s"):
        EslSession.connect("127.0.0.1", server.port, "ClueCon", 0.3)
    assert time.monotonic() - started < 5


def test_a_reply_that_never_comes_raises_disconnected_after_the_reply_timeout(replay):
    server = replay(Knobs(mute=("api status",)))
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0, reply_timeout_s=0.3)
    try:
        with pytest.raises(Disconnected, match="no reply within 0.3 s"):
            session.api("status")
        with pytest.raises(Disconnected):
            session.command("filter Event-Name HEARTBEAT")
    finally:
        session.close()


def test_api_returns_the_recorded_response_body(replay):
    recorded = Capture("api_status").replies_to(b"api status")[0]
    server = replay(Knobs(api_replies={"status": recorded}))
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0)
    try:
        body = session.api("status")
    finally:
        session.close()
    assert body.startswith("UP ") and "session(s)" in body
    assert recorded.endswith(body.encode())


def test_a_body_sendmsg_carries_content_length_in_bytes(replay):
    server = replay(Knobs(api_replies={"x": api_response("")}))
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0)
    try:
        answer, = sendmsgs(session, [("u-1", [("call-command", "execute"),
                                             ("execute-app-name", "log")], "née\nline 2")])
    finally:
        session.close()
    assert answer == "+OK"
    sent = server.commands()[-1]
    assert sent.header("content-length") == str(len("née\nline 2".encode()))
    assert sent.body == "née\nline 2"


def test_a_header_value_with_a_newline_is_refused_before_sending():
    with pytest.raises(ValueError, match="break the frame"):
        sendmsg_text("u-1", [("execute-app-arg", "a\nb")], None)


def test_commands_written_together_get_their_replies_in_order_and_a_missing_one_ends_the_session(replay):
    server = replay(Knobs(mute=("sendmsg u-2",)))
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0, reply_timeout_s=0.3)
    playback = [("call-command", "execute"), ("execute-app-name", "playback")]
    try:
        assert sendmsgs(session, [("u-1", playback, None), ("u-1", playback, "x.wav")]) == ["+OK", "+OK"]
        with pytest.raises(RepliesLost, match="no reply within 0.3 s") as lost:
            sendmsgs(session, [("u-1", playback, None), ("u-2", playback, None), ("u-2", playback, None)])
        assert [reply.headers["Reply-Text"] for reply in lost.value.replies] == ["+OK"]
        with pytest.raises(Disconnected):  # out of step for good
            session.command("filter Event-Name HEARTBEAT")
    finally:
        session.close()
    assert [c.first_line for c in server.commands()] == ["auth ClueCon"] + ["sendmsg u-1"] * 3 + ["sendmsg u-2"] * 2


def test_a_malformed_reply_ends_the_session_instead_of_being_read_out_of_step(replay):
    server = replay(Knobs(sendmsg_reply=b"Content-Type: command/reply\nContent-Length: 1x\n\n"))
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0, reply_timeout_s=0.3)
    try:
        with pytest.raises(RepliesLost, match="Content-Length"):
            sendmsgs(session, [("u-1", [("call-command", "execute"), ("execute-app-name", "playback")], None)])
        assert session.peer_closed()
    finally:
        session.close()


def test_a_write_the_link_refuses_ends_the_session_with_no_reply_read(replay):
    server = replay()
    session = EslSession.connect("127.0.0.1", server.port, "ClueCon", 5.0, reply_timeout_s=0.3)
    try:
        session._sock.shutdown(socket.SHUT_WR)  # the write side is gone: sendall fails
        with pytest.raises(RepliesLost, match="connection lost") as lost:
            sendmsgs(session, [("u-1", [("call-command", "execute"), ("execute-app-name", "playback")], None)])
        assert lost.value.replies == []
        with pytest.raises(Disconnected, match="closed"):
            session.command("filter Event-Name HEARTBEAT")
    finally:
        session.close()
