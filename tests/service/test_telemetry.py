"""PrometheusTelemetry: what the actors report becomes counters, gauges and histograms
in a registry of the service's own."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors.reporting import Cause
from service.telemetry import READINGS, PrometheusTelemetry


def scrape(telemetry: PrometheusTelemetry) -> dict:
    text = generate_latest(telemetry.registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict, name: str, suffix: str = "", **labels: str) -> float:
    family = families[name]
    for s in family.samples:
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(f"{name}{suffix} {labels}")


def test_counts_kept_by_an_actor_are_exported_as_counters_and_levels_as_gauges():
    telemetry = PrometheusTelemetry()
    telemetry.watch("supervisor", lambda: {"calls_started": 4, "calls_live": 2, "breaker": "closed"})
    telemetry.watch("service", lambda: {"mailbox_supervisor": 7, "mailbox_commander": 1})
    families = scrape(telemetry)
    assert families["icall_calls_started"].type == "counter"
    assert sample(families, "icall_calls_started", "_total") == 4
    assert families["icall_calls_live"].type == "gauge"
    assert sample(families, "icall_calls_live") == 2
    assert sample(families, "icall_mailbox_depth", actor="supervisor") == 7
    assert sample(families, "icall_mailbox_depth", actor="commander") == 1
    # Undeclared values (text, like the breaker's state name) are not exported.
    assert not any("breaker" in name for name in families)


def test_commands_are_timed_into_the_histogram_of_their_cause():
    telemetry = PrometheusTelemetry()
    telemetry.command_written(Cause("reaction", 10.0), 10.002)
    telemetry.command_written(Cause("reaction", 20.0), 20.004)
    telemetry.command_written(Cause("takeover", 30.0), 30.001)
    families = scrape(telemetry)
    assert sample(families, "icall_reaction_seconds", "_count") == 2
    assert abs(sample(families, "icall_reaction_seconds", "_sum") - 0.006) < 1e-9
    assert sample(families, "icall_reaction_seconds", "_bucket", le="0.0025") == 1
    assert sample(families, "icall_takeover_seconds", "_count") == 1


def test_crm_db_and_cdr_observations_land_in_their_histograms():
    telemetry = PrometheusTelemetry()
    telemetry.crm_answered("found", 0.03)
    telemetry.crm_answered("deadline", 8.0)
    telemetry.db_committed(0.004, 17)
    telemetry.cdr_delivered(-0.5)  # a wall-clock step backwards counts as no delay
    families = scrape(telemetry)
    assert sample(families, "icall_crm_lookup_seconds", "_count", outcome="found") == 1
    assert sample(families, "icall_crm_lookup_seconds", "_count", outcome="deadline") == 1
    assert sample(families, "icall_db_commit_seconds", "_count") == 1
    assert sample(families, "icall_db_commit_batch_size", "_sum") == 17
    assert sample(families, "icall_cdr_delivery_delay_seconds", "_sum") == 0


def test_two_services_in_one_process_keep_their_metrics_apart():
    first, second = PrometheusTelemetry(), PrometheusTelemetry()
    first.db_committed(0.01, 3)
    assert sample(scrape(first), "icall_db_commit_seconds", "_count") == 1
    assert sample(scrape(second), "icall_db_commit_seconds", "_count") == 0


def test_a_reading_that_raises_leaves_the_rest_of_the_scrape_whole(caplog):
    telemetry = PrometheusTelemetry()

    def broken() -> dict:
        raise RuntimeError("boom")

    telemetry.watch("db_writer", broken)
    telemetry.watch("supervisor", lambda: {"calls_started": 1})
    families = scrape(telemetry)
    assert sample(families, "icall_calls_started", "_total") == 1
    assert "icall_db_backlog" not in families
    assert "reading db_writer for /metrics failed" in caplog.text


def test_a_replaced_actor_watching_under_the_same_name_replaces_the_old_reading():
    telemetry = PrometheusTelemetry()
    telemetry.watch("db_writer", lambda: {"pending": 50})
    telemetry.watch("db_writer", lambda: {"pending": 0})  # the new DbWriter
    assert sample(scrape(telemetry), "icall_db_backlog") == 0


def test_the_process_metrics_every_python_exporter_has_are_there():
    families = scrape(PrometheusTelemetry())
    assert sample(families, "process_cpu_seconds", "_total") > 0
    assert sample(families, "process_resident_memory_bytes") > 0


def test_every_declared_reading_has_a_unique_meaning_per_family():
    by_family: dict[str, set] = {}
    for declared in READINGS.values():
        by_family.setdefault(declared.name, set()).add((declared.kind, declared.label and declared.label[0]))
    assert all(len(kinds) == 1 for kinds in by_family.values()), by_family


def test_the_node_is_exported_as_an_info_metric_and_the_spool_as_readings():
    telemetry = PrometheusTelemetry(node="pbx-east")
    telemetry.watch("db_writer", lambda: {"pending": 3, "spooled": 120, "spilled": 150, "drained": 30})
    families = scrape(telemetry)
    assert sample(families, "icall_node_info", node="pbx-east") == 1
    assert sample(families, "icall_db_spooled") == 120
    assert sample(families, "icall_db_spilled", "_total") == 150
    assert sample(families, "icall_db_drained", "_total") == 30
