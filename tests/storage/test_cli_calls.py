"""`icall calls` and `icall call UUID` through the command line entry, on rows the
DbWriter's own code (storage.records) wrote, on every backend."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from service.cli import main
from storage.db import open_database
from storage.migrations import upgrade
from storage.models import utc_now
from storage.outbox import Failed, claim_due, settle
from storage.records import commit_batch, prepare

HOUR_S = 3600.0
SALES = ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf", "call_sales", "final_loop"]
MENU = ["welcome", "welcome_wait_playback", "main_menu", "main_menu_wait_dtmf"]


def _cdr(uuid: str, caller: str, started: float, path: list[str], cause: str = "NORMAL_CLEARING"):
    return prepare(uuid, 90, "cdr", {
        "caller_id": caller, "started_at": started, "answered_at": started + 0.5,
        "ended_at": started + 42, "duration_s": 42, "billsec_s": 41, "hangup_cause": cause,
        "final_state": path[-1], "path": path}, node="pbx-a")


@pytest.fixture
def database(backend):
    """Four calls, oldest to newest: a sales-queue call whose CDR was delivered, a
    menu hang-up whose CDR fails, a call with a handler failure and queue events on
    node pbx-b still live, and a live call of another caller."""
    now = utc_now().timestamp()  # the calls an hour apart: --since margins of half an hour
    db = open_database(backend.url)
    with db.connection_context():
        upgrade(db)
        batch = [
            prepare("aaaa1111-sales", 1, "call", {"caller_id": "5551234", "started_at": now - 4 * HOUR_S}, node="pbx-a"),
            prepare("aaaa1111-sales", 2, "step", {"step": "MainMenu", "value": "2", "at": now - 4 * HOUR_S + 10}),
            prepare("aaaa1111-sales", 3, "step", {"step": "SalesFifo", "value": "", "at": now - 4 * HOUR_S + 11}),
            _cdr("aaaa1111-sales", "5551234", now - 4 * HOUR_S, SALES),
            prepare("aaaa2222-menu", 1, "call", {"caller_id": "5551234", "started_at": now - 3 * HOUR_S}, node="pbx-a"),
            _cdr("aaaa2222-menu", "5551234", now - 3 * HOUR_S, MENU, cause="ORIGINATOR_CANCEL"),
            prepare("bbbb3333-live", 1, "call", {"caller_id": "5559999", "started_at": now - 2 * HOUR_S}, node="pbx-b"),
            prepare("bbbb3333-live", 2, "fifo", {"action": "push", "fifo_name": "fifo_sales", "at": now - 2 * HOUR_S + 50,
                                                  "headers": {"FIFO-Action": "push"}}),
            prepare("bbbb3333-live", 3, "failure", {"state": "call_sales", "error": "ValueError: boom",
                                                     "at": now - 2 * HOUR_S + 60}),
            prepare("cccc4444-new", 1, "call", {"caller_id": "5550000", "started_at": now - HOUR_S}, node="pbx-a"),
        ]
        commit_batch(db, batch)
        rows = claim_due(db, "pbx-a#test", 10, 60)
        by_uuid = {row.call_uuid: row for row in rows}
        settle(db, "pbx-a#test", delivered=[by_uuid["aaaa1111-sales"].id],
               failed=[Failed(by_uuid["aaaa2222-menu"], "HTTP 503 from the endpoint",
                              utc_now() + timedelta(seconds=30))], unsent=[])
    return backend


@pytest.fixture
def icall(database, tmp_path, monkeypatch, capsys):
    """icall(*argv) -> (status, stdout, stderr)."""
    monkeypatch.delenv("ICALL_TEST_BACKENDS", raising=False)
    config = tmp_path / "config.ini"
    config.write_text(f"[database]\nurl = {database.url}\n[schedule]\ntimezone = UTC\n")

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(["--config", str(config), *argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def _listed(icall, *argv: str) -> list[dict]:
    status, out, err = icall("calls", "--json", *argv)
    assert status == 0, err
    return json.loads(out)


def test_calls_are_listed_newest_first_with_where_they_ended_and_their_cdr(icall):
    status, out, _ = icall("calls")
    assert status == 0
    lines = out.splitlines()
    assert lines[1].startswith("started (UTC)")
    assert [line.split()[2] for line in lines[2:]] == ["5550000", "5559999", "5551234", "5551234"]
    sales = next(line for line in lines if "aaaa1111-sales" in line)
    for shown in ("call_sales", "NORMAL_CLEARING", "42s", "delivered", "pbx-a", "call_sales > final_loop"):
        assert shown in sales
    assert "failing" in next(line for line in lines if "aaaa2222-menu" in line)
    assert "(live)" in next(line for line in lines if "cccc4444-new" in line)

    rows = _listed(icall)
    assert [row["uuid"] for row in rows] == ["cccc4444-new", "bbbb3333-live", "aaaa2222-menu", "aaaa1111-sales"]
    assert rows[3]["ended_in"] == "call_sales" and rows[3]["cdr"] == "delivered"
    assert rows[3]["started_at"].endswith("Z")
    assert rows[2]["ended_in"] == "main_menu_wait_dtmf" and rows[2]["cdr"] == "failing"
    assert rows[2]["cdr_error"] == "HTTP 503 from the endpoint"
    assert rows[0]["cdr"] == "none" and rows[0]["ended_in"] is None


def test_each_filter_narrows_the_listing(icall):
    def uuids(*argv: str) -> list[str]:
        return [row["uuid"] for row in _listed(icall, *argv)]

    assert uuids("--caller", "5551234") == ["aaaa2222-menu", "aaaa1111-sales"]
    assert uuids("--node", "pbx-b") == ["bbbb3333-live"]
    assert uuids("--live") == ["cccc4444-new", "bbbb3333-live"]
    assert uuids("--ended-in", "call_sales") == ["aaaa1111-sales"]
    assert uuids("--ended-in", "main_menu_wait_dtmf") == ["aaaa2222-menu"]
    assert uuids("--since", "150m") == ["cccc4444-new", "bbbb3333-live"]
    assert uuids("--limit", "1") == ["cccc4444-new"]
    assert uuids("--caller", "5551234", "--since", "3.5h") == ["aaaa2222-menu"]
    assert uuids("--caller", "nobody") == []


def test_a_unique_uuid_prefix_tells_the_whole_story_of_the_call(icall):
    status, out, _ = icall("call", "bbbb")
    assert status == 0
    assert "call bbbb3333-live" in out
    assert "push fifo_sales" in out
    assert "in call_sales: ValueError: boom" in out
    assert "CDR: none yet" in out

    status, out, _ = icall("call", "aaaa2222", "--json")
    assert status == 0
    story = json.loads(out)
    assert story["call"]["hangup_cause"] == "ORIGINATOR_CANCEL"
    assert story["cdr"]["state"] == "failing" and story["cdr"]["attempts"] == 1
    assert story["cdr"]["last_error"] == "HTTP 503 from the endpoint"
    assert story["cdr"]["payload"]["node"] == "pbx-a"  # the CDR as posted

    status, out, _ = icall("call", "aaaa1111-sales")
    assert status == 0
    assert "MainMenu: 2" in out and "SalesFifo" in out
    assert "CDR: delivered" in out and '"caller_id": "5551234"' in out


def test_an_ambiguous_prefix_lists_the_candidates_and_an_unknown_uuid_is_said(icall):
    status, out, err = icall("call", "aaaa")
    assert status == 4
    assert "2 calls start with 'aaaa'" in err
    assert "aaaa1111-sales" in err and "aaaa2222-menu" in err

    status, _, err = icall("call", "dddd")
    assert status == 4 and "no call with uuid 'dddd'" in err


def test_a_since_that_is_no_moment_is_refused_saying_what_to_write(icall):
    status, _, err = icall("calls", "--since", "yesterday")
    assert status == 2
    assert "--since 'yesterday' is not a moment" in err and "15m" in err
    assert icall("calls", "--since", "2026-12-07 10:00")[0] == 0
