"""The event connection: one thread that connects, subscribes and only reads.

The reader thread (`esl-reader`) owns its own `EventSession`; no other thread touches
it (one connection, one thread, see DESIGN). Each event goes to `on_event`, which
runs in the reader thread and must be cheap (the service passes a pykka `tell`). A
slow reader is a dead reader: FreeSWITCH drops a listener that lags 500 events.

On a lost link: one log line, `on_link("down", reason)`, then reconnect with
exponential backoff and jitter and subscribe again, then `on_link("up")`. Events
fired while we were away are lost (FreeSWITCH has no replay). The supervisor
re-learns the live calls when it hears "up".

Nothing ends the thread but `stop()`: whatever fails inside the loop (a malformed
frame at login, at subscribe or mid-stream, a bug) is logged and the link rebuilt.
`alive` and `down_since` let the health check see a dead thread or a link that stays
down (plain reads, any thread).

`watch(uuid)` lets one more call's events through (`filter Unique-ID <uuid>`): an
outbound call alive at a restart, handed off, whose channel lacks the flow variable
the subscription filters on, but whose hangup must still write its CDR. Any thread
may ask; the reader thread sends the filter between two reads (within `POLL_MS`), and
again after every reconnect, until `unwatch(uuid)`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable

from actors.esl import Backoff, Disconnected, EslError, subscription_commands
from actors.esl_events import EventSession
from ivr.event import Event

logger = logging.getLogger(__name__)

# How often a quiet reader wakes to look for silence. Every wake-up costs CPU on a
# virtual machine (actors.timed_recv), and stop() need not wait for it: it interrupts
# the read.
POLL_MS = 2000
_CALL_UUID = re.compile(r"[0-9A-Za-z-]{1,64}")  # what goes into a filter line, nothing else
STABLE_S = 30.0  # a link that lived this long resets the backoff


class EventReader:
    """Connect, authenticate, subscribe, filter, then read and hand over events.

    `on_event(event)` and `on_link(state, reason="")` run in the reader thread.
    `silence_limit_s`: with no event at all (not even HEARTBEAT, every 20 s by default)
    for this long the link counts as dead and is rebuilt; 0 turns that off.
    """

    def __init__(self, config, on_event: Callable[[Event], object],
                 on_link: Callable[..., object], silence_limit_s: float = 65.0):
        fs = config.freeswitch
        self._host, self._port, self._password = fs.host, fs.port, fs.password
        self._timeout_s = fs.connect_timeout_s
        self._reply_timeout_s = fs.command_timeout_s
        self._backoff = Backoff(fs.reconnect_min_s, fs.reconnect_max_s)
        self._subscription = subscription_commands(config.ivr.flow_variable, config.ivr.flow)
        self._on_event = on_event
        self._on_link = on_link
        self._silence_limit_s = silence_limit_s
        self._poll_ms = min(POLL_MS, int(silence_limit_s * 250) or POLL_MS)  # a quarter of the limit at most
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: EventSession | None = None  # the reader thread's, for stop() to interrupt
        self._connected = False
        self.last_event_at = time.monotonic()
        self._down_since: float | None = time.monotonic()
        # Calls watched (reader thread only), each with what to call once its filter is on.
        self._watched: dict[str, Callable[[], object] | None] = {}
        self._watch_changes: deque[tuple[str, Callable[[], object] | None, bool]] = deque()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def alive(self) -> bool:
        """True while the reader thread runs (it ends only through stop())."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def down_since(self) -> float | None:
        """`time.monotonic()` when the event link was last lost (or the reader began
        without one); None while it is up and subscribed."""
        return self._down_since

    def watch(self, uuid: str, on_watching: Callable[[], object] | None = None) -> None:
        """Any thread: let `uuid`'s events through from now on; `on_watching()` runs in
        the reader thread once the filter is on (and after each reconnect): events
        before it were not seen."""
        if not _CALL_UUID.fullmatch(uuid):
            raise ValueError(f"not a call uuid: {uuid!r}")
        self._watch_changes.append((uuid, on_watching, True))

    def unwatch(self, uuid: str) -> None:
        """Any thread: `uuid`'s events no longer needed (its call ended)."""
        self._watch_changes.append((uuid, None, False))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="esl-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to end and wait for it (at most `timeout_s`). A read in
        progress is interrupted, and every other wait looks at the flag, so the thread
        is gone afterwards unless something is badly wrong."""
        self._stop.set()
        session = self._session
        if session is not None:
            session.interrupt()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("ESL reader thread did not stop within %.1f s", timeout_s)

    # --- reader thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._connect_and_read()
            except Exception:  # the thread's edge: nothing but stop() may end it
                delay = self._backoff.next_delay()
                logger.exception("ESL reader failed; rebuilding the link in %.1f s", delay)
                self._stop.wait(delay)

    def _connect_and_read(self) -> None:
        where = f"{self._host}:{self._port}"
        try:
            session = self._open()
        except EslError as exc:
            delay = self._backoff.next_delay()
            logger.warning("ESL connect to %s failed: %s; retrying in %.1f s", where, exc, delay)
            self._stop.wait(delay)
            return
        reason = self._read_until_lost(session)
        if self._stop.is_set():
            return
        delay = self._backoff.next_delay()
        logger.warning("ESL event connection to %s lost: %s; reconnecting in %.1f s",
                       where, reason, delay)
        self._notify_link("down", reason)
        self._stop.wait(delay)

    def _open(self) -> EventSession:
        session = EventSession.connect(self._host, self._port, self._password, self._timeout_s,
                                       reply_timeout_s=self._reply_timeout_s)
        try:
            for line in self._subscription:
                answer = session.command(line)
                if not answer.startswith("+OK"):
                    raise EslError(f"the switch refused {line!r}: {answer}")
            for uuid in self._watched:
                session.command(f"filter Unique-ID {uuid}")
        except BaseException:
            session.close()
            raise
        for on_watching in self._watched.values():
            self._tell_watching(on_watching)
        return session

    def _change_watches(self, session: EventSession) -> None:
        """Reader thread: send the filters asked for since the last read."""
        while self._watch_changes:
            uuid, on_watching, add = self._watch_changes.popleft()
            if add:
                self._watched[uuid] = on_watching  # kept first: a reconnect sends it anyway
                answer = session.command(f"filter Unique-ID {uuid}")
                if not answer.startswith("+OK"):
                    logger.error("call %s: the switch refused its event filter: %s", uuid, answer)
                self._tell_watching(on_watching)
            elif self._watched.pop(uuid, False) is not False:
                session.command(f"filter delete Unique-ID {uuid}")

    @staticmethod
    def _tell_watching(on_watching: Callable[[], object] | None) -> None:
        if on_watching is None:
            return
        try:
            on_watching()
        except Exception:  # a callback that fails must not kill the reader
            logger.exception("ESL watch callback failed")

    def _read_until_lost(self, session: EventSession) -> str:
        """Read until the link drops or stop() is called; return why it ended."""
        up_since = self.last_event_at = time.monotonic()
        self._session = session
        if self._stop.is_set():  # stop() came before the session was here to interrupt
            session.interrupt()
        self._connected = True
        self._down_since = None
        logger.info("ESL event connection to %s up, subscribed", session.address)
        self._notify_link("up")
        reason = "stopped"
        try:
            while not self._stop.is_set():
                if self._watch_changes:
                    self._change_watches(session)
                event = session.recv_event(self._poll_ms)
                now = time.monotonic()
                if event is None:
                    if self._silence_limit_s and now - self.last_event_at > self._silence_limit_s:
                        reason = f"no event for {self._silence_limit_s:g} s (no HEARTBEAT)"
                        break
                    continue
                self.last_event_at = now
                self._on_event(event)
        except Disconnected as exc:
            reason = str(exc)
        except Exception as exc:  # the thread's edge: log it, rebuild the link
            logger.exception("ESL reader failed; rebuilding the connection")
            reason = f"reader error: {exc}"
        finally:
            self._connected = False
            self._down_since = time.monotonic()
            self._session = None
            session.close()
        if time.monotonic() - up_since >= STABLE_S:
            self._backoff.reset()
        return reason

    def _notify_link(self, state: str, reason: str = "") -> None:
        try:
            if state == "up":
                self._on_link(state)
            else:
                self._on_link(state, reason)
        except Exception:  # a callback that fails must not kill the reader
            logger.exception("ESL on_link(%r) callback failed", state)
