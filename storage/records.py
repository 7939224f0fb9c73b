"""How each Record kind (ivr.effects) becomes rows, and how a batch is committed.

Every write is idempotent, so a write delivered twice (a resend after a retry, a
writer restarted mid-call) leaves the same rows as one delivery:
  call     the calls row by uuid; fills only columns still empty, so a late or
           repeated start record never erases what the CDR wrote
  cdr      the calls row by uuid, CDR columns overwritten; plus its cdr_outbox row,
           insert-or-ignore by call uuid, in the same transaction. A CDR whose
           hangup was seen replaces an undelivered, unclaimed outbox row holding a
           "hangup not seen" one (that process lost track of the call, this one saw
           its end); such a row is due only UNSEEN_CDR_HOLD_S after it is queued
  claim    calls.claimed_by set to the writing process (a worker or node that takes
           a call over); a "hangup not seen" CDR (cause `UNKNOWN (...`) is written
           only while its process holds the claim and the row has no end yet, so a
           process that lost the call to another never writes its end
  close    a call that ended while no icall watched it: only the end columns still
           empty are filled (ended_at: when icall saw the channel gone, and the
           cause), never the path or a CDR already there; its outbox row is built
           from the row, insert-or-ignore
  step / fifo / failure   insert-or-ignore by (call uuid, seq)
Any write may be the first one seen for its call (its "call" record lost with a
replaced writer): the calls row is created if missing, unless the writer's KnownCalls
says it wrote that row already.

`claim` (the writer's process: node#pid#start token) goes on the calls row with the
start record (if the row has none) and with a claim record. `node` (the writer's
`[service] node`) goes on the calls row (filled by a start
record or a write that creates the row, set by the CDR), on the outbox row and into
the CDR sent to the endpoint, so that with several icalls on one database each call
says which switch it was on.

Thread-free: `commit_batch` runs on the caller's thread and connection.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from peewee import Case, CharField, Database, MySQLDatabase, chunked, fn

from storage.db import write_transaction
from storage.models import (
    Call,
    CallFailure,
    CallStep,
    CdrOutbox,
    FifoEvent,
    to_json,
    utc_from_epoch,
    utc_now,
)

# Rows (or calls) per statement. The largest, a chunk of CDR rows, binds 1,400
# parameters: under every backend's limit (SQLite since 3.32: 32,766; the servers: 65,535).
INSERT_CHUNK = 100
# Calls whose row a writer remembers having written: more than the calls alive at once
# (3,000 at the capacity goal), each a short string.
KNOWN_CALLS_LIMIT = 20_000

CALL_START_COLUMNS = ("caller_id", "caller_name", "destination", "flow", "started_at")
CDR_COLUMNS = (
    "caller_id", "caller_name", "destination", "started_at", "answered_at", "ended_at",
    "duration_s", "billsec_s", "hangup_cause", "final_state", "crm_extension", "path",
)
# Columns a start record fills where empty, and those a CDR or a claim overwrites.
_FILLED_COLUMNS = (*CALL_START_COLUMNS, "claimed_by")
_OVERWRITTEN_COLUMNS = (*CDR_COLUMNS, "node", "claimed_by")
# Every cause icall writes for an end it did not see starts so (ivr.flow's
# LOST_HANGUP_CAUSE and UNSEEN_HANGUP_CAUSE, ivr.socket_calls' SOCKET_LOST_CAUSE, and
# ENDED_UNSEEN_CAUSE below); FreeSWITCH's causes are single upper-case words.
UNSEEN_CAUSE_PREFIX = "UNKNOWN ("
# The cause of a close record: the call ended while no icall watched it.
ENDED_UNSEEN_CAUSE = "UNKNOWN (ended while icall was down)"
# A CDR of an end not seen is posted this long after it is queued, not at once: the
# process that saw the end (a claim that came late) has that long to replace it.
UNSEEN_CDR_HOLD_S = 5.0
_TIME_COLUMNS = {"started_at", "answered_at", "ended_at"}
_INT_COLUMNS = {"duration_s", "billsec_s"}


class BadRecord(ValueError):
    """A write whose fields cannot become a row; retrying will not help."""


@dataclass
class Prepared:
    """One write turned into rows, ready for `commit_batch`."""

    call_uuid: str
    seq: int
    kind: str
    row: dict[str, Any] | None = None  # for the kind's own table
    call_columns: dict[str, Any] = field(default_factory=dict)
    outbox: dict[str, Any] | None = None
    node: str | None = None
    # A CDR of an end not seen, or a close: written only on the conditions above;
    # `claim` is the writing process's (None: no claim is checked).
    unseen_end: bool = False
    claim: str | None = None
    close: dict[str, Any] = field(default_factory=dict)  # a close record's end columns


def hangup_seen(cause: Any) -> bool:
    """Whether a CDR's cause is one the switch reported (not icall's `UNKNOWN (...)`)."""
    return not str(cause or "").startswith(UNSEEN_CAUSE_PREFIX)


def _clip(model_field, value: Any) -> Any:
    """Text cut to the column's width: an over-long caller name must not cost the row."""
    if value is None:
        return None
    if isinstance(model_field, CharField):
        return str(value)[: model_field.max_length]
    return value


def _epoch(fields: dict[str, Any], name: str):
    value = fields.get(name)
    return utc_from_epoch(value) if value not in (None, "") else None


def _call_value(name: str, value: Any) -> Any:
    if value in (None, ""):
        return None
    if name in _TIME_COLUMNS:
        return utc_from_epoch(value)
    if name in _INT_COLUMNS:
        return int(round(float(value)))
    if name == "path":
        return to_json(list(value))
    return _clip(getattr(Call, name), value)


def prepare(call_uuid: str, seq: int, kind: str, fields: dict[str, Any],
            node: str | None = None, claim: str | None = None) -> Prepared:
    """Rows for one write, recorded as taken by `node` in the process `claim`; raises
    BadRecord if they cannot be built."""
    try:
        prepared = _prepare(call_uuid, seq, kind, fields, _clip(Call.node, node))
        _add_claim(prepared, fields, _clip(Call.claimed_by, claim))
        return prepared
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
        raise BadRecord(f"{kind} record {call_uuid}/{seq}: {type(exc).__name__}: {exc}") from None


def _prepare(call_uuid: str, seq: int, kind: str, fields: dict[str, Any], node: str | None) -> Prepared:
    if not call_uuid:
        raise ValueError("no call uuid")
    prepared = Prepared(call_uuid, int(seq), kind, node=node)
    at = _epoch(fields, "at") or utc_now()
    if kind == "call":
        prepared.call_columns = {n: _call_value(n, fields.get(n)) for n in CALL_START_COLUMNS}
        prepared.call_columns["node"] = node
    elif kind == "cdr":
        prepared.call_columns = {n: _call_value(n, fields.get(n)) for n in CDR_COLUMNS}
        prepared.call_columns["node"] = node
        now = utc_now()
        payload = {**fields, "node": node} if node else fields
        due = now if hangup_seen(fields.get("hangup_cause")) else now + timedelta(seconds=UNSEEN_CDR_HOLD_S)
        prepared.outbox = {
            "call_uuid": call_uuid, "payload": to_json(payload), "created_at": now,
            "attempts": 0, "next_attempt_at": due, "node": node,
        }
    elif kind == "step":
        prepared.row = {
            "call_uuid": call_uuid, "seq": prepared.seq, "at": at,
            "step": _clip(CallStep.step, fields["step"]),
            "value": None if fields.get("value") is None else str(fields["value"]),
        }
    elif kind == "fifo":
        prepared.row = {
            "call_uuid": call_uuid, "seq": prepared.seq, "at": at,
            "action": _clip(FifoEvent.action, fields["action"]),
            "fifo_name": _clip(FifoEvent.fifo_name, fields.get("fifo_name")),
            "headers": to_json(dict(fields.get("headers") or {})),
        }
    elif kind == "failure":
        prepared.row = {
            "call_uuid": call_uuid, "seq": prepared.seq, "at": at,
            "state": _clip(CallFailure.state, fields.get("state")),
            "error": None if fields.get("error") is None else str(fields["error"]),
        }
    elif kind == "close":
        prepared.close = {"ended_at": at, "hangup_cause": _clip(Call.hangup_cause, fields.get("hangup_cause")
                                                                 or ENDED_UNSEEN_CAUSE)}
        prepared.unseen_end = True
        prepared.outbox = {"call_uuid": call_uuid, "created_at": utc_now(), "attempts": 0, "node": node}
    elif kind != "claim":
        raise ValueError(f"unknown record kind {kind!r}")
    return prepared


def _add_claim(prepared: Prepared, fields: dict[str, Any], claim: str | None) -> None:
    if prepared.kind == "call" and claim:
        prepared.call_columns["claimed_by"] = claim
    elif prepared.kind == "claim":
        if not claim:
            raise ValueError("a claim record needs the writer's claim")
        prepared.call_columns = {"claimed_by": claim}
    elif prepared.kind == "cdr" and not hangup_seen(fields.get("hangup_cause")):
        prepared.unseen_end, prepared.claim = True, claim


_TABLE_OF_KIND: dict[str, type[CallStep] | type[FifoEvent] | type[CallFailure]] = {
    "step": CallStep, "fifo": FifoEvent, "failure": CallFailure,
}


class KnownCalls:
    """The call uuids whose calls row a writer has committed (the `limit` most recently
    used): their writes skip making sure the row exists. One per writer, used in its
    thread only; forget() it when the connection is replaced (another database, or a
    restored one, may lack those rows)."""

    def __init__(self, limit: int = KNOWN_CALLS_LIMIT):
        self._limit = limit
        self._uuids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._uuids

    def __len__(self) -> int:
        return len(self._uuids)

    def add(self, uuids: Iterable[str]) -> None:
        for uuid in uuids:
            self._uuids[uuid] = None
            self._uuids.move_to_end(uuid)
        while len(self._uuids) > self._limit:
            self._uuids.popitem(last=False)

    def forget(self) -> None:
        self._uuids.clear()


def commit_batch(db: Database, batch: Sequence[Prepared], known: KnownCalls | None = None) -> None:
    """Write the batch in one transaction; raises peewee errors (nothing committed).
    `known`: the writer's KnownCalls, updated once the batch is committed.

    A handful of statements per batch, not one per call record: per chunk of calls, one
    insert of the rows not known yet with their start columns, one upsert of the CDR
    columns (per set of columns carried), one fill of start columns only if a start
    record came for a row that was already there (rare); then the other tables."""
    now = utc_now()
    known = KnownCalls() if known is None else known
    with write_transaction(db):
        batch = _without_unwanted_ends(db, batch)
        changes = _merge_call_changes(batch)
        for uuid_chunk in chunked(list(changes), INSERT_CHUNK):
            _write_calls(db, {u: changes[u] for u in uuid_chunk}, now, known)
        for kind, model in _TABLE_OF_KIND.items():
            rows = [_own_row(p) for p in batch if p.kind == kind]
            for chunk in chunked(rows, INSERT_CHUNK):
                _insert_new(db, model, chunk, model.call_uuid)
        cdrs = [p for p in batch if p.kind == "cdr" and p.outbox is not None]
        for cdr_chunk in chunked(cdrs, INSERT_CHUNK):
            outbox_rows = [_own_outbox(p) for p in cdr_chunk]
            if _insert_new(db, CdrOutbox, outbox_rows, CdrOutbox.call_uuid) < len(cdr_chunk):
                _replace_unseen_cdrs(db, [p for p in cdr_chunk if not p.unseen_end], now)
        _close(db, [p for p in batch if p.kind == "close"], now)
    known.add(changes)


def _without_unwanted_ends(db: Database, batch: Sequence[Prepared]) -> Sequence[Prepared]:
    """The batch less its "hangup not seen" CDRs that must not be written: for a row
    that has its end already (a CDR, seen or not), for a call another process has
    claimed, or beside a seen CDR of the same call. Rare: one query when some come."""
    unseen = [p for p in batch if p.kind == "cdr" and p.unseen_end]
    if not unseen:
        return batch
    seen = {p.call_uuid for p in batch if p.kind == "cdr" and not p.unseen_end}
    query = (Call.select(Call.uuid, Call.hangup_cause, Call.claimed_by)
             .where(Call.uuid.in_([p.call_uuid for p in unseen])).dicts())
    if db.for_update:  # the servers: a claim cannot commit between this read and the write
        query = query.for_update()  # (SQLite's write lock, taken at BEGIN, holds it off)
    rows = {row["uuid"]: row for row in query.execute(db)}
    unwanted = set()
    for p in unseen:
        row = rows.get(p.call_uuid) or {}
        claimed_by = row.get("claimed_by")
        if (p.call_uuid in seen or row.get("hangup_cause")
                or (p.claim and claimed_by and claimed_by != p.claim)):
            unwanted.add(id(p))
    return [p for p in batch if id(p) not in unwanted]


def _replace_unseen_cdrs(db: Database, seen: list[Prepared], now) -> None:
    """Seen CDRs whose outbox row was there already: a "hangup not seen" one still
    waiting, and held by no poster, is replaced (it was written by a process that lost
    the call, or a close); anything else there stays (a repeat of this very CDR)."""
    if not seen:
        return
    waiting = {row.call_uuid: row for row in CdrOutbox.select(CdrOutbox.id, CdrOutbox.call_uuid, CdrOutbox.payload)
               .where(CdrOutbox.call_uuid.in_([p.call_uuid for p in seen]), CdrOutbox.delivered_at.is_null(),
                      CdrOutbox.claimed_until.is_null() | (CdrOutbox.claimed_until < now)).execute(db)}
    for p in seen:
        row = waiting.get(p.call_uuid)
        if row is None or hangup_seen(json.loads(row.payload).get("hangup_cause")):
            continue
        (CdrOutbox.update(payload=_own_outbox(p)["payload"], attempts=0, next_attempt_at=now, last_error=None)
         .where(CdrOutbox.id == row.id, CdrOutbox.delivered_at.is_null()).execute(db))


def _close(db: Database, closes: list[Prepared], now) -> None:
    """Close records: each fills the end columns of a row that has no end yet, and
    queues a CDR built from that row. Rare (a start after calls ended unseen): a few
    statements per call."""
    for p in closes:
        end = p.close
        closed = (Call.update(hangup_cause=end["hangup_cause"], updated_at=now)
                  .where(Call.uuid == p.call_uuid, Call.hangup_cause.is_null()).execute(db))
        if not closed:
            continue
        Call.update(ended_at=end["ended_at"]).where(Call.uuid == p.call_uuid, Call.ended_at.is_null()).execute(db)
        if p.outbox is None:
            continue
        row = Call.select().where(Call.uuid == p.call_uuid).dicts().execute(db)[0]
        payload = _cdr_of_row(row)
        if p.node:
            payload["node"] = p.node
        due = now + timedelta(seconds=UNSEEN_CDR_HOLD_S)
        _insert_new(db, CdrOutbox, [{**p.outbox, "payload": to_json(payload), "next_attempt_at": due}],
                    CdrOutbox.call_uuid)


def _cdr_of_row(row: dict[str, Any]) -> dict[str, Any]:
    """A calls row as the CDR fields the flow would have sent (times in epoch seconds,
    the path as a list; None where the row knows nothing)."""
    cdr: dict[str, Any] = {"uuid": row["uuid"]}
    for name in CDR_COLUMNS:
        value = row.get(name)
        if name in _TIME_COLUMNS and value is not None:
            value = value.replace(tzinfo=UTC).timestamp()
        elif name == "path":
            value = json.loads(value) if value else None
        cdr[name] = value
    return cdr


@dataclass
class _CallChange:
    """What a batch's call and cdr records do to one calls row (values never None)."""

    fill: dict[str, Any] = field(default_factory=dict)  # start columns, kept where set
    overwrite: dict[str, Any] = field(default_factory=dict)  # CDR columns, replacing
    node: str | None = None  # for a row this batch creates, whatever its records


def _merge_call_changes(batch: Sequence[Prepared]) -> dict[str, _CallChange]:
    """Every call uuid of the batch (each needs its calls row), with its records merged.

    Applied one by one, a start record fills the columns still empty and a CDR
    overwrites its columns, so each column ends as: the last CDR's value if any CDR
    carries it, else the row's existing value, else the first start record's. That
    holds in either order of start and CDR, so all fills may go first, then all CDRs."""
    changes: dict[str, _CallChange] = {}
    for p in batch:
        change = changes.setdefault(p.call_uuid, _CallChange())
        change.node = change.node or p.node
        carried = {name: value for name, value in p.call_columns.items() if value is not None}
        if p.kind == "call":
            for name, value in carried.items():
                change.fill.setdefault(name, value)
        elif p.kind in ("cdr", "claim"):
            change.overwrite.update(carried)
    return changes


def _write_calls(db: Database, changes: dict[str, _CallChange], now, known: KnownCalls) -> None:
    """Make sure every calls row exists, fill start columns (COALESCE: what is there
    stays), then overwrite the CDR columns."""
    unknown = {u: c for u, c in changes.items() if u not in known}
    new_rows = [
        {"uuid": u, "updated_at": now, "node": c.node,
         **{name: c.fill.get(name) for name in _FILLED_COLUMNS}}
        for u, c in unknown.items()
    ]
    all_inserted = not new_rows or _insert_new(db, Call, new_rows, Call.uuid) == len(new_rows)
    # A start record for a row that was already there (a repeated one, or its call seen
    # first through a step, by an earlier writer, or by another writer since): fill it.
    # If some inserts were skipped, we cannot tell which: fill all; on the rows just
    # inserted that changes nothing.
    fills = {u: c.fill for u, c in changes.items() if c.fill and (u in known or not all_inserted)}
    if fills:
        Call.update(_fill_by_uuid(fills) | {Call.updated_at: now}).where(
            Call.uuid.in_(list(fills))).execute(db)
    _overwrite_cdr_columns(db, changes, now)


def _overwrite_cdr_columns(db: Database, changes: dict[str, _CallChange], now) -> None:
    """The CDRs as upserts on rows that now exist, one per set of columns carried: a
    column a CDR lacks (no answer time on an unanswered call) must keep the row's value.
    An upsert, not a CASE-by-uuid UPDATE as for the fills: PostgreSQL runs it about 4
    times faster (an index lookup per row instead of a CASE per row and column)."""
    rows_by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for uuid, change in changes.items():
        if change.overwrite:
            names = tuple(name for name in _OVERWRITTEN_COLUMNS if name in change.overwrite)
            row = {"uuid": uuid, "updated_at": now, **change.overwrite}
            rows_by_columns.setdefault(names, []).append(row)
    # MySQL takes no conflict target (peewee refuses one): ON DUPLICATE KEY UPDATE fires
    # on any unique key, and uuid is the only one these rows can collide on.
    target = {} if isinstance(db, MySQLDatabase) else {"conflict_target": [Call.uuid]}
    for names, rows in rows_by_columns.items():
        preserve = [getattr(Call, name) for name in names] + [Call.updated_at]
        _insert(db, Call, rows, ("upsert", names),
                lambda query, preserve=preserve: query.on_conflict(preserve=preserve, **target))


def _fill_by_uuid(values_by_uuid: dict[str, dict[str, Any]]) -> dict:
    """SET clauses giving each row its own values only where its column is still NULL,
    as peewee's bulk_update does: column = COALESCE(column, CASE uuid WHEN u1 THEN v1
    ... ELSE column END); a row without a value for a column keeps its own."""
    updates = {}
    for name in dict.fromkeys(n for values in values_by_uuid.values() for n in values):
        column = getattr(Call, name)
        whens = [(u, column.case_value(values[name]))
                 for u, values in values_by_uuid.items() if name in values]
        updates[column] = fn.COALESCE(column, Case(Call.uuid, whens, column))
    return updates


def _own_outbox(prepared: Prepared) -> dict[str, Any]:
    assert prepared.outbox is not None, f"a prepared {prepared.kind!r} record has no outbox row"
    return prepared.outbox


def _own_row(prepared: Prepared) -> dict[str, Any]:
    """The row for the kind's own table, which `prepare` sets for step, fifo and failure."""
    assert prepared.row is not None, f"a prepared {prepared.kind!r} record has no row"
    return prepared.row


def _insert_new(db: Database, model, rows: list[dict], key) -> int:
    """Insert the rows whose unique key is not there yet, leaving existing ones alone;
    returns how many were inserted."""
    if isinstance(db, MySQLDatabase):
        # MySQL's INSERT IGNORE would also turn bad values into warnings and store
        # them clipped; a no-op update on a duplicate key ignores only duplicates
        # (and counts 0 rows for it: PyMySQL does not ask for CLIENT_FOUND_ROWS).
        return _insert(db, model, rows, "new", lambda query: query.on_conflict(update={key: key}))
    return _insert(db, model, rows, "new", lambda query: query.on_conflict_ignore())


# SQL text of the inserts, by shape: (backend, table, columns, row count, clause). peewee
# builds a statement by walking its query tree, which was most of the DbWriter's CPU
# (yappi, 20 calls/s); the shapes are few (a handful of statements times the row counts
# of a batch), so each is built once and then only its values change.
_SQL_BY_SHAPE: dict[tuple, str] = {}
_SQL_CACHE_LIMIT = 2_000


def _insert(db: Database, model, rows: list[dict], clause: Any, finish) -> int:
    """`finish(model.insert_many(rows))` executed; returns the rows it counts. The values
    go through each field's own conversion (`db_value`), as peewee's would; the SQL
    text is peewee's, built for the first batch of this shape and checked to take its
    values in the same order (otherwise it is not reused)."""
    columns = tuple(rows[0])
    fields = [model._meta.fields[name] for name in columns]
    params = [field.db_value(row[name]) for row in rows for name, field in zip(columns, fields, strict=True)]
    shape = (type(db), model, columns, len(rows), clause)
    sql = _SQL_BY_SHAPE.get(shape)
    if sql is None:
        query = finish(model.insert_many([tuple(row[name] for name in columns) for row in rows], fields=fields))
        sql, built = db.get_sql_context().sql(query.as_rowcount()).query()
        if list(built) != params:  # not ours to reproduce: run peewee's own
            return db.execute_sql(sql, built).rowcount
        if len(_SQL_BY_SHAPE) < _SQL_CACHE_LIMIT:
            _SQL_BY_SHAPE[shape] = sql
    return db.execute_sql(sql, params).rowcount
