"""The DbWriter's intake: writes left without waking the writer, still acked only
after their commit, and never stranded (actors.write_intake)."""

from __future__ import annotations

import pykka
import pytest

from actors.db_writer import DbWriter
from actors.messages import DbWrite
from actors.write_intake import Drain, WriteIntake
from storage.models import CallStep
from tests.storage.conftest import WAIT_S, AckCollector, eventually, make_config
from tests.storage.helpers import one_call

# Longer than any wait below: a commit seen within WAIT_S was not the gather's.
LONG_GATHER_MS = "5000"


class CountingRef:
    """A writer's ref that counts what the intake tells it."""

    def __init__(self, ref):
        self.ref, self.told = ref, []

    def is_alive(self) -> bool:
        return self.ref.is_alive()

    def tell(self, message) -> None:
        self.told.append(message)
        self.ref.tell(message)


class Deaf(pykka.ThreadingActor):
    """Alive, but never takes the intake: a writer about to die."""

    def on_receive(self, message) -> None:
        pass


def _to(collector, writes):
    return [DbWrite(w.call_uuid, w.seq, w.kind, w.fields, collector) for w in writes]


def test_gathered_writes_wake_the_writer_once_and_a_cdr_wakes_it_to_commit_them_all(backend, db):
    writes = one_call(steps=3)
    call_and_steps, cdr = writes[:4], writes[-1]
    collector = AckCollector.start(expected=5)
    intake = WriteIntake()
    writer = DbWriter.start(make_config(backend.url, commit_interval_ms=LONG_GATHER_MS), intake=intake)
    counting = CountingRef(writer)
    intake.bind(counting)
    try:
        first, *rest = _to(collector, call_and_steps)
        intake.put(first)
        eventually(lambda: len(intake) == 0 and intake.armed, what="the first write taken, a gather on")
        for write in rest:
            intake.put(write)
        assert counting.told == [Drain()]  # the first one; the gather wait takes the rest
        assert not collector.proxy().all_in.get(timeout=WAIT_S).wait(0.3)
        assert collector.proxy().acks.get(timeout=WAIT_S) == []  # none before the commit
        intake.put(_to(collector, [cdr])[0])
        assert counting.told == [Drain(), Drain()]  # urgent: at once
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
        uuid = cdr.call_uuid
        assert CallStep.select().where(CallStep.call_uuid == uuid).count(db) == 3
    finally:
        writer.stop()
        collector.stop()


def test_a_full_batch_wakes_the_writer_without_waiting_for_the_gather(backend, db):
    steps = one_call(steps=3)[1:4]
    collector = AckCollector.start(expected=3)
    intake = WriteIntake()
    writer = DbWriter.start(make_config(backend.url, commit_interval_ms=LONG_GATHER_MS, batch_size="3"),
                            intake=intake)
    try:
        for write in _to(collector, steps):
            intake.put(write)
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(4.0), "the full batch waited for the gather"
    finally:
        writer.stop()
        collector.stop()


def test_with_no_writer_running_a_put_raises_as_a_tell_would():
    intake = WriteIntake()
    write = one_call()[1]
    with pytest.raises(pykka.ActorDeadError):
        intake.put(write)  # never bound
    gone = Deaf.start()
    intake.bind(gone)
    gone.stop()
    with pytest.raises(pykka.ActorDeadError):
        intake.put(write)
    assert len(intake) == 0


def test_writes_a_dying_writer_left_in_the_intake_are_taken_by_its_replacement(backend, db):
    steps = one_call(steps=2)[1:3]
    collector = AckCollector.start(expected=2)
    intake = WriteIntake()
    dying = Deaf.start()
    intake.bind(dying)
    try:
        for write in _to(collector, steps):
            intake.put(write)  # the first tells Drain, which the deaf actor ignores
        dying.stop()
        assert len(intake) == 2
        writer = DbWriter.start(make_config(backend.url), intake=intake)
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
        assert CallStep.select().where(CallStep.call_uuid == steps[0].call_uuid).count(db) == 2
        writer.stop()
    finally:
        collector.stop()


def test_stopping_the_writer_commits_what_waits_in_the_intake(backend, db):
    steps = one_call(steps=2)[1:3]
    collector = AckCollector.start(expected=2)
    intake = WriteIntake()
    writer = DbWriter.start(make_config(backend.url, commit_interval_ms=LONG_GATHER_MS), intake=intake)
    for write in _to(collector, steps):
        intake.put(write)
    writer.stop()  # long before the gather ends
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert CallStep.select().where(CallStep.call_uuid == steps[0].call_uuid).count(db) == 2
    collector.stop()


def test_while_the_database_is_away_a_write_wakes_the_writer_to_count_against_the_bound():
    # A retry wait does not arm the intake: writes must reach the backlog (and be
    # spilled past backlog_max) at once, not wait beside it for the next retry.
    steps = one_call(steps=4)[1:5]
    intake = WriteIntake()
    writer = DbWriter.start(make_config("postgresql://icall@127.0.0.1:9/nothing", retry_max_s="30"),
                            intake=intake)
    counting = CountingRef(writer)
    intake.bind(counting)

    def stats():
        return writer.proxy().stats().get(timeout=WAIT_S)

    try:
        intake.put(steps[0])
        # Retry waits double from 50 ms: after the fourth, the next one is 0.8 s away.
        eventually(lambda: stats()["retries"] >= 4 and not intake.armed, what="retry waits")
        told, retries = len(counting.told), stats()["retries"]
        for write in steps[1:]:
            intake.put(write)
        assert len(counting.told) > told  # woken, where a gather would not have been
        eventually(lambda: stats()["pending"] == 4, timeout_s=0.5, what="all four in the backlog")
        assert stats()["retries"] == retries  # taken in, not by the next retry
    finally:
        writer.stop()


def test_the_intake_is_armed_by_an_explicit_call_never_by_setting_an_attribute():
    # Issue 22 (the house): a property whose setter armed the intake hid a side effect
    # behind an assignment.
    properties = [name for name, value in vars(DbWriter).items() if isinstance(value, property)]
    assert properties == []
