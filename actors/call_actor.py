"""CallActor: one pykka actor per call, hosting that call's Flow.

The flow (ivr/) decides; this actor carries its effects out: commands to the
Commander, lookups to the CrmFetcher, rows to the DbWriter, timers to the shared
TimerService. It never blocks on anything but its own mailbox.

Writes are numbered per call and kept until the DbWriter acknowledges their commit:
pykka drops the queued tells of an actor that dies, so a write is only done when the
ack says so. When the supervisor replaces the writer it tells every call
`WriterReplaced`, and the call sends what is still unacknowledged again (the writer's
idempotent keys make repeats harmless).
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import pykka

from actors import mailbox
from actors.logcontext import set_call_uuid
from actors.loop_threads import LoopThreads
from actors.messages import (
    HANGUP_COMMAND,
    SETVAR_COMMAND,
    AckBox,
    CallDeclined,
    CallFailed,
    CallFinished,
    CallStopped,
    ChannelCommand,
    ChannelCommands,
    CommandFailed,
    ConfirmChannel,
    CrmAnswer,
    CrmLookup,
    DbWrite,
    EslEvent,
    Reoffered,
    SocketClosed,
    TimerFired,
    WriterReplaced,
)
from actors.reporting import NO_TELEMETRY, Cause, Telemetry
from actors.timers import Timer, TimerService
from ivr import resume, socket_calls
from ivr.config import Config
from ivr.effects import (
    CancelTimer,
    Checkpoint,
    Execute,
    Finished,
    Hangup,
    LookupCaller,
    ReadChannel,
    Record,
    StartTimer,
    with_records,
)
from ivr.event import Event, channel_data_event
from ivr.flow import (
    ENDED_UNWATCHED_CAUSE,
    LOST_HANGUP_CAUSE,
    UNSEEN_HANGUP_CAUSE,
    CallInfo,
    Flow,
)
from ivr.resume import CHECKPOINT_VARIABLE

logger = logging.getLogger(__name__)

_LINGER = "__linger__"
# A command whose Commander is dead waits this long, this many times, for the replacement.
_COMMANDER_WAIT_S = 0.05
_COMMANDER_WAIT_TRIES = 40


@dataclass(frozen=True)
class _Resend:
    """To itself: send `commands` again (their Commander was being replaced)."""

    commands: tuple[ChannelCommand, ...]
    tries: int


# The threads call actors run on (one per live call, kept a while for the next calls).
CALL_THREADS = LoopThreads()

_SOCKET_GONE = "__socket_gone__"
# A finished call waits for its writes to be acknowledged at most this many lingers.
_MAX_LINGERS = 12
# A finished call that expects no late event first looks at its acks after this long.
_QUICK_LOOK_S = 0.25
# Timers a call remembers before it forgets those that fired (a take-over looking again
# for hours would otherwise keep every one).
_TIMERS_KEPT = 32
# Reads of a channel before a take-over gives up (the next resync tries again).
_DUMP_TRIES = 3
# The write number of an actor's claim on its call (storage.records): apart from the
# flow's own numbers and the supervisor's.
_CLAIM_SEQ = 800_000
# ... and of its close of a row left open by an earlier process (storage.records).
_CLOSING_SEQ = 900_000


class _Gone(Exception):
    """The channel no longer exists."""


class _Unreadable(Exception):
    """The channel could not be read (every try timed out or the link was down)."""


@dataclass(frozen=True)
class _TakeOver:
    """To itself: look at the channel again (the last look could not read it)."""

    checkpoint: dict[str, Any]


@dataclass(frozen=True)
class _FilterOn:
    """From the event link's reader: the call's events pass from now on (see watch)."""


@dataclass(frozen=True)
class _LookAfterFilter:
    """To itself: a watched call's filter has been on a while; a channel gone by now
    ended before it was on (while icall was starting), its hangup never seen."""


# After its filter is on, a watched call's channel is looked at this much later.
_FILTER_LOOK_S = 2.0
# A take-over whose channel could not be read looks again after this many seconds times
# its attempt number, at most the second figure, for as long as the call lives: acting
# without reading could touch a caller who left the IVR.
_LOOK_AGAIN_S = 0.5
_LOOK_AGAIN_MAX_S = 10.0


@dataclass
class CallServices:
    """The refs a call talks to. Shared by all calls; the supervisor swaps `db_writer`
    or `crm` when it replaces one (a plain attribute store, atomic under the GIL)."""

    config: Config
    supervisor: Any
    commander: Any
    db_writer: Any
    crm: Any
    timers: TimerService
    # Where writes go without waking the DbWriter (actors.write_intake); None: told to
    # `db_writer` one by one.
    db_writes: Any = None
    observer: Any = None  # optional callable(uuid, history) when a call ends (the demo)
    telemetry: Telemetry = NO_TELEMETRY
    # Commanders that carry the calls' own commands, each on its own connection; a
    # call always uses the same one, so its commands keep their order. Empty: all go
    # through `commander` (which is the first of them when there are several).
    call_commanders: list[Any] = field(default_factory=list)
    # Every live CallActor by actor URN: the supervisor's hang check reads their
    # `busy_since` (actors.supervisor, _check_hung).
    call_actors: dict[str, Any] = field(default_factory=dict)
    # The event link's reader (inbound mode; None without one): lets through the events
    # of a call whose channel its filter does not match (actors.esl_reader.watch).
    event_link: Any = None
    _commander_proxy: Any = None
    _proxies: dict[str, Any] = field(default_factory=dict)  # by actor URN
    _proxied_ref: Any = None

    def commander_for(self, call_uuid: str) -> Any:
        """The Commander that sends `call_uuid`'s commands."""
        commanders = self.call_commanders
        if not commanders:
            return self.commander
        return commanders[zlib.crc32(call_uuid.encode()) % len(commanders)]

    def commander_proxy_for(self, call_uuid: str) -> Any:
        """The proxy of `call_uuid`'s own Commander (its api asks then travel behind
        its commands, and many calls' asks spread over the connections)."""
        ref = self.commander_for(call_uuid)
        proxy = self._proxies.get(ref.actor_urn)
        if proxy is None:
            proxy = self._proxies[ref.actor_urn] = ref.proxy()
        return proxy

    def commander_proxy(self) -> Any:
        """The Commander's proxy, built once per Commander: pykka builds a proxy by
        introspecting the actor, which at 100 calls/s cost ~8 % of the GIL."""
        ref = self.commander
        if self._proxied_ref is not ref:
            self._commander_proxy, self._proxied_ref = ref.proxy(), ref
        return self._commander_proxy


class CallActor(mailbox.Actor):
    """Runs on a thread of its own while it lives (from CALL_THREADS), named
    call-<uuid prefix>; every method below runs there."""

    # A daemon thread: Python scans every non-daemon thread each time one starts or
    # stops, which at 100 calls/s is measurable. Shutdown still stops every call actor
    # (Service._stop_supervisor) and its sweep checks the registry for leftovers.
    use_daemon_thread = True

    def _start_actor_loop(self) -> None:
        # pykka would start a thread per actor; a call's thread comes from the pool
        # of threads whose calls ended (actors.loop_threads), still one per live call.
        CALL_THREADS.run(self._actor_loop, f"call-{self.uuid[:8]}")

    def __init__(self, uuid: str, flow: Flow, services: CallServices, first_event: Event | None,
                 inherited_writes: tuple[DbWrite, ...] = (), last_seq: int = 0,
                 parked_read_at: float = 0.0, takeover: dict[str, Any] | None = None,
                 link: Any = None, close_row_if_gone: bool = False, may_listen: bool = True):
        """`first_event` starts the flow; None means the flow resumes a call whose
        previous actor died, `inherited_writes` are that actor's unacknowledged writes
        (sent again from here) and `last_seq` the number of its last write: numbering
        goes on after it, since a reused number would be taken for a repeat and dropped.
        `parked_read_at`: when the reader read the CHANNEL_PARK that is `first_event`
        (the takeover time is measured from it; 0 when not a park, e.g. an adoption).
        `takeover` makes this actor look at the channel (`uuid_dump`) before acting:
        `{}` adopts a call found on the switch (its checkpoint is on the channel), a
        dead handler's checkpoint resumes the call where that handler was.
        `link`: outbound mode, the call's own socket (actors.channel_link), which then
        carries its commands instead of the Commander. `close_row_if_gone`: the call
        has a row an earlier process left open; a take-over that finds the channel
        gone closes that row (a close record) instead of only declining."""
        super().__init__()
        self.link = link
        self._takeover = takeover
        self._declined = False
        self._claimed = False  # see _claim
        self._close_row_if_gone = close_row_if_gone
        # May take an outbound call it finds handed off as one to listen to (a process's
        # first look after its start); a later look (a reconnect's, the lag listing's)
        # would take calls that another worker holds on its own socket.
        self._may_listen = may_listen
        self._watching = False  # the event link lets this call's events through for it
        self.uuid = uuid
        self.flow = flow
        self.services = services
        self._first_event = first_event
        # From its park on, in inbound mode: every event of the call came to this actor.
        self._saw_whole_call = first_event is not None and takeover is None and link is None
        self._unacked: dict[int, DbWrite] = {w.seq: w for w in inherited_writes}
        self._acks = AckBox()  # where the DbWriter leaves the acks of this actor's writes
        self._seq = last_seq
        self._lingers = 0
        self._failed = False
        self._parked_read_at = parked_read_at
        self._socket_generation = 0  # outbound: a socket closed or came back (drops a stale grace timer)
        self._looks = 0  # take-over looks that could not read the channel
        self._timers: list[Timer] = []  # every timer this actor started (cancelled at its end)
        self._named_timers: dict[str, Timer] = {}  # the flow's, by name (it may cancel them)
        self._looking: _TakeOver | None = None  # set while the next look is due
        # When the message being handled began (0: idle, or in a bounded ask of the
        # switch): the supervisor replaces an actor busy for too long (hung).
        self.busy_since = 0.0
        # Set by the supervisor when it replaced this actor as hung: should it ever
        # wake up, it sends nothing and tells no one (its successor has the call).
        self.abandoned = False

    # --- pykka hooks

    def on_start(self) -> None:
        set_call_uuid(self.uuid)
        self.services.call_actors[self.actor_urn] = self
        try:
            self._begin()
        except Exception:
            # pykka calls neither on_failure nor on_stop for an exception here, so the
            # supervisor would never hear of it: report it ourselves, then stop.
            logger.exception("call handler failed to start")
            self.on_failure(*sys.exc_info())
            self.actor_ref.stop(block=False)

    def _begin(self) -> None:
        if self._takeover is not None:
            self._unacked = {seq: replace(w, reply_to=self._acks) for seq, w in self._unacked.items()}
            self._resend_unacked()
            self._take_over(self._takeover)
        elif self._first_event is not None:
            takeover = Cause("takeover", self._parked_read_at) if self._parked_read_at else None
            # The park (~3 KB of headers) is not kept for the call's lifetime.
            first_event, self._first_event = self._first_event, None
            self._apply(self.flow.start(first_event), takeover)
        else:  # a replacement resuming a call: its writes now answer to this actor
            self._unacked = {seq: replace(w, reply_to=self._acks) for seq, w in self._unacked.items()}
            self._resend_unacked()
            if self.flow.finished:
                self._start_linger()

    def on_receive(self, message: Any) -> None:
        if self.abandoned:
            self.actor_ref.stop(block=False)
            return
        self.busy_since = time.monotonic()
        try:
            self._receive(message)
        finally:
            self.busy_since = 0.0

    def _receive(self, message: Any) -> None:
        if self._looking is not None and not isinstance(message, _TakeOver):
            # Not taken over yet: nothing is acted on until the channel has been read;
            # a hangup is read at once (the look then finds the channel gone).
            if isinstance(message, EslEvent) and message.event.name == "CHANNEL_HANGUP_COMPLETE":
                self._take_over(self._looking.checkpoint)
            return
        if isinstance(message, EslEvent):
            event, message.event = message.event, None  # type: ignore[assignment]  # see EslEvent
            self._apply(self.flow.on_event(event), Cause("reaction", time.monotonic()))
        elif isinstance(message, TimerFired):
            if message.name == _LINGER:
                self._linger_over()
            elif message.name == _SOCKET_GONE:
                if message.generation == self._socket_generation and not self.flow.finished:
                    logger.warning("the call did not come back on a new socket: it is out of reach")
                    self._apply(self.flow.on_channel_gone(socket_calls.SOCKET_LOST_CAUSE))
            else:
                self._apply(self.flow.on_timer(message.name, message.generation))
        elif isinstance(message, CommandFailed):
            logger.warning("command %s refused: %s", message.event_uuid, message.reply)
            self._apply(self.flow.on_command_failed(message.event_uuid, message.reply,
                                                    message.uncertain))
        elif isinstance(message, _Resend):
            self._send(message.commands, message.tries)
        elif isinstance(message, ConfirmChannel):
            self._confirm_channel()
        elif isinstance(message, _FilterOn):
            self._schedule(_FILTER_LOOK_S, _LookAfterFilter())
        elif isinstance(message, _LookAfterFilter):
            self._confirm_channel(ENDED_UNWATCHED_CAUSE, "hung up before its events were let through")
        elif isinstance(message, _TakeOver):
            if message is self._looking:
                self._take_over(message.checkpoint)
        elif isinstance(message, ReadChannel):
            self._read_channel_again()
        elif isinstance(message, WriterReplaced):
            self._resend_unacked()
        elif isinstance(message, CrmAnswer):
            self._apply(self.flow.on_info(message))
        elif isinstance(message, SocketClosed | Reoffered):
            self._outbound(message)
        else:
            self._apply(self.flow.on_info(message))

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.services.call_actors.pop(self.actor_urn, None)
        self._cancel_timers()
        self._stop_watching()
        if self.abandoned:
            return
        self._settle_acks()
        self._failed = True
        logger.error("call handler failed in state %s: %r", self.flow.state, exception_value)
        self._tell_supervisor(CallFailed(
            call_uuid=self.uuid, state=self.flow.state, error=repr(exception_value),
            checkpoint=self._safe_checkpoint(), finished=self.flow.finished,
            unacked=tuple(self._unacked.values()), last_seq=self._seq,
        ))

    def on_stop(self) -> None:
        self.services.call_actors.pop(self.actor_urn, None)
        self._cancel_timers()
        self._stop_watching()
        if self._failed or self._declined or self.abandoned:
            return  # on_failure or _decline already told the supervisor
        self._settle_acks()
        if self._unacked:
            logger.warning("stopping with %d unacknowledged writes", len(self._unacked))
        self._tell_supervisor(CallStopped(
            call_uuid=self.uuid, finished=self.flow.finished, state=self.flow.state,
            checkpoint=self._safe_checkpoint() if not self.flow.finished else {},
            unacked=tuple(self._unacked.values()), last_seq=self._seq,
        ))

    # --- taking a call over (adoption after a start or reconnect, or a dead handler)

    def _take_over(self, checkpoint: dict[str, Any]) -> None:
        """Look before acting: read the channel, then start, resume or leave the call.
        Blocks this call's own thread only, on one bounded ask per try."""
        ivr = self.services.config.ivr
        self._looking = None
        try:
            channel = self._channel_dump()
        except _Unreadable as exc:
            self._looks += 1
            delay_s = min(_LOOK_AGAIN_MAX_S, _LOOK_AGAIN_S * self._looks)
            logger.warning("taking over: could not read the channel (%s); again in %.1f s", exc, delay_s)
            self._looking = _TakeOver(checkpoint)
            self._schedule(delay_s, self._looking)
            return
        except _Gone:
            if checkpoint:  # ours, and it ended while no handler listened
                self._write_recent(checkpoint)
                self.flow.resume_after_failure(checkpoint)
                self._apply(self.flow.on_channel_gone(UNSEEN_HANGUP_CAUSE, time.time()))
            elif self._close_row_if_gone:
                self._close_row()
            else:
                self._decline("the channel is gone")
            return
        if checkpoint and checkpoint.get("s") != self.flow.final_state:
            self._claim()
            self._write_recent(checkpoint)
            self._apply(self.flow.resume(checkpoint, channel))
            return
        on_channel = resume.decode(channel.variable(CHECKPOINT_VARIABLE))
        if (self.link is None and channel.variable(ivr.flow_variable) != ivr.flow
                and (self._close_row_if_gone or checkpoint or (on_channel is not None and self._may_listen))):
            self._listen_outbound(channel, checkpoint or on_channel or {})
            return
        verdict = resume.look(channel, ivr.flow_variable, ivr.flow, self.flow.final_state,
                              offered=self.link is not None, written=checkpoint or None)
        logger.info("taking over: %s (%s)", verdict.action, verdict.reason)
        found = checkpoint or verdict.checkpoint
        if found:  # not a fresh start: its "call" record claims it without an urgent write
            self._claim()
        for known in (checkpoint, verdict.checkpoint):
            if known:  # its records written again, and this actor's numbering after them
                self._write_recent(known)
        if verdict.action == resume.START:
            # A new call on its own socket: every event of it comes to this actor, as
            # from an inbound park (no queue's late events to linger for, unless seen).
            self._saw_whole_call = self.link is not None and not checkpoint
            self._apply(self.flow.start(channel))
        elif verdict.action == resume.RESUME and verdict.checkpoint is not None:
            self._apply(self.flow.resume(verdict.checkpoint, channel))
        elif verdict.action == resume.REENTER and verdict.checkpoint is not None:
            self.flow.resume_after_failure(verdict.checkpoint)
            self._apply(self.flow.on_event(socket_calls.park_of(channel)))
        elif found:
            # Ours, handed off: never touched again, but listened to until its hangup,
            # which writes the CDR (and its queue's events their rows).
            self.flow.resume_after_failure(found)
        else:
            self._decline(verdict.reason)

    def _listen_outbound(self, channel: Event, checkpoint: dict[str, Any]) -> None:
        """A call of ours (its row is open, a dead handler had it, or it carries our
        checkpoint: a process killed before its row was committed) with no socket here
        and without the flow variable: an outbound call alive after a restart.
        Inside `socket`, another icall process holds it: left alone. Handed off (in a
        queue, bridged, transferred to the dialplan's fallback): never touched, but
        listened to on the event link, so its hangup writes the CDR with its cause."""
        app = channel.variable("current_application") or ""
        if app == "socket":
            self._decline("inside a socket app: another icall process holds it")
            return
        event_link = self.services.event_link
        if event_link is None:
            self._decline("an outbound call handed off, and no event link to hear its end on")
            return
        found = checkpoint
        logger.info("taking over: listening (an outbound call handed off, in %s)", app or "no application")
        # Claimed only when this process's start found its row open (its holder is gone:
        # the end this listener may have to write unseen is then its own to write); from
        # a channel alone it may be a live worker's (its prompt is the channel's
        # application, not `socket`), which keeps its claim.
        if self._close_row_if_gone:
            self._claim()
        if found:
            self._write_recent(found)
        self.flow.resume_after_failure(found)
        self.flow.call = CallInfo.from_park(channel)  # for its CDR
        self._watching = True
        # Its hangup may come before the filter is on: then the channel is looked at.
        event_link.watch(self.uuid, self._filter_on)

    def _filter_on(self) -> None:
        """The reader thread: this call's filter is on. A hangup from now on comes as an
        event; one before it was lost: the channel is looked at a little later (the
        event of a hangup just after the filter may still be on its way)."""
        try:
            self.actor_ref.tell(_FilterOn())
        except pykka.ActorDeadError:
            pass  # ended meanwhile

    def _stop_watching(self) -> None:
        if self._watching and self.services.event_link is not None:
            self._watching = False
            self.services.event_link.unwatch(self.uuid)

    def _close_row(self) -> None:
        """The call ended while no icall watched it: its row gets the end known (now,
        when icall saw it gone) and a cause saying so, and nothing else; storage.records
        leaves a row that has its end alone. Not kept for resend: a close lost with
        its writer leaves the row open, and the next start closes it."""
        logger.info("the call ended while icall was down: closing its row")
        self._write(DbWrite(self.uuid, _CLOSING_SEQ, "close", {"uuid": self.uuid, "at": time.time()}))
        self._decline("it ended while icall was down")

    def _claim(self) -> None:
        """This process holds the call from now on (it may have been another worker's
        or node's): said at once, so that one, if it lost the call unseen, does not
        write its end (storage.records). Once per actor; a repeat is harmless."""
        if _CLAIM_SEQ in self._unacked or self._claimed:
            return
        self._claimed = True
        write = DbWrite(self.uuid, _CLAIM_SEQ, "claim", {"uuid": self.uuid}, reply_to=self._acks)
        self._unacked[write.seq] = write
        self._write(write)

    def _confirm_channel(self, cause: str = LOST_HANGUP_CAUSE,
                         why: str = "hung up while the event link was down") -> None:
        """Not in a resync's listing, or watched and silent: gone for good
        (`uuid_exists` reads the live session), its hangup lost (`why`, `cause`)."""
        if self.flow.finished:
            return
        try:
            exists = self._ask_switch(f"uuid_exists {self.uuid}")
        except Exception as exc:  # the link dropped again: the next resync asks again
            logger.warning("could not check whether the channel still exists: %s", exc)
            return
        if exists.strip() == "false":
            logger.warning(why)
            self._apply(self.flow.on_channel_gone(cause, time.time()))

    def _read_channel_again(self) -> None:
        try:
            channel = self._channel_dump()
        except _Unreadable as exc:
            logger.warning("read again: could not read the channel (%s); again in %.1f s",
                           exc, _LOOK_AGAIN_MAX_S)
            self._schedule(_LOOK_AGAIN_MAX_S, ReadChannel())
            return
        except _Gone:
            logger.info("read again: the channel is gone; its hangup is on the way")
            return
        self._apply(self.flow.on_channel(channel))

    def _write_recent(self, checkpoint: dict[str, Any]) -> None:
        """Send again the records the checkpoint carries (the last ones before it was
        written): the handler that wrote it may have died before the DbWriter committed
        them. The writer keeps one row per (call, seq), so a repeat changes nothing."""
        for seq, kind, fields in checkpoint.get("r") or ():
            if seq in self._unacked or not isinstance(fields, dict):
                continue
            write = DbWrite(self.uuid, int(seq), str(kind), {"uuid": self.uuid, **fields},
                            reply_to=self._acks)
            self._unacked[write.seq] = write
            self._write(write)
        self._seq = max(self._seq, int(checkpoint.get("n") or 0))

    def _channel_dump(self) -> Event:
        """`uuid_dump <uuid> json`, tried a few times (each bounded): the Commander may
        be busy with many adoptions at once after a restart."""
        if self.link is not None and (channel := self.link.take_channel()) is not None:
            return channel  # outbound mode: the connect data, just read
        error: Exception | None = None
        for _ in range(_DUMP_TRIES):
            try:
                text = self._ask_switch(f"uuid_dump {self.uuid} json")
            except Exception as exc:  # a timeout or a dropped link: try again
                error = exc
                continue
            if text.startswith("-ERR"):
                raise _Gone(text)
            return channel_data_event(text)
        raise _Unreadable(str(error) or repr(error))

    def _ask_switch(self, command: str) -> str:
        """`api <command>` on this call's socket or Commander, waited for here, at most
        `[freeswitch] command_timeout_s`. A bounded wait is not a hang: the hang check
        does not count it (busy_since starts again after it)."""
        busy_since, self.busy_since = self.busy_since, 0.0
        try:
            return self._switch().api(command).get(timeout=self.services.config.freeswitch.command_timeout_s)
        finally:
            self.busy_since = busy_since and time.monotonic()

    def _decline(self, reason: str) -> None:
        logger.info("not ours to touch: %s", reason)
        self._declined = True
        self._tell_supervisor(CallDeclined(self.uuid, reason))
        self.actor_ref.stop(block=False)

    # --- outbound mode: the call's socket closed before its hangup

    def _outbound(self, message: SocketClosed | Reoffered) -> None:
        """A closed socket waits `[outbound] socket_grace_s` for the dialplan to offer the call again
        (README: a second `socket`); then the flow ends as for a channel gone unseen.
        Back in time, a fresh flow takes the call over from this actor's last checkpoint
        (or re-enters a handed-off one), and the writes go on with this actor's numbers,
        so nothing is recorded twice."""
        self._socket_generation += 1
        if isinstance(message, SocketClosed):
            if not self.flow.finished:
                self._schedule(self.flow.ctx.config.outbound.socket_grace_s,
                               TimerFired(_SOCKET_GONE, self._socket_generation))
            return
        checkpoint = self._safe_checkpoint()
        checkpoint.pop("q", None)  # what the closed socket carried may be lost: look
        self.link, self.flow = message.link, message.flow
        logger.info("the call came back on a new socket")
        self._take_over(checkpoint)

    # --- queries (asked by the supervisor and tests, with a timeout)

    def unacked_writes(self) -> list[DbWrite]:
        self._settle_acks()
        return list(self._unacked.values())

    def state(self) -> str:
        return self.flow.state

    # --- carrying effects out

    def _apply(self, effects: list[Any], since: Cause | None = None) -> None:
        """Carry `effects` out; the first command sent carries `since`, so the
        Commander can time it (see actors.reporting). The batch's commands go to the
        switch together, in order, after the rest (one message, one write)."""
        commands: list[ChannelCommand] = []
        handed_off = False
        for effect in effects:  # first the writes: the batch's checkpoint carries them
            if isinstance(effect, Record) and not self.abandoned:
                self._record(effect)
        for effect in effects:
            if self.abandoned:
                logger.warning("replaced while hung: %d effects dropped", len(effects))
                return
            if isinstance(effect, Execute):
                commands.append(ChannelCommand(self.uuid, effect.app, effect.arg, effect.event_uuid,
                                               effect.lock, self.actor_ref, since))
                since = None
            elif isinstance(effect, Checkpoint) and not effect.handoff:
                # An api in the call's command stream, in order: set before the commands
                # behind it reach the channel. Nobody waits on it.
                text = resume.setvar_value(self._with_records(effect.text))
                commands.append(ChannelCommand(self.uuid, SETVAR_COMMAND, f"{CHECKPOINT_VARIABLE} {text}",
                                               effect.event_uuid))
            elif isinstance(effect, Checkpoint):
                handed_off = True
                # Nobody waits on it: a refusal (the channel just left) needs no answer.
                commands.append(ChannelCommand(self.uuid, "set",
                                               f"{CHECKPOINT_VARIABLE}={self._with_records(effect.text)}",
                                               effect.event_uuid, lock=True))
            elif isinstance(effect, Hangup):
                commands.append(ChannelCommand(self.uuid, HANGUP_COMMAND, effect.cause,
                                               reply_to=self.actor_ref, since=since))
                since = None
            elif isinstance(effect, LookupCaller):
                self._tell(self.services.crm, CrmLookup(self.uuid, effect.caller_id, self.actor_ref))
            elif isinstance(effect, Record):
                pass  # written above
            elif isinstance(effect, StartTimer):
                self._schedule(effect.delay_s, TimerFired(effect.name, effect.generation), effect.name)
            elif isinstance(effect, CancelTimer):
                timer = self._named_timers.pop(effect.name, None)
                if timer is not None:
                    timer.cancel()
            elif isinstance(effect, Finished):
                self._start_linger()
            elif isinstance(effect, ReadChannel):
                self.actor_ref.tell(effect)  # read after this batch is carried out
            else:
                raise TypeError(f"unknown effect {effect!r}")
        self._send(commands)
        if handed_off and self.link is not None:
            self.link.handed_off()

    def _with_records(self, checkpoint: str) -> str:
        """The checkpoint carrying the writes not acknowledged yet (most often only its
        own batch's: the DbWriter commits within [database] commit_interval_ms, a
        step takes seconds), each without the call's uuid (`_write_recent` puts it back)."""
        self._settle_acks()
        records = [[w.seq, w.kind, {k: v for k, v in w.fields.items() if k != "uuid"}]
                   for w in sorted(self._unacked.values(), key=lambda w: w.seq)]
        return with_records(checkpoint, records)

    def _switch(self) -> Any:
        """Where this call's api asks go: its own socket in outbound mode, else its
        own Commander (both take the same calls)."""
        return self.link if self.link is not None else self.services.commander_proxy_for(self.uuid)

    def _send(self, commands: list[ChannelCommand] | tuple[ChannelCommand, ...], tries: int = 0) -> None:
        if not commands:
            return
        if self.link is not None:  # outbound mode: the call's own socket
            for command in commands:
                command.deliver(self.link)
            return
        message = commands[0] if len(commands) == 1 else ChannelCommands(tuple(commands))
        try:
            self.services.commander_for(self.uuid).tell(message)
        except pykka.ActorDeadError:
            # The Commander died and the supervisor is replacing it. A tell to a dead
            # actor is never queued, so the commands have not gone out: send them again
            # shortly, on the replacement; past the wait, the flow hears refusals.
            if tries < _COMMANDER_WAIT_TRIES:
                self._schedule(_COMMANDER_WAIT_S, _Resend(tuple(commands), tries + 1))
            else:
                for command in commands:
                    self.actor_ref.tell(CommandFailed(self.uuid, command.event_uuid, "-ERR no Commander"))

    def _record(self, record: Record) -> None:
        self._settle_acks()  # a long call forgets what is committed as it goes
        self._seq += 1
        write = DbWrite(self.uuid, self._seq, record.kind, record.fields, reply_to=self._acks)
        self._unacked[self._seq] = write
        self._write(write)

    def _settle_acks(self) -> None:
        """Forget the writes the DbWriter has acknowledged (see AckBox)."""
        for seq in self._acks.take():
            self._unacked.pop(seq, None)

    def _resend_unacked(self) -> None:
        self._settle_acks()
        if not self._unacked:
            return
        logger.info("resending %d unacknowledged writes", len(self._unacked))
        for write in sorted(self._unacked.values(), key=lambda w: w.seq):
            self._write(write)

    def _start_linger(self) -> None:
        self._tell_supervisor(CallFinished(self.uuid))
        observer = self.services.observer
        if observer is not None:
            observer(self.uuid, list(self.flow.history))
        self._schedule(self._first_linger_s(), TimerFired(_LINGER, 0))

    def _first_linger_s(self) -> float:
        """When a finished call first looks whether it may stop. One that went through
        a queue waits `[ivr] hangup_linger_s` for the queue's late events, and so does
        one this actor did not see whole (resumed, adopted, offered again on a new
        socket: it may have been queued). Any other call, a new one on its own socket
        too, expects nothing more after its hangup: it stops once its writes are
        acknowledged (the CDR is committed at once), so its thread and memory are not
        held for seconds (at 20 calls/s and 5 s, 100 idle actors beside the live calls),
        nor its socket: a lingering socket keeps the switch's session and its listener
        thread up (measured on the lab switch: 9 ms of the switch's CPU a call)."""
        linger_s = self.flow.ctx.config.ivr.hangup_linger_s
        if self.flow.queue_seen or not self._saw_whole_call:
            return linger_s
        return min(linger_s, _QUICK_LOOK_S)

    def _linger_over(self) -> None:
        # Stay while writes are unacknowledged (the writer may be restarting), but not
        # forever: the supervisor's resend covers a writer that comes back later.
        self._lingers += 1
        self._settle_acks()
        if self._unacked and self._lingers < _MAX_LINGERS:
            self._schedule(self.flow.ctx.config.ivr.hangup_linger_s or 1.0, TimerFired(_LINGER, 0))
            return
        self.actor_ref.stop(block=False)

    def abandon(self) -> tuple[dict[str, Any], tuple[DbWrite, ...], int]:
        """Called by the supervisor, in its thread, on this actor found hung: from now
        on it sends nothing. Returns what a successor needs (read from a thread that
        is stuck, so its state holds still): the checkpoint, the writes not
        acknowledged and the number of the last write."""
        self.abandoned = True
        acked = set(self._acks.take())  # read here, not applied: the thread may wake
        unacked = tuple(w for seq, w in list(self._unacked.items()) if seq not in acked)
        return self._safe_checkpoint(), unacked, self._seq

    def _safe_checkpoint(self) -> dict[str, Any]:
        try:
            return self.flow.handler_checkpoint()
        except Exception:  # the flow just failed; its checkpoint may fail too
            logger.exception("checkpoint failed")
            return {"s": self.flow.state}

    def _schedule(self, delay_s: float, message: Any, name: str = "") -> None:
        """`message` to this actor after `delay_s`; cancelled if the actor stops first,
        or when the flow cancels the timer `name`."""
        if len(self._timers) >= _TIMERS_KEPT:  # a long call: forget the ones done with
            self._timers = [timer for timer in self._timers if timer.ref is not None]
            self._named_timers = {key: timer for key, timer in self._named_timers.items()
                                  if timer.ref is not None}
        timer = self.services.timers.schedule(delay_s, self.actor_ref, message)
        self._timers.append(timer)
        if name:
            self._named_timers[name] = timer

    def _cancel_timers(self) -> None:
        """A stopped actor's timers would hold its ref (and mailbox) for up to
        `[ivr] command_timeout_s` after the call: drop them."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._named_timers.clear()

    def _write(self, write: DbWrite) -> None:
        intake = self.services.db_writes
        try:
            if intake is not None:
                intake.put(write)
            else:
                self.services.db_writer.tell(write)
        except pykka.ActorDeadError:
            logger.warning("the DbWriter is not running; write %d kept for resend", write.seq)

    def _tell(self, ref: Any, message: Any) -> None:
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            logger.warning("%s is not running; %s kept for resend", type(message).__name__,
                           getattr(message, "seq", ""))

    def _tell_supervisor(self, message: Any) -> None:
        try:
            self.services.supervisor.tell(message)
        except pykka.ActorDeadError:
            pass  # shutting down
