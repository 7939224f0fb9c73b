"""`icall cdr status` reads the outbox of the configured database."""

from __future__ import annotations

import argparse
import re

from service.cli_cdr import EXIT_DATABASE, EXIT_STALE, add_commands, cdr_status
from storage.models import CdrOutbox, utc_now
from storage.outbox import claim_due
from tests.cdr.conftest import add_cdrs, make_config


def run_status(config, capsys) -> tuple[int, str]:
    code = cdr_status(argparse.Namespace(config_obj=config))
    return code, capsys.readouterr().out


def test_status_prints_pending_delivered_and_the_oldest_age(db, db_url, capsys):
    add_cdrs(db, 3)
    CdrOutbox.update(delivered_at=utc_now()).where(CdrOutbox.call_uuid == "call-0000").execute(db)
    code, out = run_status(make_config(db_url, url="http://127.0.0.1:9/cdr"), capsys)
    assert code == 0
    assert "pending:             2" in out
    assert "delivered:           1" in out
    assert "oldest pending age:  0 s" in out


def test_status_exits_1_when_cdrs_waited_longer_than_the_retry_ceiling(db, db_url, capsys):
    add_cdrs(db, 1)
    CdrOutbox.update(created_at=CdrOutbox.created_at.python_value("2000-01-01 00:00:00")).execute(db)
    code, out = run_status(make_config(db_url, url="http://127.0.0.1:9/cdr"), capsys)
    assert code == EXIT_STALE
    assert "pending:             1" in out


def test_status_of_a_database_without_the_schema_says_what_to_do(tmp_path, capsys):
    config = make_config(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    code = cdr_status(argparse.Namespace(config_obj=config))
    assert code == EXIT_DATABASE
    assert "icall db upgrade" in capsys.readouterr().err


def test_the_cdr_status_command_is_registered():
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cdr", "status"])
    assert args.func is cdr_status


def test_status_covers_every_node_sharing_the_database_with_a_line_each(db, db_url, capsys):
    add_cdrs(db, 3, prefix="east")
    add_cdrs(db, 2, prefix="west")
    CdrOutbox.update(node="pbx-east").where(CdrOutbox.call_uuid.startswith("east")).execute(db)
    CdrOutbox.update(node="pbx-west").where(CdrOutbox.call_uuid.startswith("west")).execute(db)
    CdrOutbox.update(delivered_at=utc_now()).where(CdrOutbox.call_uuid == "east-0000").execute(db)
    claim_due(db, "pbx-west#1", 1, lease_s=60)  # a poster holding the oldest one right now

    code, out = run_status(make_config(db_url, node="pbx-east", url="http://127.0.0.1:9/cdr"), capsys)

    assert code == 0
    assert "pending:             4" in out and "delivered:           1" in out
    assert "this node:           pbx-east" in out
    assert re.search(r"^pbx-east\s+2\s+1\s+1$", out, re.M), out
    assert re.search(r"^pbx-west\s+2\s+0\s+0$", out, re.M), out
