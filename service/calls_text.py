"""How `icall calls` and `icall call` print for a terminal (service.cli_calls).

Times arrive as naive UTC (storage.models) and are shown in the schedule's zone.
Pure functions returning lines; no I/O.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from ivr.schedule import to_local
from storage.call_lookup import CallStory

PATH_TAIL = 3  # states of the path shown per line


def local(schedule: SimpleNamespace, at: datetime | None, with_date: bool = True,
          ms: bool = False) -> str:
    if at is None:
        return "-"
    shown = to_local(schedule, at.replace(tzinfo=UTC))
    if not with_date:
        return f"{shown:%H:%M:%S.%f}"[:-3]
    return f"{shown:%Y-%m-%d %H:%M:%S.%f}"[:-3] if ms else f"{shown:%Y-%m-%d %H:%M:%S}"


def _duration(row: dict[str, Any]) -> str:
    if row.get("duration_s") is not None:
        return f"{row['duration_s']}s"
    return "live" if row.get("ended_at") is None else "-"


def _tail(path: list[str]) -> str:
    shown = path[-PATH_TAIL:]
    return ("… > " if len(path) > PATH_TAIL else "") + " > ".join(shown) if shown else "-"


def listing(rows: list[dict[str, Any]], schedule: SimpleNamespace) -> list[str]:
    """A header and one line per call: start, caller, node, path tail, where it ended,
    cause, duration, CDR."""
    if not rows:
        return ["no calls match"]
    header = (f"{'started (' + _zone(schedule) + ')':<21} {'caller':<14} {'node':<10} "
              f"{'ended in':<20} {'cause':<18} {'dur':>5} {'cdr':<9} {'uuid':<36} path")
    lines = [header]
    for row in rows:
        lines.append(
            f"{local(schedule, row['started_at']):<21} {row['caller_id'] or '-':<14.14} "
            f"{row['node'] or '-':<10.10} {row['ended_in'] or '(live)':<20.20} "
            f"{row['hangup_cause'] or '-':<18.18} {_duration(row):>5} {row['cdr']:<9} "
            f"{row['uuid']:<36} {_tail(row['path'])}")
    return lines


def candidates(rows: list[dict[str, Any]], schedule: SimpleNamespace) -> list[str]:
    return [f"{row['uuid']}  {local(schedule, row['started_at'])}  caller {row['caller_id'] or '-'}"
            f"  node {row['node'] or '-'}" for row in rows]


def _zone(schedule: SimpleNamespace) -> str:
    return "local" if schedule.timezone == "local" else schedule.timezone


def story(told: CallStory, schedule: SimpleNamespace) -> list[str]:
    """The call row, then its steps, queue events, failures (with the take-overs they
    caused) and CDR, each with its time."""
    call = told.call
    lines = [f"call {call['uuid']}  (times in {_zone(schedule)})"]
    for label, key in (("caller", "caller_id"), ("caller name", "caller_name"),
                       ("destination", "destination"), ("flow", "flow"), ("node", "node")):
        lines.append(f"  {label + ':':<14}{call.get(key) or '-'}")
    for label, key in (("started", "started_at"), ("answered", "answered_at"), ("ended", "ended_at")):
        lines.append(f"  {label + ':':<14}{local(schedule, call.get(key))}")
    lines.append(f"  {'duration:':<14}{_seconds(call.get('duration_s'))} (billed {_seconds(call.get('billsec_s'))})")
    lines.append(f"  {'hangup cause:':<14}{call.get('hangup_cause') or '-'}")
    lines.append(f"  {'ended in:':<14}{call.get('ended_in') or '(no CDR yet: live, or its hangup unseen)'}"
                 + (f"  (final state {call['final_state']})" if call.get("final_state") else ""))
    lines.append(f"  {'CRM extension:':<15}{call.get('crm_extension') or '-'}")
    lines.append(f"  {'path:':<14}{' > '.join(call['path']) or '-'}")
    lines.append(f"  {'row updated:':<14}{local(schedule, call.get('updated_at'))}")
    lines.append("")
    lines.append(f"steps ({len(told.steps)}), times by the flow's clock:")
    lines += [f"  #{s['seq']:<3} {local(schedule, s['at'], False)}  {s['step']}"
              + (f": {s['value']}" if s['value'] else "") for s in told.steps] or ["  none"]
    lines.append(f"queue events ({len(told.fifo_events)}):")
    lines += [f"  #{e['seq']:<3} {local(schedule, e['at'], False)}  {e['action']} {e['fifo_name'] or ''}".rstrip()
              for e in told.fifo_events] or ["  none"]
    # The supervisor starts a fresh handler after each one (it resumes the call, or
    # sends it to the safe destination after repeated deaths); that take-over has no
    # row of its own.
    lines.append(f"handler failures ({len(told.failures)}), each followed by a take-over:")
    lines += [f"  #{f['seq']:<3} {local(schedule, f['at'], False)}  in {f['state'] or '?'}: {f['error'] or '-'}"
              for f in told.failures] or ["  none"]
    lines += _cdr_lines(told.cdr, schedule)
    return lines


def _seconds(value: int | None) -> str:
    return "-" if value is None else f"{value} s"


def _cdr_lines(cdr: dict[str, Any] | None, schedule: SimpleNamespace) -> list[str]:
    if cdr is None:
        return ["CDR: none yet (written at the hangup)"]
    lines = [f"CDR: {cdr['state']}"]
    lines.append(f"  {'queued:':<16}{local(schedule, cdr['created_at'], ms=True)}")
    lines.append(f"  {'delivered:':<16}{local(schedule, cdr['delivered_at'], ms=True)}")
    # The outbox keeps a count and the last error, not each attempt (storage.outbox).
    lines.append(f"  {'attempts:':<16}{cdr['attempts']}")
    lines.append(f"  {'last error:':<16}{cdr['last_error'] or '-'}")
    if cdr["delivered_at"] is None:
        lines.append(f"  {'next attempt:':<16}{local(schedule, cdr['next_attempt_at'], ms=True)}")
        lines.append(f"  {'held by:':<16}{cdr['claimed_by'] or '-'}"
                     + (f" until {local(schedule, cdr['claimed_until'])}" if cdr["claimed_by"] else ""))
    lines.append(f"  {'node:':<16}{cdr['node'] or '-'}")
    lines.append("  as posted:")
    payload = cdr["payload"]
    text = json.dumps(payload, indent=2, sort_keys=True) if not isinstance(payload, str) else payload
    lines += [f"    {line}" for line in text.splitlines()]
    return lines
