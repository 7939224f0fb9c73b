"""The schema as version 1 created it, frozen.

Migrations start from here; these classes must never change, or databases created by
an older icall would differ from ones created now. storage.models is the newest schema.
"""

from __future__ import annotations

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    IntegerField,
    Model,
    SmallIntegerField,
    TextField,
)


class _V1(Model):
    class Meta:
        database = None
        legacy_table_names = False


class Call(_V1):
    uuid = CharField(max_length=64, unique=True)
    caller_id = CharField(max_length=128, null=True)
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
    path = TextField(null=True)

    class Meta:
        table_name = "calls"


class CallStep(_V1):
    call_uuid = CharField(max_length=64, index=True)
    seq = IntegerField()
    step = CharField(max_length=64)
    value = TextField(null=True)
    at = DateTimeField(null=True)

    class Meta:
        table_name = "call_steps"
        indexes = ((("call_uuid", "seq"), True),)


class FifoEvent(_V1):
    call_uuid = CharField(max_length=64, index=True)
    seq = IntegerField()
    action = CharField(max_length=64)
    fifo_name = CharField(max_length=128, null=True)
    at = DateTimeField(null=True)
    headers = TextField(null=True)

    class Meta:
        table_name = "fifo_events"
        indexes = ((("call_uuid", "seq"), True),)


class CallFailure(_V1):
    call_uuid = CharField(max_length=64, index=True)
    seq = IntegerField()
    state = CharField(max_length=64, null=True)
    error = TextField(null=True)
    at = DateTimeField(null=True)

    class Meta:
        table_name = "call_failures"
        indexes = ((("call_uuid", "seq"), True),)


class TimeConditionRow(_V1):
    id = AutoField()
    name = CharField(max_length=64, index=True)
    action = CharField(max_length=32)
    args = CharField(max_length=255, default="")
    enabled = BooleanField(default=True)
    start_date = DateField(null=True)
    end_date = DateField(null=True)
    weekdays = CharField(max_length=32, default="")
    start_minute = SmallIntegerField(null=True)
    end_minute = SmallIntegerField(null=True)
    priority = IntegerField(default=0)
    note = CharField(max_length=255, default="")

    class Meta:
        table_name = "time_conditions"


class CdrOutbox(_V1):
    call_uuid = CharField(max_length=64, unique=True)
    payload = TextField()
    created_at = DateTimeField()
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField()
    delivered_at = DateTimeField(null=True)
    last_error = TextField(null=True)

    class Meta:
        table_name = "cdr_outbox"


class SchemaVersion(_V1):
    id = IntegerField(primary_key=True)
    version = IntegerField()
    upgraded_at = DateTimeField()

    class Meta:
        table_name = "schema_version"


MODELS = (Call, CallStep, FifoEvent, CallFailure, TimeConditionRow, CdrOutbox, SchemaVersion)
