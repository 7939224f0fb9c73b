"""A process that connects to icall's outbound port and plays the switch's side by hand
(an impostor, a silent peer): it answers `connect` with the channel it claims, says
+OK to the rest, and keeps everything icall wrote to it."""

from __future__ import annotations

import socket

from tests.waiting import wait_until

_SETUP_REPLIES = 4  # myevents, nixevent, event, linger: pipelined behind connect


class SocketPeer:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.settimeout(0.05)
        self.written = b""  # what icall wrote, in order
        self.closed = False

    def answer_connect(self, uuid: str, caller: str = "5550000") -> None:
        """The channel data a `connect` gets (as fakeswitch.wire.connect_reply frames it),
        then +OK for the set-up commands behind it."""
        headers = [("Event-Name", "CHANNEL_DATA"), ("Unique-ID", uuid),
                   ("Caller-Caller-ID-Number", caller), ("variable_current_application", "socket"),
                   ("Content-Type", "command/reply"), ("Reply-Text", "%2BOK%0A"),
                   ("Socket-Mode", "async"), ("Control", "full")]
        text = "".join(f"{name}: {value}\n" for name, value in headers) + "\n"
        text += "Content-Type: command/reply\nReply-Text: +OK\n\n" * _SETUP_REPLIES
        self.sock.sendall(text.encode())

    def commands(self) -> list[str]:
        """The first line of every command icall wrote (a sendmsg's body has none here)."""
        return [block.split("\n", 1)[0] for block in self.written.decode().split("\n\n") if block]

    def read(self) -> None:
        """Whatever icall wrote since the last read (not waiting)."""
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.written += data

    def wait_for(self, command: str, timeout_s: float) -> bool:
        def seen() -> bool:
            self.read()
            return any(line.split(" ", 1)[0] == command for line in self.commands())
        return wait_until(seen, timeout_s)

    def wait_closed(self, timeout_s: float) -> bool:
        """True once icall closed the connection."""
        def gone() -> bool:
            self.read()
            return self.closed
        return wait_until(gone, timeout_s)

    def close(self) -> None:
        self.sock.close()
