"""The CrmFetcher against a real fake CRM over loopback: answers, deadlines, retries,
concurrency, the cache, dead callers and a clean stop."""

from __future__ import annotations

import threading
import time

from fakeswitch.fake_crm import FakeCrm, Reply
from tests.crm.conftest import Caller, stats, wait_until


def test_a_known_caller_gets_the_extension_from_the_crm(crm, caller, start_fetcher):
    fetcher = start_fetcher()
    answer = caller.lookup(fetcher, "5551000", call_uuid="uuid-a")
    assert (answer.call_uuid, answer.extension, answer.reason) == ("uuid-a", "801", "found")
    request = crm.requests[0]
    assert request.path == "/voip/cdrs"
    assert request.query == {"caller_id": ["5551000"]}


def test_a_json_crm_answer_gives_the_extension_from_the_configured_field(caller, start_fetcher):
    with FakeCrm({"5551000": "612"}, response_format="json", json_field="agent") as json_crm:
        fetcher = start_fetcher(base_url=json_crm.url, response_format="json", json_field="agent")
        answer = caller.lookup(fetcher, "5551000")
        assert answer.extension == "612"
        assert json_crm.requests[0].headers["Accept"] == "application/json"


def test_a_json_number_is_accepted_as_an_extension(crm, caller, start_fetcher):
    crm.default = Reply(body=b'{"extension": 801}', content_type="application/json")
    fetcher = start_fetcher(response_format="json")
    assert caller.lookup(fetcher, "5551000").extension == "801"


def test_an_unknown_caller_is_answered_none_because_not_found(crm, caller, start_fetcher):
    fetcher = start_fetcher()
    answer = caller.lookup(fetcher, "5559999")
    assert (answer.extension, answer.reason) == (None, "not found")
    assert crm.request_count == 1  # a 404 is an answer, not a failure: no retry


def test_a_crm_answering_in_5_s_never_delays_the_reply_beyond_the_deadline(crm, caller, start_fetcher):
    crm.default = Reply(delay_s=5)
    fetcher = start_fetcher(deadline_s=1, read_timeout_s=3, attempts=3)
    sent_at = time.monotonic()
    caller.ask(fetcher, "5551000")
    arrived_at, answer = caller.answer()
    assert answer.extension is None
    assert answer.reason in ("deadline passed", "timeout")
    # The deadline is 1 s; the CRM would take 5 s. Anything well under 5 s proves the
    # reply did not wait for the CRM (the slack is for a loaded machine).
    assert arrived_at - sent_at < 3.5


def test_the_deadline_in_the_lookup_wins_over_the_configured_one(crm, caller, start_fetcher):
    crm.default = Reply(hang=True)
    fetcher = start_fetcher(deadline_s=60, read_timeout_s=60)
    sent_at = time.monotonic()
    caller.ask(fetcher, "5551000", deadline_s=0.5)
    arrived_at, answer = caller.answer()
    assert answer.extension is None
    assert arrived_at - sent_at < 5


def test_a_flapping_crm_is_retried_within_the_deadline(crm, caller, start_fetcher):
    crm.script([Reply(status=503), Reply(drop=True), Reply(status=502)])
    fetcher = start_fetcher(attempts=4, deadline_s=10)
    answer = caller.lookup(fetcher, "5551001")
    assert (answer.extension, answer.reason) == ("802", "found")
    assert crm.request_count == 4


def test_a_crm_that_never_recovers_gets_only_the_configured_attempts(crm, caller, start_fetcher):
    crm.default = Reply(status=500)
    fetcher = start_fetcher(attempts=3, breaker_failures=100)
    answer = caller.lookup(fetcher, "5551000")
    assert (answer.extension, answer.reason) == (None, "http 500")
    assert crm.request_count == 3


def test_retries_stop_at_the_deadline_even_with_attempts_left(crm, caller, start_fetcher):
    crm.default = Reply(status=503)
    fetcher = start_fetcher(attempts=20, deadline_s=1, backoff_initial_s=0.2, backoff_max_s=0.4)
    sent_at = time.monotonic()
    caller.ask(fetcher, "5551000")
    arrived_at, answer = caller.answer()
    assert answer.extension is None
    assert arrived_at - sent_at < 4
    # Backing off 0.2-0.4 s (+ jitter) leaves room for only a few attempts in 1 s.
    assert 2 <= crm.request_count <= 6


def test_a_4xx_answer_is_not_retried(crm, caller, start_fetcher):
    crm.default = Reply(status=403, body=b"forbidden")
    fetcher = start_fetcher(attempts=5)
    answer = caller.lookup(fetcher, "5551000")
    assert (answer.extension, answer.reason) == (None, "http 403")
    assert crm.request_count == 1


def test_slow_lookups_run_side_by_side_not_one_after_another(crm, caller, start_fetcher):
    crm.default = Reply(delay_s=1.5)
    fetcher = start_fetcher(max_concurrent=8, deadline_s=30, read_timeout_s=30, cache_ttl_s=0)
    sent_at = time.monotonic()
    for n in range(8):
        caller.ask(fetcher, "5551000", call_uuid=f"call-{n}")
    answers = [caller.answer() for _ in range(8)]
    last_at = max(at for at, _ in answers)
    assert {a.extension for _, a in answers} == {"801"}
    # One after another would take 8 x 1.5 = 12 s; side by side about 1.5 s.
    assert last_at - sent_at < 6


def test_lookups_beyond_the_concurrency_bound_wait_but_never_past_their_deadline(
        crm, caller, start_fetcher):
    crm.default = Reply(hang=True)
    fetcher = start_fetcher(max_concurrent=2, deadline_s=1, read_timeout_s=30, attempts=1)
    sent_at = time.monotonic()
    for n in range(6):
        caller.ask(fetcher, f"555100{n}", call_uuid=f"call-{n}")
    answers = [caller.answer() for _ in range(6)]
    assert all(a.extension is None for _, a in answers)
    assert max(at for at, _ in answers) - sent_at < 5
    # Only two lookups ever reached the CRM; the queued ones were answered at their
    # deadline and then dropped without a request.
    assert wait_until(lambda: stats(fetcher)["requests"] == 2)
    assert crm.request_count == 2


def test_a_cached_answer_is_served_without_asking_the_crm_again(crm, caller, start_fetcher):
    fetcher = start_fetcher(cache_ttl_s=60)
    assert caller.lookup(fetcher, "5551000").extension == "801"
    second = caller.lookup(fetcher, "5551000")
    assert (second.extension, second.reason) == ("801", "cached: found")
    assert crm.request_count == 1


def test_failures_are_not_cached(crm, caller, start_fetcher):
    crm.script([Reply(status=503)])
    fetcher = start_fetcher(cache_ttl_s=60, attempts=1)
    assert caller.lookup(fetcher, "5551000").extension is None
    assert caller.lookup(fetcher, "5551000").extension == "801"
    assert crm.request_count == 2


def test_a_zero_cache_ttl_asks_the_crm_every_time(crm, caller, start_fetcher):
    fetcher = start_fetcher(cache_ttl_s=0)
    for _ in range(3):
        assert caller.lookup(fetcher, "5551000").extension == "801"
    assert crm.request_count == 3


def test_a_disabled_crm_is_answered_none_at_once_without_a_request(crm, caller, start_fetcher):
    fetcher = start_fetcher(enabled="false")
    answer = caller.lookup(fetcher, "5551000")
    assert (answer.extension, answer.reason) == (None, "crm disabled")
    assert crm.request_count == 0


def test_connections_to_the_crm_are_reused(crm, caller, start_fetcher):
    fetcher = start_fetcher(cache_ttl_s=0)
    for _ in range(5):
        assert caller.lookup(fetcher, "5551000").extension == "801"
    assert len({r.client_port for r in crm.requests}) == 1


def test_the_reply_to_a_call_that_is_gone_does_not_crash_the_fetcher(crm, start_fetcher):
    fetcher = start_fetcher(cache_ttl_s=0)
    gone = Caller()
    gone.ref.stop(block=True, timeout=10)
    gone.ask(fetcher, "5551000", call_uuid="gone")
    assert wait_until(lambda: stats(fetcher)["dead_callers"] == 1)
    alive = Caller()
    assert alive.lookup(fetcher, "5551001").extension == "802"
    assert fetcher.is_alive()


def test_a_message_the_fetcher_does_not_know_is_ignored(crm, caller, start_fetcher):
    fetcher = start_fetcher()
    fetcher.tell("what is this")
    assert caller.lookup(fetcher, "5551000").extension == "801"


def test_stopping_the_fetcher_answers_open_lookups_and_leaves_no_thread(crm, caller, start_fetcher):
    crm.default = Reply(hang=True)
    fetcher = start_fetcher(deadline_s=60, read_timeout_s=1, attempts=1)
    caller.ask(fetcher, "5551000")
    assert crm.wait_for_requests(1, timeout_s=20)
    stop_started = time.monotonic()
    fetcher.stop(block=True, timeout=20)
    assert time.monotonic() - stop_started < 10
    _, answer = caller.answer()
    assert (answer.extension, answer.reason) == (None, "crm fetcher stopping")
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("crm-lookup", "crm-deadlines"))], names


def test_stats_count_lookups_answers_and_requests(crm, caller, start_fetcher):
    fetcher = start_fetcher(cache_ttl_s=60)
    caller.lookup(fetcher, "5551000")
    caller.lookup(fetcher, "5551000")
    caller.lookup(fetcher, "5559999")
    counts = stats(fetcher)
    assert counts["lookups"] == 3
    assert counts["answers"] == 3
    assert counts["extensions"] == 2
    assert counts["unknown"] == 1
    assert counts["requests"] == 2
    assert counts["cache_hits"] == 1
    assert counts["breaker"] == "closed"
