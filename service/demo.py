"""`icall demo`: the whole service against the FreeSWITCH stand-in, a fake CRM and a
fake CDR endpoint, all on loopback. A dozen calls cover every branch of the flow;
each call's trace is printed, then a summary read back from the database.

Each call is placed at a chosen office time (the service's clock is per call here),
so business hours, the evening, the night and a holiday all show in one run.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fakeswitch import FakeSwitch
from fakeswitch.fake_cdr import FakeCdrSink
from fakeswitch.fake_crm import FakeCrm
from ivr.config import Config, load_config
from service.app import Service

TZ = "Europe/Berlin"
WEDNESDAY_11 = datetime(2026, 11, 25, 11, 0, tzinfo=ZoneInfo(TZ))
WEDNESDAY_21 = datetime(2026, 11, 25, 21, 0, tzinfo=ZoneInfo(TZ))
THURSDAY_02 = datetime(2026, 11, 26, 2, 0, tzinfo=ZoneInfo(TZ))
CHRISTMAS_11 = datetime(2026, 12, 25, 11, 0, tzinfo=ZoneInfo(TZ))

WAIT_S = 30  # longest the demo waits for one call, or for the CDRs

# Who the fake CRM knows: caller id -> account manager's extension.
CRM_TABLE = {"5551002": "801", "5551004": "802", "5551005": "802", "5551006": "802"}
# Directory users of the stand-in: 801 answers (and hangs up after 2 s), 802 never does.
USERS = {"801": "answer:2", "802": "noanswer"}


@dataclass(frozen=True)
class DemoCall:
    title: str
    caller: str
    dtmf: str = "none"
    at: datetime = WEDNESDAY_11


CALLS = [
    DemoCall("menu 1: evening team queue", "5551001", "1"),
    DemoCall("menu 2, CRM knows the caller: bridged to 801", "5551002", "2"),
    DemoCall("menu 2, caller unknown to the CRM: sales queue", "5551003", "2"),
    DemoCall("menu 3, CRM says 802, no answer, cc menu 1: cellphone", "5551004", "3|1"),
    DemoCall("menu 4, CRM says 802, no answer, cc menu 2: voicemail", "5551005", "4|2"),
    DemoCall("menu 2, CRM says 802, no answer, no choice: quit", "5551006", "2|none"),
    DemoCall("menu 5, extension 801 dialled", "5551007", "5|801"),
    DemoCall("menu 5, no extension entered: goodbye", "5551008", "5|none"),
    DemoCall("invalid digit 9: goodbye", "5551009", "9|9|9"),
    DemoCall("no input at all: goodbye", "5551010", "none"),
    DemoCall("after hours (21:00): evening team queue", "5551011", at=WEDNESDAY_21),
    DemoCall("night (02:00): cellphone queue", "5551012", at=THURSDAY_02),
    DemoCall("holiday override from the database (25 Dec)", "5551013", at=CHRISTMAS_11),
]


def demo_config(switch_port: int, crm_url: str, cdr_url: str, db_path: Path) -> Config:
    env = {
        "ICALL_FREESWITCH_PORT": str(switch_port),
        "ICALL_FREESWITCH_PASSWORD": "ClueCon",
        "ICALL_FREESWITCH_RECONNECT_MIN_S": "0.1",
        "ICALL_DATABASE_URL": f"sqlite:///{db_path}",
        "ICALL_CRM_BASE_URL": crm_url,
        "ICALL_CDR_URL": cdr_url,
        "ICALL_CDR_RETRY_MIN_S": "0.1",
        "ICALL_IVR_CRM_GRACE_MS": "1000",
        "ICALL_IVR_HANGUP_LINGER_S": "0.2",
        "ICALL_SCHEDULE_TIMEZONE": TZ,
        "ICALL_LOGGING_LEVEL": "warning",
    }
    return load_config(None, env)


def run_demo(keep: bool = False, time_scale: float = 0.05, out=sys.stdout) -> int:
    from service.demo_support import add_holiday, prepare_database, summary_rows
    from service.logsetup import setup_logging

    setup_logging("warning")
    logging.getLogger("fakeswitch").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="icall-demo-"))
    db_path = workdir / "icall.sqlite3"
    histories: dict[str, list[str]] = {}
    clocks: dict[str, datetime] = {}
    gone: dict[str, threading.Event] = {}  # set when the service let the call go
    gone_lock = threading.Lock()

    def gone_event(uuid: str) -> threading.Event:
        with gone_lock:
            return gone.setdefault(uuid, threading.Event())

    started = time.monotonic()

    with FakeCrm(CRM_TABLE) as crm, FakeCdrSink() as cdr:
        switch = FakeSwitch(port=0, password="ClueCon", time_scale=time_scale, users=USERS)
        switch.start()
        config = demo_config(switch.port, crm.url, cdr.url, db_path)
        prepare_database(config)
        add_holiday(config, CHRISTMAS_11.date(), "transfer", "fifo_cellphone XML new_sales")
        service = Service(config, observer=lambda uuid, history: histories.__setitem__(uuid, history),
                          clock=lambda uuid: clocks.get(uuid, WEDNESDAY_11),
                          on_call_gone=lambda uuid: gone_event(uuid).set())
        try:
            service.start()
            placed = []
            for call in CALLS:
                uuid = switch.place_call(caller_id=call.caller, variables={"fake_dtmf": call.dtmf})
                clocks[uuid] = call.at  # read after the welcome prompt, long after this
                placed.append((call, uuid))
            # A call is done when the switch hung it up and the service let it go (its
            # rows acknowledged); its CDR then reaches the endpoint from the outbox.
            stuck = [call.title for call, uuid in placed
                     if not (switch.wait_hangup(uuid, timeout=WAIT_S) and gone_event(uuid).wait(WAIT_S))]
            cdr.wait_for_accepted(len(placed), timeout_s=WAIT_S)
            records = {uuid: switch.call_record(uuid) for _, uuid in placed}
        finally:
            service.stop()
            switch.stop()
        for number, (call, uuid) in enumerate(placed, 1):
            _print_trace(out, number, call, uuid, histories.get(uuid, []), records.get(uuid))
        _print_summary(out, summary_rows(config, [u for _, u in placed]), placed)
        for title in stuck:
            print(f"NOT FINISHED within {WAIT_S} s: {title}", file=out)
        print(f"\nCDRs delivered to the fake CDR endpoint: {len(cdr.unique_keys())} of {len(placed)}",
              file=out)
    kept = f"; database kept at {db_path}" if keep else ""
    print(f"Demo finished in {time.monotonic() - started:.1f} s{kept}", file=out)
    if not keep:
        for path in sorted(workdir.glob("*")):
            path.unlink()
        workdir.rmdir()
    return 1 if stuck else 0


def _print_trace(out, number: int, call: DemoCall, uuid: str, history: list[str], record) -> None:
    print(f"\n=== call {number}: {call.title}", file=out)
    print(f"    caller {call.caller}, keys {call.dtmf!r}, office time {call.at:%a %H:%M %d %b}, uuid {uuid}",
          file=out)
    for line in history:
        print(f"    {line}", file=out)
    if record is not None:
        ends = [f"hangup cause {record.hangup_cause}"]
        if record.bridged_to:
            ends.insert(0, f"bridged to {record.bridged_to}")
        if record.transferred_to:
            ends.insert(0, f"transferred to {record.transferred_to}")
        print(f"    switch: {', '.join(ends)}", file=out)


def _print_summary(out, rows: list[dict], placed) -> None:
    titles = {uuid: call.title for call, uuid in placed}
    print("\n=== summary (read back from the database)", file=out)
    numbers = {uuid: n for n, (_, uuid) in enumerate(placed, 1)}
    header = f"{'#':>2} {'caller':<9} {'final state':<20} {'crm':<5} {'billsec':>7} {'hangup cause':<16} path"
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in sorted(rows, key=lambda r: numbers.get(r["uuid"], 0)):
        print(f"{numbers.get(row['uuid'], 0):>2} {row['caller_id']:<9} {row['final_state'] or '-':<20} "
              f"{row['crm_extension'] or '-':<5} "
              f"{row['billsec_s'] if row['billsec_s'] is not None else '-':>7} "
              f"{row['hangup_cause'] or '-':<16} {row['path']}", file=out)
    missing = [titles[u] for u in titles if u not in {r['uuid'] for r in rows}]
    for title in missing:
        print(f"MISSING from the database: {title}", file=out)
