"""`[service] workers = N` (N > 1): one main process supervising N worker processes,
all under the one systemd unit.

Why processes: one Python process runs on one core (the GIL). Each worker is a whole
icall (its own actors, CRM cache and breaker, DbWriter) sharing the database (SQLite in
WAL mode, or a server) and accepting on the same `[outbound] listen` port with
SO_REUSEPORT, so the kernel spreads the switch's per-call connections across them.
Inbound mode runs in worker 0 only: its event connection, the adoption of parked calls
and the checkpoints all assume one controller per switch, and partitioning by
`filter Unique-ID /regex/` would split the adoption after a restart too; outbound mode
is the one that scales across cores.

Why one unit and not a template (icall@1, icall@2): systemd then still sees one
service to start, stop and watch; the main process restarts a dead worker at once
(its callers went on in the dialplan after `socket`, and a second `socket` brings them
back to a live worker), sends READY=1 once every worker is up and feeds the watchdog
only while every worker answers healthy within a few seconds.

The main process talks to each worker over a socketpair (`--control-fd`): the worker
writes `ready` once started and answers each `ping` with `ok <why>` or `sick <why>`; a
worker whose main process is gone (EOF) stops itself, so no worker outlives the unit.

Threads: everything here runs in the main process's main thread, except the health
check, which the systemd Watchdog thread calls (`all_healthy`, under a lock).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ivr.config import Config

logger = logging.getLogger("icall")

_RESTART_AFTER_S = 1.0  # a worker that died is started again after this long
_PING_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 20.0
# Variables only the main process may use: systemd accepts notifications from it alone
# (NotifyAccess=main), and a worker must not feed the watchdog on its behalf.
_MAIN_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Worker:
    """One worker process and the main process's end of its control socket."""

    def __init__(self, index: int, config_path: str):
        self.index = index
        self._config_path = config_path
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.ready = False
        self.started_at = 0.0
        self._buffer = b""

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if k not in _MAIN_ONLY}
        argv = [sys.executable, "-m", "service.cli", "--config", self._config_path, "run",
                "--worker", str(self.index), "--control-fd", str(theirs.fileno())]
        self.process = subprocess.Popen(argv, env=env, pass_fds=(theirs.fileno(),),
                                        stdin=subprocess.DEVNULL)
        theirs.close()
        self.control, self.ready, self.started_at, self._buffer = ours, False, time.monotonic(), b""
        logger.info("worker %d started (pid %d)", self.index, self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def read_ready(self) -> None:
        """Non-blocking: notice the worker's `ready` line."""
        if self.ready or self.control is None:
            return
        self.control.setblocking(False)
        try:
            self._buffer += self.control.recv(4096)
        except (BlockingIOError, OSError):
            pass
        if b"ready\n" in self._buffer:
            self.ready = True
            logger.info("worker %d ready", self.index)

    def ping(self) -> tuple[bool, str]:
        if not self.ready or self.control is None:
            return False, f"worker {self.index} not ready"
        try:
            self._drain()  # a late answer to an earlier ping must not stand for this one
            self.control.settimeout(_PING_TIMEOUT_S)
            self.control.sendall(b"ping\n")
            answer = self.control.recv(4096).decode("utf-8", "replace").strip()
        except OSError as exc:
            return False, f"worker {self.index} does not answer ({exc})"
        status, _, why = answer.partition(" ")
        return status == "ok", f"worker {self.index}: {why or answer or 'closed'}"

    def _drain(self) -> None:
        assert self.control is not None
        self.control.setblocking(False)
        try:
            while self.control.recv(4096):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("worker %d did not stop within %.0f s: killed", self.index, timeout_s)
            self.process.kill()
            self.process.wait(5)
        if self.control is not None:
            self.control.close()


class WorkerPool:
    """The main process's view of its workers (main thread, but `all_healthy`)."""

    def __init__(self, config: Config, count: int):
        self._workers = [Worker(i, config.source) for i in range(count)]
        self._lock = threading.Lock()  # pings from the watchdog vs restarts here
        self.restarts = 0

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def all_ready(self) -> bool:
        with self._lock:
            for worker in self._workers:
                worker.read_ready()
            return all(w.ready for w in self._workers)

    def all_healthy(self) -> tuple[bool, str]:
        """Every worker answers `ok` (the Watchdog thread calls this)."""
        with self._lock:
            answers = [w.ping() for w in self._workers]
        healthy = all(ok for ok, _ in answers)
        return healthy, "; ".join(why for ok, why in answers if healthy or not ok)

    def restart_dead(self, now: float) -> None:
        """A worker that exited is logged and started again."""
        with self._lock:
            for worker in self._workers:
                status = worker.exited()
                if status is None or now - worker.started_at < _RESTART_AFTER_S:
                    continue
                logger.error("worker %d (pid %s) exited with status %s: starting it again",
                             worker.index, worker.process.pid if worker.process else "?", status)
                if worker.control is not None:
                    worker.control.close()
                self.restarts += 1
                worker.start()

    def stop(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.stop()
            for worker in self._workers:
                worker.wait(_STOP_TIMEOUT_S)


def serve_control(fd: int, health: Callable[[], tuple[bool, str]], stop: threading.Event) -> socket.socket:
    """In a worker: answer the main process's pings from a daemon thread; set `stop`
    when the main process is gone. Returns the socket (the caller writes `ready`)."""
    control = socket.socket(fileno=fd)

    def run() -> None:
        while True:
            try:
                data = control.recv(4096)
            except OSError:
                data = b""
            if not data:
                logger.error("the main process is gone: stopping")
                stop.set()
                return
            for _ in range(data.count(b"ping\n")):
                ok, why = health()
                try:
                    control.sendall(f"{'ok' if ok else 'sick'} {why}\n".encode())
                except OSError:
                    pass

    threading.Thread(target=run, name="worker-control", daemon=True).start()
    return control
