"""Benchmark of the CrmFetcher alone: 200 lookups against a fake CRM that answers in
0 s, 2 s, 5 s, or never, with the default [crm] settings unless overridden.

For each case it prints the time from lookup to answer (p50/p99), the share of
lookups that got their extension, how the others were answered, and the number of
HTTP requests the fake CRM actually received. Lookups arrive at --rate per second
(every caller id distinct, so the cache does not help).

    .venv/bin/python bench/crm_bench.py [--calls 200] [--rate 30] [--cases 0,2,5,never]

Not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from collections import Counter

import pykka

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors.crm.fetcher import CrmFetcher  # noqa: E402
from actors.messages import CrmAnswer, CrmLookup  # noqa: E402
from fakeswitch.fake_crm import FakeCrm, Reply  # noqa: E402
from ivr.config import load_config  # noqa: E402


class Inbox(pykka.ThreadingActor):
    """Plays the calls: records when each answer arrives."""

    def __init__(self, answers: queue.Queue):
        super().__init__()
        self.answers = answers

    def on_receive(self, message: object) -> None:
        self.answers.put((time.monotonic(), message))


def run_case(case: str, calls: int, rate: float, overrides: dict[str, str]) -> dict:
    table = {f"+1555{n:07d}": f"{800 + n % 100}" for n in range(calls)}
    reply = Reply(hang=True) if case == "never" else Reply(delay_s=float(case))
    crm = FakeCrm(table).start()
    crm.default = reply
    environ = {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_CRM_BASE_URL": crm.url}
    environ.update({f"ICALL_CRM_{k.upper()}": v for k, v in overrides.items()})
    config = load_config(None, environ)
    answers: queue.Queue = queue.Queue()
    inbox = Inbox.start(answers)
    fetcher = CrmFetcher.start(config)
    sent_at: dict[str, float] = {}
    pace = threading.Event()
    started = time.monotonic()
    try:
        for n, caller_id in enumerate(table):
            due = started + n / rate if rate > 0 else started
            if due > time.monotonic():
                pace.wait(due - time.monotonic())
            uuid = f"call-{n}"
            sent_at[uuid] = time.monotonic()
            fetcher.tell(CrmLookup(uuid, caller_id, inbox))
        results: list[tuple[float, CrmAnswer]] = []
        deadline = time.monotonic() + config.crm.deadline_s + 30
        while len(results) < calls and time.monotonic() < deadline:
            try:
                results.append(answers.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
        stats = fetcher.proxy().stats().get(timeout=30)
    finally:
        fetcher.stop(block=True, timeout=60)
        inbox.stop(block=True, timeout=10)
        crm.stop()
    waits = sorted(at - sent_at[answer.call_uuid] for at, answer in results)
    return {
        "case": case,
        "answered": len(results),
        "p50_s": statistics.median(waits) if waits else float("nan"),
        "p99_s": waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else float("nan"),
        "max_s": waits[-1] if waits else float("nan"),
        "got_extension": sum(1 for _, a in results if a.extension) / calls,
        "reasons": Counter(a.reason for _, a in results),
        "http_requests": crm.request_count,
        "breaker_opened": stats["breaker_opened"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=30.0, help="lookups per second (0: all at once)")
    parser.add_argument("--cases", default="0,2,5,never")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a [crm] key, e.g. --set deadline_s=3")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x",
                                **{f"ICALL_CRM_{k.upper()}": v for k, v in overrides.items()}})
    crm = config.crm
    print(f"{args.calls} lookups at {args.rate:g}/s; deadline {crm.deadline_s:g} s, read timeout "
          f"{crm.read_timeout_s:g} s, {crm.attempts} attempts, {crm.max_concurrent} at once, "
          f"breaker {crm.breaker_failures} failures / {crm.breaker_cooldown_s:g} s")
    print(f"{'CRM answers in':<15} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'got extn':>9} "
          f"{'HTTP reqs':>9}  answers by reason")
    for case in args.cases.split(","):
        row = run_case(case.strip(), args.calls, args.rate, overrides)
        label = "never" if row["case"] == "never" else f"{row['case']} s"
        reasons = ", ".join(f"{r}: {n}" for r, n in row["reasons"].most_common())
        print(f"{label:<15} {row['p50_s']:>7.3f} {row['p99_s']:>7.3f} {row['max_s']:>7.3f} "
              f"{row['got_extension']:>8.0%} {row['http_requests']:>9}  {reasons}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
