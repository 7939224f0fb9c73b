"""What the DbWriter reports for monitoring: each committed transaction's time and
size, never a failed attempt; its backlog readable from the scrape thread."""

from __future__ import annotations

import sqlite3

import pytest

from actors.db_writer import DbWriter
from tests.storage.conftest import WAIT_S, AckCollector, eventually, make_config, writer_stats
from tests.storage.helpers import one_call
from tests.telemetry import RecordingTelemetry


def test_each_commit_is_timed_with_the_number_of_writes_it_held(backend, db):
    telemetry = RecordingTelemetry()
    collector = AckCollector.start(expected=8)
    writer = DbWriter.start(make_config(backend.url), telemetry=telemetry)
    for write in one_call(collector):
        writer.tell(write)
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert telemetry.wait_for(lambda: sum(n for _, n in telemetry.commits) == 8, WAIT_S)
    assert all(elapsed_s >= 0 for elapsed_s, _ in telemetry.commits)
    assert telemetry.sources["db_writer"]()["written"] == 8


def test_a_locked_database_times_no_commit_until_the_backlog_is_written(backend, db):
    if backend.kind != "sqlite":
        pytest.skip("the lock is SQLite's; servers are cut off in test_db_writer_outage")
    telemetry = RecordingTelemetry()
    collector = AckCollector.start(expected=8)
    writer = DbWriter.start(make_config(backend.url + "?busy_timeout_ms=50"), telemetry=telemetry)
    holder = sqlite3.connect(backend.url[len("sqlite:///"):], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        for write in one_call(collector):
            writer.tell(write)
        eventually(lambda: writer_stats(writer)["retries"] >= 2, what="the writer to meet the lock")
        # The scrape thread reads the backlog without asking the (busy) writer.
        assert telemetry.sources["db_writer"]()["pending"] == 8
        assert telemetry.commits == []
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert telemetry.wait_for(lambda: sum(n for _, n in telemetry.commits) == 8, WAIT_S)
    assert telemetry.sources["db_writer"]()["pending"] == 0
