"""Time conditions: the database overrides (holidays, closures) checked before the
built-in schedule, as the seed's `route_time_condition` did with `db_pbx`.

A condition is valid at a moment when it is enabled, the date is inside its date
range, the weekday is one of its weekdays (none listed: every day) and the time of day
is inside its time range (none: all day). Of several valid ones, the highest priority
wins, then the lowest id. Its `action` and `args` are executed as a dialplan app, as is
(`transfer` `closed XML new_sales`, `playback` ..., `hangup` ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

# Apps a time condition may run. The seed executed whatever the row said; we keep the
# ones that make sense on a parked call, so a typo is caught when the row is written.
ALLOWED_ACTIONS = ("transfer", "playback", "hangup", "bridge", "respond")


@dataclass(frozen=True)
class TimeCondition:
    name: str
    action: str
    args: str = ""
    enabled: bool = True
    start_date: date | None = None
    end_date: date | None = None  # inclusive
    weekdays: frozenset[int] = field(default_factory=frozenset)  # ISO: Monday is 1
    start_minute: int | None = None  # minutes since midnight, inclusive
    end_minute: int | None = None  # exclusive
    priority: int = 0
    note: str = ""
    id: int | None = None

    def why_not(self, at: datetime) -> str | None:
        """None when valid at `at` (a local time), else the reason it is not."""
        if not self.enabled:
            return "disabled"
        day = at.date()
        if self.start_date and day < self.start_date:
            return f"starts {self.start_date.isoformat()}"
        if self.end_date and day > self.end_date:
            return f"ended {self.end_date.isoformat()}"
        if self.weekdays and at.isoweekday() not in self.weekdays:
            return "not on this weekday"
        minute = at.hour * 60 + at.minute
        if self.start_minute is not None and minute < self.start_minute:
            return "before its time range"
        if self.end_minute is not None and minute >= self.end_minute:
            return "after its time range"
        return None


def active(conditions: Iterable[TimeCondition], name: str, at: datetime) -> TimeCondition | None:
    """The condition named `name` that applies at `at`, or None."""
    valid = [c for c in conditions if c.name == name and c.why_not(at) is None]
    if not valid:
        return None
    return min(valid, key=lambda c: (-c.priority, c.id if c.id is not None else 0))
