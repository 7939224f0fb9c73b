"""The DbWriter's spool: writes the database could not take yet, kept on local disk.

When the database is away for longer than the in-memory backlog lasts, the DbWriter
moves its oldest writes here, in one transaction per batch, and acknowledges them:
from then on they survive a crash or a restart of icall as they would in the
database. When the database is back the writer copies them over, oldest first, and
deletes them here only after the database has committed them (a crash in between
writes them again, which the idempotent writes of storage.records absorb).

The spool is an SQLite file (`[database] spool_path`, by default beside the embedded
database in the state directory), in WAL mode with synchronous=FULL as the database
itself: an acknowledged write must survive a power cut. The file is created at the
first spill; a writer starting finds any left over from a previous run.

With `[service] workers`, each worker has a file of its own (`worker_spool_path`:
worker 0 the configured path, worker k `<name>.worker<k>.<ext>`), so that each counts
what it holds and a restarted worker finds what its predecessor spooled. Files left by
workers that no longer run (fewer workers configured) are moved into the configured
path's file at start (`adopt_orphans`), before any writer opens it.

Thread-free: used only by the DbWriter's thread, on its own connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peewee import (
    BigAutoField,
    CharField,
    DatabaseError,
    DateTimeField,
    IntegerField,
    Model,
    SchemaManager,
    SqliteDatabase,
    TextField,
)

from storage.db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_PRAGMAS, StorageError
from storage.models import utc_now


class SpoolError(StorageError):
    """The spool file cannot be created, read or written (disk full, permissions...)."""


class SpooledWrite(Model):
    id = BigAutoField()
    call_uuid = CharField()
    seq = IntegerField()
    kind = CharField()
    fields = TextField()  # JSON object: the write's fields as the call actor sent them
    spooled_at = DateTimeField()

    class Meta:
        database = None
        table_name = "spooled_writes"


@dataclass(frozen=True)
class Spooled:
    """A write read back from the spool; `id` is its place in the spool."""

    id: int
    call_uuid: str
    seq: int
    kind: str
    fields: dict[str, Any]


class Spool:
    """`add` whole batches, `oldest` to read them back, `remove` once stored elsewhere.
    Every method raises SpoolError when the file cannot be used."""

    def __init__(self, path: str):
        self.path = path
        self._db: SqliteDatabase | None = None
        self._count: int | None = None  # rows in the file, kept while we are its writer

    def exists(self) -> bool:
        return Path(self.path).exists()

    def count(self) -> int:
        """Rows waiting in the spool (0 when there is no file)."""
        if self._count is None:
            with self._guard():
                self._count = SpooledWrite.select().count(self._open()) if self.exists() else 0
        return self._count

    def known_count(self) -> int:
        """The count as last read or kept, without touching the file: for other
        threads (a metrics scrape), which must not use the spool's connection."""
        return self._count or 0

    def add(self, writes: list[tuple[str, int, str, dict[str, Any]]]) -> None:
        """Store (call_uuid, seq, kind, fields) writes in one transaction: all or none."""
        now = utc_now()
        rows = [{"call_uuid": u, "seq": seq, "kind": kind, "spooled_at": now,
                 "fields": json.dumps(fields, separators=(",", ":"), default=str)}
                for u, seq, kind, fields in writes]
        count = self.count()
        with self._guard():
            db = self._open()
            with db.atomic("IMMEDIATE"):
                for start in range(0, len(rows), 100):  # 600 parameters per statement
                    SpooledWrite.insert_many(rows[start:start + 100]).execute(db)
        self._count = count + len(rows)

    def oldest(self, limit: int) -> list[Spooled]:
        with self._guard():
            query = SpooledWrite.select().order_by(SpooledWrite.id).limit(limit)
            return [Spooled(row.id, row.call_uuid, row.seq, row.kind, json.loads(row.fields))
                    for row in query.execute(self._open())]

    def remove(self, ids: list[int]) -> None:
        count = self.count()
        with self._guard():
            db = self._open()
            with db.atomic("IMMEDIATE"):
                removed = SpooledWrite.delete().where(SpooledWrite.id.in_(ids)).execute(db)
        self._count = max(0, count - removed)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._count = None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (DatabaseError, OSError, ValueError) as exc:  # ValueError: unreadable JSON
            self.close()  # start again from the file next time
            raise SpoolError(f"spool {self.path}: {type(exc).__name__}: {exc}") from exc

    def _open(self) -> SqliteDatabase:
        if self._db is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = SqliteDatabase(self.path, pragmas=SQLITE_PRAGMAS,
                                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            try:
                db.connect()
                SchemaManager(SpooledWrite, db).create_all(safe=True)
            except Exception:
                db.close()
                raise
            self._db = db
        return self._db


def worker_spool_path(path: str, worker: int | None) -> str:
    """Worker `worker`'s spool file: the configured one for worker 0 (and a single
    process), `<name>.worker<k><ext>` beside it for worker k."""
    if not worker:
        return path
    spool = Path(path)
    return str(spool.with_name(f"{spool.stem}.worker{worker}{spool.suffix}"))


def adopt_orphans(path: str, workers: int) -> int:
    """Move the writes of the spool files of workers >= `workers` (none run) into the
    file at `path`, deleting those files; the number of writes moved. Only while no
    writer has these files open (at start). Raises SpoolError."""
    spool = Path(path)
    moved = 0
    into = Spool(path)
    try:
        for orphan in sorted(spool.parent.glob(f"{spool.stem}.worker*{spool.suffix}")):
            index = orphan.name[len(spool.stem) + len(".worker"):len(orphan.name) - len(spool.suffix)]
            if not index.isdigit() or int(index) < workers:
                continue
            moved += _move_all(Spool(str(orphan)), into)
            for leftover in (orphan, Path(f"{orphan}-wal"), Path(f"{orphan}-shm")):
                leftover.unlink(missing_ok=True)
    finally:
        into.close()
    return moved


def _move_all(source: Spool, into: Spool) -> int:
    """Every write of `source` added to `into`, oldest first, batch by batch (a crash
    in between leaves a batch in both: written twice, which idempotent writes absorb)."""
    moved = 0
    try:
        while batch := source.oldest(500):
            into.add([(w.call_uuid, w.seq, w.kind, w.fields) for w in batch])
            source.remove([w.id for w in batch])
            moved += len(batch)
    finally:
        source.close()
    return moved
