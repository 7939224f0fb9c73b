"""One FreeSWITCH event, decoded: the value every layer above the wire passes around."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import unquote


class Event:
    """Headers (URL-decoded, first value wins) and the body of one ESL event.

    FreeSWITCH repeats some headers (`Hangup-Cause` twice on CHANNEL_HANGUP_COMPLETE);
    `headers` keeps the first, `repeated` keeps every later (name, value) pair.
    An event read off the wire (`from_plain`) decodes a header only when it is first
    asked for: an event carries ~80 headers and a flow reads a handful, so the reader
    hands it on without copying the rest. Immutable by convention: it crosses threads,
    used by one at a time.
    """

    __slots__ = ("_headers", "_repeated", "_text", "_found", "body")

    def __init__(self, headers: Mapping[str, str], body: str = "",
                 repeated: tuple[tuple[str, str], ...] = ()):
        self._headers: dict[str, str] | None = dict(headers)
        self._repeated: tuple[tuple[str, str], ...] | None = tuple(repeated)
        self._text = ""
        self._found: dict[str, str | None] = {}
        self.body = body

    @classmethod
    def from_plain(cls, text: str) -> Event:
        """An event in FreeSWITCH's plain format: `Name: url-encoded value` lines, a
        blank line, then the body (if any)."""
        event = cls.__new__(cls)
        head, _, body = text.partition("\n\n")
        event._headers = event._repeated = None
        event._text = "\n" + head + "\n"  # every header line now starts after a newline
        event._found = {}
        event.body = body
        return event

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._decode_all()
        assert self._headers is not None
        return self._headers

    @property
    def repeated(self) -> tuple[tuple[str, str], ...]:
        if self._repeated is None:
            self._decode_all()
        assert self._repeated is not None
        return self._repeated

    @property
    def name(self) -> str:
        return self.get("Event-Name") or ""

    @property
    def uuid(self) -> str:
        return self.get("Unique-ID") or ""

    @property
    def subclass(self) -> str:
        return self.get("Event-Subclass") or ""

    def get(self, name: str, default: str | None = None) -> str | None:
        if self._headers is not None:
            return self._headers.get(name, default)
        try:
            value = self._found[name]
        except KeyError:
            value = self._found[name] = self._find(name)
        return default if value is None else value

    def variable(self, name: str, default: str | None = None) -> str | None:
        return self.get("variable_" + name, default)

    def _find(self, name: str) -> str | None:
        key = "\n" + name + ": "
        at = self._text.find(key)
        if at < 0:
            return None
        start = at + len(key)
        value = self._text[start:self._text.index("\n", start)]
        return unquote(value) if "%" in value else value

    def _decode_all(self) -> None:
        headers: dict[str, str] = {}
        repeated: list[tuple[str, str]] = []
        for line in self._text.split("\n"):
            name, sep, value = line.partition(": ")
            if not sep:
                continue
            value = unquote(value) if "%" in value else value
            if name in headers:
                repeated.append((name, value))
            else:
                headers[name] = value
        self._headers, self._repeated = headers, tuple(repeated)

    def __repr__(self) -> str:
        extra = f" {self.subclass}" if self.subclass else ""
        app = self.get("Application")
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
