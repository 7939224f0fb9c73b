"""Supervisor: owns the calls. Every event from the reader comes here first.

- A CHANNEL_PARK whose flow variable names our flow, for a UUID nobody owns, spawns a
  CallActor (above max_concurrent_calls the call goes to the overflow destination).
- Any other event is routed by Unique-ID to the call's actor.
- A CallActor that dies (on_failure tells us at once: pykka has no links) is replaced
  by a fresh actor that resumes the call in the state it died in (from the dead one's
  checkpoint and a look at the channel); the failure is recorded. Past
  `_MAX_RESTARTS` deaths within `_RESTART_WINDOW_S` the caller goes to the safe
  destination, and a last actor listens in `final_loop` so the CDR is still written.
- A finished call's actor lingers a little (late events and acks still land), then
  stops and is forgotten.
- A supervised service (DbWriter, CrmFetcher) that dies is replaced at once; after a
  new DbWriter every call resends its unacknowledged writes.
- After a start or a reconnect, every channel that may be ours gets an actor that looks
  before it acts (`CallActor._take_over`): it reads the channel and starts, resumes or
  leaves the call. The listing is one `show channels`; the reads run in the calls' own
  actors, so event routing never waits on them.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pykka

from actors import mailbox
from actors.call_actor import CallActor, CallServices
from actors.channel_link import ChannelLink
from actors.messages import (
    CallDeclined,
    CallFailed,
    CallFinished,
    CallStopped,
    ChannelCommand,
    ChannelsListed,
    ConfirmChannel,
    DbWrite,
    EslEvent,
    LinkChanged,
    ListChannels,
    OutboundCall,
    Reoffered,
    ServiceDied,
    WriterReplaced,
)
from actors.reconfigure import Reconfigure
from actors.routes import CallRoutes, RouteReady
from ivr.event import Event
from ivr.flow import Flow

logger = logging.getLogger(__name__)

# Failures recorded by the supervisor use their own write numbers, far above a call's.
_SUPERVISOR_SEQ_BASE = 1_000_000
# A call whose actor dies this many times within the window is given up (after a last
# transfer to safety); fewer deaths resume it where it was.
_MAX_RESTARTS = 3
_RESTART_WINDOW_S = 10.0
# A failed channel listing is asked again after this many seconds times its attempt
# number, at most the second figure.
_LISTING_RETRY_S = 0.5
_LISTING_RETRY_MAX_S = 5.0
# A resync lists the channels a second time this long after its first listing: the
# switch lists from its core database, filled a little after the fact, so a call
# parked just before the event link came up (its CHANNEL_PARK never seen) may be
# missing from the first listing; missing from both, it waited in silence for ever.
_LAG_LOOK_S = 2.0


@dataclass(frozen=True)
class _ListAgain:
    resync: int
    attempt: int


@dataclass(frozen=True)
class _LagLook:
    """The supervisor's own: list the channels again for resync `resync` (_LAG_LOOK_S)."""

    resync: int


@dataclass(frozen=True)
class _CheckHung:
    """The supervisor's own tick: look for call actors stuck in one message."""


@dataclass(slots=True)
class _Call:
    ref: pykka.ActorRef
    started_at: float
    restarts: int = 0
    # Monotonic times of recent deaths: a list (a deque is 624 bytes even empty, and
    # every live call has one of these records).
    deaths: list[float] = field(default_factory=list)
    finished: bool = False
    failed: bool = False
    extra_seq: int = field(default=_SUPERVISOR_SEQ_BASE)
    link: Any = None  # outbound mode: the call's own socket (actors.channel_link)
    # What makes this call's flow again (a resume, a new socket): the maker it started
    # with, so a reload never changes a live call's settings.
    make_flow: Any = None


class Supervisor(mailbox.Actor):
    """Runs in its own thread; all state below is touched only there."""

    def __init__(self, services: CallServices, make_flow: Callable[[str], Flow],
                 replace_service: Callable[[str], Any] | None = None,
                 on_call_gone: Callable[[str], None] | None = None,
                 routes: CallRoutes | None = None):
        """`on_call_gone(uuid)` is called (in this thread) when a call's actor has
        stopped for good: its writes are acknowledged by then (tests and the demo
        wait on it). `routes`: shared with the reader, which sends the events of the
        calls this supervisor owns straight to their actors (actors.routes)."""
        super().__init__()
        # Not `routes or ...`: an empty CallRoutes is falsy (it has a length), and the
        # reader would then mark routes this supervisor never opens.
        self.routes = routes if routes is not None else CallRoutes(services.config.ivr.flow_variable,
                                                                   services.config.ivr.flow)
        self.on_call_gone = on_call_gone
        self.services = services
        self.config = services.config
        self.make_flow = make_flow
        self.replace_service = replace_service
        self.calls: dict[str, _Call] = {}
        self.unfinished: set[str] = set()  # calls not hung up yet: the concurrency limit's count
        self.counters = {"calls_started": 0, "calls_overflowed": 0, "calls_failed": 0,
                         "events_routed": 0, "events_unowned": 0, "calls_adopted": 0,
                         "calls_declined": 0, "calls_resumed": 0, "calls_given_up": 0,
                         "calls_closed_unseen": 0, "calls_hung": 0, "resyncs": 0, "claims_refused": 0,
                         "services_replaced": 0}
        self.last_event_at = time.monotonic()
        self.stopping = False
        self._rows_checked = False  # calls left open by an earlier process (once)
        self._open_rows: set[str] = set()  # those whose actor looks at the channel
        self._resync_number = 0
        self._lag_looked = 0  # the latest resync whose second listing has been asked
        self._adopted: Any = None  # a threading.Event to set once a resync has adopted

    def on_start(self) -> None:
        self.services.supervisor = self.actor_ref
        # stats() only reads counters and lengths: safe from the scrape thread too.
        self.services.telemetry.watch("supervisor", self.stats)
        self._schedule_hang_check()

    # --- messages

    def on_receive(self, message: Any) -> None:
        if isinstance(message, EslEvent):
            self._route(message.event, message.read_at)
            if message.counted:
                self.routes.forwarded(message.event.uuid)
        elif isinstance(message, RouteReady):
            self.routes.opened(message.call_uuid)
        elif isinstance(message, OutboundCall):
            self._start_outbound(message.link)
        elif isinstance(message, CallFinished):
            call = self.calls.get(message.call_uuid)
            if call is not None:
                call.finished = True
            self.unfinished.discard(message.call_uuid)
        elif isinstance(message, CallStopped):
            self._call_stopped(message)
        elif isinstance(message, CallFailed):
            self._call_failed(message)
        elif isinstance(message, CallDeclined):
            if message.call_uuid in self._open_rows:
                self._open_rows.discard(message.call_uuid)  # closed, or another's: not adopted
            else:
                self.counters["calls_declined"] += 1
                self.counters["calls_adopted"] -= 1
            self._forget(message.call_uuid)
        elif isinstance(message, ServiceDied):
            self._service_died(message)
        elif isinstance(message, ChannelsListed):
            self._listed(message)
        elif isinstance(message, _ListAgain):
            if message.resync == self._resync_number:
                self._ask_listing(message.resync, message.attempt)
        elif isinstance(message, _LagLook):
            if message.resync == self._resync_number and not self.stopping:
                self._ask_listing(message.resync, 1)
        elif isinstance(message, _CheckHung):
            self._check_hung()
            self._schedule_hang_check()
        elif isinstance(message, LinkChanged):
            if message.up:
                self._adopted = message.adopted
                self._resync()
        elif isinstance(message, Reconfigure):
            self._reconfigure(message)
        else:
            logger.warning("unexpected message %r", message)

    def _reconfigure(self, message: Reconfigure) -> None:
        """A reload: the calls started from now on get flows from `message.make_flow`;
        each live call keeps the maker it started with (`_Call.make_flow`)."""
        self.config = self.services.config = message.config
        if message.make_flow is not None:
            self.make_flow = message.make_flow

    def _route(self, event: Event, read_at: float = 0.0) -> None:
        self.last_event_at = time.monotonic()
        uuid = event.uuid
        call = self.calls.get(uuid)
        if call is not None:
            self.counters["events_routed"] += 1
            try:
                call.ref.tell(EslEvent(event))
            except pykka.ActorDeadError:
                logger.debug("event %s for %s after its actor stopped", event.name, uuid)
            return
        if event.name == "CHANNEL_PARK" and self._is_our_flow(event):
            if not self._start_call(uuid, event, read_at):
                self.routes.remove(uuid)
        elif uuid:
            self.counters["events_unowned"] += 1

    def _is_our_flow(self, event: Event) -> bool:
        ivr = self.config.ivr
        return event.variable(ivr.flow_variable) == ivr.flow

    # --- calls

    def _start_call(self, uuid: str, event: Event, read_at: float = 0.0) -> bool:
        """Start a CallActor for a new call; False when the call is over the limit."""
        if self._overflowed(uuid):
            return False
        ref = CallActor.start(uuid, self.make_flow(uuid), self.services, event, parked_read_at=read_at)
        self._own(uuid, ref)
        self.unfinished.add(uuid)
        self.counters["calls_started"] += 1
        return True

    def _overflowed(self, uuid: str, link: Any = None) -> bool:
        """Over `[ivr] max_concurrent_calls`: the call goes to the overflow destination
        (on its own socket in outbound mode) and gets no actor."""
        ivr = self.config.ivr
        if len(self.unfinished) < ivr.max_concurrent_calls:
            return False
        self.counters["calls_overflowed"] += 1
        logger.warning("call %s over the limit of %d calls: sent to %s", uuid,
                       ivr.max_concurrent_calls, ivr.overflow_destination)
        if link is not None:  # a refused transfer lets the socket go: the dialplan goes on
            link.send_away(ivr.overflow_destination, str(uuidlib.uuid4()))
        else:
            self._transfer(uuid, ivr.overflow_destination)
        return True

    def _start_outbound(self, link: ChannelLink) -> None:
        """A call on its own socket (outbound mode): its actor looks at the connect
        data and starts, resumes or re-enters the flow (ivr.socket_calls)."""
        uuid = link.uuid
        if self.stopping:  # told before the listener closed: the switch gets it back
            link.exit()
            return
        old = self.calls.get(uuid)
        if old is not None and old.ref.is_alive() and not old.finished:
            if old.link is not None and not old.link.switch_let_go():
                # Its own socket still carries it: whoever this is, it is not the switch
                # handing the call over, and it gets nothing of the call.
                self.counters["claims_refused"] += 1
                logger.warning("outbound connection from %s claims call %s, live on its socket "
                               "from %s: refused", link.peer, uuid, old.link.peer)
                link.refuse()
                return
            # Back while its actor still has it: that actor goes on, on the new socket.
            if old.link is not None:
                old.link.retire()
            old.link = link
            old.ref.tell(Reoffered(link, (old.make_flow or self.make_flow)(uuid)))
            link.attach(old.ref)
            return
        if old is not None:  # an ended call's actor lingers: the new socket wins
            old.ref.stop(block=False)
            self._forget(uuid)
        if self._overflowed(uuid, link):
            return
        ref = CallActor.start(uuid, self.make_flow(uuid), self.services, None, takeover={}, link=link)
        self.calls[uuid] = _Call(ref=ref, started_at=time.monotonic(), link=link, make_flow=self.make_flow)
        link.attach(ref)
        self.unfinished.add(uuid)
        self.counters["calls_started"] += 1

    def _own(self, uuid: str, ref: pykka.ActorRef) -> None:
        """`ref` handles `uuid` from now on; its route opens behind the events queued here."""
        call = self.calls[uuid] = _Call(ref=ref, started_at=time.monotonic(), make_flow=self.make_flow)
        self.routes.attach(uuid, call, self.actor_ref)

    def _call_stopped(self, message: CallStopped) -> None:
        call = self.calls.get(message.call_uuid)
        if call is None or call.ref.is_alive():
            return  # unknown, or a replacement actor is already running
        if not message.finished and not self.stopping:
            self._recover(call, message.call_uuid, message.state, "stopped from outside",
                          message.checkpoint, message.unacked, message.last_seq, finished=False)
            return
        self._forget(message.call_uuid)

    def _call_failed(self, message: CallFailed) -> None:
        self.counters["calls_failed"] += 1
        call = self.calls.get(message.call_uuid)
        if call is None:
            return
        self._recover(call, message.call_uuid, message.state, message.error,
                      message.checkpoint, message.unacked, message.last_seq, message.finished)

    def _recover(self, call: _Call, uuid: str, state: str, error: str, checkpoint: dict[str, Any],
                 unacked: tuple[DbWrite, ...], last_seq: int, finished: bool) -> None:
        """A call's actor is gone before its time: resume the call in a fresh actor,
        unless it keeps dying; keep the records whole either way."""
        call.failed = True
        logger.error("call %s handler died in %s (%s)", uuid, state, error)
        failure = self._failure_record(call, uuid, state, error)
        if self.stopping:
            self._tell_writer(failure)
            self._forget(uuid)
            return
        now = time.monotonic()
        call.deaths.append(now)
        while call.deaths and now - call.deaths[0] > _RESTART_WINDOW_S:
            del call.deaths[0]
        call.restarts += 1
        flow = (call.make_flow or self.make_flow)(uuid)
        if finished or len(call.deaths) > _MAX_RESTARTS or not checkpoint:
            if not finished:
                # A crash loop: no caller sits in silence. The last actor listens in
                # final_loop so the hangup still writes the CDR.
                self.counters["calls_given_up"] += 1
                self._transfer(uuid, flow.ctx.config.ivr.safe_destination, call.link)
            flow.resume_after_failure(checkpoint)
            call.ref = CallActor.start(uuid, flow, self.services, None, (*unacked, failure), last_seq,
                                       link=call.link)
            if call.link is not None:
                call.link.attach(call.ref)
            return
        # The fresh actor reads the channel, then resumes where the dead one was; it
        # sends (and resends until acknowledged) the failure record and what the dead
        # one had not got acknowledged.
        self.counters["calls_resumed"] += 1
        call.ref = CallActor.start(uuid, flow, self.services, None, (*unacked, failure), last_seq,
                                   takeover=checkpoint, link=call.link)
        if call.link is not None:
            call.link.attach(call.ref)

    # --- hung call actors

    def _schedule_hang_check(self) -> None:
        hung_after_s = self.config.ivr.hung_actor_s
        if hung_after_s > 0 and not self.stopping:
            self.services.timers.schedule(max(0.5, hung_after_s / 2), self.actor_ref, _CheckHung())

    def _check_hung(self) -> None:
        """An actor busy with one message for longer than `[ivr] hung_actor_s` (it
        would not answer an ask either) is replaced as if it had died: its thread
        cannot be killed, so it is marked abandoned (should it wake, it sends nothing)
        and a fresh actor reads the channel and resumes the call from the hung one's
        last checkpoint. Blocking asks of the switch are bounded and not counted."""
        now = time.monotonic()
        limit = self.config.ivr.hung_actor_s
        for uuid, call in list(self.calls.items()):
            actor = self.services.call_actors.get(call.ref.actor_urn)
            if actor is None or not actor.busy_since or now - actor.busy_since <= limit:
                continue
            busy_s = now - actor.busy_since
            self.services.call_actors.pop(call.ref.actor_urn, None)
            self.counters["calls_hung"] += 1
            checkpoint, unacked, last_seq = actor.abandon()
            self._recover(call, uuid, actor.flow.state, f"hung: busy for {busy_s:.1f} s",
                          checkpoint, unacked, last_seq, actor.flow.finished)

    def _forget(self, uuid: str) -> None:
        call = self.calls.pop(uuid, None)
        if call is not None and call.link is not None:
            call.link.exit()  # outbound: the call's socket goes with its actor
        self.routes.remove(uuid)
        self.unfinished.discard(uuid)
        self._open_rows.discard(uuid)
        if self.on_call_gone is not None:
            self.on_call_gone(uuid)

    def _failure_record(self, call: _Call, uuid: str, state: str, error: str) -> DbWrite:
        call.extra_seq += 1
        fields = {"uuid": uuid, "state": state, "error": error, "at": time.time()}
        return DbWrite(uuid, call.extra_seq, "failure", fields)

    def _tell_writer(self, write: DbWrite) -> None:
        try:
            self.services.db_writer.tell(write)
        except pykka.ActorDeadError:
            logger.error("could not record the failure of %s: no DbWriter", write.call_uuid)

    def _transfer(self, uuid: str, destination: str, link: Any = None) -> None:
        if link is not None:  # outbound mode: the call's own socket
            link.execute(uuid, "transfer", destination, str(uuidlib.uuid4()))
            return
        # On the call's own Commander: behind whatever its actor had already sent.
        try:
            self.services.commander_for(uuid).tell(
                ChannelCommand(uuid, "transfer", destination, str(uuidlib.uuid4())))
        except pykka.ActorDeadError:
            logger.error("could not send call %s to %s: its Commander is being replaced", uuid,
                         destination)

    # --- services

    def _service_died(self, message: ServiceDied) -> None:
        if self.stopping or self.replace_service is None:
            return
        logger.error("%s died (%s): starting a new one", message.name, message.error)
        self.counters["services_replaced"] += 1
        self.replace_service(message.name)
        if message.name == "db_writer":
            for call in self.calls.values():
                try:
                    call.ref.tell(WriterReplaced())
                except pykka.ActorDeadError:
                    pass

    def _resync(self) -> None:
        """After a start or a (re)connect: calls parked or moved on meanwhile had no
        owner. One `show channels` lists them, asked of the Commander by message, so
        this thread goes on routing events while a busy switch answers; a listing that
        fails is asked again (backing off) until one comes, or a newer resync starts.
        Each channel that may be ours gets an actor that reads the channel and decides
        (`CallActor._take_over`), on its own thread."""
        self._resync_number += 1
        self.services.commander_proxy().switch_is_back()  # queued ahead of the listing
        self._ask_listing(self._resync_number, 1)

    def _ask_listing(self, resync: int, attempt: int) -> None:
        ask = ListChannels(self.actor_ref, resync, attempt, time.monotonic())
        try:
            self.services.commander.tell(ask)
        except pykka.ActorDeadError:  # being replaced: asked again shortly
            self._listed(ChannelsListed(resync, attempt, ask.asked_at, error="no Commander"))

    def _listed(self, answer: ChannelsListed) -> None:
        if answer.resync != self._resync_number or self.stopping:
            return  # a newer resync asks again
        if answer.error:
            delay_s = min(_LISTING_RETRY_MAX_S, _LISTING_RETRY_S * answer.attempt)
            logger.warning("could not list live channels (attempt %d): %s; again in %.1f s",
                           answer.attempt, answer.error, delay_s)
            self.services.timers.schedule(delay_s, self.actor_ref,
                                          _ListAgain(answer.resync, answer.attempt + 1))
            return
        live = {uuid for uuid, _ in answer.channels}
        first = answer.resync != self._lag_looked
        if first:
            self.counters["resyncs"] += 1
            logger.info("resync: %d live channels listed in %.2f s (attempt %d)", len(live),
                        time.monotonic() - answer.asked_at, answer.attempt)
            self._close_vanished_calls(live, answer.asked_at)
            self._close_unended_rows(live)
            self._lag_looked = answer.resync
            self.services.timers.schedule(_LAG_LOOK_S, self.actor_ref, _LagLook(answer.resync))
        for uuid, application in answer.channels:
            # Any channel with an application may be ours, even one handed off to a
            # queue (then listened to for its CDR, never touched).
            if uuid in self.calls or not application:
                continue
            if not first:
                # Only what the lag hid: a call parked before the link came up, never
                # touched (its app is still the dialplan's park). Anything else started
                # since the first listing has an owner, or is another worker's, whose
                # next `socket` must not find an adopting actor in its way.
                if application != "park":
                    continue
                logger.info("call %s was not in the first listing: taking it over", uuid)
            self.counters["calls_adopted"] += 1
            ref = CallActor.start(uuid, self.make_flow(uuid), self.services, None, takeover={},
                                  may_listen=self.counters["resyncs"] == 1)
            self._own(uuid, ref)
            self.unfinished.add(uuid)
        if self._adopted is not None:
            self._adopted.set()

    def _close_unended_rows(self, live: set[str]) -> None:
        """Calls with a row but no end and no owner: they ended, or are still up, while
        no icall ran (a stop, a crash). Each gets an actor that reads the channel
        (`uuid_dump`): gone, it closes the row (a close record: the end columns still
        empty, a cause saying the end was not seen, its CDR queued); still there, it
        takes the call over as any adoption. Done once per process: later ends are seen."""
        if self._rows_checked:
            return
        try:
            rows = self.services.db_writer.proxy().unended_calls().get(
                timeout=self.config.freeswitch.command_timeout_s)
        except Exception as exc:  # the database is down: the next resync tries again
            logger.warning("could not read the calls left open: %s", exc)
            return
        self._rows_checked = True
        for row in rows:
            uuid = row["uuid"]
            if uuid in self.calls:
                continue
            if uuid in live:
                # Listed, but `show channels` lags: the actor reads the channel and takes
                # the call over, or closes the row if the channel is gone after all (an
                # adoption without the row's knowledge would just leave it open).
                logger.info("call %s has no end yet: taking it over", uuid)
                self.unfinished.add(uuid)
            else:
                logger.info("call %s has no end and no channel: closing it", uuid)
                self.counters["calls_closed_unseen"] += 1
            ref = CallActor.start(uuid, self.make_flow(uuid), self.services, None, takeover={},
                                  close_row_if_gone=True)
            self._open_rows.add(uuid)
            self._own(uuid, ref)

    def _close_vanished_calls(self, live: set[str], listed_at: float) -> None:
        """Calls we own that are not listed may have hung up while the link was down
        (their hangup is lost). `show channels` can lag, so each actor confirms with
        `uuid_exists` on its own thread and closes its call (CDR written) if gone.
        Calls started after the listing was asked are not in it, and not suspects."""
        for uuid, call in list(self.calls.items()):
            if call.finished or call.started_at >= listed_at or uuid in live:
                continue
            try:
                call.ref.tell(ConfirmChannel())
            except pykka.ActorDeadError:
                pass

    # --- queries (asked with a timeout)

    def stats(self) -> dict[str, Any]:
        # Events the reader sent straight to a call's actor were routed too.
        routed = self.counters["events_routed"] + self.routes.sent_straight
        return dict(self.counters, events_routed=routed, calls_live=len(self.unfinished),
                    calls_tracked=len(self.calls),
                    seconds_since_event=round(time.monotonic() - self.last_event_at, 3))

    def call_ref(self, uuid: str) -> pykka.ActorRef | None:
        call = self.calls.get(uuid)
        return call.ref if call else None

    def ping(self) -> bool:
        return True

    def begin_shutdown(self) -> int:
        """Stop the calls' actors (the calls themselves stay parked on the switch)."""
        self.stopping = True
        refs = [c.ref for c in self.calls.values()]
        for ref in refs:
            ref.stop(block=False)
        return len(refs)


_ActorT = TypeVar("_ActorT", bound=pykka.Actor)


def supervised(
    actor_class: type[_ActorT], name: str, notify: Callable[[ServiceDied], None]
) -> type[_ActorT]:
    """A subclass of `actor_class` whose death (an exception, or a stop from outside)
    is reported at once: pykka has no links. `notify` decides whether it matters (it
    does not while the service itself is stopping)."""

    # mypy cannot take a class held in a variable as a base; the subclass is still an
    # `actor_class`, which the return type says.
    class Supervised(actor_class):  # type: ignore[valid-type,misc]
        def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
            self._icall_reported = True
            super().on_failure(exception_type, exception_value, traceback)
            notify(ServiceDied(name, repr(exception_value)))

        def on_stop(self) -> None:
            super().on_stop()
            if not getattr(self, "_icall_reported", False):
                notify(ServiceDied(name, "stopped"))

    Supervised.__name__ = actor_class.__name__
    Supervised.__qualname__ = actor_class.__qualname__
    return Supervised
