"""One timer thread for every actor: pykka has no timers, and a threading.Timer per
call (3,000 calls, several timers each) would cost a thread per timer.

`schedule(delay_s, ref, message)` tells `message` to `ref` after `delay_s` (at most
SLACK_S later). Timers are not cancelled: a flow's timer carries a generation, so a
late one is recognised and dropped by its receiver (that is cheaper and simpler than
cancelling).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any

import pykka

logger = logging.getLogger(__name__)

# How late a timer may fire: the timers due within this of the first one fire with it.
SLACK_S = 0.02


class TimerService:
    """Runs in its own daemon thread named `timers`; `schedule` may be called from any
    thread."""

    def __init__(self, name: str = "timers") -> None:
        self._heap: list[tuple[float, int, Any, Any]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def schedule(self, delay_s: float, ref: pykka.ActorRef, message: Any) -> None:
        due = time.monotonic() + max(0.0, delay_s)
        with self._wakeup:
            heapq.heappush(self._heap, (due, next(self._order), ref, message))
            if self._heap[0][0] == due:
                self._wakeup.notify()

    def pending(self) -> int:
        with self._wakeup:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    # A little late, so timers due close together fire on one wake-up:
                    # a call starts several (guards, its linger), each a wake-up otherwise.
                    wait_s = self._heap[0][0] - time.monotonic() + SLACK_S if self._heap else None
                    self._wakeup.wait(wait_s)
                if self._stopping:
                    return
                due = []
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
            for _, _, ref, message in due:
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass  # the call ended before its timer: nothing to tell
