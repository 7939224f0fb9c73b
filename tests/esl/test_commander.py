"""Commander against the replay server: exact sendmsg text, replies, failures, stop."""

from __future__ import annotations

import queue
import time

import pytest

from actors.commander import Commander
from actors.esl import Disconnected, execute_message
from actors.messages import ChannelCommand, ChannelCommands, CommandFailed
from actors.reporting import Cause
from fakeswitch import FakeSwitch
from tests.esl.conftest import Collector, link_threads, make_config
from tests.esl.replay import Capture, Knobs
from tests.telemetry import RecordingTelemetry

CALL = "9aaaa7f6-5f2f-4a3a-b5f9-0b2adcb4e71d"
WAIT_S = 10


@pytest.fixture
def inbox():
    messages: queue.Queue = queue.Queue()
    return messages, Collector.start(messages)


def _sendmsgs(server):
    assert server.wait_for(lambda: any(c.first_line.startswith("sendmsg")
                                       for c in server.commands()))
    return [c for c in server.commands() if c.first_line.startswith("sendmsg")]


def test_execute_writes_the_exact_sendmsg_text_with_its_event_uuid(replay):
    server = replay()
    commander = Commander.start(make_config(server.port)).proxy()
    commander.execute(CALL, "playback", "new_sales/1000.wav", "ev-1")
    commander.execute(CALL, "playback", "new_sales/1001.wav", "ev-2", lock=True).get(timeout=WAIT_S)
    first, second = _sendmsgs(server)
    assert first.head == (f"sendmsg {CALL}\ncall-command: execute\nexecute-app-name: playback\n"
                          "execute-app-arg: new_sales/1000.wav\nEvent-UUID: ev-1")
    assert second.head == (f"sendmsg {CALL}\ncall-command: execute\nexecute-app-name: playback\n"
                           "execute-app-arg: new_sales/1001.wav\nevent-lock: true\n"
                           "Event-UUID: ev-2")


def test_an_invalid_session_id_is_reported_to_reply_to_as_command_failed(replay, inbox):
    refusal = Capture("junk_command").replies_to(b"sendmsg ")[0]
    server = replay(Knobs(sendmsg_reply=refusal))
    messages, collector = inbox
    commander = Commander.start(make_config(server.port)).proxy()
    commander.execute(CALL, "playback", "x.wav", "ev-9", reply_to=collector)
    failed = messages.get(timeout=WAIT_S)
    assert failed == CommandFailed(
        CALL, "ev-9", "-ERR invalid session id [00000000-0000-0000-0000-000000000000]")
    commander.hangup(CALL, reply_to=collector)
    assert messages.get(timeout=WAIT_S).event_uuid == ""
    assert commander.is_connected().get(timeout=WAIT_S)


def test_a_long_argument_goes_as_a_text_plain_body(replay):
    server = replay()
    commander = Commander.start(make_config(server.port)).proxy()
    long_arg = "new_sales/" + "x" * 5000 + ".wav"
    commander.execute(CALL, "playback", long_arg, "ev-3").get(timeout=WAIT_S)
    (sent,) = _sendmsgs(server)
    assert sent.header("execute-app-arg") is None
    assert sent.header("content-type") == "text/plain"
    assert sent.header("content-length") == str(len(long_arg))
    assert sent.header("Event-UUID") == "ev-3"
    assert sent.body == long_arg


def test_api_returns_the_body(replay):
    status = Capture("api_status").replies_to(b"api status")[0]
    server = replay(Knobs(api_replies={"status": status}))
    commander = Commander.start(make_config(server.port)).proxy()
    assert commander.api("status").get(timeout=WAIT_S).startswith("UP ")


def test_with_the_switch_away_commands_fail_fast_with_not_connected(
        refused_port, inbox, link_logs):
    messages, collector = inbox
    config = make_config(refused_port, reconnect_min_s="30", reconnect_max_s="60")
    commander = Commander.start(config).proxy()
    started = time.monotonic()
    for n in range(5):
        commander.execute(CALL, "playback", "x.wav", f"ev-{n}", reply_to=collector)
    failures = [messages.get(timeout=WAIT_S) for _ in range(5)]
    assert time.monotonic() - started < 5
    assert all(f.reply.startswith("-ERR not connected (connection refused") for f in failures)
    with pytest.raises(Disconnected, match="not connected"):
        commander.api("status").get(timeout=WAIT_S)
    attempts = [r for r in link_logs.records if "ESL connect to" in r.getMessage()]
    assert len(attempts) == 1  # one attempt per backoff window, not one per command
    assert not commander.is_connected().get(timeout=WAIT_S)


def test_once_the_switch_is_back_the_next_command_connects_without_waiting_out_the_backoff(
        refused_port):
    # A backoff window of 30 s or more is open: commands fail fast with "not connected".
    commander = Commander.start(make_config(refused_port, reconnect_min_s="30",
                                            reconnect_max_s="60")).proxy()
    with pytest.raises(Disconnected, match="not connected"):
        commander.api("status").get(timeout=WAIT_S)
    with FakeSwitch(port=refused_port, password="ClueCon"):
        with pytest.raises(Disconnected, match="not connected"):
            commander.api("status").get(timeout=WAIT_S)  # still inside the window
        commander.switch_is_back()  # the event link says so (see Supervisor._resync)
        assert commander.api("status").get(timeout=WAIT_S).startswith("UP ")


def test_the_commander_reconnects_when_a_command_finds_the_link_dropped(replay):
    status = Capture("api_status").replies_to(b"api status")[0]
    server = replay(Knobs(api_replies={"status": status}))
    commander = Commander.start(make_config(server.port)).proxy()
    assert commander.api("status").get(timeout=WAIT_S).startswith("UP ")
    server.drop_all()
    # The dead connection is noticed on use; the command is sent again at once on a
    # fresh one, so the caller never sees the drop.
    assert commander.api("status").get(timeout=WAIT_S).startswith("UP ")
    assert len(server.connections) == 2


def test_a_sendmsg_whose_reply_never_comes_is_reported_uncertain_and_never_sent_twice(
        replay, inbox):
    server = replay(Knobs(mute=("sendmsg",)))
    messages, collector = inbox
    config = make_config(server.port, command_timeout_s="5", sendmsg_timeout_s="0.3")
    commander = Commander.start(config).proxy()
    commander.execute(CALL, "playback", "x.wav", "ev-5", reply_to=collector)
    failed = messages.get(timeout=WAIT_S)
    assert failed == CommandFailed(CALL, "ev-5", "-ERR link lost: no reply within 0.3 s",
                                   uncertain=True)
    assert not commander.is_connected().get(timeout=WAIT_S)
    # It may have run: it is not sent again, on this connection or a new one.
    sent = [c for n in range(len(server.connections)) for c in server.commands(n)
            if c.first_line.startswith("sendmsg")]
    assert [c.header("Event-UUID") for c in sent] == ["ev-5"]
    assert commander.api("status").get(timeout=WAIT_S) == "-ERR command not found"  # lives on


def test_a_link_the_switch_closed_while_idle_is_replaced_before_the_sendmsg_goes_once(
        replay, inbox):
    server = replay()
    messages, collector = inbox
    commander = Commander.start(make_config(server.port)).proxy()
    assert commander.ensure_connected().get(timeout=WAIT_S)
    server.drop_all()
    commander.execute(CALL, "playback", "x.wav", "ev-6", reply_to=collector)
    assert server.wait_for(lambda: len(server.connections) == 2
                           and any(c.first_line.startswith("sendmsg") for c in server.commands(1)))
    assert commander.is_connected().get(timeout=WAIT_S)
    assert messages.empty()  # +OK: nothing to report
    assert [c.first_line.split(" ")[0] for c in server.commands(0)] == ["auth"]


def test_stopping_the_commander_leaves_no_thread(replay):
    server = replay()
    ref = Commander.start(make_config(server.port))
    assert ref.proxy().ensure_connected().get(timeout=WAIT_S)
    ref.stop(timeout=WAIT_S)
    assert link_threads() == []


def test_a_command_sent_with_its_cause_reports_the_time_from_the_cause_to_the_write(replay):
    server = replay()
    telemetry = RecordingTelemetry()
    commander = Commander.start(make_config(server.port), telemetry=telemetry).proxy()
    event_at = time.monotonic()
    commander.execute(CALL, "playback", "x.wav", "ev-1", since=Cause("reaction", event_at)).get(timeout=WAIT_S)
    commander.hangup(CALL, since=Cause("takeover", event_at)).get(timeout=WAIT_S)
    commander.execute(CALL, "playback", "y.wav", "ev-2").get(timeout=WAIT_S)  # no cause: not timed
    done_at = time.monotonic()
    assert [cause for cause, _ in telemetry.commands] == [Cause("reaction", event_at),
                                                          Cause("takeover", event_at)]
    assert all(event_at <= written_at <= done_at for _, written_at in telemetry.commands)


def test_a_command_the_switch_refuses_is_not_timed(replay, inbox):
    refusal = Capture("junk_command").replies_to(b"sendmsg ")[0]
    server = replay(Knobs(sendmsg_reply=refusal))
    messages, collector = inbox
    telemetry = RecordingTelemetry()
    commander = Commander.start(make_config(server.port), telemetry=telemetry).proxy()
    commander.execute(CALL, "playback", "x.wav", "ev-9", reply_to=collector,
                      since=Cause("reaction", time.monotonic()))
    assert isinstance(messages.get(timeout=WAIT_S), CommandFailed)
    assert telemetry.commands == []


def test_a_command_that_cannot_reach_the_switch_is_not_timed(refused_port, inbox):
    messages, collector = inbox
    telemetry = RecordingTelemetry()
    commander = Commander.start(make_config(refused_port), telemetry=telemetry).proxy()
    commander.execute(CALL, "playback", "x.wav", "ev-9", reply_to=collector,
                      since=Cause("reaction", time.monotonic()))
    assert messages.get(timeout=WAIT_S).reply.startswith("-ERR not connected")
    assert telemetry.commands == []


def test_one_held_sendmsg_reply_holds_another_calls_command_only_until_the_sendmsg_deadline(inbox):
    """The stand-in holds A's reply (fault knob `hold_next`); B is sent on a fresh
    connection once A's short deadline has passed, and A is never sent again. The
    numbers (seconds held, before and after) are printed by bench/commander_stall_bench.py."""
    from fakeswitch import FakeSwitch

    switch = FakeSwitch().start()
    messages, collector = inbox
    try:
        switch.faults.hold_next = ("sendmsg", 5.0)
        config = make_config(switch.port, command_timeout_s="5", sendmsg_timeout_s="0.3")
        commander = Commander.start(config).proxy()
        commander.execute(CALL, "playback", "x.wav", "ev-a", reply_to=collector)
        commander.execute("bbbbbbbb-0000-0000-0000-000000000002", "playback", "x.wav", "ev-b",
                          reply_to=collector)
        first, second = messages.get(timeout=WAIT_S), messages.get(timeout=WAIT_S)
        assert (first.event_uuid, first.uncertain) == ("ev-a", True)
        assert first.reply == "-ERR link lost: no reply within 0.3 s"
        # B reached the switch on the new connection and was answered (no such channel).
        assert (second.event_uuid, second.uncertain) == ("ev-b", False)
        assert second.reply.startswith("-ERR invalid session id")
    finally:
        switch.stop()


OTHER = "0bbbb7f6-5f2f-4a3a-b5f9-0b2adcb4e71d"


def test_a_batch_goes_in_order_and_a_lost_reply_makes_that_command_and_the_rest_uncertain(
        replay, inbox):
    # The other call's commands get no reply: the first command's +OK counts, the two
    # after it may have run (never sent again) and their actor hears so.
    server = replay(Knobs(mute=(f"sendmsg {OTHER}",)))
    messages, collector = inbox
    config = make_config(server.port, command_timeout_s="5", sendmsg_timeout_s="0.3")
    commander = Commander.start(config)
    commander.tell(ChannelCommands((
        ChannelCommand(CALL, "set", "icall_ckpt={}", "ev-a", lock=True, reply_to=collector),
        ChannelCommand(OTHER, "playback", "x.wav", "ev-b", reply_to=collector),
        ChannelCommand(OTHER, "hangup", "NORMAL_CLEARING", reply_to=collector),
    )))
    failures = [messages.get(timeout=WAIT_S), messages.get(timeout=WAIT_S)]
    assert failures == [
        CommandFailed(OTHER, "ev-b", "-ERR link lost: no reply within 0.3 s", uncertain=True),
        CommandFailed(OTHER, "", "-ERR link lost: no reply within 0.3 s", uncertain=True),
    ]
    sent = [c for n in range(len(server.connections)) for c in server.commands(n)
            if c.first_line.startswith("sendmsg")]
    assert [(c.first_line, c.header("execute-app-name") or c.header("call-command")) for c in sent] == [
        (f"sendmsg {CALL}", "set"), (f"sendmsg {OTHER}", "playback"), (f"sendmsg {OTHER}", "hangup")]
    assert messages.empty()  # the checkpoint's +OK: nothing to report
    assert commander.proxy().api("status").get(timeout=WAIT_S) == "-ERR command not found"  # lives on


def test_a_command_in_a_batch_that_would_break_the_frame_alone_is_refused(replay, inbox):
    server = replay()
    messages, collector = inbox
    commander = Commander.start(make_config(server.port))
    commander.tell(ChannelCommands((
        ChannelCommand(CALL, "playback", "a\rb", "ev-bad", reply_to=collector),
        ChannelCommand(CALL, "playback", "x.wav", "ev-good", reply_to=collector),
    )))
    failed = messages.get(timeout=WAIT_S)
    assert failed.event_uuid == "ev-bad" and failed.reply.startswith("-ERR invalid command")
    assert not failed.uncertain
    assert [c.header("Event-UUID") for c in _sendmsgs(server)] == ["ev-good"]


def test_a_menus_argument_goes_as_a_body_and_a_sound_files_as_a_header():
    """The switch reads a command's header block a byte at a time (mod_event_socket.c,
    read_packet) and its body in one read: an argument longer than the two body
    header lines it costs goes as a body."""
    menu = "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"
    headers, body = execute_message("play_and_get_digits", menu, "ev-1", lock=False)
    assert body == menu and "execute-app-arg" not in dict(headers)
    headers, body = execute_message("playback", "new_sales/1000.wav", "ev-2", lock=False)
    assert body is None and dict(headers)["execute-app-arg"] == "new_sales/1000.wav"
