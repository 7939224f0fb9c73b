"""One timer thread for every actor: pykka has no timers, and a threading.Timer per
call (3,000 calls, several timers each) would cost a thread per timer.

`schedule(delay_s, ref, message)` tells `message` to `ref` after `delay_s` (at most
SLACK_S later). A flow's timer carries a generation, so a late one is recognised and
dropped by its receiver; nothing cancels it for that. `schedule` returns a `Timer`
whose `cancel()` is for an actor that stops: its guard timers would otherwise hold its
ActorRef (with the mailbox and the stop event behind it) for `[ivr] command_timeout_s`
(120 s) after the call, i.e. thousands of ended calls' objects at 20 calls/s.
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
# Every this many timers scheduled, cancelled ones are dropped if they are half the heap.
PURGE_EVERY = 256


class Timer:
    """One scheduled message. `cancel()` (any thread) drops it and what it holds; the
    heap keeps the empty shell until its time."""

    __slots__ = ("ref", "message")

    def __init__(self, ref: Any, message: Any) -> None:
        self.ref, self.message = ref, message

    def cancel(self) -> None:
        self.ref = self.message = None


class TimerService:
    """Runs in its own daemon thread named `timers`; `schedule` may be called from any
    thread."""

    def __init__(self, name: str = "timers") -> None:
        self._heap: list[tuple[float, int, Timer]] = []
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

    def schedule(self, delay_s: float, ref: pykka.ActorRef, message: Any) -> Timer:
        due = time.monotonic() + max(0.0, delay_s)
        timer = Timer(ref, message)
        with self._wakeup:
            order = next(self._order)
            if order % PURGE_EVERY == 0:
                self._purge_cancelled()
            heapq.heappush(self._heap, (due, order, timer))
            if self._heap[0][0] == due:
                self._wakeup.notify()
        return timer

    def _purge_cancelled(self) -> None:
        """Drop the cancelled timers once they are half the heap. Left until their
        time, an ended call's guard shells would live 120 s each, and small objects
        that live that long, scattered among a call's short-lived ones, keep the
        allocator's pages from being reused: icall's memory grew ~8 MB over the first
        two minutes at 20 calls/s until the first of them came due."""
        live = [entry for entry in self._heap if entry[2].ref is not None]
        if len(live) * 2 <= len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def pending(self) -> int:
        """Timers still to fire (cancelled ones not counted)."""
        with self._wakeup:
            return sum(1 for _, _, timer in self._heap if timer.ref is not None)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while True:
                    while self._heap and self._heap[0][2].ref is None:
                        heapq.heappop(self._heap)  # cancelled: not worth a wake-up
                    if self._stopping or (self._heap and self._heap[0][0] <= time.monotonic()):
                        break
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
            for _, _, timer in due:
                ref, message = timer.ref, timer.message
                if ref is None or message is None:
                    continue  # cancelled
                timer.cancel()  # fired: its holder may drop it (and holds nothing)
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass  # the call ended before its timer: nothing to tell
