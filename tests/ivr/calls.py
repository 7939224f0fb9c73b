"""Test helpers for driving flows without threads: real events lifted out of the
recorded FreeSWITCH traffic (captures/), re-addressed to the call under test.

`CallScript` plays the switch for one channel: it keeps the channel's variables (as a
real channel does, a variable set once is carried on every later event) and builds each
event from a real one of the same kind. `Driver` runs an IcallFlow on it.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from ivr.config import Config, load_config
from ivr.effects import (
    Checkpoint,
    Effect,
    Execute,
    Finished,
    Hangup,
    LookupCaller,
    Record,
    StartTimer,
)
from ivr.event import Event
from ivr.flow import FlowContext
from ivr.icall import IcallFlow
from ivr.timecond import TimeCondition
from tests.captures import CAPTURES

_RECORD = re.compile(rb"### (\S+) t=(\S+) len=(\d+)\n")

ZONE = ZoneInfo("Europe/Berlin")
# A Wednesday morning in the office's zone: the schedule sends calls to the main menu.
OFFICE_HOURS = datetime(2026, 11, 25, 10, 0, tzinfo=ZONE)


def capture_events(name: str) -> list[Event]:
    """The text/event-plain events FreeSWITCH sent in captures/<name>.esl, in order."""
    data = (CAPTURES / f"{name}.esl").read_bytes()
    events, at = [], 0
    while at < len(data):
        match = _RECORD.match(data, at)
        assert match, f"{name}.esl is not a capture transcript at byte {at}"
        length = int(match.group(3))
        frame = data[match.end():match.end() + length]
        at = match.end() + length + 1
        head, _, body = frame.partition(b"\n\n")
        if match.group(1) == b"S>C" and b"Content-Type: text/event-plain" in head:
            events.append(_plain_event(body.decode("utf-8")))
    return events


def _plain_event(body: str) -> Event:
    headers: dict[str, str] = {}
    repeated = []
    for line in body.split("\n"):
        if not line:
            break
        name, _, value = line.partition(": ")
        if name in headers:
            repeated.append((name, unquote(value)))
        else:
            headers[name] = unquote(value)
    return Event(headers, "", tuple(repeated))


def _first(events: list[Event], name: str, **wanted: str) -> dict[str, str]:
    for event in events:
        if event.name == name and all(event.get(k) == v for k, v in wanted.items()):
            return dict(event.headers)
    raise LookupError(f"no {name} {wanted} in the capture")


class CallScript:
    """The switch's side of one channel, built from real events of the icall leg."""

    _ivr = capture_events("inbound_plain_ivr")
    _fifo = capture_events("fifo_real_bridge_filtered")

    def __init__(self, uuid: str = "9aaaa7f6-5f2f-4a3a-b5f9-0b2adcb4e71d", caller_id: str = "5551000"):
        self.uuid = uuid
        self.caller_id = caller_id
        self.variables: dict[str, str] = {}
        self.sequence = itertools.count(1000)

    def _event(self, template: dict[str, str], **headers: str) -> Event:
        real = {k: v for k, v in template.items() if not k.startswith("variable_")}
        real.update({k: v for k, v in template.items() if k.startswith("variable_")})
        real.update(self.variables)
        real.update({"Unique-ID": self.uuid, "Caller-Unique-ID": self.uuid,
                     "Channel-Call-UUID": self.uuid, "Caller-Caller-ID-Number": self.caller_id,
                     "Event-Sequence": str(next(self.sequence))})
        real.update(headers)
        return Event(real)

    def park(self) -> Event:
        return self._event(_first(self._ivr, "CHANNEL_PARK", **{"variable_ivr_app": "icall"}))

    def complete(self, command: Execute, response: str = "_none_", **variables: str) -> Event:
        """The CHANNEL_EXECUTE_COMPLETE of `command`; `variables` are set on the channel."""
        self.variables.update({f"variable_{k}": v for k, v in variables.items()})
        template = _first(self._ivr, "CHANNEL_EXECUTE_COMPLETE", Application="playback")
        return self._event(template, **{"Application": command.app,
                                        "Application-Data": command.arg,
                                        "Application-UUID": command.event_uuid,
                                        "Application-Response": response})

    def hangup(self, cause: str = "NORMAL_CLEARING") -> Event:
        return self._event(_first(self._ivr, "CHANNEL_HANGUP", **{"Unique-ID": _IVR_LEG}),
                           **{"Hangup-Cause": cause})

    def hangup_complete(self, cause: str = "NORMAL_CLEARING") -> Event:
        return self._event(_first(self._ivr, "CHANNEL_HANGUP_COMPLETE", **{"Unique-ID": _IVR_LEG}),
                           **{"Hangup-Cause": cause})

    def bridge(self) -> Event:
        """CHANNEL_BRIDGE with this channel as the A leg: the callee answered."""
        template = _first(self._fifo, "CHANNEL_BRIDGE")
        return self._event(template, **{"Bridge-A-Unique-ID": self.uuid})

    def fifo(self, action: str) -> Event:
        template = _first(self._fifo, "CUSTOM", **{"FIFO-Action": action})
        return self._event(template)


_IVR_LEG = "9aaaa7f6-5f2f-4a3a-b5f9-0b2adcb4e71d"


def make_config(**ivr: str) -> Config:
    environ = {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_SCHEDULE_TIMEZONE": "Europe/Berlin"}
    environ.update({f"ICALL_{key.upper()}": value for key, value in ivr.items()})
    return load_config(None, environ)


class Driver:
    """An IcallFlow fed by a CallScript, with every effect it returned kept in order."""

    def __init__(self, config: Config | None = None, now: datetime = OFFICE_HOURS,
                 conditions: tuple[TimeCondition, ...] = (), uuid: str = _IVR_LEG,
                 keep_history: bool = True):
        self.config = config or make_config()
        self.now = now
        self.conditions = conditions
        ids = (f"evt-{n:04d}" for n in itertools.count(1))
        ctx = FlowContext(config=self.config, now=lambda: self.now,
                          time_conditions=lambda: self.conditions, new_id=lambda: next(ids),
                          keep_history=keep_history)
        self.script = CallScript(uuid)
        self.flow = IcallFlow(uuid, ctx)
        self.effects: list[Effect] = []

    def _take(self, effects: list[Effect]) -> list[Effect]:
        self.effects.extend(effects)
        return effects

    def start(self) -> list[Effect]:
        return self._take(self.flow.start(self.script.park()))

    def send(self, event: Event) -> list[Effect]:
        return self._take(self.flow.on_event(event))

    def info(self, message: object) -> list[Effect]:
        return self._take(self.flow.on_info(message))

    def fire(self, timer: StartTimer) -> list[Effect]:
        return self._take(self.flow.on_timer(timer.name, timer.generation))

    def last(self, app: str) -> Execute:
        return [e for e in self.effects if isinstance(e, Execute) and e.app == app][-1]

    def complete(self, app: str, response: str = "_none_", **variables: str) -> list[Effect]:
        """Complete the most recent `app` the flow executed."""
        return self.send(self.script.complete(self.last(app), response, **variables))

    def executes(self) -> list[tuple[str, str]]:
        return [(e.app, e.arg) for e in self.effects if isinstance(e, Execute)]

    def steps(self) -> list[tuple[str, str]]:
        return [(r.fields["step"], r.fields["value"]) for r in self.records("step")]

    def records(self, kind: str) -> list[Record]:
        return [e for e in self.effects if isinstance(e, Record) and e.kind == kind]

    def checkpoints(self) -> list[dict]:
        return [json.loads(e.text) for e in self.effects if isinstance(e, Checkpoint)]

    def timers(self) -> list[StartTimer]:
        return [e for e in self.effects if isinstance(e, StartTimer)]

    def hangups(self) -> list[Hangup]:
        return [e for e in self.effects if isinstance(e, Hangup)]

    def lookups(self) -> list[LookupCaller]:
        return [e for e in self.effects if isinstance(e, LookupCaller)]

    def finished(self) -> list[Finished]:
        return [e for e in self.effects if isinstance(e, Finished)]

    # --- the common openings of a call

    def to_main_menu(self) -> None:
        self.start()
        self.complete("playback", "FILE PLAYED")

    def choose(self, digit: str) -> None:
        self.to_main_menu()
        self.complete("play_and_get_digits", menu_number=digit, read_result="success")
