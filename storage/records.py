"""How each Record kind (ivr.effects) becomes rows, and how a batch is committed.

Every write is idempotent, so a write delivered twice (a resend after a retry, a
writer restarted mid-call) leaves the same rows as one delivery:
  call     the calls row by uuid; fills only columns still empty, so a late or
           repeated start record never erases what the CDR wrote
  cdr      the calls row by uuid, CDR columns overwritten; plus its cdr_outbox row,
           insert-or-ignore by call uuid, in the same transaction
  step / fifo / failure   insert-or-ignore by (call uuid, seq)
Any write may be the first one seen for its call (its "call" record lost with a
replaced writer): the calls row is created if missing.

Thread-free: `commit_batch` runs on the caller's thread and connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from peewee import CharField, Database, MySQLDatabase, chunked, fn

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

INSERT_CHUNK = 100  # rows per INSERT: stays under every backend's parameter limit

CALL_START_COLUMNS = ("caller_id", "caller_name", "destination", "flow", "started_at")
CDR_COLUMNS = (
    "caller_id", "caller_name", "destination", "started_at", "answered_at", "ended_at",
    "duration_s", "billsec_s", "hangup_cause", "final_state", "crm_extension", "path",
)
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


def prepare(call_uuid: str, seq: int, kind: str, fields: dict[str, Any]) -> Prepared:
    """Rows for one write; raises BadRecord if they cannot be built."""
    try:
        return _prepare(call_uuid, seq, kind, fields)
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
        raise BadRecord(f"{kind} record {call_uuid}/{seq}: {type(exc).__name__}: {exc}") from None


def _prepare(call_uuid: str, seq: int, kind: str, fields: dict[str, Any]) -> Prepared:
    if not call_uuid:
        raise ValueError("no call uuid")
    prepared = Prepared(call_uuid, int(seq), kind)
    at = _epoch(fields, "at") or utc_now()
    if kind == "call":
        prepared.call_columns = {n: _call_value(n, fields.get(n)) for n in CALL_START_COLUMNS}
    elif kind == "cdr":
        prepared.call_columns = {n: _call_value(n, fields.get(n)) for n in CDR_COLUMNS}
        now = utc_now()
        prepared.outbox = {
            "call_uuid": call_uuid, "payload": to_json(fields), "created_at": now,
            "attempts": 0, "next_attempt_at": now,
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
    else:
        raise ValueError(f"unknown record kind {kind!r}")
    return prepared


_TABLE_OF_KIND: dict[str, type[CallStep] | type[FifoEvent] | type[CallFailure]] = {
    "step": CallStep, "fifo": FifoEvent, "failure": CallFailure,
}


def commit_batch(db: Database, batch: Sequence[Prepared]) -> None:
    """Write the batch in one transaction; raises peewee errors (nothing committed)."""
    now = utc_now()
    with write_transaction(db):
        uuids = list(dict.fromkeys(p.call_uuid for p in batch))
        for uuid_chunk in chunked(uuids, INSERT_CHUNK):
            call_rows = [{"uuid": u, "updated_at": now} for u in uuid_chunk]
            _insert_new(db, Call, call_rows, Call.uuid)
        for kind, model in _TABLE_OF_KIND.items():
            rows = [_own_row(p) for p in batch if p.kind == kind]
            for chunk in chunked(rows, INSERT_CHUNK):
                _insert_new(db, model, chunk, model.call_uuid)
        for p in batch:
            if p.kind == "call":
                _fill_call(db, p.call_uuid, p.call_columns, now)
            elif p.kind == "cdr":
                _set_call(db, p.call_uuid, p.call_columns, now)
        outbox = [p.outbox for p in batch if p.outbox is not None]
        for chunk in chunked(outbox, INSERT_CHUNK):
            _insert_new(db, CdrOutbox, chunk, CdrOutbox.call_uuid)


def _own_row(prepared: Prepared) -> dict[str, Any]:
    """The row for the kind's own table, which `prepare` sets for step, fifo and failure."""
    assert prepared.row is not None, f"a prepared {prepared.kind!r} record has no row"
    return prepared.row


def _insert_new(db: Database, model, rows: list[dict], key) -> None:
    """Insert the rows whose unique key is not there yet; leave existing ones alone."""
    query = model.insert_many(rows)
    if isinstance(db, MySQLDatabase):
        # MySQL's INSERT IGNORE would also turn bad values into warnings and store
        # them clipped; a no-op update on a duplicate key ignores only duplicates.
        query = query.on_conflict(update={key: key})
    else:
        query = query.on_conflict_ignore()
    query.execute(db)


def _fill_call(db: Database, uuid: str, columns: dict[str, Any], now) -> None:
    updates = {
        getattr(Call, name): fn.COALESCE(getattr(Call, name), value)
        for name, value in columns.items() if value is not None
    }
    updates[Call.updated_at] = now
    Call.update(updates).where(Call.uuid == uuid).execute(db)


def _set_call(db: Database, uuid: str, columns: dict[str, Any], now) -> None:
    updates = {getattr(Call, name): value for name, value in columns.items() if value is not None}
    updates[Call.updated_at] = now
    Call.update(updates).where(Call.uuid == uuid).execute(db)
