"""ChannelLink on recorded traffic: the switch's side of an outbound session
(outbound_async_full_linger) fed to the link in chunks of 1, 7, 512 bytes and whole,
while the link writes as many commands as the recording client did."""

from __future__ import annotations

import select
import socket

import pytest

from actors.channel_link import ChannelLink
from actors.messages import CommandFailed, EslEvent, SocketClosed
from fakeswitch.wire import event_plain
from tests.esl.replay import Capture
from tests.waiting import wait_until

UUID = "36b97724-98f7-46d4-a702-2c4e58a56890"


class Inbox:
    """Stands in for an ActorRef: keeps what it is told."""

    def __init__(self) -> None:
        self.told: list[object] = []

    def tell(self, message: object) -> None:
        self.told.append(message)


def through_replies(s2c: bytes, count: int) -> bytes:
    """The stream up to the end of its `count`-th reply (connect's is the first). The
    replies in this capture are header blocks without a body."""
    at = 0
    for _ in range(count):
        at = s2c.index(b"\n\n", s2c.index(b"Content-Type: command/reply", at)) + 2
    return s2c[:at]


def recorded_session(capture: Capture) -> tuple[bytes, ChannelLink, Inbox, socket.socket, list]:
    ours, theirs = socket.socketpair()
    ready: list[ChannelLink] = []
    link = ChannelLink(ours, "test", ready.append, send_timeout_s=2)
    inbox = Inbox()
    link.begin()  # connect, myevents, linger
    s2c = b"".join(r.data for r in capture.records if r.direction == "S>C")
    return s2c, link, inbox, theirs, ready


@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20])
def test_a_recorded_outbound_session_is_taken_as_the_switch_sent_it(chunk):
    capture = Capture("outbound_async_full_linger")
    s2c, link, inbox, theirs, ready = recorded_session(capture)
    # The recording client sent eight commands before the hangup; begin() sent five of
    # them (connect, myevents, nixevent, event, linger: answered by the recording's
    # connect, myevents, linger, second myevents and playback replies), these the rest:
    # the two getvars' answers, then the hangup's +OK.
    link.api("y")
    link.api("z")
    link.hangup(UUID, reply_to=inbox)
    # Up to the recording client's `exit` (8 s after the linger notice): its `+OK bye`
    # answers the exit this test sends below.
    s2c = s2c[:s2c.rindex(b"\n\n", 0, s2c.index(b"Reply-Text: +OK bye")) + 2]
    attached = False
    for at in range(0, len(s2c), chunk):
        link.feed(s2c[at:at + chunk])
        if ready and not attached:
            link.attach(inbox)  # type: ignore[arg-type]
            attached = True
    assert ready == [link] and link.uuid == UUID
    events = [m.event.name for m in inbox.told if isinstance(m, EslEvent)]
    assert events == ["CHANNEL_PARK", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP",
                      "CHANNEL_UNPARK", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_STATE", "CHANNEL_STATE",
                      "CHANNEL_HANGUP_COMPLETE"]
    assert not any(isinstance(m, CommandFailed) for m in inbox.told), "every +OK was taken as such"
    link.exit()  # the supervisor's, once it forgets the call
    theirs.settimeout(2)
    written = b""
    while not written.endswith(b"exit\n\n"):
        written += theirs.recv(65536)
    commands = [c.split(b" ")[0] for c in written.split(b"\n\n") if c]
    assert commands[:5] == [b"connect", b"myevents", b"nixevent", b"event", b"linger"]
    link.closed_by_peer("the switch closed the socket")
    assert not any(isinstance(m, SocketClosed) for m in inbox.told), "its hangup was seen"


def test_the_connect_data_is_the_channel_the_call_starts_from():
    capture = Capture("outbound_async_full_linger")
    s2c, link, _inbox, _theirs, ready = recorded_session(capture)
    link.feed(through_replies(s2c, 1))
    channel = link.take_channel()
    assert channel is not None and channel.uuid == UUID
    assert channel.get("Caller-Caller-ID-Number") == "5551003"
    assert channel.variable("current_application") == "socket"
    assert link.take_channel() is None, "handed over once"


def test_a_command_that_would_break_the_frame_is_refused_and_never_written():
    capture = Capture("outbound_async_full_linger")
    s2c, link, inbox, theirs, ready = recorded_session(capture)
    theirs.setblocking(False)
    written = theirs.recv(65536)  # begin()'s commands
    link.hangup(UUID, "NORMAL\nCLEARING", reply_to=inbox)
    failed = [m for m in inbox.told if isinstance(m, CommandFailed)]
    assert len(failed) == 1 and not failed[0].uncertain
    assert "invalid command" in failed[0].reply and "hangup-cause" in failed[0].reply
    with pytest.raises(BlockingIOError):
        theirs.recv(65536)
    assert written.count(b"\n\n") == 5


def test_a_socket_closed_before_the_hangup_fails_pending_commands_and_tells_the_call():
    capture = Capture("outbound_async_full_linger")
    s2c, link, inbox, _theirs, ready = recorded_session(capture)
    link.feed(through_replies(s2c, 3))  # connect, myevents, linger answered
    assert ready
    link.attach(inbox)  # type: ignore[arg-type]
    link.execute(UUID, "playback", "new_sales/1000.wav", "e1", reply_to=inbox)
    link.closed_by_peer("connection lost")
    failed = [m for m in inbox.told if isinstance(m, CommandFailed)]
    assert failed and failed[0].event_uuid == "e1" and failed[0].uncertain
    assert isinstance(inbox.told[-1], SocketClosed)


# --- whether the switch has let a call go from this socket (a second connection claims it)


def tcp_link() -> tuple[ChannelLink, socket.socket]:
    """A link on a real loopback TCP connection; the far end is the switch's side."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        far = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    return ChannelLink(ours, "test", lambda link: None, send_timeout_s=2), far


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 2)[0])


def event_frame(name: str, **headers: str) -> bytes:
    return event_plain([("Event-Name", name), ("Unique-ID", UUID), *headers.items()], None)


def test_an_open_socket_with_events_unread_still_carries_its_call():
    link, far = tcp_link()
    far.sendall(event_frame("CHANNEL_EXECUTE", Application="playback"))
    assert readable(link._sock)
    assert not link.switch_let_go()
    far.close()


def test_a_socket_the_switch_closed_behind_unread_events_has_let_its_call_go():
    # The same thread reads the old socket and the new one: the new one's connect answer
    # may be handled before this EOF is read, and the real second `socket` must win.
    link, far = tcp_link()
    far.sendall(event_frame("CHANNEL_EXECUTE_COMPLETE", Application="playback"))
    far.close()
    assert readable(link._sock)
    assert wait_until(link.switch_let_go, 2)  # the FIN, once the kernel has it
    assert not link.closed, "nothing was read: the server thread still owns the stream"


def test_a_socket_whose_socket_app_ended_has_let_its_call_go_though_it_stays_open():
    # A transfer ends the `socket` app; the switch keeps the socket to the hangup, and a
    # transfer back into the IVR brings the call on a new one.
    link, far = tcp_link()
    link.feed(event_frame("CHANNEL_EXECUTE_COMPLETE", Application="socket"))
    assert link.switch_let_go()
    far.close()


def test_without_tcp_state_a_closed_socket_is_seen_by_a_peek():
    ours, theirs = socket.socketpair()
    link = ChannelLink(ours, "test", lambda link: None, send_timeout_s=2)
    assert not link.switch_let_go()
    theirs.close()
    assert link.switch_let_go()


def test_a_refused_claim_gets_exit_and_its_socket_shut_and_delivers_nothing():
    link, far = tcp_link()
    inbox = Inbox()
    link.attach(inbox)  # type: ignore[arg-type]
    link.refuse()
    far.settimeout(2)
    written = b""
    while chunk := far.recv(65536):
        written += chunk
    assert written == b"exit\n\n"
    link.feed(event_frame("CHANNEL_PARK"))
    assert inbox.told == []


def test_once_its_socket_app_ended_the_park_of_a_newer_socket_is_left_to_that_socket():
    # On a transfer back to the socket extension, the old socket (still open) also sees
    # the new `socket` app's CHANNEL_PARK; taken, it would re-enter the flow on the old
    # socket while the new one offers the call too: the welcome twice.
    link, far = tcp_link()
    inbox = Inbox()
    link.attach(inbox)  # type: ignore[arg-type]
    link.feed(event_frame("CHANNEL_PARK", variable_current_application="socket"))
    link.feed(event_frame("CHANNEL_EXECUTE_COMPLETE", Application="socket"))
    link.feed(event_frame("CHANNEL_PARK", variable_current_application="socket"))
    link.feed(event_frame("CHANNEL_PARK", variable_current_application="park"))
    names = [(m.event.name, m.event.variable("current_application")) for m in inbox.told]
    assert names == [("CHANNEL_PARK", "socket"), ("CHANNEL_EXECUTE_COMPLETE", None), ("CHANNEL_PARK", "park")]
    far.close()


def raw_frames(stream: bytes) -> list[bytes]:
    """The stream cut into whole frames (header block, blank line, Content-Length body)."""
    frames, at = [], 0
    while at < len(stream):
        end = stream.index(b"\n\n", at) + 2
        length = 0
        for line in stream[at:end].split(b"\n"):
            if line.startswith(b"Content-Length: "):
                length = int(line.split(b": ", 1)[1])
        frames.append(stream[at:end + length])
        at = end + length
    return frames


def test_after_the_hand_off_completions_are_left_out_until_the_call_parks_again():
    """The destination's own apps (answer, a playback, hangup) would each cost the
    switch a whole channel's event for a flow that no longer reads them."""
    capture = Capture("outbound_async_full_linger")
    s2c, link, inbox, theirs, ready = recorded_session(capture)
    theirs.setblocking(False)
    theirs.recv(65536)  # begin()'s commands
    link.feed(through_replies(s2c, 5))
    link.attach(inbox)  # type: ignore[arg-type]
    link.handed_off()
    link.handed_off()  # once is enough
    assert theirs.recv(65536) == b"nixevent CHANNEL_EXECUTE_COMPLETE\n\n"
    with pytest.raises(BlockingIOError):
        theirs.recv(65536)
    # Parked again by the dialplan's `park` (not by a newer `socket`, whose park is left
    # to that socket's own connection).
    park = event_frame("CHANNEL_PARK", variable_current_application="park")
    link.feed(park)
    assert theirs.recv(65536) == b"event plain CHANNEL_EXECUTE_COMPLETE\n\n", "before the flow's commands"
    assert [m.event.name for m in inbox.told if isinstance(m, EslEvent)][-1] == "CHANNEL_PARK"


def test_a_handed_off_socket_leaves_a_newer_sockets_park_to_it_and_has_let_its_call_go():
    # The transfer that handed the call off ends the `socket` app, whose completion this
    # socket no longer takes: a newer `socket` (a transfer back to the IVR) is the
    # switch's own hand-over, and its park belongs to that socket alone.
    link, far = tcp_link()
    inbox = Inbox()
    link.attach(inbox)  # type: ignore[arg-type]
    assert not link.switch_let_go()
    link.handed_off()
    assert link.switch_let_go()
    link.feed(event_frame("CHANNEL_PARK", variable_current_application="socket"))
    assert [m for m in inbox.told if isinstance(m, EslEvent)] == []
    far.close()


def test_taking_a_call_costs_the_switch_few_command_bytes():
    """The switch reads a command's header block a byte at a time (mod_event_socket.c,
    read_packet: a recv and a yield per byte), so the subscription names what the flow
    reads (after `nixevent ALL`) rather than the ~18 types it does not."""
    capture = Capture("outbound_async_full_linger")
    _s2c, _link, _inbox, theirs, _ready = recorded_session(capture)
    theirs.setblocking(False)
    written = theirs.recv(65536)
    assert written.split(b"\n\n")[:4] == [b"connect", b"myevents plain", b"nixevent ALL",
                                          b"event plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE CHANNEL_BRIDGE "
                                          b"CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CUSTOM fifo::info"]
    assert len(written) < 200
