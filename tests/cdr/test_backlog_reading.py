"""The outbox backlog the CdrPoster hands /metrics: how many CDRs wait and how old the
oldest is (what an operator alerts on), read by the posting thread, every node's rows."""

from __future__ import annotations

import pytest

from actors.cdr_poster import CdrPoster
from tests.cdr.conftest import WAIT_S, add_cdrs, make_config, wait_until
from tests.telemetry import RecordingTelemetry


@pytest.fixture
def poster(db_url, sink):
    telemetry = RecordingTelemetry()
    config = make_config(db_url, url=sink.url + "/cdr", retry_min_s=0.05, retry_max_s=0.2,
                         poll_interval_s=0.1, timeout_s=2)
    ref = CdrPoster.start(config, telemetry=telemetry)
    yield telemetry
    ref.stop(block=True, timeout=WAIT_S)


def _reading(telemetry: RecordingTelemetry) -> dict:
    read = telemetry.sources.get("cdr")
    return dict(read()) if read is not None else {}


def test_cdrs_held_up_by_a_dead_endpoint_show_as_pending_with_a_growing_age(db, sink, poster):
    sink.down(True)
    add_cdrs(db, 2)
    add_cdrs(db, 1, prefix="other-node")  # another icall's: the outbox is shared

    assert wait_until(lambda: _reading(poster).get("pending") == 3)
    first_age_s = _reading(poster)["oldest_pending_age_s"]
    assert first_age_s >= 0
    assert wait_until(lambda: _reading(poster)["oldest_pending_age_s"] > first_age_s)

    sink.down(False)
    assert sink.wait_for_accepted(3, timeout_s=WAIT_S)
    assert wait_until(lambda: _reading(poster) == {"pending": 0, "oldest_pending_age_s": 0.0})
