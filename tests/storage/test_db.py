"""open_database: URLs to databases, SQLite's durability settings, clear refusals."""

from __future__ import annotations

import pytest
from peewee import MySQLDatabase, PostgresqlDatabase

from storage.db import BadDatabaseUrl, open_database, redact


def test_sqlite_runs_in_wal_mode_with_full_synchronous_and_a_busy_timeout(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/sub/dir/icall.sqlite3?busy_timeout_ms=1234")
    with db.connection_context():
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert (tmp_path / "sub" / "dir" / "icall.sqlite3").exists()


def test_server_urls_give_their_database_with_credentials_and_timeouts():
    pg = open_database("postgresql://icall:s%40cret@db.example:6543/calls")
    assert isinstance(pg, PostgresqlDatabase) and pg.database == "calls"
    assert pg.connect_params["host"] == "db.example" and pg.connect_params["port"] == 6543
    assert pg.connect_params["password"] == "s@cret" and pg.connect_params["connect_timeout"] == 5
    my = open_database("mysql://root@127.0.0.1/calls")
    assert isinstance(my, MySQLDatabase) and my.connect_params["port"] == 3306


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite:///:memory:", "give SQLite a file path"),
    ("postgresql://host:5432/", "names no database"),
    ("oracle://host/db", "unsupported database URL"),
])
def test_urls_that_cannot_work_are_refused_with_the_reason(url, message):
    with pytest.raises(BadDatabaseUrl, match=message):
        open_database(url)


def test_passwords_are_masked_in_messages():
    assert redact("mysql://icall:hunter2@db:3306/x") == "mysql://icall:********@db:3306/x"
    assert redact("postgresql://icall@db/x?password=hunter2&sslmode=require") == \
        "postgresql://icall@db/x?password=********&sslmode=********"
    assert redact("sqlite:////var/lib/icall/x.sqlite3?mode=ro") == "sqlite:////var/lib/icall/x.sqlite3?mode=********"
    assert "hunter2" not in str(pytest.raises(BadDatabaseUrl, open_database, "oracle://u:hunter2@h/d").value)


def test_tokens_in_an_http_url_are_masked_in_the_user_info_and_the_query():
    assert redact("https://tok3n@crm.example/lookup") == "https://********@crm.example/lookup"
    assert redact("https://bot:s3cret@crm.example:8443/v1?api_key=k3y&debug") == \
        "https://bot:********@crm.example:8443/v1?api_key=********&debug"
    assert redact("http://127.0.0.1:8090/voip/cdrs") == "http://127.0.0.1:8090/voip/cdrs"
