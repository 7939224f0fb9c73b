"""`[service] workers = N` (N > 1): one main process supervising N worker processes,
all under the one systemd unit.

Why processes: one Python process runs on one core (the GIL). Each worker is a whole
icall (its own actors, CRM cache and breaker, DbWriter and spool file) sharing the
database (SQLite in WAL mode, or a server) and accepting from one `[outbound] listen`
socket, made by the main process and inherited by every worker (`--listen-fd`): the
switch's per-call connections wait in one queue, and whichever worker is free takes
the next. One queue and not a socket per worker (SO_REUSEPORT): the kernel resets the
connections waiting in a dying worker's own queue, and a caller whose second `socket`
was waiting there went on to the dialplan's fallback whatever their keys. The main
process keeps its copy open while it runs (a restarted worker is handed the same
socket; while no worker accepts, connections wait in the queue) and closes it first
when the unit stops. Inbound mode runs in worker 0 only: its event connection, the adoption of parked
calls and the checkpoints all assume one controller per switch, and partitioning by
`filter Unique-ID /regex/` would split the adoption after a restart too; outbound mode
is the one that scales across cores.

Why one unit and not a template (icall@1, icall@2): systemd then still sees one
service to start, stop and watch. The main process sends READY=1 once every worker is
up, and looks after each worker itself: one that dies is started again (its callers
went on in the dialplan after `socket`, and a second `socket` brings them to a live
worker), after 1 s, then 2, 4 ... up to 30 s while it keeps failing at once; one that
is not ready within `START_DEADLINE_S`, or has not answered `ok` for as long as the
watchdog allows a process (WatchdogSec=, else 30 s), is killed (SIGKILL) and started
again. What systemd's watchdog is left to catch is what the main process cannot mend:
its own loop stuck, or a worker that does not go away when killed. A worker being
restarted therefore does not starve the watchdog, and one worker's trouble never makes
systemd kill every worker's calls.

The main process talks to each worker over a socketpair (`--control-fd`): the worker
writes `ready` once started and answers each `ping` with `ok <why>` or `sick <why>`; a
worker whose main process is gone (EOF) stops itself, so no worker outlives the unit.
A reload (SIGHUP to the main process) is a `reload` line to each ready worker, which
reads the file again itself (service.reload) and answers `reloaded <generation>` or
`failed <errors>`; the main process logs each answer, and a worker that does not
answer within `RELOAD_ANSWER_S`.

Threads: everything here runs in the main process's main thread (`tick` every 0.2 s),
except `unit_health`, which the systemd Watchdog thread calls: it reads what the ticks
found, under the pool's lock, and does no I/O.
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
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from actors.outbound_server import listening_socket
from ivr.config import Config
from storage.spool import worker_spool_path

logger = logging.getLogger(__name__)

RESTART_MIN_S = 1.0  # a worker that died is started again after this long ...
RESTART_MAX_S = 30.0  # ... doubling while it keeps dying young, up to this
STABLE_AFTER_S = 60.0  # a worker that ran this long starts the doubling afresh
START_DEADLINE_S = 60.0  # a worker not ready by then is killed and started again
UNANSWERED_DEFAULT_S = 30.0  # without a watchdog: how long a worker may not answer ok
PING_EVERY_S = 1.0
_KILL_WAIT_S = 10.0  # a worker still there this long after SIGKILL: not ours to mend
_LOOP_STALE_S = 5.0  # the main loop not run for this long: the main process is stuck
_STOP_TIMEOUT_S = 20.0
RELOAD_ANSWER_S = 10.0  # a worker that has not answered a reload by then is logged
# Variables only the main process may use: systemd accepts notifications from it alone
# (NotifyAccess=main), and a worker must not feed the watchdog on its behalf.
_MAIN_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def worker_config(config: Config, worker: int) -> Config:
    """Worker `worker`'s configuration: the main process's, but a spool file of its own
    (storage.spool.worker_spool_path), so that its count of spooled writes is true."""
    values: dict[str, dict[str, Any]] = {}
    for section, key, value in config.items():
        values.setdefault(section, {})[key] = value
    values["database"]["spool_path"] = worker_spool_path(config.database.spool_path, worker)
    return Config(values, config.source)


def restart_delay_s(failures: int) -> float:
    """The wait before starting a worker again after its `failures`-th death in a row."""
    return min(RESTART_MAX_S, RESTART_MIN_S * 2 ** max(0, failures - 1))


def failures_in_a_row(previous: int, ran_s: float) -> int:
    """A worker's deaths in a row, this one counted: a worker that ran a while starts
    the count (and so the back-off) afresh."""
    return 1 if ran_s >= STABLE_AFTER_S else previous + 1


def unanswered_limit_s(environ: Mapping[str, str]) -> float:
    """How long a worker may go without answering `ok` before it is killed: the time
    systemd's watchdog gives a whole process (WATCHDOG_USEC), else 30 s."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        usec = 0
    return usec / 1_000_000 if usec > 0 else UNANSWERED_DEFAULT_S


def _clock(seconds_from_now: float) -> str:
    return (datetime.now() + timedelta(seconds=seconds_from_now)).strftime("%H:%M:%S")


class Worker:
    """One worker process, the main process's end of its control socket, and what the
    main process last heard from it. Main thread only."""

    def __init__(self, index: int, config_path: str, listener: socket.socket | None = None):
        self._listener = listener  # the shared outbound socket, when there is one
        self.index = index
        self._config_path = config_path
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.ready = False
        self.started_at = 0.0
        self.last_ok_at = 0.0  # when it last answered `ok` (or became ready)
        self.last_ping_at = 0.0
        self.problem = ""  # its last `sick` answer, or "" while it answers ok
        self.killed_at: float | None = None
        self.restart_at: float | None = None  # dead, to be started again then
        self.failures = 0  # deaths in a row, each after a short run
        self.reload_asked_at: float | None = None  # a `reload` sent, not answered yet
        self._buffer = b""

    @property
    def pid(self) -> int | str:
        return self.process.pid if self.process is not None else "?"

    def start(self, now: float) -> None:
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if k not in _MAIN_ONLY}
        argv = [sys.executable, "-m", "service.cli", "--config", self._config_path, "run",
                "--worker", str(self.index), "--control-fd", str(theirs.fileno())]
        passed = [theirs.fileno()]
        if self._listener is not None:
            argv += ["--listen-fd", str(self._listener.fileno())]
            passed.append(self._listener.fileno())
        self.process = subprocess.Popen(argv, env=env, pass_fds=passed, stdin=subprocess.DEVNULL)
        theirs.close()
        ours.setblocking(False)
        self.control, self._buffer = ours, b""
        self.ready, self.problem, self.killed_at, self.restart_at = False, "", None, None
        self.reload_asked_at = None
        self.started_at = self.last_ok_at = self.last_ping_at = now
        logger.info("worker %d started (pid %d)", self.index, self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def read_control(self, now: float) -> None:
        """Take in every line the worker wrote: `ready`, `ok <why>`, `sick <why>`,
        `reloaded <generation>`, `failed <errors>`."""
        if self.control is None:
            return
        try:
            while data := self.control.recv(65536):
                self._buffer += data
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return  # the worker is going: its exit is noticed by the pool
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            status, _, why = raw.decode("utf-8", "replace").strip().partition(" ")
            if status == "ready":
                self.ready, self.last_ok_at = True, now
                logger.info("worker %d ready", self.index)
            elif status == "ok":
                if self.problem:
                    logger.info("worker %d healthy again (%s)", self.index, why)
                self.last_ok_at, self.problem = now, ""
            elif status == "sick":
                if why != self.problem:
                    logger.warning("worker %d unhealthy: %s", self.index, why)
                self.problem = why or "sick"
            elif status == "reloaded":
                self.reload_asked_at = None
                logger.info("worker %d reloaded the configuration: generation %s in force", self.index, why)
            elif status == "failed":
                self.reload_asked_at = None
                logger.error("worker %d could not reload the configuration (it keeps its settings): %s",
                             self.index, why)

    def ask_reload(self, now: float) -> None:
        if not self.ready or self.control is None:
            logger.info("worker %d is not running yet: it reads the file as it starts", self.index)
            return
        try:
            self.control.send(b"reload\n")
        except OSError as exc:
            logger.error("worker %d: the reload could not be passed on (%s)", self.index, exc)
            return
        self.reload_asked_at = now

    def reload_overdue(self, now: float) -> None:
        if self.reload_asked_at is not None and now - self.reload_asked_at > RELOAD_ANSWER_S:
            logger.error("worker %d has not answered the reload within %.0f s", self.index, RELOAD_ANSWER_S)
            self.reload_asked_at = None

    def ping(self, now: float) -> None:
        self.last_ping_at = now
        if self.control is None:
            return
        try:
            self.control.send(b"ping\n")
        except OSError:
            pass  # a full buffer (a worker not reading) shows as no answer

    def kill(self, now: float, why: str) -> None:
        logger.error("worker %d (pid %s) %s: killing it (SIGKILL) to start it again",
                     self.index, self.pid, why)
        if self.process is not None:
            self.process.kill()
        self.killed_at = now

    def forget_process(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        self.ready = False

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
        self.forget_process()


class WorkerPool:
    """The main process's view of its workers: `tick` in the main thread, `unit_health`
    from the Watchdog thread."""

    def __init__(self, config: Config, count: int, environ: Mapping[str, str] | None = None):
        """Makes the shared outbound socket when `[outbound] listen` is set (OSError
        when its port is taken: the unit cannot serve outbound calls at all)."""
        self._listener = (listening_socket(config.outbound.listen)
                          if config.outbound.listen else None)
        self._workers = [Worker(i, config.source, self._listener) for i in range(count)]
        self._lock = threading.Lock()  # the watchdog's look vs the ticks
        self.unanswered_limit_s = unanswered_limit_s(os.environ if environ is None else environ)
        self._last_tick = time.monotonic()
        self.restarts = 0

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    def start(self) -> None:
        now = time.monotonic()
        with self._lock:
            for worker in self._workers:
                worker.start(now)
            self._last_tick = now

    def all_ready(self) -> bool:
        with self._lock:
            return all(w.ready for w in self._workers)

    def ready_count(self) -> int:
        with self._lock:
            return sum(w.ready for w in self._workers)

    def tick(self, now: float) -> None:
        """Read what each worker said, restart the dead, kill the stuck, ping the rest."""
        with self._lock:
            for worker in self._workers:
                self._look_after(worker, now)
            self._last_tick = now

    def reload(self) -> None:
        """Pass a reload to every worker; their answers are read by the ticks."""
        now = time.monotonic()
        with self._lock:
            for worker in self._workers:
                worker.ask_reload(now)

    def _look_after(self, worker: Worker, now: float) -> None:
        worker.read_control(now)
        worker.reload_overdue(now)
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                self.restarts += 1
                worker.start(now)
            return
        status = worker.exited()
        if status is not None:
            self._schedule_restart(worker, status, now)
        elif worker.killed_at is not None:
            return  # killed; its exit is awaited
        elif not worker.ready and now - worker.started_at > START_DEADLINE_S:
            worker.kill(now, f"not ready {START_DEADLINE_S:.0f} s after its start")
        elif worker.ready and now - worker.last_ok_at > self.unanswered_limit_s:
            worker.kill(now, f"has not answered ok for {now - worker.last_ok_at:.0f} s "
                             f"({worker.problem or 'no answer'})")
        elif worker.ready and now - worker.last_ping_at >= PING_EVERY_S:
            worker.ping(now)

    def _schedule_restart(self, worker: Worker, status: int, now: float) -> None:
        ran_s = now - worker.started_at
        worker.failures = failures_in_a_row(worker.failures, ran_s)
        delay_s = restart_delay_s(worker.failures)
        worker.forget_process()
        worker.restart_at = now + delay_s
        logger.error("worker %d (pid %s) exited with status %s: starting it again in %.0f s "
                     "(at %s; it ran %.0f s); the main process mends it, so the unit's watchdog "
                     "is still fed", worker.index, worker.pid, status, delay_s, _clock(delay_s), ran_s)

    def unit_health(self, now: float | None = None) -> tuple[bool, str]:
        """What the unit's watchdog feeds on (the Watchdog thread; no I/O): the main
        loop runs, and every worker is healthy or being mended by it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale_s = now - self._last_tick
            if stale_s > _LOOP_STALE_S:
                return False, f"the main process's loop has not run for {stale_s:.0f} s"
            states = [self._state(worker, now) for worker in self._workers]
        stuck = [text for text, mendable in states if not mendable]
        if stuck:
            return False, "; ".join(stuck)
        return True, "; ".join(text for text, _ in states)

    def _state(self, worker: Worker, now: float) -> tuple[str, bool]:
        """One worker's state for `unit_health`, and whether the main process can mend it."""
        name = f"worker {worker.index}"
        if worker.restart_at is not None:
            return f"{name} restarting in {max(0.0, worker.restart_at - now):.0f} s", True
        if worker.killed_at is not None:
            waited_s = now - worker.killed_at
            if waited_s > _KILL_WAIT_S:
                return f"{name} (pid {worker.pid}) still there {waited_s:.0f} s after SIGKILL", False
            return f"{name} killed, exit awaited", True
        if not worker.ready:
            return f"{name} starting", True
        if worker.problem or now - worker.last_ok_at > 2 * PING_EVERY_S + 1:
            return f"{name} not answering ok ({worker.problem or 'no answer'})", True
        return f"{name} ok", True

    def stop(self) -> None:
        with self._lock:
            if self._listener is not None:  # first: no new call into a stopping unit
                self._listener.close()
            for worker in self._workers:
                worker.stop()
            for worker in self._workers:
                worker.wait(_STOP_TIMEOUT_S)


def serve_control(fd: int, health: Callable[[], tuple[bool, str]], stop: threading.Event,
                  reload: Callable[[], str] | None = None) -> socket.socket:
    """In a worker: answer the main process's pings (and reloads: `reload()` returns
    the answer line) from a daemon thread; set `stop` when the main process is gone.
    Returns the socket (the caller writes `ready`)."""
    control = socket.socket(fileno=fd)

    def answer(line: str) -> None:
        try:
            control.sendall(f"{line}\n".encode())
        except OSError:
            pass

    def run() -> None:
        pending = b""
        while True:
            try:
                data = control.recv(4096)
            except OSError:
                data = b""
            if not data:
                logger.error("the main process is gone: stopping")
                stop.set()
                return
            *lines, pending = (pending + data).split(b"\n")
            if b"reload" in lines and reload is not None:
                answer(reload())
            if b"ping" in lines:  # pings that piled up (a stopped worker) get one answer
                ok, why = health()
                answer(f"{'ok' if ok else 'sick'} {why}")

    threading.Thread(target=run, name="worker-control", daemon=True).start()
    return control
