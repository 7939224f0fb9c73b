"""A lean outbound-mode controller of the icall flow, for bench.cost_run: one thread,
one selector over every call's socket, bench.baseline_controller's flow logic as is.

Each connection the switch's `socket` app makes is taken with `connect`, icall's
subscription (actors.channel_link.SUBSCRIPTION) and `linger 10`; its connect data starts the flow (as the CHANNEL_PARK does
inbound); its commands go on the same socket, unanswered replies read and dropped;
`exit` after CHANNEL_HANGUP_COMPLETE. No actors, no database, no checkpoints.

    .venv/bin/python -m bench.cost_lean_outbound --listen 127.0.0.1:8184 --crm 5550801=801

It prints `READY` once listening and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
import threading
from urllib.parse import unquote

from actors.channel_link import SUBSCRIPTION
from bench.baseline_controller import Controller
from bench.cost_proxy import frames

# What it asks for: its channel's events that a step of the flow reads (icall's own
# subscription, taken from it so the two stay alike).
TAKE = "".join(f"{c}\n\n" for c in ("connect", *SUBSCRIPTION, "linger 10")).encode()


class Plain:
    """An event (or the connect data) with python-ESL's getHeader."""

    def __init__(self, headers: dict[str, str]):
        self.headers = headers

    def getHeader(self, name: str) -> str | None:  # noqa: N802 (python-ESL's name)
        return self.headers.get(name)


class Reply:
    def getHeader(self, name: str) -> str:  # noqa: N802
        return "+OK"


class Link:
    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.uuid = sock, bytearray(), ""



class Sockets:
    """Controller's `commands`: a sendmsg goes on its call's socket, not waited for."""

    def __init__(self) -> None:
        self.by_uuid: dict[str, Link] = {}

    def sendRecv(self, text: str) -> Reply:  # noqa: N802
        uuid = text.split("\n", 1)[0].split(" ", 1)[1]
        link = self.by_uuid.get(uuid)
        if link is not None:
            try:
                link.sock.sendall((text + "\n\n").encode())
            except OSError:
                pass
        return Reply()


def decoded(text: str) -> dict[str, str]:
    return {k: unquote(v) for k, v in (line.split(": ", 1) for line in text.split("\n") if ": " in line)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8184")
    parser.add_argument("--crm", default="")
    args = parser.parse_args(argv)
    crm = dict(pair.split("=", 1) for pair in args.crm.split(",") if "=" in pair)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    sockets = Sockets()
    controller = Controller(None, sockets, crm)
    host, port = args.listen.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(512)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, None)
    print("READY", flush=True)
    while not stopping.is_set():
        for key, _ in selector.select(0.2):
            if key.data is None:
                sock, _ = server.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(TAKE)
                selector.register(sock, selectors.EVENT_READ, Link(sock))
                continue
            link: Link = key.data
            try:
                data = link.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(link.sock)
                link.sock.close()
                sockets.by_uuid.pop(link.uuid, None)
                continue
            link.buf += data
            for _, headers, raw in frames(link.buf):
                body = raw.decode("utf-8", "replace")
                kind = headers.get("Content-Type", "")
                if kind == "command/reply" and "Unique-ID" in headers and not link.uuid:
                    channel = {k: unquote(v) for k, v in headers.items()}
                    link.uuid = channel["Unique-ID"]
                    sockets.by_uuid[link.uuid] = link
                    controller.on_event(Plain({**channel, "Event-Name": "CHANNEL_PARK"}))
                elif kind == "text/event-plain":
                    event = Plain(decoded(body.split("\n\n", 1)[0]))
                    controller.on_event(event)
                    if event.getHeader("Event-Name") == "CHANNEL_HANGUP_COMPLETE":
                        try:
                            link.sock.sendall(b"exit\n\n")
                        except OSError:
                            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
