"""Messages that cross between actors. Plain frozen values: they cross threads.

Who sends what:
  Supervisor  -> CallActor   EslEvent
  CrmFetcher  -> CallActor   CrmAnswer        (reply to CrmFetcher.lookup)
  DbWriter    -> CallActor   DbAck            (reply to DbWriter.write, after commit)
  Commander   -> CallActor   CommandFailed    (a sendmsg the switch refused or could not take)
  CallActor   -> itself      TimerFired
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivr.event import Event


@dataclass(frozen=True)
class EslEvent:
    event: Event


@dataclass(frozen=True)
class CrmAnswer:
    """The CRM's verdict for one call: `extension` is a validated extension or None,
    `reason` says why not (timeout, breaker open, invalid answer, not found...)."""

    call_uuid: str
    extension: str | None
    reason: str = ""


@dataclass(frozen=True)
class DbWrite:
    """One idempotent write: (call_uuid, seq) identifies it across resends."""

    call_uuid: str
    seq: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DbAck:
    call_uuid: str
    seq: int


@dataclass(frozen=True)
class CommandFailed:
    call_uuid: str
    event_uuid: str
    reply: str


@dataclass(frozen=True)
class TimerFired:
    name: str
    generation: int
