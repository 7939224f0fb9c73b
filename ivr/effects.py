"""What a flow asks the world to do. Flows return lists of these; the CallActor
carries them out (ESL commands, CRM lookups, database writes, timers).

Keeping them as plain values is what lets a flow be tested without threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Execute:
    """`sendmsg <uuid>` call-command execute; FreeSWITCH echoes `event_uuid` as
    `Application-UUID` on CHANNEL_EXECUTE / CHANNEL_EXECUTE_COMPLETE."""

    app: str
    arg: str
    event_uuid: str
    lock: bool = False


@dataclass(frozen=True)
class Hangup:
    """`sendmsg <uuid>` call-command hangup."""

    cause: str = "NORMAL_CLEARING"


@dataclass(frozen=True)
class LookupCaller:
    """Ask the CrmFetcher for this caller's extension; the answer comes back later as
    a `CrmAnswer` message through the flow's `on_info`."""

    caller_id: str


# Kinds of Record, with the fields each carries (all JSON-serialisable):
#   call    uuid, caller_id, caller_name, destination, started_at (epoch s), flow
#   step    uuid, step, value, at                     (the seed's db_pbx:log)
#   fifo    uuid, action, fifo_name, at, headers      (the seed's db_pbx:process)
#   cdr     uuid, caller_id, caller_name, destination, started_at, answered_at, ended_at,
#           duration_s, billsec_s, hangup_cause, final_state, crm_extension, path (list of states)
#   failure uuid, state, error, at                    (an actor crash, recorded by the supervisor)
RECORD_KINDS = ("call", "step", "fifo", "cdr", "failure")


@dataclass(frozen=True)
class Record:
    """A row for the DbWriter. The CallActor numbers each one (`seq`) and keeps it
    until the writer acknowledges the commit, so repeats are harmless (idempotent key:
    call uuid + seq)."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StartTimer:
    """Call `on_timer(name, generation)` after `delay_s`; a timer whose generation is no
    longer current when it fires is dropped by the flow."""

    name: str
    delay_s: float
    generation: int


@dataclass(frozen=True)
class CancelTimer:
    """The timer `name` is no longer wanted (a guard whose command completed): dropped
    now rather than left to fire, stale, up to `command_timeout_s` later."""

    name: str


@dataclass(frozen=True)
class Finished:
    """The call is over for this flow (hung up); the actor may stop after its writes
    are acknowledged."""

    reason: str = "hangup"


@dataclass(frozen=True)
class Checkpoint:
    """Write the call's checkpoint on its channel (`ivr.resume`), in the call's own
    command stream, before the commands of its batch.

    Written with the api `uuid_setvar`: no application runs for it, so the switch
    fires no CHANNEL_EXECUTE / EXECUTE_COMPLETE (nor queues a message) for it, and a
    bridged channel is never handed a queued app. The hand-off's (`handoff`: the
    transfer that ends the IVR's part) is a `set` with event-lock instead: a successor
    tells from it being the last application that the transfer behind it never ran
    (`resume.handoff_never_ran`). The actor adds the records the DbWriter has not
    acknowledged yet (`"r"`, see `with_records`)."""

    text: str  # compact JSON, without "r"
    event_uuid: str
    handoff: bool = False


def with_records(text: str, records: list[list[Any]]) -> str:
    """The checkpoint `text` carrying `records` ([seq, kind, fields without the call's
    uuid]) as its "r": what a successor writes again should this process die before
    the DbWriter commits them."""
    if not records:
        return text
    return text[:-1] + ',"r":' + json.dumps(records, separators=(",", ":")) + "}"


@dataclass(frozen=True)
class ReadChannel:
    """Read the channel again (`uuid_dump`) and hand it to `on_channel`: a resumed call
    whose awaited command had not started when it was first read may have been queued
    on the channel, behind the checkpoint that names it."""


Effect = Execute | Hangup | LookupCaller | Record | StartTimer | CancelTimer | Finished | Checkpoint | ReadChannel


# --- what comes back to a flow (through on_info)


@dataclass(frozen=True)
class CrmAnswer:
    """The CRM's verdict for one call: `extension` is a validated extension or None,
    `reason` says why not (timeout, breaker open, invalid answer, not found...)."""

    call_uuid: str
    extension: str | None
    reason: str = ""

