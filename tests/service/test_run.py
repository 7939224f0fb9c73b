"""`icall run` as systemd runs it: the unit's own command lines, a notify socket the
test owns, no FreeSWITCH listening, then signals."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import ROOT, service_env, write_config
from tests.service.unit_file import local_command, service_settings, unit_environment

READY_TIMEOUT_S = 30.0
RETRY_LINE = r"ESL connect to 127\.0\.0\.1:\d+ failed: .*; retrying in (\d+\.\d) s"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def upgrade_database(config: Path, env: dict[str, str]) -> None:
    """Run the unit's ExecStartPre (icall db upgrade), as systemd would before ExecStart."""
    for line in service_settings()["ExecStartPre"]:
        result = subprocess.run(local_command(line, config), env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"{line} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture
def start_service(tmp_path, run_icall):
    """Start the unit's ExecStart against a FreeSWITCH port of the test's choosing."""

    def start(port: int, config_overrides: dict | None = None, **env_extra: str):
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        config = write_config(tmp_path / "config.ini", port, **(config_overrides or {}))
        settings = service_settings()
        env = service_env(state, **unit_environment(settings), **env_extra)
        upgrade_database(config, env)
        return run_icall(local_command(settings["ExecStart"][0], config), env, ROOT)

    return start


def assert_clean_stop(service, timeout_s: float = 15.0) -> float:
    """SIGTERM: exit status 0, a last log line saying so, no thread left. Returns the time taken."""
    started = time.monotonic()
    status = service.terminate(timeout_s)
    elapsed = time.monotonic() - started
    log = service.stderr()
    assert status == 0, log
    assert re.search(r"SIGTERM received: stopping", log), log
    assert re.search(r"icall stopped$", log, re.M), log
    assert "BUG: thread" not in log, log
    assert "Traceback" not in log, log
    return elapsed


def test_the_units_exec_start_reports_ready_feeds_the_watchdog_and_stops_on_sigterm(
        start_service, notify_socket, refused_port, tmp_path):
    service = start_service(refused_port, NOTIFY_SOCKET=notify_socket.address,
                            WATCHDOG_USEC="2000000")
    seen = notify_socket.wait_for("READY=1", READY_TIMEOUT_S)
    ready_s = time.monotonic() - service.started_at
    if not any("WATCHDOG=1" in message.split("\n") for message in seen):
        seen += notify_socket.wait_for("WATCHDOG=1", READY_TIMEOUT_S)
    # Fed again after the first interval (1 s): the feeding is periodic, not a one-off.
    notify_socket.wait_for("WATCHDOG=1", READY_TIMEOUT_S)
    service.wait_for_line(r"icall ready")
    assert (tmp_path / "state" / "icall.sqlite3").is_file(), "the database belongs in $STATE_DIRECTORY"
    elapsed = assert_clean_stop(service)
    print(f"\nicall run: READY=1 {ready_s:.2f} s after exec; exit {elapsed:.2f} s after SIGTERM")
    assert "STOPPING=1" in notify_socket.wait_for("STOPPING=1", 5.0)[-1]


def test_without_freeswitch_each_attempt_logs_one_retry_line_spaced_by_the_backoff(
        start_service, refused_port):
    service = start_service(refused_port)
    for _ in range(5):
        service.wait_for_line(RETRY_LINE)
    assert_clean_stop(service)
    retries = service.matching(RETRY_LINE)
    assert len(retries) >= 5
    for (at, line), (next_at, _) in zip(retries, retries[1:], strict=False):
        announced_s = float(re.search(RETRY_LINE, line).group(1))
        # reconnect_min_s 0.3 with jitter 0.8..1.2: at least 0.24 s, never a busy loop.
        assert announced_s >= 0.2, line
        # The next attempt comes no earlier than announced (less rounding and clock slack).
        assert next_at - at >= announced_s - 0.1, (line, next_at - at)
    assert len(service.matching(r"Traceback")) == 0


def test_every_connection_attempt_logs_exactly_one_retry_line(start_service):
    """A server that accepts and hangs up at once: each accept is one attempt."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.5)
    accepted: list[float] = []
    stop = threading.Event()

    def accept_and_hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(time.monotonic())
            conn.close()

    acceptor = threading.Thread(target=accept_and_hang_up, name="hang-up-server", daemon=True)
    acceptor.start()
    try:
        service = start_service(server.getsockname()[1])
        for _ in range(4):
            service.wait_for_line(r"ESL connect to .* failed: .*; retrying in")
        assert_clean_stop(service)
    finally:
        stop.set()
        acceptor.join(10)
        server.close()
    lines = service.matching(r"ESL connect to .* failed: .*; retrying in")
    # The reader is the only connection that dials without a command to send; the
    # last attempt may have been accepted just before SIGTERM cut its log line short.
    assert len(accepted) - 1 <= len(lines) <= len(accepted), (accepted, lines)


def test_sigusr1_logs_the_stack_of_every_thread_and_the_service_goes_on(start_service, refused_port):
    service = start_service(refused_port)
    service.wait_for_line(r"icall ready")
    service.process.send_signal(signal.SIGUSR1)
    service.wait_for_line(r"thread MainThread \(\d+\):")
    service.wait_for_line(r"in run_service")
    # Still running and still retrying after the dump.
    service.wait_for_line(RETRY_LINE)
    assert service.process.poll() is None
    assert_clean_stop(service)


def test_under_journald_log_lines_carry_no_timestamp(start_service, refused_port):
    service = start_service(refused_port, JOURNAL_STREAM="8:12345")
    line = service.wait_for_line(r"icall starting")
    assert not TIMESTAMP.match(line), line
    assert re.match(r"^INFO +service.runner \[MainThread\] icall starting", line), line
    assert_clean_stop(service)


def test_outside_journald_log_lines_start_with_a_timestamp(start_service, refused_port):
    service = start_service(refused_port)
    line = service.wait_for_line(r"icall starting")
    assert TIMESTAMP.match(line), line
    assert_clean_stop(service)


def test_the_running_service_answers_health_and_metrics(start_service, refused_port):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    service = start_service(refused_port, {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}})
    service.wait_for_line(r"icall ready")
    connection = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
    try:
        connection.request("GET", "/health")
        health = connection.getresponse()
        # No switch listens, but for less than [metrics] health_link_down_s (10 s).
        assert health.status == 200
        assert re.fullmatch(r"ok: supervisor ok, FreeSWITCH link down for \d+ s\n", health.read().decode())
        connection.request("GET", "/metrics")
        metrics = connection.getresponse()
        body = metrics.read().decode()
        assert metrics.status == 200
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert families["icall_esl_connected"].type == "gauge"
        assert families["icall_esl_connected"].samples[0].value == 0
        assert families["icall_calls_started"].type == "counter"
        assert families["process_cpu_seconds"].samples[0].value > 0
    finally:
        connection.close()
    assert_clean_stop(service)


# Sets the kernel's memory-deny-write-execute (PR_SET_MDWE, Linux 6.3+), the same rule
# MemoryDenyWriteExecute=yes imposes, then becomes the command.
_MDWE_EXEC = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_the_service_runs_under_memory_deny_write_execute(tmp_path, notify_socket, refused_port, run_icall):
    probe = subprocess.run([sys.executable, "-c", _MDWE_EXEC, sys.executable, "-c", "pass"], timeout=60)
    if probe.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE")
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path / "config.ini", refused_port)
    settings = service_settings()
    env = service_env(state, **unit_environment(settings), NOTIFY_SOCKET=notify_socket.address)
    upgrade_database(config, env)
    argv = local_command(settings["ExecStart"][0], config)
    service = run_icall([sys.executable, "-c", _MDWE_EXEC, *argv], env, ROOT)
    notify_socket.wait_for("READY=1", READY_TIMEOUT_S)
    service.wait_for_line(RETRY_LINE)
    assert_clean_stop(service)


def test_a_database_without_the_schema_stops_the_start_with_the_command_to_run(tmp_path, refused_port):
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path / "config.ini", refused_port)
    result = subprocess.run([str(ROOT / ".venv/bin/icall"), "--config", str(config), "run"],
                            env=service_env(state), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "the database has no icall schema yet: run `icall db upgrade" in result.stderr
    assert "icall ready" not in result.stderr
