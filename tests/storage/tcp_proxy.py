"""A TCP proxy the tests control, between the DbWriter and a real database server.

`cut()` drops every proxied connection and makes new ones fail at once (accepted, then
closed: the driver sees the server hang up), so the shared server keeps running while
the writer sees its database disappear. `restore()` lets connections through again.
`refused` is set each time a connection is turned away while cut, so a test can wait
for the writer to have tried.

Threads: one accepting thread, two pumping threads per live connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self.refused = threading.Event()
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _hang_up(sock)

    def retarget(self, target_host: str, target_port: int) -> None:
        """Connections from now on go to this server (those open stay where they are)."""
        self._target = (target_host, target_port)

    def restore(self) -> None:
        self.refused.clear()
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        # shutdown wakes a thread blocked in accept(); close alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(10)
        for thread in self._threads:
            thread.join(10)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _hang_up(client)
                self.refused.set()
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
                server.settimeout(None)
            except OSError:
                _hang_up(client)
                continue
            self.accepted += 1
            with self._lock:
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink), name="proxy-pump", daemon=True)
                self._threads.append(pump)
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _hang_up(source)
            _hang_up(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
