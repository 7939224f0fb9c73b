"""`icall db ...` and `icall timecond ...` through the real command line entry."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from service.cli import main
from storage.db import open_database
from storage.migrations import LATEST
from storage.models import TimeConditionRow
from storage.schema_lock import schema_lock
from tests.storage.conftest import WAIT_S

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def icall(backend, tmp_path, monkeypatch, capsys):
    """icall(*argv) -> (status, stdout, stderr) against the backend's database."""
    # The CLI reads ICALL_* overrides from the environment; the test switch is not one.
    monkeypatch.delenv("ICALL_TEST_BACKENDS", raising=False)
    config = tmp_path / "config.ini"
    config.write_text(f"[freeswitch]\npassword = x\n[database]\nurl = {backend.url}\n"
                      "[schedule]\ntimezone = Europe/Berlin\n")

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(["--config", str(config), *argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def test_db_upgrade_creates_the_schema_once_and_status_reports_it(icall):
    status, out, _ = icall("db", "status")
    assert status == 1 and "run `icall db upgrade --config" in out

    assert icall("db", "upgrade")[0] == 0
    status, out, _ = icall("db", "upgrade")
    assert status == 0 and f"already at version {LATEST}" in out
    status, out, _ = icall("db", "status")
    assert status == 0 and f"schema version:  {LATEST} (this icall: {LATEST})" in out
    assert "calls:           0" in out


def test_timecond_commands_before_db_upgrade_say_what_to_run(icall):
    status, _, err = icall("timecond", "list")
    assert status == 1 and "no icall schema yet: run `icall db upgrade --config" in err


def test_timecond_add_list_test_and_remove_work_together(icall, backend):
    icall("db", "upgrade")
    status, out, _ = icall("timecond", "add", "--action", "transfer", "--args", "closed XML new_sales",
                           "--from", "2025-12-25", "--to", "2025-12-26", "--priority", "5",
                           "--note", "christmas")
    assert status == 0 and "added #1 sales_icall [on] prio 5: transfer closed XML new_sales" in out
    assert icall("timecond", "add", "--action", "hangup", "--days", "sat", "--time", "12:00-13:00",
                 "--disabled")[0] == 0

    status, out, _ = icall("timecond", "list")
    assert status == 0
    assert "2025-12-25 to 2025-12-26, every day, all day  # christmas" in out
    assert "#2 sales_icall [off] prio 0: hangup | any date, sat, 12:00-13:00" in out

    status, out, _ = icall("timecond", "test", "--at", "2025-12-25 10:00")
    assert status == 0
    assert "#1: applies" in out and "#2: disabled" in out
    assert "route: transfer closed XML new_sales  (override #1, priority 5, christmas)" in out

    status, out, _ = icall("timecond", "remove", "1")
    assert status == 0 and "removed #1" in out
    db = open_database(backend.url)
    with db.connection_context():
        assert [r.id for r in TimeConditionRow.select().execute(db)] == [2]


@pytest.mark.parametrize(("moment", "route"), [
    ("2025-12-22 10:00", "route: main_menu  (no override applies; schedule: Workday 09:00-20:30)"),
    ("2025-12-22 21:00", "route: call_hst  (no override applies; schedule: Time 20:30-23:00)"),
    ("2025-12-27 09:30", "route: call_cellphone  (no override applies; schedule: NonWorktime)"),
])
def test_timecond_test_without_an_override_shows_the_schedule_and_why(icall, moment, route):
    icall("db", "upgrade")
    status, out, _ = icall("timecond", "test", "--at", moment)
    assert status == 0 and route in out and "none" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--action", "exec"], "--action 'exec' is not allowed; use one of transfer, playback"),
    (["--action", "hangup", "--from", "2025-13-01"], "--from '2025-13-01' is not a date; write YYYY-MM-DD"),
    (["--action", "hangup", "--from", "2025-12-05", "--to", "2025-12-01"],
     "--to 2025-12-01 is before --from 2025-12-05"),
    (["--action", "hangup", "--time", "13:00-12:00"], "--time: range ends before it starts"),
    (["--action", "hangup", "--time", "25:00-26:00"], "--time: not a time of day"),
    (["--action", "hangup", "--days", "mon,fry"], "--days: unknown day 'fry'"),
    (["--action", "exec"], "  playback FILE: plays FILE (a closure announcement), then hangs up"),
    (["--action", "respond", "--args", "5\u0660\u0663"], "--args: respond takes a SIP code 100-699"),
    (["--action", "playback"], "--args: playback takes a file"),
    (["--action", "hangup", "--args", "not a cause"], "--args: hangup takes a cause name"),
])
def test_timecond_add_refuses_bad_input_with_a_clear_message_and_adds_nothing(icall, backend, argv, message):
    icall("db", "upgrade")
    status, _, err = icall("timecond", "add", *argv)
    assert status == 2 and message in err
    db = open_database(backend.url)
    with db.connection_context():
        assert TimeConditionRow.select().count(db) == 0


def test_timecond_test_refuses_a_moment_it_cannot_read(icall):
    icall("db", "upgrade")
    status, _, err = icall("timecond", "test", "--at", "tomorrow")
    assert status == 2 and '--at \'tomorrow\' is not a moment; write "YYYY-MM-DD HH:MM"' in err


def test_timecond_remove_of_an_unknown_id_fails_and_says_which(icall):
    icall("db", "upgrade")
    status, _, err = icall("timecond", "remove", "42")
    assert status == 2 and "no time condition with id 42" in err


def test_timecond_add_help_says_which_actions_exist_and_what_follows_each(icall, capsys):
    with pytest.raises(SystemExit) as leaving:
        main(["timecond", "add", "--help"])
    assert leaving.value.code == 0
    out = capsys.readouterr().out
    for action in ("transfer", "playback", "hangup", "bridge", "respond"):
        assert f"\n  {action} " in out
    assert "then hangs up" in out and "safe_destination" in out


def test_timecond_test_says_what_follows_the_route(icall):
    icall("db", "upgrade")
    icall("timecond", "add", "--action", "playback", "--args", "new_sales/closed.wav",
          "--from", "2025-12-25", "--to", "2025-12-25")
    status, out, _ = icall("timecond", "test", "--at", "2025-12-25 10:00")
    assert status == 0
    assert "route: playback new_sales/closed.wav" in out
    assert "then: playback FILE: plays FILE (a closure announcement), then hangs up" in out


def test_two_db_upgrade_processes_at_once_end_with_one_upgrade_and_no_error(backend, tmp_path):
    if backend.kind == "sqlite":
        pytest.skip("one host: SQLite serialises the two with its write lock")
    config = tmp_path / "config.ini"
    config.write_text(f"[database]\nurl = {backend.url}\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ICALL_")}
    lines: queue.Queue[tuple[int, str]] = queue.Queue()

    readers: list[threading.Thread] = []

    def start(index: int) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "--config", str(config), "db", "upgrade"],
                                   cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stdout = process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: [lines.put((index, line)) for line in stdout], daemon=True)
        reader.start()
        readers.append(reader)
        return process

    holder = open_database(backend.url)
    with holder.connection_context(), schema_lock(holder):  # both units start while it is held
        processes = [start(0), start(1)]
        waiting = set()
        while waiting != {0, 1}:
            index, line = lines.get(timeout=WAIT_S)
            if "waiting for it" in line:
                waiting.add(index)
    assert [p.wait(timeout=WAIT_S * 2) for p in processes] == [0, 0]
    for reader in readers:
        reader.join(WAIT_S)  # every line read (the pipes are closed)
    out: dict[int, str] = {0: "", 1: ""}
    while not lines.empty():
        index, line = lines.get_nowait()
        out[index] += line
    said = sorted(out.values(), key=lambda text: "upgraded from version 0" in text)
    assert f"already at version {LATEST}, nothing to do (upgraded from 0 by another icall" in said[0]
    assert f"schema upgraded from version 0 to {LATEST}" in said[1]
