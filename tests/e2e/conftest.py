"""End to end: the whole service over real sockets against the FreeSWITCH stand-in,
a fake CRM and a fake CDR endpoint, with an SQLite database in tmp_path."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from fakeswitch import FakeSwitch
from fakeswitch.fake_cdr import FakeCdrSink
from fakeswitch.fake_crm import FakeCrm
from ivr.config import load_config
from service.app import Service
from storage.db import open_database
from storage.migrations import upgrade
from storage.models import Call, CallFailure, CallStep

TZ = ZoneInfo("Europe/Berlin")


def is_checkpoint(app: str, arg: str) -> bool:
    return app == "set" and arg.startswith("icall_ckpt=")


WEDNESDAY_11 = datetime(2026, 11, 25, 11, 0, tzinfo=TZ)
WEDNESDAY_21 = datetime(2026, 11, 25, 21, 0, tzinfo=TZ)
THURSDAY_02 = datetime(2026, 11, 26, 2, 0, tzinfo=TZ)
CHRISTMAS_11 = datetime(2026, 12, 25, 11, 0, tzinfo=TZ)

CRM_TABLE = {"5551002": "801", "5551004": "802", "5551005": "802", "5551006": "802",
             "5551020": "801,sofia/gateway/x/900"}
# 803 talks 4 s of real time at the stand-in's time scale; 804 would ring for 10 s.
USERS = {"801": "answer:1", "802": "noanswer", "803": "answer:80", "804": "noanswer:200"}
WAIT_S = 30


@dataclass
class CallResult:
    uuid: str
    commands: list[tuple[str, str]]
    hangup_cause: str | None
    row: dict | None
    steps: list[tuple[str, str]]
    failures: list[dict]
    history: list[str] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)  # left out of `commands`

    def apps(self) -> list[str]:
        return [app for app, _ in self.commands]

    def transfers(self) -> list[str]:
        return [arg for app, arg in self.commands if app == "transfer"]


class Harness:
    """Starts the service against the stand-in; places calls at chosen office times."""

    def __init__(self, tmp_path, switch: FakeSwitch, crm: FakeCrm, cdr: FakeCdrSink, **overrides: str):
        # A test may point the service at another database (ICALL_DATABASE_URL).
        self.db_url = overrides.get("ICALL_DATABASE_URL") or f"sqlite:///{tmp_path / 'icall.sqlite3'}"
        env = {
            "STATE_DIRECTORY": str(tmp_path / "state"),  # the DbWriter's spool, if it needs one
            "ICALL_FREESWITCH_PORT": str(switch.port),
            "ICALL_FREESWITCH_PASSWORD": "ClueCon",
            "ICALL_FREESWITCH_RECONNECT_MIN_S": "0.1",
            "ICALL_FREESWITCH_RECONNECT_MAX_S": "0.5",
            "ICALL_DATABASE_URL": self.db_url,
            "ICALL_CRM_BASE_URL": crm.url,
            "ICALL_CDR_URL": cdr.url,
            "ICALL_CDR_RETRY_MIN_S": "0.1",
            "ICALL_IVR_CRM_GRACE_MS": "2000",
            "ICALL_IVR_HANGUP_LINGER_S": "0.1",
            "ICALL_SCHEDULE_TIMEZONE": "Europe/Berlin",
        }
        env.update(overrides)
        self.config = load_config(None, env)
        self.switch = switch
        self.db = open_database(self.db_url)
        upgrade(self.db)
        self.clocks: dict[str, datetime] = {}
        self.histories: dict[str, list[str]] = {}
        self._gone: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.service = Service(self.config, observer=self._observe,
                               clock=lambda uuid: self.clocks.get(uuid, WEDNESDAY_11),
                               on_call_gone=lambda uuid: self._gone_event(uuid).set())

    def start(self) -> Harness:
        self.service.start()
        assert self.service.link_up.wait(WAIT_S), "the service never subscribed to the stand-in"
        return self

    def stop(self) -> None:
        self.service.stop()
        self.db.close()

    def _observe(self, uuid: str, history: list[str]) -> None:
        self.histories[uuid] = history

    def _gone_event(self, uuid: str) -> threading.Event:
        with self._lock:
            return self._gone.setdefault(uuid, threading.Event())

    def place(self, caller: str, dtmf: str = "none", at: datetime = WEDNESDAY_11, **variables: str) -> str:
        """Place a call; return the UUID of the leg the service controls. The office
        clock is first read after the welcome prompt, long after this returns."""
        uuid = self.switch.place_call(caller_id=caller, variables={"fake_dtmf": dtmf, **variables})
        self.clocks[uuid] = at
        self._gone_event(uuid)
        return uuid

    def finish(self, uuid: str) -> CallResult:
        """Wait until the switch hung the call up and the service let it go (its rows
        acknowledged), then collect what both sides saw."""
        assert self.switch.wait_hangup(uuid, timeout=WAIT_S), f"call {uuid} never hung up"
        assert self._gone_event(uuid).wait(WAIT_S), f"the service never finished call {uuid}"
        return self.result(uuid)

    def result(self, uuid: str) -> CallResult:
        record = self.switch.call_record(uuid)
        row = Call.select().where(Call.uuid == uuid).dicts().execute(self.db)
        steps = (CallStep.select().where(CallStep.call_uuid == uuid)
                 .order_by(CallStep.seq).execute(self.db))
        failures = CallFailure.select().where(CallFailure.call_uuid == uuid).dicts().execute(self.db)
        rows = list(row)
        return CallResult(
            uuid=uuid, commands=[c for c in record.commands if not is_checkpoint(*c)],
            checkpoints=[json.loads(arg.split("=", 1)[1]) for app, arg in record.commands
                         if is_checkpoint(app, arg)],
            hangup_cause=record.hangup_cause,
            row=rows[0] if rows else None, steps=[(s.step, s.value or "") for s in steps],
            failures=list(failures), history=self.histories.get(uuid, []),
        )

    @staticmethod
    def path(result: CallResult) -> list[str]:
        return json.loads(result.row["path"]) if result.row and result.row["path"] else []


@pytest.fixture
def switch():
    sw = FakeSwitch(port=0, password="ClueCon", time_scale=0.05, users=USERS)
    sw.start()
    yield sw
    sw.stop()


@pytest.fixture
def crm():
    with FakeCrm(CRM_TABLE) as server:
        yield server


@pytest.fixture
def cdr_sink():
    with FakeCdrSink() as server:
        yield server


@pytest.fixture
def harness(tmp_path, switch, crm, cdr_sink):
    made: list[Harness] = []

    def make(**overrides: str) -> Harness:
        h = Harness(tmp_path, switch, crm, cdr_sink, **overrides).start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()
