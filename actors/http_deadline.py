"""A wall-clock deadline for whole HTTP requests made with urllib3.

urllib3's timeouts bound each socket operation, not a request: an endpoint that sends
a byte every 0.8 s never trips a 1 s read timeout, and held one CDR POST 16 s. Here a
request is bounded as a whole (connect, send, headers and body): the pool's
connections report their socket to `RequestDeadlines` (`watched_pool`), and its thread
shuts down the socket of a request still running at its deadline, so the blocked call
in the requesting thread returns at once with an error.

Threads: `begin` / `end` run in the requesting thread, around its request; the
connections report from that thread too; the cut-offs run in the watcher's own
thread ("<name>-deadline"), which sleeps until the earliest deadline and not at all
while no request runs.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection


class _Request:
    __slots__ = ("deadline", "sock", "expired")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.sock: socket.socket | None = None
        self.expired = False


class RequestDeadlines:
    """The requests in flight (one per requesting thread) and the thread that cuts
    them off at their deadline."""

    def __init__(self, name: str):
        self._name = name
        self._requests: dict[int, _Request] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-deadline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(5)

    def begin(self, timeout_s: float) -> None:
        """This thread's next request must be over within `timeout_s` from now."""
        with self._changed:
            self._requests[threading.get_ident()] = _Request(time.monotonic() + timeout_s)
            self._changed.notify()

    def end(self) -> bool:
        """This thread's request is over; True if it was cut off at its deadline."""
        with self._changed:
            request = self._requests.pop(threading.get_ident(), None)
        return request is not None and request.expired

    def attach(self, sock: socket.socket | None) -> None:
        """A connection of this thread's request has (or opened) this socket."""
        with self._changed:
            request = self._requests.get(threading.get_ident())
            if request is None or sock is None:
                return
            request.sock = sock
            if request.expired:  # its deadline passed while it connected
                _cut(sock)

    def _run(self) -> None:
        with self._changed:
            while not self._stopping:
                now = time.monotonic()
                waiting = [r for r in self._requests.values() if not r.expired]
                for request in waiting:
                    if request.deadline <= now:
                        request.expired = True
                        if request.sock is not None:
                            _cut(request.sock)
                upcoming = [r.deadline for r in waiting if r.deadline > now]
                self._changed.wait(min(upcoming) - now if upcoming else None)


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def watched_pool(url: str, deadlines: RequestDeadlines, **pool_kw: Any) -> urllib3.HTTPConnectionPool:
    """A connection pool for `url` whose connections report to `deadlines`."""
    pool = urllib3.connection_from_url(url, **pool_kw)
    base = HTTPSConnection if isinstance(pool, urllib3.HTTPSConnectionPool) else HTTPConnection

    class Watched(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            deadlines.attach(self.sock)

        def request(self, *args: Any, **kwargs: Any) -> None:
            deadlines.attach(self.sock)  # a kept-alive connection: its socket is open
            super().request(*args, **kwargs)

    pool.ConnectionCls = Watched
    return pool
