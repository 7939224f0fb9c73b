"""The /metrics and /health endpoint over a real loopback socket."""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from service.metrics import MetricsServer
from tests.waiting import wait_until


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return response.status, response.getheader("Content-Type", ""), body.decode()
    finally:
        connection.close()


class _Broken(Collector):
    def collect(self):
        raise RuntimeError("boom")


@pytest.fixture
def serve():
    servers: list[MetricsServer] = []

    def start(registry=None, health=lambda: (True, "fine"), **options) -> MetricsServer:
        server = MetricsServer(("127.0.0.1", 0), registry or CollectorRegistry(), health, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def registry():
    """A registry with a counter at 3 and a histogram that saw one 0.2 s."""
    registry = CollectorRegistry()
    Counter("icall_things", "Things done", registry=registry).inc(3)
    Histogram("icall_wait_seconds", "Waits", registry=registry, buckets=(0.1, 1.0)).observe(0.2)
    return registry


def test_metrics_serves_the_registry_in_the_prometheus_text_format(serve, registry):
    server = serve(registry)
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["icall_things"].type == "counter"
    assert [(s.name, s.value) for s in families["icall_things"].samples if s.name.endswith("_total")] == [
        ("icall_things_total", 3.0)]
    wait = {(s.name, s.labels.get("le")): s.value for s in families["icall_wait_seconds"].samples}
    assert wait[("icall_wait_seconds_bucket", "0.1")] == 0
    assert wait[("icall_wait_seconds_bucket", "1.0")] == 1
    assert wait[("icall_wait_seconds_count", None)] == 1


def test_a_scraper_that_asks_for_openmetrics_gets_it(serve, registry):
    server = serve(registry)
    status, content_type, body = get(server.port, "/metrics",
                                     {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "icall_things_total 3.0" in body


def test_a_scraper_that_accepts_gzip_gets_the_body_compressed(serve, registry):
    server = serve(registry)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    assert response.getheader("Content-Encoding") == "gzip"
    assert "icall_things_total 3.0" in gzip.decompress(raw).decode()


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

    server = serve(health=broken)
    assert get(server.port, "/health")[::2] == (503, "unhealthy: health check raised\n")
    assert get(server.port, "/metrics")[0] == 200
    assert "health check for /health failed" in caplog.text


def test_a_collector_that_raises_gives_a_500_not_a_dead_endpoint(serve, caplog):
    registry = CollectorRegistry()
    registry.register(_Broken())
    server = serve(registry)
    assert get(server.port, "/metrics")[::2] == (500, "metrics unavailable\n")
    assert get(server.port, "/health")[0] == 200
    assert "collecting metrics for /metrics failed" in caplog.text


def test_any_other_path_is_a_404(serve):
    server = serve(request_timeout_s=0.5)
    assert get(server.port, "/")[0] == 404
    assert get(server.port, "/metricsx")[0] == 404
    assert get(server.port, "/metrics?format=text")[0] == 200


def test_access_lines_are_logged_at_debug_level_only(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="service.metrics")
    server = serve(request_timeout_s=0.5)
    get(server.port, "/health")
    access = [r for r in caplog.records if "GET /health" in r.getMessage()]
    assert access and all(r.levelno == logging.DEBUG for r in access)


def test_a_busy_port_fails_in_start_not_in_a_background_thread(serve):
    server = serve(request_timeout_s=0.5)
    clash = MetricsServer(("127.0.0.1", server.port), CollectorRegistry(), lambda: (True, "fine"))
    with pytest.raises(OSError):
        clash.start()
    clash.stop()


def test_stop_ends_the_server_thread_and_frees_the_port():
    server = MetricsServer(("127.0.0.1", 0), CollectorRegistry(), lambda: (True, "fine"))
    server.start()
    port = server.port
    server.stop()
    assert not any(t.name == "metrics" for t in threading.enumerate())
    again = MetricsServer(("127.0.0.1", port), CollectorRegistry(), lambda: (True, "fine"))
    again.start()
    try:
        assert get(port, "/health")[0] == 200
    finally:
        again.stop()


def test_concurrent_scrapes_are_all_answered(serve, registry):
    server = serve(registry)
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


def _connection_threads() -> int:
    return sum(t.name.endswith("(process_request_thread)") for t in threading.enumerate())


@pytest.mark.parametrize("client", ["idle", "dribbling"])
def test_a_connection_that_never_finishes_a_request_is_closed_and_lets_go_of_its_thread(
        serve, client):
    server = serve(request_timeout_s=0.5)
    before = _connection_threads()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert wait_until(lambda: _connection_threads() == before + 1, 10)
        closed = threading.Event()
        if client == "dribbling":  # each byte within the idle timeout, the request never whole
            def dribble() -> None:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                    try:
                        sock.send(bytes([byte]))
                    except OSError:
                        return
                    if closed.wait(0.2):
                        return
            threading.Thread(target=dribble, daemon=True).start()
        try:
            assert sock.recv(1) == b"", "the server closes the connection"
        finally:
            closed.set()
    assert wait_until(lambda: _connection_threads() == before, 10)
    assert get(server.port, "/health")[0] == 200  # and the endpoint serves on
