"""A simulated channel: its state, caller profile, variables and the headers its events
carry. Runs on the switch's event-loop thread only.

The header blocks follow the recorded ``loopback/fsm-b`` leg: core headers, then the
channel block (Channel-State ... Channel-Write-Codec-Bit-Rate), the caller profile
(Caller-*), then ``variable_*`` for the event kinds that carry them, then the event's own
headers (Application, Application-UUID, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fakeswitch.media import ChannelRuntime

STATE_NUMBERS = {
    "CS_NEW": 0, "CS_INIT": 1, "CS_ROUTING": 2, "CS_SOFT_EXECUTE": 3, "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5, "CS_PARK": 6, "CS_CONSUME_MEDIA": 7, "CS_HIBERNATE": 8,
    "CS_RESET": 9, "CS_HANGUP": 10, "CS_REPORTING": 11, "CS_DESTROY": 12, "CS_NONE": 13,
}  # fmt: skip
CALL_STATE_NUMBERS = {
    "DOWN": 0, "DIALING": 1, "RINGING": 2, "EARLY": 3, "ACTIVE": 4, "HELD": 5,
    "RING_WAIT": 6, "HANGUP": 7, "UNHELD": 8,
}  # fmt: skip
Q850 = {
    "NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_USER_RESPONSE": 18, "NO_ANSWER": 19,
    "CALL_REJECTED": 21, "USER_NOT_REGISTERED": 606, "ORIGINATOR_CANCEL": 487,
    "NO_ROUTE_DESTINATION": 3, "MANAGER_REQUEST": 503, "SUBSCRIBER_ABSENT": 20,
}  # fmt: skip


@dataclass
class CallRecord:
    """What happened to a controlled channel, for tests (read via FakeSwitch.call_record)."""

    uuid: str
    commands: list[tuple[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    hangup_cause: str | None = None
    transferred_to: str | None = None
    bridged_to: str | None = None
    fifo_actions: list[str] = field(default_factory=list)  # FIFO-Action of its fifo::info
    # Apps started inside another app (sendmsg without event-lock while one ran).
    nested: list[str] = field(default_factory=list)
    # Every sendmsg received, in order: (app name or call-command, the channel's
    # icall_ckpt at that moment) -- to see what reached a call after its hand-off.
    received: list[tuple[str, str]] = field(default_factory=list)
    first_received_at: float = 0.0  # time.monotonic() of the first sendmsg (benchmarks)


def now_us() -> int:
    return int(time.time() * 1_000_000)


class Channel:
    """One leg. ``profile`` holds the Caller-* values in recorded order."""

    def __init__(self, uuid: str, name: str, caller_number: str, caller_name: str | None,
                 destination: str, context: str, leg: str) -> None:
        self.uuid = uuid
        self.name = name
        self.leg = leg
        self.state = "CS_NEW"
        self.call_state = "DOWN"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.created_us = now_us()
        self.answered_us = 0
        self.hangup_us = 0
        self.transfer_us = 0
        self.bridged_us = 0
        self.profile_index = 1
        self.profile_created_us = self.created_us
        self.caller_number = caller_number
        self.caller_name = caller_name
        self.orig_number = caller_number
        self.orig_name = caller_name
        # loopback's callee id: the name and the context (mod_fifo copies a caller name
        # that may be None here; Event drops None headers)
        self.callee_name: str | None = "Outbound Call"
        self.callee_number = context
        self.destination = destination
        self.context = context
        self.dialplan = "xml"
        self.transfer_source: str | None = None
        self.rdnis: str | None = None
        self.variables: dict[str, str] = {}
        self.last_response = "_none_"
        self.record = CallRecord(uuid)
        self.record.variables = self.variables
        self.other: Channel | None = None  # the loopback partner leg
        self.other_leg_headers: list[tuple[str, str]] = []
        self.rt = ChannelRuntime()
        self.parked = False
        self.on_park: list = []  # callbacks run once when the channel first parks
        self.pending_transfer: tuple[str, str] | None = None
        self.outbound = None  # the outbound socket session, for fsm_out calls
        # Hooks, each called with the channel: at sw.hangup, after CHANNEL_HANGUP_COMPLETE,
        # when it answers; ``on_fifo`` gets (channel, FIFO-Action).
        self.on_hangup: list = []
        self.on_reported: list = []
        self.on_answer: list = []
        self.on_fifo: list = []
        # Set by an app that leaves the channel to someone else after it completes
        # (mod_fifo's CS_HIBERNATE): a coroutine function Switch.execute awaits.
        self.after_app: Callable[[], Awaitable[None]] | None = None
        # A future CHANNEL_DESTROY waits for (mod_fifo's bridge-caller-stop comes first).
        self.destroy_hold: asyncio.Future | None = None

    # -- state -------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.hangup_cause is None

    def set_var(self, name: str, value: str) -> None:
        # FreeSWITCH appends a re-set variable at the end of its list.
        self.variables.pop(name, None)
        self.variables[name] = value

    # -- header blocks -----------------------------------------------------------
    def channel_headers(self) -> list[tuple[str, str]]:
        headers = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(STATE_NUMBERS[self.state])),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", "inbound" if self.leg == "B" else "outbound"),
            ("Presence-Call-Direction", "inbound" if self.leg == "B" else "outbound"),
            ("Channel-HIT-Dialplan", "true" if self.leg == "B" else "false"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause:
            headers.append(("Hangup-Cause", self.hangup_cause))
        headers += [
            ("Channel-Read-Codec-Name", "L16"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Read-Codec-Bit-Rate", "128000"),
            ("Channel-Write-Codec-Name", "L16"),
            ("Channel-Write-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Bit-Rate", "128000"),
        ]
        return headers

    def profile_headers(self, prefix: str = "Caller") -> list[tuple[str, str]]:
        p = prefix
        headers = [
            (f"{p}-Direction", "inbound"),
            (f"{p}-Logical-Direction", "inbound"),
            (f"{p}-Dialplan", self.dialplan),
        ]
        # The recorded switch omits the name headers when no caller name was given.
        if self.caller_name:
            headers.append((f"{p}-Caller-ID-Name", self.caller_name))
        headers.append((f"{p}-Caller-ID-Number", self.caller_number))
        if self.orig_name:
            headers.append((f"{p}-Orig-Caller-ID-Name", self.orig_name))
        headers.append((f"{p}-Orig-Caller-ID-Number", self.orig_number))
        if self.callee_name is not None:  # None once mod_fifo copied an absent caller name
            headers.append((f"{p}-Callee-ID-Name", self.callee_name))
        headers += [
            (f"{p}-Callee-ID-Number", self.callee_number),
            (f"{p}-ANI", self.orig_number),
            (f"{p}-Destination-Number", self.destination),
            (f"{p}-Unique-ID", self.uuid),
            (f"{p}-Source", "mod_loopback"),
        ]
        if self.transfer_source:
            headers.append((f"{p}-Transfer-Source", self.transfer_source))
        headers.append((f"{p}-Context", self.context))
        if self.rdnis:
            headers.append((f"{p}-RDNIS", self.rdnis))
        headers += [
            (f"{p}-Channel-Name", self.name),
            (f"{p}-Profile-Index", str(self.profile_index)),
            (f"{p}-Profile-Created-Time", str(self.profile_created_us)),
            (f"{p}-Channel-Created-Time", str(self.created_us)),
            (f"{p}-Channel-Answered-Time", str(self.answered_us)),
            (f"{p}-Channel-Progress-Time", "0"),
            (f"{p}-Channel-Progress-Media-Time", "0"),
            (f"{p}-Channel-Hangup-Time", str(self.hangup_us)),
            (f"{p}-Channel-Transfer-Time", str(self.transfer_us)),
            (f"{p}-Channel-Resurrect-Time", "0"),
            (f"{p}-Channel-Bridged-Time", str(self.bridged_us)),
            (f"{p}-Channel-Last-Hold", "0"),
            (f"{p}-Channel-Hold-Accum", "0"),
            (f"{p}-Screen-Bit", "true"),
            (f"{p}-Privacy-Hide-Name", "false"),
            (f"{p}-Privacy-Hide-Number", "false"),
        ]
        return headers

    def as_other_leg(self, other_type: str) -> list[tuple[str, str]]:
        """This leg's profile as its bridge partner's ``Other-Leg-*`` block (recorded: no
        Transfer-Source and no Profile-Index there)."""
        skip = {"Other-Leg-Transfer-Source", "Other-Leg-Profile-Index"}
        return [("Other-Type", other_type)] + [
            (k, v) for k, v in self.profile_headers("Other-Leg") if k not in skip]

    def set_playback_position(self, samples: int) -> None:
        """The variables a playback leaves behind (8 kHz samples played)."""
        for name in ("playback_last_offset_pos", "playback_seconds", "playback_ms",
                     "playback_samples"):
            self.variables.pop(name, None)
        self.set_var("playback_last_offset_pos", str(samples))
        self.set_var("playback_seconds", str(samples // 8000))
        self.set_var("playback_ms", str(samples // 8))
        self.set_var("playback_samples", str(samples))

    def variable_headers(self) -> list[tuple[str, str]]:
        return [(f"variable_{k}", v) for k, v in self.variables.items()]

    def full_headers(self, with_vars: bool = True) -> list[tuple[str, str]]:
        headers = self.channel_headers() + self.profile_headers() + self.other_leg_headers
        if with_vars:
            headers += self.variable_headers()
        return headers

    # -- CDR variables -------------------------------------------------------------
    def set_hangup_variables(self) -> None:
        """The CDR variables FreeSWITCH sets when a channel reaches CS_REPORTING, in the
        recorded order."""
        cause = self.hangup_cause or "NORMAL_CLEARING"
        start, answer, end = self.created_us, self.answered_us, self.hangup_us or now_us()
        bridge = self.bridged_us
        v = self.set_var
        v("hangup_cause", cause)
        v("hangup_cause_q850", str(Q850.get(cause, 16)))
        v("digits_dialed", "none")
        for name, us in (("start", start), ("profile_start", start), ("answer", answer),
                         ("bridge", bridge), ("end", end)):
            if us or name in ("start", "profile_start", "end"):
                v(f"{name}_stamp", _local_time(us))
        for name, us in (("start", start), ("profile_start", start), ("answer", answer),
                         ("bridge", bridge)):
            v(f"{name}_epoch", str(us // 1_000_000))
            v(f"{name}_uepoch", str(us))
        for name in ("last_hold_epoch", "last_hold_uepoch", "hold_accum_seconds",
                     "hold_accum_usec", "hold_accum_ms", "resurrect_epoch", "resurrect_uepoch",
                     "progress_epoch", "progress_uepoch", "progress_media_epoch",
                     "progress_media_uepoch"):
            v(name, "0")
        v("end_epoch", str(end // 1_000_000))
        v("end_uepoch", str(end))
        v("last_app", self.variables.get("current_application", ""))
        if self.variables.get("current_application_data"):
            v("last_arg", self.variables["current_application_data"])
        v("caller_id", f'"{self.caller_name or ""}" <{self.caller_number}>')
        waited = answer - start if answer else 0
        spans_us = {"bill": end - answer if answer else 0, "progress": 0, "answer": waited,
                    "wait": waited, "progress_media": 0, "flow_bill": end - start}
        for total, unit, divisor in (("duration", "sec", 1_000_000),
                                     ("mduration", "msec", 1000), ("uduration", "usec", 1)):
            v(total, str((end - start) // divisor))
            for name, span in spans_us.items():
                v(f"{name}{unit}", str(span // divisor))
        v("is_loopback", "true")


def _local_time(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1e6))
