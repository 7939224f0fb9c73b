"""OutboundServer, alone on loopback: who it lets in and how long it waits for them.
The peers are real TCP clients (tests.socket_peer)."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from actors.channel_link import ChannelLink
from actors.outbound_server import OutboundServer
from ivr.config import networks
from service.telemetry import PrometheusTelemetry
from tests.service.test_telemetry import sample, scrape
from tests.socket_peer import SocketPeer
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 10


@pytest.fixture
def serve():
    made: list[OutboundServer] = []

    def make(**options) -> tuple[OutboundServer, list[ChannelLink]]:
        calls: list[ChannelLink] = []
        server = OutboundServer(("127.0.0.1", 0), calls.append, send_timeout_s=2, **options)
        server.start()
        made.append(server)
        return server, calls

    yield make
    for server in made:
        server.stop()


def links_of(server: OutboundServer) -> list[ChannelLink]:
    return [key.data for key in list(server._selector.get_map().values())
            if isinstance(key.data, ChannelLink)]


def test_a_peer_outside_the_allow_list_is_closed_at_accept_warned_once_and_counted(serve, caplog):
    telemetry = PrometheusTelemetry()
    server, calls = serve(allow=networks("10.9.9.9, 192.168.0.0/16"), telemetry=telemetry)
    caplog.set_level(logging.WARNING, logger="actors.outbound_server")
    peers = [SocketPeer(server.port) for _ in range(3)]
    for peer in peers:
        assert peer.wait_closed(WAIT_S), "a peer not allowed was kept"
        assert peer.written == b"", "a peer not allowed was sent something"
    assert wait_until(lambda: server.counters["peers_refused"] == 3, WAIT_S)
    warnings = [r.getMessage() for r in caplog.records if "not in [outbound] allow" in r.getMessage()]
    assert len(warnings) == 1, warnings  # the next two within REFUSAL_LOG_S are only counted
    assert "127.0.0.1" in warnings[0]
    assert calls == [] and server.accepted == 0
    assert sample(scrape(telemetry), "icall_outbound_peers_refused", "_total") == 3


def test_by_default_a_local_peer_is_let_in(serve):
    server, calls = serve()
    peer = SocketPeer(server.port)
    assert peer.wait_for("connect", WAIT_S)
    peer.answer_connect("0b3c1f60-0000-4000-8000-000000000001")
    assert wait_until(lambda: len(calls) == 1, WAIT_S)
    assert calls[0].uuid == "0b3c1f60-0000-4000-8000-000000000001"
    peer.close()


def test_a_connection_that_never_answers_connect_is_closed_and_holds_nothing(serve, caplog):
    server, calls = serve(connect_timeout_s=0.3)
    caplog.set_level(logging.WARNING, logger="actors.outbound_server")
    peer = SocketPeer(server.port)
    assert peer.wait_for("connect", WAIT_S)
    assert wait_until(lambda: len(links_of(server)) == 1, WAIT_S)
    link = weakref.ref(links_of(server)[0])
    assert peer.wait_closed(WAIT_S), "a silent connection was kept"
    assert server.counters["connects_timed_out"] == 1
    assert server.live_links() == 0 and not server._unconnected
    gc.collect()
    assert link() is None, "the closed connection is still held"
    assert any("no answer to connect" in r.getMessage() and "127.0.0.1" in r.getMessage()
               for r in caplog.records)
    assert calls == []


def test_a_connection_that_answers_in_time_is_not_closed_by_the_deadline(serve):
    server, calls = serve(connect_timeout_s=0.3)
    peer = SocketPeer(server.port)
    assert peer.wait_for("connect", WAIT_S)
    peer.answer_connect("0b3c1f60-0000-4000-8000-000000000002")
    assert wait_until(lambda: len(calls) == 1, WAIT_S)
    assert wait_until(lambda: not server._unconnected, WAIT_S)  # its deadline has passed
    assert not calls[0].closed and server.live_links() == 1
    peer.close()


def test_a_connection_answering_connect_once_the_port_is_closing_is_let_go_without_a_command(serve):
    server, calls = serve()
    peer = SocketPeer(server.port)
    assert peer.wait_for("connect", WAIT_S)
    server.stop_listening()
    with pytest.raises(ConnectionRefusedError):
        SocketPeer(server.port)
    peer.answer_connect("0b3c1f60-0000-4000-8000-000000000003")
    assert peer.wait_for("exit", WAIT_S)
    assert calls == [], "handed to the supervisor while icall stops"


def test_at_the_descriptor_limit_accepting_pauses_without_spinning_and_resumes_when_descriptors_free_up():
    script = ROOT / "tests" / "actors" / "outbound_fd_limit.py"
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Held at the limit for report["held_s"] (2 s) with a connection waiting: without the
    # pause, accept fails in a loop (160,987 warnings in 3 s) and burns a CPU.
    assert 1 <= report["accept_warnings"] <= 8, report
    assert report["cpu_s"] < 0.25 * report["held_s"], report
    assert report["accepted_after"] == 1, report
