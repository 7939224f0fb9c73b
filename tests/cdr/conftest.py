"""Fixtures for the CDR poster tests: an SQLite file with the real schema, outbox rows
inserted through the model, a fake CDR endpoint on loopback, and posters."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pykka
import pytest

from actors.cdr_poster import CdrPoster
from fakeswitch.fake_cdr import FakeCdrSink
from ivr.config import Config, load_config
from storage.db import open_database
from storage.migrations import upgrade
from storage.models import CdrOutbox, utc_now
from tests import waiting

WAIT_S = 30  # generous: a loaded 2-core machine must not fail a test by timing


def make_config(db_url: str, node: str = "pbx-test", **cdr: object) -> Config:
    environ = {"ICALL_FREESWITCH_PASSWORD": "ClueCon", "ICALL_DATABASE_URL": db_url,
               "ICALL_SERVICE_NODE": node}
    environ.update({f"ICALL_CDR_{key.upper()}": str(value) for key, value in cdr.items()})
    return load_config(None, environ)


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    return waiting.wait_until(predicate, timeout_s)


@pytest.fixture
def db_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'icall.sqlite3'}"
    db = open_database(url)
    upgrade(db)
    db.close()
    return url


@pytest.fixture
def db(db_url):
    """The test's own connection, to insert and inspect outbox rows."""
    database = open_database(db_url)
    yield database
    database.close()


def add_cdrs(db, count: int, prefix: str = "call") -> list[str]:
    """Put `count` CDRs in the outbox as the DbWriter does; returns their call uuids."""
    now = utc_now()
    uuids = [f"{prefix}-{n:04d}" for n in range(count)]
    rows = [{"call_uuid": u, "payload": json.dumps({"uuid": u, "billsec": n}),
             "created_at": now, "attempts": 0, "next_attempt_at": now}
            for n, u in enumerate(uuids)]
    CdrOutbox.insert_many(rows).execute(db)
    return uuids


def outbox(db) -> dict[str, CdrOutbox]:
    return {row.call_uuid: row for row in CdrOutbox.select().execute(db)}


def pending_count(db) -> int:
    return CdrOutbox.select().where(CdrOutbox.delivered_at.is_null()).count(db)


@pytest.fixture
def sink() -> Iterator[FakeCdrSink]:
    fake = FakeCdrSink().start()
    yield fake
    fake.stop()


@pytest.fixture
def start_poster(db_url, sink) -> Iterator[Callable[..., pykka.ActorRef]]:
    """start_poster(**cdr_keys): a CdrPoster posting to the fake sink, fast retries."""
    started: list[pykka.ActorRef] = []

    def start(**cdr_keys: object) -> pykka.ActorRef:
        cdr_keys.setdefault("url", sink.url + "/cdr")
        cdr_keys.setdefault("retry_min_s", 0.05)
        cdr_keys.setdefault("retry_max_s", 0.2)
        cdr_keys.setdefault("poll_interval_s", 0.2)
        cdr_keys.setdefault("timeout_s", 2)
        ref = CdrPoster.start(make_config(db_url, **cdr_keys))
        started.append(ref)
        return ref

    yield start
    for ref in started:
        if ref.is_alive():
            ref.stop(block=True, timeout=WAIT_S)
