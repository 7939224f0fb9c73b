"""TimeConditionSource: a snapshot calls read without waiting, refreshed in the
background, kept when the database goes away."""

from __future__ import annotations

import logging
from datetime import date, datetime

import pytest

from actors.timeconditions import TimeConditionSource
from ivr.timecond import active
from storage.models import TimeConditionRow
from tests.storage.conftest import WAIT_S, eventually, make_config


@pytest.fixture
def sources():
    started: list[TimeConditionSource] = []
    yield started
    for source in started:
        source.stop(timeout_s=WAIT_S)


def _holiday(db, **columns) -> int:
    values = {"name": "sales_icall", "action": "transfer", "args": "closed XML new_sales",
              "start_date": date(2025, 12, 25), "end_date": date(2025, 12, 26), "priority": 5}
    values.update(columns)
    return TimeConditionRow.insert(**values).execute(db)


def test_rows_become_values_that_pick_the_override_of_the_moment(backend, db, sources):
    first = _holiday(db, weekdays="4", start_minute=600, end_minute=720, note="xmas morning")
    _holiday(db, name="other_flow")
    source = TimeConditionSource(make_config(backend.url), interval_s=3600)
    sources.append(source)
    source.start()

    assert source.refresh(timeout_s=WAIT_S)

    assert len(source.current()) == 2
    [mine] = source.current("sales_icall")
    assert (mine.id, mine.weekdays, mine.start_minute, mine.end_minute) == (first, frozenset({4}), 600, 720)
    assert active(source.current(), "sales_icall", datetime(2025, 12, 25, 11, 0)) == mine
    assert active(source.current(), "sales_icall", datetime(2025, 12, 25, 13, 0)) is None


def test_a_row_added_later_is_seen_after_refresh(backend, db, sources):
    source = TimeConditionSource(make_config(backend.url), interval_s=3600)
    sources.append(source)
    source.start()
    assert source.refresh(timeout_s=WAIT_S)
    assert source.current() == ()

    _holiday(db)

    assert source.refresh(timeout_s=WAIT_S)
    assert [c.action for c in source.current()] == ["transfer"]


def test_the_periodic_refresh_picks_up_changes_without_being_asked(backend, db, sources):
    source = TimeConditionSource(make_config(backend.url, timecond_refresh_s=0.1))
    sources.append(source)
    source.start()
    _holiday(db)

    eventually(lambda: len(source.current()) == 1, what="the periodic refresh")


def test_when_the_database_goes_away_the_last_snapshot_stays_and_it_is_logged_once(
        backend, db, proxy_to, sources, caplog):
    if backend.kind == "sqlite":
        pytest.skip("needs a server to cut off")
    proxy = proxy_to()
    _holiday(db)
    source = TimeConditionSource(make_config(backend.url_via(proxy.port)), interval_s=3600)
    sources.append(source)
    source.start()
    assert source.refresh(timeout_s=WAIT_S)
    proxy.cut()

    with caplog.at_level(logging.WARNING, logger="actors.timeconditions"):
        assert not source.refresh(timeout_s=WAIT_S)
        assert not source.refresh(timeout_s=WAIT_S)
    assert [c.action for c in source.current()] == ["transfer"]
    assert caplog.text.count("cannot read") == 1
    proxy.restore()
    assert source.refresh(timeout_s=WAIT_S)
    assert "readable again" in caplog.text
