"""DbWriter: the one actor that writes call data to the database.

Call actors `tell` it `DbWrite`s and never wait; after the transaction holding a write
has committed, it tells the write's `reply_to` a `DbAck` (one per call and commit).
Writes are batched: the first write to arrive starts a wait of `[database]
commit_interval_ms` for others to share its commit (a full batch ends the wait), and
a backlog is committed in batches of at most `[database] batch_size`
(storage.records says how each kind becomes rows, idempotently).

When the database is unreachable, locked or has no schema, writes wait in memory and
the flush is retried with exponential backoff up to `[database] retry_max_s`. The backlog
is bounded by `[database] backlog_max`: a warning at 80 %, and past it new step and fifo
writes (the call logs) are refused loudly and left unacknowledged, so their call actor
still holds them; call, cdr and failure writes (a few per call) are always kept.

A write that can never be stored (malformed fields, a value the database rejects) is
logged at ERROR and acknowledged, so no call waits on it forever. Its values (caller
ids, names: personal data) stay out of that line, masked even where the database's
message quotes them; the whole write is logged at DEBUG.

Threads: every method below runs in the actor's own thread, except `__init__` (the
starter's) and the retry timer, which only tells the actor a flush marker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pykka
from peewee import DatabaseError, DataError, IntegrityError

from actors.messages import CdrQueued, DbAck, DbWrite
from actors.telemetry import NO_TELEMETRY, Telemetry
from storage.db import close_quietly, open_database, redact
from storage.migrations import SchemaError, check_schema
from storage.models import Call
from storage.records import BadRecord, KnownCalls, Prepared, commit_batch, prepare

logger = logging.getLogger(__name__)

FIRST_RETRY_S = 0.05
BACKLOG_WARNING_FRACTION = 0.8
ALWAYS_KEPT_KINDS = frozenset({"call", "cdr", "failure"})
REFUSAL_LOG_EVERY = 1000

# Errors that one write's values caused: the write is rejected, the others go on.
# Anything else (lost connection, lock, missing table, ...) is the database's state
# and is retried, never a reason to drop data.
REJECTED_ERRORS = (DataError, IntegrityError)


@dataclass(frozen=True)
class _Flush:
    """Self-addressed marker: write the next batch now."""


@dataclass
class _Pending:
    write: DbWrite
    prepared: Prepared


class DbWriter(pykka.ThreadingActor):
    """Batches DbWrites into transactions and acks each after commit; see module doc."""

    def __init__(self, config, telemetry: Telemetry = NO_TELEMETRY):
        super().__init__()
        self._telemetry = telemetry
        settings = config.database
        self._url = settings.url
        self._batch_size = settings.batch_size
        self._backlog_max = settings.backlog_max
        self._retry_max_s = settings.retry_max_s
        # Without a [cdr] url nothing would ever deliver an outbox row: keep CDRs in the
        # calls table only, rather than grow a queue nobody empties.
        self._fill_outbox = bool(config.cdr.url)
        self._db = open_database(settings.url)  # a bad URL fails here, in the starter
        self._known_calls = KnownCalls()  # calls whose row is written: their writes skip it
        self._connected = False
        self._pending: deque[_Pending] = deque()
        self._flush_queued = False  # a _Flush is in the mailbox or on the retry timer
        self._retry_timer: threading.Timer | None = None
        self._gather_timer: threading.Timer | None = None
        self._commit_interval_s = settings.commit_interval_ms / 1000
        self._stopping = False
        self._backoff_s = 0.0
        self._backlog_warned = False
        self._counts = {"written": 0, "retries": 0, "refused": 0, "rejected": 0}
        self._last_error = ""

    # --- pykka hooks

    def on_start(self) -> None:
        """Connect now if we can; if not, the first write retries (we still start)."""
        # stats() only reads counters and lengths: safe from the scrape thread too.
        self._telemetry.watch("db_writer", self.stats)
        try:
            self._ensure_connected()
        except (SchemaError, DatabaseError) as exc:
            self._note_failure(exc)

    def on_receive(self, message) -> None:
        # Actor edge: a tell that raises would stop the writer and lose the backlog.
        try:
            if isinstance(message, DbWrite):
                self._accept(message)
            elif isinstance(message, _Flush):
                self._flush_queued = False
                self._gather_timer = None
                self._write_next_batch()
            else:
                logger.warning("DbWriter ignores an unexpected %s", type(message).__name__)
        except Exception:
            logger.exception("DbWriter: unexpected error; the backlog is kept")

    def on_stop(self) -> None:
        """Write what can be written, then close our connection."""
        self._stopping = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        if self._gather_timer is not None:
            self._gather_timer.cancel()
        while self._pending and self._write_next_batch():
            pass
        if self._pending:
            logger.error(
                "DbWriter stopping with %d writes not stored (database: %s; last error: %s)",
                len(self._pending), redact(self._url), self._last_error,
            )
        close_quietly(self._db)

    # --- asked by others

    def stats(self) -> dict:
        """Counters for monitoring: pending, written, retries, refused, rejected, last_error."""
        return {"pending": len(self._pending), **self._counts, "last_error": self._last_error}

    def unended_calls(self, limit: int = 10_000) -> list[dict]:
        """Calls whose row has no hangup cause yet (uuid and path): at start, those
        whose channel is gone ended while no icall listened. Raises when the database
        cannot be read (the caller tries again at the next resync)."""
        self._ensure_connected()
        query = (Call.select(Call.uuid, Call.path).where(Call.hangup_cause.is_null())
                 .limit(limit).dicts())
        return list(query.execute(self._db))

    # --- internals

    def _accept(self, write: DbWrite) -> None:
        try:
            prepared = prepare(write.call_uuid, write.seq, write.kind, write.fields)
        except BadRecord as exc:
            self._reject(write, str(exc))
            return
        if not self._fill_outbox:
            prepared.outbox = None
        if len(self._pending) >= self._backlog_max and write.kind not in ALWAYS_KEPT_KINDS:
            self._refuse(write)
            return
        self._pending.append(_Pending(write, prepared))
        self._warn_if_backlog_high()
        if len(self._pending) >= self._batch_size and self._gather_timer is not None:
            self._gather_timer.cancel()  # a full batch: no reason to wait
            self._gather_timer = None
            self.actor_ref.tell(_Flush())
        elif not self._flush_queued:
            self._flush_queued = True
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Commit after `[database] commit_interval_ms`, gathering what else comes: a
        commit (and SQLite's fsync) per write cost more CPU than everything else a call
        does. Nobody waits on a commit: calls keep their writes until acknowledged."""
        if self._commit_interval_s <= 0:
            self.actor_ref.tell(_Flush())
            return
        self._gather_timer = threading.Timer(self._commit_interval_s, self._tell_flush)
        self._gather_timer.daemon = True
        self._gather_timer.name = "DbWriter-gather"
        self._gather_timer.start()

    def _write_next_batch(self) -> bool:
        """Commit up to batch_size pending writes; False if the database failed."""
        if not self._pending:
            return True
        batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
        try:
            self._ensure_connected()
            started = time.monotonic()
            commit_batch(self._db, [p.prepared for p in batch], self._known_calls)
            self._telemetry.db_committed(time.monotonic() - started, len(batch))
        except REJECTED_ERRORS as exc:
            logger.warning("DbWriter: a batch failed (%s); writing its rows one by one",
                           _masked(f"{type(exc).__name__}: {exc}", [p.write for p in batch]))
            return self._write_one_by_one(len(batch))
        except (SchemaError, DatabaseError) as exc:
            self._schedule_retry(exc)
            return False
        self._done(len(batch))
        self._after_success()
        return True

    def _write_one_by_one(self, count: int) -> bool:
        for _ in range(count):
            item = self._pending[0]
            try:
                started = time.monotonic()
                commit_batch(self._db, [item.prepared], self._known_calls)
                self._telemetry.db_committed(time.monotonic() - started, 1)
            except REJECTED_ERRORS as exc:
                self._pending.popleft()
                self._reject(item.write, f"{type(exc).__name__}: {exc}")
                continue
            except DatabaseError as exc:
                self._schedule_retry(exc)
                return False
            self._done(1)
        self._after_success()
        return True

    def _done(self, count: int) -> None:
        cdrs = 0
        # One ack per call and commit, not one per write: each is a message and a
        # call actor woken up.
        acks: dict[tuple[Any, str], list[int]] = {}
        for _ in range(count):
            item = self._pending.popleft()
            self._counts["written"] += 1
            cdrs += item.write.kind == "cdr"
            if item.write.reply_to is not None:
                acks.setdefault((item.write.reply_to, item.write.call_uuid), []).append(item.write.seq)
        for (reply_to, call_uuid), seqs in acks.items():
            try:
                reply_to.tell(DbAck(call_uuid, seqs[0], tuple(seqs[1:])))
            except pykka.ActorDeadError:
                pass  # the call actor is gone; the rows are stored all the same
        if cdrs:
            self._poke_cdr_poster()

    def _poke_cdr_poster(self) -> None:
        """New CDRs are in the outbox: the poster may post them now instead of at its
        next poll. Found by class name so neither actor has to be built with the other."""
        for ref in pykka.ActorRegistry.get_by_class_name("CdrPoster"):
            try:
                ref.tell(CdrQueued())
            except pykka.ActorDeadError:
                pass

    def _after_success(self) -> None:
        self._backoff_s = 0.0
        if len(self._pending) < self._backlog_max * BACKLOG_WARNING_FRACTION / 2:
            self._backlog_warned = False
        if self._pending and not self._flush_queued:
            self._flush_queued = True
            self.actor_ref.tell(_Flush())

    def _ensure_connected(self) -> None:
        if self._connected and not self._db.is_closed():
            return
        self._db.connect(reuse_if_open=True)
        check_schema(self._db)
        if self._last_error:
            logger.warning("DbWriter: database %s is back", redact(self._url))
        self._connected = True

    def _note_failure(self, exc: Exception) -> None:
        self._counts["retries"] += 1
        text = f"{type(exc).__name__}: {exc}".strip()
        if text != self._last_error:
            logger.error("DbWriter: database %s failed: %s", redact(self._url), text)
        self._last_error = text
        self._connected = False
        close_quietly(self._db)  # the next attempt starts on a fresh connection
        self._known_calls.forget()  # and perhaps on a database restored without them

    def _schedule_retry(self, exc: Exception) -> None:
        self._note_failure(exc)
        self._backoff_s = min(self._retry_max_s, max(FIRST_RETRY_S, self._backoff_s * 2))
        logger.info("DbWriter: %d writes waiting; retrying in %.2fs", len(self._pending), self._backoff_s)
        if self._flush_queued or self._stopping:
            return
        self._flush_queued = True
        self._retry_timer = threading.Timer(self._backoff_s, self._tell_flush)
        self._retry_timer.daemon = True
        self._retry_timer.name = "DbWriter-retry"
        self._retry_timer.start()

    def _tell_flush(self) -> None:
        """Runs in the timer's thread: only hands the actor a flush marker."""
        try:
            self.actor_ref.tell(_Flush())
        except pykka.ActorDeadError:
            pass

    def _ack(self, write: DbWrite) -> None:
        if write.reply_to is None:
            return
        try:
            write.reply_to.tell(DbAck(write.call_uuid, write.seq))
        except pykka.ActorDeadError:
            pass  # the call actor is gone; the row is stored all the same

    def _reject(self, write: DbWrite, why: str) -> None:
        self._counts["rejected"] += 1
        logger.error("DbWriter: write cannot be stored and is dropped: %s write of call %s "
                     "(seq %s, fields %s): %s", write.kind, write.call_uuid, write.seq,
                     ", ".join(sorted(write.fields)) or "none", _masked(why, [write]))
        logger.debug("DbWriter: the dropped write: %r", write)
        self._ack(write)

    def _refuse(self, write: DbWrite) -> None:
        self._counts["refused"] += 1
        if self._counts["refused"] % REFUSAL_LOG_EVERY == 1:
            logger.error(
                "DbWriter: backlog full (%d writes, backlog_max %d, database %s down: %s); "
                "refusing %s writes, %d refused so far",
                len(self._pending), self._backlog_max, redact(self._url), self._last_error,
                write.kind, self._counts["refused"],
            )

    def _warn_if_backlog_high(self) -> None:
        if self._backlog_warned or len(self._pending) < self._backlog_max * BACKLOG_WARNING_FRACTION:
            return
        self._backlog_warned = True
        logger.warning(
            "DbWriter: backlog at %d of backlog_max %d writes; database %s: %s",
            len(self._pending), self._backlog_max, redact(self._url), self._last_error or "slow",
        )


def _masked(text: str, writes: list[DbWrite]) -> str:
    """`text` (a database's error message) with every value of `writes` masked: a
    message such as "invalid input syntax: '5551002'" must not carry a caller id into
    the journal. Runs only on the rare refused write, never per row."""
    for value in sorted({v for w in writes for v in _values(w.fields)}, key=len, reverse=True):
        text = text.replace(value, "<value>")
    return text


def _values(item: object) -> Iterator[str]:
    """The texts inside a write's fields worth masking (three characters or more)."""
    if isinstance(item, dict):
        for value in item.values():
            yield from _values(value)
    elif isinstance(item, list | tuple | set | frozenset):
        for value in item:
            yield from _values(value)
    elif isinstance(item, str | int | float) and not isinstance(item, bool) and len(str(item)) >= 3:
        yield str(item)
