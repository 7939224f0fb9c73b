"""LoopThreads: the threads call actors run on, kept for the next call.

Every call has its own actor, and every actor its own thread while it lives. Starting
a thread for each call and letting it end cost ~130 µs of CPU per call on the test
VM (start, the starter waiting for the new thread to signal it began, and the exit),
where handing a waiting thread its next actor costs ~30 µs (bench.wakeup_bench prints
both). So a thread whose actor has stopped waits `idle_s` for the next one before it
ends: under a steady load, calls reuse the threads of the calls that ended.

An actor still has a thread to itself from its start to its stop; only the thread's
next life changes. Threads are daemons, like the call actors' threads were: the
service stops every call actor itself (see actors.call_actor).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

IDLE_NAME = "call-idle"


class LoopThreads:
    """`run(target, name)` runs `target` on an idle thread, or on a new one if none
    waits. Any thread may call `run`."""

    def __init__(self, idle_s: float = 30.0, name: str = IDLE_NAME):
        self._idle_s = idle_s
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job that no job has been promised to
        self.started = 0  # threads started so far (the tests read it)

    @property
    def idle(self) -> int:
        return self._idle

    def run(self, target: Callable[[], object], name: str) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put((target, name))
                return
            self.started += 1
        # The job travels in a list the thread empties: a Thread keeps its `args` until
        # it ends, and a pooled thread lives on, so the first job's actor (its flow,
        # mailbox and history: ~40 KiB) would stay with it.
        thread = threading.Thread(target=self._serve, args=([target],), name=name, daemon=True)
        thread.start()

    def _serve(self, first: list[Callable[[], object]]) -> None:
        target: Callable[[], object] | None = first.pop()
        while target is not None:
            try:
                target()
            except Exception:  # pykka's loop catches everything; this is the edge
                logger.exception("a pooled thread's job failed")
            # Let go of the job that ended before waiting for the next: an idle thread
            # holding its last actor kept every ended call's memory for up to idle_s.
            target = None
            me = threading.current_thread()
            me.name = self._name
            job = self._next_job()
            if job is None:
                return
            target, me.name = job
            job = None

    def _next_job(self) -> tuple[Callable[[], object], str] | None:
        with self._lock:
            self._idle += 1
        try:
            return self._jobs.get(timeout=self._idle_s)
        except queue.Empty:
            pass
        with self._lock:
            try:
                # A job promised to an idle thread while this one timed out: take it.
                return self._jobs.get_nowait()
            except queue.Empty:
                self._idle -= 1
                return None
