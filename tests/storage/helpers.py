"""Building DbWrites the way a call actor does, and reading rows back."""

from __future__ import annotations

import uuid as uuidlib

from actors.messages import DbWrite

STARTED = 1_766_656_800.123456  # 2025-12-25 10:00:00.123456 UTC


def one_call(reply_to=None, call_uuid: str | None = None, steps: int = 5) -> list[DbWrite]:
    """The writes one call produces: its row, steps, a fifo event, its CDR."""
    u = call_uuid or str(uuidlib.uuid4())
    writes = [DbWrite(u, 1, "call", {"uuid": u, "caller_id": "5551001", "caller_name": "Ann",
                                     "destination": "100", "started_at": STARTED, "flow": "icall"},
                      reply_to)]
    for n in range(steps):
        writes.append(DbWrite(u, 2 + n, "step", {"uuid": u, "step": f"Step{n}", "value": str(n),
                                                 "at": STARTED + n}, reply_to))
    seq = 2 + steps
    writes.append(DbWrite(u, seq, "fifo", {"uuid": u, "action": "bridge-caller-start",
                                           "fifo_name": "fifo_sales", "at": STARTED + 10,
                                           "headers": {"FIFO-Action": "bridge-caller-start"}},
                          reply_to))
    writes.append(DbWrite(u, seq + 1, "cdr", {
        "uuid": u, "caller_id": "5551001", "caller_name": "Ann", "destination": "100",
        "started_at": STARTED, "answered_at": STARTED + 1, "ended_at": STARTED + 61,
        "duration_s": 61, "billsec_s": 60, "hangup_cause": "NORMAL_CLEARING",
        "final_state": "final_loop", "crm_extension": "801",
        "path": ["welcome", "main_menu", "call_sales"]}, reply_to))
    return writes
