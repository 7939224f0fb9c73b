"""CdrPoster: delivers each CDR in the durable outbox (`cdr_outbox`) to `[cdr] url`.

Every CDR the DbWriter commits gets an outbox row in the same transaction. This actor
POSTs each undelivered, due row as JSON with `Idempotency-Key: <call uuid>`:
  2xx      -> delivered_at set (the row is done);
  anything else, or no answer -> attempts + 1, last_error, and next_attempt_at pushed
           back by retry_min_s doubling up to retry_max_s (with jitter); the round
           stops there, and the whole endpoint backs off the same way, so a dead
           endpoint gets one probe per back-off rather than a storm.
Delivery is at least once: a crash between the 2xx and the update sends the row again,
with the same key, and the endpoint drops the repeat. Undelivered rows are found again
by any later poster (a restart), since the outbox is the only state.

Threads: the actor's thread answers `poke()` / `CdrQueued` and `status()`; a
"cdr-poster" thread does the posting, with its own database connection, waking every
`poll_interval_s`, when poked, or when the next row falls due. It posts up to
`[cdr] max_concurrent` rows at once on a small pool of "cdr-post" threads: one POST at
a time would deliver 1 / round-trip CDRs a second (25 a second to an endpoint 40 ms
away), fewer than a busy switch ends calls. While the endpoint is failing, a round
sends a single probe first. `stop()` wakes it and
waits at most one POST (`timeout_s`). An empty `[cdr] url` starts no thread: CDRs stay
in the database.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pykka
import urllib3
from peewee import Database, DatabaseError, fn

from actors.messages import CdrQueued
from actors.telemetry import NO_TELEMETRY, Telemetry
from ivr.config import Config
from storage.db import close_quietly, open_database, redact
from storage.models import CdrOutbox, utc_now

logger = logging.getLogger(__name__)

# An endpoint's answer is read up to this size (it only has to say 2xx).
MAX_REPLY_BYTES = 65536


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    delivered: int
    oldest_pending_age_s: float | None
    last_error: str | None


def outbox_status(db: Database) -> OutboxStatus:
    """Counts of the outbox; any thread, with its own `db`."""
    undelivered = CdrOutbox.delivered_at.is_null()
    pending = CdrOutbox.select().where(undelivered).count(db)
    delivered = CdrOutbox.select().where(~undelivered).count(db)
    oldest = CdrOutbox.select(fn.MIN(CdrOutbox.created_at)).where(undelivered).scalar(db)
    if isinstance(oldest, str):  # SQLite hands an aggregate back as text
        oldest = CdrOutbox.created_at.python_value(oldest)
    last = (CdrOutbox.select(CdrOutbox.last_error)
            .where(undelivered, CdrOutbox.last_error.is_null(False))
            .order_by(CdrOutbox.next_attempt_at.desc()).first(db))
    age_s = (utc_now() - oldest).total_seconds() if oldest else None
    return OutboxStatus(pending, delivered, age_s, last.last_error if last else None)


def retry_delay_s(failures: int, retry_min_s: float, retry_max_s: float) -> float:
    """retry_min_s doubling per failure up to retry_max_s, less up to a quarter (jitter,
    so many rows or many posters do not retry in step)."""
    delay = min(retry_max_s, retry_min_s * 2 ** max(0, failures - 1))
    return delay * random.uniform(0.75, 1.0)


class CdrPoster(pykka.ThreadingActor):
    """Built as `CdrPoster.start(config)`; `poke()` (or a CdrQueued tell), `status()`."""

    def __init__(self, config: Config, telemetry: Telemetry = NO_TELEMETRY):
        super().__init__()
        self.config = config
        self._telemetry = telemetry
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: urllib3.PoolManager | None = None
        self._posters: ThreadPoolExecutor | None = None
        self._status_db: Database | None = None
        self._endpoint_failures = 0
        self._endpoint_retry_at = 0.0

    # --- life cycle (actor thread)

    def on_start(self) -> None:
        cdr = self.config.cdr
        if not cdr.url:
            logger.info("no [cdr] url: CDRs are kept in the database only")
            return
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=cdr.max_concurrent, retries=False)
        self._posters = ThreadPoolExecutor(max_workers=cdr.max_concurrent, thread_name_prefix="cdr-post")
        self._thread = threading.Thread(target=self._run, name="cdr-poster", daemon=True)
        self._thread.start()
        logger.info("CDR poster delivering to %s", redact(cdr.url))

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
            self._pool.clear()
        if self._status_db is not None:
            close_quietly(self._status_db)

    # --- messages (actor thread)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, CdrQueued):
            self.poke()
        else:
            logger.warning("CDR poster ignores %r", message)

    def poke(self) -> None:
        """New CDRs are waiting: look at the outbox now (the endpoint's back-off still
        holds)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """pending, delivered, oldest_pending_age_s, last_error (read from the outbox)."""
        if self._status_db is None:
            self._status_db = open_database(self.config.database.url)
        return asdict(outbox_status(self._status_db))

    # --- the posting thread

    def _run(self) -> None:
        """The cdr-poster thread: deliver what is due, then wait for a reason to look
        again. Its catch-all keeps delivery alive through anything one round hits."""
        db = open_database(self.config.database.url)
        poll_s = self.config.cdr.poll_interval_s
        try:
            while not self._stopping.is_set():
                wait_s = poll_s
                try:
                    if time.monotonic() >= self._endpoint_retry_at:
                        wait_s = min(poll_s, self._deliver_round(db))
                    else:
                        wait_s = min(poll_s, self._endpoint_retry_at - time.monotonic())
                except DatabaseError as exc:
                    logger.warning("CDR outbox unreadable (%s); retrying in %.1f s", exc, poll_s)
                    close_quietly(db)
                except Exception:
                    logger.exception("CDR delivery round failed")
                self._wake.wait(max(0.0, wait_s))
                self._wake.clear()
        finally:
            close_quietly(db)

    def _deliver_round(self, db: Database) -> float:
        """Post the due rows, oldest first; seconds until the next row is due."""
        cdr = self.config.cdr
        undelivered = CdrOutbox.delivered_at.is_null()
        rows = list(CdrOutbox.select()
                    .where(undelivered, CdrOutbox.next_attempt_at <= utc_now())
                    .order_by(CdrOutbox.next_attempt_at, CdrOutbox.id)
                    .limit(cdr.batch_size).execute(db))
        rows, errors = self._post_in_waves(rows)
        now = utc_now()
        delivered = [row.id for row, error in zip(rows, errors, strict=True) if error is None]
        failed = [(row, error) for row, error in zip(rows, errors, strict=True) if error is not None]
        with db.atomic():
            if delivered:
                (CdrOutbox.update(delivered_at=now, attempts=CdrOutbox.attempts + 1, last_error=None)
                 .where(CdrOutbox.id.in_(delivered)).execute(db))
            for row, error in failed:
                row_wait_s = retry_delay_s(row.attempts + 1, cdr.retry_min_s, cdr.retry_max_s)
                (CdrOutbox.update(attempts=row.attempts + 1, last_error=error[:500],
                                  next_attempt_at=now + timedelta(seconds=row_wait_s))
                 .where(CdrOutbox.id == row.id).execute(db))
        for row, outcome in zip(rows, errors, strict=True):
            if outcome is None:  # accepted at `now`, queued when the DbWriter took it
                self._telemetry.cdr_delivered((now - row.created_at).total_seconds())
        if failed:
            self._endpoint_failures += 1
            endpoint_wait_s = retry_delay_s(self._endpoint_failures, cdr.retry_min_s, cdr.retry_max_s)
            self._endpoint_retry_at = time.monotonic() + endpoint_wait_s
            row, error = failed[0]
            logger.warning("%d CDR(s) not delivered, e.g. call %s (attempt %d): %s; endpoint retried in %.1f s",
                           len(failed), row.call_uuid, row.attempts + 1, error, endpoint_wait_s)
            return endpoint_wait_s
        if rows:
            self._endpoint_failures = 0
        if len(rows) == cdr.batch_size:
            return 0.0  # more are due right now
        next_due = CdrOutbox.select(fn.MIN(CdrOutbox.next_attempt_at)).where(undelivered).scalar(db)
        if next_due is None:
            return float("inf")
        if isinstance(next_due, str):
            next_due = CdrOutbox.next_attempt_at.python_value(next_due)
        return max(0.0, (next_due - utc_now()).total_seconds())

    def _post_in_waves(self, rows: list[CdrOutbox]) -> tuple[list[CdrOutbox], list[str | None]]:
        """Post the first row alone (a probe: a dead endpoint gets one request, not a
        batch), then the rest `max_concurrent` at a time, stopping after a wave with a
        failure. Returns the rows posted and what happened to each."""
        assert self._posters is not None
        wave_size = self.config.cdr.max_concurrent
        posted: list[CdrOutbox] = []
        errors: list[str | None] = []
        start = 0
        while start < len(rows) and not self._stopping.is_set():
            wave = rows[start:start + (1 if start == 0 else wave_size)]
            start += len(wave)
            posted += wave
            errors += self._posters.map(self._post, wave)
            if any(error is not None for error in errors):
                break
        return posted, errors

    def _post(self, row: CdrOutbox) -> str | None:
        """POST one CDR; None when the endpoint took it (2xx), else what went wrong.
        Runs on a cdr-post pool thread."""
        assert self._pool is not None
        timeout_s = self.config.cdr.timeout_s
        try:
            response = self._pool.request(
                "POST", self.config.cdr.url, body=row.payload.encode("utf-8"),
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
