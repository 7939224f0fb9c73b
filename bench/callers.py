"""The callers: a load driver that plays callers through what FreeSWITCH offers.

It runs unchanged against the stand-in and a real switch (--lab real: the lab's
extensions, bench.scenarios): two inbound ESL connections (one reads events, one sends
commands, both from this one thread), `bgapi originate
{origination_caller_id_number=..,origination_caller_id_name=bench<run>-<n>}loopback/fsm/default
&park` (the `fsm` extension sets ivr_app=icall, answers and parks; `icall_out` hands
the call to an outbound controller), and the caller's keys sent with `api
uuid_recv_dtmf <uuid> <digits>` shortly after the leg starts a `play_and_get_digits`;
with --hangup-talking-s, `api uuid_kill` ends an answered bridge's talk (the lab's
callee talks 60 s). The names carry a tag of this run, so a driver sharing the switch
with another sees only its own calls. Calls are placed at --cps while fewer than --calls are up, for
--duration seconds; then it waits, at most --drain-s, for every call to end.

Each call's path is read from the switch's events on the controlled leg (matched by
the caller id name) and judged against its scenario (bench.scenarios); timings use
the events' Event-Date-Timestamp only:

  takeover  CHANNEL_PARK -> the controller's first CHANNEL_EXECUTE
  reaction  CHANNEL_EXECUTE_COMPLETE of an app the controller waited on -> its next
            CHANNEL_EXECUTE (a `set` is pipelined, not waited on: not counted)

A controller's own bookkeeping on the channel (icall's checkpoint, `set
icall_ckpt=...`) is not part of a path: takeover and reaction run to the next command
the caller hears or that moves the call, so the bookkeeping's cost shows in them.

    .venv/bin/python -m bench.callers --port 8021 --cps 20 --calls 200 --duration 60
        [--time-scale 1] [--host H --password P --dest fsm|icall_out --lab stand-in|real
        --hangup-talking-s 5 --paths] --out result.json

The result (JSON) also holds the monotonic times of the measured window and of the
peak of live calls, for the harness that samples /proc (bench.side_by_side).
"""

from __future__ import annotations

import argparse
import heapq
import json
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import ESL

from bench.scenarios import (
    REAL_SWITCH_EXTENSIONS,
    STAND_IN_EXTENSIONS,
    Scenario,
    Step,
    caller_id,
    ends_talking,
    judge,
    lab_scenarios,
    scenario_for,
)

# icall's checkpoint write (ivr.resume.CHECKPOINT_VARIABLE), seen as `set` data.
CHECKPOINT_PREFIX = "icall_ckpt="

WATCHED = ("event plain CHANNEL_PARK CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE "
           "CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB")
FILTERS = ("filter variable_ivr_app icall", "filter Event-Name BACKGROUND_JOB")
PRESS_AFTER_S = 0.5  # a caller presses this long (scaled) after the prompt starts
NOT_WAITED_ON = ("set", "park")
# The dialplan's own apps around a controller in outbound mode (the second `socket`, run
# when the first one's controller let the call go): not the controller's commands.
DIALPLAN_APPS = ("socket",)
HANG_UP = ""  # a due action that hangs the caller up instead of pressing keys
MAX_BURST = 500  # events read in a row before the pacing is looked at again


@dataclass
class CallSeen:
    """One placed call as its controlled leg's events tell it (switch clock, µs)."""

    index: int
    scenario: Scenario
    uuid: str = ""
    parked_us: int = 0
    path: list[Step] = field(default_factory=list)
    prompts: int = 0  # play_and_get_digits started so far
    last_completed_us: int = 0  # a waited-on app finished, no command since
    max_wait_us: int = 0  # the longest the caller waited for the controller's next command
    hangup_cause: str = ""
    handed_over: bool = False  # transferred: later apps are the dialplan's, not the controller's
    ended: bool = False
    originate_failed: str = ""


class Driver:
    """Runs in the main thread only: sends on the command connection and folds the
    events that `read_burst` reads from the other one."""

    def __init__(self, commands: ESL.ESLconnection, args: argparse.Namespace):
        self.commands, self.args = commands, args
        self.calls: dict[str, CallSeen] = {}  # by caller id name
        self.by_job: dict[str, CallSeen] = {}
        self.live = self.peak_live = self.refused = self.dtmf_refused = self.skipped = 0
        self.peak_at = 0.0
        self.takeover_us: list[int] = []
        self.reaction_us: list[int] = []
        self._due: list[tuple[float, int, str, str]] = []  # (when, seq, uuid, digits)
        self._seq = 0
        self.scenarios = lab_scenarios(REAL_SWITCH_EXTENSIONS if args.lab == "real"
                                       else STAND_IN_EXTENSIONS)
        # Tags unique to this run: another driver on the same switch sees other names.
        self.run_tag = f"bench{time.time_ns() % 10**6:06d}"

    # --- placing calls and pressing keys (commands connection)

    def place(self, index: int) -> None:
        scenario = scenario_for(index, self.scenarios)
        call = CallSeen(index, scenario)
        tag = f"{self.run_tag}-{index}"
        self.calls[tag] = call
        job = f"bench-job-{index}"
        self.by_job[job] = call
        variables = (f"origination_caller_id_number={caller_id(scenario, index)},"
                     f"origination_caller_id_name={tag}")
        reply = self.commands.sendRecv(
            f"bgapi originate {{{variables}}}loopback/{self.args.dest}/default &park\nJob-UUID: {job}")
        if reply is None or not (reply.getHeader("Reply-Text") or "").startswith("+OK"):
            call.ended, call.originate_failed = True, "bgapi refused"
            self.refused += 1
            return
        self.live += 1
        if self.live > self.peak_live:
            self.peak_live, self.peak_at = self.live, time.monotonic()

    def press_due(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            _, _, uuid, digits = heapq.heappop(self._due)
            if digits == HANG_UP:
                self.commands.sendRecv(f"api uuid_kill {uuid} NORMAL_CLEARING")
                continue
            reply = self.commands.sendRecv(f"api uuid_recv_dtmf {uuid} {digits}")
            if reply is None or (reply.getBody() or "").startswith("-ERR"):
                self.dtmf_refused += 1

    def next_press_at(self) -> float:
        return self._due[0][0] if self._due else float("inf")

    # --- reading the switch's events

    def on_event(self, event: ESL.ESLevent) -> None:
        get = event.getHeader
        name = get("Event-Name")
        if name == "BACKGROUND_JOB":
            call = self.by_job.pop(get("Job-UUID") or "", None)
            body = event.getBody() or ""
            if call is not None and not body.startswith("+OK") and not call.ended:
                call.originate_failed = body.strip() or "originate failed"
                self.end(call)
            return
        call = self.calls.get(get("Caller-Caller-ID-Name") or "")
        if call is None or call.ended:
            return
        call.uuid = call.uuid or (get("Unique-ID") or "")
        at_us = int(get("Event-Date-Timestamp") or 0)
        if name == "CHANNEL_PARK" and not call.parked_us:
            call.parked_us = at_us
        elif name == "CHANNEL_EXECUTE" and call.parked_us and not call.handed_over:
            app, arg = get("Application") or "", get("Application-Data") or ""
            if not (app == "set" and arg.startswith(CHECKPOINT_PREFIX)) and app not in DIALPLAN_APPS:
                self.executed(call, app, arg, at_us)
        elif name == "CHANNEL_EXECUTE_COMPLETE" and call.parked_us and not call.handed_over:
            if (get("Application") or "") not in (*NOT_WAITED_ON, *DIALPLAN_APPS):
                call.last_completed_us = at_us
        elif name == "CHANNEL_HANGUP_COMPLETE":
            if call.last_completed_us and not call.handed_over:  # hung up waiting
                call.max_wait_us = max(call.max_wait_us, at_us - call.last_completed_us)
            call.hangup_cause = get("Hangup-Cause") or ""
            self.end(call)

    def executed(self, call: CallSeen, app: str, arg: str, at_us: int) -> None:
        if not call.path:
            self.takeover_us.append(at_us - call.parked_us)
            call.max_wait_us = max(call.max_wait_us, at_us - call.parked_us)
        elif call.last_completed_us:
            self.reaction_us.append(at_us - call.last_completed_us)
            call.max_wait_us = max(call.max_wait_us, at_us - call.last_completed_us)
        call.last_completed_us = 0
        call.path.append((app, arg))
        if app == "transfer":
            call.handed_over = True
        if app == "bridge" and self.args.hangup_talking_s > 0 and ends_talking(call.scenario):
            self.due(self.args.hangup_talking_s, call.uuid, HANG_UP)
        if app == "play_and_get_digits":
            presses = call.scenario.presses
            digits = presses[call.prompts] if call.prompts < len(presses) else None
            call.prompts += 1
            if digits:
                self.due(PRESS_AFTER_S * self.args.time_scale, call.uuid, digits)

    def due(self, after_s: float, uuid: str, digits: str) -> None:
        """Keys to press on `uuid` (or HANG_UP) `after_s` from now."""
        self._seq += 1
        heapq.heappush(self._due, (time.monotonic() + after_s, self._seq, uuid, digits))

    def end(self, call: CallSeen) -> None:
        call.ended = True
        self.live -= 1

    # --- the result

    def summary(self) -> dict:
        verdicts: Counter[str] = Counter()
        by_scenario: dict[str, Counter[str]] = {}
        wrong = []
        for call in self.calls.values():
            verdict = ("unfinished" if not call.ended else
                       "right" if judge(call.scenario, call.path) else "wrong")
            verdicts[verdict] += 1
            by_scenario.setdefault(call.scenario.name, Counter())[verdict] += 1
            if verdict != "right" and len(wrong) < 10:
                wrong.append({"scenario": call.scenario.name, "verdict": verdict,
                              "uuid": call.uuid, "seen": call.path,
                              "originate": call.originate_failed})
        return {"placed": len(self.calls), "refused": self.refused, "skipped": self.skipped,
                "dtmf_refused": self.dtmf_refused, "peak_live": self.peak_live,
                "peak_at": self.peak_at, **{k: verdicts[k] for k in ("right", "wrong", "unfinished")},
                "by_scenario": {k: dict(v) for k, v in sorted(by_scenario.items())},
                "not_right": wrong,
                "takeover_ms": [us / 1000 for us in self.takeover_us],
                "reaction_ms": [us / 1000 for us in self.reaction_us],
                **({"calls": [self.seen(call) for call in self.calls.values()]} if self.args.paths else {})}

    @staticmethod
    def seen(call: CallSeen) -> dict:
        return {"uuid": call.uuid, "scenario": call.scenario.name, "path": call.path,
                "ended": call.ended, "hangup_cause": call.hangup_cause,
                "max_wait_ms": call.max_wait_us / 1000, "originate": call.originate_failed}


def connect(host: str, port: int, password: str) -> ESL.ESLconnection:
    connection = ESL.ESLconnection(host, str(port), password)
    if not connection.connected():
        raise SystemExit(f"cannot log in to {host}:{port}")
    return connection


def read_burst(events: ESL.ESLconnection, driver: Driver, first_wait_ms: int) -> None:
    """Wait up to `first_wait_ms` for an event, then take what is already buffered
    (at most MAX_BURST), so that pacing and key presses are looked at again soon."""
    wait_ms = first_wait_ms
    for _ in range(MAX_BURST):
        event = events.recvEventTimed(wait_ms)
        if event is None:
            return
        if event.getHeader("Event-Name"):
            driver.on_event(event)
        wait_ms = 1  # libesl waits with no limit when given 0 ms


def run(args: argparse.Namespace, stopping: threading.Event) -> dict:
    events, commands = (connect(args.host, args.port, args.password) for _ in range(2))
    # Outbound calls carry no ivr_app; the README's extension sets socket_resume.
    filters = FILTERS if args.dest == "fsm" else ("filter variable_socket_resume true", FILTERS[1])
    for line in (WATCHED, *filters):
        reply = events.sendRecv(line)
        if reply is None or not (reply.getHeader("Reply-Text") or "").startswith("+OK"):
            raise SystemExit(f"{line!r} refused")
    driver = Driver(commands, args)
    started = time.monotonic()
    offer_until = started + args.duration
    give_up_at = offer_until + args.drain_s
    placed = 0
    next_offer = started
    try:
        while not stopping.is_set():
            now = time.monotonic()
            offering = now < offer_until
            if not offering and driver.live == 0 or now >= give_up_at:
                break
            if offering and now >= next_offer:
                if driver.live < args.calls:
                    driver.place(placed)
                    placed += 1
                else:
                    driver.skipped += 1  # --calls are up: this offer is not made
                next_offer += 1 / args.cps
            driver.press_due(now)
            wake_at = min(next_offer if offering else give_up_at, driver.next_press_at())
            timeout_ms = max(1, int(min(wake_at - time.monotonic(), 0.1) * 1000))
            read_burst(events, driver, timeout_ms)
    finally:
        ended = time.monotonic()
        events.disconnect()
        commands.disconnect()
    return {"started_at": started, "offer_ended_at": min(offer_until, ended),
            "ended_at": ended, **driver.summary()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--lab", default="stand-in", choices=("stand-in", "real"),
                        help="which switch: its extensions differ (bench.scenarios)")
    parser.add_argument("--hangup-talking-s", type=float, default=0.0,
                        help="hang up a caller this long after an answered bridge starts "
                             "(0: the callee ends the call, as the stand-in's does)")
    parser.add_argument("--dest", default="fsm", choices=("fsm", "icall_out"),
                        help="the extension called: fsm (inbound mode) or icall_out (outbound)")
    parser.add_argument("--password", default="ClueCon")
    parser.add_argument("--cps", type=float, default=20.0, help="calls offered per second")
    parser.add_argument("--calls", type=int, default=200, help="at most this many up at once")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of offering")
    parser.add_argument("--drain-s", type=float, default=120.0,
                        help="then wait at most this long for the calls to end")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="the stand-in's time scale (scales when callers press keys)")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--paths", action="store_true",
                        help="also write every call's path, longest wait and hangup cause")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    result = run(args, stopping)
    with open(args.out, "w") as out:
        json.dump(result, out)
    print(f"DONE right={result['right']} wrong={result['wrong']} "
          f"unfinished={result['unfinished']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
