"""The step to schema version 3: 64-bit keys, the node column, the outbox lease.

Keys: `calls`, `call_steps`, `fifo_events`, `call_failures` and `cdr_outbox` were
created with 32-bit keys (PostgreSQL SERIAL, MySQL INT AUTO_INCREMENT). At 2^31 ids
inserts fail, and every PostgreSQL `INSERT ... ON CONFLICT` takes a sequence value
even when it inserts nothing, so a busy switch gets there in years, not centuries.
Widening is written per backend, since peewee's migrator would restate the primary key:

    PostgreSQL  ALTER COLUMN id TYPE BIGINT (rewrites the table under an exclusive
                lock: about a second per million rows), then the sequence AS BIGINT
    MySQL       MODIFY id BIGINT NOT NULL AUTO_INCREMENT (rebuilds the table; the
                AUTO_INCREMENT counter is kept)
    SQLite      nothing: an INTEGER PRIMARY KEY is already the 64-bit rowid

Columns: `calls.node` and `cdr_outbox.node` (the `[service] node` that took the call),
`cdr_outbox.claimed_by` and `claimed_until` (the poster holding a CDR, and until when).

Every change first checks whether it is already done, so a step that MySQL committed
half way runs again cleanly. Thread-free: runs on the caller's thread and connection.
"""

from __future__ import annotations

from peewee import CharField, Database, DateTimeField, MySQLDatabase, PostgresqlDatabase
from playhouse.migrate import SchemaMigrator, migrate

GROWING_TABLES = ("calls", "call_steps", "fifo_events", "call_failures", "cdr_outbox")

NEW_COLUMNS = (
    ("calls", "node", CharField(max_length=64, null=True)),
    ("cdr_outbox", "node", CharField(max_length=64, null=True)),
    ("cdr_outbox", "claimed_by", CharField(max_length=128, null=True)),
    ("cdr_outbox", "claimed_until", DateTimeField(null=True)),
)


def upgrade(db: Database) -> None:
    for table in GROWING_TABLES:
        widen_key(db, table)
    migrator = SchemaMigrator.from_database(db)
    operations = []
    for table, column, field in NEW_COLUMNS:
        if column not in {c.name for c in db.get_columns(table)}:
            operations.append(migrator.add_column(table, column, field))
    migrate(*operations)


def key_type(db: Database, table: str) -> str:
    """The SQL type of `table.id` as the server names it ('integer', 'bigint', 'int')."""
    if isinstance(db, PostgresqlDatabase):
        sql = ("SELECT data_type FROM information_schema.columns "
               "WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'id'")
    elif isinstance(db, MySQLDatabase):
        sql = ("SELECT data_type FROM information_schema.columns "
               "WHERE table_schema = DATABASE() AND table_name = %s AND column_name = 'id'")
    else:
        return "integer"  # SQLite: the rowid, 64 bits whatever the declared type
    return str(db.execute_sql(sql, (table,)).fetchone()[0]).lower()


def widen_key(db: Database, table: str) -> None:
    quoted = f"{db.quote[0]}{table}{db.quote[1]}"  # the backend's identifier quotes
    if isinstance(db, PostgresqlDatabase):
        if key_type(db, table) == "integer":
            db.execute_sql(f"ALTER TABLE {quoted} ALTER COLUMN id TYPE BIGINT")
        sequence = db.execute_sql("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone()[0]
        sequence_type = db.execute_sql(
            "SELECT format_type(seqtypid, NULL) FROM pg_sequence WHERE seqrelid = %s::regclass",
            (sequence,)).fetchone()[0]
        if sequence_type != "bigint":
            # Its maximum was the integer one, so it becomes the bigint one with the type.
            db.execute_sql(f"ALTER SEQUENCE {sequence} AS BIGINT")
    elif isinstance(db, MySQLDatabase):
        if key_type(db, table) != "bigint":
            db.execute_sql(f"ALTER TABLE {quoted} MODIFY id BIGINT NOT NULL AUTO_INCREMENT")
