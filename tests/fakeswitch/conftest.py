"""Fixtures for the fakeswitch tests: a started stand-in and a raw ESL test client."""

from __future__ import annotations

import json
import socket
import urllib.parse

import pytest

from fakeswitch import FakeSwitch

TIMEOUT_S = 10.0


class Frame:
    """One frame from the switch: its outer headers, body, and parsed event headers."""

    def __init__(self, headers: list[tuple[str, str]], body: bytes) -> None:
        self.headers = headers
        self.outer = dict(headers)
        self.body = body
        self.event: list[tuple[str, str]] = []
        if self.content_type == "text/event-plain":
            text = body.decode()
            block = text.split("\n\n", 1)[0]
            for line in block.split("\n"):
                key, _, value = line.partition(": ")
                self.event.append((key, urllib.parse.unquote(value)))
        elif self.content_type == "text/event-json":
            self.event = json.loads(body, object_pairs_hook=list)

    @property
    def content_type(self) -> str:
        return self.outer.get("Content-Type", "")

    def get(self, name: str) -> str | None:
        for key, value in self.event:
            if key == name:
                return value
        return None


def split_frames(data: bytes) -> tuple[list[Frame], bytes]:
    frames = []
    while True:
        end = data.find(b"\n\n")
        if end == -1:
            return frames, data
        head = data[:end].decode("utf-8", "replace")
        headers = [tuple(line.split(": ", 1)) for line in head.split("\n") if ": " in line]
        length = int(dict(headers).get("Content-Length", 0))
        if len(data) < end + 2 + length:
            return frames, data
        frames.append(Frame(headers, data[end + 2 : end + 2 + length]))
        data = data[end + 2 + length :]


class RawClient:
    """A plain-socket ESL client: send text, read whole frames with a timeout."""

    def __init__(self, port: int | None, sock: socket.socket | None = None) -> None:
        """Connect to ``port``, or wrap ``sock`` (a connection the switch made to us)."""
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock.settimeout(TIMEOUT_S)
        self.buf = b""
        self.pending: list[Frame] = []
        self.backlog: list[Frame] = []

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n\n")

    def frame(self) -> Frame:
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("switch closed the socket")
            frames, self.buf = split_frames(self.buf + chunk)
            self.pending.extend(frames)
        return self.pending.pop(0)

    def command(self, text: str) -> Frame:
        """Send a command and return its reply; events read meanwhile are kept."""
        self.send(text)
        while True:
            frame = self.frame()
            if frame.content_type in ("command/reply", "api/response"):
                return frame
            self.backlog.append(frame)

    def event_until(self, predicate) -> list[Frame]:
        seen = []
        while True:
            frame = self.backlog.pop(0) if self.backlog else self.frame()
            seen.append(frame)
            if frame.event and predicate(frame):
                return seen

    def login(self, password: str = "ClueCon") -> Frame:
        assert self.frame().content_type == "auth/request"
        return self.command(f"auth {password}")

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def nothing_arrives(self, wait_s: float) -> bool:
        """True when no byte arrives within ``wait_s`` (used to prove a non-delivery)."""
        self.sock.settimeout(wait_s)
        try:
            return not self.pending and not self.backlog and not self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(TIMEOUT_S)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def switch():
    sw = FakeSwitch(time_scale=0.02, users={"801": "answer:1", "802": "noanswer:1"}).start()
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture
def client(switch):
    raw = RawClient(switch.port)
    raw.login()
    try:
        yield raw
    finally:
        raw.close()
