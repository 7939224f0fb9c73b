"""The event value: a plain-format event decodes each header when first asked for,
with the same answers as decoding every header at once."""

from __future__ import annotations

import re
from urllib.parse import unquote

from ivr.event import Event
from tests.captures import CAPTURES

_RECORD = re.compile(rb"### (\S+) t=(\S+) len=(\d+)\n")


def plain_event_texts(name: str) -> list[str]:
    data = (CAPTURES / f"{name}.esl").read_bytes()
    texts, at = [], 0
    while at < len(data):
        match = _RECORD.match(data, at)
        assert match
        length = int(match.group(3))
        frame = data[match.end():match.end() + length]
        at = match.end() + length + 1
        head, _, body = frame.partition(b"\n\n")
        if match.group(1) == b"S>C" and b"Content-Type: text/event-plain" in head:
            texts.append(body.decode("utf-8"))
    return texts


def eager(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.partition("\n\n")[0].split("\n"):
        name, _, value = line.partition(": ")
        headers.setdefault(name, unquote(value))
    return headers


def test_every_header_of_every_recorded_event_reads_the_same_lazily_and_eagerly():
    texts = plain_event_texts("inbound_plain_ivr") + plain_event_texts("fifo_real_bridge")
    assert len(texts) > 100
    for text in texts:
        expected = eager(text)
        lazy = Event.from_plain(text)
        for name, value in expected.items():
            assert lazy.get(name) == value, name
        assert Event.from_plain(text).headers == expected


def test_a_missing_header_is_none_or_the_default_and_a_repeated_one_keeps_its_first_value():
    event = Event.from_plain("Event-Name: CHANNEL_HANGUP_COMPLETE\nHangup-Cause: NORMAL_CLEARING\n"
                             "variable_x: a%20b\nHangup-Cause: USER_BUSY\n\n")
    assert event.get("Nope") is None and event.get("Nope", "d") == "d"
    assert event.get("Hangup-Cause") == "NORMAL_CLEARING"
    assert event.variable("x") == "a b"
    assert event.repeated == (("Hangup-Cause", "USER_BUSY"),)


def test_a_header_name_inside_another_value_or_name_is_not_taken_for_it():
    event = Event.from_plain("Event-Name: X\nvariable_Unique-ID: wrong\nNote: Unique-ID: wrong\n"
                             "Unique-ID: right\n\n")
    assert event.uuid == "right"


def test_the_body_after_the_blank_line_is_kept():
    event = Event.from_plain("Event-Name: BACKGROUND_JOB\nContent-Length: 6\n\n+OK x\n")
    assert event.body == "+OK x\n" and event.name == "BACKGROUND_JOB"
