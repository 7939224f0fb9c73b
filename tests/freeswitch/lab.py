"""Callers on a real FreeSWITCH, driven only through what it offers: `originate`,
`uuid_recv_dtmf`, `uuid_kill` and its events.

The switch is configured as the lab's (README, "On a real FreeSWITCH", read by people,
never by the tests): extension `fsm` parks with `ivr_app=icall` (inbound mode),
`icall_out` hands the call to `socket 127.0.0.1:8084 async full` twice, then
transfers it to `fifo_sales` (outbound mode); 803 answers, 801 and 802 are never
registered. The branches and the path each must take are bench.scenarios' (the side
by side bench's callers play the same ones).

Three python-ESL connections, each used by one thread only (DESIGN.md: "one
connection, one thread"): the reader thread's (events), the presser thread's (keys,
hang-ups), the test thread's (originate, api).
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import ESL

from bench.scenarios import Scenario, Step, ends_talking, same_step

WATCHED = "event plain CHANNEL_PARK CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE"
CHECKPOINT_PREFIX = "icall_ckpt="
DIALPLAN_APPS = ("socket",)  # the dialplan's own, not a controller's command
PRESS_AFTER_S = 0.4  # a caller presses this long after a prompt starts
TALK_S = 2.0  # a caller on an answered bridge hangs up after this long
HANG_UP = ""
MAIN_MENU_SOUND = "1001.wav"
# Each mode's leg the controller drives, told by a variable its dialplan sets.
MARKERS = {"fsm": ("variable_ivr_app", "icall"), "icall_out": ("variable_acc_out", "1")}


@dataclass(frozen=True)
class SwitchAddress:
    host: str
    port: int
    password: str

    @classmethod
    def parse(cls, text: str) -> SwitchAddress:
        """'host:port[:password]' (password ClueCon when left out)."""
        host, _, rest = text.partition(":")
        port, _, password = rest.partition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT[:PASSWORD], got {text!r}")
        return cls(host, int(port), password or "ClueCon")


@dataclass
class LabCall:
    """One placed call, as the switch's events on the controlled leg tell it."""

    tag: str
    scenario: Scenario
    dest: str
    uuid: str = ""
    path: list[Step] = field(default_factory=list)
    parks: int = 0
    sockets: int = 0  # `socket` apps the dialplan ran (2: the call came back)
    hangup_cause: str = ""
    ended: threading.Event = field(default_factory=threading.Event)
    handed_over: bool = False

    def prompts_started(self) -> int:
        return sum(1 for app, _ in self.path if app == "play_and_get_digits")

    def in_main_menu(self) -> bool:
        return any(app == "play_and_get_digits" and MAIN_MENU_SOUND in arg for app, arg in self.path)

    def collapsed_path(self) -> tuple[list[Step], int]:
        """The path with a prompt played twice in a row counted once, and how many such
        repeats there were (a caller whose socket closed under a prompt hears it again)."""
        path: list[Step] = []
        repeats = 0
        for step in self.path:
            if path and step == path[-1] and step[0] in ("playback", "play_and_get_digits"):
                repeats += 1
                continue
            path.append(step)
        return path, repeats

    def went_right(self) -> bool:
        path, _ = self.collapsed_path()
        return len(path) == len(self.scenario.path) and all(map(same_step, path, self.scenario.path))


def connect(address: SwitchAddress) -> ESL.ESLconnection:
    connection = ESL.ESLconnection(address.host, str(address.port), address.password)
    if not connection.connected():
        raise ConnectionError(f"cannot log in to FreeSWITCH at {address.host}:{address.port}")
    return connection


class LabSwitch:
    """Places calls and plays their callers; `calls` is filled by the reader thread."""

    def __init__(self, address: SwitchAddress):
        self.address = address
        self.tag = f"lab{os.getpid() % 10000:04d}{time.time_ns() % 10**5:05d}"
        self.calls: dict[str, LabCall] = {}  # by caller id name
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._presses: queue.Queue[tuple[float, str, str]] = queue.Queue()
        self._api = connect(address)
        self._reader = threading.Thread(target=self._read, name="lab-events", daemon=True)
        self._presser = threading.Thread(target=self._press, name="lab-presser", daemon=True)

    def start(self) -> LabSwitch:
        self._reader.start()
        self._presser.start()
        if not self._subscribed.wait(10):
            raise ConnectionError("the lab's event connection did not subscribe")
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._reader.join(5)
        self._presser.join(5)
        self._api.disconnect()

    # --- the test thread

    def api(self, command: str) -> str:
        reply = self._api.api(command)
        return (reply.getBody() or "") if reply is not None else ""

    def place(self, scenario: Scenario, dest: str, caller_id: str) -> LabCall:
        """Originate a call into `dest` (fsm: inbound mode, icall_out: outbound) whose
        caller plays `scenario`."""
        call = LabCall(f"{self.tag}-{next(self._numbers)}", scenario, dest)
        with self._lock:
            self.calls[call.tag] = call
        variables = f"origination_caller_id_number={caller_id},origination_caller_id_name={call.tag}"
        answer = self.api(f"originate {{{variables}}}loopback/{dest}/default &park")
        if not answer.startswith("+OK"):
            raise AssertionError(f"originate refused: {answer.strip()}")
        return call

    def wait(self, predicate, timeout_s: float) -> bool:
        """Until predicate() holds (looked at on every event), at most timeout_s."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)

    def hang_up_all(self) -> None:
        """Whatever a failed test left up: its calls are ended, the next test's switch clean."""
        for call in list(self.calls.values()):
            if call.uuid and not call.ended.is_set():
                self.api(f"uuid_kill {call.uuid}")

    # --- the reader thread

    def _read(self) -> None:
        events = connect(self.address)
        try:
            for line in (WATCHED, f"filter Caller-Caller-ID-Name /^{self.tag}-/"):
                reply = events.sendRecv(line)
                if reply is None or not (reply.getHeader("Reply-Text") or "").startswith("+OK"):
                    return
            self._subscribed.set()
            while not self._stopping.is_set():
                event = events.recvEventTimed(100)
                if event is not None and event.getHeader("Event-Name"):
                    with self._changed:
                        self._fold(event)
                        self._changed.notify_all()
        finally:
            events.disconnect()

    def _fold(self, event) -> None:
        get = event.getHeader
        call = self.calls.get(get("Caller-Caller-ID-Name") or "")
        if call is None:
            return
        marker, value = MARKERS[call.dest]
        if get(marker) != value:
            return  # the originating leg, or the dialplan before it marked the leg
        call.uuid = call.uuid or (get("Unique-ID") or "")
        name = get("Event-Name")
        app, arg = get("Application") or "", get("Application-Data") or ""
        if name == "CHANNEL_PARK":
            call.parks += 1
        elif name == "CHANNEL_HANGUP_COMPLETE":
            call.hangup_cause = get("Hangup-Cause") or ""
            call.ended.set()
        elif name == "CHANNEL_EXECUTE" and app in DIALPLAN_APPS:
            call.sockets += 1
        elif name == "CHANNEL_EXECUTE" and call.parks and not call.handed_over:
            if app == "set" and arg.startswith(CHECKPOINT_PREFIX):
                return
            call.path.append((app, arg))
            call.handed_over = app == "transfer"
            if app == "play_and_get_digits":
                # Keyed by the prompt, not counted: a prompt played again gets the same keys.
                presses = call.scenario.presses
                digits = presses[0 if MAIN_MENU_SOUND in arg else min(1, len(presses) - 1)]
                if digits:
                    self._presses.put((time.monotonic() + PRESS_AFTER_S, call.uuid, digits))
            elif app == "bridge" and ends_talking(call.scenario):
                self._presses.put((time.monotonic() + TALK_S, call.uuid, HANG_UP))

    # --- the presser thread

    def _press(self) -> None:
        connection = connect(self.address)
        due: list[tuple[float, str, str]] = []
        try:
            while not self._stopping.is_set():
                wait_s = min(0.1, max(0.0, due[0][0] - time.monotonic())) if due else 0.1
                try:
                    heapq.heappush(due, self._presses.get(timeout=wait_s))
                except queue.Empty:
                    pass
                while due and due[0][0] <= time.monotonic():
                    _, uuid, digits = heapq.heappop(due)
                    if digits == HANG_UP:
                        connection.api(f"uuid_kill {uuid} NORMAL_CLEARING")
                    else:
                        connection.api(f"uuid_recv_dtmf {uuid} {digits}")
        finally:
            connection.disconnect()
