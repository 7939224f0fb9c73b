"""Scale benchmark: ``python -m fakeswitch.bench [--rate 100] [--hold-s 30] [--run-s 40]``.

Places loopback ``fsm`` calls at ``--rate`` per second, each hanging up ``--hold-s``
seconds after answer (so about rate x hold concurrent calls), while a subscriber reads
``event plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE`` over a real
socket. Prints calls/s, events/s (fired, and delivered to the subscriber), the peak of
concurrent calls and the stand-in's CPU (its event-loop thread's CPU time / wall time).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from fakeswitch import FakeSwitch


def subscriber(port: int, stop: threading.Event, counts: dict) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"auth ClueCon\n\nevent plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE "
                 b"CHANNEL_HANGUP_COMPLETE\n\n")
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        counts["bytes"] += len(data)
        counts["events"] += data.count(b"Content-Type: text/event-plain")
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--hold-s", type=float, default=30.0)
    parser.add_argument("--run-s", type=float, default=40.0)
    args = parser.parse_args()
    sw = FakeSwitch(time_scale=1.0).start()
    counts = {"bytes": 0, "events": 0}
    stop = threading.Event()
    reader = threading.Thread(target=subscriber, args=(sw.port, stop, counts), daemon=True)
    reader.start()
    cpu0 = sw._call(time.thread_time)
    fired0 = sw.switch.events_fired
    start = time.monotonic()
    placed = peak = 0
    while (elapsed := time.monotonic() - start) < args.run_s:
        due = int(elapsed * args.rate) + 1
        while placed < due:
            sw.place_call(caller_id=str(5550000 + placed),
                          variables={"fake_hangup_after_s": str(args.hold_s)})
            placed += 1
        if placed % 200 == 0:
            peak = max(peak, len(sw.live_calls()))
        time.sleep(0.005)
    peak = max(peak, len(sw.live_calls()))
    wall = time.monotonic() - start
    cpu = sw._call(time.thread_time) - cpu0
    fired = sw.switch.events_fired - fired0
    stop.set()
    reader.join(2)
    sw.stop()
    print(f"calls placed      {placed} in {wall:.1f} s = {placed / wall:.1f} calls/s")
    print(f"peak concurrent   {peak}")
    print(f"events fired      {fired / wall:.0f} /s; delivered to subscriber "
          f"{counts['events'] / wall:.0f} /s ({counts['bytes'] / wall / 1e6:.1f} MB/s)")
    print(f"stand-in CPU      {cpu:.1f} s / {wall:.1f} s wall = {100 * cpu / wall:.0f} % of one core")


if __name__ == "__main__":
    main()
