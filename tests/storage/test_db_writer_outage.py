"""DbWriter when the database goes away, is locked or is busy with readers: writes
wait, nothing is lost, nothing is acked before it is committed."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from actors.db_writer import DbWriter
from storage.db import open_database
from storage.models import Call, CallStep, CdrOutbox
from tests.storage.conftest import WAIT_S, AckCollector, eventually, make_config, writer_stats
from tests.storage.helpers import one_call


def _server_only(backend) -> None:
    if backend.kind == "sqlite":
        pytest.skip("SQLite has no server to cut off; see the lock tests")


def _send(writer, writes) -> None:
    for write in writes:
        writer.tell(write)


def test_a_database_cut_off_mid_run_loses_nothing_once_it_is_back(backend, db, proxy_to):
    _server_only(backend)
    proxy = proxy_to()
    collector = AckCollector.start(expected=80)
    before = [w for n in range(5) for w in one_call(collector, call_uuid=f"before{n}")]
    during = [w for n in range(5) for w in one_call(collector, call_uuid=f"during{n}")]
    writer = DbWriter.start(make_config(backend.url_via(proxy.port)))
    _send(writer, before)
    eventually(lambda: len(collector.proxy().acks.get(timeout=WAIT_S)) == len(before),
               what="the first calls to be acked")

    proxy.cut()
    _send(writer, during)
    assert proxy.refused.wait(WAIT_S), "the writer never tried to reconnect"
    assert len(collector.proxy().acks.get(timeout=WAIT_S)) == len(before)  # nothing acked while cut
    assert writer_stats(writer)["pending"] == len(during)
    proxy.restore()

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert Call.select().count(db) == 10
    assert CallStep.select().count(db) == 50
    assert CdrOutbox.select().count(db) == 10
    stats = writer_stats(writer)
    assert stats["pending"] == 0 and stats["retries"] >= 1 and stats["written"] == 80


def test_a_writer_started_while_the_database_is_unreachable_starts_and_writes_later(
        backend, db, proxy_to):
    _server_only(backend)
    proxy = proxy_to()
    proxy.cut()
    collector = AckCollector.start(expected=8)

    writer = DbWriter.start(make_config(backend.url_via(proxy.port)))
    _send(writer, one_call(collector))
    assert proxy.refused.wait(WAIT_S)
    assert writer.is_alive()
    proxy.restore()

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert CallStep.select().count(db) == 5


def test_a_sqlite_write_lock_held_elsewhere_delays_the_writes_without_acking_them(backend, db):
    if backend.kind != "sqlite":
        pytest.skip("the lock test is SQLite's; servers are cut with the proxy")
    collector = AckCollector.start(expected=8)
    writer = DbWriter.start(make_config(backend.url + "?busy_timeout_ms=50"))
    holder = sqlite3.connect(backend.url[len("sqlite:///"):], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock

    _send(writer, one_call(collector))
    eventually(lambda: writer_stats(writer)["retries"] >= 2, what="the writer to meet the lock")
    assert collector.proxy().acks.get(timeout=WAIT_S) == []
    assert "locked" in writer_stats(writer)["last_error"]
    holder.execute("COMMIT")
    holder.close()

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert CallStep.select().count(db) == 5


def test_readers_keep_reading_consistent_counts_while_the_writer_writes(backend, db):
    calls = 60
    collector = AckCollector.start(expected=calls * 8)
    writes = [w for n in range(calls) for w in one_call(collector, call_uuid=f"r{n}")]
    stop = threading.Event()
    seen: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def read(index: int) -> None:
        reader = open_database(backend.url)  # each reader its own connection
        counts = seen.setdefault(index, [])
        try:
            with reader.connection_context():
                while not stop.is_set():
                    counts.append(CallStep.select().count(reader))
        except BaseException as exc:  # recorded and asserted on below
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(i,), name=f"reader-{i}") for i in range(3)]
    for thread in readers:
        thread.start()
    writer = DbWriter.start(make_config(backend.url, batch_size=16))
    _send(writer, writes)
    try:
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S * 2)
    finally:
        stop.set()
        for thread in readers:
            thread.join(WAIT_S)

    assert errors == []
    for counts in seen.values():
        assert counts, "a reader never got to read"
        assert counts == sorted(counts), "a reader saw rows disappear"
        assert 0 <= counts[0] and counts[-1] <= calls * 5
    assert CallStep.select().count(db) == calls * 5
