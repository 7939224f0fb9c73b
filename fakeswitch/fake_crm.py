"""A fake CRM: a real HTTP server on loopback that answers caller-id lookups.

Used by the CRM tests, the benchmark and `icall demo`. It answers
`GET <any path>?caller_id=<id>` from a table caller id -> extension, as plain text
(`801`) or JSON (`{"extension": "801"}`), 404 for an unknown caller, and records every
request it got so tests can check what really went over the wire.

Fault knobs (a `Reply` describes one answer):
  - `default`: the behaviour of every request (delay, status, body, hang, drop...);
  - `script([...])`: the next requests take these replies in order, then `default`;
  - `refuse()` / `reopen()`: close the listening socket (connections are refused) and
    open it again on the same port.

Threads: `start()` runs `ThreadingHTTPServer.serve_forever` in a daemon thread and
every request gets its own handler thread. A hanging or delayed handler waits on the
server's stop event, so `stop()` always returns promptly.

Manual use: `python -m fakeswitch.fake_crm --listen 127.0.0.1:8090 --table 5551000=801`.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Reply:
    """How the fake answers one request.

    `body` None means "the table's answer for this caller" (an empty body unless the
    status is 200); `stream_bytes` sends that
    many bytes with no Content-Length (the end is the connection's close), which is how
    a hostile server sends 10 MB to a client that trusts the header; `hang` never
    answers (until the server stops); `drop` closes the connection without a word.
    """

    status: int = 200
    body: bytes | str | None = None
    content_type: str | None = None
    delay_s: float = 0.0
    hang: bool = False
    drop: bool = False
    stream_bytes: int = 0


@dataclass(frozen=True)
class Request:
    """One request as the fake received it: `query` is decoded, `raw_query` is not."""

    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # one port per TCP connection: equal ports mean a reused connection
    received_at: float = field(default_factory=time.monotonic)


class LoopbackServer:
    """A ThreadingHTTPServer in a thread, with request recording and refuse/reopen.

    Subclasses implement `answer(handler, request)`; it runs in the request's own
    handler thread. Shared by FakeCrm and FakeCdrSink.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._requests: list[Request] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # --- life cycle (test thread)

    def start(self) -> Self:
        self._stopping.clear()
        self._open()
        return self

    def stop(self) -> None:
        """Release hanging handlers, close the listener, join the serving thread."""
        self._stopping.set()
        self._close()

    def refuse(self) -> None:
        """Close the listening socket and every open connection: from now on connections
        are refused, kept-alive ones included, until `reopen()`."""
        self._close()
        with self._lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def reopen(self) -> None:
        self._open()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _open(self) -> None:
        if self._server is not None:
            return
        owner = self

        class Handler(_Handler):
            server_owner = owner

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    # --- recording (any thread)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until at least `count` requests arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= count, timeout_s)

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def pause(self, seconds: float | None) -> bool:
        """Wait `seconds` (None: for ever) or until the server stops; True if stopping."""
        return self._stopping.wait(seconds)

    def answer(self, handler: _Handler, request: Request) -> None:
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    """Parses and records the request, then lets the owning server answer it."""

    protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
    # Headers and body go out as two writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms a request on a kept-alive connection).
    disable_nagle_algorithm = True
    server_owner: LoopbackServer

    def setup(self) -> None:
        super().setup()
        self.server_owner._track(self.connection, True)

    def finish(self) -> None:
        self.server_owner._track(self.connection, False)
        super().finish()

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command, path=parts.path, raw_query=parts.query,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=dict(self.headers.items()), body=body,
                client_port=self.client_address[1])
            self.server_owner._record(request)
            self.server_owner.answer(self, request)
        except OSError:
            # The client gave up on us (reset, broken pipe) or refuse() cut the line.
            self.close_connection = True

    def send(self, reply: Reply, body: bytes) -> None:
        """Write `reply` with `body`, honouring the delay/hang/drop/stream knobs."""
        owner = self.server_owner
        if reply.hang:
            owner.pause(None)
            self.close_connection = True
            return
        if reply.delay_s and owner.pause(reply.delay_s):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        if reply.stream_bytes:
            self.send_header("Connection", "close")
            self.end_headers()
            self._stream(reply.stream_bytes)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, size: int) -> None:
        chunk = b"8" * 65536
        sent = 0
        while sent < size and not self.server_owner._stopping.is_set():
            piece = chunk[: size - sent]
            self.wfile.write(piece)
            sent += len(piece)

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read `requests`, not stderr


class FakeCrm(LoopbackServer):
    """The fake CRM. `table` maps caller id -> extension; `response_format` is
    "text" or "json" (the extension then sits in `json_field`)."""

    def __init__(self, table: dict[str, str] | None = None, *, response_format: str = "text",
                 json_field: str = "extension", caller_id_param: str = "caller_id",
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.table = dict(table or {})
        self.response_format = response_format
        self.json_field = json_field
        self.caller_id_param = caller_id_param
        self.default = Reply()
        self._script: deque[Reply] = deque()

    def script(self, replies: list[Reply]) -> None:
        """The next len(replies) requests get these replies in order, then `default`."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def answer(self, handler: _Handler, request: Request) -> None:
        reply = self._next_reply()
        if reply.body is not None:
            body = reply.body.encode() if isinstance(reply.body, str) else reply.body
            handler.send(reply, body)
            return
        caller_id = (request.query.get(self.caller_id_param) or [""])[0]
        extension = self.table.get(caller_id)
        if extension is None and reply.status == 200:
            reply = replace(reply, status=404)
        if extension is None or reply.status != 200:
            handler.send(replace(reply, content_type=reply.content_type or "text/plain"), b"")
        elif self.response_format == "json":
            body = json.dumps({self.json_field: extension}).encode()
            handler.send(replace(reply, content_type=reply.content_type or "application/json"), body)
        else:
            body = extension.encode()
            handler.send(replace(reply, content_type=reply.content_type or "text/plain; charset=utf-8"), body)


def parse_table(text: str) -> dict[str, str]:
    """'5551000=801,5551001=802' -> {'5551000': '801', '5551001': '802'}."""
    table = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        caller_id, sep, extension = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected caller_id=extension, got {pair!r}")
        table[caller_id.strip()] = extension.strip()
    return table


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fakeswitch.fake_crm",
                                     description="A fake CRM answering caller-id lookups.")
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8090))
    parser.add_argument("--table", type=parse_table, default={}, help="5551000=801,...")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--json-field", default="extension")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    crm = FakeCrm(args.table, response_format=args.format, json_field=args.json_field,
                  host=args.listen[0], port=args.listen[1])
    crm.default = Reply(delay_s=args.delay)
    crm.start()
    print(f"fake CRM on {crm.url} with {len(crm.table)} callers; Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        crm.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
