"""What icall's Prometheus instrumentation costs per call, in CPU time.

Two parts:
1. Unit costs, timed in this process with timeit: each piece of work the
   instrumentation adds on a hot path (the reader's read-time stamp, the call actor's
   Cause, the Commander's write stamp and reaction/takeover observation, a CRM answer's
   outcome and observation, a commit's two clock reads and observations, a CDR's delay),
   each minus the same code without instrumentation where there is a "without".
2. How often each happens per call, counted on real calls: the whole service against the
   FreeSWITCH stand-in, a fake CRM and CDR endpoint (menu 2, a CRM extension, a bridge
   to a user who answers: the busiest path), read back from the service's registry.

The product is the instrumentation's CPU per call. For scale it also prints the CPU
this process used per call (icall, the stand-in and the fakes together), and what one
scrape of /metrics costs (per scrape, not per call).

    .venv/bin/python bench/telemetry_bench.py [--calls 60] [--rate 20] [--time-scale 0.05]

Not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
import timeit
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import generate_latest  # noqa: E402

from actors.crm.fetcher import lookup_outcome  # noqa: E402
from actors.reporting import Cause  # noqa: E402
from fakeswitch import FakeSwitch  # noqa: E402
from fakeswitch.fake_cdr import FakeCdrSink  # noqa: E402
from fakeswitch.fake_crm import FakeCrm  # noqa: E402
from ivr.config import load_config  # noqa: E402
from ivr.event import Event  # noqa: E402
from service.app import Service  # noqa: E402
from service.demo_support import prepare_database  # noqa: E402
from service.telemetry import PrometheusTelemetry  # noqa: E402

OFFICE_HOURS = datetime(2026, 11, 25, 11, 0, tzinfo=ZoneInfo("Europe/Berlin"))
REPEAT = 200_000


def per_call_us(stmt, number: int = REPEAT) -> float:
    """Best of 5 runs of `number` calls, in µs per call."""
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def unit_costs() -> dict[str, float]:
    """µs of instrumentation per occurrence, by occurrence."""
    telemetry = PrometheusTelemetry()
    monotonic = time.monotonic
    cause = Cause("reaction", monotonic())

    def timed_send() -> None:  # Commander._sendmsg with a cause, as written
        written_at = 0.0

        def send(session: object) -> object:
            nonlocal written_at
            written_at = monotonic()
            return session

        send(None)
        telemetry.command_written(cause, written_at)

    def bare_send() -> None:  # what it was: a lambda
        (lambda session: session)(None)

    def crm_answer() -> None:
        telemetry.crm_answered(lookup_outcome("801", "found"), monotonic() - 1.0)

    def commit() -> None:
        started = monotonic()
        telemetry.db_committed(monotonic() - started, 8)

    created, accepted = datetime(2026, 1, 1), datetime(2026, 1, 1) + timedelta(seconds=0.3)
    return {
        # EslEvent has the field either way; what is added is the clock read.
        "event read (reader stamp)": per_call_us(monotonic),
        "event at a call actor (Cause)": per_call_us(lambda: Cause("reaction", monotonic())),
        "timed command (stamp + observe)": per_call_us(timed_send) - per_call_us(bare_send),
        "CRM answer": per_call_us(crm_answer),
        "DB commit": per_call_us(commit),
        "CDR delivered": per_call_us(lambda: telemetry.cdr_delivered((accepted - created).total_seconds())),
    }


def run_calls(args: argparse.Namespace) -> tuple[dict[str, float], float, float]:
    """Place the calls; return occurrences per call, process CPU s per call, and the
    scrape cost in ms (measured on the loaded registry)."""
    callers = [f"55590{n:05d}" for n in range(args.calls)]
    workdir = Path(tempfile.mkdtemp(prefix="icall-telemetry-bench-"))
    gone: set[str] = set()
    changed = threading.Condition()
    events_read = [0]

    def call_gone(uuid: str) -> None:
        with changed:
            gone.add(uuid)
            changed.notify_all()

    with FakeCrm(dict.fromkeys(callers, "801")) as crm, FakeCdrSink() as cdr:
        switch = FakeSwitch(port=0, password="ClueCon", time_scale=args.time_scale,
                            users={"801": "answer:2"}).start()
        config = load_config(None, {
            "ICALL_FREESWITCH_PORT": str(switch.port), "ICALL_FREESWITCH_PASSWORD": "ClueCon",
            "ICALL_DATABASE_URL": f"sqlite:///{workdir / 'icall.sqlite3'}",
            "ICALL_CRM_BASE_URL": crm.url, "ICALL_CDR_URL": cdr.url,
            "ICALL_IVR_CRM_GRACE_MS": "2000", "ICALL_IVR_HANGUP_LINGER_S": "0.2",
            "ICALL_SCHEDULE_TIMEZONE": "Europe/Berlin"})
        prepare_database(config)
        service = Service(config, clock=lambda uuid: OFFICE_HOURS, on_call_gone=call_gone)
        deliver = service._deliver_event

        def counting_deliver(event: Event) -> None:  # the reader thread only: no lock needed
            events_read[0] += 1
            deliver(event)

        service._deliver_event = counting_deliver  # type: ignore[method-assign]
        uuids: list[str] = []
        try:
            service.start()
            if not service.link_up.wait(30):
                raise RuntimeError("the service never subscribed to the stand-in")
            cpu_before = time.process_time()
            pace = threading.Event()  # never set: a wait that paces
            started = time.monotonic()
            for n, caller in enumerate(callers):
                pace.wait(max(0.0, started + n / args.rate - time.monotonic()))
                uuids.append(switch.place_call(caller_id=caller, variables={"fake_dtmf": "2"}))
            with changed:
                changed.wait_for(lambda: gone.issuperset(uuids), 120)
            cdr.wait_for_accepted(len(uuids), timeout_s=30)
            cpu_s = time.process_time() - cpu_before
            commands = sum(len(switch.call_record(uuid).commands) for uuid in uuids)
            registry = service.telemetry.registry
            scrape_ms = min(timeit.repeat(lambda: generate_latest(registry), number=20, repeat=3)) / 20 * 1e3

            def count(name: str) -> float:
                return sum(s.value for f in registry.collect() for s in f.samples
                           if s.name == name)

            timed = count("icall_reaction_seconds_count") + count("icall_takeover_seconds_count")
            counts = {
                "event read (reader stamp)": events_read[0],
                "event at a call actor (Cause)": count("icall_events_routed_total"),
                "timed command (stamp + observe)": timed,
                "CRM answer": count("icall_crm_lookup_seconds_count"),
                "DB commit": count("icall_db_commit_seconds_count"),
                "CDR delivered": count("icall_cdr_delivery_delay_seconds_count"),
            }
            print(f"calls placed {len(uuids)}, let go {len(gone.intersection(uuids))}; "
                  f"sendmsg commands {commands} ({timed:.0f} timed); CDRs accepted {len(cdr.unique_keys())}")
        finally:
            service.stop()
            switch.stop()
    for path in workdir.glob("*"):
        path.unlink()
    workdir.rmdir()
    calls = max(1, len(uuids))
    return {k: v / calls for k, v in counts.items()}, cpu_s / calls, scrape_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rate", type=float, default=20.0, help="calls placed per second")
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    costs = unit_costs()
    per_call, cpu_s_per_call, scrape_ms = run_calls(args)
    print(f"\n{'occurrence':34} {'µs each':>8} {'per call':>9} {'µs/call':>8}")
    total_us = 0.0
    for name, cost_us in costs.items():
        share = per_call[name] * cost_us
        total_us += share
        print(f"{name:34} {cost_us:8.2f} {per_call[name]:9.2f} {share:8.2f}")
    print(f"{'instrumentation, per call':34} {'':8} {'':9} {total_us:8.1f}")
    print(f"\nfor scale: this process (icall + stand-in + fakes) used {cpu_s_per_call * 1e3:.1f} ms "
          f"CPU per call; instrumentation {total_us / (cpu_s_per_call * 1e6) * 100:.2f} % of it")
    print(f"one /metrics scrape (generate_latest on this registry): {scrape_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
