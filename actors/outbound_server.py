"""OutboundServer: `[outbound] listen`, where the dialplan's `socket host:port async full`
connects each call to icall (outbound mode; the Erlang seed's one-process-per-call
model under mod_erlang_event).

One thread reads every call's socket through a selector: a thread per call would add
~24 KiB and a thread start to every call, and these sockets are quiet (a dozen events
per call) while the call's actor does the work. This thread only accepts, reads,
parses (actors.esl_wire, the same strict parser as the event connection) and hands
over; what each call's socket carries is actors.channel_link.

Who gets in: whoever reaches the port drives calls, writes rows and posts CDRs, so a
peer outside `[outbound] allow` is closed at accept, and a connection that has not
answered `connect` within `[outbound] connect_timeout_s` is closed too (its deadline
is checked each select round, in this thread). At the descriptor limit accept fails
at once while the connection waits: the listener leaves the selector for a back-off
instead of being tried again in a spin.

Threads: `start`, `stop_listening` and `stop` run in the service's thread; everything
else in the server's own thread, "outbound".
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.channel_link import LINGER_S, ChannelLink
from actors.esl_wire import Disconnected
from actors.reporting import NO_TELEMETRY, Telemetry
from ivr.config import LOOPBACK, Networks, networks

logger = logging.getLogger(__name__)

_POLL_S = 1.0  # how often the thread looks at its stop flag when nothing happens
_BACKLOG = 512
CONNECT_TIMEOUT_S = 5.0
# Out of descriptors, accept fails at once while the connection waits in the backlog:
# the listener is taken out of the selector for this long, doubled while it keeps
# failing (up to the second figure), and tried again. Each pause logs one line.
ACCEPT_PAUSE_S = 0.25
ACCEPT_PAUSE_MAX_S = 4.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# A peer refused by `[outbound] allow` is logged at most once per this many seconds (a
# port scan must not flood the journal); every refusal is counted for /metrics.
REFUSAL_LOG_S = 10.0


def listening_socket(address: tuple[str, int]) -> socket.socket:
    """A socket listening on `address` (OSError when the port is taken). With workers
    the main process makes it once and every worker accepts from it (service.workers):
    one queue, so a connection waiting in it when a worker dies is taken by another
    worker, where each worker's own SO_REUSEPORT queue was reset with its process."""
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class OutboundServer:
    """Accepts the switch's per-call connections; one thread reads them all."""

    def __init__(self, address: tuple[str, int], on_call: Callable[[ChannelLink], None],
                 send_timeout_s: float, telemetry: Telemetry = NO_TELEMETRY,
                 listener: socket.socket | None = None, linger_s: int = LINGER_S,
                 allow: Networks | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        """`on_call(link)` runs in this server's thread once a call's `connect` is
        answered. `listener`: a socket already listening on `address`, shared with
        other workers (listening_socket); without it `start` makes one. `allow`: the
        peers let in (default: this machine only)."""
        self._address = address
        self._on_call = on_call
        self._send_timeout_s = send_timeout_s
        self._telemetry = telemetry
        self._given = listener
        self._linger_s = linger_s
        self._allow = allow if allow is not None else networks(LOOPBACK)
        self._connect_timeout_s = connect_timeout_s
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._closing = False  # no new call: the listener is closed, a late connect let go
        self._unlistened = threading.Event()
        self._thread: threading.Thread | None = None
        # Connections whose `connect` is not answered yet, by deadline: a deque, not a
        # heap, since every one gets the same timeout (arrival order is deadline order).
        self._unconnected: deque[tuple[float, ChannelLink]] = deque()
        self._accept_paused_until: float | None = None
        self._accept_pause_s = ACCEPT_PAUSE_S
        self._refusal_said_at = float("-inf")
        self._refusals_unsaid = 0
        self.port = 0
        self.accepted = 0
        self.counters = {"peers_refused": 0, "connects_timed_out": 0, "accept_pauses": 0}

    def start(self) -> None:
        """Bind and listen (a port in use raises OSError here, before any call), or take
        the listening socket handed in, then start the thread."""
        sock = self._given or listening_socket(self._address)
        self._given = None
        sock.setblocking(False)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._telemetry.watch("outbound", self.stats)
        self._thread = threading.Thread(target=self._run, name="outbound", daemon=False)
        self._thread.start()
        logger.info("outbound mode: listening on %s:%d (peers allowed: %s)", self._address[0],
                    self.port, self._allow)

    def stop_listening(self, timeout_s: float = 5.0) -> None:
        """The first step of a stop: close the listening socket, so that with
        workers the others take the new calls from the queue they share, and with one
        process the switch's `socket` is refused and the dialplan's next action runs at
        once. A connection that answers `connect` from now on is let go (`exit`) without
        a command: this process is going and would drop the call mid-flow."""
        self._closing = True
        if self._thread is None or not self._thread.is_alive():
            self._close_listener()
            return
        self._wake()
        if not self._unlistened.wait(timeout_s):
            logger.error("the outbound server did not close its listener within %.0f s", timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting and close every call's socket: FreeSWITCH then runs what the
        dialplan has after `socket` (README: the safe destination)."""
        self._closing = self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("the outbound server thread did not stop within %.0f s", timeout_s)
        self._wake_w.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def live_links(self) -> int:
        """Sockets open for calls (or waiting for their `connect` answer)."""
        return sum(isinstance(key.data, ChannelLink) for key in list(self._selector.get_map().values()))

    def stats(self) -> dict[str, Any]:
        """For /metrics (the scrape thread): plain reads of counters."""
        return dict(self.counters, accepting=int(self._accept_paused_until is None and not self._closing))

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # --- the server's thread

    def _run(self) -> None:
        try:
            while not self._stopping:
                if self._closing and self._listener is not None:
                    self._close_listener()
                for key, _ in self._selector.select(self._wait_s()):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._wake_r.recv(64)
                    else:
                        self._read(key.data)
                self._deadlines(time.monotonic())
        except Exception:
            logger.exception("the outbound server failed")
        finally:
            self._close_all()

    def _wait_s(self) -> float:
        """Until the next deadline (a `connect` answer, the end of an accept pause)."""
        due = [self._unconnected[0][0]] if self._unconnected else []
        if self._accept_paused_until is not None:
            due.append(self._accept_paused_until)
        return max(0.0, min([_POLL_S, *(when - time.monotonic() for when in due)]))

    def _deadlines(self, now: float) -> None:
        while self._unconnected and self._unconnected[0][0] <= now:
            _, link = self._unconnected.popleft()
            if not link.uuid and not link.closed:
                self.counters["connects_timed_out"] += 1
                logger.warning("outbound connection from %s: no answer to connect within %g s: closed",
                               link.peer, self._connect_timeout_s)
                self._drop(link, "connect not answered")
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            if self._listener is not None:
                self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _accept(self) -> None:
        assert self._listener is not None
        if self._closing:  # closed at the top of the next round, before any accept
            return
        for _ in range(64):  # a burst of calls: take what waits, then read again
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                else:  # a reset before accept: the next one
                    logger.warning("outbound accept failed: %s", exc)
                return
            self._accept_pause_s = ACCEPT_PAUSE_S
            if not self._allow.admits(peer[0]):
                sock.close()
                self._refused(peer[0])
                continue
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = ChannelLink(sock, f"{peer[0]}:{peer[1]}", self._connected,
                               self._send_timeout_s, self._telemetry, self._linger_s)
            self.accepted += 1
            self._selector.register(sock, selectors.EVENT_READ, link)
            self._unconnected.append((time.monotonic() + self._connect_timeout_s, link))
            link.begin()

    def _pause_accepting(self, exc: OSError) -> None:
        assert self._listener is not None
        self.counters["accept_pauses"] += 1
        self._selector.unregister(self._listener)
        self._accept_paused_until = time.monotonic() + self._accept_pause_s
        logger.warning("outbound accept failed: %s: not accepting for %g s (%d call sockets open)",
                       exc.strerror or exc, self._accept_pause_s, self.live_links())
        self._accept_pause_s = min(ACCEPT_PAUSE_MAX_S, self._accept_pause_s * 2)

    def _refused(self, address: str) -> None:
        self.counters["peers_refused"] += 1
        now = time.monotonic()
        if now - self._refusal_said_at < REFUSAL_LOG_S:
            self._refusals_unsaid += 1
            return
        more = f"; {self._refusals_unsaid} more refused since the last warning" if self._refusals_unsaid else ""
        logger.warning("outbound connection from %s refused: not in [outbound] allow (%s)%s",
                       address, self._allow, more)
        self._refusal_said_at, self._refusals_unsaid = now, 0

    def _connected(self, link: ChannelLink) -> None:
        """`link` answered `connect`: its call goes to the supervisor, unless icall is
        stopping (then the switch gets it back at once: `exit`, no command)."""
        if self._closing:
            logger.info("call %s: its socket connected while icall stops: let go", link.uuid)
            link.exit()
            return
        self._on_call(link)

    def _close_listener(self) -> None:
        """Stop accepting for good (once)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._accept_paused_until is None:
                try:
                    self._selector.unregister(listener)
                except (KeyError, ValueError):
                    pass
            listener.close()
            logger.info("outbound mode: no longer listening")
        self._unlistened.set()

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
        self._unconnected.clear()
        self._close_listener()
        self._selector.close()
        self._wake_r.close()
