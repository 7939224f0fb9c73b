"""The /metrics and /health endpoint over a real loopback socket."""

from __future__ import annotations

import http.client
import logging
import threading

import pytest

from service.metrics import MetricsServer, render_prometheus


def get(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def serve():
    servers: list[MetricsServer] = []

    def start(stats=lambda: {}, health=lambda: (True, "fine")) -> MetricsServer:
        server = MetricsServer(("127.0.0.1", 0), stats, health)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_metrics_lists_every_numeric_stat_with_its_type(serve):
    server = serve(stats=lambda: {"calls_active": 3, "esl_connected": True, "crm_latency_s": 0.25,
                                  "events_total": 1200, "core_uuid": "abc", "nothing": None})
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert body == ("# TYPE icall_calls_active gauge\nicall_calls_active 3\n"
                    "# TYPE icall_crm_latency_s gauge\nicall_crm_latency_s 0.25\n"
                    "# TYPE icall_esl_connected gauge\nicall_esl_connected 1\n"
                    "# TYPE icall_events_total counter\nicall_events_total 1200\n")


def test_metric_names_are_made_legal_for_prometheus():
    assert render_prometheus({"calls.by-state": 2}) == "# TYPE icall_calls_by_state gauge\nicall_calls_by_state 2\n"
    assert render_prometheus({"nan": float("nan")}) == ""


def test_health_answers_200_with_the_reason_when_healthy(serve):
    server = serve(health=lambda: (True, "supervisor ok, FreeSWITCH link up"))
    assert get(server.port, "/health") == (200, "text/plain; charset=utf-8",
                                           "ok: supervisor ok, FreeSWITCH link up\n")


def test_health_answers_503_with_the_reason_when_unhealthy(serve):
    server = serve(health=lambda: (False, "supervisor does not answer"))
    status, _, body = get(server.port, "/health")
    assert (status, body) == (503, "unhealthy: supervisor does not answer\n")


def test_a_health_check_that_raises_is_a_503_and_the_server_keeps_serving(serve, caplog):
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = serve(health=broken, stats=lambda: {"calls_active": 1})
    assert get(server.port, "/health")[::2] == (503, "unhealthy: health check raised\n")
    assert get(server.port, "/metrics")[0] == 200
    assert "health check for /health failed" in caplog.text


def test_stats_that_raise_give_a_500_not_a_dead_endpoint(serve, caplog):
    def broken() -> dict:
        raise RuntimeError("boom")

    server = serve(stats=broken)
    assert get(server.port, "/metrics")[::2] == (500, "stats unavailable\n")
    assert get(server.port, "/health")[0] == 200
    assert "collecting stats for /metrics failed" in caplog.text


def test_any_other_path_is_a_404(serve):
    server = serve()
    assert get(server.port, "/")[0] == 404
    assert get(server.port, "/metricsx")[0] == 404
    assert get(server.port, "/metrics?format=text")[0] == 200


def test_access_lines_are_logged_at_debug_level_only(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="service.metrics")
    server = serve()
    get(server.port, "/health")
    access = [r for r in caplog.records if "GET /health" in r.getMessage()]
    assert access and all(r.levelno == logging.DEBUG for r in access)


def test_a_busy_port_fails_in_start_not_in_a_background_thread(serve):
    server = serve()
    clash = MetricsServer(("127.0.0.1", server.port), lambda: {}, lambda: (True, "fine"))
    with pytest.raises(OSError):
        clash.start()
    clash.stop()


def test_stop_ends_the_server_thread_and_frees_the_port():
    server = MetricsServer(("127.0.0.1", 0), lambda: {}, lambda: (True, "fine"))
    server.start()
    port = server.port
    server.stop()
    assert not any(t.name == "metrics" for t in threading.enumerate())
    again = MetricsServer(("127.0.0.1", port), lambda: {}, lambda: (True, "fine"))
    again.start()
    try:
        assert get(port, "/health")[0] == 200
    finally:
        again.stop()


def test_concurrent_scrapes_are_all_answered(serve):
    server = serve(stats=lambda: {"calls_active": 7})
    results: list[int] = []
    lock = threading.Lock()

    def scrape() -> None:
        status = get(server.port, "/metrics")[0]
        with lock:
            results.append(status)

    threads = [threading.Thread(target=scrape) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert results == [200] * 20
