"""The monitoring kit (contrib/) against a running icall: every metric its alert
rules and its dashboard name is in a scrape of /metrics, taken while the service
handled stand-in calls (CRM found and not found, a queue, delivered CDRs, a call sent
to the safe destination). Histograms count through their _bucket/_sum/_count series,
counters through _total, as Prometheus stores them."""

from __future__ import annotations

from tests.contrib.kit import PROMETHEUS_OWN, all_metric_names
from tests.e2e.conftest import WAIT_S
from tests.e2e.test_metrics import CALLERS, scraper  # noqa: F401 - the fixture
from tests.waiting import wait_until


def test_every_metric_the_alerts_and_the_dashboard_name_is_exported(scraper, switch, cdr_sink):  # noqa: F811
    h, metrics = scraper
    uuids = [h.place(caller, "2") for caller in CALLERS]  # menu 2: a CRM lookup each
    assert wait_until(lambda: _crm_answers(metrics) == len(uuids), WAIT_S)
    for uuid in uuids:
        switch.hangup(uuid)  # bridged or queued by now; an ended call ignores it
    for uuid in uuids:
        h.finish(uuid)
    assert cdr_sink.wait_for_accepted(len(uuids), timeout_s=WAIT_S)

    # Every command refused: the welcome cannot start, the flow sends the caller to
    # the safe destination (refused too, so it hangs up; that is refused as well).
    switch.faults.error_commands = {"sendmsg"}
    rescued = h.place("5551099", "1")
    assert wait_until(lambda: metrics.value("icall_calls_rescued_total") == 1, WAIT_S)
    switch.faults.error_commands = set()
    switch.hangup(rescued)
    h.finish(rescued)

    exported = {name for name, _labels in metrics.scrape()}
    named = all_metric_names()
    missing = {name: sorted(where) for name, where in named.items()
               if name not in exported and name not in PROMETHEUS_OWN}
    assert not missing, f"named by contrib/ but not in /metrics: {missing}"
    assert len(named) > 15  # the kit was read: alerts and panels, not an empty file


def _crm_answers(metrics) -> float:
    return sum(value for (name, _labels), value in metrics.scrape().items()
               if name == "icall_crm_lookup_seconds_count")
