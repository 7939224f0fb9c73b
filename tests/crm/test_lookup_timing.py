"""What the CrmFetcher reports for the lookup-latency histogram: one observation per
answer, under a short fixed outcome, timed from the lookup's arrival to its answer."""

from __future__ import annotations

import time

import pytest

from actors.crm.fetcher import CrmFetcher, lookup_outcome
from fakeswitch.fake_crm import Reply
from tests.crm.conftest import ANSWER_TIMEOUT_S, make_config
from tests.telemetry import RecordingTelemetry


@pytest.mark.parametrize(("extension", "reason", "outcome"), [
    ("801", "found", "found"),
    (None, "not found", "not_found"),
    ("801", "cached: found", "cached"),
    (None, "cached: not found", "cached"),
    (None, "breaker open", "breaker_open"),
    (None, "crm disabled", "disabled"),
    (None, "deadline passed", "deadline"),
    (None, "deadline passed while reading", "deadline"),
    (None, "crm fetcher stopping", "stopping"),
    (None, "timeout", "failed"),
    (None, "http 503", "failed"),
    (None, "connection failed: [Errno 111] Connection refused", "failed"),
    (None, "not an extension: 'x'", "failed"),
    (None, "internal error", "failed"),
])
def test_every_answer_falls_into_one_of_a_few_outcomes(extension, reason, outcome):
    assert lookup_outcome(extension, reason) == outcome


@pytest.fixture
def fetcher_with(crm):
    started = []

    def start(telemetry: RecordingTelemetry, **crm_keys: object):
        crm_keys.setdefault("base_url", crm.url)
        ref = CrmFetcher.start(make_config(**crm_keys), telemetry=telemetry)
        started.append(ref)
        return ref

    yield start
    for ref in started:
        ref.stop(block=True, timeout=ANSWER_TIMEOUT_S)


def test_answers_are_timed_by_outcome_once_each(crm, caller, fetcher_with):
    telemetry = RecordingTelemetry()
    fetcher = fetcher_with(telemetry)
    caller.lookup(fetcher, "5551000")
    caller.lookup(fetcher, "5559999")
    caller.lookup(fetcher, "5551000")  # now from the cache
    assert telemetry.wait_for(lambda: len(telemetry.crm) == 3, ANSWER_TIMEOUT_S)
    assert [outcome for outcome, _ in telemetry.crm] == ["found", "not_found", "cached"]


def test_a_crm_that_never_answers_is_timed_as_a_deadline_of_the_deadlines_length(
        crm, caller, fetcher_with):
    crm.default = Reply(hang=True)
    telemetry = RecordingTelemetry()
    fetcher = fetcher_with(telemetry, deadline_s=0.5, read_timeout_s=60)
    asked_at = time.monotonic()
    caller.lookup(fetcher, "5551000")
    answered_in_s = time.monotonic() - asked_at
    assert telemetry.wait_for(lambda: len(telemetry.crm) == 1, ANSWER_TIMEOUT_S)
    ((outcome, elapsed_s),) = telemetry.crm
    assert outcome == "deadline"
    assert 0.5 <= elapsed_s <= answered_in_s


def test_the_fetcher_lets_the_scrape_read_its_request_count_and_breaker(crm, caller, fetcher_with):
    crm.default = Reply(status=503)
    telemetry = RecordingTelemetry()
    fetcher = fetcher_with(telemetry, attempts=1, breaker_failures=1, breaker_cooldown_s=600)
    caller.lookup(fetcher, "5551000")
    assert telemetry.wait_for(lambda: "crm" in telemetry.sources, ANSWER_TIMEOUT_S)
    reading = telemetry.sources["crm"]()
    assert (reading["requests"], reading["breaker_open"], reading["breaker_opened"]) == (1, 1, 1)
