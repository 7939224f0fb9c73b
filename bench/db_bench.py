"""How many writes per second the DbWriter sustains on each backend, for the mix one
call produces: its row, 5 steps, 1 fifo event, its CDR (+ outbox row) = 8 writes.

    .venv/bin/python bench/db_bench.py [--calls 2000] [--batch-size 200] [--backends sqlite,postgresql,mysql]

All calls' writes are told to one DbWriter at once (as thousands of call actors
would); the clock stops when the last DbAck arrives, i.e. everything is committed.
PostgreSQL and MariaDB are used when they answer on 127.0.0.1 (a scratch database is
created and dropped). The capacity goal is 100 new calls/s = 800 writes/s.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import pykka

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.db_writer import DbWriter  # noqa: E402
from actors.messages import DbAck  # noqa: E402
from storage.db import open_database  # noqa: E402
from storage.migrations import upgrade  # noqa: E402
from tests.storage.conftest import _mysql, _postgres, make_config  # noqa: E402
from tests.storage.helpers import one_call  # noqa: E402

WRITES_PER_CALL = 8
GOAL_CALLS_PER_S = 100


class Counter(pykka.ThreadingActor):
    def __init__(self, expected: int):
        super().__init__()
        self.expected, self.count, self.done = expected, 0, threading.Event()

    def on_receive(self, message) -> None:
        if isinstance(message, DbAck):
            self.count += len(message.seqs)
            if self.count >= self.expected:
                self.done.set()


def run_one(url: str, calls: int, batch_size: int) -> float:
    db = open_database(url)
    with db.connection_context():
        upgrade(db)
    counter = Counter.start(calls * WRITES_PER_CALL)
    done = counter.proxy().done.get(timeout=10)
    writes = [w for n in range(calls) for w in one_call(counter, call_uuid=f"bench-{n}")]
    writer = DbWriter.start(make_config(url, batch_size=batch_size))
    writer.proxy().stats().get(timeout=30)  # connected and idle before the clock starts
    started = time.perf_counter()
    for write in writes:
        writer.tell(write)
    if not done.wait(600):
        raise SystemExit(f"{url}: not all writes acknowledged within 600 s")
    elapsed = time.perf_counter() - started
    writer.stop(timeout=30)
    counter.stop(timeout=10)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    print(f"{'backend':<11} {'calls':>6} {'writes':>7} {'seconds':>8} {'writes/s':>9} {'calls/s':>8}  vs goal")
    for kind in args.backends.split(","):
        drop = None
        try:
            if kind == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp(prefix='icall-bench-')}/bench.sqlite3"
            else:
                url, drop = (_postgres if kind == "postgresql" else _mysql)(f"icall_bench_{secrets.token_hex(4)}")
        except Exception as exc:  # a server that is not running: report and go on
            print(f"{kind:<11} skipped: {exc}")
            continue
        try:
            elapsed = run_one(url, args.calls, args.batch_size)
        finally:
            if drop:
                drop()
        writes = args.calls * WRITES_PER_CALL
        per_s = args.calls / elapsed
        print(f"{kind:<11} {args.calls:>6} {writes:>7} {elapsed:>8.2f} {writes / elapsed:>9.0f} "
              f"{per_s:>8.0f}  x{per_s / GOAL_CALLS_PER_S:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
