"""The service's Prometheus metrics: every metric icall exports is declared here.

`PrometheusTelemetry` is the `actors.reporting.Telemetry` the service hands its
actors. It owns one `CollectorRegistry` per Service (never the process-wide default
registry, so tests that run several services in one process do not collide).

Two kinds of metric:
- Histograms, observed where the thing happens (the actors call the methods below):
  reaction time, takeover, CRM lookup latency by outcome, DB commit latency and batch
  size, CDR delivery delay.
- One counter, counted where it happens: calls a flow sent to the safe destination.
- Readings: counts and levels the actors keep anyway (the supervisor's counters, the
  DbWriter's backlog, mailbox depths). Nothing is done per event for them; the scrape
  thread calls the functions handed to `watch` and exports what they return, as the
  counter or gauge that `READINGS` declares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from actors.reporting import Cause, Reading, Telemetry

logger = logging.getLogger(__name__)

PREFIX = "icall_"

# icall's own reaction is well under a millisecond on an idle box; the tail shows a
# congested Commander or GIL. The switch adds its ~20 ms ticks on top (not measured here).
REACTION_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                      0.1, 0.25, 0.5, 1.0)
# CRM lookups end by the deadline ([crm] deadline_s, 8 s by default) at the latest.
CRM_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DB_COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                       1.0, 2.5, 5.0)
# [database] batch_size is 200 by default and at most 10,000.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10000)
# From a fraction of a second (endpoint up) to hours (an outage drained later).
CDR_DELAY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                       900.0, 3600.0, 14400.0)


@dataclass(frozen=True)
class Declared:
    """How one reading is exported: as family `name` (without the prefix and, for
    counters, without `_total`), with an optional label."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    label: tuple[str, str] | None = None


def _counter(name: str, help_text: str) -> Declared:
    return Declared(name, "counter", help_text)


def _gauge(name: str, help_text: str, label: tuple[str, str] | None = None) -> Declared:
    return Declared(name, "gauge", help_text, label)


_Family = CounterMetricFamily | GaugeMetricFamily
_MAILBOX = "Messages waiting in an actor's mailbox (pykka inbox)"

# "<source>.<key>" (a key of what the function `watch`ed as <source> returns) -> how
# it is exported. Keys not listed here (text such as a last error) are not exported.
READINGS: dict[str, Declared] = {
    "supervisor.calls_started": _counter("calls_started", "Calls taken over (a flow started for them)"),
    "supervisor.calls_overflowed": _counter("calls_overflowed", "Calls sent to the overflow destination"),
    "supervisor.calls_failed": _counter("calls_failed", "Call actors that died of an error"),
    "supervisor.calls_resumed": _counter("calls_resumed", "Calls resumed by a fresh actor after theirs died or hung"),
    "supervisor.calls_given_up": _counter("calls_given_up",
                                          "Calls sent to the safe destination after their actor kept dying"),
    "supervisor.calls_hung": _counter("calls_hung", "Call actors replaced because they were hung"),
    "supervisor.calls_adopted": _counter("calls_adopted", "Calls adopted after the event link came back"),
    "supervisor.events_routed": _counter("events_routed", "ESL events handed to a call actor"),
    "supervisor.events_unowned": _counter("events_unowned", "ESL events for a call no actor owns"),
    "supervisor.services_replaced": _counter("services_replaced", "Service actors replaced after dying"),
    "supervisor.calls_live": _gauge("calls_live", "Calls not hung up yet (what max_concurrent_calls limits)"),
    "supervisor.calls_tracked": _gauge("calls_tracked", "Call actors the supervisor tracks, lingering ones too"),
    "supervisor.seconds_since_event": _gauge("seconds_since_event",
                                             "Seconds since the supervisor last received an ESL event"),
    "supervisor.claims_refused": _counter("outbound_claims_refused",
                                          "Outbound connections refused for claiming a call live on its own socket"),
    "outbound.peers_refused": _counter("outbound_peers_refused",
                                       "Outbound connections closed at accept: peer not in [outbound] allow"),
    "outbound.connects_timed_out": _counter("outbound_connects_timed_out",
                                            "Outbound connections closed for not answering connect in time"),
    "outbound.accept_pauses": _counter("outbound_accept_pauses",
                                       "Pauses of the outbound accept loop at the file-descriptor limit"),
    "outbound.accepting": _gauge("outbound_accepting", "1 while the outbound port takes connections"),
    "db_writer.pending": _gauge("db_backlog", "Writes waiting in the DbWriter for their commit"),
    "db_writer.written": _counter("db_writes", "Writes committed by the DbWriter"),
    "db_writer.retries": _counter("db_retries", "Failed database attempts, each retried"),
    "db_writer.refused": _counter("db_refused", "Call-log writes refused while the backlog was full"),
    "db_writer.rejected": _counter("db_rejected", "Writes the database can never store (logged, dropped)"),
    "db_writer.spooled": _gauge("db_spooled", "Writes in the DbWriter's spool file, waiting for the database"),
    "db_writer.spilled": _counter("db_spilled", "Writes moved to the spool while the database was away"),
    "db_writer.drained": _counter("db_drained", "Spooled writes since committed to the database"),
    "cdr.pending": _gauge("cdr_pending", "CDRs in the outbox not delivered yet, every node's"),
    "cdr.oldest_pending_age_s": _gauge("cdr_oldest_pending_seconds",
                                       "Age of the oldest undelivered CDR in the outbox (0 when none waits)"),
    "crm.requests": _counter("crm_requests", "HTTP requests sent to the CRM"),
    "crm.breaker_opened": _counter("crm_breaker_opened", "Times the CRM circuit breaker opened"),
    "crm.breaker_open": _gauge("crm_breaker_open", "1 while the CRM circuit breaker is open or half-open"),
    "service.mailbox_supervisor": _gauge("mailbox_depth", _MAILBOX, ("actor", "supervisor")),
    "service.mailbox_db_writer": _gauge("mailbox_depth", _MAILBOX, ("actor", "db_writer")),
    "service.mailbox_commander": _gauge("mailbox_depth", _MAILBOX, ("actor", "commander")),
    "service.esl_connected": _gauge("esl_connected", "1 while the ESL event connection is subscribed"),
    "service.esl_link_down_seconds": _gauge("esl_link_down_seconds",
                                            "Seconds the ESL event link has been down (0 while up)"),
    "service.esl_reader_alive": _gauge("esl_reader_alive", "1 while the ESL reader thread runs"),
    "service.timers_pending": _gauge("timers_pending", "Timers scheduled and not fired yet"),
    "config.generation": _gauge("config_generation",
                                "Generation of the configuration in force (1 at start, +1 per reload applied)"),
    "config.reloads_applied": Declared("config_reloads", "counter", "Configuration reloads (SIGHUP) by result",
                                       ("result", "applied")),
    "config.reloads_failed": Declared("config_reloads", "counter", "Configuration reloads (SIGHUP) by result",
                                      ("result", "failed")),
}


class _Readings(Collector):
    """Exports the `watch`ed readings at scrape time. `watch` runs in any thread,
    `collect` in the scrape thread."""

    def __init__(self) -> None:
        self._sources: dict[str, Reading] = {}
        self._lock = threading.Lock()  # taken by watch and collect only, never per event

    def watch(self, source: str, read: Reading) -> None:
        with self._lock:
            self._sources[source] = read

    def collect(self) -> Iterator[_Family]:
        with self._lock:
            sources = list(self._sources.items())
        values: dict[str, float] = {}
        for source, read in sources:
            try:
                values.update((f"{source}.{key}", value) for key, value in read().items())
            except Exception:  # one broken source must not empty the whole scrape
                logger.exception("reading %s for /metrics failed", source)
        families: dict[str, _Family] = {}
        for key, declared in READINGS.items():
            if key not in values:
                continue
            family = families.get(declared.name)
            if family is None:
                family = families[declared.name] = _family(declared)
            family.add_metric([declared.label[1]] if declared.label else [], float(values[key]))
        yield from families.values()

    def describe(self) -> list[_Family]:
        # Names only, so the registry refuses a clash with another collector.
        return [_family(declared) for declared in {d.name: d for d in READINGS.values()}.values()]


def _family(declared: Declared) -> _Family:
    labels = [declared.label[0]] if declared.label else []
    if declared.kind == "counter":
        return CounterMetricFamily(PREFIX + declared.name, declared.help, labels=labels)
    return GaugeMetricFamily(PREFIX + declared.name, declared.help, labels=labels)


class PrometheusTelemetry(Telemetry):
    """The metrics of one Service, in `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None, node: str = ""):
        """`node`: this icall's `[service] node`, exported as icall_node_info{node=...}
        so that several icalls' metrics tell themselves apart."""
        self.registry = registry if registry is not None else CollectorRegistry()
        if node:
            Info(PREFIX + "node", "This icall's [service] node", registry=self.registry).info({"node": node})
        # What any Prometheus Python exporter shows: CPU, memory, fds, GC, version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._readings = _Readings()
        self.registry.register(self._readings)
        self.reaction = Histogram(
            PREFIX + "reaction_seconds",
            "From a call actor taking an ESL event from its mailbox to the Commander "
            "writing the first command that event caused",
            registry=self.registry, buckets=REACTION_BUCKETS_S)
        self.takeover = Histogram(
            PREFIX + "takeover_seconds",
            "From the ESL reader reading a call's CHANNEL_PARK to the Commander writing "
            "the call's first command",
            registry=self.registry, buckets=REACTION_BUCKETS_S)
        self.crm_lookup = Histogram(
            PREFIX + "crm_lookup_seconds",
            "From the CRM fetcher taking a lookup to the call being told its answer",
            ["outcome"], registry=self.registry, buckets=CRM_BUCKETS_S)
        self.db_commit = Histogram(
            PREFIX + "db_commit_seconds", "Time to commit one DbWriter transaction",
            registry=self.registry, buckets=DB_COMMIT_BUCKETS_S)
        self.db_batch = Histogram(
            PREFIX + "db_commit_batch_size", "Writes committed in one DbWriter transaction",
            registry=self.registry, buckets=BATCH_SIZE_BUCKETS)
        self.cdr_delay = Histogram(
            PREFIX + "cdr_delivery_delay_seconds",
            "From a CDR entering the outbox to the CDR endpoint accepting it",
            registry=self.registry, buckets=CDR_DELAY_BUCKETS_S)
        self._by_cause = {"reaction": self.reaction, "takeover": self.takeover}
        # No label, so the series is there (at 0) before the first rescue and an alert's
        # increase() sees that one too; why each call was rescued is in its steps.
        self.rescued = Counter(
            PREFIX + "calls_rescued",
            "Calls the flow sent to the safe destination: a command failed or never "
            "completed, or a time condition could not be carried out",
            registry=self.registry)

    # --- observations (the calling thread is in actors.reporting.Telemetry)

    def command_written(self, cause: Cause, written_at: float) -> None:
        self._by_cause[cause.kind].observe(max(0.0, written_at - cause.at))

    def crm_answered(self, outcome: str, elapsed_s: float) -> None:
        self.crm_lookup.labels(outcome).observe(max(0.0, elapsed_s))

    def db_committed(self, elapsed_s: float, writes: int) -> None:
        self.db_commit.observe(max(0.0, elapsed_s))
        self.db_batch.observe(writes)

    def cdr_delivered(self, delay_s: float) -> None:
        # Wall-clock times (the outbox row's created_at): a clock step may make it < 0.
        self.cdr_delay.observe(max(0.0, delay_s))

    def call_rescued(self, step: str) -> None:
        self.rescued.inc()

    def watch(self, source: str, read: Reading) -> None:
        self._readings.watch(source, read)
