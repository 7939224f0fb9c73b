"""ChannelLink: one outbound-mode call's own socket, the switch's `socket` app on the
far end. The CallActor sends its commands through it as it would through the
Commander (`execute`, `hangup`, `api`), and the call's events come back on it.

Wire behaviour, as in the outbound_* captures: `connect` is answered by the channel's
data (a command/reply whose header block is a CHANNEL_DATA dump), `myevents` subscribes
to this channel's events (those no flow reads are then left out with `nixevent`, and
the queue's `CUSTOM fifo::info` added), `linger N` keeps the socket open N s after the hangup so the
last events (CHANNEL_HANGUP_COMPLETE, which writes the CDR) still come; then a
disconnect notice with `Content-Disposition: linger`; icall says `exit` once the call's
actor has stopped (its own linger over), and the switch closes at LINGER_S anyway. `sendmsg`
without a UUID addresses this channel; the `event-lock` and `Event-UUID` headers mean
what they mean inbound. Replies come in the order the commands were written, so each
write queues its waiter under the write lock.

A second connection claiming a call that is live on this one takes it over only once
the switch has let the call go from here (`switch_let_go`): this socket closed (the
dialplan's next `socket` after the first dropped), or its `socket` app ended (a
transfer took the call away, then back into the IVR). Anything else is an impostor
(`refuse`).

Threads: `feed`, `closed_by_peer` and the frame handling run in the outbound server's
thread (actors.outbound_server), which reads every call's socket; `execute`, `hangup`, `api`
and `exit` in whichever thread sends (the call's actor, the supervisor); `attach`,
`switch_let_go`, `refuse` and `send_away` in the supervisor's. Writes go out under
`_write_lock`; events go to the call's actor under `_deliver_lock`, so none overtakes
another.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka

from actors.esl import (
    CUSTOM_SUBCLASSES,
    SUBSCRIBED_EVENTS,
    execute_message,
    hangup_message,
    sendmsg_head,
)
from actors.esl_wire import Disconnected, Frame, FrameParser, event_of
from actors.messages import CommandFailed, EslEvent, SocketClosed
from actors.reporting import NO_TELEMETRY, Cause, Telemetry
from ivr.event import Event

logger = logging.getLogger(__name__)

# How long the switch keeps the socket after the hangup: long enough for the last
# events, bounded so that a lost `exit` never leaves a socket open on the switch
# (a bare `linger` is forever).
LINGER_S = 10
# `myevents` binds the socket to this channel's events and subscribes ~20 types; a flow
# reads five of them (the inbound subscription's, actors.esl.SUBSCRIBED_EVENTS) and the
# queue's fifo::info, which myevents leaves out. The rest would cost the switch and this
# process a parse each, several per command. So after myevents every type is dropped
# (`nixevent ALL`: the channel binding stays) and the wanted ones subscribed: shorter
# than naming the ~18 unwanted ones, and the switch reads a command's header block one
# byte at a time (mod_event_socket.c, read_packet), a system call or two a byte.
WANTED_EVENTS = tuple(name for name in SUBSCRIBED_EVENTS if name != "HEARTBEAT")
SUBSCRIPTION = ("myevents plain", "nixevent ALL",
                f"event plain {' '.join(WANTED_EVENTS)} CUSTOM {' '.join(CUSTOM_SUBCLASSES)}")
# Once the flow has handed the call on (its transfer written), no completion matters to
# it: the destination's own apps (answer, playback, hangup...) would each cost the switch
# a serialised event of the whole channel, for nothing. A CHANNEL_PARK (the call back in
# the IVR) subscribes them again.
HANDED_OFF_EVENTS = ("CHANNEL_EXECUTE_COMPLETE",)
_EVENT_TYPES = ("text/event-plain", "text/event-json")
# Linux's TCP states (tcp_states.h) as TCP_INFO's first byte reports them.
_TCP_ESTABLISHED = 1
_REPLY_TYPES = ("command/reply", "api/response")

Waiter = Callable[[Frame | None], None]  # None: the link closed before the reply


class _LetGoIfRefused:
    """The `reply_to` of `send_away`'s transfer (told in the server's thread)."""

    def __init__(self, link: ChannelLink):
        self._link = link

    def tell(self, message: Any) -> None:
        # An uncertain failure is a closed socket: the switch has the call back already.
        if isinstance(message, CommandFailed) and not message.uncertain:
            logger.warning("call %s: its transfer was refused (%s): letting its socket go",
                           self._link.uuid, message.reply)
            self._link.exit()


class ChannelLink:
    """One call's socket; see the module doc."""

    def __init__(self, sock: socket.socket, peer: str, on_ready: Callable[[ChannelLink], None],
                 send_timeout_s: float, telemetry: Telemetry = NO_TELEMETRY, linger_s: int = LINGER_S):
        self._linger_s = linger_s
        self._sock = sock
        self.peer = peer
        self._on_ready = on_ready
        self._telemetry = telemetry
        self._parser = FrameParser()
        self._waiters: deque[Waiter] = deque()
        self._write_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._held: list[Any] = []  # messages for the call's actor before it is attached
        self._ref: pykka.ActorRef | None = None
        self._channel: Event | None = None  # the connect data, until the actor takes it
        self._hung_up = False
        self._socket_app_ended = False  # the switch took the call away from this socket
        self._retired = False
        self._narrowed = False  # HANDED_OFF_EVENTS unsubscribed
        self.uuid = ""
        self.closed = False
        sock.settimeout(send_timeout_s)  # bounds writes; reads happen only when readable

    # --- the outbound server's thread

    def begin(self) -> None:
        """Take the call: connect, subscribe, linger (pipelined; answered in order)."""
        self._write("connect\n\n", self._connected)
        for command in SUBSCRIPTION:
            self._write(command + "\n\n", self._expect_ok(command.split(" ", 1)[0]))
        self._write(f"linger {self._linger_s}\n\n", self._expect_ok("linger"))

    def feed(self, data: bytes) -> None:
        """Bytes read off the socket. Raises Disconnected (MalformedFrame) when the
        stream breaks the protocol: the server then closes this link."""
        self._parser.feed(data)
        while (frame := self._parser.next_frame()) is not None:
            self._on_frame(frame)

    def closed_by_peer(self, reason: str) -> None:
        """The socket is gone (EOF, an error, a broken frame): fail what waits, and tell
        the call its channel is out of reach unless its hangup was already seen."""
        if self.closed:
            return
        self.closed = True
        try:
            self._sock.close()
        except OSError:
            pass
        with self._write_lock:
            waiters, self._waiters = list(self._waiters), deque()
        for waiter in waiters:
            waiter(None)
        if self.uuid and not self._hung_up and not self._retired:
            logger.warning("call %s: its socket closed before its hangup (%s)", self.uuid, reason)
            self._deliver(SocketClosed())

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self) -> bytes:
        return self._sock.recv(65536)

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.content_type
        if kind in _EVENT_TYPES:
            event = event_of(frame)
            if event.name == "CHANNEL_HANGUP_COMPLETE":
                self._hung_up = True
            elif event.name == "CHANNEL_EXECUTE_COMPLETE" and event.get("Application") == "socket":
                self._socket_app_ended = True
            elif (event.name == "CHANNEL_PARK" and self._socket_app_over()
                  and event.variable("current_application") == "socket"):
                # A later `socket` parked the call: its own connection offers it (the
                # supervisor's Reoffered). Taken here, it would re-enter the flow on this
                # old socket too, and the caller would hear the welcome twice.
                logger.debug("call %s: parked by a newer socket: left to it", self.uuid)
                return
            elif event.name == "CHANNEL_PARK" and self._narrowed:
                # Back in the IVR: its commands' completions matter again, and the
                # subscription goes out before any of them (one socket, in order).
                self._narrowed = False
                self._write(f"event plain {' '.join(HANDED_OFF_EVENTS)}\n\n", self._expect_ok("event"))
            self._deliver(EslEvent(event, time.monotonic()))
        elif kind in _REPLY_TYPES:
            if not self._waiters:
                raise Disconnected(f"a {kind} nobody asked for")
            self._waiters.popleft()(frame)
        elif kind == "text/disconnect-notice":
            # `linger`: the hangup is done, but events may still come (mod_fifo's
            # bridge-caller-stop follows CHANNEL_HANGUP_COMPLETE); the supervisor says
            # `exit` when it forgets the call. `disconnect`: the close follows.
            logger.debug("call %s: %s notice", self.uuid, frame.headers.get("Content-Disposition"))
        else:
            logger.debug("call %s: ignoring a %s frame", self.uuid, kind)

    def _connected(self, frame: Frame | None) -> None:
        if frame is None:
            return
        text = "\n".join(f"{name}: {value}" for name, value in frame.headers.items())
        channel = Event.from_plain(text)  # values are still URL-encoded, as in an event
        if not channel.uuid:
            logger.error("outbound connection from %s: connect answered without a Unique-ID", self.peer)
            self.exit()
            return
        self.uuid, self._channel = channel.uuid, channel
        self._on_ready(self)

    def _expect_ok(self, what: str) -> Waiter:
        def check(frame: Frame | None) -> None:
            reply = frame.headers.get("Reply-Text", "") if frame else ""
            if frame is not None and not reply.startswith("+OK"):
                logger.warning("call %s: %s refused: %s", self.uuid, what, reply)
        return check

    # --- the supervisor's thread

    def attach(self, ref: pykka.ActorRef) -> None:
        """`ref` handles the call from now on; what came meanwhile goes to it first."""
        with self._deliver_lock:
            self._ref = ref
            held, self._held = self._held, []
            for message in held:
                self._tell(message)

    def retire(self) -> None:
        """A newer socket carries the call: this one delivers nothing more and goes.
        Once its `socket` app has ended (a transfer took the call away), it is left for
        the switch to close at the hangup: an `exit` would end the control of the
        channel, which the newer socket's `socket` app now holds (its park would end)."""
        with self._deliver_lock:
            self._retired = True
            self._ref, self._held = None, []
        if not self._socket_app_over():
            self.exit()

    def _socket_app_over(self) -> bool:
        """The `socket` app holding the call on this socket has ended, or will: its
        completion was seen, or the flow's transfer went out (`_narrowed`), which ends
        it, and whose completion this socket no longer takes (HANDED_OFF_EVENTS)."""
        return self._socket_app_ended or self._narrowed

    def refuse(self) -> None:
        """This connection may not have the call it claims: `exit`, and shut down (not
        closed: the server thread still has it in its selector; it sees the EOF and
        closes it). Nothing it sends reaches a call."""
        self.retire()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def switch_let_go(self) -> bool:
        """Whether the switch has let the call go from this socket: the socket is
        closed, or its `socket` app ended (or the flow's transfer, which ends it, went
        out). Asked before a second connection may take
        the call over. The same thread reads both sockets, so the new one's `connect`
        answer may be handled before this one's EOF is read: the kernel's TCP state
        says whether the switch closed it (a FIN queued behind unread events too); on
        a socket without TCP_INFO, a peek sees an EOF with nothing unread before it."""
        if self.closed or self._socket_app_over():
            return True
        try:
            state = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            return state != _TCP_ESTABLISHED
        except (AttributeError, OSError):  # no TCP_INFO here, or not a TCP socket
            pass
        try:
            # Polled first: the socket has a send timeout, which a recv would wait out.
            if not select.select([self._sock], [], [], 0)[0]:
                return False
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except (ValueError, OSError):  # reset, or closed meanwhile by the server thread
            return True

    def send_away(self, destination: str, event_uuid: str) -> None:
        """`transfer` to `destination` for a call no actor takes (over the limit). Should
        the switch refuse it, the socket is let go (`exit`): the dialplan's next action
        runs, which is where the operator sends a caller icall cannot take."""
        self.execute(self.uuid, "transfer", destination, event_uuid, reply_to=_LetGoIfRefused(self))

    def _deliver(self, message: Any) -> None:
        with self._deliver_lock:
            if self._retired:
                return
            if self._ref is None or self._held:
                self._held.append(message)
            else:
                self._tell(message)

    def _tell(self, message: Any) -> None:
        """Under `_deliver_lock`. A dead actor's messages wait for its replacement."""
        assert self._ref is not None
        try:
            self._ref.tell(message)
        except pykka.ActorDeadError:
            self._held.append(message)

    # --- any thread: the Commander's verbs, on this socket

    def take_channel(self) -> Event | None:
        """The connect data, once: the first look at the channel costs no round trip."""
        channel, self._channel = self._channel, None
        return channel

    def execute(self, call_uuid: str, app: str, arg: str, event_uuid: str, lock: bool = False,
                reply_to: Any = None, since: Cause | None = None) -> None:
        """`sendmsg` execute `app arg` tagged `event_uuid`, as Commander.execute."""
        headers, body = execute_message(app, arg, event_uuid, lock)
        self._sendmsg(headers, body, event_uuid, reply_to, since)

    def hangup(self, call_uuid: str, cause: str = "NORMAL_CLEARING", reply_to: Any = None,
               since: Cause | None = None) -> None:
        self._sendmsg(hangup_message(cause), None, "", reply_to, since)

    def api(self, command: str) -> pykka.Future:
        """`api <command>` on this socket; the future holds the body (or an EslError)."""
        future: pykka.Future = pykka.ThreadingFuture()

        def answer(frame: Frame | None) -> None:
            if frame is None:
                future.set_exception((Disconnected, Disconnected("the call's socket closed"), None))
            else:
                future.set(frame.body.decode("utf-8", "replace"))
        self._write(f"api {command}\n\n", answer)
        return future

    def handed_off(self) -> None:
        """The flow handed the call on: leave out what only the destination's apps
        send from now on (HANDED_OFF_EVENTS)."""
        if not self._narrowed:
            self._narrowed = True
            self._write(f"nixevent {' '.join(HANDED_OFF_EVENTS)}\n\n", self._expect_ok("nixevent"))

    def exit(self) -> None:
        """Let the socket go: the switch answers `+OK bye` and closes it."""
        if not self.closed:
            self._write("exit\n\n", lambda frame: None)

    def _sendmsg(self, headers: list[tuple[str, str]], body: str | None, event_uuid: str,
                 reply_to: Any, since: Cause | None) -> None:
        try:
            head = sendmsg_head("", headers, body)
        except ValueError as exc:  # never written: the command is refused here
            self._refused(reply_to, event_uuid, f"-ERR invalid command: {exc}", False)
            return
        text = head + "\n\n" + (body or "")
        written_at = time.monotonic()

        def answer(frame: Frame | None) -> None:
            reply = frame.headers.get("Reply-Text", "") if frame else "-ERR the call's socket closed"
            if reply.startswith("+OK"):
                if since is not None:
                    self._telemetry.command_written(since, written_at)
            else:
                self._refused(reply_to, event_uuid, reply, uncertain=frame is None)
        self._write(text, answer)

    def _refused(self, reply_to: Any, event_uuid: str, reply: str, uncertain: bool) -> None:
        logger.warning("call %s: sendmsg refused: %s", self.uuid, reply)
        if reply_to is not None:
            try:
                reply_to.tell(CommandFailed(self.uuid, event_uuid, reply, uncertain))
            except pykka.ActorDeadError:
                pass  # the call's actor is gone; nobody left to tell

    def _write(self, text: str, waiter: Waiter) -> None:
        """Write one whole command (its blank line and body included) and queue its
        waiter, in wire order. A write that fails shuts the socket down: the server
        thread then sees it close and fails every waiter, this one included."""
        data = text.encode("utf-8")
        with self._write_lock:
            if self.closed:
                waiter(None)
                return
            self._waiters.append(waiter)
            try:
                self._sock.sendall(data)
            except OSError as exc:
                logger.warning("call %s: writing to its socket failed: %s", self.uuid, exc)
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
