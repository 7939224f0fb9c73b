"""`[service] workers = 2` in outbound mode on a real FreeSWITCH: worker 1 SIGKILLed
while its callers are in the main menu. Their sockets close under the prompt, the
dialplan's second `socket` brings each to a live worker, which resumes it (the
interrupted prompt once more at most); the main process starts worker 1 again and
goes on feeding the watchdog."""

from __future__ import annotations

import os
import re
import signal

import pytest

from bench.scenarios import REAL_SWITCH_EXTENSIONS, caller_id, lab_scenarios
from tests.freeswitch.conftest import CALL_TIMEOUT_S

pytestmark = pytest.mark.freeswitch
CALLS = 8  # the kernel spreads them over both workers (SO_REUSEPORT), all but surely
VOICEMAIL = next(s for s in lab_scenarios(REAL_SWITCH_EXTENSIONS) if s.name == "cc_menu_voicemail")
WORKER_STARTED = re.compile(r"worker (\d) started \(pid (\d+)\)")
WATCHDOG_USEC = 2_000_000


def worker_pids(process) -> dict[int, int]:
    """The latest pid of each worker, from the main process's log."""
    pids: dict[int, int] = {}
    for _, line in process.lines:
        if match := WORKER_STARTED.search(line):
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def start_two_workers(icall, notify_socket):
    one = icall(outbound=True, service={"workers": "2"})
    main = one.start(env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    notify_socket.wait_for("READY=1", CALL_TIMEOUT_S)
    return one, main


def kill_worker_1(main) -> None:
    victim = worker_pids(main)[1]
    os.kill(victim, signal.SIGKILL)
    main.wait_for_line(rf"worker 1 \(pid {victim}\) exited .*starting it again", CALL_TIMEOUT_S)


def test_a_worker_killed_mid_call_has_its_callers_resumed_by_the_other_one(
        lab, icall, cdr_sink, notify_socket):
    one, main = start_two_workers(icall, notify_socket)
    calls = [lab.place(VOICEMAIL, "icall_out", caller_id(VOICEMAIL, n)) for n in range(CALLS)]
    assert lab.wait(lambda: all(c.in_main_menu() for c in calls), CALL_TIMEOUT_S), \
        [c.path for c in calls]
    kill_worker_1(main)

    for call in calls:
        assert call.ended.wait(CALL_TIMEOUT_S), f"never ended: {call.path}"
    came_back = [c for c in calls if c.sockets == 2]
    assert came_back, "the kernel gave worker 1 none of the calls: nothing was tested"
    wrong = [(c.uuid, c.path) for c in calls if not c.went_right()]
    assert not wrong, wrong
    assert all(c.collapsed_path()[1] <= 1 for c in calls), [c.path for c in calls]
    for call in calls:
        row = one.wait_recorded(call.uuid, cdr_sink)
        assert row["hangup_cause"] == call.hangup_cause == "NORMAL_CLEARING", (call.uuid, row)
        assert cdr_sink.accept_counts()[call.uuid] == 1
        assert one.steps(call.uuid).count(("MainMenu", "2")) == 1, one.steps(call.uuid)


def test_after_a_worker_is_killed_and_started_again_the_main_process_feeds_the_watchdog(
        icall, notify_socket):
    _, main = start_two_workers(icall, notify_socket)
    kill_worker_1(main)
    # Datagrams queued before now are not it.
    while notify_socket.receive(0.05) is not None:
        pass
    notify_socket.wait_for("WATCHDOG=1", 2 * WATCHDOG_USEC / 1e6 + 5)
