"""Time conditions: the database overrides (holidays, closures) checked before the
built-in schedule, as the seed's `route_time_condition` did with `db_pbx`.

A condition is valid at a moment when it is enabled, the date is inside its date
range, the weekday is one of its weekdays (none listed: every day) and the time of day
is inside its time range (none: all day). Of several valid ones, the highest priority
wins, then the lowest id.

Its `action` decides the rest of the call, so that no caller is left parked in silence
(the seed ran the row's app and then waited for a hangup that might never come). The
IVR's part always ends: `ACTIONS` says what each one does and what follows, and
`problem_with` checks a row's args before anything is sent (a bad row sends the call to
`[ivr] safe_destination`). Arguments reach a command, so they are ASCII where they are
names or numbers (a Unicode digit is not a SIP code).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

# What each action does, and what follows it: for operators (`icall timecond add
# --help`, its errors) and for the flow, which follows this table (ivr/icall.py,
# state `time_condition`). The seed executed whatever the row said; we keep the
# actions that make sense on a parked call, so a typo is caught when the row is written.
ACTIONS = {
    "transfer": "transfer EXTENSION [XML CONTEXT]: the call leaves the IVR for that "
                "dialplan extension (context: [ivr] context when not given)",
    "playback": "playback FILE: plays FILE (a closure announcement), then hangs up",
    "hangup": "hangup [CAUSE]: ends the call with that cause (default NORMAL_CLEARING)",
    "bridge": "bridge DIALSTRING: rings it for [ivr] ring_timeout_s; answered, the call "
              "ends with the callee; not answered, the call goes to [ivr] safe_destination",
    "respond": "respond CODE [TEXT]: sends that SIP response (it only reaches a caller "
               "whose call is not answered yet), then hangs up",
}
ALLOWED_ACTIONS = tuple(ACTIONS)

# ASCII only, explicitly: these reach a command (a cause name, a SIP code, a dial string).
_CAUSE = re.compile(r"[A-Z][A-Z0-9_]*", re.ASCII)
_SIP_CODE = re.compile(r"[1-6][0-9][0-9]( [ -~]+)?", re.ASCII)
_PRINTABLE_ASCII = re.compile(r"[!-~]+( [!-~]+)*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def problem_with(action: str, args: str) -> str | None:
    """None when `action args` can be carried out as `ACTIONS` says, else why not."""
    if action not in ACTIONS:
        return f"unknown action {action!r}; use one of {', '.join(ALLOWED_ACTIONS)}"
    if action == "hangup":
        if args and not _CAUSE.fullmatch(args):
            return f"hangup takes a cause name such as NORMAL_CLEARING, not {args!r}"
    elif action == "respond":
        if not _SIP_CODE.fullmatch(args):
            return f"respond takes a SIP code 100-699 (digits 0-9), not {args!r}"
    elif action == "transfer":
        words = args.split()
        if not _PRINTABLE_ASCII.fullmatch(args) or not 1 <= len(words) <= 3:
            return f"transfer takes 'EXTENSION [XML CONTEXT]' in ASCII, not {args!r}"
    elif action == "bridge":
        if not _PRINTABLE_ASCII.fullmatch(args):
            return f"bridge takes a dial string in ASCII, such as user/801, not {args!r}"
    elif action == "playback":
        if not args.strip() or _CONTROL.search(args):
            return f"playback takes a file, on one line, not {args!r}"
    return None


def transfer_target(args: str, context: str) -> str:
    """`EXTENSION XML CONTEXT`: a bare extension would be looked up in the channel's
    current context (see DESIGN.md), so the configured one is added."""
    words = args.split()
    if len(words) == 1:
        return f"{words[0]} XML {context}"
    if len(words) == 2:
        return f"{words[0]} {words[1]} {context}"
    return " ".join(words)


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
