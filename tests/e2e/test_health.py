"""/health tells the truth about the event link: a switch away longer than
[metrics] health_link_down_s, or a dead ESL reader thread, is a 503 with the reason;
the systemd watchdog stops for a dead reader, not for a switch that is away."""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from service.app import Service
from service.metrics import MetricsServer
from service.systemd import Watchdog
from tests.e2e.conftest import WAIT_S
from tests.service import conftest as service_conftest
from tests.waiting import wait_until

LINK_DOWN_LIMIT_S = 3
WATCHDOG_USEC = "400000"  # a feed every 0.2 s


def get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def endpoint():
    """endpoint(service) -> the port of a /health and /metrics server for it."""
    servers: list[MetricsServer] = []

    def start(service: Service) -> int:
        server = MetricsServer(("127.0.0.1", 0), service.telemetry.registry, service.health)
        server.start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.stop()


# The systemd notify socket the service tests use, shared rather than written again.
notify_socket = service_conftest.notify_socket


def test_a_switch_away_longer_than_the_limit_is_a_503_until_the_link_is_back(
        harness, switch, endpoint, notify_socket):
    h = harness(ICALL_METRICS_HEALTH_LINK_DOWN_S=str(LINK_DOWN_LIMIT_S))
    port = endpoint(h.service)
    watchdog = Watchdog(h.service.process_health, {"NOTIFY_SOCKET": notify_socket.address,
                                                   "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    assert get(port, "/health") == (200, "ok: supervisor ok, FreeSWITCH link up\n")

    stopped_at = time.monotonic()
    switch.stop()
    assert wait_until(lambda: h.service.link_down_s() is not None, WAIT_S), "the loss was never noticed"
    status, body = get(port, "/health")
    assert status == 200, body  # down, but not for long yet
    assert body.startswith("ok: supervisor ok, FreeSWITCH link down for ")

    assert wait_until(lambda: get(port, "/health")[0] == 503, WAIT_S)
    assert time.monotonic() - stopped_at > LINK_DOWN_LIMIT_S
    status, body = get(port, "/health")
    assert status == 503
    assert body.startswith("unhealthy: FreeSWITCH link down for ")
    assert body.endswith(f"(more than [metrics] health_link_down_s = {LINK_DOWN_LIMIT_S})\n")
    metrics = get(port, "/metrics")[1]
    assert "icall_esl_connected 0.0" in metrics
    down_line = next(line for line in metrics.splitlines() if line.startswith("icall_esl_link_down_seconds "))
    assert float(down_line.split()[1]) > LINK_DOWN_LIMIT_S
    # The watchdog is still fed: restarting icall would not bring the switch back.
    notify_socket.receive(0.5)
    assert notify_socket.receive(WAIT_S) == "WATCHDOG=1"
    watchdog.stop()

    switch.start()  # the same port: the reader reconnects within its backoff (0.5 s)
    assert wait_until(lambda: get(port, "/health")[0] == 200, WAIT_S)
    assert get(port, "/health") == (200, "ok: supervisor ok, FreeSWITCH link up\n")


class ReaderKilled(BaseException):
    """Raised in the reader thread: it escapes the reader's catch-all (which takes
    Exception) and ends the thread, as a bug outside that catch-all would."""


# The thread's death is what this test injects; pytest reports it as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_reader_thread_is_a_503_and_the_watchdog_is_no_longer_fed(
        harness, switch, endpoint, notify_socket, monkeypatch, caplog):
    kill = threading.Event()
    deliver = Service._deliver_event

    def deliver_or_die(self: Service, event) -> None:
        if kill.is_set():
            raise ReaderKilled()  # a bug in handing an event over, escaping the reader
        deliver(self, event)

    monkeypatch.setattr(Service, "_deliver_event", deliver_or_die)
    h = harness()
    port = endpoint(h.service)
    watchdog = Watchdog(h.service.process_health, {"NOTIFY_SOCKET": notify_socket.address,
                                           "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    try:
        assert notify_socket.receive(WAIT_S) == "WATCHDOG=1"
        kill.set()
        h.place("5551001", "1")  # its CHANNEL_PARK is the event that kills the reader
        assert wait_until(lambda: not h.service.reader.alive, WAIT_S), "the reader thread survived"

        status, body = get(port, "/health")
        assert (status, body) == (503, "unhealthy: ESL reader thread is dead: no events are read\n")
        assert "icall_esl_reader_alive 0.0" in get(port, "/metrics")[1]
        # A feed may have been on its way when the thread died; after it, silence for
        # several feeding intervals.
        notify_socket.receive(0.5)
        assert notify_socket.receive(1.5) is None
    finally:
        watchdog.stop()
    assert "unhealthy: ESL reader thread is dead" in caplog.text
