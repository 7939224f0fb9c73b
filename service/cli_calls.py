"""`icall calls` (recent calls, one line each) and `icall call UUID` (one call's story).

Both read the database only (storage.call_lookup), so they work on any node of a
cluster sharing one database, and with icall stopped. Times are shown in the
`[schedule] timezone` (the office's clock, as the flow reads it), and `--since` is
read in it too; `--json` prints UTC ISO times for scripts (the database line then goes
to stderr). Exit status: 0 found (an empty listing too), 1 the database cannot be read,
2 bad input, 4 no such call or an ambiguous UUID prefix (its candidates are listed).
Runs in the CLI's main thread on a connection it opens and closes (service.cli_storage).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from ivr.schedule import local_now
from service import calls_text
from service.cli_storage import UsageError
from service.cli_storage import _run as run_with_database
from storage.call_lookup import (
    AMBIGUOUS_SHOWN,
    AmbiguousPrefix,
    CallFilter,
    NoSuchCall,
    call_story,
    find_uuid,
    recent_calls,
)
from storage.migrations import check_schema

EXIT_OK, EXIT_DATABASE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 4
SECTIONS = ("database", "schedule")
MAX_LIMIT = 10_000
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    calls = subparsers.add_parser("calls", help="recent calls, newest first, one line each")
    calls.add_argument("--since", help='from this moment: "2026-12-07 10:00", "10:00" (today), '
                       '"2026-12-07", or an age: 90s, 15m, 2h, 3d')
    calls.add_argument("--caller", help="only this caller id (exactly as stored)")
    calls.add_argument("--node", help="only calls taken by this [service] node")
    calls.add_argument("--ended-in", dest="ended_in", metavar="STATE",
                       help="only calls whose IVR part ended in STATE (e.g. call_sales)")
    calls.add_argument("--live", action="store_true", help="only calls without an end yet")
    calls.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    calls.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    calls.set_defaults(func=lambda args: run_with_database(_list_calls, args), config_sections=SECTIONS)

    call = subparsers.add_parser("call", help="one call's whole story: steps, queue, failures, CDR")
    call.add_argument("uuid", metavar="UUID", help="the call's uuid, or a unique prefix of it")
    call.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    call.set_defaults(func=lambda args: run_with_database(_show_call, args), config_sections=SECTIONS)


def _list_calls(db, config, args) -> int:
    check_schema(db)
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit {args.limit}: give 1 to {MAX_LIMIT}")
    wanted = CallFilter(since=parse_since(args.since, config), caller=args.caller, node=args.node,
                        ended_in=args.ended_in, live=args.live, limit=args.limit)
    rows = recent_calls(db, wanted)
    if args.json:
        print(json.dumps(rows, default=_utc_iso, indent=1))
        return EXIT_OK
    for line in calls_text.listing(rows, config.schedule):
        print(line)
    return EXIT_OK


def _show_call(db, config, args) -> int:
    check_schema(db)
    try:
        uuid = find_uuid(db, args.uuid.strip())
    except NoSuchCall:
        print(f"icall: no call with uuid {args.uuid!r} or starting with it", file=sys.stderr)
        return EXIT_NOT_FOUND
    except AmbiguousPrefix as exc:
        shown = exc.candidates[:AMBIGUOUS_SHOWN]
        more = " (and more)" if len(exc.candidates) > len(shown) else ""
        print(f"icall: {len(shown)} calls{more} start with {exc.prefix!r}; give more of the uuid:",
              file=sys.stderr)
        for line in calls_text.candidates(shown, config.schedule):
            print(f"  {line}", file=sys.stderr)
        return EXIT_NOT_FOUND
    story = call_story(db, uuid)
    if args.json:
        document = {"call": story.call, "steps": story.steps, "fifo_events": story.fifo_events,
                    "failures": story.failures, "cdr": story.cdr}
        print(json.dumps(document, default=_utc_iso, indent=1))
        return EXIT_OK
    for line in calls_text.story(story, config.schedule):
        print(line)
    return EXIT_OK


def _utc_iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def parse_since(text: str | None, config) -> datetime | None:
    """`--since` as a naive UTC datetime: an age (15m) back from now, or a moment in
    the schedule's time zone ("10:00" is today's)."""
    if not text:
        return None
    text = text.strip()
    now = local_now(config.schedule)
    ago = _AGO.match(text)
    if ago:
        moment = now - timedelta(seconds=float(ago.group(1)) * _UNIT_S[ago.group(2)])
    else:
        moment = _moment(text, now)
    return moment.astimezone(UTC).replace(tzinfo=None)


def _moment(text: str, now: datetime) -> datetime:
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=now.tzinfo)
        except ValueError:
            continue
    for pattern in ("%H:%M:%S", "%H:%M"):
        try:
            clock = datetime.strptime(text, pattern)
        except ValueError:
            continue
        return now.replace(hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0)
    raise UsageError(f'--since {text!r} is not a moment; write "2026-12-07 10:00", "10:00", '
                     '"2026-12-07" or an age such as 15m, 2h, 3d')
