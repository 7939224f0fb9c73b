"""Events per second the EventReader sustains on replayed real FreeSWITCH traffic.

Serves the event frames of captures/inbound_plain_ivr (85 real events) over loopback
from the tests' replay server, repeated `--rounds` times, through a real
EventReader (python-ESL, every header copied into an ivr.event.Event), and prints
the rate seen by `on_event`.

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
        last_at = time.perf_counter()
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
    elapsed = last_at - first_at
    size = sum(len(f) for f in frames)
    print(f"{count} events ({size / 1e6:.1f} MB) in {elapsed:.2f} s: "
          f"{count / elapsed:,.0f} events/s, {size / elapsed / 1e6:.1f} MB/s")


if __name__ == "__main__":
    main()
