"""TimerService: each message told at its time (never before it, at most SLACK_S
after), in due order, and a timer whose actor is gone drops nothing else."""

from __future__ import annotations

import queue
import time
import weakref

import pykka
import pytest

from actors.timers import PURGE_EVERY, SLACK_S, TimerService
from tests.waiting import wait_until

WAIT_S = 10


class Recorder(pykka.ThreadingActor):
    def __init__(self, seen: queue.Queue):
        super().__init__()
        self.seen = seen

    def on_receive(self, message):
        self.seen.put((message, time.monotonic()))


@pytest.fixture
def timers():
    service = TimerService()
    service.start()
    yield service
    service.stop()
    pykka.ActorRegistry.stop_all()


def test_timers_fire_in_due_order_never_early_and_a_dead_receiver_loses_no_other(timers):
    seen: queue.Queue = queue.Queue()
    alive = Recorder.start(seen)
    dead = Recorder.start(queue.Queue())
    dead.stop()
    started = time.monotonic()
    delays = {"c": 0.30, "a": 0.10, "b": 0.11, "gone": 0.105}
    for name, delay in delays.items():
        timers.schedule(delay, dead if name == "gone" else alive, name)
    fired = [seen.get(timeout=WAIT_S) for _ in range(3)]
    assert [name for name, _ in fired] == ["a", "b", "c"]
    for name, at in fired:
        assert at - started >= delays[name], f"{name} fired early"
    # The late bound holds on a quiet machine; loosely checked here (CI may be busy).
    assert fired[0][1] - started < delays["a"] + SLACK_S + 1.0
    assert timers.pending() == 0


class Message:
    """A message the test can watch being freed."""


def test_a_cancelled_timer_never_fires_and_lets_go_of_its_message(timers):
    seen: queue.Queue = queue.Queue()
    alive = Recorder.start(seen)
    message = Message()
    gone = weakref.ref(message)
    cancelled = timers.schedule(0.05, alive, message)
    timers.schedule(0.1, alive, "kept")
    cancelled.cancel()
    del message
    assert gone() is None, "a cancelled timer must not hold its message (or its actor's ref)"
    assert seen.get(timeout=WAIT_S)[0] == "kept"
    assert seen.empty()
    assert timers.pending() == 0


def test_cancelled_timers_far_ahead_are_not_counted_as_pending(timers):
    alive = Recorder.start(queue.Queue())
    handles = [timers.schedule(120.0, alive, f"guard-{n}") for n in range(5)]
    assert timers.pending() == 5
    for handle in handles:
        handle.cancel()
    assert timers.pending() == 0


def test_cancelled_timers_leave_the_heap_long_before_their_time(timers):
    alive = Recorder.start(queue.Queue())
    for n in range(3 * PURGE_EVERY):  # guards of calls that ended: cancelled at once
        timers.schedule(120.0, alive, f"guard-{n}").cancel()
    kept = timers.schedule(120.0, alive, "live guard")
    assert timers.pending() == 1
    assert len(timers._heap) <= PURGE_EVERY + 1, "cancelled shells must not pile up for 120 s"
    kept.cancel()


def test_a_fired_timer_holds_neither_its_receiver_nor_its_message(timers):
    seen: queue.Queue = queue.Queue()
    fired = timers.schedule(0.01, Recorder.start(seen), "once")
    assert seen.get(timeout=WAIT_S)[0] == "once"
    assert wait_until(lambda: (fired.ref, fired.message) == (None, None), WAIT_S)
