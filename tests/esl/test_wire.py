"""The pure-Python frame parser on recorded traffic, split at arbitrary byte offsets,
and its limits."""

from __future__ import annotations

import pytest

from actors.esl_wire import MAX_HEAD_BYTES, FrameParser, MalformedFrame, event_of
from tests.captures import CAPTURES
from tests.esl.replay import Capture

STREAM = (CAPTURES / "inbound_plain_ivr.s2c.raw").read_bytes()
RECORDS = [r.data for r in Capture("inbound_plain_ivr").records if r.direction == "S>C"]


def frames_of(data: bytes, step: int) -> list:
    parser, frames = FrameParser(), []
    for at in range(0, len(data), step):
        parser.feed(data[at:at + step])
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    assert not parser.partial
    return frames


@pytest.mark.parametrize("step", [1, 7, 1000, len(STREAM)])
def test_the_recorded_stream_splits_into_its_recorded_frames_wherever_it_is_cut(step):
    frames = frames_of(STREAM, step)
    assert len(frames) == len(RECORDS)
    events = [event_of(f) for f in frames if f.content_type == "text/event-plain"]
    assert len(events) == 85
    job = next(e for e in events if e.name == "BACKGROUND_JOB")
    assert job.body.startswith("+OK ")


@pytest.mark.parametrize("head", [
    b"Content-Type: text/event-plain\nContent-Length: +5\n\n",
    b"Content-Type: text/event-plain\nContent-Length:  5 5\n\n",
    "Content-Type: text/event-plain\nContent-Length: \u0665\n\n".encode(),
    b"Content-Type: text/event-plain\nContent-Length: 16777217\n\n",
    b"Content-Length: 3\n\nabc",  # no Content-Type
    b"Content-Type: text/event-plain\nno colon here\n\n",
    b"Content-Type: \xff\xfe\n\n",
])
def test_a_head_that_breaks_the_protocol_is_refused(head):
    parser = FrameParser()
    parser.feed(head)
    with pytest.raises(MalformedFrame):
        parser.next_frame()


def test_a_header_block_without_end_is_refused_once_past_the_limit_not_before():
    parser = FrameParser()
    parser.feed(b"X: " + b"a" * (MAX_HEAD_BYTES - 10))
    assert parser.next_frame() is None and parser.partial
    parser.feed(b"a" * 20)
    with pytest.raises(MalformedFrame, match="header block over"):
        parser.next_frame()
