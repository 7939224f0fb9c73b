"""`[service] workers = 2` under the unit's own command lines: one main process, two
workers sharing the database and the outbound port; READY=1 once both are up, the
watchdog fed while both answer, a SIGKILLed worker restarted while the other carries
on, and its callers taken back on the dialplan's second `socket`."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from fakeswitch import FakeSwitch
from storage.db import open_database
from storage.models import Call, CallStep
from tests.e2e.outbound_harness import free_port
from tests.service.conftest import ROOT, service_env, write_config
from tests.service.test_run import upgrade_database
from tests.service.unit_file import local_command, service_settings, unit_environment
from tests.waiting import wait_until

TIMEOUT_S = 60.0
WORKER_STARTED = r"worker (\d) started \(pid (\d+)\)"


@pytest.fixture
def switch():
    sw = FakeSwitch(port=0, password="ClueCon", time_scale=1.0, users={"801": "answer:1"})
    sw.start()
    yield sw
    sw.stop()


@pytest.fixture
def two_workers(tmp_path, switch, run_icall, notify_socket):
    return run_two_workers(tmp_path, switch, run_icall, notify_socket)


def run_two_workers(tmp_path, switch, run_icall, notify_socket, **overrides: dict[str, str]):
    """`icall` with two workers on the switch's outbound target, open all day;
    `overrides`: more config, by section."""
    port = free_port()
    switch.switch.outbound_target = ("127.0.0.1", port)
    state = tmp_path / "state"
    state.mkdir()
    sections = {"service": {"workers": "2"}, "outbound": {"listen": f"127.0.0.1:{port}"},
                "ivr": {"hangup_linger_s": "0.2"},
                "schedule": {"timezone": "UTC", "weekday_open": "00:00-24:00",
                             "weekend_open": "00:00-24:00", "evening": "closed"}}
    for section, keys in overrides.items():
        sections.setdefault(section, {}).update(keys)
    config = write_config(tmp_path / "config.ini", switch.port, **sections)
    settings = service_settings()
    env = service_env(state, **unit_environment(settings), NOTIFY_SOCKET=notify_socket.address,
                      WATCHDOG_USEC="2000000")
    upgrade_database(config, env)
    icall = run_icall(local_command(settings["ExecStart"][0], config), env, ROOT)
    icall.database = state / "icall.sqlite3"
    return icall


def worker_pids(icall) -> dict[int, int]:
    """The latest pid of each worker, from the main process's log."""
    pids: dict[int, int] = {}
    for _, line in icall.matching(WORKER_STARTED):
        match = re.search(WORKER_STARTED, line)
        assert match
        pids[int(match.group(1))] = int(match.group(2))
    return pids


def holder_of(switch: FakeSwitch, uuid: str, pids: dict[int, int]) -> int:
    """The worker whose process holds call `uuid`'s socket: the switch's end of it is
    matched with the worker's sockets through /proc (inode -> ports)."""
    def local_port() -> int:
        for listener in switch.switch.listeners:
            if getattr(listener, "session_uuid", None) == uuid:
                return listener.writer.get_extra_info("sockname")[1]
        raise AssertionError(f"call {uuid} has no outbound socket")

    port = switch._call(local_port)
    inodes = {}
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        remote_port = int(fields[2].split(":")[1], 16)
        inodes[fields[9]] = remote_port
    for index, pid in pids.items():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:[") and inodes.get(target[8:-1]) == port:
                return index
    raise AssertionError(f"no worker holds the socket of call {uuid}")


def test_two_workers_report_ready_feed_the_watchdog_and_stop_on_sigterm(two_workers, notify_socket):
    seen = notify_socket.wait_for("READY=1", TIMEOUT_S)
    assert any("2 workers" in message for message in seen)
    notify_socket.wait_for("WATCHDOG=1", TIMEOUT_S)
    assert set(worker_pids(two_workers)) == {0, 1}
    assert two_workers.terminate(30) == 0
    log = two_workers.stderr()
    assert log.count("icall stopped") == 3, log  # both workers, then the main process
    assert "Traceback" not in log, log


def test_a_worker_killed_mid_call_is_restarted_and_its_callers_resumed_by_a_live_one(
        two_workers, notify_socket, switch):
    notify_socket.wait_for("READY=1", TIMEOUT_S)
    uuids = [switch.place_call(caller_id=f"55510{n:02d}", dest="icall_out",
                               variables={"fake_dtmf": "2|2"}) for n in range(6)]

    def in_main_menu(uuid: str) -> bool:
        return "play_and_get_digits" in [a for a, _ in switch.call_record(uuid).commands]

    assert wait_until(lambda: all(in_main_menu(u) for u in uuids), TIMEOUT_S)
    pids = worker_pids(two_workers)
    held = {uuid: holder_of(switch, uuid, pids) for uuid in uuids}
    victim = max(set(held.values()), key=list(held.values()).count)
    os.kill(pids[victim], signal.SIGKILL)
    two_workers.wait_for_line(rf"worker {victim} \(pid {pids[victim]}\) exited with status -9: "
                              r"starting it again", TIMEOUT_S)
    for uuid in uuids:
        assert switch.wait_hangup(uuid, timeout=TIMEOUT_S), uuid
    db = open_database(f"sqlite:///{two_workers.database}")

    def all_recorded() -> bool:
        rows = Call.select().where(Call.uuid.in_(uuids), Call.hangup_cause.is_null(False))
        return rows.count(db) == len(uuids)

    assert wait_until(all_recorded, TIMEOUT_S), ("every call's CDR is written once it ended", [
        (r["uuid"][:8], held[r["uuid"]] == victim, switch.call_record(r["uuid"]).commands[-2:],
         [line for _, line in two_workers.lines if r["uuid"][:8] in line])
        for r in Call.select().where(Call.uuid.in_(uuids), Call.hangup_cause.is_null()).dicts().execute(db)])
    for uuid in uuids:
        record = switch.call_record(uuid)
        assert record.transferred_to == "fifo_sales", (uuid, record.commands)
        steps = [(s.step, s.value) for s in CallStep.select().where(CallStep.call_uuid == uuid)
                 .order_by(CallStep.seq).execute(db)]
        assert steps.count(("MainMenu", "2")) == 1, steps
        assert steps.count(("SalesFifo", "")) == 1, steps
        row = Call.select().where(Call.uuid == uuid).dicts().execute(db)[0]
        assert row["hangup_cause"] == "NORMAL_CLEARING", (uuid, row)
        if held[uuid] == victim:  # asked again by the worker that took it back
            assert [a for a, _ in record.commands].count("play_and_get_digits") == 2
        else:  # the other worker carried on as if nothing happened
            assert [a for a, _ in record.commands].count("play_and_get_digits") == 1
    db.close()
    notify_socket.wait_for("WATCHDOG=1", TIMEOUT_S)
    assert two_workers.terminate(30) == 0
    assert "Traceback" not in two_workers.stderr(), two_workers.stderr()


def test_a_stuck_worker_stops_the_watchdog_until_it_answers_again(two_workers, notify_socket):
    notify_socket.wait_for("READY=1", TIMEOUT_S)
    pid = worker_pids(two_workers)[1]
    os.kill(pid, signal.SIGSTOP)
    try:
        two_workers.wait_for_line(r"unhealthy: .*worker 1 does not answer.*not feeding", TIMEOUT_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    two_workers.wait_for_line(r"healthy again .*feeding the watchdog", TIMEOUT_S)
    notify_socket.wait_for("WATCHDOG=1", TIMEOUT_S)
    assert two_workers.terminate(30) == 0
