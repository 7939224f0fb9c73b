"""CdrPoster: delivers each CDR in the durable outbox (`cdr_outbox`) to `[cdr] url`.

Every CDR the DbWriter commits gets an outbox row in the same transaction. This actor
claims undelivered, due rows for `[cdr] lease_s` (storage.outbox: with several icalls on
one database each row is posted by one of them at a time, and the rows of an icall
that died are taken over when its claim runs out) and POSTs each as JSON with
`Idempotency-Key: <call uuid>`:
  2xx      -> delivered_at set (the row is done);
  anything else, or no answer -> attempts + 1, last_error, and next_attempt_at pushed
           back by retry_min_s doubling up to retry_max_s (with jitter); the round
           stops there, and the whole endpoint backs off the same way, so a dead
           endpoint gets one probe per back-off rather than a storm.
Delivery is at least once: a crash between the 2xx and the update sends the row again
(after the lease), with the same key, and the endpoint drops the repeat. Undelivered
rows are found again by any later poster (a restart, another node), since the outbox
is the only state. A round stops posting before its claim could run out (a row is
never posted on a lapsed claim) and releases what it did not post.

Threads: the actor's thread answers `poke()` / `CdrQueued` and `status()`; a
"cdr-poster" thread does the posting, with its own database connection, waking every
`poll_interval_s`, when poked, or when the next row falls due. It posts up to
`[cdr] max_concurrent` rows at once on a small pool of "cdr-post" threads: one POST at
a time would deliver 1 / round-trip CDRs a second (25 a second to an endpoint 40 ms
away), fewer than a busy switch ends calls. Each POST is bounded by `timeout_s` as a
whole, connect to last byte (a "cdr-deadline" thread cuts off one still running: an
endpoint dribbling its answer would otherwise hold a POST past its claim). While the
endpoint is failing, a round sends a single probe first. Once a poll interval it also
counts the undelivered rows and finds the oldest, for /metrics (icall_cdr_pending,
icall_cdr_oldest_pending_seconds: what an operator alerts on when billing stops getting
CDRs). `stop()` wakes it and waits at most one POST (`timeout_s`). An empty `[cdr] url`
starts no thread: CDRs stay
in the database.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import urllib3
from peewee import Database, DatabaseError

from actors import mailbox
from actors.http_deadline import RequestDeadlines, watched_pool
from actors.messages import CdrQueued
from actors.reconfigure import Reconfigure
from actors.reporting import NO_TELEMETRY, Telemetry
from ivr.config import Config
from storage.db import close_quietly, open_database, redact
from storage.models import CdrOutbox, utc_now
from storage.outbox import (
    Failed,
    claim_due,
    next_due,
    outbox_status,
    settle,
    supports_skip_locked,
    undelivered,
)

logger = logging.getLogger(__name__)

# An endpoint's answer is read up to this size (it only has to say 2xx).
MAX_REPLY_BYTES = 65536


def retry_delay_s(failures: int, retry_min_s: float, retry_max_s: float) -> float:
    """retry_min_s doubling per failure up to retry_max_s, less up to a quarter (jitter,
    so many rows or many posters do not retry in step)."""
    delay = min(retry_max_s, retry_min_s * 2 ** max(0, failures - 1))
    return delay * random.uniform(0.75, 1.0)


class CdrPoster(mailbox.Actor):
    """Built as `CdrPoster.start(config)`; `poke()` (or a CdrQueued tell), `status()`."""

    def __init__(self, config: Config, telemetry: Telemetry = NO_TELEMETRY):
        super().__init__()
        self.config = config
        self._telemetry = telemetry
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._path = "/"
        self._deadlines = RequestDeadlines("cdr")
        self._posters: ThreadPoolExecutor | None = None
        self._status_db: Database | None = None
        self._endpoint_failures = 0
        self._endpoint_retry_at = 0.0
        # Who holds a claim: this node, and a token of this run, so a restarted icall
        # does not mistake its dead predecessor's claims for its own.
        self.owner = f"{config.service.node}#{secrets.token_hex(4)}"
        self._skip_locked: bool | None = None  # asked of the server on first use
        # For /metrics: (undelivered CDRs, the oldest one's created_at), every node's,
        # read by the posting thread at most once a poll interval; replaced whole, so
        # the scrape thread reads it in one step.
        self._backlog: tuple[int, datetime | None] | None = None
        self._backlog_read_at = float("-inf")
        # A reloaded configuration, taken by the cdr-poster thread between two rounds.
        self._next_config: Config | None = None

    # --- life cycle (actor thread)

    def on_start(self) -> None:
        cdr = self.config.cdr
        if not cdr.url:
            logger.info("no [cdr] url: CDRs are kept in the database only")
            return
        self._deadlines.start()
        self._open_endpoint(cdr)
        self._telemetry.watch("cdr", self._backlog_reading)
        self._thread = threading.Thread(target=self._run, name="cdr-poster", daemon=True)
        self._thread.start()
        logger.info("CDR poster delivering to %s", redact(cdr.url))

    def _open_endpoint(self, cdr: Any) -> None:
        # One pool for the one endpoint, its connections watched: a POST is bounded by
        # timeout_s as a whole, not per read (actors.http_deadline).
        self._pool = watched_pool(cdr.url, self._deadlines, maxsize=cdr.max_concurrent, retries=False)
        parts = urlsplit(cdr.url)
        self._path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self._posters = ThreadPoolExecutor(max_workers=cdr.max_concurrent, thread_name_prefix="cdr-post")

    def on_stop(self) -> None:
        self._shut_down()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._shut_down()

    def _shut_down(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.cdr.timeout_s * 2 + 5)
            if self._thread.is_alive():
                logger.error("cdr-poster thread did not stop")
        if self._posters is not None:
            self._posters.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()
        self._deadlines.stop()
        if self._status_db is not None:
            close_quietly(self._status_db)

    # --- messages (actor thread)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, CdrQueued):
            self.poke()
        elif isinstance(message, Reconfigure):
            if self._thread is None:  # nothing posts: nothing to hand over
                self.config = message.config
                return
            self._next_config = message.config
            self._wake.set()
        else:
            logger.warning("CDR poster ignores %r", message)

    def poke(self) -> None:
        """New CDRs are waiting: look at the outbox now (the endpoint's back-off still
        holds)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """pending, delivered, oldest_pending_age_s, last_error, by_node (read from
        the outbox: every node's rows)."""
        if self._status_db is None:
            self._status_db = open_database(self.config.database.url)
        return asdict(outbox_status(self._status_db))

    # --- the posting thread

    def _run(self) -> None:
        """The cdr-poster thread: deliver what is due, then wait for a reason to look
        again. Its catch-all keeps delivery alive through anything one round hits."""
        db = open_database(self.config.database.url)
        try:
            while not self._stopping.is_set():
                self._take_new_config()
                poll_s = self.config.cdr.poll_interval_s
                wait_s = poll_s
                try:
                    if time.monotonic() >= self._endpoint_retry_at:
                        wait_s = min(poll_s, self._deliver_round(db))
                    else:
                        wait_s = min(poll_s, self._endpoint_retry_at - time.monotonic())
                    self._read_backlog(db)
                except DatabaseError as exc:
                    logger.warning("CDR outbox unreadable (%s); retrying in %.1f s", exc, poll_s)
                    close_quietly(db)
                except Exception:
                    logger.exception("CDR delivery round failed")
                self._wake.wait(max(0.0, wait_s))
                self._wake.clear()
        finally:
            close_quietly(db)

    def _read_backlog(self, db: Database) -> None:
        """The outbox's undelivered count and oldest CDR, at most once a poll interval
        (cdr-poster thread). A failed read keeps the last one, so the age shown goes on
        growing while the database is away."""
        if time.monotonic() - self._backlog_read_at < self.config.cdr.poll_interval_s:
            return
        self._backlog_read_at = time.monotonic()
        self._backlog = undelivered(db)

    def _backlog_reading(self) -> dict[str, float]:
        """For the scrape thread: pending CDRs and the oldest one's age, in seconds."""
        backlog = self._backlog
        if backlog is None:
            return {}
        pending, oldest = backlog
        age_s = max(0.0, (utc_now() - oldest).total_seconds()) if oldest is not None else 0.0
        return {"pending": pending, "oldest_pending_age_s": age_s}
    def _take_new_config(self) -> None:
        """The cdr-poster thread, between two rounds: a reload's [cdr] applies from the
        next POST on. A new endpoint (or pool size) gets a pool of its own and starts
        without the old one's back-off; the old pool is closed, nothing being posted."""
        config, self._next_config = self._next_config, None
        if config is None:
            return
        old, new = self.config.cdr, config.cdr
        self.config = config
        if (new.url, new.max_concurrent) == (old.url, old.max_concurrent):
            return
        old_pool, old_posters = self._pool, self._posters
        self._open_endpoint(new)
        self._endpoint_failures, self._endpoint_retry_at = 0, 0.0
        if old_posters is not None:
            old_posters.shutdown(wait=True)
        if old_pool is not None:
            old_pool.close()
        logger.info("CDR poster delivering to %s from now on", redact(new.url))

    def _deliver_round(self, db: Database) -> float:
        """Claim the due rows, oldest first, post them, record what happened; seconds
        until the next row is due."""
        cdr = self.config.cdr
        if self._skip_locked is None:
            db.connect(reuse_if_open=True)
            self._skip_locked = supports_skip_locked(db)
        # A wave is sent only while a whole POST (connect and read timeouts) still fits
        # in the claim, counted from before the claim was asked for.
        post_until = time.monotonic() + cdr.lease_s - 2 * cdr.timeout_s
        rows = claim_due(db, self.owner, cdr.batch_size, cdr.lease_s, self._skip_locked)
        posted, errors = self._post_in_waves(rows, post_until)
        now = utc_now()
        delivered = [row.id for row, error in zip(posted, errors, strict=True) if error is None]
        failed = [Failed(row, error, now + timedelta(seconds=retry_delay_s(
                      row.attempts + 1, cdr.retry_min_s, cdr.retry_max_s)))
                  for row, error in zip(posted, errors, strict=True) if error is not None]
        settle(db, self.owner, delivered, failed, unsent=[row.id for row in rows[len(posted):]])
        for row, outcome in zip(posted, errors, strict=True):
            if outcome is None:  # accepted at `now`, queued when the DbWriter took it
                self._telemetry.cdr_delivered((now - row.created_at).total_seconds())
        if failed:
            self._endpoint_failures += 1
            endpoint_wait_s = retry_delay_s(self._endpoint_failures, cdr.retry_min_s, cdr.retry_max_s)
            self._endpoint_retry_at = time.monotonic() + endpoint_wait_s
            first = failed[0]
            logger.warning("%d CDR(s) not delivered, e.g. call %s (attempt %d): %s; endpoint retried in %.1f s",
                           len(failed), first.row.call_uuid, first.row.attempts + 1, first.error,
                           endpoint_wait_s)
            return endpoint_wait_s
        if posted:
            self._endpoint_failures = 0
        if len(posted) < len(rows):
            # Out of claim time (a slow database or endpoint): the rest were released.
            return 0.0 if posted else self.config.cdr.poll_interval_s
        if len(rows) == cdr.batch_size:
            return 0.0  # more are due right now
        due = next_due(db)
        if due is None:
            return float("inf")
        return max(0.0, (due - utc_now()).total_seconds())

    def _post_in_waves(self, rows: list[CdrOutbox], post_until: float
                       ) -> tuple[list[CdrOutbox], list[str | None]]:
        """Post the first row alone (a probe: a dead endpoint gets one request, not a
        batch), then the rest `max_concurrent` at a time, stopping after a wave with a
        failure, or when a wave might outlast the claim (`post_until`, monotonic).
        Returns the rows posted and what happened to each."""
        assert self._posters is not None
        wave_size = self.config.cdr.max_concurrent
        posted: list[CdrOutbox] = []
        errors: list[str | None] = []
        start = 0
        while start < len(rows) and not self._stopping.is_set() and time.monotonic() < post_until:
            wave = rows[start:start + (1 if start == 0 else wave_size)]
            start += len(wave)
            posted += wave
            errors += self._posters.map(self._post, wave)
            if any(error is not None for error in errors):
                break
        return posted, errors

    def _post(self, row: CdrOutbox) -> str | None:
        """POST one CDR; None when the endpoint took it (2xx) within `[cdr] timeout_s`
        as a whole, else what went wrong. Runs on a cdr-post pool thread."""
        assert self._pool is not None
        timeout_s = self.config.cdr.timeout_s
        self._deadlines.begin(timeout_s)
        try:
            error = self._post_unbounded(row, timeout_s)
        finally:
            cut_off = self._deadlines.end()
        if cut_off:  # whatever the endpoint managed to say, it did not say it in time
            return f"no whole answer within [cdr] timeout_s = {timeout_s:g} s"
        return error

    def _post_unbounded(self, row: CdrOutbox, timeout_s: float) -> str | None:
        """The POST itself; its socket is cut off by `self._deadlines` at the deadline."""
        assert self._pool is not None
        try:
            response = self._pool.urlopen(
                "POST", self._path, body=row.payload.encode("utf-8"),
                headers={"Content-Type": "application/json", "Idempotency-Key": row.call_uuid,
                         "User-Agent": "icall"},
                timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
                redirect=False, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            return f"no answer: {getattr(exc, 'reason', None) or exc}"
        try:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) <= MAX_REPLY_BYTES:
                response.read()  # read to the end so the connection can be reused
            else:
                response.close()
        except urllib3.exceptions.HTTPError as exc:
            if not 200 <= response.status < 300:
                return f"http {response.status}, then: {exc}"
        finally:
            response.release_conn()
        if 200 <= response.status < 300:
            return None
        return f"http {response.status}"
