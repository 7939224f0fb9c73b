"""One ESL command connection, in pure Python like the event connection.

`EslSession.connect` opens the TCP socket itself with a timeout and tells apart a
refused port, a timeout, a rude rejection (`text/rude-rejection`, the ACL) and a wrong
password (`-ERR invalid`); the event connection shares `login` (actors/esl_events.py).
Replies are read through `esl_wire`, which checks every limit before it trusts a
frame: a reply is as untrusted as an event.

Why not libesl here any more (python-ESL 1.4.18; the load driver and the baseline
controller in bench/ still use it): its `sendRecv` waits for each reply before the
next command can go, so each command cost a round trip, a SWIG call and a watchdog
(libesl's reads wait with no limit), and a checkpoint and the command behind it were
two round trips. Here `sendmsgs` writes several commands at once and reads their
replies in order, as FreeSWITCH answers a connection's commands one by one
(mod_event_socket reads the next command only after answering the last); every wait
is bounded by the kernel (actors.timed_recv: one system call a read).

Facts that shape the rest:
- An argument of `BODY_FROM_BYTES` or more, or one that holds a newline, goes as a
  `text/plain` body: the switch reads a header block a byte at a time, a body at once,
  and `switch_ivr_parse_event` takes the body as the argument when `execute-app-arg`
  is absent.
- A reply that never comes leaves the link out of step for good: the session closes,
  and what was written after the last reply may or may not have run (`RepliesLost`).
- Not thread-safe (see DESIGN): one thread only uses an `EslSession`.
"""

from __future__ import annotations

import logging
import random
import socket
import time

from actors.esl_wire import (
    MAX_HEAD_BYTES,
    Disconnected,
    EslError,
    Frame,
    FrameParser,
    content_length,
    parse_head,
)
from actors.timed_recv import TimedRecv

# The error hierarchy lives with the framing; it is re-exported here for every user.
from ivr.flow import UNAWAITED_APPS

__all__ = ["AuthFailed", "Backoff", "ConnectFailed", "Disconnected", "EslError", "EslSession",
           "Rejected", "RepliesLost", "subscription_commands"]

logger = logging.getLogger(__name__)

# An execute-app-arg at least this long goes as a body: the switch reads a
# command's header block one byte at a time (mod_event_socket.c, read_packet: a recv
# and a yield per byte) and its body in one read, and the body's two header lines
# (content-type, content-length) cost about this many bytes.
BODY_FROM_BYTES = 48
READ_BYTES = 65536
_REPLY_TYPES = ("command/reply", "api/response")

# CHANNEL_BRIDGE tells a flow that a bridge it awaits was answered (its ring guard ends).
SUBSCRIBED_EVENTS = ("CHANNEL_PARK", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_BRIDGE", "CHANNEL_HANGUP",
                     "CHANNEL_HANGUP_COMPLETE", "HEARTBEAT")
CUSTOM_SUBCLASSES = ("fifo::info",)


class ConnectFailed(EslError):
    """The switch could not be reached: refused, unreachable or timed out."""


class AuthFailed(EslError):
    """The switch answered the password with `-ERR invalid`."""


class Rejected(EslError):
    """The switch refused us before login (`text/rude-rejection`, its ACL)."""


def subscription_commands(flow_variable: str, flow: str) -> list[str]:
    """The `event` and `filter` lines the event connection sends, in order.

    `CUSTOM fifo::info` comes last: every word after CUSTOM is a subclass name.
    FreeSWITCH's filters (mod_event_socket.c, event_handler) work like this: once any
    filter exists, an event passes if at least one filter header matches it. Header
    and value are compared case-insensitively. Each filter is an alternative, and a
    `-` value vetoes. So `variable_<flow_variable> <flow>` lets through the events of
    our calls: they carry the channel variables, fifo::info included. The other calls
    on the switch are left out. The `Event-Name` filter adds HEARTBEAT (liveness),
    which carries no channel variables. No BACKGROUND_JOB: icall sends no bgapi, and
    every other client's bgapi answers would reach us (the load driver's originates
    were one event a call). `Application -set` and `Application -answer` veto the
    completions of those applications: no flow waits on one (ivr.flow.UNAWAITED_APPS).
    """
    words = " ".join(SUBSCRIBED_EVENTS) + " CUSTOM " + " ".join(CUSTOM_SUBCLASSES)
    return [
        f"event plain {words}",
        f"filter variable_{flow_variable} {flow}",
        "filter Event-Name HEARTBEAT",
        *(f"filter Application -{app}" for app in UNAWAITED_APPS),
    ]


class Backoff:
    """Exponential delays with jitter between reconnect attempts (no thread)."""

    def __init__(self, min_s: float, max_s: float):
        self.min_s, self.max_s = min_s, max_s
        self.failures = 0

    def next_delay(self) -> float:
        nominal = min(self.max_s, self.min_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return min(self.max_s, nominal * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.failures = 0


class EslSession:
    """One authenticated inbound connection that sends commands and reads their
    replies; one thread uses it (see the module doc)."""

    def __init__(self, sock: socket.socket, address: str, reply_timeout_s: float):
        self._sock = sock
        self._io = TimedRecv(sock, reply_timeout_s)
        self.address = address
        self.reply_timeout_s = reply_timeout_s
        self._parser = FrameParser()
        self._closed = False

    @classmethod
    def connect(cls, host: str, port: int, password: str, timeout_s: float,
                reply_timeout_s: float | None = None) -> EslSession:
        """Connect and log in, every step bounded by `timeout_s`.
        `reply_timeout_s` (default `timeout_s`) bounds every later reply."""
        sock = login(host, port, password, timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, f"{host}:{port}", reply_timeout_s or timeout_s)

    def command(self, text: str) -> str:
        """Send one command (`event plain ...`, `filter ...`); return its Reply-Text."""
        return self.exchange([text])[0].headers.get("Reply-Text", "")

    def api(self, command: str) -> str:
        """`api <command>`: the api/response body (FreeSWITCH answers errors as `-ERR ...`)."""
        reply = self.exchange([f"api {command}"])[0]
        if reply.content_type != "api/response":
            return reply.headers.get("Reply-Text", "")
        return _decoded(reply.body)

    def exchange(self, texts: list[str], reply_timeout_s: float | None = None) -> list[Frame]:
        """Write `texts` as commands in one go, then read one reply per command, all
        within `reply_timeout_s` (default: the session's). A reply that does not come
        in time leaves the link out of step for good: the session closes and
        `RepliesLost` carries the replies that did come."""
        if self._closed:
            raise Disconnected("the session is closed")
        timeout_s = reply_timeout_s or self.reply_timeout_s
        data = "".join(text + "\n\n" for text in texts).encode("utf-8")
        try:
            self._io.sendall(data, timeout_s)
        except OSError as exc:
            self.close()
            raise RepliesLost(f"connection lost: {exc.strerror or exc}", []) from None
        replies: list[Frame] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(replies) < len(texts):
                replies.append(self._next_reply(deadline, timeout_s))
        except Disconnected as exc:
            self.close()
            raise RepliesLost(str(exc), replies) from None
        return replies

    def peer_closed(self) -> bool:
        """True when the switch has closed this idle connection (EOF is waiting):
        a command sent now would be lost, so the caller reconnects first. One
        non-blocking peek, a few microseconds."""
        return self._closed or self._io.peer_closed()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
        self._sock.close()

    def _next_reply(self, deadline: float, timeout_s: float) -> Frame:
        while True:
            frame = self._parser.next_frame()
            if frame is not None:
                kind = frame.content_type
                if kind in _REPLY_TYPES:
                    return frame
                if kind == "text/disconnect-notice":
                    raise Disconnected("the switch sent a disconnect notice")
                logger.debug("ESL %s: ignoring a %s frame on the command connection", self.address, kind)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise Disconnected(f"no reply within {timeout_s:g} s")
            try:
                data = self._io.recv(READ_BYTES, left)
            except OSError as exc:
                raise Disconnected(f"connection lost: {exc.strerror or exc}") from None
            if data is None:
                raise Disconnected(f"no reply within {timeout_s:g} s")
            if not data:
                raise Disconnected("the switch closed the connection")
            self._parser.feed(data)


class RepliesLost(Disconnected):
    """Commands were written and not every reply came: the ones after `replies` may
    have run on the switch, or not."""

    def __init__(self, reason: str, replies: list[Frame]):
        super().__init__(reason)
        self.replies = replies


def _decoded(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def login(host: str, port: int, password: str, timeout_s: float) -> socket.socket:
    """Open the socket and answer auth/request; raise the precise EslError."""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        raise ConnectFailed("connection refused (is mod_event_socket listening there?)") from None
    except TimeoutError:
        raise ConnectFailed(f"no answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise ConnectFailed(exc.strerror or str(exc)) from None
    try:
        greeting = _read_frame(sock, timeout_s)
        kind = greeting[0].get("Content-Type", "")
        if kind == "text/rude-rejection":
            text = greeting[1].strip() or "no reason given"
            raise Rejected(f"rejected by the switch before login: {text!r} (its ACL)")
        if kind != "auth/request":
            raise ConnectFailed(f"{where} does not speak ESL (first frame {kind!r})")
        sock.sendall(f"auth {password}\n\n".encode())
        reply = _read_frame(sock, timeout_s)[0].get("Reply-Text", "")
        if reply.startswith("-ERR"):
            raise AuthFailed("authentication refused (wrong password?)")
        if not reply.startswith("+OK"):
            raise ConnectFailed(f"unexpected answer to auth: {reply!r}")
    except EslError:
        sock.close()
        raise
    except TimeoutError:
        sock.close()
        raise ConnectFailed(f"no login answer within {timeout_s:g} s") from None
    except OSError as exc:
        sock.close()
        raise ConnectFailed(f"connection lost during login: {exc.strerror or exc}") from None
    return sock


def _read_frame(sock: socket.socket, timeout_s: float) -> tuple[dict[str, str], str]:
    """Read one frame byte by byte, so nothing after it is consumed (the session's own
    parser reads from there). Its head
    and length are checked as on the event connection (`esl_wire`): a malformed
    greeting or answer raises MalformedFrame, an EslError, like any failed login."""
    deadline = time.monotonic() + timeout_s
    raw = bytearray()
    while not raw.endswith(b"\n\n"):
        if len(raw) > MAX_HEAD_BYTES:
            raise ConnectFailed(f"login answer with a header block over {MAX_HEAD_BYTES} bytes")
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectFailed("the switch closed the connection during login")
        raw += chunk
    headers = parse_head(bytes(raw[:-2]))
    length = content_length(headers)
    body = b""
    while len(body) < length:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectFailed("the switch closed the connection during login")
        body += chunk
    return headers, body.decode("utf-8", "replace")


def execute_message(app: str, arg: str, event_uuid: str,
                    lock: bool) -> tuple[list[tuple[str, str]], str | None]:
    """The headers (and body) of a `sendmsg` execute of `app arg` tagged `event_uuid`:
    a long argument (BODY_FROM_BYTES), or one holding a newline, goes as a text/plain
    body (FreeSWITCH takes the body as the argument when execute-app-arg is absent)."""
    headers = [("call-command", "execute"), ("execute-app-name", app)]
    body = None
    if len(arg.encode("utf-8")) >= BODY_FROM_BYTES or "\n" in arg:
        body = arg
    else:
        headers.append(("execute-app-arg", arg))
    if lock:
        headers.append(("event-lock", "true"))
    headers.append(("Event-UUID", event_uuid))
    return headers, body


def hangup_message(cause: str) -> list[tuple[str, str]]:
    """The headers of a `sendmsg` hangup with `cause`."""
    return [("call-command", "hangup"), ("hangup-cause", cause)]


def sendmsg_head(target: str, headers: list[tuple[str, str]], body: str | None) -> str:
    """The header block of `sendmsg <target>` (an empty target: the outbound socket's
    own channel), with the content headers of a text/plain `body`, without its blank
    line. Raises ValueError for a header or body that would break the frame."""
    lines = [f"sendmsg {target}" if target else "sendmsg"]
    for name, value in headers:
        _check_header_value(name, value)
        lines.append(f"{name}: {value}")
    if body is not None:
        if "\0" in body:
            raise ValueError("a sendmsg body cannot hold a NUL byte")
        lines.append("content-type: text/plain")
        lines.append(f"content-length: {len(body.encode('utf-8'))}")
    return "\n".join(lines)


def sendmsg_text(target: str, headers: list[tuple[str, str]], body: str | None) -> str:
    """The whole `sendmsg <target>` command (head, and body if any), without the blank
    line that ends it. Raises ValueError for a header or body that would break the frame."""
    head = sendmsg_head(target, headers, body)
    return head if body is None else head + "\n\n" + body


def _check_header_value(name: str, value: str) -> None:
    if "\n" in value or "\r" in value or "\n" in name or ":" in name:
        raise ValueError(f"header {name!r} would break the frame; send it as a body")
