"""The database away while calls keep coming, end to end (issue 13 item 9): the whole
service against the stand-in, its database cut off (a server behind a proxy, SQLite
locked by another connection) for ICALL_TEST_OUTAGE_S seconds (20 by default) while
calls arrive at ICALL_TEST_OUTAGE_RATE a second (4). Afterwards every call has every
row, once; meanwhile the writer's memory stayed within backlog_max (the rest went to
its spool). bench/db_outage_bench.py runs the same for 10 minutes at 20 calls/s."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

from peewee import fn

from storage.db import close_quietly, open_database
from storage.models import Call, CallStep, CdrOutbox, FifoEvent
from tests.e2e.conftest import WAIT_S
from tests.storage.conftest import backend, outage, proxy_to  # noqa: F401 - fixtures used below
from tests.waiting import wait_until

OUTAGE_S = float(os.environ.get("ICALL_TEST_OUTAGE_S", "20"))
RATE = float(os.environ.get("ICALL_TEST_OUTAGE_RATE", "4"))
BACKLOG_MAX = 100  # the smallest allowed: the outage overflows it many times


def _rows_per_call(db, uuids: list[str]) -> dict[str, Counter]:
    """For each table, how many rows each call has."""
    tables = {"calls": (Call, Call.uuid), "call_steps": (CallStep, CallStep.call_uuid),
              "fifo_events": (FifoEvent, FifoEvent.call_uuid), "cdr_outbox": (CdrOutbox, CdrOutbox.call_uuid)}
    counts = {}
    for name, (model, key) in tables.items():
        query = model.select(key, fn.COUNT(model.id)).where(key.in_(uuids)).group_by(key).tuples()
        counts[name] = Counter(dict(query.execute(db)))
    return counts


def test_a_database_outage_under_load_loses_no_row_and_keeps_the_writers_memory_bounded(
        backend, outage, harness):  # noqa: F811 - pytest fixtures
    h = harness(ICALL_DATABASE_URL=outage.url, ICALL_DATABASE_BACKLOG_MAX=str(BACKLOG_MAX),
                ICALL_DATABASE_BATCH_SIZE="50", ICALL_DATABASE_RETRY_MAX_S="1")
    writer = h.service.services.db_writer
    control = h.finish(h.place("5551001", "1"))  # what one such call writes, before the cut
    pace = threading.Event()  # never set: paces the calls at RATE

    outage.cut()
    uuids, peak_backlog = [], 0
    ends = time.monotonic() + OUTAGE_S
    while time.monotonic() < ends:
        uuids.append(h.place(f"555{len(uuids):04d}", "1"))
        peak_backlog = max(peak_backlog, writer.proxy().stats().get(timeout=WAIT_S)["pending"])
        pace.wait(1 / RATE)
    during = writer.proxy().stats().get(timeout=WAIT_S)
    outage.restore()
    close_quietly(h.db)  # its connection went with the cut; the next read reconnects

    for uuid in uuids:
        assert h.switch.wait_hangup(uuid, timeout=WAIT_S), f"call {uuid} never hung up"
    assert wait_until(lambda: writer.proxy().stats().get(timeout=WAIT_S)["spooled"] == 0
                      and writer.proxy().stats().get(timeout=WAIT_S)["pending"] == 0, WAIT_S * 2)
    db = open_database(backend.url)
    try:
        expected = {table: rows[control.uuid] for table, rows in _rows_per_call(db, [control.uuid]).items()}
        found = _rows_per_call(db, uuids)
    finally:
        db.close()

    assert expected["calls"] == 1 and expected["call_steps"] >= 1 and expected["cdr_outbox"] == 1
    for table, per_call in expected.items():
        wrong = {u: found[table][u] for u in uuids if found[table][u] != per_call}
        assert not wrong, f"{table}: {len(wrong)} of {len(uuids)} calls without exactly {per_call} rows"
    assert during["spilled"] > 0, "the outage never overflowed the in-memory backlog"
    assert peak_backlog <= BACKLOG_MAX and during["pending"] <= BACKLOG_MAX
    assert during["refused"] == 0 and writer.proxy().stats().get(timeout=WAIT_S)["rejected"] == 0
