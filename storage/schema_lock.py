"""One schema upgrade at a time per database, across hosts: `schema_lock(db)`.

Several icall nodes share one PostgreSQL or MariaDB, and each node's unit runs
`icall db upgrade` before it starts; two units starting together must not both migrate.
The lock lives in the database server, so it holds across hosts, and it belongs to the
connection, so a killed upgrader's lock goes with its connection:

    PostgreSQL  pg_advisory_lock(key) on a key derived from "icall schema" (advisory
                locks are per database already); lock_timeout bounds the wait
    MariaDB     GET_LOCK(name, timeout); names are server-wide, so the name carries
                the database's name
    SQLite      one host only: the whole upgrade runs in one BEGIN IMMEDIATE
                transaction, which SQLite serialises (its DDL is transactional)

Thread-free: runs on the caller's thread and connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from peewee import (
    Database,
    DatabaseError,
    MySQLDatabase,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
)

from storage.db import StorageError

# A migration that rewrites a large calls table (schema v3 widens its key) can take
# minutes; a second upgrader waits that long for it, then gives up with a message.
LOCK_WAIT_S = 900

_LOCK_NAME = "icall schema upgrade"
# pg_advisory_lock takes a bigint: the first 8 bytes of a hash of the name, signed.
_PG_KEY = int.from_bytes(hashlib.sha256(_LOCK_NAME.encode()).digest()[:8], "big", signed=True)


class SchemaLockTimeout(StorageError):
    """Another upgrade held the schema lock for longer than we would wait."""


@contextmanager
def schema_lock(db: Database, on_wait: Callable[[], None] | None = None,
                wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the database's schema-upgrade lock for the block. `on_wait()` is called
    once if another upgrader holds it (the CLI says so), then we wait up to `wait_s`."""
    if isinstance(db, PostgresqlDatabase):
        with _postgres_lock(db, on_wait, wait_s):
            yield
    elif isinstance(db, MySQLDatabase):
        with _mysql_lock(db, on_wait, wait_s):
            yield
    elif isinstance(db, SqliteDatabase):
        with db.atomic("IMMEDIATE"):
            yield
    else:
        raise StorageError(f"no schema lock for {type(db).__name__}")


@contextmanager
def _postgres_lock(db: Database, on_wait: Callable[[], None] | None, wait_s: float) -> Iterator[None]:
    if not db.execute_sql("SELECT pg_try_advisory_lock(%s)", (_PG_KEY,)).fetchone()[0]:
        if on_wait is not None:
            on_wait()
        db.execute_sql(f"SET lock_timeout = '{int(wait_s * 1000)}ms'")
        try:
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_KEY,))
        except OperationalError as exc:
            raise SchemaLockTimeout(_timeout_message(wait_s)) from exc
        finally:
            db.execute_sql("RESET lock_timeout")
    try:
        yield
    finally:
        _release(db, "SELECT pg_advisory_unlock(%s)", _PG_KEY)


@contextmanager
def _mysql_lock(db: Database, on_wait: Callable[[], None] | None, wait_s: float) -> Iterator[None]:
    # GET_LOCK names are at most 64 characters and shared by every database of the server.
    database = db.execute_sql("SELECT DATABASE()").fetchone()[0]
    name = f"icall schema {database}"[:64]
    if db.execute_sql("SELECT GET_LOCK(%s, 0)", (name,)).fetchone()[0] != 1:
        if on_wait is not None:
            on_wait()
        if db.execute_sql("SELECT GET_LOCK(%s, %s)", (name, int(wait_s))).fetchone()[0] != 1:
            raise SchemaLockTimeout(_timeout_message(wait_s))
    try:
        yield
    finally:
        _release(db, "SELECT RELEASE_LOCK(%s)", name)


def _release(db: Database, sql: str, key: object) -> None:
    """Release the lock; a connection that broke meanwhile has released it already
    (the lock is the connection's), and the error that broke it is the one to report."""
    try:
        db.execute_sql(sql, (key,))
    except DatabaseError:
        pass


def _timeout_message(wait_s: float) -> str:
    return (f"another `icall db upgrade` has held the schema lock for over {wait_s:g} s; "
            "check that it is still running, then run the upgrade again")
