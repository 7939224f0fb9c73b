"""What a message between two threads costs in CPU, on one core and across two.

Two threads pass a message back and forth through queues (`queue.Queue`, as pykka's
inbox, and `queue.SimpleQueue`), first both pinned to one CPU, then pinned to two
different CPUs. Prints the CPU (user + system, the whole process) per round trip.
Why icall runs on one CPU by default (service.affinity). A few numbers, not a test.

    .venv/bin/python -m bench.handoff_bench [--round-trips 20000]
"""

from __future__ import annotations

import argparse
import os
import queue
import threading


def round_trip_cpu_us(make_queue, cpus: tuple[int, int], round_trips: int) -> float:
    there, back = make_queue(), make_queue()

    def echo() -> None:
        os.sched_setaffinity(0, {cpus[1]})
        while (message := there.get()) is not None:
            back.put(message)

    os.sched_setaffinity(0, {cpus[0]})
    thread = threading.Thread(target=echo, name="echo")
    thread.start()
    before = os.times()
    for n in range(round_trips):
        there.put(n)
        back.get()
    after = os.times()
    there.put(None)
    thread.join()
    used_s = (after.user - before.user) + (after.system - before.system)
    return 1e6 * used_s / round_trips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=20000)
    args = parser.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print("this process may use one CPU only: nothing to compare")
        return 0
    one, other = allowed[-1], allowed[-2]
    print(f"CPU per round trip (a message there and back), {args.round_trips} round trips:")
    for name, make_queue in (("queue.Queue", queue.Queue), ("queue.SimpleQueue", queue.SimpleQueue)):
        same = round_trip_cpu_us(make_queue, (one, one), args.round_trips)
        across = round_trip_cpu_us(make_queue, (one, other), args.round_trips)
        print(f"  {name:18s} one CPU {same:6.1f} us   two CPUs {across:6.1f} us   ({across / same:.1f}x)")
    os.sched_setaffinity(0, set(allowed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
