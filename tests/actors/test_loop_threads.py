"""LoopThreads: a job runs on a waiting thread when there is one, on a new thread
otherwise; a thread left idle too long ends; a failing job does not take the pool down."""

from __future__ import annotations

import queue
import threading
import weakref

from actors.loop_threads import IDLE_NAME, LoopThreads
from tests.waiting import wait_until

WAIT_S = 10


def run_and_wait(pool: LoopThreads, name: str) -> tuple[str, int]:
    """Run a job on the pool; return the name and ident of the thread that ran it."""
    seen: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
    me = threading.current_thread
    pool.run(lambda: seen.put((me().name, me().ident or 0)), name)
    return seen.get(timeout=WAIT_S)


def test_a_job_after_one_that_ended_reuses_its_thread_under_the_new_name():
    pool = LoopThreads(idle_s=WAIT_S)
    first_name, first = run_and_wait(pool, "call-first")
    assert wait_until(lambda: pool.idle == 1, WAIT_S)
    second_name, second = run_and_wait(pool, "call-second")
    assert (first_name, second_name) == ("call-first", "call-second")
    assert second == first and pool.started == 1


class _Job:
    """Stands for a call actor: its loop is the job, a bound method holding it."""

    def loop(self) -> None:
        pass


def test_an_idle_thread_holds_neither_its_first_nor_its_last_job():
    # A pooled thread lives on after its actor stopped: holding the job (a Thread keeps
    # its args, a loop its last target) kept each ended call's actor, flow and mailbox.
    pool = LoopThreads(idle_s=WAIT_S)
    first, second = _Job(), _Job()
    gone = [weakref.ref(first), weakref.ref(second)]
    pool.run(first.loop, "call-first")
    assert wait_until(lambda: pool.idle == 1, WAIT_S)
    pool.run(second.loop, "call-second")
    assert wait_until(lambda: pool.idle == 1, WAIT_S)
    del first, second
    assert [ref() for ref in gone] == [None, None]  # freed by reference counts alone
    assert pool.started == 1


def test_jobs_that_overlap_get_a_thread_each():
    pool = LoopThreads(idle_s=WAIT_S)
    release = threading.Event()
    idents: queue.SimpleQueue[int] = queue.SimpleQueue()

    def hold() -> None:
        idents.put(threading.get_ident())
        release.wait(WAIT_S)

    for n in range(3):
        pool.run(hold, f"call-{n}")
    got = {idents.get(timeout=WAIT_S) for _ in range(3)}
    release.set()
    assert len(got) == 3 and pool.started == 3
    assert wait_until(lambda: pool.idle == 3, WAIT_S)


def test_an_idle_thread_ends_after_its_wait_and_the_next_job_starts_a_new_one():
    pool = LoopThreads(idle_s=0.05, name="pool-under-test")
    run_and_wait(pool, "call-one")
    assert wait_until(lambda: pool.idle == 0 and not _named("pool-under-test"), WAIT_S)
    assert run_and_wait(pool, "call-two")[0] == "call-two"
    assert pool.started == 2


def test_a_job_that_raises_leaves_its_thread_serving():
    pool = LoopThreads(idle_s=WAIT_S)

    def fail() -> None:
        raise RuntimeError("boom")

    pool.run(fail, "call-failing")
    assert wait_until(lambda: pool.idle == 1, WAIT_S)
    assert run_and_wait(pool, "call-next")[0] == "call-next"
    assert pool.started == 1


def test_an_idle_thread_is_named_as_idle():
    pool = LoopThreads(idle_s=WAIT_S)
    _, ident = run_and_wait(pool, "call-x")
    assert wait_until(lambda: pool.idle == 1, WAIT_S)
    names = {t.ident: t.name for t in threading.enumerate()}
    assert names[ident] == IDLE_NAME


def _named(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())
