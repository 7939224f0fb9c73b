"""A lean controller of the icall flow in outbound mode: the yardstick beside icall's.

The dialplan's `socket host:port async full` connects each call to it. One thread, one
selector over the listening socket and every call's socket, plain sockets and a few
lines of framing (no python-ESL: it wants a thread per connection); the flow and its
commands are bench.baseline_controller's (the same commands, arguments and order as
ivr/icall.py with the bench's configuration). Per call: `connect` (the channel's data:
the caller id), `myevents plain`, a `nixevent` of every type but
CHANNEL_EXECUTE_COMPLETE, and `filter Unique-ID <uuid>` with `filter Application -set`
(the completions of `set` nobody waits on stay at the switch); no linger (its socket
closes at the hangup, which is all it needs to know). No actors, no database, no CDRs,
no checkpoints, no resume.

    .venv/bin/python -m bench.baseline_outbound --listen 127.0.0.1:8084
        [--crm 5550801=801,...] [--run-s 3600]

It prints `READY` once listening and runs until SIGTERM/SIGINT or --run-s.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from urllib.parse import unquote

from bench.baseline_controller import Call, Controller, add_common_options, static_crm_and_stop_flag

# myevents subscribes these; all but the one the flow reads are dropped again.
MYEVENTS_UNREAD = ("CHANNEL_ANSWER CHANNEL_APPLICATION CHANNEL_BRIDGE CHANNEL_CREATE "
                   "CHANNEL_DATA CHANNEL_DESTROY CHANNEL_EXECUTE CHANNEL_HANGUP "
                   "CHANNEL_HANGUP_COMPLETE CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_OUTGOING "
                   "CHANNEL_PARK CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_STATE "
                   "CHANNEL_UNBRIDGE CHANNEL_UNPARK DETECTED_SPEECH DTMF NOTALK TALK")
SELECT_TIMEOUT_S = 0.2  # how often the loop looks at the stop flag


class Headers:
    """A frame's or an event's headers, read the way python-ESL's ESLevent is."""

    def __init__(self, values: dict[str, str]):
        self.values = values

    def getHeader(self, name: str) -> str | None:  # noqa: N802 (the ESLevent name)
        return self.values.get(name)


def parse_headers(block: bytes, decode: bool) -> dict[str, str]:
    values = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        name, _, value = line.partition(": ")
        if name:
            values[name] = unquote(value) if decode else value
    return values


@dataclass
class Session:
    """One call's socket: bytes not yet framed, and the call once `connect` answered."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    uuid: str = ""
    out: bytearray = field(default_factory=bytearray)

    def frames(self):
        """Complete frames in the buffer as (headers, body), taken out of it."""
        while True:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                return
            headers = parse_headers(bytes(self.buffer[:end]), decode=False)
            length = int(headers.get("Content-Length", "0"))
            if len(self.buffer) < end + 2 + length:
                return
            body = bytes(self.buffer[end + 2:end + 2 + length])
            del self.buffer[:end + 2 + length]
            yield headers, body


class OutboundController(Controller):
    """The flow of bench.baseline_controller, its commands written on each call's own
    socket. Runs in the main thread only."""

    def __init__(self, crm: dict[str, str]):
        super().__init__(None, None, crm)
        self.selector = selectors.DefaultSelector()
        self.sessions: dict[str, Session] = {}  # by call UUID, once connected
        self.finished = 0

    # --- the wire (overrides: no UUID in an outbound sendmsg; replies read as they come)

    def execute(self, uuid: str, app: str, arg: str, lock: bool = False) -> str:
        event_uuid = str(uuidlib.uuid4())
        lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}",
                 f"execute-app-arg: {arg}"]
        if lock:
            lines.append("event-lock: true")
        lines.append(f"Event-UUID: {event_uuid}")
        self.write(self.sessions[uuid], "\n".join(lines))
        return event_uuid

    def hang_up(self, uuid: str) -> None:
        self.write(self.sessions[uuid], "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING")

    def write(self, session: Session, text: str) -> None:
        """Queued, and sent as far as the socket takes it now (the rest when writable)."""
        session.out += text.encode() + b"\n\n"
        self.flush(session)

    def flush(self, session: Session) -> None:
        try:
            sent = session.sock.send(session.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            session.out.clear()
            return
        del session.out[:sent]
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.out else 0)
        self.selector.modify(session.sock, mask, session)

    # --- the loop

    def accept(self, listener: socket.socket) -> None:
        sock, _ = listener.accept()
        sock.setblocking(False)
        session = Session(sock)
        self.selector.register(sock, selectors.EVENT_READ, session)
        self.write(session, "connect")

    def readable(self, session: Session) -> None:
        try:
            data = session.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(session)
            return
        session.buffer += data
        for headers, body in session.frames():
            kind = headers.get("Content-Type", "")
            if kind == "text/event-plain":
                event_headers, _, _ = body.partition(b"\n\n")
                self.on_event(Headers(parse_headers(event_headers, decode=True)))
            elif kind == "command/reply" and not session.uuid and "Unique-ID" in headers:
                self.connected(session, headers)
            elif kind == "command/reply" and headers.get("Reply-Text", "").startswith("-ERR"):
                self.refused += 1

    def connected(self, session: Session, channel: dict[str, str]) -> None:
        """`connect` answered with the channel's data: subscribe, then the welcome."""
        session.uuid = uuid = unquote(channel["Unique-ID"])
        self.sessions[uuid] = session
        for line in ("myevents plain", f"nixevent {MYEVENTS_UNREAD}", f"filter Unique-ID {uuid}",
                     "filter Application -set"):
            self.write(session, line)
        call = self.calls[uuid] = Call(unquote(channel.get("Caller-Caller-ID-Number", "")))
        call.awaited = self.execute(uuid, "playback", "new_sales/1000.wav")

    def close(self, session: Session) -> None:
        self.selector.unregister(session.sock)
        session.sock.close()
        if session.uuid:
            self.sessions.pop(session.uuid, None)
            self.calls.pop(session.uuid, None)
            self.finished += 1

    def run(self, listener: socket.socket, stopping: threading.Event, deadline: float) -> None:
        self.selector.register(listener, selectors.EVENT_READ, None)
        while not stopping.is_set() and time.monotonic() < deadline:
            for key, mask in self.selector.select(SELECT_TIMEOUT_S):
                if key.data is None:
                    self.accept(listener)
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(key.data)
                if mask & selectors.EVENT_READ:
                    self.readable(key.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8084", help="host:port the dialplan's socket names")
    add_common_options(parser)
    args = parser.parse_args(argv)
    crm, stopping = static_crm_and_stop_flag(args)
    host, _, port = args.listen.rpartition(":")
    # No SO_REUSEPORT: a second controller on the port is an error, not a silent split.
    listener = socket.create_server((host, int(port)), backlog=1024)
    listener.setblocking(False)
    controller = OutboundController(crm)
    print("READY", flush=True)
    controller.run(listener, stopping, time.monotonic() + args.run_s)
    print(f"STOPPED live={len(controller.calls)} finished={controller.finished} "
          f"refused={controller.refused}", flush=True)
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
