"""The stand-in held to the recordings in tests/captures.

Each capture's client commands are replayed over a real socket (recorded UUIDs replaced
by the ones the stand-in hands out; a command is sent once the stand-in has produced as
many controlled-leg events as the recording had before it). Compared: Content-Types and
reply texts of every reply (UUIDs normalised), the controlled (B) leg's event names in
order, each such event's non-variable header names in order, and the presence of every
variable the service reads.

Remaining differences, not compared on purpose:
* the A leg is simplified (see fakeswitch.switch), and API / CALL_UPDATE / PRESENCE_IN /
  RE_SCHEDULE / HEARTBEAT events are not emitted, so only the B leg is compared;
* the order of ``variable_*`` headers (FreeSWITCH moves re-set variables around), and
  variables nobody reads (e.g. ``current_loop``/``total_loops`` placement);
* ``api status`` / ``show channels`` body text and uuid_dump values;
* fifo_real_*: only the two B legs (caller ``loopback/fsm-b`` and consumer
  ``loopback/fifo_agent_sales-b``) are compared, plus the FIFO-Action sequence across
  them; PRESENCE_IN, CALL_UPDATE and the agent's A-leg events are not emitted;
* outbound_*: the connect reply's header names (not its variables), the notices'
  Content-Disposition / Linger-Time, and the session's events; linger timers are scaled
  by time_scale.
"""

from __future__ import annotations

import re
import socket

import pytest

from fakeswitch import FakeSwitch
from fakeswitch.apis import unescaped
from ivr.resume import setvar_value
from tests.captures import CAPTURES

from .conftest import TIMEOUT_S, Frame, RawClient, split_frames

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ZERO = "00000000-0000-0000-0000-000000000000"
KEY_VARS = {"ivr_app", "menu_number", "menu_number_invalid", "read_result",
            "originate_disposition", "DIALSTATUS", "originate_failed_cause", "hangup_cause",
            "hangup_cause_q850", "duration", "billsec", "answersec", "start_epoch",
            "answer_epoch", "end_epoch", "continue_on_fail", "current_application",
            "other_loopback_leg_uuid", "transfer_history", "fifo_status", "fifo_serviced_uuid",
            "fifo_serviced_by", "fifo_target", "fifo_role", "fifo_bridge_role",
            "fifo_initiated_bridge", "bridge_uuid", "last_bridge_hangup_cause"}
INBOUND = ["inbound_plain_ivr", "inbound_json_ivr", "inbound_plain_pagd_invalid_timeout",
           "inbound_plain_bridge_fail_no_continue", "inbound_plain_event_lock", "api_status",
           "api_uuid_dump", "api_show_channels_json", "bgapi_originate", "auth_failure",
           "junk_command"]
FIFO = ["fifo_real_bridge", "fifo_real_abort", "fifo_real_bridge_filtered",
        "fifo_real_abort_filtered", "fifo_real_bridge_custom_first", "fifo_real_abort_custom_first"]
OUTBOUND = ["outbound_async_full_linger", "outbound_async_full_linger5",
            "outbound_async_full_nolinger", "outbound_sync_full"]
CLIENT_CHOSEN = re.compile(r"(?:Job-UUID: |Event-UUID: |origination_uuid=)(" + UUID_RE.pattern + ")")


def records(name: str):
    data = (CAPTURES / f"{name}.esl").read_bytes()
    i = 0
    while i < len(data):
        head_end = data.index(b"\n", i)
        direction, _t, length = data[i:head_end].decode().split()[1:]
        n = int(length.split("=")[1])
        yield direction, data[head_end + 1 : head_end + 1 + n]
        i = head_end + 1 + n + 1


def compared_legs(frames: list[Frame]) -> dict[str, str]:
    """Unique-ID -> Channel-Name of the B legs (``loopback/<ext>-b``) the events describe:
    the controlled call and, in the fifo captures, the agent's (consumer) leg."""
    legs = {}
    for frame in frames:
        name, uuid = frame.get("Channel-Name"), frame.get("Unique-ID")
        if name and uuid and name.endswith("-b"):
            legs.setdefault(uuid, name)
    return legs


def normalise(text: str) -> str:
    return UUID_RE.sub("<uuid>", text)


class Replay:
    """One capture's client side replayed against the stand-in over a real socket."""

    def __init__(self, name: str, switch: FakeSwitch) -> None:
        self.switch = switch
        self.recorded: list[tuple[str, object]] = []
        for direction, raw in records(name):
            if direction == "S>C":
                self.recorded.append(("S", split_frames(raw)[0][0]))
            else:
                self.recorded.append(("C", raw.decode()))
        self.rec_frames = [f for d, f in self.recorded if d == "S"]
        self.rec_legs = compared_legs(self.rec_frames)
        self.mapping = {ZERO: ZERO}
        self.ours: list[Frame] = []
        self.our_legs: dict[str, str] = {}  # Channel-Name -> our Unique-ID

    def rec_mine(self, frame: Frame) -> bool:
        # Without a B leg in the recording (bgapi capture) every event is compared.
        return bool(frame.event) and (not self.rec_legs or frame.get("Unique-ID") in self.rec_legs)

    def our_mine(self, frame: Frame) -> bool:
        return bool(frame.event) and (not self.rec_legs
                                      or frame.get("Unique-ID") in self.our_legs.values())

    def pump_until(self, client, done) -> None:
        while not done():
            frame = client.frame()
            self.ours.append(frame)
            name, uuid = frame.get("Channel-Name"), frame.get("Unique-ID")
            if name and uuid and name in self.rec_legs.values():
                self.our_legs.setdefault(name, uuid)

    def learn(self, before: list[Frame]) -> None:
        """Map recorded UUIDs to ours: B legs by channel name, api answers by position."""
        for uuid, name in self.rec_legs.items():
            if name in self.our_legs:
                self.mapping.setdefault(uuid, self.our_legs[name])
        rec_replies = [f for f in before if not f.event]
        our_replies = [f for f in self.ours if not f.event]
        for rec, our in zip(rec_replies, our_replies, strict=False):
            body = rec.body.decode(errors="replace").strip()
            if UUID_RE.fullmatch(body):
                self.mapping.setdefault(body, our.body.decode().strip())

    def run(self, client: RawClient | None = None) -> None:
        client = client or RawClient(self.switch.port)
        for index, (direction, item) in enumerate(self.recorded):
            if direction != "C":
                continue
            before = [f for d, f in self.recorded[:index] if d == "S"]
            want_events = sum(1 for f in before if self.rec_mine(f))
            want_replies = sum(1 for f in before if not f.event)
            self.pump_until(client, lambda e=want_events, r=want_replies: self.reached(e, r))
            self.learn(before)
            client.sock.sendall(self.translate(item).encode())
        want_events = sum(1 for f in self.rec_frames if self.rec_mine(f))
        want_replies = sum(1 for f in self.rec_frames if not f.event)
        self.pump_until(client, lambda: self.reached(want_events, want_replies))
        client.close()

    def reached(self, events: int, replies: int) -> bool:
        return (sum(1 for f in self.ours if self.our_mine(f)) >= events
                and sum(1 for f in self.ours if not f.event) >= replies)

    def translate(self, text: str) -> str:
        chosen = set(CLIENT_CHOSEN.findall(text))
        for uuid in set(UUID_RE.findall(text)):
            if uuid not in self.mapping:
                if uuid in chosen:
                    self.mapping[uuid] = uuid  # client-chosen, kept as is
                else:  # a call parked before this session, as in the api captures
                    self.mapping[uuid] = self.switch.place_call(caller_id="5551004")
                    assert self.switch.wait_parked(self.mapping[uuid])
            text = text.replace(uuid, self.mapping[uuid])
        return text

    def legs(self) -> list[tuple[list[Frame], list[Frame]]]:
        """(recorded, ours) events of each compared leg; one group without B legs."""
        if not self.rec_legs:
            return [([f for f in self.rec_frames if f.event], [f for f in self.ours if f.event])]
        groups = []
        for uuid, name in self.rec_legs.items():
            ours_uuid = self.our_legs.get(name)
            groups.append(([f for f in self.rec_frames if f.event and f.get("Unique-ID") == uuid],
                           [f for f in self.ours if f.event and f.get("Unique-ID") == ours_uuid]))
        return groups


def assert_same_events(rec_events: list[Frame], our_events: list[Frame]) -> None:
    assert [f.get("Event-Name") for f in our_events] == [f.get("Event-Name") for f in rec_events]
    for rec, our in zip(rec_events, our_events, strict=True):
        rec_names = [k for k, _ in rec.event if not k.startswith("variable_")]
        our_names = [k for k, _ in our.event if not k.startswith("variable_")]
        assert our_names == rec_names, (rec.get("Event-Name"), rec.get("FIFO-Action"))
        rec_vars = {k[9:] for k, _ in rec.event if k.startswith("variable_")} & KEY_VARS
        our_vars = {k[9:] for k, _ in our.event if k.startswith("variable_")}
        assert rec_vars <= our_vars, (rec.get("Event-Name"), rec_vars - our_vars)


def check_capture(name: str, switch: FakeSwitch, client: RawClient | None = None) -> Replay:
    replay = Replay(name, switch)
    replay.run(client)
    rec_replies = [(f.content_type, normalise(f.outer.get("Reply-Text", "")))
                   for f in replay.rec_frames if not f.event]
    our_replies = [(f.content_type, normalise(f.outer.get("Reply-Text", "")))
                   for f in replay.ours if not f.event]
    assert our_replies == rec_replies
    for rec_events, our_events in replay.legs():
        if replay.rec_legs:
            assert len(rec_events) >= 2  # the comparison below really covers the leg
        assert_same_events(rec_events, our_events)
    return replay


@pytest.mark.parametrize("name", INBOUND)
def test_the_stand_in_matches_the_recording(name):
    with FakeSwitch(time_scale=0.2) as switch:
        replay = check_capture(name, switch)
    if replay.rec_legs:
        assert max(len(rec) for rec, _ in replay.legs()) > 5


@pytest.mark.parametrize("name", FIFO)
def test_the_mod_fifo_stand_in_matches_the_recording(name):
    with FakeSwitch(time_scale=0.2) as switch:
        replay = check_capture(name, switch)

    def actions(frames: list[Frame]) -> list[str]:
        return [f.get("FIFO-Action") for f in frames if f.get("Event-Subclass") == "fifo::info"]

    assert actions(replay.ours) == actions(replay.rec_frames)
    assert actions(replay.ours)[0] == "push"
    assert "fifo_agent_sales" in "".join(replay.rec_legs.values()) or "abort" in actions(replay.ours)


@pytest.mark.parametrize("name", OUTBOUND)
def test_the_outbound_stand_in_matches_the_recording(name):
    with socket.create_server(("127.0.0.1", 0)) as target:
        target.settimeout(TIMEOUT_S)
        with FakeSwitch(time_scale=0.2, outbound_target=target.getsockname()[:2]) as switch:
            switch.place_call(caller_id="5551003", dest="fsm_out_sync" if "_sync_" in name else "fsm_out")
            conn, _ = target.accept()
            replay = check_capture(name, switch, RawClient(None, conn))

    def connect_reply(frames: list[Frame]) -> list[str]:
        return [k for k, _ in frames[0].headers if not k.startswith("variable_")]

    def notices(frames: list[Frame]) -> list[tuple[str | None, ...]]:
        return [(f.outer.get("Content-Disposition"), f.outer.get("Linger-Time"),
                 f.outer.get("Content-Length")) for f in frames
                if f.content_type == "text/disconnect-notice"]

    assert connect_reply(replay.ours) == connect_reply(replay.rec_frames)
    assert replay.ours[0].outer["Reply-Text"] == "%2BOK%0A"
    assert notices(replay.ours) == notices(replay.rec_frames)
    assert notices(replay.ours)[-1][0] == "disconnect"




def test_the_stand_ins_uuid_setvar_unescapes_its_value_as_the_lab_switch_did():
    """Sent to the lab FreeSWITCH (1.11) with `uuid_setvar`, read back with `uuid_getvar`:
    its argument splitter drops a backslash before a quote or a backslash, and quotes."""
    sent = r"""{"a":"[68]\\d\\d","b":"it\'s","c":"q\\"x"}"""
    assert unescaped(sent) == r"""{"a":"[68]\d\d","b":"it's","c":"q\"x"}"""
    assert unescaped(setvar_value('{"w":"[68]\\\\d","x":"it\'s"}')) == '{"w":"[68]\\\\d","x":"it\'s"}'
