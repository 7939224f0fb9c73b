"""A worker SIGKILLed under load on a real FreeSWITCH: what its callers and records show.

icall in outbound mode with `[service] workers = 2` (`icall run`, SQLite in a temp dir,
the fake CRM and fake CDR endpoint in this process), under a notify socket of ours
with WATCHDOG_USEC (as systemd's Type=notify unit runs it); the callers of
bench.callers place --calls concurrent / --cps new calls per second into the lab
switch's `icall_out` extension for --duration s, every branch of the flow; worker 1 is
SIGKILLed --kill-at s after the first call. Then, once every call ended:

  calls            placed (the controlled legs seen)
  repeated         prompts a caller heard twice in a row (a socket closed under a
                   prompt: at most once a caller)
  wrong ends       calls whose last step (transfer, answered bridge, goodbye) is not
                   where their keys lead
  waited > 5 s     callers who waited longer than 5 s for icall's next command (from
                   the park or the completion of what they were waiting on)
  rows, CDRs       per call: the `calls` rows with an end, the CDRs the endpoint
                   accepted (one each), and the hangup causes recorded
  watchdog         the longest gap between WATCHDOG=1 datagrams from READY=1 on, and
                   from the kill to the end of the run

    .venv/bin/python -m bench.worker_kill [--switch 127.0.0.1:8021[:password]]
        [--calls 60 --cps 6 --duration 40 --kill-at 15 --watchdog-s 10] [--json out.json]

Not a test: it prints what it saw. The switch must be ours meanwhile (nothing else
listening on 127.0.0.1:8084, no other inbound controller).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench._procs import Child
from bench.capacity_bench import write_config
from bench.scenarios import REAL_SWITCH_EXTENSIONS, crm_table, lab_scenarios, same_step
from bench.side_by_side import (
    PYTHON,
    REAL_SWITCH_OUTBOUND,
    VENV_BIN,
    check_switch_is_ours,
    child_env,
    parse_switch,
    wait_for_quiet_switch,
)

PROMPTS = ("playback", "play_and_get_digits")
WORKER_STARTED = re.compile(r"worker (\d) started \(pid (\d+)\)")
WAIT_LIMIT_MS = 5000


class NotifyListener:
    """systemd's notify socket, as far as icall uses it: the datagrams and when they came.
    Read by its own thread."""

    def __init__(self, directory: Path):
        self.address = str(directory / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self.sock.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), message))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self.sock.close()

    def times_of(self, line: str) -> list[float]:
        return [at for at, message in self.received if line in message.split("\n")]


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] with none of `times` in it."""
    marks = [start, *(t for t in times if start < t < end), end]
    return max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=0.0)


def judge_call(seen: dict, expected_path: tuple) -> dict:
    """Repeats of a prompt in a row, and whether the call ended where its keys lead."""
    path = [tuple(step) for step in seen["path"]]
    repeats = sum(1 for a, b in zip(path, path[1:], strict=False) if a == b and a[0] in PROMPTS)
    return {"repeats": repeats,
            "wrong_end": not path or not same_step(path[-1], expected_path[-1]),
            "waited_long": seen["max_wait_ms"] > WAIT_LIMIT_MS}


def run(args: argparse.Namespace) -> dict:
    from fakeswitch.fake_cdr import FakeCdrSink
    from fakeswitch.fake_crm import FakeCrm
    from storage.db import open_database
    from storage.models import Call

    child_env()
    wait_for_quiet_switch(args.switch, REAL_SWITCH_OUTBOUND, args.wait_quiet_s)
    check_switch_is_ours(args.switch, REAL_SWITCH_OUTBOUND)
    workdir = Path(tempfile.mkdtemp(prefix="icall-worker-kill-"))
    notify = NotifyListener(workdir)
    children: list[Child] = []
    try:
        with FakeCrm(crm_table(REAL_SWITCH_EXTENSIONS)) as crm, FakeCdrSink() as cdr:
            config = write_config(workdir, args.switch.port, crm.url, cdr.url, 0, [
                f"freeswitch.host={args.switch.host}", f"freeswitch.password={args.switch.password}",
                "service.workers=2", f"outbound.listen={REAL_SWITCH_OUTBOUND}", "logging.level=info",
                "metrics.listen=", "crm.cache_ttl_s=0", "cdr.retry_min_s=0.2", *args.set])
            icall_bin = str(VENV_BIN / "icall")
            subprocess.run([icall_bin, "--config", str(config), "db", "upgrade"], check=True,
                           timeout=60, capture_output=True)
            env = {**os.environ, "NOTIFY_SOCKET": notify.address,
                   "WATCHDOG_USEC": str(int(args.watchdog_s * 1e6))}
            icall = Child("icall", [icall_bin, "--config", str(config), "run"], workdir, env=env)
            children.append(icall)
            deadline = time.monotonic() + 60
            while not notify.times_of("READY=1"):
                if time.monotonic() > deadline or not icall.alive():
                    raise RuntimeError(f"icall never said READY=1: {icall.tail()}")
                time.sleep(0.1)  # polling the listener's list: nothing to await here
            ready_at = notify.times_of("READY=1")[0]
            out = workdir / "callers.json"
            callers = Child("callers", [
                PYTHON, "-m", "bench.callers", "--host", args.switch.host, "--port",
                str(args.switch.port), "--password", args.switch.password, "--dest", "icall_out",
                "--lab", "real", "--hangup-talking-s", "5", "--cps", f"{args.cps:g}", "--calls",
                str(args.calls), "--duration", f"{args.duration:g}", "--drain-s", "120", "--paths",
                "--out", str(out)], workdir)
            children.append(callers)
            started = time.monotonic()
            killed = kill_worker_at(icall, started + args.kill_at)
            callers.proc.wait(args.duration + 240)
            # the last CDRs are posted from the outbox: give them a few seconds
            time.sleep(args.settle_s)
            ended_at = time.monotonic()
            load = json.loads(out.read_text())
            db = open_database(f"sqlite:///{workdir / 'icall.sqlite3'}")
            rows = {r["uuid"]: r for r in Call.select().dicts().execute(db)}
            db.close()
            return report(args, load, rows, cdr.accept_counts(), notify, ready_at, killed, ended_at,
                          icall)
    finally:
        for child in reversed(children):
            child.end(30)
        notify.stop()
        if args.keep:
            print(f"(logs kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def kill_worker_at(icall: Child, at: float) -> tuple[float, int]:
    """SIGKILL worker 1 (its pid from the main process's log) at `at`; (when, pid)."""
    time.sleep(max(0.0, at - time.monotonic()))  # the schedule of the experiment
    pids = {int(m.group(1)): int(m.group(2))
            for m in WORKER_STARTED.finditer(icall.err_path.read_text(errors="replace"))}
    os.kill(pids[1], signal.SIGKILL)
    return time.monotonic(), pids[1]


def report(args, load: dict, rows: dict, cdrs: Counter, notify: NotifyListener, ready_at: float,
           killed: tuple[float, int], ended_at: float, icall: Child) -> dict:
    scenarios = {s.name: s for s in lab_scenarios(REAL_SWITCH_EXTENSIONS)}
    calls = [c for c in load["calls"] if c["uuid"]]
    judged = [(c, judge_call(c, scenarios[c["scenario"]].path)) for c in calls]
    watchdog = notify.times_of("WATCHDOG=1")
    log = icall.err_path.read_text(errors="replace")
    result = {
        "calls": len(calls), "placed": load["placed"], "unfinished": load["unfinished"],
        "repeated_prompts": sum(j["repeats"] for _, j in judged),
        "callers_repeated_more_than_once": sum(1 for _, j in judged if j["repeats"] > 1),
        "wrong_ends": [{"uuid": c["uuid"], "scenario": c["scenario"], "path": c["path"][-3:]}
                       for c, j in judged if j["wrong_end"]],
        "waited_over_5_s": [{"uuid": c["uuid"], "scenario": c["scenario"], "max_wait_ms": c["max_wait_ms"]}
                            for c, j in judged if j["waited_long"]],
        "rows_per_call": Counter(1 if c["uuid"] in rows else 0 for c in calls),
        "rows_without_end": [c["uuid"] for c in calls
                             if c["uuid"] in rows and rows[c["uuid"]]["hangup_cause"] is None],
        "cdrs_per_call": Counter(cdrs.get(c["uuid"], 0) for c in calls),
        "causes_recorded": Counter(str(rows[c["uuid"]]["hangup_cause"]) for c in calls if c["uuid"] in rows),
        "causes_on_the_switch": Counter(c["hangup_cause"] for c in calls),
        "watchdog_datagrams": len(watchdog),
        "watchdog_max_gap_s": longest_gap(watchdog, ready_at, ended_at),
        "watchdog_max_gap_after_kill_s": longest_gap(watchdog, killed[0], ended_at),
        "worker_restarted": "starting it again" in log,
        "killed_pid": killed[1], "kill_at_s": args.kill_at,
    }
    print(f"\nworker 1 (pid {killed[1]}) SIGKILLed {args.kill_at:g} s in; {args.calls} concurrent / "
          f"{args.cps:g} per s for {args.duration:g} s; WATCHDOG_USEC {args.watchdog_s:g} s")
    for key in ("calls", "unfinished", "repeated_prompts", "callers_repeated_more_than_once"):
        print(f"  {key.replace('_', ' ')}: {result[key]}")
    print(f"  wrong ends: {len(result['wrong_ends'])} {result['wrong_ends'][:5]}")
    print(f"  callers waiting > 5 s for a command: {len(result['waited_over_5_s'])} "
          f"{result['waited_over_5_s'][:5]}")
    print(f"  rows per call: {dict(result['rows_per_call'])}, rows without an end: "
          f"{len(result['rows_without_end'])}")
    print(f"  CDRs per call: {dict(result['cdrs_per_call'])}")
    print(f"  causes recorded: {dict(result['causes_recorded'])}; on the switch: "
          f"{dict(result['causes_on_the_switch'])}")
    print(f"  watchdog: {len(watchdog)} WATCHDOG=1, longest gap {result['watchdog_max_gap_s']:.1f} s "
          f"(after the kill {result['watchdog_max_gap_after_kill_s']:.1f} s); worker restarted: "
          f"{result['worker_restarted']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switch", type=parse_switch, default=parse_switch("127.0.0.1:8021"),
                        metavar="HOST:PORT[:PASSWORD]")
    parser.add_argument("--calls", type=int, default=60, help="most calls up at once")
    parser.add_argument("--cps", type=float, default=6.0, help="new calls per second")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of offering")
    parser.add_argument("--kill-at", type=float, default=15.0, help="SIGKILL worker 1 this long in")
    parser.add_argument("--watchdog-s", type=float, default=10.0, help="WATCHDOG_USEC, in s")
    parser.add_argument("--settle-s", type=float, default=5.0,
                        help="after the last call, time for the last CDRs to be posted")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--wait-quiet-s", type=float, default=0.0,
                        help="a shared switch: first wait at most this long for a quiet moment")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
