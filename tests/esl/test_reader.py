"""EventReader against the capture-replay server: events, reconnects, failures."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from actors.esl import subscription_commands
from actors.esl_reader import POLL_MS, EventReader
from tests.esl.conftest import link_threads, make_config
from tests.esl.replay import Capture, Knobs
from tests.waiting import wait_until

IVR = Capture("inbound_plain_ivr")


class Link:
    """Collects what a reader hands over: events in a queue, link changes in a list."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.changes: list[tuple] = []
        self.changed = threading.Condition()

    def on_event(self, event):
        self.events.put(event)

    def on_link(self, state, reason=""):
        with self.changed:
            self.changes.append((state, reason))
            self.changed.notify_all()

    def wait_for_changes(self, count: int, timeout_s: float = 10.0) -> list[tuple]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.changes) >= count, timeout=timeout_s)
            return list(self.changes)

    def take(self, count: int, timeout_s: float = 10.0) -> list:
        return [self.events.get(timeout=timeout_s) for _ in range(count)]


@pytest.fixture
def start_reader():
    readers: list[EventReader] = []

    def start(config, link: Link) -> EventReader:
        reader = EventReader(config, link.on_event, link.on_link)
        readers.append(reader)
        reader.start()
        return reader

    yield start
    for reader in readers:
        reader.stop()


def _event_uuid_sent_for(app: str) -> str:
    for record in IVR.records:
        if record.direction == "C>S" and f"execute-app-name: {app}\n".encode() in record.data:
            for line in record.data.decode().splitlines():
                if line.startswith("Event-UUID: "):
                    return line.split(": ", 1)[1]
    raise AssertionError(f"no sendmsg {app} in the capture")


def test_the_reader_subscribes_with_exactly_the_expected_lines(replay, start_reader):
    server = replay()
    link = Link()
    start_reader(make_config(server.port), link)
    assert link.wait_for_changes(1) == [("up", "")]
    lines = [c.first_line for c in server.commands()]
    assert lines == ["auth ClueCon", *subscription_commands("ivr_app", "icall")]


def test_the_reader_hands_over_every_recorded_event_as_the_capture_readme_says(
        replay, start_reader):
    recorded = IVR.events()
    server = replay(Knobs(events=recorded))
    link = Link()
    start_reader(make_config(server.port), link)
    events = link.take(len(recorded))
    assert len(events) == 85

    digits = [e for e in events if e.name == "CHANNEL_EXECUTE_COMPLETE"
              and e.get("Application") == "play_and_get_digits"]
    assert len(digits) == 1
    assert digits[0].variable("menu_number") == "2"
    assert digits[0].get("Application-UUID") == _event_uuid_sent_for("play_and_get_digits")

    parked = next(e for e in events if e.name == "CHANNEL_PARK"
                  and e.variable("ivr_app") == "icall")
    assert parked.get("Channel-Name") == "loopback/fsm-b"
    hangups = [e for e in events if e.name == "CHANNEL_HANGUP_COMPLETE" and e.uuid == parked.uuid]
    assert len(hangups) == 1
    assert hangups[0].get("Hangup-Cause") == "NORMAL_CLEARING"
    assert ("Hangup-Cause", "NORMAL_CLEARING") in hangups[0].repeated
    job = next(e for e in events if e.name == "BACKGROUND_JOB")
    assert job.body.startswith("+OK ")
    assert job.get("Event-Date-Local") == "2026-11-26 05:20:34"  # URL-decoded
    assert link.events.empty()


def test_the_reader_reconnects_and_resubscribes_after_the_server_drops(replay, start_reader):
    server = replay(Knobs(events=IVR.events()[:3]))
    link = Link()
    start_reader(make_config(server.port), link)
    first_batch = link.take(3)
    assert link.wait_for_changes(1) == [("up", "")]
    server.drop_all()
    changes = link.wait_for_changes(3)
    assert [state for state, _ in changes] == ["up", "down", "up"]
    assert changes[1][1] == "the switch closed the connection"
    expected = ["auth ClueCon", *subscription_commands("ivr_app", "icall")]
    assert [c.first_line for c in server.commands(0)] == expected
    assert [c.first_line for c in server.commands(1)] == expected
    second_batch = link.take(3)
    assert [e.name for e in first_batch] == [e.name for e in second_batch]


def test_a_wrong_password_is_retried_with_spaced_attempts_and_one_line_each(
        replay, start_reader, link_logs):
    server = replay(Knobs(password="secret"))
    link = Link()
    started = time.monotonic()
    reader = start_reader(make_config(server.port, reconnect_min_s="0.1",
                                      reconnect_max_s="0.4"), link)
    assert server.wait_for(lambda: server.logins >= 4)
    reader.stop()
    elapsed = time.monotonic() - started
    attempts = server.logins
    # Delays are 0.1, 0.2, 0.4, 0.4 ... each at least 80 % of that: a busy loop
    # would make hundreds of attempts in this time.
    floor = [0.08, 0.16] + [0.32] * 100
    assert sum(floor[:attempts - 1]) <= elapsed
    lines = [r.getMessage() for r in link_logs.records if "ESL connect to" in r.getMessage()]
    assert len(lines) == attempts
    assert all("authentication refused (wrong password?); retrying in" in m for m in lines)
    assert not any(r.exc_info for r in link_logs.records)
    assert link.changes == []
    assert not reader.connected


def test_a_refused_port_and_a_rude_rejection_each_log_one_line_per_attempt(
        replay, refused_port, start_reader, link_logs):
    rude = replay(Knobs(rude=True))
    start_reader(make_config(refused_port), Link())
    start_reader(make_config(rude.port), Link())
    assert rude.wait_for(lambda: len(rude.connections) >= 2)

    def lines(text):
        return [r for r in link_logs.records if text in r.getMessage()]

    deadline = time.monotonic() + 10
    while not lines("connection refused") and time.monotonic() < deadline:
        rude.wait_for(lambda: False, timeout_s=0.05)
    assert lines("connection refused")
    assert lines("rejected by the switch before login: 'Access Denied, go away.'")
    assert not any(r.exc_info for r in link_logs.records)


def test_stopping_the_reader_leaves_no_thread_alive(replay, start_reader):
    server = replay(Knobs(events=IVR.events()[:5]))
    link = Link()
    reader = start_reader(make_config(server.port), link)
    link.take(5)
    assert reader.connected
    reader.stop(timeout_s=5)
    assert link_threads() == []
    assert not reader.connected


def test_stopping_a_reader_blocked_in_a_quiet_read_interrupts_it(replay, start_reader):
    server = replay(Knobs(events=IVR.events()[:1]))
    link = Link()
    reader = start_reader(make_config(server.port), link)
    link.take(1)  # then nothing more comes: the reader waits in a read of POLL_MS
    started = time.monotonic()
    reader.stop(timeout_s=5)
    assert time.monotonic() - started < POLL_MS / 1000 / 2  # not waited out
    assert link_threads() == []
    assert [state for state, _ in link.changes] == ["up"]  # a stop is not a lost link


def test_stopping_a_reader_that_waits_to_retry_returns_at_once(refused_port, start_reader):
    reader = start_reader(make_config(refused_port, reconnect_min_s="30",
                                      reconnect_max_s="60"), Link())
    started = time.monotonic()
    reader.stop(timeout_s=5)
    assert time.monotonic() - started < 4
    assert link_threads() == []


def test_a_link_silent_past_the_limit_is_rebuilt_as_if_dropped(replay):
    server = replay()
    link = Link()
    reader = EventReader(make_config(server.port), link.on_event, link.on_link,
                         silence_limit_s=0.3)
    reader.start()
    try:
        changes = link.wait_for_changes(3)
    finally:
        reader.stop()
    assert [state for state, _ in changes[:3]] == ["up", "down", "up"]
    assert changes[1][1] == "no event for 0.3 s (no HEARTBEAT)"
    assert len(server.connections) >= 2


def test_a_watched_call_gets_its_filter_again_after_a_reconnect_until_it_is_unwatched(replay, start_reader):
    server = replay()
    link = Link()
    reader = start_reader(make_config(server.port), link)
    assert link.wait_for_changes(1) == [("up", "")]
    uuid = "0b8a7c1e-1111-4222-8333-444455556666"
    filtered = threading.Semaphore(0)

    reader.watch(uuid, filtered.release)

    assert filtered.acquire(timeout=POLL_MS / 1000 + 10), "the filter was never sent"
    subscription = ["auth ClueCon", *subscription_commands("ivr_app", "icall")]
    assert [c.first_line for c in server.commands(0)] == [*subscription, f"filter Unique-ID {uuid}"]
    server.drop_all()
    assert filtered.acquire(timeout=10), "not told again after the reconnect"
    assert [c.first_line for c in server.commands(1)] == [*subscription, f"filter Unique-ID {uuid}"]
    reader.unwatch(uuid)
    assert wait_until(lambda: server.commands(1)[-1].first_line == f"filter delete Unique-ID {uuid}",
                      POLL_MS / 1000 + 10), [c.first_line for c in server.commands(1)]


def test_only_a_call_uuid_goes_into_a_filter_line():
    reader = EventReader(make_config(1), lambda event: None, lambda *args: None)
    with pytest.raises(ValueError, match="not a call uuid"):
        reader.watch("x\nevent plain ALL")
