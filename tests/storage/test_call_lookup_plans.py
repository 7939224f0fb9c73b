"""Every lookup of `icall calls` and `icall call` is served by an index on SQLite: no
scan of the calls table and no sort of its rows, so the answer does not grow with the
database (bench/calls_lookup_bench.py times it on a million calls). Read from SQLite's
own query plan, on the schema `icall db upgrade` makes."""

from __future__ import annotations

from datetime import datetime

import pytest

from storage.call_lookup import CallFilter, listing_queries
from storage.db import open_database
from storage.migrations import upgrade
from storage.models import Call, CallStep, CdrOutbox

SINCE = datetime(2026, 12, 7, 10, 0)
# Filter -> (what it lists, the index SQLite must read the calls from, newest first).
FILTERS = {
    "newest": (CallFilter(), "SCAN t1 USING INDEX calls_started_at"),
    "--since": (CallFilter(since=SINCE), "SEARCH t1 USING INDEX calls_started_at (started_at>?)"),
    "--caller": (CallFilter(caller="5551234"), "SEARCH t1 USING INDEX calls_caller_id_started_at (caller_id=?)"),
    "--node": (CallFilter(node="pbx-a"), "SEARCH t1 USING INDEX calls_node_started_at (node=?)"),
    "--live": (CallFilter(live=True), "SEARCH t1 USING INDEX calls_ended_at_started_at (ended_at=?)"),
    "--ended-in": (CallFilter(ended_in="call_sales"),
                   "SEARCH t1 USING INDEX calls_final_state_started_at (final_state=?)"),
    "--caller --since": (CallFilter(caller="5551234", since=SINCE),
                         "SEARCH t1 USING INDEX calls_caller_id_started_at (caller_id=? AND started_at>?)"),
}


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'icall.sqlite3'}")
    database.connect()
    upgrade(database)
    yield database
    database.close()


def plan(db, query) -> list[str]:
    sql, params = db.get_sql_context().sql(query).query()
    return [row[-1] for row in db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]


@pytest.mark.parametrize("name", FILTERS)
def test_each_listing_filter_reads_the_newest_calls_from_its_index_without_sorting(db, name):
    wanted, calls_from = FILTERS[name]
    for query in listing_queries(wanted):
        steps = plan(db, query)
        assert steps[0] == calls_from, steps
        assert steps[1:] == ["SEARCH t2 USING INDEX cdr_outbox_call_uuid (call_uuid=?) LEFT-JOIN"], steps


def test_a_uuid_prefix_and_a_calls_story_are_index_searches(db):
    prefix = Call.select(Call.uuid).where(Call.uuid >= "3878", Call.uuid < "3879").limit(11)
    assert plan(db, prefix) == ["SEARCH t1 USING COVERING INDEX calls_uuid (uuid>? AND uuid<?)"]
    steps = CallStep.select().where(CallStep.call_uuid == "x").order_by(CallStep.seq)
    assert all(step.startswith("SEARCH") for step in plan(db, steps))
    cdr = CdrOutbox.select().where(CdrOutbox.call_uuid == "x")
    assert all(step.startswith("SEARCH") for step in plan(db, cdr))
