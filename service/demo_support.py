"""Small database chores for `icall demo`: create the schema, add a holiday, read back
the calls. Each opens its own connection in the calling thread and closes it."""

from __future__ import annotations

import json
from datetime import date

from storage.db import open_database
from storage.migrations import upgrade
from storage.models import Call, TimeConditionRow


def prepare_database(config) -> None:
    db = open_database(config.database.url)
    with db.connection_context():
        upgrade(db)


def add_holiday(config, day: date, action: str, args: str, note: str = "demo holiday") -> int:
    """A time condition valid all of `day` for the configured flow; returns its id."""
    db = open_database(config.database.url)
    with db.connection_context():
        return TimeConditionRow.insert(
            name=config.ivr.time_condition, action=action, args=args, start_date=day,
            end_date=day, priority=10, note=note,
        ).execute(db)


def summary_rows(config, uuids: list[str]) -> list[dict]:
    """The calls rows for `uuids`, in that order, as dicts (path decoded)."""
    db = open_database(config.database.url)
    with db.connection_context():
        rows = {c.uuid: c for c in Call.select().where(Call.uuid.in_(uuids)).execute(db)}
    result = []
    for uuid in uuids:
        call = rows.get(uuid)
        if call is None:
            continue
        result.append({
            "uuid": call.uuid, "caller_id": call.caller_id, "final_state": call.final_state,
            "crm_extension": call.crm_extension, "billsec_s": call.billsec_s,
            "hangup_cause": call.hangup_cause,
            "path": " > ".join(json.loads(call.path)) if call.path else "",
        })
    return result
