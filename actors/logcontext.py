"""The call a thread serves, for log lines: a call actor tags its thread once, and the
log format (service/logsetup.py) adds the UUID to every line that thread writes."""

from __future__ import annotations

import threading

_call = threading.local()


def set_call_uuid(uuid: str | None) -> None:
    """Tag every later log line of the current thread with this call UUID."""
    _call.uuid = uuid


def current_call_uuid() -> str | None:
    return getattr(_call, "uuid", None)
