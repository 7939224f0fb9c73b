"""The event connection's session: a plain socket read through `esl_wire`, no libesl.

Only the reader thread uses an `EventSession` (see actors/esl_reader.py). It logs in
like `EslSession` (the same `_login`), sends the subscription commands and then reads
events. Every way the bytes can go wrong ends as a `Disconnected` (or its
`MalformedFrame`): a frame that breaks the protocol, a frame that stays incomplete
longer than `reply_timeout_s`, a close, a disconnect notice. The reader then rebuilds
the link; nothing here can take the process or the thread down.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque

from actors.esl import login
from actors.esl_wire import Disconnected, Frame, FrameParser, MalformedFrame, event_of
from actors.timed_recv import TimedRecv
from ivr.event import Event

logger = logging.getLogger(__name__)

READ_BYTES = 65536
_EVENT_TYPES = ("text/event-plain", "text/event-json")
_REPLY_TYPES = ("command/reply", "api/response")


class EventSession:
    """One authenticated inbound connection that reads events. One thread uses it."""

    def __init__(self, sock: socket.socket, address: str, reply_timeout_s: float):
        self._sock = sock
        self._io = TimedRecv(sock, reply_timeout_s)
        self.address = address
        self.reply_timeout_s = reply_timeout_s
        self._parser = FrameParser()
        self._events: deque[Event] = deque()  # events that came while a reply was awaited
        self._partial_since: float | None = None
        self._closed = False

    @classmethod
    def connect(cls, host: str, port: int, password: str, timeout_s: float,
                reply_timeout_s: float | None = None) -> EventSession:
        """Connect and log in, bounded by `timeout_s`; raises an EslError."""
        sock = login(host, port, password, timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, f"{host}:{port}", reply_timeout_s or timeout_s)

    def command(self, text: str) -> str:
        """Send one command (`event plain ...`, `filter ...`); return its Reply-Text.
        Events that arrive before the reply are kept for `recv_event`."""
        self._send(text)
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Disconnected(f"no reply within {self.reply_timeout_s:g} s")
            frame = self._next_frame(left)
            if frame is None:
                continue
            if frame.content_type in _EVENT_TYPES:
                self._events.append(event_of(frame))
            elif frame.content_type in _REPLY_TYPES:
                return frame.headers.get("Reply-Text", "")
            else:
                self._not_an_event(frame)

    def recv_event(self, timeout_ms: int) -> Event | None:
        """Wait up to `timeout_ms` for one event; None if none came. Raises Disconnected."""
        if self._events:
            return self._events.popleft()
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            frame = self._next_frame(max(0.0, deadline - time.monotonic()))
            if frame is None:
                if time.monotonic() >= deadline:
                    return None
                continue
            if frame.content_type in _EVENT_TYPES:
                return event_of(frame)
            self._not_an_event(frame)

    def interrupt(self) -> None:
        """The one call another thread may make: a read waiting now (or next) ends
        with `Disconnected` at once, so a reader being stopped need not wait out its
        read's limit."""
        self._io.interrupt()

    def close(self) -> None:
        """Close the socket; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
        self._sock.close()

    # --- reading

    def _next_frame(self, wait_s: float) -> Frame | None:
        """One whole frame, reading for at most `wait_s`; None when none is whole yet."""
        if self._closed:
            raise Disconnected("the session is closed")
        frame = self._parser.next_frame()
        if frame is not None:
            self._partial_since = time.monotonic() if self._parser.partial else None
            return frame
        now = time.monotonic()
        if self._parser.partial:
            # Half a frame, then nothing: the rest is not coming (a truncated frame, a
            # Content-Length larger than the body). The link is out of step for good.
            self._partial_since = self._partial_since or now
            if now - self._partial_since > self.reply_timeout_s:
                raise MalformedFrame(f"a frame stayed incomplete for {self.reply_timeout_s:g} s")
        try:
            data = self._io.recv(READ_BYTES, wait_s)
        except OSError as exc:
            raise Disconnected(f"connection lost: {exc.strerror or exc}") from None
        if data is None:
            return None
        if not data:
            raise Disconnected("the switch closed the connection")
        self._parser.feed(data)
        return None

    def _not_an_event(self, frame: Frame) -> None:
        kind = frame.content_type
        if kind == "text/disconnect-notice":
            raise Disconnected("the switch sent a disconnect notice")
        if kind == "text/rude-rejection":
            raise Disconnected("the switch rejected us (its ACL)")
        logger.debug("ESL %s: ignoring a %s frame", self.address, kind)

    def _send(self, text: str) -> None:
        if self._closed:
            raise Disconnected("the session is closed")
        try:
            self._io.sendall(text.encode("utf-8") + b"\n\n")
        except OSError as exc:
            raise Disconnected(f"connection lost: {exc.strerror or exc}") from None
