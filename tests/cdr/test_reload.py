"""A reload's new `[cdr] url`: the poster's next POST goes to the new endpoint."""

from __future__ import annotations

from actors.reconfigure import Reconfigure
from fakeswitch.fake_cdr import FakeCdrSink
from tests.cdr.conftest import WAIT_S, add_cdrs, make_config, pending_count, wait_until


def test_a_reloaded_cdr_url_takes_the_next_posts_and_the_old_endpoint_gets_no_more(db, db_url, sink,
                                                                                   start_poster):
    first = add_cdrs(db, 2, prefix="before")
    poster = start_poster()
    assert sink.wait_for_accepted(2, timeout_s=WAIT_S)
    with FakeCdrSink() as second:
        new_url = second.url + "/cdr2"
        poster.tell(Reconfigure(make_config(db_url, url=new_url, retry_min_s=0.05, retry_max_s=0.2,
                                            poll_interval_s=0.2, timeout_s=2)))
        # Taken by the posting thread between two rounds (it then holds the new config).
        assert wait_until(lambda: poster.proxy().config.get(timeout=WAIT_S).cdr.url == new_url)
        later = add_cdrs(db, 3, prefix="after")
        poster.proxy().poke().get(timeout=WAIT_S)
        assert second.wait_for_accepted(3, timeout_s=WAIT_S)
        assert wait_until(lambda: pending_count(db) == 0)
        assert sorted(r.headers["Idempotency-Key"] for r in second.requests) == later
        assert {r.path for r in second.requests} == {"/cdr2"}
    assert sorted(r.headers["Idempotency-Key"] for r in sink.requests) == first
