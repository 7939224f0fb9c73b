"""A lean controller of the icall flow: the yardstick icall is measured against.

The same commands, arguments and order as ivr/icall.py with the bench's configuration
(schedule open all week, CRM grace 0), and nothing else: one thread, two python-ESL
connections (one only reads events, one only sends commands, as DESIGN.md's
"one connection, one thread" demands even of a single thread), a static CRM table, no
actors, no database, no CDRs, no recovery after a lost link.

    .venv/bin/python -m bench.baseline_controller --port 8021 [--password ClueCon]
        [--crm 5550801=801,...] [--run-s 3600]

It prints `READY` once subscribed and runs until SIGTERM/SIGINT or --run-s.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass

import ESL

EVENTS = "event plain CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE"
# Its own calls only, without the completions of `set` and of the dialplan's `answer`
# that nobody waits on (icall subscribes the same way: actors.esl.subscription_commands).
FILTERS = ("filter variable_ivr_app icall", "filter Application -set", "filter Application -answer")
CONTEXT = "new_sales"
EXTENSION = r"[68]\d\d"
MAIN_MENU = "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]"
EXTENSION_ENTRY = r"3 3 3 5000 # new_sales/2002.wav new_sales/9004.wav extn_number [68]\d\d"
CC_MENU = "1 1 2 5000 # new_sales/8{0}.wav new_sales/9004.wav cc_menu_number [12]"
BRIDGE_SETTINGS = ("ringback=${us-ring}", "call_timeout=30", "continue_on_fail=true",
                   "hangup_after_bridge=true")
BRIDGE_SUCCEEDED = ("SUCCESS", "ANSWER")
RECV_TIMEOUT_MS = 200  # how often the loop looks at the stop flag


@dataclass
class Call:
    """One parked leg: the step it waits in and the command it waits for."""

    caller: str
    step: str = "welcome"
    awaited: str = ""  # Event-UUID of the command whose completion moves the call on
    extension: str = ""


class Controller:
    """Runs in the main thread only; owns both connections."""

    def __init__(self, events: ESL.ESLconnection, commands: ESL.ESLconnection,
                 crm: dict[str, str]):
        self.events, self.commands, self.crm = events, commands, crm
        self.calls: dict[str, Call] = {}
        self.refused = 0

    # --- the wire

    def execute(self, uuid: str, app: str, arg: str, lock: bool = False) -> str:
        """sendmsg execute, tagged with a fresh Event-UUID (returned); the whole text
        through sendRecv so the reply can be checked (DESIGN.md, python-ESL)."""
        event_uuid = str(uuidlib.uuid4())
        lines = [f"sendmsg {uuid}", "call-command: execute", f"execute-app-name: {app}",
                 f"execute-app-arg: {arg}"]
        if lock:
            lines.append("event-lock: true")
        lines.append(f"Event-UUID: {event_uuid}")
        self._send("\n".join(lines))
        return event_uuid

    def hang_up(self, uuid: str) -> None:
        self._send(f"sendmsg {uuid}\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING")

    def _send(self, text: str) -> None:
        reply = self.commands.sendRecv(text)
        if reply is None or not (reply.getHeader("Reply-Text") or "").startswith("+OK"):
            self.refused += 1  # the call hung up meanwhile: its hangup event follows

    # --- the flow

    def on_event(self, event: ESL.ESLevent) -> None:
        name, uuid = event.getHeader("Event-Name"), event.getHeader("Unique-ID") or ""
        call = self.calls.get(uuid)
        if name == "CHANNEL_PARK" and call is None:
            call = self.calls[uuid] = Call(event.getHeader("Caller-Caller-ID-Number") or "")
            call.awaited = self.execute(uuid, "playback", "new_sales/1000.wav")
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self.calls.pop(uuid, None)
        elif (name == "CHANNEL_EXECUTE_COMPLETE" and call is not None
              and event.getHeader("Application-UUID") == call.awaited):
            call.awaited = ""
            self.completed(uuid, call, event)

    def completed(self, uuid: str, call: Call, event: ESL.ESLevent) -> None:
        """The awaited command of `call` finished: the next step of the icall flow."""
        if call.step == "welcome":  # the schedule is open: main menu
            self.ask(uuid, call, "main_menu", MAIN_MENU)
        elif call.step == "main_menu":
            choice = digits(event, "menu_number", "[1-5]")
            if choice == "1":
                self.transfer(uuid, call, "fifo_hst")
            elif choice in ("2", "3", "4"):
                self.sales(uuid, call)
            elif choice == "5":
                self.ask(uuid, call, "extension", EXTENSION_ENTRY)
            else:
                self.invalid_choice(uuid, call)
        elif call.step == "transferring":
            self.bridge(uuid, call)
        elif call.step == "extension":
            typed = digits(event, "extn_number", EXTENSION)
            if typed is None:
                self.invalid_choice(uuid, call)
            else:
                call.extension = typed
                self.bridge(uuid, call)
        elif call.step == "bridge":
            if (event.getHeader("variable_originate_disposition") or "") in BRIDGE_SUCCEEDED:
                call.step = "done"  # hangup_after_bridge ends the call with the callee
            else:
                self.ask(uuid, call, "cc_menu", CC_MENU.format(call.extension))
        elif call.step == "cc_menu":
            answer = digits(event, "cc_menu_number", "[12]")
            destination = {"1": "Playcell_{0}", "2": "VM_{0}"}.get(answer or "", "Quit")
            self.transfer(uuid, call, destination.format(call.extension))
        elif call.step == "invalid_choice":
            self.hang_up(uuid)
            call.step = "done"

    def ask(self, uuid: str, call: Call, step: str, prompt: str) -> None:
        call.step, call.awaited = step, self.execute(uuid, "play_and_get_digits", prompt)

    def sales(self, uuid: str, call: Call) -> None:
        extension = self.crm.get(call.caller, "")
        if re.fullmatch(EXTENSION, extension):
            call.extension = extension
            call.step = "transferring"
            call.awaited = self.execute(uuid, "playback", "new_sales/1002.wav")
        else:
            self.transfer(uuid, call, "fifo_sales")

    def bridge(self, uuid: str, call: Call) -> None:
        # event-lock: each runs after the one before instead of nested inside it.
        for setting in BRIDGE_SETTINGS:
            self.execute(uuid, "set", setting, lock=True)
        call.step = "bridge"
        call.awaited = self.execute(uuid, "bridge", f"user/{call.extension}", lock=True)

    def transfer(self, uuid: str, call: Call, destination: str) -> None:
        self.execute(uuid, "transfer", f"{destination} XML {CONTEXT}")
        call.step = "done"

    def invalid_choice(self, uuid: str, call: Call) -> None:
        call.step = "invalid_choice"
        call.awaited = self.execute(uuid, "playback", "new_sales/9003.wav")


def digits(event: ESL.ESLevent, variable: str, pattern: str) -> str | None:
    """The digits play_and_get_digits collected, when the read succeeded and they are
    wholly a valid entry; else None."""
    if event.getHeader("variable_read_result") != "success":
        return None
    value = event.getHeader(f"variable_{variable}") or ""
    return value if re.fullmatch(pattern, value) else None


def connect(host: str, port: int, password: str) -> ESL.ESLconnection:
    connection = ESL.ESLconnection(host, str(port), password)
    if not connection.connected():
        raise SystemExit(f"cannot log in to {host}:{port}")
    return connection


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options both lean controllers (this one and bench.baseline_outbound) take."""
    parser.add_argument("--crm", default="", help="caller=extension,... (the static CRM)")
    parser.add_argument("--run-s", type=float, default=3600.0, help="stop after this long")


def static_crm_and_stop_flag(args: argparse.Namespace) -> tuple[dict[str, str], threading.Event]:
    """The --crm table, and a flag SIGTERM/SIGINT set."""
    crm = dict(pair.split("=", 1) for pair in args.crm.split(",") if "=" in pair)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    return crm, stopping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--password", default="ClueCon")
    add_common_options(parser)
    args = parser.parse_args(argv)
    crm, stopping = static_crm_and_stop_flag(args)
    events = connect(args.host, args.port, args.password)
    commands = connect(args.host, args.port, args.password)
    for line in (EVENTS, *FILTERS):
        reply = events.sendRecv(line)
        if reply is None or not (reply.getHeader("Reply-Text") or "").startswith("+OK"):
            raise SystemExit(f"{line!r} refused")
    controller = Controller(events, commands, crm)
    print("READY", flush=True)
    deadline = time.monotonic() + args.run_s
    while not stopping.is_set() and time.monotonic() < deadline and events.connected():
        event = events.recvEventTimed(RECV_TIMEOUT_MS)
        if event is not None and event.getHeader("Event-Name"):
            controller.on_event(event)
    print(f"STOPPED live={len(controller.calls)} refused={controller.refused}", flush=True)
    events.disconnect()
    commands.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
