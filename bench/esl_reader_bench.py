"""Events per second the EventReader sustains on replayed real FreeSWITCH traffic.

Serves the event frames of captures/inbound_plain_ivr (85 real events) over loopback
from the tests' replay server, repeated `--rounds` times, through a real
EventReader (frames parsed in Python, headers decoded when asked for: here the three
a routing decision reads), and prints the reader thread's CPU per event. (The replay
server writes every event at once, so wall-clock rates would only measure how fast
a full buffer empties.)

    .venv/bin/python -m bench.esl_reader_bench [--rounds 200]     (from the repository root)
"""

from __future__ import annotations

import argparse
import threading
import time

from actors.esl_reader import EventReader
from tests.esl.conftest import make_config
from tests.esl.replay import Capture, Knobs, ReplayServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    frames = Capture("inbound_plain_ivr").events() * args.rounds
    server = ReplayServer(Knobs(events=frames))
    done = threading.Event()
    count = 0
    first_at = last_at = 0.0

    def on_event(event) -> None:
        nonlocal count, first_at, last_at
        event.uuid, event.name, event.get("variable_ivr_app")  # what routing reads
        last_at = time.thread_time()  # the reader thread's CPU
        if count == 0:
            first_at = last_at
        count += 1
        if count == len(frames):
            done.set()

    reader = EventReader(make_config(server.port), on_event, lambda *a: None)
    reader.start()
    try:
        if not done.wait(timeout=300):
            raise SystemExit(f"only {count} of {len(frames)} events arrived")
    finally:
        reader.stop()
        server.stop()
    cpu_s = last_at - first_at
    size = sum(len(f) for f in frames)
    print(f"{count} events ({size / 1e6:.1f} MB): reader thread {cpu_s / count * 1e6:.1f} µs CPU "
          f"per event, {count / cpu_s:,.0f} events per CPU second")


if __name__ == "__main__":
    main()
