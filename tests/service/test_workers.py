"""`[service] workers = 2` under the unit's own command lines: one main process, two
workers sharing the database and the outbound port; READY=1 once both are up, the
watchdog fed all along while the main process mends a worker (a SIGKILLed one started
again and ready again, one that stops answering killed and started again, one failing
at start retried backing off), and a killed worker's callers taken back on the
dialplan's second `socket`."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from fakeswitch import FakeSwitch
from ivr.config import load_config
from service.workers import STABLE_AFTER_S, WorkerPool, failures_in_a_row, restart_delay_s
from storage.db import open_database
from storage.models import Call, CallStep
from tests.e2e.outbound_harness import free_port
from tests.service.conftest import ROOT, NotifyRecorder, service_env, write_config
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


WATCHDOG_S = 2.0  # the fixture's WATCHDOG_USEC


def assert_fed_throughout(recorder: NotifyRecorder, since: float) -> None:
    """No gap between two WATCHDOG=1 feeds (from the last one before `since`) as long
    as the watchdog's timeout: systemd would have killed the unit in it."""
    feeds = recorder.times_of("WATCHDOG=1")
    kept = [t for t in feeds if t < since][-1:] + [t for t in feeds if t >= since]
    gaps = [b - a for a, b in zip(kept, kept[1:], strict=False)]
    assert gaps and max(gaps) < WATCHDOG_S, gaps


def test_a_sigkilled_worker_is_ready_again_after_its_restart_and_the_watchdog_never_starves(
        two_workers, notify_socket):
    recorder = NotifyRecorder(notify_socket)
    try:
        recorder.wait_for("READY=1", TIMEOUT_S)
        recorder.wait_for("WATCHDOG=1", TIMEOUT_S)
        pid = worker_pids(two_workers)[1]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        two_workers.wait_for_line(rf"worker 1 \(pid {pid}\) exited with status -9: starting it "
                                  r"again in 1 s .*watchdog is still fed", TIMEOUT_S)
        two_workers.wait_for_line(r"worker 1 started", TIMEOUT_S)
        two_workers.wait_for_line(r"worker 1 ready", TIMEOUT_S)
        ready_again = time.monotonic()
        recorder.wait_for("STATUS=running 2 workers", TIMEOUT_S, since=killed_at)
        recorder.wait_for("WATCHDOG=1", TIMEOUT_S, since=ready_again, count=3)
        assert recorder.times_of("STATUS=running 1 of 2 workers (restarting the others)", killed_at)
        assert recorder.times_of("WATCHDOG=1", killed_at)[0] < ready_again  # fed while restarting
        assert_fed_throughout(recorder, killed_at)
    finally:
        recorder.stop()
    assert two_workers.terminate(30) == 0


def test_a_worker_that_stops_answering_is_killed_and_restarted_by_the_main_process(
        two_workers, notify_socket):
    recorder = NotifyRecorder(notify_socket)
    try:
        recorder.wait_for("READY=1", TIMEOUT_S)
        pid = worker_pids(two_workers)[1]
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)  # alive, holding its calls, answering nothing
        two_workers.wait_for_line(rf"worker 1 \(pid {pid}\) has not answered ok for \d+ s "
                                  r"\(no answer\): killing it \(SIGKILL\)", TIMEOUT_S)
        two_workers.wait_for_line(rf"worker 1 \(pid {pid}\) exited with status -9", TIMEOUT_S)
        two_workers.wait_for_line(r"worker 1 ready", TIMEOUT_S)
        recorder.wait_for("WATCHDOG=1", TIMEOUT_S, since=time.monotonic(), count=2)
        assert_fed_throughout(recorder, stopped_at)
    finally:
        recorder.stop()
    assert two_workers.terminate(30) == 0


def test_a_worker_that_fails_at_start_is_started_again_backing_off(tmp_path, switch, run_icall):
    port = free_port()
    holder = socket.socket()  # holds worker 0's /metrics port: that worker cannot start
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        state = tmp_path / "state"
        state.mkdir()
        config = write_config(tmp_path / "config.ini", switch.port, service={"workers": "2"},
                              outbound={"listen": f"127.0.0.1:{free_port()}"},
                              metrics={"listen": f"127.0.0.1:{port}"})
        env = service_env(state)
        upgrade_database(config, env)
        icall = run_icall([str(ROOT / ".venv" / "bin" / "icall"), "run", "--config", str(config)],
                          env, ROOT)
        for delay_s in (1, 2, 4):
            icall.wait_for_line(rf"worker 0 \(pid \d+\) exited with status 1: starting it again "
                                rf"in {delay_s} s \(at \d\d:\d\d:\d\d;", TIMEOUT_S)
        assert icall.terminate(30) == 0
    finally:
        holder.close()


def test_a_main_process_that_cannot_listen_on_the_outbound_port_says_so_and_exits(
        tmp_path, switch, run_icall):
    holder = socket.socket()  # the outbound port is taken before icall starts
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        state = tmp_path / "state"
        state.mkdir()
        config = write_config(tmp_path / "config.ini", switch.port, service={"workers": "2"},
                              outbound={"listen": f"127.0.0.1:{port}"})
        env = service_env(state)
        upgrade_database(config, env)
        icall = run_icall([str(ROOT / ".venv" / "bin" / "icall"), "run", "--config", str(config)],
                          env, ROOT)
        icall.wait_for_line(rf"outbound/listen: cannot listen on 127.0.0.1:{port} "
                            r"\(.+\); no worker started", TIMEOUT_S)
        assert icall.process.wait(TIMEOUT_S) == 1
        assert not icall.matching(WORKER_STARTED)
    finally:
        holder.close()


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on 127.0.0.1:`port` (state 0A in /proc/net/tcp)."""
    found = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            found.add(fields[9])
    return found


def test_every_worker_accepts_from_the_one_socket_the_main_process_listens_on(
        two_workers, notify_socket, switch):
    # One queue: a connection waiting in it when a worker dies is taken by another
    # worker (each worker's own SO_REUSEPORT queue was reset with its process, and the
    # caller's second `socket` went to the dialplan's fallback).
    two_workers.wait_for_line(r"icall ready: 2 workers", TIMEOUT_S)  # both workers' first ready
    port = switch.switch.outbound_target[1]
    listening = listening_inodes(port)
    assert len(listening) == 1, f"one listening socket on {port}, not {len(listening)}"
    pids = worker_pids(two_workers)
    for index, pid in pids.items():
        assert listening <= socket_inodes(pid), f"worker {index} listens on a socket of its own"
    assert listening <= socket_inodes(two_workers.process.pid)
    os.kill(pids[1], signal.SIGKILL)
    two_workers.wait_for_line(r"worker 1 ready", TIMEOUT_S)
    restarted = worker_pids(two_workers)[1]
    assert restarted != pids[1]
    assert listening_inodes(port) == listening
    assert listening <= socket_inodes(restarted), "the restarted worker got the same socket"
    assert two_workers.terminate(30) == 0


def test_the_restart_back_off_doubles_to_its_cap_and_starts_afresh_after_a_long_run():
    assert [restart_delay_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    failures = 0
    for ran_s in (0.5, 0.5, 0.5):
        failures = failures_in_a_row(failures, ran_s)
    assert failures == 3
    assert failures_in_a_row(failures, STABLE_AFTER_S + 1) == 1


class _Unkillable:
    """Stands in for a worker process stuck in the kernel: SIGKILL does not end it."""

    pid = 4242

    def __init__(self) -> None:
        self.kills = 0

    def poll(self) -> None:
        return None

    def kill(self) -> None:
        self.kills += 1


def test_the_watchdog_starves_only_for_what_the_main_process_cannot_mend():
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x"})
    pool = WorkerPool(config, 1, environ={"WATCHDOG_USEC": "2000000"})
    worker = pool.workers[0]
    stuck = _Unkillable()
    worker.process, worker.ready = stuck, True
    worker.started_at = worker.last_ok_at = worker.last_ping_at = start = 1000.0
    pool.tick(start)
    assert pool.unit_health(start) == (True, "worker 0 ok")
    pool.tick(start + 2.5)  # no `ok` for longer than the watchdog allows: killed
    assert stuck.kills == 1
    assert pool.unit_health(start + 2.5) == (True, "worker 0 killed, exit awaited")
    pool.tick(start + 13)
    assert pool.unit_health(start + 13) == (False, "worker 0 (pid 4242) still there 10 s after SIGKILL")
    healthy, why = pool.unit_health(start + 19)  # and the main loop itself not run for 6 s
    assert (healthy, why) == (False, "the main process's loop has not run for 6 s")
