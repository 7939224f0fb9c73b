"""The running service: starts every actor in dependency order, stops them in reverse.

Order: timers, DbWriter, time-condition source, CrmFetcher, CdrPoster, Commander,
Supervisor, EventReader (last: events only flow once someone can take them). Stop
runs the same list backwards inside `finally`, then a last sweep logs any thread
still alive as a bug.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pykka

from actors.call_actor import CallServices
from actors.cdr_poster import CdrPoster
from actors.channel_link import ChannelLink
from actors.commander import Commander
from actors.crm import CrmFetcher
from actors.db_writer import DbWriter, process_claim
from actors.esl_reader import EventReader
from actors.messages import LinkChanged, OutboundCall, ServiceDied
from actors.outbound_server import OutboundServer
from actors.reconfigure import Reconfigure
from actors.routes import CallRoutes
from actors.supervisor import Supervisor, supervised
from actors.timeconditions import TimeConditionSource
from actors.timers import TimerService
from actors.write_intake import WriteIntake
from ivr.config import Config
from ivr.event import Event
from ivr.flow import Flow, FlowContext
from ivr.flows import make_flow
from ivr.schedule import local_now
from service.telemetry import PrometheusTelemetry

logger = logging.getLogger(__name__)

_ASK_TIMEOUT_S = 5.0

class Service:
    """Builds and owns the actors. `start()` and `stop()` run in the caller's thread."""

    def __init__(self, config: Config, observer: Callable[[str, list[str]], None] | None = None,
                 clock: Callable[[str], datetime] | None = None,
                 on_call_gone: Callable[[str], None] | None = None,
                 inbound: bool = True, listener: socket.socket | None = None):
        """`observer(uuid, history)` hears each finished call (the demo prints it);
        `clock(uuid)` replaces the office clock for one call (the demo and tests place
        calls at chosen times of day). `inbound`: run the event connection (inbound
        mode); `listener`: the outbound port's socket, made by the main process of
        `[service] workers` and shared by every worker (service.workers)."""
        self.config = config
        self.inbound = inbound
        self.listener = listener
        self.observer = observer
        self.clock = clock
        self.on_call_gone = on_call_gone
        self.timers = TimerService()
        self.services: CallServices | None = None
        self.supervisor: pykka.ActorRef | None = None
        self.reader: EventReader | None = None
        self.time_conditions: TimeConditionSource | None = None
        self.cdr_poster: pykka.ActorRef | None = None
        self.outbound: OutboundServer | None = None
        self._stop_list: list[tuple[str, Callable[[], None]]] = []
        self._stopping = False
        # Set once the event link is subscribed and the calls parked meanwhile adopted.
        self.link_up = threading.Event()
        # Since when the event link is down (time.monotonic()), None while it is up.
        self._link_down_since: float | None = time.monotonic()
        # This service's metrics, in a registry of its own (several services may share
        # a process in tests); /metrics serves `self.telemetry.registry`.
        self.telemetry = PrometheusTelemetry(node=config.service.node)
        self.telemetry.watch("service", self._readings)
        # Where the calls leave their writes; each DbWriter started takes it over.
        self.write_intake = WriteIntake()
        self.claim = ""  # this run's name on the calls it holds (set by start)

    # --- start / stop

    def start(self) -> None:
        config = self.config
        self._link_down_since = time.monotonic()
        self.claim = process_claim(config.service.node)  # kept by every DbWriter of this run
        self.timers.start()
        self._on_stop("timers", self.timers.stop)
        db_writer = self._start_actor("db_writer", DbWriter, intake=self.write_intake, claim=self.claim)
        self.time_conditions = TimeConditionSource(config)
        self.time_conditions.start()
        self._on_stop("time conditions", self.time_conditions.stop)
        crm = self._start_actor("crm", CrmFetcher)
        self.cdr_poster = self._start_actor("cdr_poster", CdrPoster)
        commander = self._start_actor("commander", Commander)
        call_commanders = [commander] + [
            self._start_actor(f"commander-{n}", Commander)
            for n in range(1, config.freeswitch.command_connections)]
        self.services = CallServices(config=config, supervisor=None, commander=commander,
                                     call_commanders=call_commanders,
                                     db_writer=db_writer, db_writes=self.write_intake,
                                     crm=crm, timers=self.timers,
                                     observer=self.observer, telemetry=self.telemetry)
        self.routes = CallRoutes(config.ivr.flow_variable, config.ivr.flow)
        if config.outbound.listen:
            # Stopped after the supervisor (which stops the calls' actors first), so a
            # closing socket ends no flow: the switch runs the dialplan after `socket`.
            self.outbound = OutboundServer(config.outbound.listen, self._outbound_call,
                                           config.freeswitch.sendmsg_timeout_s, self.telemetry,
                                           listener=self.listener,
                                           linger_s=config.outbound.linger_s,
                                           allow=config.outbound.allow,
                                           connect_timeout_s=config.outbound.connect_timeout_s)
            self._on_stop("outbound server", self.outbound.stop)
        self.supervisor = Supervisor.start(self.services, self._flow_maker(config), self._replace_service,
                                           self.on_call_gone, self.routes)
        self._on_stop("supervisor", self._stop_supervisor)
        if self.outbound is not None:
            self.outbound.start()
        if not self.inbound:
            return
        self.reader = EventReader(config, on_event=self._deliver_event, on_link=self._link_changed)
        self.services.event_link = self.reader
        self.reader.start()
        self._on_stop("event reader", self.reader.stop)

    def _flow_maker(self, config: Config) -> Callable[[str], Flow]:
        """What makes a call's flow with `config`, which the call keeps to its end."""

        def make(uuid: str) -> Flow:
            """Runs in the supervisor's thread."""
            clock = self.clock
            now = (lambda: clock(uuid)) if clock else (lambda: local_now(config.schedule))
            assert self.time_conditions is not None
            ctx = FlowContext(config=config, now=now, time_conditions=self.time_conditions.current,
                              new_id=new_event_id, keep_history=self.observer is not None,
                              rescued=self.telemetry.call_rescued)
            return make_flow(config.ivr.flow, uuid, ctx)

        return make

    def apply_config(self, config: Config) -> None:
        """A reloaded configuration (service.reload, which keeps the keys only a
        restart changes): calls that start from now on use it, live ones keep theirs.
        Each actor takes it in its own thread, between two of its messages: the
        supervisor for the calls it starts, the CRM fetcher and the CDR poster for
        their next lookup or POST. Any thread."""
        self.config = config  # what a replaced service actor starts with
        targets = [("supervisor", self.supervisor, Reconfigure(config, self._flow_maker(config))),
                   ("crm", getattr(self.services, "crm", None), Reconfigure(config)),
                   ("cdr_poster", self.cdr_poster, Reconfigure(config))]
        for name, ref, message in targets:
            if ref is None:
                continue
            try:
                ref.tell(message)
            except pykka.ActorDeadError:  # being replaced: the new one starts with self.config
                logger.info("%s is being replaced: it starts with the new configuration", name)

    def stop(self) -> None:
        """Stop everything in reverse start order; never raises. The outbound port
        closes first of all (OutboundServer.stop_listening): a call offered to a
        process on its way out would lose its `socket` to it."""
        self._stopping = True
        if self.outbound is not None:
            try:
                self.outbound.stop_listening()
            except Exception:
                logger.exception("closing the outbound port failed")
        while self._stop_list:
            name, stop = self._stop_list.pop()
            try:
                stop()
            except Exception:
                logger.exception("stopping %s failed", name)
        self._sweep()

    def _on_stop(self, name: str, stop: Callable[[], None]) -> None:
        self._stop_list.append((name, stop))

    def _start_actor(self, name: str, actor_class: type[pykka.Actor], **extra: Any) -> pykka.ActorRef:
        cls = supervised(actor_class, name, self._service_died)
        ref = cls.start(self.config, telemetry=self.telemetry, **extra)
        self._on_stop(name, lambda: self._stop_ref(name))
        return ref

    def _stop_ref(self, name: str) -> None:
        ref = self._current_ref(name)
        if ref is not None:
            ref.stop(block=True, timeout=_ASK_TIMEOUT_S)

    def _current_ref(self, name: str) -> pykka.ActorRef | None:
        """The running actor started as `name` (replacements included)."""
        if name == "cdr_poster":
            return self.cdr_poster
        _, _, number = name.partition("-")
        if number:  # commander-N
            return self.services.call_commanders[int(number)] if self.services else None
        return getattr(self.services, name, None)

    def _stop_supervisor(self) -> None:
        if self.supervisor is None:
            return
        try:
            self.supervisor.proxy().begin_shutdown().get(timeout=_ASK_TIMEOUT_S)
        except (pykka.ActorDeadError, pykka.Timeout):
            logger.warning("supervisor did not answer the shutdown request")
        deadline = time.monotonic() + _ASK_TIMEOUT_S
        for ref in pykka.ActorRegistry.get_by_class_name("CallActor"):
            try:
                ref.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
            except pykka.Timeout:  # a hung one (replaced): its daemon thread dies with us
                logger.error("call actor %s did not stop", ref)
        self.supervisor.stop(block=True, timeout=_ASK_TIMEOUT_S)

    def _sweep(self) -> None:
        """Anything still running now is a bug: say so. Call actors run on daemon
        threads (see CallActor), so they are looked for among the live actors too."""
        leftovers = [t for t in threading.enumerate()
                     if t is not threading.current_thread() and t.is_alive() and not t.daemon]
        for thread in leftovers:
            logger.error("BUG: thread %s still alive after shutdown", thread.name)
        for ref in pykka.ActorRegistry.get_by_class_name("CallActor"):
            logger.error("BUG: call actor %s still alive after shutdown", ref)

    # --- supervision of the service actors

    def _service_died(self, message: ServiceDied) -> None:
        """Runs in the dying actor's thread."""
        if self._stopping:
            return
        if self.supervisor is not None:
            try:
                self.supervisor.tell(message)
                return
            except pykka.ActorDeadError:
                pass
        logger.error("%s died (%s) while nothing supervises it", message.name, message.error)

    def _replace_service(self, name: str) -> None:
        """Runs in the supervisor's thread."""
        kind, _, number = name.partition("-")  # commander-2: the third call commander
        classes: dict[str, type[pykka.Actor]] = {"db_writer": DbWriter, "crm": CrmFetcher,
                                                 "commander": Commander, "cdr_poster": CdrPoster}
        actor_class = classes[kind]
        extra = {"intake": self.write_intake, "claim": self.claim} if kind == "db_writer" else {}
        ref = supervised(actor_class, name, self._service_died).start(self.config, telemetry=self.telemetry,
                                                                      **extra)
        if name == "cdr_poster":
            self.cdr_poster = ref
            return
        assert self.services is not None
        if kind == "commander" and self.services.call_commanders:
            self.services.call_commanders[int(number or 0)] = ref
        if not number:
            setattr(self.services, name, ref)

    def _deliver_event(self, event: Event) -> None:
        """Runs in the reader thread: hand over, nothing more."""
        assert self.supervisor is not None
        try:
            # The read time starts the takeover clock (a CHANNEL_PARK): ~0.1 µs an event.
            self.routes.deliver(event, time.monotonic(), self.supervisor)
        except pykka.ActorDeadError:
            pass  # shutting down

    def _outbound_call(self, link: ChannelLink) -> None:
        """Runs in the outbound server's thread: hand over, nothing more."""
        assert self.supervisor is not None
        try:
            self.supervisor.tell(OutboundCall(link))
        except pykka.ActorDeadError:
            link.exit()  # shutting down: the switch runs what follows `socket`

    def _link_changed(self, state: str, reason: str = "") -> None:
        """Runs in the reader thread: state is "up" (subscribed) or "down"."""
        if state == "up":
            self._link_down_since = None
        else:
            self.link_up.clear()
            if self._link_down_since is None:
                self._link_down_since = time.monotonic()
        if self.supervisor is not None:
            try:
                self.supervisor.tell(LinkChanged(state == "up", reason, adopted=self.link_up))
            except pykka.ActorDeadError:
                pass

    # --- health, for the watchdog and the metrics endpoint

    def health(self, include_link: bool = True) -> tuple[bool, str]:
        """Healthy when the supervisor answers promptly (not stuck), the ESL reader
        thread runs, and (with `include_link`) the event link has not been down longer
        than `[metrics] health_link_down_s`. The reason names every problem found. Runs
        in the asking thread (the watchdog's, an HTTP request's); bounded by the ask."""
        if self.supervisor is None or (self.inbound and self.reader is None):
            return False, "not started"
        problems = []
        try:
            self.supervisor.proxy().ping().get(timeout=_ASK_TIMEOUT_S)
        except (pykka.ActorDeadError, pykka.Timeout):
            problems.append("supervisor does not answer")
        if self.reader is not None and not self.reader.alive:
            problems.append("ESL reader thread is dead: no events are read")
        if self.outbound is not None and not self.outbound.alive:
            problems.append("outbound server thread is dead: no outbound call is taken")
        limit_s = self.config.metrics.health_link_down_s
        down_s = self.link_down_s() if self.inbound else None
        if not self.inbound:
            link = "outbound only"
        elif down_s is None:
            link = "FreeSWITCH link up"
        else:
            link = f"FreeSWITCH link down for {down_s:.0f} s"
            if include_link and limit_s and down_s > limit_s:
                problems.append(f"{link} (more than [metrics] health_link_down_s = {limit_s:g})")
        if problems:
            return False, "; ".join(problems)
        return True, f"supervisor ok, {link}"

    def process_health(self) -> tuple[bool, str]:
        """`health` without the event link: what the systemd watchdog feeds on. A
        restart of icall cannot bring a switch back, and a switch away for an hour of
        maintenance must not turn into a restart every WatchdogSec; the reader
        reconnects on its own, and /health still reports the link."""
        return self.health(include_link=False)

    def link_down_s(self) -> float | None:
        """Seconds the event link has been down (since start if it never came up), or
        None while it is up. Any thread."""
        since = self._link_down_since
        return None if since is None else time.monotonic() - since

    def _readings(self) -> dict[str, float]:
        """The service's own gauges; runs in the scrape thread. A mailbox depth is a
        queue's qsize(), read without disturbing the actor."""
        readings: dict[str, float] = {"timers_pending": self.timers.pending()}
        if self.inbound:  # an outbound-only worker has no event link: none to alert on
            readings.update({
                "esl_connected": int(bool(self.reader and self.reader.connected)),
                "esl_link_down_seconds": self.link_down_s() or 0.0,
                "esl_reader_alive": int(bool(self.reader and self.reader.alive)),
            })
        refs = {"supervisor": self.supervisor, "db_writer": getattr(self.services, "db_writer", None),
                "commander": getattr(self.services, "commander", None)}
        for name, ref in refs.items():
            if ref is not None:
                inbox: Any = ref.actor_inbox  # a queue.SimpleQueue (actors.mailbox)
                readings[f"mailbox_{name}"] = inbox.qsize()
        return readings

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        if self.supervisor is not None:
            try:
                stats.update(self.supervisor.proxy().stats().get(timeout=_ASK_TIMEOUT_S))
            except (pykka.ActorDeadError, pykka.Timeout):
                stats["supervisor_unresponsive"] = 1
        stats["esl_connected"] = int(bool(self.reader and self.reader.connected))
        stats["timers_pending"] = self.timers.pending()
        return stats


_EVENT_IDS = random.Random(os.urandom(32))


def new_event_id() -> str:
    """A random id in UUID text form for a command's Event-UUID (echoed as
    Application-UUID). From a generator seeded by the OS once: uuid.uuid4() reads
    os.urandom for each id, a system call per command. Any thread (getrandbits holds
    the GIL)."""
    text = f"{_EVENT_IDS.getrandbits(128):032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
