"""The CDR outbox shared by every icall on one database: claims, outcomes, status.

Several nodes (one icall beside each FreeSWITCH) may share one PostgreSQL or MariaDB.
A poster posts only the rows it has claimed: `claimed_by` (its node and a per-run
token) and `claimed_until` (now + `[cdr] lease_s`). A row is free when it is not
claimed or its claim ran out, so the CDRs of an icall that died holding them are
taken over by another once the lease expires. Claiming is one short transaction, and
no transaction stays open while posting:

    1. the due, free rows' ids, oldest first (PostgreSQL and MariaDB >= 10.6 /
       MySQL 8: FOR UPDATE SKIP LOCKED, so claimers never wait for each other);
    2. UPDATE ... SET claimed_by, claimed_until WHERE id IN (...) AND still free:
       the row lock the UPDATE takes and its re-check of "free" make sure that of
       two claimers only one gets a row, with or without SKIP LOCKED (SQLite
       serialises writers anyway);
    3. read back the rows that are ours.

The claim times are the posting node's clock: nodes must agree to well within the
lease (NTP does). Thread-free: every function runs on the caller's thread and `db`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from peewee import Case, Database, MySQLDatabase, PostgresqlDatabase, fn

from storage.db import write_transaction
from storage.models import CdrOutbox, utc_now

_UNDELIVERED = CdrOutbox.delivered_at.is_null()


def _free(now: datetime):
    return CdrOutbox.claimed_until.is_null() | (CdrOutbox.claimed_until < now)


def supports_skip_locked(db: Database) -> bool:
    """Whether this server takes FOR UPDATE SKIP LOCKED (ask on a connected db)."""
    if isinstance(db, PostgresqlDatabase):
        return True
    if isinstance(db, MySQLDatabase):
        version = str(db.execute_sql("SELECT VERSION()").fetchone()[0])
        number = tuple(int(part) for part in version.split("-")[0].split(".")[:2])
        return number >= ((10, 6) if "mariadb" in version.lower() else (8, 0))
    return False


def claim_due(db: Database, owner: str, limit: int, lease_s: float,
              skip_locked: bool = False) -> list[CdrOutbox]:
    """Claim up to `limit` undelivered, due, free rows for `owner`; returns them,
    oldest due first."""
    now = utc_now()
    candidates = (CdrOutbox.select(CdrOutbox.id)
                  .where(_UNDELIVERED, CdrOutbox.next_attempt_at <= now, _free(now))
                  .order_by(CdrOutbox.next_attempt_at, CdrOutbox.id).limit(limit))
    if skip_locked:
        candidates = candidates.for_update(skip_locked=True)
    with write_transaction(db):
        ids = [row.id for row in candidates.execute(db)]
        if not ids:
            return []
        (CdrOutbox.update(claimed_by=owner, claimed_until=now + timedelta(seconds=lease_s))
         .where(CdrOutbox.id.in_(ids), _UNDELIVERED, _free(now)).execute(db))
    return list(CdrOutbox.select()
                .where(CdrOutbox.id.in_(ids), CdrOutbox.claimed_by == owner, _UNDELIVERED)
                .order_by(CdrOutbox.next_attempt_at, CdrOutbox.id).execute(db))


@dataclass(frozen=True)
class Failed:
    row: CdrOutbox
    error: str
    retry_at: datetime


def settle(db: Database, owner: str, delivered: list[int], failed: list[Failed],
           unsent: list[int]) -> None:
    """Record a round: delivered rows are done (whoever holds them now: the endpoint
    took them); failed rows get their attempt and next time; failed and unsent rows
    are released, unless another poster has claimed them meanwhile."""
    now = utc_now()
    ours = CdrOutbox.claimed_by == owner
    with db.atomic():
        if delivered:
            (CdrOutbox.update(delivered_at=now, attempts=CdrOutbox.attempts + 1, last_error=None,
                              claimed_by=None, claimed_until=None)
             .where(CdrOutbox.id.in_(delivered)).execute(db))
        for item in failed:
            (CdrOutbox.update(attempts=item.row.attempts + 1, last_error=item.error[:500],
                              next_attempt_at=item.retry_at, claimed_by=None, claimed_until=None)
             .where(CdrOutbox.id == item.row.id, ours).execute(db))
        if unsent:
            (CdrOutbox.update(claimed_by=None, claimed_until=None)
             .where(CdrOutbox.id.in_(unsent), ours).execute(db))


def next_due(db: Database) -> datetime | None:
    """When the next undelivered row can be claimed: its next attempt, or the end of
    its claim if later. None when nothing is undelivered."""
    later = Case(None, [(CdrOutbox.claimed_until > CdrOutbox.next_attempt_at, CdrOutbox.claimed_until)],
                 CdrOutbox.next_attempt_at)
    value = CdrOutbox.select(fn.MIN(later)).where(_UNDELIVERED).scalar(db)
    if isinstance(value, str):  # SQLite hands an aggregate back as text
        value = CdrOutbox.next_attempt_at.python_value(value)
    return value


def undelivered(db: Database) -> tuple[int, datetime | None]:
    """How many CDRs wait for delivery, every node's, and when the oldest one was
    queued (None when none waits): one aggregate over the undelivered rows."""
    row: tuple[Any, Any] = tuple(CdrOutbox.select(fn.COUNT(CdrOutbox.id), fn.MIN(CdrOutbox.created_at))
                                 .where(_UNDELIVERED).tuples().execute(db))[0]
    count, oldest = row
    if isinstance(oldest, str):  # SQLite hands an aggregate back as text
        oldest = CdrOutbox.created_at.python_value(oldest)
    return int(count or 0), oldest


@dataclass
class NodeCounts:
    pending: int = 0
    delivered: int = 0
    claimed: int = 0  # pending rows a poster holds right now


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    delivered: int
    oldest_pending_age_s: float | None
    last_error: str | None
    by_node: dict[str, NodeCounts] = field(default_factory=dict)  # "" for rows without a node


def outbox_status(db: Database) -> OutboxStatus:
    """The whole outbox, every node's rows (any thread, with its own `db`)."""
    now = utc_now()
    by_node: dict[str, NodeCounts] = {}
    claimed = Case(None, [((CdrOutbox.claimed_until > now) & _UNDELIVERED, 1)], 0)
    rows = (CdrOutbox.select(CdrOutbox.node, _UNDELIVERED.alias("undelivered"),
                             fn.COUNT(CdrOutbox.id).alias("rows"), fn.SUM(claimed).alias("claimed"))
            .group_by(CdrOutbox.node, _UNDELIVERED).tuples().execute(db))
    for node, undelivered, count, held in rows:
        counts = by_node.setdefault(node or "", NodeCounts())
        if undelivered:
            counts.pending += count
            counts.claimed += int(held or 0)
        else:
            counts.delivered += count
    oldest = CdrOutbox.select(fn.MIN(CdrOutbox.created_at)).where(_UNDELIVERED).scalar(db)
    if isinstance(oldest, str):
        oldest = CdrOutbox.created_at.python_value(oldest)
    last = (CdrOutbox.select(CdrOutbox.last_error)
            .where(_UNDELIVERED, CdrOutbox.last_error.is_null(False))
            .order_by(CdrOutbox.next_attempt_at.desc()).first(db))
    return OutboxStatus(
        pending=sum(c.pending for c in by_node.values()),
        delivered=sum(c.delivered for c in by_node.values()),
        oldest_pending_age_s=(now - oldest).total_seconds() if oldest else None,
        last_error=last.last_error if last else None, by_node=by_node)
