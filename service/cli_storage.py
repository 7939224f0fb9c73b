"""`icall db upgrade|status` and `icall timecond list|add|remove|test`.

Each command gets the loaded Config as `args.config_obj`, prints for an operator and
returns an exit status: 0 done, 1 the database refused or is unreachable, 2 bad input.
Runs in the command's main thread, on a connection it opens and closes itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date, datetime

from peewee import DatabaseError

from ivr import timecond
from ivr.config import clock_range, weekdays
from storage.db import StorageError, open_database, redact
from storage.migrations import LATEST, SchemaError, check_schema, schema_version, upgrade
from storage.models import Call, CdrOutbox, TimeConditionRow

EXIT_OK, EXIT_DATABASE, EXIT_USAGE = 0, 1, 2
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# The configuration sections each command reads: nothing else is validated for it.
DB = ("database",)
DB_IVR = ("database", "ivr")
DB_IVR_SCHEDULE = ("database", "ivr", "schedule")


class UsageError(Exception):
    """What the operator typed cannot be used; the message says why."""


def add_commands(subparsers) -> None:
    db = subparsers.add_parser("db", help="create, migrate or inspect the database schema")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    _leaf(actions, "upgrade", "create the schema or migrate it to this version", _db_upgrade, DB)
    _leaf(actions, "status", "show the schema version and what the database holds", _db_status, DB)

    tc = subparsers.add_parser("timecond", help="routing overrides: holidays, closures")
    actions = tc.add_subparsers(dest="timecond_command", required=True, metavar="ACTION")
    listing = _leaf(actions, "list", "list the time conditions", _tc_list, DB)
    listing.add_argument("--name", help="only this name (default: all)")
    add = _leaf(actions, "add", "add a time condition", _tc_add, DB_IVR)
    add.formatter_class = argparse.RawDescriptionHelpFormatter
    add.epilog = "actions (the IVR's part of the call ends with each):\n" + _actions_text()
    add.add_argument("--name", help="condition set (default: [ivr] time_condition)")
    add.add_argument("--action", required=True,
                     help=f"one of {', '.join(timecond.ALLOWED_ACTIONS)}: see below")
    add.add_argument("--args", default="", help="the action's argument, e.g. 'closed XML new_sales'")
    add.add_argument("--from", dest="from_date", help="first day, YYYY-MM-DD")
    add.add_argument("--to", dest="to_date", help="last day (included), YYYY-MM-DD")
    add.add_argument("--days", default="", help="weekdays, e.g. mon,tue (default: every day)")
    add.add_argument("--time", default="", help="HH:MM-HH:MM, end excluded (default: all day)")
    add.add_argument("--priority", type=int, default=0, help="higher wins (default 0)")
    add.add_argument("--note", default="", help="why this exists")
    add.add_argument("--disabled", action="store_true", help="add it switched off")
    remove = _leaf(actions, "remove", "remove time conditions by id", _tc_remove, DB)
    remove.add_argument("ids", nargs="+", type=int, metavar="ID")
    test = _leaf(actions, "test", "show the route a call would get at a moment, and why", _tc_test,
                 DB_IVR_SCHEDULE)
    test.add_argument("--at", help='"YYYY-MM-DD HH:MM" in the schedule\'s time zone (default: now)')
    test.add_argument("--name", help="condition set (default: [ivr] time_condition)")


def _actions_text() -> str:
    return "\n".join(f"  {text}" for text in timecond.ACTIONS.values())


def _leaf(actions, name: str, help_text: str, run: Callable,
          sections: tuple[str, ...]) -> argparse.ArgumentParser:
    """A command that reads only `sections` of the configuration (see cli.main)."""
    parser = actions.add_parser(name, help=help_text)
    # `icall db upgrade --config x` as well as `icall --config x db upgrade`.
    parser.add_argument("--config", dest="config_sub", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(func=lambda args: _run(run, args), config_sections=sections)
    return parser


def _run(command: Callable, args) -> int:
    config = args.config_obj
    # Said first, every time: with `[database] url` empty the file is the service's
    # (see ivr.config.default_state_dir), and an operator should see which one it is.
    # On stderr when stdout is for a script (`--json`).
    print(f"database: {redact(config.database.url)}",
          file=sys.stderr if getattr(args, "json", False) else sys.stdout)
    try:
        db = open_database(config.database.url)
        with db.connection_context():
            return command(db, config, args)
    except UsageError as exc:
        print(f"icall: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SchemaError as exc:
        hint = getattr(args, "config_path", None) or "<your config.ini>"
        print(f"icall: {str(exc).replace('<your config.ini>', hint)}", file=sys.stderr)
        return EXIT_DATABASE
    except (StorageError, DatabaseError) as exc:
        print(f"icall: database {redact(config.database.url)}: {exc}", file=sys.stderr)
        return EXIT_DATABASE


# --- db


def _db_upgrade(db, config, args) -> int:
    def say_waiting() -> None:
        # Two nodes' units starting together: the other one migrates, this one waits.
        print("another `icall db upgrade` is running on this database: waiting for it", flush=True)

    before = schema_version(db)
    applied = upgrade(db, on_wait=say_waiting)
    if applied:
        print(f"schema upgraded from version {before} to {applied[-1]}")
    else:
        print(f"schema already at version {schema_version(db)}, nothing to do"
              + (f" (upgraded from {before} by another icall meanwhile)" if schema_version(db) != before else ""))
    return EXIT_OK


def _db_status(db, config, args) -> int:
    version = schema_version(db)
    print(f"schema version:  {version} (this icall: {LATEST})")
    try:
        check_schema(db)
    except SchemaError as exc:
        print(f"status:          {exc}")
        return EXIT_DATABASE
    waiting = CdrOutbox.select().where(CdrOutbox.delivered_at.is_null()).count(db)
    print(f"calls:           {Call.select().count(db)}")
    print(f"CDRs waiting:    {waiting}")
    print(f"time conditions: {TimeConditionRow.select().count(db)}")
    return EXIT_OK


# --- timecond


def _tc_list(db, config, args) -> int:
    check_schema(db)
    query = TimeConditionRow.select().order_by(TimeConditionRow.name, TimeConditionRow.id)
    if args.name:
        query = query.where(TimeConditionRow.name == args.name)
    rows = list(query.execute(db))
    if not rows:
        print("no time conditions" + (f" named {args.name!r}" if args.name else ""))
        return EXIT_OK
    for row in rows:
        print(describe(row.to_value()))
    return EXIT_OK


def describe(condition: timecond.TimeCondition) -> str:
    """One line for an operator: `#3 sales_icall [on] prio 10: transfer closed XML ... `."""
    days = ",".join(_DAY_NAMES[d - 1] for d in sorted(condition.weekdays)) or "every day"
    dates = f"{condition.start_date or '…'} to {condition.end_date or '…'}"
    if not condition.start_date and not condition.end_date:
        dates = "any date"
    hours = "all day"
    if condition.start_minute is not None or condition.end_minute is not None:
        hours = f"{_clock(condition.start_minute or 0)}-{_clock(condition.end_minute or 1440)}"
    state = "on" if condition.enabled else "off"
    note = f"  # {condition.note}" if condition.note else ""
    return (f"#{condition.id} {condition.name} [{state}] prio {condition.priority}: "
            f"{condition.action} {condition.args}".rstrip()
            + f" | {dates}, {days}, {hours}{note}")


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _tc_add(db, config, args) -> int:
    columns = _columns_from_args(args, default_name=config.ivr.time_condition)
    check_schema(db)
    new_id = TimeConditionRow.insert(**columns).execute(db)
    added = TimeConditionRow.select().where(TimeConditionRow.id == new_id).get(db)
    print(f"added {describe(added.to_value())}")
    print(f"every running icall on this database uses it within {config.database.timecond_refresh_s:g}s")
    return EXIT_OK


def _columns_from_args(args, default_name: str) -> dict:
    action = args.action.strip().lower()
    if action not in timecond.ALLOWED_ACTIONS:
        raise UsageError(f"--action {args.action!r} is not allowed; use one of "
                         f"{', '.join(timecond.ALLOWED_ACTIONS)}:\n{_actions_text()}")
    problem = timecond.problem_with(action, args.args.strip())
    if problem is not None:
        raise UsageError(f"--args: {problem}")
    start, end = _date(args.from_date, "--from"), _date(args.to_date, "--to")
    if start and end and end < start:
        raise UsageError(f"--to {end} is before --from {start}")
    try:
        days = weekdays(args.days)
    except ValueError as exc:
        raise UsageError(f"--days: {exc}") from None
    try:
        minutes = clock_range(args.time) if args.time.strip() else None
    except ValueError as exc:
        raise UsageError(f"--time: {exc}") from None
    if args.time.strip() and minutes is None:
        raise UsageError("--time: give HH:MM-HH:MM (leave it out for all day)")
    return {
        "name": (args.name or default_name).strip(), "action": action, "args": args.args.strip(),
        "enabled": not args.disabled, "start_date": start, "end_date": end,
        "weekdays": TimeConditionRow.weekdays_text(days),
        "start_minute": minutes[0] if minutes else None,
        "end_minute": minutes[1] if minutes else None,
        "priority": args.priority, "note": args.note,
    }


def _date(text: str | None, option: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a date; write YYYY-MM-DD, e.g. 2025-12-25") from None


def _tc_remove(db, config, args) -> int:
    check_schema(db)
    missing = []
    for condition_id in args.ids:
        deleted = TimeConditionRow.delete().where(TimeConditionRow.id == condition_id).execute(db)
        if deleted:
            print(f"removed #{condition_id}")
        else:
            missing.append(condition_id)
    if missing:
        print(f"icall: no time condition with id {', '.join(map(str, missing))}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _tc_test(db, config, args) -> int:
    at = _moment(args.at, config)
    name = args.name or config.ivr.time_condition
    check_schema(db)
    rows = TimeConditionRow.select().where(TimeConditionRow.name == name).order_by(TimeConditionRow.id)
    conditions = [row.to_value() for row in rows.execute(db)]
    print(f"at {at:%a %Y-%m-%d %H:%M} ({config.schedule.timezone}), time conditions {name!r}:")
    for condition in conditions:
        print(f"  #{condition.id}: {condition.why_not(at) or 'applies'}")
    if not conditions:
        print("  none")
    chosen = timecond.active(conditions, name, at)
    if chosen is not None:
        print(f"route: {chosen.action} {chosen.args}".rstrip()
              + f"  (override #{chosen.id}, priority {chosen.priority}{', ' + chosen.note if chosen.note else ''})")
        problem = timecond.problem_with(chosen.action, chosen.args)
        print(f"  then: {problem}; the call goes to {config.ivr.safe_destination}" if problem
              else f"  then: {timecond.ACTIONS[chosen.action]}")
        return EXIT_OK
    try:
        from ivr.schedule import route_for
    except ImportError:
        print("route: no override applies; the built-in schedule (ivr.schedule) is not "
              "available in this build, so the schedule's answer cannot be shown")
        return EXIT_DATABASE
    state, reason = route_for(config.schedule, at)
    print(f"route: {state}  (no override applies; schedule: {reason})")
    return EXIT_OK


def _moment(text: str | None, config) -> datetime:
    """`--at` as a naive local time in the schedule's zone (now if not given)."""
    if not text:
        from ivr.schedule import local_now

        return local_now(config.schedule).replace(tzinfo=None)
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M")
    except ValueError:
        raise UsageError(f'--at {text!r} is not a moment; write "YYYY-MM-DD HH:MM", '
                         'e.g. "2025-12-25 10:30"') from None
