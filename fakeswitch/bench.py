"""Scale benchmark: ``python -m fakeswitch.bench [--rate 100] [--hold-s 30] [--run-s 40]``.

Places loopback ``fsm`` calls at ``--rate`` per second, each hanging up ``--hold-s``
seconds after answer (so about rate x hold concurrent calls), while a subscriber reads
``event plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE`` over a real
socket. Prints calls/s, events/s (fired, and delivered to the subscriber), the peak of
concurrent calls and CPU: the stand-in's event-loop thread, and the whole process
(resource.getrusage: the loop thread plus this script's call-placing and subscriber
threads, so an upper bound for the stand-in).
"""

from __future__ import annotations

import argparse
import resource
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
    before = sw.stats()
    process0 = process_cpu_s()
    start = time.monotonic()
    placed = 0
    peak = 0.0
    while (elapsed := time.monotonic() - start) < args.run_s:
        due = int(elapsed * args.rate) + 1
        while placed < due:
            sw.place_call(caller_id=str(5550000 + placed),
                          variables={"fake_hangup_after_s": str(args.hold_s)})
            placed += 1
        if placed % 200 == 0:
            peak = max(peak, sw.stats()["live_calls"])
        time.sleep(0.005)
    after = sw.stats()
    peak = max(peak, after["live_calls"])
    wall = time.monotonic() - start
    cpu = after["loop_cpu_s"] - before["loop_cpu_s"]
    process_cpu = process_cpu_s() - process0
    fired = after["events_fired"] - before["events_fired"]
    stop.set()
    reader.join(2)
    sw.stop()
    print(f"calls placed      {placed} in {wall:.1f} s = {placed / wall:.1f} calls/s")
    print(f"peak concurrent   {peak}")
    print(f"events fired      {fired / wall:.0f} /s; delivered to subscriber "
          f"{counts['events'] / wall:.0f} /s ({counts['bytes'] / wall / 1e6:.1f} MB/s)")
    print(f"stand-in CPU      {cpu:.1f} s / {wall:.1f} s wall = {100 * cpu / wall:.0f} % of one core"
          " (event-loop thread)")
    print(f"process CPU       {process_cpu:.1f} s / {wall:.1f} s wall = "
          f"{100 * process_cpu / wall:.0f} % of one core (stand-in + bench client threads)")


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
