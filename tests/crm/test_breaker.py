"""A CRM that is down trips the breaker: callers are answered at once and the CRM is
left alone until one probe per cool-down finds it back."""

from __future__ import annotations

import threading
import time

from fakeswitch.fake_crm import Reply
from tests.crm.conftest import stats


def test_a_down_crm_trips_the_breaker_and_is_not_asked_any_more(crm, caller, start_fetcher):
    crm.default = Reply(status=503)
    fetcher = start_fetcher(attempts=2, breaker_failures=3, breaker_cooldown_s=600, cache_ttl_s=0)
    reasons = [caller.lookup(fetcher, "5551000", call_uuid=f"c{n}").reason for n in range(10)]
    assert reasons[:3] == ["http 503"] * 3
    assert reasons[3:] == ["breaker open"] * 7
    # 3 failed lookups x 2 attempts; the 7 others never reached the CRM.
    assert crm.request_count == 6
    counts = stats(fetcher)
    assert (counts["breaker"], counts["breaker_opened"], counts["requests"]) == ("open", 1, 6)


def test_a_refused_crm_trips_the_breaker_too(crm, caller, start_fetcher):
    crm.refuse()
    fetcher = start_fetcher(attempts=2, breaker_failures=2, breaker_cooldown_s=600)
    first = caller.lookup(fetcher, "5551000")
    assert first.reason.startswith("connection failed")
    caller.lookup(fetcher, "5551000")
    sent_at = time.monotonic()
    answer = caller.lookup(fetcher, "5551000")
    assert answer.reason == "breaker open"
    assert time.monotonic() - sent_at < 2  # at once, no connection attempt
    assert stats(fetcher)["requests"] == 4


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes_the_breaker(
        crm, caller, start_fetcher):
    crm.default = Reply(status=503)
    cooldown_s = 0.5
    fetcher = start_fetcher(attempts=1, breaker_failures=1, breaker_cooldown_s=cooldown_s,
                            cache_ttl_s=0, deadline_s=10)
    assert caller.lookup(fetcher, "5551000").reason == "http 503"
    assert caller.lookup(fetcher, "5551000").reason == "breaker open"
    crm.default = Reply(delay_s=1.0)  # healthy again, but slow: the probe stays in flight
    threading.Event().wait(cooldown_s * 1.5)  # the cool-down itself is what we wait for
    for n in range(5):
        caller.ask(fetcher, "5551000", call_uuid=f"c{n}")
    answers = sorted((caller.answer()[1] for _ in range(5)), key=lambda a: a.reason)
    assert [a.reason for a in answers] == ["breaker open"] * 4 + ["found"]
    assert crm.request_count == 2  # the first failure and the one probe
    assert stats(fetcher)["breaker"] == "closed"
    assert caller.lookup(fetcher, "5551001").extension == "802"


def test_a_failed_probe_opens_the_breaker_for_another_cool_down(crm, caller, start_fetcher):
    crm.default = Reply(status=500)
    cooldown_s = 0.3
    fetcher = start_fetcher(attempts=1, breaker_failures=1, breaker_cooldown_s=cooldown_s,
                            cache_ttl_s=0)
    assert caller.lookup(fetcher, "5551000").reason == "http 500"
    threading.Event().wait(cooldown_s * 1.5)
    assert caller.lookup(fetcher, "5551000").reason == "http 500"  # the probe
    assert caller.lookup(fetcher, "5551000").reason == "breaker open"
    assert crm.request_count == 2
    assert stats(fetcher)["breaker_opened"] == 2


def test_a_success_between_failures_resets_the_count(crm, caller, start_fetcher):
    crm.script([Reply(status=503), Reply(status=503), Reply(), Reply(status=503),
                Reply(status=503)])
    fetcher = start_fetcher(attempts=1, breaker_failures=3, cache_ttl_s=0)
    reasons = [caller.lookup(fetcher, "5551000").reason for _ in range(5)]
    assert reasons == ["http 503", "http 503", "found", "http 503", "http 503"]
    assert stats(fetcher)["breaker"] == "closed"


def test_cached_answers_are_still_served_while_the_breaker_is_open(crm, caller, start_fetcher):
    fetcher = start_fetcher(attempts=1, breaker_failures=1, breaker_cooldown_s=600)
    assert caller.lookup(fetcher, "5551000").extension == "801"
    crm.default = Reply(status=503)
    assert caller.lookup(fetcher, "5551001").reason == "http 503"
    assert caller.lookup(fetcher, "5551002").reason == "breaker open"
    assert caller.lookup(fetcher, "5551000").reason == "cached: found"
