"""A real-socket ESL server for the link's tests that answers with recorded frames.

`Capture` reads a `captures/X.esl` transcript: which S>C frames answered which C>S
command, and which frames are events. `ReplayServer` listens on loopback and plays
an inbound FreeSWITCH: auth/request, the recorded login answer, a reply to every
command, then the recorded events once the client subscribes. Fault knobs: wrong
password (the recorded `-ERR invalid` plus disconnect notice), rude rejection,
silence (never greet), mute commands, canned api replies, `malformed` frames sent
once in place of the greeting, the auth answer, the `event` or first `filter` reply;
`send_all()` writes bytes on every open connection now (mid-stream); `drop_all()`
closes every connection (a switch that went away).

Threads: one accept thread, one thread per connection; `stop()` joins them all.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

from tests.captures import CAPTURES

RUDE_REJECTION = (b"Content-Type: text/rude-rejection\nContent-Length: 24\n\n"
                  b"Access Denied, go away.\n")
_RECORD = re.compile(rb"### (C>S|S>C) t=([0-9.]+) len=(\d+)\n")


@dataclass
class Record:
    direction: str
    t: float
    data: bytes


class Capture:
    """The records of one `.esl` transcript, in wire order."""

    def __init__(self, name: str):
        raw = (CAPTURES / f"{name}.esl").read_bytes()
        self.records: list[Record] = []
        pos = 0
        while pos < len(raw):
            match = _RECORD.match(raw, pos)
            assert match, f"{name}.esl: bad record header at byte {pos}"
            start, length = match.end(), int(match.group(3))
            self.records.append(Record(match.group(1).decode(), float(match.group(2)),
                                       raw[start:start + length]))
            pos = start + length + 1  # the record's trailing newline
        s2c = b"".join(r.data for r in self.records if r.direction == "S>C")
        assert s2c == (CAPTURES / f"{name}.s2c.raw").read_bytes(), "transcript != s2c.raw"

    def replies_to(self, command_prefix: bytes) -> list[bytes]:
        """The non-event S>C frames that answered the first C>S record starting so."""
        for index, record in enumerate(self.records):
            if record.direction == "C>S" and record.data.startswith(command_prefix):
                replies = []
                for later in self.records[index + 1:]:
                    if later.direction == "C>S":
                        break
                    if not is_event(later.data):
                        replies.append(later.data)
                return replies
        raise KeyError(command_prefix)

    def greeting(self) -> bytes:
        first = self.records[0]
        assert first.direction == "S>C" and b"auth/request" in first.data
        return first.data

    def events(self) -> list[bytes]:
        return [r.data for r in self.records if r.direction == "S>C" and is_event(r.data)]


def is_event(frame: bytes) -> bool:
    return b"Content-Type: text/event-" in frame.split(b"\n\n", 1)[0]


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(body: str) -> bytes:
    data = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(data), data)


@dataclass
class Received:
    """One command as the server read it: its text up to the blank line, its body."""

    head: str
    body: str = ""

    @property
    def first_line(self) -> str:
        return self.head.split("\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split("\n")[1:]:
            key, _, value = line.partition(": ")
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Knobs:
    password: str = "ClueCon"
    rude: bool = False
    silent: bool = False
    events: list[bytes] = field(default_factory=list)
    api_replies: dict[str, bytes] = field(default_factory=dict)  # command prefix -> frame
    sendmsg_reply: bytes = b""
    mute: tuple[str, ...] = ()  # commands starting so get no reply at all
    # point -> bytes sent once instead: greeting, auth, event, filter
    malformed: dict[str, bytes] = field(default_factory=dict)


class ReplayServer:
    """Listens on 127.0.0.1:<ephemeral>; see the module docstring."""

    def __init__(self, knobs: Knobs | None = None):
        self.knobs = knobs or Knobs()
        self.login = Capture("inbound_plain_ivr")
        self.auth_failure = Capture("auth_failure")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[list[Received]] = []
        self.logins = 0
        self.changed = threading.Condition()
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._accepter = threading.Thread(target=self._accept, name="replay-accept", daemon=True)
        self._accepter.start()

    # --- what the tests wait on

    def wait_for(self, predicate, timeout_s: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout=timeout_s)

    def commands(self, connection: int = -1) -> list[Received]:
        with self.changed:
            return list(self.connections[connection]) if self.connections else []

    def drop_all(self) -> None:
        """Close every open client socket (a switch that went away)."""
        with self.changed:
            for sock in self._open:
                _close(sock)

    def send_all(self, data: bytes) -> None:
        """Write `data` on every open client socket (a frame in the middle of a stream)."""
        with self.changed:
            for sock in self._open:
                try:
                    sock.sendall(data)
                except OSError:
                    pass  # that one is closed already

    def stop(self) -> None:
        self._stopping = True
        _close(self._listener)
        self.drop_all()
        self._accepter.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)
        assert not any(t.is_alive() for t in self._threads), "replay server thread left"

    # --- server threads

    def _accept(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.changed:
                self._open.append(sock)
                self.connections.append([])
                thread = threading.Thread(target=self._serve, name="replay-conn", daemon=True,
                                          args=(sock, len(self.connections) - 1))
                self._threads.append(thread)
                self.changed.notify_all()
            thread.start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            self._conversation(sock, index)
        except OSError:
            pass  # the client or drop_all() closed it
        finally:
            _close(sock)
            with self.changed:
                self.changed.notify_all()

    def _conversation(self, sock: socket.socket, index: int) -> None:
        knobs = self.knobs
        if knobs.silent:
            sock.recv(1)  # until the client gives up and closes
            return
        if knobs.rude:
            sock.sendall(RUDE_REJECTION)
            return
        sock.sendall(self._once("greeting") or self.login.greeting())
        reader = _CommandReader(sock)
        while True:
            command = reader.next()
            if command is None:
                return
            with self.changed:
                self.connections[index].append(command)
                self.changed.notify_all()
            word = command.first_line.split(" ", 1)[0]
            if knobs.mute and command.first_line.startswith(knobs.mute):
                continue
            if word == "auth":
                if command.first_line != f"auth {knobs.password}":
                    sock.sendall(b"".join(self.auth_failure.replies_to(b"auth ")))
                    with self.changed:
                        self.logins += 1
                        self.changed.notify_all()
                    return
                sock.sendall(self._once("auth") or b"".join(self.login.replies_to(b"auth ")))
                with self.changed:
                    self.logins += 1
                    self.changed.notify_all()
            elif word == "event":
                sock.sendall(self._once("event") or reply("+OK event listener enabled plain"))
                for frame in knobs.events:
                    sock.sendall(frame)
            elif word == "filter":
                _, name, value = command.first_line.split(" ", 2)
                sock.sendall(self._once("filter") or reply(f"+OK filter added. [{name}]=[{value}]"))
            elif word == "api":
                text = command.first_line[4:]
                frame = next((f for p, f in knobs.api_replies.items() if text.startswith(p)),
                             reply("-ERR command not found"))
                sock.sendall(frame)
            elif word == "bgapi":
                job = command.header("Job-UUID") or "00000000-0000-0000-0000-000000000000"
                sock.sendall(f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\n"
                             f"Job-UUID: {job}\n\n".encode())
            elif word == "sendmsg":
                sock.sendall(knobs.sendmsg_reply or reply("+OK"))
            elif word == "exit":
                sock.sendall(b"".join(Capture("junk_command").replies_to(b"exit")))
                return
            else:  # `connect` from libesl's attach, junk: as recorded in junk_command
                sock.sendall(reply("-ERR command not found"))


    def _once(self, point: str) -> bytes | None:
        """The malformed frame for `point`, the first time only."""
        with self.changed:
            return self.knobs.malformed.pop(point, None)


class _CommandReader:
    """Splits what the client sends into commands (head up to a blank line, body by
    content-length). Blank lines between commands are skipped, as FreeSWITCH does:
    libesl appends "\\n\\n" to a command that ends in a body."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buffer = b""

    def next(self) -> Received | None:
        while True:
            self._buffer = self._buffer.lstrip(b"\r\n")
            head, sep, rest = self._buffer.partition(b"\n\n")
            if sep:
                break
            if not self._fill():
                return None
        self._buffer = rest
        text = head.decode()
        received = Received(text)
        length = int(received.header("content-length") or 0)
        while len(self._buffer) < length:
            if not self._fill():
                return None
        received.body = self._buffer[:length].decode()
        self._buffer = self._buffer[length:]
        return received

    def _fill(self) -> bool:
        chunk = self._sock.recv(65536)
        self._buffer += chunk
        return bool(chunk)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more
    sock.close()
