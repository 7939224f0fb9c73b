"""The built-in schedule: where a call goes when no time-condition row overrides it.

The configuration declares the office's opening hours (one range on weekdays, one on
the days listed in `weekend_days`) and an evening window; every range is `start`
included, `end` excluded, in the office's time zone. Inside the opening hours a call
reaches the main menu, inside the evening window the evening queue (`call_hst`),
otherwise the cellphone queue. The seed's guards disagreed with their own labels; this
means what the configuration says.

Thread-free; `local_now` reads the clock, everything else is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from types import SimpleNamespace
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Route:
    """Where the schedule sends a call, and the step the seed logged for it:
    `step` is Workday / Weekend / Time / NonWorktime, `window` the range that matched
    ("09:00-20:30"), or "" outside every range."""

    state: str
    step: str
    window: str

    @property
    def reason(self) -> str:
        return f"{self.step} {self.window}" if self.window else self.step


def zone_of(schedule: SimpleNamespace) -> tzinfo | None:
    """The configured zone, or None for `local` (the machine's zone)."""
    return None if schedule.timezone == "local" else ZoneInfo(schedule.timezone)


def local_now(schedule: SimpleNamespace) -> datetime:
    """Now, as an aware datetime in the schedule's time zone."""
    zone = zone_of(schedule)
    return datetime.now(zone) if zone is not None else datetime.now().astimezone()


def to_local(schedule: SimpleNamespace, at: datetime) -> datetime:
    """`at` in the schedule's zone; a naive datetime is taken as already local."""
    if at.tzinfo is None:
        return at
    zone = zone_of(schedule)
    return at.astimezone(zone) if zone is not None else at.astimezone()


def decide(schedule: SimpleNamespace, at: datetime) -> Route:
    """The route for a call arriving at `at` (any zone; converted to the schedule's)."""
    local = to_local(schedule, at)
    minute = local.hour * 60 + local.minute
    weekend = local.isoweekday() in schedule.weekend_days
    opening = schedule.weekend_open if weekend else schedule.weekday_open
    if _inside(opening, minute):
        return Route("main_menu", "Weekend" if weekend else "Workday", _show(opening))
    if _inside(schedule.evening, minute):
        return Route("call_hst", "Time", _show(schedule.evening))
    return Route("call_cellphone", "NonWorktime", "")


def route_for(schedule: SimpleNamespace, at: datetime) -> tuple[str, str]:
    """(state, reason): "main_menu", "call_hst" or "call_cellphone", and why."""
    route = decide(schedule, at)
    return route.state, route.reason


def _inside(window: tuple[int, int] | None, minute: int) -> bool:
    return window is not None and window[0] <= minute < window[1]


def _show(window: tuple[int, int] | None) -> str:
    if window is None:
        return "closed"
    start, end = window
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
