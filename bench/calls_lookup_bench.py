"""How fast `icall calls` and `icall call <prefix>` answer on a database of a million calls.

    .venv/bin/python bench/calls_lookup_bench.py [--calls 1000000] [--db /tmp/lookup.sqlite3] [--repeat 5]

Fills an SQLite file (schema by `icall db upgrade`, so every index is the service's)
with `--calls` ended calls over the last 30 days, each with its CDR outbox row (all
delivered but the newest thousand), 4 steps for one call in ten, a queue event and a
handler failure for one in a thousand, 20,000 callers (one of them, 5550000, behind
one call in fifty); then times each command through the real CLI entry (`service.cli.main`,
output discarded), best and worst of `--repeat` runs, plus one whole `icall calls`
process with its interpreter start. An existing file with as many calls is reused.
No ANALYZE: the service never runs one, so the planner works without statistics here too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid as uuids
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.cli import main  # noqa: E402
from storage.db import open_database  # noqa: E402
from storage.migrations import upgrade  # noqa: E402

CHUNK = 20_000
CALLERS = 20_000
FREQUENT_CALLER = "5550000"
PATHS = [
    ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf", "call_sales", "final_loop"],
    ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf", "call_hst", "final_loop"],
    ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf", "call_sales", "call_cc"],
    ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf"],
]


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


def fill(path: Path, calls: int) -> None:
    """`calls` calls, oldest first, as the DbWriter would have left them."""
    db = open_database(f"sqlite:///{path}")
    with db.connection_context():
        upgrade(db)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")  # a bench fill, not a service's writes
    rng = random.Random(23)
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - timedelta(days=30)
    step_s = (now - start).total_seconds() / calls
    for first in range(0, calls, CHUNK):
        call_rows, outbox_rows, step_rows, fifo_rows, failure_rows = [], [], [], [], []
        for n in range(first, min(calls, first + CHUNK)):
            uuid = str(uuids.UUID(int=rng.getrandbits(128), version=4))
            started = start + timedelta(seconds=n * step_s)
            ended = started + timedelta(seconds=rng.randint(5, 300))
            caller = FREQUENT_CALLER if n % 50 == 0 else f"555{rng.randrange(1, CALLERS):05d}"
            path_states = PATHS[n % len(PATHS)]
            call_rows.append((uuid, caller, "", "fsm", "icall", _ts(started), _ts(started), _ts(ended),
                              int((ended - started).total_seconds()), 0, "NORMAL_CLEARING",
                              path_states[-1], None, json.dumps(path_states, separators=(",", ":")), _ts(ended), f"pbx-{n % 3}"))
            delivered = _ts(ended) if n < calls - 1000 else None
            outbox_rows.append((uuid, json.dumps({"uuid": uuid, "caller_id": caller}), _ts(ended),
                                1 if delivered else 0, _ts(ended), delivered, None, f"pbx-{n % 3}"))
            if n % 10 == 0:
                step_rows += [(uuid, seq, "MainMenu", str(seq), _ts(started)) for seq in range(2, 6)]
            if n % 1000 == 0:
                fifo_rows.append((uuid, 6, "push", "fifo_sales", _ts(started), "{}"))
                failure_rows.append((uuid, 7, "call_sales", "RuntimeError: bench", _ts(started)))
        with conn:
            conn.executemany(
                "INSERT INTO calls (uuid, caller_id, caller_name, destination, flow, started_at, answered_at,"
                " ended_at, duration_s, billsec_s, hangup_cause, final_state, crm_extension, path,"
                " updated_at, node) VALUES (" + ",".join("?" * 16) + ")", call_rows)
            conn.executemany(
                "INSERT INTO cdr_outbox (call_uuid, payload, created_at, attempts, next_attempt_at,"
                " delivered_at, last_error, node) VALUES (?,?,?,?,?,?,?,?)", outbox_rows)
            conn.executemany("INSERT INTO call_steps (call_uuid, seq, step, value, at) VALUES (?,?,?,?,?)",
                             step_rows)
            conn.executemany("INSERT INTO fifo_events (call_uuid, seq, action, fifo_name, at, headers)"
                             " VALUES (?,?,?,?,?,?)", fifo_rows)
            conn.executemany("INSERT INTO call_failures (call_uuid, seq, state, error, at)"
                             " VALUES (?,?,?,?,?)", failure_rows)
        print(f"  filled {min(calls, first + CHUNK):>9} calls", end="\r", flush=True)
    conn.close()
    print()


def count_calls(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


def timed(config: Path, argv: list[str], repeat: int) -> tuple[float, float, int]:
    """Best and worst seconds of `repeat` runs of `icall <argv>` in this process, and
    its exit status."""
    times, status = [], 0
    for _ in range(repeat):
        sink = io.StringIO()
        began = time.perf_counter()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            status = main(["--config", str(config), *argv])
        times.append(time.perf_counter() - began)
    return min(times), max(times), status


def main_bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "icall-lookup-bench.sqlite3")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if count_calls(args.db) != args.calls:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.db}{suffix}").unlink(missing_ok=True)
        print(f"filling {args.db} with {args.calls} calls")
        began = time.perf_counter()
        fill(args.db, args.calls)
        print(f"  fill took {time.perf_counter() - began:.0f} s, {args.db.stat().st_size / 1e6:.0f} MB")
    config = args.db.with_suffix(".ini")
    config.write_text(f"[database]\nurl = sqlite:///{args.db}\n[schedule]\ntimezone = UTC\n")
    with contextlib.closing(sqlite3.connect(args.db)) as conn:
        newest = conn.execute("SELECT uuid FROM calls ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        stepped = conn.execute("SELECT call_uuid FROM call_failures LIMIT 1").fetchone()[0]
        some_caller = conn.execute("SELECT caller_id FROM calls WHERE id = 12345").fetchone()[0]
    commands = [
        ["calls"],
        ["calls", "--caller", some_caller],
        ["calls", "--caller", FREQUENT_CALLER],
        ["calls", "--node", "pbx-1"],
        ["calls", "--live"],
        ["calls", "--ended-in", "call_sales"],
        ["calls", "--ended-in", "main_menu_wait_dtmf"],
        ["calls", "--since", "1h", "--limit", "1000"],
        ["calls", "--json", "--limit", "100"],
        ["call", stepped[:8]],
        ["call", newest[:8]],
        ["call", stepped, "--json"],
    ]
    print(f"{args.calls} calls in {args.db}; best / worst of {args.repeat} runs, in this process:")
    for argv in commands:
        best, worst, status = timed(config, argv, args.repeat)
        print(f"  icall {' '.join(argv):<48} {best * 1000:8.1f} / {worst * 1000:8.1f} ms  (exit {status})")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "service.cli", "--config", str(config), "calls"],
                   cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    print(f"  a whole `icall calls` process, interpreter start included: "
          f"{(time.perf_counter() - began) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
