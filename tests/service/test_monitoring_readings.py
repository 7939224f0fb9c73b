"""What the monitoring kit (contrib/) alerts on, as the service exports it: the event
link's readings only where there is an event link, and the calls sent to the safe
destination counted from zero."""

from __future__ import annotations

from ivr.config import load_config
from service.app import Service
from service.telemetry import PrometheusTelemetry
from tests.service.test_telemetry import sample, scrape

EVENT_LINK_READINGS = ("icall_esl_connected", "icall_esl_link_down_seconds", "icall_esl_reader_alive")


def _config(tmp_path):
    return load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x",
                              "ICALL_DATABASE_URL": f"sqlite:///{tmp_path / 'icall.sqlite3'}"})


def test_an_outbound_only_worker_exports_no_event_link_readings_to_alert_on(tmp_path):
    # Workers 1..N-1 take outbound calls only: a link "down" since their start would
    # page the operator for a link they never have.
    outbound_only = scrape(Service(_config(tmp_path), inbound=False).telemetry)
    inbound = scrape(Service(_config(tmp_path), inbound=True).telemetry)

    assert not set(EVENT_LINK_READINGS) & set(outbound_only)
    assert set(EVENT_LINK_READINGS) <= set(inbound)
    assert sample(inbound, "icall_esl_connected") == 0  # not started: not connected
    assert "icall_timers_pending" in outbound_only


def test_calls_sent_to_the_safe_destination_are_counted_from_zero():
    telemetry = PrometheusTelemetry()
    assert sample(scrape(telemetry), "icall_calls_rescued", "_total") == 0

    telemetry.call_rescued("CommandTimeout")
    telemetry.call_rescued("CommandFailed")

    assert sample(scrape(telemetry), "icall_calls_rescued", "_total") == 2
