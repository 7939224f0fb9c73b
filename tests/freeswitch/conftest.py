"""The real-switch suite: icall as a subprocess (`python -m service.cli run`) against the
FreeSWITCH named by $ICALL_FREESWITCH (host:port[:password]), with SQLite in a tmp
dir, the fake CRM and the fake CDR endpoint on loopback. Without the variable every
test here is skipped, saying so. `make test-freeswitch` sets it to the lab's switch.

The switch must be configured as the lab's (extensions `fsm`, `icall_out` and the
`new_sales` destinations; README, "On a real FreeSWITCH") and must be ours while the
suite runs: another inbound controller would take our parked calls too, another
listener on the outbound port (the dialplan's 127.0.0.1:8084, or
$ICALL_FREESWITCH_OUTBOUND) half of our outbound ones.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scenarios import REAL_SWITCH_EXTENSIONS, crm_table
from bench.side_by_side import listening
from fakeswitch.fake_cdr import FakeCdrSink
from fakeswitch.fake_crm import FakeCrm
from storage.db import open_database
from storage.models import Call, CallStep
from tests.freeswitch.lab import LabSwitch, SwitchAddress
from tests.service.conftest import (
    ROOT,
    RunningIcall,
    notify_socket,  # noqa: F401 (a fixture for test_workers)
    service_env,
    write_config,
)
from tests.waiting import wait_until

HERE = Path(__file__).resolve().parent
SWITCH_VARIABLE = "ICALL_FREESWITCH"
OUTBOUND_VARIABLE = "ICALL_FREESWITCH_OUTBOUND"
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 60.0
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() \
    else sys.executable


def switch_address() -> SwitchAddress | None:
    text = os.environ.get(SWITCH_VARIABLE, "")
    return SwitchAddress.parse(text) if text else None


def pytest_collection_modifyitems(config, items) -> None:
    """Without a switch, one skip for the whole suite (hooks see every item: ours only)."""
    if switch_address() is not None:
        return
    skip = pytest.mark.skip(reason=f"no real FreeSWITCH: set {SWITCH_VARIABLE}=host:port[:password] "
                                   "(make test-freeswitch does)")
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(skip)


@pytest.fixture
def lab() -> Iterator[LabSwitch]:
    address = switch_address()
    assert address is not None
    switch = LabSwitch(address).start()
    yield switch
    switch.hang_up_all()
    switch.stop()


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    with FakeCrm(crm_table(REAL_SWITCH_EXTENSIONS)) as server:
        yield server


@pytest.fixture
def cdr_sink() -> Iterator[FakeCdrSink]:
    with FakeCdrSink() as server:
        yield server


def outbound_listen() -> str:
    return os.environ.get(OUTBOUND_VARIABLE, "127.0.0.1:8084")


class LabIcall:
    """The config of one icall under test and the processes started with it; all share
    the database (a restarted one carries on from its predecessor's rows)."""

    def __init__(self, tmp_path: Path, crm: FakeCrm, cdr: FakeCdrSink, outbound: bool,
                 **overrides: dict[str, str]):
        address = switch_address()
        assert address is not None
        self.state = tmp_path / "state"
        self.state.mkdir(exist_ok=True)
        self.database = self.state / "icall.sqlite3"
        sections: dict[str, dict[str, str]] = {
            "freeswitch": {"host": address.host, "password": address.password},
            "database": {"url": f"sqlite:///{self.database}"},
            "crm": {"enabled": "true", "base_url": crm.url, "cache_ttl_s": "0"},
            "cdr": {"url": cdr.url, "retry_min_s": "0.2"},
            "ivr": {"hangup_linger_s": "0.5"},
            "schedule": {"timezone": "UTC", "weekday_open": "00:00-24:00",
                         "weekend_open": "00:00-24:00", "evening": "closed"},
        }
        if outbound:
            sections["outbound"] = {"listen": outbound_listen()}
        for section, keys in overrides.items():
            sections.setdefault(section, {}).update(keys)
        self.outbound = outbound
        self.config = write_config(tmp_path / "config.ini", address.port, **sections)
        self.processes: list[RunningIcall] = []
        self.upgraded = False

    def start(self, env: dict[str, str] | None = None, others_may_listen: bool = False) -> RunningIcall:
        """`python -m service.cli --config <config> run`, once linked to the switch (and
        listening for it, in outbound mode)."""
        if self.outbound and not others_may_listen and listening(outbound_listen()):
            pytest.fail(f"something else listens on {outbound_listen()}: the switch's outbound "
                        "calls would be split with it")
        if not self.upgraded:
            self.run_cli("db", "upgrade")
            self.upgraded = True
        process = RunningIcall([PYTHON, "-m", "service.cli", "--config", str(self.config), "run"],
                               service_env(self.state, PYTHONPATH=str(ROOT), **(env or {})), ROOT)
        self.processes.append(process)
        # "icall ready" comes before the event link is up, and a call parked before the
        # link's first listing may be missed (`show channels` lags the switch): wait for
        # the listing, and for every worker's listener.
        ready = (r"icall ready", r"resync: \d+ live channels listed",
                 *((r"outbound mode: listening",) if self.outbound else ()))
        up = wait_until(lambda: process.process.poll() is not None
                        or all(process.matching(line) for line in ready), START_TIMEOUT_S)
        assert up and process.process.poll() is None, f"icall did not start:\n{process.stderr()}"
        return process

    def run_cli(self, *argv: str) -> None:
        import subprocess

        subprocess.run([PYTHON, "-m", "service.cli", "--config", str(self.config), *argv],
                       check=True, cwd=ROOT, env=service_env(self.state, PYTHONPATH=str(ROOT)),
                       capture_output=True, timeout=60)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.process.poll() is None:
                process.terminate(30)
            else:
                process.kill()

    # --- what icall recorded

    def rows(self, uuid: str) -> list[dict]:
        db = open_database(f"sqlite:///{self.database}")
        try:
            return list(Call.select().where(Call.uuid == uuid).dicts().execute(db))
        finally:
            db.close()

    def steps(self, uuid: str) -> list[tuple[str, str]]:
        db = open_database(f"sqlite:///{self.database}")
        try:
            return [(s.step, s.value or "") for s in CallStep.select().where(CallStep.call_uuid == uuid)
                    .order_by(CallStep.seq).execute(db)]
        finally:
            db.close()

    def wait_recorded(self, uuid: str, cdr: FakeCdrSink) -> dict:
        """Until the call's row has its end and its CDR was accepted; the row."""
        def ended() -> bool:
            rows = self.rows(uuid)
            return bool(rows) and rows[0]["hangup_cause"] is not None and uuid in cdr.unique_keys()

        logs = "\n".join(line for process in self.processes for line in process.stderr().splitlines()
                         if uuid in line or "resync" in line or "left open" in line)
        assert wait_until(ended, CALL_TIMEOUT_S), \
            f"call {uuid}: no ended row and CDR ({self.rows(uuid)})\n{logs}"
        return self.rows(uuid)[0]

    def log_of(self, uuid: str) -> str:
        """Every process's log lines about call `uuid`, for a failure's message."""
        return "\n".join(line for process in self.processes for _, line in process.lines
                         if uuid and uuid in line)

    def errors(self) -> list[str]:
        """Tracebacks and ERROR lines any of the processes logged."""
        return [line for process in self.processes for _, line in process.lines
                if re.search(r"Traceback|\bERROR\b", line)]


@pytest.fixture
def icall(tmp_path, crm, cdr_sink, lab) -> Iterator:
    """make(outbound=..., **sections) -> LabIcall, every process stopped at the end."""
    made: list[LabIcall] = []

    def make(outbound: bool, **overrides: dict[str, str]) -> LabIcall:
        one = LabIcall(tmp_path, crm, cdr_sink, outbound, **overrides)
        made.append(one)
        return one

    yield make
    lab.hang_up_all()
    for one in made:
        one.stop_all()
