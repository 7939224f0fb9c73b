"""The breaker, the cache and the deadline watch on their own, with a hand-turned clock."""

from __future__ import annotations

import queue
import threading
import time

from actors.crm.guards import AnswerCache, CircuitBreaker, DeadlineWatch, PendingLookup


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_the_configured_failures_in_a_row():
    breaker = CircuitBreaker(3, 30, clock=Clock())
    for _ in range(2):
        assert breaker.admit() == "normal"
        breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open"
    assert breaker.admit() is None


def test_after_the_cool_down_the_breaker_admits_exactly_one_probe():
    clock = Clock()
    breaker = CircuitBreaker(1, 30, clock=clock)
    breaker.failed()
    clock.now += 29.9
    assert breaker.admit() is None
    clock.now += 0.1
    assert breaker.admit() == "probe"
    assert [breaker.admit() for _ in range(5)] == [None] * 5
    breaker.succeeded()
    assert breaker.admit() == "normal"


def test_a_probe_that_never_ran_lets_the_next_lookup_probe():
    clock = Clock()
    breaker = CircuitBreaker(1, 30, clock=clock)
    breaker.failed()
    clock.now += 30
    assert breaker.admit() == "probe"
    breaker.abandoned()
    assert breaker.admit() == "probe"


def test_a_failed_probe_restarts_the_cool_down():
    clock = Clock()
    breaker = CircuitBreaker(1, 30, clock=clock)
    breaker.failed()
    clock.now += 30
    assert breaker.admit() == "probe"
    breaker.failed()
    assert breaker.admit() is None
    clock.now += 30
    assert breaker.admit() == "probe"
    assert breaker.times_opened == 2


def test_cached_answers_expire_after_their_ttl():
    clock = Clock()
    cache = AnswerCache(60, clock=clock)
    cache.put("5551000", "801", "found")
    clock.now += 59.9
    assert cache.get("5551000") == ("801", "found")
    clock.now += 0.1
    assert cache.get("5551000") is None


def test_the_cache_forgets_the_oldest_entry_when_full():
    cache = AnswerCache(60, max_entries=2, clock=Clock())
    for caller_id in ("a", "b", "c"):
        cache.put(caller_id, "801", "found")
    assert cache.get("a") is None
    assert cache.get("c") == ("801", "found")


def test_a_pending_lookup_is_settled_once_whoever_comes_first():
    delivered = []
    pending = PendingLookup(0.0, lambda ext, reason: delivered.append((ext, reason)))
    assert pending.settle("801", "found")
    assert not pending.settle(None, "deadline passed")
    assert delivered == [("801", "found")]


def test_the_deadline_watch_answers_lookups_at_their_deadline_in_order():
    answers: queue.Queue = queue.Queue()
    watch = DeadlineWatch()
    try:
        start = time.monotonic()
        for name, offset_s in (("late", 0.6), ("early", 0.2)):
            watch.watch(PendingLookup(start + offset_s,
                                      lambda ext, reason, name=name: answers.put((name, reason))))
        assert answers.get(timeout=10) == ("early", "deadline passed")
        assert answers.get(timeout=10) == ("late", "deadline passed")
        assert time.monotonic() - start >= 0.6
    finally:
        watch.stop("stopping")


def test_lookups_answered_in_time_leave_the_watch_without_a_wake_up_each():
    watch = DeadlineWatch()
    try:
        start = time.monotonic()
        for n in range(50):  # each answered at once, deadlines 10 ms apart
            pending = PendingLookup(start + 0.05 + n * 0.01, lambda ext, reason: None)
            watch.watch(pending)
            pending.settle("801", "found")
        answers: queue.Queue = queue.Queue()
        watch.watch(PendingLookup(start + 0.8, lambda ext, reason: answers.put(reason)))
        assert answers.get(timeout=10) == "deadline passed"
        # One look at the first deadline clears every answered lookup; one more for
        # the lookup left open. Waking at each deadline would be 51 looks.
        assert watch.wakeups <= 3
    finally:
        watch.stop("stopping")


def test_stopping_the_watch_answers_what_is_left_and_ends_its_thread():
    answers = []
    watch = DeadlineWatch(name="watch-under-test")
    watch.watch(PendingLookup(time.monotonic() + 3600, lambda ext, reason: answers.append(reason)))
    watch.stop("crm fetcher stopping")
    assert answers == ["crm fetcher stopping"]
    assert "watch-under-test" not in [t.name for t in threading.enumerate()]


def test_a_failing_delivery_does_not_kill_the_watch():
    answers: queue.Queue = queue.Queue()
    watch = DeadlineWatch()
    try:
        def explode(ext, reason):
            raise RuntimeError("delivery failed")

        now = time.monotonic()
        watch.watch(PendingLookup(now + 0.05, explode))
        watch.watch(PendingLookup(now + 0.1, lambda ext, reason: answers.put(reason)))
        assert answers.get(timeout=10) == "deadline passed"
    finally:
        watch.stop("stopping")
