"""Several icall nodes for a test: each `icall run` in its own process (so one can be
SIGKILLed), beside its own FreeSWITCH stand-in, all on one database, as an operator
runs them: one icall per switch, a shared database URL, a state directory each.

Threads: everything here runs in the test's thread; the processes are the icalls.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from fakeswitch import FakeSwitch
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def upgrade_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "service.cli", "--config", str(config), "db", "upgrade"]


class IcallNode:
    """One node: its config file, its state directory, its `icall run` process."""

    def __init__(self, workdir: Path, node: str, switch: FakeSwitch, db_url: str, crm_url: str,
                 cdr_url: str, **cdr: str):
        self.node = node
        self.switch = switch
        self.dir = workdir / node
        self.dir.mkdir(parents=True)
        self.metrics_port = _free_port()
        self.config = self.dir / "config.ini"
        cdr_keys = {"url": cdr_url, "timeout_s": "1", "lease_s": "6", "retry_min_s": "0.2",
                    "retry_max_s": "1", "poll_interval_s": "0.5", **cdr}
        self.config.write_text(
            f"[service]\nnode = {node}\n"
            f"[freeswitch]\nport = {switch.port}\npassword = ClueCon\nreconnect_min_s = 0.1\n"
            "reconnect_max_s = 0.5\n"
            f"[database]\nurl = {db_url}\n"
            f"[crm]\nbase_url = {crm_url}\n"
            "[cdr]\n" + "".join(f"{key} = {value}\n" for key, value in cdr_keys.items())
            + "[ivr]\nhangup_linger_s = 0.1\n[schedule]\ntimezone = Europe/Berlin\n"
            f"[logging]\nlevel = warning\n[metrics]\nlisten = 127.0.0.1:{self.metrics_port}\n")
        self.process: subprocess.Popen | None = None
        self.runs = 0

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICALL_")}
        env["STATE_DIRECTORY"] = str(self.dir / "state")  # its spool, as systemd's StateDirectory
        return env

    def start(self, timeout_s: float) -> None:
        """Start `icall run` and wait until it holds both its ESL connections."""
        self.runs += 1
        log = open(self.dir / f"run{self.runs}.log", "wb")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen([sys.executable, "-m", "service.cli", "--config", str(self.config), "run"],
                                        cwd=ROOT, env=self.environ(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        if not wait_until(lambda: self.switch.client_count() >= 2 or self.process.poll() is not None,  # type: ignore[union-attr]
                          timeout_s) or self.process.poll() is not None:
            raise AssertionError(f"{self.node} did not connect to its switch: {self.log_tail()}")

    def kill(self, timeout_s: float) -> None:
        """SIGKILL: no clean-up of any kind, as a crash or the OOM killer."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout_s)
        wait_until(lambda: self.switch.client_count() == 0, timeout_s)

    def stop(self, timeout_s: float) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)
            return None

    def metric(self, name: str) -> float | None:
        """One value from its /metrics (None if it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else None

    def idle(self) -> bool:
        """No call actor left and nothing waiting for the database."""
        return self.metric("icall_calls_tracked") == 0 and self.metric("icall_db_backlog") == 0

    def log_tail(self, lines: int = 15) -> str:
        text = (self.dir / f"run{self.runs}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
