"""The CdrPoster against a real fake endpoint and a real SQLite outbox: every CDR is
delivered, once as far as the endpoint can tell, through outages and restarts."""

from __future__ import annotations

import json
import threading
import time

from fakeswitch.fake_crm import Reply
from tests.cdr.conftest import WAIT_S, add_cdrs, outbox, pending_count, wait_until


def test_each_cdr_is_posted_as_json_with_its_call_uuid_as_idempotency_key(db, sink, start_poster):
    uuids = add_cdrs(db, 3)
    start_poster()
    assert sink.wait_for_accepted(3, timeout_s=WAIT_S)
    for uuid in uuids:
        assert sink.accepted(uuid)["uuid"] == uuid
    post = sink.requests[0]
    assert (post.method, post.path) == ("POST", "/cdr")
    assert post.headers["Content-Type"] == "application/json"
    assert json.loads(post.body)["uuid"] == post.headers["Idempotency-Key"]
    assert wait_until(lambda: pending_count(db) == 0)
    assert all(row.delivered_at is not None and row.attempts == 1 for row in outbox(db).values())


def test_an_endpoint_down_for_the_whole_run_then_up_gets_every_cdr_exactly_once(
        db, sink, start_poster):
    sink.down(True)
    uuids = add_cdrs(db, 20)
    start_poster()
    assert sink.wait_for_requests(4, timeout_s=WAIT_S)  # it keeps trying...
    assert sink.unique_keys() == set()
    assert wait_until(lambda: any(r.last_error == "http 503" for r in outbox(db).values()))
    sink.down(False)  # ...and once the endpoint is back, everything goes through
    assert sink.wait_for_accepted(20, timeout_s=WAIT_S)
    assert wait_until(lambda: pending_count(db) == 0)
    assert sink.unique_keys() == set(uuids)
    assert set(sink.accept_counts().values()) == {1}
    rows = outbox(db).values()
    assert all(row.last_error is None for row in rows)
    assert any(row.attempts > 1 for row in rows)


def test_a_refused_endpoint_is_retried_until_it_listens_again(db, sink, start_poster):
    sink.refuse()
    uuids = add_cdrs(db, 5)
    start_poster()
    assert wait_until(lambda: any((r.last_error or "").startswith("no answer")
                                  for r in outbox(db).values()))
    sink.reopen()
    assert sink.wait_for_accepted(5, timeout_s=WAIT_S)
    assert sink.unique_keys() == set(uuids)
    assert set(sink.accept_counts().values()) == {1}


def test_a_dead_endpoint_is_probed_with_backoff_not_hammered(db, sink, start_poster):
    sink.down(True)
    add_cdrs(db, 50)
    start_poster(retry_min_s=0.5, retry_max_s=2, poll_interval_s=0.05)
    threading.Event().wait(2.5)  # the back-off over time is what is measured
    # 0.5 s doubling to 2 s, jittered by at most a quarter down: at most ~6 tries in
    # 2.5 s; a poster without back-off would have posted hundreds of times.
    assert 1 <= sink.total_posts() <= 8


def test_cdrs_are_posted_several_at_once_so_a_distant_endpoint_keeps_up(db, sink, start_poster):
    # Each answer takes 1 s: one at a time, 9 CDRs would reach the endpoint over 8 s;
    # a probe and then a wave of 8 reach it within about 1 s of each other.
    sink.default = Reply(status=200, body=b"ok", delay_s=1.0)
    add_cdrs(db, 9)
    start_poster(max_concurrent=8, poll_interval_s=0.05)
    assert sink.wait_for_accepted(9, timeout_s=WAIT_S)
    arrivals = sorted(request.received_at for request in sink.requests)
    assert arrivals[-1] - arrivals[1] < 1.0, "the wave after the probe was not sent at once"
    assert wait_until(lambda: pending_count(db) == 0)


def test_a_5xx_answer_is_retried_and_the_row_remembers_the_attempts(db, sink, start_poster):
    sink.script([Reply(status=500, body=b"oops"), Reply(status=502, body=b"bad gateway")])
    add_cdrs(db, 1)
    start_poster()
    assert sink.wait_for_accepted(1, timeout_s=WAIT_S)
    assert wait_until(lambda: pending_count(db) == 0)
    row = next(iter(outbox(db).values()))
    assert row.attempts == 3
    assert sink.total_posts() == 3


def test_a_hanging_endpoint_counts_as_a_failure_after_the_timeout(db, sink, start_poster):
    sink.script([Reply(hang=True)])
    add_cdrs(db, 1)
    start_poster(timeout_s=0.5)
    assert sink.wait_for_accepted(1, timeout_s=WAIT_S)
    assert wait_until(lambda: pending_count(db) == 0)
    assert next(iter(outbox(db).values())).attempts == 2


def test_a_poster_stopped_with_cdrs_pending_leaves_them_for_the_next_one(
        db, sink, start_poster):
    sink.down(True)
    uuids = add_cdrs(db, 10)
    first = start_poster()
    assert sink.wait_for_requests(2, timeout_s=WAIT_S)
    first.stop(block=True, timeout=WAIT_S)
    assert pending_count(db) == 10
    sink.down(False)
    start_poster()  # a new actor with its own database connection: a restarted service
    assert sink.wait_for_accepted(10, timeout_s=WAIT_S)
    assert wait_until(lambda: pending_count(db) == 0)
    assert sink.unique_keys() == set(uuids)
    assert set(sink.accept_counts().values()) == {1}


def test_cdrs_already_delivered_are_not_posted_again_after_a_restart(db, sink, start_poster):
    add_cdrs(db, 4)
    first = start_poster()
    assert sink.wait_for_accepted(4, timeout_s=WAIT_S)
    assert wait_until(lambda: pending_count(db) == 0)
    first.stop(block=True, timeout=WAIT_S)
    posts_before = sink.total_posts()
    add_cdrs(db, 1, prefix="later")
    start_poster()
    assert sink.wait_for_accepted(5, timeout_s=WAIT_S)
    assert sink.total_posts() == posts_before + 1


def test_a_poke_posts_a_new_cdr_without_waiting_for_the_poll(db, sink, start_poster):
    poster = start_poster(poll_interval_s=600)
    poster.proxy().status().get(timeout=WAIT_S)  # started, and idle on its long poll
    add_cdrs(db, 1)
    poked_at = time.monotonic()
    poster.proxy().poke().get(timeout=WAIT_S)
    assert sink.wait_for_accepted(1, timeout_s=WAIT_S)
    assert time.monotonic() - poked_at < 10  # far below the 600 s poll


def test_a_cdr_queued_message_pokes_too(db, sink, start_poster):
    from actors.messages import CdrQueued

    poster = start_poster(poll_interval_s=600)
    poster.proxy().status().get(timeout=WAIT_S)
    add_cdrs(db, 1)
    poster.tell(CdrQueued())
    assert sink.wait_for_accepted(1, timeout_s=WAIT_S)


def test_stop_is_prompt_while_the_poster_waits_for_its_next_poll(db, sink, start_poster):
    poster = start_poster(poll_interval_s=600)
    poster.proxy().status().get(timeout=WAIT_S)
    stop_started = time.monotonic()
    poster.stop(block=True, timeout=WAIT_S)
    assert time.monotonic() - stop_started < 5
    assert not [t for t in threading.enumerate() if t.name == "cdr-poster"]


def test_with_no_url_the_poster_leaves_the_outbox_alone(db, sink, start_poster):
    add_cdrs(db, 3)
    poster = start_poster(url="")
    poster.proxy().poke().get(timeout=WAIT_S)
    status = poster.proxy().status().get(timeout=WAIT_S)
    assert status["pending"] == 3
    assert not [t for t in threading.enumerate() if t.name == "cdr-poster"]
    assert all(row.attempts == 0 for row in outbox(db).values())
    assert sink.total_posts() == 0


def test_status_counts_pending_and_delivered_and_ages_the_oldest(db, sink, start_poster):
    add_cdrs(db, 2)
    poster = start_poster()
    assert sink.wait_for_accepted(2, timeout_s=WAIT_S)
    assert wait_until(lambda: pending_count(db) == 0)
    sink.down(True)
    add_cdrs(db, 3, prefix="stuck")
    assert wait_until(lambda: poster.proxy().status().get(timeout=WAIT_S)["last_error"] is not None)
    status = poster.proxy().status().get(timeout=WAIT_S)
    assert (status["pending"], status["delivered"]) == (3, 2)
    assert 0 <= status["oldest_pending_age_s"] < 60
    assert status["last_error"] == "http 503"


def test_an_outbox_that_cannot_be_read_yet_is_retried_until_it_can(tmp_path, sink, caplog):
    from actors.cdr_poster import CdrPoster
    from storage.db import open_database
    from storage.migrations import upgrade
    from tests.cdr.conftest import make_config

    url = f"sqlite:///{tmp_path / 'late.sqlite3'}"  # no tables yet: every round fails
    # The file exists, in WAL mode, before two connections race to create it (switching
    # a new file to WAL takes a lock that does not wait for the busy timeout).
    empty = open_database(url)
    empty.connect()
    empty.close()
    poster = CdrPoster.start(make_config(url, **{"url": sink.url, "poll_interval_s": 0.1}))
    try:
        assert wait_until(lambda: any("CDR outbox unreadable" in r.getMessage()
                                      for r in caplog.records))
        db = open_database(url)
        upgrade(db)
        add_cdrs(db, 2)
        assert sink.wait_for_accepted(2, timeout_s=WAIT_S)
        db.close()
    finally:
        poster.stop(block=True, timeout=WAIT_S)
