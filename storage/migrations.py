"""Schema versions and how to get from one to the next (`icall db upgrade`).

    1  the first schema (storage.schema_v1)
    2  calls.updated_at; index calls by caller_id; index the CDR outbox by
       (delivered_at, next_attempt_at) for the poster's "undelivered and due" query
    3  64-bit keys on the tables that grow with calls (32-bit ones run out: every
       PostgreSQL ON CONFLICT burns a sequence value); calls.node and cdr_outbox.node
       (which icall took the call); cdr_outbox.claimed_by / claimed_until (the lease
       that lets several icalls share one outbox)
    4  calls.claimed_by: the icall process holding the call (a worker or node that
       takes a call over claims it), so that a process that lost a call never writes
       its end
    5  indexes for the operator's lookups (`icall calls`): calls by (caller_id,
       started_at), (node, started_at), (final_state, started_at) and (ended_at,
       started_at), so each filter reads its newest rows from an index instead of
       scanning and sorting every call

Columns and indexes go through peewee's schema migrator; widening a key is written
per backend (storage.schema_v3). Each step checks what is already there before
changing it: MySQL commits DDL as it goes, so a step interrupted half way must be safe
to run again. `upgrade` holds the database's schema lock (storage.schema_lock), so
several nodes upgrading one database at once apply each step once.

Thread-free: runs in whichever thread calls it, on that thread's connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from peewee import CharField, Database, DateTimeField, SchemaManager
from playhouse.migrate import SchemaMigrator, migrate

from storage import schema_v1, schema_v3
from storage.db import StorageError
from storage.models import SchemaVersion, utc_now
from storage.schema_lock import LOCK_WAIT_S, schema_lock

logger = logging.getLogger(__name__)


class SchemaError(StorageError):
    """The database's schema is not the one this icall needs."""


def _create_v1(db: Database) -> None:
    for model in schema_v1.MODELS:
        SchemaManager(model, db).create_all(safe=True)


def _index_names(db: Database, table: str) -> set[str]:
    return {index.name for index in db.get_indexes(table)}


def _v2(db: Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    operations = []
    if "updated_at" not in {column.name for column in db.get_columns("calls")}:
        operations.append(migrator.add_column("calls", "updated_at", DateTimeField(null=True)))
    if "calls_caller_id" not in _index_names(db, "calls"):
        operations.append(migrator.add_index("calls", ("caller_id",), False))
    if "cdr_outbox_delivered_at_next_attempt_at" not in _index_names(db, "cdr_outbox"):
        operations.append(migrator.add_index("cdr_outbox", ("delivered_at", "next_attempt_at"), False))
    migrate(*operations)


def _v4(db: Database) -> None:
    if "claimed_by" not in {column.name for column in db.get_columns("calls")}:
        migrator = SchemaMigrator.from_database(db)
        migrate(migrator.add_column("calls", "claimed_by", CharField(max_length=128, null=True)))


# schema v5: (table, columns) of the lookup indexes; peewee names each
# <table>_<column>_<column>.
LOOKUP_INDEXES = (
    ("calls", ("caller_id", "started_at")),
    ("calls", ("node", "started_at")),
    ("calls", ("final_state", "started_at")),
    ("calls", ("ended_at", "started_at")),
)


def _v5(db: Database) -> None:
    # Written out, not through peewee's migrator: its add_index resolves each column
    # as an attribute of a table object, and `node` is one already (the index came
    # out on the string "calls" in SQLite).
    def quoted(name: str) -> str:
        return f"{db.quote[0]}{name}{db.quote[1]}"

    for table, columns in LOOKUP_INDEXES:
        name = "_".join((table, *columns))
        if name not in _index_names(db, table):
            db.execute_sql(f"CREATE INDEX {quoted(name)} ON {quoted(table)} "
                           f"({', '.join(quoted(column) for column in columns)})")


# Version reached -> the step that reaches it from the one before.
STEPS: dict[int, Callable[[Database], None]] = {1: _create_v1, 2: _v2, 3: schema_v3.upgrade, 4: _v4,
                                                 5: _v5}
LATEST = max(STEPS)


def schema_version(db: Database) -> int:
    """The version the database is at; 0 for a database without icall's tables."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().where(SchemaVersion.id == 1).first(db)
    return row.version if row else 0


def upgrade(db: Database, on_wait: Callable[[], None] | None = None,
            lock_wait_s: float = LOCK_WAIT_S) -> list[int]:
    """Create or migrate the schema to LATEST; returns the versions applied (none
    when already there, or when another upgrader got there first). Refuses a database
    newer than this icall knows. `on_wait()` is called if another upgrade is running:
    this one waits for it (up to `lock_wait_s`), then finds nothing left to do."""
    with schema_lock(db, on_wait, lock_wait_s):
        current = schema_version(db)  # read under the lock: another node may have upgraded
        if current > LATEST:
            raise SchemaError(_too_new(current))
        applied = []
        # In order, each version once.
        for version in sorted(v for v in STEPS if v > current):
            logger.info("database schema: upgrading to version %d", version)
            with db.atomic():  # transactional on PostgreSQL and SQLite; MySQL commits DDL anyway
                STEPS[version](db)
                _record_version(db, version)
            applied.append(version)
        return applied


def _record_version(db: Database, version: int) -> None:
    updated = (
        SchemaVersion.update(version=version, upgraded_at=utc_now())
        .where(SchemaVersion.id == 1)
        .execute(db)
    )
    if not updated:
        SchemaVersion.insert(id=1, version=version, upgraded_at=utc_now()).execute(db)


def check_schema(db: Database) -> int:
    """Raise SchemaError saying what to do unless the database is at LATEST."""
    current = schema_version(db)
    if current == LATEST:
        return current
    if current > LATEST:
        raise SchemaError(_too_new(current))
    if current == 0:
        raise SchemaError(
            "the database has no icall schema yet: run `icall db upgrade --config <your config.ini>`"
        )
    raise SchemaError(
        f"the database schema is at version {current}, this icall needs version {LATEST}: "
        "run `icall db upgrade --config <your config.ini>`"
    )


def _too_new(current: int) -> str:
    return (
        f"the database schema is at version {current}, newer than this icall knows "
        f"(up to {LATEST}): upgrade icall, or point [database] url at another database"
    )
