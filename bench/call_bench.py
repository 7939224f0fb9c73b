"""Benchmark of whole calls against a slow CRM: does the CRM ever hold a caller up?

For each CRM behaviour (answers in 0 s, 2 s, 5 s, never) it starts a fresh FreeSWITCH
stand-in, fake CRM, fake CDR endpoint and icall Service (SQLite in a temp dir), places
--calls calls at --rate per second, each pressing 2 (sales) in the main menu, every
caller known to the CRM as extension 801 (a stand-in user that answers), waits for
every call to be let go by the service (on_call_gone), and prints one row:

  answer->menu      CHANNEL_ANSWER -> main menu CHANNEL_EXECUTE (p50/p99); includes
                    the welcome prompt, shortened by the stand-in's --time-scale
  welcome->menu     welcome playback CHANNEL_EXECUTE -> main menu CHANNEL_EXECUTE
  icall reaction    welcome CHANNEL_EXECUTE_COMPLETE -> main menu CHANNEL_EXECUTE: the
                    part that is icall's own (event to the service, decision, sendmsg)
  got extn          share of calls bridged to user/801 (the CRM's answer was used)
  HTTP reqs         requests the fake CRM received

Times are the switch's own Event-Date-Timestamp values, read by a separate inbound ESL
client (python-ESL) subscribed to the stand-in, as a monitoring tool would.
Everything is bounded: a call the service has not let go within --finish-timeout-s
after the last call was placed is counted as unfinished, not waited on.

    .venv/bin/python bench/call_bench.py [--calls 200] [--rate 20] [--time-scale 0.05]
        [--cases 0,2,5,never] [--set ivr.crm_grace_ms=2000]

Not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import ESL

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fakeswitch import FakeSwitch  # noqa: E402
from fakeswitch.fake_cdr import FakeCdrSink  # noqa: E402
from fakeswitch.fake_crm import FakeCrm, Reply  # noqa: E402
from ivr.config import Config, load_config  # noqa: E402
from service.app import Service  # noqa: E402
from service.demo_support import prepare_database  # noqa: E402

TZ = "Europe/Berlin"
OFFICE_HOURS = datetime(2026, 11, 25, 11, 0, tzinfo=ZoneInfo(TZ))  # a Wednesday: main menu
EXTENSION = "801"
USERS = {EXTENSION: "answer:2"}  # answers, talks 2 s of media time, hangs up
CASES = {"0": Reply(), "2": Reply(delay_s=2.0), "5": Reply(delay_s=5.0), "never": Reply(hang=True)}
WATCHED = "CHANNEL_ANSWER CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE"
LINK_UP_TIMEOUT_S = 30


@dataclass
class CallTimes:
    """What the switch did to one controlled leg, in its own clock (seconds)."""

    answered: float | None = None
    welcome_started: float | None = None
    welcome_done: float | None = None
    menu_started: float | None = None
    bridged_to_extension: bool = False
    sales_queue: bool = False


class SwitchWatch:
    """An inbound ESL client folding the stand-in's events into CallTimes per Unique-ID.

    The connection is made, read and closed by its own thread only (python-ESL is not
    safe across threads); `times()` copies under a lock.
    """

    def __init__(self, port: int):
        self.port = port
        self._calls: dict[str, CallTimes] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="switch-watch", daemon=True)

    def start(self) -> SwitchWatch:
        self._thread.start()
        if not self._subscribed.wait(LINK_UP_TIMEOUT_S):
            raise RuntimeError("the watching ESL client could not subscribe")
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def times(self, uuid: str) -> CallTimes:
        with self._lock:
            return CallTimes(**vars(self._calls.get(uuid, CallTimes())))

    def _read(self) -> None:
        """Runs in the switch-watch thread."""
        connection = ESL.ESLconnection("127.0.0.1", str(self.port), "ClueCon")
        if not connection.connected():
            return
        connection.events("plain", WATCHED)
        self._subscribed.set()
        try:
            while not self._stopping.is_set():
                event = connection.recvEventTimed(100)
                if event is not None:
                    self._fold(event)
        finally:
            connection.disconnect()

    def _fold(self, event: ESL.ESLevent) -> None:
        uuid, stamp = event.getHeader("Unique-ID"), event.getHeader("Event-Date-Timestamp")
        if not uuid or not stamp:
            return
        name, at_s = event.getHeader("Event-Name"), int(stamp) / 1e6
        app, data = event.getHeader("Application") or "", event.getHeader("Application-Data") or ""
        with self._lock:
            call = self._calls.setdefault(uuid, CallTimes())
            if name == "CHANNEL_ANSWER" and call.answered is None:
                call.answered = at_s
            elif app == "playback" and data.endswith("1000.wav"):
                if name == "CHANNEL_EXECUTE" and call.welcome_started is None:
                    call.welcome_started = at_s
                elif name == "CHANNEL_EXECUTE_COMPLETE" and call.welcome_done is None:
                    call.welcome_done = at_s
            elif name == "CHANNEL_EXECUTE" and app == "play_and_get_digits" \
                    and "1001.wav" in data and call.menu_started is None:
                call.menu_started = at_s
            elif name == "CHANNEL_EXECUTE" and app == "bridge" and data == f"user/{EXTENSION}":
                call.bridged_to_extension = True
            elif name == "CHANNEL_EXECUTE" and app == "transfer" and data.startswith("fifo_sales "):
                call.sales_queue = True


class WarningTally(logging.Handler):
    """Counts WARNING and worse log records by logger and message shape (any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        shape = record.msg if isinstance(record.msg, str) else repr(record.msg)
        with self._count_lock:
            self.counts[f"{record.levelname} {record.name}: {shape[:70]}"] += 1


@dataclass
class CaseResult:
    case: str
    placed: int = 0
    finished: int = 0
    answer_to_menu: list[float] = field(default_factory=list)
    welcome_to_menu: list[float] = field(default_factory=list)
    reaction: list[float] = field(default_factory=list)
    no_menu: int = 0
    got_extension: int = 0
    sales_queue: int = 0
    http_requests: int = 0
    fetcher: dict = field(default_factory=dict)
    cdrs_delivered: int = 0
    stop_s: float = 0.0
    warnings: Counter[str] = field(default_factory=Counter)


def bench_config(switch_port: int, crm_url: str, cdr_url: str, db_path: Path,
                 overrides: dict[str, str]) -> Config:
    """The service's defaults, except what must point at the fakes (and --set)."""
    env = {
        "ICALL_FREESWITCH_PORT": str(switch_port),
        "ICALL_FREESWITCH_PASSWORD": "ClueCon",
        "ICALL_DATABASE_URL": f"sqlite:///{db_path}",
        "ICALL_CRM_BASE_URL": crm_url,
        "ICALL_CDR_URL": cdr_url,
        "ICALL_SCHEDULE_TIMEZONE": TZ,
        **overrides,
    }
    return load_config(None, env)


def run_case(case: str, args: argparse.Namespace, overrides: dict[str, str],
             tally: WarningTally) -> CaseResult:
    result = CaseResult(case)
    callers = [f"55590{n:05d}" for n in range(args.calls)]  # distinct: the cache never helps
    workdir = Path(tempfile.mkdtemp(prefix="icall-call-bench-"))
    gone: set[str] = set()
    gone_changed = threading.Condition()

    def call_gone(uuid: str) -> None:  # runs in the supervisor's thread
        with gone_changed:
            gone.add(uuid)
            gone_changed.notify_all()

    tally.counts.clear()
    with FakeCrm(dict.fromkeys(callers, EXTENSION)) as crm, FakeCdrSink() as cdr:
        crm.default = CASES[case]
        switch = FakeSwitch(port=0, password="ClueCon", time_scale=args.time_scale, users=USERS).start()
        watch = SwitchWatch(switch.port).start()
        config = bench_config(switch.port, crm.url, cdr.url, workdir / "icall.sqlite3", overrides)
        prepare_database(config)
        service = Service(config, clock=lambda uuid: OFFICE_HOURS, on_call_gone=call_gone)
        uuids: list[str] = []
        try:
            service.start()
            if not service.link_up.wait(LINK_UP_TIMEOUT_S):
                raise RuntimeError("the service never subscribed to the stand-in")
            pace = threading.Event()  # never set: a wait that paces, nothing to await
            started = time.monotonic()
            for n, caller in enumerate(callers):
                pace.wait(max(0.0, started + n / args.rate - time.monotonic()))
                uuids.append(switch.place_call(caller_id=caller, variables={"fake_dtmf": "2"}))
            with gone_changed:
                gone_changed.wait_for(lambda: gone.issuperset(uuids), args.finish_timeout_s)
            cdr.wait_for_accepted(len(uuids), timeout_s=10)  # posted as each call ends
            result.fetcher = service.services.crm.proxy().stats().get(timeout=10)
        finally:
            stopping = time.monotonic()
            service.stop()
            result.stop_s = time.monotonic() - stopping
            watch.stop()
            switch.stop()
        result.http_requests = crm.request_count
        result.cdrs_delivered = len(cdr.unique_keys())
    for path in workdir.glob("*"):
        path.unlink()
    workdir.rmdir()

    result.placed = len(uuids)
    result.finished = len(gone.intersection(uuids))
    result.warnings = Counter(tally.counts)
    for uuid in uuids:
        times = watch.times(uuid)
        result.got_extension += times.bridged_to_extension
        result.sales_queue += times.sales_queue
        if times.menu_started is None or None in (times.answered, times.welcome_started,
                                                  times.welcome_done):
            result.no_menu += 1
            continue
        result.answer_to_menu.append(times.menu_started - times.answered)
        result.welcome_to_menu.append(times.menu_started - times.welcome_started)
        result.reaction.append(times.menu_started - times.welcome_done)
    return result


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def ms_pair(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:6.0f}/{percentile(values, 0.99) * 1000:<6.0f}"


def print_header(args: argparse.Namespace, config: Config, overrides: dict[str, str]) -> None:
    crm, ivr = config.crm, config.ivr
    print(f"{args.calls} calls per case at {args.rate:g}/s, each pressing 2 (sales); stand-in "
          f"time scale {args.time_scale:g} (welcome 1.5 s plays in {1.5 * args.time_scale * 1000:.0f} ms, "
          f"the menu's digit comes {0.3 * args.time_scale * 1000:.0f} ms into the menu)")
    print(f"[crm] defaults: deadline {crm.deadline_s:g} s, connect/read timeout "
          f"{crm.connect_timeout_s:g}/{crm.read_timeout_s:g} s, {crm.attempts} attempts, "
          f"{crm.max_concurrent} at once, breaker {crm.breaker_failures} failures / "
          f"{crm.breaker_cooldown_s:g} s, cache {crm.cache_ttl_s:g} s; [ivr] crm_grace_ms "
          f"{ivr.crm_grace_ms}, hangup_linger_s {ivr.hangup_linger_s:g}")
    shown = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
    print(f"overrides beyond base_url, cdr url, switch port, database, timezone: {shown}")
    print("times in ms, p50/p99, from the switch's event timestamps\n")
    print(f"{'CRM answers':<12} {'done':>9} {'answer->menu':>13} {'welcome->menu':>13} "
          f"{'icall reaction':>14} {'got extn':>9} {'sales q':>8} {'HTTP reqs':>9} "
          f"{'breaker':>7} {'CDRs':>5} {'stop s':>6}")


def print_row(row: CaseResult) -> None:
    label = "never" if row.case == "never" else f"in {row.case} s"
    done = f"{row.finished}/{row.placed}"
    share = row.got_extension / row.placed if row.placed else float("nan")
    print(f"{label:<12} {done:>9} {ms_pair(row.answer_to_menu):>13} {ms_pair(row.welcome_to_menu):>13} "
          f"{ms_pair(row.reaction):>14} {share:>9.0%} {row.sales_queue:>8} {row.http_requests:>9} "
          f"{row.fetcher.get('breaker_opened', '?'):>7} {row.cdrs_delivered:>5} {row.stop_s:>6.1f}",
          flush=True)


def print_details(rows: list[CaseResult]) -> None:
    print("\ndetails")
    for row in rows:
        fetcher = ", ".join(f"{k} {v}" for k, v in row.fetcher.items())
        print(f"  {row.case}: max answer->menu {max(row.answer_to_menu, default=float('nan')) * 1000:.0f} ms, "
              f"max reaction {max(row.reaction, default=float('nan')) * 1000:.0f} ms, "
              f"calls without a main menu {row.no_menu}; fetcher: {fetcher}")
        for shape, count in row.warnings.most_common(6):
            print(f"      {count:>5} x {shape}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="calls placed per second")
    parser.add_argument("--time-scale", type=float, default=0.05,
                        help="the stand-in's media time scale (prompts, rings)")
    parser.add_argument("--cases", default="0,2,5,never", help=f"any of {', '.join(CASES)}")
    parser.add_argument("--finish-timeout-s", type=float, default=60.0,
                        help="after the last call is placed, wait at most this long for all to end")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key, e.g. --set ivr.crm_grace_ms=2000")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        overrides[f"ICALL_{section.upper()}_{name.upper()}"] = value
    tally = WarningTally()
    logging.basicConfig(level=logging.WARNING, handlers=[tally])
    for case in args.cases.split(","):
        if case.strip() not in CASES:
            parser.error(f"unknown case {case!r}")
    shown = bench_config(8021, "http://127.0.0.1:1", "http://127.0.0.1:1", Path("unused"), overrides)
    print_header(args, shown, overrides)
    rows = []
    for case in args.cases.split(","):
        rows.append(run_case(case.strip(), args, overrides, tally))
        print_row(rows[-1])
    print_details(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
