"""Messages that cross between actors. Plain frozen values: they cross threads.

Who sends what:
  Supervisor  -> CallActor   EslEvent
  CallActor   -> CrmFetcher  CrmLookup
  CallActor   -> DbWriter    DbWrite
  CrmFetcher  -> CallActor   CrmAnswer        (reply to CrmFetcher.lookup)
  DbWriter    -> CallActor   DbAck            (reply to DbWriter.write, after commit)
  CallActor   -> Commander   ChannelCommand   (a sendmsg to the call's channel)
  Commander   -> CallActor   CommandFailed    (a sendmsg the switch refused or could not take)
  CallActor   -> itself      TimerFired
  DbWriter    -> CdrPoster   CdrQueued        (poke: CDRs wait in the outbox)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ivr.effects import CrmAnswer  # defined beside the flows that read it
from ivr.event import Event

__all__ = [
    "AckBox", "CallDeclined", "CallFailed", "CallFinished", "CdrQueued", "ChannelCommand",
    "ChannelCommands", "ChannelsListed",
    "CallStopped", "CommandFailed", "ConfirmChannel", "CrmAnswer", "CrmLookup", "DbAck", "DbWrite",
    "EslEvent", "LinkChanged", "ListChannels", "ServiceDied", "TimerFired", "WriterReplaced",
]


@dataclass
class EslEvent:
    """One event for one actor, made for it (never shared). The call actor drops
    `event` once it has handled it: pykka's loop holds an actor's last message while it
    waits for the next, and an idle call would keep its last event (~3 KB) alive."""

    event: Event
    read_at: float = 0.0  # time.monotonic() when the reader read it (0: not stamped)
    counted: bool = False  # the reader counts it in its call's route until forwarded (actors.routes)


@dataclass(frozen=True)
class DbWrite:
    """One idempotent write: (call_uuid, seq) identifies it across resends.
    `kind` and `fields` are those of `ivr.effects.Record`. After the commit the writer
    tells `reply_to` (an ActorRef, an AckBox, or None) a DbAck."""

    call_uuid: str
    seq: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    reply_to: Any = None


@dataclass(frozen=True)
class CrmLookup:
    """Ask the CrmFetcher for a caller's extension; it tells `reply_to` (an ActorRef)
    a CrmAnswer whenever it knows, within `deadline_s` at the latest."""

    call_uuid: str
    caller_id: str
    reply_to: Any = None
    deadline_s: float | None = None


@dataclass(frozen=True)
class DbAck:
    """The writes `seqs` of one call are committed (one message per call per commit)."""

    call_uuid: str
    seq: int
    more: tuple[int, ...] = ()

    @property
    def seqs(self) -> tuple[int, ...]:
        return (self.seq, *self.more)


class AckBox:
    """A call's DbAcks, kept where its actor takes them when it needs to know (before
    it resends, lingers on or reports what is still unacknowledged) instead of being
    delivered: a commit then wakes no call thread, which at five commits a call was a
    third of a call actor's messages. The DbWriter tells it a DbAck after the commit,
    as it would tell an actor. Any thread may tell; the call's actor takes."""

    __slots__ = ("_lock", "_seqs")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seqs: list[int] = []

    def tell(self, message: DbAck) -> None:
        with self._lock:
            self._seqs.extend(message.seqs)

    def take(self) -> list[int]:
        """The seqs acknowledged since the last take."""
        with self._lock:
            seqs, self._seqs = self._seqs, []
        return seqs


@dataclass(frozen=True)
class ChannelCommand:
    """CallActor -> Commander: `sendmsg` to a call's channel, told rather than asked
    through a proxy (nobody waits on it; a proxy call built a future per command).
    `app` "hangup" with `event_uuid` "" is the hangup call-command, `arg` its cause;
    SETVAR_COMMAND is the api `uuid_setvar <call_uuid> <arg>` (no application runs);
    otherwise `execute` of `app arg`. Failures come back to `reply_to` as CommandFailed."""

    call_uuid: str
    app: str
    arg: str
    event_uuid: str = ""
    lock: bool = False
    reply_to: Any = None
    since: Any = None  # actors.reporting.Cause: what caused it, for the reaction metric

    def deliver(self, commander: Any) -> None:
        """Call the Commander's (or a stand-in's) own method for this command."""
        if self.app == HANGUP_COMMAND and not self.event_uuid:
            commander.hangup(self.call_uuid, self.arg, reply_to=self.reply_to, since=self.since)
        elif self.app == SETVAR_COMMAND:
            commander.api(f"uuid_setvar {self.call_uuid} {self.arg}")  # nobody waits on it
        else:
            commander.execute(self.call_uuid, self.app, self.arg, self.event_uuid,
                              lock=self.lock, reply_to=self.reply_to, since=self.since)


HANGUP_COMMAND = "hangup"
# Not an application: the api uuid_setvar, in the call's command stream (the checkpoint).
SETVAR_COMMAND = " uuid_setvar"


@dataclass(frozen=True)
class ChannelCommands:
    """CallActor -> Commander: the commands one batch of a call's flow sends (a
    checkpoint and the command behind it, a hangup after a prompt), written to the
    switch together and in this order: one message and one round trip for them all."""

    commands: tuple[ChannelCommand, ...]


@dataclass(frozen=True)
class CommandFailed:
    call_uuid: str
    event_uuid: str
    reply: str
    # True when the reply was lost: the switch may have run the command all the same.
    uncertain: bool = False


@dataclass(frozen=True)
class ListChannels:
    """Supervisor -> Commander: list the live channels (`show channels as json`) and
    tell `reply_to` a ChannelsListed. A message, not an ask: the supervisor goes on
    routing events while a busy switch answers."""

    reply_to: Any
    resync: int  # which resync asks (a newer one makes an older answer stale)
    attempt: int
    asked_at: float  # monotonic


@dataclass(frozen=True)
class ChannelsListed:
    resync: int
    attempt: int
    asked_at: float
    channels: tuple[tuple[str, str], ...] = ()  # (uuid, application)
    error: str = ""


@dataclass(frozen=True)
class ConfirmChannel:
    """Supervisor -> CallActor after a resync that did not list its channel (`show
    channels` can lag): confirm with `uuid_exists` on the actor's own thread; gone
    though no hangup reached us, the call is closed as a hangup not seen."""


@dataclass(frozen=True)
class TimerFired:
    name: str
    generation: int


# --- supervision (CallActor / supervised services -> Supervisor, Service -> Supervisor)


@dataclass(frozen=True)
class CallFailed:
    """A CallActor died of an exception (its on_failure): the call must not be left
    in silence."""

    call_uuid: str
    state: str
    error: str
    checkpoint: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    unacked: tuple[DbWrite, ...] = ()  # handed to the replacement, which resends them
    last_seq: int = 0  # the replacement numbers its writes after this one


@dataclass(frozen=True)
class CallFinished:
    """The call hung up; its actor lingers a moment for late events and acks."""

    call_uuid: str


@dataclass(frozen=True)
class CallStopped:
    """A CallActor stopped: normally after its call ended (`finished`), or from
    outside while the call was still going, which the supervisor treats as a death."""

    call_uuid: str
    finished: bool
    state: str = ""
    checkpoint: dict[str, Any] = field(default_factory=dict)
    unacked: tuple[DbWrite, ...] = ()
    last_seq: int = 0


@dataclass(frozen=True)
class CallDeclined:
    """A CallActor sent to adopt a channel looked and found it is not ours to touch
    (handed off, someone else's application, not our flow, gone): forget it."""

    call_uuid: str
    reason: str


@dataclass(frozen=True)
class ServiceDied:
    """A supervised service actor (DbWriter, CrmFetcher, CdrPoster, Commander) died."""

    name: str
    error: str


@dataclass(frozen=True)
class WriterReplaced:
    """The DbWriter was replaced: resend every write it did not acknowledge."""


@dataclass(frozen=True)
class LinkChanged:
    """The event connection went up (after a (re)subscribe) or down."""

    up: bool
    reason: str = ""
    # A threading.Event the supervisor sets once it has adopted the calls parked
    # while the link was down (so "ready" means every live call has an owner).
    adopted: Any = None


@dataclass(frozen=True)
class CdrQueued:
    """DbWriter -> CdrPoster: CDRs were committed to the outbox; post them now rather
    than at the next poll."""


# --- outbound mode: a call on its own socket (actors.channel_link)


@dataclass(frozen=True)
class OutboundCall:
    """Outbound server to supervisor: `link` has connected; its call wants an actor."""

    link: Any  # actors.channel_link.ChannelLink


@dataclass(frozen=True)
class SocketClosed:
    """Link to the call's actor: the socket closed before the call's hangup came. The
    switch runs the dialplan after `socket`, which may offer the call again."""


@dataclass(frozen=True)
class Reoffered:
    """Supervisor to a call's actor: the call came back on `link` (the dialplan's next
    `socket`, or a transfer back into the IVR); `flow` is a fresh flow to take it over
    with, the actor keeping its own write numbering."""

    link: Any  # actors.channel_link.ChannelLink
    flow: Any
