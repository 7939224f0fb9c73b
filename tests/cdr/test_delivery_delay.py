"""The CDR delivery delay the CdrPoster reports: from the CDR entering the outbox to
the endpoint accepting it, once per CDR, an outage included."""

from __future__ import annotations

import pytest

from actors.cdr_poster import CdrPoster
from storage.models import utc_now
from tests.cdr.conftest import WAIT_S, add_cdrs, make_config, outbox
from tests.telemetry import RecordingTelemetry


@pytest.fixture
def poster_with(db_url, sink):
    started = []

    def start(telemetry: RecordingTelemetry):
        config = make_config(db_url, url=sink.url + "/cdr", retry_min_s=0.05, retry_max_s=0.2,
                             poll_interval_s=0.2, timeout_s=2)
        ref = CdrPoster.start(config, telemetry=telemetry)
        started.append(ref)
        return ref

    yield start
    for ref in started:
        ref.stop(block=True, timeout=WAIT_S)


def test_each_delivered_cdr_reports_its_delay_once(db, sink, poster_with):
    telemetry = RecordingTelemetry()
    add_cdrs(db, 3)
    poster_with(telemetry)
    assert sink.wait_for_accepted(3, timeout_s=WAIT_S)
    assert telemetry.wait_for(lambda: len(telemetry.cdrs) == 3, WAIT_S)
    assert all(delay_s >= 0 for delay_s in telemetry.cdrs)


def test_a_cdr_held_up_by_an_endpoint_outage_reports_the_outage_in_its_delay(db, sink, poster_with):
    telemetry = RecordingTelemetry()
    sink.down(True)
    (uuid,) = add_cdrs(db, 1)
    poster_with(telemetry)
    assert sink.wait_for_requests(2, timeout_s=WAIT_S)  # refused twice: nothing delivered yet
    assert telemetry.cdrs == []
    back_at = utc_now()
    sink.down(False)
    assert sink.wait_for_accepted(1, timeout_s=WAIT_S)
    assert telemetry.wait_for(lambda: len(telemetry.cdrs) == 1, WAIT_S)
    queued_at = outbox(db)[uuid].created_at
    # Accepted only after the endpoint came back, so the delay covers the outage.
    assert telemetry.cdrs[0] >= (back_at - queued_at).total_seconds()
    assert outbox(db)[uuid].attempts >= 3
