"""commit_batch on every backend: how a call's start record and its CDR combine into
its calls row, whatever else the batch holds and in whichever order they come."""

from __future__ import annotations

import queue
import threading
from datetime import datetime

import pytest
from peewee import DataError

from actors.messages import DbWrite
from storage import records
from storage.db import open_database
from storage.models import Call, CallStep, CdrOutbox
from storage.records import INSERT_CHUNK, KnownCalls, commit_batch, prepare
from tests.storage.conftest import WAIT_S, eventually
from tests.storage.helpers import STARTED, one_call

CDR_STARTED = datetime(2025, 12, 25, 10, 0, 0, 623456)  # FreeSWITCH's start_uepoch, later


def _commit(db, *batches: list[DbWrite], known: KnownCalls | None = None) -> None:
    """Each batch as one commit; known=None: as if each came to a new writer."""
    for batch in batches:
        commit_batch(db, [prepare(w.call_uuid, w.seq, w.kind, w.fields) for w in batch], known)


def _start_and_cdr(call_uuid: str = "c1") -> tuple[DbWrite, DbWrite]:
    """A start record, and a CDR that carries no caller name and its own start time."""
    writes = one_call(call_uuid=call_uuid)
    start, cdr = writes[0], writes[-1]
    cdr_fields = {**cdr.fields, "caller_name": "", "started_at": STARTED + 0.5}
    return start, DbWrite(cdr.call_uuid, cdr.seq, "cdr", cdr_fields)


def _row(db, call_uuid: str = "c1") -> Call:
    return Call.select().where(Call.uuid == call_uuid).get(db)


# One batch; two batches to the same writer (which then knows the call's row exists);
# two batches, the second to a new writer.
ARRIVALS = ["together", "apart", "apart, new writer"]


def _commit_in(db, arrival: str, first: DbWrite, second: DbWrite) -> None:
    if arrival == "together":
        _commit(db, [first, second], known=KnownCalls())
    else:
        _commit(db, [first], [second], known=None if "new writer" in arrival else KnownCalls())


@pytest.mark.parametrize("arrival", ARRIVALS)
@pytest.mark.parametrize("cdr_first", [False, True], ids=["start first", "cdr first"])
def test_a_start_record_and_its_cdr_give_the_same_row_in_either_order(backend, db, arrival, cdr_first):
    start, cdr = _start_and_cdr()
    first, second = (cdr, start) if cdr_first else (start, cdr)

    _commit_in(db, arrival, first, second)

    call = _row(db)
    assert call.started_at == CDR_STARTED  # the CDR overwrites its columns
    assert call.caller_name == "Ann"  # a value the CDR lacks does not erase the start's
    assert (call.flow, call.caller_id, call.billsec_s, call.hangup_cause) == (
        "icall", "5551001", 60, "NORMAL_CLEARING")
    assert call.updated_at is not None
    assert Call.select().count(db) == 1


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_a_repeated_start_record_only_fills_what_the_first_left_empty(backend, db, arrival):
    start, _ = _start_and_cdr()
    fields = {k: v for k, v in start.fields.items() if k != "caller_name"}
    first = DbWrite("c1", 1, "call", fields)
    repeated = DbWrite("c1", 1, "call", {"caller_id": "other", "caller_name": "Bob", "flow": "x"})

    _commit_in(db, arrival, first, repeated)

    call = _row(db)
    assert (call.caller_id, call.flow, call.caller_name) == ("5551001", "icall", "Bob")


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_a_later_cdr_overwrites_what_it_carries_and_keeps_the_rest(backend, db, arrival):
    _, cdr = _start_and_cdr()
    later = DbWrite("c1", cdr.seq, "cdr", {"hangup_cause": "ORIGINATOR_CANCEL", "answered_at": None})

    _commit_in(db, arrival, cdr, later)

    call = _row(db)
    assert call.hangup_cause == "ORIGINATOR_CANCEL"
    assert (call.answered_at, call.billsec_s) == (datetime(2025, 12, 25, 10, 0, 1, 123456), 60)


@pytest.mark.parametrize("same_writer", [True, False], ids=["same writer", "new writer"])
def test_a_batch_of_new_and_known_calls_gives_every_row_its_own_values(backend, db, same_writer):
    # More calls than one statement's chunk; a third were started, without their caller
    # name, in an earlier batch, and their start record comes again with it; only half
    # of the CDRs carry the caller name.
    count = INSERT_CHUNK + 50
    calls = [one_call(call_uuid=f"m{n}", steps=1) for n in range(count)]
    for n, writes in enumerate(calls):
        writes[0].fields.update(caller_id=f"caller {n}", caller_name=f"name {n}")
        writes[-1].fields.update(caller_id=f"caller {n}", caller_name=f"name {n}" if n % 2 else "",
                                 billsec_s=n)
    known = KnownCalls() if same_writer else None
    _commit(db, [DbWrite(w[0].call_uuid, 1, "call", {**w[0].fields, "caller_name": None})
                 for w in calls[::3]], known=known)

    _commit(db, [w for writes in calls for w in writes] + [DbWrite("steps-only", 1, "step", {"step": "S"})],
            known=known)

    rows = {c.uuid: c for c in Call.select().execute(db)}
    assert len(rows) == count + 1
    assert [(rows[f"m{n}"].caller_id, rows[f"m{n}"].caller_name, rows[f"m{n}"].billsec_s, rows[f"m{n}"].flow)
            for n in range(count)] == [(f"caller {n}", f"name {n}", n, "icall") for n in range(count)]
    assert (rows["steps-only"].caller_id, rows["steps-only"].billsec_s) == (None, None)
    assert CallStep.select().count(db) == count + 1
    assert CdrOutbox.select().count(db) == count


def test_known_calls_keep_the_most_recently_used_up_to_their_limit():
    known = KnownCalls(limit=3)
    known.add(["a", "b", "c"])
    known.add(["a", "d"])  # "a" used again: "b", the least recent, goes

    assert ("a" in known, "b" in known, "c" in known, "d" in known) == (True, False, True, True)
    assert len(known) == 3
    known.forget()
    assert len(known) == 0


def test_a_writer_that_forgot_its_known_calls_recreates_a_lost_calls_row(backend, db):
    known = KnownCalls()
    _commit(db, [DbWrite("k", 1, "step", {"step": "A"})], known=known)
    Call.delete().where(Call.uuid == "k").execute(db)  # a database restored without it

    _commit(db, [DbWrite("k", 2, "step", {"step": "B"})], known=known)
    assert Call.select().where(Call.uuid == "k").count(db) == 0  # known: not looked for
    known.forget()  # what the DbWriter does when its connection is replaced
    _commit(db, [DbWrite("k", 3, "step", {"step": "C"})], known=known)

    assert Call.select().where(Call.uuid == "k").count(db) == 1
    assert CallStep.select().where(CallStep.call_uuid == "k").count(db) == 3


def test_a_batch_that_fails_leaves_its_calls_unknown(backend, db):
    if backend.kind == "sqlite":
        pytest.skip("SQLite stores integers of any size; the servers refuse this one")
    known = KnownCalls()
    with pytest.raises(DataError):
        _commit(db, [DbWrite("f", 2**40, "step", {"step": "too big a seq"})], known=known)

    assert "f" not in known
    _commit(db, [DbWrite("f", 1, "step", {"step": "A"})], known=known)
    assert Call.select().where(Call.uuid == "f").count(db) == 1 and "f" in known


def test_a_cdr_value_out_of_the_column_range_is_refused_not_clipped(backend, db):
    if backend.kind == "sqlite":
        pytest.skip("SQLite stores integers of any size; the servers refuse this one")
    start, cdr = _start_and_cdr()
    huge = DbWrite("c1", cdr.seq, "cdr", {**cdr.fields, "duration_s": 2**40})

    with pytest.raises(DataError):
        _commit(db, [start, huge])

    assert Call.select().count(db) == 0  # nothing of the batch is committed


def _connection_id(database, kind: str) -> int:
    sql = "SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()"
    return database.execute_sql(sql).fetchone()[0]


def _waits_on_a_lock(watcher, kind: str, connection_id: int) -> bool:
    if kind == "postgresql":
        sql = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
        expected = "Lock"
    else:
        sql = "SELECT trx_state FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s"
        expected = "LOCK WAIT"
    row = watcher.execute_sql(sql, (connection_id,)).fetchone()
    return row is not None and row[0] == expected


def test_a_row_another_writer_creates_while_we_insert_it_still_gets_our_start_columns(backend, db):
    if backend.kind == "sqlite":
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises writers: no other insert can interleave")
    start, _ = _start_and_cdr()
    other, watcher = open_database(backend.url), open_database(backend.url)
    connection_ids: queue.Queue[int] = queue.Queue()
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def write_in_own_connection() -> None:
        writer_db = open_database(backend.url)
        try:
            writer_db.connect()
            connection_ids.put(_connection_id(writer_db, backend.kind))
            _commit(writer_db, [start])
            outcome.put(None)
        except BaseException as exc:  # handed to the test's thread, which re-raises it
            outcome.put(exc)
        finally:
            writer_db.close()

    with other.atomic():
        # The other writer's row, not committed yet: our insert waits for it, then
        # finds it there and skips it.
        Call.insert(uuid="c1").execute(other)
        thread = threading.Thread(target=write_in_own_connection, daemon=True)
        thread.start()
        connection_id = connection_ids.get(timeout=WAIT_S)
        eventually(lambda: _waits_on_a_lock(watcher, backend.kind, connection_id),
                   what="our insert to wait for the other writer's row")
    thread.join(WAIT_S)
    error = outcome.get(timeout=WAIT_S)
    other.close()
    watcher.close()

    assert error is None
    call = _row(db)
    assert (call.caller_id, call.caller_name, call.flow) == ("5551001", "Ann", "icall")


def test_a_statement_built_once_per_shape_writes_each_later_batch_with_its_own_values(backend, db, monkeypatch):
    """The SQL text of an insert is built by peewee for the first batch of its shape and
    reused: the second call's rows, written through it, hold the second call's values."""
    monkeypatch.setattr(records, "_SQL_BY_SHAPE", {})
    first, second = one_call(call_uuid="s1"), one_call(call_uuid="s2")
    second = [DbWrite(w.call_uuid, w.seq, w.kind, {**w.fields, "caller_id": "5552002"}
                      if w.kind in ("call", "cdr") else w.fields) for w in second]
    _commit(db, first, known=KnownCalls())
    shapes = dict(records._SQL_BY_SHAPE)
    assert shapes, "the first batch's statements were kept"
    _commit(db, second, known=KnownCalls())
    assert records._SQL_BY_SHAPE == shapes, "the second batch reused them all"
    assert (_row(db, "s1").caller_id, _row(db, "s2").caller_id) == ("5551001", "5552002")
    steps = CallStep.select().where(CallStep.call_uuid == "s2").order_by(CallStep.seq)
    assert [(s.step, s.value) for s in steps.execute(db)] == [(f"Step{n}", str(n)) for n in range(5)]
    assert CdrOutbox.select().where(CdrOutbox.call_uuid == "s2").count(db) == 1
