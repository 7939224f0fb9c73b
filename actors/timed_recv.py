"""Reading a socket within a time limit at one system call a read.

A Python socket with a timeout pays three system calls for every read: `settimeout`
switches the socket's blocking mode (an ioctl), then `recv` polls and only then reads.
Each is a wake-up of the kernel, and on the virtual machines icall runs on a wake-up
costs tens of microseconds of CPU (`bench.wakeup_bench`): a call reads a dozen events
and as many command replies. Here the socket stays blocking and the kernel itself
keeps the limit (`SO_RCVTIMEO`, `SO_SNDTIMEO`); the read limit is set again only when
the one wanted differs from the one set by more than a tenth, which for a connection
that always waits as long means once.

A read that times out returns None; end of stream returns b""; every other failure
is the `OSError` the socket raised. Not thread-safe, like the sessions that use it;
`interrupt` is the one call another thread may make.
"""

from __future__ import annotations

import socket
import struct

MIN_LIMIT_S = 0.001  # SO_RCVTIMEO 0 would mean "wait for ever"
_TOLERANCE = 0.1  # a limit within a tenth of the one set is close enough to keep it


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class TimedRecv:
    """Blocking reads and writes of `sock`, each bounded by the kernel."""

    def __init__(self, sock: socket.socket, send_limit_s: float):
        """`send_limit_s`: how long a write may wait, unless `sendall` says otherwise."""
        sock.settimeout(None)  # blocking: no poll before each read, no mode switch
        self._sock = sock
        self._limits = {socket.SO_RCVTIMEO: 0.0, socket.SO_SNDTIMEO: 0.0}
        self._send_limit_s = send_limit_s

    def recv(self, nbytes: int, limit_s: float) -> bytes | None:
        """Up to `nbytes`, waiting at most about `limit_s` (within a tenth); None if
        nothing came, b"" if the peer closed. Raises OSError."""
        self._limit(socket.SO_RCVTIMEO, limit_s)
        try:
            return self._sock.recv(nbytes)
        except BlockingIOError:  # EAGAIN: the limit passed with nothing to read
            return None

    def sendall(self, data: bytes, limit_s: float | None = None) -> None:
        """Write all of `data`, each wait for room bounded by `limit_s` (default: the
        send limit given at the start); raises OSError, a timeout included."""
        self._limit(socket.SO_SNDTIMEO, self._send_limit_s if limit_s is None else limit_s)
        self._sock.sendall(data)

    def _limit(self, option: int, limit_s: float) -> None:
        limit_s = max(limit_s, MIN_LIMIT_S)
        if abs(self._limits[option] - limit_s) > _TOLERANCE * limit_s:
            self._sock.setsockopt(socket.SOL_SOCKET, option, _timeval(limit_s))
            self._limits[option] = limit_s

    def peer_closed(self) -> bool:
        """True when end of stream is waiting (the peer closed); never blocks."""
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # nothing to read: open and quiet
        except OSError:
            return True

    def interrupt(self) -> None:
        """From any thread: end a blocked read at once (it returns b"")."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
