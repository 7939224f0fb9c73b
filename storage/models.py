"""The tables, as peewee models, at the newest schema version (storage.migrations).

The models are not bound to a database: pass yours when you run a query,
`Call.select().where(Call.uuid == u).get(db)`, `CdrOutbox.update(...).execute(db)`,
so that several databases (tests, the CLI, the service) never share one by accident.

Times are stored as naive UTC datetimes (microseconds kept on all three backends).
JSON columns are plain text holding JSON, so every backend reads them the same way.

A crash recorded by the supervisor (record kind "failure") gets its own table,
`call_failures`, rather than being folded into the steps: operators look for them
separately and they carry the failed state and the error text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from peewee import (
    AutoField,
    BigAutoField,
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    IntegerField,
    Model,
    SmallIntegerField,
    TextField,
)

from ivr.timecond import TimeCondition


def utc_from_epoch(epoch_s: float | None) -> datetime | None:
    """Epoch seconds (as the flow's records carry them) as a naive UTC datetime."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(float(epoch_s), UTC).replace(tzinfo=None)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = None
        legacy_table_names = False


class Call(BaseModel):
    """One row per call: written at its start (kind "call"), completed by its CDR."""

    id = BigAutoField()  # schema v3: 64-bit keys on the tables that grow with calls
    uuid = CharField(max_length=64, unique=True)
    caller_id = CharField(max_length=128, null=True, index=True)
    caller_name = CharField(max_length=255, null=True)
    destination = CharField(max_length=128, null=True)
    flow = CharField(max_length=64, null=True)
    started_at = DateTimeField(null=True, index=True)
    answered_at = DateTimeField(null=True)
    ended_at = DateTimeField(null=True)
    duration_s = IntegerField(null=True)
    billsec_s = IntegerField(null=True)
    hangup_cause = CharField(max_length=64, null=True)
    final_state = CharField(max_length=64, null=True)
    crm_extension = CharField(max_length=32, null=True)
    path = TextField(null=True)  # JSON list of the flow states the call went through
    updated_at = DateTimeField(null=True)  # schema v2
    node = CharField(max_length=64, null=True)  # schema v3: the icall ([service] node) that took it
    # schema v4: the icall process holding the call now (node#pid#start token); a
    # "hangup not seen" CDR from another process is not written (storage.records).
    claimed_by = CharField(max_length=128, null=True)

    class Meta:
        table_name = "calls"
        # schema v5: the lookups of `icall calls` (storage.migrations.LOOKUP_INDEXES).
        indexes = ((("caller_id", "started_at"), False), (("node", "started_at"), False),
                   (("final_state", "started_at"), False), (("ended_at", "started_at"), False))


class CallStep(BaseModel):
    """The seed's db_pbx:log: what happened in a call, in order (seq)."""

    id = BigAutoField()
    call_uuid = CharField(max_length=64, index=True)
    seq = IntegerField()
    step = CharField(max_length=64)
    value = TextField(null=True)
    at = DateTimeField(null=True)

    class Meta:
        table_name = "call_steps"
        indexes = ((("call_uuid", "seq"), True),)


class FifoEvent(BaseModel):
    """The seed's db_pbx:process: a mod_fifo event about this call."""

    id = BigAutoField()
    call_uuid = CharField(max_length=64, index=True)
    seq = IntegerField()
    action = CharField(max_length=64)
    fifo_name = CharField(max_length=128, null=True)
    at = DateTimeField(null=True)
    headers = TextField(null=True)  # JSON object of the event's headers

    class Meta:
        table_name = "fifo_events"
        indexes = ((("call_uuid", "seq"), True),)


class CallFailure(BaseModel):
    """A call actor that crashed: in which state, with what error."""

    id = BigAutoField()
    call_uuid = CharField(max_length=64, index=True)
    seq = IntegerField()
    state = CharField(max_length=64, null=True)
    error = TextField(null=True)
    at = DateTimeField(null=True)

    class Meta:
        table_name = "call_failures"
        indexes = ((("call_uuid", "seq"), True),)


class TimeConditionRow(BaseModel):
    """A routing override (holiday, closure), see ivr.timecond."""

    id = AutoField()
    name = CharField(max_length=64, index=True)
    action = CharField(max_length=32)
    args = CharField(max_length=255, default="")
    enabled = BooleanField(default=True)
    start_date = DateField(null=True)
    end_date = DateField(null=True)  # inclusive
    weekdays = CharField(max_length=32, default="")  # ISO numbers "6,7"; empty: every day
    start_minute = SmallIntegerField(null=True)  # minutes since midnight, inclusive
    end_minute = SmallIntegerField(null=True)  # exclusive
    priority = IntegerField(default=0)
    note = CharField(max_length=255, default="")

    class Meta:
        table_name = "time_conditions"

    def to_value(self) -> TimeCondition:
        days = frozenset(int(d) for d in self.weekdays.split(",") if d.strip())
        return TimeCondition(
            name=self.name,
            action=self.action,
            args=self.args or "",
            enabled=bool(self.enabled),
            start_date=self.start_date,
            end_date=self.end_date,
            weekdays=days,
            start_minute=self.start_minute,
            end_minute=self.end_minute,
            priority=self.priority,
            note=self.note or "",
            id=self.id,
        )

    @staticmethod
    def weekdays_text(days: frozenset[int]) -> str:
        return ",".join(str(d) for d in sorted(days))


class CdrOutbox(BaseModel):
    """CDRs waiting to be delivered by the CdrPoster (written with the CDR itself)."""

    id = BigAutoField()
    call_uuid = CharField(max_length=64, unique=True)
    payload = TextField()  # JSON object: the CDR fields
    created_at = DateTimeField()
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField()
    delivered_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    # schema v3: the node whose call it is; the poster holding it (node#instance) and
    # until when, so that of several icalls on one database one posts it at a time.
    node = CharField(max_length=64, null=True)
    claimed_by = CharField(max_length=128, null=True)
    claimed_until = DateTimeField(null=True)

    class Meta:
        table_name = "cdr_outbox"
        # schema v2: the poster's query, "undelivered and due", by index.
        indexes = ((("delivered_at", "next_attempt_at"), False),)


class SchemaVersion(BaseModel):
    """One row: the schema version this database is at."""

    id = IntegerField(primary_key=True)
    version = IntegerField()
    upgraded_at = DateTimeField()

    class Meta:
        table_name = "schema_version"


MODELS = (Call, CallStep, FifoEvent, CallFailure, TimeConditionRow, CdrOutbox, SchemaVersion)


def to_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
