"""DbWriter on every backend: rows, acks after commit, idempotency, bad writes."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime

import pykka
import pytest

from actors.db_writer import DbWriter
from actors.messages import CdrQueued, DbWrite
from storage.db import open_database
from storage.migrations import upgrade
from storage.models import Call, CallFailure, CallStep, CdrOutbox, FifoEvent
from tests.storage.conftest import WAIT_S, AckCollector, eventually, make_config, writer_stats
from tests.storage.helpers import STARTED, one_call


def _send(writer, writes) -> None:
    for write in writes:
        writer.tell(write)


def test_one_call_is_stored_with_every_field_and_every_write_is_acknowledged(backend, db):
    collector = AckCollector.start(expected=8)
    writes = one_call(collector)
    u = writes[0].call_uuid
    writer = DbWriter.start(make_config(backend.url))

    _send(writer, writes)

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    call = Call.select().where(Call.uuid == u).get(db)
    assert (call.caller_id, call.caller_name, call.destination, call.flow) == ("5551001", "Ann", "100", "icall")
    assert call.started_at == datetime(2025, 12, 25, 10, 0, 0, 123456)  # microseconds kept
    assert (call.duration_s, call.billsec_s, call.hangup_cause) == (61, 60, "NORMAL_CLEARING")
    assert (call.final_state, call.crm_extension) == ("final_loop", "801")
    assert json.loads(call.path) == ["welcome", "main_menu", "call_sales"]
    steps = list(CallStep.select().where(CallStep.call_uuid == u).order_by(CallStep.seq).execute(db))
    assert [(s.seq, s.step, s.value) for s in steps] == [(2 + n, f"Step{n}", str(n)) for n in range(5)]
    fifo = FifoEvent.select().where(FifoEvent.call_uuid == u).get(db)
    assert (fifo.action, fifo.fifo_name) == ("bridge-caller-start", "fifo_sales")
    assert json.loads(fifo.headers) == {"FIFO-Action": "bridge-caller-start"}
    outbox = CdrOutbox.select().where(CdrOutbox.call_uuid == u).get(db)
    assert json.loads(outbox.payload)["billsec_s"] == 60
    assert (outbox.attempts, outbox.delivered_at) == (0, None)
    assert writer_stats(writer)["written"] == 8


def test_without_a_cdr_url_the_cdr_is_kept_in_calls_and_no_outbox_row_waits(backend, db):
    collector = AckCollector.start(expected=8)
    writes = one_call(collector)
    u = writes[0].call_uuid
    writer = DbWriter.start(make_config(backend.url, cdr_url=""))

    _send(writer, writes)

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert Call.select().where(Call.uuid == u).get(db).billsec_s == 60
    assert CdrOutbox.select().where(CdrOutbox.call_uuid == u).count(db) == 0


def test_the_same_writes_delivered_twice_leave_one_row_each_and_are_acked_twice(backend, db):
    collector = AckCollector.start(expected=8)
    writes = one_call(collector)
    u = writes[0].call_uuid
    writer = DbWriter.start(make_config(backend.url))

    _send(writer, writes)
    _send(writer, writes)  # a resend after a retry, or to a replaced writer
    second = DbWriter.start(make_config(backend.url))
    _send(second, writes)

    eventually(lambda: len(collector.proxy().acks.get(timeout=WAIT_S)) == 24, what="24 acks")
    assert Call.select().where(Call.uuid == u).count(db) == 1
    assert CallStep.select().where(CallStep.call_uuid == u).count(db) == 5
    assert FifoEvent.select().where(FifoEvent.call_uuid == u).count(db) == 1
    assert CdrOutbox.select().where(CdrOutbox.call_uuid == u).count(db) == 1


def test_a_late_call_record_does_not_erase_what_the_cdr_wrote(backend, db):
    collector = AckCollector.start(expected=2)
    writes = one_call(collector)
    u = writes[0].call_uuid
    late_start = DbWrite(u, 1, "call", {"uuid": u, "caller_id": "other", "started_at": STARTED + 999},
                         collector)
    writer = DbWriter.start(make_config(backend.url))

    _send(writer, [writes[-1], late_start])

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    call = Call.select().where(Call.uuid == u).get(db)
    assert call.caller_id == "5551001" and call.billsec_s == 60
    assert call.started_at == datetime(2025, 12, 25, 10, 0, 0, 123456)


def test_a_step_for_a_call_whose_row_was_lost_creates_the_call_row(backend, db):
    collector = AckCollector.start(expected=2)
    writer = DbWriter.start(make_config(backend.url))

    _send(writer, [DbWrite("orphan", 7, "step", {"step": "MainMenu", "value": "2"}, collector),
                   DbWrite("orphan", 8, "failure", {"state": "call_cc", "error": "boom"}, collector)])

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert Call.select().where(Call.uuid == "orphan").count(db) == 1
    assert CallStep.select().where(CallStep.call_uuid == "orphan").get(db).step == "MainMenu"
    failure = CallFailure.select().where(CallFailure.call_uuid == "orphan").get(db)
    assert (failure.seq, failure.state, failure.error) == (8, "call_cc", "boom")


def test_each_ack_arrives_only_when_another_connection_can_already_see_the_row(backend, db):
    reader = open_database(backend.url)  # used by the collector's thread only

    def visible(ack) -> bool:
        reader.connect(reuse_if_open=True)
        return all(CallStep.select().where((CallStep.call_uuid == ack.call_uuid)
                                           & (CallStep.seq == seq)).exists(reader)
                   for seq in ack.seqs)

    writes = [w for n in range(20) for w in one_call(call_uuid=f"c{n}") if w.kind == "step"]
    collector = AckCollector.start(expected=len(writes), on_ack=visible)
    writes = [DbWrite(w.call_uuid, w.seq, w.kind, w.fields, collector) for w in writes]
    writer = DbWriter.start(make_config(backend.url, batch_size=7))

    _send(writer, writes)

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    observed = collector.proxy().observed.get(timeout=WAIT_S)
    assert observed and all(observed)  # an ack per call and commit, each already visible
    collector.stop()
    reader.close()


def test_malformed_writes_are_rejected_and_acked_while_the_rest_is_written(backend, db, caplog):
    collector = AckCollector.start(expected=3)
    writer = DbWriter.start(make_config(backend.url))

    with caplog.at_level(logging.ERROR, logger="actors.db_writer"):
        _send(writer, [DbWrite("bad", 1, "step", {"value": "no step name"}, collector),
                       DbWrite("bad", 2, "teleport", {}, collector),
                       DbWrite("good", 1, "step", {"step": "MainMenu"}, collector)])
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)

    assert CallStep.select().where(CallStep.call_uuid == "good").count(db) == 1
    assert CallStep.select().where(CallStep.call_uuid == "bad").count(db) == 0
    assert writer_stats(writer)["rejected"] == 2
    assert "unknown record kind 'teleport'" in caplog.text


def test_a_value_the_database_refuses_costs_only_its_own_write(backend, db, caplog):
    if backend.kind == "sqlite":
        pytest.skip("SQLite stores integers of any size; the servers refuse this one")
    collector = AckCollector.start(expected=3)
    writer = DbWriter.start(make_config(backend.url))

    with caplog.at_level(logging.ERROR, logger="actors.db_writer"):
        _send(writer, [DbWrite("v", 1, "step", {"step": "A"}, collector),
                       DbWrite("v", 2**40, "step", {"step": "too big a seq"}, collector),
                       DbWrite("v", 3, "step", {"step": "C"}, collector)])
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)

    rows = CallStep.select().where(CallStep.call_uuid == "v").order_by(CallStep.seq).execute(db)
    assert [r.step for r in rows] == ["A", "C"]
    assert writer_stats(writer)["rejected"] == 1
    assert "cannot be stored" in caplog.text


def test_stopping_the_writer_writes_what_is_still_in_its_mailbox(backend, db):
    writer = DbWriter.start(make_config(backend.url, batch_size=5))
    writes = [w for n in range(30) for w in one_call(call_uuid=f"s{n}")]

    _send(writer, writes)
    writer.stop(timeout=WAIT_S)

    assert CallStep.select().count(db) == 30 * 5
    assert CdrOutbox.select().count(db) == 30


def test_a_committed_cdr_pokes_the_cdr_poster(backend, db):
    poked = threading.Event()

    class CdrPoster(pykka.ThreadingActor):  # found by class name, as the real one
        def on_receive(self, message):
            if isinstance(message, CdrQueued):
                poked.set()

    CdrPoster.start()
    writer = DbWriter.start(make_config(backend.url))

    _send(writer, one_call())

    assert poked.wait(WAIT_S)
    assert writer_stats(writer)["written"] == 8


def test_a_replaced_cdr_poster_is_found_and_poked_and_without_a_cdr_url_none_is(backend, db):
    pokes: list[str] = []
    poked = threading.Semaphore(0)

    class CdrPoster(pykka.ThreadingActor):  # found by class name, as the real one
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_receive(self, message):
            if isinstance(message, CdrQueued):
                pokes.append(self.name)
                poked.release()

    first = CdrPoster.start("first")
    writer = DbWriter.start(make_config(backend.url))
    _send(writer, one_call())
    assert poked.acquire(timeout=WAIT_S)
    first.stop()
    second = CdrPoster.start("second")
    _send(writer, one_call())
    assert poked.acquire(timeout=WAIT_S)
    assert pokes == ["first", "second"]
    writer.stop(timeout=WAIT_S)

    quiet = DbWriter.start(make_config(backend.url, cdr_url=""))
    _send(quiet, one_call())
    eventually(lambda: writer_stats(quiet)["written"] == 8, what="the third call's rows")
    # The stats answer came after the commit and any poke it made; a message told to
    # the poster now queues behind such a poke.
    second.ask("after the commit", timeout=WAIT_S)
    assert pokes == ["first", "second"]


def test_a_database_without_schema_delays_writes_until_it_is_upgraded(backend):
    collector = AckCollector.start(expected=8)
    writer = DbWriter.start(make_config(backend.url))
    _send(writer, one_call(collector))

    eventually(lambda: writer_stats(writer)["retries"] >= 2, what="the writer to retry")
    stats = writer_stats(writer)
    assert stats["pending"] == 8 and "db upgrade" in stats["last_error"]
    assert collector.proxy().acks.get(timeout=WAIT_S) == []
    db = open_database(backend.url)
    with db.connection_context():
        upgrade(db)

    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)
    assert writer_stats(writer)["pending"] == 0


def test_a_refused_write_is_logged_without_its_personal_data_unless_at_debug(backend, db, caplog):
    collector = AckCollector.start(expected=1)
    writer = DbWriter.start(make_config(backend.url))
    # The caller id landed in a numeric column: the error quotes the value it refused.
    bad = DbWrite("pii", 9, "cdr", {"caller_id": "5551234", "caller_name": "Ann Example",
                                    "duration_s": "5551234 s"}, collector)

    with caplog.at_level(logging.DEBUG, logger="actors.db_writer"):
        writer.tell(bad)
        assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S)

    assert writer_stats(writer)["rejected"] == 1
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("cdr write of call pii (seq 9, fields caller_id, caller_name, duration_s)" in line
               and "could not convert string to float: '<value>'" in line for line in loud), loud
    assert [line for line in loud if "5551234" in line or "Ann Example" in line] == []
    quiet = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "Ann Example" in quiet, "DEBUG keeps the whole write for troubleshooting"


def test_the_calls_left_open_are_this_nodes_own_never_another_nodes_live_ones(backend, db):
    # Several icalls share the database: at start, a node closes the calls it left
    # open, and must not take another node's live calls (on another switch) for those.
    for uuid, node, cause in (("a-open", "pbx-a", None), ("b-open", "pbx-b", None),
                              ("from-before-nodes", None, None), ("a-ended", "pbx-a", "NORMAL_CLEARING")):
        Call.insert(uuid=uuid, node=node, hangup_cause=cause).execute(db)
    writer = DbWriter.start(make_config(backend.url, node="pbx-a"))

    rows = writer.proxy().unended_calls().get(timeout=WAIT_S)

    assert sorted(row["uuid"] for row in rows) == ["a-open", "from-before-nodes"]


def test_a_call_row_and_steps_wait_to_share_a_commit_while_a_cdr_is_committed_at_once_with_them(backend, db):
    """A killed process loses what waits for its commit; a CDR and a failure record
    never wait (a call's row and its steps also ride in the checkpoint on the channel)."""
    writes = one_call()
    call, step, cdr = writes[0], writes[1], writes[-1]
    collector = AckCollector.start(expected=3)
    writer = DbWriter.start(make_config(backend.url, commit_interval_ms="5000"))
    for write in (call, step):
        writer.tell(DbWrite(write.call_uuid, write.seq, write.kind, write.fields, collector))
    assert not collector.proxy().all_in.get(timeout=WAIT_S).wait(0.5)  # still gathering
    assert collector.proxy().acks.get(timeout=WAIT_S) == []
    writer.tell(DbWrite(cdr.call_uuid, cdr.seq, cdr.kind, cdr.fields, collector))
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S), "the CDR waited"
    assert sorted(collector.proxy().acks.get(timeout=WAIT_S)) == [
        (call.call_uuid, call.seq), (call.call_uuid, step.seq), (call.call_uuid, cdr.seq)]
    writer.stop()
    collector.stop()


def test_a_gather_called_off_by_an_urgent_write_leaves_later_writes_gathered_and_committed(backend, db):
    # The wait that an urgent write cut short still fires later; it must neither be
    # lost for the next gather nor strand the writes that arrive after it.
    writes = one_call()
    call, first_step, second_step = writes[-1], writes[1], writes[2]  # `call`: its CDR
    collector = AckCollector.start(expected=3)
    writer = DbWriter.start(make_config(backend.url, commit_interval_ms="300"))
    for write in (first_step, call):
        writer.tell(DbWrite(write.call_uuid, write.seq, write.kind, write.fields, collector))
    eventually(lambda: len(collector.proxy().acks.get(timeout=WAIT_S)) == 2, what="the urgent commit")
    writer.tell(DbWrite(second_step.call_uuid, second_step.seq, second_step.kind, second_step.fields,
                        collector))
    assert collector.proxy().all_in.get(timeout=WAIT_S).wait(WAIT_S), "the later step was never committed"
    assert sorted(collector.proxy().acks.get(timeout=WAIT_S)) == sorted([
        (call.call_uuid, call.seq), (call.call_uuid, first_step.seq), (call.call_uuid, second_step.seq)])
    assert not [t for t in threading.enumerate() if t.name.startswith("DbWriter-gather")]
    writer.stop()
    collector.stop()
