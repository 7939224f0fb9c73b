"""The built-in schedule, on every boundary minute, in a non-UTC zone across DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ivr.config import load_config
from ivr.schedule import decide, local_now, route_for

BERLIN = ZoneInfo("Europe/Berlin")


def schedule(**keys: str):
    environ = {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_SCHEDULE_TIMEZONE": "Europe/Berlin"}
    environ.update({f"ICALL_SCHEDULE_{k.upper()}": v for k, v in keys.items()})
    return load_config(None, environ).schedule


def berlin(day: int, hour: int, minute: int) -> datetime:
    """2026-11-<day>: the 27th is a Friday, the 28th a Saturday."""
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(("at", "state", "reason"), [
    (berlin(25, 8, 59), "call_cellphone", "NonWorktime"),
    (berlin(25, 9, 0), "main_menu", "Workday 09:00-20:30"),
    (berlin(25, 20, 29), "main_menu", "Workday 09:00-20:30"),
    (berlin(25, 20, 30), "call_hst", "Time 20:30-23:00"),
    (berlin(25, 22, 59), "call_hst", "Time 20:30-23:00"),
    (berlin(25, 23, 0), "call_cellphone", "NonWorktime"),
    (berlin(27, 23, 59), "call_cellphone", "NonWorktime"),
    (berlin(28, 0, 0), "call_cellphone", "NonWorktime"),
    (berlin(28, 9, 0), "call_cellphone", "NonWorktime"),
    (berlin(28, 9, 59), "call_cellphone", "NonWorktime"),
    (berlin(28, 10, 0), "main_menu", "Weekend 10:00-20:30"),
    (berlin(28, 20, 29), "main_menu", "Weekend 10:00-20:30"),
    (berlin(28, 20, 30), "call_hst", "Time 20:30-23:00"),
    (berlin(29, 22, 59), "call_hst", "Time 20:30-23:00"),
    (berlin(29, 23, 0), "call_cellphone", "NonWorktime"),
])
def test_each_boundary_minute_routes_as_the_schedule_says(at, state, reason):
    assert route_for(schedule(), at) == (state, reason)


def test_friday_evening_rolls_into_a_closed_saturday_morning_at_midnight():
    assert decide(schedule(), berlin(27, 23, 59)).state == "call_cellphone"
    assert decide(schedule(), berlin(28, 9, 30)).state == "call_cellphone"
    assert decide(schedule(), berlin(27, 9, 30)).state == "main_menu"


def test_the_seeds_mislabelled_windows_now_mean_what_they_say():
    # The seed sent a workday 21:00-21:30 to the cellphone and opened weekends at 11:00.
    assert decide(schedule(), berlin(25, 21, 0)).state == "call_hst"
    assert decide(schedule(), berlin(28, 10, 30)).state == "main_menu"


def test_an_instant_in_another_zone_is_judged_on_the_office_clock():
    # 08:30 UTC is 09:30 in Berlin in winter (CET, +01:00): open.
    assert decide(schedule(), datetime(2026, 11, 25, 8, 30, tzinfo=UTC)).state == "main_menu"
    # 07:30 UTC is 08:30 in Berlin: not yet.
    assert decide(schedule(), datetime(2026, 11, 25, 7, 30, tzinfo=UTC)).state == "call_cellphone"


def test_the_opening_minute_follows_daylight_saving_time():
    # Sunday 2026-03-29 Berlin moves to CEST (+02:00): 08:00 UTC is 10:00, the weekend
    # opening minute; the Saturday before, 08:00 UTC was only 09:00 (CET).
    assert decide(schedule(), datetime(2026, 3, 29, 8, 0, tzinfo=UTC)).state == "main_menu"
    assert decide(schedule(), datetime(2026, 3, 29, 7, 59, tzinfo=UTC)).state == "call_cellphone"
    assert decide(schedule(), datetime(2026, 3, 28, 8, 0, tzinfo=UTC)).state == "call_cellphone"
    assert decide(schedule(), datetime(2026, 3, 28, 9, 0, tzinfo=UTC)).state == "main_menu"
    # Back to CET on Sunday 2026-10-25: 09:00 UTC is 10:00 again.
    assert decide(schedule(), datetime(2026, 10, 25, 9, 0, tzinfo=UTC)).state == "main_menu"
    assert decide(schedule(), datetime(2026, 10, 25, 8, 59, tzinfo=UTC)).state == "call_cellphone"


def test_weekend_days_come_from_the_configuration():
    friday_morning = berlin(27, 9, 30)
    assert decide(schedule(weekend_days="fri,sat"), friday_morning).state == "call_cellphone"
    sunday_morning = berlin(29, 9, 30)
    assert decide(schedule(weekend_days="fri,sat"), sunday_morning).state == "main_menu"


def test_a_closed_weekend_sends_weekend_days_to_the_evening_or_cellphone_only():
    closed = schedule(weekend_open="closed")
    assert decide(closed, berlin(28, 12, 0)).state == "call_cellphone"
    assert decide(closed, berlin(28, 21, 0)).state == "call_hst"


def test_a_naive_time_is_taken_as_office_time():
    assert decide(schedule(), datetime(2026, 11, 25, 9, 0)).state == "main_menu"


def test_local_now_is_aware_and_in_the_configured_zone():
    now = local_now(schedule())
    assert now.tzinfo == BERLIN
    assert now.utcoffset() == datetime.now(BERLIN).utcoffset()


def test_local_now_with_the_local_zone_is_aware():
    now = local_now(schedule(timezone="local"))
    assert now.tzinfo is not None
    assert abs((now - datetime.now(UTC)).total_seconds()) < 60
