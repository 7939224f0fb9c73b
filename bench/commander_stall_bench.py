"""How long one missing sendmsg reply holds other calls' commands in the Commander.

Runs the stand-in switch with its `hold_next` fault knob: the reply to one sendmsg (call
A) is held for `--hold-s`. Then it sends a command for call B and measures how long B
waited before the Commander got to it (the time until an ask queued behind B returns).
Prints that, and how many sendmsg commands for A reached the switch (more than one
means A was sent again: a second playback, a second transfer).

    .venv/bin/python -m bench.commander_stall_bench [--commander FILE.py] [--hold-s 30]

`--commander` loads the Commander class from another file (e.g. an older version) to
compare; the default is actors.commander.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

from fakeswitch import FakeSwitch
from tests.esl.conftest import make_config

CALL_A, CALL_B = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"


def load_commander(path: str | None):
    if not path:
        from actors.commander import Commander
        return Commander
    spec = importlib.util.spec_from_file_location("commander_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Commander


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commander", help="a file defining Commander (default: actors.commander)")
    parser.add_argument("--hold-s", type=float, default=30.0)
    parser.add_argument("--command-timeout-s", default="10")
    parser.add_argument("--sendmsg-timeout-s", default="2")
    args = parser.parse_args()
    switch = FakeSwitch().start()
    sent_a = []
    switch.faults.hold_next = ("sendmsg", args.hold_s)
    original = switch.faults.before_reply

    async def counting(listener, command):
        if command.line == f"sendmsg {CALL_A}":
            sent_a.append(time.monotonic())
        await original(listener, command)

    switch.faults.before_reply = counting  # type: ignore[method-assign]
    config = make_config(switch.port, command_timeout_s=args.command_timeout_s,
                         sendmsg_timeout_s=args.sendmsg_timeout_s, connect_timeout_s="5")
    ref = load_commander(args.commander).start(config)
    commander = ref.proxy()
    try:
        assert commander.ensure_connected().get(timeout=10)
        headers = ("playback", "new_sales/1000.wav")
        commander.execute(CALL_A, *headers, "event-a")
        started = time.monotonic()
        commander.execute(CALL_B, *headers, "event-b")
        commander.is_connected().get(timeout=args.hold_s + 60)
        held_s = time.monotonic() - started
    finally:
        ref.stop(timeout=10)
        switch.stop()
    print(f"reply of A held {args.hold_s:g} s; command_timeout_s={args.command_timeout_s}, "
          f"sendmsg_timeout_s={args.sendmsg_timeout_s}")
    print(f"call B's command waited {held_s:.2f} s behind it; "
          f"sendmsg for A reached the switch {len(sent_a)} time(s)")


if __name__ == "__main__":
    main()
