"""Fixtures of the link's tests: a replay server, a config pointing at it, helpers."""

from __future__ import annotations

import logging
import queue
import socket
import threading

import pykka
import pytest

from ivr.config import load_config
from tests.esl.replay import Knobs, ReplayServer


def make_config(port: int, password: str = "ClueCon", **freeswitch: str):
    environ = {"ICALL_FREESWITCH_PORT": str(port), "ICALL_FREESWITCH_PASSWORD": password,
               "ICALL_FREESWITCH_CONNECT_TIMEOUT_S": "5",
               "ICALL_FREESWITCH_COMMAND_TIMEOUT_S": "5",
               "ICALL_FREESWITCH_RECONNECT_MIN_S": "0.05",
               "ICALL_FREESWITCH_RECONNECT_MAX_S": "0.2"}
    environ.update({f"ICALL_FREESWITCH_{k.upper()}": v for k, v in freeswitch.items()})
    return load_config(None, environ=environ)


@pytest.fixture
def replay():
    """Start a ReplayServer with the given Knobs; every one started is stopped."""
    servers: list[ReplayServer] = []

    def start(knobs: Knobs | None = None) -> ReplayServer:
        server = ReplayServer(knobs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def refused_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Collector(pykka.ThreadingActor):
    """Stands in for a CallActor: every message it is told lands in `inbox`."""

    def __init__(self, inbox: queue.Queue):
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message):
        self.inbox.put(message)


def link_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("esl-", "Commander"))]


@pytest.fixture
def link_logs(caplog):
    caplog.set_level(logging.INFO, logger="actors")
    return caplog
