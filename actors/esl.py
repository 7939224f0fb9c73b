"""One ESL command connection on python-ESL: the only module that imports `ESL`.

The event connection does not use libesl: it reads untrusted bytes, and libesl
crashes the process on some malformed frames (see actors/esl_wire.py). It shares
`login` from here and reads through `esl_wire` (actors/esl_events.py).

Login is done here in Python, then the socket is handed to libesl. python-ESL's
own `ESLconnection(host, port, password)` says only "not connected" whatever went
wrong. So `EslSession.connect` opens the TCP socket itself with a timeout and tells
apart a refused port, a timeout, a rude rejection (`text/rude-rejection`, the ACL)
and a wrong password (`-ERR invalid`). Then it hands the socket to
`ESLconnection(fd)`. libesl's `esl_attach_handle` marks the handle connected and
sends `connect`. An inbound server answers that with `-ERR command not found`, a
`command/reply`, and that reply is what makes the attach succeed. It only fails when
no reply arrives at all.

libesl facts that shape the rest (esl.c, as built into python-ESL 1.4.18):
- `esl_send_recv` and a frame read half-way wait with no limit: `handle_recv`
  polls 1 s and just loops on silence. A watchdog bounds every libesl call here. At
  the deadline it shuts the socket down, the call returns failed, and we raise
  `Disconnected`. A reply that never came means the link is not usable any more.
- `esl_execute` formats `execute-app-arg` into a 4096-byte buffer. We never call it:
  `sendmsg` builds the whole text (with `Event-UUID`) and sends it with `sendRecv`,
  whose reply can be checked. An argument longer than `MAX_HEADER_ARG` or one that
  holds a newline goes as a `text/plain` body. FreeSWITCH's `switch_ivr_parse_event`
  takes the body as the argument when `execute-app-arg` is absent.
- Not thread-safe (see DESIGN): one thread only uses an `EslSession`. Only the
  watchdog's `shutdown()` crosses threads, and it is a plain syscall on a socket
  that is still open.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time

import ESL

from actors.esl_wire import MAX_HEAD_BYTES, Disconnected, EslError, content_length, parse_head

# The error hierarchy lives with the framing; it is re-exported here for every user.
from ivr.flow import UNAWAITED_APP

__all__ = ["AuthFailed", "Backoff", "ConnectFailed", "Disconnected", "EslError", "EslSession",
           "Rejected", "subscription_commands"]

logger = logging.getLogger(__name__)

# Longest execute-app-arg sent as a header line; longer ones go as a body (libesl's
# esl_execute truncates at 4096 bytes including the header name).
MAX_HEADER_ARG = 4000

# CHANNEL_BRIDGE tells a flow that a bridge it awaits was answered (its ring guard ends).
SUBSCRIBED_EVENTS = ("CHANNEL_PARK", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_BRIDGE", "CHANNEL_HANGUP",
                     "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB", "HEARTBEAT")
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
    on the switch are left out. The two `Event-Name` filters add the events that
    carry no channel variables: BACKGROUND_JOB (our bgapi answers) and HEARTBEAT
    (liveness). `Application -set` vetoes the completions of `set`: no flow waits on
    one (the bridge settings, the checkpoints), and they were a third of a call's
    events.
    """
    words = " ".join(SUBSCRIBED_EVENTS) + " CUSTOM " + " ".join(CUSTOM_SUBCLASSES)
    return [
        f"event plain {words}",
        f"filter variable_{flow_variable} {flow}",
        "filter Event-Name BACKGROUND_JOB",
        "filter Event-Name HEARTBEAT",
        f"filter Application -{UNAWAITED_APP}",
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


class _Watchdog:
    """Shuts the socket down if a libesl call outlives its deadline. It owns one
    thread, started by the session and stopped by `EslSession.close`.

    Arming and disarming only set a number: the reader arms it around every event,
    and waking a thread each time cost more than reading the event. The thread looks
    every TICK_S instead, so a deadline is kept to within TICK_S."""

    TICK_S = 0.1

    def __init__(self, fd: int, name: str):
        self._fd = fd
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._closed = False
        self.fired = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> None:
        self._deadline = _now() + seconds

    def disarm(self) -> None:
        self._deadline = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        """Watchdog thread: every TICK_S, shut the socket down if the deadline passed."""
        with self._cond:
            while not self._closed:
                self._cond.wait(self.TICK_S)
                deadline = self._deadline
                if self._closed or deadline is None or _now() < deadline:
                    continue
                # Not closed, under the lock that close() takes: the fd is still ours.
                self.fired = True
                self._deadline = None
                _shutdown_fd(self._fd)


def _now() -> float:
    return time.monotonic()


def _shutdown_fd(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone: the call it guards fails on its own
    finally:
        sock.detach()


class EslSession:
    """One authenticated inbound connection. One thread uses it; see the module doc."""

    def __init__(self, connection: ESL.ESLconnection, address: str, reply_timeout_s: float):
        self._connection = connection
        self.address = address
        self.reply_timeout_s = reply_timeout_s
        self._watchdog = _Watchdog(connection.socketDescriptor(), f"esl-watchdog {address}")
        self._armed_s = reply_timeout_s  # the deadline of the last command sent
        self._closed = False

    @classmethod
    def connect(cls, host: str, port: int, password: str, timeout_s: float,
                reply_timeout_s: float | None = None) -> EslSession:
        """Connect, log in and attach python-ESL; every step bounded by `timeout_s`.
        `reply_timeout_s` (default `timeout_s`) bounds every later reply."""
        sock = login(host, port, password, timeout_s)
        address = f"{host}:{port}"
        sock.settimeout(None)  # libesl wants a blocking socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout_s))
        fd = sock.detach()  # from here libesl owns (and closes) the descriptor
        watchdog = _Watchdog(fd, f"esl-attach {address}")
        watchdog.arm(timeout_s)
        try:
            connection = ESL.ESLconnection(fd)
        finally:
            watchdog.disarm()
            watchdog.close()
        if not connection.connected():
            connection.disconnect()
            raise ConnectFailed(f"no answer to 'connect' within {timeout_s:g} s after login")
        return cls(connection, address, reply_timeout_s or timeout_s)

    def command(self, text: str) -> str:
        """Send one command (`event plain ...`, `filter ...`); return its Reply-Text."""
        return self._send_recv(text).getHeader("Reply-Text") or ""

    def api(self, command: str) -> str:
        """`api <command>`: the api/response body (FreeSWITCH answers errors as `-ERR ...`)."""
        reply = self._send_recv(f"api {command}")
        if (reply.getHeader("Content-Type") or "") != "api/response":
            return reply.getHeader("Reply-Text") or ""
        return reply.getBody() or ""

    def bgapi(self, command: str, job_uuid: str) -> str:
        """`bgapi <command>` with our Job-UUID; returns the Reply-Text (`+OK Job-UUID: ...`)."""
        return self.command(f"bgapi {command}\nJob-UUID: {job_uuid}")

    def sendmsg(self, uuid: str, headers: list[tuple[str, str]], body: str | None = None,
                reply_timeout_s: float | None = None) -> str:
        """`sendmsg <uuid>` with these headers (and a text/plain body); returns Reply-Text.
        `reply_timeout_s` (default: the session's) bounds the wait for its +OK."""
        head = sendmsg_head(uuid, headers, body)
        text = head if body is None else head + "\n\n" + body
        return self._send_recv(text, reply_timeout_s).getHeader("Reply-Text") or ""

    def peer_closed(self) -> bool:
        """True when the switch has closed this idle connection (EOF is waiting):
        a command sent now would be lost, so the caller reconnects first. One
        non-blocking peek, a few microseconds."""
        sock = socket.socket(fileno=self._connection.socketDescriptor())
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # nothing to read: open and quiet
        except OSError:
            return True
        finally:
            sock.detach()

    def close(self) -> None:
        """Close the connection and stop the watchdog; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.close()
        self._connection.disconnect()

    def _send_recv(self, text: str, reply_timeout_s: float | None = None) -> ESL.ESLevent:
        if self._closed:
            raise Disconnected("the session is closed")
        self._armed_s = reply_timeout_s or self.reply_timeout_s
        self._watchdog.arm(self._armed_s)
        try:
            reply = self._connection.sendRecv(text)
        finally:
            self._watchdog.disarm()
        if reply is None or not self._connection.connected():
            raise Disconnected(self._lost_reason())
        return reply

    def _lost_reason(self) -> str:
        if self._watchdog.fired:
            return f"no reply within {self._armed_s:g} s"
        return "the switch closed the connection"


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
    """Read one frame byte by byte, so nothing meant for libesl is consumed. Its head
    and length are checked as on the event connection (`esl_wire`): a malformed
    greeting or answer raises MalformedFrame, an EslError, like any failed login."""
    deadline = _now() + timeout_s
    raw = bytearray()
    while not raw.endswith(b"\n\n"):
        if len(raw) > MAX_HEAD_BYTES:
            raise ConnectFailed(f"login answer with a header block over {MAX_HEAD_BYTES} bytes")
        sock.settimeout(max(0.001, deadline - _now()))
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectFailed("the switch closed the connection during login")
        raw += chunk
    headers = parse_head(bytes(raw[:-2]))
    length = content_length(headers)
    body = b""
    while len(body) < length:
        sock.settimeout(max(0.001, deadline - _now()))
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectFailed("the switch closed the connection during login")
        body += chunk
    return headers, body.decode("utf-8", "replace")


def execute_message(app: str, arg: str, event_uuid: str,
                    lock: bool) -> tuple[list[tuple[str, str]], str | None]:
    """The headers (and body) of a `sendmsg` execute of `app arg` tagged `event_uuid`:
    an argument too long for a header line, or holding a newline, goes as a text/plain
    body (FreeSWITCH takes the body as the argument when execute-app-arg is absent)."""
    headers = [("call-command", "execute"), ("execute-app-name", app)]
    body = None
    if len(arg.encode("utf-8")) > MAX_HEADER_ARG or "\n" in arg:
        body = arg
    else:
        headers.append(("execute-app-arg", arg))
    if lock:
        headers.append(("event-lock", "true"))
    headers.append(("Event-UUID", event_uuid))
    return headers, body


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


def _check_header_value(name: str, value: str) -> None:
    if "\n" in value or "\r" in value or "\n" in name or ":" in name:
        raise ValueError(f"header {name!r} would break the frame; send it as a body")


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
