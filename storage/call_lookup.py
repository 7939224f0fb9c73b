"""Reading calls back for an operator: recent calls (`icall calls`) and one call's
whole story (`icall call UUID`), from the database only, so any node's database (or a
cluster's shared one) answers.

Every query is bounded and served by an index (schema step 5 adds the ones the
filters need): newest first is `calls.started_at` descending; `--caller`, `--node`
and `--ended-in` each have an index (column, started_at); a UUID prefix is a range on
the unique `calls.uuid`; a call's steps, queue events, failures and CDR are found by
their `call_uuid` indexes.

What is kept of CDR delivery is the outbox row: the number of attempts, the last
attempt's error, when the next one is due, when it was delivered and who holds it
now. Each attempt's own time and error are not kept (the poster overwrites
`last_error`), so the story shows those fields, not a list of attempts.

Thread-free: every function runs on the caller's thread and connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from peewee import JOIN, Database

from ivr.flows import FLOWS
from storage.models import Call, CallFailure, CallStep, CdrOutbox, FifoEvent

# Candidates listed for a UUID prefix that matches more than one call.
AMBIGUOUS_SHOWN = 10
# The flows' final states ("final_loop"): a path ending in one was handed on by the
# IVR, and where it "ended" is the state before.
FINAL_STATES = frozenset(flow.final_state for flow in FLOWS.values())


@dataclass(frozen=True)
class CallFilter:
    """What `icall calls` lists; every field optional. `since` is naive UTC."""

    since: datetime | None = None
    caller: str | None = None
    node: str | None = None
    ended_in: str | None = None
    live: bool = False
    limit: int = 20


def cdr_state(delivered_at: Any, attempts: int | None, has_row: bool) -> str:
    """delivered, pending (not tried yet or retrying without an error), failing (the
    last attempt failed), or none (no CDR yet: the call is live or its hangup unseen)."""
    if not has_row:
        return "none"
    if delivered_at is not None:
        return "delivered"
    return "failing" if attempts else "pending"


def path_of(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        states = json.loads(text)
    except ValueError:
        return [text]
    return [str(state) for state in states] if isinstance(states, list) else [str(states)]


def ended_in(final_state: str | None, path: list[str]) -> str | None:
    """Where the IVR's part of the call ended: the state before the flow's final state
    when it handed the call on (a queue, a bridge, the safe destination), else the
    state the call was in at its hangup. None for a call with no CDR yet."""
    if final_state is None:
        return None
    if final_state in FINAL_STATES and len(path) >= 2 and path[-1] == final_state:
        return path[-2]
    return final_state


_LIST_COLUMNS = (Call.id, Call.uuid, Call.caller_id, Call.node, Call.started_at, Call.ended_at,
                 Call.duration_s, Call.hangup_cause, Call.final_state, Call.path,
                 CdrOutbox.id.alias("cdr_id"), CdrOutbox.delivered_at, CdrOutbox.attempts,
                 CdrOutbox.last_error)


def recent_calls(db: Database, wanted: CallFilter) -> list[dict[str, Any]]:
    """Calls newest first (by start), at most `wanted.limit`, each a dict: the calls
    row's columns, `path` as a list, `ended_in`, `cdr` (see cdr_state), `cdr_error`."""
    rows = [row for query in listing_queries(wanted) for row in query.dicts().execute(db)]
    rows.sort(key=lambda row: (row["started_at"] is not None, row["started_at"] or 0, row["id"]),
              reverse=True)
    return [_listed(row) for row in rows[:wanted.limit]]


def listing_queries(wanted: CallFilter) -> list:
    """The queries whose rows, merged newest first, are the listing: one, or with
    `ended_in` one per way of ending there (in the state itself, or handed on from it:
    a final state right after it). Each walks an index newest first and stops at the
    limit, where one query with OR would collect every handed-on call and sort them."""
    query = (Call.select(*_LIST_COLUMNS)
             .join(CdrOutbox, JOIN.LEFT_OUTER, on=(CdrOutbox.call_uuid == Call.uuid))
             .order_by(Call.started_at.desc(), Call.id.desc())
             .limit(wanted.limit))
    if wanted.since is not None:
        query = query.where(Call.started_at >= wanted.since)
    if wanted.caller:
        query = query.where(Call.caller_id == wanted.caller)
    if wanted.node:
        query = query.where(Call.node == wanted.node)
    if wanted.live:
        query = query.where(Call.ended_at.is_null())
    if not wanted.ended_in:
        return [query]
    state = wanted.ended_in
    return [query.where(Call.final_state == state)] + [
        query.where(Call.final_state == final, Call.path.endswith(f'"{state}","{final}"]'))
        for final in sorted(FINAL_STATES) if final != state]


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    path = path_of(row.pop("path"))
    has_cdr = row.pop("cdr_id") is not None
    return {
        **{key: row[key] for key in ("uuid", "caller_id", "node", "started_at", "ended_at",
                                     "duration_s", "hangup_cause", "final_state")},
        "path": path,
        "ended_in": ended_in(row["final_state"], path),
        "cdr": cdr_state(row["delivered_at"], row["attempts"], has_cdr),
        "cdr_attempts": row["attempts"],
        "cdr_error": row["last_error"],
    }


class NoSuchCall(LookupError):
    """No call has that UUID or UUID prefix."""


class AmbiguousPrefix(LookupError):
    """More than one call starts with the prefix; `candidates` are some of them."""

    def __init__(self, prefix: str, candidates: list[dict[str, Any]]):
        super().__init__(prefix)
        self.prefix = prefix
        self.candidates = candidates


def find_uuid(db: Database, prefix: str) -> str:
    """The one call uuid that is `prefix` or starts with it; raises NoSuchCall or
    AmbiguousPrefix. A range on the uuid index, not LIKE (which SQLite and PostgreSQL
    do not serve from a plain index)."""
    exact = Call.select(Call.uuid).where(Call.uuid == prefix).first(db)
    if exact is not None:
        return exact.uuid
    query = (Call.select(Call.uuid, Call.caller_id, Call.started_at, Call.node)
             .where(Call.uuid >= prefix, Call.uuid < _after_prefix(prefix))
             .order_by(Call.uuid).limit(AMBIGUOUS_SHOWN + 1))
    found = list(query.dicts().execute(db))
    if not found:
        raise NoSuchCall(prefix)
    if len(found) > 1:
        raise AmbiguousPrefix(prefix, found)
    return found[0]["uuid"]


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass
class CallStory:
    """Everything the database holds about one call."""

    call: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    fifo_events: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    cdr: dict[str, Any] | None = None


def call_story(db: Database, uuid: str) -> CallStory:
    """The call `uuid` (exact: resolve a prefix with find_uuid first)."""
    row = Call.select().where(Call.uuid == uuid).dicts().first(db)
    if row is None:
        raise NoSuchCall(uuid)
    row.pop("id", None)
    row["path"] = path_of(row.get("path"))
    row["ended_in"] = ended_in(row.get("final_state"), row["path"])
    story = CallStory(call=row)
    story.steps = _by_seq(db, CallStep, uuid, CallStep.seq, CallStep.step, CallStep.value, CallStep.at)
    story.fifo_events = _by_seq(db, FifoEvent, uuid, FifoEvent.seq, FifoEvent.action,
                                FifoEvent.fifo_name, FifoEvent.at, FifoEvent.headers)
    for event in story.fifo_events:
        event["headers"] = _json_or_text(event["headers"])
    story.failures = _by_seq(db, CallFailure, uuid, CallFailure.seq, CallFailure.state,
                             CallFailure.error, CallFailure.at)
    cdr = CdrOutbox.select().where(CdrOutbox.call_uuid == uuid).dicts().first(db)
    if cdr is not None:
        cdr.pop("id", None)
        cdr["payload"] = _json_or_text(cdr["payload"])
        cdr["state"] = cdr_state(cdr["delivered_at"], cdr["attempts"], True)
        story.cdr = cdr
    return story


def _by_seq(db: Database, model, uuid: str, *columns) -> list[dict[str, Any]]:
    query = model.select(*columns).where(model.call_uuid == uuid).order_by(model.seq)
    return list(query.dicts().execute(db))


def _json_or_text(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
