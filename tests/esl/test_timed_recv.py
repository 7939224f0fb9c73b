"""TimedRecv: blocking reads bounded by the kernel, on a real socket pair."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from actors.timed_recv import TimedRecv


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_read_with_nothing_to_read_returns_none_after_about_its_limit(pair):
    ours, _ = pair
    reader = TimedRecv(ours, send_limit_s=1.0)
    started = time.monotonic()
    assert reader.recv(100, 0.05) is None
    waited = time.monotonic() - started
    assert 0.04 <= waited < 1.0
    assert ours.gettimeout() is None  # the socket stays blocking: no poll before each read


def test_data_and_end_of_stream_are_told_apart(pair):
    ours, theirs = pair
    reader = TimedRecv(ours, send_limit_s=1.0)
    theirs.sendall(b"abc")
    assert reader.recv(100, 1.0) == b"abc"
    theirs.shutdown(socket.SHUT_WR)
    assert reader.recv(100, 1.0) == b""
    assert reader.peer_closed()


def test_peer_closed_never_blocks_nor_consumes(pair):
    ours, theirs = pair
    reader = TimedRecv(ours, send_limit_s=1.0)
    assert not reader.peer_closed()  # open and quiet, answered at once
    theirs.sendall(b"x")
    assert not reader.peer_closed()
    assert reader.recv(10, 1.0) == b"x"  # the peek left the byte


def test_the_limit_is_set_again_only_when_it_changes_by_more_than_a_tenth(pair, monkeypatch):
    ours, _ = pair
    reader = TimedRecv(ours, send_limit_s=1.0)
    settings = []
    original = ours.setsockopt

    class Spy:  # socket.setsockopt cannot be patched on the instance: wrap the socket
        def __getattr__(self, name):
            return getattr(ours, name)

        def setsockopt(self, *args):
            settings.append(args[1])
            return original(*args)

    reader._sock = Spy()
    assert reader.recv(10, 0.02) is None
    assert reader.recv(10, 0.0199) is None  # within a tenth: kept
    assert reader.recv(10, 0.04) is None  # doubled: set again
    assert settings == [socket.SO_RCVTIMEO, socket.SO_RCVTIMEO]


def test_interrupt_from_another_thread_ends_a_blocked_read_at_once(pair):
    ours, _ = pair
    reader = TimedRecv(ours, send_limit_s=1.0)
    results = []
    thread = threading.Thread(target=lambda: results.append(reader.recv(100, 30.0)))
    thread.start()
    thread.join(0.05)
    assert thread.is_alive() and results == []  # blocked in the read
    reader.interrupt()
    thread.join(5.0)
    assert results == [b""]


@pytest.mark.parametrize(("send_limit_s", "limit_s"), [(0.1, None), (60.0, 0.1)],
                         ids=["the session's send limit", "the write's own limit, not the session's"])
def test_a_write_the_peer_never_reads_fails_within_its_limit(pair, send_limit_s, limit_s):
    ours, _ = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader = TimedRecv(ours, send_limit_s=send_limit_s)
    started = time.monotonic()
    with pytest.raises(OSError):
        reader.sendall(b"x" * 10_000_000, limit_s)
    assert time.monotonic() - started < 5.0
