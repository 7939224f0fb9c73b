"""Databases by URL: `open_database(url)` turns `[database] url` into a peewee Database.

    sqlite:///relative/path  sqlite:////absolute/path   (the embedded default)
    mysql://user:pass@host:3306/name                     (MySQL / MariaDB via PyMySQL)
    postgresql://user:pass@host:5432/name                (PostgreSQL via psycopg 3)

A peewee Database keeps its connection per thread, so one object may be shared, but
the rule here is simpler: every actor or thread that needs the database opens its own
with `open_database` and closes it when it stops. The models (storage.models) are not
bound to any database; code passes its database explicitly (`query.execute(db)`).

Thread-free: nothing here starts a thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from peewee import (
    Database,
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    MySQLDatabase,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
)


class StorageError(Exception):
    """Base of every storage problem the service reports to an operator."""


class BadDatabaseUrl(StorageError):
    """`[database] url` cannot be turned into a database."""


# Connection problems worth retrying: the server is down, restarting or unreachable,
# the connection dropped, or (SQLite) another connection holds the write lock.
# Anything else (a bad value, a missing column) will fail the same way again.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)

# What the database says when a row's own values cannot be stored (too long, out of
# range, not a date, NULL in a NOT NULL column): the same write would fail again. Any
# other refusal, even one reported as a data or integrity error, is the database's
# state and passes: a key generator at its limit (PostgreSQL 2200H, MariaDB's
# "out of range" for an AUTO_INCREMENT, error 167) or a duplicate key our idempotent
# inserts cannot produce.
_PG_VALUE_STATES = ("22", "23502", "23514")  # data exceptions; not-null; check
_PG_NOT_VALUE_STATES = {"2200H"}  # sequence_generator_limit_exceeded
_MYSQL_VALUE_ERRORS = {1048, 1264, 1265, 1292, 1366, 1367, 1406}  # null, range, truncated, value, length

SQLITE_BUSY_TIMEOUT_MS = 5000

# SQLite in WAL mode: readers never block the writer nor it them. synchronous=FULL
# because an acknowledged write must survive a power cut: the DbWriter acks only after
# COMMIT, and the call actor forgets a row once acked. NORMAL would be crash-safe for
# the process but could lose the last commits on power loss. With batched commits the
# extra fsync is paid once per batch, not per row.
SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "full", "foreign_keys": 1}

# Network databases must fail rather than hang when the server or the path to it
# goes away, so the writer can back off and retry.
CONNECT_TIMEOUT_S = 5
MYSQL_IO_TIMEOUT_S = 30
PG_KEEPALIVE: dict[str, Any] = {  # libpq options, passed through by peewee
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,  # ms: unacknowledged sends fail after this
}


def open_database(url: str) -> Database:
    """A new, not yet connected Database for `url`; raises BadDatabaseUrl."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if scheme == "sqlite":
        return _sqlite(url, options)
    if scheme == "mysql":
        return MySQLDatabase(
            _database_name(parts.path, url),
            # Microsecond timestamps and row payloads beyond 64 KiB, as on the others.
            field_types={"DATETIME": "DATETIME(6)", "TEXT": "MEDIUMTEXT"},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=MYSQL_IO_TIMEOUT_S,
            write_timeout=MYSQL_IO_TIMEOUT_S,
            sql_mode="STRICT_ALL_TABLES",
            **_credentials(parts, default_port=3306),
        )
    if scheme in ("postgresql", "postgres"):
        return PostgresqlDatabase(
            _database_name(parts.path, url),
            connect_timeout=CONNECT_TIMEOUT_S,
            **PG_KEEPALIVE,
            **_credentials(parts, default_port=5432),
        )
    raise BadDatabaseUrl(f"unsupported database URL {redact(url)!r}: use sqlite:///, mysql:// or postgresql://")


def _sqlite(url: str, options: dict[str, str]) -> SqliteDatabase:
    path = url.split("?", 1)[0][len("sqlite:///"):]
    if not path or path == ":memory:":
        # Every connection to :memory: is a different database: the writer and the
        # readers would not see each other's rows.
        raise BadDatabaseUrl(f"{url!r}: give SQLite a file path, e.g. sqlite:////var/lib/icall/icall.sqlite3")
    busy_ms = int(options.get("busy_timeout_ms", SQLITE_BUSY_TIMEOUT_MS))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. /var/lib/icall before install, as a user who may not create it
        raise StorageError(f"cannot create the folder of the SQLite file {path}: {exc.strerror} "
                           "(run as the icall user after installing, or set [database] url)") from None
    return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=busy_ms / 1000)


def _database_name(path: str, url: str) -> str:
    name = unquote(path.lstrip("/"))
    if not name:
        raise BadDatabaseUrl(f"{redact(url)!r} names no database (…/<name> at the end)")
    return name


def _credentials(parts, default_port: int) -> dict:
    params = {"host": parts.hostname or "127.0.0.1", "port": parts.port or default_port}
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    return params


def redact(url: str) -> str:
    """The URL with what may be a secret masked, for logs and messages: the password of
    its user info (in an http(s) URL a user alone too: often a token), and the value
    of every query parameter (`?api_key=...`; a database URL's `?password=...`)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url  # nothing to mask
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{_MASK}"
        elif parts.scheme in ("http", "https"):
            userinfo = _MASK
        netloc = f"{userinfo}@{host}"
    query = "&".join(f"{name}={_MASK}" if equals else name
                     for name, equals, _value in (item.partition("=") for item in parts.query.split("&"))
                     ) if parts.query else ""
    # Put together by hand: geturl() drops a slash of sqlite:////path (no netloc).
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


_MASK = "********"


def rejected_by_value(exc: BaseException) -> bool:
    """True when `exc` says the written values themselves are wrong (so retrying the
    same write is useless); False for anything that may pass (see above)."""
    if not isinstance(exc, DataError | IntegrityError):
        return False
    original = getattr(exc, "orig", None)
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate:  # PostgreSQL, through psycopg
        return sqlstate.startswith(_PG_VALUE_STATES) and sqlstate not in _PG_NOT_VALUE_STATES
    module = type(original).__module__
    if module.startswith("pymysql"):
        args: tuple = getattr(original, "args", ())
        return bool(args) and args[0] in _MYSQL_VALUE_ERRORS
    # SQLite: its keys are 64-bit rowids and it has no sequences; what it refuses as
    # data or integrity is the row (a NOT NULL column left empty).
    return module.startswith("sqlite3")


def write_transaction(db: Database):
    """A transaction for writing. On SQLite it takes the write lock up front
    (BEGIN IMMEDIATE) so a busy database fails at the start, inside the busy timeout,
    instead of half way through."""
    if isinstance(db, SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()


def close_quietly(db: Database) -> None:
    """Close this thread's connection, even a broken one; used after a failure so the
    next use reconnects instead of reusing a dead connection."""
    try:
        db.close()
    except DatabaseError:
        # A connection that cannot even close is gone; forget it (the driver object
        # closes its socket when collected).
        db.dispose()
