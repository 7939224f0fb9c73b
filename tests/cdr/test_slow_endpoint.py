"""One CDR POST is bounded by `[cdr] timeout_s` as a whole: an endpoint that dribbles
its answer a byte at a time (each byte well within a read timeout) is cut off at the
deadline, and the CDR is retried later as a failure, never counted delivered."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.cdr.conftest import WAIT_S, add_cdrs, outbox, wait_until

BYTE_EVERY_S = 0.3
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"  # ~20 s


class SlowLoris:
    """A loopback HTTP endpoint that answers every request one byte per BYTE_EVERY_S,
    and notes how long each connection was held before the client let go."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/cdr"
        self.held_s: list[float] = []
        self.let_go = threading.Event()
        self._stopping = threading.Event()
        threading.Thread(target=self._accept, name="slow-loris", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        with conn:
            conn.recv(65536)  # the request (small: one CDR)
            for byte in ANSWER:
                conn.settimeout(BYTE_EVERY_S)
                try:  # waits for the next byte's time, or sees the client close
                    if conn.recv(1) == b"":
                        break
                except TimeoutError:
                    pass
                except OSError:
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
        self.held_s.append(time.monotonic() - accepted)
        self.let_go.set()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()


@pytest.fixture
def slow_endpoint() -> Iterator[SlowLoris]:
    server = SlowLoris()
    yield server
    server.stop()


def test_an_endpoint_dribbling_its_answer_is_cut_off_at_timeout_s_and_the_cdr_retried_later(
        db, start_poster, slow_endpoint):
    uuid = add_cdrs(db, 1)[0]
    start_poster(url=slow_endpoint.url, timeout_s=1, retry_min_s=60, retry_max_s=60)
    assert slow_endpoint.let_go.wait(WAIT_S), "the POST was never cut off"
    # The whole answer takes ~20 s; the POST lets go at its deadline (1 s), give or take
    # a loaded machine.
    assert slow_endpoint.held_s[0] < 2.5, slow_endpoint.held_s
    assert wait_until(lambda: outbox(db)[uuid].attempts == 1)
    row = outbox(db)[uuid]
    assert row.delivered_at is None
    assert row.last_error == "no whole answer within [cdr] timeout_s = 1 s"
