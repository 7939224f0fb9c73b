"""OutboundServer: `[outbound] listen`, where the dialplan's `socket host:port async full`
connects each call to icall (outbound mode; the Erlang seed's one-process-per-call
model under mod_erlang_event).

One thread reads every call's socket through a selector: a thread per call would add
~24 KiB and a thread start to every call, and these sockets are quiet (a dozen events
per call) while the call's actor does the work. This thread only accepts, reads,
parses (actors.esl_wire, the same strict parser as the event connection) and hands
over; what each call's socket carries is actors.channel_link.

Threads: `start` and `stop` run in the service's thread; everything else in the
server's own thread, "outbound".
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable

from actors.channel_link import LINGER_S, ChannelLink
from actors.esl_wire import Disconnected
from actors.telemetry import NO_TELEMETRY, Telemetry

logger = logging.getLogger(__name__)

_POLL_S = 1.0  # how often the thread looks at its stop flag when nothing happens
_BACKLOG = 512


class OutboundServer:
    """Accepts the switch's per-call connections; one thread reads them all."""

    def __init__(self, address: tuple[str, int], on_call: Callable[[ChannelLink], None],
                 send_timeout_s: float, telemetry: Telemetry = NO_TELEMETRY,
                 reuse_port: bool = False, linger_s: int = LINGER_S):
        """`on_call(link)` runs in this server's thread once a call's `connect` is
        answered. `reuse_port`: several processes accept on the same port and the
        kernel spreads the calls (SO_REUSEPORT)."""
        self._address = address
        self._on_call = on_call
        self._send_timeout_s = send_timeout_s
        self._telemetry = telemetry
        self._reuse_port = reuse_port
        self._linger_s = linger_s
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.port = 0
        self.accepted = 0

    def start(self) -> None:
        """Bind and listen (a port in use raises OSError here, before any call), then
        start the thread."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(self._address)
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="outbound", daemon=False)
        self._thread.start()
        logger.info("outbound mode: listening on %s:%d", self._address[0], self.port)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting and close every call's socket: FreeSWITCH then runs what the
        dialplan has after `socket` (README: the safe destination)."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("the outbound server thread did not stop within %.0f s", timeout_s)
        self._wake_w.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def live_links(self) -> int:
        return len(self._selector.get_map()) - 2  # the listener and the wake-up pipe

    # --- the server's thread

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(_POLL_S):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._wake_r.recv(64)
                    else:
                        self._read(key.data)
        except Exception:
            logger.exception("the outbound server failed")
        finally:
            self._close_all()

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):  # a burst of calls: take what waits, then read again
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, a reset before accept
                logger.warning("outbound accept failed: %s", exc)
                return
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = ChannelLink(sock, f"{peer[0]}:{peer[1]}", self._on_call,
                               self._send_timeout_s, self._telemetry, self._linger_s)
            self.accepted += 1
            self._selector.register(sock, selectors.EVENT_READ, link)
            link.begin()

    def _read(self, link: ChannelLink) -> None:
        try:
            data = link.recv()
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError as exc:
            self._drop(link, f"connection lost: {exc.strerror or exc}")
            return
        if not data:
            self._drop(link, "the switch closed the socket")
            return
        try:
            link.feed(data)
        except Disconnected as exc:
            self._drop(link, str(exc))
        except Exception:  # a bug in one call's handling must not stop the others
            logger.exception("call %s: reading its socket failed", link.uuid)
            self._drop(link, "internal error")

    def _drop(self, link: ChannelLink, reason: str) -> None:
        try:
            self._selector.unregister(link)
        except (KeyError, ValueError):
            pass
        logger.debug("call %s: socket closed (%s)", link.uuid, reason)
        link.closed_by_peer(reason)

    def _close_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, ChannelLink):
                self._drop(key.data, "icall is stopping")
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
        self._selector.close()
        self._wake_r.close()
