"""Database outage benchmark: does icall lose or repeat rows when its database is away
for a long time under load, and does its memory stay flat meanwhile?

Three processes, driven from this one:

  stand-in   python -m fakeswitch (time scale --time-scale: the IVR prompts go by fast)
  fakes      bench/_procs.py fakes: a CRM and a CDR endpoint
  icall      .venv/bin/icall run, its database SQLite (a file in a temp dir) or
             PostgreSQL (--backend postgresql: a fresh database on 127.0.0.1:5432)

Calls (`fake_dtmf=1`: welcome, main menu, 1 = the evening team's queue, a prompt,
hang-up) arrive at --rate a second: --warmup-s with the database up, --outage-s with it
away, --recovery-s after it is back. "Away": PostgreSQL is cut off behind a TCP proxy
in this process (connections dropped, new ones refused); SQLite is locked by a
connection of this process holding its write lock (icall's busy timeout set to 50 ms).
Then it waits (at most --drain-s) for icall to have written everything and counts, by
caller id (one per call), the rows each call has: expected (what the first call, made
before the outage, has), present, duplicated. icall's RSS is sampled every second.

    .venv/bin/python bench/db_outage_bench.py [--outage-s 600] [--rate 20]
        [--backend sqlite|postgresql] [--set database.backlog_max=20000]

Not a test: it asserts nothing and prints numbers. Ctrl-C ends every child process.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._procs import Child, Sampler, free_port  # noqa: E402
from bench.capacity_bench import PYTHON, ROOT, VENV_BIN, read_metrics, wait_for_link, write_config  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


class Outage:
    """The database taken away from icall and given back, from this process."""

    def __init__(self, backend: str, workdir: Path):
        self.backend = backend
        self.holder: sqlite3.Connection | None = None
        self.proxy = None
        if backend == "sqlite":
            self.path = workdir / "icall.sqlite3"
            self.direct_url = f"sqlite:///{self.path}"
            self.icall_url = self.direct_url + "?busy_timeout_ms=50"
        else:
            import psycopg

            from tests.storage.tcp_proxy import TcpProxy

            self.name = f"icall_bench_{os.getpid()}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
            self.direct_url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"
            self.proxy = TcpProxy("127.0.0.1", 5432)
            self.icall_url = f"postgresql://postgres@127.0.0.1:{self.proxy.port}/{self.name}"

    def cut(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        else:
            self.holder = sqlite3.connect(self.path, isolation_level=None)
            self.holder.execute("BEGIN IMMEDIATE")

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self.holder is not None:
            self.holder.execute("COMMIT")
            self.holder.close()
            self.holder = None

    def close(self) -> None:
        self.restore()
        if self.proxy is not None:
            import psycopg

            self.proxy.close()
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def place(commands, caller: str) -> bool:
    reply = commands.bgapi("originate", f"{{origination_caller_id_number={caller},"
                           "fake_dtmf=1}loopback/fsm/default &park")
    text = reply.getHeader("Reply-Text") if reply is not None else None
    return bool(text and text.startswith("+OK"))


def count_rows(url: str, callers: list[str]) -> dict[str, dict[str, int]]:
    """Per table: expected, present and duplicated rows for these callers' calls."""
    from peewee import fn

    from storage.db import open_database
    from storage.models import Call, CallStep, CdrOutbox

    db = open_database(url)
    with db.connection_context():
        uuids = dict(Call.select(Call.caller_id, Call.uuid).where(Call.caller_id.in_(callers)).tuples().execute(db))
        calls_per_caller = dict(Call.select(Call.caller_id, fn.COUNT(Call.id)).where(Call.caller_id.in_(callers))
                                .group_by(Call.caller_id).tuples().execute(db))
        steps = dict(CallStep.select(CallStep.call_uuid, fn.COUNT(CallStep.id)).group_by(CallStep.call_uuid)
                     .tuples().execute(db))
        step_repeats = (CallStep.select(CallStep.call_uuid).group_by(CallStep.call_uuid, CallStep.seq)
                        .having(fn.COUNT(CallStep.id) > 1).count(db))
        cdrs = dict(CdrOutbox.select(CdrOutbox.call_uuid, fn.COUNT(CdrOutbox.id)).group_by(CdrOutbox.call_uuid)
                    .tuples().execute(db))
    per_call_steps = steps.get(uuids.get(callers[0], ""), 0)  # the first call, before the cut
    return {
        "calls": {"expected": len(callers), "present": sum(min(1, calls_per_caller.get(c, 0)) for c in callers),
                  "duplicated": sum(max(0, calls_per_caller.get(c, 0) - 1) for c in callers)},
        "call_steps": {"expected": per_call_steps * len(callers),
                       "present": sum(steps.get(uuids.get(c, ""), 0) for c in callers),
                       "duplicated": step_repeats},
        "cdr_outbox": {"expected": len(callers), "present": sum(min(1, cdrs.get(uuids.get(c, ""), 0)) for c in callers),
                       "duplicated": sum(max(0, cdrs.get(uuids.get(c, ""), 0) - 1) for c in callers)},
    }


def run(args: argparse.Namespace) -> int:
    import ESL

    workdir = Path(tempfile.mkdtemp(prefix="icall-outage-"))
    outage = Outage(args.backend, workdir)
    children: list[Child] = []
    try:
        switch_port, metrics_port = free_port(), free_port()
        switch = Child("stand-in", [PYTHON, "-m", "fakeswitch", "--listen", f"127.0.0.1:{switch_port}",
                                    "--time-scale", str(args.time_scale)], workdir)
        children.append(switch)
        fakes = Child("fakes", [PYTHON, str(ROOT / "bench" / "_procs.py"), "fakes"], workdir)
        children.append(fakes)
        switch.wait_listening(switch_port, 30)
        crm_url = fakes.wait_line("CRM ", 30).split()[1]
        cdr_url = fakes.wait_line("CDR ", 30).split()[1]
        config = write_config(workdir, switch_port, crm_url, cdr_url, metrics_port,
                              [f"database.url={outage.icall_url}", "database.retry_max_s=5", *args.set])
        env_state = {"STATE_DIRECTORY": str(workdir / "state")}
        os.environ.update(env_state)  # the children inherit it: icall's spool goes there
        upgrade = Child("upgrade", [str(VENV_BIN / "icall"), "--config", str(config), "db", "upgrade"], workdir)
        if upgrade.proc.wait(60) != 0:
            raise RuntimeError(f"db upgrade failed: {upgrade.tail()}")
        icall = Child("icall", [str(VENV_BIN / "icall"), "--config", str(config), "run"], workdir)
        children.append(icall)
        wait_for_link(icall, metrics_port, 30)
        sampler = Sampler({"icall": icall.pid}, interval_s=1.0).start()

        commands = ESL.ESLconnection("127.0.0.1", str(switch_port), "ClueCon")
        callers: list[str] = []
        pace = threading.Event()  # never set: paces the calls
        phases = [("warm-up", args.warmup_s), ("outage", args.outage_s), ("recovery", args.recovery_s)]
        marks: dict[str, float] = {}
        started = time.monotonic()
        elapsed_s = 0.0
        for name, length_s in phases:
            marks[name] = time.monotonic()
            if name == "outage":
                outage.cut()
            elif name == "recovery":
                outage.restore()
            print(f"{name}: {length_s:g} s at {args.rate:g} calls/s", flush=True)
            phase_end = elapsed_s + length_s
            next_report = time.monotonic() + 60
            while elapsed_s < phase_end:
                due = started + len(callers) / args.rate
                pace.wait(max(0.0, due - time.monotonic()))
                caller = f"7{len(callers):07d}"
                if place(commands, caller):
                    callers.append(caller)
                elapsed_s = time.monotonic() - started
                if time.monotonic() >= next_report:
                    next_report += 60
                    m = read_metrics(metrics_port)
                    rss = sampler.series["icall"].samples[-1].rss_mb
                    print(f"  {elapsed_s:6.0f} s: {len(callers)} calls, RSS {rss:.0f} MB, backlog "
                          f"{m.get('db_backlog', -1):.0f}, spooled {m.get('db_spooled', -1):.0f}", flush=True)
        commands.disconnect()
        placing_ended = time.monotonic()
        print(f"placed {len(callers)} calls; waiting for icall to write everything", flush=True)
        deadline = time.monotonic() + args.drain_s
        while time.monotonic() < deadline:
            m = read_metrics(metrics_port)
            if m.get("db_backlog") == 0 and m.get("db_spooled") == 0 and m.get("calls_tracked") == 0:
                break
            pace.wait(1.0)
        drained_s = time.monotonic() - placing_ended
        pace.wait(2.0)  # one more RSS sample at rest
        sampler.stop()
        samples = sampler.series["icall"].samples

        def rss_at(moment: float) -> float:
            return min(samples, key=lambda s: abs(s.at - moment)).rss_mb

        metrics = read_metrics(metrics_port)
        rows = count_rows(outage.direct_url, callers)
        spool = workdir / "state" / "icall-spool.sqlite3"
        print(f"\nbackend {args.backend}, outage {args.outage_s:g} s at {args.rate:g} calls/s "
              f"({len(callers)} calls in all), drained {drained_s:.0f} s after the last call")
        print(f"{'table':<12} {'expected':>9} {'present':>9} {'duplicated':>11}")
        for table, numbers in rows.items():
            print(f"{table:<12} {numbers['expected']:>9} {numbers['present']:>9} {numbers['duplicated']:>11}")
        outage_rss = [s.rss_mb for s in samples if marks["outage"] <= s.at <= marks["recovery"]]
        print(f"icall RSS MB: start of outage {rss_at(marks['outage']):.0f}, peak during outage "
              f"{max(outage_rss, default=float('nan')):.0f}, end of outage {rss_at(marks['recovery']):.0f}, "
              f"peak overall {max(s.rss_mb for s in samples):.0f}, at rest after draining {samples[-1].rss_mb:.0f}")
        print(f"writer: spilled {metrics.get('db_spilled_total', 0):.0f}, written from the spool "
              f"{metrics.get('db_drained_total', 0):.0f}, refused {metrics.get('db_refused_total', 0):.0f}, "
              f"rejected {metrics.get('db_rejected_total', 0):.0f}; spool file "
              f"{spool.stat().st_size / 2**20 if spool.exists() else 0:.1f} MB")
        return 0
    finally:
        for child in reversed(children):
            child.end()
        outage.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--outage-s", type=float, default=600.0)
    parser.add_argument("--recovery-s", type=float, default=30.0)
    parser.add_argument("--drain-s", type=float, default=900.0)
    parser.add_argument("--time-scale", type=float, default=0.05, help="the stand-in's time scale")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an icall setting (repeatable)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
