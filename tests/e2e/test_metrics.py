"""/metrics scraped over HTTP while the service handles stand-in calls, parsed with
prometheus_client's own parser: the histograms count exactly the calls placed."""

from __future__ import annotations

import http.client

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import MetricsServer
from tests.e2e.conftest import WAIT_S
from tests.waiting import wait_until

# Two callers the fake CRM knows, one it does not (CRM_TABLE in conftest).
CALLERS = {"5551002": "found", "5551004": "found", "5551003": "not_found"}


class Scraper:
    def __init__(self, port: int):
        self.port = port

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """Every sample as {(sample name, sorted labels): value}."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
        assert response.status == 200, body
        self.types = {}
        samples = {}
        for family in text_string_to_metric_families(body):
            self.types[family.name] = family.type
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def scraper(harness, switch):
    switch.set_fifo_queue("fifo_hst", "real")
    h = harness()
    server = MetricsServer(("127.0.0.1", 0), h.service.telemetry.registry, h.service.health)
    server.start()
    yield h, Scraper(server.port)
    server.stop()


def test_a_scrape_during_calls_and_after_them_counts_exactly_the_calls_placed(scraper, switch, cdr_sink):
    h, metrics = scraper
    # Menu 1 at 11:00 on a Wednesday: welcome, main menu, transfer to fifo_hst, where
    # each caller waits in the queue (a real mod_fifo queue) until we hang them up.
    uuids = {h.place(caller, "1"): caller for caller in CALLERS}
    for uuid in uuids:
        assert switch.wait_fifo(uuid, "push", timeout=WAIT_S), f"call {uuid} never reached the queue"
    calls = len(uuids)
    # Per call, the park causes the welcome (takeover); the welcome's completion causes
    # the menu and the menu's completion the transfer (two reactions). The last write
    # is timed just after the switch took it, so the scrape may be a moment behind.
    assert wait_until(lambda: metrics.value("icall_reaction_seconds_count") == 2 * calls, WAIT_S)

    during = metrics.scrape()
    assert during[("icall_takeover_seconds_count", ())] == calls
    assert during[("icall_calls_live", ())] == calls
    assert during[("icall_calls_started_total", ())] == calls
    assert during[("icall_esl_connected", ())] == 1
    assert during[("icall_esl_reader_alive", ())] == 1
    for actor in ("supervisor", "db_writer", "commander"):
        assert ("icall_mailbox_depth", (("actor", actor),)) in during
    assert ("icall_db_backlog", ()) in during
    assert metrics.types["icall_calls_started"] == "counter"
    assert metrics.types["icall_reaction_seconds"] == "histogram"

    for uuid in uuids:
        switch.hangup(uuid)
    for uuid in uuids:
        h.finish(uuid)
    assert cdr_sink.wait_for_accepted(calls, timeout_s=WAIT_S)
    # The delay is observed once the outbox row is marked delivered, after the 2xx.
    assert wait_until(lambda: metrics.value("icall_cdr_delivery_delay_seconds_count") == calls, WAIT_S)

    after = metrics.scrape()
    assert after[("icall_calls_live", ())] == 0
    assert after[("icall_takeover_seconds_count", ())] == calls
    assert after[("icall_reaction_seconds_count", ())] == 2 * calls  # the hangups caused no command
    assert 0 < after[("icall_takeover_seconds_sum", ())] < calls * WAIT_S
    for outcome in ("found", "not_found"):
        expected = sum(1 for o in CALLERS.values() if o == outcome)
        assert after[("icall_crm_lookup_seconds_count", (("outcome", outcome),))] == expected
    # Every committed write was counted in exactly one timed transaction.
    assert after[("icall_db_commit_batch_size_sum", ())] == after[("icall_db_writes_total", ())] > 0
    assert after[("icall_db_commit_seconds_count", ())] == after[("icall_db_commit_batch_size_count", ())]
    assert after[("icall_db_backlog", ())] == 0
    assert after[("icall_events_routed_total", ())] > 0
