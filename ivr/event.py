"""One FreeSWITCH event, decoded: the value every layer above the wire passes around."""

from __future__ import annotations

import json
from collections.abc import Mapping


class Event:
    """Headers (URL-decoded, first value wins) and the body of one ESL event.

    FreeSWITCH repeats some headers (`Hangup-Cause` twice on CHANNEL_HANGUP_COMPLETE);
    `headers` keeps the first, `repeated` keeps every later (name, value) pair.
    Immutable by convention: it crosses threads.
    """

    __slots__ = ("headers", "body", "repeated")

    def __init__(self, headers: Mapping[str, str], body: str = "",
                 repeated: tuple[tuple[str, str], ...] = ()):
        self.headers = dict(headers)
        self.body = body
        self.repeated = repeated

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def uuid(self) -> str:
        return self.headers.get("Unique-ID", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def variable(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get("variable_" + name, default)

    def __repr__(self) -> str:
        extra = f" {self.subclass}" if self.subclass else ""
        app = self.headers.get("Application")
        return f"<Event {self.name}{extra} {self.uuid}{' ' + app if app else ''}>"


def channel_data_event(dump_json: str) -> Event:
    """The answer to `uuid_dump <uuid> json` as an Event (Event-Name CHANNEL_DATA):
    the channel's headers and variables as they are now."""
    try:
        data = json.loads(dump_json)
    except ValueError:
        raise ValueError(f"not a channel dump: {dump_json[:80]!r}") from None
    if not isinstance(data, dict) or "Unique-ID" not in data:
        raise ValueError(f"not a channel dump: {dump_json[:80]!r}")
    return Event({str(k): str(v) for k, v in data.items()})
