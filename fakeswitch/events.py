"""Event objects and the per-listener subscription/filter rules.

An Event is built once and serialised lazily (plain and JSON cached separately), so a
switch with thousands of calls pays only for what some listener asked to receive.
Runs on the switch's event-loop thread.
"""

from __future__ import annotations

import re
import time

from fakeswitch import wire

CORE_UUID_DEFAULT = "fa4e5017-0000-4000-8000-000000000001"
# The event types ``myevents`` enables (mod_event_socket.c, parse_command): no
# CHANNEL_CALLSTATE, PLAYBACK_* or PRIVATE_COMMAND among them, as the captures show.
MYEVENTS = frozenset({
    "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE",
    "CHANNEL_DATA", "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
    "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK", "DETECTED_SPEECH", "DTMF",
    "NOTALK", "TALK",
})


class Event:
    __slots__ = ("name", "subclass", "headers", "body", "_plain", "_json", "_index")

    def __init__(self, name: str, headers: list[tuple[str, str]], body: str | None = None,
                 subclass: str | None = None) -> None:
        self.name = name
        self.subclass = subclass
        # FreeSWITCH adds no header for a value it does not have (switch_event_add_header
        # with NULL), so neither do we: a profile field never set stays absent.
        self.headers = [(k, v) for k, v in headers if v is not None]
        self.body = body
        self._plain: bytes | None = None
        self._json: bytes | None = None
        self._index: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        """First value of a header, case-insensitively (as switch_event_get_header)."""
        if self._index is None:
            index: dict[str, str] = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), value)
            self._index = index
        return self._index.get(name.lower())

    def plain(self) -> bytes:
        if self._plain is None:
            self._plain = wire.event_plain(self.headers, self.body)
        return self._plain

    def json(self) -> bytes:
        if self._json is None:
            self._json = wire.event_json(self.headers, self.body)
        return self._json


class Clock:
    """Core headers: the switch's identity, the date and the monotonic Event-Sequence."""

    def __init__(self, core_uuid: str = CORE_UUID_DEFAULT) -> None:
        self.core_uuid = core_uuid
        self.sequence = 1000

    def core_headers(self, name: str, calling: tuple[str, str, int]) -> list[tuple[str, str]]:
        self.sequence += 1
        now = time.time()
        local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        gmt = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        return [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", "fakeswitch"),
            ("FreeSWITCH-Switchname", "fakeswitch"),
            ("FreeSWITCH-IPv4", "127.0.0.1"),
            ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", local),
            ("Event-Date-GMT", gmt),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", calling[0]),
            ("Event-Calling-Function", calling[1]),
            ("Event-Calling-Line-Number", str(calling[2])),
            ("Event-Sequence", str(self.sequence)),
        ]


class Subscription:
    """A listener's ``event``/``filter`` state with mod_event_socket's matching rules."""

    def __init__(self) -> None:
        self.all = False
        self.names: set[str] = set()
        self.subclasses: set[str] = set()
        self.filters: list[tuple[str, str]] = []
        self.format = "plain"

    @property
    def active(self) -> bool:
        return self.all or bool(self.names)

    def subscribe(self, words: list[str]) -> None:
        custom = False
        for word in words:
            if custom:
                # Every word after CUSTOM is a subclass name, whatever it looks like.
                self.subclasses.add(word)
            elif word == "CUSTOM":
                custom = True
                self.names.add("CUSTOM")
            elif word == "ALL":
                self.all = True
            else:
                self.names.add(word)

    def unsubscribe(self, words: list[str]) -> None:
        custom = False
        for word in words:
            if custom:
                self.subclasses.discard(word)
            elif word == "CUSTOM":
                custom = True
            elif word == "ALL":
                self.all = False
                self.names.clear()
                self.subclasses.clear()
            else:
                self.names.discard(word)

    def subscribe_myevents(self, uuid: str) -> None:
        """``myevents``: the MYEVENTS types, for one channel only."""
        self.names |= MYEVENTS
        self.filters.append(("Unique-ID", uuid))

    def clear(self) -> None:
        self.all = False
        self.names.clear()
        self.subclasses.clear()

    def wants_name(self, name: str, subclass: str | None) -> bool:
        if self.all:
            return True
        if name not in self.names:
            return False
        return name != "CUSTOM" or not subclass or subclass in self.subclasses

    def passes_filters(self, event: Event) -> bool:
        """Filters OR together; a ``-`` value vetoes; ``/re/`` values are regexes."""
        if not self.filters:
            return True
        send = False
        for header, value in self.filters:
            found = event.get(header)
            if found is None:
                continue
            positive = True
            compare = value
            while compare and compare[0] in "+- ":
                if compare[0] == "+":
                    positive = True
                elif compare[0] == "-":
                    positive = False
                compare = compare[1:]
            if send and positive:
                continue
            if value.startswith("/"):
                pattern = compare.strip("/")
                matched = re.search(pattern, found) is not None
            else:
                matched = found.lower() == compare.lower()
            if matched:
                if not positive:
                    return False
                send = True
        return send
