"""Malformed frames at login, at subscribe and mid-stream: the reader logs, rebuilds
the link and events keep flowing; its thread ends only through stop() (issue 13, item 4).

Before: `Content-Length: 1x` at login raised ValueError and ended the reader thread for
good; a negative or huge Content-Length after login killed the process inside libesl.
"""

from __future__ import annotations

import logging

import pytest

from actors.esl_reader import EventReader
from tests.esl.conftest import make_config
from tests.esl.replay import Capture, Knobs, ReplayServer
from tests.esl.test_reader import Link

EVENTS = Capture("inbound_plain_ivr").events()[:3]
PLAIN_BODY = EVENTS[1].split(b"\n\n", 1)[1]

MALFORMED = {
    "a Content-Length that is not a number": (
        b"Content-Length: 1x\nContent-Type: text/event-plain\n\n" + PLAIN_BODY),
    "a negative Content-Length": b"Content-Length: -5\nContent-Type: text/event-plain\n\nabc",
    "a Content-Length of 100 TB": (
        b"Content-Length: 99999999999999\nContent-Type: text/event-plain\n\nabc"),
    "Unicode digits in Content-Length": (
        "Content-Length: \u0661\u0662\nContent-Type: text/event-plain\n\n".encode() + PLAIN_BODY[:12]),
    "a body without Content-Length": b"Content-Type: text/event-plain\n\n" + PLAIN_BODY,
    "a truncated body": (b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(PLAIN_BODY)
                         + PLAIN_BODY[: len(PLAIN_BODY) // 2]),
    "a 1 MB header": b"X-Big: " + b"a" * 1_000_000 + b"\nContent-Type: text/event-plain\n\n",
    "binary garbage": bytes(range(256)) * 8 + b"\n\n",
}
EXPECTED_NAMES = ["CODEC", "CODEC", "CHANNEL_OUTGOING"]  # what EVENTS are, as recorded
POINTS = ("greeting", "auth", "event", "filter")


@pytest.fixture
def reader_on(replay):
    readers: list[EventReader] = []

    def start(knobs: Knobs) -> tuple[EventReader, Link, ReplayServer]:
        server = replay(knobs)
        link = Link()
        # Short bounds: a truncated frame is given up after command_timeout_s.
        config = make_config(server.port, connect_timeout_s="1", command_timeout_s="1")
        reader = EventReader(config, link.on_event, link.on_link)
        readers.append(reader)
        reader.start()
        return reader, link, server

    yield start
    for reader in readers:
        reader.stop()
        assert not reader.alive


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_frame_at_login_or_subscribe_is_retried_and_events_then_flow(
        reader_on, caplog, point, frame):
    caplog.set_level(logging.INFO, logger="actors")
    reader, link, _ = reader_on(Knobs(events=EVENTS, malformed={point: frame}))
    assert link.wait_for_changes(1, timeout_s=15) == [("up", "")]
    assert [e.name for e in link.take(len(EVENTS))] == EXPECTED_NAMES
    assert reader.alive and reader.connected and reader.down_since is None
    assert _logged_without_traceback(caplog, "ESL connect to")


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_frame_mid_stream_rebuilds_the_link_and_events_keep_flowing(
        reader_on, caplog, frame):
    caplog.set_level(logging.INFO, logger="actors")
    reader, link, server = reader_on(Knobs(events=EVENTS))
    assert link.wait_for_changes(1) == [("up", "")]
    assert [e.name for e in link.take(len(EVENTS))] == EXPECTED_NAMES
    server.send_all(frame)
    changes = link.wait_for_changes(3, timeout_s=15)
    assert [state for state, _ in changes] == ["up", "down", "up"]
    assert reader.alive
    assert [e.name for e in link.take(len(EVENTS))] == EXPECTED_NAMES  # the new link's
    assert _logged_without_traceback(caplog, "ESL event connection to")


def _logged_without_traceback(caplog, text: str) -> bool:
    """The fault was logged as a warning, and as an expected fault, not as a bug."""
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any(r.exc_info for r in warnings), [r.getMessage() for r in warnings]
    return any(text in r.getMessage() for r in warnings)
