"""Fixtures for the storage tests: a fresh database on each backend, a config pointing
at it, an actor that collects DbAcks, a TCP proxy to cut the database off.

SQLite always runs. PostgreSQL and MariaDB run when ICALL_TEST_BACKENDS=1 (CI sets it);
each test gets its own database, icall_test_<random>, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
import pykka
import pymysql
import pytest

from actors.messages import DbAck
from ivr.config import load_config
from storage.db import open_database
from storage.migrations import upgrade
from tests import waiting
from tests.storage.tcp_proxy import TcpProxy

BACKENDS_ENV = "ICALL_TEST_BACKENDS"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_HOST, MYSQL_PORT, MYSQL_USER = "127.0.0.1", 3306, "root"
SKIP_MESSAGE = (f"needs the PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) servers: "
                f"set {BACKENDS_ENV}=1 to run it (CI does)")
WAIT_S = 30  # generous: a loaded 2-core machine


@dataclass
class Backend:
    kind: str
    url: str

    def url_via(self, port: int) -> str:
        """The same database reached through 127.0.0.1:<port> (the proxy)."""
        parts = urlsplit(self.url)
        user = f"{parts.username}@" if parts.username else ""
        return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()

    @property
    def server(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port


def _postgres(name: str) -> tuple[str, Callable[[], None]]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql://postgres@127.0.0.1:5432/{name}", drop


def _mysql(name: str) -> tuple[str, Callable[[], None]]:
    def run(sql: str) -> None:
        conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                               autocommit=True, connect_timeout=5)
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    run(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return f"mysql://root@127.0.0.1:3306/{name}", lambda: run(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.backends),
                        pytest.param("mysql", marks=pytest.mark.backends)])
def backend(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'icall.sqlite3'}")
        return
    if os.environ.get(BACKENDS_ENV) != "1":
        pytest.skip(SKIP_MESSAGE)
    name = f"icall_test_{secrets.token_hex(4)}"
    url, drop = (_postgres if request.param == "postgresql" else _mysql)(name)
    try:
        yield Backend(request.param, url)
    finally:
        drop()


def make_config(url: str, cdr_url: str = "http://127.0.0.1:9/cdr", node: str = "pbx-test", **database: str):
    """A config for the writer; the CDR url is only stored (no poster runs in these tests)."""
    environ = {"ICALL_FREESWITCH_PASSWORD": "test", "ICALL_DATABASE_URL": url, "ICALL_SERVICE_NODE": node,
               "ICALL_DATABASE_RETRY_MAX_S": "0.3", "ICALL_CDR_URL": cdr_url,
               # the test's own (tests/conftest.py); a scratch one for benchmarks
               "STATE_DIRECTORY": os.environ.get("STATE_DIRECTORY") or tempfile.mkdtemp(prefix="icall-state-")}
    environ.update({f"ICALL_DATABASE_{k.upper()}": str(v) for k, v in database.items()})
    return load_config(None, environ=environ)


@pytest.fixture
def proxy_to(backend):
    """proxy_to() -> a TcpProxy in front of the backend's server (not for SQLite)."""
    proxies: list[TcpProxy] = []

    def start() -> TcpProxy:
        proxy = TcpProxy(*backend.server)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


class AckCollector(pykka.ThreadingActor):
    """Receives DbAcks; `all_in` is set once `expected` distinct (uuid, seq) arrived.
    `on_ack(ack)` runs in this actor's thread at each ack (e.g. to look at the DB)."""

    def __init__(self, expected: int, on_ack: Callable[[DbAck], object] | None = None):
        super().__init__()
        self.expected = expected
        self.on_ack = on_ack
        self.acks: list[tuple[str, int]] = []
        self.observed: list[object] = []
        self.all_in = threading.Event()

    def on_receive(self, message) -> None:
        if isinstance(message, DbAck):
            if self.on_ack is not None:
                self.observed.append(self.on_ack(message))
            self.acks.extend((message.call_uuid, seq) for seq in message.seqs)
            if len(set(self.acks)) >= self.expected:
                self.all_in.set()


def eventually(predicate: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "") -> None:
    """Wait until `predicate()` holds, checking every 20 ms; for states that no event
    announces (a writer's retry counter). Fails the test on timeout."""
    if not waiting.wait_until(predicate, timeout_s):
        pytest.fail(f"timed out after {timeout_s}s waiting for {what or predicate}")


def writer_stats(writer_ref) -> dict:
    return writer_ref.proxy().stats().get(timeout=WAIT_S)


@pytest.fixture
def db(backend):
    """The backend's database with the newest schema, connected in the test's thread."""
    database = open_database(backend.url)
    database.connect()
    upgrade(database)
    yield database
    database.close()


class Outage:
    """The database made unavailable to the code under test, on any backend: a server
    is cut off behind a TcpProxy; SQLite is locked by another connection holding its
    write lock (and the URL's busy timeout is short, so each attempt fails fast)."""

    def __init__(self, backend: Backend, proxy_to: Callable[[], TcpProxy]):
        self._backend = backend
        self._holder: sqlite3.Connection | None = None
        self._proxy = proxy_to() if backend.kind != "sqlite" else None
        if self._proxy is not None:
            self.url = backend.url_via(self._proxy.port)
        else:
            self.url = backend.url + "?busy_timeout_ms=50"

    def cut(self) -> None:
        if self._proxy is not None:
            self._proxy.cut()
        else:
            self._holder = sqlite3.connect(self._backend.url[len("sqlite:///"):], isolation_level=None)
            self._holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock

    def restore(self) -> None:
        if self._proxy is not None:
            self._proxy.restore()
        elif self._holder is not None:
            self._holder.execute("COMMIT")
            self._holder.close()
            self._holder = None


@pytest.fixture
def outage(backend, proxy_to):
    """An Outage of the backend's database; its `url` is the one to give the writer."""
    made = Outage(backend, proxy_to)
    yield made
    made.restore()
