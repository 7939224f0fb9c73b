"""CrmFetcher: finds the caller's account manager in the remote CRM, never holding a
call up.

A CallActor tells it `CrmLookup(call_uuid, caller_id, reply_to, deadline_s)` and gets
`CrmAnswer(call_uuid, extension or None, reason)` told back, at the latest when the
deadline passes (`deadline passed`). In between:

  crm disabled  -> None at once ("crm disabled")
  cached answer -> at once ("cached: found" / "cached: not found")
  breaker open  -> None at once ("breaker open"), one probe per cool-down goes through
  otherwise     -> a worker thread asks the CRM (actors.crm.http_client), retrying within
                   the deadline; the deadline watch answers if the worker is late.

Threads: the actor's own thread only admits lookups and answers `stats()`; the HTTP
work runs on a pool of `[crm] max_concurrent` worker threads (more lookups wait their
turn, never past their deadline); one more thread watches the deadlines. `stop()`
answers every open lookup ("crm fetcher stopping"), then shuts the pool down.

A reply to a call that is gone (ActorDeadError) is dropped: the call moved on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pykka

from actors import mailbox
from actors.crm.guards import AnswerCache, CircuitBreaker, DeadlineWatch, PendingLookup
from actors.crm.http_client import CrmClient
from actors.messages import CrmAnswer, CrmLookup
from actors.reconfigure import Reconfigure
from actors.reporting import NO_TELEMETRY, Telemetry
from ivr.config import Config
from storage.db import redact

logger = logging.getLogger(__name__)


class CrmFetcher(mailbox.Actor):
    """Built as `CrmFetcher.start(config)`; takes `CrmLookup` tells; `stats()` by ask."""

    def __init__(self, config: Config, telemetry: Telemetry = NO_TELEMETRY):
        super().__init__()
        self.config = config
        self._telemetry = telemetry
        crm = config.crm
        self._breaker = CircuitBreaker(crm.breaker_failures, crm.breaker_cooldown_s)
        self._cache = AnswerCache(crm.cache_ttl_s)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._client: CrmClient | None = None
        # Clients a reload replaced, each with its lookups still running: closed when
        # the last one ends (closing cuts a client's retries short).
        self._retired: set[CrmClient] = set()
        self._in_flight: Counter[CrmClient] = Counter()
        self._requests_before = 0  # made by the clients a reload replaced
        self._workers: ThreadPoolExecutor | None = None
        self._watch: DeadlineWatch | None = None

    # --- life cycle (actor thread)

    def on_start(self) -> None:
        crm = self.config.crm
        self._client = CrmClient(crm, self.config.ivr.extension_pattern)
        self._workers = ThreadPoolExecutor(max_workers=crm.max_concurrent,
                                           thread_name_prefix="crm-lookup")
        self._watch = DeadlineWatch()
        self._telemetry.watch("crm", self.stats)  # stats() takes only the guards' own locks
        logger.info("CRM fetcher %s: %s, up to %d lookups at once",
                    "ready" if crm.enabled else "disabled", redact(crm.base_url + crm.path),
                    crm.max_concurrent)

    def on_stop(self) -> None:
        self._shut_down()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._shut_down()

    def _shut_down(self) -> None:
        if self._watch is not None:
            self._watch.stop("crm fetcher stopping")
        with self._counts_lock:
            retired, self._retired = list(self._retired), set()
        for client in [*retired, *([self._client] if self._client is not None else [])]:
            client.close()
        if self._workers is not None:
            self._workers.shutdown(wait=True, cancel_futures=True)
        self._watch = self._client = self._workers = None

    # --- messages (actor thread)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Reconfigure):
            self._reconfigure(message.config)
            return
        if not isinstance(message, CrmLookup):
            logger.warning("CRM fetcher ignores a %s", type(message).__name__)
            return
        try:
            self.lookup(message)
        except Exception:  # actor edge: one bad lookup must not stop the fetcher
            logger.exception("CRM lookup for call %s failed", message.call_uuid)

    def _reconfigure(self, config: Config) -> None:
        """A reload: lookups admitted from now on use a new client (a new CRM, pattern,
        timeouts); those under way finish on the old one, closed after the last. A
        changed [crm] starts a fresh cache and breaker: they speak of the old CRM."""
        old, new = self.config.crm, config.crm
        pattern_changed = config.ivr.extension_pattern != self.config.ivr.extension_pattern
        self.config = config
        if vars(old) == vars(new) and not pattern_changed:
            return
        self._breaker = CircuitBreaker(new.breaker_failures, new.breaker_cooldown_s)
        self._cache = AnswerCache(new.cache_ttl_s)
        if new.max_concurrent != old.max_concurrent:
            assert self._workers is not None
            # The old pool runs what it was given, then its threads end.
            self._workers.shutdown(wait=False)
            self._workers = ThreadPoolExecutor(max_workers=new.max_concurrent,
                                               thread_name_prefix="crm-lookup")
        assert self._client is not None
        retiring = self._client
        self._client = CrmClient(new, config.ivr.extension_pattern)
        with self._counts_lock:
            self._requests_before += retiring.requests_made
            self._retired.add(retiring)
            idle = self._in_flight[retiring] == 0
        if idle:
            self._close_retired(retiring)
        logger.info("CRM fetcher: new lookups go to %s", redact(new.base_url + new.path))

    def _close_retired(self, client: CrmClient) -> None:
        with self._counts_lock:
            self._retired.discard(client)
            self._in_flight.pop(client, None)
        client.close()

    def lookup(self, request: CrmLookup) -> None:
        """Admit one lookup: answer at once if we can, else hand it to a worker."""
        crm = self.config.crm
        taken_at = time.monotonic()
        deadline = taken_at + (request.deadline_s or crm.deadline_s)
        pending = PendingLookup(deadline, partial(self._deliver, request, taken_at))
        self._count("lookups")
        if not crm.enabled:
            pending.settle(None, "crm disabled")
            return
        cached = self._cache.get(request.caller_id)
        if cached is not None:
            self._count("cache_hits")
            pending.settle(cached[0], f"cached: {cached[1]}")
            return
        admitted = self._breaker.admit()
        if admitted is None:
            pending.settle(None, "breaker open")
            return
        assert self._watch is not None and self._workers is not None
        self._watch.watch(pending)
        assert self._client is not None
        client = self._client
        with self._counts_lock:
            self._in_flight[client] += 1
        self._workers.submit(self._run_lookup, request.caller_id, pending, admitted == "probe", client,
                             self._breaker, self._cache)

    def stats(self) -> dict[str, Any]:
        """Counts since start, the breaker's state and the HTTP requests made."""
        with self._counts_lock:
            counts = dict(self._counts)
            retiring = len(self._retired)
        return {
            "lookups": counts.get("lookups", 0),
            "answers": counts.get("answers", 0),
            "extensions": counts.get("extensions", 0),
            "unknown": counts.get("unknown", 0),
            "failures": counts.get("failures", 0),
            "cache_hits": counts.get("cache_hits", 0),
            "dead_callers": counts.get("dead_callers", 0),
            "requests": self._requests_before + (self._client.requests_made if self._client else 0),
            "breaker": self._breaker.state,
            "breaker_open": int(self._breaker.state != CircuitBreaker.CLOSED),
            "breaker_opened": self._breaker.times_opened,
            "clients_retiring": retiring,  # replaced by a reload, lookups still on them
        }

    # --- worker threads

    def _run_lookup(self, caller_id: str, pending: PendingLookup, is_probe: bool, client: CrmClient,
                    breaker: CircuitBreaker, cache: AnswerCache) -> None:
        """Runs in a crm-lookup worker thread, on the client, breaker and cache in force
        when the lookup was admitted."""
        try:
            self._ask(caller_id, pending, is_probe, client, breaker, cache)
        finally:
            with self._counts_lock:
                self._in_flight[client] -= 1
                done = client in self._retired and self._in_flight[client] == 0
            if done:
                self._close_retired(client)

    def _ask(self, caller_id: str, pending: PendingLookup, is_probe: bool, client: CrmClient,
             breaker: CircuitBreaker, cache: AnswerCache) -> None:
        try:
            if pending.settled:  # its deadline passed while it waited for a worker
                if is_probe:
                    breaker.abandoned()
                return
            if not is_probe and breaker.state != CircuitBreaker.CLOSED:
                # Admitted while the breaker was closed, but it opened while this
                # lookup waited for a worker: do not add to the CRM's troubles.
                pending.settle(None, "breaker open")
                return
            outcome = client.fetch(caller_id, pending.deadline)
            if outcome.reachable:
                breaker.succeeded()
            else:
                self._count("failures")
                breaker.failed()
            if outcome.cacheable:
                cache.put(caller_id, outcome.extension, outcome.reason)
            pending.settle(outcome.extension, outcome.reason)
        except Exception:  # edge of the worker: the caller still gets an answer
            logger.exception("a CRM lookup crashed")  # the caller id is personal data: not here
            pending.settle(None, "internal error")

    def _deliver(self, request: CrmLookup, taken_at: float, extension: str | None,
                 reason: str) -> None:
        """Tell the asking call its answer. Runs in whichever thread settled the lookup
        (actor, worker or deadline watch); ActorRef.tell is safe from any thread."""
        self._telemetry.crm_answered(lookup_outcome(extension, reason), time.monotonic() - taken_at)
        self._count("answers")
        self._count("extensions" if extension else "unknown")
        # The caller id is personal data: at INFO the call's UUID links the answer to
        # the call's row, which holds it; DEBUG names it for troubleshooting.
        logger.info("call %s: CRM says %s (%s)", request.call_uuid, extension or "nothing", reason)
        logger.debug("call %s: CRM lookup was for caller id %r", request.call_uuid, request.caller_id)
        if request.reply_to is None:
            return
        try:
            request.reply_to.tell(CrmAnswer(request.call_uuid, extension, reason))
        except pykka.ActorDeadError:
            self._count("dead_callers")
            logger.info("call %s is gone; its CRM answer is dropped", request.call_uuid)

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self._counts[name] += 1


# The reasons above, by the first word or two, as a short fixed set (a metric label).
_OUTCOMES = {"found": "found", "not found": "not_found", "cached:": "cached",
             "breaker open": "breaker_open", "crm disabled": "disabled",
             "deadline passed": "deadline", "crm fetcher stopping": "stopping"}


def lookup_outcome(extension: str | None, reason: str) -> str:
    """found, not_found, cached, breaker_open, disabled, deadline, stopping, or failed
    (the CRM unreachable, erring or answering nonsense)."""
    if extension and not reason.startswith("cached:"):
        return "found"
    for prefix, outcome in _OUTCOMES.items():
        if reason.startswith(prefix):
            return outcome
    return "failed"
