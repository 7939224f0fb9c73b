"""What a thread's wake-up costs in CPU on this machine, and a socket read with it.

icall's threads sleep between a call's events; every event, reply and message wakes
one. On a virtual machine the wake-up itself costs tens of microseconds of CPU, which
is why icall reads its sockets at one system call a read (actors.timed_recv) and keeps
its idle threads from waking often. Each line is the waking thread's own CPU
(`time.thread_time`) per wake-up, averaged over --wakes. The last two lines are the
process's CPU for giving a call actor its thread: a new thread started and ended, or
a waiting one of actors.loop_threads handed the job.

    .venv/bin/python -m bench.wakeup_bench [--wakes 300] [--gap-ms 5]

A few numbers, not a test.
"""

from __future__ import annotations

import argparse
import queue
import socket
import threading
import time

from actors.loop_threads import LoopThreads
from actors.timed_recv import TimedRecv

PAYLOAD = b"x" * 2700  # about one FreeSWITCH event


def per_wake(action, wakes: int) -> float:
    started = time.thread_time()
    for _ in range(wakes):
        action()
    return (time.thread_time() - started) / wakes * 1e6


def paced_reads(read, wakes: int, gap_s: float) -> float:
    """Another thread writes an event every `gap_s`; `read` takes it."""
    ours, theirs = socket.socketpair()

    def write() -> None:
        for _ in range(wakes):
            time.sleep(gap_s)
            theirs.sendall(PAYLOAD)

    writer = threading.Thread(target=write)
    writer.start()
    started, got = time.thread_time(), 0
    while got < wakes * len(PAYLOAD):
        got += len(read(ours))
    cost = (time.thread_time() - started) / wakes * 1e6
    writer.join()
    ours.close()
    theirs.close()
    return cost


def thread_per_job(jobs: int) -> float:
    """Process CPU (µs) to run an empty job on a thread started for it."""
    started = time.process_time()
    for _ in range(jobs):
        thread = threading.Thread(target=lambda: None, daemon=True)
        thread.start()
        thread.join()
    return (time.process_time() - started) / jobs * 1e6


def pooled_job(jobs: int) -> float:
    """Process CPU (µs) to run an empty job on a waiting LoopThreads thread."""
    pool, done = LoopThreads(idle_s=5.0), queue.SimpleQueue()
    pool.run(lambda: done.put(1), "warm-up")
    done.get(timeout=5)
    started = time.process_time()
    for _ in range(jobs):
        pool.run(lambda: done.put(1), "job")
        done.get(timeout=5)
    return (time.process_time() - started) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wakes", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    args = parser.parse_args()
    gap_s = args.gap_ms / 1000

    def python_timeout_read(sock: socket.socket) -> bytes:
        sock.settimeout(1.0)  # as a read with a deadline does before each recv
        return sock.recv(65536)

    readers: dict[int, TimedRecv] = {}

    def timed_read(sock: socket.socket) -> bytes:
        reader = readers.get(sock.fileno())
        if reader is None:
            reader = readers[sock.fileno()] = TimedRecv(sock, send_limit_s=1.0)
        return reader.recv(65536, 1.0) or b""

    print(f"CPU per wake-up, µs (the waking thread's own; a wake every {args.gap_ms:g} ms)")
    print(f"  sleep, then wake                      {per_wake(lambda: time.sleep(gap_s), args.wakes):7.1f}")
    print(f"  read an event, Python socket timeout  {paced_reads(python_timeout_read, args.wakes, gap_s):7.1f}")
    print(f"  read an event, TimedRecv              {paced_reads(timed_read, args.wakes, gap_s):7.1f}")
    print("process CPU per call actor's thread, µs")
    print(f"  a thread started and ended            {thread_per_job(args.wakes):7.1f}")
    print(f"  a waiting pooled thread handed it     {pooled_job(args.wakes):7.1f}")


if __name__ == "__main__":
    main()
