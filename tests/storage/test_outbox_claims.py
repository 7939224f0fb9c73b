"""The CDR outbox shared by several icalls on one database (storage.outbox and the
CdrPoster): a row is claimed by one poster at a time, each CDR is posted once while
every poster is healthy, and a dead poster's claims are taken over after the lease."""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import timedelta

import pytest

from actors.cdr_poster import CdrPoster
from fakeswitch.fake_cdr import FakeCdrSink
from ivr.config import load_config
from storage.db import open_database
from storage.models import CdrOutbox, utc_now
from storage.outbox import claim_due, outbox_status, settle, supports_skip_locked
from tests.storage.conftest import WAIT_S, eventually


def _add_cdrs(db, count: int, node: str = "pbx1", prefix: str = "cdr") -> list[str]:
    now = utc_now()
    uuids = [f"{prefix}-{n:04d}" for n in range(count)]
    rows = [{"call_uuid": u, "payload": json.dumps({"uuid": u}), "created_at": now, "attempts": 0,
             "next_attempt_at": now, "node": node} for u in uuids]
    for start in range(0, len(rows), 100):
        CdrOutbox.insert_many(rows[start:start + 100]).execute(db)
    return uuids


def _poster_config(url: str, cdr_url: str, node: str, **cdr: object):
    environ = {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_DATABASE_URL": url, "ICALL_SERVICE_NODE": node,
               "ICALL_CDR_URL": cdr_url, "ICALL_CDR_RETRY_MIN_S": "0.05", "ICALL_CDR_RETRY_MAX_S": "0.2",
               "ICALL_CDR_POLL_INTERVAL_S": "0.2", "ICALL_CDR_TIMEOUT_S": "0.5", "ICALL_CDR_LEASE_S": "2"}
    environ.update({f"ICALL_CDR_{key.upper()}": str(value) for key, value in cdr.items()})
    return load_config(None, environ)


@pytest.fixture
def sink():
    with FakeCdrSink() as server:
        yield server


def test_the_servers_say_whether_they_skip_locked_rows(backend, db):
    # PostgreSQL always; the MariaDB here is 10.11 (>= 10.6); SQLite has no row locks.
    assert supports_skip_locked(db) is (backend.kind != "sqlite")


def test_claimers_racing_on_one_outbox_never_get_the_same_row(backend, db):
    uuids = _add_cdrs(db, 200)
    got: queue.Queue[tuple[str, list[str]]] = queue.Queue()
    start = threading.Barrier(4, timeout=WAIT_S)

    def claimer(owner: str) -> None:
        own = open_database(backend.url)
        claimed: list[str] = []
        try:
            with own.connection_context():
                skip = supports_skip_locked(own)
                start.wait()
                while rows := claim_due(own, owner, 7, lease_s=60, skip_locked=skip):
                    claimed += [row.call_uuid for row in rows]
        finally:
            got.put((owner, claimed))

    threads = [threading.Thread(target=claimer, args=(f"node-{n}#t",)) for n in range(4)]
    for thread in threads:
        thread.start()
    results = dict(got.get(timeout=WAIT_S * 2) for _ in threads)
    for thread in threads:
        thread.join(WAIT_S)

    every = [u for claimed in results.values() for u in claimed]
    assert sorted(every) == uuids, "a row was claimed twice, or not at all"
    held = {row.call_uuid: row.claimed_by for row in CdrOutbox.select().execute(db)}
    assert all(held[u] == owner for owner, claimed in results.items() for u in claimed)


def test_a_claim_that_ran_out_is_taken_over_and_the_late_owner_cannot_release_it(backend, db):
    _add_cdrs(db, 3)
    dead = claim_due(db, "dead#1", 10, lease_s=60)
    assert len(dead) == 3 and claim_due(db, "alive#2", 10, lease_s=60) == []

    # The dead poster's lease runs out (as if 60 s had passed).
    CdrOutbox.update(claimed_until=utc_now() - timedelta(seconds=1)).execute(db)
    taken = claim_due(db, "alive#2", 10, lease_s=60)
    assert [row.call_uuid for row in taken] == [row.call_uuid for row in dead]
    settle(db, "dead#1", delivered=[], failed=[], unsent=[row.id for row in dead])  # too late

    assert {row.claimed_by for row in CdrOutbox.select().execute(db)} == {"alive#2"}


def test_two_posters_on_one_outbox_post_each_cdr_once(backend, db, sink):
    uuids = _add_cdrs(db, 150, node="pbx1") + _add_cdrs(db, 150, node="pbx2", prefix="other")
    posters = [CdrPoster.start(_poster_config(backend.url, sink.url + "/cdr", node, batch_size=20))
               for node in ("pbx1", "pbx2")]

    assert sink.wait_for_accepted(300, timeout_s=WAIT_S * 2)
    eventually(lambda: outbox_status(db).pending == 0, what="every row marked delivered")
    assert sink.unique_keys() == set(uuids)
    assert set(sink.accept_counts().values()) == {1}
    assert sink.total_posts() == 300, "a CDR was posted twice while every poster was healthy"
    for poster in posters:
        poster.stop(block=True, timeout=WAIT_S)
    status = outbox_status(db)
    assert {node: counts.delivered for node, counts in status.by_node.items()} == {"pbx1": 150, "pbx2": 150}


def test_a_dead_posters_claims_are_posted_by_another_only_after_the_lease(backend, db, sink):
    uuids = _add_cdrs(db, 5)
    lease_s = 3
    claimed_at = time.monotonic()  # the claim's end is lease_s after this, or later
    assert len(claim_due(db, "dead-node#1", 10, lease_s=lease_s)) == 5  # then it died mid-round
    status = outbox_status(db)
    assert (status.pending, status.by_node["pbx1"].claimed) == (5, 5)

    poster = CdrPoster.start(_poster_config(backend.url, sink.url + "/cdr", "pbx2", poll_interval_s=5))

    assert sink.wait_for_accepted(5, timeout_s=WAIT_S)
    assert sink.unique_keys() == set(uuids) and set(sink.accept_counts().values()) == {1}
    first_post = min(request.received_at for request in sink.requests)
    assert first_post >= claimed_at + lease_s, "a claimed CDR was posted before its lease ran out"
    eventually(lambda: outbox_status(db).pending == 0, what="the rows to be marked delivered")
    poster.stop(block=True, timeout=WAIT_S)
