"""The service process SIGKILLed mid-traffic and started again: live calls spread over
every state are taken over where they were. Real processes (`icall run`), the stand-in
in this process; the figures are printed (run with -s to see them)."""

from __future__ import annotations

import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from fakeswitch import FakeSwitch
from fakeswitch.fake_crm import FakeCrm, Reply
from storage.db import open_database
from storage.models import Call, CallStep
from tests.service.conftest import ICALL_BIN, RunningIcall, service_env, write_config
from tests.waiting import wait_until

CALLS = int(os.environ.get("ICALL_KILL_TEST_CALLS", "200"))
PLACE_OVER_S = 6.0  # calls are placed over this long, then the service is killed
USERS = {"801": "answer:25", "802": "noanswer:4"}
# caller keys -> where the call must end (None: the IVR hangs up after the goodbye).
SCENARIOS = [
    ("1", ("transfer", "fifo_hst XML new_sales")),
    ("2", ("transfer", "fifo_sales XML new_sales")),  # the CRM never knows: grace, queue
    ("5|801", ("bridge", "user/801")),
    ("5|802|2", ("transfer", "VM_802 XML new_sales")),
    ("7", None),
]
OPENING = [("Workday", "00:00-24:00"), ("MainMenu", "")]
# The step rows each scenario leaves, once each (values cut at 20 characters).
STEPS = {
    "1": [*OPENING, ("MainMenu", "1")],
    "2": [*OPENING, ("MainMenu", "2"), ("SalesFifo", "")],
    "5|801": [*OPENING, ("MainMenu", "5"), ("CallExtn", "801")],
    "5|802|2": [*OPENING, ("MainMenu", "5"), ("CallExtn", "802"), ("CCFailure", "NO_ANSWER"),
                ("CCMenu", "2")],
    "7": [*OPENING, ("MainMenu", ""), ("InvalidChoice", "menu_number=7 read_r")],
}
PROMPTS = ("playback", "play_and_get_digits")


@pytest.fixture
def switch():
    sw = FakeSwitch(port=0, password="ClueCon", time_scale=1.0, users=USERS)
    sw.start()
    yield sw
    sw.stop()


def start_icall(config: Path, state: Path) -> RunningIcall:
    process = RunningIcall([str(ICALL_BIN), "--config", str(config), "run"],
                           service_env(state), cwd=state)
    process.wait_for_line(r"event connection .* up|subscribed", timeout_s=60)
    return process


def test_a_sigkilled_service_started_again_takes_every_call_over_where_it_was(tmp_path, switch):
    db_path = tmp_path / "icall.sqlite3"
    with FakeCrm({}) as crm:
        crm.default = Reply(delay_s=30.0)  # the CRM hangs: sales callers wait out the grace
        config = write_config(tmp_path / "config.ini", switch.port, **{
            "database": {"url": f"sqlite:///{db_path}"},
            "crm": {"enabled": "true", "base_url": crm.url},
            "ivr": {"crm_grace_ms": "3000", "prompt_timeout_ms": "2000", "hangup_linger_s": "0.5",
                    "ring_timeout_s": "30"},
            "schedule": {"timezone": "UTC", "weekday_open": "00:00-24:00",
                         "weekend_open": "00:00-24:00", "evening": "closed"},
        })
        subprocess_db_upgrade(config, tmp_path)
        first = start_icall(config, tmp_path)
        placed: dict[str, tuple[str, tuple[str, str] | None]] = {}
        gap_s = PLACE_OVER_S / CALLS
        for n in range(CALLS):
            keys, end = SCENARIOS[n % len(SCENARIOS)]
            variables = {"fake_dtmf": keys}
            if keys == "2":
                variables.update(fake_fifo="real", fake_hangup_after_s="40")
            uuid = switch.place_call(caller_id=f"55599{n:04d}", variables=variables)
            placed[uuid] = (keys, end)
            time.sleep(gap_s)  # pacing the load, not waiting for anything
        first.process.kill()
        first.process.wait(10)
        killed_at = time.monotonic()
        second = start_icall(config, tmp_path)
        try:
            for uuid in placed:
                if not switch.wait_hangup(uuid, timeout=120):
                    record = switch.call_record(uuid)
                    lines = [line for _, line in first.lines + second.lines if uuid[:8] in line]
                    raise AssertionError(f"call {uuid} {placed[uuid][0]} never ended: "
                                         f"{record.commands} {record.received} {record.events[-8:]}\n"
                                         + "\n".join(lines[-30:]))
            db = open_database(f"sqlite:///{db_path}")
            ended = Call.hangup_cause.is_null(False)
            if not wait_until(lambda: Call.select().where(ended).count(db) >= CALLS, timeout_s=60):
                open_rows = list(Call.select().where(~ended).dicts().execute(db))
                missing = set(placed) - {r["uuid"] for r in Call.select(Call.uuid).dicts().execute(db)}
                lines = [line for _, line in second.lines
                         if any(r["uuid"][:8] in line for r in open_rows)]
                raise AssertionError(f"calls without an end: {[r['uuid'] for r in open_rows]}; "
                                     f"no row: {len(missing)}\n" + "\n".join(lines[-40:]))
            report(switch, placed, db, second, killed_at)
            db.close()
        finally:
            second.terminate()


def subprocess_db_upgrade(config: Path, cwd: Path) -> None:
    import subprocess

    subprocess.run([str(ICALL_BIN), "--config", str(config), "db", "upgrade"], check=True,
                   cwd=cwd, env=service_env(cwd), capture_output=True, timeout=60)


def report(switch: FakeSwitch, placed: dict, db, second: RunningIcall, killed_at: float) -> None:
    repeated, after_handoff, wrong_end = 0, 0, []
    for uuid, (keys, end) in placed.items():
        record = switch.call_record(uuid)
        commands = [c for c in record.commands if not c[1].startswith("icall_ckpt=")]
        prompts = Counter(c for c in commands if c[0] in PROMPTS)
        extra = sum(count - 1 for count in prompts.values())
        assert extra <= 1, f"{keys}: prompts repeated {extra} times: {commands}"
        repeated += extra
        received = [app for app, _ in record.received]
        if "transfer" in received:
            after_handoff += len(received) - received.index("transfer") - 1
        final = [c for c in commands if c[0] in ("transfer", "bridge")]
        if end is None:
            ok = not final and record.hangup_cause == "NORMAL_CLEARING"
        else:
            ok = bool(final) and final[-1] == end
        if not ok:
            wrong_end.append((keys, commands))
    steps: dict[str, list[tuple[str, str]]] = {}
    for step in CallStep.select().order_by(CallStep.seq).execute(db):
        steps.setdefault(step.call_uuid, []).append((step.step, (step.value or "")[:20]))
    wrong_steps = [(keys, steps.get(uuid)) for uuid, (keys, _) in placed.items()
                   if steps.get(uuid) != STEPS[keys]]
    rows = Call.select().where(Call.uuid.in_(list(placed))).count(db)
    takeovers = second.matching(r"taking over: (resume|skip|start)")
    resumed = [t for t, line in takeovers if "taking over: resume" in line]
    started = second.started_at
    delays = sorted(t - started for t, _ in takeovers)
    p50 = statistics.median(delays) if delays else float("nan")
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan")
    print(f"\ncalls {len(placed)}, taken over {len(takeovers)} (resumed {len(resumed)}), "
          f"prompts repeated {repeated}, commands after hand-off {after_handoff}, "
          f"nested apps {switch._call(lambda: switch.switch.nested_apps)}, "
          f"take-over after the new process started p50 {p50:.2f} s p99 {p99:.2f} s, "
          f"restart gap {started - killed_at:.2f} s")
    assert after_handoff == 0
    assert switch._call(lambda: switch.switch.nested_apps) == 0
    assert not wrong_end, f"{len(wrong_end)} calls ended elsewhere: {wrong_end[:3]}"
    assert not wrong_steps, f"{len(wrong_steps)} calls with other steps: {wrong_steps[:3]}"
    assert rows == len(placed)
    assert re.search(r"", "")
