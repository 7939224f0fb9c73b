"""DbWriter: the one actor that writes call data to the database.

Call actors leave their `DbWrite`s in its intake (actors.write_intake: no wake-up per
write) or `tell` them, and never wait; after the transaction holding a write has
committed, it tells the write's `reply_to` a `DbAck` (one per call and commit).
Writes are batched: the first write to arrive starts a wait of `[database]
commit_interval_ms` for others to share its commit (a full batch ends the wait), and
a backlog is committed in batches of at most `[database] batch_size`
(storage.records says how each kind becomes rows, idempotently).

When the database is unreachable, locked or has no schema, writes wait in memory and
the flush is retried with exponential backoff up to `[database] retry_max_s`. Memory
is bounded by `[database] backlog_max` writes (a warning at 80 %): past it, the oldest
`batch_size` writes move to the spool (storage.spool, an SQLite file on local disk)
and are acknowledged there, so their calls can let go of them. Once the database is
back, each flush writes a batch from memory and then one from the spool, oldest
first, until both are empty; a writer that starts finds what an earlier run spooled.
Only if the spool itself cannot be written are step and fifo writes refused (left
unacknowledged, so their call actor still holds them, and logged loudly) while call,
cdr and failure writes (a few per call) are kept in memory beyond the bound. Stopping
with the database away moves what is in memory to the spool.

A write the database refuses for its own values (storage.db.rejected_by_value:
malformed fields, a value out of range) is logged at ERROR and acknowledged, so no
call waits on it forever. Its values (caller ids, names: personal data) stay out of
that line, masked even where the database's message quotes them; the whole write is
logged at DEBUG. Any other failure, even one reported as a data error (a key
generator at its limit), is retried: never acknowledged as done.

Threads: every method below runs in the actor's own thread, except `__init__` (the
starter's). The gather and retry waits run on one timer thread the writer keeps for
its lifetime (actors.timers), which only tells the actor a flush marker: a thread
started per wait cost more than the commit it waited for.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pykka
from peewee import DatabaseError

from actors import mailbox
from actors.db_spool import SpoolKeeper
from actors.messages import CdrQueued, DbAck, DbWrite
from actors.reporting import NO_TELEMETRY, Telemetry
from actors.timers import TimerService
from actors.write_intake import COMMITTED_AT_ONCE, Drain, WriteIntake
from storage.db import close_quietly, open_database, redact, rejected_by_value
from storage.migrations import SchemaError, check_schema
from storage.models import Call
from storage.records import BadRecord, KnownCalls, Prepared, commit_batch, prepare
from storage.spool import Spool, Spooled

logger = logging.getLogger(__name__)

FIRST_RETRY_S = 0.05
BACKLOG_WARNING_FRACTION = 0.8
ALWAYS_KEPT_KINDS = frozenset({"call", "cdr", "failure", "claim", "close"})
REFUSAL_LOG_EVERY = 1000


@dataclass(frozen=True)
class _Flush:
    """Self-addressed marker: write the next batch now. `wait` names the gather or
    retry wait that sent it (0: sent at once); a wait that was called off is stale."""

    wait: int = 0


@dataclass
class _Pending:
    write: DbWrite
    prepared: Prepared


def process_claim(node: str) -> str:
    """A name for this process on the calls it holds: its node, its pid (a worker) and a
    token of its own (a restarted process, or a second service in one process, differs)."""
    return f"{node}#{os.getpid()}#{secrets.token_hex(4)}"


class DbWriter(mailbox.Actor):
    """Batches DbWrites into transactions and acks each after commit; see module doc."""

    def __init__(self, config, telemetry: Telemetry = NO_TELEMETRY, intake: WriteIntake | None = None,
                 claim: str | None = None):
        """`intake`: where the calls leave their writes; it is bound to this writer
        here, in the starter's thread, so a write put as soon as `start` returns
        reaches it (a replacement takes over its predecessor's intake). `claim`: the
        process's name on the calls it holds (storage.records), the same for every
        writer of one service run; None: one of this writer's own."""
        super().__init__()
        self._telemetry = telemetry
        settings = config.database
        self._url = settings.url
        self._node = config.service.node
        self.claim = claim or process_claim(self._node)
        self._batch_size = settings.batch_size
        self._backlog_max = settings.backlog_max
        self._retry_max_s = settings.retry_max_s
        # Without a [cdr] url nothing would ever deliver an outbox row: keep CDRs in the
        # calls table only, rather than grow a queue nobody empties.
        self._fill_outbox = bool(config.cdr.url)
        self._cdr_poster: Any = None  # its ref, found when first poked
        self._db = open_database(settings.url)  # a bad URL fails here, in the starter
        self._known_calls = KnownCalls()  # calls whose row is written: their writes skip it
        self._connected = False
        self._pending: deque[_Pending] = deque()
        self._spool = SpoolKeeper(Spool(settings.spool_path), redact(settings.url))
        self._intake = intake if intake is not None else WriteIntake()
        self._intake.batch_size = settings.batch_size
        self._flush_queued = False  # set by _mark_flush_queued only
        self._intake.bind(self.actor_ref)
        self._timers = TimerService(name="DbWriter-timer")
        self._waits = 0  # numbers the gather and retry waits
        self._waiting = 0  # the wait whose _Flush counts (0: none)
        self._gathering = False  # that wait gathers writes (else it backs off a failure)
        self._commit_interval_s = settings.commit_interval_ms / 1000
        self._stopping = False
        self._backoff_s = 0.0
        self._backlog_warned = False
        self._counts = {"written": 0, "retries": 0, "refused": 0, "rejected": 0}
        self._last_error = ""

    # --- pykka hooks

    def on_start(self) -> None:
        """Connect now if we can; if not, the first write retries (we still start).
        Writes an earlier run left in the spool are written first."""
        # stats() only reads counters and lengths: safe from the scrape thread too.
        self._telemetry.watch("db_writer", self.stats)
        self._timers.start()
        try:
            self._ensure_connected()
        except (SchemaError, DatabaseError) as exc:
            self._note_failure(exc)
        if self._spool.left_over():
            self._queue_flush()
        if len(self._intake):  # left by a writer that died, or put before this one ran
            self._take_intake()

    def on_receive(self, message) -> None:
        # Actor edge: a tell that raises would stop the writer and lose the backlog.
        try:
            if isinstance(message, DbWrite):
                self._accept(message)
            elif isinstance(message, Drain):
                self._arm_intake()  # disarmed, unless a gather will take it anyway
                self._take_intake()
            elif isinstance(message, _Flush):
                if message.wait and message.wait != self._waiting:
                    return  # a wait called off (an urgent write flushed already)
                self._mark_flush_queued(False)  # disarms the intake before it is taken
                self._waiting = 0
                self._take_intake()
                self._flush()
            else:
                logger.warning("DbWriter ignores an unexpected %s", type(message).__name__)
        except Exception:
            logger.exception("DbWriter: unexpected error; the backlog is kept")

    def on_stop(self) -> None:
        """Write what is in memory; if the database will not take it, spool it for the
        next start. (The spool is left for the next start too: draining it could take
        minutes.) Then close our connections."""
        self._stopping = True
        self._timers.stop()
        self._take_intake()
        while self._pending and self._write_pending():
            pass
        while self._pending and self._spill():
            pass
        if self._pending:
            logger.error(
                "DbWriter stopping with %d writes not stored (database: %s; last error: %s)",
                len(self._pending), redact(self._url), self._last_error,
            )
        self._spool.close()
        close_quietly(self._db)

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        self._timers.stop()

    # --- asked by others

    def stats(self) -> dict:
        """Counters for monitoring: pending (in memory), spooled (on disk), written,
        retries, refused, rejected, spilled, drained, last_error."""
        # Like the writes still in the mailbox, those in the intake are not counted:
        # `pending` is what backlog_max bounds.
        return {"pending": len(self._pending), "spooled": self._spool.known_waiting(), **self._counts,
                **self._spool.counts, "last_error": self._last_error}

    def unended_calls(self, limit: int = 10_000) -> list[dict]:
        """This node's calls whose row has no hangup cause yet (uuid and path): at
        start, those whose channel is gone ended while no icall listened. Only this
        node's (and rows from before nodes were recorded): another node's live calls
        are on another switch, where this icall cannot see them. Raises when the
        database cannot be read (the caller tries again at the next resync)."""
        self._ensure_connected()
        ours = (Call.node == self._node) | Call.node.is_null()
        query = (Call.select(Call.uuid, Call.path).where(Call.hangup_cause.is_null(), ours)
                 .limit(limit).dicts())
        return list(query.execute(self._db))

    # --- taking writes in

    def _mark_flush_queued(self, queued: bool) -> None:
        """Whether a _Flush is in the mailbox or on a wait (it will take the intake
        too); the intake is armed or disarmed to match, here and only here."""
        self._flush_queued = queued
        self._arm_intake()

    def _arm_intake(self) -> None:
        """Armed (a put need not wake this actor) while a flush will take the intake
        anyway, except during a retry wait: the database is away, and each write must
        come in at once to count against `backlog_max` (and be spilled past it), as
        the bound on memory promises."""
        retrying = bool(self._waiting) and not self._gathering
        self._intake.armed = self._flush_queued and not retrying

    def _take_intake(self) -> None:
        for write in self._intake.take():
            self._accept(write)

    def _accept(self, write: DbWrite) -> None:
        try:
            prepared = prepare(write.call_uuid, write.seq, write.kind, write.fields, self._node, self.claim)
        except BadRecord as exc:
            self._reject(write, str(exc))
            return
        if not self._fill_outbox:
            prepared.outbox = None
        if len(self._pending) >= self._backlog_max and not self._spill():
            if write.kind not in ALWAYS_KEPT_KINDS:
                self._refuse(write)
                return
        self._pending.append(_Pending(write, prepared))
        self._warn_if_backlog_high()
        self._gather(urgent=write.kind in COMMITTED_AT_ONCE)

    def _gather(self, urgent: bool = False) -> None:
        """Commit after `[database] commit_interval_ms`, gathering what else comes (a
        full batch or an `urgent` write ends the wait): a commit, and SQLite's fsync,
        per write cost more CPU than everything else a call does. Nobody waits on a
        commit: calls keep their writes until acknowledged."""
        if (urgent or len(self._pending) >= self._batch_size) and self._waiting and self._gathering:
            self._waiting = 0  # the wait's own _Flush, when it comes, is stale
            self.actor_ref.tell(_Flush())  # the queued flag stays set: this is that flush
        elif not self._flush_queued:
            if urgent or self._commit_interval_s <= 0:
                self._queue_flush()
                return
            self._wait(self._commit_interval_s, gathering=True)

    def _spill(self) -> bool:
        """Move the oldest batch in memory to the spool and ack it; False if the spool
        cannot take it (it stays in memory)."""
        batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
        if not self._spool.add([p.write for p in batch], self._last_error):
            return False
        for _ in batch:
            self._ack(self._pending.popleft().write)
        return True

    # --- writing out

    def _flush(self) -> bool:
        """A batch from memory, then one from the spool; False if the database failed
        (a retry is scheduled)."""
        if self._pending and not self._write_pending():
            return False
        if self._spool.waiting() and not self._drain_spool():
            return False
        self._after_success()
        return True

    def _write_pending(self) -> bool:
        batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
        outcomes = self._store([p.prepared for p in batch], [p.write for p in batch])
        cdrs = 0
        # One ack per call and commit, not one per write: each is a message and a
        # call actor woken up.
        acks: dict[tuple[Any, str], list[int]] = {}
        for outcome in outcomes:
            item = self._pending.popleft()
            if outcome is None:
                self._counts["written"] += 1
                cdrs += item.write.kind == "cdr"
                if item.write.reply_to is not None:
                    key = (item.write.reply_to, item.write.call_uuid)
                    acks.setdefault(key, []).append(item.write.seq)
            else:
                self._reject(item.write, outcome)
        for (reply_to, call_uuid), seqs in acks.items():
            try:
                reply_to.tell(DbAck(call_uuid, seqs[0], tuple(seqs[1:])))
            except pykka.ActorDeadError:
                pass  # the call actor is gone; the rows are stored all the same
        if cdrs:
            self._poke_cdr_poster()
        return len(outcomes) == len(batch)

    def _drain_spool(self) -> bool:
        """Write the spool's oldest batch to the database, then delete it there."""
        readable: list[Spooled] = []
        prepared: list[Prepared] = []
        settled: list[int] = []
        for item in self._spool.oldest(self._batch_size):
            try:
                rows = prepare(item.call_uuid, item.seq, item.kind, item.fields, self._node, self.claim)
            except BadRecord as exc:
                self._reject(item, str(exc))
                settled.append(item.id)
                continue
            if not self._fill_outbox:
                rows.outbox = None
            readable.append(item)
            prepared.append(rows)
        outcomes = self._store(prepared, readable)
        for item, outcome in zip(readable, outcomes, strict=False):  # the settled ones
            settled.append(item.id)
            if outcome is not None:
                self._reject(item, outcome)
        if settled:
            self._spool.remove(settled, written=outcomes.count(None))
        if any(item.kind == "cdr" for item in readable[:len(outcomes)]):
            self._poke_cdr_poster()
        return len(outcomes) == len(prepared)

    def _store(self, batch: list[Prepared], writes: Sequence[DbWrite | Spooled]) -> list[str | None]:
        """Commit the batch; for each write settled, in order, None (stored) or why
        the database refused its values. Fewer outcomes than writes: the database
        failed there, a retry is scheduled and the rest waits."""
        if not batch:
            return []
        try:
            self._ensure_connected()
            self._commit(batch)
            return [None] * len(batch)
        except SchemaError as exc:
            self._schedule_retry(exc)
            return []
        except DatabaseError as exc:
            if not rejected_by_value(exc):
                self._schedule_retry(exc)
                return []
            logger.warning("DbWriter: a batch failed (%s); writing its rows one by one",
                           _masked(f"{type(exc).__name__}: {exc}", writes))
        outcomes: list[str | None] = []
        for prepared in batch:
            try:
                self._commit([prepared])
            except DatabaseError as exc:
                if not rejected_by_value(exc):
                    self._schedule_retry(exc)
                    break
                outcomes.append(f"{type(exc).__name__}: {exc}")
                continue
            outcomes.append(None)
        return outcomes

    def _commit(self, batch: list[Prepared]) -> None:
        started = time.monotonic()
        commit_batch(self._db, batch, self._known_calls)
        self._telemetry.db_committed(time.monotonic() - started, len(batch))

    def _poke_cdr_poster(self) -> None:
        """New CDRs are in the outbox: the poster may post them now instead of at its
        next poll. Without a [cdr] url no outbox row is written and nobody is poked.
        Found by class name, once (again if it was replaced), so neither actor has to be
        built with the other: looking through the registry scans every live call's
        actor."""
        if not self._fill_outbox:
            return
        if self._cdr_poster is None or not self._cdr_poster.is_alive():
            found = pykka.ActorRegistry.get_by_class_name("CdrPoster")
            self._cdr_poster = found[0] if found else None
        if self._cdr_poster is not None:
            try:
                self._cdr_poster.tell(CdrQueued())
            except pykka.ActorDeadError:
                self._cdr_poster = None

    def _after_success(self) -> None:
        self._backoff_s = 0.0
        if len(self._pending) < self._backlog_max * BACKLOG_WARNING_FRACTION / 2:
            self._backlog_warned = False
        if self._pending or self._spool.waiting():
            self._queue_flush()

    def _queue_flush(self) -> None:
        if not self._flush_queued:
            self._mark_flush_queued(True)
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
        logger.info("DbWriter: %d writes waiting (%d spooled); retrying in %.2fs",
                    len(self._pending), self._spool.waiting(), self._backoff_s)
        if self._flush_queued or self._stopping:
            return
        self._wait(self._backoff_s, gathering=False)

    def _wait(self, delay_s: float, gathering: bool) -> None:
        """A _Flush after `delay_s`, from the timer thread."""
        self._waits += 1
        self._waiting, self._gathering = self._waits, gathering
        self._mark_flush_queued(True)
        self._timers.schedule(delay_s, self.actor_ref, _Flush(self._waiting))

    # --- answers

    def _ack(self, write: DbWrite) -> None:
        if write.reply_to is None:
            return
        try:
            write.reply_to.tell(DbAck(write.call_uuid, write.seq))
        except pykka.ActorDeadError:
            pass  # the call actor is gone; the row is stored all the same

    def _reject(self, write: DbWrite | Spooled, why: str) -> None:
        self._counts["rejected"] += 1
        logger.error("DbWriter: write cannot be stored and is dropped: %s write of call %s "
                     "(seq %s, fields %s): %s", write.kind, write.call_uuid, write.seq,
                     ", ".join(sorted(write.fields)) or "none", _masked(why, [write]))
        logger.debug("DbWriter: the dropped write: %r", write)
        if isinstance(write, DbWrite):
            self._ack(write)

    def _refuse(self, write: DbWrite) -> None:
        self._counts["refused"] += 1
        if self._counts["refused"] % REFUSAL_LOG_EVERY == 1:
            logger.error(
                "DbWriter: backlog full (%d writes, backlog_max %d, database %s down: %s) and "
                "the spool unusable (%s); refusing %s writes, %d refused so far",
                len(self._pending), self._backlog_max, redact(self._url), self._last_error,
                self._spool.last_error, write.kind, self._counts["refused"],
            )

    def _warn_if_backlog_high(self) -> None:
        if self._backlog_warned or len(self._pending) < self._backlog_max * BACKLOG_WARNING_FRACTION:
            return
        self._backlog_warned = True
        logger.warning(
            "DbWriter: backlog at %d of backlog_max %d writes; database %s: %s",
            len(self._pending), self._backlog_max, redact(self._url), self._last_error or "slow",
        )


def _masked(text: str, writes: Sequence[DbWrite | Spooled]) -> str:
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
