"""Talking to systemd: readiness notifications and the watchdog.

`notify` implements the sd_notify protocol: one datagram of `KEY=value` lines sent to
the unix socket named by $NOTIFY_SOCKET (a leading '@' names an abstract socket). When
the variable is unset (not under systemd, or Type= is not notify) it does nothing.

`Watchdog` feeds systemd's watchdog (WatchdogSec= in the unit, seen here as
$WATCHDOG_USEC) from its own thread, but only while a health check says the service is
well. A stuck supervisor therefore stops the feeding and systemd restarts the service,
which is the point: a process that is alive but no longer routes calls is worse than
one that restarts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; True if a datagram went out.

    Runs in the caller's thread; never raises: a service must not die because its
    supervisor's socket is gone, so a send failure is logged and reported as False.
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte instead of '@'.
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        logger.warning("NOTIFY_SOCKET %r is neither a path nor an abstract name; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        logger.warning("cannot notify systemd (%s): %s", state.split("\n")[0], exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd asked for, or None when we are not watched.

    $WATCHDOG_PID, when present, names the process systemd watches; a child that
    inherited the variables must not feed on the parent's behalf.
    """
    raw_usec = environ.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not a number; watchdog not fed", raw_usec)
        return None
    if usec <= 0:
        return None
    # Feeding at half the timeout is systemd's own advice (sd_watchdog_enabled(3)).
    return usec / 1_000_000 / 2


class Watchdog:
    """Feeds systemd's watchdog while `health()` answers (True, reason).

    `start()` and `stop()` run in the caller's thread; the checks and the feeding run
    in a daemon thread named `watchdog`. `health()` is called from that thread and
    should itself be bounded (Service.health asks the supervisor with a timeout).
    """

    def __init__(self, health: HealthCheck, environ: Mapping[str, str] | None = None):
        self._health = health
        self._environ = dict(os.environ if environ is None else environ)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval_s = watchdog_interval_s(self._environ)

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def start(self) -> None:
        if self.interval_s is None or self._thread is not None:
            return
        logger.info("feeding the systemd watchdog every %.1f s while healthy", self.interval_s)
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop feeding; returns once the thread has ended (or after timeout_s)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("watchdog thread did not end within %.1f s (health check stuck?)", timeout_s)
            self._thread = None

    def _run(self) -> None:
        """Runs in the `watchdog` thread: check, feed if healthy, wait half the timeout."""
        assert self.interval_s is not None
        was_healthy = True
        # The first check is immediate: systemd's clock started when we were forked.
        while not self._stopping.is_set():
            healthy, reason = self._check()
            if self._stopping.is_set():
                break
            if healthy:
                notify("WATCHDOG=1", self._environ)
                if not was_healthy:
                    logger.info("healthy again (%s): feeding the watchdog", reason)
            else:
                logger.warning("unhealthy: %s; not feeding the systemd watchdog", reason)
            was_healthy = healthy
            self._stopping.wait(self.interval_s)

    def _check(self) -> tuple[bool, str]:
        try:
            healthy, reason = self._health()
        except Exception:  # thread edge: a failing check counts as unhealthy, never kills us
            logger.exception("health check failed")
            return False, "health check raised"
        return bool(healthy), str(reason)
