"""Fixtures for the service-level tests: a notify socket the test owns, and a running
`icall` process whose stderr is read line by line in a thread."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ICALL_BIN = ROOT / ".venv" / "bin" / "icall"


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str, sock: socket.socket):
        self.address = address  # as it goes into $NOTIFY_SOCKET
        self.sock = sock

    def receive(self, timeout_s: float) -> str | None:
        """The next datagram, or None when none arrives within timeout_s."""
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(4096).decode("utf-8")
        except TimeoutError:
            return None

    def wait_for(self, line: str, timeout_s: float) -> list[str]:
        """Every datagram up to and including the first carrying `line`; fails on timeout."""
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is None:
                break
            seen.append(message)
            if line in message.split("\n"):
                return seen
        raise AssertionError(f"no {line!r} within {timeout_s} s; got {seen!r}")


class NotifyRecorder:
    """Reads a NotifySocket in a thread, keeping every datagram with its arrival time
    (the watchdog's feeds must not queue up unread, and their gaps are what counts)."""

    def __init__(self, notify: NotifySocket):
        self._notify = notify
        self.received: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-recorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stopping.is_set():
            message = self._notify.receive(0.2)
            if message is not None:
                with self._changed:
                    self.received.append((time.monotonic(), message))
                    self._changed.notify_all()

    def times_of(self, line: str, since: float = 0.0) -> list[float]:
        with self._changed:
            return [t for t, message in self.received if t >= since and line in message.split("\n")]

    def wait_for(self, line: str, timeout_s: float, since: float = 0.0, count: int = 1) -> list[float]:
        """The arrival times of `line` since `since`, once there are `count` of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.times_of(line, since)) >= count, timeout_s):
                raise AssertionError(f"not {count} x {line!r} within {timeout_s} s; got {self.received!r}")
            return self.times_of(line, since)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # A short directory of its own: unix socket paths are limited to 107 bytes and
    # pytest's tmp_path for a test named as a sentence is longer than that.
    directory = tempfile.mkdtemp(prefix="icall-notify-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield NotifySocket(path, sock)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


class RunningIcall:
    """An `icall` subprocess; stderr lines are collected with their arrival time."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path):
        self.argv = argv
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._new_lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="icall-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            item = (time.monotonic(), line.rstrip("\n"))
            self.lines.append(item)
            self._new_lines.put(item)
        self._new_lines.put(None)

    def wait_for_line(self, pattern: str, timeout_s: float = 30.0) -> str:
        """The first new stderr line matching the regex `pattern`; fails on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._new_lines.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                raise AssertionError(f"icall exited ({self.process.poll()}) before logging "
                                     f"{pattern!r}:\n{self.stderr()}")
            if regex.search(item[1]):
                return item[1]
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s:\n{self.stderr()}")

    def matching(self, pattern: str) -> list[tuple[float, str]]:
        regex = re.compile(pattern)
        return [(t, line) for t, line in list(self.lines) if regex.search(line)]

    def stderr(self) -> str:
        return "\n".join(line for _, line in list(self.lines))

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then the exit status; fails if the process outlives timeout_s."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"icall did not exit within {timeout_s} s of SIGTERM:\n"
                                 f"{self.stderr()}") from None
        self._reader.join(10)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port where a connection is refused: bound by us, never listening."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def write_config(path: Path, port: int, **overrides: dict[str, str]) -> Path:
    """A config with FreeSWITCH at 127.0.0.1:<port>, short backoff, quiet CRM/CDR.

    The database url stays empty, so the SQLite file lands in $STATE_DIRECTORY as it
    does under systemd."""
    sections: dict[str, dict[str, str]] = {
        "freeswitch": {"host": "127.0.0.1", "port": str(port), "password": "ClueCon",
                       "connect_timeout_s": "1", "reconnect_min_s": "0.3",
                       "reconnect_max_s": "0.6"},
        "crm": {"enabled": "false"},
    }
    for section, keys in overrides.items():
        sections.setdefault(section, {}).update(keys)
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                   for name, keys in sections.items())
    path.write_text(text, encoding="utf-8")
    return path


def service_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment like systemd's: no ICALL_ variables leak in from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ICALL_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM"))}
    env["STATE_DIRECTORY"] = str(state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def run_icall() -> Iterator:
    """Start `icall` processes; any still running at the end are killed."""
    started: list[RunningIcall] = []

    def start(argv: list[str], env: dict[str, str], cwd: Path) -> RunningIcall:
        process = RunningIcall(argv, env, cwd)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
