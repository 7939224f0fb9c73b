"""Schema version 3 on every backend: 64-bit keys (from an empty database and from a
version 2 database full to the edge of 32 bits), the node and lease columns, a step
interrupted half way, and several upgraders at once."""

from __future__ import annotations

import queue
import threading

import pytest
from peewee import SchemaManager

from actors.messages import DbWrite
from storage import schema_v1, schema_v3
from storage.db import open_database
from storage.migrations import LATEST, STEPS, _record_version, schema_version, upgrade
from storage.models import Call, CallFailure, CallStep, CdrOutbox, FifoEvent, utc_now
from storage.records import commit_batch, prepare
from storage.schema_lock import schema_lock
from tests.storage.conftest import WAIT_S
from tests.storage.helpers import one_call

EDGE_OF_32_BITS = 2**31 - 2
PAST_32_BITS = 2**31


@pytest.fixture
def db(backend):
    database = open_database(backend.url)
    database.connect()
    yield database
    database.close()


def _create_version_2(db) -> None:
    for model in schema_v1.MODELS:
        SchemaManager(model, db).create_all()
    STEPS[2](db)
    _record_version(db, 2)


def _next_key_after(db, table: str, value: int) -> None:
    """Make the table's next generated id value + 1, as years of calls would."""
    kind = type(db).__name__
    if kind == "PostgresqlDatabase":
        db.execute_sql("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (table, value))
    elif kind == "MySQLDatabase":
        db.execute_sql(f"ALTER TABLE `{table}` AUTO_INCREMENT = {value + 1}")
    # SQLite takes max(rowid) + 1: the rows the tests insert with explicit ids do it.


def _old_rows(db, call_uuid: str, first_id: int) -> None:
    """One row in each growing table, with the ids a long-running icall would have."""
    now = utc_now()
    schema_v1.Call.insert(id=first_id, uuid=call_uuid, caller_id="5551000").execute(db)
    schema_v1.CallStep.insert(id=first_id, call_uuid=call_uuid, seq=1, step="MainMenu").execute(db)
    schema_v1.FifoEvent.insert(id=first_id, call_uuid=call_uuid, seq=2, action="push").execute(db)
    schema_v1.CallFailure.insert(id=first_id, call_uuid=call_uuid, seq=3, state="welcome").execute(db)
    schema_v1.CdrOutbox.insert(id=first_id, call_uuid=call_uuid, payload="{}", created_at=now,
                               next_attempt_at=now).execute(db)
    for table in schema_v3.GROWING_TABLES:
        _next_key_after(db, table, first_id)


def _write_a_call(db, call_uuid: str) -> None:
    writes = one_call(call_uuid=call_uuid) + [DbWrite(call_uuid, 99, "failure", {"state": "x"})]
    commit_batch(db, [prepare(w.call_uuid, w.seq, w.kind, w.fields, node="node-a") for w in writes])


def _ids(db, call_uuid: str) -> dict[str, list[int]]:
    models = {"calls": (Call, Call.uuid), "call_steps": (CallStep, CallStep.call_uuid),
              "fifo_events": (FifoEvent, FifoEvent.call_uuid),
              "call_failures": (CallFailure, CallFailure.call_uuid),
              "cdr_outbox": (CdrOutbox, CdrOutbox.call_uuid)}
    return {table: [row.id for row in model.select(model.id).where(key == call_uuid).execute(db)]
            for table, (model, key) in models.items()}


def test_a_fresh_database_gets_64_bit_keys_the_node_and_the_lease_columns(backend, db):
    assert upgrade(db) == [1, 2, 3, 4, 5]

    if backend.kind != "sqlite":  # SQLite's INTEGER PRIMARY KEY is its 64-bit rowid
        assert {schema_v3.key_type(db, t) for t in schema_v3.GROWING_TABLES} == {"bigint"}
    _old_rows(db, "edge", PAST_32_BITS)
    _write_a_call(db, "new-call")
    ids = _ids(db, "new-call")
    assert all(values and min(values) > PAST_32_BITS for values in ids.values()), ids
    assert Call.select().where(Call.uuid == "new-call").get(db).node == "node-a"
    outbox = CdrOutbox.select().where(CdrOutbox.call_uuid == "new-call").get(db)
    assert (outbox.node, outbox.claimed_by, outbox.claimed_until) == ("node-a", None, None)


def test_a_version_2_database_at_the_edge_of_32_bits_is_migrated_keeping_its_rows(backend, db):
    _create_version_2(db)
    _old_rows(db, "old-call", EDGE_OF_32_BITS)
    before = _ids(db, "old-call")

    assert upgrade(db) == [3, 4, 5]

    assert schema_version(db) == LATEST
    assert _ids(db, "old-call") == before
    old = Call.select().where(Call.uuid == "old-call").get(db)
    assert (old.caller_id, old.node) == ("5551000", None)
    # Version 2 would fail here: the next ids are past 2^31 - 1.
    _write_a_call(db, "new-call-1")
    _write_a_call(db, "new-call-2")
    ids = _ids(db, "new-call-2")
    assert all(values and min(values) >= 2**31 for values in ids.values()), ids


def test_a_version_3_step_cut_short_after_one_table_can_be_run_again(backend, db):
    _create_version_2(db)
    schema_v3.widen_key(db, "calls")  # MySQL committed this much before the cut
    from playhouse.migrate import SchemaMigrator, migrate

    migrate(SchemaMigrator.from_database(db).add_column("calls", "node", Call.node))

    assert upgrade(db) == [3, 4, 5]
    _write_a_call(db, "after-the-cut")
    assert Call.select().where(Call.node == "node-a").count(db) == 1


def test_two_upgrades_at_once_apply_each_version_once_and_both_succeed(backend, db):
    if backend.kind == "sqlite":
        pytest.skip("SQLite serialises the upgraders with its write lock; see the test below")
    waiting: queue.Queue[str] = queue.Queue()
    results: queue.Queue[tuple[str, object]] = queue.Queue()

    def upgrader(name: str) -> None:
        own = open_database(backend.url)
        try:
            with own.connection_context():
                results.put((name, upgrade(own, on_wait=lambda: waiting.put(name), lock_wait_s=WAIT_S)))
        except BaseException as exc:  # handed to the test's thread, asserted on below
            results.put((name, exc))

    # Hold the lock ourselves until both upgraders are waiting on it: a real race,
    # made certain to happen.
    threads = [threading.Thread(target=upgrader, args=(n,), name=n) for n in ("node-a", "node-b")]
    with schema_lock(db):
        for thread in threads:
            thread.start()
        assert {waiting.get(timeout=WAIT_S), waiting.get(timeout=WAIT_S)} == {"node-a", "node-b"}
    outcome = dict(results.get(timeout=WAIT_S * 4) for _ in threads)
    for thread in threads:
        thread.join(WAIT_S)

    assert sorted(outcome.values(), key=len) == [[], list(range(1, LATEST + 1))], outcome
    assert schema_version(db) == LATEST


def test_sqlite_upgraders_racing_each_other_end_with_one_upgrade(backend, db):
    if backend.kind != "sqlite":
        pytest.skip("the servers' lock is tested above")
    # `db` has made the file (and switched it to WAL) already: two first connections to
    # a new file can fail to switch its journal mode, whatever the upgrade does.
    start = threading.Barrier(2, timeout=WAIT_S)
    results: queue.Queue[object] = queue.Queue()

    def upgrader() -> None:
        own = open_database(backend.url)
        try:
            with own.connection_context():
                start.wait()
                results.put(upgrade(own))
        except BaseException as exc:  # asserted on below
            results.put(exc)

    threads = [threading.Thread(target=upgrader) for _ in range(2)]
    for thread in threads:
        thread.start()
    outcome = [results.get(timeout=WAIT_S) for _ in threads]
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(outcome, key=lambda r: len(r) if isinstance(r, list) else -1) == [[], list(range(1, LATEST + 1))]
