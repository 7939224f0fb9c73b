"""Who may write a call's end (storage.records): the claim a process holds on a call, a
"hangup not seen" CDR that must not win over the real one, and the close of a row an
earlier process left open."""

from __future__ import annotations

import json
from datetime import timedelta

from actors.messages import DbWrite
from ivr.flow import LOST_HANGUP_CAUSE, UNSEEN_HANGUP_CAUSE
from ivr.socket_calls import SOCKET_LOST_CAUSE
from storage.models import Call, CdrOutbox, utc_from_epoch, utc_now
from storage.records import (
    ENDED_UNSEEN_CAUSE,
    UNSEEN_CDR_HOLD_S,
    commit_batch,
    hangup_seen,
    prepare,
)
from tests.storage.helpers import STARTED, one_call

LOSER, HOLDER = "node#1#aaaa", "node#2#bbbb"


def _commit(db, claim: str, *writes: DbWrite) -> None:
    commit_batch(db, [prepare(w.call_uuid, w.seq, w.kind, w.fields, "node", claim) for w in writes])


def _start_and_cdr(call_uuid: str) -> tuple[DbWrite, DbWrite]:
    writes = one_call(call_uuid=call_uuid, steps=0)
    return writes[0], writes[-1]


def _unseen(cdr: DbWrite, cause: str = SOCKET_LOST_CAUSE) -> DbWrite:
    fields = {**cdr.fields, "hangup_cause": cause, "ended_at": None, "answered_at": None}
    return DbWrite(cdr.call_uuid, cdr.seq, "cdr", fields)


def _claim(call_uuid: str) -> DbWrite:
    return DbWrite(call_uuid, 800_000, "claim", {"uuid": call_uuid})


def _outbox(db, call_uuid: str) -> list[dict]:
    return [json.loads(row.payload) for row in
            CdrOutbox.select().where(CdrOutbox.call_uuid == call_uuid).execute(db)]


def _row(db, call_uuid: str) -> Call:
    return Call.select().where(Call.uuid == call_uuid).get(db)


def test_every_cause_icall_writes_for_an_end_it_did_not_see_is_told_from_the_switchs():
    for cause in (LOST_HANGUP_CAUSE, UNSEEN_HANGUP_CAUSE, SOCKET_LOST_CAUSE, ENDED_UNSEEN_CAUSE):
        assert not hangup_seen(cause), cause
    assert hangup_seen("NORMAL_CLEARING") and hangup_seen("ORIGINATOR_CANCEL")


def test_a_start_record_claims_the_call_and_a_take_over_claims_it_from_the_first_process(db):
    start, _ = _start_and_cdr("c1")
    _commit(db, LOSER, start)
    assert _row(db, "c1").claimed_by == LOSER
    _commit(db, HOLDER, _claim("c1"))
    _commit(db, LOSER, start)  # a repeated start record takes nothing back
    assert _row(db, "c1").claimed_by == HOLDER


def test_a_process_that_lost_the_call_never_writes_its_unseen_end(db):
    start, cdr = _start_and_cdr("c1")
    _commit(db, LOSER, start)
    _commit(db, HOLDER, _claim("c1"))

    _commit(db, LOSER, _unseen(cdr))  # the loser's grace ran out first

    assert _row(db, "c1").hangup_cause is None
    assert _outbox(db, "c1") == []
    _commit(db, HOLDER, cdr)
    assert _row(db, "c1").hangup_cause == "NORMAL_CLEARING"
    assert [c["hangup_cause"] for c in _outbox(db, "c1")] == ["NORMAL_CLEARING"]


def test_the_holder_writes_its_unseen_end_but_never_over_an_end_already_there(db):
    start, cdr = _start_and_cdr("c1")
    _commit(db, HOLDER, start)
    _commit(db, HOLDER, _unseen(cdr))
    assert _row(db, "c1").hangup_cause == SOCKET_LOST_CAUSE

    start2, cdr2 = _start_and_cdr("c2")
    _commit(db, HOLDER, start2, cdr2)
    _commit(db, HOLDER, _unseen(cdr2, LOST_HANGUP_CAUSE))  # late: the real one is there
    assert _row(db, "c2").hangup_cause == "NORMAL_CLEARING"
    assert [c["hangup_cause"] for c in _outbox(db, "c2")] == ["NORMAL_CLEARING"]


def test_a_seen_cdr_replaces_an_unseen_one_still_waiting_in_the_outbox_but_not_one_delivered(db):
    for call_uuid in ("waiting", "delivered"):
        start, cdr = _start_and_cdr(call_uuid)
        _commit(db, LOSER, start, _unseen(cdr))
    CdrOutbox.update(delivered_at=utc_now()).where(CdrOutbox.call_uuid == "delivered").execute(db)

    for call_uuid in ("waiting", "delivered"):
        _commit(db, HOLDER, _start_and_cdr(call_uuid)[1])

    assert [c["hangup_cause"] for c in _outbox(db, "waiting")] == ["NORMAL_CLEARING"]
    assert [c["hangup_cause"] for c in _outbox(db, "delivered")] == [SOCKET_LOST_CAUSE]
    assert _row(db, "delivered").hangup_cause == "NORMAL_CLEARING"  # the row tells the truth


def test_a_close_fills_only_the_empty_end_columns_and_queues_a_cdr_built_from_the_row(db):
    start, _ = _start_and_cdr("open")
    _commit(db, LOSER, start)
    Call.update(path='["welcome","main_menu"]').where(Call.uuid == "open").execute(db)
    seen_gone_at = STARTED + 300

    _commit(db, HOLDER, DbWrite("open", 900_000, "close", {"uuid": "open", "at": seen_gone_at}))

    row = _row(db, "open")
    assert (row.hangup_cause, row.ended_at) == (ENDED_UNSEEN_CAUSE, utc_from_epoch(seen_gone_at))
    assert row.path == '["welcome","main_menu"]' and row.caller_id == "5551001"
    [cdr] = _outbox(db, "open")
    assert (cdr["uuid"], cdr["hangup_cause"], cdr["path"], cdr["node"]) == (
        "open", ENDED_UNSEEN_CAUSE, ["welcome", "main_menu"], "node")
    assert cdr["ended_at"] == seen_gone_at and cdr["started_at"] == STARTED


def test_a_close_never_touches_a_call_that_has_its_cdr(db):
    start, cdr = _start_and_cdr("ended")
    _commit(db, LOSER, start, cdr)
    before = _row(db, "ended")

    _commit(db, HOLDER, DbWrite("ended", 900_000, "close", {"uuid": "ended", "at": STARTED + 300}))

    after = _row(db, "ended")
    assert (after.hangup_cause, after.ended_at, after.path) == (before.hangup_cause, before.ended_at, before.path)
    assert [c["hangup_cause"] for c in _outbox(db, "ended")] == ["NORMAL_CLEARING"]


def test_an_unseen_cdr_waits_in_the_outbox_a_little_for_the_real_one_a_seen_one_is_due_at_once(db):
    start, cdr = _start_and_cdr("unseen")
    before = utc_now()
    _commit(db, LOSER, start, _unseen(cdr))
    start2, cdr2 = _start_and_cdr("seen")
    _commit(db, HOLDER, start2, cdr2)
    due = {row.call_uuid: row.next_attempt_at for row in CdrOutbox.select().execute(db)}
    assert due["unseen"] >= before + timedelta(seconds=UNSEEN_CDR_HOLD_S)
    assert due["seen"] <= utc_now()
