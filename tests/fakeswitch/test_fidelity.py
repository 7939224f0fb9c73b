"""The stand-in held to the recordings in shared/captures.

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
* the fifo_real_* and outbound_* captures: mod_fifo and outbound mode are not
  implemented yet (skipped below).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakeswitch import FakeSwitch

from .conftest import Frame, RawClient, split_frames

CAPTURES = Path("/work/shared/captures")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ZERO = "00000000-0000-0000-0000-000000000000"
KEY_VARS = {"ivr_app", "menu_number", "menu_number_invalid", "read_result",
            "originate_disposition", "DIALSTATUS", "originate_failed_cause", "hangup_cause",
            "hangup_cause_q850", "duration", "billsec", "answersec", "start_epoch",
            "answer_epoch", "end_epoch", "continue_on_fail", "current_application",
            "other_loopback_leg_uuid", "transfer_history"}
INBOUND = ["inbound_plain_ivr", "inbound_json_ivr", "inbound_plain_pagd_invalid_timeout",
           "inbound_plain_bridge_fail_no_continue", "inbound_plain_event_lock", "api_status",
           "api_uuid_dump", "api_show_channels_json", "bgapi_originate", "auth_failure",
           "junk_command"]
NOT_YET = ["fifo_real_bridge", "fifo_real_abort", "fifo_real_bridge_filtered",
           "fifo_real_abort_filtered", "fifo_real_bridge_custom_first",
           "fifo_real_abort_custom_first", "outbound_async_full_linger",
           "outbound_async_full_linger5", "outbound_async_full_nolinger", "outbound_sync_full"]


def records(name: str):
    data = (CAPTURES / f"{name}.esl").read_bytes()
    i = 0
    while i < len(data):
        head_end = data.index(b"\n", i)
        direction, _t, length = data[i:head_end].decode().split()[1:]
        n = int(length.split("=")[1])
        yield direction, data[head_end + 1 : head_end + 1 + n]
        i = head_end + 1 + n + 1


def controlled_uuid(frames: list[Frame]) -> str | None:
    for frame in frames:
        if frame.get("Event-Name") == "CHANNEL_PARK" and frame.get("variable_ivr_app") == "icall":
            return frame.get("Unique-ID")
        if frame.get("Event-Name") == "CHANNEL_EXECUTE" and frame.get("Channel-Name", ) and \
                frame.get("Channel-Name").endswith("-b"):
            return frame.get("Unique-ID")
    return None


def normalise(text: str) -> str:
    return UUID_RE.sub("<uuid>", text)


def replay(name: str, switch: FakeSwitch):
    recorded: list[tuple[str, object]] = []
    for direction, raw in records(name):
        if direction == "S>C":
            recorded.append(("S", split_frames(raw)[0][0]))
        else:
            recorded.append(("C", raw.decode()))
    rec_frames = [f for d, f in recorded if d == "S"]
    rec_b = controlled_uuid(rec_frames)
    mapping = {ZERO: ZERO}
    client = RawClient(switch.port)
    ours: list[Frame] = []
    our_b = None

    def pump_until(done) -> None:
        nonlocal our_b
        while not done():
            frame = client.frame()
            ours.append(frame)
            if our_b is None:
                our_b = controlled_uuid([frame])
                if our_b and rec_b:
                    mapping[rec_b] = our_b

    def mine(frame: Frame, b_uuid: str | None) -> bool:
        # Without a controlled call (bgapi capture) every event is compared.
        return bool(frame.event) and (rec_b is None or (b_uuid is not None
                                                         and frame.get("Unique-ID") == b_uuid))

    def our_b_events() -> int:
        return sum(1 for f in ours if mine(f, our_b))

    def replies() -> int:
        return sum(1 for f in ours if not f.event)

    for index, (direction, item) in enumerate(recorded):
        if direction != "C":
            continue
        before = [f for d, f in recorded[:index] if d == "S"]
        want_b = sum(1 for f in before if mine(f, rec_b))
        want_replies = sum(1 for f in before if not f.event)
        pump_until(lambda b=want_b, r=want_replies: our_b_events() >= b and replies() >= r)
        text = item
        for uuid in set(UUID_RE.findall(text)):
            if uuid not in mapping:
                if "Job-UUID" in text or "origination_uuid" in text:
                    mapping[uuid] = uuid  # client-chosen, kept as is
                else:  # a call parked before this session, as in the api captures
                    mapping[uuid] = switch.place_call(caller_id="5551004")
                    assert switch.wait_parked(mapping[uuid])
            text = text.replace(uuid, mapping[uuid])
        client.sock.sendall(text.encode())
    want_b = sum(1 for f in rec_frames if mine(f, rec_b))
    pump_until(lambda: our_b_events() >= want_b and replies() >= sum(
        1 for f in rec_frames if not f.event))
    client.close()
    return rec_frames, rec_b, ours, our_b


@pytest.mark.parametrize("name", INBOUND)
def test_the_stand_in_matches_the_recording(name):
    with FakeSwitch(time_scale=0.2) as switch:
        rec_frames, rec_b, ours, our_b = replay(name, switch)
    rec_replies = [(f.content_type, normalise(f.outer.get("Reply-Text", "")))
                   for f in rec_frames if not f.event]
    our_replies = [(f.content_type, normalise(f.outer.get("Reply-Text", "")))
                   for f in ours if not f.event]
    assert our_replies == rec_replies
    rec_events = [f for f in rec_frames if f.event and (rec_b is None or f.get("Unique-ID") == rec_b)]
    our_events = [f for f in ours if f.event and (rec_b is None or (our_b and f.get("Unique-ID") == our_b))]
    if rec_b is not None:
        assert len(rec_events) > 5  # the comparison below really covers the call
    assert [f.get("Event-Name") for f in our_events] == [f.get("Event-Name") for f in rec_events]
    for rec, our in zip(rec_events, our_events, strict=True):
        rec_names = [k for k, _ in rec.event if not k.startswith("variable_")]
        our_names = [k for k, _ in our.event if not k.startswith("variable_")]
        assert our_names == rec_names, rec.get("Event-Name")
        rec_vars = {k[9:] for k, _ in rec.event if k.startswith("variable_")} & KEY_VARS
        our_vars = {k[9:] for k, _ in our.event if k.startswith("variable_")}
        assert rec_vars <= our_vars, (rec.get("Event-Name"), rec_vars - our_vars)


@pytest.mark.parametrize("name", NOT_YET)
def test_captures_of_unimplemented_features(name):
    pytest.skip("mod_fifo and outbound mode are not implemented in the stand-in yet")
