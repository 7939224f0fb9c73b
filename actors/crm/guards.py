"""The CRM fetcher's guards: circuit breaker, answer cache, and the deadline watch.

All three are shared between the fetcher's actor thread (which consults them before
starting a lookup) and its worker threads (which report outcomes), so each holds its
own lock. `DeadlineWatch` owns one thread: it answers every lookup whose deadline
passes before its worker does, so no caller ever waits past its deadline.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class CircuitBreaker:
    """Closed -> (after `failures_to_open` failed lookups in a row) open -> after
    `cooldown_s`, exactly one probe is let through (half-open) -> its outcome closes the
    breaker or opens it for another cool-down. Any thread."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, failures_to_open: int, cooldown_s: float, clock: Clock = time.monotonic):
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures_in_a_row = 0
        self._opened_at = 0.0
        self.times_opened = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def admit(self) -> str | None:
        """May a lookup go to the CRM now? "normal" while closed; in the open state
        after the cool-down "probe" exactly once, until the probe reports its outcome;
        None otherwise."""
        with self._lock:
            if self._state == self.CLOSED:
                return "normal"
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                self._state = self.HALF_OPEN
                return "probe"
            return None

    def succeeded(self) -> None:
        with self._lock:
            if self._state != self.CLOSED:
                logger.info("CRM answers again: breaker closed")
            self._state = self.CLOSED
            self._failures_in_a_row = 0

    def failed(self) -> None:
        with self._lock:
            self._failures_in_a_row += 1
            if self._state == self.HALF_OPEN or (
                    self._state == self.CLOSED and self._failures_in_a_row >= self.failures_to_open):
                self._open()

    def abandoned(self) -> None:
        """A probe that never reached the CRM (its deadline passed first): let the
        next lookup probe instead."""
        with self._lock:
            if self._state == self.HALF_OPEN:
                self._state = self.OPEN
                self._opened_at = self._clock() - self.cooldown_s

    def _open(self) -> None:
        self._state = self.OPEN
        self._opened_at = self._clock()
        self.times_opened += 1
        logger.warning("CRM failed %d lookups in a row: breaker open for %.1f s",
                       self._failures_in_a_row, self.cooldown_s)


class AnswerCache:
    """caller id -> (extension or None, reason) for `ttl_s` seconds, at most
    `max_entries` (the oldest go first). `ttl_s` 0 turns it off. Any thread."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000, clock: Clock = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, str | None, str]] = OrderedDict()

    def get(self, caller_id: str) -> tuple[str | None, str] | None:
        with self._lock:
            entry = self._entries.get(caller_id)
            if entry is None:
                return None
            expires_at, extension, reason = entry
            if self._clock() >= expires_at:
                del self._entries[caller_id]
                return None
            return extension, reason

    def put(self, caller_id: str, extension: str | None, reason: str) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries.pop(caller_id, None)
            self._entries[caller_id] = (self._clock() + self.ttl_s, extension, reason)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class PendingLookup:
    """One lookup waiting for its answer; `settle` delivers it once, first caller wins.

    `deliver(extension, reason)` is called (outside the lock) by whichever thread
    settles first: a worker with the CRM's answer, or the deadline watch.
    """

    def __init__(self, deadline: float, deliver: Callable[[str | None, str], Any]):
        self.deadline = deadline
        self._deliver = deliver
        self._lock = threading.Lock()
        self._settled = False

    @property
    def settled(self) -> bool:
        with self._lock:
            return self._settled

    def settle(self, extension: str | None, reason: str) -> bool:
        with self._lock:
            if self._settled:
                return False
            self._settled = True
        self._deliver(extension, reason)
        return True


class DeadlineWatch:
    """One thread that settles each PendingLookup still open at its deadline with
    (None, "deadline passed"). `stop()` settles whatever is left with (None, reason)."""

    def __init__(self, name: str = "crm-deadlines", clock: Clock = time.monotonic):
        self._clock = clock
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, PendingLookup]] = []
        self._order = itertools.count()
        self._stopping = False
        self.wakeups = 0  # times the thread looked for due lookups (the tests read it)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def watch(self, pending: PendingLookup) -> None:
        with self._condition:
            heapq.heappush(self._heap, (pending.deadline, next(self._order), pending))
            if self._heap[0][2] is pending:  # it is due first: the thread sleeps too long
                self._condition.notify()

    def stop(self, reason: str) -> None:
        with self._condition:
            self._stopping = True
            left = [entry[2] for entry in self._heap]
            self._heap.clear()
            self._condition.notify()
        for pending in left:
            pending.settle(None, reason)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        """The watch thread: sleeps until the earliest deadline, settles what is due."""
        while True:
            due: list[PendingLookup] = []
            with self._condition:
                while not self._stopping:
                    if self._heap and self._heap[0][0] <= self._clock():
                        break
                    timeout = self._heap[0][0] - self._clock() if self._heap else None
                    self._condition.wait(timeout)
                if self._stopping:
                    return
                self.wakeups += 1
                now = self._clock()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][2].settled):
                    # Answered lookups leave with the due ones, whenever their deadline:
                    # most lookups are answered in time, and the thread would otherwise
                    # wake at each one's deadline to find it settled (a wake-up a call).
                    pending = heapq.heappop(self._heap)[2]
                    if not pending.settled:
                        due.append(pending)
            for pending in due:
                try:
                    pending.settle(None, "deadline passed")
                except Exception:  # the watch must outlive any one delivery
                    logger.exception("delivering a deadline answer failed")
