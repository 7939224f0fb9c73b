"""DbWriter past its in-memory bound: the oldest writes move to the spool on local disk,
are acknowledged there and reach the database once it is back; nothing is refused
while the spool works, nothing is lost when the writer stops. And a database failing
for its own reasons (a key generator at its limit) delays writes, never drops them."""

from __future__ import annotations

import logging

import pytest

from actors.db_writer import DbWriter
from service.workers import worker_config
from storage.models import Call, CallStep, CdrOutbox, FifoEvent
from storage.spool import Spool, adopt_orphans, worker_spool_path
from tests.storage.conftest import WAIT_S, AckCollector, eventually, make_config, writer_stats
from tests.storage.helpers import one_call

WRITES_PER_CALL = 8  # one_call: call, 5 steps, fifo, cdr


def _send(writer, writes) -> None:
    for write in writes:
        writer.tell(write)


def _acks(collector) -> int:
    return len(set(collector.proxy().acks.get(timeout=WAIT_S)))


def _assert_every_row_once(db, calls: int) -> None:
    assert Call.select().count(db) == calls
    assert CallStep.select().count(db) == calls * 5
    assert FifoEvent.select().count(db) == calls
    assert CdrOutbox.select().count(db) == calls


def test_past_backlog_max_the_oldest_writes_move_to_the_spool_acknowledged_and_all_arrive(
        backend, db, outage, caplog):
    calls = 30
    collector = AckCollector.start(expected=calls * WRITES_PER_CALL)
    writes = [w for n in range(calls) for w in one_call(collector, call_uuid=f"s{n}")]
    writer = DbWriter.start(make_config(outage.url, backlog_max=100, batch_size=50))
    outage.cut()

    with caplog.at_level(logging.WARNING, logger="actors.db_writer"):
        _send(writer, writes)
        stats = writer_stats(writer)

    assert stats["pending"] <= 100, "the in-memory backlog grew past backlog_max"
    assert stats["spilled"] >= len(writes) - 100 and stats["spooled"] == stats["spilled"]
    assert stats["pending"] + stats["spilled"] == len(writes) and stats["refused"] == 0
    eventually(lambda: _acks(collector) == stats["spilled"], what="the spooled writes' acks")
    assert "moving the oldest writes to the spool" in caplog.text
    assert Call.select().count(db) == 0  # nothing went through

    outage.restore()
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    eventually(lambda: writer_stats(writer)["spooled"] == 0, what="the spool to drain")
    _assert_every_row_once(db, calls)
    stats = writer_stats(writer)
    assert stats["drained"] == stats["spilled"] and stats["rejected"] == 0


def test_a_writer_stopped_while_the_database_is_away_spools_its_backlog_for_the_next_one(
        backend, db, outage):
    calls = 5
    collector = AckCollector.start(expected=calls * WRITES_PER_CALL)
    config = make_config(outage.url)
    outage.cut()
    first = DbWriter.start(config)
    _send(first, [w for n in range(calls) for w in one_call(collector, call_uuid=f"st{n}")])
    eventually(lambda: writer_stats(first)["retries"] >= 1, what="the writer to meet the outage")

    first.stop(block=True, timeout=WAIT_S)

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)  # acked: on disk
    spool = Spool(config.database.spool_path)
    assert spool.count() == calls * WRITES_PER_CALL
    spool.close()
    outage.restore()
    second = DbWriter.start(config)
    eventually(lambda: writer_stats(second)["spooled"] == 0, what="the next writer to drain the spool")
    _assert_every_row_once(db, calls)


def test_a_spool_that_cannot_be_written_refuses_steps_and_keeps_calls_and_cdrs_in_memory(
        backend, db, outage, tmp_path, caplog):
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    steps = [w for n in range(30) for w in one_call(call_uuid=f"b{n}") if w.kind == "step"]
    cdrs = [w for w in one_call(call_uuid="b-cdr") if w.kind == "cdr"]
    writer = DbWriter.start(make_config(outage.url, backlog_max=100,
                                        spool_path=str(not_a_directory / "spool.sqlite3")))
    outage.cut()

    with caplog.at_level(logging.WARNING, logger="actors.db_writer"):
        _send(writer, steps + cdrs)  # 150 steps, then a CDR, over a bound of 100
        stats = writer_stats(writer)

    assert stats["pending"] == 101 and stats["refused"] == 50 and stats["spilled"] == 0
    assert "backlog at 80 of backlog_max 100" in caplog.text
    assert "cannot write the spool" in caplog.text and "backlog full" in caplog.text
    outage.restore()
    eventually(lambda: writer_stats(writer)["written"] == 101, what="the backlog to drain")
    assert CallStep.select().count(db) == 100
    assert CdrOutbox.select().count(db) == 1


def _exhaust_call_steps_key(db, kind: str) -> None:
    """Put call_steps' key generator at the top of its (64-bit) range."""
    if kind == "postgresql":
        db.execute_sql("SELECT setval(pg_get_serial_sequence('call_steps', 'id'), 9223372036854775807)")
    else:
        db.execute_sql("ALTER TABLE call_steps AUTO_INCREMENT = 9223372036854775807")
        CallStep.insert(call_uuid="takes-the-last-id", seq=1, step="x").execute(db)


def _free_call_steps_key(db, kind: str) -> None:
    if kind == "postgresql":
        db.execute_sql("ALTER SEQUENCE call_steps_id_seq RESTART WITH 1000000")
    else:
        CallStep.delete().where(CallStep.call_uuid == "takes-the-last-id").execute(db)
        db.execute_sql("ALTER TABLE call_steps AUTO_INCREMENT = 1000000")


def test_a_key_generator_at_its_limit_delays_the_writes_and_never_acknowledges_them_as_done(
        backend, db):
    if backend.kind == "sqlite":
        pytest.skip("SQLite's keys are rowids: no generator to run out")
    _exhaust_call_steps_key(db, backend.kind)
    collector = AckCollector.start(expected=WRITES_PER_CALL)
    writer = DbWriter.start(make_config(backend.url))

    _send(writer, one_call(collector, call_uuid="at-the-limit"))
    eventually(lambda: writer_stats(writer)["retries"] >= 2, what="the writer to retry")

    stats = writer_stats(writer)
    assert _acks(collector) == 0 and stats["rejected"] == 0 and stats["pending"] == WRITES_PER_CALL
    _free_call_steps_key(db, backend.kind)
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert CallStep.select().where(CallStep.call_uuid == "at-the-limit").count(db) == 5


def test_each_worker_spools_to_a_file_of_its_own_counts_it_true_and_its_successor_replays_it(
        backend, db, outage):
    calls = 20
    base = make_config(outage.url, backlog_max=100, batch_size=50)
    configs = [worker_config(base, k) for k in (0, 1)]
    assert configs[0].database.spool_path == base.database.spool_path
    assert configs[1].database.spool_path != base.database.spool_path
    collector = AckCollector.start(expected=2 * calls * WRITES_PER_CALL)
    outage.cut()
    writers = [DbWriter.start(config) for config in configs]
    for k, writer in enumerate(writers):
        _send(writer, [w for n in range(calls) for w in one_call(collector, call_uuid=f"w{k}-{n}")])

    for writer, config in zip(writers, configs, strict=True):
        stats = writer_stats(writer)
        assert stats["spilled"] > 0
        on_disk = Spool(config.database.spool_path)
        assert stats["spooled"] == stats["spilled"] == on_disk.count()  # icall_db_spooled is true
        on_disk.close()
    writers[1].stop(block=True, timeout=WAIT_S)  # the worker goes; what it held is on disk

    outage.restore()
    successor = DbWriter.start(worker_config(base, 1))  # as the restarted worker builds it
    eventually(lambda: writer_stats(successor)["spooled"] == 0, what="the successor to replay its spool")
    eventually(lambda: writer_stats(writers[0])["spooled"] == 0, what="worker 0 to drain its spool")
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    _assert_every_row_once(db, 2 * calls)


def test_spools_of_workers_that_no_longer_run_are_moved_into_the_first_ones_at_start(tmp_path):
    base = str(tmp_path / "icall-spool.sqlite3")
    for worker, calls in ((1, 2), (2, 3)):  # [service] workers was 3, is 2 now
        spool = Spool(worker_spool_path(base, worker))
        spool.add([(w.call_uuid, w.seq, w.kind, w.fields)
                   for n in range(calls) for w in one_call(call_uuid=f"o{worker}-{n}")])
        spool.close()

    assert adopt_orphans(base, workers=2) == 3 * WRITES_PER_CALL
    first, second = Spool(base), Spool(worker_spool_path(base, 1))
    assert first.count() == 3 * WRITES_PER_CALL and second.count() == 2 * WRITES_PER_CALL
    assert {w.call_uuid for w in first.oldest(100)} == {"o2-0", "o2-1", "o2-2"}
    first.close()
    second.close()
    assert not list(tmp_path.glob("icall-spool.worker2*"))
    assert adopt_orphans(base, workers=1) == 2 * WRITES_PER_CALL  # down to one process
    assert not list(tmp_path.glob("icall-spool.worker*"))
