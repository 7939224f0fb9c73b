"""sd_notify and the watchdog against a real unix datagram socket the test owns."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import pykka
import pytest

from service.systemd import Watchdog, notify, watchdog_interval_s

# A watchdog timeout of 0.4 s means a feed every 0.2 s.
WATCHDOG_USEC = "400000"


def test_notify_sends_the_state_as_one_datagram_to_the_socket(notify_socket):
    assert notify("READY=1\nSTATUS=running", {"NOTIFY_SOCKET": notify_socket.address}) is True
    assert notify_socket.receive(5.0) == "READY=1\nSTATUS=running"


def test_notify_reaches_an_abstract_socket_named_with_an_at_sign():
    name = f"icall-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_without_notify_socket_does_nothing_and_says_so():
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


def test_notify_to_a_vanished_socket_returns_false_and_logs_instead_of_raising(tmp_path, caplog):
    missing = f"/tmp/icall-no-such-socket-{uuid.uuid4().hex}"
    assert notify("READY=1", {"NOTIFY_SOCKET": missing}) is False
    assert "cannot notify systemd (READY=1)" in caplog.text


def test_notify_refuses_a_relative_socket_name(caplog):
    assert notify("READY=1", {"NOTIFY_SOCKET": "relative/notify"}) is False
    assert "neither a path nor an abstract name" in caplog.text


def test_the_watchdog_interval_is_half_the_timeout_and_respects_watchdog_pid():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def test_a_garbled_watchdog_usec_disables_the_watchdog_with_a_warning(caplog):
    assert watchdog_interval_s({"WATCHDOG_USEC": "thirty"}) is None
    assert "WATCHDOG_USEC='thirty' is not a number" in caplog.text


def test_a_healthy_service_feeds_the_watchdog_repeatedly(notify_socket):
    checks = []
    watchdog = Watchdog(lambda: (checks.append(1) or True, "fine"),
                        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    try:
        # Three feeds prove it repeats rather than sending once at start.
        for _ in range(3):
            assert notify_socket.receive(10.0) == "WATCHDOG=1"
    finally:
        watchdog.stop()
    assert len(checks) >= 3
    assert not any(t.name == "watchdog" for t in threading.enumerate())


def test_an_unhealthy_service_stops_feeding_and_logs_why(notify_socket, caplog):
    reported = threading.Event()

    def stuck() -> tuple[bool, str]:
        reported.set()
        return False, "supervisor does not answer"

    watchdog = Watchdog(stuck, {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    try:
        assert reported.wait(10.0)
        # A window of several feeding intervals (0.2 s each) with nothing arriving.
        assert notify_socket.receive(1.5) is None
    finally:
        watchdog.stop()
    assert "unhealthy: supervisor does not answer; not feeding the systemd watchdog" in caplog.text


def test_feeding_resumes_when_the_service_recovers(notify_socket, caplog):
    caplog.set_level(logging.INFO, logger="service.systemd")
    healthy = threading.Event()

    def check() -> tuple[bool, str]:
        ok = healthy.is_set()
        return ok, "link up" if ok else "stuck"

    watchdog = Watchdog(check,
                        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    try:
        assert notify_socket.receive(1.0) is None
        healthy.set()
        assert notify_socket.receive(10.0) == "WATCHDOG=1"
    finally:
        watchdog.stop()
    assert "healthy again (link up)" in caplog.text


def test_a_health_check_that_raises_counts_as_unhealthy_and_the_thread_survives(notify_socket, caplog):
    calls = []

    def flaky() -> tuple[bool, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return True, "fine"

    watchdog = Watchdog(flaky, {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    try:
        assert notify_socket.receive(10.0) == "WATCHDOG=1"
    finally:
        watchdog.stop()
    assert "health check failed" in caplog.text
    assert "unhealthy: health check raised" in caplog.text


def test_without_watchdog_usec_no_thread_starts_and_nothing_is_sent(notify_socket):
    watchdog = Watchdog(lambda: (True, "fine"), {"NOTIFY_SOCKET": notify_socket.address})
    watchdog.start()
    try:
        assert not watchdog.enabled
        assert not any(t.name == "watchdog" for t in threading.enumerate())
        assert notify_socket.receive(0.5) is None
    finally:
        watchdog.stop()


@pytest.mark.parametrize("usec", ["60000000"])
def test_stop_returns_promptly_even_with_a_long_interval(notify_socket, usec):
    watchdog = Watchdog(lambda: (True, "fine"), {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": usec})
    watchdog.start()
    assert notify_socket.receive(10.0) == "WATCHDOG=1"
    started = time.monotonic()
    watchdog.stop()
    # The thread waits on an Event, so stop() does not sit out the 30 s interval.
    assert time.monotonic() - started < 5.0
    assert not any(t.name == "watchdog" for t in threading.enumerate())


class _Supervisor(pykka.ThreadingActor):
    """Stands in for the supervisor: answers ping unless made to block."""

    def __init__(self, release: threading.Event):
        super().__init__()
        self.release = release

    def ping(self) -> str:
        return "pong"

    def get_stuck(self) -> None:
        self.release.wait(30)


def test_a_stuck_supervisor_stops_the_feeding_until_it_answers_again(notify_socket, caplog):
    caplog.set_level(logging.INFO, logger="service.systemd")
    release = threading.Event()
    supervisor = _Supervisor.start(release)

    def health() -> tuple[bool, str]:
        # As Service.health does: an ask bounded by a timeout.
        try:
            supervisor.proxy().ping().get(timeout=0.3)
        except pykka.Timeout:
            return False, "supervisor does not answer"
        return True, "supervisor ok"

    watchdog = Watchdog(health, {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    watchdog.start()
    try:
        assert notify_socket.receive(10.0) == "WATCHDOG=1"
        supervisor.proxy().get_stuck()  # the reply is never awaited: it is stuck
        # Drain a feed that may already have been on its way, then expect silence.
        notify_socket.receive(0.5)
        assert notify_socket.receive(2.0) is None
        release.set()
        assert notify_socket.receive(10.0) == "WATCHDOG=1"
    finally:
        release.set()
        watchdog.stop()
        supervisor.stop(timeout=10)
    assert "unhealthy: supervisor does not answer; not feeding the systemd watchdog" in caplog.text
    assert "healthy again (supervisor ok)" in caplog.text
